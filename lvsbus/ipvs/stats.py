"""IPVS traffic figures as data: samples, what changed between two, the fold, ipvsadm's listing.

Pure (no I/O, no clock): the applier's shell reads the kernel (``lvsbus_services.ipvs.netlink``) and
asks ``Sampler`` what to publish; the metrics fold, the CLI and the console fold the published
``ipvs.stats`` events with ``fold``.

A **row** is 12 integers, in ``FIELDS`` order: the kernel's counters since the service or real
server was added (or last zeroed), its rate estimates (per second, over the kernel's 2 s
estimator), and the connection counts. A real server's ``active``/``inactive`` are the kernel's
(IPVS_DEST_ATTR_ACTIVE_CONNS / INACT_CONNS); a service's are the sums over its real servers.

A **sample** (``Sample``) maps each service key string (``tcp:10.0.0.1:80``) to ``(row, {dest key
string: row})``. ``ipvs.stats`` payloads carry absolute values, never deltas, so a lost or
skipped event costs nothing but resolution, a zeroed counter is just a lower value (Prometheus
reads it as a counter reset), and the fold is an overwrite:

* ``full``: the whole kernel (replaces every figure);
* otherwise only what changed: ``services[svc] = None`` (the service is gone), or
  ``{"stats": row | None (unchanged), "dests": {dest: row | None (gone)}}`` (dests not named are
  unchanged).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from lvsbus.ipvs.table import ServiceKey

FIELDS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes",
          "cps", "inpps", "outpps", "inbps", "outbps", "active", "inactive")
N = len(FIELDS)
ZERO: tuple = (0,) * N
COUNTERS = FIELDS[:5]
RATES = FIELDS[5:10]

Row = tuple  # N ints
Sample = dict  # service key str -> (Row, {dest key str: Row})

#: a full sample at least this often, so that a reader folding from any point converges
FULL_EVERY_NS = 600 * 1_000_000_000


def row(values) -> Row:
    """A row from any sequence of ints (short: padded with zeros; long: cut)."""
    t = tuple(int(v) for v in values[:N])
    return t + (0,) * (N - len(t))


def service_row(stats10, dest_rows) -> Row:
    """A service's row: its 10 kernel figures, and the sums of its real servers' connections."""
    act = sum(r[10] for r in dest_rows)
    inact = sum(r[11] for r in dest_rows)
    return row(tuple(stats10[:10]) + (act, inact))


# ---------------------------------------------------------------------------------------------
# what changed


def changes(prev: Sample | None, cur: Sample) -> dict:
    """The ``services`` map of an ``ipvs.stats`` payload: what differs from ``prev`` to ``cur``
    (everything when ``prev`` is None)."""
    out: dict = {}
    if prev is None:
        for svc, (srow, dests) in cur.items():
            out[svc] = {"stats": list(srow), "dests": {d: list(r) for d, r in dests.items()}}
        return out
    for svc in prev:
        if svc not in cur:
            out[svc] = None
    for svc, (srow, dests) in cur.items():
        old = prev.get(svc)
        if old is None:
            out[svc] = {"stats": list(srow), "dests": {d: list(r) for d, r in dests.items()}}
            continue
        orow, odests = old
        dch: dict = {d: None for d in odests if d not in dests}
        for d, r in dests.items():
            if odests.get(d) != r:
                dch[d] = list(r)
        if orow != srow or dch:
            out[svc] = {"stats": list(srow) if orow != srow else None, "dests": dch}
    return out


@dataclass
class Sampler:
    """What the applier's shell publishes from successive kernel samples (pure: the shell passes
    the sample and its monotonic time). The first sample, and one at least every
    ``full_every_ns``, is full; the others carry only what changed, and nothing at all is
    published when nothing changed."""

    full_every_ns: int = FULL_EVERY_NS
    prev: Sample | None = None
    last_full_ns: int | None = None

    def reset(self) -> None:
        """The next sample is full (a new interval, IPVS back after an outage)."""
        self.prev = None
        self.last_full_ns = None

    def observe(self, cur: Sample, now_ns: int, interval_ms: int) -> dict | None:
        full = self.prev is None or self.last_full_ns is None or now_ns - self.last_full_ns >= self.full_every_ns
        services = changes(None if full else self.prev, cur)
        self.prev = cur
        if full:
            self.last_full_ns = now_ns
        elif not services:
            return None
        return {"interval_ms": interval_ms, "full": full, "services": services}


# ---------------------------------------------------------------------------------------------
# the fold


@dataclass
class Figures:
    """The current figures, folded from ``ipvs.stats`` payloads."""

    services: dict = field(default_factory=dict)  # svc -> Row
    dests: dict = field(default_factory=dict)  # svc -> {dest: Row}
    interval_ms: int = 0
    samples: int = 0  # payloads folded
    complete: bool = False  # a full sample has been folded (else: only what changed since the fold began)


def fold(fig: Figures, payload: dict) -> Figures:
    """Fold one ``ipvs.stats`` payload into ``fig`` (in place; returned for convenience)."""
    if payload["full"]:
        fig.services, fig.dests = {}, {}
        fig.complete = True
    fig.interval_ms = payload["interval_ms"]
    fig.samples += 1
    for svc, ch in payload["services"].items():
        if ch is None:
            fig.services.pop(svc, None)
            fig.dests.pop(svc, None)
            continue
        if ch.get("stats") is not None:
            fig.services[svc] = row(ch["stats"])
        elif svc not in fig.services:
            fig.services[svc] = ZERO  # folded from the middle: unknown until it changes
        dests = fig.dests.setdefault(svc, {})
        for d, r in (ch.get("dests") or {}).items():
            if r is None:
                dests.pop(d, None)
            else:
                dests[d] = row(r)
    return fig


def fold_events(events, fig: Figures | None = None) -> Figures:
    """Fold every ``ipvs.stats`` event of an iterable of events (others are skipped)."""
    fig = fig if fig is not None else Figures()
    for ev in events:
        if ev.type == "ipvs.stats":
            fold(fig, ev.payload)
    return fig


def named_rows(fig: Figures) -> list[dict]:
    """The figures as plain dicts, services in key order each followed by its real servers: {"service",
    "server" ("" for the service's own row), and one key a FIELDS name} (for JSON and the console)."""
    out = []
    for svc in sorted(fig.services):
        out.append({"service": svc, "server": "", **dict(zip(FIELDS, fig.services[svc]))})
        dests = fig.dests.get(svc, {})
        for d in sorted(dests):
            out.append({"service": svc, "server": d, **dict(zip(FIELDS, dests[d]))})
    return out


def figures_from_sample(sample: Sample) -> Figures:
    return fold(Figures(), {"interval_ms": 0, "full": True, "services": changes(None, sample)})


# ---------------------------------------------------------------------------------------------
# ipvsadm -L -n --stats / --rate


def largenum(i: int, exact: bool = False) -> str:
    """ipvsadm's print_largenum: 9 columns, K/M/G/T past 100 million (``--exact``: every digit)."""
    if exact:
        s = str(i)
        return s.rjust(9 if len(s) <= 8 else len(s) + 1)
    if i < 100_000_000:
        return f"{i:9d}"
    if i < 1_000_000_000:
        return f"{i // 1000:8d}K"
    if i < 100_000_000_000:
        return f"{i // 1_000_000:8d}M"
    if i < 100_000_000_000_000:
        return f"{i // 1_000_000_000:8d}G"
    return f"{i // 1_000_000_000_000:8d}T"


def _sort_key(svc: str):
    """ipvsadm's order: fwmark, family, protocol number, address, port."""
    k = ServiceKey.parse(svc)
    proto = {"tcp": 6, "udp": 17, "sctp": 132}.get(k.protocol, 0)
    addr = ipaddress.ip_address(k.address).packed if k.address else b""
    return (k.fwmark, 0 if k.family == "inet" else 1, proto, addr, k.port)


def _dest_sort_key(dest: str):
    host, _, port = dest.rpartition(":")
    return (ipaddress.ip_address(host.strip("[]")).packed, int(port))


def _service_name(svc: str) -> str:
    k = ServiceKey.parse(svc)
    if k.fwmark:
        return f"FWM  {k.fwmark}" + (" IPv6" if k.family == "inet6" else "")
    host = f"[{k.address}]" if k.family == "inet6" else k.address
    name = f"{k.protocol.upper()}  {host}:{k.port}"
    return name if k.family == "inet6" else name[:33]


def listing(fig: Figures, rate: bool = False, exact: bool = False) -> list[str]:
    """The lines ``ipvsadm -L -n --stats`` (``rate``: ``--rate``) prints after its version line,
    from folded figures (or ``figures_from_sample``)."""
    cols = ("CPS", "InPPS", "OutPPS", "InBPS", "OutBPS") if rate else ("Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
    out = ["%-33s %8s %8s %8s %8s %8s" % (("Prot LocalAddress:Port",) + cols), "  -> RemoteAddress:Port"]
    lo = 5 if rate else 0
    for svc in sorted(fig.services, key=_sort_key):
        r = fig.services[svc]
        out.append(f"{_service_name(svc):<33}" + "".join(largenum(v, exact) for v in r[lo:lo + 5]))
        dests = fig.dests.get(svc, {})
        for d in sorted(dests, key=_dest_sort_key):
            x = dests[d]
            name = d if d.startswith("[") else d[:28]
            if rate:  # ipvsadm prints a real server's cps and pps as plain numbers
                line = f"  -> {name:<28} {x[5]:8d} {x[6]:8d} {x[7]:8d}" + largenum(x[8], exact) + largenum(x[9], exact)
            else:
                line = f"  -> {name:<28}" + "".join(largenum(v, exact) for v in x[0:5])
            out.append(line)
    return out
