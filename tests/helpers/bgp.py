"""Scale-out's BGP in a lvsbus/demo/netns.py topology (docs/scaleout.md): the client namespace as the
upstream router (BIRD 2 with ``merge paths`` into its kernel table and the GRACEFUL_SHUTDOWN
filter), routers' BIRDs driven by lvsbus's driver, and the upstream's ECMP nexthops to a VIP.
Shared by tests/netns/test_bgp_netns.py and bench/bgp.py.

    from tests.helpers.bgp import UPSTREAM, VIP, nexthops, router_speaker, start_upstream, upstream_conf
"""
from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path

from lvsbus_services.bgp.speaker import BgpSettings, BirdSpeaker
from tests.helpers.lvs_config import UPSTREAM, VIP

__all__ = ["UPSTREAM", "VIP", "nexthops", "router_speaker", "start_upstream", "upstream_conf"]


def upstream_conf(routers: Mapping[str, str], up: str = UPSTREAM, *, hold_time: int = 9, bfd: Collection[str] = (),
                  gshut_filter: bool = True) -> str:
    """The upstream's bird.conf: AS 65000, one session per router (name -> address, AS 65001),
    importing their routes into a multipath kernel route; ``bfd``: the routers whose sessions use
    BFD (100 ms x 3); ``gshut_filter``: a route tagged GRACEFUL_SHUTDOWN (RFC 8326) gets
    local_pref 0, so it leaves the ECMP set."""
    fam = "ipv6" if ":" in up else "ipv4"
    lines = [
        f"router id {UPSTREAM};",
        "log stderr { warning, error, fatal };",
        "protocol device {}",
        f"protocol kernel {{ {fam} {{ import none; export all; }}; merge paths on; }}",
    ]
    if gshut_filter:
        lines.append("filter from_lvs { if (65535,0) ~ bgp_community then bgp_local_pref = 0; accept; }")
    if bfd:
        lines.append('protocol bfd { interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }')
    # error wait: a session that ended in an error (a hold timer that expired) is tried again after
    # 1 s, not BIRD's default 60
    lines.append(f"template bgp lvs {{ local {up} as 65000; hold time {hold_time}; connect delay time 1; "
                 f"connect retry time 2; error wait time 1, 10; {fam} {{ import {'filter from_lvs' if gshut_filter else 'all'}; export none; }}; }}")
    lines += [f"protocol bgp {r} from lvs {{ neighbor {a} as 65001;{' bfd on;' if r in bfd else ''} }}"
              for r, a in routers.items()]
    return "\n".join(lines) + "\n"


def start_upstream(topo, tmp: Path, conf: str, stderr=None) -> str:
    """BIRD with ``conf`` in the client namespace (the topology kills it); its control socket."""
    (tmp / "up.conf").write_text(conf)
    ctl = str(tmp / "up.ctl")
    topo.popen("c", ["bird", "-f", "-c", str(tmp / "up.conf"), "-s", ctl, "-P", str(tmp / "up.pid")],
               stderr=stderr if stderr is not None else open(tmp / "up.log", "w"))
    return ctl


def router_speaker(topo, i: int, tmp: Path, stderr=None, router_id: str | None = None, peers=(UPSTREAM,),
                   **settings) -> BirdSpeaker:
    """Router ``r{i}``'s BIRD, driven by lvsbus's driver (not started), in its namespace."""
    r = f"r{i}"
    return BirdSpeaker(BgpSettings(router_id=router_id or topo.router_address(i), local_as=65001, peer_as=65000,
                                   peers=tuple(peers), **settings),
                       tmp / r, str(tmp / f"{r}.ctl"), stderr=stderr if stderr is not None else open(tmp / f"{r}.log", "w"),
                       argv_prefix=("ip", "netns", "exec", topo.ns(r)))


def nexthops(topo, vip: str = VIP) -> set[str]:
    """The upstream kernel's nexthops for ``vip`` (a multipath route, or one gateway)."""
    family = ("-6",) if ":" in vip else ()
    out = topo.run("c", "ip", *family, "-j", "route", "show", vip, check=False).stdout
    hops: set[str] = set()
    for r in json.loads(out) if out.strip() else []:
        if r.get("gateway"):
            hops.add(r["gateway"])
        hops.update(nh["gateway"] for nh in r.get("nexthops", []))
    return hops
