"""Configuration as a recorded input: replay knows exactly which config each decision was made under."""
from lvsbus.wire.events import declare
from lvsbus.wire.schema import Bool, Json, List, Str

_CONFIG_LOADED_1 = declare(
    "config.loaded", 1,
    {
        "path": Str(max_len=4096),
        "format": Str(max_len=16, doc="lvs.cf or toml"),
        "digest": Str(max_len=128, doc="sha256 of the file as read"),
        "model": Json(doc="the whole validated model, lvsbus.config.to_dict(); rebuilt with from_dict()"),
        "warnings": List(Str(max_len=1024), max_items=1000),
        "local_router": Str(max_len=64, doc="which of the config's routers this host is (found from its local addresses)"),
        "reload": Bool(doc="false at start, true on SIGHUP"),
        "diff": Json(doc="on reload, the ConfigDiff.to_dict() against the previous config; {} at start"),
    },
    doc="A configuration was read, validated and is now in force for every service of this router.",
)


def _upcast_config_loaded_v1(p: dict) -> dict:
    """v1 -> v2: say in the model what v1's cores did. A v1 check asked ``rise`` passes of a server
    with no health history too (initial_rise = rise), and v1's ``quiesce`` kept every server not
    in service at weight 0, never-up ones included: v2's ``inhibit_on_failure`` (v2's ``quiesce``
    is Piranha's, weight 0 only after the server was in the table). Never raises: a model that is
    not the expected shape is passed on as it is (the cores reject it with their own event)."""
    model = p.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("virtual_services"), list):
        return p
    services = []
    for vs in model["virtual_services"]:
        if isinstance(vs, dict):
            vs = dict(vs)
            if isinstance(vs.get("check"), dict) and "initial_rise" not in vs["check"]:
                vs["check"] = {**vs["check"], "initial_rise": vs["check"].get("rise", 2)}
            if isinstance(vs.get("servers"), list):
                vs["servers"] = [
                    {**rs, "check": {**rs["check"], "initial_rise": rs["check"].get("rise", 2)}}
                    if isinstance(rs, dict) and isinstance(rs.get("check"), dict) and "initial_rise" not in rs["check"]
                    else rs
                    for rs in vs["servers"]]
            if "inhibit_on_failure" not in vs:
                vs["inhibit_on_failure"] = bool(vs.get("quiesce", False))
                vs["quiesce"] = False
        services.append(vs)
    return {**p, "model": {**model, "virtual_services": services}}


declare(
    "config.loaded", 2,
    _CONFIG_LOADED_1.payload,  # the same fields: v2 changes what the model means (see the upcaster)
    doc="A configuration was read, validated and is now in force for every service of this router. "
    "v1 models had no check.initial_rise (a server with no health history needed rise passes) and their "
    "quiesce put every server not in service at weight 0 from the start (v2 calls that inhibit_on_failure).",
    upcast=_upcast_config_loaded_v1,
)
declare(
    "config.reload_refused", 1,
    {
        "path": Str(max_len=4096),
        "errors": List(Str(max_len=2048), max_items=1000),
        "kept_digest": Str(max_len=128, doc="digest of the config that stays in force"),
    },
    doc="A reload found an invalid config; the running config stays in force.",
)
