"""pytest fixtures over ``lvsbus.demo.netns`` (the namespace topology shared with ``lvsbus demo``).

    from tests.netns import netns  # noqa: F401  (the fixture)

    def test_x(netns):
        topo = netns(routers=2, servers=1)
"""
from __future__ import annotations

import pytest

from lvsbus.demo.netns import (  # noqa: F401  (re-exported for the tests)
    CLIENT,
    CLIENT_MAC,
    NAT,
    NAT_VIP,
    PRIVATE,
    PUBLIC,
    VIP,
    Topology,
    netns_available,
    router_mac,
    router_toml,
    write_key,
)


def _factory():
    """Yields ``make(**kw) -> Topology``; destroys every topology it made afterwards (also on failure)."""
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    made: list[Topology] = []

    def make(**kw) -> Topology:
        topo = Topology(**kw)
        made.append(topo)
        return topo.build()

    try:
        yield make
    finally:
        for topo in made:
            topo.destroy()


@pytest.fixture
def netns():
    """Factory: ``netns(routers=2, servers=0, private=True)`` builds a Topology; all are destroyed
    at teardown (also on failure)."""
    yield from _factory()


@pytest.fixture(scope="module")
def netns_module():
    """The same factory, with topologies that live for the whole test module (build once, reuse)."""
    yield from _factory()


def json_lines(path) -> list[dict]:
    """The JSON lines of a process's stderr (LVSBUS_LOG_FORMAT=json), other lines skipped."""
    import json

    out = []
    for line in open(path, errors="replace").read().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out
