"""sdnagent-tapdb: create, run, convert, stop and inspect a tapdb server."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from sdnagent import tls
from sdnagent.tapdb import server


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdnagent-tapdb",
                                description="Run the tapdb controller database (ovsdb-server).")
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument("--dir", default=str(server.DEFAULT_DIR),
                   help="where the database, sockets, pid file and log live (default %(default)s)")
    p.add_argument("--remote", action="append", default=[], metavar="pssl:PORT[:ADDR]",
                   help="also listen here (repeatable): pssl: (TLS, with the three files "
                        "below) or ptcp: (plain, for labs); the unix socket DIR/tapdb.sock "
                        "is always on")
    p.add_argument("--chassis-remote", action="append", default=[], metavar="pssl:PORT[:ADDR]",
                   help="a listener for agents (repeatable, TLS): each may write only the "
                        "rows of the chassis named by its certificate's CN; served by a "
                        "relay beside the member when --chassis-ca-cert is given")
    p.add_argument("--chassis-ca-cert", metavar="FILE",
                   help="the CA of the agents' certificates (tools/pki's chassis-ca.pem): "
                        "agents then reach only a relay, and no listener of the member "
                        "accepts their certificates")
    p.add_argument("--relay-of", metavar="ssl:IP:PORT[,...]",
                   help="the members' listeners a relay copies tapdb from: alone (no "
                        "database in --dir, no --cluster), a relay only, whose certificate "
                        "(tools/pki relay) identifies it to the members; with a cluster "
                        "member and --chassis-ca-cert, the member's relay follows them when "
                        "the member stops")
    p.add_argument("--private-key", metavar="FILE", help="this server's private key (TLS)")
    p.add_argument("--certificate", metavar="FILE", help="its certificate (TLS)")
    p.add_argument("--ca-cert", metavar="FILE",
                   help="the CA that clients' and cluster members' certificates must chain to")
    p.add_argument("--cluster", choices=("create", "join"),
                   help="make the new database a Raft cluster member (only when it is created)")
    p.add_argument("--local", metavar="ssl:IP:PORT", help="this member's Raft address "
                   "(ssl: with the TLS files, or tcp:)")
    p.add_argument("--member", action="append", default=[], metavar="ssl:IP:PORT",
                   help="an existing member's Raft address, for --cluster join (repeatable)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    srv = server.TapdbServer(args.dir)
    try:
        if args.action == "start":
            creds = tls.of(args.private_key, args.certificate, args.ca_cert,
                           "--private-key, --certificate, --ca-cert")
            if creds is not None:
                tls.check(creds, ("--private-key", "--certificate", "--ca-cert"))
            if args.chassis_ca_cert:
                tls.check_ca("--chassis-ca-cert", args.chassis_ca_cert)
            for remote in server.plain_exposed(args.remote):
                print(f"sdnagent-tapdb: WARNING: {remote} listens beyond this host without "
                      "TLS: anyone who reaches it can read and change every mirroring "
                      "session; use pssl: with --private-key, --certificate and --ca-cert",
                      file=sys.stderr)
            if args.chassis_remote and not args.chassis_ca_cert:
                print("sdnagent-tapdb: WARNING: agents' listeners on the member itself: any "
                      "certificate of --ca-cert may then also use the operators' listeners "
                      "and the Raft port; give --chassis-ca-cert (the chassis CA) to serve "
                      "agents from a relay", file=sys.stderr)
            relay_of = [r.strip() for r in (args.relay_of or "").split(",") if r.strip()]
            if relay_of and args.cluster is None and not srv.db.exists():
                given = (("--remote", args.remote), ("--cluster", args.cluster),
                         ("--local", args.local), ("--member", args.member))
                member_only = [option for option, value in given if value]
                if member_only:
                    raise ValueError(f"{member_only[0]}: not allowed for a relay (--relay-of "
                                     "without a database in --dir or --cluster): it has no "
                                     "database of its own and no operators' listener")
                if creds is None or not args.chassis_ca_cert:
                    raise ValueError("--relay-of: give --private-key, --certificate, --ca-cert "
                                     "(the relay's identity and the members' CA) and "
                                     "--chassis-ca-cert (the agents' CA)")
                done = srv.relay.start(args.relay_of, args.chassis_remote, creds,
                                       args.chassis_ca_cert)
            else:
                done = srv.start(args.remote, args.cluster, args.local, args.member, tls=creds,
                                 chassis_remotes=args.chassis_remote,
                                 chassis_ca=args.chassis_ca_cert, relay_of=relay_of)
            for line in done:
                print(f"sdnagent-tapdb: {line}")
        elif args.action == "stop":
            print("sdnagent-tapdb: " + ("stopped" if srv.stop() else "not running"))
        elif not srv.db.exists() and srv.relay.pid():
            info = srv.relay.status()
            for key, value in info.items():
                print(f"{key}: {value}")
            return 0
        else:
            info = srv.status()
            for key, value in info.items():
                print(f"{key}: {value}")
            return 0 if info["state"] == "running" else 3
    except (server.TapdbServerError, ValueError) as exc:
        print(f"sdnagent-tapdb: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
