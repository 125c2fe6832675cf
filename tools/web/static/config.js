// lvsbus console, configuration page: the file the router runs, an editor checked as check-config
// does (errors listed with their lines, and marked in the gutter), the diff, and apply (admins).
"use strict";
const csrf = document.querySelector('meta[name="csrf"]').content;
const role = document.querySelector('meta[name="role"]').content;
const $ = (id) => document.getElementById(id);
let base = null;
if (role !== "admin") $("text").readOnly = true;

function gutter(bad) {
  const n = $("text").value.split("\n").length;
  const out = [];
  for (let i = 1; i <= n; i++) out.push(bad.has(i) ? `!${i}` : String(i));
  $("gutter").textContent = out.join("\n");
}
$("text").addEventListener("input", () => gutter(new Set()));
$("text").addEventListener("scroll", () => { $("gutter").scrollTop = $("text").scrollTop; });

async function load() {
  const r = await fetch("/api/config", {credentials: "same-origin"});
  if (r.status === 401) { location.href = "/login?expired=1"; return; }
  const c = await r.json();
  if (r.status !== 200) { $("status").textContent = c.error; return; }
  $("where").textContent = `${c.path} (${c.format}), in force since #${c.seq}, digest ${c.digest_in_force.slice(0, 12)}` +
    (c.file_digest && c.file_digest !== c.digest_in_force ? " (the file on disk differs from the config in force)" : "") +
    (c.problem ? ` - ${c.problem}` : "");
  $("text").value = c.text || "";
  base = c.file_digest;
  gutter(new Set());
  $("issues").textContent = ""; $("diff").textContent = ""; $("textdiff").textContent = "";
}

function show(res) {
  const box = $("issues");
  box.textContent = "";
  const bad = new Set();
  for (const [kind, list] of [["error", res.errors || []], ["warning", res.warnings || []]]) {
    for (const i of list) {
      const p = document.createElement("p");
      p.className = "issue " + kind;
      p.textContent = `${kind}: ${i.text}`;
      if (i.line) {
        if (kind === "error") bad.add(i.line);
        p.addEventListener("click", () => selectLine(i.line));
      }
      box.appendChild(p);
    }
  }
  gutter(bad);
  $("diff").textContent = (res.diff || []).join("\n") || (res.ok ? "(no change)" : "");
  if (res.text_diff !== undefined) $("textdiff").textContent = res.text_diff || "(same text)";
}

function selectLine(n) {
  const lines = $("text").value.split("\n");
  const start = lines.slice(0, n - 1).reduce((a, l) => a + l.length + 1, 0);
  $("text").focus();
  $("text").setSelectionRange(start, start + lines[n - 1].length);
}

async function post(url) {
  const r = await fetch(url, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify({text: $("text").value, base_digest: base})});
  if (r.status === 401) { location.href = "/login?expired=1"; return null; }
  return [r.status, await r.json()];
}

$("reload").addEventListener("click", load);
$("check").addEventListener("click", async () => {
  const res = await post("/api/config/check");
  if (!res) return;
  const [status, c] = res;
  if (status !== 200) { $("status").textContent = `refused: ${c.error}`; return; }
  $("status").textContent = c.ok ? `valid (${c.warnings.length} warning(s))` : `${c.errors.length} error(s)`;
  show(c);
});
$("apply").addEventListener("click", async () => {
  if (!confirm("Write this config and reload the router?")) return;
  const res = await post("/api/config/apply");
  if (!res) return;
  const [status, c] = res;
  if (status === 200) { $("status").textContent = `applied: config.loaded #${c.seq}`; await load(); return; }
  $("status").textContent = c.error === "invalid" ? `not applied: ${c.errors.length} error(s)` :
    c.error === "reload_refused" ? `the router refused it (the previous file is back): ${c.router_errors.join("; ")}` :
    `not applied: ${c.error}${c.detail ? " (" + c.detail + ")" : ""}`;
  if (c.errors) show(c);
});
load();
