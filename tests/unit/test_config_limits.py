"""Hostile config input: every outcome a Config or a ConfigError with file and line, in bounded
time. One test a bug the fuzzer found, then a bounded fuzz run (bench/fuzz_config.py is the long
one)."""
from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from lvsbus.config import ConfigError, from_dict, load, loads, to_dict
from lvsbus.config.model import MAX_CONFIG_BYTES
from tests.helpers.config_fuzz import fixtures, payloads, run_one

LVSCF = (Path(__file__).parents[1] / "fixtures" / "lvscf" / "nat_router.cf").read_text()
TOML = (Path(__file__).parents[1] / "fixtures" / "toml" / "ipv6.toml").read_text()


def _errors(text: str, name: str = "t.cf") -> list:
    with pytest.raises(ConfigError) as info:
        loads(text, name)
    return list(info.value.issues)


def _one(text: str, name: str, key_part: str) -> object:
    issues = _errors(text, name)
    found = [i for i in issues if key_part in i.key] or [i for i in issues if key_part in i.message]
    assert found, [str(i) for i in _errors(text, name)]
    issue = found[0]
    assert issue.file == name and issue.line is not None, str(issue)
    return issue


def _line_of(text: str, needle: str) -> int:
    return text.split("\n").index(next(line for line in text.split("\n") if needle in line)) + 1


# ---- lvs.cf numbers ----------------------------------------------------------------------------

def test_lvscf_keepalive_underflow_is_out_of_range_not_overflow():
    text = LVSCF.replace("keepalive = 2", "keepalive = 1e-310")
    issue = _one(text, "t.cf", "keepalive")
    assert issue.line == _line_of(text, "keepalive")
    assert "out of range: must be 0.01..3600" in issue.message


def test_lvscf_reentry_huge_names_its_range():
    text = LVSCF.replace("reentry = 180", "reentry = 1e308")
    issue = _one(text, "t.cf", "reentry")
    assert issue.line == _line_of(text, "reentry = 1e308")
    assert "out of range: must be 0..86400" in issue.message


@pytest.mark.parametrize("value", ["1e309", "inf", "nan", "1_0", "١٠", "２"])
def test_lvscf_numbers_are_ascii_and_finite(value):
    text = LVSCF.replace("deadtime = 10", f"deadtime = {value}")
    issue = _one(text, "t.cf", "deadtime")
    assert issue.line == _line_of(text, "deadtime")


@pytest.mark.parametrize("value", ["²", "٢٤", "2٤"])
def test_lvscf_netmask_unicode_digits(value):
    text = LVSCF.replace("vip_nmask = 255.255.255.255", f"vip_nmask = {value}")
    issue = _one(text, "t.cf", "vip_nmask")
    assert "not a netmask" in issue.message


def test_lvscf_weight_in_arabic_digits_is_refused():
    text = LVSCF.replace("weight = 100", "weight = ١٢")  # int() read it as 12
    _one(text, "t.cf", "weight")


@pytest.mark.parametrize("value", ["9" * 5000, "0x" + "f" * 5000, "9" * 25])
def test_lvscf_long_integers_are_out_of_range(value):
    text = LVSCF.replace("serial_no = 7", f"serial_no = {value}")
    issue = _one(text, "t.cf", "serial_no")
    assert "out of range: must be 0..9223372036854775807" in issue.message
    assert len(str(issue)) < 200


def test_lvscf_port_long_number():
    text = LVSCF.replace("port = 443", "port = " + "9" * 5000)
    issue = _one(text, "t.cf", "port")
    assert "out of range: must be 1..65535" in issue.message


def test_lvscf_line_numbers_count_newlines_only():
    # str.splitlines() also breaks at \u2028, \x0c, \x1c...: every later line number was off
    text = "# a \u2028 b \x0c c\n" + LVSCF.replace("weight = 50", "weight = lots")
    issue = _one(text, "t.cf", "weight")
    assert issue.line == _line_of(text, "weight = lots")


def test_lvscf_deadtime_left_out_points_at_keepalive():
    text = LVSCF.replace("deadtime = 10\n", "").replace("keepalive = 2", "keepalive = 6")
    issue = _one(text, "t.cf", "deadtime")
    assert issue.line == _line_of(text, "keepalive = 6")


# ---- TOML ----------------------------------------------------------------------------------

def test_toml_int_too_large_for_a_float_field():
    text = TOML.replace("keepalive = 0.2", "keepalive = " + "9" * 400)
    issue = _one(text, "t.toml", "keepalive")
    assert "out of range: must be 0.01..3600" in issue.message


@pytest.mark.parametrize("value", ["inf", "nan", "1e400"])
def test_toml_non_finite_float_names_the_range(value):
    issue = _one(TOML.replace("keepalive = 0.2", f"keepalive = {value}"), "t.toml", "keepalive")
    assert "out of range: must be 0.01..3600" in issue.message


def test_toml_int_over_64_bits():
    issue = _one(TOML.replace("garp_repeat = 3", "garp_repeat = 0x" + "f" * 60), "t.toml",
                 "garp_repeat")
    assert "out of range: must be 1..100" in issue.message


@pytest.mark.parametrize("value", ["[" * 2000 + "]" * 2000, "{a = " * 2000 + "1" + "}" * 2000,
                                   "[" * 70 + "]" * 70])
def test_toml_deep_nesting(value):
    text = TOML + f"\nx = {value}\n"
    issue = _one(text, "t.toml", "nested")
    assert issue.line == text.count("\n")


def test_toml_long_integer():
    text = TOML + "\nx = " + "9" * 5000 + "\n"  # tomllib raised ValueError (4300 digits)
    issue = _one(text, "t.toml", "out of range")
    assert issue.line == text.count("\n")


def test_toml_huge_hex_integer_for_a_word_is_refused_at_its_line():
    """A hex literal is not bound by Python's 4,300-digit limit, but its str() is: an enum field
    given one raised ValueError building the 'did you mean' hint (bench/fuzz_config.py, input
    586243 of seed 0)."""
    text = TOML.replace('forwarding = "direct"', "forwarding = 0x" + "f" * 4000, 1)
    issue = _one(text, "t.toml", "forwarding")
    assert issue.line == TOML[:TOML.index('forwarding = "direct"')].count("\n") + 1


@pytest.mark.parametrize("header", [False, True])
def test_toml_dotted_key_of_many_parts_is_refused_quickly(header):
    key = ".".join(["a"] * 300_000)
    text = TOML + (f"\n[{key}]\n" if header else f"\n{key} = 1\n")
    start = time.process_time()
    issue = _one(text, "t.toml", "dotted key")
    assert time.process_time() - start < 2.0
    assert issue.line == text.count("\n")


def test_lvscf_long_number_with_a_bad_end_is_refused_quickly():
    """A 300,000-digit timeout ending in a letter took 49 CPU s (the number pattern backtracked)."""
    from tests.helpers.config_fuzz import judge

    text = LVSCF.replace("keepalive = ", "keepalive = 1" + "9" * 300_000 + "x\n#", 1)
    assert "9" * 300_000 in text
    outcome = judge(loads, text, "t.cf", filename="t.cf", text=text, cpu_seconds=2.0)
    assert outcome.kind == "error", outcome


def test_toml_strings_with_many_dots_are_fine():
    dotted = ".".join(["x"] * 100)
    text = TOML.replace('body_regex = "ok|healthy"', f'body_regex = "{dotted}"')
    assert loads(text, "t.toml").config.virtual_services[0].check.body_regex == dotted


def test_toml_error_at_end_of_document_has_a_line():
    text = TOML + '\nx = "abc'
    issue = _one(text, "t.toml", "not valid TOML")
    assert issue.line == text.count("\n") + 1


def test_metrics_port_in_superscript_digits():
    text = TOML.replace('metrics_address = "[::1]:9539"', 'metrics_address = "[::1]:²"')
    _one(text, "t.toml", "metrics_address")


# ---- size, messages, from_dict -------------------------------------------------------------

def test_text_over_the_size_bound(tmp_path):
    text = LVSCF + "#" + "x" * MAX_CONFIG_BYTES + "\nmore = 1\n"
    issue = _one(text, "t.cf", "16 MiB")
    assert issue.line == LVSCF.count("\n") + 1
    path = tmp_path / "big.cf"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert "16 MiB" in str(info.value.issues[0]) and info.value.issues[0].line is not None


def test_a_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path))
    assert "is a directory" in str(info.value.issues[0])


def test_long_values_are_shown_short():
    text = LVSCF.replace("network = nat", "network = " + "x" * 300_000)
    issue = _one(text, "t.cf", "network")
    assert len(str(issue)) < 500 and "\n" not in str(issue)


def test_from_dict_with_huge_integers():
    d = to_dict(loads(LVSCF, "t.cf").config)
    d["virtual_services"][0]["hysteresis"] = 10 ** 5000
    d["heartbeat"]["keepalive"] = 10 ** 400
    with pytest.raises(ConfigError) as info:
        from_dict(d)
    assert {i.key for i in info.value.issues} >= {"heartbeat.keepalive", "virtual.http.hysteresis"}


@pytest.mark.parametrize("section", ["heartbeat", "ipvs_timeouts", "sync_daemon", "web", "scaleout"])
@pytest.mark.parametrize("value", [1e-310, "x", [1], {}])
def test_from_dict_with_a_section_that_is_not_a_table_or_misses_its_required_keys(section, value):
    """A section that fails to convert is reported, and validation looks at the rest without
    tripping on it (fuzz_config.py: ``scaleout = 1e-310`` left peers None, and validation raised
    TypeError)."""
    d = to_dict(loads(LVSCF, "t.cf").config)
    d[section] = value
    try:
        from_dict(d)
    except ConfigError as exc:
        assert all(i.key for i in exc.issues)


def test_suggestions_for_the_first_issues_only():
    """200,000 bad lines took a minute of "did you mean" (fuzz_config.py counted it a hang): a
    reader suggests for its first issues only, and still reports every issue with its line."""
    from lvsbus.config.native import SUGGESTIONS_AT_MOST

    n = SUGGESTIONS_AT_MOST + 400
    lvscf = LVSCF + "".join(f"keepalve{i} = 2\n" for i in range(n))
    toml = TOML + "\n" + "".join(f"weigt{i} = 2\n" for i in range(n))  # in the last server
    for text, name in ((lvscf, "t.cf"), (toml, "t.toml")):
        issues = _errors(text, name)
        assert len(issues) >= n and all(i.line and i.file == name for i in issues), name
        hinted = [i for i in issues if i.suggestion]
        assert 0 < len(hinted) <= SUGGESTIONS_AT_MOST, (name, len(hinted))


# ---- the bounded fuzz run ------------------------------------------------------------------

def test_fuzz_config_readers_bounded():
    """A seeded run over the fixtures (bench/fuzz_config.py runs a million)."""
    seeds, ps = fixtures(), payloads()
    rng = random.Random(20261203)
    bad = []
    for _ in range(150):
        outcome, fmt, inp = run_one(rng, seeds, ps, cpu_seconds=3.0)
        if outcome.kind not in ("ok", "error"):
            bad.append((outcome.kind, fmt, outcome.detail[-300:], repr(inp)[:300]))
    assert not bad, bad[:5]
