"""IPVS traffic figures: the sampler (what changed), the fold, ipvsadm's --stats/--rate listing,
the netlink parse of the stats attributes, the ipvs.stats event and its metrics."""
from __future__ import annotations

import random

import pytest

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.wire.events import REGISTRY, Event
from lvsbus.ipvs.stats import (
    FIELDS, Figures, Sampler, changes, figures_from_sample, fold, fold_events, largenum, listing, row, service_row,
)

S1, S2, S6, SF = "tcp:10.0.0.1:80", "udp:10.0.0.1:53", "tcp:[2001:db8::1]:443", "fwm:inet:5"


def d(*v):
    return row(v)


def sample(n_services=3, n_dests=4, seed=0):
    rnd = random.Random(seed)
    out = {}
    for i in range(n_services):
        dests = {f"10.0.1.{j + 1}:80": row([rnd.randrange(10**6) for _ in FIELDS]) for j in range(n_dests)}
        out[f"tcp:10.0.0.{i + 1}:80"] = (service_row([rnd.randrange(10**9) for _ in range(10)], list(dests.values())), dests)
    return out


def mutate(s, rnd, share):
    """A later sample: counters grow on a share of the rows, a service or a dest may come or go."""
    out = {}
    for svc, (srow, dests) in s.items():
        nd = {}
        for k, r in dests.items():
            if rnd.random() < share:
                r = row([v + rnd.randrange(1, 1000) for v in r])
            nd[k] = r
        if rnd.random() < 0.1 and nd:
            nd.pop(next(iter(nd)))
        if rnd.random() < 0.1:
            nd[f"10.0.2.{rnd.randrange(1, 250)}:8080"] = d(1, 2, 3)
        grow = 1 if any(nd.get(k) != r for k, r in dests.items()) or nd.keys() != dests.keys() else 0
        out[svc] = (service_row([v + grow for v in srow[:10]], list(nd.values())), nd)
    if rnd.random() < 0.1 and out:
        out.pop(next(iter(out)))
    if rnd.random() < 0.1:
        out[f"udp:10.0.9.{rnd.randrange(1, 250)}:53"] = (d(7), {})
    return out


def test_service_row_sums_the_connections_of_its_real_servers():
    r = service_row(list(range(1, 11)), [d(*([0] * 10), 3, 4), d(*([0] * 10), 1, 10)])
    assert r == tuple(range(1, 11)) + (4, 14)


def test_changes_carry_only_what_differs():
    a = {S1: (d(5), {"10.0.1.2:80": d(1), "10.0.1.3:80": d(2)}), S2: (d(1), {})}
    assert changes(a, a) == {}
    b = {S1: (d(6), {"10.0.1.2:80": d(1), "10.0.1.3:80": d(3)}), S2: (d(1), {})}
    assert changes(a, b) == {S1: {"stats": list(d(6)), "dests": {"10.0.1.3:80": list(d(3))}}}
    c = {S1: (d(5), {"10.0.1.2:80": d(1)}), S6: (d(9), {"[2001:db8::2]:443": d(4)})}
    assert changes(a, c) == {
        S1: {"stats": None, "dests": {"10.0.1.3:80": None}},  # a real server gone, the service's row as it was
        S2: None,  # gone
        S6: {"stats": list(d(9)), "dests": {"[2001:db8::2]:443": list(d(4))}},  # new: everything
    }


def test_sampler_full_first_then_changes_then_full_again():
    s = Sampler(full_every_ns=100)
    a = {S1: (d(5), {"10.0.1.2:80": d(1)})}
    p = s.observe(a, 0, 2000)
    assert p == {"interval_ms": 2000, "full": True, "services": {S1: {"stats": list(d(5)), "dests": {"10.0.1.2:80": list(d(1))}}}}
    assert s.observe(dict(a), 10, 2000) is None  # nothing changed: nothing published
    b = {S1: (d(5), {"10.0.1.2:80": d(2)})}
    assert s.observe(b, 20, 2000) == {"interval_ms": 2000, "full": False,
                                      "services": {S1: {"stats": None, "dests": {"10.0.1.2:80": list(d(2))}}}}
    assert s.observe(b, 100, 2000)["full"] is True  # at least every full_every_ns
    s.reset()
    assert s.observe(b, 101, 2000)["full"] is True
    assert s.observe({}, 102, 2000) == {"interval_ms": 2000, "full": False, "services": {S1: None}}


@pytest.mark.parametrize("seed", range(20))
def test_folding_the_published_payloads_gives_the_last_sample(seed):
    rnd = random.Random(seed)
    s = Sampler(full_every_ns=10**18)
    cur = sample(rnd.randrange(1, 6), rnd.randrange(0, 6), seed)
    fig = Figures()
    for t in range(30):
        p = s.observe(cur, t, 1000)
        if p is not None:
            REGISTRY.validate("ipvs.stats", 1, p)
            fold(fig, p)
        want = figures_from_sample(cur)
        assert (fig.services, fig.dests) == (want.services, want.dests), t
        cur = mutate(cur, rnd, rnd.choice((0.0, 0.3, 1.0)))
    assert fig.complete


def test_fold_from_the_middle_of_the_log_is_marked_incomplete_until_a_full_sample():
    fig = fold(Figures(), {"interval_ms": 2000, "full": False,
                           "services": {S1: {"stats": None, "dests": {"10.0.1.2:80": list(d(3))}}}})
    assert not fig.complete and fig.services[S1] == d() and fig.dests[S1] == {"10.0.1.2:80": d(3)}
    fold(fig, {"interval_ms": 2000, "full": True, "services": {S2: {"stats": list(d(1)), "dests": {}}}})
    assert fig.complete and set(fig.services) == {S2} and fig.samples == 2


def test_named_rows_for_json():
    from lvsbus.ipvs.stats import named_rows

    fig = figures_from_sample({S1: (d(3, 1), {"10.0.1.2:80": d(3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 5)})})
    assert named_rows(fig) == [
        {"service": S1, "server": "", **dict.fromkeys(FIELDS, 0), "conns": 3, "inpkts": 1},
        {"service": S1, "server": "10.0.1.2:80", **dict.fromkeys(FIELDS, 0), "conns": 3, "inpkts": 1, "active": 2,
         "inactive": 5}]


def test_fold_events_skips_other_types():
    p = {"interval_ms": 2000, "full": True, "services": {S1: {"stats": list(d(4)), "dests": {}}}}
    evs = [Event(1, "r1", "ipvs", "ipvs.started", 1, 1, 1, None, {}), Event(2, "r1", "ipvs", "ipvs.stats", 1, 2, 2, None, p)]
    assert fold_events(evs).services == {S1: d(4)}


def test_the_event_schema_refuses_what_the_fold_could_not_read():
    ok = {"interval_ms": 2000, "full": False, "services": {S1: None}}
    REGISTRY.validate("ipvs.stats", 1, ok)
    for bad in ({**ok, "services": {S1: {"stats": [-1], "dests": {}}}},
                {**ok, "services": {S1: {"stats": list(range(13)), "dests": {}}}},
                {**ok, "services": {S1: {"stats": None}}},
                {**ok, "full": 1}):
        with pytest.raises(ValueError):
            REGISTRY.validate("ipvs.stats", 1, bad)


# --- ipvsadm -L -n --stats / --rate ------------------------------------------------------------

def test_largenum_is_ipvsadms():
    assert largenum(0) == "        0"
    assert largenum(99_999_999) == " 99999999"
    assert largenum(100_000_000) == "  100000K"
    assert largenum(999_999_999) == "  999999K"
    assert largenum(1_000_000_000) == "    1000M"
    assert largenum(123_456_789_012) == "     123G"
    assert largenum(123_456_789_012_345) == "     123T"
    assert largenum(123_456_789_012, exact=True) == " 123456789012"
    assert largenum(12, exact=True) == "       12"


def test_listing_has_ipvsadms_columns_and_order():
    fig = figures_from_sample({
        S2: (d(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), {}),
        S1: (d(3, 18, 12, 1200, 150_000_000_000, 2, 9, 6, 600, 200_000_000),
             {"10.0.1.3:80": d(2, 12, 8, 800, 1000, 1, 6, 4, 400, 500),
              "10.0.1.2:80": d(1, 6, 4, 400, 500, 1, 3, 2, 200, 100)}),
        S6: (d(), {"[2001:db8::2]:443": d(7)}),
        SF: (d(), {}),
    })
    assert listing(fig) == [
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
        "  -> RemoteAddress:Port",
        "TCP  10.0.0.1:80                         3       18       12     1200     150G",
        "  -> 10.0.1.2:80                         1        6        4      400      500",
        "  -> 10.0.1.3:80                         2       12        8      800     1000",
        "UDP  10.0.0.1:53                         1        2        3        4        5",
        "TCP  [2001:db8::1]:443                   0        0        0        0        0",
        "  -> [2001:db8::2]:443                   7        0        0        0        0",
        "FWM  5                                   0        0        0        0        0",
    ]
    assert listing(fig, rate=True)[:4] == [
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS",
        "  -> RemoteAddress:Port",
        "TCP  10.0.0.1:80                         2        9        6      600  200000K",
        "  -> 10.0.1.2:80                         1        3        2      200      100",
    ]
    assert listing(fig, exact=True)[2].endswith(" 150000000000")


def test_listing_sorts_services_as_ipvsadm_does():
    """fwmark first (0 = none), then family, protocol number (tcp 6 < udp 17), address, port."""
    fig = figures_from_sample({k: (d(), {}) for k in (SF, S6, "udp:10.0.0.2:53", S2, "tcp:10.0.0.2:80", S1, "tcp:10.0.0.1:8080")})
    heads = [line.split()[1] for line in listing(fig)[2:]]
    assert heads == ["10.0.0.1:80", "10.0.0.1:8080", "10.0.0.2:80", "10.0.0.1:53", "10.0.0.2:53",
                     "[2001:db8::1]:443", "5"]


# --- netlink: the stats attributes --------------------------------------------------------------

def _encoded_dest(stats_attr, stats, active=0, inactive=0):
    from pyroute2.netlink.generic import ipvs as genl

    from lvsbus_services.ipvs.netlink import lvsmsg, parse_attrs

    # lvsmsg (pyroute2's ipvsmsg + the daemon and timeout attributes): pyroute2 caches a compiled
    # attribute map on the class it first encodes, and a subclass encoded later would take the
    # parent's (the timeouts as "hex"), so tests encode with lvsmsg only
    m = lvsmsg()
    m["cmd"], m["version"] = genl.IPVS_CMD_NEW_DEST, 1
    m["attrs"] = [("IPVS_CMD_ATTR_DEST", {"attrs": [
        ("IPVS_DEST_ATTR_ADDR_FAMILY", 2), ("IPVS_DEST_ATTR_ADDR", "10.0.1.2"), ("IPVS_DEST_ATTR_PORT", 80),
        ("IPVS_DEST_ATTR_ACTIVE_CONNS", active), ("IPVS_DEST_ATTR_INACT_CONNS", inactive),
        (stats_attr, {"attrs": [(f"IPVS_STATS_ATTR_{n.upper()}", v) for n, v in zip(FIELDS, stats)]}),
    ]})]
    m["header"]["type"], m["header"]["flags"], m["header"]["sequence_number"] = 30, 1, 1
    m.encode()
    raw = bytes(m.data)
    top = parse_attrs(raw, 20, len(raw))
    return parse_attrs(top[2], 0, len(top[2]))


def test_stats64_parsed_as_pyroute2_encodes_them():
    from lvsbus_services.ipvs.netlink import DEST_ACTIVE, DEST_INACT, DEST_STATS, DEST_STATS64, _u32, stats_figures, stats_row

    figures = (5, 2**33 + 1, 7, 2**40 + 3, 9, 1, 2, 3, 2**35, 5)
    a = _encoded_dest("IPVS_DEST_ATTR_STATS64", figures, active=4, inactive=11)
    assert stats_row(stats_figures(a, DEST_STATS, DEST_STATS64), _u32(a, DEST_ACTIVE), _u32(a, DEST_INACT)) == figures + (4, 11)


def test_32_bit_stats_parsed_when_the_kernel_has_no_stats64():
    from lvsbus_services.ipvs.netlink import DEST_STATS, DEST_STATS64, stats_figures

    figures = (5, 6, 7, 2**40 + 3, 9, 1, 2, 3, 4, 5)  # bytes are u64 even in the old form
    a = _encoded_dest("IPVS_DEST_ATTR_STATS", figures)
    assert stats_figures(a, DEST_STATS, DEST_STATS64) == figures
    assert stats_figures({}, DEST_STATS, DEST_STATS64) == (0,) * 10


# --- metrics -------------------------------------------------------------------------------------

def test_metrics_per_service_and_real_server():
    from lvsbus_services.metrics.fold import Metrics, render

    m = Metrics()
    p = {"interval_ms": 2000, "full": True, "services": {
        S1: {"stats": [3, 18, 12, 1200, 1500, 2, 9, 6, 600, 750, 1, 2],
             "dests": {"10.0.1.2:80": [3, 18, 12, 1200, 1500, 2, 9, 6, 600, 750, 1, 2]}}}}
    m.apply(Event(1, "r1", "ipvs", "ipvs.stats", 1, 1, 1, None, p))
    text = render(m.samples())
    for line in (
        'lvsbus_ipvs_connections_total{server="",service="tcp:10.0.0.1:80"} 3.0',
        'lvsbus_ipvs_connections_total{server="10.0.1.2:80",service="tcp:10.0.0.1:80"} 3.0',
        'lvsbus_ipvs_packets_total{direction="in",server="10.0.1.2:80",service="tcp:10.0.0.1:80"} 18.0',
        'lvsbus_ipvs_packets_total{direction="out",server="",service="tcp:10.0.0.1:80"} 12.0',
        'lvsbus_ipvs_bytes_total{direction="out",server="10.0.1.2:80",service="tcp:10.0.0.1:80"} 1500.0',
        'lvsbus_ipvs_connection_rate{server="",service="tcp:10.0.0.1:80"} 2.0',
        'lvsbus_ipvs_packet_rate{direction="in",server="",service="tcp:10.0.0.1:80"} 9.0',
        'lvsbus_ipvs_byte_rate{direction="out",server="10.0.1.2:80",service="tcp:10.0.0.1:80"} 750.0',
        'lvsbus_ipvs_active_connections{server="10.0.1.2:80",service="tcp:10.0.0.1:80"} 1.0',
        'lvsbus_ipvs_inactive_connections{server="",service="tcp:10.0.0.1:80"} 2.0',
        "# TYPE lvsbus_ipvs_bytes_total counter",
    ):
        assert line in text, line
    m.apply(Event(2, "r1", "ipvs", "ipvs.stats", 1, 2, 2, None, {"interval_ms": 2000, "full": False, "services": {S1: None}}))
    assert "lvsbus_ipvs_connections_total{" not in render(m.samples())


# --- CLI ----------------------------------------------------------------------------------------

def test_zero_refuses_a_bad_service_key(capsys):
    from lvsbus.cli import main

    assert main(["ipvs", "zero", "tcp:10.0.0.1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a service key" in err and "Traceback" not in err


def test_show_stats_falls_back_to_the_log(tmp_path, capsys, monkeypatch):
    from lvsbus.cli import main
    from lvsbus.cli import ipvs as cli
    from tests.helpers.event_log import write_events

    monkeypatch.setattr(cli, "kernel_stats", lambda: (None, "IPVS not available in this kernel (test)"))
    p = {"interval_ms": 2000, "full": True, "services": {S1: {"stats": list(d(3, 18, 12, 1200, 1500)),
                                                              "dests": {"10.0.1.2:80": list(d(3, 18, 12, 1200, 1500))}}}}
    write_events(tmp_path, [("ipvs.stats", "ipvs", p)])
    assert main(["ipvs", "show", "--stats", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# IPVS not available in this kernel (test): the figures the applier recorded, as of seq 1"
    assert out[3] == "TCP  10.0.0.1:80                         3       18       12     1200     1500"
    assert main(["ipvs", "show", "--stats", "--state-dir", str(tmp_path / "none")]) == 1


def test_show_stats_from_the_log_reads_past_an_undecodable_record(tmp_path, capsys, monkeypatch):
    """As every reader of a log (docs/bus.md): a record that does not decode is passed over."""
    from lvsbus.cli import main
    from lvsbus.wire.events import encode
    from lvsbus.log import EventLog
    from lvsbus.host.paths import StateDirs
    from lvsbus.cli import ipvs as cli

    monkeypatch.setattr(cli, "kernel_stats", lambda: (None, "IPVS not available in this kernel (test)"))
    p = {"interval_ms": 2000, "full": True, "services": {S1: {"stats": list(d(3, 18, 12, 1200, 1500)), "dests": {}}}}
    log = EventLog(StateDirs(str(tmp_path)).make().log)
    try:
        log.append(1, b"not an event")
        log.append(2, encode(Event(2, "n", "ipvs", "ipvs.stats", 1, 2, 2, None, p)))
        log.sync()
    finally:
        log.close()
    assert main(["ipvs", "show", "--stats", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# IPVS not available in this kernel (test): the figures the applier recorded, as of seq 2"
    assert out[3] == "TCP  10.0.0.1:80                         3       18       12     1200     1500"


def test_compiled_check_of_ipvs_stats_agrees_with_the_catalog():
    """The broker's fast path (lvsbus.wire.schema.compile_check, which now compiles Dict too) takes the
    real payloads and never accepts what the field-by-field check refuses."""
    from lvsbus.wire.events import DecodeError
    from lvsbus.wire.schema import compile_check

    spec = REGISTRY.get("ipvs.stats", 1)
    fast = compile_check(spec.payload)
    s = Sampler()
    good = [s.observe(sample(3, 3, 1), 0, 2000), s.observe(mutate(sample(3, 3, 1), random.Random(1), 1.0), 1, 2000),
            {"interval_ms": 0, "full": False, "services": {S1: None, S2: {"stats": None, "dests": {"10.0.1.2:80": None}}}}]
    row12 = list(range(12))
    bad = [{**good[2], "services": {1: None}},
           {**good[2], "services": {S1: {"stats": row12, "dests": {2: row12}}}},
           {**good[2], "services": {S1: {"stats": row12, "dests": {"x": [*row12, 1]}}}},
           {**good[2], "services": {S1: {"stats": row12, "dests": {"x": [-1]}}}},
           {**good[2], "services": {S1: {"stats": row12, "dests": []}}},
           {**good[2], "services": {S1: {"stats": row12, "dests": {}, "more": 1}}},
           {**good[2], "services": []}]
    for p in good:
        assert fast(p)
        REGISTRY.validate("ipvs.stats", 1, p)
    for p in bad:
        assert not fast(p), p
        with pytest.raises(DecodeError):
            REGISTRY.validate("ipvs.stats", 1, p)


# --- the shell's loop (its netlink read replaced by a list of samples) ----------------------------

def test_shell_samples_at_the_interval_and_follows_a_reload(tmp_path):
    import asyncio

    from lvsbus_services.ipvs.shell import DEFAULT_STATS_INTERVAL, ApplierShell

    def config_loaded(model):
        return Event(9, "r1", "router", "config.loaded", 1, 9, 9, None, {"model": model})

    async def run():
        shell = ApplierShell(str(tmp_path), 1, stats_interval=0.05)
        a = {S1: (d(5), {"10.0.1.2:80": d(1)})}
        b = {S1: (d(6), {"10.0.1.2:80": d(2)})}
        samples = [a, a, b, b]
        published, reads = [], []

        def read():
            reads.append(1)
            return samples[min(len(reads), len(samples)) - 1]

        shell._read_stats = read
        shell.core_ready = lambda: True
        shell.runtime.publish = lambda t, p: published.append((t, p))
        task = asyncio.ensure_future(shell.stats_loop())
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(reads) >= 4:
                break
        assert [p["full"] for _t, p in published] == [True, False]  # a, (a: nothing), b, (b: nothing)
        assert published[1][1]["services"] == {S1: {"stats": list(d(6)), "dests": {"10.0.1.2:80": list(d(2))}}}
        assert {p["interval_ms"] for _t, p in published} == {50}
        shell.on_event(config_loaded({"ipvs_stats_interval": 0}))  # a reload turns the figures off
        await asyncio.sleep(0.05)
        n = len(reads)
        await asyncio.sleep(0.3)
        assert len(reads) == n and shell.stats_interval == 0
        shell.on_event(config_loaded({"ipvs_stats_interval": 0.05}))  # and on again: a full sample first
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(published) > 2:
                break
        assert published[2][1]["full"] is True
        shell.on_event(config_loaded({}))  # a model of a version before the key: the default
        assert shell.stats_interval == DEFAULT_STATS_INTERVAL
        shell.stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(run())


def test_shell_reads_no_figures_while_a_batch_or_a_dump_is_under_way(tmp_path):
    from lvsbus_services.ipvs.core import ApplierState
    from lvsbus_services.ipvs.shell import ApplierShell

    shell = ApplierShell(str(tmp_path), 1, stats_interval=1.0)
    shell.runtime.client = object()  # started (the bus client exists)
    shell.runtime.state = ApplierState(started=True)
    assert shell.core_ready()
    shell.runtime.state = ApplierState(started=True, pending=[(1, [])])
    assert not shell.core_ready()
    shell.runtime.state = ApplierState(started=True, reads={1: 0})
    assert not shell.core_ready()
    shell.runtime.state = ApplierState(started=True, available=False)
    assert not shell.core_ready()


def test_a_stats_read_under_way_gives_way_to_an_apply(tmp_path):
    """A whole table's figures take seconds under emulation (one dump request a service): an apply
    asked for meanwhile must not wait behind them; the read is given up and the next tick reads."""
    import asyncio
    import threading
    import time as _time

    from lvsbus_services.ipvs.shell import ApplierShell

    class SlowIpvs:
        def __init__(self):
            self.reading = threading.Event()
            self.gave_way = 0

        def stats_by_service(self):
            self.reading.set()
            try:
                for _ in range(300):  # 300 services, 10 ms each: 3 s for the whole read
                    _time.sleep(0.01)
                    yield S1, (d(5), {})
            except GeneratorExit:  # the shell stopped asking before the last service
                self.gave_way += 1
                raise

        def apply_many(self, ops):
            return [0] * len(ops)

        def close(self):
            pass

    async def run():
        shell = ApplierShell(str(tmp_path), 1, stats_interval=0.05)
        fake = shell.ipvs = SlowIpvs()
        shell.core_ready = lambda: True
        published = []
        shell.runtime.publish = lambda t, p: published.append((t, p))
        task = asyncio.ensure_future(shell.stats_loop())
        while not fake.reading.is_set():
            await asyncio.sleep(0.005)
        op = {"op": "edit_dest", "service": "tcp:10.0.0.1:80", "dest": "10.0.1.2:80",
              "attrs": {"forwarding": "nat", "weight": 3, "upper": 0, "lower": 0}}
        t0 = _time.monotonic()
        await shell.apply({"batch": 1, "ops": [op], "reason": "test", "version": 1})
        took = _time.monotonic() - t0
        shell.stop.set()
        await asyncio.wait_for(task, 10)
        assert took < 1.0, took  # not the 3 s of the whole read
        assert fake.gave_way >= 1
        assert [t for t, _p in published][:2] == ["ipvs.ops_applied", "ipvs.batch_applied"]
        assert "ipvs.stats" not in [t for t, _p in published[:2]]

    asyncio.run(run())


def test_a_stats_read_gives_way_as_soon_as_a_desired_table_comes_in(tmp_path):
    """Before its apply is even decided and recorded: the read would hold the GIL all along."""
    from lvsbus_services.ipvs.shell import ApplierShell

    shell = ApplierShell(str(tmp_path), 1)
    assert not shell._give_way()
    shell.on_event(Event(5, "r1", "lvsd", "lvsd.table_delta", 1, 5, 5, None, {}))
    assert shell._give_way()
    shell._prefer_until = 0.0
    shell._urgent = 1
    assert shell._give_way()
