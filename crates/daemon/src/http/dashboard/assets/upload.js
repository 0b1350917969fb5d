// A batch file dropped on the page or chosen with the file input: sent as
// its bytes (base64, so that a bad byte keeps its line and column), and the
// daemon's answer shown: how many jobs were queued, or every problem by line.

import { $, api, AuthNeeded } from "./api.js";

function base64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

async function upload(file, onQueued) {
  const out = $("#upload-result");
  out.replaceChildren();
  const head = document.createElement("p");
  out.append(head);
  head.textContent = `Checking ${file.name}…`;
  try {
    const bytes = new Uint8Array(await file.arrayBuffer());
    const a = await api("POST", "/v1/batches", { name: file.name, base64: base64(bytes) });
    head.textContent = `${file.name}: ${a.accepted} job(s) queued, ${a.already_known} already known.`;
    onQueued();
  } catch (e) {
    if (e instanceof AuthNeeded) return;
    if (e.code !== "invalid_batch") {
      head.textContent = `${file.name}: ${e.message}`;
      return;
    }
    const problems = e.body.error.problems || [];
    head.textContent = `${file.name} was not queued (nothing of it was): ${problems.length} problem(s).`;
    head.setAttribute("role", "alert");
    const ul = document.createElement("ul");
    ul.className = "problems";
    for (const p of problems) {
      const li = document.createElement("li");
      const at = p.line ? `line ${p.line}${p.column ? `, column ${p.column}` : ""}` : "file";
      li.textContent = `${at}: ${p.key ? `job "${p.key}": ` : ""}${p.message}`;
      ul.append(li);
    }
    out.append(ul);
  }
}

export function wireUpload(onQueued) {
  const drop = $("#drop");
  const input = $("#batch-file");
  if (!drop) return;
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const f = e.dataTransfer.files[0];
    if (f) upload(f, onQueued);
  });
  input.addEventListener("change", () => {
    if (input.files[0]) upload(input.files[0], onQueued);
    input.value = "";
  });
}
