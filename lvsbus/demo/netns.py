"""A network-namespace topology for integration tests (needs root and ``ip netns``).

    client (10.99.1.100) ──┐
                           pub bridge ── r1 eth0 10.99.1.11 / r2 eth0 10.99.1.12   (VIP 10.99.1.50)
                           priv bridge ─ r1 eth1 10.99.2.11 / r2 eth1 10.99.2.12
                           nat bridge ── r1 eth2 10.99.3.11 / r2 eth2 10.99.3.12 / servers 10.99.3.101...
                                         (only with servers > 0; servers route via 10.99.3.1, the NAT VIP)

The bridges live in their own namespace (never in the root one); every name carries a per-run
prefix (``lvsb{pid % 10000}x{counter}``) and everything is removed at teardown, also when a test
fails: the processes started through ``popen`` (by PID, their whole process group), any process
still inside a namespace (``ip netns pids``, by PID), then the namespaces. MACs are fixed so tests
can assert neighbour entries: router i has ``02:99:0L:00:00:1i`` on link L (1 public, 2 private,
3 nat), the client ``02:99:01:00:01:00``.

Used by the tests (through the ``netns`` fixture in ``tests/conftest.py``) and by ``lvsbus demo``::

    topo = Topology(routers=2, servers=3).build()
    try:
        topo.run("c", "ip", "neigh")
        proc = topo.popen("r1", [sys.executable, "-m", "lvsbus.cli", "router", "--config", cfg])
    finally:
        topo.destroy()
"""
from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import signal
import socket as _socket
import subprocess
import threading
import time
from pathlib import Path

_COUNTER = itertools.count(1)
PUBLIC, PRIVATE, NAT = "10.99.1", "10.99.2", "10.99.3"
VIP = "10.99.1.50"
NAT_VIP = "10.99.3.1"
CLIENT = "10.99.1.100"


CLONE_NEWNET = 0x40000000


def _libc():
    return ctypes.CDLL("libc.so.6", use_errno=True)


def netns_available() -> str | None:
    """None when namespaces can be used here, else why not (a skip reason)."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    name = f"lvsbprobe{os.getpid() % 10000}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def router_mac(i: int, link: int) -> str:
    return f"02:99:0{link}:00:00:{10 + i:02x}"


CLIENT_MAC = "02:99:01:00:01:00"


class Topology:
    def __init__(self, routers: int = 2, servers: int = 0, prefix: str | None = None, private: bool = True) -> None:
        self.prefix = prefix or f"lvsb{os.getpid() % 10000}x{next(_COUNTER)}"
        self.n_routers = routers
        self.n_servers = servers
        self.private = private
        self.bridge_ns = self.ns("b")
        self.procs: list[subprocess.Popen] = []
        self.created: list[str] = []

    # -- names -------------------------------------------------------------------------------

    def ns(self, short: str) -> str:
        """Full namespace name of ``b`` (bridges), ``c`` (client), ``r1``.., ``s1``.."""
        return self.prefix + short

    @property
    def routers(self) -> list[str]:
        return [f"r{i}" for i in range(1, self.n_routers + 1)]

    def router_address(self, i: int, link: str = "public") -> str:
        return f"{ {'public': PUBLIC, 'private': PRIVATE, 'nat': NAT}[link]}.{10 + i}"

    def server_address(self, j: int) -> str:
        return f"{NAT}.{100 + j}"

    # -- commands ----------------------------------------------------------------------------

    @staticmethod
    def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(list(cmd), capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
        return r

    def run(self, short: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command inside namespace ``short`` and wait for it."""
        return self._sh("ip", "netns", "exec", self.ns(short), *cmd, check=check)

    def popen(self, short: str, argv: list[str], **kw) -> subprocess.Popen:
        """Start a process inside namespace ``short`` in its own process group (killed at teardown)."""
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(short), *argv], **kw)
        self.procs.append(p)
        return p

    # -- build -------------------------------------------------------------------------------

    def build(self) -> "Topology":
        b = self.bridge_ns
        for short in ["b", "c", *self.routers, *[f"s{j}" for j in range(1, self.n_servers + 1)]]:
            self._sh("ip", "netns", "add", self.ns(short))
            self.created.append(self.ns(short))
            self._sh("ip", "-n", self.ns(short), "link", "set", "lo", "up")
        bridges = ["pub"] + (["priv"] if self.private else []) + (["nat"] if self.n_servers else [])
        for br in bridges:
            self._sh("ip", "-n", b, "link", "add", br, "type", "bridge")
            self._sh("ip", "-n", b, "link", "set", br, "up")
        for i in range(1, self.n_routers + 1):
            r = f"r{i}"
            links = [("pub", "eth0", PUBLIC, 1)]
            if self.private:
                links.append(("priv", "eth1", PRIVATE, 2))
            if self.n_servers:
                links.append(("nat", "eth2", NAT, 3))
            for br, dev, net, n in links:
                self._veth(f"{r}{br}", r, dev, br, f"{net}.{10 + i}/24", router_mac(i, n))
        self._veth("cpub", "c", "eth0", "pub", f"{CLIENT}/24", CLIENT_MAC)
        for j in range(1, self.n_servers + 1):
            s = f"s{j}"
            self._veth(f"{s}nat", s, "eth0", "nat", f"{NAT}.{100 + j}/24", f"02:99:03:00:01:{j:02x}")
            self._sh("ip", "-n", self.ns(s), "route", "add", "default", "via", NAT_VIP)
        return self

    def _veth(self, outer: str, short: str, dev: str, bridge: str, cidr: str, mac: str) -> None:
        b, ns = self.bridge_ns, self.ns(short)
        self._sh("ip", "-n", b, "link", "add", outer, "type", "veth", "peer", "name", dev, "netns", ns)
        self._sh("ip", "-n", b, "link", "set", outer, "master", bridge, "up")
        self._sh("ip", "-n", ns, "link", "set", dev, "address", mac)
        self._sh("ip", "-n", ns, "addr", "add", cidr, "dev", dev)
        self._sh("ip", "-n", ns, "link", "set", dev, "up")

    # -- faults ------------------------------------------------------------------------------

    def port(self, router: str, link: str) -> str:
        """The bridge-side veth of a router's link (``public``, ``private``, ``nat``)."""
        return router + {"public": "pub", "private": "priv", "nat": "nat"}[link]

    def cut(self, router: str, link: str) -> None:
        """Cut a router's cable: its bridge port goes down (the router sees no carrier)."""
        self._sh("ip", "-n", self.bridge_ns, "link", "set", self.port(router, link), "down")

    def heal(self, router: str, link: str) -> None:
        self._sh("ip", "-n", self.bridge_ns, "link", "set", self.port(router, link), "up")

    def socket(self, short: str, family: int = _socket.AF_INET, type: int = _socket.SOCK_DGRAM, proto: int = 0) -> _socket.socket:
        """A socket that lives in namespace ``short``, usable from the test process: it is created
        on a helper thread that joined the namespace (setns is per thread)."""
        result: list = []

        def make() -> None:
            try:
                fd = os.open(f"/run/netns/{self.ns(short)}", os.O_RDONLY)
                try:
                    if _libc().setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
                finally:
                    os.close(fd)
                result.append(_socket.socket(family, type, proto))
            except BaseException as exc:  # handed to the caller
                result.append(exc)

        t = threading.Thread(target=make)
        t.start()
        t.join()
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]

    # -- inspection --------------------------------------------------------------------------

    def neigh_mac(self, short: str, address: str) -> str | None:
        """The link-layer address ``short`` holds for ``address`` (None when none or FAILED)."""
        out = self.run(short, "ip", "neigh", "show", address, check=False).stdout.split()
        return out[out.index("lladdr") + 1] if "lladdr" in out else None

    def has_address(self, short: str, address: str) -> bool:
        out = self.run(short, "ip", "-o", "addr", "show", check=False).stdout
        return f" {address}/" in out

    # -- teardown ----------------------------------------------------------------------------

    def destroy(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for ns in reversed(self.created):
            pids = self._sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        if any(self._sh("ip", "netns", "pids", ns, check=False).stdout.strip() for ns in self.created):
            time.sleep(0.2)
        for ns in reversed(self.created):
            self._sh("ip", "netns", "del", ns, check=False)
        self.created.clear()


def router_toml(topo: Topology, key_file: str | Path, *, keepalive: float = 0.1, deadtime: float = 0.5,
                port: int = 5390, preempt: bool = True, priorities: tuple[int, ...] = (200, 100),
                monitor_links: bool = True, garp_repeat: int = 3, private_link: bool = True,
                extra: str = "") -> str:
    """A native TOML config for ``topo``'s routers with the VIP 10.99.1.50 on eth0 (heartbeats on
    the public link, and on the private one unless ``private_link`` is false)."""
    lines = ['service = "lvs"', ""]
    for i in range(1, topo.n_routers + 1):
        lines += [f"[router.r{i}]", f'address = "{topo.router_address(i)}"']
        if topo.private and private_link:
            lines += [f'private_address = "{topo.router_address(i, "private")}"', 'private_device = "eth1"']
        lines += [f"priority = {priorities[i - 1] if i <= len(priorities) else 50 - i}", 'device = "eth0"', ""]
    lines += [
        "[heartbeat]", f"port = {port}", f"keepalive = {keepalive}", f"deadtime = {deadtime}",
        f'key_file = "{key_file}"', f"preempt = {'true' if preempt else 'false'}",
        f"monitor_links = {'true' if monitor_links else 'false'}", f"garp_repeat = {garp_repeat}", "",
        "[virtual.echo]", f'address = "{VIP}"', 'device = "eth0"', "port = 7", 'protocol = "udp"',
        'scheduler = "rr"', 'forwarding = "direct"', "",
        "[virtual.echo.check]", 'kind = "udp"', "",
        "[virtual.echo.server.s1]", f'address = "{NAT}.101"', "",
    ]
    return "\n".join(lines) + extra + "\n"


def write_key(path: Path, secret: bytes = b"lvsbus-netns-test-secret-0123456789") -> Path:
    path.write_bytes(secret)
    os.chmod(path, 0o600)
    return path
