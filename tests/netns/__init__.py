"""Network namespaces (root): real routers, real servers and a client on virtual links."""
