"""The base every service core builds on: pure ``decide(state, event) -> (state, effects)``.

A core (pulse's role machine, nanny's health machines, lvsd's table, the applier's diff) is a
deterministic function of the events it is fed, in log order:

* no clock: "now" is ``event.mono_ns`` of the event being decided (the broker stamps it);
  a core that needs to act later says so with ``next_deadline(state)``, and its shell publishes a
  ``timer.fired`` event when that time comes, which reaches the core through the bus and the log;
* no sockets, no randomness, no logging: outputs are ``Effect`` values, which the runtime publishes
  as events (source = the core's name, cause = the input's seq) and the shell carries out.

Because of that, ``tools/replay.py`` can feed a recorded log to the same core and check that every
logged output comes out identical (``replay_outputs`` below is that loop, shared by the runtime's
restart path, replay and the simulator: there is one copy of it).

This module must stay importable by cores: it imports no I/O module (a test enforces it).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Generic, Iterable, Iterator, Mapping, NamedTuple, TypeVar

from lvsbus.wire.events import Event, matches

S = TypeVar("S")


class Effect(NamedTuple):
    """An output of a core: a decision (a fact, ``router.role_changed``) or a command for its
    shell (``pulse.send_heartbeat``). Each is published as an event of that type and version."""

    type: str
    payload: dict


class Core(ABC, Generic[S]):
    #: the service name; the source of every event this core outputs
    name: ClassVar[str]
    #: type prefixes this core consumes (bus subscription); ``accepts`` refines it
    inputs: ClassVar[tuple[str, ...]]
    #: exact types this core outputs; replay compares exactly these
    outputs: ClassVar[frozenset[str]]
    #: effect types that change nothing in the world (liveness signals: pulse's heartbeats). A
    #: step whose outputs are all of these runs them at once, recorded in the same batch but not
    #: waited for: a slow or full disk must not stop the heartbeat. Every other step's effects run
    #: only once their record is durable (write-ahead, lvsbus.runtime.engine).
    unheld: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def initial(self) -> S:
        """State before any event."""

    @abstractmethod
    def decide(self, state: S, event: Event) -> tuple[S, list[Effect]]:
        """Fold one event in. Pure: same state and event, same result."""

    def next_deadline(self, state: S) -> int | None:
        """The monotonic time (ns) at which the core wants a ``timer.fired``; None for none."""
        return None

    def accepts(self, event: Event) -> bool:
        """Whether ``event`` is an input of this core. Default: it matches ``inputs``, it is not
        one of this core's own outputs, and a ``timer.fired`` is for this core."""
        if event.type == "timer.fired":
            return event.payload["service"] == self.name
        if event.source == self.name and event.type in self.outputs:
            return False
        return matches(event.type, self.inputs)

    def is_output(self, event: Event) -> bool:
        return event.source == self.name and event.type in self.outputs

    # Snapshots: the state as plain msgpack-able data, and back. Default: the state is already that.
    # Versioned like events: ``snapshot`` writes version ``snapshot_version``; ``restore`` reads
    # exactly that version; an older one is upcast on read by ``snapshot_upcasters`` (version n ->
    # a function turning a version-n snapshot into version n+1); a stored snapshot is never
    # rewritten, and a version this code does not know is refused (lvsbus.runtime.snapshot.decode_state).
    snapshot_version: ClassVar[int] = 1
    snapshot_upcasters: ClassVar[Mapping[int, Callable[[Any], Any]]] = {}

    def snapshot(self, state: S) -> Any:
        return state

    def restore(self, data: Any) -> S:
        return data  # type: ignore[return-value]


class Step(NamedTuple):
    """One input fed to a core and what it produced."""

    event: Event
    effects: list[Effect]


def run_core(core: Core[S], state: S, events: Iterable[Event]) -> Iterator[tuple[S, Step]]:
    """Feed ``events`` (already in log order) to ``core``; yield the state after and each step.

    Events the core does not accept are skipped. The single loop that the runtime (restart),
    replay and the simulator all use.
    """
    accepts = core.accepts
    decide = core.decide
    for event in events:
        if not accepts(event):
            continue
        state, effects = decide(state, event)
        yield state, Step(event, effects)
