"""Property tests: model -> to_dict -> from_dict, and TOML -> model -> TOML, round-trip exactly."""
from __future__ import annotations

import ipaddress
import json

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsbus.config import (
    SCHEDULERS,
    Check,
    CheckKind,
    HttpUrl,
    Config,
    FailoverService,
    Forwarding,
    Heartbeat,
    IpvsTimeouts,
    NatRouter,
    Notify,
    Protocol,
    RealServer,
    Router,
    ServiceType,
    Severity,
    SyncDaemon,
    VirtualService,
    from_dict,
    loads_toml,
    render_toml,
    to_dict,
    validate,
)
from lvsbus.config.model import SCHEDULER_FLAGS

NAME = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,11}", fullmatch=True)
TEXT = st.text(max_size=20)
WORD = st.from_regex(r"[A-Za-z0-9 ]{1,12}", fullmatch=True)
SECONDS = st.floats(min_value=0.01, max_value=3600, allow_nan=False, allow_infinity=False)


def _ip(family: int, n: int) -> str:
    base = ipaddress.ip_address("10.0.0.0" if family == 4 else "2001:db8::")
    return str(base + n)


@st.composite
def checks(draw) -> Check:
    kind = draw(st.sampled_from(list(CheckKind)))
    interval = draw(SECONDS)
    timeout = max(0.01, interval * draw(st.floats(min_value=0.01, max_value=1.0)))
    regex = draw(st.booleans())
    expect = draw(WORD if regex else TEXT)
    kw: dict = dict(kind=kind, interval=interval, timeout=timeout,
                    rise=draw(st.integers(1, 10000)), fall=draw(st.integers(1, 10000)),
                    port=draw(st.none() | st.integers(1, 65535)), regex=regex, expect=expect,
                    send=draw(TEXT), payload=draw(TEXT))
    if kind is CheckKind.TCP_SEND_EXPECT and not (kw["send"] or kw["expect"]):
        kw["send"] = "x"
    if kind in (CheckKind.HTTP, CheckKind.HTTPS):
        kw.update(path="/" + draw(TEXT), status=tuple(draw(st.lists(st.integers(100, 599), min_size=1,
                                                                    max_size=3))),
                  body_regex=draw(st.none() | WORD), host=draw(st.none() | st.just("www.example.org")),
                  digest=draw(st.none() | st.just("0123456789abcdef0123456789abcdef")),
                  http_version=draw(st.sampled_from(["1.0", "1.1"])),
                  urls=tuple(HttpUrl("/" + draw(TEXT), tuple(draw(st.lists(st.integers(100, 599), min_size=1,
                                                                           max_size=2))),
                                     draw(st.none() | st.just("0" * 32)), draw(st.none() | WORD))
                             for _ in range(draw(st.integers(0, 2)))))
    if kind is CheckKind.UDP:
        kw.update(reply_required=draw(st.booleans()))
    if kind is CheckKind.SMTP:
        kw.update(helo_name=draw(st.sampled_from(["mx.example.org", "lvs1"])))
    if kind is CheckKind.DNS:
        kw.update(dns_type=draw(st.sampled_from(["A", "SOA", "AAAA"])), dns_name=draw(st.sampled_from(["", "example.org."])))
    if kind is CheckKind.FILE:
        kw.update(file="/run/" + draw(WORD))
    if draw(st.booleans()):
        kw.update(connect_ip=draw(st.sampled_from(["10.9.9.9", "fd00::9"])), bind=draw(st.none() | st.just("10.0.0.1")))
    if kind is CheckKind.PROGRAM:
        kw.update(command="/bin/check " + draw(TEXT), exit_code=draw(st.none() | st.integers(0, 255)))
    return Check(**kw)


@st.composite
def virtuals(draw, index: int, device: str | None) -> VirtualService:
    family = draw(st.sampled_from([4, 6]))
    fwd = draw(st.sampled_from(list(Forwarding)))
    port = 1000 + index
    fwmark = draw(st.none() | st.just(index + 1))
    protocol = draw(st.sampled_from(list(Protocol)))
    scheduler = draw(st.sampled_from(SCHEDULERS))
    persistence = draw(st.integers(0, 86400))
    n_servers = draw(st.integers(0, 4))
    servers = []
    for i in range(n_servers):
        upper = draw(st.integers(0, 10000))
        servers.append(RealServer(
            name=f"rs{i}", address=_ip(family, 1000 + i),
            # port 0 (keep the client's port): fwmark services only
            port=draw(st.none() | st.integers(1, 65535) | (st.just(0) if fwmark else st.nothing())),
            weight=draw(st.integers(0, 65535)), active=draw(st.booleans()), upper_threshold=upper,
            lower_threshold=draw(st.integers(0, upper)) if upper else draw(st.integers(0, 10000)),
            check=draw(st.none() | checks())))
    quorum = draw(st.integers(1, 100))
    label = None
    if device is not None and draw(st.booleans()):
        label = f"{device}:{index}"
    return VirtualService(
        name=f"vs{index}-{draw(NAME)}", address=_ip(family, 100 + index), device=device, label=label,
        vip_prefixlen=draw(st.none() | st.integers(1, 32)), active=draw(st.booleans()), port=port,
        protocol=protocol, fwmark=fwmark, scheduler=scheduler,
        scheduler_flags=tuple(draw(st.permutations(SCHEDULER_FLAGS.get(scheduler, ())))[:draw(st.integers(0, 2))]),
        ops=protocol is Protocol.UDP and draw(st.booleans()),
        persistence_engine="sip" if protocol is Protocol.UDP and persistence and draw(st.booleans()) else None,
        forwarding=fwd, persistence=persistence,
        persistence_prefixlen=draw(st.none() | st.integers(0, 32)),
        sorry_server=draw(st.none() | st.just(_ip(family, 99))),
        sorry_server_port=None, quiesce=draw(st.booleans()), quorum=quorum,
        hysteresis=draw(st.integers(0, quorum - 1)), check=draw(checks()), servers=tuple(servers))


@st.composite
def configs(draw) -> Config:
    device = draw(st.sampled_from([None, "eth0"]))
    n_routers = draw(st.integers(1, 3))
    routers = tuple(
        Router(name=f"r{i}", address=_ip(4, 1 + i), private_address=draw(st.none() | st.just(_ip(4, 50 + i))),
               shared_address=draw(st.none() | st.just(_ip(6, 50 + i))), priority=200 - i,
               device=device, private_device=draw(st.none() | st.just("eth1")))
        for i in range(n_routers))
    keepalive = draw(st.floats(min_value=0.01, max_value=1000, allow_nan=False))
    deadtime = keepalive * draw(st.floats(min_value=2.0, max_value=80.0))
    hb = Heartbeat(enabled=draw(st.booleans()), port=draw(st.integers(1, 65535)), keepalive=keepalive,
                   deadtime=deadtime, key_file="/etc/" + draw(TEXT), preempt=draw(st.booleans()),
                   preempt_delay=draw(st.floats(min_value=0, max_value=3600)),
                   monitor_links=draw(st.booleans()), garp_repeat=draw(st.integers(1, 100)),
                   garp_refresh=draw(st.floats(min_value=0, max_value=86400)))
    n_vs = draw(st.integers(0, 3))
    vss = tuple(draw(virtuals(i, device)) for i in range(n_vs))
    fos = tuple(
        FailoverService(name=f"fos{i}", address=_ip(4, 200 + i), device=device,
                        port=draw(st.integers(1, 65535)), timeout=draw(SECONDS), reentry=draw(SECONDS),
                        send=draw(TEXT), expect=draw(TEXT), start_cmd="start " + draw(TEXT),
                        stop_cmd="stop " + draw(TEXT), active=draw(st.booleans()))
        for i in range(draw(st.integers(0, 2))))
    return Config(
        service=draw(st.sampled_from(list(ServiceType))), serial_no=draw(st.integers(0, 2**40)),
        routers=routers, heartbeat=hb,
        ipvs_timeouts=IpvsTimeouts(*(draw(st.integers(0, 100000)) for _ in range(3))),
        sync_daemon=SyncDaemon(draw(st.booleans()), draw(st.sampled_from(["eth0", "bond0.12"])),
                               draw(st.integers(0, 255))),
        notify=Notify(*(draw(st.none() | st.just("/usr/bin/notify " + draw(TEXT))) for _ in range(3))),
        nat_router=draw(st.none() | st.just(NatRouter(_ip(4, 254), device, None, 24))),
        hard_shutdown=draw(st.booleans()),
        metrics_address=draw(st.none() | st.just("127.0.0.1:9539") | st.just("[::1]:9100")),
        debug_level=draw(st.none() | TEXT),
        reservation_conflict_action=draw(st.sampled_from([None, "nothing", "preempt"])),
        virtual_services=vss, failover_services=fos,
    )


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(configs())
def test_generated_configs_are_valid(cfg):
    errors = [i for i in validate(cfg) if i.severity is Severity.ERROR]
    assert errors == []


@SETTINGS
@given(configs())
def test_to_dict_from_dict_round_trip(cfg):
    d = to_dict(cfg)
    assert from_dict(d) == cfg
    # what the event carries survives msgpack and JSON (tuples come back as lists)
    assert from_dict(msgpack.unpackb(msgpack.packb(d), raw=False)) == cfg
    assert from_dict(json.loads(json.dumps(d))) == cfg


@SETTINGS
@given(configs())
def test_toml_model_toml_round_trip(cfg):
    text = render_toml(cfg)
    loaded = loads_toml(text, "gen.toml").config
    assert loaded == cfg
    assert render_toml(loaded) == text
