"""lvsbus.config.derive: what the router, pulse and the simulator derive from a config, one copy."""
from __future__ import annotations

from lvsbus.config.derive import config_vips, loaded_payload
from lvsbus.router.supervisor import config_vips as supervisor_vips
from lvsbus_services.pulse.core import _settings_from_model

from tests.helpers.pulse_cluster import make_config


def test_the_supervisors_last_resort_release_covers_exactly_pulses_vips():
    """The router's last-resort release used a derivation of its own: it also named an inactive
    service's VIP, and a VIP with neither device nor label got no device where pulse uses the
    router's own."""
    cfg = make_config()
    pulse = _settings_from_model(cfg, "lvs1").vips
    assert [(v.address, v.prefixlen, v.device) for v in pulse] == supervisor_vips(cfg, "lvs1")
    assert [v.address for v in pulse] == ["10.0.0.100", "2001:db8::100", "192.168.100.254"]  # not "off"'s
    assert [(v.device, v.prefixlen) for v in pulse][1] == ("eth0", 128)  # the router's device, the full length
    vips = config_vips(cfg, "eth9")
    assert vips[0].owners == ("web", "web-tls") and vips[2].owners == ("nat_router",) and vips[1].device == "eth9"


def test_the_config_loaded_payload_is_within_the_schema():
    from lvsbus.wire.events import REGISTRY
    from lvsbus.config import to_dict

    p = loaded_payload("/x/" + "a" * 5000, "lvscf", "d" * 64, to_dict(make_config()), ["w" * 2000] * 1200, "lvs1",
                       False, {})
    assert p["format"] == "lvs.cf" and len(p["path"]) == 4096 and len(p["warnings"]) == 1000
    REGISTRY.validate("config.loaded", REGISTRY.latest("config.loaded").version, p)
