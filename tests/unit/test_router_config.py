"""The config a service runs with is the one the router accepted and recorded, not what the file
holds now: an operator's typo whose reload was refused stays on disk, and a service restarted
later (a crash, SIGKILL, lvsd on a takeover, nanny after a capability change) must not read it.

* ``Supervisor.reload`` moves ``--config-seq`` (every service's command line, restarts included) to the
  seq of the ``config.loaded`` it accepted, and only then (no fake processes: a fake bus client);
* a real ``lvsbus router`` in a network namespace: an accepted reload (new key file, the old one
  removed; a new metrics port), then a broken file refused on SIGHUP, then SIGKILL of every
  service: each comes back once with the accepted config, and the router does not step down.
"""
from __future__ import annotations

import os

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.host import netutil
from lvsbus.router.supervisor import SERVICES, Child, Supervisor
from lvsbus.demo.netns import write_key

CONFIG = """
[router.lvs1]
address = "127.0.0.1"

[heartbeat]
key_file = "{key}"
garp_repeat = {garp}

[virtual.web]
address = "192.0.2.80"
port = 80

[virtual.web.server.a]
address = "10.0.0.11"
"""


class FakeClient:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict]] = []
        self.seq = 40
        self.down = False

    def publish_acked(self, type_, payload, timeout=None):
        if self.down:
            raise TimeoutError("no ack")
        self.seq += 1
        self.published.append((type_, payload))
        return self.seq

    def publish(self, type_, payload):
        self.seq += 1
        self.published.append((type_, payload))


def _config_seq(child: Child) -> int:
    return int(child.argv[child.argv.index("--config-seq") + 1])


def test_reload_moves_every_services_config_seq_only_when_accepted_and_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(netutil, "local_addresses", lambda: {"127.0.0.1"})
    key = write_key(tmp_path / "hb.key")
    path = tmp_path / "lvs.toml"
    path.write_text(CONFIG.format(key=key, garp=3))
    r = Supervisor(str(path), str(tmp_path / "s"))
    assert r.prepare() == 0
    r.client = FakeClient()
    r.run_start_seq = r.config_seq = 40  # as run() does after publishing the run's config.loaded
    r.children = {name: r._service_child(name, module) for name, module, _w in SERVICES}
    assert {_config_seq(c) for c in r.children.values()} == {40}
    assert all(c.argv[c.argv.index("--config") + 1] == str(path) for c in r.children.values())

    path.write_text(CONFIG.format(key=key, garp=2))
    assert r.reload()
    assert r.client.published[-1][0] == "config.loaded" and r.config_seq == 41
    assert {_config_seq(c) for c in r.children.values()} == {41}  # every later (re)start uses it
    assert r.loaded.config.heartbeat.garp_repeat == 2

    path.write_text("[virtual.web\n")  # a typo: refused, the accepted config stays in force
    assert not r.reload()
    assert r.client.published[-1][0] == "config.reload_refused"
    assert {_config_seq(c) for c in r.children.values()} == {41} and r.loaded.config.heartbeat.garp_repeat == 2

    path.write_text(CONFIG.format(key=key, garp=4))
    r.client.down = True  # valid, but the bus did not acknowledge it: not in force (SIGHUP again)
    assert not r.reload()
    assert {_config_seq(c) for c in r.children.values()} == {41} and r.loaded.config.heartbeat.garp_repeat == 2
    r.client.down = False
    assert r.reload() and r.config_seq == r.client.seq
    assert {_config_seq(c) for c in r.children.values()} == {r.client.seq}


def test_a_missing_key_file_is_named_first_with_the_command_that_makes_one(tmp_path, monkeypatch, capsys):
    """At start and on a reload, the message starts with the key file's path (it said '<config>:'
    on a reload) and says how to make one."""
    monkeypatch.setattr(netutil, "local_addresses", lambda: {"127.0.0.1"})
    key = write_key(tmp_path / "hb.key")
    path = tmp_path / "lvs.toml"
    path.write_text(CONFIG.format(key=key, garp=3))
    r = Supervisor(str(path), str(tmp_path / "s"))
    assert r.prepare() == 0
    r.client = FakeClient()
    r.run_start_seq = r.config_seq = 40
    gone = tmp_path / "gone.key"
    want = (f"{gone}: heartbeat key file: No such file or directory; create one with: lvsbus keys heartbeat --out {gone} "
            "(then copy that same file to every router)")
    path.write_text(CONFIG.format(key=gone, garp=3))
    assert not r.reload()
    kind, payload = r.client.published[-1]
    assert kind == "config.reload_refused" and payload["errors"] == [want]
    assert Supervisor(str(path), str(tmp_path / "s2")).prepare() == 1
    assert capsys.readouterr().err.strip() == f"lvsbus router: {want}"
    gone.write_bytes(b"x" * 32)
    os.chmod(gone, 0o644)
    assert not r.reload()
    assert r.client.published[-1][1]["errors"][0].startswith(f"{gone}: heartbeat key file has mode 0644")


class FakeLvsd(Child):
    """lvsd's child without a process: what the supervisor asks of it."""

    def __init__(self, argv: list[str]) -> None:
        super().__init__("lvsd", argv)
        self.up = False
        self.starts: list[list[str]] = []
        self.told: list[bytes] = []
        self.reachable = True

    def alive(self) -> bool:
        return self.up

    def start(self) -> None:
        self.wanted, self.up = True, True
        self.starts.append(list(self.argv))

    def tell(self, line: bytes) -> bool:
        if self.up and self.reachable:
            self.told.append(line)
            return True
        return False

    def stop(self, timeout: float = 0) -> None:
        self.wanted, self.up, self.kill_at = False, False, None

    def terminate(self) -> None:  # and it exits at once
        self.stop()


def test_the_backup_keeps_a_standby_lvsd_that_a_takeover_tells_to_go(tmp_path, monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(netutil, "local_addresses", lambda: {"127.0.0.1"})
    path = tmp_path / "lvs.toml"
    path.write_text(CONFIG.format(key=write_key(tmp_path / "hb.key"), garp=3))
    r = Supervisor(str(path), str(tmp_path / "s"))
    assert r.prepare() == 0
    r.client = FakeClient()
    r.run_start_seq = r.config_seq = 40
    lvsd = r.children["lvsd"] = FakeLvsd(r._service_argv("lvsbus_services.lvsd"))
    ev = lambda t: SimpleNamespace(type=t, seq=50, payload={})  # noqa: E731

    r._start_lvsd(standby=True)  # as run() does: the router starts as a backup
    assert lvsd.starts[-1][-1] == "--standby" and lvsd.stdin_pipe and r.lvsd_standby
    r._on_event(ev("pulse.start_lvsd"))  # the takeover: no new process, a line on its stdin
    assert lvsd.told == [b"go\n"] and len(lvsd.starts) == 1 and not r.lvsd_standby
    assert "--standby" not in lvsd.argv  # a crash from now on restarts it active
    r._on_event(ev("pulse.stop_lvsd"))  # stepping down: it stops, and a new standby follows
    assert not lvsd.alive()
    assert r._supervise()
    assert len(lvsd.starts) == 2 and lvsd.starts[-1][-1] == "--standby" and r.lvsd_standby
    lvsd.reachable = False  # a standby that cannot be told: stopped, and an active one started
    r._on_event(ev("pulse.start_lvsd"))
    assert len(lvsd.starts) == 3 and "--standby" not in lvsd.starts[-1] and not r.lvsd_standby
    r.stopping = True  # no standby while the router stops
    r._on_event(ev("pulse.stop_lvsd"))
    assert r._supervise() and len(lvsd.starts) == 3


def test_a_start_lvsd_again_while_lvsd_runs_leaves_it_alone(tmp_path, monkeypatch):
    """Failover groups (issue 14): pulse sends start_lvsd again whenever the groups it holds change;
    the running lvsd is neither restarted, told again nor stopped (its core publishes the new table)."""
    from types import SimpleNamespace

    monkeypatch.setattr(netutil, "local_addresses", lambda: {"127.0.0.1"})
    path = tmp_path / "lvs.toml"
    path.write_text(CONFIG.format(key=write_key(tmp_path / "hb.key"), garp=3))
    r = Supervisor(str(path), str(tmp_path / "s"))
    assert r.prepare() == 0
    r.client = FakeClient()
    r.run_start_seq = r.config_seq = 40
    lvsd = r.children["lvsd"] = FakeLvsd(r._service_argv("lvsbus_services.lvsd"))
    r._start_lvsd(standby=True)
    start = lambda groups: SimpleNamespace(type="pulse.start_lvsd", seq=50,  # noqa: E731
                                           payload={"reason": "no_active", "groups": groups})
    r._on_event(start(["web"]))
    assert lvsd.told == [b"go\n"] and len(lvsd.starts) == 1 and lvsd.alive()
    for groups in (["web", "mail"], ["mail"], None):
        r._on_event(start(groups))
        assert r._supervise()
        assert lvsd.told == [b"go\n"] and len(lvsd.starts) == 1 and lvsd.alive() and lvsd.wanted and r.active


# -- a real router in a namespace -------------------------------------------------------------


def test_a_router_refuses_to_start_without_one_of_its_services(monkeypatch):
    """Every service module is part of lvsbus: one missing is a broken installation, said at start
    (the router once skipped a missing one silently: scaffolding from when services were written
    one by one)."""
    from lvsbus.router import supervisor as routermod

    assert routermod._missing_services() == []  # this installation has them all
    monkeypatch.setattr(routermod, "SERVICES", routermod.SERVICES + (("gone", "lvsbus_services.gone", "always"),))
    assert routermod._missing_services() == ["lvsbus_services.gone"]
