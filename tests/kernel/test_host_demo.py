"""The README's main job through the real IPVS datapath (host side of the kernel tier).

``lvsbus demo cluster --vm --quick`` boots the qemu kernel (lvsbus/demo/qemu.py) and runs the whole demo
cluster inside it (namespaces, both routers, three real servers, the client), shortened by
``--quick`` (no replay --verify). Its lines stream back to this side; the client's requests are
answered by the real servers through r1's IPVS, spread by rr; the stopped s2 leaves r1's kernel
table; the requests go on through r2's IPVS after the SIGKILL failover; the timeline HTML and the
routers' logs land in the host directory shared with the VM.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = [pytest.mark.kernel, pytest.mark.slow]


def test_demo_cluster_runs_through_ipvs_in_the_vm(kit, tmp_path):
    out = tmp_path / "out"
    t0 = time.monotonic()
    p = subprocess.Popen(
        [sys.executable, "-m", "lvsbus.cli", "demo", "cluster", "--vm", "--quick", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )
    try:
        text, _ = p.communicate(timeout=900)
    finally:
        if p.poll() is None:  # the demo stops its VM on SIGTERM
            p.terminate()
            p.wait(30)
    print(text)
    print(f"[demo in the VM] {time.monotonic() - t0:.0f}s")
    assert p.returncode == 0, text[-5000:]
    assert "the VM booted in" in text
    assert "has IPVS: the client's requests go through the real datapath" in text
    assert "r1 (priority 200) is ACTIVE" in text

    # rr through r1's IPVS: an exact third each, every request answered by a real server
    assert "answered by: s1=4 s2=4 s3=4 errors=0" in text, text[-5000:]
    # s2 stops: out of r1's kernel table (ipvsadm -Ln in r1's namespace), and no request reaches it
    after_stop = text.split("the applier took it out of r1's kernel", 1)[1]
    table = after_stop.split("[demo]")[0]
    assert "10.99.3.101:80" in table and "10.99.3.103:80" in table and "10.99.3.102" not in table, table
    assert "12 client requests: s1=6 s3=6 errors=0" in after_stop

    # SIGKILL of r1: r2 takes over, the client's ARP entry moves, requests are answered through r2's IPVS
    failover = text.split("r2 took over ", 1)[1]
    assert "(r2)" in failover.split("\n")[1], failover[:500]  # the client's ARP entry names r2
    since_kill = failover.split("the client's requests since the kill", 1)[1].split("longest wait", 1)[0]
    runs = re.findall(r"s to +[\d.]+s: (answered|failed)", since_kill)
    assert runs and runs[-1] == "answered", since_kill  # the request loop was answered again after the takeover
    assert "12 client requests through r2: s1=6 s3=6 errors=0" in failover
    stats = failover.split("ipvsadm -Ln --stats in r2's namespace", 1)[1]
    conns = int(re.search(r"TCP  10\.99\.1\.50:80 +(\d+)", stats).group(1))
    assert conns >= 12, stats[:600]  # r2's kernel forwarded them

    # the timeline, written in the VM to the shared directory, holds the failover
    html = (out / "timeline.html").read_text()
    assert "BACKUP -&gt; ACTIVE (peer_dead" in html or "BACKUP -> ACTIVE (peer_dead" in html
    assert "fence r1" in html and "real server web/s2 DOWN" in html
    assert (out / "logs" / "r1" / "log").is_dir() and (out / "logs" / "r2" / "log").is_dir()
    assert "/mnt/out" not in text  # the VM's paths are shown as this machine's
    assert not (out / "rc").exists() and not (out / "cmd").exists()  # the kit's own files are cleaned up
