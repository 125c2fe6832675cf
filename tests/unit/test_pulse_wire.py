"""The heartbeat/fence datagram format: round trips, every rejection reason, and a property test that
garbage and bit flips are always a WireError, never another exception."""
from __future__ import annotations

import hashlib
import hmac

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsbus_services.pulse import wire
from lvsbus_services.pulse.wire import (
    MAX_DATAGRAM, Fence, Heartbeat, WireError, decode_datagram, encode_fence,
    encode_heartbeat, key_from_secret,
)

KEY = key_from_secret(b"correct horse battery staple\n")
OTHER = key_from_secret(b"another secret, also 16+ bytes")
HB = Heartbeat(node="lvs1", role="ACTIVE", priority=200, epoch=1_700_000_000, seq=42, leaving=False)
FENCE = Fence(node="lvs2", target="lvs1", epoch=7, seq=9, reason="peer_dead")


def _forge(kind: int, body: object, key: bytes = KEY, version: int = 1, magic: bytes = wire.MAGIC) -> bytes:
    """A correctly MACed datagram around an arbitrary body (what a buggy but keyed peer could send);
    a ``groups`` of None is left out (a version 1 body has none)."""
    if isinstance(body, dict) and body.get("groups", 0) is None:
        body = {k: v for k, v in body.items() if k != "groups"}
    msg = wire._HEADER.pack(magic, version, kind) + msgpack.packb(body, use_bin_type=True)
    return msg + hmac.new(key, msg, hashlib.sha256).digest()


def test_heartbeat_round_trip():
    data = encode_heartbeat(KEY, HB)
    assert data[:4] == b"LVSP" and data[4] == 1 and data[5] == wire.KIND_HEARTBEAT
    assert decode_datagram(KEY, data) == HB
    assert decode_datagram(KEY, encode_heartbeat(KEY, HB._asdict() | {"leaving": True})).leaving is True
    assert len(data) < 200


def test_fence_round_trip():
    data = encode_fence(KEY, FENCE)
    got = decode_datagram(KEY, data)
    assert isinstance(got, Fence) and got == FENCE


def test_version_2_carries_the_failover_groups_and_version_1_is_written_without_them():
    groups = (("web", "ACTIVE", 200), ("mail", "BACKUP", 100))
    hb = HB._replace(groups=groups)
    data = encode_heartbeat(KEY, hb)
    assert data[4] == 2 and decode_datagram(KEY, data) == hb
    fence = FENCE._replace(groups=("web",))
    assert decode_datagram(KEY, encode_fence(KEY, fence)) == fence
    # what the core's effects become: the default group alone is version 1 (an older router reads
    # it), and what arrives becomes the event with every group (a version 1 one: the default group)
    eff = {"node": "lvs1", "role": "ACTIVE", "priority": 200, "epoch": 1, "seq": 3, "leaving": False,
           "groups": [{"group": "default", "role": "ACTIVE", "priority": 200}]}
    one = wire.datagram_of(KEY, "pulse.send_heartbeat", eff)
    assert one[4] == 1
    _t, p = wire.received(decode_datagram(KEY, one), "public", "10.0.0.1")
    assert p["groups"] == eff["groups"]
    two = wire.datagram_of(KEY, "pulse.send_heartbeat", eff | {"groups": [
        {"group": "web", "role": "ACTIVE", "priority": 200}, {"group": "mail", "role": "BACKUP", "priority": 100}]})
    assert two[4] == 2
    _t, p = wire.received(decode_datagram(KEY, two), "private", "10.0.0.1")
    assert [g["group"] for g in p["groups"]] == ["web", "mail"]
    f1 = wire.datagram_of(KEY, "pulse.send_fence", {"node": "lvs2", "target": "lvs1", "epoch": 1, "seq": 4,
                                                    "reason": "peer_dead", "groups": ["default"]})
    assert f1[4] == 1 and wire.received(decode_datagram(KEY, f1), "public", "x")[1]["groups"] == ["default"]
    # the most groups a config may have, each with the longest name it may have, still fit
    many = tuple((f"g{i:02d}".ljust(wire.MAX_GROUP_NAME, "x"), "BACKUP", 65535) for i in range(wire.MAX_GROUPS))
    assert len(encode_heartbeat(KEY, HB._replace(node="n" * 64, epoch=2**63, seq=2**63, groups=many))) <= MAX_DATAGRAM


def test_the_mac_covers_header_and_body():
    data = encode_heartbeat(KEY, HB)
    msg = data[:-32]
    assert data[-32:] == hmac.new(KEY, msg, hashlib.sha256).digest()


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda: encode_heartbeat(OTHER, HB), "bad_mac"),
        (lambda: encode_heartbeat(KEY, HB)[:-1] + bytes([encode_heartbeat(KEY, HB)[-1] ^ 1]), "bad_mac"),
        (lambda: b"", "malformed"),
        (lambda: b"LVSP\x01\x01" + b"\0" * 20, "malformed"),
        (lambda: b"XXXX" + encode_heartbeat(KEY, HB)[4:], "malformed"),
        (lambda: _forge(1, HB._asdict(), version=3), "wrong_version"),
        (lambda: _forge(1, HB._asdict(), version=2), "malformed"),  # version 2 without its groups
        (lambda: _forge(1, HB._asdict() | {"groups": []}, version=2), "malformed"),
        (lambda: _forge(1, HB._asdict() | {"groups": [["web", "MASTER", 1]]}, version=2), "malformed"),
        (lambda: _forge(1, HB._asdict() | {"groups": [["web", "ACTIVE", 1]] * 33}, version=2), "malformed"),
        (lambda: _forge(2, FENCE._asdict() | {"groups": [""]}, version=2), "malformed"),
        (lambda: _forge(1, HB._asdict() | {"groups": [["web", "ACTIVE", 1]]}, version=1), "malformed"),
        (lambda: b"\0" * (MAX_DATAGRAM + 1), "too_large"),
        (lambda: _forge(3, HB._asdict()), "malformed"),  # unknown kind
        (lambda: _forge(1, [1, 2, 3]), "malformed"),  # not a map
        (lambda: _forge(1, HB._asdict() | {"extra": 1}), "malformed"),
        (lambda: _forge(1, {k: v for k, v in HB._asdict().items() if k != "seq"}), "malformed"),
        (lambda: _forge(1, HB._asdict() | {"seq": -1}), "malformed"),
        (lambda: _forge(1, HB._asdict() | {"seq": True}), "malformed"),  # bool is not an int here
        (lambda: _forge(1, HB._asdict() | {"role": "MASTER"}), "malformed"),
        (lambda: _forge(1, HB._asdict() | {"node": ""}), "malformed"),
        (lambda: _forge(2, FENCE._asdict() | {"target": 5}), "malformed"),
        (lambda: _forge(1, FENCE._asdict()), "malformed"),  # a fence body in a heartbeat
        (lambda: wire._HEADER.pack(wire.MAGIC, 1, 1) + b"\xc1" + hmac.new(KEY, wire._HEADER.pack(wire.MAGIC, 1, 1) + b"\xc1", hashlib.sha256).digest(), "malformed"),
        (lambda: _forge(1, HB._asdict())[:-32] + b"\x00" + hmac.new(KEY, _forge(1, HB._asdict())[:-32] + b"\x00", hashlib.sha256).digest(), "malformed"),  # trailing byte
    ],
)
def test_rejections(make, reason):
    with pytest.raises(WireError) as exc:
        decode_datagram(KEY, make())
    assert exc.value.reason == reason


def test_encode_refuses_bad_fields():
    with pytest.raises(ValueError):
        encode_heartbeat(KEY, HB._asdict() | {"priority": 70000})
    with pytest.raises(ValueError):
        encode_heartbeat(KEY, {"node": "x"})
    with pytest.raises(ValueError):
        encode_fence(KEY, FENCE._replace(reason="x" * 65))
    # the largest valid fence still fits one datagram
    big = encode_fence(KEY, FENCE._replace(reason="x" * 64, node="n" * 64, target="t" * 64))
    assert len(big) <= MAX_DATAGRAM and decode_datagram(KEY, big).reason == "x" * 64


def test_key_handling():
    assert key_from_secret(b"0123456789abcdef\n") == key_from_secret(b"  0123456789abcdef")
    assert key_from_secret(b"0123456789abcdef") != key_from_secret(b"0123456789abcdeF")
    with pytest.raises(ValueError):
        key_from_secret(b"short\n")


VALID = [encode_heartbeat(KEY, HB), encode_fence(KEY, FENCE)]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=MAX_DATAGRAM + 64))
def test_random_bytes_are_always_wire_errors(data):
    with pytest.raises(WireError):
        decode_datagram(KEY, data)


@settings(max_examples=600, deadline=None)
@given(
    which=st.sampled_from([0, 1]),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=7)), min_size=1, max_size=8),
)
def test_bit_flips_of_a_valid_datagram_are_rejected(which, flips):
    data = bytearray(VALID[which])
    for pos, bit in flips:
        data[pos % len(data)] ^= 1 << bit
    if bytes(data) == VALID[which]:  # flips cancelled out
        assert decode_datagram(KEY, bytes(data)) is not None
        return
    with pytest.raises(WireError):
        decode_datagram(KEY, bytes(data))


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=0, max_value=200), extra=st.binary(max_size=16))
def test_truncated_or_extended_datagrams_are_rejected(cut, extra):
    good = VALID[0]
    data = good[: cut % len(good)] + extra
    if data == good:
        return
    with pytest.raises(WireError):
        decode_datagram(KEY, data)


@settings(max_examples=200, deadline=None)
@given(body=st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=8),
    max_leaves=12,
), kind=st.integers(min_value=0, max_value=255))
def test_keyed_garbage_bodies_are_rejected_cleanly(body, kind):
    """Even with a valid MAC (a buggy peer), an odd body is a WireError, never a crash."""
    try:
        data = _forge(kind, body)
    except Exception:
        return
    try:
        got = decode_datagram(KEY, data)
    except WireError:
        return
    assert isinstance(got, (Heartbeat, Fence))


def test_pulse_and_the_routers_start_check_apply_one_key_rule():
    """key_from_secret refuses exactly the secrets lvsbus.config.keyrules' secret_problem refuses (the
    rule lvsbus.host.keyfile.load_key checks for pulse and the router): a file the router accepts is
    one pulse can use, and the other way round."""
    from lvsbus.config.keyrules import secret_problem

    for secret in (b"", b"x" * 15, b"  " + b"x" * 15 + b"\n", b"x" * 16, b"\n" + b"y" * 16 + b"  \n"):
        try:
            wire.key_from_secret(secret)
            usable = True
        except ValueError:
            usable = False
        assert usable == (secret_problem(secret) is None), secret


def test_an_effect_sent_arrives_as_the_event_the_core_reads():
    """datagram_of / received (pulse's shell and the simulator): what a core's send_heartbeat or
    send_fence says arrives at the peer as a valid pulse.*_received event carrying the same fields."""
    import lvsbus.wire.catalog  # noqa: F401  (fills the registry)
    from lvsbus.wire.events import REGISTRY

    dests = [{"peer": "lvs2", "link": "public", "address": "10.0.0.2", "local_address": "10.0.0.1"}]
    hb = {"node": "lvs1", "role": "ACTIVE", "priority": 200, "epoch": 3, "seq": 41, "leaving": True,
          "port": 539, "destinations": dests}
    fence = {"node": "lvs1", "target": "lvs2", "epoch": 3, "seq": 42, "reason": "x" * 80, "port": 539,
             "destinations": dests}
    for effect, sent, want in (("pulse.send_heartbeat", hb, "pulse.heartbeat_received"),
                               ("pulse.send_fence", fence, "pulse.fence_received")):
        type_, payload = wire.received(decode_datagram(KEY, wire.datagram_of(KEY, effect, sent)), "public", "10.0.0.1")
        REGISTRY.validate(type_, REGISTRY.latest(type_).version, payload)
        assert type_ == want
        assert payload["peer"] == "lvs1" and payload["link"] == "public" and payload["address"] == "10.0.0.1"
        assert {k: payload[k] for k in sent if k in payload and k != "reason"} == \
            {k: sent[k] for k in sent if k in payload and k != "reason"}
    assert payload["reason"] == "x" * 64  # a fence's reason is cut to the wire's 64 characters


def test_accept_passes_a_datagram_on_or_says_why_not():
    """wire.accept, what pulse's shell and the simulator do with each datagram: the event it becomes,
    or a Rejected (the decoder's reasons, and a known router's datagram from an address it does not
    have on that link) whose payload is a valid pulse.datagram_rejected."""
    import lvsbus.wire.catalog  # noqa: F401  (fills the registry)
    from lvsbus.wire.events import REGISTRY
    from lvsbus_services.pulse.core import PulseSettings, RouterInfo

    settings = PulseSettings("lvs2", (RouterInfo("lvs1", "10.0.0.1", "fe80::1", 200), RouterInfo("lvs2", "10.0.0.2", None, 100)), ())
    data = encode_heartbeat(KEY, HB)
    assert wire.accept(KEY, data, "public", "10.0.0.1", settings) == wire.received(HB, "public", "10.0.0.1")
    assert wire.accept(KEY, data, "private", "fe80::1%eth1", settings)[1]["address"] == "fe80::1"  # normalised
    assert wire.accept(KEY, data, "public", "10.0.0.9", None)[1]["address"] == "10.0.0.9"  # no settings: not checked
    fence = encode_fence(KEY, Fence(node="lvs9", target="lvs2", epoch=1, seq=1))
    assert wire.accept(KEY, fence, "public", "10.0.0.9", settings)[0] == "pulse.fence_received"  # not a router we know
    rejected = [wire.accept(KEY, data, "public", "10.0.0.9", settings), wire.accept(KEY, data, "private", "10.0.0.1", settings),
                wire.accept(OTHER, data, "public", "10.0.0.1", settings), wire.accept(KEY, b"x" * 2000, "public", "10.0.0.1", settings)]
    assert [r.reason for r in rejected] == ["address_mismatch", "address_mismatch", "bad_mac", "too_large"]
    assert rejected[0].detail == "lvs1 sends from 10.0.0.1 on public, not 10.0.0.9"
    p = rejected[0].payload("public", "10.0.0.9", len(data), 3)
    REGISTRY.validate("pulse.datagram_rejected", REGISTRY.latest("pulse.datagram_rejected").version, p)
    assert p == {"reason": "address_mismatch", "link": "public", "address": "10.0.0.9", "size": len(data),
                 "detail": rejected[0].detail, "count": 3}
