// lvsbus console, events page: the recent events, then each new one as it is recorded (SSE), with
// filters (type prefixes, source, words). Heartbeats and check batches are hidden unless asked for.
"use strict";
const $ = (id) => document.getElementById(id);
const CHATTER = ["pulse.heartbeat_received", "pulse.send_heartbeat", "timer.fired", "health.check_results", "bus.probe"];
const MAX_ROWS = 2000;
let es = null;

function query() {
  const q = new URLSearchParams();
  if ($("types").value.trim()) q.set("types", $("types").value.trim());
  if ($("source").value.trim()) q.set("source", $("source").value.trim());
  if ($("text").value.trim()) q.set("text", $("text").value.trim());
  return q;
}
function shown(e) {
  return $("chatter").checked || !CHATTER.includes(e.type);
}
function row(e) {
  const tr = document.createElement("tr");
  tr.id = "ev-" + e.seq;
  const t = new Date(e.wall_ns / 1e6);
  for (const text of [t.toLocaleTimeString() + "." + String(t.getMilliseconds()).padStart(3, "0"), "#" + e.seq, e.source,
                      e.type, e.cause ? "#" + e.cause : "", e.text]) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
  }
  tr.className = "t-" + e.type.split(".")[0];
  return tr;
}
function add(events) {
  const body = $("rows");
  for (const e of events) if (shown(e)) body.insertBefore(row(e), body.firstChild);
  while (body.children.length > MAX_ROWS) body.removeChild(body.lastChild);
  $("count").textContent = `${body.children.length} shown`;
}
async function start() {
  if (es) es.close();
  $("rows").textContent = "";
  const q = query();
  const r = await fetch("/api/events?" + q.toString(), {credentials: "same-origin"});
  if (r.status === 401) { location.href = "/login?expired=1"; return; }
  add((await r.json()).events);
  es = new EventSource("/api/events/stream?" + q.toString());
  es.onopen = () => { $("live").textContent = "live"; $("live").className = "live"; };
  es.onmessage = (m) => add(JSON.parse(m.data).filter((e) => e.seq !== undefined));
  es.addEventListener("expired", () => { es.close(); location.href = "/login?expired=1"; });
  es.onerror = () => { $("live").textContent = "reconnecting"; $("live").className = "live off"; };
}
$("filters").addEventListener("submit", (ev) => { ev.preventDefault(); start(); });
start();
