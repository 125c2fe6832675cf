"""Time as a recorded input: cores never read the clock, their shells publish deadline events."""
from lvsbus.wire.events import declare
from lvsbus.wire.schema import Int, Str

declare(
    "timer.fired", 1,
    {
        "service": Str(max_len=64, min_len=1, doc="the core that asked for this deadline"),
        "deadline_ns": Int(min=0, doc="the monotonic deadline the core asked for"),
    },
    doc="A deadline a core asked for has passed. The event's mono_ns is the core's 'now'.",
)
