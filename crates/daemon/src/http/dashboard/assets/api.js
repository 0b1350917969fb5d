// The page's calls to the daemon, as JSON, and where it says what happened.

export const $ = (sel, el = document) => el.querySelector(sel);
export const enc = encodeURIComponent;

export class AuthNeeded extends Error {}

// What to do when the daemon asks for its token (set by app.js).
export const hooks = { showLogin: () => {} };

export async function api(method, url, body) {
  const opt = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    opt.headers["Content-Type"] = "application/json";
    opt.body = JSON.stringify(body);
  }
  const r = await fetch(url, opt);
  if (r.status === 401 && url !== "/v1/session") {
    hooks.showLogin();
    throw new AuthNeeded("token needed");
  }
  const type = r.headers.get("content-type") || "";
  const data = type.startsWith("application/json") ? await r.json() : null;
  if (!r.ok) {
    const e = new Error((data && data.error && data.error.message) || `${r.status} ${r.statusText}`);
    e.status = r.status;
    e.code = data && data.error && data.error.code;
    e.body = data;
    throw e;
  }
  return data;
}

export function say(text, el = $("#action-msg")) {
  if (el) el.textContent = text;
}
