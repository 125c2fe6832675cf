"""The heartbeat and fence datagrams between routers. Pure: bytes in, values out (no socket).

Layout of one UDP datagram::

    offset  size  field
    0       4     magic  b"LVSP"
    4       1     version (1; 2 with failover groups: the body's ``groups``)
    5       1     kind: 1 heartbeat, 2 fence
    6       n     body: a msgpack map (see HEARTBEAT_FIELDS / FENCE_FIELDS)
    6+n     32    HMAC-SHA256(key, bytes 0 .. 6+n)

The MAC covers everything before it (header and body). ``decode_datagram`` checks, in order: size,
magic, version, MAC (``hmac.compare_digest``), then the body; anything wrong raises
``WireError(reason)``, never another exception, with ``reason`` one of ``too_large``, ``malformed``,
``wrong_version``, ``bad_mac``. Sequence numbers and epochs are not checked here: the core does
that, so that the decision is recorded and replayable.

``accept`` is what pulse's shell (and the simulator) does with each datagram that arrives: the
event it becomes, or a ``Rejected`` (also ``address_mismatch``: a known router's datagram from an
address it does not have on that link) that becomes ``pulse.datagram_rejected``.

The key is derived from the secret file's content (``key_from_secret``); the file is read, and refused
unless its mode is 0600 or stricter, by ``lvsbus.host.keyfile.load_key`` (the router's checks use it too).
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack

from lvsbus.config.keyrules import secret_problem
from lvsbus.config.model import MAX_GROUP_NAME as _MAX_GROUP_NAME
from lvsbus.config.model import MAX_GROUPS as _MAX_GROUPS

if TYPE_CHECKING:
    from .core import PulseSettings

MAGIC = b"LVSP"
#: the version this code writes when the config has failover groups (``groups`` in the body); a
#: config with the default group alone writes version 1, which a router of an older release reads
VERSION = 2
VERSIONS = (1, 2)
DEFAULT_GROUP = "default"
KIND_HEARTBEAT = 1
KIND_FENCE = 2
_HEADER = struct.Struct("!4sBB")
HEADER_LEN = _HEADER.size
MAC_LEN = 32
#: under an Ethernet MTU: a heartbeat is ~100 bytes, ~25 more a failover group (at most MAX_GROUPS)
MAX_DATAGRAM = 1400
#: the most failover groups a config may have, and the longest group name (the validator's limits):
#: a heartbeat naming them all fits MAX_DATAGRAM
MAX_GROUPS = _MAX_GROUPS
MAX_GROUP_NAME = _MAX_GROUP_NAME
MAX_NAME = 64

ROLES = frozenset({"INIT", "BACKUP", "ACTIVE", "FAULT", "STOPPED"})
#: at most this many pulse.datagram_rejected events a second (the rest are counted in the next one)
REJECT_EVENTS_PER_S = 50


class WireError(ValueError):
    """A datagram that is not a valid heartbeat or fence. ``reason``: too_large, malformed,
    wrong_version or bad_mac (the reasons of ``pulse.datagram_rejected``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Heartbeat(NamedTuple):
    node: str
    role: str
    priority: int
    epoch: int
    seq: int
    leaving: bool = False
    #: version 2: each failover group's (name, role, priority); None: version 1 (the default group's
    #: are role and priority)
    groups: tuple[tuple[str, str, int], ...] | None = None


class Fence(NamedTuple):
    node: str
    target: str
    epoch: int
    seq: int
    reason: str = ""
    #: version 2: the failover groups fenced; None: version 1 (the default group)
    groups: tuple[str, ...] | None = None


# name -> (type, check) ; every field is required, no other field is allowed
def _name(v: Any) -> bool:
    return type(v) is str and 0 < len(v) <= MAX_NAME


def _u64(v: Any) -> bool:
    return type(v) is int and 0 <= v < 1 << 64


HEARTBEAT_FIELDS = {
    "node": _name,
    "role": lambda v: type(v) is str and v in ROLES,
    "priority": lambda v: type(v) is int and 0 <= v <= 65535,
    "epoch": _u64,
    "seq": _u64,
    "leaving": lambda v: type(v) is bool,
}
FENCE_FIELDS = {
    "node": _name,
    "target": _name,
    "epoch": _u64,
    "seq": _u64,
    "reason": lambda v: type(v) is str and len(v) <= 64,
}


def _group_states(v: Any) -> bool:
    return (type(v) is list and 0 < len(v) <= MAX_GROUPS and all(
        type(g) is list and len(g) == 3 and _name(g[0]) and HEARTBEAT_FIELDS["role"](g[1])
        and HEARTBEAT_FIELDS["priority"](g[2]) for g in v))


def _group_names(v: Any) -> bool:
    return type(v) is list and 0 < len(v) <= MAX_GROUPS and all(_name(g) for g in v)


#: version 2's bodies: version 1's and the groups
HEARTBEAT_FIELDS_2 = {**HEARTBEAT_FIELDS, "groups": _group_states}
FENCE_FIELDS_2 = {**FENCE_FIELDS, "groups": _group_names}


def key_from_secret(secret: bytes) -> bytes:
    """The HMAC key from the secret file's bytes (surrounding whitespace ignored, so a trailing
    newline from an editor does not split a cluster). Raises ValueError for an empty secret."""
    problem = secret_problem(secret)  # the rule load_key applies (lvsbus.host.keyfile)
    if problem:
        raise ValueError(f"the heartbeat secret {problem}")
    return hashlib.sha256(b"lvsbus-pulse-v1\0" + secret.strip()).digest()


def _seal(key: bytes, kind: int, body: dict, version: int = 1) -> bytes:
    msg = _HEADER.pack(MAGIC, version, kind) + msgpack.packb(body, use_bin_type=True)
    out = msg + hmac.new(key, msg, hashlib.sha256).digest()
    if len(out) > MAX_DATAGRAM:
        raise WireError("too_large", f"{len(out)} bytes > {MAX_DATAGRAM}")
    return out


def _body(fields: dict, spec: dict, what: str) -> dict:
    if set(fields) != set(spec):
        raise ValueError(f"{what} fields must be exactly {sorted(spec)}, got {sorted(fields)}")
    for k, ok in spec.items():
        if not ok(fields[k]):
            raise ValueError(f"{what} field {k}={fields[k]!r} is not valid")
    return dict(fields)


def _fields_of(fields: Heartbeat | Fence | dict) -> dict:
    """The body's fields: version 1's without ``groups`` (None), version 2's with them (as lists)."""
    d = dict(fields._asdict() if isinstance(fields, (Heartbeat, Fence)) else fields)
    if d.get("groups") is None:
        d.pop("groups", None)
    else:
        d["groups"] = [list(g) if isinstance(g, (list, tuple)) else g for g in d["groups"]]
    return d


def encode_heartbeat(key: bytes, fields: Heartbeat | dict) -> bytes:
    """One heartbeat datagram: version 1, or 2 when it carries ``groups``. ``fields``: a Heartbeat
    or a dict with exactly its fields."""
    d = _fields_of(fields)
    if "groups" in d:
        return _seal(key, KIND_HEARTBEAT, _body(d, HEARTBEAT_FIELDS_2, "heartbeat"), 2)
    return _seal(key, KIND_HEARTBEAT, _body(d, HEARTBEAT_FIELDS, "heartbeat"))


def encode_fence(key: bytes, fields: Fence | dict) -> bytes:
    """One fence datagram: version 1, or 2 when it names ``groups``. ``fields``: a Fence or a dict
    with exactly its fields."""
    d = _fields_of(fields)
    if "groups" in d:
        return _seal(key, KIND_FENCE, _body(d, FENCE_FIELDS_2, "fence"), 2)
    return _seal(key, KIND_FENCE, _body(d, FENCE_FIELDS, "fence"))


def _only_default(groups: list) -> bool:
    return len(groups) == 1 and (groups[0] if isinstance(groups[0], str) else groups[0]["group"]) == DEFAULT_GROUP


def datagram_of(key: bytes, effect_type: str, p: dict) -> bytes:
    """The datagram a ``pulse.send_heartbeat`` or ``pulse.send_fence`` effect (payload ``p``) sends:
    pulse's shell sends it on its sockets, the simulator (tools/simulate.py) on its links."""
    groups = p.get("groups")
    if effect_type == "pulse.send_heartbeat":
        states = None if not groups or _only_default(groups) else tuple(
            (g["group"], g["role"], g["priority"]) for g in groups)
        return encode_heartbeat(key, Heartbeat(p["node"], p["role"], p["priority"], p["epoch"], p["seq"], p["leaving"],
                                               states))
    names = None if not groups or _only_default(groups) else tuple(groups)
    return encode_fence(key, Fence(p["node"], p["target"], p["epoch"], p["seq"], p["reason"][:64], names))


def received(msg: Heartbeat | Fence, link: str, address: str) -> tuple[str, dict]:
    """The event a decoded datagram becomes (type, payload), arrived on ``link`` from ``address``:
    ``pulse.heartbeat_received`` or ``pulse.fence_received`` (pulse's shell and the simulator)."""
    if isinstance(msg, Heartbeat):
        groups = ([{"group": g, "role": r, "priority": p} for g, r, p in msg.groups] if msg.groups is not None
                  else [{"group": DEFAULT_GROUP, "role": msg.role, "priority": msg.priority}])
        return "pulse.heartbeat_received", {
            "link": link, "peer": msg.node, "address": address, "role": msg.role, "priority": msg.priority,
            "epoch": msg.epoch, "seq": msg.seq, "leaving": msg.leaving, "groups": groups,
        }
    return "pulse.fence_received", {
        "link": link, "peer": msg.node, "address": address, "target": msg.target, "epoch": msg.epoch,
        "seq": msg.seq, "reason": msg.reason,
        "groups": list(msg.groups) if msg.groups is not None else [DEFAULT_GROUP],
    }


def decode_datagram(key: bytes, data: bytes) -> Heartbeat | Fence:
    """Check and decode one datagram; raise WireError for anything else."""
    n = len(data)
    if n > MAX_DATAGRAM:
        raise WireError("too_large", f"{n} bytes > {MAX_DATAGRAM}")
    if n < HEADER_LEN + 1 + MAC_LEN:
        raise WireError("malformed", f"{n} bytes is too short")
    magic, version, kind = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise WireError("malformed", "bad magic")
    if version not in VERSIONS:
        raise WireError("wrong_version", f"version {version}, this code reads {', '.join(map(str, VERSIONS))}")
    msg, mac = data[:-MAC_LEN], data[-MAC_LEN:]
    if not hmac.compare_digest(hmac.new(key, msg, hashlib.sha256).digest(), mac):
        raise WireError("bad_mac", "the MAC does not match (wrong key, or altered)")
    cls: type[Heartbeat] | type[Fence]
    if kind == KIND_HEARTBEAT:
        spec, cls = (HEARTBEAT_FIELDS if version == 1 else HEARTBEAT_FIELDS_2), Heartbeat
    elif kind == KIND_FENCE:
        spec, cls = (FENCE_FIELDS if version == 1 else FENCE_FIELDS_2), Fence
    else:
        raise WireError("malformed", f"unknown kind {kind}")
    try:
        body = msgpack.unpackb(
            msg[HEADER_LEN:], raw=False, strict_map_key=True, use_list=True,
            max_str_len=MAX_DATAGRAM, max_bin_len=0, max_array_len=0 if version == 1 else MAX_GROUPS,
            max_map_len=16, max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types for garbage
        raise WireError("malformed", f"body is not msgpack: {type(exc).__name__}") from None
    if type(body) is not dict or set(body) != set(spec):
        raise WireError("malformed", "body has the wrong fields")
    for k, ok in spec.items():
        if not ok(body[k]):
            raise WireError("malformed", f"bad field {k}")
    if "groups" in body:
        body["groups"] = tuple(tuple(g) if isinstance(g, list) else g for g in body["groups"])
    return cls(**body)


class Rejected(NamedTuple):
    """A datagram not passed on to the core: ``reason`` (a ``WireError``'s, or address_mismatch)
    and what was wrong."""

    reason: str
    detail: str

    def payload(self, link: str, address: str, size: int, count: int) -> dict:
        """Its ``pulse.datagram_rejected`` (``count``: the rejections so far, this one included)."""
        return {"reason": self.reason, "link": link, "address": address[:64], "size": size,
                "detail": self.detail[:512], "count": count}


def normalize_address(address: str) -> str:
    """A source address as the config writes addresses (``fe80::1%eth0`` -> ``fe80::1``), or as it is."""
    try:
        return str(ipaddress.ip_address(address.split("%")[0]))
    except ValueError:
        return address


def accept(key: bytes, data: bytes, link: str, src: str, settings: PulseSettings | None) -> tuple[str, dict] | Rejected:
    """A datagram arrived on ``link`` from ``src``: the event it becomes (``received``: type,
    payload), or why it is rejected: anything ``decode_datagram`` refuses, or a configured router's
    datagram from another address than its own on that link (address_mismatch). ``settings``:
    pulse's (None: no address is checked)."""
    try:
        msg = decode_datagram(key, data)
    except WireError as exc:
        return Rejected(exc.reason, exc.detail)
    address = normalize_address(src)
    peer = settings.router(msg.node) if settings is not None else None
    if peer is not None:
        expected = peer.address_on(link)
        if expected is not None and address != expected:
            return Rejected("address_mismatch", f"{msg.node} sends from {expected} on {link}, not {src}")
    return received(msg, link, address)
