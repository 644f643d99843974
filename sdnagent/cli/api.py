"""sdnagent-api: serve the REST API over tapdb (``serve``), or make an API token
(``token-add``: its hash goes into the tokens file, the token is printed once)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from sdnagent import tls
from sdnagent.api import identity

DEFAULT_DB = "unix:/var/lib/sdnagent/tapdb/tapdb.sock"
DEFAULT_TOKENS = "/etc/sdnagent/api-tokens"
DEFAULT_AUDIT = "/var/log/sdnagent/api-audit.jsonl"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdnagent-api", description=__doc__)
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("serve", help="serve the API")
    s.add_argument("--db", default=os.environ.get("TAPDB", DEFAULT_DB),
                   help="tapdb, as tapctl's --db (default: $TAPDB, else %(default)s)")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for tapdb")
    for option, what in (("--private-key", "the API's key towards tapdb"),
                         ("--certificate", "its certificate (of the tapdb CA)"),
                         ("--ca-cert", "the CA of tapdb's certificate")):
        s.add_argument(option, help=f"for ssl: remotes, {what}")
    s.add_argument("--listen", default="127.0.0.1:9550", metavar="ADDRESS:PORT",
                   help="where the API listens (default %(default)s)")
    s.add_argument("--tls-key", help="the API listener's private key (TLS when given)")
    s.add_argument("--tls-cert", help="the API listener's certificate")
    s.add_argument("--tokens", default=DEFAULT_TOKENS, help="the tokens file (default "
                                                             "%(default)s)")
    s.add_argument("--audit-log", default=DEFAULT_AUDIT, help="the audit trail, JSON lines, "
                                                               "appended (default %(default)s)")
    t = sub.add_parser("token-add", help="add an identity; prints its token once")
    t.add_argument("name")
    t.add_argument("--role", required=True, metavar="|".join(identity.ROLES))
    t.add_argument("--project", help="a member's project (a reader's: the only one it reads)")
    t.add_argument("--tokens", default=DEFAULT_TOKENS, help="the tokens file (default "
                                                             "%(default)s)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.action == "token-add":
        try:
            print(identity.add(Path(args.tokens), args.name, args.role, args.project))
        except identity.IdentityError as exc:
            print(f"sdnagent-api: {exc}", file=sys.stderr)
            return 1
        return 0
    return serve(args)


def serve(args: argparse.Namespace) -> int:
    import uvicorn  # the server only when serving

    from sdnagent.api.app import create_app
    from sdnagent.api.audit import AuditLog
    from sdnagent.api.replica import Replica
    from sdnagent.tapdb import client, ops
    try:
        creds = tls.of(args.private_key, args.certificate, args.ca_cert,
                       "--private-key, --certificate, --ca-cert")
        if creds is not None:
            tls.check(creds, ("--private-key", "--certificate", "--ca-cert"))
        if bool(args.tls_key) != bool(args.tls_cert):
            raise ValueError("--tls-key and --tls-cert go together")
        identities = identity.load(Path(args.tokens))
        host, _, port = args.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--listen: {args.listen!r} is not ADDRESS:PORT")
        audit = AuditLog(Path(args.audit_log))
    except (ValueError, OSError, tls.TlsFileError, identity.IdentityError) as exc:
        print(f"sdnagent-api: {exc}", file=sys.stderr)
        return 2
    try:
        replica = Replica(args.db, args.timeout, creds)
    except client.TapdbError as exc:
        print(f"sdnagent-api: {exc}", file=sys.stderr)
        return 1
    app = create_app(lambda: ops.connect(args.db, args.timeout, creds), identities, audit,
                     replica)
    uvicorn.run(app, host=host.strip("[]"), port=int(port), log_level="info",
                ssl_keyfile=args.tls_key, ssl_certfile=args.tls_cert)
    return 0


if __name__ == "__main__":
    sys.exit(main())
