"""A 3-member tapdb cluster over TLS with a relay beside each member, as the operator guide
deploys it (loopback ports, under one directory), for tests that need the real tier."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sdnagent import pki, sandbox
from sdnagent.tapdb import ops, schema, server
from sdnagent.tls import Tls


def free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        p = sandbox.free_port()
        if p not in ports:
            ports.append(p)
    return ports


class Tier:
    """Members m0..m2 (Raft and operators' listeners, tapdb CA), each with a relay for the
    agents (chassis CA) that copies from its member and, when that stops, the others."""

    def __init__(self, directory: os.PathLike | str):
        self.dir = Path(directory)
        self.ca = self.dir / "pki"
        self.raft, self.listen, self.agents = free_ports(3), free_ports(3), free_ports(3)
        self.members = [server.TapdbServer(self.dir / f"m{i}") for i in range(3)]
        self.member_tls = pki.issue(self.ca, "tapdb", "tapdb")
        self.operator_tls = pki.issue(self.ca, "alice", "operator")

    @property
    def operators(self) -> str:
        return ",".join(f"ssl:127.0.0.1:{p}" for p in self.listen)

    @property
    def relays(self) -> str:
        return ",".join(f"ssl:127.0.0.1:{p}" for p in self.agents)

    def start_member(self, i: int) -> list[str]:
        """Start member ``i`` as its unit would (creating it the first time)."""
        first = not self.members[i].db.exists()
        return self.members[i].start(
            [f"pssl:{self.listen[i]}:127.0.0.1"],
            cluster=("create" if i == 0 else "join") if first else None,
            local=f"ssl:127.0.0.1:{self.raft[i]}", members=[f"ssl:127.0.0.1:{self.raft[0]}"],
            tls=self.member_tls, chassis_remotes=[f"pssl:{self.agents[i]}:127.0.0.1"],
            chassis_ca=str(pki.chassis_ca(self.ca)), relay_of=self.operators.split(","))

    def start(self) -> "Tier":
        for i in range(3):
            self.start_member(i)
        return self

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def operator(self, timeout: float = 30) -> ops.IntentDb:
        return ops.connect(self.operators, timeout, creds=self.operator_tls)

    def chassis(self, name: str) -> Tls:
        return pki.issue(self.ca, name, "chassis")

    def agent_options(self, name: str) -> dict[str, str]:
        """The [tapdb] settings of ``name``'s agent, for Host.start_agent."""
        creds = self.chassis(name)
        return {"tapdb__ssl_key_file": creds.private_key,
                "tapdb__ssl_cert_file": creds.certificate,
                "tapdb__ssl_ca_cert_file": creds.ca_cert}

    def cluster_status(self, i: int) -> str:
        return subprocess.run(["ovs-appctl", "-t", str(self.members[i].ctl), "cluster/status",
                               schema.NAME], capture_output=True, text=True).stdout

    def leader(self) -> int:
        for i, m in enumerate(self.members):
            if m.pid() is not None and "Role: leader" in self.cluster_status(i):
                return i
        raise AssertionError("the cluster has no leader")

    def relay_in_use(self) -> int:
        """The member whose relay has a client (the tests run one agent)."""
        for i, m in enumerate(self.members):
            show = subprocess.run(["ovs-appctl", "-t", str(m.relay.ctl), "memory/show"],
                                  capture_output=True, text=True).stdout
            if "sessions:" in show and int(show.split("sessions:")[1].split()[0]) > 0:
                return i
        raise AssertionError("no relay has a client")
