// Vigil console: a thin client of /api/v1. The token stays in sessionStorage and travels only
// in the Authorization header. Nothing is ever rendered as HTML from data: text goes through
// textContent, values through DOM properties (value, title, dataset), positions through CSSOM
// (the page runs under a CSP without 'unsafe-inline').
"use strict";

const $ = (s) => document.querySelector(s);
const VIEWS = ["offenses", "detail", "events", "sources", "dead"];
const OFFENSE_PAGE = 100;
const SOURCES_EVERY_MS = 5000;

let token = sessionStorage.getItem("vigil-token") || "";
let routeGen = 0; // bumped on every navigation: late answers for an older view are dropped
let sourcesTimer = null;
let current = null; // the offense shown in the detail view
const offenseQuery = { status: "open", min: "", index: "", offset: 0 };
const eventSearch = { gen: 0, offset: 0, searched: false };

// ---- helpers ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

async function api(path, opts = {}) {
  const init = { method: opts.method || "GET", headers: { Authorization: "Bearer " + token } };
  if (opts.body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(opts.body);
  }
  const r = await fetch(path, init);
  if (r.status === 401) {
    signOut("The token was refused.");
    throw new ApiError("unauthorized", 401);
  }
  let data = null;
  try { data = await r.json(); } catch (_) { data = null; }
  if (!r.ok) {
    const why = data && typeof data.error === "string" ? data.error : "HTTP " + r.status;
    throw new ApiError(why, r.status);
  }
  return data;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text != null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (cls) td.append(el("span", text == null ? "" : text, cls));
  else td.textContent = text == null ? "" : String(text);
  tr.append(td);
  return td;
}

/** `2026-11-27T08:20:02.588Z` as `2026-11-27 08:20:02Z` (the full value in the tooltip). */
function fmtTime(s) {
  if (!s) return "";
  return String(s).replace("T", " ").replace(/\.\d+(Z|[+-]\d\d:\d\d)$/, "$1");
}

function timeCell(tr, s) {
  const td = cell(tr, fmtTime(s));
  if (s) td.title = String(s);
  return td;
}

function endpoint(ip, port) {
  if (!ip) return "";
  const host = String(ip).includes(":") && port ? "[" + ip + "]" : String(ip);
  return port ? host + ":" + port : host;
}

function magClass(m) { return "mag " + (m >= 7 ? "hi" : m >= 4 ? "mid" : "lo"); }

function setStatus(text, error) {
  const s = $("#status");
  s.textContent = text || "";
  s.classList.toggle("error", !!error);
}

function failed(e) {
  if (e && e.status === 401) return; // signOut already said so
  setStatus(e && e.message ? e.message : String(e), true);
}

/** A `datetime-local` value (UTC wall time, seconds) for a Date. */
function toInput(d) { return d.toISOString().slice(0, 19); }

/** RFC 3339 from a `datetime-local` value read as UTC; "" when empty or malformed. */
function fromInput(v) {
  if (!v) return "";
  const d = new Date(v.length === 16 ? v + ":00Z" : v + "Z");
  return isNaN(d.getTime()) ? "" : d.toISOString();
}

function show(id) {
  for (const s of VIEWS) $("#" + s).hidden = s !== id;
  const nav = id === "detail" ? "offenses" : id;
  document.querySelectorAll("nav button[data-view]").forEach((b) => b.classList.toggle("active", b.dataset.view === nav));
}

// ---- routing ------------------------------------------------------------------------------

function route() {
  if (!token) return;
  const gen = ++routeGen;
  stopSources();
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  const view = parts[0] || "offenses";
  let p;
  if (view === "offenses" && parts[1]) p = loadDetail(decodeURIComponent(parts[1]), gen);
  else if (view === "events") p = openEvents();
  else if (view === "sources") p = loadSources(gen);
  else if (view === "dead") p = loadDead(gen);
  else p = loadOffenses(gen);
  p.catch(failed);
}

function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

// ---- offense queue --------------------------------------------------------------------------

async function loadOffenses(gen) {
  const q = new URLSearchParams({ limit: String(OFFENSE_PAGE), offset: String(offenseQuery.offset) });
  if (offenseQuery.status) q.set("status", offenseQuery.status);
  if (offenseQuery.min !== "") q.set("min_magnitude", offenseQuery.min);
  if (offenseQuery.index) q.set("index_value", offenseQuery.index);
  const page = await api("/api/v1/offenses?" + q);
  if (gen !== routeGen) return;
  // The API answers highest magnitude first; keep that order within the page whatever happens.
  const items = page.items.map((o, i) => [o, i])
    .sort((a, b) => (b[0].magnitude - a[0].magnitude) || (a[1] - b[1]))
    .map((x) => x[0]);
  const body = $("#offense-table tbody");
  body.replaceChildren();
  for (const o of items) {
    const tr = document.createElement("tr");
    tr.className = "offense";
    tr.dataset.id = o.id;
    tr.dataset.magnitude = String(o.magnitude);
    tr.tabIndex = 0;
    cell(tr, o.magnitude, magClass(o.magnitude));
    cell(tr, o.title);
    cell(tr, o.index_field + " " + o.index_value);
    cell(tr, o.event_count);
    timeCell(tr, o.first_seen);
    timeCell(tr, o.last_seen);
    cell(tr, o.assignee || "—");
    cell(tr, o.status + (o.follow_up ? " ⚑" : ""), "state " + o.status);
    const open = () => go("#/offenses/" + encodeURIComponent(o.id));
    tr.addEventListener("click", open);
    tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") open(); });
    body.append(tr);
  }
  $("#offense-empty").hidden = items.length > 0;
  const from = page.total === 0 ? 0 : page.offset + 1;
  $("#offense-page").textContent = from + "–" + (page.offset + items.length) + " of " + page.total;
  $("#offense-prev").disabled = page.offset === 0;
  $("#offense-next").disabled = page.offset + items.length >= page.total;
  setStatus(page.total + " " + (offenseQuery.status ? offenseQuery.status + " " : "") +
    (page.total === 1 ? "offense" : "offenses") + ", highest magnitude first");
  show("offenses");
}

// ---- offense detail -------------------------------------------------------------------------

async function loadDetail(id, gen) {
  const o = await api("/api/v1/offenses/" + encodeURIComponent(id));
  if (gen !== routeGen) return;
  if (!current || current.id !== o.id) $("#action-status").textContent = "";
  current = o;
  $("#detail-title").textContent = o.title + " — " + o.index_value;

  const dl = $("#detail-summary");
  dl.replaceChildren();
  const rows = [
    ["Status", o.status + (o.follow_up ? " (follow-up)" : "")],
    ["Magnitude", o.magnitude + "/10"],
    ["Index", o.index_field + " = " + o.index_value],
    ["Level", o.level || ""],
    ["Events", o.event_count + (o.stored_events !== o.event_count ? " (" + o.stored_events + " stored)" : "")],
    ["First seen", fmtTime(o.first_seen)],
    ["Last seen", fmtTime(o.last_seen)],
    ["Assignee", o.assignee || "unassigned"],
  ];
  if (o.status === "closed") {
    rows.push(["Closing reason", o.closing_reason || ""], ["Closed at", fmtTime(o.closed_at)]);
  }
  if (o.asset_criticality) rows.push(["Asset criticality", o.asset_criticality + "/10 " + (o.asset_reason || "")]);
  rows.push(["Tags", (o.tags || []).join(", ")], ["Created", fmtTime(o.created_at)], ["Updated", fmtTime(o.updated_at)], ["Id", o.id]);
  for (const [k, v] of rows) {
    const dd = el("dd", v);
    dd.dataset.field = k.toLowerCase().replace(/ /g, "-");
    dl.append(el("dt", k), dd);
  }

  const scores = $("#detail-scores");
  scores.replaceChildren();
  for (const k of ["severity", "relevance", "credibility"]) {
    const m = document.createElement("meter");
    m.min = 0; m.max = 10; m.low = 4; m.high = 7; m.optimum = 0;
    m.value = Number(o[k]) || 0;
    const label = el("label", k + " " + (Number(o[k]) || 0) + "/10");
    label.append(m);
    scores.append(label);
  }
  $("#reasons").replaceChildren(...(o.magnitude_reasons || []).map((r) => el("li", r)));
  $("#rules").replaceChildren(...(o.rules || []).map((r) => {
    const li = el("li");
    li.append(el("strong", r.title || r.rule));
    li.append(el("span", " " + r.rule + (r.level ? ", " + r.level : "") + ": " + r.events + " events, " +
      r.detections + " detections, " + fmtTime(r.first_seen) + " → " + fmtTime(r.last_seen) +
      (r.author ? ", by " + r.author : "")));
    return li;
  }));

  // Actions: what the status allows.
  $("#assignee").value = o.assignee || "";
  $("#follow-up").checked = !!o.follow_up;
  $("#close-form").hidden = o.status === "closed";
  $("#reopen-form").hidden = o.status !== "closed";
  $("#closing-reason").value = "";

  $("#notes").replaceChildren(...(o.notes || []).map((n) => {
    const li = el("li", null, "note");
    li.append(el("span", n.author + ", " + fmtTime(n.created_at), "muted"), el("p", n.text));
    return li;
  }));
  if (!(o.notes || []).length) $("#notes").append(el("li", "No notes yet.", "muted"));

  renderTimeline(o);

  const events = o.events || [];
  $("#detail-events-count").textContent = "(" + events.length + " stored of " + o.event_count + ")";
  const body = $("#detail-events tbody");
  body.replaceChildren();
  for (const e of events) {
    const tr = document.createElement("tr");
    tr.className = "event";
    timeCell(tr, e["@timestamp"]);
    cell(tr, endpoint(e["source.ip"], e["source.port"]));
    cell(tr, endpoint(e["destination.ip"], e["destination.port"]));
    cell(tr, e["user.name"]);
    cell(tr, e["host.name"]);
    cell(tr, e["event.outcome"]);
    cell(tr, e["message"]);
    expandable(tr, e, 7);
    body.append(tr);
  }
  setStatus("Offense " + o.id + ": " + o.status);
  show("detail");
}

/** Clicking the row shows (or hides) the whole event as JSON below it. */
function expandable(tr, event, span) {
  tr.addEventListener("click", () => {
    const next = tr.nextElementSibling;
    if (next && next.classList.contains("raw")) { next.remove(); return; }
    const raw = document.createElement("tr");
    raw.className = "raw";
    const td = document.createElement("td");
    td.colSpan = span;
    td.append(el("pre", JSON.stringify(event, null, 2)));
    raw.append(td);
    tr.after(raw);
  });
}

function ms(s) { const t = Date.parse(s); return isNaN(t) ? null : t; }

/** The offense's story in time: the server's timeline when it sends one, else one built here
 *  from its rules (first and last match), its events (bursts) and its workflow (created,
 *  notes, closed). The chart shows event time only; the list mixes in wall-clock entries. */
function renderTimeline(o) {
  const chart = $("#timeline");
  const list = $("#timeline-list");
  chart.replaceChildren();
  list.replaceChildren();
  let entries = [];
  if (Array.isArray(o.timeline) && o.timeline.length) {
    entries = o.timeline.map((t) => ({
      at: t.at || t.time || t.timestamp || t["@timestamp"] || "",
      kind: t.kind || t.type || "",
      text: t.text || t.label || t.description || t.what || JSON.stringify(t),
    }));
  } else {
    for (const r of o.rules || []) {
      entries.push({ at: r.first_seen, kind: "rule", text: (r.title || r.rule) + " first matched (" + r.rule + ")" });
      if (r.last_seen && r.last_seen !== r.first_seen) {
        entries.push({ at: r.last_seen, kind: "rule", text: (r.title || r.rule) + " last matched: " + r.events + " events, " + r.detections + " detections" });
      }
    }
    for (const b of bursts(o.events || [])) entries.push(b);
    if (o.created_at) entries.push({ at: o.created_at, kind: "workflow", text: "Offense raised (receive time)" });
    for (const n of o.notes || []) entries.push({ at: n.created_at, kind: "workflow", text: "Note by " + n.author });
    if (o.closed_at) entries.push({ at: o.closed_at, kind: "workflow", text: "Closed: " + (o.closing_reason || "") });
  }
  entries.sort((a, b) => (ms(a.at) || 0) - (ms(b.at) || 0));
  for (const t of entries) {
    const li = el("li", null, "tl " + (t.kind || ""));
    li.append(el("time", fmtTime(t.at)), el("span", t.text));
    list.append(li);
  }

  // The chart: one lane per rule (first to last match) and one lane of event ticks.
  const events = (o.events || []).map((e) => ms(e["@timestamp"])).filter((t) => t != null);
  const spans = (o.rules || []).map((r) => [r, ms(r.first_seen), ms(r.last_seen)]).filter((x) => x[1] != null);
  const all = events.concat(...spans.map((s) => [s[1], s[2] == null ? s[1] : s[2]]));
  if (!all.length) { chart.hidden = true; return; }
  chart.hidden = false;
  const lo = Math.min(...all), hi = Math.max(...all), width = Math.max(hi - lo, 1);
  const pos = (t) => ((t - lo) / width) * 100;
  const lane = (label) => {
    const row = el("div", null, "lane");
    const track = el("div", null, "track");
    row.append(el("span", label, "lane-label"), track);
    chart.append(row);
    return track;
  };
  for (const [r, a, b] of spans) {
    const bar = el("div", null, "bar");
    bar.style.left = pos(a) + "%";
    bar.style.width = Math.max(pos(b == null ? a : b) - pos(a), 0.6) + "%";
    bar.title = (r.title || r.rule) + ": " + fmtTime(r.first_seen) + " → " + fmtTime(r.last_seen);
    lane(r.rule).append(bar);
  }
  if (events.length) {
    const track = lane("events");
    for (const t of events.slice(0, 1000)) {
      const tick = el("div", null, "tick");
      tick.style.left = pos(t) + "%";
      track.append(tick);
    }
  }
  const axis = el("div", null, "axis");
  axis.append(el("span", fmtTime(new Date(lo).toISOString())), el("span", fmtTime(new Date(hi).toISOString())));
  chart.append(axis);
}

/** Events grouped into bursts (gaps of at most a minute), each as one timeline entry. */
function bursts(events) {
  const sorted = events.filter((e) => ms(e["@timestamp"]) != null)
    .sort((a, b) => ms(a["@timestamp"]) - ms(b["@timestamp"]));
  const out = [];
  let cur = null;
  const flush = () => {
    if (!cur) return;
    const users = [...cur.users].slice(0, 5);
    const outcomes = Object.entries(cur.outcomes).map(([k, n]) => k + " ×" + n).join(", ");
    out.push({
      at: cur.first, kind: "events",
      text: cur.n + " event" + (cur.n === 1 ? "" : "s") + (cur.n > 1 ? " until " + fmtTime(cur.last) : "") +
        (outcomes ? " — " + outcomes : "") + (users.length ? "; users " + users.join(", ") + (cur.users.size > 5 ? ", …" : "") : ""),
    });
  };
  for (const e of sorted) {
    const t = ms(e["@timestamp"]);
    if (!cur || t - ms(cur.last) > 60000) {
      flush();
      cur = { first: e["@timestamp"], last: e["@timestamp"], n: 0, users: new Set(), outcomes: {} };
    }
    cur.last = e["@timestamp"];
    cur.n += 1;
    if (e["user.name"]) cur.users.add(String(e["user.name"]));
    const oc = e["event.outcome"] || "";
    if (oc) cur.outcomes[oc] = (cur.outcomes[oc] || 0) + 1;
  }
  flush();
  return out;
}

/** Runs one change on the shown offense, then shows it again as the server has it. */
async function act(form, what, call) {
  if (!current) return;
  const id = current.id;
  const buttons = form.querySelectorAll("button, input, textarea");
  buttons.forEach((b) => { b.disabled = true; });
  const msg = $("#action-status");
  msg.classList.remove("error");
  msg.textContent = what + "…";
  try {
    await call(id);
    msg.textContent = what + ": done.";
  } catch (e) {
    msg.textContent = what + " failed: " + (e && e.message ? e.message : e);
    msg.classList.add("error");
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
  if (current && current.id === id) await loadDetail(id, routeGen).catch(failed);
}

const patch = (id, body) => api("/api/v1/offenses/" + encodeURIComponent(id), { method: "PATCH", body });

$("#assign-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const who = $("#assignee").value.trim();
  act(ev.target, who ? "Assign to " + who : "Unassign", (id) => patch(id, { assignee: who }));
});
$("#follow-up").addEventListener("change", (ev) => {
  const on = ev.target.checked;
  act($("#follow-form"), on ? "Flag for follow-up" : "Clear the follow-up flag", (id) => patch(id, { follow_up: on }));
});
$("#close-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const reason = $("#closing-reason").value.trim();
  if (!reason) {
    const msg = $("#action-status");
    msg.textContent = "Closing an offense needs a reason.";
    msg.classList.add("error");
    return;
  }
  act(ev.target, "Close", (id) => patch(id, { status: "closed", closing_reason: reason }));
});
$("#reopen-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  act(ev.target, "Reopen", (id) => patch(id, { status: "open" }));
});
$("#note-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("#note-text").value.trim();
  if (!text) return;
  act(ev.target, "Add note", async (id) => {
    await api("/api/v1/offenses/" + encodeURIComponent(id) + "/notes", { method: "POST", body: { text } });
    $("#note-text").value = "";
  });
});
$("#back").addEventListener("click", () => go("#/offenses"));
$("#detail-search").addEventListener("click", () => {
  if (!current) return;
  const o = current;
  clearEventForm();
  const field = { "source.ip": "#ev-source-ip", "destination.ip": "#ev-destination-ip", "user.name": "#ev-user", "host.name": "#ev-host" }[o.index_field];
  if (field) $(field).value = o.index_value;
  const a = ms(o.first_seen), b = ms(o.last_seen);
  if (a != null) $("#ev-from").value = toInput(new Date(a - 60000));
  if (b != null) $("#ev-to").value = toInput(new Date(b + 60000));
  eventSearch.searched = true;
  go("#/events");
  searchEvents(0).catch(failed);
});

// ---- event search ---------------------------------------------------------------------------

const EVENT_FILTERS = [
  ["source_ip", "#ev-source-ip"], ["destination_ip", "#ev-destination-ip"], ["user", "#ev-user"],
  ["host", "#ev-host"], ["category", "#ev-category"], ["outcome", "#ev-outcome"], ["dataset", "#ev-dataset"],
];

function clearEventForm() {
  $("#ev-q").value = "";
  for (const [, sel] of EVENT_FILTERS) $(sel).value = "";
  lastHour();
}

function lastHour() {
  const now = Date.now();
  $("#ev-from").value = toInput(new Date(now - 3600 * 1000));
  $("#ev-to").value = toInput(new Date(now + 60 * 1000));
}

async function openEvents() {
  show("events");
  if (!eventSearch.searched) {
    eventSearch.searched = true;
    if (!$("#ev-from").value) lastHour();
    await searchEvents(0);
  } else {
    setStatus("Event search");
  }
}

async function searchEvents(offset) {
  const gen = ++eventSearch.gen;
  const q = new URLSearchParams();
  const text = $("#ev-q").value.trim();
  if (text) q.set("q", text);
  const from = fromInput($("#ev-from").value), to = fromInput($("#ev-to").value);
  if (from) q.set("from", from);
  if (to) q.set("to", to);
  for (const [param, sel] of EVENT_FILTERS) {
    const v = $(sel).value.trim();
    if (v) q.set(param, v);
  }
  const limit = Math.min(Math.max(parseInt($("#ev-limit").value, 10) || 100, 1), 500);
  q.set("limit", String(limit));
  q.set("offset", String(offset));
  $("#ev-summary").textContent = "Searching…";
  $("#event-table").setAttribute("aria-busy", "true");
  let page;
  try {
    page = await api("/api/v1/events?" + q);
  } catch (e) {
    if (gen !== eventSearch.gen) return;
    $("#ev-summary").textContent = e.status === 404 ? "Event search is not available on this server." : "Search failed: " + e.message;
    $("#event-table tbody").replaceChildren();
    $("#event-table").setAttribute("aria-busy", "false");
    throw e;
  }
  if (gen !== eventSearch.gen) return; // a newer search is under way
  eventSearch.offset = offset;
  const items = page.items || [];
  const body = $("#event-table tbody");
  body.replaceChildren();
  for (const e of items) {
    const tr = document.createElement("tr");
    tr.className = "event";
    timeCell(tr, e["@timestamp"]);
    cell(tr, e["event.dataset"]);
    cell(tr, e["host.name"]);
    cell(tr, endpoint(e["source.ip"], e["source.port"]));
    cell(tr, endpoint(e["destination.ip"], e["destination.port"]));
    cell(tr, e["user.name"]);
    cell(tr, e["event.outcome"]);
    cell(tr, e["message"]);
    expandable(tr, e, 8);
    body.append(tr);
  }
  const range = (from ? fmtTime(from) : "…") + " to " + (to ? fmtTime(to) : "…");
  $("#ev-summary").textContent = items.length === 0
    ? "No events match, " + range + "."
    : "Events " + (offset + 1) + "–" + (offset + items.length) + (page.more ? " (more on the next page)" : "") + ", " + range + ".";
  $("#ev-prev").disabled = offset === 0;
  $("#ev-next").disabled = !page.more;
  // What the rows answer (for whoever waits on a search: people see the summary).
  $("#event-table").dataset.q = text;
  $("#event-table").setAttribute("aria-busy", "false");
  setStatus("Event search");
}

$("#event-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  eventSearch.searched = true;
  searchEvents(0).catch(failed);
});
$("#ev-last-hour").addEventListener("click", () => { lastHour(); searchEvents(0).catch(failed); });
$("#ev-prev").addEventListener("click", () => {
  const limit = parseInt($("#ev-limit").value, 10) || 100;
  searchEvents(Math.max(eventSearch.offset - limit, 0)).catch(failed);
});
$("#ev-next").addEventListener("click", () => {
  const limit = parseInt($("#ev-limit").value, 10) || 100;
  searchEvents(eventSearch.offset + limit).catch(failed);
});

// ---- sources --------------------------------------------------------------------------------

function stopSources() {
  if (sourcesTimer) { clearTimeout(sourcesTimer); sourcesTimer = null; }
}

async function loadSources(gen) {
  stopSources();
  let page;
  try {
    page = await api("/api/v1/sources");
  } finally {
    // Live: ask again while the view is shown (also after a failed attempt).
    if (gen === routeGen && token && $("#sources-live").checked) {
      sourcesTimer = setTimeout(() => loadSources(gen).catch(failed), SOURCES_EVERY_MS);
    }
  }
  if (gen !== routeGen) return;
  const body = $("#source-table tbody");
  body.replaceChildren();
  for (const s of page.items || []) {
    const tr = document.createElement("tr");
    tr.className = "source";
    tr.dataset.id = s.id;
    cell(tr, s.id);
    cell(tr, s.kind);
    cell(tr, s.detected + (s.redetections ? " (changed " + s.redetections + "×)" : ""));
    cell(tr, Number(s.eps || 0).toFixed(2), "eps");
    cell(tr, s.events, "n-events");
    cell(tr, s.dead_letters, "n-dead");
    cell(tr, (Number(s.parse_failure_rate || 0) * 100).toFixed(1) + " %");
    timeCell(tr, s.first_seen);
    timeCell(tr, s.last_seen);
    body.append(tr);
  }
  $("#sources-empty").hidden = (page.items || []).length > 0;
  $("#sources-updated").textContent = "Updated " + fmtTime(new Date().toISOString()) + ".";
  const n = (page.items || []).length;
  setStatus(n + (n === 1 ? " source" : " sources") + ", most recently seen first");
  show("sources");
}

$("#sources-live").addEventListener("change", (ev) => {
  if (ev.target.checked) route(); else stopSources();
});

// ---- dead letters ---------------------------------------------------------------------------

async function loadDead(gen) {
  const page = await api("/api/v1/dead-letters?limit=200");
  if (gen !== routeGen) return;
  const body = $("#dead-table tbody");
  body.replaceChildren();
  for (const d of page.items) {
    const tr = document.createElement("tr");
    timeCell(tr, d.received_at);
    cell(tr, d.observer_id);
    cell(tr, d.reason);
    cell(tr, d.detail);
    let raw = "";
    try { raw = atob(d.raw).slice(0, 120); } catch (_) { raw = "(binary)"; }
    const td = document.createElement("td");
    td.append(el("code", raw));
    tr.append(td);
    body.append(tr);
  }
  setStatus(page.total + (page.total === 1 ? " dead letter" : " dead letters"));
  show("dead");
}

// ---- offense filters ------------------------------------------------------------------------

$("#offense-filter").addEventListener("submit", (ev) => {
  ev.preventDefault();
  offenseQuery.status = $("#offense-status").value;
  offenseQuery.min = $("#offense-min-mag").value.trim();
  offenseQuery.index = $("#offense-index").value.trim();
  offenseQuery.offset = 0;
  go("#/offenses");
});
$("#offense-status").addEventListener("change", () => $("#offense-filter").requestSubmit());
$("#offense-prev").addEventListener("click", () => {
  offenseQuery.offset = Math.max(offenseQuery.offset - OFFENSE_PAGE, 0);
  go("#/offenses");
});
$("#offense-next").addEventListener("click", () => {
  offenseQuery.offset += OFFENSE_PAGE;
  go("#/offenses");
});

// ---- signing in and out ---------------------------------------------------------------------

function signIn() {
  $("#login").hidden = true;
  $("#nav").hidden = false;
  if (!location.hash || location.hash === "#") location.hash = "#/offenses"; else route();
}

function signOut(message) {
  token = "";
  current = null;
  routeGen++;
  stopSources();
  sessionStorage.removeItem("vigil-token");
  $("#token").value = "";
  $("#login").hidden = false;
  $("#nav").hidden = true;
  show(null);
  // Leave no data behind in the page.
  for (const sel of ["#offense-table tbody", "#detail-events tbody", "#event-table tbody", "#source-table tbody",
                     "#dead-table tbody", "#detail-summary", "#reasons", "#rules", "#notes", "#timeline", "#timeline-list"]) {
    $(sel).replaceChildren();
  }
  eventSearch.searched = false;
  setStatus(message || "Signed out.", !!message);
}

$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("#token").value.trim();
  if (!token) return;
  sessionStorage.setItem("vigil-token", token);
  signIn();
});
$("#logout").addEventListener("click", () => signOut());
document.querySelectorAll("nav button[data-view]").forEach((b) =>
  b.addEventListener("click", () => go("#/" + b.dataset.view)));
window.addEventListener("hashchange", route);
if (token) signIn();
