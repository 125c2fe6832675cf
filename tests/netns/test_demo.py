"""The README's main job, run in the suite: the demo cluster end to end, and its timeline holds the failover."""
import subprocess
import sys

import pytest

from lvsbus.demo.netns import netns_available

pytestmark = pytest.mark.netns


def test_demo_cluster_fails_over_and_writes_the_timeline(tmp_path):
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "out"
    p = subprocess.Popen(
        [sys.executable, "-m", "lvsbus.cli", "demo", "cluster", "--no-vm", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        text, _ = p.communicate(timeout=240)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, text[-3000:]
    assert "r1 (priority 200) is ACTIVE" in text
    assert "s2 is DOWN" in text
    assert "r2 took over" in text and "(r2)" in text.split("r2 took over")[1]  # the client's ARP moved to r2
    assert text.count("identical: every logged decision") == 2, text[-2000:]
    html = (out / "timeline.html").read_text()
    assert "<svg" in html and "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "BACKUP -&gt; ACTIVE (peer_dead" in html or "BACKUP -> ACTIVE (peer_dead" in html
    assert "fence r1" in html and "real server web/s2 DOWN" in html
    ours = f"lvsb{p.pid % 10000}x"  # the demo's per-run prefix (lvsbus.demo.netns)
    left = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split() if n.startswith(ours)]
    assert not left, f"the demo left namespaces behind: {left}"
