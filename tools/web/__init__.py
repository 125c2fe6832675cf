"""The web console (issue 16; docs/console.md): a live, authenticated overview of one router, with
the operator actions (drain, disable, enable a real server; handover) as recorded inputs."""
