"""check-config of a scale-out config on a router's own host (a network namespace without BIRD)."""
from __future__ import annotations

from tests.helpers.lvs_config import lvs_toml, scaleout_toml


def test_check_config_on_a_router_notes_a_missing_bird(netns, tmp_path):  # noqa: F811
    import os
    import subprocess
    import sys

    from lvsbus.demo.netns import write_key

    topo = netns(routers=1, private=False)
    key = write_key(tmp_path / "hb.key")
    cfg = tmp_path / "lvsbus.toml"
    cfg.write_text(lvs_toml(scheduler="mh") + scaleout_toml() + f'\n[heartbeat]\nkey_file = "{key}"\n')
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def check(path: str) -> subprocess.CompletedProcess:
        return topo.run("r1", "env", f"PATH={path}", f"PYTHONPATH={root}", sys.executable, "-m", "lvsbus.cli",
                        "check-config", str(cfg), check=False)

    without = check("/nonexistent")
    assert without.returncode == 0, without.stderr
    assert "BIRD 2 is not installed on this router" in without.stderr and "router r1" in without.stderr
    with_bird = check(os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    assert with_bird.returncode == 0 and "BIRD 2 is not installed" not in with_bird.stderr, with_bird.stderr
