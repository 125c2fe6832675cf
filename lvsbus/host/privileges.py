"""Linux capabilities of the services: which each keeps, and the drop that takes away the rest.

``lvsbus router`` (the supervisor) stays fully privileged: it spawns and restarts the children,
loads ``ip_vs`` and removes the VIPs as a last resort. Each child it starts keeps only what it
needs afterwards, and stays uid 0 (the state directory and the key file are root's):

============  ==========================================  ==========================================
service       keeps                                       for
============  ==========================================  ==========================================
broker        nothing                                     (the log and ipc:// socket are root's files)
pulse         CAP_NET_ADMIN, CAP_NET_RAW,                 VIPs (rtnetlink); gratuitous ARP (AF_PACKET)
              CAP_NET_BIND_SERVICE                        and neighbour advertisements (raw ICMPv6);
                                                          the heartbeat port 539, bound again when a
                                                          reload changes the port or the addresses
nanny         nothing (CAP_NET_RAW when a check runs a        TCP/HTTP/UDP/SMTP/DNS checks need no
              program or pings)                           privilege; check programs often ping (file
                                                          caps); a ping check opens a raw ICMP
                                                          socket when ping sockets are not allowed
lvsd          nothing                                     (pure decisions on the bus)
ipvs          CAP_NET_ADMIN                               IPVS (generic netlink, GENL_ADMIN_PERM)
metrics       nothing (CAP_NET_BIND_SERVICE when          the HTTP port
              ``metrics_address`` has a port below 1024)
web           nothing (CAP_NET_BIND_SERVICE when its      the HTTPS port; it reads its password
              ``[web] address`` has a port below 1024)    file and TLS key as uid 0
============  ==========================================  ==========================================

The drop, in the child between ``fork`` and ``exec`` (``Dropper``, a ``preexec_fn``):

1. ``PR_SET_NO_NEW_PRIVS``: nothing the service executes (notify commands, check programs) can
   gain a privilege through a set-user-ID binary or file capabilities;
2. ``PR_CAPBSET_DROP`` of every capability not kept (needs ``CAP_SETPCAP``, which the supervisor
   has as root; without it the bounding set stays, and 1 + 4 still hold the line);
3. ``PR_CAP_AMBIENT_CLEAR_ALL``;
4. ``capset``: effective = permitted = what is kept, inheritable = none.

Then ``exec``: as uid 0 the kernel would grant the whole bounding set again, but the bounding set
now holds only what is kept (2) and no_new_privs caps the new permitted set at the old one (1).

Why before ``exec`` rather than inside the service after its start: capabilities are per thread
in Linux (``capset`` changes the calling thread only), and a service has threads early (ZeroMQ's
I/O threads, pulse's and the applier's netlink thread). A drop in a running service would leave
those threads privileged. Between fork and exec the child has one thread, and everything it later
creates inherits the reduced sets. What a service does at start needs nothing beyond what it
keeps: the state directory is made by the supervisor; files in it, the config and the key file
belong to uid 0, which opens them as their owner (no CAP_DAC_OVERRIDE needed); pulse binds port
539 with CAP_NET_BIND_SERVICE. The supervisor loads ``ip_vs`` before the applier starts (the
applier, without CAP_SYS_MODULE, can no longer modprobe it).

Programs the services run inherit this: pulse's notify commands run as uid 0 with pulse's three
capabilities (enough for ``ip``, ``arping``, ``ping``); nanny's check programs as uid 0 with
CAP_NET_RAW only (``ping`` has ``cap_net_raw`` as a file capability: without it in the bounding
set its exec fails with EPERM; that is why nanny keeps it when a check runs a program). Neither
can gain more: no ``sudo``, ``su``, nor any other file capability; files of other users are out
of reach (no CAP_DAC_OVERRIDE). The supervisor computes nanny's set from the config each time it
starts nanny, and restarts nanny when a reload changes it (a restart keeps every health state).
``lvsbus router --keep-privileges`` runs every service with the supervisor's privileges.

Pure bookkeeping (names, masks, ``/proc/PID/status``, the plan) is separate from the syscalls
(``Dropper``), so it is tested without privileges.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Iterable

#: capability numbers (linux/capability.h), index = number
CAP_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
CAP_NUMBERS = {name: i for i, name in enumerate(CAP_NAMES)}
CAP_SETPCAP = CAP_NUMBERS["CAP_SETPCAP"]

NET_ADMIN, NET_RAW, NET_BIND_SERVICE = "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"

#: what each service keeps (see the module docstring for why)
SERVICE_CAPS: dict[str, tuple[str, ...]] = {
    "broker": (),
    "pulse": (NET_ADMIN, NET_RAW, NET_BIND_SERVICE),
    "nanny": (),
    "lvsd": (),
    "ipvs": (NET_ADMIN,),
    "metrics": (),
    "web": (),
    "alerts": (),
    # BIRD, which it starts, binds port 179 (and BFD's 3784), reads interfaces and sets socket
    # options: the set BIRD's documentation names for running it without root
    "bgp": (NET_BIND_SERVICE, "CAP_NET_BROADCAST", NET_ADMIN, NET_RAW),
}

# prctl(2) / capget(2) constants
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522


def service_caps(service: str, config=None) -> tuple[str, ...]:
    """The capabilities ``service`` keeps under a router running ``config`` (the model of
    ``lvsbus.config``; None: the fixed set). An unknown service keeps none."""
    caps = SERVICE_CAPS.get(service, ())
    if config is None:
        return caps
    address = None
    if service == "metrics":
        address = config.metrics_address
    elif service == "web" and getattr(config, "web", None) is not None:
        address = config.web.address
    if address:
        try:
            port = int(address.rpartition(":")[2])
        except ValueError:
            port = 0
        if 0 < port < 1024:
            caps = (*caps, NET_BIND_SERVICE)
    if service == "bgp" and getattr(getattr(config, "scaleout", None), "speaker", "") == "bird-running":
        caps = ()  # the operator's BIRD: a file to write, a socket to talk to; no BIRD of its own to start
    if service == "nanny" and has_program_checks(config):
        caps = (*caps, NET_RAW)
    return caps


def has_program_checks(config) -> bool:
    """Does any real server's check run a program (Piranha's send_program, keepalived's MISC_CHECK)
    or ping (keepalived's PING_CHECK: a raw ICMP socket unless net.ipv4.ping_group_range lets
    nanny's group open a ping socket)?"""
    for vs in config.virtual_services:
        for check in (vs.check, *(rs.check for rs in vs.servers)):
            if check is not None and getattr(check.kind, "value", check.kind) in ("program", "ping"):
                return True
    return False


def mask(names: Iterable[str]) -> int:
    """Bit mask of capability names (``CAP_NET_ADMIN`` or ``net_admin``); ValueError on an unknown one."""
    m = 0
    for name in names:
        key = name.upper() if name.upper().startswith("CAP_") else "CAP_" + name.upper()
        if key not in CAP_NUMBERS:
            raise ValueError(f"unknown capability {name!r}")
        m |= 1 << CAP_NUMBERS[key]
    return m


def names(m: int) -> list[str]:
    """Capability names of a mask, by number (bits past the table as ``cap_N``)."""
    out = []
    i = 0
    while m >> i:
        if m >> i & 1:
            out.append(CAP_NAMES[i] if i < len(CAP_NAMES) else f"cap_{i}")
        i += 1
    return out


def describe(m: int) -> str:
    return " ".join(names(m)) or "none"


@dataclass(frozen=True)
class CapSets:
    """A thread's capability sets as masks (the ``Cap*`` lines of ``/proc/PID/status``)."""

    inheritable: int = 0
    permitted: int = 0
    effective: int = 0
    bounding: int = 0
    ambient: int = 0
    no_new_privs: bool = False


def parse_status(text: str) -> CapSets:
    """``CapInh/CapPrm/CapEff/CapBnd/CapAmb`` and ``NoNewPrivs`` out of ``/proc/PID/status``."""
    fields = {"CapInh": "inheritable", "CapPrm": "permitted", "CapEff": "effective", "CapBnd": "bounding",
              "CapAmb": "ambient"}
    kw: dict = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in fields:
            kw[fields[key]] = int(value.strip(), 16)
        elif key == "NoNewPrivs":
            kw["no_new_privs"] = value.strip() == "1"
    return CapSets(**kw)


def read(pid: int | str = "self") -> CapSets:
    with open(f"/proc/{pid}/status") as fh:
        return parse_status(fh.read())


def last_cap() -> int:
    """The highest capability number this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return len(CAP_NAMES) - 1


@dataclass(frozen=True)
class Plan:
    """What a drop does, computed from the current sets (pure)."""

    keep: int  # effective = permitted = this after the drop (what is asked for and held now)
    bounding_drop: tuple[int, ...]  # caps removed from the bounding set
    bounding_lowered: bool  # False: no CAP_SETPCAP, the bounding set stays (no_new_privs still holds)
    missing: int  # asked for, but not held now (cannot be kept)

    def after(self, current: CapSets) -> CapSets:
        """The sets a service shows after the drop and its exec (uid 0, no_new_privs)."""
        bounding = current.bounding
        for cap in self.bounding_drop:
            bounding &= ~(1 << cap)
        return CapSets(inheritable=0, permitted=self.keep, effective=self.keep, bounding=bounding, ambient=0,
                       no_new_privs=True)


def plan(keep_names: Iterable[str], current: CapSets, last: int | None = None) -> Plan:
    want = mask(keep_names)
    keep = want & current.permitted
    can_bound = bool(current.effective >> CAP_SETPCAP & 1)
    last = last_cap() if last is None else last
    drop = tuple(c for c in range(last + 1) if current.bounding >> c & 1 and not keep >> c & 1) if can_bound else ()
    return Plan(keep=keep, bounding_drop=drop, bounding_lowered=can_bound, missing=want & ~current.permitted)


# ---------------------------------------------------------------------------------------------
# the syscalls


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_libc = None


def _lib():
    """libc, with prctl(2) and capset(2) typed (shared: callers pass prctl's five arguments)."""
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
        libc.prctl.restype = ctypes.c_int
        libc.capset.argtypes = (ctypes.POINTER(_Header), ctypes.POINTER(_Data))
        libc.capset.restype = ctypes.c_int
        _libc = libc
    return _libc


class Dropper:
    """The drop for one child: built in the parent (libc, structures, the plan), called in the
    child between fork and exec (``subprocess.Popen(preexec_fn=dropper)``), where it only makes
    system calls. A failure of no_new_privs or capset raises OSError (the child does not exec:
    the supervisor sees it fail to start, a service never runs with more than planned)."""

    def __init__(self, keep_names: Iterable[str], current: CapSets | None = None) -> None:
        self.keep_names = tuple(keep_names)
        self.current = current if current is not None else read()
        self.plan = plan(self.keep_names, self.current)
        libc = _lib()
        self._prctl = libc.prctl
        self._capset = libc.capset
        self._header = _Header(LINUX_CAPABILITY_VERSION_3, 0)
        k = self.plan.keep
        self._data = (_Data * 2)(_Data(k & 0xFFFFFFFF, k & 0xFFFFFFFF, 0), _Data(k >> 32, k >> 32, 0))

    def __call__(self) -> None:
        prctl = self._prctl
        if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            _raise("prctl(PR_SET_NO_NEW_PRIVS)")
        for cap in self.plan.bounding_drop:
            prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL for a cap this kernel lacks: nothing to drop
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # EINVAL before Linux 4.3: none to clear
        if self._capset(ctypes.byref(self._header), self._data) != 0:
            _raise("capset")


def _raise(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")
