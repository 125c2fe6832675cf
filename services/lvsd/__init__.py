"""lvsd: the desired IPVS table from the config and nanny's health verdicts. See docs/nanny-lvsd.md."""
