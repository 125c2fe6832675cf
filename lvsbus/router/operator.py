"""Operator requests: publish an action to this router's bus, acknowledged (durable in the log),
and wait for the core's answer (the output whose cause is the request's seq): ``request``, for the
command line (``lvsbus server``, ``handover``, ``bgp``); ``ANSWERS``, which the web console follows too.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from lvsbus.host.paths import StateDirs
#: the answers to each request type (their cause is the request's seq)
ANSWERS = {
    "operator.server_action": ("lvsd.server_action_taken",),
    "operator.handover_requested": ("pulse.handover_refused", "router.role_changed"),
    "operator.bgp_drain": ("bgp.drain_taken",),
}


@dataclass
class Answer:
    seq: int  # the request's seq
    event: object | None  # the answering Event, or None when none came in time


class NoBroker(Exception):
    """No broker on this state directory answered."""


def request(state_dir: str, type_: str, payload: dict, wait_s: float, name: str = "operator") -> Answer:
    """Publish one operator request (acknowledged: durable in the log) and wait up to ``wait_s``
    for the core's answer. Raises NoBroker, or lvsbus.bus.PublishRefused."""
    from lvsbus.wire import catalog  # noqa: F401  (fills the registry)
    from lvsbus.bus import BusClient

    dirs = StateDirs(state_dir)
    if not os.path.exists(os.path.join(dirs.run, "bus.sock")):
        raise NoBroker(f"no broker at {dirs.run}/bus.sock (is the router running? --state-dir?)")
    client = BusClient(dirs.run, name)
    try:
        seq = client.publish_acked(type_, payload, timeout=5.0)
    except TimeoutError as exc:
        raise NoBroker(f"{exc} (is the router running?)") from None
    finally:
        client.close()
    if wait_s <= 0:
        return Answer(seq, None)
    follow = BusClient(dirs.run, f"{name}-{os.getpid()}", subs=ANSWERS[type_], log_dir=dirs.log, from_seq=seq)
    try:
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            ev = follow.recv(min(left, 0.2))
            if ev is not None and ev.cause == seq:
                return Answer(seq, ev)
    finally:
        follow.close()
    return Answer(seq, None)
