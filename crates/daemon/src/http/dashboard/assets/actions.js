// What the page's buttons do: one job's cancel and retry, a provider's
// pause and resume, an uncertain job's adoption, and the bulk actions over
// every job the filter matches, confirmed with the count the daemon gives.

import { $, api, AuthNeeded, enc, say } from "./api.js";

// Fetches again what an action changed (set by app.js).
export const refresh = { all: () => {}, one: (_id) => {} };
const refreshAll = () => refresh.all();
const schedule = (id) => refresh.one(id);

function currentFilter() {
  const p = new URLSearchParams(location.search);
  const f = {};
  for (const k of ["state", "provider", "q"]) {
    const v = (p.get(k) || "").trim();
    if (v) f[k] = v;
  }
  return f;
}

function describe(f) {
  const parts = [];
  if (f.state) parts.push(`state ${f.state}`);
  if (f.provider) parts.push(`provider ${f.provider}`);
  if (f.q) parts.push(`key or id containing "${f.q}"`);
  return parts.length ? parts.join(", ") : "no filter: every job";
}

function confirmBox(text) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    $("#confirm-ok").focus();
  });
}

export async function bulk(action) {
  const f = currentFilter();
  const verb = action === "cancel" ? "Cancel" : "Retry";
  try {
    let { count } = await api("GET", `/v1/bulk/${action}?${new URLSearchParams(f)}`);
    for (let tries = 0; tries < 3; tries++) {
      if (count === 0) {
        say(`No job matching (${describe(f)}) can be ${action === "cancel" ? "cancelled" : "retried"}.`);
        return;
      }
      const ok = await confirmBox(
        `${verb} ${count} job${count === 1 ? "" : "s"}? This applies to every job matching the filter (${describe(f)}), not only the rows shown.`,
      );
      if (!ok) {
        say("Nothing was changed.");
        return;
      }
      try {
        say(`${verb}ing ${count} job${count === 1 ? "" : "s"}…`);
        const a = await api("POST", `/v1/bulk/${action}`, { ...f, count });
        let text = `${verb}: ${a.done} of ${a.matched} done.`;
        if (a.failed_total) {
          text += ` ${a.failed_total} could not be changed: ` + a.failed.map((x) => `${x.key} (${x.message})`).join("; ");
        }
        say(text);
        refreshAll();
        return;
      } catch (e) {
        if (e.code !== "count_changed") throw e;
        // The matching jobs changed since the count was shown: ask again
        // with the new count rather than act on a number not agreed to.
        ({ count } = await api("GET", `/v1/bulk/${action}?${new URLSearchParams(f)}`));
        say(`The filter now matches ${count} job(s): nothing was done yet.`);
      }
    }
  } catch (e) {
    if (!(e instanceof AuthNeeded)) say(`${verb} failed: ${e.message}`);
  }
}

export async function jobAction(act, key) {
  const url = act === "cancel" ? `/v1/jobs/${enc(key)}` : `/v1/jobs/${enc(key)}/retry`;
  try {
    const j = await api(act === "cancel" ? "DELETE" : "POST", url, act === "cancel" ? undefined : {});
    say(`${key}: now ${j.state}.`);
  } catch (e) {
    if (!(e instanceof AuthNeeded)) say(`${key}: ${e.message}`);
  }
  refreshAll();
}

export async function providerAction(act, name) {
  try {
    await api("POST", `/v1/providers/${enc(name)}/${act}`, {});
    say(`${name}: ${act === "pause" ? "paused" : "resumed"}.`);
  } catch (e) {
    if (e instanceof AuthNeeded) return;
    say(e.status === 404 || e.status === 405 ? `${name}: this daemon cannot ${act} providers yet.` : `${name}: ${e.message}`);
  }
  schedule("overview-body");
}

export async function adopt(form) {
  const key = form.dataset.key;
  const id = form.elements.provider_job_id.value.trim();
  try {
    await api("POST", `/v1/jobs/${enc(key)}/adopt`, { provider_job_id: id });
    say(`${key}: adopted ${id}.`);
  } catch (e) {
    if (e instanceof AuthNeeded) return;
    say(e.status === 404 && e.code !== "not_found" ? "This daemon cannot adopt jobs yet." : `${key}: ${e.message}`);
  }
  schedule("job-body");
}
