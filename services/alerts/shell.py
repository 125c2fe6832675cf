"""The alerts shell: the alerts core on the bus, a mail sender and the notify FIFOs (docs/alerts.md).

    python -m lvsbus_services.alerts --state-dir DIR --config FILE --run-start-seq N [--config-seq M]

Every decision (what is sent, to whom, its words) is the core's; this shell only carries out its
two effects, and neither can hold the bus loop, whatever the relay or the FIFO's reader does:

* ``alerts.send_mail``: put in a bounded queue (``queue``: ``[alerts] queue_size``) and the step
  goes on at once. One sender thread talks SMTP to the relay (smtplib: HELO, MAIL FROM, RCPT TO,
  DATA, QUIT), each step bounded by ``timeout``; no retry (keepalived sends each alert once). A
  mail that finds the queue full is dropped, logged and counted. Each mail's fate is published
  as ``alerts.mail_result`` (sent, failed, dropped).
* ``alerts.write_fifo``: the line and a newline, with one ``write`` (atomic below PIPE_BUF) on the
  FIFO opened as keepalived opens it: made (mode 0600) when missing and removed again on stop,
  opened ``O_RDWR | O_NONBLOCK | O_NOFOLLOW``, so a missing reader never blocks (the pipe keeps up
  to 64 KiB for a reader that comes later) and a full pipe drops the line (logged, counted). A
  path that exists and is not a FIFO is never written.

* ``alerts.run_command``: the command run by ``/bin/sh -c`` in its own session, in the background
  (a task on the loop; the step goes on at once), stdin, stdout and stderr to /dev/null, with
  LVSBUS_ALERT (notify_up...), LVSBUS_VIRTUAL and LVSBUS_SERVER in its environment; killed (its
  process group) at ``timeout_ms``; its exit is published as ``alerts.command_finished``.

On stop (SIGTERM), mails still queued get up to ``STOP_GRACE_S`` to go, and commands still running
the same time to end; the rest are logged as lost.
"""
from __future__ import annotations

import asyncio
import errno
import os
import queue
import signal
import smtplib
import socket
import stat
import threading
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import structlog

from lvsbus.host import logs
from lvsbus.host.commands import run_shell
from lvsbus.host.paths import StateDirs
from lvsbus.runtime.core import Effect
from lvsbus.runtime.engine import ServiceRuntime, service_arguments, service_config
from lvsbus.wire.events import Event

from .core import AlertsCore

log = structlog.get_logger("alerts")
#: mails still queued at a stop may take this long to go (the supervisor kills after 3 s)
STOP_GRACE_S = 2.0


def build_message(m: dict, sender: str) -> EmailMessage:
    """The mail of an ``alerts.send_mail`` payload, with keepalived's headers (Date, From, Subject,
    To; X-Mailer names lvsbus)."""
    msg = EmailMessage()
    msg["Date"] = formatdate(localtime=True)
    msg["From"] = sender
    msg["Subject"] = m["subject"]
    msg["X-Mailer"] = "lvsbus"
    msg["To"] = ", ".join(m["to"])
    msg["Message-ID"] = make_msgid("lvsbus")
    msg.set_content(m["body"] + "\n")
    return msg


def send_mail(m: dict) -> None:
    """One mail through the relay the payload names; raises OSError or smtplib.SMTPException."""
    host = socket.getfqdn()
    sender = m["from"] or f"lvsbus@{host}"
    with smtplib.SMTP(m["server"], m["port"], local_hostname=m["helo"] or host, timeout=m["timeout"]) as smtp:
        code, reply = smtp.helo()  # HELO, as keepalived (no ESMTP extensions needed)
        if code != 250:
            raise smtplib.SMTPHeloError(code, reply)
        smtp.send_message(build_message(m, sender), from_addr=sender, to_addrs=m["to"])


class MailSender:
    """The bounded queue and its one sender thread. ``submit`` never blocks; ``report(id, outcome,
    error, seconds, dropped)`` is called for every mail (from the sender thread for sent and failed
    ones: the caller hands it to its loop)."""

    def __init__(self, report, send=send_mail) -> None:
        self.report = report
        self.send = send
        self.queue: queue.Queue | None = None
        self.dropped = 0
        self.sent = 0
        self.failed = 0
        self.thread: threading.Thread | None = None

    def submit(self, m: dict) -> bool:
        if self.queue is None:  # the first mail: its size holds for this process (a reload that
            # changes [alerts] restarts the service: lvsbus.router.supervision.CONFIGURED_BY)
            self.queue = queue.Queue(maxsize=m["queue"])
            self.thread = threading.Thread(target=self._run, name="alerts-mail", daemon=True)
            self.thread.start()
        try:
            self.queue.put_nowait((m, time.monotonic()))
            return True
        except queue.Full:
            self.dropped += 1
            log.warning("mail_dropped", id=m["id"], subject=m["subject"], queued=self.queue.qsize(),
                        dropped=self.dropped, reason="the queue of mails waiting for the relay is full")
            self.report(m["id"], "dropped", "queue full", 0.0, self.dropped)
            return False

    def _run(self) -> None:
        q = self.queue
        assert q is not None
        while True:
            item = q.get()
            if item is None:
                return
            m, queued = item
            error = ""
            try:
                self.send(m)
                self.sent += 1
            except Exception as exc:  # refused, unreachable, timed out, an address smtplib cannot encode...
                self.failed += 1
                error = f"{type(exc).__name__}: {exc}"[:512] or type(exc).__name__
            took = time.monotonic() - queued
            if error:
                log.warning("mail_failed", id=m["id"], server=f"{m['server']}:{m['port']}", error=error,
                            seconds=round(took, 3), failed=self.failed)
            else:
                log.info("mail_sent", id=m["id"], subject=m["subject"], seconds=round(took, 3))
            self.report(m["id"], "failed" if error else "sent", error, took, self.dropped)

    def stop(self, grace: float) -> int:
        """Let queued mails go for ``grace`` s at most; returns how many were left unsent."""
        if self.queue is None or self.thread is None:
            return 0
        deadline = time.monotonic() + grace
        while self.queue.qsize() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self.queue.qsize()
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass
        return left


class Fifos:
    """The notify FIFOs, opened on first use and kept open; lines dropped (no room) are counted."""

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}
        self.made: list[str] = []
        self.dropped = 0
        self.refused: set[str] = set()  # paths said once not to be FIFOs (or unopenable)

    def _open(self, path: str) -> int | None:
        fd = self.fds.get(path)
        if fd is not None:
            return fd
        try:
            os.mkfifo(path, 0o600)
            self.made.append(path)
        except FileExistsError:
            pass
        except OSError as exc:
            self._refuse(path, f"cannot make the FIFO: {exc}")
            return None
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            self._refuse(path, f"cannot open: {exc}")
            return None
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            self._refuse(path, "not a FIFO: nothing is written to it")
            return None
        self.refused.discard(path)
        self.fds[path] = fd
        return fd

    def _refuse(self, path: str, why: str) -> None:
        if path not in self.refused:
            log.error("fifo_unusable", path=path, error=why)
            self.refused.add(path)

    def write(self, path: str, line: str) -> bool:
        fd = self._open(path)
        if fd is None:
            self.dropped += 1
            return False
        data = (line + "\n").encode("utf-8", "replace")
        try:
            os.write(fd, data)
            return True
        except BlockingIOError:
            self.dropped += 1
            log.warning("fifo_line_dropped", path=path, line=line, dropped=self.dropped,
                        reason="the FIFO is full: its reader is not reading")
        except OSError as exc:
            self.dropped += 1
            log.error("fifo_write_failed", path=path, error=str(exc), dropped=self.dropped)
            if exc.errno not in (errno.EAGAIN, errno.EINTR):
                os.close(self.fds.pop(path))  # opened again (made again if removed) for the next line
        return False

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        for path in self.made:
            try:
                if stat.S_ISFIFO(os.lstat(path).st_mode):
                    os.unlink(path)
            except OSError:
                pass
        self.made.clear()


class AlertsShell:
    def __init__(self, state_dir: str, run_start_seq: int) -> None:
        self.dirs = StateDirs(state_dir).make()
        self.core = AlertsCore()
        self.runtime = ServiceRuntime(self.core, self.dirs, execute=self.execute, run_start_seq=run_start_seq)
        self.stop = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.mail = MailSender(self._report)
        self.fifos = Fifos()
        self.commands: set[asyncio.Task] = set()

    def _report(self, id_: int, outcome: str, error: str, seconds: float, dropped: int) -> None:
        """From any thread: the mail's fate, published on the bus by the loop."""
        payload = {"id": id_, "outcome": outcome, "error": error[:512], "seconds": round(max(0.0, seconds), 6),
                   "dropped": dropped}
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        if threading.current_thread() is threading.main_thread():
            self.runtime.publish("alerts.mail_result", payload)
        else:
            try:
                loop.call_soon_threadsafe(self.runtime.publish, "alerts.mail_result", payload)
            except RuntimeError:  # the loop closed meanwhile (stopping)
                pass

    def execute(self, eff: Effect, ev: Event) -> None:
        p = eff.payload
        if eff.type == "alerts.send_mail":
            self.mail.submit(p)
        elif eff.type == "alerts.write_fifo":
            for path in p["paths"]:
                self.fifos.write(path, p["line"])
        elif eff.type == "alerts.run_command":
            task = asyncio.get_running_loop().create_task(self._run_command(p))
            self.commands.add(task)
            task.add_done_callback(self.commands.discard)

    async def _run_command(self, p: dict) -> None:
        env = {**os.environ, "LVSBUS_ALERT": p["kind"], "LVSBUS_VIRTUAL": p["virtual"],
               "LVSBUS_SERVER": p["server"] or ""}
        exit_code, error, ms = await run_shell(p["command"], p["timeout_ms"] / 1000, env=env, kill_on_cancel=True)
        log.info("command_finished", id=p["id"], kind=p["kind"], virtual=p["virtual"], server=p["server"],
                 exit_code=exit_code, duration_ms=ms, error=error)
        try:
            self.runtime.publish("alerts.command_finished", {
                "id": p["id"], "kind": p["kind"], "exit_code": exit_code, "duration_ms": ms, "error": error[:1024]})
        except Exception as exc:  # stopping: the bus client is gone (the log line above says it all)
            log.warning("command_result_not_published", id=p["id"], error=str(exc) or type(exc).__name__)

    def on_start(self) -> None:
        st = self.runtime.state
        s = st.settings or {}
        log.info("alerts_started", router_id=st.router_id, mail_to=s.get("email", []), relay=s.get("smtp_server"),
                 fifos=[x for x in (s.get("notify_fifo"), s.get("role_notify_fifo"), s.get("lvs_notify_fifo")) if x])

    async def main(self) -> int:
        self.loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stop.set)
        try:
            await self.runtime.run(self.stop, on_start=self.on_start)
        finally:
            if self.commands:
                _done, running = await asyncio.wait(set(self.commands), timeout=STOP_GRACE_S)
                for task in running:
                    task.cancel()
                if running:
                    await asyncio.wait(running)
            left = await asyncio.to_thread(self.mail.stop, STOP_GRACE_S)
            if left:
                log.warning("mails_not_sent", count=left, reason="stopping: the relay did not take them in time")
            self.fifos.close()
            log.info("alerts_stopped", sent=self.mail.sent, failed=self.mail.failed, dropped=self.mail.dropped,
                     fifo_lines_dropped=self.fifos.dropped)
        return 0


def main(argv: list[str] | None = None) -> int:
    args = service_arguments("alerts", "alerts: keepalived's mail alerts and notify FIFO lines (docs/alerts.md)").parse_args(argv)
    logs.setup(service="alerts")
    sc = service_config("alerts", args)
    if sc is None:
        return 2
    if sc.config.alerts_wanted() is None:
        log.info("alerts_not_configured")
        return 0
    return asyncio.run(AlertsShell(args.state_dir, args.run_start_seq).main())
