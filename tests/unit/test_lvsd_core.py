"""LvsdCore, pure: the desired table from config and health; deltas; quiesce; sorry server;
quorum with hysteresis; reloads; warm start; snapshots; deltas always fold to the full table."""
from __future__ import annotations

import dataclasses
import random

import msgpack

from lvsbus.config import Check, Forwarding, Protocol, RealServer, to_dict
from lvsbus.ipvs.table import Dest, ServiceKey, Table
from lvsbus_services.lvsd.core import LvsdCore, apply_ops, table_ops
from tests.helpers.lvsd_driver import KEY, Lvsd, config, vs


def test_full_table_on_config_and_start_then_deltas_per_health_event():
    cfg = config(vs(3, weights=[1, 2, 3], scheduler="wrr", forwarding=Forwarding.DIRECT, persistence=300,
                    persistence_prefixlen=24))
    l = Lvsd(cfg, start=False)
    assert l.table is None  # not live (not started): nothing published
    out = l.feed("lvsd.started", {"pid": 1, "epoch": 1})
    assert out[0].payload["reason"] == "started"
    assert l.version == 1 and l.dests() == {}  # nothing known yet: no real server
    svc = l.table[ServiceKey.parse(KEY)].service
    assert (svc.scheduler, svc.persistence, svc.netmask) == ("wrr", 300, 24)
    out = l.up("s1")
    assert [e.type for e in out] == ["lvsd.table_delta"]
    p = out[0].payload
    assert p["ops"] == [{"op": "add_dest", "service": KEY, "dest": "10.0.0.2:80",
                         "attrs": {"forwarding": "direct", "weight": 2, "upper": 0, "lower": 0}}]
    assert (p["version"], p["base_version"], p["virtual"], p["server"]) == (3 - 1, 1, "web", "s1")
    assert "web/s1 up" in p["reason"]
    assert l.up("s1") == []  # no change, no delta
    l.up("s0")
    assert l.changed("s0", "FALLING") == []  # FALLING is still in service
    out = l.down("s0")
    assert out[0].payload["ops"] == [{"op": "del_dest", "service": KEY, "dest": "10.0.0.1:80", "attrs": {}}]
    assert l.dests() == {"10.0.0.2:80": 2}
    out = l.feed("lvsd.started", {"pid": 2, "epoch": 2})
    assert out[0].type == "lvsd.table_desired" and out[0].payload["reason"] == "started"
    assert out[0].payload["dests"] == 1 and out[0].payload["services"] == 1
    assert l.feed("pulse.start_lvsd", {"reason": "peer_dead"})[0].payload["reason"] == "start_lvsd"


def test_inhibit_on_failure_keeps_every_server_not_in_service_at_weight_zero():
    l = Lvsd(config(vs(2, weights=[5, 5], inhibit_on_failure=True)))
    assert l.dests() == {"10.0.0.1:80": 0, "10.0.0.2:80": 0}
    out = l.up("s0")
    assert out[0].payload["ops"][0]["op"] == "edit_dest" and l.dests()["10.0.0.1:80"] == 5
    l.down("s0")
    assert l.dests() == {"10.0.0.1:80": 0, "10.0.0.2:80": 0}


def test_scale_out_with_mh_keeps_every_configured_server_in_order_at_weight_zero_when_down():
    """IPVS mh fills its lookup table walking the real servers in the order they were added: a
    server removed and added again on one router alone would map flows differently there. In
    scale-out with mh every configured server stays, in the config's order, at weight 0 when down;
    without scale-out (or with another scheduler and connection sync) a failed server is removed."""
    from lvsbus.config.model import Scaleout

    so = Scaleout(local_as=65001, peer_as=65000, peers=("192.0.2.254",))
    l = Lvsd(dataclasses.replace(config(vs(3, scheduler="mh", scheduler_flags=("mh-port",))), scaleout=so))
    assert list(l.dests()) == ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"] and set(l.dests().values()) == {0}
    for s in ("s2", "s0", "s1"):
        l.up(s)
    assert list(l.dests().items()) == [("10.0.0.1:80", 1), ("10.0.0.2:80", 1), ("10.0.0.3:80", 1)]
    out = l.down("s1")
    assert [o["op"] for o in out[0].payload["ops"]] == ["edit_dest"]
    assert list(l.dests().items()) == [("10.0.0.1:80", 1), ("10.0.0.2:80", 0), ("10.0.0.3:80", 1)]
    from lvsbus.config.model import SyncDaemon

    synced = dataclasses.replace(config(vs(3, scheduler="wlc")), scaleout=so, sync_daemon=SyncDaemon(enabled=True))
    for plain in (config(vs(3, scheduler="mh")), synced):
        l = Lvsd(plain)
        l.up("s0")
        l.up("s1")
        l.down("s1")
        assert l.dests() == {"10.0.0.1:80": 1}


def test_quiesce_is_piranhas_weight_zero_only_for_a_server_that_was_in():
    """Piranha's nanny -q: the first time a server comes up it is added; when it fails it is set to
    weight 0 (connections drain); when it comes back its weight is set again. A server never up is
    not in the table."""
    l = Lvsd(config(vs(2, weights=[5, 5], quiesce=True)))
    assert l.dests() == {}
    out = l.up("s0")
    assert [o["op"] for o in out[0].payload["ops"]] == ["add_dest"] and l.dests() == {"10.0.0.1:80": 5}
    out = l.down("s0")
    assert [o["op"] for o in out[0].payload["ops"]] == ["edit_dest"] and l.dests() == {"10.0.0.1:80": 0}
    out = l.up("s0")
    assert [o["op"] for o in out[0].payload["ops"]] == ["edit_dest"] and l.dests() == {"10.0.0.1:80": 5}
    assert l.down("s1") == [] and "10.0.0.2:80" not in l.dests()  # never up: not added at weight 0
    # a snapshot keeps which servers were in
    core = LvsdCore()
    st = core.restore(msgpack.unpackb(msgpack.packb(core.snapshot(l.st))))
    assert st.been_in == {"web/s0"}


def test_sorry_server_in_when_none_is_up_and_out_when_one_is_back():
    l = Lvsd(config(vs(2, sorry_server="192.0.2.99", sorry_server_port=8080)))
    assert l.dests() == {"192.0.2.99:8080": 1}
    out = l.up("s0")
    ops = out[0].payload["ops"]
    assert [o["op"] for o in ops] == ["add_dest", "del_dest"]  # the real server first: never empty
    assert ops[1]["dest"] == "192.0.2.99:8080" and "sorry server out" in out[0].payload["reason"]
    l.up("s1")
    l.down("s0")
    assert l.dests() == {"10.0.0.2:80": 1}
    out = l.down("s1")
    assert [o["op"] for o in out[0].payload["ops"]] == ["add_dest", "del_dest"]
    assert l.dests() == {"192.0.2.99:8080": 1} and "quorum lost" in out[0].payload["reason"]


def test_sorry_server_with_inhibit_on_failure_keeps_real_servers_at_weight_zero():
    l = Lvsd(config(vs(2, sorry_server="192.0.2.99", inhibit_on_failure=True)))
    assert l.dests() == {"10.0.0.1:80": 0, "10.0.0.2:80": 0, "192.0.2.99:80": 1}
    l.up("s1")
    assert l.dests() == {"10.0.0.1:80": 0, "10.0.0.2:80": 1}


def test_quorum_with_hysteresis():
    # quorum 3, hysteresis 1: up at total weight >= 4, down below 2
    l = Lvsd(config(vs(5, quorum=3, hysteresis=1, sorry_server="192.0.2.99")))
    sorry = {"192.0.2.99:80": 1}
    for s in ("s0", "s1", "s2"):
        l.up(s)
        assert l.dests() == sorry, s  # 3 < quorum + hysteresis
    l.up("s3")
    assert set(l.dests()) == {f"10.0.0.{i}:80" for i in (1, 2, 3, 4)}
    l.down("s3")
    l.down("s2")
    assert len(l.dests()) == 2 and "192.0.2.99:80" not in l.dests()  # 2 >= quorum - hysteresis: still up
    l.down("s1")
    assert l.dests() == sorry  # 1 < 2: down
    l.up("s1")
    l.up("s2")
    assert l.dests() == sorry  # 3: not yet back
    l.up("s4")
    assert "192.0.2.99:80" not in l.dests() and len(l.dests()) == 4


def test_quorum_lost_without_sorry_server_keeps_the_servers_in_service():
    l = Lvsd(config(vs(3, quorum=2)))
    l.up("s0")
    assert l.dests() == {"10.0.0.1:80": 1}


def test_keys_fwmark_udp_ipv6_and_inactive_entries():
    cfg = config(
        vs(2, name="mark", address="192.0.2.81", fwmark=5, scheduler="sh"),
        vs(1, name="dns", address="2001:db8::53", port=53, protocol=Protocol.UDP, forwarding=Forwarding.TUNNEL),
        vs(1, name="off", address="192.0.2.82", active=False),
        dataclasses.replace(vs(2, name="web"), servers=(RealServer(name="s0", address="10.0.0.1", port=8080),
                                                        RealServer(name="s1", address="10.0.0.2", active=False))),
    )
    l = Lvsd(cfg)
    assert sorted(str(k) for k in l.table.keys()) == sorted(["fwm:inet:5", "udp:[2001:db8::53]:53", KEY])
    l.up("s0", "mark")
    l.up("s0", "dns")
    l.up("s0")
    assert l.up("s1") == [] and l.up("s0", "off") == []
    assert l.dests("fwm:inet:5") == {"10.0.0.1:80": 1}
    assert l.table[ServiceKey.parse("udp:[2001:db8::53]:53")].service.netmask == 128
    assert l.dests() == {"10.0.0.1:8080": 1}


def test_reload_keeps_health_of_unchanged_servers_and_forgets_changed_checks():
    cfg = config(vs(3))
    l = Lvsd(cfg)
    for s in ("s0", "s1", "s2"):
        l.up(s)
    v = cfg.virtual_services[0]
    servers = list(v.servers)
    servers[1] = dataclasses.replace(servers[1], check=Check(kind=v.check.kind, interval=3.0))
    servers[2] = dataclasses.replace(servers[2], weight=9)
    out = l.config(config(dataclasses.replace(v, servers=tuple(servers))), digest="d2")
    assert out[0].type == "lvsd.table_desired" and out[0].payload["reason"] == "config"
    assert out[0].payload["digest"] == "d2"
    assert l.dests() == {"10.0.0.1:80": 1, "10.0.0.3:80": 9}


def test_a_bad_config_is_rejected_and_the_table_stays():
    l = Lvsd(config(vs(1)))
    l.up("s0")
    before = l.st.table
    out = l.feed("config.loaded", {"model": {"virtual_services": 3}, "digest": "bad"})
    assert [e.type for e in out] == ["lvsd.config_rejected"] and l.st.table == before


def test_snapshot_restore_keeps_table_version_and_hysteresis():
    l = Lvsd(config(vs(4, quorum=2, hysteresis=1, sorry_server="192.0.2.99")))
    for s in ("s0", "s1", "s2"):
        l.up(s)
    l.down("s2")  # 2: still up thanks to the hysteresis
    data = msgpack.unpackb(msgpack.packb(l.core.snapshot(l.st)), raw=False, strict_map_key=False)
    st = l.core.restore(data)
    assert st.table == l.st.table and st.version == l.st.version and st.quorum == {"web": True}
    l.st = st
    assert l.down("s1")[0].payload["base_version"] == data["version"]
    assert l.dests() == {"10.0.0.1:80": 1}  # 1: not below quorum - hysteresis
    l.down("s0")
    assert l.dests() == {"192.0.2.99:80": 1}


def test_random_health_sequences_fold_to_the_full_table():
    rnd = random.Random(7)
    cfg = config(vs(6, weights=[1, 2, 3, 1, 2, 3], quorum=4, hysteresis=2, sorry_server="192.0.2.99"),
                 vs(3, name="q", address="192.0.2.90", quiesce=True))
    l = Lvsd(cfg)
    for _ in range(400):
        virtual, n = rnd.choice([("web", 6), ("q", 3)])
        server = f"s{rnd.randrange(n)}"
        rnd.choice([l.up, l.down, lambda s, v: l.changed(s, "FALLING"), lambda s, v: l.changed(s, "INIT")])(server, virtual)
    # a fresh core fed the same health in one go desires the same table (modulo hysteresis history)
    out = l.feed("lvsd.started", {"pid": 1, "epoch": 9})
    assert Table.from_dict(out[0].payload["table"]) == l.table


def test_table_ops_between_any_two_tables():
    a = Table().with_service(l_svc := Table.from_dict({KEY: {"scheduler": "wlc", "persistence": 0, "netmask": 32,
                                                              "flags": [], "dests": {}}})[ServiceKey.parse(KEY)].service,
                             [Dest("10.0.0.1", 80), Dest("10.0.0.2", 80, weight=3)])
    b = Table().with_service(dataclasses.replace(l_svc, scheduler="rr"), [Dest("10.0.0.2", 80, weight=4), Dest("10.0.0.3", 80)])
    b = b.with_service(dataclasses.replace(l_svc, key=ServiceKey.tcp("192.0.2.9", 443)), [])
    ops = table_ops(a, b)
    assert apply_ops(a, ops) == b
    assert apply_ops(b, table_ops(b, Table())) == Table()
    kinds = [o["op"] for o in ops]  # services in key order; in each, the service, adds and edits, then deletions
    assert kinds[0] == "edit_service" and sorted(kinds[1:3]) == ["add_dest", "edit_dest"]
    assert kinds[3:] == ["del_dest", "add_service"]


def test_not_live_it_folds_silently_and_the_next_start_is_one_full_warm_table():
    l = Lvsd(config(vs(3, sorry_server="192.0.2.99")))
    l.up("s0")
    assert l.feed("pulse.stop_lvsd", {"reason": "fenced"}) == []
    # the backup period: health moves, a reload comes, nothing is published
    assert l.up("s1") == [] and l.down("s0") == [] and l.up("s2") == []
    assert l.config(config(vs(3, sorry_server="192.0.2.98")), digest="d2") == []
    out = l.feed("pulse.start_lvsd", {"reason": "peer_dead"})
    assert [e.type for e in out] == ["lvsd.table_desired"]
    assert l.dests() == {"10.0.0.2:80": 1, "10.0.0.3:80": 1}
    assert out[0].payload["version"] == 3  # versions only count what was published
    assert l.down("s1")[0].payload["base_version"] == 3


def test_config_loaded_v1_is_upcast_to_what_its_cores_did():
    """v1 models: no initial_rise (rise applied at start too), and quiesce meant weight 0 for every
    server not in service (v2's inhibit_on_failure)."""
    from lvsbus.wire import catalog  # noqa: F401
    from lvsbus.wire.events import REGISTRY

    model = to_dict(config(vs(2, quiesce=True)))
    for v in model["virtual_services"]:
        del v["inhibit_on_failure"]
        del v["check"]["initial_rise"]
        v["check"]["rise"] = 7
    version, p = REGISTRY.upcast("config.loaded", 1, {"model": model, "digest": "d"})
    v = p["model"]["virtual_services"][0]
    assert version == 2 and v["check"]["initial_rise"] == 7 and v["inhibit_on_failure"] is True and v["quiesce"] is False
    assert REGISTRY.upcast("config.loaded", 1, {"model": {"virtual_services": 3}})[1]["model"] == {"virtual_services": 3}


def _two_groups():
    """web (group web, 192.0.2.80) and mail (group mail, 192.0.2.25:25), two servers each."""
    from lvsbus.config.model import Group

    cfg = config(vs(2, group="web"), vs(2, name="mail", address="192.0.2.25", port=25, group="mail"))
    return dataclasses.replace(cfg, groups=(Group(name="web"), Group(name="mail")))


MAIL = "tcp:192.0.2.25:25"


def test_failover_groups_only_the_services_of_the_groups_held_are_desired():
    l = Lvsd(_two_groups(), start=False)
    l.up("s0")
    l.up("s0", "mail")
    out = l.feed("pulse.start_lvsd", {"reason": "no_active", "groups": ["web"]})
    assert [e.type for e in out] == ["lvsd.table_desired"]
    assert [str(k) for k in l.table.keys()] == [KEY] and l.dests() == {"10.0.0.1:80": 1}
    # a server of a group not held: folded, nothing published
    assert l.up("s1", "mail") == [] and l.down("s0", "mail") == []
    assert l.feed("operator.server_action", {"virtual": "mail", "server": "s1", "action": "drain", "by": "op",
                                             "via": "cli"})[0].payload["outcome"] == "applied"
    assert MAIL not in {str(k) for k in l.st.table.keys()}
    assert l.up("s1")[0].type == "lvsd.table_delta"  # the group held: deltas as before
    # the set held grows: the whole table, mail in with the health folded meanwhile
    out = l.feed("pulse.start_lvsd", {"reason": "no_active", "groups": ["web", "mail"]})
    assert [e.type for e in out] == ["lvsd.table_desired"] and out[0].payload["reason"] == "start_lvsd"
    assert l.dests(MAIL) == {"10.0.0.2:25": 0}  # s1 up and drained, s0 down
    assert l.down("s1", "mail")[0].payload["ops"] == [{"op": "del_dest", "service": MAIL, "dest": "10.0.0.2:25",
                                                       "attrs": {}}]
    # shrinks: web out of the table
    l.feed("pulse.start_lvsd", {"reason": "no_active", "groups": ["mail"]})
    assert [str(k) for k in l.table.keys()] == [MAIL]
    assert l.down("s0") == []
    # null (a v1 record, or pulse without groups): every virtual service
    l.feed("pulse.start_lvsd", {"reason": "peer_dead", "groups": None})
    assert sorted(str(k) for k in l.table.keys()) == sorted([KEY, MAIL]) and l.dests() == {"10.0.0.2:80": 1}
    l.feed("pulse.start_lvsd", {"reason": "peer_dead", "groups": ["web"]})
    l.feed("pulse.start_lvsd", {"reason": "peer_dead"})  # v1: every one
    assert len(l.table) == 2


def test_failover_groups_held_survive_a_snapshot_and_an_old_snapshot_holds_every_group():
    from lvsbus.runtime import snapshot as snap

    l = Lvsd(_two_groups(), start=False)
    l.feed("pulse.start_lvsd", {"reason": "no_active", "groups": ["mail"]})
    data = msgpack.unpackb(msgpack.packb(l.core.snapshot(l.st)), raw=False, strict_map_key=False)
    st = l.core.restore(data)
    assert st.groups == frozenset({"mail"}) and st.table == l.st.table
    l.st = st
    assert l.up("s0") == [] and l.up("s0", "mail")[0].type == "lvsd.table_delta"
    # a version-2 snapshot (before groups) is read as holding every group
    old = {k: v for k, v in data.items() if k != "groups"}
    body = msgpack.packb({"core": "lvsd", "v": 2, "state": old}, use_bin_type=True)
    assert snap.decode_state(l.core, body).groups is None
