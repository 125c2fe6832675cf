"""The config fuzzer can fail: a reader that raises, hangs (in Python or in C), crashes its process
or refuses without a line is counted, by the oracle (tests/helpers/config_fuzz.py, behind the
bounded run in test_config_limits.py) and by bench/fuzz_config.py's fork server."""
from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

from lvsbus.config import ConfigError
from lvsbus.config.model import Issue
from tests.helpers import config_fuzz
from tests.helpers.config_fuzz import fixtures, payloads, run_one

BENCH = Path(__file__).resolve().parents[2] / "bench" / "fuzz_config.py"


def _raises(*args, **kw):
    raise TypeError("unhashable type: 'list'")


def _loops(*args, **kw):
    while True:
        pass


def _no_line(text, filename, fmt=None):
    raise ConfigError([Issue(key="heartbeat.keepalive", message="bad", file=filename, line=None)])


def _loops_in_c(*args, **kw):
    sum(range(10 ** 12))  # one C call: no Python signal handler runs until it returns


def _crashes(*args, **kw):
    import ctypes
    import faulthandler
    faulthandler.disable()  # in the worker: its dump is not the test's output
    ctypes.string_at(0)  # SIGSEGV


def _kinds(monkeypatch, reader, n: int = 20) -> set[str]:
    monkeypatch.setattr(config_fuzz, "loads", reader)
    rng = random.Random(7)
    return {run_one(rng, fixtures(), [], cpu_seconds=0.2, cpu_per_mib=0)[0].kind for _ in range(n)}


@pytest.mark.parametrize(("reader", "kind"), [(_raises, "exception"), (_loops, "hang"),
                                              (_no_line, "error_without_line")])
def test_the_oracle_counts_a_bad_reader(monkeypatch, reader, kind):
    kinds = _kinds(monkeypatch, reader)
    assert kind in kinds, kinds
    assert not kinds & {"ok", "error"}, kinds


def _bench():
    spec = importlib.util.spec_from_file_location("fuzz_config_bench", BENCH)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(("reader", "kind", "says"), [
    (_raises, "exceptions=4", "TypeError"),
    (_crashes, "exceptions=4", "the worker died (exit -11)"),
    (_loops_in_c, "hangs=1", "exit -24"),  # RLIMIT_CPU's SIGXCPU, not the wall-clock watchdog
    (_loops, "hangs=1", "alone: more than 0.2 CPU seconds"),
])
def test_the_bench_counts_a_bad_reader(monkeypatch, capsys, reader, kind, says):
    """The workers are forked from this process: they run the patched reader."""
    bench = _bench()
    ps = payloads()  # read by the real readers first
    monkeypatch.setattr(bench, "payloads", lambda: ps)
    monkeypatch.setattr(config_fuzz, "loads", reader)
    monkeypatch.setattr(config_fuzz, "from_dict", reader)
    n = 1 if reader in (_loops_in_c, _loops) else 4
    rc = bench.main(["--inputs", str(n), "--workers", "2", "--chunk", "2", "--cpu-seconds", "0.2",
                     "--cpu-per-mib", "0", "--wall-seconds", "120"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert kind in out.splitlines(), out
    assert f"inputs={n}" in out.splitlines() and "complete=yes" in out.splitlines(), out
    assert says in err, err


def test_the_bench_judges_real_readers(capsys):
    bench = _bench()
    rc = bench.main(["--inputs", "40", "--workers", "2", "--chunk", "7", "--seed", "3"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0, out
    assert {"inputs=40", "exceptions=0", "hangs=0", "errors_without_line=0",
            "complete=yes"} <= set(out), out


def test_a_hang_counts_when_it_hangs_again_alone(monkeypatch, capsys, tmp_path):
    """A worker's CPU clock drifts; a hang is judged again in a fresh process before it counts."""
    bench = _bench()
    ps = payloads()
    monkeypatch.setattr(bench, "payloads", lambda: ps)
    marker = tmp_path / "once"

    def hangs_once(text, filename, fmt=None):
        if not marker.exists():
            marker.touch()
            sum(range(10 ** 12))
        raise ConfigError([Issue(key="k", message="bad", file=filename, line=1)])

    monkeypatch.setattr(config_fuzz, "loads", hangs_once)
    monkeypatch.setattr(config_fuzz, "from_dict", hangs_once)
    rc = bench.main(["--inputs", "1", "--workers", "1", "--cpu-seconds", "0.2", "--cpu-per-mib",
                     "0", "--wall-seconds", "120"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0, out
    assert {"hangs=0", "hangs_rechecked_alone=1", "worker_restarts=1"} <= set(out), out
