"""The recorded bus: one broker per router, which numbers, records, then forwards every event.

    service --P--> broker: validate -> assign seq + stamp clocks -> append to log -> forward --D--> subscribers
                              (ack --A--> publisher once the record is durable, if it asked)

Sockets: one ZeroMQ ROUTER socket at ``ipc://RUN_DIR/bus.sock``; RUN_DIR is created 0700, so only
root reaches it (directory permissions are the authentication over ipc). Optionally a second
ROUTER socket on tcp:// with CurveZMQ (encrypted and authenticated with allowed client keys):
remote clients there may only subscribe (``lvsbus events tail --connect``); a publish from them is
refused and counted.

Wire protocol: multipart frames with msgpack bodies, listed in ``protocol.py``.

Slow subscribers: the broker never blocks on one. A delivery that would exceed a subscriber's
high-water mark is dropped for that subscriber only; the broker remembers the dropped range, tells
the subscriber with an L frame as soon as it can, and records ``bus.subscriber_lagged``. The client
library then reads the missing range from the log (same machine) and resumes live delivery with no
gap and no duplicate. A restarted broker resumes the sequence from the log; clients notice the new
epoch in its ticks (or its W), say hello again and catch up from the log the same way, and resend
publishes that were never acknowledged.

Delivery guarantees: every recorded event reaches every subscriber whose prefixes match, once and
in log order (live, or from the log after a lag or a broker restart). A publish acknowledged with
A is durable and never lost. A publish awaiting its ack when the broker dies is resent by the
client after the restart with the same (nonce, ack_id), and the new broker drops it if the copy
sent before the crash reached it (it remembers each client's recorded ack ids). The asyncio client
(services) first looks its unacknowledged batches up in the log (the new broker writes what a
client sent before its hello before answering it) and sends again only what is not there: each
item is recorded exactly once. The blocking client resends without looking, so a publish the old
broker had recorded but not yet acked can be recorded twice by it (at-least-once: the
supervisor's and the CLI's events). Services run their effects only once their outputs are
acknowledged (``lvsbus.runtime.engine``: write-ahead).

Modules, each importing only those above it:

    protocol.py      the wire: frame kinds, limits, message encoding, what a client may send
    sockets.py       the ZeroMQ sockets (the broker's ROUTERs, ipc and CurveZMQ; the clients' DEALER)
    stats.py         what the broker counts and measures (bus.log_stats histograms)
    settings.py      the settings the broker refuses at start
    client.py        the client's message handling and gap repair; the blocking client
    async_client.py  the asyncio client of the service shells (resend after a broker restart)
    broker.py        the broker

Other packages import the public names from here.
"""
from lvsbus.bus.async_client import AsyncBusClient
from lvsbus.bus.broker import REJECT_EVENTS_PER_S, Broker
from lvsbus.bus.client import BusClient, BusError, PublishRefused
from lvsbus.bus.protocol import MAX_BAD_ITEMS, MAX_FRAME, TICK_S, endpoint, socket_path
from lvsbus.bus.settings import BrokerSettingsError, check_broker_settings
from lvsbus.bus.sockets import CurveServer
from lvsbus.bus.stats import LOG_BOUNDS_NS

__all__ = [
    "LOG_BOUNDS_NS", "MAX_BAD_ITEMS", "MAX_FRAME", "REJECT_EVENTS_PER_S", "TICK_S", "AsyncBusClient", "Broker",
    "BrokerSettingsError", "BusClient", "BusError", "CurveServer", "PublishRefused", "check_broker_settings",
    "endpoint", "socket_path",
]
