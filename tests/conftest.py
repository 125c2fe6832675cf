"""Fixtures every tier may use, and the tier marks.

A test file's folder is its tier: ``unit/`` (in-process), ``process/`` (real processes on this host,
loopback and files only), ``netns/`` (network namespaces, root), ``kernel/`` (the qemu VM with IPVS).
Every test under ``netns/`` is marked ``netns`` and every one under ``kernel/`` ``kernel``, so
``pytest -m "not netns and not kernel"`` runs what needs no namespace and no VM.

The ``netns`` fixtures build topologies of ``lvsbus.demo.netns`` (shared with ``lvsbus demo``):

    def test_x(netns):
        topo = netns(routers=2, servers=1)
"""
from __future__ import annotations

from pathlib import Path

import pytest

from lvsbus.demo.netns import Topology, netns_available
from tests.helpers.procs import rigs  # noqa: F401  (the fixture: a broker and services by PID)

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = Path(str(item.fspath)).resolve().relative_to(_HERE).parts[0]
        if tier in ("netns", "kernel"):
            item.add_marker(getattr(pytest.mark, tier))


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
