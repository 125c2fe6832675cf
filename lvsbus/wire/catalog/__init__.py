"""Every event type lvsbus knows, declared once. Importing this package fills ``lvsbus.wire.events.REGISTRY``.

One module a concern; each declares its types with ``lvsbus.wire.events.declare``. Names are stable dotted
words; observations and decisions are past-tense facts (``router.role_changed``), effects a core
asks its shell to carry out are imperative (``pulse.send_heartbeat``). Never change a declared
version: add version N+1 with an upcaster from N, and keep N declared so old logs still decode.
The one change allowed within a version is widening an enum (a new reason word): every record
written before stays valid, and readers that do not know the word treat it as opaque text.
The JSON Schemas in ``schemas/`` are generated from these declarations (``lvsbus schemas export``);
a test fails when they drift apart.
"""
from importlib import import_module

from lvsbus.wire.events import REGISTRY

MODULES = ("bus", "timer", "config", "supervisor", "pulse", "health", "lvsd", "ipvs", "operator", "web", "bgp", "alerts")

for _name in MODULES:  # every one exists: a missing module is an error, not an absent concern
    import_module(f"{__name__}.{_name}")

__all__ = ["REGISTRY"]
