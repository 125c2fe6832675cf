"""``lvsbus router``: one router's process tree, in the foreground (systemd Type=notify).

    lvsbus router (this supervisor)
      ├── broker        python -m lvsbus.cli broker --node NAME --state-dir DIR
      ├── pulse         python -m lvsbus_services.pulse --state-dir DIR --config FILE --run-start-seq N --config-seq M
      ├── nanny         (always: checks run on the backup too, so a new active knows the health)
      ├── ipvs          (always: the kernel is touched only once lvsd has published a table,
      │                  and the connection sync daemon runs as backup on a backup router)
      ├── lvsd          (active only while pulse is ACTIVE; a silent --standby otherwise, told
      │                  to go on the takeover: no process start nor log fold on that path)

Start: load and validate the config (exit 1 with every error), find which router this host is from
its addresses, check the heartbeat key file, start the broker and wait until it is ready, publish
``config.loaded`` (acknowledged: its seq is the run start seq every service gets), start the
services, then ``READY=1`` to systemd.

The config in force is the one recorded: every service is started (and restarted) with
``--config-seq``, the seq of the ``config.loaded`` in force (the run's, then the last reload
accepted), and takes its config from that event, not from the file: a broken file whose reload was
refused stays on disk without reaching a service that restarts later.

lvsd follows pulse's effect events: the supervisor subscribes to ``pulse.start_lvsd`` /
``pulse.stop_lvsd`` on the bus and starts (tells its standby to go) or stops it itself (no extra
event type: the effect already is the command, and it is in the log). See docs/router.md.

Supervision: the decisions are ``lvsbus.router.supervision.RestartPolicy`` (pure, time as an argument):
every death of a service's process counts for that service, whichever process it was (the broker
too: its history no longer starts over with each new process). The next process comes at once,
then after 0.2, 0.4, 0.8, 1.6 s... (at most 5 s) while earlier deaths are within ``RESTART_WINDOW``;
the ``MAX_RESTARTS + 1``-th death within it is a restart loop: the router steps down
(``router.shutdown_requested`` {graceful: false}, VIPs released) and exits 1. Each death publishes
``router.service_restarted`` {service, attempt (the service's count in this run), exit}.

Warm spares (``SPARES``: the broker and pulse): besides the live process, a second one has started,
imported everything and waits on the service's lock (``lvsbus.host.servicelock``: an flock the live
one holds for its life). When the live one dies, even by SIGKILL, the kernel drops its lock and the
spare carries on at once (recovers, binds, serves): pulse's heartbeats pause for tens of ms, not a
Python start (0.3-0.5 s, more than a short deadtime). The supervisor then makes a new spare after
the policy's delay, and only once the live one holds the lock (``/proc/locks``), so two never race
for it. A spare that dies while it waits is a death of the service too. The VIPs are not touched
while pulse is down.

The config's ``hard_shutdown`` (lvs.cf; Piranha's lvsd shut LVS down when a nanny died, unless it
was 0) decides for nanny: with ``hard_shutdown = false`` a nanny restart loop does not step the
router down; it runs on without health checks (the IPVS table stays as it was),
``router.service_abandoned`` is recorded and the log says manual action is needed; a reload
(SIGHUP) tries nanny again.

Signals (handlers only set flags; the loop wakes through a wakeup fd):
SIGTERM/SIGINT: ``router.shutdown_requested`` {graceful: true}; pulse hands over (its final
leaving heartbeat) and exits; the other children are stopped by PID, then the broker.
SIGHUP: reload. An invalid file gives ``config.reload_refused`` and the running config stays; a
valid one gives ``config.loaded`` with ``reload = true`` and the diff, and its seq becomes the
``--config-seq`` of every later (re)start.

Privileges (``lvsbus.host.privileges``): run as root, the supervisor keeps its own and starts each
child with only the capabilities that service needs (pulse: NET_ADMIN, NET_RAW, NET_BIND_SERVICE;
the applier: NET_ADMIN; nanny: NET_RAW when a check runs a program; the rest: none), uid 0 and
no_new_privs, dropped between fork and exec. ``--keep-privileges`` turns that off.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import structlog

from lvsbus.host import privileges
from lvsbus.host import servicelock
from lvsbus.config import ConfigError, Issue, LoadedConfig, derive, diff, identify_local_router, to_dict
from lvsbus.host.configfiles import load_config as load
from lvsbus.config.derive import loaded_payload
from lvsbus.host.keyfile import load_key
from lvsbus.host.paths import StateDirs
from lvsbus.router import supervision
from lvsbus.router import zygote
from lvsbus.router.supervision import (ABANDON, GIVE_UP, LVSD_START, LVSD_STOP, ROUTER_SUBS, SPARES, RestartLimits,
                                       Supervision, restarted_payload)

log = structlog.get_logger("lvsbus.router.supervisor")

#: the restart policy's defaults (lvsbus.router.supervision; ``lvsbus router --max-restarts/--restart-window``)
MAX_RESTARTS = RestartLimits().max_restarts
RESTART_WINDOW = RestartLimits().window_s
#: the heartbeat's path (pulse, and the broker its timers go through) runs at this nice value, so
#: that a busy host (a spare importing, a check storm) delays heartbeats less; a spare waits at 0
#: and is raised when it takes over
HEARTBEAT_NICE = -10
HANDOVER_TIMEOUT = 3.0
STOP_TIMEOUT = 3.0
BROKER_READY_TIMEOUT = 15.0

#: services started as children, in order: (name, module, when); when (lvsbus.router.supervision.SERVICES
#: decides): "always", "active" (only while pulse is ACTIVE; lvsd waits as a --standby meanwhile),
#: or "configured" (metrics: when an address is set; web: with a [web] section, docs/console.md;
#: alerts: with an [alerts] section, docs/alerts.md)
MODULES = {"web": "lvsbus_tools.web"}  # the console draws timelines, so it lives with the tools
SERVICES = tuple((name, MODULES.get(name, f"lvsbus_services.{name}"), when) for name, when in supervision.SERVICES)


def _missing_services() -> list[str]:
    """The service modules this installation lacks (none, unless it is broken): the router refuses
    to start then, rather than run without one of its services."""
    import importlib.util

    missing = []
    for _name, module, _when in SERVICES:
        try:
            found = importlib.util.find_spec(module + ".__main__") is not None
        except ImportError:
            found = False
        if not found:
            missing.append(module)
    return missing


def sd_notify(message: str) -> bool:
    """Tell systemd (``$NOTIFY_SOCKET``) something, e.g. ``READY=1``. False when not under systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify_failed", error=str(exc))
        return False




def _renice(pid: int, nice: int) -> None:
    """Every thread of ``pid`` to ``nice`` (Linux: the value is per thread; threads made later
    inherit the creating thread's)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:
            pass  # gone, or not root


def _write_err(raw: bytes) -> None:
    """One line to our stderr in one write (no line of a child's split or merged with another's)."""
    try:
        while raw:
            raw = raw[os.write(2, raw):]
    except OSError:
        pass


def _exit_text(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def config_payload(loaded: LoadedConfig, local: str, reload: bool, diff_: dict) -> dict:
    """``config.loaded`` for a loaded file (``lvsbus.config.derive.loaded_payload``: the simulator's too)."""
    return loaded_payload(os.path.abspath(loaded.source), loaded.format, loaded.digest, to_dict(loaded.config),
                          loaded.warnings, local, reload, diff_)


def key_file_issue(path: str) -> Issue | None:
    """The key file's problem (``load_key``: a line that starts with its path, with the command
    that mends it) as an Issue of that file for ``config.reload_refused``, or None."""
    problem = load_key(path).problem
    if problem is None:
        return None
    return Issue(key="", message=problem.removeprefix(f"{path}: "), file=path)


def config_vips(cfg, local: str | None = None) -> list[tuple[str, int, str | None]]:
    """(address, prefixlen, device) of every VIP the config gives pulse (for the last-resort
    release): ``lvsbus.config.derive.config_vips``, the derivation pulse itself uses."""
    me = cfg.router(local) if local else None
    return [(v.address, v.prefixlen, v.device) for v in derive.config_vips(cfg, me.device if me else None)]


class Child:
    def __init__(self, name: str, argv: list[str], capture: bool = False,
                 dropper: privileges.Dropper | None = None, spare: bool = False,
                 launcher: zygote.Launcher | None = None) -> None:
        self.name = name
        self.launcher = launcher  # the zygote its processes are forked from; None: exec
        self.argv = argv
        self.capture = capture
        self.stdin_pipe = False  # a pipe to the child's stdin (lvsd's standby waits there for "go")
        self.dropper = dropper  # None: the child runs with the supervisor's privileges
        self.proc: Any = None  # subprocess.Popen or zygote.ForkedProcess (the same use)
        self.wanted = False
        self.start_at: float | None = None  # a restart scheduled at this monotonic time
        self.last_exit = ""
        self.kill_at: float | None = None  # terminating: SIGKILL at this time if still alive
        self.start_error: str | None = None  # the last start failed before exec (the drop)
        self.abandoned = False  # a restart loop under hard_shutdown = false: not restarted until a reload
        # warm spare (broker, pulse): a second process, started and imported, blocked on the
        # service's lock (lvsbus.host.servicelock) until the live one dies; see "Warm spares"
        self.uses_spare = spare
        self.spare: Any = None  # subprocess.Popen or zygote.ForkedProcess
        self.spare_at: float | None = None  # start a new spare at this time (once the live one holds the lock)
        self.pending_restart: dict | None = None  # router.service_restarted, recorded when start_at comes
        self.nice: int | None = HEARTBEAT_NICE if name in SPARES else None  # the live process's nice value
        self._spawn_nice: int | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spare_alive(self) -> bool:
        return self.spare is not None and self.spare.poll() is None

    def _preexec(self) -> None:
        zygote.die_with_parent()  # a SIGKILLed supervisor leaves no orphan
        if self._spawn_nice is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, self._spawn_nice)  # before the drop: CAP_SYS_NICE
            except OSError:
                pass  # not root: the default priority
        if self.dropper is not None:
            self.dropper()  # raises when it cannot drop: the child does not run

    def _spawn(self, what: str) -> Any:
        self.start_error = None
        self._spawn_nice = self.nice if what == "service" else None
        if self.launcher is not None:
            try:
                proc = self.launcher.spawn(
                    self.argv, keep=self.dropper.keep_names if self.dropper is not None else None,
                    nice=self._spawn_nice, stdin_pipe=self.stdin_pipe,
                    stderr_pipe=self.capture and what == "service")
            except zygote.DropFailed as exc:
                self.start_error = f"could not start: dropping privileges failed ({exc})"
                log.error("service_start_failed", service=self.name, error=self.start_error, process=what,
                          capabilities=privileges.describe(self.dropper.plan.keep) if self.dropper else "the supervisor's")
                return None
            except zygote.ZygoteDown as exc:
                log.warning("zygote_unavailable", service=self.name, error=str(exc), fallback="exec")
            else:
                log.info("service_started" if what == "service" else "spare_started", service=self.name,
                         pid=proc.pid, forked=True,
                         capabilities=privileges.describe(self.dropper.plan.keep) if self.dropper else "the supervisor's")
                return proc
        try:
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE if self.stdin_pipe else subprocess.DEVNULL,
                stderr=subprocess.PIPE if self.capture and what == "service" else None,
                preexec_fn=self._preexec,
                close_fds=True,
                # a session of its own: a signal to the supervisor's process group (a terminal's ^C,
                # KillMode=control-group) reaches the supervisor only, which stops the children in
                # order; PR_SET_PDEATHSIG still takes them down if the supervisor is killed
                start_new_session=True,
            )
        except subprocess.SubprocessError as exc:  # the drop failed in the child: it never ran
            self.start_error = f"could not start: dropping privileges failed ({exc})"
            log.error("service_start_failed", service=self.name, error=self.start_error, process=what,
                      capabilities=privileges.describe(self.dropper.plan.keep) if self.dropper else "the supervisor's")
            return None
        log.info("service_started" if what == "service" else "spare_started", service=self.name, pid=proc.pid,
                 capabilities=privileges.describe(self.dropper.plan.keep) if self.dropper else "the supervisor's")
        return proc

    def start(self) -> None:
        self.wanted = True
        self.start_at = None
        self.proc = self._spawn("service")  # None: seen as a death by the supervision (restarted with backoff)

    def start_spare(self) -> None:
        self.spare_at = None
        self.spare = self._spawn("spare")
        if self.spare is None:  # the drop failed: a death of the service (_supervise)
            self.spare = _FAILED_START

    def promote_spare(self) -> None:
        """The live process died and the spare (waiting on the lock) takes over: it is the live one now."""
        self.proc, self.spare = self.spare, None
        log.info("service_started", service=self.name, pid=self.proc.pid, spare_took_over=True)  # type: ignore[union-attr]
        if self.nice is not None:
            _renice(self.proc.pid, self.nice)  # type: ignore[union-attr]

    def kill_spare(self) -> None:
        """A spare waits on the lock and holds nothing else: SIGKILL, by PID, and reap it."""
        sp, self.spare, self.spare_at = self.spare, None, None
        if sp is not None and sp is not _FAILED_START and sp.poll() is None:
            try:
                sp.kill()
                sp.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass

    def tell(self, line: bytes) -> bool:
        """Write a line to the child's stdin pipe; False when it cannot be (no pipe, or it died)."""
        if not self.alive() or self.proc.stdin is None:  # type: ignore[union-attr]
            return False
        try:
            self.proc.stdin.write(line)  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                self.proc.send_signal(sig)  # type: ignore[union-attr]
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        """SIGTERM without waiting (the loop goes on); ``reap`` escalates to SIGKILL later."""
        self.wanted = False
        self.start_at = None
        self.kill_spare()
        if self.alive():
            self.signal(signal.SIGTERM)
            self.kill_at = time.monotonic() + STOP_TIMEOUT

    def reap(self, now: float) -> None:
        if self.kill_at is None:
            return
        if not self.alive():
            log.info("service_stopped", service=self.name, exit=_exit_text(self.proc.returncode))  # type: ignore[union-attr]
            self.kill_at = None
        elif now >= self.kill_at:
            log.warning("service_kill", service=self.name, pid=self.pid)
            self.signal(signal.SIGKILL)
            self.kill_at = None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, wait, then SIGKILL: by PID, this child only. The spare first (else it would
        take the lock, and the service's place, as the live one exits)."""
        self.wanted = False
        self.start_at = None
        self.kill_at = None
        self.kill_spare()
        if not self.alive():
            return
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            log.warning("service_kill", service=self.name, pid=self.pid)
            self.signal(signal.SIGKILL)
            self.proc.wait(5)  # type: ignore[union-attr]
        log.info("service_stopped", service=self.name, exit=_exit_text(self.proc.returncode))  # type: ignore[union-attr]


class _FailedStart:
    """Stands for a spare whose start failed before exec (the privilege drop): dead, exit unknown."""

    pid = None
    returncode = None

    def poll(self) -> int:
        return 1


_FAILED_START: Any = _FailedStart()


class Supervisor:
    def __init__(self, config_path: str, state_dir: str, python: str = sys.executable,
                 keep_privileges: bool = False, limits: RestartLimits | None = None,
                 spares: bool = True, spawn: str = "zygote", launcher: zygote.Launcher | None = None) -> None:
        self.config_path = config_path
        #: how services start: "zygote" (forked from a pre-loaded parent, lvsbus/router/zygote.py)
        #: or "exec" (each a python -m of its own); ``launcher``: a zygote already started (``lvsbus
        #: router`` starts it first thing, so that it imports while this process does)
        self.launcher: zygote.Launcher | None = (launcher or zygote.Launcher(python)) if spawn == "zygote" else None
        self.dirs = StateDirs(state_dir)
        self.python = python
        self.keep_privileges = keep_privileges
        self.drop = False  # children drop privileges (decided at start: root and not --keep-privileges)
        self._caps: privileges.CapSets | None = None  # the supervisor's own, read at start
        self.loaded: LoadedConfig | None = None
        self.local = ""
        self.run_start_seq = 0
        self.config_seq = 0  # the config.loaded in force: the run's, then the last accepted reload
        self.client = None
        self.children: dict[str, Child] = {}
        self.broker: Child | None = None
        self._flags: set[str] = set()
        self._wake_r = self._wake_w = -1
        self.lvsd_standby = False  # the lvsd process running is a --standby, waiting for "go"
        self.stopping = False
        self.exit_code = 0
        self.supervision = Supervision(limits)  # every decision: restarts, which services run, lvsd
        self.policy = self.supervision.restarts
        self.spares = spares

    @property
    def active(self) -> bool:
        """pulse said start_lvsd (and not stop_lvsd since)."""
        return self.supervision.active

    # -- start -------------------------------------------------------------------------------

    def prepare(self) -> int:
        """Config, local router, key file. Prints every problem; returns the exit status (0 = go)."""
        from lvsbus.host import netutil

        try:
            self.loaded = load(self.config_path)
        except ConfigError as exc:
            if len(exc.issues) == 1:  # one error, one line (it names the file)
                print(f"lvsbus router: invalid configuration: {exc.issues[0]}", file=sys.stderr)
                return 1
            print(f"lvsbus router: {self.config_path}: invalid configuration:", file=sys.stderr)
            for issue in exc.issues:
                print(f"  {issue}", file=sys.stderr)
            return 1
        cfg = self.loaded.config
        try:
            me = identify_local_router(cfg, netutil.local_addresses())
        except ConfigError as exc:
            print(f"lvsbus router: {self.config_path}: {'; '.join(i.message for i in exc.issues)}", file=sys.stderr)
            return 1
        self.local = me.name
        if cfg.heartbeat.enabled:
            problem = load_key(cfg.heartbeat.key_file).problem
            if problem:
                print(f"lvsbus router: {problem}", file=sys.stderr)
                return 1
        missing = _missing_services()
        if missing:
            print(f"lvsbus router: a broken installation: no {', '.join(missing)} (python -m MODULE must run; "
                  "reinstall lvsbus)", file=sys.stderr)
            return 1
        for w in self.loaded.warnings:
            log.warning("config_warning", warning=str(w))
        return 0

    # -- privileges --------------------------------------------------------------------------

    def _plan_privileges(self) -> None:
        """Decide whether the children drop privileges, and say what each keeps (one log line)."""
        if self.keep_privileges:
            log.warning("privileges_kept", reason="--keep-privileges: every service runs with the supervisor's privileges")
            return
        if os.geteuid() != 0:
            log.info("privileges_kept", reason="not running as root: nothing to drop")
            return
        self.drop = True
        self._caps = privileges.read()
        assert self.loaded is not None
        plans = {name: self._dropper(name).plan for name in ("broker", *(n for n, _m, _w in SERVICES))}  # type: ignore[union-attr]
        kept = {name: privileges.describe(p.keep) for name, p in plans.items()}
        for name, p in plans.items():
            if p.missing:  # the supervisor itself lacks it (a bounded systemd unit): that service may fail
                log.warning("privileges_missing", service=name, missing=privileges.describe(p.missing))
        lowered = privileges.plan((), self._caps).bounding_lowered
        log.info("privileges_dropped", kept=kept, uid=0, no_new_privs=True,
                 bounding_set="lowered to the kept set" if lowered
                 else "not lowered: the supervisor lacks CAP_SETPCAP (no_new_privs still stops a regain)",
                 supervisor=privileges.describe(self._caps.effective))

    def _check_priority(self) -> None:
        """pulse and the broker run at HEARTBEAT_NICE: that needs CAP_SYS_NICE (root has it; the
        systemd unit grants it to the supervisor, no service keeps it). Say so when it is missing."""
        try:
            have = bool(privileges.read().effective >> privileges.CAP_NUMBERS["CAP_SYS_NICE"] & 1)
        except Exception:
            have = os.geteuid() == 0
        if not have:
            log.warning("heartbeat_priority_unchanged", nice=0,
                        reason="no CAP_SYS_NICE: pulse and the broker run at the default priority")

    def _dropper(self, name: str, config=None) -> privileges.Dropper | None:
        if not self.drop:
            return None
        cfg = config if config is not None else (self.loaded.config if self.loaded else None)
        return privileges.Dropper(privileges.service_caps(name, cfg), self._caps)

    def _load_ip_vs(self) -> None:
        """The applier runs without CAP_SYS_MODULE: load ip_vs for it (as keepalived does), best effort."""
        if os.path.exists("/proc/net/ip_vs"):
            return
        try:
            r = subprocess.run(["modprobe", "ip_vs"], capture_output=True, timeout=30)
            log.info("ip_vs_loaded" if r.returncode == 0 else "ip_vs_not_loaded",
                     detail=r.stderr.decode(errors="replace").strip()[:200])
        except (OSError, subprocess.SubprocessError) as exc:
            log.info("ip_vs_not_loaded", detail=str(exc)[:200])

    def _refresh_privileges(self, new_config) -> None:
        """After a reload: a service whose set depends on the config (nanny and its check programs)
        is restarted with the new set. A restart keeps every health state (snapshot + log)."""
        if not self.drop:
            return
        for name, c in self.children.items():
            d = self._dropper(name, new_config)
            if c.dropper is None or d is None or d.plan.keep == c.dropper.plan.keep:
                continue
            log.info("service_privileges_changed", service=name, old=privileges.describe(c.dropper.plan.keep),
                     new=privileges.describe(d.plan.keep))
            c.dropper = d
            self._renew_spare(c)
            if c.wanted and c.alive():
                c.stop()
                c.start()
                if c.uses_spare:
                    c.spare_at = time.monotonic()

    def _broker_argv(self) -> list[str]:
        return [self.python, "-m", "lvsbus.cli", "broker", "--node", self.local, "--state-dir", self.dirs.root]

    def _start_broker(self) -> None:
        """The run's first broker: started, and waited for ("broker ready" on its stderr, read here
        and passed on line by line). Later ones (spares, restarts) are not waited for: they take
        the broker's lock, then bind; the clients reconnect by themselves."""
        b = Child("broker", self._broker_argv(), capture=True, dropper=self._dropper("broker"),
                  spare=self.spares, launcher=self.launcher)
        b.start()
        self.broker = b
        deadline = time.monotonic() + BROKER_READY_TIMEOUT
        # the bus client's modules (pyzmq, the event catalog: ~40 ms) load while the broker starts
        from lvsbus.bus import BusClient  # noqa: F401

        if b.proc is None or b.proc.stderr is None:
            raise RuntimeError("the broker did not start (see service_start_failed)")
        seen = []
        while True:
            raw = b.proc.stderr.readline()
            line = raw.decode(errors="replace")
            if raw:
                _write_err(raw)
                seen.append(line)
            if "broker ready" in line:
                break
            if (not line and b.proc.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError("the broker did not start: " + "".join(seen[-20:]))
        b.capture = False  # a restarted broker writes to our stderr itself, as every service does

        def forward(stream) -> None:
            for raw in stream:  # whole lines, one write each
                _write_err(raw)

        threading.Thread(target=forward, args=(b.proc.stderr,), daemon=True, name="broker-stderr").start()
        if b.uses_spare:
            b.spare_at = time.monotonic()

    def _service_argv(self, module: str) -> list[str]:
        """A service's command line: it takes its config from the config.loaded at ``--config-seq``
        (the file is named for messages only), so a restart uses the config in force."""
        return [self.python, "-m", module, "--state-dir", self.dirs.root,
                "--config", os.path.abspath(self.config_path), "--run-start-seq", str(self.run_start_seq),
                "--config-seq", str(self.config_seq)]

    def _lvsd_argv(self, standby: bool) -> list[str]:
        return self._service_argv("lvsbus_services.lvsd") + (["--standby"] if standby else [])

    def _start_lvsd(self, standby: bool) -> None:
        """lvsd, active, or as a standby: a process that has started, recovered and follows the bus
        without publishing, so a takeover starts it with a line on its stdin (no process start, no
        log to fold: ~0.3 s saved on this machine, more the longer the router ran as the backup)."""
        c = self.children.get("lvsd")
        if c is None:
            return
        c.argv = self._lvsd_argv(standby)
        c.stdin_pipe = standby
        self.supervision.lvsd_started()
        c.start()
        self.lvsd_standby = standby

    def _service_child(self, name: str, module: str) -> Child:
        return Child(name, self._service_argv(module), dropper=self._dropper(name),
                     spare=self.spares and name in SPARES, launcher=self.launcher)

    def run(self) -> int:
        try:
            return self._run()
        finally:
            if self.launcher is not None:
                self.launcher.close()

    def _run(self) -> int:
        code = self.prepare()
        if code:
            return code
        self.dirs.make()
        self._start_zygote()
        self._plan_privileges()
        self._check_priority()
        if self.drop:
            self._load_ip_vs()
        self._install_signals()
        try:
            self._start_broker()
        except RuntimeError as exc:
            print(f"lvsbus router: {exc}", file=sys.stderr)
            return 1
        from lvsbus.bus import BusClient

        self.client = BusClient(
            self.dirs.run, "router",
            subs=ROUTER_SUBS,
            log_dir=self.dirs.log,
        )
        assert self.loaded is not None
        self.run_start_seq = self.client.publish_acked(
            "config.loaded", config_payload(self.loaded, self.local, False, {}), timeout=10.0)
        self.config_seq = self.run_start_seq
        log.info("config_loaded", seq=self.run_start_seq, router=self.local, digest=self.loaded.digest[:12])
        for name, module, when in SERVICES:
            child = self._service_child(name, module)
            self.children[name] = child
            if self.supervision.wanted(name, configured=supervision.configured_services(self.loaded.config)):
                child.start()
                if child.uses_spare:
                    child.spare_at = time.monotonic()
            elif when == supervision.WHILE_ACTIVE:  # lvsd: its standby, told to go on the takeover
                self._start_lvsd(standby=True)
        sd_notify(f"READY=1\nSTATUS=router {self.local}, run from seq {self.run_start_seq}\nMAINPID={os.getpid()}")
        log.info("router_ready", router=self.local, run_start_seq=self.run_start_seq,
                 services=[n for n, c in self.children.items() if c.wanted])
        try:
            self._loop()
        finally:
            self._stop_all()
        return self.exit_code

    # -- signals -----------------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

        def flag(name: str) -> Callable:
            return lambda *_: self._flags.add(name)

        signal.signal(signal.SIGTERM, flag("term"))
        signal.signal(signal.SIGINT, flag("term"))
        signal.signal(signal.SIGHUP, flag("hup"))
        signal.signal(signal.SIGCHLD, flag("chld"))

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        import zmq

        poller = zmq.Poller()
        poller.register(self.client.sock, zmq.POLLIN)  # type: ignore[union-attr]
        poller.register(self._wake_r, zmq.POLLIN)
        while True:
            if "term" in self._flags:
                self._shutdown("SIGTERM", graceful=True)
                return
            if "hup" in self._flags:
                self._flags.discard("hup")
                self.reload()
            self._flags.discard("chld")
            if not self._supervise():
                return
            timeout = 0.5
            now = time.monotonic()
            for c in self._all_children():
                for at in (c.start_at, c.kill_at):
                    if at is not None:
                        timeout = min(timeout, max(0.0, at - now))
                if c.spare_at is not None:  # due, it waits for the live one to hold the lock: look again soon
                    timeout = min(timeout, max(0.02, c.spare_at - now))
            ready = dict(poller.poll(timeout * 1000))
            if self._wake_r in ready:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            # pump the bus (also keeps the client's liveness watchdog going)
            for ev in self.client.recv_batch(0.001):  # type: ignore[union-attr]
                self._on_event(ev)

    def _start_zygote(self) -> None:
        """The pre-loaded parent the services are forked from (lvsbus/router/zygote.py); it
        imports while the supervisor goes on. Without a subreaper (an old kernel) or when it cannot
        start, services start by exec."""
        if self.launcher is None:
            return
        if self.launcher.proc is not None:  # started early (lvsbus.cli.router), this process a subreaper
            log.info("zygote_started", pid=self.launcher.pid, early=True)
            return
        if not zygote.become_subreaper():
            log.warning("zygote_unavailable", error="PR_SET_CHILD_SUBREAPER refused", fallback="exec")
            self.launcher = None
            return
        try:
            self.launcher.start()
        except OSError as exc:
            log.warning("zygote_unavailable", error=str(exc), fallback="exec")
            self.launcher = None
            return
        log.info("zygote_started", pid=self.launcher.pid)

    def _reap_orphans(self) -> None:
        """As a subreaper, this process also inherits the orphans of its services' own children (a
        check program whose nanny died, a daemon that forked): reap them, never one of ours (their
        ``poll`` reaps those)."""
        ours = {p.pid for c in self._all_children() for p in (c.proc, c.spare)
                if p is not None and p is not _FAILED_START and p.poll() is None}
        if self.launcher is not None and self.launcher.proc is not None and self.launcher.proc.poll() is None:
            ours.add(self.launcher.proc.pid)
        for _ in range(64):
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid in ours or info.si_pid == 0:
                return
            try:
                os.waitpid(info.si_pid, 0)
            except ChildProcessError:
                return
            log.info("orphan_reaped", pid=info.si_pid, status=info.si_status)

    def _all_children(self) -> list[Child]:
        return ([self.broker] if self.broker else []) + list(self.children.values())

    def _on_event(self, ev) -> None:
        order = self.supervision.lvsd_order(ev.type)
        if order == LVSD_START:
            c = self.children.get("lvsd")
            if c is not None:
                if c.alive() and c.kill_at is not None:  # still stopping from a step-down just before
                    c.stop()
                if self.lvsd_standby and c.kill_at is None and c.alive():
                    if c.tell(b"go\n"):
                        c.argv = self._lvsd_argv(standby=False)  # a crash from now on restarts it active
                        c.stdin_pipe = False
                        c.wanted = True
                        self.lvsd_standby = False
                        log.info("lvsd_standby_started", pid=c.pid, seq=ev.seq)
                        return
                    log.warning("lvsd_standby_unreachable", pid=c.pid)  # its stdin is gone: an active one instead
                    c.stop()
                if not c.alive():
                    self._start_lvsd(standby=False)
        elif order == LVSD_STOP:
            c = self.children.get("lvsd")
            if c is not None:
                c.terminate()  # a new standby is started once it is gone (_supervise)
        elif ev.type == "router.role_changed":
            p = ev.payload
            group = p.get("group", "default")
            log.info("role_changed", seq=ev.seq, group=group, old=p["old"], new=p["new"], reason=p["reason"])
            where = "" if group == "default" else f" {group}"
            sd_notify(f"STATUS=router {self.local}{where}: {p['new']} ({p['reason']})")

    def _supervise(self) -> bool:
        """Restart dead children (the decisions are lvsbus.router.supervision's); keep the warm spares;
        False when a restart loop made the router step down."""
        now = time.monotonic()
        c = self.children.get("lvsd")
        if (c is not None and not self.active and not self.stopping and not c.wanted and not c.alive()
                and c.kill_at is None):
            self._start_lvsd(standby=True)  # the backup's lvsd, ready for the next takeover
        for c in self._all_children():
            c.reap(now)
            if not c.wanted:
                continue
            if c.spare is not None and c.spare.poll() is not None:
                # a spare died while it waited (a broken install, a kill): a death of the service
                exit_ = "spare: " + (c.start_error or _exit_text(c.spare.returncode))
                c.spare = None
                if not self._died(c, exit_, now, spare=True):
                    return False
            if not c.alive() and c.start_at is None:  # the live process just died
                exit_ = c.start_error if c.proc is None else _exit_text(c.proc.returncode)
                if not self._died(c, exit_ or "", now, spare=False):
                    return False
            if c.start_at is not None and now >= c.start_at:  # no spare took over: start one now
                c.start()
                if c.pending_restart is not None:
                    self._publish("router.service_restarted", c.pending_restart)
                if c.uses_spare and c.spare_at is None:
                    c.spare_at = now
            if (c.uses_spare and c.spare is None and c.spare_at is not None and now >= c.spare_at
                    and c.alive() and servicelock.holder(self.dirs.run, c.name) == c.pid):
                c.start_spare()  # only once the live one holds the lock: never two racing for it
        self._reap_orphans()
        return True

    def _died(self, c: Child, exit_: str, now: float, spare: bool) -> bool:
        """One death of service ``c`` (its live process, or its spare): ``Supervision.on_death`` decides."""
        c.last_exit = exit_
        d = self.supervision.on_death(c.name, now, spare_alive=not spare and c.spare_alive(), of_spare=spare,
                                      exit_=exit_, hard_shutdown=self.loaded is None or self.loaded.config.hard_shutdown)
        if d.action == GIVE_UP:
            lim = self.policy.limits
            log.error("restart_loop", service=c.name, restarts=d.decision.recent - 1, window_s=lim.window_s,
                      last_exit=exit_)
            print(f"lvsbus router: {c.name} died {d.decision.recent} times within "
                  f"{lim.window_s:g} s (last: {exit_}); stepping down", file=sys.stderr)
            c.wanted = False
            self.exit_code = 1
            self._shutdown(d.reason, graceful=False)
            return False
        if d.action == ABANDON:
            self._abandon(c, d.decision.recent)
        else:
            if d.promote:
                c.promote_spare()  # it has the lock by now, or within a few ms
            delay = d.decision.delay_s
            log.warning("service_died", service=c.name, exit=exit_, attempt=d.decision.attempt, recent=d.decision.recent,
                        **({"spare_took_over": c.pid} if d.promote else {}),
                        **({"spare_in_s": delay} if c.uses_spare and d.spare_at is not None else {"restart_in_s": delay}))
            if d.spare_at is not None:
                c.spare_at = d.spare_at
            if d.start_at is not None:
                c.start_at, c.pending_restart = d.start_at, d.restarted
        for type_, payload in d.events:
            self._publish(type_, payload)
        return True

    def _abandon(self, c: Child, deaths: int) -> None:
        """A restart loop of nanny under ``hard_shutdown = false``, or of the console
        (``Supervision.on_death`` says ABANDON, and records ``router.service_abandoned``): stop
        restarting it and stay up (Piranha's lvsd: "nanny died! manual action needed!")."""
        without = {"web": "the web console", "alerts": "alerts (no mail, no notify FIFO lines)"}.get(c.name)
        window = self.policy.limits.window_s
        log.error("service_abandoned", service=c.name, restarts=deaths - 1, window_s=window, last_exit=c.last_exit,
                  hint=f"no {without}" if without else "hard_shutdown = false: no health checks; the IPVS table stays as it is")
        print(f"lvsbus router: {c.name} died {deaths} times within {window:g} s (last: {c.last_exit}); "
              + (f"staying up without {without}. " if without else
                 "hard_shutdown = 0: staying up without health checks, the IPVS table stays as it is. ") +
              "Manual action needed: fix the cause (see its log), then reload (kill -HUP) to start it again",
              file=sys.stderr)
        c.wanted = False
        c.abandoned = True
        c.start_at = None

    def _renew_spare(self, c: Child) -> None:
        """The spare was started with an older command line or privileges: a new one."""
        if c.uses_spare and c.spare is not None:
            c.kill_spare()
            c.spare_at = time.monotonic()

    def _publish(self, type_: str, payload: dict, acked: bool = False) -> int | None:
        try:
            if acked:
                return self.client.publish_acked(type_, payload, timeout=2.0)  # type: ignore[union-attr]
            self.client.publish(type_, payload)  # type: ignore[union-attr]
        except Exception as exc:  # the bus is down: the log line is all we have
            log.error("publish_failed", type=type_, error=str(exc))
        return None

    # -- reload ------------------------------------------------------------------------------

    def reload(self) -> bool:
        from lvsbus.host import netutil

        old = self.loaded
        assert old is not None
        try:
            new = load(self.config_path)
            me = identify_local_router(new.config, netutil.local_addresses())
            problem = key_file_issue(new.config.heartbeat.key_file) if new.config.heartbeat.enabled else None
            if problem:
                raise ConfigError([problem])
        except ConfigError as exc:
            errors = [str(i)[:2048] for i in exc.issues][:1000]
            log.error("reload_refused", path=self.config_path, errors=errors, kept_digest=old.digest)
            self._publish("config.reload_refused", {"path": os.path.abspath(self.config_path)[:4096],
                                                    "errors": errors, "kept_digest": old.digest})
            return False
        d = diff(old.config, new.config).to_dict()
        seq = self._publish("config.loaded", config_payload(new, me.name, True, d), acked=True)
        if seq is None:  # not acknowledged: the services take their config from the log, so neither do we
            log.error("reload_not_recorded", path=self.config_path, kept_digest=old.digest,
                      hint="the bus did not acknowledge config.loaded; send SIGHUP again")
            return False
        self.loaded = new
        self.config_seq = seq
        for name, module, _when in SERVICES:  # every later (re)start of a service uses this config
            c = self.children.get(name)
            if c is not None:
                c.argv = self._lvsd_argv(self.lvsd_standby) if name == "lvsd" else self._service_argv(module)
                self._renew_spare(c)  # a spare started before would come up with the old config
        log.info("config_reloaded", seq=seq, digest=new.digest[:12])
        self._follow_metrics(old.config, new.config)
        self._refresh_privileges(new.config)
        for c in self.children.values():
            if c.abandoned:  # the operator's manual action: try it again (its new privileges), a fresh restart budget
                c.abandoned = False
                c.wanted = True
                self.policy.forget(c.name)
                c.start()
                self._publish("router.service_restarted",
                              restarted_payload(c.name, self.policy.attempts(c.name), c.last_exit))
        return True

    def _follow_metrics(self, old_cfg, new_cfg) -> None:
        """metrics runs while the config sets ``metrics_address``: a reload that sets, changes or
        removes it starts, restarts or stops the endpoint (a metrics process started under a config
        without an address would exit at once, again and again: a restart loop)."""
        for name, on in supervision.CONFIGURED_BY.items():  # metrics_address, the console's [web]
            c = self.children.get(name)
            if c is None or on(old_cfg) == on(new_cfg):
                continue
            c.stop()
            if on(new_cfg):
                c.dropper = self._dropper(name, new_cfg)
                self.policy.forget(name)
                c.abandoned = False
                c.start()
            log.info(f"{name}_config_changed", old=str(on(old_cfg)), new=str(on(new_cfg)))

    # -- stop --------------------------------------------------------------------------------

    def _shutdown(self, reason: str, graceful: bool) -> None:
        self.stopping = True
        log.info("shutdown_requested", reason=reason, graceful=graceful)
        sd_notify("STOPPING=1")
        for c in self._all_children():
            c.start_at = c.spare_at = None
        self._publish("router.shutdown_requested", {"reason": reason[:256], "graceful": graceful}, acked=True)
        pulse = self.children.get("pulse")
        if pulse is not None:
            pulse.kill_spare()  # else it would take pulse's place as pulse hands over and exits
        if pulse is not None and pulse.alive():
            pulse.wanted = False
            scaleout = self.loaded.config.scaleout if self.loaded is not None else None
            # scale-out: pulse serves on while the bgp core drains and withdraws the VIPs
            wait = HANDOVER_TIMEOUT + (scaleout.drain_time + 1.0 if scaleout is not None and graceful else 0.0)
            try:
                pulse.proc.wait(wait)  # type: ignore[union-attr]
                log.info("pulse_handed_over", exit=_exit_text(pulse.proc.returncode))  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                log.warning("pulse_handover_timeout", timeout_s=wait)
        self._release_vips()

    def _release_vips(self) -> None:
        """Last resort: a stopping router holds no VIP (pulse released them if it could)."""
        from lvsbus.host import netutil

        if self.loaded is None:
            return
        for address, plen, dev in config_vips(self.loaded.config, self.local):
            try:
                if netutil.del_address(address, plen, dev):
                    log.warning("vip_released_by_supervisor", address=address)
            except Exception as exc:
                log.error("vip_release_failed", address=address, error=str(exc))

    def _stop_all(self) -> None:
        # alerts after pulse: pulse's STOP lines; bgp last: BIRD withdraws what is left as it stops
        for name in ("web", "metrics", "ipvs", "lvsd", "nanny", "pulse", "alerts", "bgp"):
            c = self.children.get(name)
            if c is not None:
                c.stop()
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.broker is not None:
            self.broker.stop()
        log.info("router_stopped", router=self.local, exit_code=self.exit_code)


def main(config: str, state_dir: str, keep_privileges: bool = False, limits: RestartLimits | None = None,
         spares: bool = True, spawn: str = "zygote", launcher: zygote.Launcher | None = None) -> int:
    from lvsbus.host import logs

    logs.setup(service="router")
    return Supervisor(config, state_dir, keep_privileges=keep_privileges, limits=limits, spares=spares,
                      spawn=spawn, launcher=launcher).run()
