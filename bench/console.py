"""The web console under load: event to screen latency with 1,000 real servers (issue 16).

    broker (python -m lvsbus.cli broker)   console (python -m lvsbus.cli web, on 127.0.0.1)
    headless Chromium (selenium) with the overview open   this process: the health events' publisher

A config of 100 virtual services x 10 real servers is recorded, the console follows the bus, the
browser logs in and opens the overview (1,000 rows). This process then publishes health changes
(``health.real_server_down`` / ``_up``, one real server at a time, spread over all of them) at
``--rate`` a second for ``--seconds``; a MutationObserver in the page stamps (wall clock) each
change of a health cell. Printed, one figure a line (``name=value unit``):

    rows                        real server rows rendered
    first_paint                 login to 1,000 rows on screen
    changes / shown / missing   health changes published, seen on screen, never seen
    event_to_screen_p50/p99/max publish (wall clock) -> the cell shows the new state
    first_tenth_p99 / last_tenth_p99  the same over the first and the last tenth: growing = falling behind
    console_cpu                 the console process's CPU over the run, % of one core

    python bench/console.py [--rate 100] [--seconds 20] [--services 100] [--servers 10]

Loopback only; needs Debian's chromium and chromium-driver, and selenium.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lvsbus.wire import catalog  # noqa: E402,F401
from lvsbus.bus import BusClient  # noqa: E402
from lvsbus.config import loads, to_dict  # noqa: E402
from lvsbus.host.paths import StateDirs  # noqa: E402
from lvsbus_tools.web import auth  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from pipeline import q, start_broker, stop  # noqa: E402

OBSERVER = """
window.__seen = [];
new MutationObserver((muts) => {
  const t = performance.timeOrigin + performance.now();
  for (const m of muts) {
    const td = m.target.nodeType === 3 ? m.target.parentNode : m.target;
    if (td && td.classList && td.classList.contains("health")) window.__seen.push([td.parentNode.dataset.id, td.textContent, t]);
  }
}).observe(document.getElementById("rows"), {subtree: true, childList: true, characterData: true});
"""


def config_text(services: int, servers: int) -> str:
    out = ['[router.lvs1]\naddress = "127.0.0.1"\n']
    for v in range(services):
        out.append(f'[virtual.v{v}]\naddress = "10.8.{v // 250}.{v % 250 + 1}"\nport = 80\n')
        for s in range(servers):
            out.append(f'[virtual.v{v}.server.s{s}]\naddress = "10.9.{v % 250}.{s + 1}"\n')
    return "\n".join(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=100.0, help="health changes a second")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--servers", type=int, default=10, help="real servers a virtual service")
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tmp = Path(tempfile.mkdtemp(prefix="lvsbus-console-"))
    procs: list[subprocess.Popen] = []
    driver = None
    try:
        dirs = StateDirs(str(tmp / "state")).make()
        procs.append(start_broker(dirs))
        cfg = tmp / "lvs.toml"
        cfg.write_text(config_text(args.services, args.servers))
        loaded = loads(cfg.read_text(), str(cfg))
        pub = BusClient(dirs.run, "router")
        pub.publish_acked("config.loaded", {
            "path": str(cfg), "format": loaded.format, "digest": loaded.digest, "model": to_dict(loaded.config),
            "warnings": [], "local_router": "lvs1", "reload": False, "diff": {}})
        ids = [(f"v{v}", f"s{s}") for s in range(args.servers) for v in range(args.services)]
        for v, s in ids:  # every server UP first
            pub.publish("health.real_server_up", {"virtual": v, "server": s, "address": "10.0.0.1", "port": 80,
                                                  "reason": "checks_passed", "previous": "RISING", "passes": 2, "detail": "ok"})
        passwd = tmp / "web.passwd"
        auth.set_password(str(passwd), "bench", "viewer", "bench-password")
        port = free_port()
        web = subprocess.Popen([sys.executable, "-m", "lvsbus.cli", "web", "--state-dir", dirs.root, "--address",
                                f"127.0.0.1:{port}", "--password-file", str(passwd)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=open(tmp / "web.err", "w"),
                               env={**os.environ, "PYTHONPATH": str(ROOT), "LVSBUS_LOG_FORMAT": "json"})
        procs.append(web)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        opts = Options()
        opts.binary_location = "/usr/bin/chromium"
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900",
                  f"--user-data-dir={tmp}/profile", "--no-proxy-server"):
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        t0 = time.monotonic()
        driver.get(url + "/login")
        driver.find_element(By.ID, "user").send_keys("bench")
        driver.find_element(By.ID, "password").send_keys("bench-password")
        driver.find_element(By.ID, "submit").click()
        n = len(ids)
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(
            "return document.querySelectorAll('td.h-UP').length") == n
            and d.find_element(By.ID, "live").text == "live")
        first_paint = time.monotonic() - t0
        rows = driver.execute_script("return document.querySelectorAll('#rows tr[id^=\"srv-\"]').length")
        driver.execute_script(OBSERVER)
        cpu0 = cpu_s(web.pid)
        sent: list[tuple[str, str, int]] = []
        gap = 1.0 / args.rate
        total = int(args.rate * args.seconds)
        start = time.monotonic()
        for i in range(total):
            v, s = ids[i % n]
            down = (i // n) % 2 == 0
            at = start + i * gap
            while (left := at - time.monotonic()) > 0:
                time.sleep(left)
            t_pub = time.time_ns()
            if down:
                pub.publish("health.real_server_down", {"virtual": v, "server": s, "address": "10.0.0.1", "port": 80,
                                                        "reason": "checks_failed", "previous": "UP", "failures": 1,
                                                        "detail": "refused"})
            else:
                pub.publish("health.real_server_up", {"virtual": v, "server": s, "address": "10.0.0.1", "port": 80,
                                                      "reason": "checks_passed", "previous": "DOWN", "passes": 1, "detail": "ok"})
            sent.append((f"{v}/{s}", "DOWN" if down else "UP", t_pub))
        time.sleep(2.0)
        cpu = (cpu_s(web.pid) - cpu0) / (time.monotonic() - start) * 100
        seen = driver.execute_script("return window.__seen;")
        by_id: dict[str, list[tuple[str, float]]] = {}
        for id_, state, t in seen:
            by_id.setdefault(id_, []).append((state, t * 1e6))
        lat: list[float] = []
        for id_, state, t_pub in sent:
            hit = next((t for st, t in by_id.get(id_, []) if st == state and t >= t_pub - 5e6), None)
            if hit is not None:
                by_id[id_].remove((state, hit))
                lat.append((hit - t_pub) / 1e6)
        missing = len(sent) - len(lat)
        tenth = max(1, len(lat) // 10)
        print(f"rows={rows} rows")
        print(f"first_paint={first_paint:.2f} s")
        print(f"changes={len(sent)} events")
        print(f"shown={len(lat)} events")
        print(f"missing={missing} events")
        if lat:
            print(f"event_to_screen_p50={q(lat, 0.5):.1f} ms")
            print(f"event_to_screen_p99={q(lat, 0.99):.1f} ms")
            print(f"event_to_screen_max={max(lat):.1f} ms")
            print(f"first_tenth_p99={q(lat[:tenth], 0.99):.1f} ms")
            print(f"last_tenth_p99={q(lat[-tenth:], 0.99):.1f} ms")
        print(f"console_cpu={cpu:.1f} %")
        return 0 if lat and missing == 0 else 1
    finally:
        if driver is not None:
            driver.quit()
        stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
