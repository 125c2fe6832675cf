"""pulse's I/O shell: runs ``PulseCore`` on the bus and connects it to the world.

    UDP datagrams on each link --wire.accept: decode, MAC, source address--> pulse.heartbeat_received /
                                  pulse.fence_received (anything bad: pulse.datagram_rejected, counted,
                                  never the core)
    link state (netlink: the links of link_devices, only with monitor_links, polled every
                link_poll_interval) --> pulse.link_changed
    tracked interfaces and files of this router ([track.NAME], watch.watched_items; polled every
                link_poll_interval, whatever monitor_links says) --> pulse.track_observed
    effects of the core --> UDP sends, VIPs (pyroute2), gratuitous ARP / unsolicited NA (raw
    sockets, in background tasks), notify commands (asyncio subprocesses)

``pulse.start_lvsd`` / ``pulse.stop_lvsd`` are not carried out here: the router supervisor
subscribes to those effect events and starts or stops lvsd and the applier itself (it owns the
processes).

The boot epoch grows on every start: ``STATE_DIR/pulse.epoch`` holds the last one, and the new one
is ``grow_epoch(last, wall-clock seconds)`` (the core's: ``max(last + 1, wall seconds)``, as the
simulator's), written (fsync, rename) before ``pulse.started`` goes out.

Effects run only once their records are durable in the log (``lvsbus.runtime.engine``: write-ahead).

Start-up reconciliation: a fresh run starts holding no VIP (the core's first decision is
``pulse.release_vips``); a restart under a running router (the core restored ACTIVE from its
snapshot and the log), once the answers it owed are recorded and run, makes sure the VIPs are
there and announces them once (a takeover recorded whose effects did not all run), and otherwise
that they are not.
"""
from __future__ import annotations

import asyncio
import errno
import os
import shlex
import signal
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from lvsbus.bus.stats import ReportLimit
from lvsbus.host import logs
from lvsbus.host import netutil
from lvsbus.host import servicelock
from lvsbus.host.commands import run_shell
from lvsbus.host.files import write_atomically
from lvsbus.config import ConfigError, identify_local_router, to_dict
from lvsbus.host.configfiles import load_config as load
from lvsbus.runtime.core import Effect
from lvsbus.wire.events import Event, decode
from lvsbus.log import LogReader
from lvsbus.host.paths import StateDirs
from lvsbus.runtime.engine import ServiceRuntime, service_arguments

from . import wire
from .watch import FILE_READ_MAX, Watched, file_observation, interface_observation, track_changes, watched_items
from .core import (
    TAKE, PulseCore, PulseSettings, _settings_from_config, _settings_from_model, configured_devices, grow_epoch,
    link_changes, link_devices, link_poll_interval, reconcile_vips, started_payload,
)

log = structlog.get_logger("pulse")

EPOCH_FILE = "pulse.epoch"


class KeyFileError(RuntimeError):
    pass


def read_key(path: str) -> bytes:
    """The HMAC key from the heartbeat key file (``lvsbus.host.keyfile.load_key``, the reader the
    router's checks use: mode 0600 or stricter, at least 16 bytes); KeyFileError says why not."""
    from lvsbus.host.keyfile import load_key

    secret, problem, _ = load_key(path)
    if secret is None:
        raise KeyFileError(problem)
    return wire.key_from_secret(secret)


def next_epoch(state_dir: str, now: float | None = None) -> int:
    """Read, grow (``grow_epoch``) and durably store the boot epoch counter."""
    path = os.path.join(state_dir, EPOCH_FILE)
    last = 0
    try:
        with open(path) as fh:
            last = int(fh.read().strip() or 0)
    except (OSError, ValueError):
        last = 0
    epoch = grow_epoch(last, now if now is not None else time.time())
    write_atomically(path, f"{epoch}\n", 0o600)  # (the directory fsynced too)
    return epoch


class PulseShell:
    def __init__(self, state_dir: str, config_path: str, run_start_seq: int, config_seq: int | None = None) -> None:
        self.dirs = StateDirs(state_dir)
        self.config_path = config_path
        self.run_start_seq = run_start_seq
        self.config_seq = config_seq if config_seq is not None else run_start_seq  # the config.loaded in force
        self.core = PulseCore()
        self.runtime = ServiceRuntime(self.core, self.dirs, execute=self.execute, run_start_seq=run_start_seq)
        self.runtime.on_event = self.on_event
        self.stop = asyncio.Event()
        self.key: bytes | None = None
        self.key_file: str | None = None
        self.watched: dict[str, str | None] = {}  # link -> configured device: the link watch's (link_devices)
        self.tracked: tuple[Watched, ...] = ()  # the track watch's (watch.watched_items)
        self.settings: PulseSettings | None = None
        self.socks: dict[str, socket.socket] = {}
        self.devices: dict[str, str | None] = {}  # link -> device
        self.rejected = 0
        self._reject_limit = ReportLimit(wire.REJECT_EVENTS_PER_S)
        self._bg: set[asyncio.Task] = set()
        self._fos_last: dict[str, asyncio.Task] = {}  # each failover service's last command
        self._garp_tasks: set[asyncio.Task] = set()
        self._send_errors = 0
        self._stopping = False
        self._watch_task: asyncio.Task | None = None
        self._track_task: asyncio.Task | None = None
        # tracked files are read on a thread of their own (a slow file system stalls only the watch)
        self._files = ThreadPoolExecutor(1, thread_name_prefix="trackfiles")
        # netlink calls run on one thread of their own (pyroute2's sync API cannot run on the loop's)
        self._netlink = ThreadPoolExecutor(1, thread_name_prefix="netlink")
        # work queued on the netlink thread and not done yet: submitted - done (each counter is
        # written by one thread only: the loop's, the netlink thread's)
        self._submitted = 0
        self._done = 0
        # a warm spare (see take_lock): started while another pulse holds the lock
        self.spare = False
        self._lock_fd: int | None = None
        self._epoch: int | None = None  # reserved by a spare before it waits
        self._scan_next = 0  # a spare: the first seq not yet scanned for the live pulse's answers
        self._config_payload_cache: dict | None = None

    async def _nl(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._netlink, fn, *args)

    def _queue(self, fn, *args):
        """Queue ``fn`` on the netlink thread and go on without waiting for it. That thread runs its
        work in order, so the effects queued there happen in the order the core decided them (VIPs
        added, then announced, then the old active fenced; on a shutdown, VIPs released, then the
        leaving heartbeat), while the loop carries on with the next effects and inputs: a takeover
        does not wait for the loop to be scheduled again between the address and the announcement."""
        self._submitted += 1
        fut = self._netlink.submit(self._run_queued, fn, args)
        fut.add_done_callback(_log_failure)
        return fut

    def _run_queued(self, fn, args):  # on the netlink thread
        try:
            return fn(*args)
        finally:
            self._done += 1

    # -- start -------------------------------------------------------------------------------

    def _config_payload(self) -> dict | None:
        """The config.loaded in force (the run's or the last accepted reload: ``--config-seq``)."""
        cached = self._config_payload_cache
        if cached is not None and cached[0] == self.config_seq:
            return cached[1]
        try:
            for seq, body in LogReader(self.dirs.log).read(self.config_seq, self.config_seq):
                ev = decode(body, seq)
                if ev.type == "config.loaded":
                    self._config_payload_cache = (self.config_seq, ev.payload)  # type: ignore[assignment]
                    return ev.payload
        except Exception as exc:  # fall back to the file
            log.warning("run_start_event_unreadable", seq=self.config_seq, error=str(exc))
        return None

    def prepare(self) -> None:
        """Everything that can fail before touching the bus: config, key."""
        payload = self._config_payload()
        if payload is not None:
            model = payload["model"]
            self.key_file = model["heartbeat"]["key_file"]
            self.settings = _settings_from_config(payload)
        else:
            loaded = load(self.config_path)
            cfg = loaded.config
            local = identify_local_router(cfg, netutil.local_addresses())
            self.key_file = cfg.heartbeat.key_file
            self.settings = _settings_from_model(cfg, local.name)
            model = to_dict(cfg)
        self.watched = link_devices(model, self.settings.local)
        self.tracked = watched_items(model, self.settings.local)
        self.key = read_key(self.key_file)

    async def _open_sockets(self, read: bool = True) -> None:
        """One UDP socket per local link; ``read``: read them at once (else ``_read_sockets`` later:
        datagrams wait in the socket buffers meanwhile)."""
        s = self.settings
        assert s is not None
        loop = asyncio.get_running_loop()
        me = s.me
        for link in s.local_links():
            addr = me.address_on(link)
            fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
            sock = socket.socket(fam, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xC0)  # CS6: network control
            sock.setblocking(False)
            sock.bind((addr, s.port))
            self.socks[link] = sock
            if read:
                loop.add_reader(sock.fileno(), self._on_readable, link, sock)
            self.devices[link] = self._configured_device(link) or await self._nl(netutil.device_of, addr)
            log.info("link_socket", link=link, address=addr, port=s.port, device=self.devices[link])

    def _read_sockets(self) -> None:
        loop = asyncio.get_running_loop()
        for link, sock in self.socks.items():
            loop.add_reader(sock.fileno(), self._on_readable, link, sock)

    def _configured_device(self, link: str) -> str | None:
        payload = self._config_payload()
        if payload is None:
            return None
        return configured_devices(payload["model"], self.settings.local).get(link)  # type: ignore[union-attr]

    async def on_start(self) -> None:
        if self.spare:
            self._take_over()
        st = self.runtime.state
        if st is not None and st.settings is not None:
            self.settings = st.settings
        # bound now (datagrams wait in the socket buffers), read only once pulse.started is
        # published: the run's first input must be pulse.started. A heartbeat published before it
        # was decided on the state restored from the log, its peers' news as old as the outage, and
        # a backup took over there (peer_dead) before it could learn it had restarted and listen
        await self._open_sockets(read=False)
        epoch = self._epoch if self._epoch is not None else next_epoch(self.dirs.root)
        addresses = await self._nl(netutil.local_addresses)
        self.runtime.publish("pulse.started", started_payload(epoch, socket.gethostname(), addresses, self.key is not None))
        self._read_sockets()
        log.info("pulse_started", epoch=epoch, run_start_seq=self.run_start_seq, role=getattr(st, "role", None))
        self._start_link_watch()
        self._start_track_watch()

    def _start_link_watch(self) -> None:
        """Poll the watched links (``link_devices``), unless a watch already runs or none is watched
        (``monitor_links`` off). The watch ends by itself when a reload leaves nothing to watch."""
        if self.watched and (self._watch_task is None or self._watch_task.done()):
            self._watch_task = asyncio.ensure_future(self._watch_links())

    def _start_track_watch(self) -> None:
        """Poll the tracked interfaces and files (``watch.watched_items``), unless that watch already
        runs or nothing is tracked here. It ends by itself when a reload leaves nothing to watch."""
        if self.tracked and (self._track_task is None or self._track_task.done()):
            self._track_task = asyncio.ensure_future(self._watch_tracks())

    async def on_caught_up(self) -> None:
        """Reconcile the VIPs with the role the log records (a restart under a running router),
        once the answers owed from the log are recorded and run: never ahead of the log."""
        st = self.runtime.state
        for todo, unit_vips in (reconcile_vips(st) if st is not None else []):
            vips = [v.payload() for v in unit_vips]
            if todo == TAKE:
                added = await self._nl(self._take, vips)
                # announced once: a takeover recorded whose effects did not all run (pulse died
                # between the record and its gratuitous ARP) has not told the clients
                errors = await self._nl(netutil.announce_once,
                                        [dict(v, device=v.get("device") or self.devices.get("public")) for v in vips])
                log.info("reconciled_vips", role=st.role, action="added" if added else "kept", announced=not errors,
                         errors=errors[:8])
            else:
                await self._nl(self._release, vips)
                log.info("reconciled_vips", role=st.role, action="released")

    # -- a warm spare ------------------------------------------------------------------------

    async def _spare_wait(self, go: asyncio.Event) -> None:
        """A spare: the runtime has recovered and follows the bus as a standby (its core current,
        nothing published or executed); the epoch is reserved and the netlink socket open. Wait
        for the lock (the live pulse's death), then let the runtime go (``on_start``)."""
        loop = asyncio.get_running_loop()
        while self.runtime.client is None:  # recover() is done once the runtime has its client
            await asyncio.sleep(0.005)
        # an answer to an input the runtime keeps comes after that input in the log
        self._scan_next = min([ev.seq for ev, _e in self.runtime._pending] + [self.runtime.last_seq + 1])
        self._epoch = next_epoch(self.dirs.root)  # durable before it is used: growing, as at a start
        await self._nl(netutil.local_addresses)  # the netlink thread's socket, made now
        log.info("spare_waiting", service="pulse", pid=os.getpid(), last_seq=self.runtime.last_seq)
        got: asyncio.Future = loop.create_future()

        def wait_lock() -> None:  # a daemon thread: a spare told to stop does not wait for it
            fd = servicelock.acquire(self.dirs.run, "pulse")
            loop.call_soon_threadsafe(lambda: got.done() or got.set_result(fd))

        threading.Thread(target=wait_lock, daemon=True, name="pulse-lock").start()
        while True:
            done, _ = await asyncio.wait({got}, timeout=1.0)
            if done:
                break
            self._scan_answers()  # the live pulse answers as it goes: keep the spare's debts small
        self._lock_fd = got.result()
        log.info("spare_took_over", service="pulse", pid=os.getpid(), last_seq=self.runtime.last_seq)
        go.set()

    def _scan_answers(self) -> None:
        """The live pulse's answers in the log: inputs it answered are not owed by this spare (the
        standby folds every input and keeps its answers until it goes), and a reload it applied
        gives the key and settings this one must start with."""
        answered = self.runtime.answered_upto
        try:
            for seq, body in LogReader(self.dirs.log).read(self._scan_next):
                self._scan_next = seq + 1
                ev = decode(body, seq)
                if self.core.is_output(ev) and ev.cause is not None:
                    answered = max(answered, ev.cause)
                elif ev.type == "config.loaded" and ev.payload.get("reload") and seq > self.config_seq:
                    self._apply_reload(ev, rebind=False)  # (this spare binds its sockets when it goes)
        except Exception as exc:
            log.warning("spare_scan_failed", error=str(exc))
        self.runtime.answered_upto = answered
        self.runtime._pending = [(ev, effs) for ev, effs in self.runtime._pending if ev.seq > answered]

    def _take_over(self) -> None:
        self._scan_answers()
        log.info("spare_answers_owed", count=len(self.runtime._pending), answered_upto=self.runtime.answered_upto)

    # -- datagrams in ------------------------------------------------------------------------

    async def _rebind(self) -> None:
        """A reload changed the heartbeat port or this router's addresses: new sockets."""
        loop = asyncio.get_running_loop()
        for sock in self.socks.values():
            loop.remove_reader(sock.fileno())
            sock.close()
        self.socks.clear()
        try:
            await self._open_sockets()
            log.info("sockets_rebound", links=sorted(self.socks))
        except OSError as exc:
            log.error("rebind_failed", error=str(exc))

    def _on_readable(self, link: str, sock: socket.socket) -> None:
        for _ in range(256):
            try:
                data, addr = sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("recv_error", link=link, error=str(exc))
                return
            self._datagram(link, data, addr[0])

    def _datagram(self, link: str, data: bytes, src: str) -> None:
        got = wire.accept(self.key, data, link, src, self.settings)  # type: ignore[arg-type]
        if isinstance(got, wire.Rejected):
            self._reject(got, link, src, len(data))
            return
        type_, p = got
        if type_ == "pulse.heartbeat_received":
            log.debug("heartbeat_in", link=link, peer=p["peer"], seq=p["seq"], role=p["role"])
        else:
            log.info("fence_in", link=link, peer=p["peer"], target=p["target"], seq=p["seq"])
        self.runtime.publish(type_, p)

    def _reject(self, rejected: wire.Rejected, link: str, src: str, size: int) -> None:
        self.rejected += 1
        if not self._reject_limit.admit(time.monotonic())[0]:
            return
        log.warning("datagram_rejected", reason=rejected.reason, link=link, address=src, size=size, count=self.rejected)
        self.runtime.publish("pulse.datagram_rejected", rejected.payload(link, src, size, self.rejected))

    # -- link state --------------------------------------------------------------------------

    async def _watch_links(self) -> None:
        st = self.runtime.state
        known = dict(getattr(st, "links_up", {}) or {})
        while not self.stop.is_set() and self.watched:
            s = self.settings  # a reload may change the keepalive and the links watched
            assert s is not None
            interval = link_poll_interval(s.keepalive_ns) / 1e9
            try:
                info = await self._nl(netutil.links)
            except Exception as exc:  # netlink trouble: try again next time
                log.warning("link_poll_failed", error=str(exc))
                info = None
            if info is not None:
                devices = {link: dev or self.devices.get(link) for link, dev in self.watched.items()}
                observed = {link: netutil.link_up(info.get(dev)) for link, dev in devices.items() if dev is not None}
                for link, up in link_changes(known, observed):
                    dev = devices[link]
                    log.info("link_changed", link=link, device=dev, up=up)
                    self.runtime.publish("pulse.link_changed", {"link": link, "up": up, "device": dev})
            await asyncio.sleep(interval)

    async def _watch_tracks(self) -> None:
        """Every ``link_poll_interval``: each tracked interface's link (up: 1) and file's number,
        published as ``pulse.track_observed`` when it changed, and every item once at the first poll
        (the core learns every item's state; after a restart the core ignores an unchanged value)."""
        known: dict[Watched, tuple[int, str]] = {}
        loop = asyncio.get_running_loop()
        while not self.stop.is_set() and self.tracked:
            s = self.settings  # a reload may change the keepalive and the items watched
            assert s is not None
            interval = link_poll_interval(s.keepalive_ns) / 1e9
            items = self.tracked
            observed: dict[Watched, tuple[int, str]] = {}
            if any(w.kind == "interface" for w in items):
                try:
                    info = await self._nl(netutil.links)
                except Exception as exc:  # netlink trouble: the interfaces are read next time
                    log.warning("track_poll_failed", error=str(exc))
                    info = None
                if info is not None:
                    for w in items:
                        if w.kind == "interface":
                            observed[w] = interface_observation(w.target in info, netutil.link_up(info.get(w.target)))
            for w in items:
                if w.kind == "file":
                    observed[w] = file_observation(*await loop.run_in_executor(self._files, read_track_file, w.target))
            for p in track_changes(known, items, observed):
                log.info("track_observed", **p)
                self.runtime.publish("pulse.track_observed", p)
            await asyncio.sleep(interval)

    # -- effects -----------------------------------------------------------------------------

    def _apply_reload(self, ev: Event, rebind: bool) -> None:
        """A reload the router accepted, as the shell follows it (the live pulse on the bus, a spare
        when it scans the log): the settings, the key, the links watched; new sockets if the port or
        the addresses changed (``rebind``: the live one; a spare binds when it goes)."""
        try:
            new = _settings_from_config(ev.payload)
            key = read_key(ev.payload["model"]["heartbeat"]["key_file"])
        except Exception as exc:  # the core reports an unusable config; keep the old key
            log.warning("reload_not_applied_to_shell", error=str(exc))
            return
        old, self.settings = self.settings, new
        self.key_file, self.key = ev.payload["model"]["heartbeat"]["key_file"], key
        self.config_seq = ev.seq  # devices of a rebind come from this one
        # monitor_links or a link's device may have changed: the watch follows the reload
        self.watched = link_devices(ev.payload["model"], new.local)
        # and the tracked items (added ones are published at the watch's next poll)
        self.tracked = watched_items(ev.payload["model"], new.local)
        if rebind:
            if old is None or _bindings(old) != _bindings(new):
                self._spawn(self._rebind())
            self._start_link_watch()
            self._start_track_watch()

    def on_event(self, ev: Event) -> None:
        if ev.type == "config.loaded" and ev.payload.get("reload"):
            self._apply_reload(ev, rebind=True)
        elif ev.type == "router.shutdown_requested":
            self._spawn(self._finish(ev.seq))

    async def _finish(self, seq: int) -> None:
        """After a shutdown request: let this batch's effects run (the VIP release, the leaving
        heartbeat: they run once their records are durable, so none of them is lost when pulse
        exits), let notify commands finish, then stop. In scale-out the core first keeps serving
        while the bgp core drains and withdraws the VIPs (``stop_at``): wait for that, then for
        the effects of the step that ended it."""
        await asyncio.sleep(0.05)
        drained = False
        while getattr(self.runtime.state, "stop_at", None) is not None and not self.stop.is_set():
            await asyncio.sleep(0.02)
            drained = True
        if drained:
            seq = max(seq, self.runtime.last_seq)
        deadline = time.monotonic() + 1.0
        while self.runtime.executed_upto < seq and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if self.runtime.executed_upto < seq:
            log.warning("outputs_not_recorded", cause=seq, note="the bus did not acknowledge them: not run")
        pending = [t for t in self._bg if t is not asyncio.current_task() and t not in self._garp_tasks]
        if pending:
            # a failover service's stop_cmd gets longer than a notify command: it stops the service
            fos = [t for t in self._fos_last.values() if not t.done()]
            await asyncio.wait(pending, timeout=10.0 if fos else 1.0)
        try:  # the VIPs' release and the leaving heartbeat, queued on the netlink thread, are done
            await asyncio.wait_for(self._nl(lambda: None), timeout=2.0)
        except asyncio.TimeoutError:
            log.warning("netlink_queue_not_drained")
        log.info("pulse_stopping", reason="shutdown requested")
        self.stop.set()

    def execute(self, eff: Effect, ev: Event) -> Any:
        t, p = eff.type, eff.payload
        if t == "pulse.send_heartbeat":
            data = wire.datagram_of(self.key, t, p)  # type: ignore[arg-type]
            if p["leaving"]:  # after the VIPs' release queued before it
                self._queue(self._send, data, p["port"], p["destinations"], "leaving_heartbeat_sent", p["seq"])
            elif self._submitted != self._done:
                # behind VIP changes still in flight: the first ACTIVE heartbeat of a takeover must
                # not reach the old active (which then lets go) before our announcement reaches
                # the clients
                self._queue(self._send, data, p["port"], p["destinations"])
            else:
                self._send(data, p["port"], p["destinations"])
        elif t == "pulse.send_fence":
            data = wire.datagram_of(self.key, t, p)  # type: ignore[arg-type]
            self._queue(self._send, data, p["port"], p["destinations"], "fence_sent", p["seq"], p["target"])
        elif t == "pulse.take_vips":
            self._queue(self._take, p["vips"])
        elif t == "pulse.release_vips":
            for task in list(self._garp_tasks):
                task.cancel()
            self._queue(self._release, p["vips"])
        elif t == "pulse.send_garp":
            vips = [dict(v, device=v.get("device") or self.devices.get("public")) for v in p["vips"]]
            first = asyncio.wrap_future(self._queue(netutil.announce_once, vips))  # right behind the VIPs' add
            task = self._spawn(self._garp_rounds(vips, p["repeat"], p["interval_ms"], p["reason"], first))
            self._garp_tasks.add(task)
            task.add_done_callback(self._garp_tasks.discard)
        elif t == "pulse.run_notify":
            self._spawn(self._notify(p))
        elif t == "pulse.run_failover":
            # a start_cmd runs once the VIPs queued before it are on (its service may bind the VIP);
            # one service's commands run one after the other (a stop finishes before the next start)
            after = asyncio.wrap_future(self._queue(lambda: None))
            prev = self._fos_last.get(p["service"])
            task = self._spawn(self._failover_cmd(p, after, prev))
            self._fos_last[p["service"]] = task
        elif t in ("pulse.start_lvsd", "pulse.stop_lvsd"):
            log.info(t.split(".")[1], reason=p["reason"], note="carried out by the router supervisor")
        elif t == "router.role_changed":
            log.info("role_changed", old=p["old"], new=p["new"], reason=p["reason"], peer=p["peer"])
        elif t in ("pulse.peer_dead", "pulse.peer_alive", "pulse.link_degraded", "pulse.link_restored",
                   "pulse.split_brain_resolved", "pulse.peer_restarted", "pulse.config_rejected"):
            log.info(t.split(".", 1)[1], **{k: v for k, v in p.items() if k in ("peer", "link", "cause", "winner", "error")})
        return None

    def _send(self, data: bytes, port: int, destinations: list[dict], what: str | None = None, seq: int = 0,
              target: str | None = None) -> None:
        """Send ``data`` to each destination (a socket's sendto: from the loop or the netlink thread)."""
        if what is not None:
            log.info(what, seq=seq, **({"target": target} if target else {}))
        for d in destinations:
            sock = self.socks.get(d["link"])
            if sock is None:
                continue
            try:
                sock.sendto(data, (d["address"], port))
            except OSError as exc:  # a link down (ENETUNREACH, EHOSTUNREACH...): the peer will notice
                self._send_errors += 1
                if self._send_errors % 100 == 1:
                    log.warning("send_failed", link=d["link"], address=d["address"], error=str(exc),
                                count=self._send_errors)

    def _vip_device(self, v: dict) -> str | None:
        return v.get("device") or self.devices.get("public") or netutil.device_for_subnet(v["address"])

    def _take(self, vips: list[dict]) -> list[dict]:
        """Add the VIPs; returns those that were missing."""
        out = []
        for v in vips:
            dev = self._vip_device(v)
            if dev is None:
                log.error("vip_no_device", address=v["address"])
                continue
            try:
                added = netutil.add_address(v["address"], v["prefixlen"], dev, v.get("label"))
                log.info("vip_added" if added else "vip_already_present", address=v["address"], device=dev)
                if added:
                    out.append(v)
            except (netutil.NetError, OSError) as exc:
                log.error("vip_add_failed", address=v["address"], device=dev, error=str(exc))
        return out

    def _release(self, vips: list[dict]) -> None:
        for v in vips:
            dev = self._vip_device(v)
            try:
                removed = netutil.del_address(v["address"], v["prefixlen"], dev)
                if removed:
                    log.info("vip_removed", address=v["address"], device=dev)
            except (netutil.NetError, OSError) as exc:
                log.error("vip_del_failed", address=v["address"], device=dev, error=str(exc))

    async def _garp_rounds(self, vips: list[dict], repeat: int, interval_ms: int, reason: str,
                           first: asyncio.Future) -> None:
        """The announcements of one send_garp: the first round already queued on the netlink thread
        (``first``), the others ``interval_ms`` apart, through the same thread."""
        for i in range(max(1, repeat)):
            if i == 0:
                errors = await first
            else:
                await asyncio.sleep(interval_ms / 1000)
                errors = await self._nl(netutil.announce_once, vips)
            if errors:
                log.warning("garp_failed", errors=errors[:8], reason=reason)
            elif i == 0:
                log.info("garp_sent", vips=[v["address"] for v in vips], repeat=repeat, reason=reason)

    async def _notify(self, p: dict) -> None:
        cmd = p["command"] + ("" if not p["args"] else " " + shlex.join(p["args"]))
        exit_code, error, ms = await run_shell(cmd, p["timeout_ms"] / 1000)
        log.info("notify_finished", kind=p["kind"], exit_code=exit_code, duration_ms=ms, error=error)
        if self.runtime.client is not None:
            self.runtime.publish("pulse.notify_finished", {
                "kind": p["kind"], "command": p["command"][:4096], "exit_code": exit_code,
                "duration_ms": ms, "error": error[:1024],
            })

    async def _failover_cmd(self, p: dict, after: asyncio.Future, prev: asyncio.Task | None) -> None:
        """Run a failover service's start_cmd or stop_cmd (environment: LVSBUS_ROUTER, this router's
        name; LVSBUS_FAILOVER, the service's; LVSBUS_ACTION, start or stop); publish its exit status,
        duration and the tail of its stderr (a file, not a pipe: a daemon it starts inherits stderr
        and lives on)."""
        if prev is not None:
            await asyncio.wait([prev])
        await after
        tail = b""
        with tempfile.TemporaryFile() as err:
            env = {**os.environ, "LVSBUS_FAILOVER": p["service"], "LVSBUS_ACTION": p["action"],
                   "LVSBUS_ROUTER": self.settings.local if self.settings is not None else ""}
            exit_code, error, ms = await run_shell(p["command"], p["timeout_ms"] / 1000, env=env, stderr=err)
            try:
                size = err.seek(0, os.SEEK_END)
                err.seek(max(0, size - 1024))
                tail = err.read(1024)
            except OSError:
                pass
        stderr_tail = tail.decode("utf-8", "replace")[-1024:]
        log.info("failover_cmd_finished", service=p["service"], action=p["action"], exit_code=exit_code,
                 duration_ms=ms, error=error)
        if self.runtime.client is not None:
            self.runtime.publish("pulse.failover_cmd_finished", {
                "service": p["service"], "action": p["action"], "command": p["command"][:4096],
                "exit_code": exit_code, "duration_ms": ms, "stderr_tail": stderr_tail, "error": error[:1024],
            })

    def _spawn(self, coro, name: str | None = None) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return task

    # -- main --------------------------------------------------------------------------------

    def _on_signal(self, sig: int) -> None:
        """SIGTERM reaching pulse itself (a whole process group signalled, KillMode=control-group):
        hand over as a router shutdown would (the core steps down and sends the leaving heartbeat),
        then stop; a second signal, or no answer within 2 s, stops at once."""
        if self._stopping or self.runtime.client is None or (self.spare and self._lock_fd is None):
            self.stop.set()  # a spare that has not taken over just goes
            return
        self._stopping = True
        log.info("signal_handover", signal=signal.Signals(sig).name)
        self.runtime.publish("router.shutdown_requested", {"reason": f"pulse got {signal.Signals(sig).name}", "graceful": True})
        asyncio.get_running_loop().call_later(2.0, self.stop.set)

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        go = None
        if self.spare:
            go = asyncio.Event()
            self._spawn(self._spare_wait(go), name="spare-wait")
        try:
            await self.runtime.run(self.stop, on_start=self.on_start, go=go, on_caught_up=self.on_caught_up)
        finally:
            for task in [*self._bg, *(t for t in (self._watch_task, self._track_task) if t)]:
                task.cancel()
            self._netlink.shutdown(wait=False)
            self._files.shutdown(wait=False)
            for link, sock in self.socks.items():
                loop.remove_reader(sock.fileno())
                sock.close()
        return 0


def read_track_file(path: str) -> tuple[bytes | None, str | None]:
    """A tracked file's first bytes (one more than ``FILE_READ_MAX``: a longer file is not a
    number), for ``watch.file_observation``: (bytes, None); (None, None) when it does not exist;
    (None, why) when it cannot be read. Opened non-blocking: a FIFO without a writer reads empty."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, exc.strerror or str(exc)
    try:
        return os.read(fd, FILE_READ_MAX + 1), None
    except BlockingIOError:
        return b"", None
    except OSError as exc:
        return None, exc.strerror or str(exc)
    finally:
        os.close(fd)


def _log_failure(fut) -> None:
    """Done-callback of work queued on the netlink thread: its own errors are logged where they
    happen (vip_add_failed, send_failed...); anything else must not vanish with the future."""
    if not fut.cancelled() and fut.exception() is not None:
        exc = fut.exception()
        log.error("effect_failed", error=f"{type(exc).__name__}: {exc}")


def _bindings(s: PulseSettings) -> tuple:
    return (s.port, tuple((link, s.me.address_on(link)) for link in s.local_links()))


def main(argv: list[str] | None = None) -> int:
    ap = service_arguments("pulse", "pulse: the router role service")
    args = ap.parse_args(argv)
    logs.setup(service="pulse")
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1 PID: every thread's stack on stderr
    lock_fd = servicelock.try_acquire(StateDirs(args.state_dir).run, "pulse")
    shell = PulseShell(args.state_dir, args.config, args.run_start_seq, args.config_seq)
    shell._lock_fd = lock_fd
    shell.spare = lock_fd is None  # another pulse is live: this one waits as its warm spare
    try:
        shell.prepare()
    except KeyFileError as exc:
        log.error("key_file_refused", error=str(exc))
        print(f"pulse: {exc}", file=__import__("sys").stderr)
        return 2
    except (ConfigError, ValueError, KeyError) as exc:
        log.error("config_unusable", error=str(exc))
        print(f"pulse: cannot use the configuration: {exc}", file=__import__("sys").stderr)
        return 2
    try:
        return asyncio.run(shell.main())
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            print(f"pulse: cannot bind the heartbeat sockets: {exc}", file=__import__("sys").stderr)
            return 2
        raise
