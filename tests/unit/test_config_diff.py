"""Reload diffs: added, removed and changed virtual services and real servers; unchanged ones keep
their identity."""
from __future__ import annotations

import dataclasses
import json

from lvsbus.config import Check, CheckKind, ConfigDiff, diff, loads_toml

BASE = """
[router.a]
address = "192.0.2.1"
priority = 200
[router.b]
address = "192.0.2.2"
priority = 100

[virtual.web]
address = "192.0.2.80"
device = "eth0"
port = 80
[virtual.web.check]
kind = "http"
path = "/health"
[virtual.web.server.w1]
address = "10.0.0.11"
[virtual.web.server.w2]
address = "10.0.0.12"
weight = 5

[virtual.mail]
address = "192.0.2.25"
port = 25
[virtual.mail.server.m1]
address = "10.0.0.21"
"""


def cfg(text: str = BASE):
    return loads_toml(text, "t.toml").config


def test_same_config_is_an_empty_diff():
    d = diff(cfg(), cfg())
    assert d.is_empty and not d.needs_vip_moves
    assert d.virtual_unchanged == ("web", "mail")
    assert d.lines() == ["= virtual unchanged: web, mail"]


def test_added_and_removed_services():
    new = BASE.replace("[virtual.mail]", "[virtual.smtp]").replace("[virtual.mail.", "[virtual.smtp.")
    new += '\n[virtual.dns]\naddress = "192.0.2.53"\nport = 53\nprotocol = "udp"\n' \
           '[virtual.dns.check]\nkind = "udp"\n[virtual.dns.server.d1]\naddress = "10.0.0.31"\n'
    d = diff(cfg(), cfg(new))
    assert d.virtual_added == ("smtp", "dns")
    assert d.virtual_removed == ("mail",)
    assert d.virtual_changed == ()
    assert d.virtual_unchanged == ("web",)
    assert [v[0] for v in d.vips_added] == ["192.0.2.53"]
    assert d.vips_removed == ()
    assert d.needs_vip_moves and not d.is_empty


def test_changed_servers_keep_the_others_untouched():
    new = BASE.replace('weight = 5', 'weight = 7').replace(
        '[virtual.web.server.w2]', '[virtual.web.server.w3]\naddress = "10.0.0.13"\n[virtual.web.server.w2]')
    new = new.replace('[virtual.web.server.w1]\naddress = "10.0.0.11"\n', '')
    d = diff(cfg(), cfg(new))
    (web,) = d.virtual_changed
    assert web.name == "web" and web.fields == () and not web.key_changed
    assert web.servers_added == ("w3",)
    assert web.servers_removed == ("w1",)
    assert [(c.name, c.fields, c.key_changed, c.check_changed) for c in web.servers_changed] == [
        ("w2", ("weight",), False, False)]
    assert d.virtual_unchanged == ("mail",)
    assert not d.needs_vip_moves


def test_virtual_field_changes_and_identity():
    new = BASE.replace('port = 25', 'port = 587').replace('path = "/health"', 'path = "/ready"')
    d = diff(cfg(), cfg(new))
    changes = {c.name: c for c in d.virtual_changed}
    assert changes["mail"].fields == ("port",) and changes["mail"].key_changed
    # m1 inherits the port: its IPVS destination changes too
    assert [(s.name, s.fields) for s in changes["mail"].servers_changed] == [("m1", ("port",))]
    assert changes["web"].fields == ("check",) and not changes["web"].key_changed
    # both web servers inherit the check: their health checks restart, weights stay
    assert [(s.name, s.fields, s.check_changed) for s in changes["web"].servers_changed] == [
        ("w1", ("check",), True), ("w2", ("check",), True)]
    assert changes["web"].servers_unchanged == ()


def test_server_with_own_check_is_unchanged_when_the_virtual_check_changes():
    text = BASE.replace('weight = 5\n', 'weight = 5\n'
                        '[virtual.web.server.w2.check]\ninherit = false\nkind = "tcp_connect"\n')
    old, new = cfg(text), cfg(text.replace('path = "/health"', 'path = "/ready"'))
    assert old.virtual("web").server("w2").check == Check(kind=CheckKind.TCP_CONNECT)
    (web,) = diff(old, new).virtual_changed
    assert [s.name for s in web.servers_changed] == ["w1"]
    assert web.servers_unchanged == ("w2",)


def test_vip_move_heartbeat_and_global_changes():
    new = BASE.replace('address = "192.0.2.80"', 'address = "192.0.2.81"') + \
        '\n[heartbeat]\nkeepalive = 1\ndeadtime = 4\n[ipvs_timeouts]\ntcp = 900\n'
    new = new.replace("priority = 100", "priority = 150")
    d = diff(cfg(), cfg(new))
    assert d.vips_added == (("192.0.2.81", "eth0", None, None),)
    assert d.vips_removed == (("192.0.2.80", "eth0", None, None),)
    assert d.heartbeat_changed == ("heartbeat.keepalive", "heartbeat.deadtime")
    assert d.global_changed == ("ipvs_timeouts.tcp",)
    assert d.routers_changed == ("router.b.priority",)
    (web,) = d.virtual_changed
    assert web.key_changed


def test_deactivating_a_service_removes_its_vip():
    new = BASE.replace('[virtual.mail]\n', '[virtual.mail]\nactive = false\n')
    d = diff(cfg(), cfg(new))
    assert d.vips_removed == (("192.0.2.25", None, None, None),)
    assert d.virtual_changed[0].fields == ("active",)


def test_to_dict_is_plain_data():
    new = BASE.replace('weight = 5', 'weight = 7') + '\n[virtual.x]\naddress = "192.0.2.9"\n'
    d = diff(cfg(), cfg(new))
    payload = d.to_dict()
    assert json.loads(json.dumps(payload)) == payload
    assert payload["virtual_added"] == ["x"]
    assert payload["virtual_changed"][0]["servers_changed"] == [
        {"name": "w2", "fields": ["weight"], "key_changed": False, "check_changed": False}]
    assert payload["needs_vip_moves"] is True and payload["is_empty"] is False
    assert dataclasses.is_dataclass(d) and isinstance(d, ConfigDiff)



def test_routers_failover_services_and_whole_globals():
    """Routers and failover services added, removed, changed; a global that is a value (serial_no)
    or a section appearing (nat_router) is named whole, a section's field by its dotted path."""
    fos = '\n[failover.ftp]\naddress = "192.0.2.21"\nport = 21\n[failover.ssh]\naddress = "192.0.2.22"\nport = 22\n'
    new = ("serial_no = 9\n"
           + BASE.replace('[router.b]\naddress = "192.0.2.2"', '[router.c]\naddress = "192.0.2.3"')
           .replace('priority = 200\n', 'priority = 200\ndevice = "eth0"\n', 1)
           + fos.replace("port = 22", "port = 2222").replace("[failover.ftp]", "[failover.tftp]")
           + '\n[nat_router]\naddress = "10.0.0.254"\ndevice = "eth0"\n[sync_daemon]\nsync_id = 4\n')
    d = diff(cfg(BASE + fos), cfg(new))
    assert d.routers_changed == ("router.c", "router.b", "router.a.device")
    assert (d.failover_added, d.failover_removed, d.failover_changed) == (("tftp",), ("ftp",), ("ssh",))
    assert d.global_changed == ("serial_no", "sync_daemon.sync_id", "nat_router")
    assert (d.vips_added, d.vips_removed) == ((("10.0.0.254", "eth0", None, None),), ())
    assert d.lines() == [
        "+ failover tftp", "- failover ftp", "~ failover ssh", "~ router.c", "~ router.b", "~ router.a.device",
        "~ serial_no", "~ sync_daemon.sync_id", "~ nat_router", "+ vip 10.0.0.254 dev eth0",
        "= virtual unchanged: web, mail"]
