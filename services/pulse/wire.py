"""The heartbeat and fence datagrams between routers. Pure: bytes in, values out (no socket).

Layout of one UDP datagram::

    offset  size  field
    0       4     magic  b"LVSP"
    4       1     version (1)
    5       1     kind: 1 heartbeat, 2 fence
    6       n     body: a msgpack map (see HEARTBEAT_FIELDS / FENCE_FIELDS)
    6+n     32    HMAC-SHA256(key, bytes 0 .. 6+n)

The MAC covers everything before it (header and body). ``decode_datagram`` checks, in order: size,
magic, version, MAC (``hmac.compare_digest``), then the body; anything wrong raises
``WireError(reason)``, never another exception, with ``reason`` one of ``too_large``, ``malformed``,
``wrong_version``, ``bad_mac``. Sequence numbers and epochs are not checked here: the core does
that, so that the decision is recorded and replayable.

The key is derived from the secret file's content (``key_from_secret``); the file is read, and refused
unless its mode is 0600 or stricter, by ``lvsbus.host.keyfile.load_key`` (the router's checks use it too).
"""
from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any, NamedTuple

import msgpack

from lvsbus.config.keyrules import secret_problem

MAGIC = b"LVSP"
VERSION = 1
KIND_HEARTBEAT = 1
KIND_FENCE = 2
_HEADER = struct.Struct("!4sBB")
HEADER_LEN = _HEADER.size
MAC_LEN = 32
#: well under any MTU: a heartbeat is ~100 bytes
MAX_DATAGRAM = 1024
MAX_NAME = 64

ROLES = frozenset({"INIT", "BACKUP", "ACTIVE", "FAULT", "STOPPED"})


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


class Fence(NamedTuple):
    node: str
    target: str
    epoch: int
    seq: int
    reason: str = ""


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


def key_from_secret(secret: bytes) -> bytes:
    """The HMAC key from the secret file's bytes (surrounding whitespace ignored, so a trailing
    newline from an editor does not split a cluster). Raises ValueError for an empty secret."""
    problem = secret_problem(secret)  # the rule load_key applies (lvsbus.host.keyfile)
    if problem:
        raise ValueError(f"the heartbeat secret {problem}")
    return hashlib.sha256(b"lvsbus-pulse-v1\0" + secret.strip()).digest()


def _seal(key: bytes, kind: int, body: dict) -> bytes:
    msg = _HEADER.pack(MAGIC, VERSION, kind) + msgpack.packb(body, use_bin_type=True)
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


def encode_heartbeat(key: bytes, fields: Heartbeat | dict) -> bytes:
    """One heartbeat datagram. ``fields``: a Heartbeat or a dict with exactly its fields."""
    d = fields._asdict() if isinstance(fields, Heartbeat) else fields
    return _seal(key, KIND_HEARTBEAT, _body(d, HEARTBEAT_FIELDS, "heartbeat"))


def encode_fence(key: bytes, fields: Fence | dict) -> bytes:
    """One fence datagram. ``fields``: a Fence or a dict with exactly its fields."""
    d = fields._asdict() if isinstance(fields, Fence) else fields
    return _seal(key, KIND_FENCE, _body(d, FENCE_FIELDS, "fence"))


def datagram_of(key: bytes, effect_type: str, p: dict) -> bytes:
    """The datagram a ``pulse.send_heartbeat`` or ``pulse.send_fence`` effect (payload ``p``) sends:
    pulse's shell sends it on its sockets, the simulator (tools/simulate.py) on its links."""
    if effect_type == "pulse.send_heartbeat":
        return encode_heartbeat(key, Heartbeat(p["node"], p["role"], p["priority"], p["epoch"], p["seq"], p["leaving"]))
    return encode_fence(key, Fence(p["node"], p["target"], p["epoch"], p["seq"], p["reason"][:64]))


def received(msg: Heartbeat | Fence, link: str, address: str) -> tuple[str, dict]:
    """The event a decoded datagram becomes (type, payload), arrived on ``link`` from ``address``:
    ``pulse.heartbeat_received`` or ``pulse.fence_received`` (pulse's shell and the simulator)."""
    if isinstance(msg, Heartbeat):
        return "pulse.heartbeat_received", {
            "link": link, "peer": msg.node, "address": address, "role": msg.role, "priority": msg.priority,
            "epoch": msg.epoch, "seq": msg.seq, "leaving": msg.leaving,
        }
    return "pulse.fence_received", {
        "link": link, "peer": msg.node, "address": address, "target": msg.target, "epoch": msg.epoch,
        "seq": msg.seq, "reason": msg.reason,
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
    if version != VERSION:
        raise WireError("wrong_version", f"version {version}, this code reads {VERSION}")
    msg, mac = data[:-MAC_LEN], data[-MAC_LEN:]
    if not hmac.compare_digest(hmac.new(key, msg, hashlib.sha256).digest(), mac):
        raise WireError("bad_mac", "the MAC does not match (wrong key, or altered)")
    cls: type[Heartbeat] | type[Fence]
    if kind == KIND_HEARTBEAT:
        spec, cls = HEARTBEAT_FIELDS, Heartbeat
    elif kind == KIND_FENCE:
        spec, cls = FENCE_FIELDS, Fence
    else:
        raise WireError("malformed", f"unknown kind {kind}")
    try:
        body = msgpack.unpackb(
            msg[HEADER_LEN:], raw=False, strict_map_key=True, use_list=True,
            max_str_len=MAX_DATAGRAM, max_bin_len=0, max_array_len=0, max_map_len=16, max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types for garbage
        raise WireError("malformed", f"body is not msgpack: {type(exc).__name__}") from None
    if type(body) is not dict or set(body) != set(spec):
        raise WireError("malformed", "body has the wrong fields")
    for k, ok in spec.items():
        if not ok(body[k]):
            raise WireError("malformed", f"bad field {k}")
    return cls(**body)
