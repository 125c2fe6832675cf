"""The router process itself: shutdown and service supervision."""
from ..events import declare
from ..schema import Bool, Int, Str

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
