"""A virtual service's quorum, pure (keepalived's quorum and hysteresis; docs/nanny-lvsd.md): lvsd
decides with it whether a service is up (its real servers, or its sorry server), and pulse whether
a ``[track.NAME]`` of kind ``service`` has failed (the service lost quorum on this router)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

#: the health states in which a real server takes connections (FALLING: failing, not yet DOWN)
IN_SERVICE = frozenset({"UP", "FALLING"})


def weight_in_service(servers: Iterable[tuple[str, int]], health: Mapping[str, str],
                      left_out: Mapping[str, object] | frozenset[str] = frozenset()) -> int:
    """The configured weight of the servers (health id, weight) in service, ``left_out`` (drained or
    disabled by an operator) not counted."""
    return sum(w for id_, w in servers if health.get(id_) in IN_SERVICE and id_ not in left_out)


def quorum_up(total: int, quorum: int, hysteresis: int, was_up: bool | None) -> bool:
    """Whether a service with ``total`` weight in service is up: at least ``quorum`` the first time;
    with hysteresis h, an up one goes down below ``quorum - h`` and a down one comes back at
    ``quorum + h``."""
    if was_up is None:
        return total >= quorum
    if was_up:
        return total >= quorum - hysteresis
    return total >= quorum + hysteresis
