// What every view shares: the API client and its token, formatting, and small widgets.

const TOKEN_KEY = "cairn-token";

export const token = {
  get: () => localStorage.getItem(TOKEN_KEY) || "",
  set: (value) => (value ? localStorage.setItem(TOKEN_KEY, value) : localStorage.removeItem(TOKEN_KEY)),
};

/** An API answer that was not a success: its HTTP status, and the API's error code if any. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(code ? `${message} (${code})` : message);
    this.status = status;
    this.code = code;
  }
}

/** Calls the API: JSON in and out, the token as a bearer; throws ApiError on failure. */
export async function api(method, path, body, {signal} = {}) {
  const headers = {accept: "application/json"};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token.get()) headers.authorization = "Bearer " + token.get();
  const response = await fetch(path, {method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body)});
  const text = await response.text();
  let value = text;
  try { value = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
  if (!response.ok) {
    const message = value && value.message ? value.message : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, value && value.code, message);
  }
  return value;
}

export const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

/** The UI's time zone: the browser's own, or UTC if the user chose it (kept in the browser). */
export const zone = {
  get: () => localStorage.getItem("cairn-zone") || "local",
  set: (z) => localStorage.setItem("cairn-zone", z),
  name: () => (zone.get() === "UTC" ? "UTC" : Intl.DateTimeFormat().resolvedOptions().timeZone),
};

/** A time with its zone ("2026-12-07 17:20:31.204 UTC"); empty for none. */
export function time(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const options = {year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    fractionalSecondDigits: 3, hour12: false, timeZoneName: "short"};
  if (zone.get() === "UTC") options.timeZone = "UTC";
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-CA", options).formatToParts(d).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second}.${parts.fractionalSecond} ${parts.timeZoneName}`;
}

/** `<time>` with the machine-readable instant and the shown one. */
export const timeTag = (ms) => (ms ? `<time datetime="${new Date(ms).toISOString()}">${esc(time(ms))}</time>` : "");

/** A duration in the largest sensible units ("1 h 3 min", "2.4 s", "87 ms"). */
export function duration(ms) {
  if (ms === null || ms === undefined || ms < 0) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000), d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return [d && `${d} d`, h && `${h} h`, m && `${m} min`, !d && !h && `${s % 60} s`].filter(Boolean).join(" ");
}

export const STATUS_NAMES = {running: "Running", completed: "Completed", failed: "Failed", canceled: "Canceled",
  terminated: "Terminated", timed_out: "TimedOut", continued_as_new: "ContinuedAsNew"};

export const badge = (status) => `<span class="status ${esc(status)}">${esc(STATUS_NAMES[status] || status)}</span>`;

/** A JSON value, pretty-printed in a code block. */
export const code = (value) => `<pre class="json">${esc(JSON.stringify(value, null, 2))}</pre>`;

/** A query-language string literal. */
export const quoted = (v) => "'" + String(v).replaceAll("'", "''") + "'";

export const workflowLink = (id, runId) =>
  `#/workflows/${encodeURIComponent(id)}${runId ? "?run=" + encodeURIComponent(runId) : ""}`;

/** A failure and its causes, outermost first. */
export function failureChain(failure) {
  if (!failure) return "";
  const items = [];
  for (let f = failure, depth = 0; f && depth < 20; f = f.cause, depth++) {
    items.push(`<li><b>${esc(f.error_type)}</b>: ${esc(f.message)}${f.non_retryable ? " <span class=\"tag\">non-retryable</span>" : ""}
      ${f.details !== undefined && f.details !== null ? code(f.details) : ""}</li>`);
  }
  return `<ol class="failure">${items.join("")}</ol>`;
}

/**
 * Asks to confirm `action` with a required reason in a modal dialog; resolves to the reason,
 * or null if dismissed.
 */
export function confirmWithReason(title, explanation, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = document.createElement("dialog");
    dialog.setAttribute("aria-labelledby", "dialog-title");
    dialog.innerHTML = `<form method="dialog">
      <h2 id="dialog-title">${esc(title)}</h2><p>${esc(explanation)}</p>
      <label>Reason <input name="reason" required autocomplete="off" size="40"></label>
      <menu><button value="cancel" type="button" class="secondary" id="dialog-dismiss">Keep it running</button>
        <button value="confirm" class="danger" id="dialog-confirm">${esc(confirmLabel)}</button></menu></form>`;
    document.body.appendChild(dialog);
    const form = dialog.querySelector("form");
    const done = (value) => { dialog.close(); dialog.remove(); resolve(value); };
    dialog.querySelector("#dialog-dismiss").onclick = () => done(null);
    dialog.addEventListener("cancel", (e) => { e.preventDefault(); done(null); });
    form.onsubmit = (e) => { e.preventDefault(); done(form.reason.value.trim()); };
    dialog.showModal();
    form.reason.focus();
  });
}

/** Says `text` in the page's live region (screen readers hear it too). */
export function notify(text, bad) {
  const region = document.getElementById("notice");
  region.textContent = text;
  region.className = bad ? "notice error" : "notice";
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => { region.textContent = ""; region.className = "notice"; }, 6000);
}

/** Parses `text` as JSON, or throws an Error naming the field. */
export function parseJson(field, text) {
  try { return JSON.parse(text); } catch (e) { throw new Error(`${field} is not valid JSON: ${e.message}`); }
}

/** Triggers a download of `text` as `name`. */
export function download(name, text, type = "application/json") {
  const url = URL.createObjectURL(new Blob([text], {type}));
  const a = Object.assign(document.createElement("a"), {href: url, download: name});
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
