"""lvs.cf ``virtual`` blocks (lvscf._virtual): what each keyword gives the model, where an error
about each model path is reported (the lvs.cf line and keyword), and the errors and warnings of
the block's rarer cases. Written before _virtual was split, to pass before and after."""
from __future__ import annotations

import pytest

from lvsbus.config import ConfigError, loads_lvscf, lvscf
from tests.helpers.lvscf import BASE

TEXT = """primary = 10.0.0.1
keepalive = 3
deadtime = 9
network = direct
virtual web {
 address = 10.0.0.5 eth0:1
 vip_nmask = 255.255.255.0
 active = 1
 port = http
 protocol = tcp
 persistent = 300
 pmask = 255.255.255.255
 quiesce_server = 1
 scheduler = wlc
 sorry_server = 10.0.0.9:8080
 timeout = 9
 reentry = 30
 use_regex = 1
 send = "GET / HTTP/1.0\\r\\n\\r\\n"
 expect = "HTTP/1.[01] 200"
 server a {
  address = 10.0.0.11
  active = 1
  weight = 2
  port = 8080
 }
 server b {
  address = 10.0.0.12
 }
}
virtual dns {
 address = 10.0.0.6 eth0
 fwmark = 7
 protocol = udp
 send = "\\xbe\\xef"
 expect = "\\x81"
 server d {
  address = 10.0.0.21
 }
}
virtual ftp {
 address = 10.0.0.7 eth0
 port = 21
 send = "QUIT"
 send_program = "/bin/check %h"
 expect = "OK"
 server f {
  address = 10.0.0.31
 }
}
"""

VIRTUALS = {'dns': {'address': '10.0.0.6',
         'check': {'encoding': 'latin-1',
                   'expect': '\x81',
                   'fall': 4,
                   'interval': 3.0,
                   'kind': 'udp',
                   'payload': '¾ï',
                   'regex': False,
                   'rise': 60,
                   'timeout': 3.0},
         'device': 'eth0',
         'forwarding': 'direct',
         'fwmark': 7,
         'protocol': 'udp',
         'server': {'d': {'address': '10.0.0.21'}}},
 'ftp': {'address': '10.0.0.7',
         'check': {'command': '/bin/check %h',
                   'expect': 'OK',
                   'fall': 4,
                   'interval': 3.0,
                   'kind': 'program',
                   'regex': False,
                   'rise': 60,
                   'timeout': 3.0},
         'device': 'eth0',
         'forwarding': 'direct',
         'port': 21,
         'server': {'f': {'address': '10.0.0.31'}}},
 'web': {'active': True,
         'address': '10.0.0.5',
         'check': {'expect': 'HTTP/1.[01] 200',
                   'fall': 3,
                   'interval': 3.0,
                   'kind': 'tcp_send_expect',
                   'regex': True,
                   'rise': 10,
                   'send': 'GET / HTTP/1.0\r\n\r\n',
                   'timeout': 3.0},
         'device': 'eth0',
         'forwarding': 'direct',
         'label': 'eth0:1',
         'persistence': 300,
         'persistence_prefixlen': 32,
         'port': 80,
         'protocol': 'tcp',
         'quiesce': True,
         'scheduler': 'wlc',
         'server': {'a': {'active': True, 'address': '10.0.0.11', 'port': 8080, 'weight': 2},
                    'b': {'address': '10.0.0.12'}},
         'sorry_server': '10.0.0.9',
         'sorry_server_port': 8080,
         'vip_prefixlen': 24}}
LOCATED = {'virtual.web': (5, 'virtual.web'),
 'virtual.web.forwarding': (4, 'network'),
 'virtual.web.address': (6, 'virtual.web.address'),
 'virtual.web.device': (6, 'virtual.web.address'),
 'virtual.web.label': (6, 'virtual.web.address'),
 'virtual.web.vip_prefixlen': (7, 'virtual.web.vip_nmask'),
 'virtual.web.active': (8, 'virtual.web.active'),
 'virtual.web.port': (9, 'virtual.web.port'),
 'virtual.web.persistence': (11, 'virtual.web.persistent'),
 'virtual.web.persistence_prefixlen': (12, 'virtual.web.pmask'),
 'virtual.web.quiesce': (13, 'virtual.web.quiesce_server'),
 'virtual.web.protocol': (10, 'virtual.web.protocol'),
 'virtual.web.scheduler': (14, 'virtual.web.scheduler'),
 'virtual.web.sorry_server': (15, 'virtual.web.sorry_server'),
 'virtual.web.sorry_server_port': (15, 'virtual.web.sorry_server'),
 'virtual.web.check.interval': (2, 'keepalive'),
 'virtual.web.check.fall': (16, 'virtual.web.timeout'),
 'virtual.web.check.timeout': (16, 'virtual.web.timeout'),
 'virtual.web.check.rise': (17, 'virtual.web.reentry'),
 'virtual.web.check.regex': (18, 'virtual.web.use_regex'),
 'virtual.web.check.send': (19, 'virtual.web.send'),
 'virtual.web.check.payload': (19, 'virtual.web.send'),
 'virtual.web.check.expect': (20, 'virtual.web.expect'),
 'virtual.web.check.kind': (20, 'virtual.web.expect'),
 'virtual.web.check': (5, 'virtual.web'),
 'virtual.web.server.a': (21, 'virtual.web.server.a'),
 'virtual.web.server.a.address': (22, 'virtual.web.server.a.address'),
 'virtual.web.server.a.active': (23, 'virtual.web.server.a.active'),
 'virtual.web.server.a.weight': (24, 'virtual.web.server.a.weight'),
 'virtual.web.server.a.port': (25, 'virtual.web.server.a.port'),
 'virtual.web.server.b': (27, 'virtual.web.server.b'),
 'virtual.web.server.b.address': (28, 'virtual.web.server.b.address'),
 'virtual.dns': (31, 'virtual.dns'),
 'virtual.dns.forwarding': (4, 'network'),
 'virtual.dns.address': (32, 'virtual.dns.address'),
 'virtual.dns.device': (32, 'virtual.dns.address'),
 'virtual.dns.fwmark': (33, 'virtual.dns.fwmark'),
 'virtual.dns.protocol': (34, 'virtual.dns.protocol'),
 'virtual.dns.check.interval': (2, 'keepalive'),
 'virtual.dns.check.encoding': (35, 'virtual.dns.send'),
 'virtual.dns.check.send': (35, 'virtual.dns.send'),
 'virtual.dns.check.payload': (35, 'virtual.dns.send'),
 'virtual.dns.check.expect': (36, 'virtual.dns.expect'),
 'virtual.dns.check.kind': (36, 'virtual.dns.expect'),
 'virtual.dns.check': (31, 'virtual.dns'),
 'virtual.dns.server.d': (37, 'virtual.dns.server.d'),
 'virtual.dns.server.d.address': (38, 'virtual.dns.server.d.address'),
 'virtual.ftp': (41, 'virtual.ftp'),
 'virtual.ftp.forwarding': (4, 'network'),
 'virtual.ftp.address': (42, 'virtual.ftp.address'),
 'virtual.ftp.device': (42, 'virtual.ftp.address'),
 'virtual.ftp.port': (43, 'virtual.ftp.port'),
 'virtual.ftp.check.interval': (2, 'keepalive'),
 'virtual.ftp.check.command': (45, 'virtual.ftp.send_program'),
 'virtual.ftp.check.kind': (45, 'virtual.ftp.send_program'),
 'virtual.ftp.check.send': (44, 'virtual.ftp.send'),
 'virtual.ftp.check.payload': (44, 'virtual.ftp.send'),
 'virtual.ftp.check.expect': (46, 'virtual.ftp.expect'),
 'virtual.ftp.check': (41, 'virtual.ftp'),
 'virtual.ftp.server.f': (47, 'virtual.ftp.server.f'),
 'virtual.ftp.server.f.address': (48, 'virtual.ftp.server.f.address')}


def _virtuals_and_where() -> tuple[dict, dict, list]:
    """The virtual blocks of TEXT as native data, and the location of each model path they set."""
    r = lvscf._Reader("t.cf")
    root = r.parse(TEXT)
    c = lvscf._Conv(r)
    g = r.entries(root, "")
    hb = lvscf._heartbeat(r, c, g)
    before = dict(r.loc)
    virtuals, _ = lvscf._blocks(r, c, root, g, hb["keepalive"], lvscf._forwarding(r, g))
    return virtuals, {k: v for k, v in r.loc.items() if k not in before}, r.issues


def test_every_virtual_keyword_and_where_its_model_path_is_reported():
    virtuals, located, issues = _virtuals_and_where()
    assert virtuals == VIRTUALS
    assert located == LOCATED
    assert list(located) == list(LOCATED)  # first come, first kept: the order is part of it
    assert [(i.line, i.key, i.message) for i in issues] == [
        (44, "virtual.ftp.send", "ignored: send_program is given, and its output is matched against expect")]
    loaded = loads_lvscf(TEXT, "t.cf")  # and the whole file loads, the warning kept
    assert (44, "virtual.ftp.send") in [(w.line, w.key) for w in loaded.warnings]


S = " server s {\n address = 10.0.0.6\n }\n"


@pytest.mark.parametrize("body,issues", [
    ("virtual v {\n port = 80\n" + S + "}\n",
     [(2, "virtual.v", "has no 'address = IP DEVICE'", None),
      (2, "virtual.v.address", "0.0.0.0 cannot be used here: give a unicast address", None)]),
    ("virtual v {\n address = 10.0.0.5 eth0\n protocol = ucp\n" + S + "}\n",
     [(4, "virtual.v.protocol", "'ucp' must be tcp or udp", "udp")]),
    ("virtual v {\n address = 10.0.0.5 eth0\n sorry_server = 10.0.0.9:80x\n" + S + "}\n",
     [(4, "virtual.v.sorry_server", "'80x' must be a port number 1..65535 or a service name (dns, domain, ftp, "
       "http, https, imap, imaps, ldap, ldaps, mysql, ntp, pop3, pop3s, postgresql, smtp, smtps, snmp, ssh, "
       "submission, telnet, www)", None)]),
    ("virtual v {\n address = 10.0.0.5 eth0\n" + S + S + "}\n",
     [(7, "virtual.v.server.s", "real server 's' is defined twice in 'virtual v'", None)]),
    ("virtual v {\n address = 10.0.0.5 eth0\n server s {\n weight = 2\n }\n}\n",
     [(4, "virtual.v.server.s", "has no 'address = IP'", None),
      (4, "virtual.v.server.s.address", "0.0.0.0 cannot be used here: give a unicast address", None)]),
])
def test_a_virtual_blocks_rarer_errors(body, issues):
    with pytest.raises(ConfigError) as exc:
        loads_lvscf(BASE + body, "t.cf")
    assert [(i.line, i.key, i.message, i.suggestion) for i in exc.value.issues] == issues
    assert all(i.file == "t.cf" for i in exc.value.issues)


@pytest.mark.parametrize("value,server,port", [
    ("10.0.0.9:8080", "10.0.0.9", 8080), ("10.0.0.9 https", "10.0.0.9", 443), ("10.0.0.9", "10.0.0.9", None)])
def test_a_sorry_server_with_or_without_its_port(value, server, port):
    vs = loads_lvscf(BASE + f"virtual v {{\n address = 10.0.0.5 eth0\n sorry_server = {value}\n" + S + "}\n",
                     "t.cf").config.virtual_services[0]
    assert (vs.sorry_server, vs.sorry_server_port) == (server, port)
