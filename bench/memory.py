"""Memory of a whole router, lvsbus beside keepalived, on the same keepalived.conf (issue 18, goal 5).

    sudo python bench/memory.py [--services 100] [--servers 10] [--settle 15]

One keepalived.conf (a vrrp_instance holding the VIPs, ``--services`` virtual servers of
``--servers`` real servers each, TCP_CHECK and HTTP_GET checks every 6 s, as operators write
them) is run once by ``lvsbus router --config keepalived.conf`` and once by keepalived itself
(``keepalived --dont-fork``: its parent, VRRP and checker processes; without IPVS in the kernel,
which its checker needs, ``--vrrp``: the VRRP process pair), each alone in a network
namespace of lvsbus/demo/netns.py's topology. After ``--settle`` seconds of steady state the
proportional set size (PSS: a page shared by N processes counts 1/N in each, so the sum is the
memory the router really takes) of every process in the namespace is summed, from
/proc/PID/smaps_rollup, three samples a second apart (the median is printed).

Figures, one a line (``name=value unit``): ``lvsbus_pss_mb``, ``lvsbus_processes``, each lvsbus
service's PSS (``lvsbus_pss_mb_SERVICE``; spares counted with their service), ``keepalived_pss_mb``,
``keepalived_processes``, and ``ratio_lvsbus_over_keepalived`` (issue 18's goal: at most 5).
Without IPVS in the kernel (this machine), lvsbus's applier runs without programming a table
(and reports IPVS unavailable) and keepalived runs its VRRP pair only (``keepalived_mode``): lvsbus
then carries its health checks and table in the figure, keepalived not.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lvsbus.demo.netns import Topology, write_key  # noqa: E402


def out(name: str, value, unit: str = "") -> None:
    print(f"{name}={value}{(' ' + unit) if unit else ''}", flush=True)


def keepalived_conf(services: int, servers: int, me: str, peer: str) -> str:
    vips = [f"10.200.{i // 250}.{i % 250 + 1}" for i in range(services)]
    lines = ["global_defs {", "    router_id LVS_MEMORY", "}", "",
             "vrrp_instance VI_1 {", "    state MASTER", "    interface eth0", "    virtual_router_id 51",
             "    priority 150", "    advert_int 1", f"    unicast_src_ip {me}", "    unicast_peer {",
             f"        {peer}", "    }", "    virtual_ipaddress {"]
    lines += [f"        {v}/32 dev eth0" for v in vips]
    lines += ["    }", "}", ""]
    for i, vip in enumerate(vips):
        lines += [f"virtual_server {vip} 80 {{", "    delay_loop 6", "    lb_algo wlc", "    lb_kind DR",
                  "    protocol TCP"]
        for j in range(servers):
            lines += [f"    real_server 10.99.{3 + (i * servers + j) // 200}.{(i * servers + j) % 200 + 20} 80 {{",
                      f"        weight {1 + j % 3}"]
            if j % 2:
                lines += ["        HTTP_GET {", "            url {", "              path /health",
                          "              status_code 200", "            }", "            connect_timeout 3", "        }"]
            else:
                lines += ["        TCP_CHECK {", "            connect_timeout 3", "        }"]
            lines.append("    }")
        lines += ["}", ""]
    return "\n".join(lines) + "\n"


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def namespace_pids(topo: Topology, short: str) -> list[int]:
    r = subprocess.run(["ip", "netns", "pids", topo.ns(short)], capture_output=True, text=True)
    return [int(x) for x in r.stdout.split()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def service_of(cmd: str) -> str:
    if "lvsbus.router.zygote" in cmd:  # (its argv names the modules it preloads)
        return "zygote"
    for word in cmd.split():
        if word.startswith("lvsbus_services.") or word.startswith("lvsbus_tools."):
            return word.split(".")[1]
    if " broker " in f" {cmd} ":
        return "broker"
    if " router " in f" {cmd} ":
        return "supervisor"
    return "other"


def sample(topo: Topology, short: str, samples: int = 3) -> tuple[float, int, dict[str, float]]:
    totals, counts, parts = [], [], []
    for _ in range(samples):
        pids = namespace_pids(topo, short)
        per: dict[str, float] = {}
        total = 0
        for pid in pids:
            kb = pss_kb(pid)
            total += kb
            name = service_of(cmdline(pid))
            per[name] = per.get(name, 0.0) + kb / 1024
        totals.append(total / 1024)
        counts.append(len(pids))
        parts.append(per)
        time.sleep(1.0)
    i = totals.index(statistics.median(totals))
    return totals[i], counts[i], parts[i]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--servers", type=int, default=10)
    ap.add_argument("--settle", type=float, default=15.0, help="seconds of steady state before measuring")
    ap.add_argument("--spawn", default="zygote,exec",
                    help="lvsbus router --spawn modes to measure, in turn (default %(default)s): lvsbus_* "
                         "figures are the zygote's, lvsbus_exec_* exec's; the ratio is the first mode's")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("memory: needs root (network namespaces)", file=sys.stderr)
        return 2
    out("services", args.services)
    out("servers_per_service", args.servers)
    tmp = Path(tempfile.mkdtemp(prefix="lvsbus-memory-"))
    topo = Topology(routers=2, servers=0, private=False).build()
    try:
        conf = tmp / "keepalived.conf"
        conf.write_text(keepalived_conf(args.services, args.servers, topo.router_address(1), topo.router_address(2)))
        key = write_key(tmp / "hb.key")
        # lvsbus on r1, on the keepalived.conf itself
        env = {**os.environ, "PYTHONPATH": str(ROOT), "LVSBUS_HEARTBEAT_KEY_FILE": str(key), "LVSBUS_LOG_FORMAT": "json"}
        totals: dict[str, float] = {}
        for mode in args.spawn.split(","):
            # lvsbus_* figures: services forked from the zygote (the default); lvsbus_exec_*: --spawn exec
            tag = "lvsbus" if mode == "zygote" else f"lvsbus_{mode}"
            p = topo.popen("r1", [sys.executable, "-m", "lvsbus.cli", "router", "--config", str(conf),
                                  "--state-dir", str(tmp / f"state-{mode}"), "--spawn", mode],
                           stdout=subprocess.DEVNULL, stderr=open(tmp / "lvsbus.err", "w"), env=env, cwd=str(ROOT))
            time.sleep(args.settle)
            if p.poll() is not None:
                print(f"memory: lvsbus router exited ({p.returncode}):\n{(tmp / 'lvsbus.err').read_text()[-3000:]}",
                      file=sys.stderr)
                return 1
            mtotal, n, per = sample(topo, "r1")
            totals[mode] = mtotal
            out(f"{tag}_pss_mb", f"{mtotal:.1f}", "MB")
            out(f"{tag}_processes", n)
            for name, mb in sorted(per.items(), key=lambda x: -x[1]):
                out(f"{tag}_pss_mb_{name}", f"{mb:.1f}", "MB")
            p.terminate()
            p.wait(30)
        # keepalived on r2, the same file (its own address is the unicast source there)
        if shutil.which("keepalived") is None:
            out("keepalived", "not_installed")
            return 0
        ver = subprocess.run(["keepalived", "--version"], capture_output=True, text=True)
        out("keepalived_version", (ver.stderr or ver.stdout).split()[1])
        conf2 = tmp / "keepalived-r2.conf"
        conf2.write_text(keepalived_conf(args.services, args.servers, topo.router_address(2), topo.router_address(1)))
        # keepalived's checker needs IPVS in the kernel (it exits without): where there is none,
        # its VRRP process pair alone (parent and VRRP child), as issue 18 compared it
        full = os.path.exists("/proc/net/ip_vs") or subprocess.run(["modprobe", "-q", "ip_vs"]).returncode == 0
        out("keepalived_mode", "full" if full else "vrrp_only (no IPVS in this kernel: its checker cannot start)")
        k = topo.popen("r2", ["keepalived", *(() if full else ("--vrrp",)), "--dont-fork", "--log-console", "--no-syslog", "-f", str(conf2),
                              "-p", str(tmp / "k.pid"), "-r", str(tmp / "k-vrrp.pid"), "-c", str(tmp / "k-check.pid")],
                       stdout=subprocess.DEVNULL, stderr=open(tmp / "keepalived.err", "w"))
        time.sleep(args.settle)
        if k.poll() is not None:
            print(f"memory: keepalived exited ({k.returncode}):\n{(tmp / 'keepalived.err').read_text()[-3000:]}",
                  file=sys.stderr)
            return 1
        total = next(iter(totals.values()))  # the first mode's (the zygote's by default)
        ktotal, kn, _ = sample(topo, "r2")
        out("keepalived_pss_mb", f"{ktotal:.1f}", "MB")
        out("keepalived_processes", kn)
        out("ratio_lvsbus_over_keepalived", f"{total / ktotal:.1f}" if ktotal else "n/a")
        out("target_met", str(ktotal > 0 and total <= 5 * ktotal).lower())
        k.terminate()
        k.wait(30)
    finally:
        topo.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
