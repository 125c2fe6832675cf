"""The model: immutable, helpers for the services (its purity, no I/O imports: tests/unit/test_core_purity.py)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import lvsbus.config.model as model
from lvsbus.config import (
    Check,
    ConfigError,
    RealServer,
    VirtualService,
    check_port,
    effective_check,
    identify_local_router,
    loads_toml,
    server_port,
)

def test_importing_the_model_loads_no_io_module():
    code = ("import sys; before = set(sys.modules); import lvsbus.config.model, lvsbus.config; "
            "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in "
            "{'socket', 'subprocess', 'random', 'structlog', 'zmq', 'pyroute2', 'asyncio', 'logging'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_frozen_slots_tuples():
    for cls in (model.Config, model.VirtualService, model.RealServer, model.Check, model.Router,
                model.Heartbeat, model.FailoverService, model.NatRouter):
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
        assert hasattr(cls, "__slots__")
        for f in dataclasses.fields(cls):
            assert "list" not in str(f.type) and "dict" not in str(f.type), (cls, f.name)
    vs = VirtualService("v", "192.0.2.1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        vs.port = 81  # type: ignore[misc]
    hash(loads_toml('[router.a]\naddress = "192.0.2.1"\n').config)


TWO = """
[router.lvs1]
address = "192.0.2.1"
private_address = "10.9.0.1"
priority = 200
[router.lvs2]
address = "192.0.2.2"
shared_address = "2001:db8::2"
priority = 100
"""


def test_identify_local_router():
    cfg = loads_toml(TWO).config
    assert identify_local_router(cfg, {"127.0.0.1", "192.0.2.1/24"}).name == "lvs1"
    assert identify_local_router(cfg, {"10.9.0.1"}).name == "lvs1"
    assert identify_local_router(cfg, {"2001:DB8:0::2", "fe80::1%eth0"}).name == "lvs2"
    with pytest.raises(ConfigError) as none:
        identify_local_router(cfg, {"127.0.0.1", "not-an-ip"})
    assert "none of this host's addresses" in str(none.value) and "lvs1 (192.0.2.1, 10.9.0.1)" in str(none.value)
    with pytest.raises(ConfigError) as several:
        identify_local_router(cfg, {"192.0.2.1", "192.0.2.2"})
    assert "several routers (lvs1, lvs2)" in str(several.value)


def test_server_helpers():
    vcheck = Check(port=8081)
    own = Check(rise=9)
    vs = VirtualService("v", "192.0.2.1", port=443, check=vcheck,
                        servers=(RealServer("a", "10.0.0.1"), RealServer("b", "10.0.0.2", port=8443, check=own)))
    a, b = vs.servers
    assert server_port(vs, a) == 443 and server_port(vs, b) == 8443
    assert effective_check(vs, a) is vcheck and effective_check(vs, b) is own
    assert check_port(vs, a) == 8081 and check_port(vs, b) == 8443


def test_config_error_lists_every_issue():
    with pytest.raises(ConfigError) as info:
        loads_toml('[router.a]\naddress = "x"\npriority = 0\n', "t.toml")
    text = str(info.value)
    assert text.startswith("2 configuration errors:")
    assert "t.toml:2: router.a.address:" in text and "t.toml:3: router.a.priority:" in text
    assert info.value.issues[0].to_dict()["severity"] == "error"


def test_from_dict_revalidates():
    from lvsbus.config import from_dict, to_dict

    cfg = loads_toml('[router.a]\naddress = "192.0.2.1"\n[virtual.v]\naddress = "192.0.2.9"\n'
                     '[virtual.v.server.s]\naddress = "192.0.2.10"\n').config
    d = to_dict(cfg)
    assert isinstance(d["virtual_services"], list) and d["virtual_services"][0]["protocol"] == "tcp"
    d["virtual_services"][0]["servers"][0]["weight"] = 70000
    d["heartbeat"]["keepalive"] = "2"
    with pytest.raises(ConfigError) as info:
        from_dict(d)
    assert {(i.key, i.file) for i in info.value.issues} == {
        ("virtual.v.server.s.weight", "<dict>"), ("heartbeat.keepalive", "<dict>")}


def test_a_name_given_twice_in_the_list_form_is_an_error_at_each_level():
    """TOML tables and lvs.cf blocks cannot repeat a name, the list form (to_dict, a config.loaded
    payload) can: from_dict refuses a router, virtual service, real server or failover service
    named twice, each at its key."""
    from pathlib import Path

    from lvsbus.config import from_dict, loads_lvscf, to_dict

    fix = Path(__file__).parents[1] / "fixtures" / "lvscf"
    fos = to_dict(loads_lvscf((fix / "fos.cf").read_text(), "fos.cf").config)
    fos["routers"].append(dict(fos["routers"][0], address="192.0.2.99", private_address=None, priority=7))
    fos["failover_services"].append(dict(fos["failover_services"][0], address="192.0.2.98"))
    lvs = to_dict(loads_lvscf((fix / "direct_routing.cf").read_text(), "dr.cf").config)
    web = lvs["virtual_services"][0]
    web["servers"].append(dict(web["servers"][0], address="10.0.0.99"))
    lvs["virtual_services"].append(dict(web, address="10.0.0.199", servers=web["servers"][:1]))
    found = []
    for data in (fos, lvs):
        with pytest.raises(ConfigError) as info:
            from_dict(data)
        found += [(i.key, i.message) for i in info.value.issues]
    assert found == [("router.primary", "router 'primary' is defined twice"),
                     ("failover.web1", "failover service 'web1' is defined twice"),
                     ("virtual.web.server.web1", "real server 'web1' is defined twice in virtual 'web'"),
                     ("virtual.web", "virtual service 'web' is defined twice")]
