"""pulse's shell and the router supervisor, without namespaces where possible: epoch counter, key
file, ARP/NA frames, datagram intake (MAC, address, rate limit), sd_notify, status from a log,
``lvsbus fsm router``, config errors, and the restart-loop step-down (in a namespace)."""
from __future__ import annotations

import os
import socket
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from lvsbus_services.pulse import shell, wire
from lvsbus_services.pulse.core import role_fsm_dot

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.wire.events import Event, encode
from lvsbus.log import Durability, EventLog
from lvsbus.host.netutil import arp_frames, na_packet
from lvsbus.router.supervisor import config_payload, sd_notify
from lvsbus.router.status import read_status
from lvsbus.demo.netns import router_toml, write_key

ROOT = Path(__file__).resolve().parents[2]


def test_epoch_grows_on_every_start_even_when_the_clock_goes_back(tmp_path):
    a = shell.next_epoch(str(tmp_path), now=1_000_000)
    b = shell.next_epoch(str(tmp_path), now=999)  # the wall clock went back
    c = shell.next_epoch(str(tmp_path), now=2_000_000)
    assert a == 1_000_000 and b == a + 1 and c == 2_000_000
    assert (tmp_path / "pulse.epoch").read_text().strip() == str(c)
    assert stat.S_IMODE(os.stat(tmp_path / "pulse.epoch").st_mode) == 0o600


def test_key_file_must_be_private(tmp_path):
    """pulse refuses the key file with the line the router's checks give (lvsbus.host.keyfile.load_key)."""
    key = write_key(tmp_path / "k")
    assert shell.read_key(str(key)) == wire.key_from_secret(key.read_bytes())
    os.chmod(key, 0o640)
    with pytest.raises(shell.KeyFileError) as refused:
        shell.read_key(str(key))
    assert str(refused.value) == f"{key}: heartbeat key file has mode 0640: it must be 0600 or stricter (chmod 600 {key})"
    os.chmod(key, 0o600)
    key.write_bytes(b"short")
    with pytest.raises(shell.KeyFileError, match=f"^{key}: heartbeat key file holds 5 bytes: at least 16 bytes.*--force"):
        shell.read_key(str(key))
    gone = tmp_path / "missing"
    with pytest.raises(shell.KeyFileError, match=f"^{gone}: heartbeat key file: No such file.*keys heartbeat --out {gone} "):
        shell.read_key(str(gone))


def test_gratuitous_arp_request_and_reply_frames():
    mac = bytes.fromhex("029901000011")
    req, rep = arp_frames(mac, "10.99.1.50")
    for frame, op, tha in ((req, 1, b"\0" * 6), (rep, 2, b"\xff" * 6)):
        assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac and frame[12:14] == b"\x08\x06"
        htype, ptype, hlen, plen, opcode = struct.unpack("!HHBBH", frame[14:22])
        assert (htype, ptype, hlen, plen, opcode) == (1, 0x0800, 6, 4, op)
        assert frame[22:28] == mac and frame[28:32] == socket.inet_aton("10.99.1.50")
        assert frame[32:38] == tha and frame[38:42] == socket.inet_aton("10.99.1.50")
        assert len(frame) == 42


def test_unsolicited_neighbour_advertisement():
    mac = bytes.fromhex("029901000011")
    pkt = na_packet(mac, "2001:db8::50")
    assert pkt[0] == 136 and pkt[1] == 0
    assert struct.unpack("!I", pkt[4:8])[0] == 0x20000000  # override, not solicited
    assert pkt[8:24] == socket.inet_pton(socket.AF_INET6, "2001:db8::50")
    assert pkt[24:26] == b"\x02\x01" and pkt[26:32] == mac


def test_sd_notify_writes_one_datagram(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert sd_notify("READY=1")
        assert s.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sd_notify("READY=1") is False


class FakeRuntime:
    def __init__(self):
        self.published = []
        self.client = object()

    def publish(self, type_, payload):
        from lvsbus.wire.events import REGISTRY

        REGISTRY.validate(type_, REGISTRY.latest(type_).version, payload)
        self.published.append((type_, payload))


def _shell(tmp_path, net: str = "10.99") -> shell.PulseShell:
    from lvsbus_services.pulse.core import _settings_from_model

    from lvsbus.config import loads

    class T:  # enough of a Topology for router_toml
        n_routers, private = 2, True

        @staticmethod
        def router_address(i, link="public"):
            return f"{net}.{1 if link == 'public' else 2}.{10 + i}"

    cfg = loads(router_toml(T, tmp_path / "k"), "x.toml").config
    sh = shell.PulseShell(str(tmp_path), "x.toml", 1)
    sh.settings = _settings_from_model(cfg, "r1")
    sh.key = b"k" * 32
    sh.runtime = FakeRuntime()
    return sh


def test_datagrams_become_observations_or_counted_rejections(tmp_path):
    sh = _shell(tmp_path)
    hb = {"node": "r2", "role": "BACKUP", "priority": 100, "epoch": 7, "seq": 3, "leaving": False}
    sh._datagram("public", wire.encode_heartbeat(sh.key, hb), "10.99.1.12")
    sh._datagram("private", wire.encode_heartbeat(sh.key, hb), "10.99.2.12")
    fence = {"node": "r2", "target": "r1", "epoch": 7, "seq": 4, "reason": "peer_dead"}
    sh._datagram("public", wire.encode_fence(sh.key, fence), "10.99.1.12")
    sh._datagram("public", wire.encode_heartbeat(b"x" * 32, hb), "10.99.1.12")  # wrong key
    sh._datagram("public", b"garbage", "10.99.1.100")
    sh._datagram("public", wire.encode_heartbeat(sh.key, hb), "10.99.1.100")  # r2 from elsewhere
    sh._datagram("private", wire.encode_heartbeat(sh.key, hb), "10.99.1.12")  # wrong link
    types = [t for t, _ in sh.runtime.published]
    assert types[:3] == ["pulse.heartbeat_received", "pulse.heartbeat_received", "pulse.fence_received"]
    assert sh.runtime.published[0][1]["link"] == "public" and sh.runtime.published[1][1]["link"] == "private"
    rejected = [p for t, p in sh.runtime.published if t == "pulse.datagram_rejected"]
    assert [p["reason"] for p in rejected] == ["bad_mac", "malformed", "address_mismatch", "address_mismatch"]
    assert [p["count"] for p in rejected] == [1, 2, 3, 4]


def test_the_first_input_of_a_run_is_pulse_started_datagrams_wait(tmp_path):
    """pulse's sockets are bound at start but read only once pulse.started is published: a heartbeat
    that arrives meanwhile waits in the socket buffer. (It was published first and decided on the
    state restored from the log, as if pulse had listened all the while it was down: a backup took
    over there, peer_dead, before it learnt it had restarted; test_router_netns saw it under load.)
    Real sockets on loopback; fails with the readers registered at bind time."""
    import asyncio

    sh = _shell(tmp_path, net="127.0")  # the routers' addresses on loopback (127.0.1.11: r1's public)
    port = sh.settings.port
    sh.runtime.state = None
    sh._configured_device = lambda link: "lo"  # (no config.loaded in a log here)
    hb = {"node": "r2", "role": "ACTIVE", "priority": 100, "epoch": 7, "seq": 3, "leaving": False}

    async def slow_nl(fn, *args):  # a heartbeat arrives while the shell still gathers its addresses
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.bind(("127.0.1.12", 0))  # r2's public address
            tx.sendto(wire.encode_heartbeat(sh.key, hb), ("127.0.1.11", port))
        await asyncio.sleep(0.2)
        return []

    sh._nl = slow_nl

    async def main():
        try:
            await sh.on_start()
            for _ in range(50):
                if len(sh.runtime.published) > 1:
                    break
                await asyncio.sleep(0.02)
        finally:
            for sock in sh.socks.values():
                asyncio.get_running_loop().remove_reader(sock.fileno())
                sock.close()

    asyncio.run(main())
    types = [t for t, _ in sh.runtime.published]
    assert types[0] == "pulse.started", types
    assert types[1:] == ["pulse.heartbeat_received"], types  # then read


def test_a_flood_of_bad_datagrams_is_counted_but_rate_limited(tmp_path):
    sh = _shell(tmp_path)
    for _ in range(500):
        sh._datagram("public", b"garbage", "10.99.1.100")
    assert sh.rejected == 500
    assert len(sh.runtime.published) == wire.REJECT_EVENTS_PER_S


def test_status_folds_the_current_run_from_the_log(tmp_path):
    from lvsbus.config import loads

    class T:
        n_routers, private = 2, True

        @staticmethod
        def router_address(i, link="public"):
            return f"10.99.{1 if link == 'public' else 2}.{10 + i}"

    loaded = loads(router_toml(T, tmp_path / "k"), "x.toml")
    payload = config_payload(loaded, "r1", False, {})
    vip = {"address": "10.99.1.50", "prefixlen": 32, "family": "ipv4", "device": "eth0", "label": None, "owner": "echo"}
    evs = [
        ("router", "config.loaded", payload, None),
        ("pulse", "router.role_changed", {"node": "r1", "old": "INIT", "new": "BACKUP", "reason": "started", "priority": 200, "epoch": 1, "peer": None}, 1),
        ("pulse", "pulse.heartbeat_received", {"link": "public", "peer": "r2", "address": "10.99.1.12", "role": "BACKUP", "priority": 100, "epoch": 5, "seq": 1, "leaving": False}, None),
        ("pulse", "pulse.peer_alive", {"peer": "r2", "link": "public", "role": "BACKUP", "priority": 100, "epoch": 5}, 3),
        ("pulse", "router.role_changed", {"node": "r1", "old": "BACKUP", "new": "ACTIVE", "reason": "no_active", "priority": 200, "epoch": 1, "peer": None}, 3),
        ("pulse", "pulse.take_vips", {"vips": [vip], "reason": "no_active"}, 3),
        ("pulse", "pulse.link_degraded", {"peer": "r2", "link": "private", "silent_ns": 10}, 3),
    ]
    log = EventLog(str(tmp_path / "log"), durability=Durability("none"))
    for i, (src, t, p, cause) in enumerate(evs, 1):
        log.append(i, encode(Event(i, "r1", src, t, 1, 1_000_000_000 * i, 0, cause, p)))
    log.close()
    st = read_status(str(tmp_path), now_mono_ns=3_200_000_000)
    assert st["router"] == "r1" and st["role"] == "ACTIVE" and st["run_start_seq"] == 1
    assert st["vips"][0]["address"] == "10.99.1.50"
    peer = st["peers"]["r2"]
    assert peer["alive"] and peer["links"]["public"]["age_s"] == pytest.approx(0.2)
    assert peer["links"]["public"]["healthy"] and peer["links"]["private"]["degraded"]
    # the states the console's overview shows too (lvsbus/router/peerlinks.py); a deadtime later, silent
    assert {n: x["state"] for n, x in peer["links"].items()} == {"public": "up", "private": "degraded"}
    later = read_status(str(tmp_path), now_mono_ns=3_000_000_000 + int(payload["model"]["heartbeat"]["deadtime"] * 1e9))
    assert {n: x["state"] for n, x in later["peers"]["r2"]["links"].items()} == {"public": "silent", "private": "degraded"}


def _cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lvsbus.cli", *args], capture_output=True, text=True, cwd=ROOT, **kw)


def test_fsm_router_prints_the_table_and_dot():
    r = _cli("fsm", "router", "--dot")
    assert r.returncode == 0 and r.stdout == role_fsm_dot()
    r = _cli("fsm", "router")
    assert r.returncode == 0
    for word in ("take_over", "BACKUP", "ACTIVE", "faulty", "router.shutdown_requested"):
        assert word in r.stdout


def test_router_refuses_a_broken_config_or_a_foreign_host(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[router.a]\naddress = "not-an-address"\n')
    r = _cli("router", "--config", str(bad), "--state-dir", str(tmp_path / "s"))
    assert r.returncode == 1 and "invalid configuration" in r.stderr and "not-an-address" in r.stderr
    foreign = tmp_path / "foreign.toml"
    foreign.write_text('[router.a]\naddress = "192.0.2.201"\npriority = 2\n[router.b]\naddress = "192.0.2.202"\npriority = 1\n')
    r = _cli("router", "--config", str(foreign), "--state-dir", str(tmp_path / "s"))
    assert r.returncode == 1 and "belongs to a configured router" in r.stderr
    assert not (tmp_path / "s").exists()  # nothing started
