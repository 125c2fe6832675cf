// lvsbus console: the overview, kept live by Server-Sent Events (/api/stream). No framework, no
// external asset. The CSRF token and the role come from the page's <meta> tags.
"use strict";
const csrf = document.querySelector('meta[name="csrf"]').content;
const role = document.querySelector('meta[name="role"]').content;
document.body.className = role;
let fields = [];
const $ = (id) => document.getElementById(id);

function fmtTime(ns) {
  if (!ns) return "";
  return new Date(ns / 1e6).toLocaleTimeString();
}
function num(v) {
  if (v === null || v === undefined) return "";
  if (v >= 1e9) return (v / 1e9).toFixed(1) + "G";
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e4) return (v / 1e3).toFixed(1) + "K";
  return String(v);
}
function stat(row, name) {
  const i = fields.indexOf(name);
  return row && i >= 0 ? num(row[i]) : "";
}
function cell(tr, cls, text, title) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text;
  if (title) td.title = title;
  tr.appendChild(td);
  return td;
}
function statCells(tr, stats) {
  for (const f of ["active", "inactive", "conns", "cps", "inpps", "outpps", "inbps", "outbps"]) cell(tr, "", stat(stats, f));
}

let showGroups = false; // failover groups are shown once the config declares one ([group.NAME])

function serviceRow(svc) {
  const tr = document.createElement("tr");
  tr.className = "svc";
  tr.id = "svc-" + svc.key;
  cell(tr, "", `${svc.name}  ${svc.protocol}/${svc.address}:${svc.port}  ${svc.scheduler} ${svc.forwarding}` +
    (showGroups ? `  group ${svc.group}` : ""));
  for (let i = 0; i < 6; i++) cell(tr, "", "");
  statCells(tr, svc.stats);
  cell(tr, "admin", "");
  return tr;
}

function serverRow(s) {
  // built once; later patches change its cells in place (a button under the pointer stays there)
  const tr = document.createElement("tr");
  tr.id = "srv-" + s.id;
  tr.dataset.id = s.id;
  for (const cls of ["", "health", "", "", "", "effective", "admin-state"]) cell(tr, cls, "");
  statCells(tr, null);
  const td = cell(tr, "admin", "");
  for (const action of ["drain", "disable", "enable"]) {
    const b = document.createElement("button");
    b.textContent = action;
    b.className = "act-" + action;
    b.addEventListener("click", () => act(s.service, s.name, action));
    td.appendChild(b);
  }
  fillServer(tr, s);
  return tr;
}

function fillServer(tr, s) {
  const c = tr.children;
  const set = (i, text, cls, title) => {
    if (c[i].textContent !== text) c[i].textContent = text;
    if (cls !== undefined && c[i].className !== cls) c[i].className = cls;
    if (title !== undefined) c[i].title = title;
  };
  set(0, `  ${s.name}  ${s.dest}`);
  const hist = (s.history || []).map((h) => `${fmtTime(h.wall_ns)} ${h.state} (${h.reason}${h.detail ? ": " + h.detail : ""})`).join("\n");
  set(1, s.health, "health h-" + s.health, hist);
  set(2, fmtTime(s.since_ns));
  const last = s.last;
  set(3, last ? `${last.ok ? "ok" : last.detail} ${(last.latency_us / 1000).toFixed(1)} ms` : "");
  set(4, String(s.weight));
  set(5, s.effective === null ? "out" : String(s.effective), s.effective === null ? "effective out" : "effective");
  set(6, s.admin, "admin-state a-" + s.admin);
  ["active", "inactive", "conns", "cps", "inpps", "outpps", "inbps", "outbps"].forEach((f, i) => set(7 + i, stat(s.stats, f)));
}

function render(state) {
  fields = state.fields;
  showGroups = Object.keys(state.router.groups || {}).some((g) => g !== "default");
  routerPatch(state.router);
  const body = $("rows");
  body.textContent = "";
  for (const svc of state.services) {
    body.appendChild(serviceRow(svc));
    for (const s of svc.servers) body.appendChild(serverRow(s));
  }
}

function routerPatch(r) {
  const el = $("role");
  el.textContent = r.role;
  el.className = "role " + r.role;
  $("role-reason").textContent = r.reason ? `(${r.reason} ${fmtTime(r.since_ns)})` : "";
  if (r.router) $("router").textContent = r.router;
  peersPatch(r.peers, r.deadtime_s);
  groupsPatch(r.groups || {});
  bgpPatch(r.bgp);
  const held = Object.entries(r.holders).map(([v, h]) => `${v}: ${h || "nobody"}`);
  $("vips").textContent = held.length ? held.join(", ") : "none";
  const links = Object.entries(r.links).map(([l, x]) =>
    `${l} ${x.up ? "up" : "DOWN"}${x.device ? " (" + x.device + ")" : ""}${x.since_ns ? " since " + fmtTime(x.since_ns) : ""}`);
  $("links").textContent = (links.length ? links.join(", ") : "none") + (r.monitor_links ? "" : " (not monitored)");
  $("links").className = Object.values(r.links).some((x) => !x.up) ? "l-down" : "";
}

// Scale-out ([scaleout]): each BGP session to the upstream, each VIP's announcement (announce,
// drain, withdraw, and why), and whether an operator drained this router. Hidden without it.
function bgpPatch(b) {
  $("bgpbox").hidden = !b;
  $("handover").hidden = !!b; // scale-out: every router is active, nothing to hand over (drain instead)
  if (!b) return;
  const sessions = Object.entries(b.sessions).map(([p, x]) => `${p} ${x.state}${x.state === "up" ? "" : " (" + x.info + ")"}`);
  const vips = Object.entries(b.vips).map(([v, x]) => `${v} ${x.state} (${x.reason})`);
  $("bgp").textContent = `sessions: ${sessions.join(", ") || "none"}; VIPs: ${vips.join(", ") || "none announced"}` +
    (b.drained ? "; DRAINED by an operator" : "");
  $("bgp").className = b.drained ? "l-down" : "";
  $("bgp-drain").hidden = b.drained;
  $("bgp-resume").hidden = !b.drained;
}

// Each failover group: its role on this router (why, since when), its VIPs, and each live peer's
// role in it as its heartbeats say. Hidden with the one default group (the header's role is it).
function groupsPatch(groups) {
  $("groupsbox").hidden = !showGroups;
  const box = $("groups");
  box.textContent = "";
  for (const [name, g] of Object.entries(groups)) {
    const span = document.createElement("span");
    span.className = "group";
    span.id = "group-" + name;
    const role = document.createElement("span");
    role.className = "role " + g.role;
    role.textContent = g.role;
    const peers = Object.entries(g.peers).map(([n, r]) => `${n} ${r || "?"}`).join(", ");
    span.append(`${name} `, role, ` ${g.reason ? "(" + g.reason + " " + fmtTime(g.since_ns) + ") " : ""}` +
      `${g.vips.join(" ") || "no VIP"}${peers ? "; " + peers : ""}`);
    box.appendChild(span);
  }
}

// Each peer's heartbeat links: state, and the age of the last heartbeat as of the view's latest
// event, which the page counts on from (the server pushes a link only when it changes, and
// refreshes the ages at most once a second). An up link whose age passes deadtime reads silent.
function fmtAge(s) {
  if (s === null || s === undefined) return "never heard";
  if (s < 10) return s.toFixed(1) + " s ago";
  if (s < 120) return Math.round(s) + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}
function peersPatch(peers, deadtime) {
  const box = $("peers");
  box.textContent = "";
  const at = performance.now();
  const names = Object.keys(peers);
  names.forEach((n, i) => {
    const p = peers[n];
    const span = document.createElement("span");
    span.className = "peer";
    span.id = "peer-" + n;
    span.textContent = `${n} ${p.alive ? p.role : (p.role ? "dead" : "not heard")}`;
    Object.entries(p.links || {}).forEach(([l, x], j) => {
      span.append(j ? ", " : ": ");
      const ls = document.createElement("span");
      ls.id = `link-${n}-${l}`;
      ls.dataset.link = l;
      ls.dataset.state = x.state;
      if (x.age_s !== null) ls.dataset.age = x.age_s;
      ls.dataset.at = at;
      if (deadtime) ls.dataset.deadtime = deadtime;
      if (x.heard_ns) ls.title = "last heard " + fmtTime(x.heard_ns);
      span.appendChild(ls);
      tickLink(ls, at);
    });
    box.appendChild(span);
    if (i < names.length - 1) box.append("; ");
  });
  if (!names.length) box.textContent = "none heard";
}
function tickLink(ls, now) {
  const base = ls.dataset.age;
  const age = base === undefined ? null : Number(base) + (now - Number(ls.dataset.at)) / 1000;
  let state = ls.dataset.state;
  if (state === "up" && age !== null && ls.dataset.deadtime && age >= Number(ls.dataset.deadtime)) state = "silent";
  const text = `${ls.dataset.link} ${state} ${fmtAge(age)}`;
  if (ls.textContent !== text) ls.textContent = text;
  ls.className = "link l-" + state;
}
setInterval(() => {
  const now = performance.now();
  for (const ls of document.querySelectorAll("#peers .link")) tickLink(ls, now);
}, 500);

function apply(patches) {
  for (const p of patches) {
    if (p.kind === "reset") return load();
    if (p.kind === "router") routerPatch(p);
    else if (p.kind === "server") {
      const tr = document.getElementById("srv-" + p.id);
      if (tr) fillServer(tr, p);
    } else if (p.kind === "service") {
      const tr = document.getElementById("svc-" + p.key);
      if (!tr) continue;
      ["active", "inactive", "conns", "cps", "inpps", "outpps", "inbps", "outbps"].forEach((f, i) => {
        tr.children[7 + i].textContent = stat(p.stats, f);
      });
    } else if (p.kind === "bye") {
      $("live").textContent = "console stopped"; $("live").className = "live off";
    }
  }
}

async function load() {
  const r = await fetch("/api/state", {credentials: "same-origin"});
  if (r.status === 401) { location.href = "/login?expired=1"; return; }
  const state = await r.json();
  render(state);
}

async function post(url, body) {
  const r = await fetch(url, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify(body)});
  if (r.status === 401) { location.href = "/login?expired=1"; return null; }
  return [r.status, await r.json()];
}

async function act(virtual, server, action) {
  const res = await post("/api/server", {virtual, server, action, reason: ""});
  if (!res) return;
  const [status, a] = res;
  $("message").textContent = status !== 200 ? `refused: ${a.error}` :
    a.answered ? `#${a.seq}: ${virtual}/${server} ${a.outcome === "applied" ? "now" : a.outcome === "unchanged" ? "already" : "unknown:"} ${a.state}`
               : `#${a.seq}: recorded; lvsd has not answered (a standby answers when this router becomes active)`;
}

$("handover").addEventListener("click", async () => {
  if (!confirm("Hand the active role over to a live backup?")) return;
  const res = await post("/api/handover", {reason: "", hold_s: 300});
  if (!res) return;
  const [status, a] = res;
  $("message").textContent = status !== 200 ? `refused: ${a.error}` : !a.answered ? `#${a.seq}: recorded, no answer yet` :
    a.type === "pulse.handover_refused" ? `#${a.seq}: handover refused: ${a.reason}` : `#${a.seq}: ${a.old} -> ${a.new} (handover)`;
});

for (const action of ["drain", "resume"]) {
  $("bgp-" + action).addEventListener("click", async () => {
    if (action === "drain" && !confirm("Drain this router's BGP announcements (new flows go to the other routers)?")) return;
    const res = await post("/api/bgp", {action, reason: ""});
    if (!res) return;
    const [status, a] = res;
    $("message").textContent = status !== 200 ? `refused: ${a.error}` : !a.answered ? `#${a.seq}: recorded, the bgp service has not answered` :
      a.outcome === "not_scaleout" ? `#${a.seq}: no [scaleout] in force` :
      `#${a.seq}: ${a.outcome === "applied" ? "now" : "already"} ${action === "drain" ? "drained" : "announced plainly"} (${a.vips} VIPs)`;
  });
}

function connect() {
  const es = new EventSource("/api/stream");
  es.onopen = () => { $("live").textContent = "live"; $("live").className = "live"; load(); };
  es.onmessage = (m) => apply(JSON.parse(m.data));
  es.addEventListener("expired", () => { es.close(); location.href = "/login?expired=1"; });
  es.onerror = () => { $("live").textContent = "reconnecting"; $("live").className = "live off"; };
}
connect();
