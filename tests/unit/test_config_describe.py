"""``lvsbus check-config``'s description of a config (lvsbus.cli.config.describe): pinned for
every valid fixture and for configs that reach each line it can print, in
tests/fixtures/config_describe.txt (what it printed when the test was written; a deliberate change
rewrites it: ``python -m tests.unit.test_config_describe``)."""
from __future__ import annotations

from pathlib import Path

from lvsbus.config import ConfigError, loads
from lvsbus.cli.config import describe
from tests.helpers.lvs_config import lvs_toml, scaleout_toml

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "fixtures" / "config_describe.txt"

#: every optional line and clause: preempt delay, ARP refresh, heartbeat off, sync daemon, web
#: console, fwmark and IPv6 services, quorum, inhibit, quiesce, inactive ones, thresholds, a
#: per-server check, program and UDP checks, failover services under service = lvs
EVERYTHING = """
service = "lvs"
serial_no = 7
metrics_address = "127.0.0.1:9539"

[router.lvs1]
address = "192.0.2.1"
priority = 200
device = "eth0"
private_address = "10.9.0.1"

[router.lvs2]
address = "192.0.2.2"
private_address = "10.9.0.2"
private_device = "eth1"
shared_address = "192.0.2.202"
priority = 100

[heartbeat]
enabled = false
keepalive = 0.5
deadtime = 2.0
preempt_delay = 2.5
garp_repeat = 2
garp_refresh = 30

[sync_daemon]
enabled = true
interface = "eth1"
sync_id = 3

[nat_router]
address = "10.0.0.254"
prefixlen = 24

[web]
address = "127.0.0.1:9540"
tls_cert = "/etc/lvsbus/web.crt"
tls_key = "/etc/lvsbus/web.key"

[virtual.web]
address = "192.0.2.80"
device = "eth0"
port = 80
scheduler = "wlc"
forwarding = "nat"
persistence = 300
quiesce = true
inhibit_on_failure = true
quorum = 3
hysteresis = 1
sorry_server = "192.0.2.99"

[virtual.web.check]
kind = "tcp_send_expect"
send = "GET / HTTP/1.0\\r\\n\\r\\n"
expect = "HTTP/1\\\\.[01] 200"
regex = true

[virtual.web.server.a]
address = "10.0.0.11"
weight = 3
upper_threshold = 100

[virtual.web.server.b]
address = "10.0.0.12"
active = false

[virtual.web.server.b.check]
kind = "program"
command = "/bin/check %h"
exit_code = 2

[virtual.mark]
address = "192.0.2.81"
fwmark = 8
scheduler = "rr"
forwarding = "direct"
active = false

[virtual.mark.check]
kind = "program"
command = "/bin/check %h %p"
expect = "OK"

[virtual.mark.server.m]
address = "192.0.2.91"
port = 0

[virtual.dns6]
address = "2001:db8::53"
port = 53
protocol = "udp"
scheduler = "rr"
forwarding = "direct"

[virtual.dns6.check]
kind = "udp"
payload = "ping"

[virtual.dns6.server.d]
address = "2001:db8::1:53"

[failover.ftp]
address = "192.0.2.21"
port = 21
active = false
"""

#: scale-out (BGP) with its consistent scheduler
SCALEOUT = lvs_toml("mh") + scaleout_toml(peers=["10.99.1.100", "10.99.1.101"], bfd=True)
RUNNING_BIRD = lvs_toml("mh") + scaleout_toml(speaker="bird-running", routes_file="/etc/bird/lvsbus-routes.conf",
                                              control_socket="/run/bird/bird.ctl")

#: service = fos: failover services active and not, virtual services ignored
FOS = lvs_toml("rr", service="fos", routers=1) + """[failover.ftp]
address = "10.200.0.21"
device = "eth0"
label = "eth0:3"
port = 21
send = "QUIT"
expect = "220"
start_cmd = "/bin/start ftp"
stop_cmd = "/bin/stop ftp"
[failover.ssh]
address = "10.200.0.22"
port = 22
start_cmd = "/bin/start ssh"
stop_cmd = "/bin/stop ssh"
[failover.off]
address = "10.200.0.23"
port = 23
active = false
start_cmd = "/bin/start off"
stop_cmd = "/bin/stop off"
"""


def _inputs() -> list[tuple[str, str]]:
    """(name, text) of every valid fixture and of the configs above."""
    out = []
    for sub in ("lvscf", "toml"):
        for p in sorted((ROOT / "tests" / "fixtures" / sub).iterdir()):
            out.append((f"{sub}/{p.name}", p.read_text(encoding="utf-8")))
    out += [("everything.toml", EVERYTHING), ("scaleout.toml", SCALEOUT), ("running-bird.toml", RUNNING_BIRD),
            ("fos.toml", FOS)]
    return out


def _described() -> str:
    parts = []
    for name, text in _inputs():
        try:
            loaded = loads(text, name)
        except ConfigError:
            assert name.rpartition("/")[2].startswith("broken_"), name
            continue
        parts.append(f"=== {name}\n{describe(loaded)}\n")
    return "\n".join(parts)


def test_describe_is_as_pinned():
    got = _described()
    assert got.count("=== ") == 12  # the fixtures but the broken ones, and the four above
    assert got == GOLDEN.read_text(encoding="utf-8")


if __name__ == "__main__":  # rewrite the pinned output (a deliberate change to describe)
    GOLDEN.write_text(_described(), encoding="utf-8")
