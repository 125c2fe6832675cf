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
from typing import Any

import msgpack

from .. import catalog  # noqa: F401  (fills the registry)
from ..events import REGISTRY

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


def publish_item(type_: str, payload: dict, cause: int | None, version: int | None) -> list:
    return [type_, version if version is not None else REGISTRY.latest(type_).version, cause, payload]
