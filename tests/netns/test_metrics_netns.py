"""Prometheus metrics of a running router, scraped over HTTP (two real routers in network namespaces)."""
from __future__ import annotations

import re
import socket
import sys
import time

import pytest

from lvsbus.demo.netns import router_toml, write_key


@pytest.mark.netns
def test_endpoint_of_a_running_router(netns, tmp_path):

    topo = netns(routers=2)
    key = write_key(tmp_path / "key")
    cfg = tmp_path / "lvsbus.toml"
    text = router_toml(topo, key)
    cfg.write_text(text.replace('service = "lvs"', 'service = "lvs"\nmetrics_address = "127.0.0.1:9539"', 1))
    for r in ("r1", "r2"):
        topo.popen(r, [sys.executable, "-m", "lvsbus.cli", "router", "--config", str(cfg),
                       "--state-dir", str(tmp_path / r)])
    body = ""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        s = topo.socket("r1", type=socket.SOCK_STREAM)
        try:
            s.settimeout(1)
            s.connect(("127.0.0.1", 9539))
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            chunks = []
            while (c := s.recv(65536)):
                chunks.append(c)
            body = b"".join(chunks).decode()
            if 'lvsbus_role{role="ACTIVE"} 1.0' in body and re.search(r'heartbeats_received_total\{link="private"\} [1-9]', body):
                break
        except OSError:
            pass
        finally:
            s.close()
        time.sleep(0.3)
    assert body.startswith("HTTP/1.0 200"), body[:200]
    assert 'lvsbus_role{role="ACTIVE"} 1.0' in body
    assert re.search(r'lvsbus_heartbeats_sent_total\{link="public"\} [1-9]', body)
    assert re.search(r'lvsbus_heartbeats_received_total\{link="private"\} [1-9]', body)
