"""The agent's options and the sample config file generated from them."""
import subprocess
import sys
from pathlib import Path

import pytest

from sdnagent.agent import config

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "etc" / "sdnagent" / "sdnagent.conf.sample"


def test_sample_config_is_current(tmp_path):
    out = tmp_path / "sample"
    generator = Path(sys.executable).parent / "oslo-config-generator"
    subprocess.run([str(generator), "--config-file", str(ROOT / "etc" / "oslo-config-generator.conf"),
                    "--output-file", str(out)], check=True, cwd=ROOT)
    assert out.read_text() == SAMPLE.read_text(), (
        "etc/sdnagent/sdnagent.conf.sample is stale: run oslo-config-generator "
        "--config-file etc/oslo-config-generator.conf")


def test_load_reads_a_file(tmp_path):
    f = tmp_path / "a.conf"
    f.write_text("[DEFAULT]\nhost = hv-1\n[ovs]\nintegration_bridges = br-int,br-ex\n"
                 "datapath_type = netdev\n[tunnel]\nlocal_ip = 10.0.0.5\nencap = vxlan\n")
    conf = config.load(["--config-file", str(f)])
    assert conf.host == "hv-1"
    assert conf.ovs.integration_bridges == ["br-int", "br-ex"]
    assert (conf.ovs.tap_bridge, conf.ovs.of_listen_port) == ("brtap", 6655)
    assert (str(conf.tunnel.local_ip), conf.tunnel.encap) == ("10.0.0.5", "vxlan")


def refused(tmp_path, text: str) -> str:
    """The one-line error of a configuration file holding ``text``."""
    f = tmp_path / "a.conf"
    f.write_text(text)
    with pytest.raises(config.ConfigError) as info:
        config.load(["--config-file", str(f)])
    return str(info.value)


def test_bad_values_are_refused(tmp_path):
    why = refused(tmp_path, "[tunnel]\nlocal_ip = 10.0.0.5\nencap = geneve\n")
    assert "encap" in why and "geneve" in why
    assert "local_ip" in refused(tmp_path, "[ovs]\ndatapath_type = dummy\n")


def test_tls_settings_go_together(tmp_path):
    f = tmp_path / "a.conf"
    f.write_text("[tunnel]\nlocal_ip = 10.0.0.5\n[tapdb]\nconnection = ssl:10.0.0.1:6641\n"
                 "ssl_key_file = /k.pem\n")
    with pytest.raises(config.ConfigError) as info:
        config.load(["--config-file", str(f)])
    assert str(info.value) == ("[tapdb] ssl_key_file, ssl_cert_file, ssl_ca_cert_file: give "
                               "the private key, the certificate and the CA certificate "
                               "together")
    from sdnagent import pki
    creds = pki.issue(tmp_path / "pki", "hv-1", "chassis")
    f.write_text(f"[DEFAULT]\nhost = hv-1\n[tunnel]\nlocal_ip = 10.0.0.5\n[tapdb]\n"
                 f"ssl_key_file = {creds.private_key}\nssl_cert_file = {creds.certificate}\n"
                 f"ssl_ca_cert_file = {creds.ca_cert}\n")
    assert config.load(["--config-file", str(f)]).tapdb.ssl_ca_cert_file == creds.ca_cert
    # the files are read now, not at the first connection
    f.write_text(f.read_text().replace(creds.ca_cert, "/nowhere/ca.pem"))
    with pytest.raises(config.ConfigError) as info:
        config.load(["--config-file", str(f)])
    assert str(info.value) == "[tapdb] ssl_ca_cert_file /nowhere/ca.pem: no such file"


def test_logging_goes_to_a_file_or_to_the_journal(tmp_path, monkeypatch):
    import logging

    from sdnagent.agent import main
    record = logging.LogRecord("sdnagent", logging.WARNING, __file__, 1, "chassis %s set aside",
                               ("hv-2",), None)
    # under systemd (standard error connected to the journal): priority marks, no time
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    handler = main.log_handler(None)
    assert handler.format(record) == "<4>sdnagent: chassis hv-2 set aside"
    record.levelno = logging.ERROR
    assert handler.format(record).startswith("<3>")
    # elsewhere: a time, the level, the logger
    monkeypatch.delenv("JOURNAL_STREAM")
    text = main.log_handler(None).format(record)
    assert text.endswith(" WARNING sdnagent: chassis hv-2 set aside")
    # a file, which logrotate may move
    path = tmp_path / "agent.log"
    handler = main.log_handler(str(path))
    assert isinstance(handler, logging.handlers.WatchedFileHandler)
    handler.emit(record)
    handler.close()
    assert path.read_text().endswith("sdnagent: chassis hv-2 set aside\n")


def test_a_log_level_and_metrics_settings(tmp_path):
    why = refused(tmp_path, "[DEFAULT]\nlog_level = loud\n[tunnel]\nlocal_ip = 10.0.0.5\n")
    assert "log_level" in why and "loud" in why
    assert "listen_port" in refused(tmp_path, "[tunnel]\nlocal_ip = 10.0.0.5\n[metrics]\n"
                                              "listen_port = 70000\n")
    f = tmp_path / "a.conf"
    f.write_text("[tunnel]\nlocal_ip = 10.0.0.5\n")
    conf = config.load(["--config-file", str(f)])
    assert (conf.metrics.listen_port, conf.metrics.stats_interval) == (None, 10.0)
