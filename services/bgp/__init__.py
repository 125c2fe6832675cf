"""bgp: scale-out announcements (docs/scaleout.md): a pure core deciding announce / drain /
withdraw per VIP, and a shell driving an existing BGP speaker (BIRD 2) through its control socket."""
