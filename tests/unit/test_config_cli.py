"""The lvsbus check-config / config convert / config diff commands."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lvsbus.cli import main
from lvsbus.config import load, loads_toml

LVSCF = Path(__file__).parents[1] / "fixtures" / "lvscf"
TOML = Path(__file__).parents[1] / "fixtures" / "toml"


@pytest.fixture(autouse=True)
def not_a_router_host(monkeypatch):
    """check-config also checks this host as one of the config's routers (its heartbeat key file):
    these tests are about the file, so this host is none of the fixtures' routers, whatever
    addresses the machine running them has (some fixtures use 192.0.2.2 and fd00::2)."""
    from lvsbus.host import netutil

    monkeypatch.setattr(netutil, "local_addresses", lambda: {"203.0.113.254"})


def test_check_config_valid(capsys):
    assert main(["check-config", str(LVSCF / "nat_router.cf")]) == 0
    out = capsys.readouterr().out
    assert "routers:\n  primary: 192.0.2.1, priority 200\n  backup: 192.0.2.2, priority 100" in out
    assert "nat router: 10.10.0.254/24 dev eth1:1" in out
    assert "  http: 192.0.2.80:80/tcp dev eth0:1, wrr, nat" in out
    assert "    check: tcp_send_expect, every 2s, timeout 2s, rise 90 (1 at first start), fall 5" in out
    assert "    server app3: 10.10.0.13:8080, weight 1 [inactive]" in out
    assert "  dns: 192.0.2.53:53/udp dev eth0:2, rr, nat" in out
    assert out.rstrip().endswith("valid (0 warnings)")


def test_check_config_shows_warnings(capsys):
    assert main(["check-config", str(LVSCF / "sorry_server.cf")]) == 0
    out = capsys.readouterr().out
    assert f"warning: {LVSCF / 'sorry_server.cf'}:12: ipvsadm: obsolete keyword" in out
    assert "sorry server 203.0.113.99" in out
    assert "valid (7 warnings)" in out  # debug_level = 1 too


def test_check_config_invalid_lists_every_error(capsys):
    assert main(["check-config", str(LVSCF / "broken_many.cf")]) == 1
    captured = capsys.readouterr()
    errors = [l for l in captured.err.splitlines() if l.startswith("error: ")]
    assert len(errors) == 6
    assert errors[1] == (f"error: {LVSCF / 'broken_many.cf'}:4: netwrok: unknown keyword 'netwrok' in "
                         "the global section (did you mean 'network'?)")
    assert "invalid, 6 errors" in captured.err
    assert captured.out == ""


def test_check_config_json(capsys):
    assert main(["check-config", "--json", str(TOML / "ipv6.toml")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["virtual_services"][0]["address"] == "2001:db8:0:1::80"


def test_check_config_missing_file(capsys, tmp_path):
    assert main(["check-config", str(tmp_path / "nope.cf")]) == 1
    assert "cannot read the file" in capsys.readouterr().err


def test_convert_prints_loadable_toml(capsys):
    assert main(["config", "convert", str(LVSCF / "fwmark.cf")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# lvsbus native configuration, converted from ")
    assert "[virtual.webshop]" in out and "fwmark = 80" in out
    assert loads_toml(out, "converted.toml").config == load(str(LVSCF / "fwmark.cf")).config


def test_convert_sends_warnings_to_stderr(capsys):
    assert main(["config", "convert", str(LVSCF / "sorry_server.cf")]) == 0
    captured = capsys.readouterr()
    assert "warning:" not in captured.out and "rsh_command" in captured.err


def test_diff(capsys, tmp_path):
    old = (LVSCF / "nat_router.cf").read_text()
    new = old.replace("weight = 50", "weight = 60").replace("virtual dns {", "virtual dns2 {")
    (tmp_path / "old.cf").write_text(old)
    (tmp_path / "new.cf").write_text(new)
    assert main(["config", "diff", str(tmp_path / "old.cf"), str(tmp_path / "new.cf")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "+ virtual dns2" in out and "- virtual dns" in out
    assert "~ virtual http: real servers" in out
    assert "    ~ server app2: weight" in out
    assert "    = servers unchanged: app1, app3" in out
    assert "= virtual unchanged: https" in out
    assert main(["config", "diff", "--json", str(tmp_path / "old.cf"), str(tmp_path / "old.cf")]) == 0
    assert json.loads(capsys.readouterr().out)["is_empty"] is True
    assert main(["config", "diff", str(tmp_path / "old.cf"), str(tmp_path / "old.cf")]) == 0
    assert capsys.readouterr().out.strip() == "no changes"


# -- several files: one per router of a scale-out group, compared ------------------------------


def _group(tmp_path, **changes: str) -> list[str]:
    """r1.toml and r2.toml, a scale-out group's two routers' files (tests/helpers/lvs_config.py's,
    real server s1 with weight 2 at line 15, [scaleout] at line 17); ``weight``: r2's weight line."""
    from tests.helpers.lvs_config import lvs_toml, scaleout_toml

    base = lvs_toml("mh") + "weight = 2\n" + scaleout_toml()
    paths = []
    for name, text in (("r1.toml", base), ("r2.toml", base.replace("weight = 2", changes.get("weight", "weight = 2")))):
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    return paths


def test_check_config_several_routers_the_same(capsys, tmp_path):
    r1, r2 = _group(tmp_path)
    assert main(["check-config", r1, r2]) == 0
    out = capsys.readouterr().out
    assert f"{r1}: valid (0 warnings)" in out and f"{r2}: valid (0 warnings)" in out
    assert out.count("  web: 10.200.0.1:80/tcp, mh, direct") == 2  # each file described as on its own
    assert out.rstrip().endswith(f"{r1}, {r2}: the same on 2 routers (virtual services, schedulers, forwarding, "
                                 "real servers, weights and order, VIPs)")


def test_check_config_several_routers_that_differ(capsys, tmp_path):
    r1, r2 = _group(tmp_path, weight="weight = 3")
    assert main(["check-config", "-q", r1, r2]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"{r1}: valid (0 warnings)", f"{r2}: valid (0 warnings)"]
    assert captured.err.splitlines() == [
        f"error: {r2}:15: virtual.web.server.s1.weight: real server 10.99.3.101:80: weight 3 here, 2 in {r1}:15: mh "
        "sends a flow to the same real server on every router only when the weights are the same",
        f"{r1}, {r2}: the routers' configs differ, 1 error"]


def test_check_config_several_json_is_an_array_and_only_when_they_agree(capsys, tmp_path):
    r1, r2 = _group(tmp_path)
    assert main(["check-config", "--json", r1, r2]) == 0
    captured = capsys.readouterr()
    assert [m["scaleout"]["local_as"] for m in json.loads(captured.out)] == [65001, 65001]
    assert "the same on 2 routers" in captured.err
    r1, r2 = _group(tmp_path, weight="weight = 3")
    assert main(["check-config", "--json", r1, r2]) == 1
    assert capsys.readouterr().out == ""


def test_check_config_scaleout_beside_a_file_without(capsys, tmp_path):
    r1, _ = _group(tmp_path)
    cf = str(LVSCF / "nat_router.cf")
    assert main(["check-config", "-q", r1, cf]) == 1
    err = capsys.readouterr().err
    assert f"error: {cf}: no [scaleout], but {r1}:17 has it" in err


def test_check_config_several_without_scaleout_are_each_checked_not_compared(capsys):
    files = [str(LVSCF / "nat_router.cf"), str(LVSCF / "fwmark.cf")]
    assert main(["check-config", "-q", *files]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{', '.join(files)}: not compared (no [scaleout]: only a " \
                                                      "scale-out group's routers must have the same virtual services)"


def test_check_config_several_with_an_invalid_one(capsys, tmp_path):
    r1, r2 = _group(tmp_path)
    missing = str(tmp_path / "nope.toml")
    assert main(["check-config", "-q", r1, missing, r2]) == 1
    captured = capsys.readouterr()
    assert "cannot read the file" in captured.err
    assert f"{r1}, {r2}: the same on 2 routers" in captured.out and "1 invalid file not compared" in captured.out


@pytest.mark.parametrize("argv", [["check-config", "--help"], ["config", "convert", "--help"],
                                  ["config", "diff", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    assert "usage: lvsbus" in capsys.readouterr().out


def test_config_without_subcommand_prints_help(capsys):
    assert main(["config"]) == 2
    assert "convert" in capsys.readouterr().out


# -- the heartbeat key file: check-config on a router host, and lvsbus keys heartbeat ----------


def _router_host_config(tmp_path, key: Path) -> Path:
    cfg = tmp_path / "lvs.toml"
    cfg.write_text(f'[router.lvs1]\naddress = "203.0.113.254"\n[heartbeat]\nkey_file = "{key}"\n')
    return cfg


def test_check_config_on_a_router_host_reports_a_missing_short_or_readable_key_file(tmp_path, capsys):
    import os

    key = tmp_path / "etc" / "heartbeat.key"
    cfg = _router_host_config(tmp_path, key)
    assert main(["check-config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert f"heartbeat.key_file: {key}: heartbeat key file: No such file or directory" in err
    assert f"lvsbus keys heartbeat --out {key}" in err and "router lvs1" in err
    # the router's own refusal names the same command
    assert main(["router", "--config", str(cfg), "--state-dir", str(tmp_path / "state")]) == 1
    assert f"lvsbus keys heartbeat --out {key}" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()  # nothing started

    assert main(["keys", "heartbeat", "--out", str(key)]) == 0
    out = capsys.readouterr().out
    assert "every router" in out
    assert os.stat(key).st_mode & 0o777 == 0o600 and len(key.read_text().strip()) == 64
    assert main(["check-config", str(cfg)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("valid (0 warnings)")

    os.chmod(key, 0o640)
    assert main(["check-config", str(cfg)]) == 1
    assert "has mode 0640" in capsys.readouterr().err
    os.chmod(key, 0o600)
    key.write_text("short\n")
    assert main(["check-config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "holds 5 bytes: at least 16" in err
    # the file exists: the command given is one that replaces it (without --force it is kept)
    assert f"replace it with: lvsbus keys heartbeat --force --out {key}" in err
    assert main(["keys", "heartbeat", "--force", "--out", str(key)]) == 0
    capsys.readouterr()
    assert main(["check-config", str(cfg)]) == 0
    # a host that is not one of the routers checks the file only
    other = tmp_path / "other.toml"
    other.write_text(f'[router.far]\naddress = "198.51.100.9"\n[heartbeat]\nkey_file = "{tmp_path}/nope"\n')
    assert main(["check-config", str(other)]) == 0


def test_keys_heartbeat_refuses_to_overwrite_unless_forced(tmp_path, capsys):
    import os

    key = tmp_path / "hb.key"
    assert main(["keys", "heartbeat", "--out", str(key)]) == 0
    first = key.read_text()
    assert main(["keys", "heartbeat", "--out", str(key)]) == 1
    assert "exists; kept (use --force" in capsys.readouterr().err and key.read_text() == first
    assert main(["keys", "heartbeat", "--out", str(key), "--force"]) == 0
    assert key.read_text() != first and os.stat(key).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["hb.key"]  # no temporary file left


def test_the_generated_key_is_one_pulse_accepts():
    from lvsbus.host.keyfile import GENERATED_BYTES, MIN_SECRET
    from lvsbus_services.pulse import wire

    wire.key_from_secret(b"x" * MIN_SECRET)
    with pytest.raises(ValueError):
        wire.key_from_secret(b"x" * (MIN_SECRET - 1))  # the same minimum as check-config's
    assert GENERATED_BYTES * 2 >= MIN_SECRET


def test_the_top_level_help_leads_to_the_heartbeat_key(capsys):
    """A newcomer whose router wants a key file looks at `lvsbus --help`: `keys` says heartbeat."""
    with pytest.raises(SystemExit):
        main(["--help"])
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("keys ")]
    assert "heartbeat" in line
