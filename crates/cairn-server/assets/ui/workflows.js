// The workflows list: a visibility query (typed, or built from quick filters), counts by
// status from the maintained counters, saved views, columns, cursor paging, live updates.

import {api, badge, confirmWithReason, duration, esc, notify, quoted, STATUS_NAMES, timeTag, workflowLink} from "./util.js";

const PAGE = 50;
const LIVE_WAIT_MS = 25_000;

const COLUMNS = {
  workflow_id: ["Workflow ID", (w) => `<a href="${workflowLink(w.workflow_id)}">${esc(w.workflow_id)}</a>`],
  workflow_type: ["Type", (w) => esc(w.workflow_type)],
  status: ["Status", (w) => badge(w.status)],
  started: ["Start", (w) => timeTag(w.started_unix_ms)],
  closed: ["End", (w) => timeTag(w.closed_unix_ms)],
  duration: ["Duration", (w) => (w.closed_unix_ms ? duration(w.closed_unix_ms - w.started_unix_ms) : "")],
  run_id: ["Run ID", (w) => `<a href="${workflowLink(w.workflow_id, w.run_id)}" class="mono">${esc(w.run_id)}</a>`],
  history_length: ["History", (w) => esc(w.history_length)],
  parent: ["Parent", (w) => (w.parent_workflow_id ? `<a href="${workflowLink(w.parent_workflow_id)}">${esc(w.parent_workflow_id)}</a>` : "")],
  search_attributes: ["Search attributes", (w) => Object.entries(w.search_attributes || {})
    .map(([k, v]) => `<span class="tag">${esc(k)}=${esc(JSON.stringify(v.value))}</span>`).join(" ")],
};
const DEFAULT_COLUMNS = ["workflow_id", "workflow_type", "status", "started", "closed", "duration"];

const stored = (key, fallback) => { try { return JSON.parse(localStorage.getItem(key)) ?? fallback; } catch { return fallback; } };
const columns = () => stored("cairn-columns", DEFAULT_COLUMNS).filter((c) => COLUMNS[c]);
const views = () => stored("cairn-views", []);
/** Workflow ids ticked on the list, kept while the list refreshes. */
const selected = new Set();

/** The quick filters as a query-language expression. */
function quickQuery(form) {
  const parts = [];
  const type = form.type.value.trim(), status = form.status.value, prefix = form.prefix.value.trim();
  const after = form.after.value, before = form.before.value;
  if (type) parts.push(`WorkflowType = ${quoted(type)}`);
  if (status) parts.push(`ExecutionStatus = ${quoted(STATUS_NAMES[status])}`);
  if (prefix) parts.push(`WorkflowId STARTS_WITH ${quoted(prefix)}`);
  // datetime-local has no zone: it is the browser's, as the browser reads it.
  if (after) parts.push(`StartTime >= ${quoted(new Date(after).toISOString())}`);
  if (before) parts.push(`StartTime <= ${quoted(new Date(before).toISOString())}`);
  return parts.join(" AND ");
}

function listLink(params, changes) {
  const p = new URLSearchParams(params);
  for (const [k, v] of Object.entries(changes)) { if (v) p.set(k, v); else p.delete(k); }
  const text = p.toString();
  return "#/workflows" + (text ? "?" + text : "");
}

export async function render(app, params, signal) {
  const query = params.get("q") || "";
  const pageToken = params.get("page") || "";
  // Tokens of the pages before this one, so "previous" needs no server state.
  const trail = (params.get("trail") || "").split(".").filter((t) => t !== "");
  const [page, counts] = await Promise.all([
    api("GET", "/api/v1/visibility/workflows?" + new URLSearchParams({query, page_size: PAGE, ...(pageToken ? {page_token: pageToken} : {})}), undefined, {signal}),
    api("GET", "/api/v1/visibility/counts", undefined, {signal}),
  ]);
  const matched = query ? (await api("GET", "/api/v1/visibility/count?" + new URLSearchParams({query}), undefined, {signal})).count : counts.total;
  const shown = columns();
  const previous = trail.length
    ? listLink(params, {page: trail[trail.length - 1] === "-" ? "" : trail[trail.length - 1], trail: trail.slice(0, -1).join(".")}) : "";
  const next = page.next_page_token ? listLink(params, {page: page.next_page_token, trail: [...trail, pageToken || "-"].join(".")}) : "";
  const saved = views();
  app.innerHTML = `
    <h1>Workflows <span class="muted" id="matched">${matched} ${query ? "matching" : "in all"}</span></h1>
    <nav class="chips" aria-label="Counts by status">
      <a href="${listLink({}, {})}" class="chip ${query ? "" : "active"}">All <b>${counts.total}</b></a>
      ${Object.entries(STATUS_NAMES).map(([status, name]) => {
        const q = `ExecutionStatus = ${quoted(name)}`;
        return `<a href="${listLink({}, {q})}" class="chip ${query === q ? "active" : ""}" data-status="${status}">${esc(name)} <b>${counts.by_status[status] ?? 0}</b></a>`;
      }).join("")}
    </nav>
    <form id="query" class="panel query" role="search">
      <label for="q">Query</label>
      <input id="q" name="q" data-search value="${esc(query)}" placeholder="WorkflowType = 'approval' AND ExecutionStatus = 'Running'" spellcheck="false" autocomplete="off">
      <button>Search</button>
      <details class="quick"><summary>Quick filters</summary>
        <div class="quick-grid">
          <label>Type <input name="type" size="14"></label>
          <label>Status <select name="status"><option value="">any</option>${Object.entries(STATUS_NAMES).map(([s, n]) => `<option value="${s}">${n}</option>`).join("")}</select></label>
          <label>ID starts with <input name="prefix" size="14"></label>
          <label>Started after <input name="after" type="datetime-local"></label>
          <label>Started before <input name="before" type="datetime-local"></label>
          <button type="button" id="apply-quick">Use these filters</button>
        </div>
      </details>
    </form>
    <div class="toolbar">
      <label>Saved views <select id="views"><option value="">—</option>${saved.map((v, i) => `<option value="${i}">${esc(v.name)}</option>`).join("")}</select></label>
      <button type="button" id="save-view">Save this view</button>
      <button type="button" id="delete-view" ${saved.length ? "" : "disabled"}>Delete view</button>
      <details class="columns"><summary>Columns</summary>
        ${Object.entries(COLUMNS).map(([key, [label]]) => `<label><input type="checkbox" name="${key}" ${shown.includes(key) ? "checked" : ""}> ${esc(label)}</label>`).join("")}
      </details>
      <span id="live" class="muted" aria-live="polite"></span>
    </div>
    <div class="toolbar batch" role="group" aria-label="Batch operations">
      <span id="selected-count">${selected.size} selected</span>
      <button type="button" data-batch="cancel" data-scope="selected">Cancel selected</button>
      <button type="button" data-batch="terminate" data-scope="selected" class="danger">Terminate selected</button>
      <button type="button" data-batch="cancel" data-scope="all">Cancel all ${matched} matching…</button>
      <button type="button" data-batch="terminate" data-scope="all" class="danger">Terminate all ${matched} matching…</button>
    </div>
    <div id="batches"></div>
    <table class="list"><thead><tr><th scope="col"><input type="checkbox" id="select-page" aria-label="Select every workflow on this page"></th>
      ${shown.map((c) => `<th scope="col">${esc(COLUMNS[c][0])}</th>`).join("")}</tr></thead>
      <tbody>${page.workflows.map((w) => `<tr><td><input type="checkbox" class="pick" value="${esc(w.workflow_id)}" aria-label="Select ${esc(w.workflow_id)}" ${selected.has(w.workflow_id) ? "checked" : ""}></td>
        ${shown.map((c) => `<td>${COLUMNS[c][1](w)}</td>`).join("")}</tr>`).join("")
        || `<tr><td colspan="${shown.length + 1}">${page.next_page_token ? "None on this stretch; see the next page." : "No workflows."}</td></tr>`}</tbody></table>
    <nav class="pager" aria-label="Pages">
      ${previous ? `<a href="${previous}" rel="prev">← Previous</a>` : ""}
      <span>Page ${trail.length + 1}</span>
      ${next ? `<a href="${next}" rel="next">Next →</a>` : ""}
    </nav>`;

  const form = document.getElementById("query");
  form.onsubmit = (e) => { e.preventDefault(); location.hash = listLink({}, {q: form.q.value.trim()}); };
  document.getElementById("apply-quick").onclick = () => { location.hash = listLink({}, {q: quickQuery(form)}); };
  const picker = document.getElementById("views");
  picker.onchange = () => { const v = saved[Number(picker.value)]; if (v) location.hash = listLink({}, {q: v.query}); };
  document.getElementById("save-view").onclick = () => {
    const name = prompt("Name this view:", query || "All workflows");
    if (!name) return;
    localStorage.setItem("cairn-views", JSON.stringify([...saved.filter((v) => v.name !== name), {name, query}]));
    render(app, params, signal);
  };
  document.getElementById("delete-view").onclick = () => {
    const chosen = saved[Number(picker.value)];
    if (!chosen) { picker.focus(); return; }
    localStorage.setItem("cairn-views", JSON.stringify(saved.filter((v) => v !== chosen)));
    render(app, params, signal);
  };
  for (const box of app.querySelectorAll(".columns input")) {
    box.onchange = () => {
      const chosen = [...app.querySelectorAll(".columns input:checked")].map((b) => b.name);
      localStorage.setItem("cairn-columns", JSON.stringify(chosen.length ? chosen : DEFAULT_COLUMNS));
      render(app, params, signal);
    };
  }
  shownAt = Date.now();
  wireBatches(app, query, matched, signal);
  watch(app, params, signal, counts.version);
}

/** Selection, and batch cancel/terminate of the selection or of everything the query matches. */
function wireBatches(app, query, matched, signal) {
  const count = () => { document.getElementById("selected-count").textContent = `${selected.size} selected`;
    for (const b of app.querySelectorAll("[data-scope=selected]")) b.disabled = selected.size === 0; };
  for (const box of app.querySelectorAll("input.pick")) {
    box.onchange = () => { if (box.checked) selected.add(box.value); else selected.delete(box.value); count(); };
  }
  document.getElementById("select-page").onchange = (e) => {
    for (const box of app.querySelectorAll("input.pick")) { box.checked = e.target.checked; box.onchange(); }
  };
  count();
  for (const button of app.querySelectorAll("[data-batch]")) {
    button.onclick = async () => {
      const operation = button.dataset.batch, all = button.dataset.scope === "all";
      const ids = [...selected];
      const what = all ? `all ${matched} workflow(s) matching ${query ? `“${query}”` : "(every workflow)"}` : `${ids.length} selected workflow(s)`;
      const verb = operation === "cancel" ? "Cancel" : "Terminate";
      const reason = await confirmWithReason(`${verb} ${what}?`,
        `A batch operation on the server ${operation === "cancel" ? "asks each running one to cancel" : "ends each running one at once"}; closed ones are skipped. It goes on if you leave this page.`,
        `${verb} them`);
      if (reason === null) return;
      const batchQuery = all ? query : `WorkflowId IN (${ids.map(quoted).join(", ")})`;
      try {
        const batch = await api("POST", "/api/v1/batches", {operation, query: batchQuery, reason});
        if (!all) selected.clear();
        notify(`Batch ${batch.batch_id} started.`);
        follow(batch.batch_id, signal);
      } catch (err) { notify(err.message, true); }
    };
  }
  const running = sessionStorage.getItem("cairn-batch");
  if (running) follow(running, signal);
}

/** Shows a batch's progress until it finishes (polls its record: it is small). */
let following = null;
/** When the list on screen was read (a batch that finished later redraws it). */
let shownAt = 0;
async function follow(batchId, signal) {
  if (following === batchId) return;
  following = batchId;
  try { await followLoop(batchId, signal); } finally { if (following === batchId) following = null; }
}

async function followLoop(batchId, signal) {
  sessionStorage.setItem("cairn-batch", batchId);
  while (!signal.aborted) {
    let b;
    try { b = await api("GET", "/api/v1/batches/" + encodeURIComponent(batchId), undefined, {signal}); } catch { return; }
    const place = document.getElementById("batches");
    if (!place) return;
    place.innerHTML = `<p class="panel" role="status" id="batch-progress">Batch ${esc(b.operation)} <span class="mono">${esc(b.batch_id)}</span>:
      <b>${esc(b.state)}</b> — ${b.visited} visited, ${b.applied} ${b.operation === "cancel" ? "asked to cancel" : "terminated"}, ${b.skipped} already closed,
      ${b.failed} failed${b.last_error ? ` (last: ${esc(b.last_error)})` : ""}${b.error ? ` — ${esc(b.error)}` : ""}</p>`;
    if (b.state !== "running") {
      sessionStorage.removeItem("cairn-batch");
      // What the batch did shows in the list and its counts: draw the view again.
      if (b.updated_unix_ms > shownAt) window.dispatchEvent(new HashChangeEvent("hashchange"));
      return;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * Live: waits on the counters (a long poll that answers when any workflow record is written,
 * a count moved or not), then reloads the first page in place, or on later pages says that the
 * list changed.
 */
async function watch(app, params, signal, version) {
  const live = document.getElementById("live");
  live.textContent = "Live";
  while (!signal.aborted) {
    let counts;
    try {
      counts = await api("GET", "/api/v1/visibility/counts?" + new URLSearchParams({wait_ms: LIVE_WAIT_MS, known: version}), undefined, {signal});
    } catch {
      if (signal.aborted) return;
      live.textContent = "Live updates paused (the node did not answer); retrying…";
      await new Promise((r) => setTimeout(r, 5000));
      continue;
    }
    if (counts.version === version) continue;
    if (params.get("page")) {
      live.innerHTML = `The list changed. <a href="${listLink(params, {page: "", trail: ""})}">Show the newest</a>`;
      version = counts.version;
      continue;
    }
    // Only the page in view is read again (never the whole list), and not while the user is
    // typing in the form.
    if (document.activeElement && document.activeElement.closest("#query, .toolbar:not(.batch)")) { version = counts.version; continue; }
    return render(app, params, signal);
  }
}
