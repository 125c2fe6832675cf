"""Host I/O shared by the shells and the router: addresses and ARP, capabilities, locks,
the state directory, the key file, structured logs, command-line value checks."""
