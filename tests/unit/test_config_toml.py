"""Native TOML fixtures (IPv6, SCTP, per-server checks), errors with lines, and the writer."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lvsbus.config import (
    Check,
    CheckKind,
    ConfigError,
    Forwarding,
    NatRouter,
    Protocol,
    Router,
    load,
    loads,
    loads_toml,
    render_toml,
)

FIX = Path(__file__).parents[1] / "fixtures" / "toml"


def test_ipv6_https_service():
    loaded = load(str(FIX / "ipv6.toml"))
    cfg = loaded.config
    assert loaded.format == "toml" and loaded.warnings == ()
    import hashlib
    assert loaded.digest == hashlib.sha256((FIX / "ipv6.toml").read_bytes()).hexdigest()
    assert cfg.serial_no == 2024112601
    assert cfg.metrics_address == "[::1]:9539"
    assert cfg.routers[0] == Router("lvs1", "2001:db8:0:1::1", private_address="fd00::1",
                                    priority=150, device="eth0", private_device="eth1")
    hb = cfg.heartbeat
    assert (hb.keepalive, hb.deadtime, hb.key_file) == (0.2, 1.0, "/etc/lvsbus/cluster-a.key")
    assert (hb.preempt, hb.garp_repeat, hb.garp_refresh) == (False, 3, 60.0)
    (vs,) = cfg.virtual_services
    assert vs.address == "2001:db8:0:1::80"  # normalised
    assert (vs.device, vs.label, vs.vip_prefixlen) == ("eth0", None, 64)
    assert (vs.port, vs.protocol, vs.scheduler, vs.forwarding) == (443, Protocol.TCP, "mh", Forwarding.DIRECT)
    assert (vs.persistence, vs.persistence_prefixlen) == (300, 64)
    assert (vs.sorry_server, vs.sorry_server_port) == ("2001:db8:0:2::99", 8443)
    assert vs.check == Check(kind=CheckKind.HTTPS, interval=1.0, timeout=0.5, rise=3, fall=2,
                             path="/healthz", status=(200, 204), body_regex="ok|healthy",
                             host="www.example.net")
    a, b = vs.servers
    assert (a.address, a.weight, a.port, a.check) == ("2001:db8:0:2::11", 10, None, None)
    assert (b.upper_threshold, b.lower_threshold) == (1000, 800)


def test_sctp_udp_and_per_server_checks():
    cfg = load(str(FIX / "sctp.toml")).config
    assert cfg.nat_router == NatRouter("10.0.0.254", "eth1", "eth1:gw", 24)
    assert cfg.notify.notify == "/usr/local/bin/lvs-notify"
    assert cfg.heartbeat.deadtime == 3.5
    dia, rad = cfg.virtual_services
    assert dia.protocol is Protocol.SCTP and dia.port == 3868
    assert (dia.quorum, dia.hysteresis, dia.forwarding) == (2, 1, Forwarding.NAT)
    assert dia.check == Check(kind=CheckKind.TCP_CONNECT, interval=2.0, timeout=1.0, rise=2, fall=3,
                              port=3869)
    d1, d2 = dia.servers
    assert d1.check is None
    # the override is merged over the virtual's check
    assert d2.check == Check(kind=CheckKind.PROGRAM, interval=2.0, timeout=1.0, rise=2, fall=3,
                             port=3869, command="/usr/local/bin/check_diameter %h %p", exit_code=0)
    assert rad.protocol is Protocol.UDP and rad.quiesce
    assert rad.check.kind is CheckKind.UDP
    assert rad.check.payload == "\x01\x00\x00\x14status" and rad.check.expect == "\x02"
    assert rad.servers[1].check == Check(kind=CheckKind.UDP, payload="\x01\x00\x00\x14status",
                                         expect="\x02", rise=5)


@pytest.mark.parametrize("name", ["ipv6.toml", "sctp.toml"])
def test_fixture_round_trips_through_the_writer(name):
    cfg = load(str(FIX / name)).config
    text = render_toml(cfg)
    tomllib.loads(text)  # valid TOML
    again = loads_toml(text, "again.toml").config
    assert again == cfg
    assert render_toml(again) == text


def test_errors_name_file_line_and_key():
    with pytest.raises(ConfigError) as info:
        load(str(FIX / "broken_device.toml"))
    issues = info.value.issues
    assert [(i.line, i.key) for i in issues] == [(8, "virtual.web.device"),
                                                 (13, "virtual.web.server.s1.wieght")]
    assert "not a device of any router" in issues[0].message and "eth0" in issues[0].message
    assert issues[1].suggestion == "weight"
    assert all(i.file == str(FIX / "broken_device.toml") for i in issues)


MINIMAL = '[router.a]\naddress = "192.0.2.1"\n'


@pytest.mark.parametrize("extra,line,key,words", [
    ('[heartbeat]\nkeepalive = 1\ndeadtime = 1.5\n', 5, "heartbeat.deadtime", "at least twice"),
    ('[heartbeat]\nkeepalive = "fast"\n', 4, "heartbeat.keepalive", "number of seconds"),
    ('[heartbeat]\nkey_file = "relative.key"\n', 4, "heartbeat.key_file", "absolute"),
    ('[virtual.v]\naddress = "192.0.2.9"\nprotocol = "sctpp"\n', 5, "virtual.v.protocol", "tcp, udp, sctp"),
    ('[virtual.v]\naddress = "192.0.2.9"\nforwarding = "dr"\n', 5, "virtual.v.forwarding", "direct"),
    ('[virtual.v]\naddress = "192.0.2.9"\n[virtual.v.check]\nkind = "http"\nstatus = [700]\n', 7,
     "virtual.v.check.status", "100..599"),
    ('[virtual.v]\naddress = "192.0.2.9"\n[virtual.v.check]\ninterval = 1\ntimeout = 2\n', 7,
     "virtual.v.check.timeout", "longer than the check interval"),
    ('[virtual.v]\naddress = "192.0.2.9"\n[virtual.v.check]\nrise = 0\n', 6, "virtual.v.check.rise",
     "1..10000"),
    ('[virtual.v]\naddress = "192.0.2.9"\n[virtual.v.check]\nkind = "program"\n', 5,
     "virtual.v.check.command", "needs a command"),
    ('[virtual.v]\naddress = "192.0.2.9"\n[virtual.v.server.s]\naddress = "192.0.2.10"\n'
     'upper_threshold = 5\nlower_threshold = 6\n', 8, "virtual.v.server.s.lower_threshold", "exceed"),
    ('[virtual.v]\naddress = "192.0.2.9"\nfwmark = 0\n', 5, "virtual.v.fwmark", "1..4294967295"),
    ('[virtual.v]\naddress = "192.0.2.9"\nlabel = "eth0:1"\n', 5, "virtual.v.label", "needs its device"),
    ('[virtual.v]\naddress = "192.0.2.9"\ndevice = "eth0"\nlabel = "eth1:1"\n', 6, "virtual.v.label",
     "eth0:1"),
    ('[virtual.v]\naddress = "192.0.2.9"\nsorry_server = "2001:db8::1"\n', 5, "virtual.v.sorry_server",
     "IPv6"),
    ('[virtual.v]\naddress = "192.0.2.9"\nquorum = 2\nhysteresis = 2\n', 6, "virtual.v.hysteresis",
     "quorum-1"),
    ('[virtual.v]\naddress = "192.0.2.9"\nname = "x"\n', 5, "virtual.v.name", "table header"),
    ('metrics_address = "localhost:9"\n', 1, "metrics_address", "ADDRESS:PORT"),
    ('[router.b]\naddress = "192.0.2.1"\n', 4, "router.b.address", "already the address"),
    ('[router.b]\naddress = "192.0.2.2"\n', 3, "router.b.priority", "must differ"),
    ('servce = "lvs"\n', 1, "servce", "unknown key"),
    ('[virtual.v]\naddress = "192.0.2.9"\nscheduler_flags = ["sh-port"]\n', 5, "virtual.v.scheduler_flags",
     'set scheduler = "sh"'),
    ('[virtual.v]\naddress = "192.0.2.9"\nscheduler = "sh"\nscheduler_flags = ["mh-port"]\n', 6,
     "virtual.v.scheduler_flags", "a flag of the mh scheduler"),
    ('[virtual.v]\naddress = "192.0.2.9"\nscheduler = "mh"\nscheduler_flags = ["mh-prot"]\n', 6,
     "virtual.v.scheduler_flags", "not an IPVS scheduler flag"),
    ('[virtual.v]\naddress = "192.0.2.9"\nscheduler_flags = "sh-port"\n', 5, "virtual.v.scheduler_flags",
     "list of strings"),
    ('[virtual.v]\naddress = "192.0.2.9"\nops = true\n', 5, "virtual.v.ops", "UDP services only"),
    ('[virtual.v]\naddress = "192.0.2.9"\nprotocol = "udp"\npersistence_engine = "sip"\n', 6,
     "virtual.v.persistence_engine", "needs a persistent service"),
    ('[virtual.v]\naddress = "192.0.2.9"\npersistence = 60\npersistence_engine = "sip"\n', 6,
     "virtual.v.persistence_engine", "SIP over UDP"),
    ('[virtual.v]\naddress = "192.0.2.9"\npersistence = 60\npersistence_engine = "h323"\n', 6,
     "virtual.v.persistence_engine", "not an IPVS persistence engine"),
    ('[virtual.v]\naddress = "192.0.2.9"\nsorry_server_port = 8080\n', 5, "virtual.v.sorry_server_port",
     "is set without sorry_server"),
    ('[virtual.v]\naddress = "192.0.2.9"\n[virtual.v.server.s]\naddress = "10.0.0.1"\n[virtual.v.server.s.check]\n'
     'inherit = "no"\n', 8, "virtual.v.server.s.check.inherit", "'no' must be true (merge over the virtual service's "
     "check) or false (replace it)"),
])
def test_single_errors(extra, line, key, words):
    with pytest.raises(ConfigError) as info:
        # top-level keys go before the first table
        loads_toml(MINIMAL + extra if extra.startswith("[") else extra + MINIMAL, "t.toml")
    match = [i for i in info.value.issues if i.key == key]
    assert match, info.value.issues
    assert words in match[0].message
    assert match[0].line == line


def test_not_toml_is_one_error_with_line():
    with pytest.raises(ConfigError) as info:
        loads_toml(MINIMAL + "[virtual.v\n", "t.toml")
    (issue,) = info.value.issues
    assert issue.line == 3 and "not valid TOML" in issue.message


def test_defaults():
    cfg = loads_toml(MINIMAL + '[virtual.v]\naddress = "192.0.2.9"\n[virtual.v.server.s]\n'
                     'address = "192.0.2.10"\n', "t.toml").config
    hb = cfg.heartbeat
    assert (hb.port, hb.keepalive, hb.deadtime, hb.preempt, hb.garp_repeat) == (539, 0.2, 1.0, True, 5)
    assert hb.key_file == "/etc/lvsbus/heartbeat.key"
    vs = cfg.virtual_services[0]
    assert (vs.port, vs.protocol, vs.scheduler, vs.forwarding) == (80, Protocol.TCP, "wlc", Forwarding.NAT)
    assert vs.check == Check()
    assert (vs.servers[0].weight, vs.servers[0].port, vs.servers[0].active) == (1, None, True)
    assert cfg.routers[0].priority == 100


def test_format_detection():
    assert loads(MINIMAL, "no-extension").format == "toml"
    assert loads("primary = 10.0.0.1\nkeepalive = 2\ndeadtime = 6\n", "lvs").format == "lvscf"


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path / "missing.toml"))
    assert "cannot read" in info.value.issues[0].message
    bad = tmp_path / "latin1.cf"
    bad.write_bytes(b"primary = 10.0.0.1\n# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load(str(bad))
    assert info.value.issues[0].line == 2


def test_fwmark_keep_the_client_port_the_native_ways():
    from lvsbus.config import check_port, server_port

    # a server's port 0 (nanny checks the virtual's port), or the virtual's port 0 and check.port
    for text in ('[virtual.v]\naddress = "192.0.2.9"\nfwmark = 5\nport = 80\n'
                 '[virtual.v.server.s]\naddress = "192.0.2.10"\nport = 0\n',
                 '[virtual.v]\naddress = "192.0.2.9"\nfwmark = 5\nport = 0\n[virtual.v.check]\nport = 80\n'
                 '[virtual.v.server.s]\naddress = "192.0.2.10"\n'):
        vs = loads_toml(MINIMAL + text, "t.toml").config.virtual("v")
        assert (server_port(vs, vs.servers[0]), check_port(vs, vs.servers[0])) == (0, 80), text
    with pytest.raises(ConfigError) as info:
        loads_toml(MINIMAL + '[virtual.v]\naddress = "192.0.2.9"\nfwmark = 5\nport = 0\n'
                   '[virtual.v.server.s]\naddress = "192.0.2.10"\n', "t.toml")
    (issue,) = info.value.issues
    assert issue.key == "virtual.v.server.s.port" and "set check.port" in issue.message


def test_scheduler_flags_ops_and_sip_persistence_engine():
    text = MINIMAL + ('[virtual.v]\naddress = "192.0.2.9"\nport = 5060\nprotocol = "udp"\nscheduler = "mh"\n'
                      'scheduler_flags = ["mh-port", "mh-fallback"]\nops = true\npersistence = 60\n'
                      'persistence_engine = "sip"\n[virtual.v.check]\nkind = "udp"\n')
    cfg = loads_toml(text, "t.toml").config
    vs = cfg.virtual("v")
    assert (vs.scheduler_flags, vs.ops, vs.persistence_engine) == (("mh-port", "mh-fallback"), True, "sip")
    assert loads_toml(render_toml(cfg), "t.toml").config == cfg
    plain = loads_toml(MINIMAL + '[virtual.v]\naddress = "192.0.2.9"\n', "t.toml").config.virtual("v")
    assert (plain.scheduler_flags, plain.ops, plain.persistence_engine) == ((), False, None)


def test_keys_kept_but_not_acted_on_are_warned_in_toml_too():
    """debug_level and reservation_conflict_action are parsed and carried, but nothing acts on
    them: the native form says so as lvs.cf does, at their lines."""
    text = 'debug_level = "3"\nreservation_conflict_action = "preempt"\n' + MINIMAL
    warned = {w.key: w for w in loads_toml(text, "t.toml").warnings}
    assert warned["debug_level"].line == 1 and "LVSBUS_LOG_LEVEL" in warned["debug_level"].message
    assert warned["reservation_conflict_action"].line == 2 and "SCSI" in warned["reservation_conflict_action"].message
    quiet = loads_toml('debug_level = "NONE"\n' + MINIMAL, "t.toml").warnings
    assert not [w for w in quiet if w.key == "debug_level"]


def test_a_persistence_prefixlen_without_persistence_is_warned():
    loaded = loads_toml(MINIMAL + '[virtual.v]\naddress = "192.0.2.9"\npersistence_prefixlen = 24\n', "t.toml")
    assert (5, "virtual.v.persistence_prefixlen", "has no effect: the service is not persistent") in [
        (w.line, w.key, w.message) for w in loaded.warnings]


def test_a_server_port_other_than_the_services_is_warned_without_nat():
    text = MINIMAL + ('[virtual.v]\naddress = "192.0.2.9"\nport = 80\nforwarding = "direct"\n'
                      '[virtual.v.server.s]\naddress = "10.0.0.1"\nport = 8080\n')
    warned = [(w.line, w.key, w.message) for w in loads_toml(text, "t.toml").warnings]
    assert (9, "virtual.v.server.s.port", "8080 differs from the service port 80: only NAT can rewrite ports; "
            "direct/tunnel forward to the service port") in warned
    nat = loads_toml(text.replace('"direct"', '"nat"'), "t.toml").warnings
    assert "virtual.v.server.s.port" not in [w.key for w in nat]
