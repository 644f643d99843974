"""TLS credentials as every part of sdnagent takes them (OVS's three files)."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional

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
