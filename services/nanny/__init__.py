"""nanny: health checks of real servers (shell: the check loop; core: one health machine per
(virtual service, real server)). See docs/nanny-lvsd.md."""
