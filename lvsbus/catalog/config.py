"""Configuration as a recorded input: replay knows exactly which config each decision was made under."""
from ..events import declare
from ..schema import Bool, Json, List, Str

declare(
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
declare(
    "config.reload_refused", 1,
    {
        "path": Str(max_len=4096),
        "errors": List(Str(max_len=2048), max_items=1000),
        "kept_digest": Str(max_len=128, doc="digest of the config that stays in force"),
    },
    doc="A reload found an invalid config; the running config stays in force.",
)
