"""The bus's ZeroMQ sockets: the broker's ROUTER sockets (ipc://, and tcp:// with CurveZMQ) and the
clients' DEALER socket."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import structlog
import zmq

from lvsbus.bus.protocol import MAX_FRAME, socket_path

log = structlog.get_logger("lvsbus.bus")


@dataclass
class CurveServer:
    """A tcp:// endpoint with CurveZMQ: the broker's secret key and a directory of allowed client public keys."""

    endpoint: str
    server_secret_file: str
    authorized_dir: str


def router_socket(ctx: zmq.Context, sndhwm: int) -> zmq.Socket:
    s = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.ROUTER_MANDATORY, 1)
    s.setsockopt(zmq.SNDHWM, sndhwm)
    s.setsockopt(zmq.RCVHWM, 100_000)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
    return s


def bind_ipc(sock: zmq.Socket, run_dir: str) -> None:
    """Bind ``ipc://RUN_DIR/bus.sock``, the socket file 0600 (RUN_DIR is 0700: see the package's docstring)."""
    path = socket_path(run_dir)
    if os.path.exists(path):
        os.unlink(path)  # a previous broker died; the directory lock is the log's
    sock.bind("ipc://" + path)
    os.chmod(path, 0o600)


def bind_curve(ctx: zmq.Context, sock: zmq.Socket, curve: CurveServer) -> Any:
    """Bind ``sock`` on the CurveZMQ endpoint; returns the started authenticator (to stop at close)."""
    import zmq.auth
    from zmq.auth.thread import ThreadAuthenticator

    public, secret = zmq.auth.load_certificate(curve.server_secret_file)
    if secret is None:
        raise ValueError(f"{curve.server_secret_file} holds no secret key")
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=curve.authorized_dir)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    sock.bind(curve.endpoint)
    return auth


def dealer(ctx: zmq.Context, connect: str, rcvhwm: int, curve: tuple[bytes, bytes, bytes] | None = None) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    if connect.startswith("ipc://"):
        # a restarted broker is reconnected to within 10 ms, not zmq's default 100: timers go
        # through the bus, so the reconnection is part of pulse's pause during a broker restart
        sock.setsockopt(zmq.RECONNECT_IVL, 10)
    if curve is not None:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = curve
    sock.connect(connect)
    return sock


def close_dealer(sock: zmq.Socket) -> None:
    if sock.closed:
        return
    try:
        r = sock.send_multipart([b"B"], zmq.NOBLOCK)
        if hasattr(r, "add_done_callback"):
            r.add_done_callback(log_send_error)
    except zmq.ZMQError:
        pass
    sock.close()


def log_send_error(fut) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("bus_send_failed", error=str(fut.exception()))
