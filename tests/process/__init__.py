"""Real processes on this host (the broker, services, the CLI): loopback and files only."""
