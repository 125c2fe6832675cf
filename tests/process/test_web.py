"""The web console's HTTP side with real requests (aiohttp's test server on a loopback socket):
logins, sessions, the guards and each refusal the issue lists (wrong password, missing and forged
CSRF token, a viewer trying an action, session expiry, a foreign Origin), each refused and
recorded; the actions as operator events; the live stream; the view folded from events."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

import lvsbus.wire.catalog  # noqa: F401  (fills the registry)
from lvsbus.config import to_dict
from lvsbus.wire.events import REGISTRY, Event
from lvsbus_tools.web import auth, configedit
from lvsbus_tools.web.app import COOKIE, Console, make_app
from lvsbus_tools.web.view import View
from tests.helpers.lvsd_driver import config, vs


class FakeBus:
    """Stands for the router's bus: records publishes (validated against the catalog), numbers
    durable ones and, for an operator request, lets the test answer as a core would."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict]] = []
        self.seq = 100
        self.console: Console | None = None
        self.answer = True

    def publish_nowait(self, type_, payload):
        REGISTRY.validate(type_, REGISTRY.latest(type_).version, payload)
        self.published.append((type_, payload))

    def publish_durable(self, items):
        fut = asyncio.get_running_loop().create_future()
        for type_, payload, _cause in items:
            REGISTRY.validate(type_, REGISTRY.latest(type_).version, payload)
            self.published.append((type_, payload))
            self.seq += 1
        fut.set_result((self.seq, self.seq))
        if self.answer and items[0][0] == "operator.bgp_drain":
            p = items[0][1]
            ans = {"action": p["action"], "by": p["by"], "outcome": "applied", "vips": 1}
            seq = self.seq
            asyncio.get_running_loop().call_later(0.01, lambda: self.console.fold([ev(seq + 1, "bgp.drain_taken", ans, cause=seq)]))
        if self.answer and items[0][0] == "operator.server_action":
            p = items[0][1]
            ans = {"virtual": p["virtual"], "server": p["server"], "action": p["action"], "by": p["by"],
                   "outcome": "applied", "state": {"drain": "drained", "disable": "disabled", "enable": "enabled"}[p["action"]]}
            seq = self.seq
            asyncio.get_running_loop().call_later(0.01, lambda: self.console.fold([ev(seq + 1, "lvsd.server_action_taken", ans, cause=seq)]))
        return fut


def ev(seq, type_, payload, cause=None, wall_ns=None):
    spec = REGISTRY.latest(type_)
    if spec.version > 1 and REGISTRY.get(type_, 1) is not None:
        try:  # a hand-written payload of an older version, as a recorded one reads
            REGISTRY.validate(type_, spec.version, payload)
        except Exception:
            payload = REGISTRY.upcast(type_, next(v for v in range(spec.version, 0, -1) if _valid(type_, v, payload)),
                                      payload)[1]
    REGISTRY.validate(type_, REGISTRY.latest(type_).version, payload)
    return Event(seq, "r1", "x", type_, REGISTRY.latest(type_).version, seq, wall_ns or time.time_ns(), cause, payload)


def _valid(type_, version, payload) -> bool:
    try:
        REGISTRY.validate(type_, version, payload)
        return True
    except Exception:
        return False


@pytest.fixture(scope="module")
def passwd(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("web") / "web.passwd")
    auth.set_password(path, "ada", "admin", "correct horse")
    auth.set_password(path, "vic", "viewer", "battery staple")
    return path


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def run(coro_fn, passwd, tls=False, **kw):
    """Run ``coro_fn(client, console, bus, clock)`` against a real server on a loopback port."""
    async def main():
        bus, clock = FakeBus(), Clock()
        console = Console(passwd, tls=tls, bus=bus, node="r1", clock=clock, answer_s=1.0, **kw)
        bus.console = console
        async with TestClient(TestServer(make_app(console), host="127.0.0.1")) as client:
            await coro_fn(client, console, bus, clock)
    asyncio.run(main())


def origin(client, tls=False) -> dict:
    return {"Origin": f"{'https' if tls else 'http'}://{client.server.host}:{client.server.port}"}


async def login(client, user="ada", password="correct horse", tls=False):
    return await client.post("/login", data={"user": user, "password": password}, headers=origin(client, tls),
                             allow_redirects=False)


async def csrf_of(client) -> str:
    text = await (await client.get("/")).text()
    return text.split('name="csrf" content="', 1)[1].split('"', 1)[0]


def refusals(bus, type_="web.request_refused"):
    return [p for t, p in bus.published if t == type_]


def test_password_file_holds_argon2_hashes_mode_0600_never_the_password(passwd):
    import os

    text = open(passwd).read()
    assert "correct horse" not in text and text.count("$argon2id$") == 2
    assert os.stat(passwd).st_mode & 0o777 == 0o600
    users = auth.read_passwd(passwd)
    assert users["ada"].role == "admin" and auth.verify(users, "ada", "correct horse")
    assert auth.verify(users, "ada", "wrong") is None and auth.verify(users, "nobody", "x") is None


def test_wrong_password_and_unknown_user_are_refused_and_recorded(passwd):
    async def t(client, console, bus, clock):
        for user, pw, reason in (("ada", "nope", "bad_password"), ("mallory", "x", "unknown_user")):
            r = await login(client, user, pw)
            assert r.status == 303 and r.headers["Location"] == "/login?failed=1"
            assert COOKIE not in r.cookies
            assert refusals(bus, "web.login")[-1] == {"user": user, "remote": "127.0.0.1", "ok": False, "reason": reason}
        assert (await client.get("/api/state")).status == 401
    run(t, passwd)


def test_login_sets_an_httponly_samesite_cookie_and_the_page_works(passwd):
    async def t(client, console, bus, clock):
        r = await login(client)
        assert r.status == 303 and r.headers["Location"] == "/"
        cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
        assert refusals(bus, "web.login")[-1]["ok"] is True
        page = await client.get("/")
        assert page.status == 200 and "default-src 'self'" in page.headers["Content-Security-Policy"]
        assert (await client.get("/api/state")).status == 200
        assert (await client.get("/static/console.js")).status == 200
        assert (await client.get("/static/../app.py")).status == 404
    run(t, passwd)


def test_under_tls_the_cookie_is_secure(passwd):
    async def t(client, console, bus, clock):
        r = await login(client, tls=True)
        assert r.status == 303 and "Secure" in r.headers["Set-Cookie"]
    run(t, passwd, tls=True)


def test_logins_are_rate_limited_per_address_and_recorded(passwd):
    async def t(client, console, bus, clock):
        for _ in range(auth.LIMIT):
            await login(client, "ada", "wrong")
        r = await login(client)  # the right password, but too many failures: not even checked
        assert r.headers["Location"] == "/login?limited=1" and COOKIE not in r.cookies
        assert refusals(bus, "web.login")[-1]["reason"] == "rate_limited"
        clock.t += auth.WINDOW_S + 1
        assert (await login(client)).headers["Location"] == "/"
    run(t, passwd)


def test_actions_need_a_csrf_token_missing_or_forged_is_refused_and_recorded(passwd):
    async def t(client, console, bus, clock):
        await login(client)
        body = {"virtual": "web", "server": "s0", "action": "drain"}
        r = await client.post("/api/server", json=body, headers=origin(client))
        assert r.status == 403 and (await r.json())["error"] == "no_csrf"
        r = await client.post("/api/server", json=body, headers={**origin(client), "X-CSRF-Token": "forged"})
        assert r.status == 403 and (await r.json())["error"] == "bad_csrf"
        assert [p["reason"] for p in refusals(bus)] == ["no_csrf", "bad_csrf"]
        assert refusals(bus)[0]["user"] == "ada" and refusals(bus)[0]["path"] == "/api/server"
        assert not [t for t, _ in bus.published if t.startswith("operator.")]
    run(t, passwd)


def test_a_viewer_cannot_act(passwd):
    async def t(client, console, bus, clock):
        await login(client, "vic", "battery staple")
        csrf = await csrf_of(client)
        for url, body in (("/api/server", {"virtual": "web", "server": "s0", "action": "disable"}), ("/api/handover", {})):
            r = await client.post(url, json=body, headers={**origin(client), "X-CSRF-Token": csrf})
            assert r.status == 403 and (await r.json())["error"] == "not_admin"
        assert [p["reason"] for p in refusals(bus)] == ["not_admin", "not_admin"]
        assert not [t for t, _ in bus.published if t.startswith("operator.")]
    run(t, passwd)


def test_every_route_but_the_login_and_assets_needs_a_session(passwd):
    async def t(client, console, bus, clock):
        routes = sorted({(r.method, r.resource.canonical) for r in client.app.router.routes() if r.method != "HEAD"})
        guarded = [(m, u) for m, u in routes if u not in ("/login", "/static/{name}")]
        assert len(guarded) >= 14
        for method, url in guarded:
            r = await client.request(method, url, headers=origin(client), allow_redirects=False)
            assert r.status in (401, 303), (method, url, r.status)
            assert r.status == 401 or r.headers["Location"] == "/login", (method, url)
        assert [(p["method"], p["path"], p["reason"]) for p in refusals(bus)] == \
            [(m, u, "no_session") for m, u in guarded]
    run(t, passwd)


def test_an_expired_session_is_refused_and_recorded(passwd):
    async def t(client, console, bus, clock):
        await login(client)
        assert (await client.get("/api/state")).status == 200
        clock.t += 61
        r = await client.get("/api/state")
        assert r.status == 401 and (await r.json())["error"] == "expired"
        r = await client.get("/", allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/login"  # already forgotten: no session at all
        assert [p["reason"] for p in refusals(bus)] == ["expired", "no_session"]
    run(t, passwd, idle_s=60)


def test_a_foreign_origin_is_refused_and_recorded(passwd):
    async def t(client, console, bus, clock):
        await login(client)
        csrf = await csrf_of(client)
        body = {"virtual": "web", "server": "s0", "action": "drain"}
        for headers in ({"Origin": "http://evil.example"}, {"Referer": "http://evil.example/x"}, {}):
            r = await client.post("/api/server", json=body, headers={**headers, "X-CSRF-Token": csrf})
            assert r.status == 403 and (await r.json())["error"] == "foreign_origin"
        r = await client.post("/login", data={"user": "ada", "password": "correct horse"},
                              headers={"Origin": "http://evil.example"}, allow_redirects=False)
        assert r.status == 403 and COOKIE not in r.cookies
        assert [p["reason"] for p in refusals(bus)] == ["foreign_origin"] * 3
        assert refusals(bus, "web.login")[-1]["reason"] == "foreign_origin"
        assert not [t for t, _ in bus.published if t.startswith("operator.")]
    run(t, passwd)


def test_an_admin_action_is_an_operator_event_naming_the_user_and_answered(passwd):
    async def t(client, console, bus, clock):
        await login(client)
        csrf = await csrf_of(client)
        r = await client.post("/api/server", json={"virtual": "web", "server": "s0", "action": "drain", "reason": "upgrade"},
                              headers={**origin(client), "X-CSRF-Token": csrf})
        assert r.status == 200
        a = await r.json()
        assert a["answered"] and a["outcome"] == "applied" and a["state"] == "drained" and a["seq"] == bus.seq
        (req,) = [p for t, p in bus.published if t == "operator.server_action"]
        assert req == {"virtual": "web", "server": "s0", "action": "drain", "by": "ada", "via": "web", "reason": "upgrade"}
        r = await client.post("/logout", data={"csrf": csrf}, headers=origin(client), allow_redirects=False)
        assert r.status == 303 and (await client.get("/api/state")).status == 401
    run(t, passwd)


def model_event(seq=1):
    return ev(seq, "config.loaded", {"path": "x", "format": "toml", "digest": "d", "model": to_dict(config(vs(2))),
                                     "warnings": [], "local_router": "lvs1", "reload": False, "diff": {}})


def test_the_stream_pushes_a_health_change_at_once(passwd):
    async def t(client, console, bus, clock):
        await login(client)
        console.fold([model_event()])
        resp = await client.get("/api/stream")
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert (await resp.content.readline()) == b"retry: 1000\n"
        await resp.content.readline()
        t0 = time.monotonic()
        console.fold([ev(2, "health.real_server_down", {"virtual": "web", "server": "s1", "address": "10.0.0.2", "port": 80,
                                                       "reason": "checks_failed", "previous": "UP", "failures": 3,
                                                       "detail": "refused"})])
        line = await asyncio.wait_for(resp.content.readline(), 1.0)
        took = time.monotonic() - t0
        patches = json.loads(line[len(b"data: "):])
        assert patches[0]["kind"] == "server" and patches[0]["id"] == "web/s1" and patches[0]["health"] == "DOWN"
        assert took < 0.2
        resp.close()
    run(t, passwd)


def test_the_view_folds_config_health_table_admin_and_figures():
    v = View()
    assert v.apply(model_event()) == [{"kind": "reset"}]
    st = v.state()
    (svc,) = st["services"]
    assert svc["key"] == "tcp:192.0.2.80:80" and [s["id"] for s in svc["servers"]] == ["web/s0", "web/s1"]
    v.apply(ev(2, "router.role_changed", {"node": "lvs1", "old": "BACKUP", "new": "ACTIVE", "reason": "no_active",
                                         "priority": 100, "epoch": 1, "peer": None}))
    assert v.state()["router"]["role"] == "ACTIVE"
    v.apply(ev(20, "pulse.peer_alive", {"peer": "lvs2", "link": "public", "role": "BACKUP", "priority": 1, "epoch": 1}))
    v.apply(ev(21, "pulse.link_degraded", {"peer": "lvs2", "link": "private", "silent_ns": 5}))
    v.apply(ev(22, "pulse.link_changed", {"link": "private", "up": False, "device": "eth1"}))
    r = v.state()["router"]
    assert r["peers"]["lvs2"] == {"alive": True, "role": "BACKUP",
                                  "links": {"private": {"state": "degraded", "age_s": None, "heard_ns": None}}}
    assert r["links"]["public"]["up"] and not r["links"]["private"]["up"] and r["links"]["private"]["device"] == "eth1"
    assert r["holders"] == {"192.0.2.80": None}  # nobody known holds it
    v.apply(ev(23, "pulse.take_vips", {"vips": [{"address": "192.0.2.80", "prefixlen": 32, "family": "ipv4", "device": None,
                                                 "label": None, "owner": "web"}], "reason": "no_active"}))
    assert v.state()["router"]["holders"] == {"192.0.2.80": "lvs1"}
    v.apply(ev(24, "pulse.release_vips", {"vips": [{"address": "192.0.2.80", "prefixlen": 32, "family": "ipv4", "device": None,
                                                    "label": None, "owner": "web"}], "reason": "fenced"}))
    v.apply(ev(25, "pulse.heartbeat_received", {"link": "public", "peer": "lvs2", "address": "10.0.0.2", "role": "ACTIVE",
                                               "priority": 1, "epoch": 1, "seq": 9, "leaving": False}))
    assert v.state()["router"]["holders"] == {"192.0.2.80": "lvs2"}
    table = {"tcp:192.0.2.80:80": {"scheduler": "wlc", "persistence": 0, "netmask": 32, "flags": 0, "dests": {
        "10.0.0.1:80": {"forwarding": "nat", "weight": 1, "upper": 0, "lower": 0}}}}
    out = v.apply(ev(3, "lvsd.table_desired", {"version": 1, "table": table, "reason": "started", "digest": "d",
                                              "services": 1, "dests": 1}))
    assert [(p["id"], p["effective"]) for p in out] == [("web/s0", 1)]
    out = v.apply(ev(4, "lvsd.table_delta", {"version": 2, "base_version": 1, "reason": "x", "virtual": "web", "server": "s0",
                                            "ops": [{"op": "edit_dest", "service": "tcp:192.0.2.80:80", "dest": "10.0.0.1:80",
                                                     "attrs": {"forwarding": "nat", "weight": 0, "upper": 0, "lower": 0}}]}))
    assert [(p["id"], p["effective"]) for p in out] == [("web/s0", 0)]
    out = v.apply(ev(5, "lvsd.server_action_taken", {"virtual": "web", "server": "s0", "action": "drain", "by": "ada",
                                                    "outcome": "applied", "state": "drained"}))
    assert out[0]["admin"] == "drained"
    row = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    out = v.apply(ev(6, "ipvs.stats", {"interval_ms": 5000, "full": True, "services": {
        "tcp:192.0.2.80:80": {"stats": row, "dests": {"10.0.0.1:80": row}}}}))
    assert out[0] == {"kind": "service", "key": "tcp:192.0.2.80:80", "name": "web", "stats": row}
    assert out[1]["id"] == "web/s0" and out[1]["stats"] == row
    out = v.apply(ev(7, "health.check_results", {"digest": "d", "ids": ["web/s1"], "ok": [False], "latency_us": [1500],
                                                "detail": ["timeout"], "late_us": 0}))
    assert out[0]["last"]["detail"] == "timeout"
    assert v.apply(ev(8, "pulse.heartbeat_received", {"link": "public", "peer": "lvs2", "address": "10.0.0.2", "role": "ACTIVE",
                                                     "priority": 1, "epoch": 1, "seq": 1, "leaving": False})) == []


def pair_events():
    """A hand-built pair: lvs1 (this router) hears lvs2 on both links (keepalive 0.2 s, deadtime
    1 s), the private link goes quiet and is degraded, comes back, then lvs2 dies. Each item:
    (event, what the view then shows of lvs2's links: {link: (state, age_s)}, pushed or not)."""
    from lvsbus.config import Config, Router

    cfg = Config(routers=(Router(name="lvs1", address="192.0.2.1", private_address="10.1.0.1"),
                          Router(name="lvs2", address="192.0.2.2", private_address="10.1.0.2", priority=50)),
                 virtual_services=(vs(2),))
    wall0 = 1_700_000_000_000_000_000

    def at(seq, t_s, type_, payload):
        REGISTRY.validate(type_, REGISTRY.latest(type_).version, payload)
        return Event(seq, "lvs1", "pulse", type_, REGISTRY.latest(type_).version, int(t_s * 1e9),
                     wall0 + int(t_s * 1e9), None, payload)

    def hb(seq, t_s, link, n):
        return at(seq, t_s, "pulse.heartbeat_received", {"link": link, "peer": "lvs2", "address": "192.0.2.2", "role": "BACKUP",
                                                         "priority": 1, "epoch": 1, "seq": n, "leaving": False,
                                                         "groups": [{"group": "default", "role": "BACKUP", "priority": 1}]})
    loaded = {"path": "x", "format": "toml", "digest": "d", "model": to_dict(cfg), "warnings": [], "local_router": "lvs1",
              "reload": False, "diff": {}}
    return [
        (at(1, 10.0, "config.loaded", loaded), {"public": ("silent", None), "private": ("silent", None)}, None),
        (hb(2, 10.0, "public", 1), {"public": ("silent", 0.0), "private": ("silent", None)}, True),
        (at(3, 10.0, "pulse.peer_alive", {"peer": "lvs2", "link": "public", "role": "BACKUP", "priority": 1, "epoch": 1}),
         {"public": ("up", 0.0), "private": ("silent", None)}, True),
        (hb(4, 10.003, "private", 1), {"public": ("up", 0.003), "private": ("up", 0.0)}, True),  # a state change
        (hb(5, 10.2, "public", 2), {"public": ("up", 0.0), "private": ("up", 0.197)}, False),  # chatter: not pushed
        (hb(6, 10.203, "private", 2), {"public": ("up", 0.003), "private": ("up", 0.0)}, False),
        (hb(7, 11.2, "public", 7), {"public": ("up", 0.0), "private": ("up", 0.997)}, True),  # ages: once a second
        # a deadtime without a heartbeat reads silent, even before pulse's timer says degraded
        (hb(8, 11.4, "public", 8), {"public": ("up", 0.0), "private": ("silent", 1.197)}, False),
        (at(9, 11.45, "pulse.link_degraded", {"peer": "lvs2", "link": "private", "silent_ns": 1_247_000_000}),
         {"public": ("up", 0.05), "private": ("degraded", 1.247)}, True),
        (hb(10, 12.0, "private", 11), {"public": ("up", 0.6), "private": ("degraded", 0.0)}, False),
        (at(11, 12.0, "pulse.link_restored", {"peer": "lvs2", "link": "private"}),
         {"public": ("up", 0.6), "private": ("up", 0.0)}, True),
        (at(12, 13.0, "pulse.peer_dead", {"peer": "lvs2", "cause": "silent", "role": "BACKUP", "last_heard_ns": 12_000_000_000}),
         {"public": ("silent", 1.6), "private": ("silent", 1.0)}, True),
        (at(13, 13.1, "pulse.link_changed", {"link": "private", "up": False, "device": "eth1"}),
         {"public": ("silent", 1.7), "private": ("silent", 1.1)}, True),
    ]


def test_the_view_keeps_each_peers_links_state_and_last_heard_pushed_on_change_only():
    v = View()
    for e, want, pushed in pair_events():
        out = v.apply(e)
        r = v.state()["router"]
        got = {ln: (x["state"], x["age_s"]) for ln, x in r["peers"]["lvs2"]["links"].items()}
        assert got == {ln: (st, a if a is None else pytest.approx(a)) for ln, (st, a) in want.items()}, e.short()
        if pushed is not None:
            assert bool(out) == pushed, e.short()
            if out:
                assert out[0]["peers"]["lvs2"]["links"] == r["peers"]["lvs2"]["links"]
    r = v.state()["router"]
    assert r["peers"]["lvs2"]["alive"] is False and r["deadtime_s"] == 1.0
    assert r["peers"]["lvs2"]["links"]["private"]["heard_ns"] == 1_700_000_000_000_000_000 + 12_000_000_000
    # this router's own links: from the config, then as pulse reported them
    assert r["links"] == {"public": {"up": True, "device": None, "since_ns": None},
                          "private": {"up": False, "device": "eth1", "since_ns": 1_700_000_000_000_000_000 + 13_100_000_000}}


def test_the_page_gets_each_peers_links_on_the_stream_and_in_the_state(passwd):
    async def t(client, console, bus, clock):
        await login(client)
        evs = [e for e, _, _ in pair_events()]
        console.fold(evs[:9])  # through the degraded private link
        resp = await client.get("/api/stream")
        await resp.content.readline(), await resp.content.readline()
        console.fold(evs[9:11])  # heard on private again, restored
        line = await asyncio.wait_for(resp.content.readline(), 1.0)
        (patch,) = json.loads(line[len(b"data: "):])
        assert patch["kind"] == "router" and patch["peers"]["lvs2"]["links"] == {
            "private": {"state": "up", "age_s": 0.0, "heard_ns": 1_700_000_000_000_000_000 + 12_000_000_000},
            "public": {"state": "up", "age_s": 0.6, "heard_ns": 1_700_000_000_000_000_000 + 11_400_000_000}}
        state = await (await client.get("/api/state")).json()
        assert state["router"]["peers"]["lvs2"]["links"] == patch["peers"]["lvs2"]["links"]
        assert state["router"]["deadtime_s"] == 1.0
        resp.close()
    run(t, passwd)


@pytest.mark.parametrize("section,want", [
    ('[web]\naddress = "0.0.0.0:9540"', "warning: web.address: 0.0.0.0:9540 is not a loopback address and the console has no TLS"),
    ('[web]\naddress = "192.0.2.1:443"\ntls_cert = "/etc/lvsbus/web.crt"\ntls_key = "/etc/lvsbus/web.key"', None),
    ("[web]", None),  # 127.0.0.1:9540 by default
    ('[web]\ntls_cert = "/etc/lvsbus/web.crt"', "error: web.tls_key: TLS needs both tls_cert and tls_key"),
    ('[web]\naddress = "localhost:80"', "error: web.address: 'localhost:80' must be ADDRESS:PORT"),
])
def test_check_config_on_the_web_section(section, want):
    from lvsbus.config import loads_toml
    from lvsbus.config.model import ConfigError

    text = 'service = "lvs"\n[router.r1]\naddress = "192.0.2.1"\n' + section + "\n"
    try:
        loaded = loads_toml(text, "t.toml")
        lines = [f"warning: {w.key}: {w.message}" for w in loaded.warnings]
    except ConfigError as exc:
        lines = [f"error: {i.key}: {i.message}" for i in exc.issues]
    web_lines = [line for line in lines if ": web." in line]
    if want is None:
        assert not web_lines, web_lines
    else:
        assert any(line.startswith(want) for line in web_lines), lines


def test_the_events_page_lists_filters_and_streams_events(passwd):
    async def t(client, console, bus, clock):
        await login(client)
        assert (await client.get("/events")).status == 200
        console.fold([model_event(), ev(2, "router.role_changed", {"node": "lvs1", "old": "BACKUP", "new": "ACTIVE",
                                                                   "reason": "no_active", "priority": 100, "epoch": 1, "peer": None})])
        got = (await (await client.get("/api/events")).json())["events"]
        assert [e["type"] for e in got] == ["config.loaded", "router.role_changed"]
        got = (await (await client.get("/api/events?types=router.")).json())["events"]
        assert [(e["seq"], e["text"]) for e in got] == [(2, "BACKUP -> ACTIVE (no_active)")]
        assert (await (await client.get("/api/events?text=nothing+like+this")).json())["events"] == []
        resp = await client.get("/api/events/stream?types=health.,operator.")
        await resp.content.readline(), await resp.content.readline()
        console.fold([ev(3, "router.role_changed", {"node": "lvs1", "old": "ACTIVE", "new": "BACKUP", "reason": "handover",
                                                   "priority": 100, "epoch": 1, "peer": None}),
                      ev(4, "operator.server_action", {"virtual": "web", "server": "s0", "action": "drain", "by": "ada",
                                                       "via": "web", "reason": ""})])
        line = await asyncio.wait_for(resp.content.readline(), 1.0)
        (e,) = json.loads(line[len(b"data: "):])  # only what the filter keeps
        assert e["seq"] == 4 and e["text"] == "operator ada (web) asks: drain web/s0"
        resp.close()
    run(t, passwd)


def test_the_timeline_page_draws_the_routers_log_for_a_time_range(passwd):
    from pathlib import Path

    log = Path(__file__).parents[1] / "fixtures" / "logs" / "real_flapping_server" / "r1"

    async def t(client, console, bus, clock):
        assert (await client.get("/timeline", allow_redirects=False)).status == 303  # no session: to the login
        await login(client)
        r = await client.get("/timeline?since=0&until=4102444800")
        body = await r.text()
        assert r.status == 200 and "<svg" in body and "real server echo/s1 DOWN" in body
        assert "script-src" not in r.headers["Content-Security-Policy"] and "<script" not in body
        r = await client.get("/timeline?since=0&until=1")  # 1970: nothing in that range
        assert r.status == 200 and "real server echo/s1 DOWN" not in await r.text()
        assert (await client.get("/timeline?since=yesterday")).status == 400
    run(t, passwd, state_dir=str(log))


GOOD_TOML = 'service = "lvs"\n[router.lvs1]\naddress = "192.0.2.1"\n[virtual.web]\naddress = "192.0.2.80"\nport = 80\n' \
            '[virtual.web.server.s0]\naddress = "10.0.0.1"\n'


def test_the_config_editor_checks_diffs_and_applies_with_the_routers_answer(passwd, tmp_path):
    from lvsbus.config import loads, to_dict

    path = tmp_path / "lvs.toml"
    path.write_text(GOOD_TOML)
    signalled = []

    async def t(client, console, bus, clock):
        loaded = loads(GOOD_TOML, str(path))
        console.fold([ev(1, "bus.client_joined", {"client": "router", "subscriptions": [], "pid": 4242}),
                      ev(2, "config.loaded", {"path": str(path), "format": "toml", "digest": loaded.digest,
                                              "model": to_dict(loaded.config), "warnings": [], "local_router": "lvs1",
                                              "reload": False, "diff": {}})])
        refuse = []

        def router(pid):  # what the router does on SIGHUP: read, validate, record
            signalled.append(pid)
            text = path.read_text()
            if refuse:
                console.fold([ev(10 + len(signalled), "config.reload_refused",
                                 {"path": str(path), "errors": ["lvs1: the heartbeat key file is unreadable"], "kept_digest": "d"})])
                return
            new = loads(text, str(path))
            console.fold([ev(10 + len(signalled), "config.loaded", {
                "path": str(path), "format": "toml", "digest": new.digest, "model": to_dict(new.config), "warnings": [],
                "local_router": "lvs1", "reload": True, "diff": {}})])
        console.signal_router = router

        await login(client, "vic", "battery staple")
        h = {**origin(client), "X-CSRF-Token": await csrf_of(client)}
        got = await (await client.get("/api/config")).json()
        assert got["text"] == GOOD_TOML and got["file_digest"] == got["digest_in_force"]
        bad = GOOD_TOML.replace('port = 80', 'port = 800000')
        r = await (await client.post("/api/config/check", json={"text": bad}, headers=h)).json()
        assert not r["ok"] and r["errors"][0]["line"] == 6 and "port" in r["errors"][0]["key"]
        r = await client.post("/api/config/apply", json={"text": bad, "base_digest": got["file_digest"]}, headers=h)
        assert r.status == 403 and (await r.json())["error"] == "not_admin"  # a viewer checks, never applies

        await client.post("/logout", data={"csrf": h["X-CSRF-Token"]}, headers=origin(client))
        await login(client)
        h = {**origin(client), "X-CSRF-Token": await csrf_of(client)}
        r = await client.post("/api/config/apply", json={"text": bad, "base_digest": got["file_digest"]}, headers=h)
        assert r.status == 422 and path.read_text() == GOOD_TOML and not signalled
        edited = GOOD_TOML + '[virtual.web.server.s1]\naddress = "10.0.0.2"\n'
        r = await (await client.post("/api/config/check", json={"text": edited}, headers=h)).json()
        assert r["ok"] and r["diff"][:2] == ["~ virtual web: real servers", "    + server s1"] and "+[virtual.web.server.s1]" in r["text_diff"]
        r = await client.post("/api/config/apply", json={"text": edited, "base_digest": "stale"}, headers=h)
        assert r.status == 409 and (await r.json())["error"] == "changed_on_disk"
        r = await client.post("/api/config/apply", json={"text": edited, "base_digest": got["file_digest"]}, headers=h)
        assert r.status == 200 and (await r.json())["applied"] and path.read_text() == edited and signalled == [4242]
        (w,) = [p for t_, p in bus.published if t_ == "operator.config_written"]
        assert w["by"] == "ada" and w["via"] == "web" and w["restored"] == "no"

        refuse.append(1)  # the router refuses the next one: the previous text comes back
        again = edited.replace("10.0.0.2", "10.0.0.3")
        r = await client.post("/api/config/apply", json={"text": again, "base_digest": configedit.digest(edited)}, headers=h)
        body = await r.json()
        assert r.status == 409 and body["error"] == "reload_refused" and "key file" in body["router_errors"][0]
        assert path.read_text() == edited
        assert [p["restored"] for t_, p in bus.published if t_ == "operator.config_written"] == ["no", "no", "yes"]
    run(t, passwd)


def test_an_open_stream_does_not_keep_the_session_and_is_told_when_it_ends(passwd):
    async def t(client, console, bus, clock):
        await login(client)
        resp = await client.get("/api/stream")
        await resp.content.readline(), await resp.content.readline()
        assert (await asyncio.wait_for(resp.content.readline(), 1.0)) == b": keepalive\n"  # checked, still alive
        clock.t += 61  # a minute without a request of the user's: the stream's checks did not renew it
        lines = [await asyncio.wait_for(resp.content.readline(), 1.0) for _ in range(2)]
        assert b"event: expired\n" in lines
        assert (await client.get("/api/state")).status == 401
    run(t, passwd, idle_s=60, keepalive_s=0.05)


def test_served_over_tls_the_cookie_is_secure_and_plain_http_gets_nothing(passwd, tmp_path):
    import socket
    import ssl
    import subprocess

    import aiohttp

    from lvsbus_tools.web.app import serve

    cert, key = tmp_path / "web.crt", tmp_path / "web.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main():
        stop = asyncio.Event()
        server = asyncio.ensure_future(serve(f"127.0.0.1:{port}", Console(passwd, tls=True), stop, str(cert), str(key)))
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.1).close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            async with aiohttp.ClientSession() as http:
                async with http.post(f"https://127.0.0.1:{port}/login", data={"user": "ada", "password": "correct horse"},
                                     headers={"Origin": f"https://127.0.0.1:{port}"}, ssl=ctx, allow_redirects=False) as r:
                    assert r.status == 303 and r.headers["Location"] == "/"
                    cookie = r.headers["Set-Cookie"]
                    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
                with pytest.raises(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/login") as r:
                        await r.read()
        finally:
            stop.set()
            await server
    asyncio.run(main())


def two_groups_loaded() -> Event:
    """config.loaded of an active/active pair seen from lvs1: groups web (192.0.2.80) and mail (192.0.2.25)."""
    from lvsbus.config import Config, Router
    from lvsbus.config.model import Group

    routers = (Router(name="lvs1", address="192.0.2.1"), Router(name="lvs2", address="192.0.2.2", priority=50))
    cfg = Config(routers=routers, groups=(Group("web"), Group("mail")),
                 virtual_services=(vs(1, group="web"), vs(1, name="mail", address="192.0.2.25", port=25, group="mail")))
    return ev(1, "config.loaded", {"path": "x", "format": "toml", "digest": "d", "model": to_dict(cfg), "warnings": [],
                                   "local_router": "lvs1", "reload": False, "diff": {}})


def group_role(seq, group, old, new, reason):
    return ev(seq, "router.role_changed", {"node": "lvs1", "old": old, "new": new, "reason": reason, "priority": 100,
                                           "epoch": 1, "peer": None, "group": group}, wall_ns=seq)


def peer_groups(seq, web, mail):
    """A heartbeat from lvs2 with its role in web and in mail."""
    return ev(seq, "pulse.heartbeat_received", {
        "link": "public", "peer": "lvs2", "address": "192.0.2.2", "role": web, "priority": 50, "epoch": 1,
        "seq": seq, "leaving": False, "groups": [{"group": "web", "role": web, "priority": 50},
                                                  {"group": "mail", "role": mail, "priority": 50}]})


WEB_VIP_TAKEN = {"vips": [{"address": "192.0.2.80", "prefixlen": 32, "family": "ipv4", "device": None, "label": None,
                           "owner": "web"}], "reason": "no_active"}
LVS2_ALIVE = {"peer": "lvs2", "link": "public", "role": "BACKUP", "priority": 50, "epoch": 1}


def test_the_view_shows_each_failover_group_its_role_here_its_vips_and_each_peers_role_in_it():
    """An active/active pair (web on lvs1, mail on lvs2): the overview has a row per group, the
    router's role is ACTIVE while it holds one, each VIP's holder is the peer active for its group,
    and a heartbeat that changes only a peer's groups is pushed."""
    v = View()
    v.apply(two_groups_loaded())
    r = v.state()["router"]
    assert r["groups"] == {"web": {"role": "INIT", "reason": None, "since_ns": None, "vips": ["192.0.2.80"],
                                   "peers": {"lvs2": None}},
                           "mail": {"role": "INIT", "reason": None, "since_ns": None, "vips": ["192.0.2.25"],
                                    "peers": {"lvs2": None}}}
    assert [s["group"] for s in v.state()["services"]] == ["web", "mail"]

    v.apply(group_role(2, "web", "INIT", "BACKUP", "started"))
    v.apply(group_role(3, "mail", "INIT", "BACKUP", "started"))
    out = v.apply(group_role(4, "web", "BACKUP", "ACTIVE", "no_active"))
    assert out[0]["role"] == "ACTIVE" and out[0]["groups"]["web"]["role"] == "ACTIVE"
    assert out[0]["groups"]["mail"]["role"] == "BACKUP"
    v.apply(group_role(5, "mail", "BACKUP", "BACKUP", "started"))  # a change in the other group: still ACTIVE
    assert v.state()["router"]["role"] == "ACTIVE"
    v.apply(ev(6, "pulse.take_vips", WEB_VIP_TAKEN))

    v.apply(peer_groups(7, "BACKUP", "ACTIVE"))
    v.apply(ev(8, "pulse.peer_alive", LVS2_ALIVE))
    r = v.state()["router"]
    assert r["holders"] == {"192.0.2.25": "lvs2", "192.0.2.80": "lvs1"}  # mail's VIP: lvs2, active for mail
    assert {g: x["peers"] for g, x in r["groups"].items()} == {"web": {"lvs2": "BACKUP"}, "mail": {"lvs2": "ACTIVE"}}
    assert r["peers"]["lvs2"]["role"] == "ACTIVE"  # active for one group (its heartbeat's role is its first group's)
    assert v.apply(peer_groups(9, "BACKUP", "ACTIVE")) == []  # chatter
    out = v.apply(peer_groups(10, "BACKUP", "BACKUP"))  # only a group's role changed: pushed
    assert out and out[0]["groups"]["mail"]["peers"] == {"lvs2": "BACKUP"} and out[0]["holders"]["192.0.2.25"] is None
    v.apply(ev(11, "pulse.peer_dead", {"peer": "lvs2", "cause": "silent", "role": "BACKUP", "last_heard_ns": 1}))
    assert v.state()["router"]["groups"]["mail"]["peers"] == {"lvs2": None}  # dead: its roles are not known


CHROMIUM = pytest.mark.skipif(not (os.path.exists("/usr/bin/chromium") and os.path.exists("/usr/bin/chromedriver")),
                              reason="needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)")


@contextlib.contextmanager
def browser_on(console, tmp_path, user=("vic", "battery staple")):
    """The console served on a loopback port (its own event loop on a thread) and headless Chromium
    logged in to it: yields (driver, fold), ``fold(events)`` folding events into the console on its
    loop; everything stopped at the end, also on failure."""
    import threading

    from aiohttp import web as aioweb
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    loop = asyncio.new_event_loop()
    started: list = []
    stop = threading.Event()

    def serve() -> None:
        async def main():
            runner = aioweb.AppRunner(make_app(console), access_log=None, shutdown_timeout=2.0)
            await runner.setup()
            site = aioweb.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            started.append(runner.addresses[0][1])
            while not stop.is_set():
                await asyncio.sleep(0.05)
            for q in console.streams:  # as the console's serve() ends its open streams
                q.put_nowait([{"kind": "bye"}])
            await runner.cleanup()
        loop.run_until_complete(main())

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,700",
              f"--user-data-dir={tmp_path}/profile", "--no-proxy-server"):
        opts.add_argument(a)
    driver = None
    try:
        end = time.monotonic() + 10
        while not started and time.monotonic() < end:
            time.sleep(0.05)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        driver.get(f"http://127.0.0.1:{started[0]}/")
        WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.ID, "login"))
        driver.find_element(By.ID, "user").send_keys(user[0])
        driver.find_element(By.ID, "password").send_keys(user[1])
        driver.find_element(By.ID, "submit").click()
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "live").text == "live")
        yield driver, lambda events: loop.call_soon_threadsafe(console.fold, events)
    finally:
        if driver is not None:
            driver.quit()
        stop.set()
        server.join(20)
        if not server.is_alive():
            loop.close()


@pytest.mark.slow
@CHROMIUM
def test_the_failover_groups_in_a_browser_live(passwd, tmp_path):
    """The overview's failover groups in headless Chromium, served on a loopback port: a row per
    group with its role here, its VIPs and the peer's role in it; a service names its group; a
    peer's takeover of mail shows live, without reloading the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    console = Console(passwd, bus=FakeBus(), node="lvs1", clock=Clock())
    console.fold([two_groups_loaded(), group_role(2, "web", "INIT", "BACKUP", "started"),
                  group_role(3, "mail", "INIT", "BACKUP", "started"), group_role(4, "web", "BACKUP", "ACTIVE", "no_active"),
                  ev(5, "pulse.take_vips", WEB_VIP_TAKEN), peer_groups(6, "BACKUP", "BACKUP"),
                  ev(7, "pulse.peer_alive", LVS2_ALIVE)])
    with browser_on(console, tmp_path) as (driver, fold):  # a viewer sees it all
        text = lambda id_: driver.find_element(By.ID, id_).text  # noqa: E731
        assert driver.find_element(By.ID, "groupsbox").is_displayed()
        assert not driver.find_element(By.ID, "bgpbox").is_displayed()  # no [scaleout]
        assert not driver.find_element(By.ID, "handover").is_displayed()  # a viewer: no actions
        assert text("role") == "ACTIVE"
        assert text("group-web").startswith("web ACTIVE (no_active") and text("group-web").endswith("192.0.2.80; lvs2 BACKUP")
        assert text("group-mail").startswith("mail BACKUP (started") and text("group-mail").endswith("192.0.2.25; lvs2 BACKUP")
        assert "group mail" in text("svc-tcp:192.0.2.25:25") and "group web" in text("svc-tcp:192.0.2.80:80")
        assert "192.0.2.25: nobody" in text("vips")
        driver.execute_script("window.__same_page = 'yes';")
        fold([peer_groups(8, "BACKUP", "ACTIVE")])  # lvs2 takes mail
        WebDriverWait(driver, 10, poll_frequency=0.02).until(lambda d: text("group-mail").endswith("lvs2 ACTIVE"))
        assert text("peers").startswith("lvs2 ACTIVE")  # active for one of the groups
        assert "192.0.2.25: lvs2" in text("vips")
        assert driver.execute_script("return window.__same_page || null;") == "yes"  # live: never reloaded
        driver.save_screenshot(str(tmp_path / "groups.png"))
        if os.environ.get("LVSBUS_SHOT"):
            driver.save_screenshot(os.environ["LVSBUS_SHOT"])


def scaleout_loaded(seq=1) -> Event:
    """config.loaded of a scale-out router (one service, one BGP peer)."""
    import dataclasses

    from lvsbus.config.model import Scaleout

    cfg = dataclasses.replace(config(vs(1, scheduler="mh")), scaleout=Scaleout(local_as=65001, peer_as=65000,
                                                                               peers=("192.0.2.254",)))
    return ev(seq, "config.loaded", {"path": "x", "format": "toml", "digest": "d", "model": to_dict(cfg), "warnings": [],
                                     "local_router": "lvs1", "reload": False, "diff": {}})


def test_the_view_shows_scaleouts_bgp_sessions_announcements_and_drain():
    v = View()
    v.apply(model_event())
    assert v.state()["router"]["bgp"] is None  # no [scaleout]
    v.apply(scaleout_loaded(2))
    assert v.state()["router"]["bgp"] == {"sessions": {"192.0.2.254": {"state": "down", "info": "not heard"}},
                                          "vips": {}, "drained": False}
    out = v.apply(ev(3, "bgp.session_changed", {"peer": "192.0.2.254", "state": "up", "info": "Established"}))
    assert out[0]["bgp"]["sessions"]["192.0.2.254"] == {"state": "up", "info": "Established"}
    out = v.apply(ev(4, "bgp.vip_changed", {"address": "192.0.2.80", "prefixlen": 32, "old": "withdraw",
                                            "new": "announce", "reason": "serving", "virtuals": ["web"]}))
    assert out[0]["bgp"]["vips"] == {"192.0.2.80": {"state": "announce", "reason": "serving"}}
    out = v.apply(ev(5, "bgp.drain_taken", {"action": "drain", "by": "ada", "outcome": "applied", "vips": 1}))
    assert out[0]["bgp"]["drained"] is True
    assert v.apply(ev(6, "bgp.drain_taken", {"action": "resume", "by": "ada", "outcome": "unchanged", "vips": 1})) == []
    assert v.apply(ev(7, "bgp.routes_applied", {"version": 3, "ok": True, "error": ""})) == []  # not shown
    v.apply(model_event(8))  # a reload without [scaleout]
    assert v.state()["router"]["bgp"] is None


def test_an_admin_drains_the_router_by_bgp_and_a_viewer_cannot(passwd):
    async def t(client, console, bus, clock):
        console.fold([scaleout_loaded()])
        await login(client)
        csrf = await csrf_of(client)
        r = await client.post("/api/bgp", json={"action": "drain", "reason": "kernel upgrade"},
                              headers={**origin(client), "X-CSRF-Token": csrf})
        assert r.status == 200
        a = await r.json()
        assert a["answered"] and (a["outcome"], a["action"], a["vips"]) == ("applied", "drain", 1)
        (req,) = [p for t, p in bus.published if t == "operator.bgp_drain"]
        assert req == {"action": "drain", "by": "ada", "via": "web", "reason": "kernel upgrade"}
        assert console.view.state()["router"]["bgp"]["drained"] is True
        r = await client.post("/api/bgp", json={"action": "flap"}, headers={**origin(client), "X-CSRF-Token": csrf})
        assert r.status == 400
        await client.post("/logout", data={"csrf": csrf}, headers=origin(client), allow_redirects=False)
        await login(client, "vic", "battery staple")
        csrf = await csrf_of(client)
        r = await client.post("/api/bgp", json={"action": "resume"}, headers={**origin(client), "X-CSRF-Token": csrf})
        assert r.status == 403 and len([p for t, p in bus.published if t == "operator.bgp_drain"]) == 1
    run(t, passwd)


@pytest.mark.slow
@CHROMIUM
def test_scaleouts_bgp_line_and_drain_button_in_a_browser(passwd, tmp_path):
    """Scale-out in headless Chromium: the BGP line (session, the VIP's announcement) follows the
    bgp core live; an admin's Drain (confirmed) is an operator.bgp_drain naming the admin, and the
    answer shows the router drained with Resume offered instead."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    bus = FakeBus()
    console = Console(passwd, bus=bus, node="lvs1", clock=Clock())
    bus.console = console
    console.fold([scaleout_loaded()])
    with browser_on(console, tmp_path, user=("ada", "correct horse")) as (driver, fold):
        text = lambda id_: driver.find_element(By.ID, id_).text  # noqa: E731
        assert driver.find_element(By.ID, "bgpbox").is_displayed()
        assert not driver.find_element(By.ID, "handover").is_displayed()  # every router active: drain instead
        assert "192.0.2.254 down (not heard)" in text("bgp")
        fold([ev(2, "bgp.session_changed", {"peer": "192.0.2.254", "state": "up", "info": "Established"}),
              ev(3, "bgp.vip_changed", {"address": "192.0.2.80", "prefixlen": 32, "old": "withdraw", "new": "announce",
                                        "reason": "serving", "virtuals": ["web"]})])
        WebDriverWait(driver, 10, poll_frequency=0.02).until(
            lambda d: text("bgp") == "sessions: 192.0.2.254 up; VIPs: 192.0.2.80 announce (serving)")
        assert driver.find_element(By.ID, "bgp-drain").is_displayed()
        assert not driver.find_element(By.ID, "bgp-resume").is_displayed()
        driver.find_element(By.ID, "bgp-drain").click()
        driver.switch_to.alert.accept()
        WebDriverWait(driver, 10).until(lambda d: "now drained (1 VIPs)" in text("message"))
        WebDriverWait(driver, 10).until(lambda d: "DRAINED by an operator" in text("bgp"))
        assert driver.find_element(By.ID, "bgp-resume").is_displayed()
        assert not driver.find_element(By.ID, "bgp-drain").is_displayed()
        (req,) = [p for t, p in bus.published if t == "operator.bgp_drain"]
        assert (req["action"], req["by"], req["via"]) == ("drain", "ada", "web")
        driver.save_screenshot(str(tmp_path / "bgp.png"))
        if os.environ.get("LVSBUS_SHOT2"):
            driver.save_screenshot(os.environ["LVSBUS_SHOT2"])
