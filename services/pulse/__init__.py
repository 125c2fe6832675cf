"""pulse: the router role service (Piranha's pulse): heartbeats, failover, VIPs, fencing.

``core`` is the pure role machine (``PulseCore``), ``wire`` the heartbeat/fence datagram format.
See docs/pulse.md.
"""
