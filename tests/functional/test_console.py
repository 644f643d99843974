"""The API's console in a real browser (Debian's chromium, headless, driven by Selenium):
the sessions of the example appear with their pictures and states, a session disabled
from the page changes state on the agents, the page follows the counters, and a
screenshot is kept."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from sdnagent import sandbox
from sdnagent.api import identity
from tests.conftest import require_ovs
from tests.functional.mirrorlab import BIN, MirrorLab, wait_until
from tests.functional.test_agent import start_agents, target_port

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in requirements.txt")
By = pytest.importorskip("selenium.webdriver.common.by").By
Service = pytest.importorskip("selenium.webdriver.chrome.service").Service
StaleElementReferenceException = pytest.importorskip(
    "selenium.common.exceptions").StaleElementReferenceException

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SHOTS = Path(os.environ.get("SDNAGENT_SCREENSHOTS", "/tmp/sdnagent-screenshots"))


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are missing (tools/setup installs them)")
        pytest.skip("chromium and chromedriver are not installed (tools/setup installs "
                    "Debian's chromium and chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_console_shows_the_sessions_and_disables_one(browser):
    require_ovs()
    lab = sandbox.Lab()
    proc = None
    try:
        lab.start()
        mlab = MirrorLab(lab)
        for vm in ("vm-161", "vm-230", "vm-99"):
            mlab.vm("host-a", vm)
        start_agents(mlab)
        target_port(mlab, "host-b")
        mlab.example(target02_ip=sandbox.COLLECTOR_IP)
        mlab.wait_source("session-01", "vm-230")
        tokens = lab.dir / "tokens"
        token = identity.add(tokens, "person", "admin")
        port = sandbox.free_port()
        proc = subprocess.Popen([str(BIN / "sdnagent-api"), "serve", "--db", lab.remote,
                                 "--listen", f"127.0.0.1:{port}", "--tokens", str(tokens),
                                 "--audit-log", str(lab.dir / "audit.jsonl")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/console"

        def loaded() -> bool:
            try:
                browser.get(url)
            except Exception:
                return False
            return bool(browser.find_elements(By.ID, "token"))
        wait_until(loaded, 20, "the console to load")
        browser.find_element(By.ID, "token").send_keys(token)
        browser.find_element(By.ID, "signin").click()

        # the page draws itself again every 2 s: read it in one script each time
        def state(name: str) -> str:
            return browser.execute_script(
                "const r = document.getElementById('session-' + arguments[0]);"
                "return r ? r.querySelector('.state').textContent : '';", name)

        def text(name: str) -> str:
            return browser.execute_script(
                "const r = document.getElementById('session-' + arguments[0]);"
                "return r ? r.textContent : '';", name)
        wait_until(lambda: state("session-01") == "active" and state("session-02") == "active",
                   20, "both sessions active on the page")
        # each session's picture: its source on its chassis, the filter, the target
        pictures = browser.execute_script(
            "return [...document.querySelectorAll('svg.picture')].map(svg => ["
            "[...svg.querySelectorAll('text')].map(t => t.textContent),"
            "[...svg.querySelectorAll('rect')].map(r => r.dataset.state)]);")
        assert pictures[0] == [["vm-230 (in) @host-a", "filter filter-01", "target target-01"],
                               ["active", "active", "active"]], pictures
        assert len(pictures) == 2
        # the page follows the counters
        mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)
        wait_until(lambda: "1 packets" in text("session-01"), 30,
                   "session-01's counters on the page")
        # disabled from the page: the agents apply it, and the page says so
        def click() -> bool:  # a person's click, on the button as drawn at that moment
            try:
                browser.find_element(By.CSS_SELECTOR, "#session-session-01 .toggle").click()
                return True
            except StaleElementReferenceException:
                return False
        wait_until(click, 10, "the disable button")
        wait_until(lambda: state("session-01") == "disabled", 20, "session-01 disabled")
        wait_until(lambda: mlab.source_state("session-01", "vm-230").get("state") == "disabled",
                   20, "the agent to disable session-01")
        # a trace from the form
        browser.find_element(By.ID, "trace-port").send_keys("vm-230")
        browser.find_element(By.ID, "trace-packet").send_keys(
            "udp,nw_src=192.168.0.161,nw_dst=192.168.0.230,tp_dst=1235")
        browser.find_element(By.ID, "trace-run").click()
        wait_until(lambda: "mirrored by session-02" in browser.find_element(
            By.ID, "trace-out").text, 10, "the trace")
        SHOTS.mkdir(parents=True, exist_ok=True)
        shot = SHOTS / "console.png"
        assert browser.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10000
    finally:
        if proc is not None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(10)
        lab.stop()
        shutil.rmtree(lab.dir, ignore_errors=True)
