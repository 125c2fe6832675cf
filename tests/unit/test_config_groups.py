"""Failover groups in the config ([group.NAME], keepalived's VRRP instances): every validator rule
(with the file and line of the key at fault), the TOML round trip, and the VIPs each group holds."""
from __future__ import annotations

import pytest

from lvsbus.config import ConfigError, loads, to_dict
from lvsbus.config.model import MAX_GROUP_NAME, MAX_GROUPS, Severity

BASE = """
[router.r1]
address = "10.0.0.1"
priority = 150

[router.r2]
address = "10.0.0.2"
priority = 100

[group.web]
priority = {r1 = 200, r2 = 100}
preempt_delay = 5.0
active_cmd = "/usr/local/bin/web-up"

[group.mail]
priority = {r1 = 100, r2 = 200}
preempt = false

[virtual.web]
address = "192.0.2.10"
port = 80
forwarding = "direct"
group = "web"

[virtual.web.server.a]
address = "10.1.0.1"

[virtual.mail]
address = "192.0.2.20"
port = 25
forwarding = "direct"
group = "mail"

[virtual.mail.server.a]
address = "10.1.0.2"
"""


def errors(text: str) -> list:
    with pytest.raises(ConfigError) as ei:
        loads(text, "g.toml")
    return [i for i in ei.value.issues if i.severity is Severity.ERROR]


def one_error(text: str, key: str, words: str):
    errs = errors(text)
    hits = [i for i in errs if i.key == key and words in i.message]
    assert hits, [(i.key, i.message) for i in errs]
    return hits[0]


def warnings(text: str) -> list[tuple[str, str]]:
    return [(i.key, i.message) for i in loads(text, "g.toml").warnings]


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def test_a_good_config_round_trips():
    cfg = loads(BASE, "g.toml").config
    assert cfg.group_names() == ("web", "mail")
    web = cfg.group("web")
    assert web.priority_on(cfg.routers[1]) == 100 and web.preempt_delay == 5.0
    assert cfg.group("mail").preempt is False
    assert not warnings(BASE)
    again = loads(BASE, "g.toml").config
    assert to_dict(again) == to_dict(cfg)


def test_a_service_naming_an_undeclared_group_is_an_error_with_its_line():
    text = BASE.replace('group = "mail"', 'group = "mial"')
    issue = one_error(text, "virtual.mail.group", "'mial' is not declared")
    assert issue.suggestion == "mail"
    assert issue.line == line_of(text, 'group = "mial"') and issue.file == "g.toml"


def test_the_default_group_needs_no_declaration():
    text = BASE.replace('group = "mail"', 'group = "default"')
    cfg = loads(text, "g.toml").config
    assert cfg.group_names() == ("default", "web", "mail")
    assert ("group.mail", "no virtual service, failover service or nat_router names this group: "
                          "it is elected, but holds no VIP") in warnings(text)


def test_priorities_name_configured_routers_in_range_and_distinct():
    one_error(BASE.replace("{r1 = 200, r2 = 100}", "{r1 = 200, r3 = 100}"), "group.web.priority.r3",
              "'r3' is not a configured router")
    one_error(BASE.replace("{r1 = 200, r2 = 100}", "{r1 = 256, r2 = 100}"), "group.web.priority.r1",
              "out of range")
    # equal effective priorities: r2 takes its router priority (100) when the group names r1 only
    one_error(BASE.replace("{r1 = 200, r2 = 100}", "{r1 = 100}"), "group.web.priority",
              "both have priority 100")


def test_preempt_delay_and_commands():
    one_error(BASE.replace("preempt_delay = 5.0", "preempt_delay = -1.0"), "group.web.preempt_delay",
              "out of range")
    one_error(BASE.replace('active_cmd = "/usr/local/bin/web-up"', 'active_cmd = "  "'),
              "group.web.active_cmd", "is empty")


def test_names_fit_the_heartbeat():
    long = "w" * (MAX_GROUP_NAME + 1)
    text = BASE.replace("[group.web]", f"[group.{long}]").replace('group = "web"', f'group = "{long}"')
    one_error(text, f"group.{long}", f"at most {MAX_GROUP_NAME}")
    many = "".join(f'\n[group.g{i}]\n' for i in range(MAX_GROUPS))
    one_error(BASE + many, "group", f"at most {MAX_GROUPS}")


def test_one_vip_one_group():
    text = BASE.replace('address = "192.0.2.20"', 'address = "192.0.2.10"')
    one_error(text, "virtual.mail.group", "VIP 192.0.2.10 is in failover group 'web' (virtual web) and in 'mail'")


def test_tracks_name_groups_that_exist():
    text = BASE + '\n[track.up]\nkind = "interface"\ndevice = "eth1"\ngroups = ["web", "nope"]\n'
    one_error(text, "track.up.groups", "'nope' is not declared")
    ok = BASE + '\n[track.up]\nkind = "interface"\ndevice = "eth1"\nweight = -60\ngroups = ["web"]\n'
    assert loads(ok, "g.toml").config.tracks[0].groups == ("web",)


def test_a_sync_group_of_one_is_a_warning():
    text = BASE.replace("preempt = false", 'preempt = false\nsync_group = "both"')
    assert any(k == "group.mail.sync_group" and "no other member" in m for k, m in warnings(text))
    both = text.replace("preempt_delay = 5.0", 'preempt_delay = 5.0\nsync_group = "both"')
    assert not [w for w in warnings(both) if "sync_group" in w[0]]
