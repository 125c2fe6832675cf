"""lvs.cf (Piranha) fixtures parsed into the model, field by field; broken files give the right
error on the right line."""
from __future__ import annotations

from pathlib import Path

import pytest

from lvsbus.config import (
    Check,
    CheckKind,
    ConfigError,
    Forwarding,
    NatRouter,
    Protocol,
    RealServer,
    Router,
    ServiceType,
    Severity,
    load,
    loads_lvscf,
    loads_toml,
    render_toml,
)
from tests.helpers.lvscf import BASE, DNS_QUERY, dns_cf, escaped

FIX = Path(__file__).parents[1] / "fixtures" / "lvscf"


def _load(name: str):
    return load(str(FIX / name))


def test_direct_routing():
    loaded = _load("direct_routing.cf")
    cfg = loaded.config
    assert loaded.format == "lvscf"
    assert loaded.warnings == ()
    assert cfg.service is ServiceType.LVS
    assert cfg.serial_no == 42
    assert cfg.routers == (
        Router("primary", "10.0.0.1", private_address="192.168.100.1", priority=200),
        Router("backup", "10.0.0.2", private_address="192.168.100.2", priority=100),
    )
    hb = cfg.heartbeat
    assert (hb.enabled, hb.port, hb.keepalive, hb.deadtime, hb.monitor_links) == (True, 539, 6.0, 18.0, True)
    assert cfg.sync_daemon.enabled and cfg.sync_daemon.interface == "eth1" and cfg.sync_daemon.sync_id == 7
    assert cfg.debug_level == "NONE"
    assert cfg.nat_router is None
    (vs,) = cfg.virtual_services
    assert vs.name == "web"
    assert (vs.address, vs.device, vs.label, vs.vip_prefixlen) == ("10.0.0.100", "eth0", "eth0:1", 24)
    assert (vs.port, vs.protocol, vs.fwmark, vs.scheduler) == (80, Protocol.TCP, None, "wlc")
    assert vs.forwarding is Forwarding.DIRECT
    assert vs.persistence == 0 and vs.quiesce is False and vs.sorry_server is None
    # keepalive 6: interval 6, fall = ceil(6/6) = 1, rise = ceil(15/6) = 3, probe timeout min(6, 6)
    assert vs.check == Check(kind=CheckKind.TCP_SEND_EXPECT, interval=6.0, timeout=6.0, rise=3,
                             fall=1, send="GET / HTTP/1.0\r\n\r\n", expect="HTTP", regex=False)
    assert vs.servers == (RealServer("web1", "10.0.0.11", weight=1),
                          RealServer("web2", "10.0.0.12", weight=2))


def test_nat_with_nat_router():
    cfg = _load("nat_router.cf").config
    assert cfg.nat_router == NatRouter("10.10.0.254", device="eth1", label="eth1:1", prefixlen=24)
    assert cfg.hard_shutdown is False
    assert (cfg.ipvs_timeouts.tcp, cfg.ipvs_timeouts.tcpfin, cfg.ipvs_timeouts.udp) == (900, 120, 300)
    assert cfg.notify.active_cmd == "/usr/local/sbin/lvs-became-active"
    assert cfg.notify.inactive_cmd == "/usr/local/sbin/lvs-became-inactive"
    http, https, dns = cfg.virtual_services
    assert all(v.forwarding is Forwarding.NAT for v in (http, https, dns))
    assert http.port == 80  # "port = http" by service name
    assert http.vip_prefixlen == 32 and http.scheduler == "wrr"
    # Piranha defaults timeout 10, reentry 180 with keepalive 2: fall 5, rise 90
    assert (http.check.interval, http.check.timeout, http.check.fall, http.check.rise) == (2.0, 2.0, 5, 90)
    assert [(s.name, s.address, s.port, s.weight, s.active) for s in http.servers] == [
        ("app1", "10.10.0.11", 8080, 100, True),
        ("app2", "10.10.0.12", 8080, 50, True),
        ("app3", "10.10.0.13", 8080, 1, False),
    ]
    assert https.port == 443 and https.scheduler == "lc" and https.check.kind is CheckKind.TCP_CONNECT
    assert [s.weight for s in https.servers] == [1, 1] and https.servers[0].port is None
    assert dns.protocol is Protocol.UDP and dns.label == "eth0:2"
    assert dns.check.kind is CheckKind.UDP and dns.check.payload == ""
    assert (dns.check.fall, dns.check.rise) == (2, 4)


def test_firewall_marks_and_persistence():
    cfg = _load("fwmark.cf").config
    shop, mail = cfg.virtual_services
    assert shop.fwmark == 80 and shop.port == 80
    assert shop.persistence == 600 and shop.persistence_prefixlen == 24
    assert shop.forwarding is Forwarding.DIRECT
    assert shop.check.send == "GET /health HTTP/1.0\r\n\r\n" and shop.check.expect == "200 OK"
    # keepalive 6: fall ceil(12/6) = 2, rise ceil(60/6) = 10
    assert (shop.check.fall, shop.check.rise) == (2, 10)
    assert mail.fwmark == 25 and mail.scheduler == "rr"
    assert mail.check.kind is CheckKind.TCP_SEND_EXPECT and mail.check.send == ""
    assert mail.check.expect == "^220 " and mail.check.regex is True


def test_persistent_all_ports_with_send_program():
    cfg = _load("persistent.cf").config
    (ftp,) = cfg.virtual_services
    assert ftp.port == 0 and ftp.persistence == 3600 and ftp.persistence_prefixlen == 32
    assert ftp.forwarding is Forwarding.TUNNEL and ftp.scheduler == "sh"
    assert ftp.check.kind is CheckKind.PROGRAM
    assert ftp.check.command == "/usr/local/bin/check_ftp %h %p"
    assert ftp.check.expect == "OK" and ftp.check.exit_code is None
    assert (ftp.check.interval, ftp.check.timeout, ftp.check.fall, ftp.check.rise) == (3.0, 3.0, 3, 10)
    assert [s.port for s in ftp.servers] == [21, 21]
    assert cfg.routers[0].private_address == "10.0.0.1"


def test_sorry_server_and_obsolete_keywords():
    loaded = _load("sorry_server.cf")
    cfg = loaded.config
    assert [r.name for r in cfg.routers] == ["primary"]  # backup_active = 0
    (www,) = cfg.virtual_services
    assert www.sorry_server == "203.0.113.99" and www.sorry_server_port is None
    assert www.quiesce is True
    assert www.check.regex is True and www.check.expect == "HTTP/1.[01] 200"
    assert cfg.reservation_conflict_action == "preempt"
    assert cfg.debug_level == "1"
    warned = {(w.line, w.key) for w in loaded.warnings}
    assert warned == {
        (5, "rsh_command"), (7, "backup"), (12, "ipvsadm"), (13, "reservation_conflict_action"),
        (14, "debug_level"), (23, "virtual.www.load_monitor"), (24, "virtual.www.client_monitor"),
    }
    assert all(w.severity is Severity.WARNING for w in loaded.warnings)
    by_key = {w.key: w.message for w in loaded.warnings}
    assert "netlink" in by_key["ipvsadm"]
    assert "obsolete" in by_key["virtual.www.load_monitor"]
    assert "rup" in by_key["virtual.www.load_monitor"]
    assert "LVSBUS_LOG_LEVEL" in by_key["debug_level"]  # parsed, not acted on: said so


def test_debug_level_none_is_piranhas_default_and_not_warned():
    loaded = _load("direct_routing.cf")  # debug_level = NONE
    assert loaded.config.debug_level == "NONE" and not loaded.warnings


def test_failover_services():
    cfg = _load("fos.cf").config
    assert cfg.service is ServiceType.FOS
    assert cfg.heartbeat.port == 1050
    assert cfg.virtual_services == ()
    web, ftp = cfg.failover_services
    assert (web.name, web.address, web.device, web.label, web.vip_prefixlen) == (
        "web1", "192.0.2.10", "eth0", "eth0:1", 24)
    assert (web.port, web.timeout, web.reentry, web.active) == (80, 10.0, 20.0, True)
    assert web.send == "GET / HTTP/1.0\r\n\r\n" and web.expect == "HTTP"
    assert web.start_cmd == "/etc/rc.d/init.d/httpd start"
    assert web.stop_cmd == "/etc/rc.d/init.d/httpd stop"
    assert ftp.name == "ftp" and ftp.active is False and ftp.reentry == 180.0  # '{' on its own line


@pytest.mark.parametrize("name", ["direct_routing.cf", "nat_router.cf", "fwmark.cf", "persistent.cf",
                                  "sorry_server.cf", "fos.cf"])
def test_convert_then_load_gives_the_same_model(name):
    cfg = _load(name).config
    text = render_toml(cfg)
    assert loads_toml(text, "converted.toml").config == cfg


BROKEN = [
    # file, line, key, words in the message, suggestion
    ("broken_unknown_keyword.cf", 9, "virtual.web.server.web1.wieght", "unknown keyword", "weight"),
    ("broken_port.cf", 4, "virtual.web.port", "1..65535", None),
    ("broken_deadtime.cf", 5, "deadtime", "at least twice keepalive", None),
    ("broken_duplicate.cf", 9, "virtual.web-again", "duplicate virtual service", None),
    ("broken_address.cf", 3, "virtual.web.address", "not an IP address", None),
    ("broken_unclosed.cf", 2, "virtual.web", "never closed", None),
    ("broken_scheduler.cf", 4, "virtual.web.scheduler", "not an IPVS scheduler", "wlc"),
    ("broken_sorry.cf", 4, "virtual.web.sorry_server", "not an IP address", None),
]


@pytest.mark.parametrize("name,line,key,words,suggestion", BROKEN)
def test_broken_file(name, line, key, words, suggestion):
    with pytest.raises(ConfigError) as info:
        _load(name)
    (issue,) = info.value.issues
    assert issue.file == str(FIX / name)
    assert (issue.line, issue.key) == (line, key)
    assert words in issue.message
    assert issue.suggestion == suggestion
    assert f"{FIX / name}:{line}: {key}: " in str(issue)


def test_every_error_is_listed():
    with pytest.raises(ConfigError) as info:
        _load("broken_many.cf")
    got = [(i.line, i.key) for i in info.value.issues]
    assert got == [
        (3, "keepalive"),
        (4, "netwrok"),
        (8, "virtual.web.weight"),
        (11, "virtual.web.server.a.weight"),
        (14, "virtual.web.server.b.address"),
        (17, "virtaul"),
    ]
    issues = {i.key: i for i in info.value.issues}
    assert issues["netwrok"].suggestion == "network"
    assert "belongs in a server block" in issues["virtual.web.weight"].message
    assert issues["virtaul"].suggestion == "virtual"
    assert "0..65535" in issues["virtual.web.server.a.weight"].message


def _err(text: str) -> list:
    with pytest.raises(ConfigError) as info:
        loads_lvscf(text, "t.cf")
    return list(info.value.issues)




@pytest.mark.parametrize("body,line,key,words", [
    ("virtual v {\n address = 10.0.0.5 eth0\n protocol = sctp\n server s {\n address = 10.0.0.6\n }\n}\n",
     4, "virtual.v.protocol", "TOML"),
    ("virtual v {\n address = 10.0.0.5 eth0\n port = 0\n server s {\n address = 10.0.0.6\n }\n}\n",
     4, "virtual.v.port", "persistent or fwmark"),
    ("virtual v {\n address = 10.0.0.5 eth0\n active = 2\n}\n", 4, "virtual.v.active", "0 or 1"),
    ("virtual v {\n address = 10.0.0.5 eth0\n vip_nmask = 255.0.255.0\n}\n", 4, "virtual.v.vip_nmask",
     "contiguous"),
    ("virtual v {\n address = 10.0.0.5 eth0\n timeout = 0\n}\n", 4, "virtual.v.timeout", "more than 0"),
    ("virtual v {\n address = 10.0.0.5 eth0\n port = 80\n port = 81\n}\n", 5, "virtual.v.port",
     "given twice (first at line 4)"),
    ("virtual v {\n address = 10.0.0.5 eth0\n use_regex = 1\n expect = \"(unclosed\"\n server s {\n"
     " address = 10.0.0.6\n }\n}\n", 5, "virtual.v.expect", "regular expression"),
    ("virtual v {\n address = 10.0.0.5 eth0:1\n server s {\n address = 2001:db8::6\n }\n}\n", 5,
     "virtual.v.server.s.address", "IPv6"),
    ("syncd_id = 300\n", 2, "syncd_id", "0..255"),
    ("heartbeat_port = 0\n", 2, "heartbeat_port", "1..65535"),
    ("network = nta\n", 2, "network", "direct, nat or tunnel"),
    ("}\n", 2, "}", "without an open block"),
    ("nat_router = 10.0.0.254\n", 2, "nat_router", "needs a device"),
    ("backup_active = 1\n", 2, "backup_active", "backup = IP"),
])
def test_single_errors(body, line, key, words):
    issues = _err(BASE + body)
    match = [i for i in issues if i.key == key]
    assert match, issues
    assert match[0].line == line
    assert words in match[0].message


def test_missing_primary():
    issues = _err("keepalive = 2\ndeadtime = 6\n")
    assert [(i.line, i.key) for i in issues] == [(None, "primary")]


def test_inline_comments_quotes_and_hex():
    cfg = loads_lvscf(BASE + "serial_no = 0x10   # hex like strtol\nkeepalive = 1.5\ndeadtime = 4.5\n"
                      "virtual v {\n address = 10.0.0.5 eth0\n send = 'PING\\r\\n'\n expect = \"+PONG # not a comment\"\n"
                      " server s {\n address = 10.0.0.6\n }\n}\n", "t.cf").config
    assert cfg.serial_no == 16
    assert cfg.heartbeat.keepalive == 1.5
    chk = cfg.virtual_services[0].check
    assert chk.send == "PING\r\n" and chk.expect == "+PONG # not a comment"
    assert (chk.interval, chk.fall, chk.rise) == (1.5, 7, 120)


def test_backup_active_without_backup_router_warns():
    loaded = loads_lvscf(BASE + "backup = 10.0.0.2\n", "t.cf")
    assert [r.name for r in loaded.config.routers] == ["primary"]
    # Piranha's default deadtime 5 with keepalive 2 is under 3x: advised, not refused
    assert [(w.line, w.key) for w in loaded.warnings] == [(2, "backup"), (None, "heartbeat.deadtime")]
    assert loaded.config.heartbeat.deadtime == 5.0


def test_crlf_line_endings_read_like_lf():
    text = (FIX / "direct_routing.cf").read_text()
    assert loads_lvscf(text.replace("\n", "\r\n"), "crlf.cf").config == loads_lvscf(text, "lf.cf").config


# -- send/expect escapes: binary protocols in lvs.cf -------------------------------------------

def test_hex_and_octal_escapes_write_a_dns_query_byte_for_byte():
    cfg = loads_lvscf(dns_cf(escaped(DNS_QUERY), "\\xbe\\xef\\x81\\x80"), "dns.cf").config
    chk = cfg.virtual_services[0].check
    assert chk.kind is CheckKind.UDP and chk.encoding == "latin-1"
    assert chk.payload.encode(chk.encoding) == DNS_QUERY
    assert chk.expect.encode(chk.encoding) == b"\xbe\xef\x81\x80"
    # the native form keeps the bytes exactly
    assert loads_toml(render_toml(cfg), "t.toml").config == cfg


def test_escapes_that_stay_utf8_keep_utf8_text_and_a_literal_non_ascii_character_its_utf8_bytes():
    chk = loads_lvscf(dns_cf("caf\\303\\251 \\x41\\0", "é"), "t.cf").config.virtual_services[0].check
    assert chk.encoding == "utf-8" and chk.payload == "café A\0" and chk.expect == "é"
    # one value not UTF-8: both are bytes, and the literal é is still its two UTF-8 bytes
    chk = loads_lvscf(dns_cf("\\xff", "é"), "t.cf").config.virtual_services[0].check
    assert chk.encoding == "latin-1" and chk.expect.encode("latin-1") == "é".encode()


@pytest.mark.parametrize("value,why", [
    ("GET \\q", "unknown escape '\\q'"),
    ("\\xZZ", "unknown escape '\\x without two hex digits'"),
    ("\\400", "more than one byte"),
    ("abc\\", "lone backslash"),
])
def test_an_unknown_escape_is_refused_with_its_line(value, why):
    text = dns_cf(value) if not value.endswith("\\") else dns_cf("x").replace('send = "x"', f"send = {value}")
    with pytest.raises(ConfigError) as exc:
        loads_lvscf(text, "t.cf")
    (issue,) = exc.value.issues
    assert issue.key == "virtual.dns.send" and issue.line == text.splitlines().index(
        next(ln for ln in text.splitlines() if ln.startswith(" send"))) + 1
    assert why in issue.message, issue.message


def test_a_regex_expect_keeps_the_regular_expressions_escapes():
    chk = loads_lvscf(dns_cf("PING\\r\\n", "^\\+PONG\\s\\d+\\r$", " use_regex = 1\n"), "t.cf").config.virtual_services[0].check
    assert chk.regex and chk.expect == "^\\+PONG\\s\\d+\r$" and chk.payload == "PING\r\n"


# -- fwmark under NAT: keep the client's port ---------------------------------------------------

#: one mark groups 80 and 443; nanny checks 80, each connection keeps its own port
FWMARK_NAT = (BASE + "network = nat\nnat_router = 10.0.1.254 eth1:1\n"
              "virtual web {\n address = 10.0.0.5 eth0:1\n fwmark = 80\n port = 80\n"
              " server a {\n address = 10.0.1.6\n port = 0\n }\n"
              " server b {\n address = 10.0.1.7\n }\n}\n")


def test_fwmark_server_port_0_keeps_the_client_port_and_nanny_checks_the_virtual_port():
    from lvsbus.config import check_port, server_port
    from lvsbus_services.lvsd.core import Layout

    loaded = loads_lvscf(FWMARK_NAT, "t.cf")
    assert [w.key for w in loaded.warnings] == ["heartbeat.deadtime"]  # Piranha's 2 s / 5 s: no port warning
    vs = loaded.config.virtual("web")
    a, b = vs.servers
    assert (a.port, server_port(vs, a), check_port(vs, a)) == (0, 0, 80)
    # a server without a port keeps Piranha's meaning: the virtual's port, for IPVS and nanny
    assert (b.port, server_port(vs, b), check_port(vs, b)) == (None, 80, 80)
    # the desired table: the real server's port 0 (IPVS keeps the client's destination port)
    assert [d.key for _id, _w, d, _z in Layout(vs).servers] == ["10.0.1.6:0", "10.0.1.7:80"]
    assert loads_toml(render_toml(loaded.config), "t.toml").config == loaded.config


def test_fwmark_without_a_port_to_check_names_lvscf_keys_only():
    text = FWMARK_NAT.replace(" port = 80\n", " port = 0\n")
    issues = _err(text)
    assert [(i.key, i.line) for i in issues] == [("virtual.web.server.a.port", 10),
                                                 ("virtual.web.server.b.port", 12)]
    for issue in issues:
        assert "virtual's 'port'" in issue.message and "'port = 0' in a server block" in issue.message
        assert "check.port" not in issue.message


def test_server_port_0_only_for_fwmark_services():
    issues = _err(FWMARK_NAT.replace(" fwmark = 80\n", ""))
    assert [(i.key, i.line) for i in issues] == [("virtual.web.server.a.port", 9)]
    assert "only for a fwmark service" in issues[0].message


def test_native_only_keys_in_lvscf_say_how_to_get_them():
    """scheduler_flags, ops, persistence_engine (and the other native-only keys) have no lvs.cf
    keyword: the error says to convert the file, not "did you mean 'scheduler'/'persistent'"."""
    text = (BASE + "network = direct\nvirtual w {\n address = 10.0.0.5 eth0\n scheduler = sh\n"
            " scheduler_flags = sh-port\n ops = 1\n persistence_engine = sip\n"
            " server s {\n address = 10.0.0.6\n }\n}\n")
    issues = _err(text)
    assert [(i.key, i.line) for i in issues] == [("virtual.w.scheduler_flags", 6), ("virtual.w.ops", 7),
                                                 ("virtual.w.persistence_engine", 8)]
    for i in issues:
        assert "lvsbus config convert" in i.message and i.suggestion is None, i
