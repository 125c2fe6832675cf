"""The browser side of tests/netns/test_web_browser.py, run as its own process inside the client's
network namespace (so Chromium reaches the router's console over the test topology, and
chromedriver's own port is on that namespace's loopback).

    python tests/helpers/web_browser.py URL USER PASSWORD OUTDIR

Steps, each said on stdout as one JSON line ({"step": ..., ...}); a step that waits for the test
writes {"step": "wait", "for": WHAT} and waits for OUTDIR/go-WHAT to exist. Screenshots go to OUTDIR.
"""
from __future__ import annotations

import json
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def say(**kw) -> None:
    print(json.dumps(kw), flush=True)


def wait_go(outdir: str, what: str, timeout: float = 60.0) -> None:
    say(step="wait", **{"for": what})
    end = time.monotonic() + timeout
    while not os.path.exists(os.path.join(outdir, "go-" + what)):
        if time.monotonic() > end:
            raise TimeoutError(f"the test never said go for {what}")
        time.sleep(0.05)


def main() -> int:
    url, user, password, outdir = sys.argv[1:5]
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,700",
              f"--user-data-dir={outdir}/profile", "--no-proxy-server"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver", log_output=os.path.join(outdir, "chromedriver.log")),
                              options=opts)
    shot = lambda name: driver.save_screenshot(os.path.join(outdir, name + ".png")) and say(step="screenshot", name=name)  # noqa: E731
    try:
        driver.get(url + "/")
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "login"))
        shot("login")
        driver.find_element(By.ID, "user").send_keys(user)
        driver.find_element(By.ID, "password").send_keys(password)
        driver.find_element(By.ID, "submit").click()
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "rows"))
        cell = lambda id_, cls: driver.execute_script(  # noqa: E731
            "const r = document.getElementById('srv-' + arguments[0]);"
            "return r ? r.querySelector('.' + arguments[1]).textContent : null;", id_, cls)
        WebDriverWait(driver, 15).until(lambda d: cell("echo/s2", "health") == "UP" and cell("echo/s1", "health") == "UP"
                                        and d.find_element(By.ID, "role").text == "ACTIVE"
                                        and d.find_element(By.ID, "live").text == "live"
                                        and "private up" in d.find_element(By.ID, "peers").text)
        driver.execute_script("window.__same_page = 'yes';")  # gone if the page ever reloads
        say(step="overview", role=driver.find_element(By.ID, "role").text, s1=cell("echo/s1", "effective"),
            s2=cell("echo/s2", "effective"), peers=driver.find_element(By.ID, "peers").text)
        shot("overview")

        wait_go(outdir, "down")  # the test stops s2's server now
        t0 = time.monotonic()
        WebDriverWait(driver, 15, poll_frequency=0.02).until(lambda d: cell("echo/s2", "health") == "DOWN")
        say(step="down_seen", after_s=round(time.monotonic() - t0, 3),
            same_page=driver.execute_script("return window.__same_page || null;"), effective=cell("echo/s2", "effective"))
        WebDriverWait(driver, 10).until(lambda d: cell("echo/s2", "effective") == "out")
        shot("server-down")

        driver.find_element(By.CSS_SELECTOR, "tr[id='srv-echo/s1'] button.act-drain").click()
        WebDriverWait(driver, 10).until(lambda d: cell("echo/s1", "admin-state") == "drained"
                                        and cell("echo/s1", "effective") == "0")
        say(step="drained", message=driver.find_element(By.ID, "message").text,
            same_page=driver.execute_script("return window.__same_page || null;"))
        shot("drained")

        driver.find_element(By.ID, "handover").click()
        driver.switch_to.alert.accept()
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "role").text == "BACKUP")
        say(step="handed_over", role=driver.find_element(By.ID, "role").text,
            same_page=driver.execute_script("return window.__same_page || null;"))
        shot("handed-over")

        driver.get(url + "/events")
        WebDriverWait(driver, 10).until(lambda d: "operator ada (web) asks: drain echo/s1" in d.find_element(By.ID, "rows").text)
        driver.find_element(By.ID, "types").send_keys("operator. lvsd.server_action_taken")
        driver.find_element(By.CSS_SELECTOR, "#filters button").click()
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "live").text == "live"
                                        and len(d.find_elements(By.CSS_SELECTOR, "#rows tr")) == 3)
        say(step="events", rows=[r.text for r in driver.find_elements(By.CSS_SELECTOR, "#rows tr")])
        shot("events")
        driver.get(url + "/timeline")
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.TAG_NAME, "svg"))
        say(step="timeline", handover="(handover" in driver.page_source)
        shot("timeline")

        driver.get(url + "/config")
        WebDriverWait(driver, 10).until(lambda d: "[virtual.echo]" in d.find_element(By.ID, "text").get_attribute("value"))
        text = driver.find_element(By.ID, "text").get_attribute("value")
        driver.execute_script("const t = document.getElementById('text'); t.value = arguments[0];"
                              "t.dispatchEvent(new Event('input'));", text.replace("port = 7", "port = 700000", 1))
        driver.find_element(By.ID, "check").click()
        WebDriverWait(driver, 10).until(lambda d: "error" in d.find_element(By.ID, "status").text)
        bad = driver.find_element(By.ID, "issues").text
        shot("config-error")
        driver.execute_script("const t = document.getElementById('text'); t.value = arguments[0];"
                              "t.dispatchEvent(new Event('input'));", text + "\n# edited in the console\n")
        driver.find_element(By.ID, "check").click()
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "status").text.startswith("valid"))
        driver.find_element(By.ID, "apply").click()
        driver.switch_to.alert.accept()
        WebDriverWait(driver, 15).until(lambda d: d.find_element(By.ID, "status").text.startswith("applied"))
        say(step="config", error=bad, status=driver.find_element(By.ID, "status").text)
        shot("config-applied")

        driver.get(url + "/")  # the overview again, as a BACKUP now; the test kills the active peer
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "role").text == "BACKUP"
                                        and d.find_element(By.ID, "live").text == "live")
        driver.execute_script("window.__same_page = 'yes';")
        wait_go(outdir, "failover")
        t0 = time.monotonic()
        WebDriverWait(driver, 20, poll_frequency=0.02).until(lambda d: d.find_element(By.ID, "role").text == "ACTIVE")
        say(step="failover_seen", after_s=round(time.monotonic() - t0, 3), reason=driver.find_element(By.ID, "role-reason").text,
            vips=driver.find_element(By.ID, "vips").text, same_page=driver.execute_script("return window.__same_page || null;"),
            peers=driver.find_element(By.ID, "peers").text)
        shot("failover")
    except Exception as exc:  # said, with a screenshot, for the test to report
        try:
            shot("failure")
        except Exception:  # noqa: BLE001
            pass
        say(step="error", error=f"{type(exc).__name__}: {exc}"[:2000])
        return 1
    finally:
        driver.quit()
    say(step="done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
