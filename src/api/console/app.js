// Vigil console: a thin client of /api/v1. The token stays in sessionStorage and travels only
// in the Authorization header; nothing is rendered as HTML from data (textContent only).
"use strict";
const $ = (s) => document.querySelector(s);
let token = sessionStorage.getItem("vigil-token") || "";

async function api(path) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + token } });
  if (r.status === 401) { signOut("The token was refused."); throw new Error("unauthorized"); }
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (cls) { const s = document.createElement("span"); s.className = cls; s.textContent = text; td.append(s); }
  else td.textContent = text == null ? "" : String(text);
  tr.append(td);
}

function show(id) {
  for (const s of ["offenses", "detail", "dead"]) $("#" + s).hidden = s !== id;
  document.querySelectorAll("nav button[data-view]").forEach((b) => b.classList.toggle("active", b.dataset.view === id));
}

async function loadOffenses() {
  const page = await api("/api/v1/offenses?limit=200");
  const body = $("#offenses tbody");
  body.replaceChildren();
  for (const o of page.items) {
    const tr = document.createElement("tr");
    tr.className = "offense";
    const m = o.magnitude;
    cell(tr, m, "mag " + (m >= 7 ? "hi" : m >= 4 ? "mid" : "lo"));
    cell(tr, o.title);
    cell(tr, o.index_field + " " + o.index_value);
    cell(tr, o.event_count);
    cell(tr, o.first_seen);
    cell(tr, o.last_seen);
    cell(tr, o.status);
    tr.addEventListener("click", () => loadDetail(o.id));
    body.append(tr);
  }
  $("#status").textContent = page.total + " offenses";
  show("offenses");
}

async function loadDetail(id) {
  const o = await api("/api/v1/offenses/" + encodeURIComponent(id));
  $("#detail h2").textContent = o.title + " — " + o.index_value;
  const dl = $("#detail dl");
  dl.replaceChildren();
  for (const [k, v] of [["Rule", o.rule], ["Status", o.status], ["Magnitude", o.magnitude], ["Events", o.event_count],
                        ["First seen", o.first_seen], ["Last seen", o.last_seen], ["Tags", (o.tags || []).join(", ")], ["Id", o.id]]) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = String(v);
    dl.append(dt, dd);
  }
  $("#rules").replaceChildren(...(o.rules || []).map((r) => {
    const li = document.createElement("li");
    li.textContent = r.title + " (" + r.rule + ", " + r.events + " events" + (r.author ? ", by " + r.author : "") + ")";
    return li;
  }));
  const ul = $("#reasons");
  ul.replaceChildren(...(o.magnitude_reasons || []).map((r) => { const li = document.createElement("li"); li.textContent = r; return li; }));
  const body = $("#detail tbody");
  body.replaceChildren();
  for (const e of o.events) {
    const tr = document.createElement("tr");
    cell(tr, e["@timestamp"]);
    cell(tr, (e["source.ip"] || "") + (e["source.port"] ? ":" + e["source.port"] : ""));
    cell(tr, e["user.name"]);
    cell(tr, e["event.outcome"]);
    cell(tr, e["message"]);
    body.append(tr);
  }
  show("detail");
}

async function loadDead() {
  const page = await api("/api/v1/dead-letters?limit=200");
  const body = $("#dead tbody");
  body.replaceChildren();
  for (const d of page.items) {
    const tr = document.createElement("tr");
    cell(tr, d.received_at);
    cell(tr, d.observer_id);
    cell(tr, d.reason);
    cell(tr, d.detail);
    let raw = "";
    try { raw = atob(d.raw).slice(0, 120); } catch (_) { raw = "(binary)"; }
    const td = document.createElement("td"); const c = document.createElement("code"); c.textContent = raw; td.append(c); tr.append(td);
    body.append(tr);
  }
  $("#status").textContent = page.total + " dead letters";
  show("dead");
}

function signIn() {
  $("#login").hidden = true;
  $("#nav").hidden = false;
  loadOffenses().catch((e) => { $("#status").textContent = e.message; });
}

function signOut(message) {
  token = "";
  sessionStorage.removeItem("vigil-token");
  $("#login").hidden = false;
  $("#nav").hidden = true;
  show(null);
  $("#status").textContent = message || "Signed out.";
}

$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("#token").value.trim();
  sessionStorage.setItem("vigil-token", token);
  signIn();
});
$("#logout").addEventListener("click", () => signOut());
$("#back").addEventListener("click", () => loadOffenses());
document.querySelectorAll("nav button[data-view]").forEach((b) =>
  b.addEventListener("click", () => (b.dataset.view === "dead" ? loadDead() : loadOffenses()).catch((e) => { $("#status").textContent = e.message; })));
if (token) signIn();
