"""The BGP speaker behind one small interface (docs/scaleout.md), and its BIRD 2 driver.

The bgp shell needs four things of a speaker: start it (or find it), hand it the whole set of
routes to announce (each plain or with the GRACEFUL_SHUTDOWN community), read its sessions, stop
it. ``Speaker`` is that interface; ``BirdSpeaker`` implements it for BIRD 2 (Debian's ``bird2``):

* lvsbus writes BIRD's config (``bird.conf``: router ID, one BGP protocol per peer, BFD when
  asked) and starts ``bird -f`` as its child, with its own control socket;
* the routes are a static protocol per address family in ``routes.conf``, which ``bird.conf``
  includes: a route set is written there (atomically) and BIRD is told to ``configure`` over its
  control socket, which reloads only what changed (the static protocol's routes; the sessions
  stay up). BIRD 2 has no command that adds a route by itself: a generated file and a soft
  reconfigure is its supported way (anycast-healthchecker drives BIRD the same way);
* a drained route carries the community (65535, 0) (RFC 8326), set by the static route's own
  attribute block; the upstream lowers its preference (docs/scaleout.md shows the filter);
* sessions come from ``show protocols`` on the control socket (BIRD reports no changes by
  itself: the shell polls).

Another speaker (GoBGP's gRPC API: AddPath/DeletePath and WatchEvent; ExaBGP's process API:
``announce route ... community [65535:0]`` lines on its stdin) fits the same four methods.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from lvsbus.host.files import write_atomically

GRACEFUL_SHUTDOWN = (65535, 0)
STATIC4, STATIC6 = "lvsbus_vips4", "lvsbus_vips6"


class SpeakerError(RuntimeError):
    """The speaker refused something or could not be reached; the message says which and why."""


class Route(NamedTuple):
    address: str
    prefixlen: int
    state: str  # "announce" | "drain"


class Session(NamedTuple):
    peer: str
    state: str  # "up" | "down"
    info: str


class Speaker(Protocol):
    name: str

    def start(self) -> tuple[str, int]:
        """Start the speaker (or connect to it); returns (its version, its pid)."""

    def set_routes(self, routes: list[Route]) -> None:
        """Announce exactly ``routes`` from now on (a route not in it is withdrawn). Raises SpeakerError."""

    def sessions(self) -> list[Session]:
        """Every BGP session, as the speaker reports it. Raises SpeakerError."""

    def alive(self) -> bool:
        """Whether the speaker (the process lvsbus started) still runs."""

    def stop(self) -> None:
        """Stop the speaker: its sessions close, so the peers drop every route of this router."""


@dataclass(frozen=True)
class BgpSettings:
    router_id: str
    local_as: int
    peer_as: int
    peers: tuple[str, ...]
    hold_time: int = 9
    bfd: bool = False


# ---------------------------------------------------------------------------------------------
# BIRD's control socket


class BirdControl:
    """BIRD's control socket (``birdc``'s protocol): a hello line, then one command a line; each
    reply line starts with a 4-digit code, ``-`` when more lines follow, a space on the last;
    lines starting with a space continue the previous code. Codes 8000 and up are errors."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    def command(self, cmd: str) -> list[tuple[int, str]]:
        if "\n" in cmd:
            raise ValueError("one line")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(self.path)
                f = s.makefile("rwb")
                hello = self._reply(f)
                if not hello or hello[-1][0] != 1:
                    raise SpeakerError(f"BIRD control socket {self.path}: unexpected greeting {hello!r}")
                f.write(cmd.encode() + b"\n")
                f.flush()
                return self._reply(f)
        except (OSError, socket.timeout) as exc:
            raise SpeakerError(f"BIRD control socket {self.path}: {exc}") from None

    @staticmethod
    def _reply(f) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        code = 0
        while True:
            raw = f.readline()
            if not raw:
                raise SpeakerError("BIRD closed its control socket mid-reply")
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line[:1] == " ":
                out.append((code, line[1:]))
                continue
            if len(line) < 5 or not line[:4].isdigit():
                raise SpeakerError(f"BIRD sent a line that is not a reply: {line[:80]!r}")
            code = int(line[:4])
            out.append((code, line[5:]))
            if line[4] == " ":
                return out

    def check(self, cmd: str) -> list[tuple[int, str]]:
        reply = self.command(cmd)
        errors = [text for code, text in reply if code >= 8000]
        if errors:
            raise SpeakerError(f"BIRD refused {cmd!r}: {'; '.join(errors)[:900]}")
        return reply


# ---------------------------------------------------------------------------------------------
# BIRD 2


def _peer_name(i: int) -> str:
    return f"lvsbus_peer{i + 1}"


def render_bird_conf(s: BgpSettings, routes_file: str) -> str:
    """bird.conf for lvsbus's BIRD: router ID, device scan, BFD if asked, the routes file, one
    BGP session a peer exporting only lvsbus's static routes of the peer's family."""
    lines = [
        "# written by lvsbus (docs/scaleout.md): every start rewrites it",
        f"router id {ipaddress.IPv4Address(s.router_id)};",
        "log stderr { info, remote, warning, error, auth, fatal, bug };",
        "protocol device {}",
    ]
    if s.bfd:
        lines.append('protocol bfd lvsbus_bfd { interface "*" { min rx interval 100 ms; '
                     "min tx interval 100 ms; multiplier 3; }; }")
    lines.append(f'include "{routes_file}";')
    for i, peer in enumerate(s.peers):
        v6 = ipaddress.ip_address(peer).version == 6
        lines += [
            f"protocol bgp {_peer_name(i)} {{",
            f"  local as {s.local_as};",
            f"  neighbor {peer} as {s.peer_as};",
            f"  hold time {s.hold_time};" if s.hold_time else "  hold time 0;",
            # a restarted lvsbus must not leave stale routes on the upstream: no graceful restart
            "  graceful restart off;",
            "  connect delay time 1;",
            "  connect retry time 2;",
            "  error wait time 1, 10;",
            *(["  bfd on;"] if s.bfd else []),
            f"  {'ipv6' if v6 else 'ipv4'} {{ import none; next hop self; "
            f"export where proto = \"{STATIC6 if v6 else STATIC4}\"; }};",
            "}",
        ]
    return "\n".join(lines) + "\n"


def render_routes(routes: list[Route]) -> str:
    """routes.conf: one static protocol a family, every route a blackhole (the routes exist to be
    exported; traffic to a VIP is the router's own, on its dummy device), drained ones with
    GRACEFUL_SHUTDOWN."""
    out = ["# written by lvsbus (docs/scaleout.md): the VIPs this router announces now"]
    for proto, fam in ((STATIC4, 4), (STATIC6, 6)):
        body = []
        for r in sorted(routes):
            net = ipaddress.ip_network(f"{r.address}/{r.prefixlen}", strict=False)
            if net.version != fam:
                continue
            attrs = " { bgp_community.add((%d,%d)); }" % GRACEFUL_SHUTDOWN if r.state == "drain" else ""
            body.append(f"  route {net} blackhole{attrs};")
        out += [f"protocol static {proto} {{", f"  ipv{fam};", *body, "}"]
    return "\n".join(out) + "\n"


class BirdSpeaker:
    """BIRD 2 started by lvsbus, driven over its control socket (the module's docstring)."""

    name = "bird"

    def __init__(self, settings: BgpSettings, workdir: str | Path, control_socket: str,
                 binary: str = "bird", stderr=None, argv_prefix: tuple[str, ...] = ()) -> None:
        self.settings = settings
        self.argv_prefix = argv_prefix  # tests: ("ip", "netns", "exec", NS) runs BIRD in a namespace
        self.dir = Path(workdir)
        self.socket = control_socket
        self.binary = shutil.which(binary) or binary
        self.stderr = stderr
        self.conf = self.dir / "bird.conf"
        self.routes_file = self.dir / "routes.conf"
        self.proc: subprocess.Popen | None = None
        self.control = BirdControl(control_socket)
        self.version = ""
        self.adopted: int | None = None  # a BIRD started by an earlier run, not our child

    def _write(self, path: Path, text: str) -> None:
        write_atomically(str(path), text)

    def _running(self) -> int | None:
        """The pid of a BIRD this driver started earlier with this config (a bgp service that
        died and restarted: BIRD runs in its own session and outlives it), if it still runs."""
        try:
            pid = int((self.dir / "bird.pid").read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        return pid if str(self.conf).encode() in cmdline and any(b"bird" in a for a in cmdline[:1]) else None

    def start(self, timeout: float = 10.0) -> tuple[str, int]:
        """Start BIRD, or adopt the one a previous run of the service started (its routes stay
        announced across a restart of the service: a restarting service must not move traffic)."""
        if shutil.which(self.binary) is None:
            raise SpeakerError(f"BIRD is not installed ({self.binary}): apt-get install bird2")
        self.dir.mkdir(parents=True, exist_ok=True)
        Path(self.socket).parent.mkdir(parents=True, exist_ok=True)
        pid = self._running()
        if pid is not None:
            try:
                # bird.conf from today's settings; routes.conf as BIRD has it, until the core's next set
                if not self.routes_file.exists():
                    self._write(self.routes_file, render_routes([]))
                self._write(self.conf, render_bird_conf(self.settings, str(self.routes_file)))
                self._configure()
                self.version = self._version()
                self.adopted = pid
                return self.version, pid
            except SpeakerError:
                self._kill(pid)  # running but not answering: replaced below
        self.adopted = None  # a BIRD of our own from here
        self._write(self.routes_file, render_routes([]))
        self._write(self.conf, render_bird_conf(self.settings, str(self.routes_file)))
        try:
            os.unlink(self.socket)  # a socket left by a BIRD that died: ours is new
        except FileNotFoundError:
            pass
        self.proc = subprocess.Popen(
            [*self.argv_prefix, self.binary, "-f", "-c", str(self.conf), "-s", self.socket, "-P", str(self.dir / "bird.pid")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr, start_new_session=True)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SpeakerError(f"BIRD exited at start (status {self.proc.returncode}): see its stderr")
            try:
                self.version = self._version()
                return self.version, self._bird_pid()
            except SpeakerError as exc:
                last = str(exc)
                time.sleep(0.05)
        self.stop()
        raise SpeakerError(f"BIRD did not answer on {self.socket} within {timeout:g} s: {last}")

    def _version(self) -> str:
        reply = self.control.check("show status")
        return next((t for c, t in reply if c == 1000), "BIRD").replace("BIRD ", "", 1)

    def _bird_pid(self) -> int:
        """BIRD's own pid (its pid file; the child's pid when it runs under a wrapper such as
        ``ip netns exec``, which execs it: the same)."""
        try:
            return int((self.dir / "bird.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return self.proc.pid if self.proc is not None else 0

    def reconfigure(self, settings: BgpSettings) -> None:
        """New BGP settings (a reload changed [scaleout]): bird.conf rewritten, BIRD reconfigured
        (sessions whose settings did not change stay up)."""
        self.settings = settings
        self._write(self.conf, render_bird_conf(settings, str(self.routes_file)))
        self._configure()

    def _configure(self) -> None:
        """``configure``: BIRD reads bird.conf (and routes.conf) again and applies what changed."""
        reply = self.control.check("configure")
        # 0003 reconfigured, 0004 in progress, 0005 queued behind one in progress (the file is parsed
        # now: the queued config is this one); anything else (0006: shutting down) is not taken
        if not any(c in (3, 4, 5) for c, _t in reply):
            raise SpeakerError(f"BIRD did not reconfigure: {reply!r}"[:1000])

    def set_routes(self, routes: list[Route]) -> None:
        self._write(self.routes_file, render_routes(routes))
        self._configure()

    def sessions(self) -> list[Session]:
        by_name = {_peer_name(i): p for i, p in enumerate(self.settings.peers)}
        out = []
        for code, text in self.control.check("show protocols"):
            if code != 1002:
                continue
            # Name Proto Table State Since Info (Since is one word in BIRD's default time format)
            parts = text.split(None, 5)
            if len(parts) < 5 or parts[0] not in by_name:
                continue
            state, info = parts[3], (parts[5].strip() if len(parts) > 5 else "")
            up = state == "up" and info.startswith("Established")
            out.append(Session(by_name[parts[0]], "up" if up else "down", f"{state} {info}".strip()[:256]))
        return out

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.adopted is not None and self._running() == self.adopted

    @staticmethod
    def _kill(pid: int, timeout: float = 5.0) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    return  # exited; its parent (not us: an adopted BIRD) reaps it
            except (OSError, IndexError):
                return  # gone
            time.sleep(0.02)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM: BIRD closes its sessions (a BGP Cease) and exits."""
        p, self.proc = self.proc, None
        adopted, self.adopted = self.adopted, None
        if adopted is not None and self._running() == adopted:
            self._kill(adopted, timeout)
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout)


class RunningBird:
    """The operator's running BIRD 2 (``speaker = "bird-running"``): lvsbus neither starts nor
    stops it. Its bird.conf includes ``routes_file``, where lvsbus writes the VIPs' static routes
    (protocols ``lvsbus_vips4`` / ``lvsbus_vips6``, as for its own BIRD), and has its own BGP
    sessions exporting them (``export where proto ~ "lvsbus_vips*"``); lvsbus reconfigures it
    over its control socket and reads its BGP sessions (those to ``peers``) from ``show protocols
    all``. Stopping withdraws lvsbus's routes (an empty routes file) and leaves BIRD running."""

    name = "bird-running"

    def __init__(self, settings: BgpSettings, routes_file: str, control_socket: str) -> None:
        self.settings = settings
        self.routes_file = Path(routes_file)
        self.control = BirdControl(control_socket)
        self.version = ""
        self.adopted: int | None = None  # set by start: it is always someone else's BIRD
        self._up = False

    def start(self) -> tuple[str, int]:
        """Connect: BIRD answers on its control socket; a routes file that is not there yet is
        written empty and BIRD reconfigured (one already there, an earlier run's, stays: a
        restart moves no traffic). (version, 0: not lvsbus's process)."""
        reply = self.control.check("show status")
        self.version = next((t for c, t in reply if c == 1000), "BIRD").replace("BIRD ", "", 1)
        if not self.routes_file.exists():
            write_atomically(str(self.routes_file), render_routes([]))
            self._configure()
        self.adopted = 0
        self._up = True
        return self.version, 0

    def _configure(self) -> None:
        reply = self.control.check("configure")
        if not any(c in (3, 4, 5) for c, _t in reply):
            raise SpeakerError(f"BIRD did not reconfigure: {reply!r}"[:1000])

    def reconfigure(self, settings: BgpSettings) -> None:
        """New settings: only the peers matter here (the sessions are the operator's config)."""
        self.settings = settings

    def set_routes(self, routes: list[Route]) -> None:
        write_atomically(str(self.routes_file), render_routes(routes))
        self._configure()

    def sessions(self) -> list[Session]:
        """The BGP sessions to ``peers``, whatever the operator named the protocols."""
        peers = {str(ipaddress.ip_address(p)): p for p in self.settings.peers}
        out = []
        name, state, info = "", "", ""
        for code, text in self.control.check("show protocols all") + [(0, "")]:
            if code == 1002 or code == 0:  # a protocol's line (Name Proto Table State Since Info), or the end
                name, state, info = "", "", ""
                parts = text.split(None, 5)
                if len(parts) >= 5 and parts[1] == "BGP":
                    name, state, info = parts[0], parts[3], (parts[5].strip() if len(parts) > 5 else "")
            elif name and code == 1006 and text.strip().startswith("Neighbor address:"):
                addr = text.split(":", 1)[1].strip().split("%")[0]
                try:
                    peer = peers.get(str(ipaddress.ip_address(addr)))
                except ValueError:
                    peer = None
                if peer is not None:
                    up = state == "up" and info.startswith("Established")
                    out.append(Session(peer, "up" if up else "down", f"{name}: {state} {info}".strip()[:256]))
        return out

    def alive(self) -> bool:
        """It answers (lvsbus did not start it, so there is no process of ours to watch)."""
        if not self._up:
            return False
        try:
            self.control.check("show status")
        except SpeakerError:
            self._up = False  # reconnected by start(), as the shell does for a BIRD of its own that died
        return self._up

    def stop(self, timeout: float = 5.0) -> None:
        """Withdraw lvsbus's routes; the operator's BIRD and its sessions go on."""
        self._up = False
        try:
            self.set_routes([])
        except (SpeakerError, OSError):
            pass  # not answering: it keeps what it had (its operator's business), said by the shell
