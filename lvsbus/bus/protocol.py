"""The bus's wire: frame kinds, limits, message encoding and decoding, and the checks of what a
client sends (the broker refuses, with a reason, anything that fails them).

Wire protocol (multipart frames; bodies msgpack):

    client -> broker
      H  {"name", "subs": [prefix...], "pid"}      hello: who I am, what I want delivered
      P  name, [ack_id, [[type, version, cause, payload], ...], nonce]
                                                 publish a batch; ack_id 0 = no ack wanted (then no nonce)
      B                                          bye
    broker -> client
      D  framed records (the log's framing)      delivery, in log order
      A  [ack_id, first_seq, last_seq]           these seqs are durable in the log
      R  [ack_id, reason, detail]                an event of that batch was refused
      L  [first_dropped, last_dropped]           you were over the high-water mark: read those from the log
      T  [epoch, last_seq]                       tick (liveness; a new epoch = a restarted broker)
      W                                          who are you? (I do not know you: send H again)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import msgpack

from lvsbus.wire import catalog  # noqa: F401  (fills the registry)
from lvsbus.wire.events import MAX_TYPE, REGISTRY, DecodeError
from lvsbus.wire.schema import _shown

MAX_FRAME = 4 * 1024 * 1024
#: bad items of one frame examined; past that its other items are refused without a look (a
#: frame of a million bad items held an acked publish back 26 s)
MAX_BAD_ITEMS = 64
MAX_NONCE = 32  # bytes of a publisher's nonce (the broker keeps the last 10,000)
MAX_SUBS = 64  # prefixes a client may subscribe to (each at most MAX_TYPE characters)
TICK_S = 0.2


def socket_path(run_dir: str) -> str:
    return os.path.join(run_dir, "bus.sock")


def endpoint(run_dir: str) -> str:
    return "ipc://" + socket_path(run_dir)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)


def publisher_name(raw: bytes) -> str | None:
    """The publisher's name a publish (P) carries: 1-64 characters of UTF-8, or None."""
    try:
        source = raw.decode()
    except ValueError:
        return None
    return source if 0 < len(source) <= 64 else None


HELLO_FORMAT = (f"hello is {{name (1-64 characters), subs (at most {MAX_SUBS} prefixes of at most "
                f"{MAX_TYPE} characters), pid}}")


def parse_hello(body: bytes) -> tuple[str, tuple[str, ...], int | None]:
    """A hello body (HELLO_FORMAT): (name, subscribed prefixes, pid or None). Raises on a bad one."""
    hello = unpack(body)
    name = hello["name"]
    subs = tuple(hello.get("subs", ()))
    if (type(name) is not str or not 0 < len(name) <= 64 or len(subs) > MAX_SUBS
            or not all(type(s) is str and len(s) <= MAX_TYPE for s in subs)):
        raise ValueError
    pid = hello.get("pid")
    return name, subs, pid if type(pid) is int and pid >= 0 else None


def parse_publish(body: bytes) -> tuple[int, int, msgpack.Unpacker, bytes]:
    """A publish body ``[ack_id, [item...]]`` or ``[ack_id, [item...], nonce]``: (ack_id, the number
    of items, an Unpacker positioned at the first item, nonce). Raises on anything else.

    The items are walked over by msgpack's C code without building them (a frame of four million
    empty lists takes seconds to build, 60 ms to walk); the broker builds them one at a time, and
    stops after MAX_BAD_ITEMS bad ones."""
    u = msgpack.Unpacker(raw=False, strict_map_key=True, use_list=True, max_buffer_size=max(len(body), 1))
    u.feed(body)
    n = u.read_array_header()
    if n not in (2, 3):
        raise ValueError("a publish is a 2- or 3-item array")
    ack_id = u.unpack()
    items_at = u.tell()
    u.skip()
    nonce = u.unpack() if n == 3 else b""
    if u.tell() != len(body):
        raise ValueError("extra data after the publish")
    if type(ack_id) is not int or type(nonce) is not bytes or len(nonce) > MAX_NONCE:
        raise ValueError("bad ack_id or nonce")
    items = msgpack.Unpacker(raw=False, strict_map_key=True, use_list=True, max_buffer_size=max(len(body), 1))
    items.feed(body[items_at:])
    n_items = items.read_array_header()  # raises unless the items are an array
    return ack_id, n_items, items, nonce


@dataclass
class Refusal:
    """The refusal of a publish's bad items: the first one's reason and detail, and how many."""

    reason: str
    detail: str
    items: int


def take_items(items: msgpack.Unpacker, n_items: int, source: str, batch: list[list]) -> Refusal | None:
    """Build and check the ``n_items`` items of a publish (``parse_publish``'s Unpacker) one at a
    time: each valid one joins ``batch`` as ``[type, version, cause, payload, source]``. Refusals
    cost a bounded amount a frame: one Refusal for the whole frame (the first bad item named, the
    others counted), however many items it holds, and past MAX_BAD_ITEMS bad ones the rest is
    refused unexamined (not even built)."""
    refused = 0
    first_bad: tuple[int, str, str] | None = None
    validate = REGISTRY.validate
    unexamined = 0
    for i in range(n_items):
        if refused >= MAX_BAD_ITEMS:  # a broken frame: the rest is refused unexamined (not even built)
            unexamined = n_items - i
            refused += unexamined
            break
        try:
            item = items.unpack()
        except Exception:  # cannot happen: parse_publish walked the whole frame
            unexamined = n_items - i
            refused += unexamined
            first_bad = first_bad or (i, "malformed", "an item is not msgpack")
            break
        if item.__class__ is not list or len(item) != 4:
            problem = ("malformed", "an item is [type, version, cause, payload]")
        else:
            type_, version, cause, payload = item
            if cause is not None and (cause.__class__ is not int or cause < 1):
                problem = ("malformed", f"bad cause {_shown(cause)}")
            else:
                try:
                    validate(type_, version, payload)
                except DecodeError as exc:
                    problem = (exc.reason, exc.detail)
                else:
                    batch.append([type_, version, cause, payload, source])
                    continue
        refused += 1
        if first_bad is None:
            first_bad = (i, *problem)
    return None if first_bad is None else _refusal(first_bad, n_items, refused, unexamined)


def _refusal(first_bad: tuple[int, str, str], n_items: int, refused: int, unexamined: int) -> Refusal:
    """One refusal for a frame's bad items: the first one named, the others counted."""
    i, reason, detail = first_bad
    if n_items > 1:
        detail = f"item {i} of {n_items}: {detail[:800]}"
        if refused > 1:
            detail += f" (and {refused - 1} more item(s) refused"
            detail += f"; {unexamined} past the first {MAX_BAD_ITEMS} bad ones unexamined)" if unexamined else ")"
    return Refusal(reason, detail, refused)


def publish_item(type_: str, payload: dict, cause: int | None, version: int | None) -> list:
    return [type_, version if version is not None else REGISTRY.latest(type_).version, cause, payload]
