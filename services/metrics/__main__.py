"""``python -m lvsbus_services.metrics --state-dir DIR --config FILE --run-start-seq N [--config-seq M]``

The router's Prometheus endpoint (``metrics_address = "HOST:PORT"`` in the config): it follows the
bus from the run's start (catching up from the log, so a restart loses no count) and serves
``GET /metrics`` in the text exposition format. The address is the one of the config in force (the
``config.loaded`` the router accepted, ``--config-seq``), not what ``FILE`` holds now.
"""
from __future__ import annotations

import asyncio
import signal

import structlog

from lvsbus.host import logs
from lvsbus.bus import AsyncBusClient
from lvsbus.host.paths import StateDirs
from lvsbus.runtime.engine import service_arguments, service_config

from .fold import SUBSCRIPTIONS, Metrics, render

log = structlog.get_logger("lvsbus.metrics")


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


async def serve(dirs: StateDirs, address: str, run_start_seq: int, stop: asyncio.Event) -> None:
    metrics = Metrics()
    client = AsyncBusClient(dirs.run, "metrics", subs=SUBSCRIPTIONS, log_dir=dirs.log, from_seq=run_start_seq)
    await client.start()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            if len(parts) >= 2 and parts[0] == "GET" and parts[1].split("?")[0] == "/metrics":
                body = render(metrics.samples()).encode()
                head = "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            else:
                body = b"lvsbus metrics: GET /metrics\n"
                head = "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n"
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    host, port = parse_address(address)
    server = await asyncio.start_server(handle, host, port)
    log.info("metrics_listening", address=address)
    try:
        while not stop.is_set():
            for ev in await client.recv_batch(0.5):
                metrics.apply(ev)
    finally:
        server.close()
        client.close()


def main(argv: list[str] | None = None) -> int:
    args = service_arguments("metrics", "metrics: the router's Prometheus endpoint").parse_args(argv)
    logs.setup(service="metrics")
    accepted = service_config("metrics", args)
    if accepted is None:
        return 2
    address = accepted.config.metrics_address
    if not address:
        log.info("metrics_not_configured")
        return 0

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(StateDirs(args.state_dir), address, args.run_start_seq, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
