"""Tracked items in the config ([track.NAME], docs/config.md "Tracking"): what each kind needs, keys
another kind uses, the routers and groups named, and the tracked service (kind = "service")."""
from __future__ import annotations

import pytest

from lvsbus.config import ConfigError, loads, loads_toml, render_toml
from lvsbus.config.model import Severity, TrackKind

BASE = """
[router.r1]
address = "10.0.0.1"
priority = 200

[router.r2]
address = "10.0.0.2"
priority = 100

[virtual.web]
address = "192.0.2.10"
port = 80
forwarding = "direct"
quorum = 2

[virtual.web.server.a]
address = "10.1.0.1"

[virtual.web.server.b]
address = "10.1.0.2"

[virtual.old]
address = "192.0.2.11"
port = 80
forwarding = "direct"
active = false
"""


def issue(track: str, key: str, words: str):
    text = BASE + "\n[track.t]\n" + track + "\n"
    with pytest.raises(ConfigError) as ei:
        loads(text, "t.toml")
    hits = [i for i in ei.value.issues if i.severity is Severity.ERROR and i.key == key and words in i.message]
    assert hits, [(i.key, i.message) for i in ei.value.issues]
    line = next(n for n, row in enumerate(text.splitlines(), 1) if row.startswith(key.rsplit(".", 1)[1] + " ="))
    assert hits[0].line == line and hits[0].file == "t.toml"
    return hits[0]


def test_every_kind_loads_and_round_trips():
    text = BASE + """
[track.uplink]
kind = "interface"
device = "eth2"
weight = -60

[track.proc]
kind = "script"
command = "pidof haproxy"
rise = 2
fall = 3
weight = -30

[track.adjust]
kind = "file"
path = "/etc/lvsbus/adjust"
weight = 1

[track.websvc]
kind = "service"
virtual = "web"
weight = -150
on_routers = ["r1"]
"""
    cfg = loads(text, "t.toml").config
    assert [t.kind for t in cfg.tracks] == [TrackKind.INTERFACE, TrackKind.SCRIPT, TrackKind.FILE, TrackKind.SERVICE]
    assert cfg.tracks[3].virtual == "web" and cfg.tracks[3].applies_to("r1") and not cfg.tracks[3].applies_to("r2")
    assert loads_toml(render_toml(cfg)).config == cfg


def test_what_each_kind_needs():
    with pytest.raises(ConfigError) as ei:
        loads(BASE + '\n[track.t]\nkind = "interface"\n', "t.toml")
    assert any(i.key == "track.t.device" and "needs the device" in i.message for i in ei.value.issues)
    with pytest.raises(ConfigError) as ei:
        loads(BASE + '\n[track.t]\nkind = "script"\n', "t.toml")
    assert any(i.key == "track.t.command" and "needs the command" in i.message for i in ei.value.issues)
    issue('kind = "file"\npath = "relative/x"', "track.t.path", "must be an absolute path")
    issue('kind = "interface"\ndevice = "eth2"\npath = "/x"', "track.t.path", "is not used by kind = 'interface'")
    issue('kind = "file"\npath = "/x"\nweight = 300', "track.t.weight", "out of range")
    issue('kind = "interface"\ndevice = "eth2"\non_routers = ["r9"]', "track.t.on_routers", "'r9' is not a configured router")


def test_a_tracked_service():
    issue('kind = "service"\nvirtual = "wbe"\nweight = -150', "track.t.virtual", "'wbe' is not a virtual service")
    assert issue('kind = "service"\nvirtual = "wbe"\nweight = -150', "track.t.virtual", "").suggestion == "web"
    issue('kind = "service"\nvirtual = "old"\nweight = -150', "track.t.virtual", "is not active")
    issue('kind = "service"\nvirtual = "web"\nweight = 0', "track.t.weight", "give a negative weight")
    issue('kind = "service"\nvirtual = "web"\nweight = -10\nreverse = true', "track.t.reverse", "is not used by kind = 'service'")
    issue('kind = "interface"\ndevice = "eth2"\nvirtual = "web"', "track.t.virtual", "is not used by kind = 'interface'")
    with pytest.raises(ConfigError) as ei:
        loads(BASE + '\n[track.t]\nkind = "service"\nweight = -10\n', "t.toml")
    assert any(i.key == "track.t.virtual" and "needs the virtual service" in i.message for i in ei.value.issues)
