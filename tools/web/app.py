"""The console's web application (aiohttp): pages, the live stream, the actions, and their guards.

Every page and API needs a session (the login form excepted); every state-changing request (POST)
needs a same-origin ``Origin`` (or ``Referer``) and, once logged in, the session's CSRF token
(``X-CSRF-Token`` header or ``csrf`` form field); actions need the admin role. Each refusal is
recorded (``web.request_refused``) and each login attempt too (``web.login``), in the router's log.

Live updates: one task follows the bus (``lvsbus.bus.AsyncBusClient``, from the router run's start,
so the view is whole) and folds each batch into the ``View``; the patches go at once to every open
``/api/stream`` (Server-Sent Events). Assets are files of this package: nothing from the internet.
"""
from __future__ import annotations

import asyncio
import collections
import datetime
import functools
import hmac
import html
import json
import os
import signal
import ssl
import time
from pathlib import Path
from typing import Any, Callable

import structlog
from aiohttp import web

from lvsbus.wire.events import Event, matches
from lvsbus.host.files import write_atomically
from lvsbus.router.operator import ANSWERS
from lvsbus_tools.timeline import Filters, describe, log_dir, render_html, timeline

from . import auth, configedit
from .view import View

log = structlog.get_logger("lvsbus.web")

STATIC = Path(__file__).parent / "static"
COOKIE = "lvsbus_session"
QUEUE_MAX = 2000  # patches queued for one browser; past it, it gets a reset (it fetches the view again)
KEEPALIVE_S = 15.0
#: the cores' answers to operator requests (their cause is the request's seq), as the CLI waits for them
ANSWER_TYPES = frozenset(t for types in ANSWERS.values() for t in types)
RELOAD_WAIT_S = 10.0  # how long an apply waits for the router's config.loaded or config.reload_refused
RECENT = 5000  # events kept for the events page's first paint
TIMELINE_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class Console:
    """The state behind the application: the view, users, sessions, limits, the bus."""

    def __init__(self, password_file: str, *, tls: bool = False, bus: Any = None, node: str = "",
                 idle_s: float = 1800.0, max_s: float = 12 * 3600.0, clock: Callable[[], float] = time.monotonic,
                 answer_s: float = 5.0, state_dir: str | None = None, keepalive_s: float = KEEPALIVE_S) -> None:
        self.password_file = password_file
        self.tls = tls
        self.bus = bus  # an AsyncBusClient (None: no router: actions are refused with 503)
        self.node = node
        self.view = View()
        self.sessions = auth.Sessions(idle_s, max_s)
        self.limiter = auth.LoginLimiter()
        self.clock = clock
        self.answer_s = answer_s
        self.keepalive_s = keepalive_s
        self.streams: set[asyncio.Queue] = set()
        self.waiting: dict[int, asyncio.Future] = {}  # request seq -> the core's answer
        self.early: dict[int, Event] = {}  # answers that came before their request's ack
        self.state_dir = state_dir  # the router's (the timeline page reads its log); None: no timeline
        self.recent: collections.deque = collections.deque(maxlen=RECENT)
        self.event_streams: dict[asyncio.Queue, "EventFilter"] = {}
        self.reloads: list[tuple[asyncio.Future, str]] = []  # (future, digest written): the router's answer
        self.applying = asyncio.Lock()
        self.signal_router: Callable[[int], None] = lambda pid: os.kill(pid, signal.SIGHUP)

    # -- the bus ----------------------------------------------------------------------------

    def record(self, type_: str, payload: dict) -> None:
        log.info(type_.split(".", 1)[1], **payload)
        if self.bus is not None:
            self.bus.publish_nowait(type_, payload)

    def fold(self, events: list[Event]) -> None:
        patches: list[dict] = []
        lines: list[dict] = []
        for ev in events:
            patches += self.view.apply(ev)
            lines.append(event_line(ev))
            if ev.type in ("config.loaded", "config.reload_refused") and self.reloads:
                self._reload_answer(ev)
            if ev.type in ANSWER_TYPES and ev.cause is not None:
                fut = self.waiting.pop(ev.cause, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev)
                elif ev.type != "router.role_changed":
                    self.early[ev.cause] = ev
                    if len(self.early) > 100:
                        self.early.pop(next(iter(self.early)))
        if patches:
            self.broadcast(patches)
        self.recent.extend(lines)
        for q, f in list(self.event_streams.items()):
            mine = [x for x in lines if f.keep(x)]
            if mine and q.qsize() < QUEUE_MAX:
                q.put_nowait(mine)

    def _reload_answer(self, ev: Event) -> None:
        """A config.loaded (reload) with the digest written, or a config.reload_refused, answers
        the applies waiting for it."""
        for fut, want in list(self.reloads):
            if fut.done():
                continue
            if ev.type == "config.loaded" and ev.payload["reload"] and ev.payload["digest"] == want:
                fut.set_result(ev)
            elif ev.type == "config.reload_refused":
                fut.set_result(ev)

    def broadcast(self, patches: list[dict]) -> None:
        for q in list(self.streams):
            if q.qsize() >= QUEUE_MAX:
                while not q.empty():
                    q.get_nowait()
                q.put_nowait([{"kind": "reset"}])
            else:
                q.put_nowait(patches)

    async def follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.fold(await self.bus.recv_batch(0.5))

    async def ask(self, type_: str, payload: dict) -> tuple[int, Event | None]:
        """Publish an operator request; (its seq, the core's answer or None after answer_s)."""
        (seq, _last) = await self.bus.publish_durable([(type_, payload, None)])
        ev = self.early.pop(seq, None)
        if ev is not None:
            return seq, ev
        fut = asyncio.get_running_loop().create_future()
        self.waiting[seq] = fut
        try:
            return seq, await asyncio.wait_for(fut, self.answer_s)
        except asyncio.TimeoutError:
            return seq, None
        finally:
            self.waiting.pop(seq, None)


def event_line(ev: Event) -> dict:
    """One event as the events page shows it."""
    try:
        text = describe(ev)
    except (KeyError, TypeError, ValueError):
        text = ev.type
    return {"seq": ev.seq, "wall_ns": ev.wall_ns, "node": ev.node, "source": ev.source, "type": ev.type,
            "cause": ev.cause, "text": text[:400]}


class EventFilter:
    """The events page's filters: type prefixes (any), a source, words in the text (all)."""

    def __init__(self, query) -> None:
        self.types = tuple(t for t in query.get("types", "").replace(" ", ",").split(",") if t)[:32]
        self.source = query.get("source", "")[:64]
        self.words = query.get("text", "").lower().split()[:8]

    def keep(self, line: dict) -> bool:
        if self.types and not matches(line["type"], self.types):
            return False
        if self.source and line["source"] != self.source:
            return False
        text = line["text"].lower()
        return all(w in text for w in self.words)


# ---------------------------------------------------------------------------------------------
# guards


def _remote(request: web.Request) -> str:
    return (request.remote or "?")[:64]


def _origin_ok(request: web.Request, console: Console) -> bool:
    """Same origin: ``Origin`` (or, without it, ``Referer``) is this server's scheme and host."""
    own = f"{'https' if console.tls else 'http'}://{request.host}"
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin == own
    referer = request.headers.get("Referer")
    return referer is not None and (referer == own or referer.startswith(own + "/"))


def _refuse(request: web.Request, console: Console, reason: str, status: int, user: str | None) -> web.Response:
    console.record("web.request_refused", {
        "user": user[:64] if user else None, "remote": _remote(request), "method": request.method[:16],
        "path": request.path[:256], "reason": reason})
    if request.path.startswith("/api/") or request.method != "GET":
        return web.json_response({"error": reason}, status=status, headers=HEADERS)
    raise web.HTTPSeeOther("/login" + ("?expired=1" if reason == "expired" else ""))


def _session(request: web.Request, console: Console):
    return console.sessions.get(request.cookies.get(COOKIE), console.clock())


async def _guard(request: web.Request, console: Console, *, admin: bool = False, post: bool = False):
    """(session, None) when the request may go on, else (None, the refusal)."""
    if post and not _origin_ok(request, console):
        s, _ = _session(request, console)
        return None, _refuse(request, console, "foreign_origin", 403, s.user if s else None)
    s, expired = _session(request, console)
    if s is None:
        return None, _refuse(request, console, "expired" if expired else "no_session", 401, None)
    if post:
        token = request.headers.get("X-CSRF-Token")
        if token is None and request.content_type == "application/x-www-form-urlencoded":
            token = (await request.post()).get("csrf")  # type: ignore[assignment]
        if not token:
            return None, _refuse(request, console, "no_csrf", 403, s.user)
        if not hmac.compare_digest(str(token), s.csrf):
            return None, _refuse(request, console, "bad_csrf", 403, s.user)
    if admin and s.role != "admin":
        return None, _refuse(request, console, "not_admin", 403, s.user)
    return s, None


def guarded(*, admin: bool = False, post: bool = False):
    """A handler behind ``_guard``: called as ``fn(request, console, session)`` only when the request
    may go on; otherwise the (recorded) refusal is the answer."""
    def wrap(fn):
        @functools.wraps(fn)
        async def handler(request: web.Request) -> web.StreamResponse:
            c = request.app[CONSOLE]
            s, refused = await _guard(request, c, admin=admin, post=post)
            if refused is not None:
                return refused
            return await fn(request, c, s)
        return handler
    return wrap


# ---------------------------------------------------------------------------------------------
# handlers


def _page(name: str, **subst: str) -> web.Response:
    text = (STATIC / name).read_text()
    for k, v in subst.items():
        text = text.replace("{{" + k + "}}", v)
    return web.Response(text=text, content_type="text/html", headers=HEADERS)


def _html(s: str) -> str:
    return html.escape(s, quote=True)


async def login_page(request: web.Request) -> web.Response:
    c: Console = request.app[CONSOLE]
    note = ""
    if "expired" in request.query:
        note = "Your session has expired: log in again."
    elif "failed" in request.query:
        note = "Wrong user name or password."
    elif "limited" in request.query:
        note = "Too many failed logins: wait a minute."
    return _page("login.html", note=_html(note), node=_html(c.node))


async def login(request: web.Request) -> web.Response:
    c: Console = request.app[CONSOLE]
    form = await request.post()
    user = str(form.get("user", ""))[:64]
    password = str(form.get("password", ""))
    remote = _remote(request)
    now = c.clock()

    def attempt(ok: bool, reason: str) -> None:
        c.record("web.login", {"user": user, "remote": remote, "ok": ok, "reason": reason})

    if not _origin_ok(request, c):
        attempt(False, "foreign_origin")
        return web.json_response({"error": "foreign_origin"}, status=403, headers=HEADERS)
    if not c.limiter.allowed(remote, user, now):
        attempt(False, "rate_limited")
        raise web.HTTPSeeOther("/login?limited=1")
    try:
        users = auth.read_passwd(c.password_file)
    except auth.PasswdError as exc:
        log.error("passwd_unusable", error=str(exc))
        users = {}
    found = await asyncio.get_running_loop().run_in_executor(None, auth.verify, users, user, password)
    if found is None:
        c.limiter.failed(remote, user, now)
        attempt(False, "bad_password" if user in users else "unknown_user")
        raise web.HTTPSeeOther("/login?failed=1")
    token, _s = c.sessions.open(found, now)
    attempt(True, "ok")
    resp = web.HTTPSeeOther("/")
    resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=c.tls, path="/")
    raise resp


@guarded(post=True)
async def logout(request: web.Request, c: Console, s: auth.Session) -> web.Response:
    c.sessions.close(request.cookies.get(COOKIE))
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


def _session_page(name: str):
    """A page of the console (its CSRF token, user, role and router filled in)."""
    @guarded()
    async def page(request: web.Request, c: Console, s: auth.Session) -> web.Response:
        return _page(name, csrf=_html(s.csrf), user=_html(s.user), role=_html(s.role), node=_html(c.node))
    return page


overview, events_page, config_page = (_session_page(n) for n in ("index.html", "events.html", "config.html"))


@guarded()
async def recent_events(request: web.Request, c: Console, s: auth.Session) -> web.Response:
    f = EventFilter(request.query)
    try:
        limit = max(1, min(RECENT, int(request.query.get("limit", "500"))))
    except ValueError:
        limit = 500
    lines = [x for x in c.recent if f.keep(x)][-limit:]
    return web.json_response({"events": lines}, headers=HEADERS)


@guarded()
async def events_stream(request: web.Request, c: Console, s: auth.Session) -> web.StreamResponse:
    q: asyncio.Queue = asyncio.Queue()
    c.event_streams[q] = EventFilter(request.query)
    try:
        return await _sse(request, c, q)
    finally:
        c.event_streams.pop(q, None)


def _parse_when(text: str | None, default: int) -> int:
    """An ISO 8601 time (UTC unless it says) or seconds since the epoch, as ns; ``default`` if empty."""
    if not text:
        return default
    try:
        return int(float(text) * 1e9)
    except ValueError:
        pass
    t = datetime.datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return int(t.timestamp() * 1e9)


@guarded()
async def timeline_page(request: web.Request, c: Console, s: auth.Session) -> web.Response:
    """The incident timeline of this router's log for a time range (``since``, ``until``; default
    the last hour), as ``lvsbus replay --timeline --html`` draws it."""
    if c.state_dir is None:
        return web.json_response({"error": "no_log"}, status=503, headers=HEADERS)
    now = time.time_ns()
    try:
        until = _parse_when(request.query.get("until"), now)
        since = _parse_when(request.query.get("since"), until - 3600 * 1_000_000_000)
    except (ValueError, OverflowError):
        return web.json_response({"error": "bad_time"}, status=400, headers=HEADERS)
    directory = log_dir(c.state_dir)

    def draw() -> str:
        rows = timeline([directory], Filters(since_ns=since, until_ns=until), problems=[])
        return render_html(rows, title=f"lvsbus {c.node}: incident timeline")

    body = await asyncio.get_running_loop().run_in_executor(None, draw)
    fmt = lambda ns: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns / 1e9))  # noqa: E731
    form = ('<p><a href="/">Overview</a> | <a href="/events">Events</a> | '
            '<form method="get" action="/timeline" style="display:inline">'
            f'since <input name="since" value="{fmt(since)}" size="19"> until <input name="until" value="{fmt(until)}" '
            'size="19"> (UTC, ISO 8601) <button>Draw</button></form></p>')
    body = body.replace("<body>", "<body>" + form, 1)
    return web.Response(text=body, content_type="text/html",
                        headers={**HEADERS, "Content-Security-Policy": TIMELINE_CSP})


def _config_file(c: Console) -> tuple[dict | None, str | None, str | None]:
    """(the config in force, the file's text now or None, why not)."""
    cfg = c.view.config
    if cfg is None:
        return None, None, "no config.loaded seen yet"
    if not os.path.isabs(cfg["path"]):
        return cfg, None, f"the router was started with a relative --config path ({cfg['path']}): not editable here"
    try:
        with open(cfg["path"], encoding="utf-8") as f:
            return cfg, f.read(), None
    except (OSError, UnicodeDecodeError) as exc:
        return cfg, None, f"cannot read {cfg['path']}: {exc}"


@guarded()
async def config_get(request: web.Request, c: Console, s: auth.Session) -> web.Response:
    cfg, text, why = _config_file(c)
    if cfg is None:
        return web.json_response({"error": why}, status=503, headers=HEADERS)
    out = {"path": cfg["path"], "format": cfg["format"], "digest_in_force": cfg["digest"], "seq": cfg["seq"],
           "text": text, "problem": why, "file_digest": configedit.digest(text) if text is not None else None}
    return web.json_response(out, headers=HEADERS)


async def _edited(request: web.Request) -> tuple[str, str | None] | None:
    try:
        body = await request.json()
        text, base = body["text"], body.get("base_digest")
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(text, str) or (base is not None and not isinstance(base, str)):
        return None
    return text, base


@guarded(post=True)
async def config_check(request: web.Request, c: Console, s: auth.Session) -> web.Response:
    """check-config of an edited text (viewers may check; only admins apply)."""
    got = await _edited(request)
    cfg, old, why = _config_file(c)
    if got is None or cfg is None:
        return web.json_response({"error": "bad_request" if got is None else why}, status=400, headers=HEADERS)
    text = got[0]
    result = await asyncio.get_running_loop().run_in_executor(
        None, configedit.check, text, cfg["path"], cfg["format"], cfg["model"])
    result["text_diff"] = configedit.text_diff(old or "", text, cfg["path"])
    return web.json_response(result, headers=HEADERS)


@guarded(admin=True, post=True)
async def config_apply(request: web.Request, c: Console, s: auth.Session) -> web.Response:
    """Write the edited text atomically (refused if it does not check, or if the file changed since
    the editor read it), record who did it, SIGHUP the router and wait for its answer; a reload the
    router refuses puts the previous text back."""
    got = await _edited(request)
    if got is None:
        return web.json_response({"error": "bad_request"}, status=400, headers=HEADERS)
    text, base = got
    async with c.applying:
        cfg, old, why = _config_file(c)
        if cfg is None or old is None:
            return web.json_response({"error": "not_editable", "detail": why}, status=409, headers=HEADERS)
        if base != configedit.digest(old):
            return web.json_response({"error": "changed_on_disk", "detail": "the file changed since you loaded it: "
                                      "load it again"}, status=409, headers=HEADERS)
        result = await asyncio.get_running_loop().run_in_executor(
            None, configedit.check, text, cfg["path"], cfg["format"], cfg["model"])
        if not result["ok"]:
            return web.json_response({"error": "invalid", **result}, status=422, headers=HEADERS)
        if c.bus is None or c.view.router_pid is None:
            return web.json_response({"error": "no_router"}, status=503, headers=HEADERS)
        new_digest = configedit.digest(text)
        record = {"by": s.user, "via": "web", "path": cfg["path"][:4096], "digest": new_digest,
                  "previous_digest": configedit.digest(old), "restored": "no"}
        await asyncio.get_running_loop().run_in_executor(None, write_atomically, cfg["path"], text)
        await c.bus.publish_durable([("operator.config_written", record, None)])
        fut = asyncio.get_running_loop().create_future()
        c.reloads.append((fut, new_digest))
        try:
            c.signal_router(c.view.router_pid)
            answer = await asyncio.wait_for(fut, RELOAD_WAIT_S)
        except (OSError, asyncio.TimeoutError) as exc:
            answer = None
            problem = f"no answer from the router ({type(exc).__name__})"
        finally:
            c.reloads = [r for r in c.reloads if r[0] is not fut]
        if answer is not None and answer.type == "config.loaded":
            return web.json_response({"applied": True, "seq": answer.seq, "digest": new_digest}, headers=HEADERS)
        # refused by the router (or no answer): put the previous text back, so file and router agree
        await asyncio.get_running_loop().run_in_executor(None, write_atomically, cfg["path"], old)
        c.bus.publish_nowait("operator.config_written", {**record, "digest": record["previous_digest"],
                                                         "previous_digest": new_digest, "restored": "yes"})
        errors = answer.payload["errors"] if answer is not None else [problem]
        return web.json_response({"applied": False, "error": "reload_refused", "router_errors": errors},
                                 status=409, headers=HEADERS)


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in ("console.js", "console.css", "login.css", "events.js", "config.js"):
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC / name, headers={**HEADERS, "Cache-Control": "no-cache"})


@guarded()
async def state(request: web.Request, c: Console, s: auth.Session) -> web.Response:
    return web.json_response(c.view.state(), headers=HEADERS)


@guarded()
async def stream(request: web.Request, c: Console, s: auth.Session) -> web.StreamResponse:
    q: asyncio.Queue = asyncio.Queue()
    c.streams.add(q)
    try:
        return await _sse(request, c, q)
    finally:
        c.streams.discard(q)


async def _sse(request: web.Request, c: Console, q: asyncio.Queue) -> web.StreamResponse:
    """Server-Sent Events: each item put on ``q`` (a list) goes out as one message, at once; a
    comment every KEEPALIVE_S; an ``expired`` event when the session ends."""
    token = request.cookies.get(COOKIE)
    resp = web.StreamResponse(headers={**HEADERS, "Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    try:
        await resp.write(b"retry: 1000\n\n")
        while True:
            try:
                items = await asyncio.wait_for(q.get(), c.keepalive_s)
            except asyncio.TimeoutError:
                if c.sessions.get(token, c.clock(), touch=False)[0] is None:
                    await resp.write(b"event: expired\ndata: {}\n\n")
                    break
                await resp.write(b": keepalive\n\n")
                continue
            while not q.empty():
                items = items + q.get_nowait()
            await resp.write(b"data: " + json.dumps(items, separators=(",", ":")).encode() + b"\n\n")
            if any(p.get("kind") == "bye" for p in items):
                break
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return resp


@guarded(admin=True, post=True)
async def server_action(request: web.Request, c: Console, s: auth.Session) -> web.Response:
    try:
        body = await request.json()
        virtual, server, action = str(body["virtual"]), str(body["server"]), str(body["action"])
        reason = str(body.get("reason", ""))
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": "bad_request"}, status=400, headers=HEADERS)
    if action not in ("drain", "disable", "enable") or not (0 < len(virtual) <= 64 and 0 < len(server) <= 64) \
            or len(reason) > 256:
        return web.json_response({"error": "bad_request"}, status=400, headers=HEADERS)
    if c.bus is None:
        return web.json_response({"error": "no_router"}, status=503, headers=HEADERS)
    seq, ev = await c.ask("operator.server_action", {
        "virtual": virtual, "server": server, "action": action, "by": s.user, "via": "web", "reason": reason})
    if ev is None:
        return web.json_response({"seq": seq, "answered": False}, headers=HEADERS)
    return web.json_response({"seq": seq, "answered": True, **ev.payload}, headers=HEADERS)


@guarded(admin=True, post=True)
async def handover(request: web.Request, c: Console, s: auth.Session) -> web.Response:
    try:
        body = await request.json()
        reason, hold = str(body.get("reason", "")), int(body.get("hold_s", 300))
    except (ValueError, TypeError, AttributeError):
        return web.json_response({"error": "bad_request"}, status=400, headers=HEADERS)
    if not 1 <= hold <= 86400 or len(reason) > 256:
        return web.json_response({"error": "bad_request"}, status=400, headers=HEADERS)
    if c.bus is None:
        return web.json_response({"error": "no_router"}, status=503, headers=HEADERS)
    seq, ev = await c.ask("operator.handover_requested", {"by": s.user, "via": "web", "reason": reason, "hold_s": hold})
    if ev is None:
        return web.json_response({"seq": seq, "answered": False}, headers=HEADERS)
    return web.json_response({"seq": seq, "answered": True, "type": ev.type, **ev.payload}, headers=HEADERS)


@guarded(admin=True, post=True)
async def bgp_drain(request: web.Request, c: Console, s: auth.Session) -> web.Response:
    """Scale-out: drain this router's BGP announcements (GRACEFUL_SHUTDOWN) or resume them, as
    ``lvsbus bgp drain|resume`` does; the bgp core answers with bgp.drain_taken."""
    try:
        body = await request.json()
        action, reason = str(body["action"]), str(body.get("reason", ""))
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": "bad_request"}, status=400, headers=HEADERS)
    if action not in ("drain", "resume") or len(reason) > 256:
        return web.json_response({"error": "bad_request"}, status=400, headers=HEADERS)
    if c.bus is None:
        return web.json_response({"error": "no_router"}, status=503, headers=HEADERS)
    seq, ev = await c.ask("operator.bgp_drain", {"action": action, "by": s.user, "via": "web", "reason": reason})
    if ev is None:
        return web.json_response({"seq": seq, "answered": False}, headers=HEADERS)
    return web.json_response({"seq": seq, "answered": True, **ev.payload}, headers=HEADERS)


CONSOLE = web.AppKey("console", Console)


def make_app(console: Console) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[CONSOLE] = console
    app.add_routes([
        web.get("/login", login_page), web.post("/login", login), web.post("/logout", logout),
        web.get("/", overview), web.get("/static/{name}", static),
        web.get("/api/state", state), web.get("/api/stream", stream),
        web.get("/events", events_page), web.get("/api/events", recent_events), web.get("/api/events/stream", events_stream),
        web.get("/timeline", timeline_page),
        web.get("/config", config_page), web.get("/api/config", config_get),
        web.post("/api/config/check", config_check), web.post("/api/config/apply", config_apply),
        web.post("/api/server", server_action), web.post("/api/handover", handover), web.post("/api/bgp", bgp_drain),
    ])
    return app


def ssl_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


async def serve(address: str, console: Console, stop: asyncio.Event, cert: str | None = None,
                key: str | None = None) -> None:
    """Serve until ``stop``; follows the bus meanwhile when the console has one."""
    host, _, port = address.rpartition(":")
    runner = web.AppRunner(make_app(console), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]"), int(port), ssl_context=ssl_context(cert, key) if cert and key else None)
    await site.start()
    log.info("web_listening", address=address, tls=bool(cert), pid=os.getpid())
    follower = asyncio.ensure_future(console.follow(stop)) if console.bus is not None else None
    try:
        await stop.wait()
    finally:
        if follower is not None:
            await follower
        for q in [*console.streams, *console.event_streams]:
            q.put_nowait([{"kind": "bye"}])
        await runner.cleanup()
