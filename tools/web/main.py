"""Running the console: the bus client, the signals, the server (shared by ``lvsbus web`` and the
router's ``python -m lvsbus_tools.web``)."""
from __future__ import annotations

import asyncio
import signal

import structlog

from lvsbus.bus import AsyncBusClient
from lvsbus.host.paths import StateDirs

from .app import Console, serve

log = structlog.get_logger("lvsbus.web")


def _supervisor_pid(state_dir: str) -> int | None:
    """The router's supervisor as its run's log says (its last hello)."""
    from lvsbus.router.status import current_run

    try:
        return current_run(state_dir)[1]
    except (OSError, ValueError, KeyError):
        return None


def run(state_dir: str, run_start_seq: int, address: str, password_file: str, cert: str | None, key: str | None,
        node: str = "", router_pid: int | None = None) -> int:
    """Serve until SIGTERM or SIGINT. ``router_pid``: the router's supervisor (the config editor
    signals it), read from the log when not given (before the event loop starts: a blocking read)."""
    if router_pid is None:
        router_pid = _supervisor_pid(state_dir)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        dirs = StateDirs(state_dir)
        # every event: the overview folds what it shows, the events page lists all
        client = AsyncBusClient(dirs.run, "web", subs=("",), log_dir=dirs.log, from_seq=run_start_seq)
        await client.start()
        console = Console(password_file, tls=bool(cert), bus=client, node=node, state_dir=state_dir)
        # the router said hello just before its run's config.loaded (the view follows from there)
        console.view.router_pid = router_pid
        try:
            await serve(address, console, stop, cert, key)
        finally:
            client.close()

    try:
        asyncio.run(main())
    except OSError as exc:  # the address is taken, or not this host's
        log.error("web_cannot_listen", address=address, error=str(exc))
        print(f"lvsbus web: cannot listen on {address}: {exc}")
        return 1
    return 0
