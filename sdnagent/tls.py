"""TLS credentials as every part of sdnagent takes them (OVS's three files), checked
before use, and TLS failures told in one line: the file, and what is wrong with it."""
from __future__ import annotations

import dataclasses
import datetime
import socket
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
    import ssl


@dataclasses.dataclass(frozen=True)
class Tls:
    """A private key, its certificate, and the CA the other side's certificate must
    chain to (``--private-key``, ``--certificate``, ``--ca-cert`` in OVS's tools)."""

    private_key: str
    certificate: str
    ca_cert: str


def of(private_key: Optional[str], certificate: Optional[str],
       ca_cert: Optional[str], where: str) -> Optional[Tls]:
    """The credentials when all three are given, None when none is; ValueError naming
    ``where`` (the options or settings) when only some are."""
    given = [private_key, certificate, ca_cert]
    if not any(given):
        return None
    if not all(given):
        raise ValueError(f"{where}: give the private key, the certificate and the CA "
                         "certificate together")
    return Tls(str(private_key), str(certificate), str(ca_cert))


def client_context(creds: Tls) -> "ssl.SSLContext":
    """A client context that presents ``creds`` and trusts only their CA.  OVS
    certificates name a chassis or a role, not a host: the name is not checked."""
    import ssl  # only when used: tapctl on a plain socket does not pay for it
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(creds.ca_cert)
    ctx.load_cert_chain(creds.certificate, creds.private_key)
    return ctx


class TlsFileError(ValueError):
    """A key or certificate file that cannot work: its setting, its path, and why."""


def _when(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _read(name: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise TlsFileError(f"{name} {path}: no such file") from None
    except OSError as exc:
        raise TlsFileError(f"{name} {path}: cannot read it ({exc.strerror})") from None


def _certificates(name: str, path: str) -> list:
    from cryptography import x509
    data = _read(name, path)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TlsFileError(f"{name} {path}: not a PEM certificate")
    return certs


def _valid_now(name: str, path: str, cert, now: datetime.datetime) -> None:
    if cert.not_valid_before_utc > now:
        raise TlsFileError(f"{name} {path}: not valid before {_when(cert.not_valid_before_utc)}"
                           " (or this host's clock is behind)")
    if cert.not_valid_after_utc < now:
        raise TlsFileError(f"{name} {path}: expired on {_when(cert.not_valid_after_utc)}")


def common_name(cert) -> str:
    from cryptography.x509.oid import NameOID
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def describe(path: str) -> str:
    """``path`` and whose certificate it is, for messages: "F (CN x, issued by y)"."""
    try:
        cert = _certificates("", path)[0]
    except TlsFileError:
        return path
    from cryptography.x509.oid import NameOID
    issuer = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return (f"{path} (CN {common_name(cert)}, issued by "
            f"{issuer[0].value if issuer else cert.issuer.rfc4514_string()})")


def check(creds: Tls, names: Sequence[str], host: Optional[str] = None,
          now: Optional[datetime.datetime] = None) -> None:
    """Raise TlsFileError (one line) unless the three files can work: each there and
    readable, PEM, the key the certificate's, the certificates valid now, and (for
    an agent, ``host``) the certificate's CN the chassis name.  ``names``: how the
    caller calls the key, the certificate and the CA (options or settings).

    A client's own certificate need not chain to the CA it checks servers against:
    agents' certificates come from the chassis CA, the servers' from the tapdb CA."""
    from cryptography.hazmat.primitives import serialization
    key_name, cert_name, ca_name = names
    now = now or datetime.datetime.now(datetime.timezone.utc)
    cert = _certificates(cert_name, creds.certificate)[0]
    key_data = _read(key_name, creds.private_key)
    try:
        key = serialization.load_pem_private_key(key_data, None)
    except TypeError:
        raise TlsFileError(f"{key_name} {creds.private_key}: the key is encrypted; OVS "
                           "takes unencrypted keys (keep the file mode 0600)") from None
    except ValueError:
        raise TlsFileError(f"{key_name} {creds.private_key}: not a PEM private key") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, pub)
            != cert.public_key().public_bytes(serialization.Encoding.DER, pub)):
        raise TlsFileError(f"{key_name} {creds.private_key}: not the key of {cert_name} "
                           f"{creds.certificate}")
    _valid_now(cert_name, creds.certificate, cert, now)
    check_ca(ca_name, creds.ca_cert, now)
    if host is not None and common_name(cert) != host:
        raise TlsFileError(f"{cert_name} {creds.certificate}: its common name is "
                           f"{common_name(cert) or '(none)'}, not this agent's host {host}")


def check_ca(name: str, path: str, now: Optional[datetime.datetime] = None) -> None:
    """Raise TlsFileError unless ``path`` holds CA certificates valid now."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    for ca in _certificates(name, path):
        _valid_now(name, path, ca, now)


def refused(creds: Tls, exc: BaseException) -> str:
    """What a failed TLS handshake (or a connection closed right after one: TLS 1.3
    servers judge the client's certificate then) means, in one line."""
    import ssl
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the server's certificate does not verify against the CA "
                f"{creds.ca_cert} ({exc.verify_message}): it is not a server of this "
                "deployment, or the CA file is not the tapdb CA")
    return (f"the server refused our certificate {describe(creds.certificate)}: "
            "it is not signed by a CA the server trusts, or it expired there")


def diagnose(remote: str, creds: Tls, timeout: float = 3) -> Optional[str]:
    """Why a TLS connection to ``remote`` (ssl:HOST:PORT) fails, in one line, or None
    when it does not fail at the TLS level (or cannot be told): opens one, completes
    the handshake, and waits briefly for the alert a server sends when it refuses
    the client's certificate."""
    import ssl
    host, _, port = remote.partition(":")[2].rpartition(":")
    try:
        raw = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    except (OSError, ValueError):
        return None
    try:
        sock = client_context(creds).wrap_socket(raw)
        try:
            sock.settimeout(min(timeout, 1.0))
            if sock.recv(1) == b"":
                return refused(creds, ConnectionResetError())
        except (socket.timeout, TimeoutError):
            return None  # the server waits for us to speak: TLS is fine
        finally:
            sock.close()
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
        return refused(creds, exc)
    except OSError:
        return None
    finally:
        raw.close()
    return None
