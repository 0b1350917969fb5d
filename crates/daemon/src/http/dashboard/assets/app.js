// Switchyard dashboard. The server renders every piece of HTML (escaped by
// construction); this module fetches those fragments, swaps them in again
// when the event stream says something changed (falling back to polling
// while the stream is down), and wires the page's controls to actions.js
// and upload.js; api.js makes the calls.

import { $, api, enc, hooks, say } from "./api.js";
import { adopt, bulk, jobAction, providerAction, refresh } from "./actions.js";
import { wireUpload } from "./upload.js";

const view = document.body.dataset.view;
const jobKey = document.body.dataset.key;

// Polling cadence while the event stream is down.
const POLL_MS = 5000;

// --- fragments -----------------------------------------------------------

// Each region's fragment URL, with the jobs table's query string.
function fragmentUrl(el) {
  const src = el.dataset.src;
  if (el.id === "jobs-body" || el.id === "filters") {
    const qs = new URLSearchParams(location.search).toString();
    return qs ? `${src}?${qs}` : src;
  }
  return src;
}

const regions = new Map();

function region(el) {
  if (!regions.has(el.id)) {
    regions.set(el.id, { el, busy: false, again: false, last: 0, took: 0, timer: null });
  }
  return regions.get(el.id);
}

// Something that identifies the focused control across a swap.
function focusKey(el) {
  if (!el || el === document.body) return null;
  for (const a of ["id", "data-act", "data-offset", "data-provider-act", "href"]) {
    if (el.hasAttribute(a)) {
      return { a, v: el.getAttribute(a), key: el.getAttribute("data-key") || el.getAttribute("data-provider") };
    }
  }
  return null;
}

function refocus(root, f) {
  if (!f) return;
  const all = root.querySelectorAll(`[${f.a}]`);
  for (const el of all) {
    const key = el.getAttribute("data-key") || el.getAttribute("data-provider");
    if (el.getAttribute(f.a) === f.v && key === f.key) {
      el.focus({ preventScroll: true });
      return;
    }
  }
}

// Swaps in new HTML, keeping playing videos (same source) as they are.
function swap(el, html) {
  const t = document.createElement("template");
  t.innerHTML = html;
  for (const v of t.content.querySelectorAll("video")) {
    const old = [...el.querySelectorAll("video")].find((o) => o.getAttribute("src") === v.getAttribute("src"));
    if (old) v.replaceWith(old);
  }
  const focused = el.contains(document.activeElement) ? focusKey(document.activeElement) : null;
  el.replaceChildren(t.content);
  refocus(el, focused);
}

async function load(id) {
  const el = document.getElementById(id);
  if (!el || el.hidden) return;
  const r = region(el);
  if (r.busy) {
    r.again = true;
    return;
  }
  r.busy = true;
  el.setAttribute("aria-busy", "true");
  const started = performance.now();
  try {
    const resp = await fetch(fragmentUrl(el), { credentials: "same-origin" });
    if (resp.status === 401) {
      showLogin();
      return;
    }
    if (!resp.ok) {
      let msg = `${resp.status} ${resp.statusText}`;
      try {
        msg = (await resp.json()).error.message;
      } catch (_) {}
      const p = document.createElement("p");
      p.setAttribute("role", "alert");
      p.textContent = msg;
      el.replaceChildren(p);
      return;
    }
    swap(el, await resp.text());
    if (id === "overview-body") startCountdowns(el);
  } catch (e) {
    setLive("offline: the daemon does not answer");
  } finally {
    r.took = performance.now() - started;
    r.last = performance.now();
    r.busy = false;
    el.removeAttribute("aria-busy");
    if (r.again) {
      r.again = false;
      schedule(id);
    }
  }
}

// At most one fetch of a region at a time, spaced by several times what
// the last one took: a table over 100,000 jobs costs the daemon a listing
// (hundreds of ms), one over 50 nearly nothing, and the rows shown are
// patched at once anyway (patchRows).
function schedule(id) {
  const el = document.getElementById(id);
  if (!el) return;
  const r = region(el);
  if (r.timer) return;
  const gap = Math.max(400, 8 * r.took);
  const wait = Math.max(0, r.last + gap - performance.now());
  r.timer = setTimeout(() => {
    r.timer = null;
    load(id);
  }, wait);
}

function regionIds() {
  return view === "job" ? ["job-body"] : ["overview-body", "jobs-body"];
}

function refreshAll() {
  for (const id of regionIds()) schedule(id);
  if (view !== "job") loadFleet();
}

// --- live ----------------------------------------------------------------

let stream = null;
let pollTimer = null;

function setLive(text) {
  const el = $("#live");
  if (el) el.textContent = text;
}

// The rows on screen that changed, fetched alone and swapped in place.
async function patchRows(keys) {
  const body = $("#jobs-body");
  const shown = keys.filter((k) => body.querySelector(`tr[data-key="${CSS.escape(k)}"]`));
  if (!shown.length) return;
  try {
    const resp = await fetch(`/ui/rows?keys=${enc(JSON.stringify(shown))}`, { credentials: "same-origin" });
    if (!resp.ok) return;
    const t = document.createElement("template");
    t.innerHTML = await resp.text();
    for (const tr of t.content.querySelectorAll("tr[data-key]")) {
      const old = body.querySelector(`tr[data-key="${CSS.escape(tr.dataset.key)}"]`);
      if (!old) continue;
      const focused = old.contains(document.activeElement) ? focusKey(document.activeElement) : null;
      old.replaceWith(tr);
      refocus(tr, focused);
    }
  } catch (_) {}
}

function onChange(keys) {
  if (view === "job") {
    if (!keys || keys.includes(jobKey)) schedule("job-body");
    return;
  }
  if (keys && keys.length) patchRows(keys);
  schedule("overview-body");
  // The whole table too (order, membership, the total), less often.
  schedule("jobs-body");
}

function connect() {
  if (stream) stream.close();
  stream = new EventSource("/v1/events");
  stream.addEventListener("open", () => {
    setLive("● live");
    stopPolling();
    refreshAll();
  });
  stream.addEventListener("jobs", (e) => {
    let keys = null;
    try {
      keys = JSON.parse(e.data).keys;
    } catch (_) {}
    onChange(keys);
  });
  stream.addEventListener("resync", () => onChange(null));
  stream.addEventListener("error", () => {
    setLive("○ stream down: polling every 5 s");
    startPolling();
  });
}

function startPolling() {
  if (pollTimer) return;
  pollTimer = setInterval(async () => {
    refreshAll();
    // A stream the browser gave up on (the daemon restarted, or refused
    // it) is opened anew once the daemon answers again.
    if (!stream || stream.readyState === EventSource.CLOSED) {
      try {
        const r = await fetch("/healthz", { credentials: "same-origin" });
        if (r.ok) connect();
      } catch (_) {}
    }
  }, POLL_MS);
}

function stopPolling() {
  if (pollTimer) clearInterval(pollTimer);
  pollTimer = null;
}

// Cool-down countdowns tick on the page, from the figure of the fetch.
let countdownTimer = null;

function startCountdowns(root) {
  const els = [...root.querySelectorAll("[data-countdown-ms]")];
  if (countdownTimer) clearInterval(countdownTimer);
  countdownTimer = null;
  if (!els.length) return;
  const t0 = performance.now();
  countdownTimer = setInterval(() => {
    let running = false;
    for (const el of els) {
      const left = Math.max(0, Number(el.dataset.countdownMs) - (performance.now() - t0));
      el.textContent = (left / 1000).toFixed(1);
      if (left > 0) running = true;
    }
    if (!running) {
      clearInterval(countdownTimer);
      countdownTimer = null;
      schedule("overview-body");
    }
  }, 250);
}

// --- the fleet ----------------------------------------------------------

async function loadFleet() {
  const section = $("#fleet");
  if (!section) return;
  try {
    const r = await fetch("/v1/daemons", { credentials: "same-origin" });
    if (!r.ok) {
      section.hidden = true;
      return;
    }
    const list = await r.json();
    const ul = $("#fleet-list");
    ul.replaceChildren(
      ...list.map((d) => {
        const li = document.createElement("li");
        const secs = Math.round(d.expires_in_ms / 1000);
        li.textContent = `${d.this ? "● this daemon: " : "○ "}${d.owner} (epoch ${d.epoch}), lease good for ${secs} s`;
        return li;
      }),
    );
    section.hidden = list.length === 0;
  } catch (_) {
    section.hidden = true;
  }
}

// --- the token -----------------------------------------------------------

function showLogin() {
  const login = $("#login");
  if (!login || !login.hidden) return;
  for (const s of document.querySelectorAll("main > section, main > p")) s.hidden = s !== login;
  login.hidden = false;
  if (stream) stream.close();
  stream = null;
  stopPolling();
  setLive("token needed");
  $("#token").focus();
}

function hideLogin() {
  for (const s of document.querySelectorAll("main > section, main > p")) s.hidden = s.id === "login";
  $("#login").hidden = true;
  if (view !== "job") $("#fleet").hidden = true;
}

async function signIn(e) {
  e.preventDefault();
  const token = $("#token").value;
  try {
    await api("POST", "/v1/session", { token });
    $("#token").value = "";
    say("", $("#login-msg"));
    hideLogin();
    start();
  } catch (err) {
    say(err.status === 401 ? "That is not the daemon's token." : err.message, $("#login-msg"));
    $("#token").focus();
  }
}

// --- actions -------------------------------------------------------------


function applyFilter(form) {
  const p = new URLSearchParams();
  for (const [k, v] of new FormData(form)) {
    const t = String(v).trim();
    if (t && !(k === "sort" && t === "seq") && !(k === "dir" && t === "asc")) p.set(k, t);
  }
  history.replaceState(null, "", `/?${p}#jobs`);
  load("jobs-body");
}

function page(offset) {
  const p = new URLSearchParams(location.search);
  if (Number(offset) > 0) p.set("offset", offset);
  else p.delete("offset");
  history.replaceState(null, "", `/?${p}#jobs`);
  load("jobs-body");
}

// --- wiring --------------------------------------------------------------

document.addEventListener("click", (e) => {
  const b = e.target.closest("button");
  if (!b || b.disabled) return;
  if (b.dataset.act) jobAction(b.dataset.act, b.dataset.key);
  else if (b.dataset.providerAct) providerAction(b.dataset.providerAct, b.dataset.provider);
  else if (b.dataset.bulk) bulk(b.dataset.bulk);
  else if (b.dataset.offset !== undefined) page(b.dataset.offset);
});

document.addEventListener("submit", (e) => {
  const f = e.target;
  if (f.id === "filter-form") {
    e.preventDefault();
    applyFilter(f);
  } else if (f.id === "adopt-form") {
    e.preventDefault();
    adopt(f);
  } else if (f.id === "login-form") {
    signIn(e);
  } else if (f.id === "upload") {
    e.preventDefault();
  }
});

// "/" jumps to the search box, as on many sites.
document.addEventListener("keydown", (e) => {
  if (e.key === "/" && !/INPUT|SELECT|TEXTAREA/.test(document.activeElement.tagName)) {
    const q = $("#f-q");
    if (q) {
      e.preventDefault();
      q.focus();
    }
  }
});

function start() {
  if (view !== "job") load("filters");
  refreshAll();
  connect();
}

hooks.showLogin = showLogin;
refresh.all = refreshAll;
refresh.one = schedule;
wireUpload(refreshAll);
start();
