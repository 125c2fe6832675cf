"""The alerts service for real (docs/alerts.md): a broker, nanny checking a real server on loopback,
the alerts shell (``python -m lvsbus_services.alerts``), and on the relay's side a local SMTP sink
(aiosmtpd on 127.0.0.1): the mails keepalived would send on a role change and a real server
going down; a relay that accepts and never answers delays nothing (FIFO lines keep coming, mails
beyond the queue are dropped and counted); a real FIFO gets keepalived's exact lines."""
from __future__ import annotations

import email
import email.policy
import os
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from lvsbus.wire import catalog  # noqa: F401
from tests.helpers.procs import Listener, ServiceRig

aiosmtpd = pytest.importorskip("aiosmtpd.controller")

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    """A local SMTP server (aiosmtpd) keeping every mail it is given."""

    def __init__(self) -> None:
        self.mails: list[dict] = []
        self.port = free_port()
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
                sink.mails.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                                   "helo": session.host_name, "data": envelope.content.decode("utf-8", "replace")})
                return "250 OK"

        self.controller = aiosmtpd.Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> "Sink":
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    def subjects(self) -> list[str]:
        return [str(email.message_from_string(m["data"], policy=email.policy.default)["Subject"]) for m in self.mails]


class Mute:
    """A 'relay' that accepts connections and never says a word (a hung mail server)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def write_config(path: Path, server_port: int, alerts: str) -> Path:
    path.write_text(f"""
[router.lvs1]
address = "127.0.0.1"

[virtual.web]
address = "10.9.0.1"
port = 80

[virtual.web.check]
kind = "tcp_connect"
interval = 0.2
timeout = 0.2
rise = 1
fall = 1

[virtual.web.server.s1]
address = "127.0.0.1"
port = {server_port}

[alerts]
router_id = "LVS_TEST"
{alerts}
""")
    return path


class AlertsRig(ServiceRig):
    """The rig (tests/helpers/procs.py), and the role changes pulse would publish."""

    def role(self, new: str, old: str = "BACKUP", priority: int = 100, group: str = "default") -> int:
        return self.client.publish_acked("router.role_changed", {
            "node": "lvs1", "old": old, "new": new, "reason": "peer_dead", "priority": priority, "epoch": 1,
            "peer": None, "group": group}, version=4)


@pytest.fixture
def router(rigs):
    return lambda config: rigs(config, AlertsRig)


@pytest.mark.slow
def test_mails_on_a_role_change_and_a_real_server_down(tmp_path, router):
    s1 = Listener().start()
    with Sink() as sink:
        cfg = write_config(tmp_path / "lvs.toml", s1.port, f"""
email = ["ops@example.org", "noc@example.org"]
email_from = "lvsbus@lvs1.example.org"
smtp_server = "127.0.0.1"
smtp_port = {sink.port}
smtp_helo_name = "lvs1.example.org"
smtp_timeout = 5.0
""")
        r = router(cfg)
        r.start("nanny")
        r.start("alerts")
        r.wait(lambda: r.events("health.real_server_up"), 10, "s1 UP")
        r.role("ACTIVE", priority=150)
        r.wait(lambda: len(sink.mails) >= 1, 10, "the role change's mail")
        s1.stop()
        r.wait(lambda: len(sink.mails) >= 3, 10, "the real server's and the virtual service's mails")
        assert sink.subjects() == [
            "[LVS_TEST] VRRP Instance default - Entering MASTER state",
            f"[LVS_TEST] Realserver [127.0.0.1]:tcp:{s1.port} of virtual server [10.9.0.1]:tcp:80 - DOWN",
            "[LVS_TEST] Virtualserver [10.9.0.1]:tcp:80 - DOWN",
        ]
        first = sink.mails[0]
        assert first["from"] == "lvsbus@lvs1.example.org" and first["to"] == ["ops@example.org", "noc@example.org"]
        assert first["helo"] == "lvs1.example.org"
        assert "=> VRRP Instance is now owning VRRP VIPs <=" in first["data"]
        assert "To: ops@example.org, noc@example.org" in first["data"] and "X-Mailer: lvsbus" in first["data"]
        assert "=> CHECK failed on service : refused <=" in sink.mails[1]["data"]
        r.wait(lambda: len(r.events("alerts.mail_result")) == 3, 5, "three mail results")
        assert [e.payload["outcome"] for e in r.events("alerts.mail_result")] == ["sent"] * 3
        # each mail was decided by the core (recorded, with its cause) before the shell sent it
        sent = r.events("alerts.send_mail")
        assert [e.payload["id"] for e in sent] == [1, 2, 3] and all(e.source == "alerts" for e in sent)
        assert r.stop("alerts") == 0


@pytest.mark.slow
def test_a_dead_relay_delays_nothing(tmp_path, router):
    mute = Mute()
    fifo = tmp_path / "notify.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        cfg = write_config(tmp_path / "lvs.toml", 9, f"""
email = ["ops@example.org"]
smtp_server = "127.0.0.1"
smtp_port = {mute.port}
smtp_timeout = 30.0
queue_size = 1
notify_fifo = "{fifo}"
""")
        r = router(cfg)
        r.start("alerts")
        r.wait(lambda: (tmp_path / "alerts.err").exists() and "alerts_started" in (tmp_path / "alerts.err").read_text(),
               10, "the alerts service")
        got = b""
        roles = ["ACTIVE", "BACKUP"] * 3
        took = []
        for i, new in enumerate(roles):
            t0 = time.monotonic()
            r.role(new, old="BACKUP" if new == "ACTIVE" else "ACTIVE", priority=100 + i)
            want = f'INSTANCE "default" {"MASTER" if new == "ACTIVE" else "BACKUP"} {100 + i}\n'.encode()
            while want not in got:
                assert time.monotonic() - t0 < 5, (got, (tmp_path / "alerts.err").read_text()[-2000:])
                try:
                    got += os.read(reader, 4096)
                except BlockingIOError:
                    time.sleep(0.005)
            took.append(time.monotonic() - t0)
        # every line came at once although the relay has held the first mail all along (30 s timeout)
        assert max(took) < 1.0, took
        assert len(mute.conns) == 1  # the sender is stuck on the first mail
        # one mail with the sender, one in the queue (queue_size 1), the other four dropped and counted
        r.wait(lambda: len(r.events("alerts.mail_result")) == 4, 5, "four drops recorded")
        results = [e.payload for e in r.events("alerts.mail_result")]
        assert [p["outcome"] for p in results] == ["dropped"] * 4
        assert [p["dropped"] for p in results] == [1, 2, 3, 4] and [p["id"] for p in results] == [3, 4, 5, 6]
        assert len(r.events("alerts.send_mail")) == 6 and len(r.events("alerts.write_fifo")) == 6
        t0 = time.monotonic()
        assert r.stop("alerts") == 0  # a stop does not wait for the relay either (2 s grace at most)
        assert time.monotonic() - t0 < 5
        log = (tmp_path / "alerts.err").read_text()
        assert '"mail_dropped"' in log and '"mails_not_sent"' in log
    finally:
        os.close(reader)
        mute.close()


@pytest.mark.slow
def test_notify_fifo_lines_are_keepalived_s(tmp_path, router):
    s1 = Listener().start()
    fifo = tmp_path / "notify.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    made = tmp_path / "role.fifo"  # absent: the service makes it, and removes it when it stops
    try:
        cfg = write_config(tmp_path / "lvs.toml", s1.port, f'notify_fifo = "{fifo}"\nrole_notify_fifo = "{made}"\n')
        r = router(cfg)
        r.start("nanny")
        r.start("alerts")
        r.wait(lambda: r.events("health.real_server_up"), 10, "s1 UP")
        r.role("ACTIVE", priority=150)
        r.wait(made.exists, 5, "the role FIFO made")
        assert stat.S_ISFIFO(os.stat(made).st_mode) and stat.S_IMODE(os.stat(made).st_mode) == 0o600
        s1.stop()
        r.wait(lambda: len(r.events("alerts.write_fifo")) == 3, 10, "three lines")
        s1 = Listener(s1.port).start()
        r.wait(lambda: len(r.events("alerts.write_fifo")) == 5, 10, "five lines")
        got = b""
        deadline = time.monotonic() + 5
        while got.count(b"\n") < 5 and time.monotonic() < deadline:
            try:
                got += os.read(reader, 4096)
            except BlockingIOError:
                time.sleep(0.01)
        assert got.decode().splitlines() == [
            'INSTANCE "default" MASTER 150',
            f"RS [127.0.0.1]:tcp:{s1.port} [10.9.0.1]:tcp:80 DOWN",
            "VS [10.9.0.1]:tcp:80 DOWN",
            f"RS [127.0.0.1]:tcp:{s1.port} [10.9.0.1]:tcp:80 UP",
            "VS [10.9.0.1]:tcp:80 UP",
        ]
        # the role FIFO had no reader: its line waits in the pipe, as with keepalived's O_RDWR open
        assert r.stop("alerts") == 0
        assert not made.exists() and fifo.exists()  # the one it made is gone; the operator's stays
    finally:
        os.close(reader)
        s1.stop()


@pytest.mark.slow
def test_notify_and_quorum_commands_run_in_the_background_without_an_alerts_section(tmp_path, router):
    """keepalived's checker notify commands: no [alerts] (no mail, no FIFO), yet the alerts service
    runs; s1 goes down: its notify_down (which then hangs) and its service's quorum_down run, neither
    waiting for the other; s1 back: notify_up and quorum_up. Each command recorded before it runs,
    its end after; a command still running at the stop is killed and said so."""
    s1 = Listener().start()
    out = tmp_path / "commands.log"
    line = f'echo "$LVSBUS_ALERT $LVSBUS_VIRTUAL $LVSBUS_SERVER" >> {out}'
    cfg = write_config(tmp_path / "lvs.toml", s1.port, "")
    text = cfg.read_text().replace("\n[alerts]\nrouter_id = \"LVS_TEST\"\n", "\n")
    text = text.replace("[virtual.web.check]", f"quorum_up = '{line}'\nquorum_down = '{line}'\n\n[virtual.web.check]")
    text += f"notify_up = '{line}'\nnotify_down = '{line}; exec sleep 60'\n"
    cfg.write_text(text)
    assert "[alerts]" not in text
    r = router(cfg)
    r.start("nanny")
    r.start("alerts")
    r.wait(lambda: r.events("health.real_server_up"), 10, "s1 UP")
    port = s1.port
    s1.stop()
    r.wait(lambda: out.exists() and len(out.read_text().splitlines()) >= 2, 10, "notify_down and quorum_down")
    assert sorted(out.read_text().splitlines()) == ["notify_down web s1", "quorum_down web "]
    s1 = Listener(port).start()
    try:
        r.wait(lambda: len(out.read_text().splitlines()) >= 4, 10, "notify_up and quorum_up")
        assert sorted(out.read_text().splitlines()[2:]) == ["notify_up web s1", "quorum_up web "]
        r.wait(lambda: len(r.events("alerts.command_finished")) >= 3, 5, "three commands finished")
        runs = {e.payload["id"]: e for e in r.events("alerts.run_command")}
        assert [runs[i].payload["kind"] for i in sorted(runs)] == ["notify_down", "quorum_down", "notify_up", "quorum_up"]
        assert all(e.source == "alerts" for e in runs.values())
        assert not r.events("alerts.send_mail") and not r.events("alerts.write_fifo")
        assert r.stop("alerts") == 0  # notify_down still sleeps: killed at the stop
        err = (tmp_path / "alerts.err").read_text()
        assert '"error": "the service stopped: killed"' in err and '"kind": "notify_down"' in err
    finally:
        s1.stop()
