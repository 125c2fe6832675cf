"""keepalived.conf as a config format (lvsbus/config/keepalived.py, docs/keepalived.md): one router's
file of an active/active pair (tests/fixtures/keepalived-pair, written for lvsbus) maps onto groups,
tracks, virtual services and checks; everything lvsbus does not run is a warning with its file
and line; errors (here or in an included file) name theirs; check-config, convert and diff take it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lvsbus.cli import main as cli
from lvsbus.config import ConfigError, detect_format, loads
from lvsbus.host.configfiles import load_config as load
from lvsbus.config.model import CheckKind, Forwarding, TrackKind

PAIR = Path(__file__).parents[1] / "fixtures" / "keepalived-pair"


@pytest.fixture
def pair(tmp_path: Path) -> Path:
    shutil.copytree(PAIR, tmp_path / "k")
    return tmp_path / "k" / "keepalived.conf"


def test_the_pair_maps_onto_groups_tracks_services_and_checks(pair):
    loaded = load(str(pair))
    cfg = loaded.config
    assert loaded.format == "keepalived"
    assert [(r.name, r.address) for r in cfg.routers] == [("lvs-10-0-0-1", "10.0.0.1"), ("lvs-10-0-0-2", "10.0.0.2")]
    assert cfg.heartbeat.keepalive == 1.0 and cfg.heartbeat.deadtime == 3.0  # advert_int, 3 adverts
    web, mail = cfg.group("WEB"), cfg.group("MAIL")
    # this router's priorities; the peer's a placeholder until its heartbeats say: below where
    # this one is MASTER, above where it is BACKUP
    assert dict(web.priority) == {"lvs-10-0-0-1": 150, "lvs-10-0-0-2": 149}
    assert dict(mail.priority) == {"lvs-10-0-0-1": 100, "lvs-10-0-0-2": 101}
    assert web.preempt is True and mail.preempt is False and web.active_cmd == "/usr/local/bin/master.sh"
    vs1, vs2 = cfg.virtual_services
    assert (vs1.address, vs1.port, vs1.group, vs1.device, vs1.label, vs1.vip_prefixlen) == \
        ("192.0.2.10", 80, "WEB", "eth0", "eth0:1", 24)
    assert (vs1.scheduler, vs1.forwarding, vs1.persistence, vs1.sorry_server, vs1.sorry_server_port) == \
        ("wlc", Forwarding.NAT, 300, "10.1.0.99", 80)
    assert vs1.check.kind is CheckKind.HTTP and vs1.check.path == "/healthz" and vs1.check.status == (200, 201, 202, 203, 204)
    assert (vs1.check.interval, vs1.check.timeout, vs1.check.fall) == (6.0, 3.0, 3)  # retry 2: 3 failures
    assert vs1.servers[0].weight == 2 and vs1.servers[1].check.kind is CheckKind.TCP_CONNECT
    assert vs2.group == "MAIL" and vs2.check.kind is CheckKind.PROGRAM and vs2.check.command == "/usr/local/bin/check-smtp 10.1.0.21"
    # a VIP no virtual server uses, with NAT services: the real servers' gateway
    assert cfg.nat_router is not None and (cfg.nat_router.address, cfg.nat_router.device, cfg.nat_router.group) == \
        ("10.1.0.254", "eth1", "WEB")
    kinds = {t.name: (t.kind, t.weight, t.groups) for t in cfg.tracks}
    assert kinds == {"WEB-if-eth1": (TrackKind.INTERFACE, -60, ("WEB",)),
                     "chk_haproxy-WEB": (TrackKind.SCRIPT, -30, ("WEB",))}
    script = [t for t in cfg.tracks if t.kind is TrackKind.SCRIPT][0]
    assert (script.command, script.interval, script.rise, script.fall) == ("pidof haproxy", 2.0, 2, 2)


def test_what_lvsbus_does_not_run_is_a_warning_with_its_line(pair):
    shown = [str(w) for w in load(str(pair)).warnings]
    assert f"{pair}:15: virtual_router_id: VRRP on the wire: lvsbus routers speak their own authenticated " \
           "heartbeat (a keepalived and an lvsbus router cannot be peers); the group is named by the instance" in shown
    assert any(s.startswith(f"{pair}:22: authentication:") for s in shown)
    text = pair.read_text().replace("    nopreempt\n", "    nopreempt\n    use_vmac\n    smtp_alert\n")
    pair.write_text(text)
    shown = [str(w) for w in load(str(pair)).warnings]
    assert f"{pair}:44: 'use_vmac' is not run by lvsbus: ignored" in shown
    assert f"{pair}:45: smtp_alert: no mail relay and recipients (global_defs smtp_server, notification_email): " \
           "nothing is mailed" in shown  # the file has none (tests/unit/test_keepalived_alerts.py: with them)


def test_errors_name_the_file_and_line_also_in_an_included_file(pair):
    web = pair.parent / "conf.d" / "web.conf"
    web.write_text(web.read_text().replace("lb_algo rr", "lb_algo bogus").replace("quorum 1", "quorum -1"))
    with pytest.raises(ConfigError) as ei:
        load(str(pair))
    shown = [str(i) for i in ei.value.issues]
    assert f"{web}:29: lb_algo 'bogus': one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos" in shown
    assert any(s.startswith(f"{web}:7: virtual.vs1.quorum: -1 is out of range") for s in shown), shown


def test_multicast_vrrp_is_refused_with_the_reason(pair):
    text = pair.read_text().replace("    unicast_src_ip 10.0.0.1\n", "")
    with pytest.raises(ConfigError) as ei:
        loads(text, str(pair))
    assert "lvsbus routers find their peers by address: give unicast_src_ip and unicast_peer" in str(ei.value)
    assert f"{pair}:12:" in str(ei.value)


def test_conditional_lines_follow_the_config_id(pair, monkeypatch):
    text = pair.read_text().replace("    priority 150\n", "@lvs1 priority 150\n@lvs2 priority 90\n")
    pair.write_text(text)
    monkeypatch.setenv("LVSBUS_CONFIG_ID", "lvs2")
    assert dict(load(str(pair)).config.group("WEB").priority)["lvs-10-0-0-1"] == 90


def test_the_format_is_detected_from_the_content():
    assert detect_format("keepalived.conf", "! x\nglobal_defs {\n}\n") == "keepalived"
    assert detect_format("lb.conf", "vrrp_instance VI_1 {\n}\n") == "keepalived"
    assert detect_format("lvs.conf", "primary = 10.0.0.1\nvirtual web {\n}\n") == "lvscf"
    assert detect_format("x.toml", "global_defs {\n") == "toml"


def test_check_config_convert_and_diff_across_formats(pair, tmp_path, capsys):
    assert cli(["check-config", str(pair)]) == 0
    out = capsys.readouterr()
    assert "keepalived file" in out.out and "WEB: priority lvs-10-0-0-1 150" in out.out
    assert cli(["config", "convert", str(pair)]) == 0
    toml = tmp_path / "lvsbus.toml"
    toml.write_text(capsys.readouterr().out)
    assert load(str(toml)).config == load(str(pair)).config
    assert cli(["config", "diff", str(pair), str(toml)]) == 0
    assert "no changes" in capsys.readouterr().out


def test_virtual_server_groups_ranges_and_fwmarks(pair):
    text = pair.read_text().replace("        192.0.2.20/24 dev eth0\n", "        192.0.2.20/24 dev eth0\n        192.0.2.30/24 dev eth0\n")
    text += """
virtual_server_group MAILS {
    192.0.2.20 25
    192.0.2.21-22 587
    fwmark 7
}
virtual_server group MAILS {
    lb_algo rr
    lb_kind DR
    real_server 10.1.0.21 25 {
        TCP_CHECK {
            connect_timeout 2
        }
    }
}
virtual_server fwmark 9 {
    lb_kind NAT
    persistence_timeout
    real_server 10.1.0.31 {
        TCP_CHECK {
            connect_port 443
        }
    }
}
virtual_server_group UNUSED {
    192.0.2.99 80
}
"""
    pair.write_text(text.replace("include conf.d/*.conf\n", ""))
    loaded = load(str(pair))
    got = [(v.name, v.address, v.port, v.fwmark, v.group, [(s.address, s.port) for s in v.servers])
           for v in loaded.config.virtual_services]
    assert got == [
        ("vs1-1", "192.0.2.20", 25, None, "MAIL", [("10.1.0.21", None)]),
        ("vs1-2", "192.0.2.21", 587, None, None, [("10.1.0.21", 25)]),
        ("vs1-3", "192.0.2.22", 587, None, None, [("10.1.0.21", 25)]),
        # a fwmark holds the first VIP no virtual_server names
        ("vs1-4", "192.0.2.10", 25, 7, "WEB", [("10.1.0.21", None)]),
        # no port on a fwmark's real server: the client's (IPVS port 0)
        ("vs2", "192.0.2.10", 0, 9, "WEB", [("10.1.0.31", None)]),
    ]
    assert loaded.config.virtual_services[4].persistence == 360 and loaded.config.virtual_services[4].check.port == 443
    shown = [str(w) for w in loaded.warnings]
    assert any("virtual_server_group UNUSED: no virtual_server names it" in s for s in shown)
    assert any("fwmark 7: lvsbus holds VIP 192.0.2.10 for it" in s for s in shown)
    assert any("VIP 192.0.2.30: no virtual_server uses it" in s for s in shown)
    with pytest.raises(ConfigError) as ei:
        loads(text.replace("192.0.2.21-22 587", "192.0.2.21-2 587").replace("include conf.d/*.conf\n", ""), str(pair))
    assert "the range's last part must follow the address's" in str(ei.value)


def test_the_load_bench_runs_and_its_config_maps_every_server():
    """bench/keepalived_load.py (1,000 x 10 under 1 s: README's bench table), small: its config
    loads with every virtual and real server, nothing in it ignored, and it prints its figures."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(root / "bench" / "keepalived_load.py"), "--services", "30",
                          "--servers", "4", "--runs", "1"], capture_output=True, text=True, timeout=120, check=True).stdout
    figures = dict(line.split("=", 1) for line in out.splitlines())
    assert figures["real_servers"] == "120 servers"
    assert {"parse_s", "load_s", "load_max_s", "toml_load_s", "target_met"} <= figures.keys()
    sys.path.insert(0, str(root / "bench"))
    try:
        from keepalived_load import make
    finally:
        sys.path.remove(str(root / "bench"))
    loaded = loads(make(30, 4), "keepalived.conf", format="keepalived")
    assert len(loaded.config.virtual_services) == 30
    assert sum(len(v.servers) for v in loaded.config.virtual_services) == 120
    assert not [w for w in loaded.warnings if "ignored" in w.message], loaded.warnings  # every keyword is run


GARP = """
global_defs {
    vrrp_garp_master_repeat 3
    vrrp_garp_master_refresh 60
    vrrp_garp_master_delay 10
    script_user nobody
    enable_script_security
}
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    priority 150
    garp_master_repeat 4
    unicast_src_ip 10.0.0.1
    unicast_peer {
        10.0.0.2
    }
    virtual_ipaddress {
        192.0.2.80/32 dev eth0
    }
}
"""


def test_garp_settings_map_the_instance_s_first_and_script_security_is_said():
    loaded = loads(GARP, "keepalived.conf", format="keepalived")
    hb = loaded.config.heartbeat
    assert (hb.garp_repeat, hb.garp_refresh) == (4, 60.0)  # the instance's repeat, global_defs' refresh
    said = {w.line: w.message for w in loaded.warnings}
    assert "4 (line 13) is used" in said[3]
    assert said[5].startswith("vrrp_garp_master_delay:") and said[6].startswith("script_user:")
    assert said[7].startswith("enable_script_security:")
    assert not [w for w in loaded.warnings if "ignored" in w.message]
    with pytest.raises(ConfigError, match=r"keepalived.conf:3: vrrp_garp_master_repeat 0: 1..100"):
        loads(GARP.replace("repeat 3", "repeat 0").replace("    garp_master_repeat 4\n", ""), "keepalived.conf",
              format="keepalived")


def test_notify_fault_is_the_group_s_fault_cmd():
    text = GARP.replace("    garp_master_repeat 4\n", '    notify_fault "/usr/local/bin/vrrp.fault arg1"\n    notify_master /bin/up\n')
    loaded = loads(text, "keepalived.conf", format="keepalived")
    (g,) = loaded.config.groups
    assert (g.fault_cmd, g.active_cmd) == ("/usr/local/bin/vrrp.fault arg1", "/bin/up")
    assert not [w for w in loaded.warnings if "notify_fault" in w.message]


def test_scheduler_flags_and_ops():
    text = """
virtual_server 192.0.2.80 5060 {
    lb_algo sh
    sh-port
    flag-1
    ops
    ha_suspend
    protocol UDP
    real_server 10.0.0.11 5060 {
    }
}
"""
    loaded = loads(text, "keepalived.conf", format="keepalived")
    (vs,) = loaded.config.virtual_services
    assert (vs.scheduler, vs.scheduler_flags, vs.ops) == ("sh", ("sh-port", "sh-fallback"), True)
    said = {w.line: w.message for w in loaded.warnings}
    assert said[7].startswith("ha_suspend: lvsbus checks the real servers on every router")
    with pytest.raises(ConfigError, match=r"keepalived.conf:4: .*sh-port is a flag of the sh scheduler"):
        loads(text.replace("lb_algo sh", "lb_algo rr").replace("    flag-1\n", ""), "keepalived.conf", format="keepalived")
