"""Alerts of a real ``lvsbus router`` in a network namespace (docs/alerts.md): with ``[alerts]`` the
router starts the alerts service; an SMTP sink (aiosmtpd) on the router's 127.0.0.1 gets the mail
of its taking the VIP, then the mails of its real server going down (the UDP echo server in the
server's namespace killed), and the notify FIFO gets keepalived's lines."""
from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time

import pytest

from lvsbus.demo.netns import router_toml, write_key

pytest.importorskip("aiosmtpd")
pytestmark = [pytest.mark.netns, pytest.mark.slow]

SINK = textwrap.dedent("""
    import json, sys, time
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            with open(sys.argv[2], "a") as fh:
                fh.write(json.dumps({"to": envelope.rcpt_tos, "data": envelope.content.decode()}) + "\\n")
            return "250 OK"

    c = Controller(Handler(), hostname="127.0.0.1", port=int(sys.argv[1]))
    c.start()
    print("sink ready", flush=True)
    while True:
        time.sleep(1)
""")
ECHO = textwrap.dedent("""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 7))
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(data, peer)
""")


def subjects(path) -> list[str]:
    import email
    import email.policy

    if not path.exists():
        return []
    return [str(email.message_from_string(json.loads(line)["data"], policy=email.policy.default)["Subject"])
            for line in path.read_text().splitlines() if line.strip()]


def test_a_router_mails_its_role_and_a_real_server_down(netns, tmp_path):
    topo = netns(routers=1, servers=1)
    (tmp_path / "sink.py").write_text(SINK)
    (tmp_path / "echo.py").write_text(ECHO)
    mails, fifo = tmp_path / "mails.jsonl", tmp_path / "notify.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        sink = topo.popen("r1", [sys.executable, str(tmp_path / "sink.py"), "2525", str(mails)], stdout=-1)
        assert b"sink ready" in sink.stdout.readline()
        echo = topo.popen("s1", [sys.executable, str(tmp_path / "echo.py")])
        cfg = tmp_path / "lvsbus.toml"
        alerts = f"""
[alerts]
email = ["ops@example.org"]
smtp_server = "127.0.0.1"
smtp_port = 2525
smtp_timeout = 5.0
notify_fifo = "{fifo}"
"""
        text = router_toml(topo, write_key(tmp_path / "key"), extra=alerts)
        cfg.write_text(text.replace("[virtual.echo.check]\nkind = \"udp\"\n",
                                    "[virtual.echo.check]\nkind = \"udp\"\ninterval = 0.3\ntimeout = 0.3\nfall = 1\n"))
        router = topo.popen("r1", [sys.executable, "-m", "lvsbus.cli", "router", "--config", str(cfg),
                                   "--state-dir", str(tmp_path / "r1")], stderr=open(tmp_path / "r1.err", "wb"))
        deadline = time.monotonic() + 30
        while "[r1] VRRP Instance default - Entering MASTER state" not in subjects(mails):
            assert time.monotonic() < deadline, (subjects(mails), (tmp_path / "r1.err").read_text()[-3000:])
            assert router.poll() is None, (tmp_path / "r1.err").read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(1.0)  # s1's first verdict (UP: no alert, as keepalived)
        os.killpg(echo.pid, signal.SIGKILL)
        # as keepalived: the instance starts in BACKUP (a mail too), then takes over
        want = ["[r1] VRRP Instance default - Entering BACKUP state",
                "[r1] VRRP Instance default - Entering MASTER state",
                "[r1] Realserver [10.99.3.101]:udp:7 of virtual server [10.99.1.50]:udp:7 - DOWN",
                "[r1] Virtualserver [10.99.1.50]:udp:7 - DOWN"]
        deadline = time.monotonic() + 15
        while subjects(mails) != want:
            assert time.monotonic() < deadline, (subjects(mails), (tmp_path / "r1.err").read_text()[-3000:])
            time.sleep(0.2)
        got = b""
        while got.count(b"\n") < 4:
            try:
                got += os.read(reader, 4096)
            except BlockingIOError:
                assert time.monotonic() < deadline, got
                time.sleep(0.05)
        assert got.decode().splitlines()[:4] == [
            'INSTANCE "default" BACKUP 200',
            'INSTANCE "default" MASTER 200',
            "RS [10.99.3.101]:udp:7 [10.99.1.50]:udp:7 DOWN",
            "VS [10.99.1.50]:udp:7 DOWN",
        ]
        router.send_signal(signal.SIGTERM)
        assert router.wait(20) == 0
    finally:
        os.close(reader)
