"""The recorded bus (see broker.py's docstring). Other packages import its public names from here."""
from .broker import (
    LOG_BOUNDS_NS,
    MAX_BAD_ITEMS,
    MAX_FRAME,
    REJECT_EVENTS_PER_S,
    TICK_S,
    AsyncBusClient,
    Broker,
    BrokerSettingsError,
    BusClient,
    BusError,
    CurveServer,
    PublishRefused,
    check_broker_settings,
    endpoint,
    socket_path,
)

__all__ = [
    "LOG_BOUNDS_NS", "MAX_BAD_ITEMS", "MAX_FRAME", "REJECT_EVENTS_PER_S", "TICK_S", "AsyncBusClient", "Broker",
    "BrokerSettingsError", "BusClient", "BusError", "CurveServer", "PublishRefused", "check_broker_settings",
    "endpoint", "socket_path",
]
