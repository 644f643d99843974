"""tapdb over TLS: only certificates from the deployment's CA get in."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import pytest

from sdnagent import pki, sandbox, tls
from sdnagent.cli import tapctl as tapctl_cli
from sdnagent.tapdb import client, ops, server
from tests.conftest import require_ovs
from tests.functional.mirrorlab import MirrorLab, wait_until
from tests.functional.test_agent import two_host_example

BIN = Path(sys.executable).parent


@pytest.fixture
def tls_tapdb():
    """A tapdb listening on pssl: (loopback), with a CA, and a rogue CA beside it."""
    require_ovs()
    directory = tempfile.mkdtemp(prefix="sdn-tls-")
    ca, rogue = f"{directory}/ca", f"{directory}/rogue"
    srv = server.TapdbServer(f"{directory}/db")
    port, agents = sandbox.free_port(), sandbox.free_port()
    try:
        srv.start([f"pssl:{port}:127.0.0.1"], tls=pki.issue(ca, "tapdb", "tapdb"),
                  chassis_remotes=[f"pssl:{agents}:127.0.0.1"], chassis_ca=str(pki.chassis_ca(ca)))
        yield {"remote": f"ssl:127.0.0.1:{port}", "agents": f"ssl:127.0.0.1:{agents}",
               "operator": pki.issue(ca, "operator", "operator"),
               "host-a": pki.issue(ca, "host-a", "chassis"),
               "rogue": pki.issue(rogue, "operator", "operator"), "server": srv}
    finally:
        srv.stop()
        shutil.rmtree(directory, ignore_errors=True)


def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = tapctl_cli.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def creds(files) -> list[str]:
    return ["--private-key", files.private_key, "--certificate", files.certificate,
            "--ca-cert", files.ca_cert]


def test_an_operator_certificate_of_the_ca_gets_in(tls_tapdb, capsys):
    remote = tls_tapdb["remote"]
    rc, out, err = run(capsys, "--db", remote, *creds(tls_tapdb["operator"]), "target-add",
                       "target-01", "--vxlan", "10.0.0.1")
    assert (rc, err) == (0, ""), err
    rc, out, err = run(capsys, "--db", remote, *creds(tls_tapdb["operator"]), "show")
    assert rc == 0 and "target target-01 (no session): vxlan 10.0.0.1" in out
    # an agent with its chassis certificate reads and writes what it owns, through the relay
    api = client.connect(tls_tapdb["agents"], 10, chassis="host-a", creds=tls_tapdb["host-a"])
    try:
        api.register_chassis("host-a", "10.255.0.1", "gre")
        assert api.agent_view().chassis_ips == {"host-a": "10.255.0.1"}
        assert "target-01" in api.agent_view().snapshot.intent.targets
    finally:
        api.close()


def test_no_certificate_or_another_cas_is_refused(tls_tapdb, capsys):
    remote = tls_tapdb["remote"]
    rc, out, err = run(capsys, "--db", remote, "show")
    assert rc == 1 and err == (f"tapctl: cannot reach tapdb at {remote}: an ssl: remote needs "
                               "a private key, a certificate and a CA certificate\n")
    rc, out, err = run(capsys, "--db", remote, *creds(tls_tapdb["rogue"]), "--timeout", "3",
                       "show")
    assert rc == 1 and err.startswith(f"tapctl: cannot reach tapdb at {remote}: ")
    assert err.count("\n") == 1 and out == ""
    # the rogue CA's client also trusts only its own CA: with ours it still presents a
    # certificate tapdb refuses
    rogue = tls_tapdb["rogue"]
    mixed = tls.Tls(rogue.private_key, rogue.certificate, tls_tapdb["operator"].ca_cert)
    with pytest.raises(ops.TapdbError):
        ops.connect(remote, 3, creds=mixed).snapshot()
    # plain TCP to a TLS port gets no OVSDB answer
    rc, out, err = run(capsys, "--db", remote.replace("ssl:", "tcp:"), "--timeout", "2", "show")
    assert rc == 1 and "cannot reach tapdb" in err
    # half the settings is a usage error, named
    rc, out, err = run(capsys, "--db", remote, "--private-key", "k.pem", "show")
    assert rc == 1 and err == ("tapctl: --private-key, --certificate, --ca-cert: give the private "
                               "key, the certificate and the CA certificate together\n")


def test_pki_certificates_last_as_long_as_told(tmp_path, capsys):
    from cryptography import x509
    assert pki.main([str(tmp_path), "chassis", "host-a", "--days", "30"]) == 0
    cert = x509.load_pem_x509_certificate((tmp_path / "host-a-cert.pem").read_bytes())
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.days == 30  # (and the five minutes of clock skew allowed before)
    with pytest.raises(SystemExit):
        pki.main([str(tmp_path), "chassis", "host-b", "--days", "0"])
    assert "--days: 0 is not allowed; give 1 or more" in capsys.readouterr().err


def test_plain_remotes_beyond_loopback_are_named():
    assert server.plain_exposed(["ptcp:6641:127.0.0.1", "pssl:6642", "ptcp:6643:[::1]"]) == []
    assert server.plain_exposed(["ptcp:6641", "ptcp:6642:0.0.0.0", "ptcp:6643:10.0.0.5"]) == [
        "ptcp:6641", "ptcp:6642:0.0.0.0", "ptcp:6643:10.0.0.5"]


def test_the_two_host_example_over_tls():
    """Agents authenticated by their chassis certificates, tapctl by an operator's."""
    require_ovs()
    lab = sandbox.Lab(tls=True)
    try:
        lab.start()
        mlab = MirrorLab(lab)
        assert mlab.env["TAPDB"].startswith("ssl:")
        tgt = two_host_example(mlab)
        conf = (lab["host-a"].dir / "sdnagent.conf").read_text()
        # the agents' listener: what they write is limited to their chassis's rows
        assert "ssl_cert_file" in conf and f"connection = {lab.chassis_remote}" in conf
        assert lab.chassis_remote != lab.remote
        sent = mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)
        assert mlab.wait_frames(tgt, 1) == [sent[:96]]
        # on host-a, with the agent's configuration (its chassis certificate reads tapdb):
        # the packet as the intent says and as brtap does it, each flow named
        a = lab["host-a"]

        def host_trace(packet: str, direction: str = "in") -> str:
            proc = subprocess.run([str(BIN / "sdnagent-trace"), "--config-file",
                                   str(a.dir / "sdnagent.conf"), "--vswitchd",
                                   str(a.dir / "ovs-vswitchd.ctl"), "--port", "vm-230",
                                   "--direction", direction, packet],
                                  capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
            return proc.stdout
        out = host_trace("tcp,nw_src=192.168.0.161,nw_dst=192.168.0.230,tp_dst=1234")
        assert "mirrored by session-01: the first 96 bytes to target target-01" in out
        intent, switch = out.split("== the switch: ofproto/trace on brtap of chassis host-a")
        notes = re.findall(r"^ +\[(.*)\]$", switch, re.M)
        assert notes[1:] == ["session session-01, filter filter-01 inbound rule 1 (accept)",
                             "session session-01: the copy to target target-01"], switch
        assert notes[0] == "the copies of vm-230/in: to the filter stage"
        assert "output(port=1,max_len=96)" in switch and "unknown to sdnagent" not in switch
        out = host_trace("tcp,nw_src=192.168.0.161,nw_dst=192.168.0.230,tp_dst=1235")
        assert "not mirrored: no rule of any session matches" in out
        assert "[table filter5: nothing else matched]" in out and "Datapath actions: drop" in out
        # a direction no hook mirrors here
        assert "no hook mirrors port vm-230 in direction out on this chassis" in host_trace(
            "tcp", "out")
    finally:
        for host in lab.hosts.values():  # shown by pytest when the test failed
            print(f"---- sdnagent log of {host.name}\n{host.agent_log()[-6000:]}")
        lab.stop()
        shutil.rmtree(lab.dir, ignore_errors=True)


def test_tls_failures_are_one_line_naming_the_file(tls_tapdb, capsys, tmp_path):
    remote = tls_tapdb["remote"]
    rogue, operator, host_a = tls_tapdb["rogue"], tls_tapdb["operator"], tls_tapdb["host-a"]
    # a certificate of another CA (and our CA file): the server refuses it
    foreign = tls.Tls(rogue.private_key, rogue.certificate, operator.ca_cert)
    rc, out, err = run(capsys, "--db", remote, *creds(foreign), "--timeout", "3", "show")
    assert rc == 1 and err == (
        f"tapctl: cannot reach tapdb at {remote}: the server refused our certificate "
        f"{rogue.certificate} (CN operator, issued by sdnagent CA): it is not signed by a CA "
        "the server trusts, or it expired there\n"), err
    # a chassis certificate on a member's listener: refused the same way
    rc, out, err = run(capsys, "--db", remote, *creds(host_a), "--timeout", "3", "show")
    assert rc == 1 and "the server refused our certificate" in err
    assert "issued by sdnagent chassis CA" in err and err.count("\n") == 1
    # our certificate, but the CA file of another deployment: the server is not believed
    mixed = tls.Tls(operator.private_key, operator.certificate, rogue.ca_cert)
    rc, out, err = run(capsys, "--db", remote, *creds(mixed), "--timeout", "3", "show")
    assert rc == 1 and err.startswith(
        f"tapctl: cannot reach tapdb at {remote}: the server's certificate does not verify "
        f"against the CA {rogue.ca_cert} ("), err
    # files checked before connecting
    gone = str(tmp_path / "gone.pem")
    rc, out, err = run(capsys, "--db", remote, "--private-key", operator.private_key,
                       "--certificate", gone, "--ca-cert", operator.ca_cert, "show")
    assert (rc, err) == (1, f"tapctl: --certificate {gone}: no such file\n")


def test_the_agent_says_what_is_wrong_with_its_certificate(tls_tapdb, tmp_path):
    host_a, rogue = tls_tapdb["host-a"], tls_tapdb["rogue"]
    gone = str(tmp_path / "gone.pem")
    assert run_agent(tmp_path, tls_tapdb, host_a.private_key, gone, "host-a") == (
        2, f"sdnagent: configuration error: [tapdb] ssl_cert_file {gone}: no such file\n")
    assert run_agent(tmp_path, tls_tapdb, host_a.private_key, host_a.certificate, "host-b") == (
        2, f"sdnagent: configuration error: [tapdb] ssl_cert_file {host_a.certificate}: its "
           "common name is host-a, not this agent's host host-b\n")
    # a certificate the relay does not trust (another CA's): one line per attempt naming
    # it, and the agent goes on trying (a server may be fixed while it runs)
    lab = sandbox.Lab(hosts=("operator",), tapdb=False).start()
    try:
        host = lab["operator"]
        host.start_agent(tls_tapdb["agents"], tapdb__ssl_key_file=rogue.private_key,
                         tapdb__ssl_cert_file=rogue.certificate,
                         tapdb__ssl_ca_cert_file=host_a.ca_cert)
        said = (f"cannot reach tapdb yet (cannot reach tapdb at {tls_tapdb['agents']}: "
                f"{tls_tapdb['agents']}: the server refused our certificate "
                f"{rogue.certificate} (CN operator, issued by sdnagent CA)")
        wait_until(lambda: host.agent_log().count(said) >= 2, 20, "two attempts, named")
        assert "Traceback" not in host.agent_log()
    finally:
        lab.stop()


def run_agent(tmp_path, tls_tapdb, key: str, cert: str, host: str,
              seconds: float = 30) -> tuple[Optional[int], str]:
    """``sdnagent`` with these files, until it exits or for ``seconds`` (then stopped):
    its exit status (None when it was still running) and its output."""
    conf = tmp_path / "sdnagent.conf"
    conf.write_text(f"[DEFAULT]\nhost = {host}\n[tunnel]\nlocal_ip = 10.255.0.1\n"
                    f"[ovs]\novsdb_connection = unix:{tmp_path}/nothing.sock\n"
                    f"[tapdb]\nconnection = {tls_tapdb['agents']}\n"
                    f"ssl_key_file = {key}\nssl_cert_file = {cert}\n"
                    f"ssl_ca_cert_file = {tls_tapdb['host-a'].ca_cert}\n")
    proc = subprocess.Popen([str(BIN / "sdnagent"), "--config-file", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=seconds)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        return None, out


def test_sdnagent_tapdb_checks_its_files_first(tmp_path):
    ca = tmp_path / "pki"
    member = pki.issue(ca, "tapdb", "tapdb")
    gone = str(tmp_path / "gone.pem")

    def start(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "sdnagent-tapdb"), "start", "--dir",
                               str(tmp_path / "db"), "--remote", "pssl:0:127.0.0.1", *args],
                              capture_output=True, text=True, timeout=60)
    done = start("--private-key", gone, "--certificate", member.certificate,
                 "--ca-cert", member.ca_cert)
    assert (done.returncode, done.stderr) == (
        1, f"sdnagent-tapdb: --private-key {gone}: no such file\n")
    other = pki.issue(ca, "relay-1", "relay")
    done = start("--private-key", other.private_key, "--certificate", member.certificate,
                 "--ca-cert", member.ca_cert)
    assert (done.returncode, done.stderr) == (
        1, f"sdnagent-tapdb: --private-key {other.private_key}: not the key of --certificate "
           f"{member.certificate}\n")
    done = start("--private-key", member.private_key, "--certificate", member.certificate,
                 "--ca-cert", member.ca_cert, "--chassis-remote", "pssl:0:127.0.0.1",
                 "--chassis-ca-cert", gone)
    assert (done.returncode, done.stderr) == (
        1, f"sdnagent-tapdb: --chassis-ca-cert {gone}: no such file\n")
    assert not (tmp_path / "db" / "tapdb.pid").exists()
