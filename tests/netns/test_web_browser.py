"""The console in a real browser (issue 16): headless Chromium (Debian's chromium and
chromium-driver) driven by selenium, against a real router pair in network namespaces, each
router starting its console from the [web] section. The browser runs in the client's namespace
(tests/helpers/web_browser.py): it logs in, sees a real server go DOWN live when its process is stopped,
without reloading the page, drains another and sees it at weight 0, and hands over and sees the
role change, the events (filtered) and timeline pages, and the config editor (an error shown
with its line, then an edit applied: the file written and the router reloaded), and a real failover (the
active peer SIGKILLed: the page, on the backup, turns ACTIVE live); the test checks the same in the active router's log (lvsd's desired table), and
that both logs replay. Screenshots are written under the test's tmp dir (the paths are printed).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from lvsbus_tools.web import auth
from lvsbus.demo.netns import NAT, VIP
from tests.helpers.routers import RESPONDER, ROOT, Cluster, start_responders

pytestmark = [pytest.mark.netns, pytest.mark.slow]

NEEDS = [p for p in ("/usr/bin/chromium", "/usr/bin/chromedriver") if not os.path.exists(p)]


@pytest.mark.skipif(bool(NEEDS), reason=f"needs Debian's chromium and chromium-driver ({', '.join(NEEDS)} missing; scripts/setup.sh installs them)")
def test_the_console_in_a_browser_live_down_drain_and_handover(netns_module, tmp_path):  # noqa: F811  (the fixture)
    t = netns_module(routers=2, servers=2)
    start_responders(t, t.routers)
    passwd = tmp_path / "web.passwd"
    auth.set_password(str(passwd), "ada", "admin", "correct horse")
    c = Cluster(t, tmp_path)
    r1_address = t.router_address(1)
    text = c.config.read_text().replace(
        '[virtual.echo.check]\nkind = "udp"', '[virtual.echo.check]\nkind = "udp"\ninterval = 0.2\ntimeout = 0.2\nrise = 1\nfall = 2')
    text += f'\n[virtual.echo.server.s2]\naddress = "{NAT}.102"\n'
    c.config.write_text(text)
    # each router's console on its own public address (the config is shared: one [web] per router is
    # not a thing; the address 0.0.0.0 serves on whichever router reads it)
    c.config.write_text(c.config.read_text() + f'\n[web]\naddress = "0.0.0.0:9540"\npassword_file = "{passwd}"\n')
    servers = {s: t.popen(s, [sys.executable, "-c", RESPONDER, s], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for s in ("s1", "s2")}
    shots = tmp_path / "browser"
    shots.mkdir()
    browser = None
    lines: list[dict] = []

    def read_lines() -> None:
        out = (shots / "steps.jsonl").read_text() if (shots / "steps.jsonl").exists() else ""
        lines[:] = [json.loads(x) for x in out.splitlines() if x.startswith("{")]

    def step(name: str, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            read_lines()
            for x in lines:
                if x["step"] == "error":
                    raise AssertionError(f"the browser failed: {x['error']} (screenshots in {shots})")
                if x["step"] == name or (name.startswith("wait:") and x["step"] == "wait" and x["for"] == name[5:]):
                    return x
            if browser is not None and browser.poll() is not None and not any(x["step"] == name for x in lines):
                raise AssertionError(f"the browser exited ({browser.returncode}) before {name}: {lines}; "
                                     f"stderr: {(shots / 'browser.err').read_text()[-2000:]}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for the browser's {name}: {lines}")

    def weights(r: str) -> dict:
        """Each real server's weight in r's desired table now (folded from lvsd's tables and deltas)."""
        w: dict = {}
        for e in c.events(r, ("lvsd.table_desired", "lvsd.table_delta")):
            if e.type == "lvsd.table_desired":
                w = {d: a["weight"] for svc in e.payload["table"].values() for d, a in svc["dests"].items()}
            for op in e.payload.get("ops", []):
                if op["op"] == "del_dest":
                    w.pop(op["dest"], None)
                elif op["dest"]:
                    w[op["dest"]] = op["attrs"]["weight"]
        return w

    try:
        c.start()
        c.wait_steady("r1")
        c.wait(lambda: weights("r1") == {f"{NAT}.101:7": 1, f"{NAT}.102:7": 1}, 10.0, "both real servers in r1's table")
        c.wait(lambda: any(l.get("event") == "web_listening" for l in c.err_lines("r1")), 10.0, "r1's console listening")
        browser = t.popen("c", [sys.executable, str(ROOT / "tests" / "helpers" / "web_browser.py"), f"http://{r1_address}:9540",
                                "ada", "correct horse", str(shots)],
                          stdout=open(shots / "steps.jsonl", "w"), stderr=open(shots / "browser.err", "w"),
                          cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(shots)})
        first = step("overview", 60.0)
        assert first["role"] == "ACTIVE" and first["s1"] == "1" and first["s2"] == "1"
        assert first["peers"].startswith("r2 BACKUP: private up ") and ", public up " in first["peers"]  # each link, aged

        step("wait:down", 10.0)
        servers["s2"].kill()  # by PID: the responder this test started
        servers["s2"].wait(5)
        (shots / "go-down").touch()
        seen = step("down_seen", 20.0)
        assert seen["same_page"] == "yes"  # live: the page was never reloaded
        c.wait(lambda: f"{NAT}.102:7" not in weights("r1"), 5.0, "s2 out of r1's table")

        drained = step("drained", 20.0)
        assert drained["same_page"] == "yes" and "echo/s1 now drained" in drained["message"]
        (req,) = c.events("r1", ("operator.server_action",))
        assert req.payload["by"] == "ada" and req.payload["via"] == "web" and req.payload["action"] == "drain"
        assert weights("r1") == {f"{NAT}.101:7": 0}  # lvsd's desired table: s1 at weight 0
        assert [e for e in c.events("r1", ("web.login",)) if e.payload["ok"]]

        moved = step("handed_over", 20.0)
        assert moved["role"] == "BACKUP" and moved["same_page"] == "yes"
        c.wait(lambda: c.roles() == {"r1": "BACKUP", "r2": "ACTIVE"}, 5.0, "r2 active after the handover")
        events = step("events", 20.0)
        assert len(events["rows"]) == 3 and "operator ada (web) asks: drain echo/s1" in " ".join(events["rows"])
        assert step("timeline", 20.0)["handover"] is True
        conf = step("config", 30.0)
        assert "700000 is out of range" in conf["error"] and ":" in conf["error"]  # with its line
        assert c.config.read_text().endswith("# edited in the console\n")
        written = c.events("r1", ("operator.config_written",))
        reloaded = [e for e in c.events("r1", ("config.loaded",)) if e.payload["reload"]]
        assert written and written[-1].payload["by"] == "ada" and reloaded
        assert reloaded[-1].payload["digest"] == written[-1].payload["digest"] and reloaded[-1].seq > written[-1].seq

        step("wait:failover", 20.0)
        os.killpg(c.procs["r2"].pid, signal.SIGKILL)  # the active router, whole: its children die with it
        c.procs["r2"].wait(5)
        t.run("r2", "ip", "addr", "del", f"{VIP}/32", "dev", "eth0", check=False)  # a dead host holds nothing
        (shots / "go-failover").touch()
        seen = step("failover_seen", 30.0)
        assert seen["same_page"] == "yes" and "peer_dead" in seen["reason"] and f"{VIP}: r1" in seen["vips"]
        assert seen["peers"].startswith("r2 dead: private silent ") and ", public silent " in seen["peers"]
        step("done", 20.0)
    finally:
        if browser is not None and browser.poll() is None:
            browser.kill()  # by PID: its chromedriver and chromium go with their parent's quit, or below
            browser.wait(10)
        c.stop()
        for p in servers.values():
            if p.poll() is None:
                p.kill()
                p.wait(5)
        shutil.rmtree(shots / "profile", ignore_errors=True)
        print(f"\nscreenshots: {sorted(str(p) for p in shots.glob('*.png'))}")
    from lvsbus_tools.replay import verify

    for r in t.routers:
        rep = verify(str(c.state(r) / "log"))
        assert rep.ok, rep.format()
