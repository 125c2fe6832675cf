"""The envelope, the codec and the registry: validation at the trust boundary, and upcasting."""
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.wire.events import REGISTRY, DecodeError, Event, Registry, decode, encode, matches
from lvsbus.log import parse_frames
from lvsbus.wire.schema import Int, Str

FIXTURES = Path(__file__).parents[1] / "fixtures" / "events"


def ev(type_="timer.fired", payload=None, seq=1, version=None, cause=None):
    payload = payload if payload is not None else {"service": "pulse", "deadline_ns": 10}
    return Event(seq, "lvs1", "pulse", type_, version or REGISTRY.latest(type_).version, 5, 6, cause, payload)


def test_round_trip():
    e = ev(cause=3)
    assert decode(encode(e), 1) == e


def test_seq_in_framing_must_match_body():
    with pytest.raises(DecodeError) as info:
        decode(encode(ev(seq=7)), 8)
    assert info.value.reason == "seq_mismatch"


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda r: r.__setitem__(4, "no.such_type"), "unknown_type"),
        (lambda r: r.__setitem__(5, 99), "unknown_version"),
        (lambda r: r[9].__setitem__("deadline_ns", "soon"), "bad_payload"),
        (lambda r: r[9].pop("service"), "bad_payload"),
        (lambda r: r[9].__setitem__("extra", 1), "bad_payload"),
        (lambda r: r[9].__setitem__("deadline_ns", -1), "bad_payload"),
        (lambda r: r.__setitem__(0, 2), "unknown_envelope"),
        (lambda r: r.__setitem__(8, "x"), "malformed"),
        (lambda r: r.__setitem__(1, 0), "malformed"),
        (lambda r: r.pop(), "malformed"),
        (lambda r: r.__setitem__(2, ""), "malformed"),
    ],
)
def test_invalid_records_are_refused_with_a_reason(mutate, reason):
    raw = msgpack.unpackb(encode(ev()))
    mutate(raw)
    with pytest.raises(DecodeError) as info:
        decode(msgpack.packb(raw))
    assert info.value.reason == reason
    assert str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_raises_anything_but_decode_error(data):
    try:
        decode(data)
    except DecodeError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_bit_flips_of_a_valid_body_are_refused_or_still_valid(data):
    body = bytearray(encode(ev(payload={"service": "nanny", "deadline_ns": 123456})))
    i = data.draw(st.integers(0, len(body) - 1))
    body[i] ^= 1 << data.draw(st.integers(0, 7))
    try:
        e = decode(bytes(body))
    except DecodeError:
        return
    REGISTRY.validate(e.type, e.version, e.payload)  # whatever decodes is valid


def test_frozen_v1_sample_is_upcast_to_the_latest_version():
    """bus.client_joined v1 (subscriptions as one comma-joined string), frozen as written by v1 code."""
    records, used = parse_frames((FIXTURES / "bus.client_joined.v1.record").read_bytes())
    [(seq, body)] = records
    assert msgpack.unpackb(body)[5] == 1  # stored as v1, never rewritten
    e = decode(body, seq)
    assert e.version == REGISTRY.latest("bus.client_joined").version == 2
    assert e.payload == {"client": "nanny", "subscriptions": ["config.", "timer.", "health."], "pid": 4242}
    raw = decode(body, seq, upcast=False)
    assert raw.version == 1 and raw.payload["subscriptions"] == "config.,timer.,health."


def test_registry_refuses_bad_declarations():
    r = Registry()
    r.declare("a.b", 1, {"x": Int()}, doc="")
    with pytest.raises(ValueError):
        r.declare("a.b", 1, {"x": Int()}, doc="")  # twice
    with pytest.raises(ValueError):
        r.declare("a.b", 3, {"x": Int()}, doc="", upcast=lambda p: p)  # skips v2
    with pytest.raises(ValueError):
        r.declare("a.b", 2, {"x": Str()}, doc="")  # no upcaster
    with pytest.raises(ValueError):
        r.declare("mypkg.events.Thing", 1, {}, doc="")  # a Python path, not a stable name


def test_prefix_matching():
    assert matches("router.role_changed", ("router.",))
    assert matches("router.role_changed", ("router",))
    assert not matches("routers.x", ("router",))
    assert matches("router.role_changed", ("router.role_changed",))
    assert matches("anything.at_all", ("",))
    assert not matches("health.real_server_up", ("router.", "timer."))
