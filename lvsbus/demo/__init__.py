"""The demo and the test topologies: the namespace cluster, the qemu kernel kit."""
