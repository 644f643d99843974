"""The two certificate authorities of a tapdb deployment and the certificates they sign.

Two trust domains, so that no hypervisor's key opens a door meant for people or
for the cluster: the *tapdb CA* (``ca.pem``) signs tapdb members (their Raft
port and operators' listener), relays (their identity towards the members) and
operators; the *chassis CA* (``chassis-ca.pem``) signs one certificate per
chassis, whose common name is the chassis name that tapdb's access rules
compare with the rows a chassis writes.  Members trust the tapdb CA only, so a
chassis certificate is refused by every listener of theirs; relays trust both
(agents on their listeners, members upstream).

Keys are ECDSA P-256, certificates valid for ``days`` (default 5 years).
Files, in the directory given: ``ca.pem`` and ``chassis-ca.pem`` (their keys
beside them), and ``NAME-cert.pem`` / ``NAME-key.pem`` per certificate.  Run as
``tools/pki DIR ca``, ``tools/pki DIR tapdb [NAME]``, ``tools/pki DIR relay
NAME...``, ``tools/pki DIR operator [NAME]``, ``tools/pki DIR chassis NAME...``.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sdnagent.tls import Tls

ORGANISATION = "sdnagent"

# which CA signs what: (file stem, common name); the names differ so that a server
# trusting both (a relay) never confuses them
AUTHORITIES = {"tapdb": ("ca", f"{ORGANISATION} CA"),
               "chassis": ("chassis-ca", f"{ORGANISATION} chassis CA")}
SIGNED_BY = {"tapdb": "tapdb", "relay": "tapdb", "operator": "tapdb", "chassis": "chassis"}
SERVERS = ("tapdb", "relay")  # units whose certificates also serve TLS listeners


def _name(common_name: str, unit: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_ca(directory: os.PathLike | str, days: int = 1826, authority: str = "tapdb") -> Path:
    """Create the ``authority`` CA (tapdb or chassis) in ``directory`` unless it is there;
    its certificate's path."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    stem, common_name = AUTHORITIES[authority]
    cert_path, key_path = root / f"{stem}.pem", root / f"{stem}-key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name, "ca")
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def issue(directory: os.PathLike | str, common_name: str, unit: str,
          days: int = 1826, file_name: Optional[str] = None) -> Tls:
    """A key and a certificate for ``common_name`` signed by its CA in ``directory``
    (made if missing); ``unit`` says what it is for: tapdb, relay, operator or chassis.
    The credentials returned trust the tapdb CA: every server a client meets
    (member or relay) holds a certificate of it."""
    root = Path(directory)
    ca_path = make_ca(root, authority=SIGNED_BY[unit])
    ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
    ca_key = serialization.load_pem_private_key(
        ca_path.with_name(ca_path.stem + "-key.pem").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    usage = [ExtendedKeyUsageOID.CLIENT_AUTH] + (
        [ExtendedKeyUsageOID.SERVER_AUTH] if unit in SERVERS else [])
    cert = (x509.CertificateBuilder().subject_name(_name(common_name, unit))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    base = file_name or common_name
    key_path, cert_path = root / f"{base}-key.pem", root / f"{base}-cert.pem"
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Tls(str(key_path), str(cert_path), str(make_ca(root)))


def chassis_ca(directory: os.PathLike | str) -> Path:
    """The chassis CA's certificate in ``directory`` (made if missing): what relays, and a
    member serving agents itself, check agents' certificates against."""
    return make_ca(directory, authority="chassis")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="sdnagent-pki", description=__doc__.splitlines()[0])
    p.add_argument("dir", help="where the CA and the certificates live")
    p.add_argument("what", choices=("ca", "tapdb", "relay", "operator", "chassis"),
                   help="ca: both CAs; tapdb: a member's certificate; relay: a relay's; "
                        "operator: a person's or a tool's; chassis: an agent's")
    p.add_argument("names", nargs="*", help="tapdb or operator name (default: tapdb, "
                   "operator); relay names; chassis names")
    p.add_argument("--days", type=int, default=1826,
                   help="how long the certificates are valid (default %(default)s): tapdb "
                        "checks no revocation list, so a stolen key works until then")
    args = p.parse_args(argv)
    if args.days < 1:
        p.error(f"--days: {args.days} is not allowed; give 1 or more")
    if args.what == "ca":
        print(make_ca(args.dir, args.days))
        print(make_ca(args.dir, args.days, authority="chassis"))
        return 0
    if args.what == "chassis" and not args.names:
        p.error("chassis: give the chassis names (each agent's [DEFAULT] host)")
    if args.what == "relay" and not args.names:
        p.error("relay: give the relays' names")
    names = args.names or [args.what]
    for name in names:
        made = issue(args.dir, name, args.what, args.days)
        print(f"{name}: {made.certificate} {made.private_key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
