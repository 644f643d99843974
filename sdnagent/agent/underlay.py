"""The underlay's MTU at this chassis, from the Linux interface that holds the tunnel
address (``[tunnel] mtu`` overrides it)."""
from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from pathlib import Path
from typing import Optional

SIOCGIFADDR = 0x8915
SYS_NET = Path("/sys/class/net")
IF_INET6 = Path("/proc/net/if_inet6")


def interface_of(ip: str) -> Optional[str]:
    """The name of the interface that has ``ip``, or None (an address that lives in
    ovs-vswitchd alone, as on the dummy datapath, has none)."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 6:
        try:
            lines = IF_INET6.read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            fields = line.split()
            if len(fields) >= 6 and ipaddress.IPv6Address(int(fields[0], 16)) == addr:
                return fields[5]
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(sock.fileno(), SIOCGIFADDR,
                                  struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address
            if ipaddress.IPv4Address(raw[20:24]) == addr:
                return name
    return None


def mtu_of(ip: str) -> Optional[int]:
    """The MTU of the interface that has ``ip``, or None when no interface has it."""
    name = interface_of(ip)
    if name is None:
        return None
    try:
        return int((SYS_NET / name / "mtu").read_text())
    except (OSError, ValueError):
        return None
