"""Operator commands run by the services' shells (notify scripts, failover services' start and stop
commands, alerts' notify_up / quorum_down...): one way to run them.

``run_shell`` runs a command line with ``/bin/sh -c`` in its own session (so a kill reaches what it
started), stdin and stdout to /dev/null, and bounds it: still running after ``timeout_s``, its
whole process group is killed; so it is when the awaiting task is cancelled (the service stopping)
with ``kill_on_cancel`` (otherwise the cancellation goes on and the command is left to finish). It
never raises for the command's sake: what happened comes back as ``(exit_code, error, duration_ms)``.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import IO, Any

__all__ = ["run_shell"]


async def run_shell(command: str, timeout_s: float, env: dict[str, str] | None = None,
                    stderr: IO[Any] | int = asyncio.subprocess.DEVNULL,
                    kill_on_cancel: bool = False) -> tuple[int | None, str, int]:
    """``(exit_code, error, duration_ms)``: exit_code None when it did not run or was killed; error
    empty when it ran to its end, else why not (could not run, timed out, stopped)."""
    start = time.monotonic()
    exit_code, error = None, ""
    try:
        proc = await asyncio.create_subprocess_shell(
            command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
            start_new_session=True, env=env)
        try:
            exit_code = await asyncio.wait_for(proc.wait(), timeout=max(0.001, timeout_s))
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and not kill_on_cancel:
                raise
            error = (f"timed out after {int(timeout_s * 1000)} ms: killed" if isinstance(exc, asyncio.TimeoutError)
                     else "the service stopped: killed")
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()
    except OSError as exc:
        error = f"could not run: {exc}"
    return exit_code, error, int((time.monotonic() - start) * 1000)
