"""The underlay's MTU is the MTU of the interface holding the tunnel address."""
from __future__ import annotations

from pathlib import Path

import pytest

from sdnagent.agent import underlay

LO = Path("/sys/class/net/lo/mtu")


@pytest.mark.skipif(not LO.exists(), reason="no /sys/class/net/lo here")
def test_the_interface_holding_an_address_gives_its_mtu():
    assert underlay.interface_of("127.0.0.1") == "lo"
    assert underlay.mtu_of("127.0.0.1") == int(LO.read_text())
    if underlay.interface_of("::1") is not None:  # IPv6 may be off in a container
        assert underlay.mtu_of("::1") == int(LO.read_text())
    # an address no interface has (as the lab's, which live in ovs-vswitchd alone)
    assert underlay.mtu_of("192.0.2.77") is None
    assert underlay.mtu_of("2001:db8:ffff::77") is None
