"""The router process itself: shutdown and service supervision."""
from lvsbus.wire.events import declare
from lvsbus.wire.schema import Bool, Int, Str

declare(
    "router.shutdown_requested", 1,
    {"reason": Str(max_len=256), "graceful": Bool()},
    doc="The router was asked to stop (SIGTERM, or a fatal supervisor decision).",
)
declare(
    "router.service_restarted", 1,
    {"service": Str(max_len=64), "attempt": Int(min=1), "exit": Str(max_len=256)},
    doc="The supervisor restarted a service that died.",
)
declare(
    "router.service_abandoned", 1,
    {"service": Str(max_len=64), "restarts": Int(min=0), "exit": Str(max_len=256)},
    doc="A service died again and again (a restart loop) and the config's hard_shutdown is false: the supervisor "
    "stops restarting it and the router stays up without it (nanny: no health checks, the table as it was) "
    "until a reload tries again. With hard_shutdown true the router steps down instead.",
)
