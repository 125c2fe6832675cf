"""keepalived's checkers in a keepalived.conf map onto nanny's check kinds with their options
(docs/keepalived.md); what lvsbus does not run is a warning with its line. The checks themselves
run against real servers in tests/process/test_nanny_keepalived_checks.py."""
from __future__ import annotations

import pytest

from lvsbus.config import ConfigError, loads
from lvsbus.config.model import CheckKind, HttpUrl, TrackKind

HEAD = """vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 150
    unicast_src_ip 10.0.0.1
    unicast_peer { 10.0.0.2 }
    virtual_ipaddress { 192.0.2.10/24 }
}
"""


def vs(checker: str, top: str = "") -> str:
    return HEAD + top + f"""virtual_server 192.0.2.10 80 {{
    lb_kind DR
    delay_loop 5
    real_server 10.1.0.11 80 {{
{checker}
    }}
}}
"""


def load(text: str):
    loaded = loads(text, "keepalived.conf", format="keepalived")
    return loaded.config.virtual_services[0].check, [str(i) for i in loaded.warnings]


def test_smtp_check():
    c, warns = load(vs("SMTP_CHECK {\n connect_timeout 3\n retry 1\n helo_name lvs1.example.org\n connect_ip 10.1.0.99\n"
                       " bindto 10.0.0.1\n}"))
    assert (c.kind, c.helo_name, c.port, c.connect_ip, c.bind, c.timeout, c.fall) == \
        (CheckKind.SMTP, "lvs1.example.org", 25, "10.1.0.99", "10.0.0.1", 3.0, 2)
    c, _ = load(vs("SMTP_CHECK {\n}"))
    assert c.helo_name == "smtpchecker.keepalived.org"  # keepalived's default
    # the older form: host blocks, one checker each; the first is run, the others said
    c, warns = load(vs("SMTP_CHECK {\n host {\n  connect_ip 10.1.0.5\n  connect_port 2525\n }\n host {\n"
                       "  connect_ip 10.1.0.6\n }\n}"))
    assert (c.connect_ip, c.port) == ("10.1.0.5", 2525)
    assert any(":19: host: lvsbus runs one check a real server" in w for w in warns), warns


def test_dns_ping_and_udp_checks():
    c, _ = load(vs("DNS_CHECK {\n type AAAA\n name www.example.org\n connect_port 53\n}"))
    assert (c.kind, c.dns_type, c.dns_name, c.port) == (CheckKind.DNS, "AAAA", "www.example.org", 53)
    c, _ = load(vs("DNS_CHECK {\n}"))
    assert (c.dns_type, c.dns_name) == ("SOA", "")
    c, _ = load(vs("PING_CHECK {\n connect_timeout 2\n}"))
    assert c.kind is CheckKind.PING and c.timeout == 2.0
    c, _ = load(vs("UDP_CHECK {\n payload 0a0b 0c\n}"))
    assert (c.kind, c.payload, c.reply_required, c.encoding) == (CheckKind.UDP, "\x0a\x0b\x0c", False, "latin-1")
    c, _ = load(vs("UDP_CHECK {\n payload 00\n require_reply\n}"))
    assert c.reply_required and c.expect == ""
    c, _ = load(vs("UDP_CHECK {\n require_reply beef\n}"))
    assert c.reply_required and c.regex and c.expect == "\\A\xbe\xef"
    with pytest.raises(ConfigError, match=r":15: payload: 'zz' is not a hex string"):
        load(vs("UDP_CHECK {\n payload zz\n}"))


def test_http_urls_digests_protocol_and_ssl():
    c, _ = load(vs("HTTP_GET {\n url {\n  path /health\n  digest 9B3A0C85A887A256D6939DA88AABD8CD\n  status_code 200-201\n"
                   " }\n http_protocol 1.1\n virtualhost www.example.org\n}"))
    assert (c.kind, c.path, c.digest, c.status, c.http_version, c.host, c.urls) == \
        (CheckKind.HTTP, "/health", "9b3a0c85a887a256d6939da88aabd8cd", (200, 201), "1.1", "www.example.org", ())
    c, _ = load(vs("HTTP_GET {\n url {\n  path /a\n  digest 9b3a0c85a887a256d6939da88aabd8cd\n }\n url {\n  path /b\n"
                   "  status_code 204\n  regex \"ok\"\n }\n}"))
    assert c.urls == (HttpUrl("/a", (200,), "9b3a0c85a887a256d6939da88aabd8cd"), HttpUrl("/b", (204,), None, "ok"))
    top = "SSL {\n ca /etc/ssl/ca.pem\n certificate /etc/ssl/me.pem\n key /etc/ssl/me.key\n}\n"
    c, _ = load(vs("SSL_GET {\n url {\n  path /\n }\n enable_sni\n virtualhost www.example.org\n}", top))
    assert (c.kind, c.tls_ca, c.tls_cert, c.tls_key, c.tls_sni, c.tls_verify) == \
        (CheckKind.HTTPS, "/etc/ssl/ca.pem", "/etc/ssl/me.pem", "/etc/ssl/me.key", True, False)
    c, _ = load(vs("SSL_GET {\n}"))
    assert c.tls_sni is False
    with pytest.raises(ConfigError, match=r"digest.*is not an MD5 digest"):
        load(vs("HTTP_GET {\n url {\n  path /\n  digest nothex\n }\n}"))
    with pytest.raises(ConfigError, match=r"password: lvsbus reads only unencrypted client keys"):
        load(vs("SSL_GET {\n}", "SSL {\n password secret\n certificate /a.pem\n}\n"))


def test_file_check_and_vrrp_track_file():
    top = "track_file state {\n file /run/lvs/state\n weight 0\n}\nvrrp_track_file prio {\n file /run/lvs/prio\n weight -10 reverse\n}\n"
    c, warns = load(vs("FILE_CHECK {\n track_file state\n}", top))
    assert (c.kind, c.file) == (CheckKind.FILE, "/run/lvs/state")
    assert c.file_weight == 0 and not [w for w in warns if "FILE_CHECK" in w]  # weight 0: nothing differs
    c, warns = load(vs("FILE_CHECK {\n track_file prio\n}", top))  # the block's weight, reversed
    assert (c.file, c.file_weight) == ("/run/lvs/prio", 10)
    # a weight that can take the server below 0: keepalived takes it out, lvsbus leaves it at 0 (said)
    assert [w for w in warns if "FILE_CHECK weight" in w and "keepalived takes it out" in w]
    c, warns = load(vs("FILE_CHECK {\n track_file prio\n weight 4\n}", top))  # its own weight first
    assert c.file_weight == 4
    assert [w.split(":")[1] for w in warns if "FILE_CHECK weight" in w] == ["24"]  # at its weight line
    with pytest.raises(ConfigError, match="track_file 'nope': no track_file block of that name"):
        load(vs("FILE_CHECK {\n track_file nope\n}", top))
    text = top + HEAD.replace("    virtual_ipaddress", "    track_file {\n        prio\n        state weight 5\n    }\n"
                                                           "    virtual_ipaddress")
    cfg = loads(text, "keepalived.conf", format="keepalived").config
    got = {t.name: (t.kind, t.path, t.weight, t.reverse, t.groups) for t in cfg.tracks}
    assert got == {"VI_1-file-prio": (TrackKind.FILE, "/run/lvs/prio", -10, True, ("VI_1",)),
                   "VI_1-file-state": (TrackKind.FILE, "/run/lvs/state", 5, False, ("VI_1",))}


def test_options_lvsbus_does_not_run_are_warned_with_their_line():
    _, warns = load(vs("TCP_CHECK {\n bind_port 5000\n warmup 3\n}"))
    assert any(":15: bind_port: not run by lvsbus" in w for w in warns), warns
    assert any(":16: warmup: not run by lvsbus" in w for w in warns), warns
    c, warns = load(vs("MISC_CHECK {\n misc_path /bin/true\n misc_dynamic\n user nobody\n}"))
    assert c.kind is CheckKind.PROGRAM and c.dynamic_weight and not any("misc_dynamic" in w for w in warns)
    assert any("user: lvsbus runs check programs as root" in w for w in warns)
    c, warns = load(vs("BFD_CHECK {\n}"))
    assert c.kind is CheckKind.TCP_CONNECT and any("BFD_CHECK: lvsbus has no such check" in w for w in warns)


def test_dynamic_weight_is_a_program_check_s_only():
    base = ('[router.r1]\naddress = "10.0.0.1"\n\n[virtual.web]\naddress = "10.0.0.80"\n\n[virtual.web.check]\n'
            'kind = "{kind}"\n{extra}dynamic_weight = true\n\n[virtual.web.server.s1]\naddress = "10.0.0.11"\n')
    ok = loads(base.format(kind="program", extra='command = "exit 2"\n'), "lvs.toml").config
    assert ok.virtual_services[0].check.dynamic_weight
    with pytest.raises(ConfigError, match=r"lvs.toml:\d+: virtual.web.check.dynamic_weight: .*only with kind"):
        loads(base.format(kind="tcp_connect", extra=""), "lvs.toml")


def _vss(n: int, extra: str = "", checker: str = "TCP_CHECK {\n}") -> str:
    body = "".join(f"virtual_server 192.0.2.10 {80 + i} {{\n    lb_kind DR\n{extra}    real_server 10.1.0.11 80 {{\n"
                   f"{checker}\n    }}\n}}\n" for i in range(n))
    return HEAD + body


def test_what_lvsbus_does_differently_is_a_warning_where_the_keyword_is():
    # no alpha: one warning for the file, at the first such virtual_server, counting the others
    loaded = loads(_vss(3), "keepalived.conf", format="keepalived")
    alpha = [str(w) for w in loaded.warnings if "without alpha" in str(w)]
    assert alpha == [f"keepalived.conf:{HEAD.count(chr(10)) + 1}: virtual_server without alpha (and 2 more): keepalived"
                     " puts every real server in the table at start; lvsbus adds one after its first passed check (as"
                     " keepalived with alpha), one delay_loop at most"]
    loaded = loads(_vss(2, "    alpha\n"), "keepalived.conf", format="keepalived")
    assert not [w for w in loaded.warnings if "alpha" in str(w)]
    # a quorum beside weights a check sets: lvsbus counts the configured ones
    dyn = "MISC_CHECK {\n misc_path /bin/true\n misc_dynamic\n}"
    loaded = loads(_vss(1, "    alpha\n    quorum 2\n", dyn), "keepalived.conf", format="keepalived")
    assert [str(w).split(":")[1] for w in loaded.warnings if "counts the real servers' configured weights" in str(w)] \
        == [str(HEAD.count("\n") + 4)]
    loaded = loads(_vss(1, "    alpha\n    quorum 2\n"), "keepalived.conf", format="keepalived")  # static weights
    assert not [w for w in loaded.warnings if "quorum" in str(w)]
    # notify_backup runs on leaving MASTER
    text = HEAD.replace("    virtual_ipaddress", "    notify_backup /usr/local/bin/backup\n    notify_master /bin/m\n"
                                                "    virtual_ipaddress")
    loaded = loads(text, "keepalived.conf", format="keepalived")
    assert [str(w) for w in loaded.warnings if "notify" in str(w)] == [
        "keepalived.conf:8: notify_backup: lvsbus runs it when this router leaves MASTER for the group (its "
        "inactive_cmd), not at start in BACKUP as keepalived does"]
    assert loaded.config.groups[0].inactive_cmd == "/usr/local/bin/backup"
