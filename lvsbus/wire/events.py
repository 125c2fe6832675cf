"""The event envelope, the registry of event types and versions, and the msgpack codec.

Every event on the bus and in the log is one ``Event``:

    seq      global sequence number, assigned by the router's broker (contiguous from 1)
    node     the router whose broker recorded it
    source   the service that published it (pulse, lvsd, nanny, ipvs, broker, ...)
    type     stable dotted name, e.g. ``router.role_changed`` (never a Python path)
    version  integer schema version of the payload as it was written
    mono_ns  CLOCK_MONOTONIC of the recording broker, ns: the only clock a core sees
    wall_ns  wall clock of the recording broker, ns: metadata for humans and timelines only
    cause    seq of the event that caused this one (None for observations)
    payload  a dict that matches the schema of (type, version)

The body stored in the log and carried on the bus is the msgpack array
``[ENVELOPE_VERSION, seq, node, source, type, version, mono_ns, wall_ns, cause, payload]``.

Stored events are never rewritten: an event written as version 1 stays version 1 on disk. On read,
``decode`` validates it against the version-1 schema and then upcasts the payload, step by step, to
the latest version the code knows, so cores only ever see the latest shape (as eventsourcing's
``upcast_v1_v2``).

Pure: no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple

import msgpack

from lvsbus.wire.schema import Field, SchemaError, Struct, compile_check

ENVELOPE_VERSION = 1

# Limits on what a peer may send us (frames larger than this are refused before decoding).
MAX_NAME = 64
MAX_TYPE = 96


class Event(NamedTuple):
    seq: int
    node: str
    source: str
    type: str
    version: int
    mono_ns: int
    wall_ns: int
    cause: int | None
    payload: dict

    def short(self) -> str:
        return f"#{self.seq} {self.type} v{self.version} from {self.source}@{self.node}"


class DecodeError(ValueError):
    """A frame or record that is not a valid event. ``reason`` is a short machine-friendly word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


Upcaster = Callable[[dict], dict]


@dataclass(frozen=True)
class EventSpec:
    type: str
    version: int
    payload: Struct
    doc: str
    upcast: Upcaster | None = field(default=None, compare=False)  # from version - 1 to this one

    @property
    def schema_id(self) -> str:
        return f"{self.type}.v{self.version}"

    def json_schema(self) -> dict:
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"urn:lvsbus:event:{self.type}:{self.version}",
            "title": f"{self.type} v{self.version}",
            "description": self.doc,
            "x-lvsbus-type": self.type,
            "x-lvsbus-version": self.version,
            **{k: v for k, v in self.payload.json_schema().items() if k != "description"},
        }


class Registry:
    """Every event type and version the code knows. One global instance, ``REGISTRY``."""

    def __init__(self) -> None:
        self._specs: dict[str, dict[int, EventSpec]] = {}
        self._latest: dict[str, EventSpec] = {}
        self._fast: dict[tuple[str, int], tuple[Callable[[Any], bool], EventSpec, bool]] = {}
        #: type -> (its latest version, that version's compiled check): decode_records' lookup
        self._fast_latest: dict[str, tuple[int, Callable[[Any], bool]]] = {}

    def declare(
        self,
        type: str,
        version: int,
        payload: Mapping[str, Field] | Struct,
        doc: str,
        optional: tuple[str, ...] = (),
        upcast: Upcaster | None = None,
    ) -> EventSpec:
        if not _valid_type_name(type):
            raise ValueError(f"bad event type name {type!r}: use lowercase dotted words, e.g. router.role_changed")
        struct = payload if isinstance(payload, Struct) else Struct(payload, optional=optional)
        versions = self._specs.setdefault(type, {})
        if version in versions:
            raise ValueError(f"{type} v{version} declared twice")
        if version != 1 and (version - 1) not in versions:
            raise ValueError(f"{type} v{version} declared before v{version - 1}")
        if version > 1 and upcast is None:
            raise ValueError(f"{type} v{version} needs an upcaster from v{version - 1}")
        spec = EventSpec(type, version, struct, doc, upcast)
        versions[version] = spec
        if type not in self._latest or self._latest[type].version < version:
            self._latest[type] = spec
            for (t, v), (check, older, _) in list(self._fast.items()):
                if t == type:
                    self._fast[(t, v)] = (check, older, False)
        self._fast[(type, version)] = (compile_check(struct), spec, spec is self._latest[type])
        latest = self._latest[type]
        self._fast_latest[type] = (latest.version, self._fast[(type, latest.version)][0])
        return spec

    def latest(self, type: str) -> EventSpec:
        return self._latest[type]

    def get(self, type: str, version: int) -> EventSpec | None:
        versions = self._specs.get(type)
        return versions.get(version) if versions else None

    def __contains__(self, type: str) -> bool:
        return type in self._latest

    def all_specs(self) -> Iterator[EventSpec]:
        for type in sorted(self._specs):
            for version in sorted(self._specs[type]):
                yield self._specs[type][version]

    def types(self) -> list[str]:
        return sorted(self._latest)

    def validate(self, type: str, version: int, payload: Any) -> EventSpec:
        """Check (type, version, payload); raise DecodeError. Returns the spec of that version.

        Fast path: the payload schema compiled into one predicate (``compile_check``); only what it
        does not accept goes through the field-by-field check, which gives the verdict and error."""
        if type.__class__ is not str or version.__class__ is not int:
            # exact types (a bool or 1.0 hashes like 1, a list does not hash): what every reader takes
            raise DecodeError("malformed", _type_version_problem(type, version))
        fast = self._fast.get((type, version))
        if fast is not None and fast[0](payload):
            return fast[1]
        return self._validate_slow(type, version, payload)

    def _validate_slow(self, type: str, version: int, payload: Any) -> EventSpec:
        if type.__class__ is not str or version.__class__ is not int:
            raise DecodeError("malformed", _type_version_problem(type, version))
        versions = self._specs.get(type)
        if versions is None:
            raise DecodeError("unknown_type", f"unknown event type {_clip(type)!r}")
        spec = versions.get(version)
        if spec is None:
            raise DecodeError(
                "unknown_version", f"{_clip(type)} has no version {version!r} (known: {sorted(versions)})"
            )
        try:
            spec.payload.check(payload, "payload")
        except SchemaError as exc:
            raise DecodeError("bad_payload", f"{_clip(type)} v{version}: {_clip(exc, 900)}") from None
        return spec

    def upcast(self, type: str, version: int, payload: dict) -> tuple[int, dict]:
        latest = self._latest[type].version
        versions = self._specs[type]
        while version < latest:
            version += 1
            payload = versions[version].upcast(payload)  # type: ignore[misc]
        return version, payload


def _valid_type_name(name: str) -> bool:
    if not (3 <= len(name) <= MAX_TYPE) or "." not in name:
        return False
    for part in name.split("."):
        if not part or not part[0].isalpha() or not all(c.islower() or c.isdigit() or c == "_" for c in part):
            return False
    return True


def _type_version_problem(type_: Any, version: Any) -> str:
    if type_.__class__ is not str:
        return f"the event type must be a string, not {type_.__class__.__name__}"
    return f"the version of {_clip(type_)} must be an integer, not {version.__class__.__name__} {_clip(version, 40)}"


def _clip(s: Any, n: int = 80) -> str:
    """``s`` as text of at most ``n`` characters (a container by its type and size: the repr of a
    deeply nested one would recurse past Python's limit, and of a large one cost its whole size)."""
    if s.__class__ in (list, dict, tuple):
        return f"<{s.__class__.__name__} of {len(s)}>"
    if s.__class__ in (str, bytes) and len(s) > 4 * n:
        s = s[: 4 * n]
    s = str(s)
    return s if len(s) <= n else s[:n] + "..."


REGISTRY = Registry()
declare = REGISTRY.declare


# ---------------------------------------------------------------------------------------------
# codec

_packb = msgpack.Packer(use_bin_type=True).pack


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)


def encode(event: Event) -> bytes:
    """The body of an event, as stored in the log and carried to subscribers."""
    return msgpack.packb(
        [
            ENVELOPE_VERSION,
            event.seq,
            event.node,
            event.source,
            event.type,
            event.version,
            event.mono_ns,
            event.wall_ns,
            event.cause,
            event.payload,
        ],
        use_bin_type=True,
    )


def decode(body: bytes, seq: int | None = None, registry: Registry = REGISTRY, upcast: bool = True,
           validate: bool = True) -> Event:
    """Decode and validate one stored body. ``seq``: the seq the framing says it has (checked).

    Raises DecodeError; never returns an event that breaks its schema.

    ``validate=False`` checks the envelope and that (type, version) is known, not the payload: for
    a reader of a log this code's broker wrote (it validated every payload before appending, and
    each record's CRC is checked on read) that has measured the check too dear (replay, ~20% of its
    time). Such a reader must check the payload itself where it matters (``Registry.validate``).

    One record through ``decode_records`` (the checks are written once, there).
    """
    evs, bad = decode_records(((seq, body),), registry, validate, upcast)
    if bad is not None:
        raise bad[1]
    return evs[0]


def _decode_one(body: bytes, seq: int | None, registry: Registry, upcast: bool, validate: bool) -> Event:
    """``decode_records``' careful path for one record: garbage and bad envelopes named, another
    version than the latest upcast, a payload the compiled check leaves to the catalog's validator."""
    try:
        raw = _unpackb(body)
    except Exception as exc:  # msgpack raises several types for garbage
        raise DecodeError("malformed", f"not msgpack: {type(exc).__name__}: {_clip(exc)}") from None
    if raw.__class__ is not list or len(raw) != 10:
        raise DecodeError("malformed", "an envelope is a 10-item array")
    problem = _envelope_problem(raw, seq)
    if problem is not None:
        raise problem
    _, rseq, node, source, type_, version, mono_ns, wall_ns, cause, payload = raw
    fast = registry._fast.get((type_, version))
    if fast is None:  # an unknown type or version: raises
        registry._validate_slow(type_, version, payload)
    elif (validate or payload.__class__ is not dict) and not fast[0](payload):
        registry._validate_slow(type_, version, payload)  # raises, or passes a valid payload the fast check left
        fast = None
    if upcast and (fast is None or not fast[2]):
        try:
            version, payload = registry.upcast(type_, version, payload)
        except Exception:
            if not validate:  # an upcaster may assume its input valid: say what is wrong with it
                registry._validate_slow(type_, version, payload)
            raise
    return _event_new(Event, (rseq, node, source, type_, version, mono_ns, wall_ns, cause, payload))


# msgpack >= 1.0 (pyproject.toml) unpacks with raw=False, strict_map_key=True, use_list=True by default: called
# bare (a partial with those keywords costs 15% of the decode of a heartbeat)
_unpackb = msgpack.unpackb
_event_new = tuple.__new__


def decode_records(records: Iterable[tuple[int | None, bytes]], registry: Registry = REGISTRY,
                   validate: bool = True, upcast: bool = True) -> tuple[list[Event], tuple[int | None, DecodeError] | None]:
    """Decode ``(seq, body)`` records (as ``LogReader.read_batches`` gives them) in one loop: the
    events up to the first record that does not decode, and that record's (seq, error), or None.

    The common record (the latest version of its type, its envelope right, a payload the compiled
    check takes) is decoded inline: the envelope checked in one expression, no error message built.
    Anything else goes through ``_decode_one``, which upcasts, takes the catalog's validator or
    names the error. The hot path of replay and of the bus clients."""
    out: list[Event] = []
    append = out.append
    latest_get = registry._fast_latest.get
    unpackb = _unpackb
    new = _event_new
    for seq, body in records:
        try:
            raw = unpackb(body)
        except Exception:  # garbage: decode names it
            raw = None
        if raw.__class__ is list and len(raw) == 10:
            ev, rseq, node, source, type_, version, mono_ns, wall_ns, cause, payload = raw
            if (
                ev.__class__ is int and ev == ENVELOPE_VERSION and rseq.__class__ is int and rseq == seq and rseq >= 1
                and node.__class__ is str and 0 < len(node) <= MAX_NAME
                and source.__class__ is str and 0 < len(source) <= MAX_NAME
                and type_.__class__ is str and version.__class__ is int
                and mono_ns.__class__ is int and wall_ns.__class__ is int
                and (cause is None or (cause.__class__ is int and cause >= 1))
            ):
                fast = latest_get(type_)
                if fast is not None and fast[0] == version and (
                        fast[1](payload) if validate else payload.__class__ is dict):
                    del raw[0]  # the envelope version: the rest is the Event, in order
                    append(new(Event, raw))
                    continue
        try:
            append(_decode_one(body, seq, registry, upcast, validate))
        except DecodeError as exc:
            return out, (seq, exc)
    return out, None


def decodable(records: Iterable[tuple[int | None, bytes]], skipped: list[tuple[int | None, DecodeError]],
              registry: Registry = REGISTRY, validate: bool = True) -> Iterator[Event]:
    """The events of ``(seq, body)`` records, in order, past any record that does not decode: each
    such one is appended to ``skipped`` as (seq, error), for the caller to report by seq. Readers of
    a log use it: a record an older broker let through must not stop them (docs/bus.md)."""
    for seq, body in records:
        try:
            yield decode(body, seq, registry, validate=validate)
        except DecodeError as exc:
            skipped.append((seq, exc))


def _envelope_problem(raw: list, seq: int | None) -> DecodeError | None:
    """What is wrong with an envelope (a 10-item list), checked one field at a time; None: nothing."""
    ev, rseq, node, source, type_, version, mono_ns, wall_ns, cause, _ = raw
    if type(ev) is not int or ev != ENVELOPE_VERSION:
        return DecodeError("unknown_envelope", f"envelope version {_clip(ev)!r}, this code reads {ENVELOPE_VERSION}")
    if type(rseq) is not int or rseq < 1:
        return DecodeError("malformed", f"bad seq {_clip(rseq)!r}")
    if seq is not None and rseq != seq:
        return DecodeError("seq_mismatch", f"record framed as seq {seq} holds seq {rseq}")
    if type(node) is not str or not 0 < len(node) <= MAX_NAME:
        return DecodeError("malformed", f"bad node {_clip(node)!r}")
    if type(source) is not str or not 0 < len(source) <= MAX_NAME:
        return DecodeError("malformed", f"bad source {_clip(source)!r}")
    if type(type_) is not str or type(version) is not int:
        return DecodeError("malformed", "type must be a string and version an integer")
    if type(mono_ns) is not int or type(wall_ns) is not int:
        return DecodeError("malformed", "timestamps must be integers (ns)")
    if cause is not None and (type(cause) is not int or cause < 1):
        return DecodeError("malformed", f"bad cause {_clip(cause)!r}")
    return None


def iter_types(events: Iterator[Event], prefixes: tuple[str, ...]) -> Iterator[Event]:
    for e in events:
        if e.type.startswith(prefixes):
            yield e


def matches(type_: str, prefixes: tuple[str, ...]) -> bool:
    """Subscription matching: a prefix matches the type exactly, or as a dotted prefix ("router." or "router")."""
    for p in prefixes:
        if p == "" or type_ == p or (type_.startswith(p) and (p.endswith(".") or type_[len(p)] == ".")):
            return True
    return False
