"""The runtime: the pure-core base, the engine that runs a core on the bus, snapshots."""
