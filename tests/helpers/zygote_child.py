"""A service stand-in forked by the router's zygote in tests/process/test_zygote.py:
``python -m tests.helpers.zygote_child MODE OUT``: writes what it sees to OUT (JSON), then acts.

MODE: ``report`` (exit 0), ``stdin`` (exit with the number read from stdin), ``stderr`` (a line to
stderr, exit 0), ``sleep`` (until killed)."""
import json
import os
import signal
import sys
import time


def caps() -> dict[str, str]:
    with open("/proc/self/status") as fh:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in fh) if k.startswith("Cap") or k == "NoNewPrivs"}


def main() -> int:
    mode, out = sys.argv[1], sys.argv[2]
    seen = {"pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0), "argv": sys.argv, "caps": caps(),
            "nice": os.getpriority(os.PRIO_PROCESS, 0), "name": __name__,
            "preloaded": "lvsbus.cli" in sys.modules,  # imported by the zygote, not by this module
            "after_barrier": "xml.dom.minidom" in sys.modules,  # (test_zygote's barrier test preloads it)
            "sigpipe": signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN,
            "sigint": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
            "fds": sorted(int(f) for f in os.listdir("/proc/self/fd"))}
    with open(out + ".tmp", "w") as fh:
        json.dump(seen, fh)
    os.rename(out + ".tmp", out)
    if mode == "stdin":
        return int(sys.stdin.readline())
    if mode == "stderr":
        print("a line on stderr", file=sys.stderr)
        return 0
    if mode == "sleep":
        while True:
            time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
