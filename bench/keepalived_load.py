"""Loading a large keepalived.conf: 1,000 virtual servers x 10 real servers (issue 15: under 1 s).

    python bench/keepalived_load.py [--services 1000] [--servers 10] [--runs 5]

The file is written the way operators write them (a vrrp_instance holding the VIPs, a
virtual_server block per service with lb_algo, lb_kind, persistence, delay_loop, and a real_server
block each with weight and a TCP_CHECK or HTTP_GET). Figures, one a line (``name=value unit``):

* parse_s: the grammar alone (lvsbus/config/kagrammar.py), the median of --runs;
* load_s: the whole load as ``lvsbus check-config`` does it (grammar, mapping onto the model,
  validation), the median; load_max_s the slowest run;
* the same ``load_s`` for the equivalent native TOML (``config convert`` of it), side by side;
* target_met: load_s < 1.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lvsbus.config import loads  # noqa: E402
from lvsbus.config.kagrammar import parse  # noqa: E402
from lvsbus.config.native import render_toml  # noqa: E402


def make(services: int, servers: int) -> str:
    vips = [f"10.{100 + i // 65000}.{(i // 250) % 250}.{i % 250 + 1}" for i in range(services)]
    out = ["global_defs {", "    router_id LVS_BENCH", "}", "",
           "vrrp_instance VI_1 {", "    state MASTER", "    interface eth0", "    virtual_router_id 51",
           "    priority 150", "    advert_int 1", "    unicast_src_ip 10.0.0.1", "    unicast_peer {",
           "        10.0.0.2", "    }", "    virtual_ipaddress {"]
    out += [f"        {v}/32 dev eth0" for v in vips]
    out += ["    }", "}", ""]
    for i, vip in enumerate(vips):
        out += [f"virtual_server {vip} 80 {{", "    delay_loop 6", "    lb_algo wlc", "    lb_kind DR",
                "    persistence_timeout 300", "    protocol TCP"]
        for j in range(servers):
            out += [f"    real_server 172.{16 + i // 6000}.{(i // 24) % 250}.{(i % 24) * 10 + j + 1} 80 {{",
                    f"        weight {1 + j % 3}"]
            if j % 2:
                out += ["        HTTP_GET {", "            url {", "              path /health",
                        "              status_code 200", "            }", "            connect_timeout 3",
                        "            retry 2", "        }"]
            else:
                out += ["        TCP_CHECK {", "            connect_timeout 3", "        }"]
            out.append("    }")
        out += ["}", ""]
    return "\n".join(out) + "\n"


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(prog="python bench/keepalived_load.py", description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--servers", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    text = make(a.services, a.servers)
    loaded = loads(text, "keepalived.conf", format="keepalived")
    cfg = loaded.config
    assert len(cfg.virtual_services) == a.services and sum(len(v.servers) for v in cfg.virtual_services) == \
        a.services * a.servers
    toml = render_toml(cfg)
    print(f"lines={text.count(chr(10))} lines")
    print(f"bytes={len(text.encode())} bytes")
    print(f"real_servers={a.services * a.servers} servers")
    parse_s = timed(lambda: parse(text, "keepalived.conf"), a.runs)
    load_s = timed(lambda: loads(text, "keepalived.conf", format="keepalived"), a.runs)
    toml_s = timed(lambda: loads(toml, "lvs.toml", format="toml"), a.runs)
    print(f"parse_s={statistics.median(parse_s):.3f} s")
    print(f"load_s={statistics.median(load_s):.3f} s")
    print(f"load_max_s={max(load_s):.3f} s")
    print(f"toml_load_s={statistics.median(toml_s):.3f} s")
    print(f"target_met={int(statistics.median(load_s) < 1.0)} bool")
    return 0


if __name__ == "__main__":
    sys.exit(main())
