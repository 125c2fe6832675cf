"""The router runs the console as one of its services while the config in force has [web]: a
reload that adds the section starts it, one that removes it stops it (a real router in a network
namespace; the console answered over HTTP inside that namespace). Its refusals reach the log."""
from __future__ import annotations

import signal

import pytest

from lvsbus_tools.web import auth
from tests.helpers.routers import Cluster

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def test_a_reload_starts_and_stops_the_console(netns_module, tmp_path):  # noqa: F811  (the fixture)
    t = netns_module(routers=2)
    passwd = tmp_path / "web.passwd"
    auth.set_password(str(passwd), "ada", "admin", "correct horse")
    c = Cluster(t, tmp_path)
    plain = c.config.read_text()

    def http(path: str, *curl: str) -> str:
        return t.run("r1", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *curl,
                     f"http://127.0.0.1:9541{path}", check=False).stdout

    def web_pids() -> list[int]:
        return [l["pid"] for l in c.err_lines("r1") if l.get("event") == "service_started" and l.get("service") == "web"]

    try:
        c.start("r1")
        c.wait(lambda: c.role("r1") == "ACTIVE", 20.0, "r1 active alone")
        assert not web_pids() and http("/login") == "000"  # no [web]: no console
        c.config.write_text(plain + f'\n[web]\naddress = "127.0.0.1:9541"\npassword_file = "{passwd}"\n')
        c.procs["r1"].send_signal(signal.SIGHUP)
        c.wait(lambda: http("/login") == "200", 10.0, "the console answering after the reload")
        assert http("/api/state") == "401"  # no session: refused, and recorded in the router's log
        c.wait(lambda: [e for e in c.events("r1", ("web.request_refused",)) if e.payload["reason"] == "no_session"],
               5.0, "web.request_refused in the log")
        c.config.write_text(plain)
        c.procs["r1"].send_signal(signal.SIGHUP)
        c.wait(lambda: http("/login") == "000", 10.0, "the console gone after the reload that removed [web]")
        assert c.procs["r1"].poll() is None and c.role("r1") == "ACTIVE"
    finally:
        c.stop()
