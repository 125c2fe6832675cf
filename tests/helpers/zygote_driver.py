"""``python -m tests.helpers.zygote_driver DIR``: plays a supervisor to the router's zygote (a child
subreaper with a ``zygote.Launcher``) in a process of its own, so the test runner adopts no orphan;
prints one JSON object of what it saw (tests/process/test_zygote.py)."""
import json
import os
import signal
import sys
import time

from lvsbus.router import zygote

CHILD = "tests.helpers.zygote_child"


def wait_file(path: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    with open(path) as fh:
        return json.load(fh)


def main() -> int:
    d = sys.argv[1]
    res: dict = {"me": os.getpid()}
    res["subreaper"] = zygote.become_subreaper()
    launcher = zygote.Launcher(preload=("lvsbus.cli",))  # (a module run by runpy is not preloaded: runpy warns)
    launcher.start()
    argv = lambda mode, name: [sys.executable, "-m", CHILD, mode, os.path.join(d, name)]  # noqa: E731
    try:
        p = launcher.spawn(argv("report", "report.json"), nice=5)
        res["report_rc"] = p.wait(10)
        res["report"] = wait_file(os.path.join(d, "report.json"))
        with open(f"/proc/{os.getpid()}/status") as fh:
            res["my_caps"] = {k: v.strip() for k, _, v in (ln.partition(":") for ln in fh) if k == "CapEff"}

        p = launcher.spawn(argv("stdin", "stdin.json"), stdin_pipe=True)
        p.stdin.write(b"7\n")
        p.stdin.flush()
        res["stdin_rc"] = p.wait(10)

        p = launcher.spawn(argv("stderr", "stderr.json"), stderr_pipe=True)
        res["stderr_line"] = p.stderr.readline().decode()
        res["stderr_rc"] = p.wait(10)

        p = launcher.spawn(argv("report", "caps.json"), keep=["CAP_NET_ADMIN"])
        res["caps_rc"] = p.wait(10)
        res["caps"] = wait_file(os.path.join(d, "caps.json"))["caps"]

        # a running service outlives its zygote's SIGKILL; the zygote comes back on a later spawn
        p = launcher.spawn(argv("sleep", "sleep.json"))
        wait_file(os.path.join(d, "sleep.json"))
        with open(f"/proc/{p.pid}/cmdline", "rb") as fh:
            res["cmdline"] = fh.read().decode(errors="replace")
        old = launcher.pid
        os.kill(old, signal.SIGKILL)
        launcher.proc.wait(5)
        time.sleep(0.2)
        res["sleeper_alive_after_zygote_kill"] = p.poll() is None
        try:
            launcher.spawn(argv("report", "early.json"))
            res["early_respawn"] = "spawned"
        except zygote.ZygoteDown as exc:
            res["early_respawn"] = f"down: {exc}"
        launcher._started_at -= launcher.RESTART_AFTER  # as if the window had passed
        q = launcher.spawn(argv("report", "again.json"))
        res["again_rc"] = q.wait(10)
        res["zygote_restarted"] = launcher.pid not in (None, old)
        p.kill()
        res["sleeper_rc"] = p.wait(5)
    finally:
        launcher.close()
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
