"""The small native TOML config the scale-out tests share (docs/scaleout.md): service = lvs, routers
r1 (10.99.1.11, priority 200) and r2 (10.99.1.12, priority 100), virtual service ``web`` at
10.200.0.1 (direct routing) with real server s1 (10.99.3.101), and its ``[scaleout]`` block (AS 65001
to the upstream 10.99.1.100, AS 65000). The addresses are lvsbus/demo/netns.py's topology's.

    from tests.helpers.lvs_config import lvs_toml, scaleout_toml

    text = lvs_toml("mh") + scaleout_toml(bfd=True)
"""
from __future__ import annotations

import json

VIP = "10.200.0.1"
UPSTREAM = "10.99.1.100"
ROUTERS = (("r1", "10.99.1.11", 200), ("r2", "10.99.1.12", 100))


def lvs_toml(scheduler: str = "mh", *, service: str = "lvs", routers: int = 2, r1: str = "") -> str:
    """The config without ``[scaleout]``: the first ``routers`` routers, web's ``scheduler``;
    ``r1``: more lines of router r1 (``private_address = "..."\\n``, say). More sections can be
    appended (a table header after web's server opens a new table)."""
    lines = ["", f'service = "{service}"']
    for name, address, priority in ROUTERS[:routers]:
        lines += [f"[router.{name}]", f'address = "{address}"', *([r1.rstrip()] if r1 and name == "r1" else []),
                  f"priority = {priority}"]
    lines += ["[virtual.web]", f'address = "{VIP}"', f'scheduler = "{scheduler}"', 'forwarding = "direct"',
              "[virtual.web.server.s1]", 'address = "10.99.3.101"']
    return "\n".join(lines) + "\n"


def scaleout_toml(**fields) -> str:
    """A ``[scaleout]`` block: local_as 65001, peer_as 65000, peers [UPSTREAM], then ``fields``
    (a value overrides one of those, None leaves it out; strings, numbers, bools, lists)."""
    values = {"local_as": 65001, "peer_as": 65000, "peers": [UPSTREAM], **fields}
    return "\n[scaleout]\n" + "".join(f"{k} = {_value(v)}\n" for k, v in values.items() if v is not None)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))
