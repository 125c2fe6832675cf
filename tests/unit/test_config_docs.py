"""The examples in docs/config.md are real: the TOML example loads, every lvs.cf keyword is documented."""
from __future__ import annotations

import re
from pathlib import Path

from lvsbus.config import loads_toml, render_toml
from lvsbus.config.lvscf import FAILOVER_KEYS, GLOBAL_KEYS, SERVER_KEYS, VIRTUAL_KEYS

DOC = (Path(__file__).parents[2] / "docs" / "config.md").read_text()


def test_toml_example_loads():
    example, *fragments = re.findall(r"```toml\n(.*?)```", DOC, re.S)
    loaded = loads_toml(example, "docs/config.md")
    cfg = loaded.config
    assert cfg.virtual("web").server("web1").check.path == "/web1/healthz"
    assert cfg.virtual("web").server("web1").check.status == (200, 204)  # merged
    assert loads_toml(render_toml(cfg)).config == cfg
    # the other examples are fragments (tables) of that file: each loads added to it
    assert fragments
    for fragment in fragments:
        assert loads_toml(example + "\n" + fragment, "docs/config.md").config != cfg


def test_every_lvscf_keyword_is_documented():
    for key in GLOBAL_KEYS + VIRTUAL_KEYS + SERVER_KEYS + FAILOVER_KEYS:
        assert f"`{key}`" in DOC, key
