"""Key and certificate files checked before use: each fault in one line naming the file."""
from __future__ import annotations

import datetime

import pytest

from sdnagent import pki, tls

NAMES = ("--private-key", "--certificate", "--ca-cert")
UTC = datetime.timezone.utc


@pytest.fixture
def files(tmp_path):
    return pki.issue(tmp_path / "pki", "hv-0001", "chassis", days=30)


def fault(creds: tls.Tls, **kw) -> str:
    with pytest.raises(tls.TlsFileError) as info:
        tls.check(creds, NAMES, **kw)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_good_files_pass(files):
    tls.check(files, NAMES)
    tls.check(files, NAMES, host="hv-0001")


def test_missing_unreadable_and_not_pem(files, tmp_path):
    gone = str(tmp_path / "nope.pem")
    assert fault(tls.Tls(files.private_key, gone, files.ca_cert)) == \
        f"--certificate {gone}: no such file"
    assert fault(tls.Tls(gone, files.certificate, files.ca_cert)) == \
        f"--private-key {gone}: no such file"
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    assert fault(tls.Tls(files.private_key, str(junk), files.ca_cert)) == \
        f"--certificate {junk}: not a PEM certificate"
    assert fault(tls.Tls(str(junk), files.certificate, files.ca_cert)) == \
        f"--private-key {junk}: not a PEM private key"
    assert fault(tls.Tls(files.private_key, files.certificate, str(junk))) == \
        f"--ca-cert {junk}: not a PEM certificate"
    # a directory where a file should be
    assert fault(tls.Tls(files.private_key, str(tmp_path), files.ca_cert)).startswith(
        f"--certificate {tmp_path}: cannot read it (")


def test_a_key_of_another_certificate(files, tmp_path):
    other = pki.issue(tmp_path / "pki", "hv-0002", "chassis")
    assert fault(tls.Tls(other.private_key, files.certificate, files.ca_cert)) == (
        f"--private-key {other.private_key}: not the key of --certificate {files.certificate}")


def test_expired_and_not_yet_valid(files):
    later = datetime.datetime.now(UTC) + datetime.timedelta(days=40)
    assert fault(files, now=later).startswith(f"--certificate {files.certificate}: expired on ")
    earlier = datetime.datetime.now(UTC) - datetime.timedelta(days=1)
    assert fault(files, now=earlier).startswith(
        f"--certificate {files.certificate}: not valid before ")
    assert fault(files, now=earlier).endswith("(or this host's clock is behind)")


def test_an_agent_certificate_names_its_chassis(files):
    assert fault(files, host="hv-0002") == (
        f"--certificate {files.certificate}: its common name is hv-0001, not this agent's "
        "host hv-0002")


def test_describe_names_subject_and_issuer(files):
    assert tls.describe(files.certificate) == (
        f"{files.certificate} (CN hv-0001, issued by sdnagent chassis CA)")
