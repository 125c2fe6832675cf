"""AlertsCore, pure (docs/alerts.md): keepalived's mails and notify FIFO lines, word for word, from
role changes, real server verdicts and quorum changes; which events are mailed (on, mail,
no_mail); the quiet start; sync groups; snapshots; every output valid against its schema."""
from __future__ import annotations

import dataclasses

import msgpack

from lvsbus.config import Config, RealServer, Router, VirtualService, to_dict
from lvsbus.config.model import Alerts, Group
from lvsbus.wire.catalog import REGISTRY
from lvsbus.wire.events import Event
from lvsbus_services.alerts.core import AlertsCore

ALERTS = Alerts(email=("ops@example.org", "noc@example.org"), email_from="lvs@example.org", smtp_server="127.0.0.1",
                smtp_port=2525, smtp_timeout=5.0, router_id="LVS_A", notify_fifo="/run/lvsbus/notify.fifo")


def config(alerts=ALERTS, groups=(), quorum=1, hysteresis=0, fwmark=None, **kw) -> Config:
    servers = (RealServer("s1", "10.0.0.11", port=8080, weight=1), RealServer("s2", "10.0.0.12", weight=2))
    web = VirtualService("web", "192.0.2.80", port=80, fwmark=fwmark, servers=servers, quorum=quorum,
                         hysteresis=hysteresis, group=groups[0].name if groups else None)
    return Config(routers=(Router("r1", "10.99.1.11"),), virtual_services=(web,), alerts=alerts, groups=groups, **kw)


class Alerter:
    def __init__(self, cfg: Config) -> None:
        self.core = AlertsCore()
        self.st = self.core.initial()
        self.seq = 0
        self.config(cfg)

    def feed(self, type_, payload, version=1):
        self.seq += 1
        REGISTRY.validate(type_, version, payload)
        ev = Event(self.seq, "r1", "x", type_, version, 1_000_000_000 + self.seq, 0, None, payload)
        assert self.core.accepts(ev)
        self.st, out = self.core.decide(self.st, ev)
        for e in out:
            REGISTRY.validate(e.type, 1, e.payload)
        data = msgpack.unpackb(msgpack.packb(self.core.snapshot(self.st)), strict_map_key=False)
        assert self.core.snapshot(self.core.restore(data)) == self.core.snapshot(self.st)
        return out

    def config(self, cfg):
        return self.feed("config.loaded", {"model": to_dict(cfg), "digest": "d", "path": "x", "format": "toml",
                                           "warnings": [], "local_router": "r1", "reload": False, "diff": {}}, 2)

    def role(self, new, group="default", old="BACKUP", priority=100):
        return self.feed("router.role_changed", {"node": "r1", "old": old, "new": new, "reason": "peer_dead",
                                                 "priority": priority, "epoch": 1, "peer": None, "group": group}, 4)

    def verdict(self, server, up, detail="refused"):
        t = "health.real_server_up" if up else "health.real_server_down"
        extra = {"passes": 2} if up else {"failures": 3}
        return self.feed(t, {"virtual": "web", "server": server, "address": "10.0.0.1", "port": 80, "reason": "checks_passed" if up else "checks_failed",
                             "previous": "RISING" if up else "FALLING", "detail": "ok" if up else detail, **extra})


def lines(out):
    return [e.payload["line"] for e in out if e.type == "alerts.write_fifo"]


def mails(out):
    return [(e.payload["subject"], e.payload["body"]) for e in out if e.type == "alerts.send_mail"]


def test_a_role_change_is_keepalived_s_mail_and_fifo_line():
    a = Alerter(config())
    out = a.role("ACTIVE", priority=150)
    assert lines(out) == ['INSTANCE "default" MASTER 150']
    assert mails(out) == [("[LVS_A] VRRP Instance default - Entering MASTER state",
                           "=> VRRP Instance is now owning VRRP VIPs <=")]
    m = [e.payload for e in out if e.type == "alerts.send_mail"][0]
    assert (m["server"], m["port"], m["timeout"], m["from"], m["to"], m["id"]) == (
        "127.0.0.1", 2525, 5.0, "lvs@example.org", ["ops@example.org", "noc@example.org"], 1)
    assert mails(a.role("BACKUP", old="ACTIVE"))[0] == ("[LVS_A] VRRP Instance default - Entering BACKUP state",
                                                        "=> VRRP Instance is no longer owning VRRP VIPs <=")
    assert lines(a.role("FAULT")) == ['INSTANCE "default" FAULT 100']
    out = a.role("STOPPED", old="FAULT")
    assert lines(out) == ['INSTANCE "default" STOP 100']
    assert mails(out) == [("[LVS_A] VRRP Instance default - Stopping", "=> VRRP Instance stopping <=")]
    assert a.role("INIT") == []


def test_real_server_down_then_up_with_quorum():
    a = Alerter(config(quorum=3))  # s1 (1) + s2 (2): quorum 3 needs both
    assert a.verdict("s1", True) == [] and a.verdict("s2", True) == []  # first verdict UP: quiet, as keepalived
    out = a.verdict("s1", False, detail="timeout")
    assert lines(out) == ["RS [10.0.0.11]:tcp:8080 [192.0.2.80]:tcp:80 DOWN", "VS [192.0.2.80]:tcp:80 DOWN"]
    assert mails(out) == [  # the server's, then its service's: the FIFO's order
        ("[LVS_A] Realserver [10.0.0.11]:tcp:8080 of virtual server [192.0.2.80]:tcp:80 - DOWN",
         "=> CHECK failed on service : timeout <="),
        ("[LVS_A] Virtualserver [192.0.2.80]:tcp:80 - DOWN", "=> Lost quorum 3+0=3 <= 2 <="),
    ]
    assert a.verdict("s1", False) == []  # the same verdict again: nothing new
    out = a.verdict("s1", True)
    assert lines(out) == ["RS [10.0.0.11]:tcp:8080 [192.0.2.80]:tcp:80 UP", "VS [192.0.2.80]:tcp:80 UP"]
    assert mails(out)[0] == ("[LVS_A] Realserver [10.0.0.11]:tcp:8080 of virtual server [192.0.2.80]:tcp:80 - UP",
                             "=> CHECK succeed on service <=")
    assert mails(out)[1] == ("[LVS_A] Virtualserver [192.0.2.80]:tcp:80 - UP", "=> Gained quorum 3+0=3 <= 3 <=")


def test_first_down_is_an_alert_and_fwmark_ipv6_formats():
    a = Alerter(config(fwmark=7))
    out = a.verdict("s2", False)
    assert lines(out) == ["RS [10.0.0.12]:none:80 FWM 7 DOWN"]  # quorum 1 still met by s1 (taken as up)
    cfg = dataclasses.replace(config(), virtual_services=(VirtualService(
        "web", "2001:db8::80", port=443, servers=(RealServer("s1", "2001:db8::11"),)),))
    b = Alerter(cfg)
    assert lines(b.verdict("s1", False)) == ["RS [2001:db8::11]:tcp:443 [2001:db8::80]:tcp:443 DOWN",
                                             "VS [2001:db8::80]:tcp:443 DOWN"]


def test_on_mail_and_no_mail_choose_what_is_mailed_fifo_lines_always():
    al = dataclasses.replace(ALERTS, on=("real_server",), mail=("group:default",), no_mail=("server:web/s2",))
    a = Alerter(config(alerts=al))
    assert mails(a.role("ACTIVE"))  # group:default named in mail, though role is not in on
    out = a.verdict("s2", False)
    assert not mails(out) and lines(out)  # no_mail for s2; the FIFO line all the same
    out = a.verdict("s1", False)
    assert [s for s, _b in mails(out)] == [
        "[LVS_A] Realserver [10.0.0.11]:tcp:8080 of virtual server [192.0.2.80]:tcp:80 - DOWN"]  # not the VS (off)
    al = dataclasses.replace(ALERTS, on=(), no_mail=(), mail=("virtual:web",))
    b = Alerter(config(alerts=al))
    assert not mails(b.role("ACTIVE")) and len(mails(b.verdict("s1", False))) == 1


def test_no_relay_no_mail_and_no_fifo_no_line_and_no_alerts_section_nothing():
    a = Alerter(config(alerts=dataclasses.replace(ALERTS, email=(), smtp_server=None)))
    assert mails(a.role("ACTIVE")) == [] and lines(a.role("BACKUP"))
    b = Alerter(config(alerts=dataclasses.replace(ALERTS, notify_fifo=None)))
    assert lines(b.role("ACTIVE")) == [] and mails(b.role("BACKUP"))
    c = Alerter(config(alerts=dataclasses.replace(ALERTS, notify_fifo=None, role_notify_fifo="/run/r",
                                                  lvs_notify_fifo="/run/l")))
    assert [e.payload["paths"] for e in c.role("ACTIVE") if e.type == "alerts.write_fifo"] == [["/run/r"]]
    assert [e.payload["paths"] for e in c.verdict("s1", False) if e.type == "alerts.write_fifo"] == [["/run/l"]]
    d = Alerter(config(alerts=None))
    assert d.role("ACTIVE") == [] and d.verdict("s1", False) == []


def test_router_id_defaults_to_the_router_s_name():
    a = Alerter(config(alerts=dataclasses.replace(ALERTS, router_id=None)))
    assert mails(a.role("ACTIVE"))[0][0] == "[r1] VRRP Instance default - Entering MASTER state"


def test_sync_group_line_and_mail_once_all_members_agree():
    groups = (Group("g1", sync_group="sg"), Group("g2", sync_group="sg"))
    a = Alerter(config(groups=groups))
    assert lines(a.role("ACTIVE", group="g1")) == ['INSTANCE "g1" MASTER 100']
    out = a.role("ACTIVE", group="g2")
    assert lines(out) == ['INSTANCE "g2" MASTER 100', 'GROUP "sg" MASTER 0']
    assert mails(out)[-1] == ("[LVS_A] VRRP Group sg - Entering MASTER state",
                              "=> All VRRP group instances are now in MASTER state <=")


def test_operator_drain_counts_against_quorum():
    a = Alerter(config(quorum=2))
    out = a.feed("operator.server_action", {"virtual": "web", "server": "s2", "action": "drain", "by": "ada",
                                            "via": "cli", "reason": ""})
    assert lines(out) == ["VS [192.0.2.80]:tcp:80 DOWN"]
    out = a.feed("operator.server_action", {"virtual": "web", "server": "s2", "action": "enable", "by": "ada",
                                            "via": "cli", "reason": ""})
    assert lines(out) == ["VS [192.0.2.80]:tcp:80 UP"]


def test_a_bad_model_is_rejected_and_the_settings_stay():
    a = Alerter(config())
    out = a.feed("config.loaded", {"model": {"routers": "nope"}, "digest": "d", "path": "x", "format": "toml",
                                   "warnings": [], "local_router": "r1", "reload": True, "diff": {}}, 2)
    assert [e.type for e in out] == ["alerts.config_rejected"]
    assert lines(a.role("ACTIVE")) == ['INSTANCE "default" MASTER 100']


def commands(out):
    return [(e.payload["kind"], e.payload["command"], e.payload["server"]) for e in out if e.type == "alerts.run_command"]


def with_commands(cfg: Config, alpha=False, omega=False) -> Config:
    (web,) = cfg.virtual_services
    servers = tuple(dataclasses.replace(rs, notify_up=f"up {rs.name}", notify_down=f"down {rs.name}") for rs in web.servers)
    web = dataclasses.replace(web, servers=servers, quorum_up="vs up", quorum_down="vs down", alpha=alpha, omega=omega)
    return dataclasses.replace(cfg, virtual_services=(web,))


def test_notify_and_quorum_commands_run_on_the_verdicts_that_alert_also_without_alerts_section():
    cfg = with_commands(config(alerts=None, quorum=3))
    assert cfg.alerts_wanted() is True and config(alerts=None).alerts_wanted() is None
    a = Alerter(cfg)
    assert a.verdict("s1", True) == [] and a.verdict("s2", True) == []  # as keepalived: up until a failure
    out = a.verdict("s1", False)
    assert lines(out) == [] and mails(out) == []  # no [alerts]: no FIFO, no mail, the commands only
    assert commands(out) == [("notify_down", "down s1", "s1"), ("quorum_down", "vs down", None)]
    assert a.verdict("s1", False) == []
    out = a.verdict("s1", True)
    assert commands(out) == [("notify_up", "up s1", "s1"), ("quorum_up", "vs up", None)]
    ids = [e.payload["id"] for e in out]
    assert ids == [3, 4]  # counted across the run (alerts.command_finished names them)


def test_alpha_a_server_is_down_until_its_first_verdict():
    a = Alerter(with_commands(config(quorum=1), alpha=True))
    assert a.verdict("s2", False) == []  # down already: a first DOWN says nothing
    out = a.verdict("s1", True)  # a first UP is an alert, and the service gains its quorum
    assert lines(out) == ["RS [10.0.0.11]:tcp:8080 [192.0.2.80]:tcp:80 UP", "VS [192.0.2.80]:tcp:80 UP"]
    assert commands(out) == [("notify_up", "up s1", "s1"), ("quorum_up", "vs up", None)]


def test_omega_the_servers_still_up_go_down_when_the_group_stops():
    a = Alerter(with_commands(config(quorum=1), omega=True))
    a.verdict("s1", True)
    a.verdict("s2", False)
    out = a.role("STOPPED", old="ACTIVE")
    assert commands(out) == [("notify_down", "down s1", "s1"), ("quorum_down", "vs down", None)]
    assert "RS [10.0.0.11]:tcp:8080 [192.0.2.80]:tcp:80 DOWN" in lines(out)
    assert commands(a.role("STOPPED", old="STOPPED")) == []  # nothing is up any more: nothing runs again
    b = Alerter(with_commands(config(quorum=1)))  # without omega: nothing runs at a stop
    b.verdict("s1", True)
    assert commands(b.role("STOPPED", old="ACTIVE")) == []


def test_the_router_runs_the_alerts_service_for_alerts_or_a_checker_command():
    """lvsbus.router.supervision decides which configured services run: [alerts], or a notify_up /
    quorum_down... command without it; neither: no alerts service."""
    from lvsbus.router.supervision import configured_services

    assert "alerts" in configured_services(config())
    assert "alerts" not in configured_services(config(alerts=None))
    assert "alerts" in configured_services(with_commands(config(alerts=None)))
