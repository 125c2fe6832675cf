"""The alerts core: what keepalived would mail and write to its notify FIFOs, decided from the bus
(docs/alerts.md).

Inputs (recorded events): ``config.loaded`` (``[alerts]``, the groups, the virtual services),
pulse's ``router.role_changed`` (one failover group's role: keepalived's VRRP instance), nanny's
verdicts ``health.real_server_up`` / ``_down`` and its other moves (``health.state_changed``), and
the operator's server actions (``operator.server_action``), which with the health give each virtual
service's quorum (lvsd's rule: ``lvsbus.config.quorum``).

Outputs, each an effect the shell carries out (nothing here waits for a mail relay):

* ``alerts.write_fifo``: one line, in keepalived's words, for the FIFOs it goes to:
  ``INSTANCE "GROUP" MASTER|BACKUP|FAULT|STOP PRIORITY`` on a group's role change,
  ``GROUP "SYNC" STATE 0`` once every group of a sync group is in that role,
  ``RS [ADDR]:PROTO:PORT [VIP]:PROTO:PORT UP|DOWN`` on a real server's verdict,
  ``VS [VIP]:PROTO:PORT UP|DOWN`` (``VS FWM N ...`` for a fwmark service) on a quorum change;
* ``alerts.send_mail``: one mail, subject and body as keepalived writes them
  (``[ROUTER_ID] VRRP Instance GROUP - Entering MASTER state``,
  ``[ROUTER_ID] Realserver [ADDR]:tcp:PORT of virtual server [VIP]:tcp:PORT - DOWN``,
  ``[ROUTER_ID] Virtualserver [VIP]:tcp:PORT - UP``...), with the relay's settings, for the
  events ``[alerts]`` mails (``on``, ``mail``, ``no_mail``);
* ``alerts.run_command``: a real server's ``notify_up`` / ``notify_down`` on its verdict, a
  virtual service's ``quorum_up`` / ``quorum_down`` on its quorum change (keepalived's checker
  notify commands; with or without ``[alerts]``), and with ``omega`` the down ones of what is
  still up when the router stops;
* ``alerts.config_rejected``: a ``config.loaded`` this core could not use (the previous settings stay).

As keepalived starts without ``alpha``: a real server is taken as up until nanny's first verdict,
so a first UP says nothing and a first DOWN is an alert; with ``alpha`` (the virtual service's),
down until then: a first UP is an alert and a first DOWN says nothing. A virtual service's quorum
starts from that too, and only a change of it is an alert.

Sans-IO, deterministic: no clock, no socket; the state is mutated in place and returned.
"""
from __future__ import annotations

from typing import Any

from lvsbus.config import ConfigError, from_dict
from lvsbus.config.model import DEFAULT_GROUP, Config, server_port
from lvsbus.config.quorum import quorum_up, weight_in_service
from lvsbus.runtime.core import Core, Effect
from lvsbus.wire.events import Event

#: pulse's roles in keepalived's words (INIT is never announced)
KA_STATE = {"ACTIVE": "MASTER", "BACKUP": "BACKUP", "FAULT": "FAULT", "STOPPED": "STOP"}
#: a VRRP instance's mail (vrrp_notify.c): subject's end and body, by state
INSTANCE_MAIL = {
    "MASTER": ("Entering MASTER state", "=> VRRP Instance is now owning VRRP VIPs <="),
    "BACKUP": ("Entering BACKUP state", "=> VRRP Instance is no longer owning VRRP VIPs <="),
    "FAULT": ("Entering FAULT state", "=> VRRP Instance is no longer owning VRRP VIPs <="),
    "STOP": ("Stopping", "=> VRRP Instance stopping <="),
}
GROUP_MAIL = {
    "MASTER": ("Entering MASTER state", "=> All VRRP group instances are now in MASTER state <="),
    "BACKUP": ("Entering BACKUP state", "=> All VRRP group instances are now in BACKUP state <="),
    "FAULT": ("Entering FAULT state", "=> All VRRP group instances are now in FAULT state <="),
    "STOP": ("Stopping", "=> All VRRP group instances are now stopping <="),
}
MAX_LINE = 1024
#: a notify_up / quorum_down... command still running after this is killed (keepalived sets no
#: bound; a hung script must not pile up processes)
COMMAND_TIMEOUT_MS = 60_000
__all__ = ["AlertsCore", "AlertsState", "vs_text", "rs_text"]


def _trio(address: str, proto: str, port: int) -> str:
    """keepalived's inet_sockaddrtotrio: ``[ADDR]:PROTO:PORT`` (v6 too)."""
    return f"[{address}]:{proto}:{port}"


def vs_text(vs) -> str:
    """keepalived's FMT_VS: ``[VIP]:tcp:PORT``, or ``FWM N`` for a fwmark service."""
    if vs.fwmark:
        return f"FWM {vs.fwmark}"
    return _trio(vs.address, vs.protocol.value, vs.port)


def rs_text(vs, rs) -> str:
    """keepalived's FMT_RS: the server's ``[ADDR]:PROTO:PORT`` in its virtual service's protocol
    (``none`` for a fwmark service, whose protocol keepalived ignores)."""
    return _trio(rs.address, "none" if vs.fwmark else vs.protocol.value, server_port(vs, rs))


class _Virtual:
    """One active virtual service as the alerts need it."""

    __slots__ = ("name", "text", "servers", "quorum", "hysteresis", "group", "commands", "quorum_cmds", "alpha",
                 "omega")

    def __init__(self, vs) -> None:
        self.name = vs.name
        self.text = vs_text(vs)
        self.group = vs.group or DEFAULT_GROUP
        #: health id -> (server name, its text, weight)
        self.servers = {f"{vs.name}/{rs.name}": (rs.name, rs_text(vs, rs), rs.weight) for rs in vs.servers if rs.active}
        #: health id -> {"UP": notify_up, "DOWN": notify_down} (None: no command)
        self.commands = {f"{vs.name}/{rs.name}": {"UP": rs.notify_up, "DOWN": rs.notify_down}
                         for rs in vs.servers if rs.active}
        self.quorum_cmds = {"UP": vs.quorum_up, "DOWN": vs.quorum_down}
        self.quorum, self.hysteresis = vs.quorum, vs.hysteresis
        self.alpha, self.omega = vs.alpha, vs.omega


class AlertsState:
    __slots__ = ("model", "digest", "local", "settings", "router_id", "sync", "virtuals", "roles", "sync_roles",
                 "health", "verdicts", "admin", "quorum", "mails", "lines", "commands", "bad_config")

    def __init__(self) -> None:
        self.model: dict | None = None
        self.digest = ""
        self.local = ""
        self.settings: dict | None = None  # [alerts] as plain data; None: no alerts
        self.router_id = ""
        self.sync: dict[str, list[str]] = {}  # sync group -> its member groups (two or more)
        self.virtuals: dict[str, _Virtual] = {}
        self.roles: dict[str, str] = {}  # group -> keepalived state (MASTER, BACKUP, FAULT, STOP)
        self.sync_roles: dict[str, str] = {}  # sync group -> the state last announced for it
        self.health: dict[str, str] = {}  # health id -> nanny's state, from its first verdict on
        self.verdicts: dict[str, str] = {}  # health id -> UP | DOWN: the last verdict
        self.admin: dict[str, str] = {}  # health id -> drained | disabled (operator.server_action)
        self.quorum: dict[str, bool] = {}  # virtual name -> quorum up
        self.mails = 0  # mails decided so far: each mail's id
        self.lines = 0  # FIFO lines decided so far
        self.commands = 0  # commands decided so far: each one's id
        self.bad_config = 0


class AlertsCore(Core[AlertsState]):
    name = "alerts"
    inputs = ("config.loaded", "router.role_changed", "health.real_server_up", "health.real_server_down",
              "health.state_changed", "operator.server_action")
    outputs = frozenset({"alerts.send_mail", "alerts.write_fifo", "alerts.run_command", "alerts.config_rejected"})

    def initial(self) -> AlertsState:
        return AlertsState()

    def decide(self, state: AlertsState, event: Event) -> tuple[AlertsState, list[Effect]]:
        st, p, t = state, event.payload, event.type
        out: list[Effect] = []
        if t == "config.loaded":
            self._config(st, p, out)
        elif t == "router.role_changed":
            self._role(st, p, out)
        elif t in ("health.real_server_up", "health.real_server_down"):
            self._verdict(st, p, "UP" if t == "health.real_server_up" else "DOWN", out)
        elif t == "health.state_changed":
            id_ = f"{p['virtual']}/{p['server']}"
            if id_ in st.verdicts:  # before its first verdict a server counts as up (keepalived's start)
                st.health[id_] = p["new"]
                self._quorum(st, p["virtual"], out)
        elif t == "operator.server_action":
            id_ = f"{p['virtual']}/{p['server']}"
            v = st.virtuals.get(p["virtual"])
            if v is None or id_ not in v.servers:
                return st, out
            if p["action"] == "enable":
                st.admin.pop(id_, None)
            else:
                st.admin[id_] = {"drain": "drained", "disable": "disabled"}[p["action"]]
            self._quorum(st, p["virtual"], out)
        return st, out

    # -- what happened -----------------------------------------------------------------------

    def _role(self, st: AlertsState, p: dict, out: list[Effect]) -> None:
        new = KA_STATE.get(p["new"])
        if new is None:
            return
        group = p["group"]
        st.roles[group] = new
        if new == "STOP":
            self._omega(st, group, out)
        self._fifo(st, "role", f'INSTANCE "{group}" {new} {p["priority"]}', out)
        if self._mailed(st, "role", (f"group:{group}",)):
            subject, body = INSTANCE_MAIL[new]
            self._mail(st, "role", f"VRRP Instance {group} - {subject}", body, out)
        for sync, members in st.sync.items():
            if group not in members:
                continue
            states = {st.roles.get(m) for m in members}
            if len(states) != 1 or st.sync_roles.get(sync) == new:
                continue
            st.sync_roles[sync] = new
            self._fifo(st, "role", f'GROUP "{sync}" {new} 0', out)
            if self._mailed(st, "role", (f"group:{sync}",)):
                subject, body = GROUP_MAIL[new]
                self._mail(st, "role", f"VRRP Group {sync} - {subject}", body, out)

    def _verdict(self, st: AlertsState, p: dict, verdict: str, out: list[Effect]) -> None:
        vname, sname = p["virtual"], p["server"]
        id_ = f"{vname}/{sname}"
        v = st.virtuals.get(vname)
        if v is None or id_ not in v.servers:
            return
        before = st.verdicts.get(id_)
        st.verdicts[id_] = verdict
        st.health[id_] = verdict
        if before == verdict or (before is None and verdict == ("DOWN" if v.alpha else "UP")):
            return  # as keepalived: a server is up (alpha: down) until its first verdict
        self._server_alert(st, v, id_, verdict, p["detail"], out)
        self._quorum(st, vname, out)

    def _server_alert(self, st: AlertsState, v: _Virtual, id_: str, verdict: str, detail: str,
                      out: list[Effect]) -> None:
        _name, text, _w = v.servers[id_]
        self._fifo(st, "lvs", f"RS {text} {v.text} {verdict}", out)
        if self._mailed(st, "real_server", (f"server:{id_}", f"virtual:{v.name}")):
            body = ("=> CHECK succeed on service <=" if verdict == "UP"
                    else f"=> CHECK failed on service : {detail} <=")
            self._mail(st, "real_server", f"Realserver {text} of virtual server {v.text} - {verdict}", body, out)
        self._command(st, f"notify_{verdict.lower()}", v.commands[id_][verdict], v.name, _name, out)

    def _omega(self, st: AlertsState, group: str, out: list[Effect]) -> None:
        """keepalived's ``omega``: the group stops on this router (its services with it): the
        servers still up go down, then their service's quorum."""
        for v in st.virtuals.values():
            if not v.omega or v.group != group:
                continue
            for id_ in v.servers:
                if self._is_up(st, v, id_) and st.admin.get(id_) is None:
                    st.verdicts[id_] = st.health[id_] = "DOWN"
                    self._server_alert(st, v, id_, "DOWN", "stopping", out)
            self._quorum(st, v.name, out)  # as keepalived: the server's alerts, then its service's quorum

    @staticmethod
    def _is_up(st: AlertsState, v: _Virtual, id_: str) -> bool:
        return st.health.get(id_, "DOWN" if v.alpha else "UP") == "UP"  # no verdict yet: up (alpha: down)

    @staticmethod
    def _weight(st: AlertsState, v: _Virtual) -> int:
        unknown = "DOWN" if v.alpha else "UP"  # no verdict yet: up (alpha: down)
        health = {id_: st.health.get(id_, unknown) for id_ in v.servers}
        return weight_in_service(((id_, w) for id_, (_n, _t, w) in v.servers.items()), health, st.admin)

    def _quorum(self, st: AlertsState, vname: str, out: list[Effect]) -> None:
        v = st.virtuals.get(vname)
        if v is None:
            return
        was = st.quorum.get(vname)
        weight = self._weight(st, v)
        up = quorum_up(weight, v.quorum, v.hysteresis, was)
        st.quorum[vname] = up
        if was is None or up == was:
            return
        word = "UP" if up else "DOWN"
        self._fifo(st, "lvs", f"VS {v.text} {word}", out)
        if self._mailed(st, "virtual_service", (f"virtual:{vname}",)):
            threshold = v.quorum + (v.hysteresis if up else -v.hysteresis)
            body = f"=> {'Gained quorum' if up else 'Lost quorum'} {v.quorum}+{v.hysteresis}={threshold} <= {weight} <="
            self._mail(st, "virtual_service", f"Virtualserver {v.text} - {word}", body, out)
        self._command(st, f"quorum_{word.lower()}", v.quorum_cmds[word], v.name, None, out)

    # -- what to do about it -----------------------------------------------------------------

    @staticmethod
    def _mailed(st: AlertsState, kind: str, targets: tuple[str, ...]) -> bool:
        """Whether an event of ``kind`` about ``targets`` (most precise first) is mailed: the first
        target named in ``mail`` or ``no_mail`` decides, else ``on``."""
        s = st.settings
        if s is None or not s["email"] or s["smtp_server"] is None:
            return False
        for target in targets:
            if target in s["mail"]:
                return True
            if target in s["no_mail"]:
                return False
        return kind in s["on"]

    @staticmethod
    def _command(st: AlertsState, kind: str, command: str | None, virtual: str, server: str | None,
                 out: list[Effect]) -> None:
        if command is None:
            return
        st.commands += 1
        out.append(Effect("alerts.run_command", {
            "id": st.commands, "kind": kind, "command": command, "virtual": virtual, "server": server,
            "timeout_ms": COMMAND_TIMEOUT_MS,
        }))

    @staticmethod
    def _fifo(st: AlertsState, kind: str, line: str, out: list[Effect]) -> None:
        s = st.settings
        if s is None:
            return
        paths = [x for x in (s["notify_fifo"], s["role_notify_fifo" if kind == "role" else "lvs_notify_fifo"])
                 if x is not None]
        if not paths:
            return
        st.lines += 1
        out.append(Effect("alerts.write_fifo", {"paths": paths, "line": line[:MAX_LINE], "kind": kind}))

    @staticmethod
    def _mail(st: AlertsState, kind: str, subject: str, body: str, out: list[Effect]) -> None:
        s = st.settings
        assert s is not None
        st.mails += 1
        out.append(Effect("alerts.send_mail", {
            "id": st.mails, "kind": kind, "server": s["smtp_server"], "port": s["smtp_port"],
            "helo": s["smtp_helo_name"], "timeout": s["smtp_timeout"], "from": s["email_from"],
            "to": list(s["email"]), "subject": f"[{st.router_id}] {subject}"[:MAX_LINE], "body": body[:MAX_LINE],
            "queue": s["queue_size"],
        }))

    # -- config ------------------------------------------------------------------------------

    def _config(self, st: AlertsState, p: dict, out: list[Effect]) -> None:
        try:
            cfg = from_dict(p["model"])
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            st.bad_config += 1
            out.append(Effect("alerts.config_rejected", {"error": str(exc)[:1024], "count": st.bad_config}))
            return
        self._apply(st, cfg, p["model"], p["digest"], p.get("local_router") or "")

    @staticmethod
    def _apply(st: AlertsState, cfg: Config, model: dict, digest: str, local: str) -> None:
        al = cfg.alerts
        st.model, st.digest, st.local = model, digest, local
        st.settings = None if al is None else {
            "email": list(al.email), "email_from": al.email_from, "smtp_server": al.smtp_server,
            "smtp_port": al.smtp_port, "smtp_helo_name": al.smtp_helo_name, "smtp_timeout": al.smtp_timeout,
            "on": list(al.on), "mail": list(al.mail), "no_mail": list(al.no_mail), "notify_fifo": al.notify_fifo,
            "role_notify_fifo": al.role_notify_fifo, "lvs_notify_fifo": al.lvs_notify_fifo,
            "queue_size": al.queue_size,
        }
        st.router_id = (al.router_id if al is not None and al.router_id else local) or "lvsbus"
        members: dict[str, list[str]] = {}
        for g in cfg.groups:
            if g.sync_group:
                members.setdefault(g.sync_group, []).append(g.name)
        st.sync = {s: m for s, m in members.items() if len(m) > 1}
        st.virtuals = {vs.name: _Virtual(vs) for vs in cfg.lvs_services() if vs.active}
        ids = {id_ for v in st.virtuals.values() for id_ in v.servers}
        st.health = {i: h for i, h in st.health.items() if i in ids}
        st.verdicts = {i: h for i, h in st.verdicts.items() if i in ids}
        st.admin = {i: a for i, a in st.admin.items() if i in ids}
        st.quorum = {n: q for n, q in st.quorum.items() if n in st.virtuals}
        for v in st.virtuals.values():  # a new service starts from its quorum now: no alert
            if v.name not in st.quorum:
                st.quorum[v.name] = quorum_up(AlertsCore._weight(st, v), v.quorum, v.hysteresis, None)

    # -- snapshots ---------------------------------------------------------------------------

    def snapshot(self, st: AlertsState) -> Any:
        return {"model": st.model, "digest": st.digest, "local": st.local, "roles": dict(st.roles),
                "sync_roles": dict(st.sync_roles), "health": dict(st.health), "verdicts": dict(st.verdicts),
                "admin": dict(st.admin), "quorum": dict(st.quorum), "mails": st.mails, "lines": st.lines,
                "commands": st.commands, "bad_config": st.bad_config}

    def restore(self, data: Any) -> AlertsState:
        st = AlertsState()
        if data["model"] is not None:
            self._apply(st, from_dict(data["model"]), data["model"], data["digest"], data["local"])
        st.roles, st.sync_roles = dict(data["roles"]), dict(data["sync_roles"])
        st.health, st.verdicts, st.admin = dict(data["health"]), dict(data["verdicts"]), dict(data["admin"])
        st.quorum = dict(data["quorum"])
        st.mails, st.lines, st.bad_config = data["mails"], data["lines"], data["bad_config"]
        st.commands = data.get("commands", 0)  # snapshots before the commands have none
        return st

