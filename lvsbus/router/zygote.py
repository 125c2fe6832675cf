"""The router's pre-loaded parent (issue 18: a returning router ready fast; less memory).

A router runs six to eight Python processes. Started by ``exec`` each one imports the same modules
(pyzmq, msgpack, structlog, pyroute2, the config readers, the cores): 0.3-0.4 s of CPU each on a
quiet machine, ten times that in the kernel tier's emulated VM, and tens of MB each. The zygote
(the name is Android's, whose app processes come the same way) imports them once; every service
process, its warm spare and each restart is then a ``fork`` of it: a few ms, and the pages it
imported are shared between all of them until written.

    supervisor ──(socketpair: requests, fds by SCM_RIGHTS)── zygote (imported everything, waits)
        ▲                                                      │ fork
        │ the service is the supervisor's child:               A ── fork ── B (the service)
        │ A exits at once, B is re-parented to the supervisor, │
        └──────── a child subreaper (PR_SET_CHILD_SUBREAPER) ──┘

The double fork makes every service the supervisor's own child, as with ``exec``: it waits for it,
sees its exit status, signals it by PID; the zygote holds nothing of a running service, and its
death (SIGKILL included) stops nothing: the supervisor starts a new one, and meanwhile starts
services by ``exec`` (``Launcher.spawn`` falls back). In B, before the service runs: wait to be
re-parented, die with the supervisor (PR_SET_PDEATHSIG), a session of its own, the nice value,
stdin/stderr as asked, every other descriptor closed, signal dispositions and mask as a new
process has them, the privilege drop (``lvsbus.host.privileges.Dropper``, the same as between fork
and exec; a failure is reported and the service does not run), the process title set to the
command line it would have had (``ps``, ``/proc/PID/cmdline`` show ``python -m
lvsbus_services.pulse ...``), then ``runpy`` runs the module as ``python -m`` would.

What a fork shares that an exec does not: the zygote imports modules and nothing else (no thread,
no socket but its own, no event loop, no zmq context, logging not configured), so a service
starts from the state a fresh interpreter would have after those imports. ``random`` reseeds
itself in a forked child (CPython's at-fork hook). ``gc.freeze()`` before the first fork keeps the
collector from writing to the shared objects.

``lvsbus router --spawn exec`` turns it off (each service a ``python -m`` of its own, as before).
"""
from __future__ import annotations

import array
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Sequence

from lvsbus.host import privileges

#: modules the zygote imports: the services' shells and the broker's command line (the service
#: packages' ``__main__`` are not imported: importing one would run it; runpy runs it in the child).
#: ``@MODULE`` is a barrier: the imports after it wait until the service run as ``python -m MODULE``
#: has been forked (or ``HOLD_MAX`` s have passed). A router's start is the broker, then pulse
#: (its heartbeat, its takeover): the zygote imports what each needs just before it is asked for it,
#: and the rest only once pulse runs, so that its imports take no CPU from that path on two cores
PRELOAD = ("lvsbus.cli", "lvsbus.cli.bus", "lvsbus.bus.broker", "@lvsbus.cli",  # in start order
           "lvsbus_services.pulse.shell", "@lvsbus_services.pulse",
           "lvsbus_services.nanny.shell", "lvsbus_services.lvsd.shell", "lvsbus_services.ipvs.shell",
           "lvsbus_services.bgp.shell", "lvsbus_services.alerts.shell", "lvsbus_services.metrics.fold",
           "prometheus_client")
HOLD_MAX = 3.0
#: (the web console, only with [web], imports aiohttp itself: not every router should hold it)
#: a request and its answer are one datagram each (SOCK_SEQPACKET keeps the boundaries)
MAX_MESSAGE = 65536
READY_TIMEOUT = 60.0  # the zygote's imports (seconds in an emulated VM)
SPAWN_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_LIBC = privileges._lib()  # loaded here, not in a child between fork and exec


class ZygoteDown(Exception):
    """The zygote cannot take the request (not started, dead, not answering): start by exec."""


class DropFailed(subprocess.SubprocessError):
    """The child could not drop its privileges: it did not run (as ``Popen``'s preexec failure)."""


# -- the supervisor's side ---------------------------------------------------------------------


class ForkedProcess:
    """A service process forked by the zygote, the supervisor's child: what the supervisor uses of
    ``subprocess.Popen`` (pid, returncode, poll, wait, send_signal, kill, stdin, stderr)."""

    def __init__(self, pid: int, argv: Sequence[str], stdin: Any = None, stderr: Any = None) -> None:
        self.pid = pid
        self.args = list(argv)
        self.returncode: int | None = None
        self.stdin = stdin
        self.stderr = stderr

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere (cannot happen under the subreaper): gone
                self.returncode = 255
                return self.returncode
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)  # still our child (not reaped), so the PID is still this process

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def become_subreaper() -> bool:
    """This process adopts its descendants' orphans (Linux 3.4): the zygote's grandchildren are
    its children. False when the kernel refuses (the zygote is not used then)."""
    try:
        return _LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except Exception:
        return False


def start_early(python: str = sys.executable) -> Launcher | None:
    """For ``lvsbus router`` before it imports the supervisor and reads its config: this process
    becomes a subreaper and the zygote starts importing on the other core meanwhile (its imports
    overlap the supervisor's; on a 2-core machine with another router running the gain measured
    was within noise). None when that cannot be (the supervisor then says why)."""
    try:
        if not become_subreaper():
            return None
        launcher = Launcher(python)
        launcher.start()
        return launcher
    except OSError:
        return None


class Launcher:
    """The supervisor's handle on its zygote: ``start`` it once, ``spawn`` services through it.
    Every failure of the zygote itself is ``ZygoteDown`` (the caller starts by exec instead); a
    dead zygote is started again on the next spawn, once per ``RESTART_AFTER`` s at most."""

    RESTART_AFTER = 5.0

    def __init__(self, python: str = sys.executable, preload: Sequence[str] = PRELOAD) -> None:
        self.python = python
        self.preload = tuple(preload)
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.ready = False
        self._started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        """Start the zygote (it imports in the background; ``spawn`` waits for it once)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [self.python, "-m", "lvsbus.router.zygote", "--fd", str(theirs.fileno()),
                 "--parent", str(os.getpid()), *self.preload],
                stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), close_fds=True,
                start_new_session=True, preexec_fn=die_with_parent)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.ready = False
        self._started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        """Stop the zygote (by PID: SIGKILL, it holds nothing) and reap it."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.ready = False

    def _ensure(self) -> socket.socket:
        if self.proc is None or not self.alive():
            if self.proc is not None and time.monotonic() - self._started_at < self.RESTART_AFTER:
                raise ZygoteDown("the zygote died; started again later")
            self.close()
            self.start()
        assert self.sock is not None
        if not self.ready:
            answer = self._receive(READY_TIMEOUT)
            if answer.get("ready") is not True:
                raise ZygoteDown(f"the zygote did not start: {answer}")
            self.ready = True
        return self.sock

    def _receive(self, timeout: float) -> dict:
        assert self.sock is not None
        self.sock.settimeout(timeout)
        try:
            raw = self.sock.recv(MAX_MESSAGE)
        except (OSError, socket.timeout) as exc:
            self.close()
            raise ZygoteDown(f"the zygote did not answer: {exc}") from None
        if not raw:
            self.close()
            raise ZygoteDown("the zygote closed its socket")
        return json.loads(raw)

    def spawn(self, argv: Sequence[str], *, keep: Sequence[str] | None = None, nice: int | None = None,
              stdin_pipe: bool = False, stderr_pipe: bool = False) -> ForkedProcess:
        """Fork a service: ``argv`` is the command line it would have been exec'd with
        (``python -m MODULE ARGS``); ``keep``: the capabilities it keeps (None: no drop).
        Raises ZygoteDown (start it by exec instead) or DropFailed (it did not run)."""
        if len(argv) < 3 or argv[1] != "-m":
            raise ZygoteDown(f"not a python -m command line: {argv[:3]}")
        sock = self._ensure()
        fds: list[int] = []
        ours: list[int] = []
        try:
            if stdin_pipe:
                r, w = os.pipe()
                fds.append(r)
                ours.append(w)
            if stderr_pipe:
                r, w = os.pipe()
                fds.append(w)
                ours.append(r)
            request = {"argv": list(argv), "module": argv[2], "keep": None if keep is None else list(keep),
                       "nice": nice, "stdin": stdin_pipe, "stderr": stderr_pipe}
            try:
                sock.sendmsg([json.dumps(request).encode()],
                             [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else [])
            except OSError as exc:
                self.close()
                raise ZygoteDown(f"the zygote is gone: {exc}") from None
            answer = self._receive(SPAWN_TIMEOUT)
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in fds:
                os.close(fd)
        if "error" in answer:
            for fd in ours:
                os.close(fd)
            if answer.get("drop"):
                raise DropFailed(answer["error"])
            raise ZygoteDown(answer["error"])
        stdin = os.fdopen(ours.pop(0), "wb") if stdin_pipe else None
        stderr = os.fdopen(ours.pop(0), "rb") if stderr_pipe else None
        return ForkedProcess(int(answer["pid"]), argv, stdin=stdin, stderr=stderr)


def die_with_parent() -> None:
    """In a child: SIGKILL when the parent dies (PR_SET_PDEATHSIG). Safe between fork and exec:
    libc is loaded in the parent, at import."""
    try:
        _LIBC.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except Exception:
        pass


# -- the zygote's side -------------------------------------------------------------------------


def _import(name: str) -> None:
    import importlib

    try:
        importlib.import_module(name)
    except Exception as exc:  # a module this install lacks: its service imports what it needs itself
        print(f"lvsbus zygote: not preloaded: {name}: {exc}", file=sys.stderr)


def _serve(sock: socket.socket, parent: int, pending: list[str], hold_max: float = HOLD_MAX) -> None:
    """Answer requests; between them, import what is ``pending`` one module at a time (a request
    first imports the modules of its own service that are still pending), then freeze the heap. A
    barrier (``@MODULE``, see PRELOAD) holds the imports after it until MODULE's service has been
    forked, or ``hold_max`` s after the start."""
    import select

    hold_until = time.monotonic() + hold_max
    forked: set[str] = set()
    while True:
        while pending and pending[0].startswith("@") and (pending[0][1:] in forked or time.monotonic() >= hold_until):
            pending.pop(0)  # a barrier passed
        held = bool(pending) and pending[0].startswith("@")
        if pending and not held and not select.select([sock], [], [], 0)[0]:
            _import(pending.pop(0))
            if not pending:
                gc.collect()
                gc.freeze()  # the collector no longer touches (so copies) what every service shares
            continue
        if held and not select.select([sock], [], [], max(0.0, hold_until - time.monotonic()))[0]:
            continue  # held until a request, or the barrier's time is up
        try:
            raw, anc, _flags, _addr = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(16 * 4))
        except InterruptedError:
            continue
        if not raw:
            return  # the supervisor closed its end (or died): nothing more to fork
        fds: list[int] = []
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(data[: len(data) - len(data) % a.itemsize])
                fds.extend(a)
        try:
            req = json.loads(raw)
            module = str(req.get("module", ""))
            for name in [m for m in pending if m == module or m.startswith(module + ".")]:
                pending.remove(name)
                _import(name)
            gc.freeze()  # (what is imported so far: shared with this child)
            answer = _fork(req, fds, parent, sock)
            if "pid" in answer:
                forked.add(module)
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
        sock.send(json.dumps(answer).encode())


def _fork(req: dict, fds: list[int], parent: int, sock: socket.socket) -> dict:
    """A forks B and exits; B reports on ``status`` (its PID, then "ok" once it dropped its
    privileges, or the error) and runs the service."""
    status_r, status_w = os.pipe()
    a = os.fork()
    if a == 0:  # A
        try:
            a_pid = os.getpid()
            b = os.fork()
            if b == 0:  # B
                os.close(status_r)
                _child(req, fds, parent, sock, status_w, a_pid)
            os._exit(0)
        except BaseException:
            os._exit(1)
    os.close(status_w)
    os.waitpid(a, 0)
    with os.fdopen(status_r, "rb") as fh:
        lines = fh.read().decode(errors="replace").splitlines()
    if not lines or not lines[0].isdigit():
        return {"error": "the child did not start: " + " ".join(lines)[:500]}
    pid = int(lines[0])
    if len(lines) > 1 and lines[1] == "ok":
        return {"pid": pid}
    return {"error": " ".join(lines[1:])[:500] or "the child died before it ran", "drop": True, "pid": pid}


def _child(req: dict, fds: list[int], parent: int, sock: socket.socket, status_w: int, a_pid: int) -> None:
    """B: becomes the service (never returns)."""
    code = 1
    try:
        os.write(status_w, f"{os.getpid()}\n".encode())
        sock.close()
        while os.getppid() == a_pid:  # A is exiting: wait to be the supervisor's child
            time.sleep(0.0002)
        die_with_parent()
        if os.getppid() != parent:  # not adopted by the supervisor (it died, or is no subreaper)
            os._exit(1)
        os.setsid()
        _fresh_signals()
        i = 0
        if req.get("stdin"):
            os.dup2(fds[i], 0)
            i += 1
        else:
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
        if req.get("stderr"):
            os.dup2(fds[i], 2)
            i += 1
        keep_open = {0, 1, 2, status_w}
        for fd in _open_fds():
            if fd not in keep_open:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if req.get("nice") is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, int(req["nice"]))
            except OSError:
                pass
        if req.get("keep") is not None:
            try:
                privileges.Dropper(req["keep"])()
            except OSError as exc:
                os.write(status_w, f"could not start: dropping privileges failed ({exc})\n".encode())
                os._exit(1)
        os.write(status_w, b"ok\n")
        os.close(status_w)
        code = _run(req["argv"], req["module"])  # (its SystemExit is its exit status)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        _flush()
        os._exit(code)


def _fresh_signals() -> None:
    """Dispositions and mask as a new interpreter has them: default, but SIGINT raising
    KeyboardInterrupt and SIGPIPE, SIGXFSZ ignored (CPython's start-up)."""
    for sig in range(1, signal.NSIG):
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _run(argv: list[str], module: str) -> int:
    import runpy

    try:
        import setproctitle

        setproctitle.setproctitle(" ".join(argv))
    except ImportError:
        pass
    sys.argv = [module, *argv[3:]]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    return 0


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _open_fds() -> list[int]:
    try:
        return [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 1024))


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m lvsbus.router.zygote",
                                 description="lvsbus router's pre-loaded parent: started by the router, "
                                             "not by hand (lvsbus/router/zygote.py)")
    ap.add_argument("--fd", type=int, required=True, help="the socket to the supervisor")
    ap.add_argument("--parent", type=int, required=True, help="the supervisor's PID (a subreaper)")
    ap.add_argument("modules", nargs="*", help="modules to import first")
    args = ap.parse_args(argv)
    sock = socket.socket(fileno=args.fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops us by PID
    try:
        import setproctitle  # noqa: F401  (set up before the first fork: it moves environ once)
    except ImportError:
        pass
    # ready at once: the imports go on between requests (a request imports its own service's first)
    sock.send(json.dumps({"ready": True}).encode())
    _serve(sock, args.parent, list(args.modules))
    return 0


if __name__ == "__main__":
    sys.exit(main())
