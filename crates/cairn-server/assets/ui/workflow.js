// One workflow run: summary, pending work, relationships, history (compact, full, JSON; paged
// and live), a timeline, and the calls a user makes on a run.

import {api, badge, code, confirmWithReason, download, duration, esc, failureChain, notify, parseJson,
  timeTag, workflowLink} from "./util.js";

const EVENTS_PAGE = 200;
const LIVE_WAIT_MS = 25_000;
/** Most lanes the timeline draws at once; the rest are a click away ("Earlier lanes"). */
const TIMELINE_LANES_MAX = 200;
/** Most events the timeline reads when asked to draw the whole run (pages of 1,000). */
const TIMELINE_EVENTS_MAX = 10_000;
/** The narrowest window the timeline zooms to. */
const TIMELINE_WINDOW_MIN_MS = 10;

export async function render(app, id, params, signal) {
  const runParam = params.get("run") || "";
  const base = "/api/v1/workflows/" + encodeURIComponent(id);
  const described = await api("GET", base + (runParam ? "?" + new URLSearchParams({run_id: runParam}) : ""), undefined, {signal});
  const run = described.run_id;
  const tab = params.get("view") || "compact";
  const open = described.status === "running";
  const reload = () => render(app, id, params, signal);
  app.innerHTML = `
    <nav class="crumbs" aria-label="Breadcrumb"><a href="#/">Workflows</a> › ${esc(id)}</nav>
    <h1>${esc(id)} ${badge(described.status)}</h1>
    ${described.current ? "" : `<p class="notice-inline">An earlier run of this workflow id. <a href="${workflowLink(id)}">Go to the current run</a></p>`}
    <div class="actions" role="toolbar" aria-label="Run actions">
      <button id="cancel" ${open && described.current ? "" : "disabled"} title="${open ? "Ask the workflow to cancel" : "The run has closed"}">Cancel</button>
      <button id="terminate" class="danger" ${open && described.current ? "" : "disabled"} title="${open ? "End the run now, without running its code" : "The run has closed"}">Terminate</button>
      <button id="reset" disabled title="Cairn does not reset runs yet">Reset</button>
    </div>
    <div class="grid2">
      <section class="panel" aria-labelledby="summary-h"><h2 id="summary-h">Summary</h2>${summary(described)}</section>
      <section class="panel" aria-labelledby="io-h"><h2 id="io-h">Input and ${open ? "progress" : "outcome"}</h2>
        <h3>Input</h3>${code(described.input)}${outcome(described)}</section>
    </div>
    ${pending(described)}
    <section class="panel" aria-labelledby="rel-h"><h2 id="rel-h">Relationships</h2><div id="relationships">${relationships(described, [])}</div></section>
    <section class="panel" aria-labelledby="calls-h"><h2 id="calls-h">Signal, query, update</h2>${callForms()}</section>
    <section class="panel" aria-labelledby="timeline-h"><h2 id="timeline-h">Timeline</h2>
      <div class="actions" role="toolbar" aria-label="Timeline zoom">
        <button type="button" data-zoom="in">Zoom in</button><button type="button" data-zoom="out">Zoom out</button>
        <button type="button" data-zoom="earlier">◀ Earlier</button><button type="button" data-zoom="later">Later ▶</button>
        <button type="button" data-zoom="all">Whole run</button>
        <button type="button" data-lanes="earlier">Earlier lanes</button><button type="button" data-lanes="later">Later lanes</button>
        <button type="button" id="timeline-load" hidden>Draw every event</button>
      </div>
      <div id="timeline"></div></section>
    <section class="panel" aria-labelledby="history-h">
      <h2 id="history-h">History <span class="muted" id="event-count"></span></h2>
      <div class="tabs"><div role="tablist" aria-label="History views">
        ${["compact", "full", "json"].map((t) => `<a role="tab" href="${workflowLink(id, runParam)}${runParam ? "&" : "?"}view=${t}" aria-selected="${t === tab}">${{compact: "Compact", full: "Full", json: "JSON"}[t]}</a>`).join("")}
        </div><button type="button" id="download">Download JSON</button>
      </div>
      <div id="history" role="tabpanel"></div>
      <p><button type="button" id="more" hidden>Load more events</button> <span id="history-live" class="muted" aria-live="polite"></span></p>
    </section>`;

  // History: a page at a time; while the run is open, a long poll waits for the next event.
  const events = [];
  let next = 1, closed = false;
  // The timeline draws the events loaded, or every event once asked (up to a bound), in a
  // window of time the user zooms and pans, a page of lanes at a time.
  const zoom = {from: null, to: null, lanesEnd: null, events: null, shown: null};
  const drawTimeline = () => {
    const loadButton = document.getElementById("timeline-load");
    const total = Math.max(described.history_length, events.length);
    loadButton.hidden = zoom.events !== null || events.length >= total;
    loadButton.textContent = `Draw every event (${Math.min(total, TIMELINE_EVENTS_MAX)} of ${total})`;
    document.getElementById("timeline").innerHTML = timeline(zoom.events || events, zoom);
    const [span, lanes] = [zoom.shown.span, zoom.shown.lanes];
    const set = (sel, enabled) => { document.querySelector(sel).disabled = !enabled; };
    set("[data-zoom=in]", span.to - span.from > TIMELINE_WINDOW_MIN_MS);
    set("[data-zoom=out]", zoom.from !== null);
    set("[data-zoom=earlier]", span.from > span.start);
    set("[data-zoom=later]", span.to < span.end);
    set("[data-zoom=all]", zoom.from !== null || zoom.lanesEnd !== null);
    set("[data-lanes=earlier]", lanes.first > 0);
    set("[data-lanes=later]", lanes.last < lanes.total);
  };
  const draw = () => {
    document.getElementById("history").innerHTML = historyView(tab, events);
    drawTimeline();
    document.getElementById("relationships").innerHTML = relationships(described, events);
    document.getElementById("event-count").textContent = `${events.length} of ${Math.max(described.history_length, events.length)} events loaded`;
    for (const name of ["signal", "query", "update"]) fillNames(name, events);
  };
  const loadPage = async (waitMs) => {
    const page = await api("GET", `${base}/events?` + new URLSearchParams({run_id: run, from: next, page_size: EVENTS_PAGE, ...(waitMs ? {wait_ms: waitMs} : {})}), undefined, {signal});
    events.push(...page.events);
    next = page.next_event_id;
    closed = page.closed;
    return page;
  };
  const first = await loadPage(0);
  draw();
  loadDeclared(base, signal).then(() => { for (const name of ["signal", "query", "update"]) fillNames(name, events); });
  const more = document.getElementById("more");
  more.hidden = first.events.length < EVENTS_PAGE;
  more.onclick = async () => {
    more.disabled = true;
    const page = await loadPage(0);
    more.disabled = false;
    more.hidden = page.events.length < EVENTS_PAGE;
    draw();
  };
  document.querySelector("[aria-label='Timeline zoom']").onclick = async (event) => {
    const button = event.target.closest("button");
    if (!button || button.disabled || !zoom.shown) return;
    const {start, end, from, to} = zoom.shown.span;
    const width = to - from, middle = from + width / 2;
    const within = (a, b) => {
      const w = Math.min(Math.max(b - a, TIMELINE_WINDOW_MIN_MS), end - start);
      const lo = Math.min(Math.max(a, start), end - w);
      [zoom.from, zoom.to] = w >= end - start ? [null, null] : [lo, lo + w];
      zoom.lanesEnd = null;
    };
    switch (button.dataset.zoom || button.dataset.lanes && `lanes-${button.dataset.lanes}` || button.id) {
      case "in": within(middle - width / 4, middle + width / 4); break;
      case "out": within(middle - width, middle + width); break;
      case "earlier": within(from - width / 2, to - width / 2); break;
      case "later": within(from + width / 2, to + width / 2); break;
      case "all": [zoom.from, zoom.to, zoom.lanesEnd] = [null, null, null]; break;
      case "lanes-earlier": zoom.lanesEnd = Math.max(zoom.shown.lanes.first, TIMELINE_LANES_MAX); break;
      case "lanes-later": zoom.lanesEnd = Math.min(zoom.shown.lanes.last + TIMELINE_LANES_MAX, zoom.shown.lanes.total); break;
      case "timeline-load": {
        button.disabled = true;
        try {
          zoom.events = await readHistory(base, run, signal, TIMELINE_EVENTS_MAX);
        } catch (err) {
          if (!signal.aborted) notify(err.message, true);
          button.disabled = false;
          return;
        }
        break;
      }
      default: return;
    }
    drawTimeline();
  };
  document.getElementById("download").onclick = async () => {
    // The whole history, whatever is loaded on screen.
    const all = await readHistory(base, run, signal);
    download(`${id}-${run}-history.json`, JSON.stringify(all, null, 2));
  };

  document.getElementById("cancel").onclick = async () => {
    const reason = await confirmWithReason(`Cancel ${id}?`, "The workflow is asked to cancel; its code decides how to wind down.", "Request cancellation");
    if (reason === null) return;
    try { await api("POST", base + "/cancel", {reason}); notify("Cancellation requested."); reload(); } catch (err) { notify(err.message, true); }
  };
  document.getElementById("terminate").onclick = async () => {
    const reason = await confirmWithReason(`Terminate ${id}?`, "The run ends at once; none of its code runs again. This cannot be undone.", "Terminate");
    if (reason === null) return;
    try { await api("POST", base + "/terminate", {reason}); notify("Terminated."); reload(); } catch (err) { notify(err.message, true); }
  };
  wireCalls(base, described);

  // Live: follow the history while the run is open (only on the last page loaded).
  const live = document.getElementById("history-live");
  while (!closed && !signal.aborted && more.hidden) {
    live.textContent = "Live: new events appear as they are recorded.";
    let page;
    try {
      page = await loadPage(LIVE_WAIT_MS);
    } catch {
      if (signal.aborted) return;
      live.textContent = "Live updates paused (the node did not answer); retrying…";
      await new Promise((r) => setTimeout(r, 5000));
      continue;
    }
    if (page.events.length === 0) continue;
    if (page.closed) return reload();
    draw();
  }
  if (!closed) live.textContent = "";
}

function summary(d) {
  const end = d.closed_unix_ms;
  const rows = [
    ["Workflow type", esc(d.workflow_type)],
    ["Workflow ID", esc(d.workflow_id)],
    ["Run ID", `<span class="mono">${esc(d.run_id)}</span>`],
    ["Status", badge(d.status)],
    ["Start", timeTag(d.started_unix_ms)],
    ["End", end ? timeTag(end) : "—"],
    ["Duration", end ? duration(end - d.started_unix_ms) : `${duration(Date.now() - d.started_unix_ms)} so far`],
    ["Task queue", d.task_queue ? esc(d.task_queue) : "this node's registered code"],
    ["History", `${d.history_length} events`],
  ];
  const memo = Object.keys(d.memo || {}).length ? code(d.memo) : "none";
  const attributes = Object.entries(d.search_attributes || {});
  return `<dl class="facts">${rows.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("")}
    <dt>Memo</dt><dd>${memo}</dd>
    <dt>Search attributes</dt><dd>${attributes.length ? attributes.map(([k, v]) => `<span class="tag">${esc(k)} (${esc(v.type)}) = ${esc(JSON.stringify(v.value))}</span>`).join(" ") : "none"}</dd></dl>`;
}

function outcome(d) {
  const o = d.outcome;
  if (!o) return "";
  switch (o.status) {
    case "completed": return `<h3>Result</h3>${code(o.result)}`;
    case "failed": return `<h3>Failure</h3>${failureChain(o.failure)}`;
    case "terminated": return `<h3>Terminated</h3><p>Reason: ${esc(o.reason)}</p>`;
    case "continued_as_new": return `<h3>Continued as new</h3><p>Next run: <a href="${workflowLink(d.workflow_id, o.new_run_id)}" class="mono">${esc(o.new_run_id)}</a></p>`;
    case "timed_out": return "<h3>Timed out</h3><p>The run passed its execution or run timeout.</p>";
    default: return `<h3>${esc(o.status)}</h3>`;
  }
}

function pending(d) {
  const activities = d.pending_activities || [], children = d.pending_children || [];
  if (!activities.length && !children.length) return "";
  return `<section class="panel" aria-labelledby="pending-h"><h2 id="pending-h">Pending</h2>
    ${activities.length ? `<table><caption>Activities</caption><thead><tr><th scope="col">Activity</th><th scope="col">Type</th><th scope="col">Attempt</th><th scope="col">State</th>
      <th scope="col">Scheduled</th><th scope="col">Last failure</th><th scope="col">Last heartbeat</th></tr></thead><tbody>
      ${activities.map((a) => `<tr><td>${esc(a.activity_id)}</td><td>${esc(a.activity_type)}</td>
        <td>${a.attempt}${a.maximum_attempts ? " of " + a.maximum_attempts : " (no limit)"}</td>
        <td>${a.state === "backoff" ? `waiting to retry${a.next_attempt_unix_ms ? `: attempt ${a.attempt} at ${timeTag(a.next_attempt_unix_ms)}` : ""}` : "scheduled or running"}${a.task_queue ? ` <span class="muted">on ${esc(a.task_queue)}</span>` : ""}</td>
        <td>${timeTag(a.scheduled_unix_ms)}</td><td>${a.last_failure ? failureChain(a.last_failure) : "—"}</td>
        <td>${a.heartbeat_details !== null && a.heartbeat_details !== undefined ? code(a.heartbeat_details) : "—"}${a.last_heartbeat_unix_ms ? ` <span class="muted">at ${timeTag(a.last_heartbeat_unix_ms)}</span>` : ""}</td></tr>`).join("")}</tbody></table>` : ""}
    ${children.length ? `<table><caption>Child workflows</caption><thead><tr><th scope="col">Workflow ID</th><th scope="col">Type</th><th scope="col">Run</th><th scope="col">Parent close policy</th></tr></thead><tbody>
      ${children.map((c) => `<tr><td><a href="${workflowLink(c.workflow_id)}">${esc(c.workflow_id)}</a></td><td>${esc(c.workflow_type)}</td>
        <td>${c.run_id ? `<a class="mono" href="${workflowLink(c.workflow_id, c.run_id)}">${esc(c.run_id)}</a>` : "starting"}</td><td>${esc(c.parent_close_policy)}</td></tr>`).join("")}</tbody></table>` : ""}
  </section>`;
}

function relationships(d, events) {
  const items = [];
  if (d.parent) items.push(`Parent: <a href="${workflowLink(d.parent.workflow_id, d.parent.run_id)}">${esc(d.parent.workflow_id)}</a>`);
  if (d.scheduled_by) items.push(`Started by schedule <a href="#/schedules/${encodeURIComponent(d.scheduled_by)}">${esc(d.scheduled_by)}</a>`);
  if (d.previous_run_id) items.push(`Continues run <a class="mono" href="${workflowLink(d.workflow_id, d.previous_run_id)}">${esc(d.previous_run_id)}</a>`);
  const nextRun = d.next_run_id || (d.outcome?.status === "continued_as_new" ? d.outcome.new_run_id : null);
  if (nextRun) items.push(`Continued by run <a class="mono" href="${workflowLink(d.workflow_id, nextRun)}">${esc(nextRun)}</a>`);
  const children = new Map();
  for (const e of events) {
    if (e.event_type === "StartChildWorkflowExecutionInitiated" || e.event_type === "ChildWorkflowExecutionStarted") {
      children.set(e.details.workflow_id, e.details.run_id || children.get(e.details.workflow_id) || "");
    }
  }
  for (const [child, runId] of children) items.push(`Child: <a href="${workflowLink(child, runId)}">${esc(child)}</a>`);
  items.push(`Other runs of this id: <a href="#/workflows?q=${encodeURIComponent(`WorkflowId = '${d.workflow_id.replaceAll("'", "''")}'`)}">list them</a>`);
  return `<ul class="links">${items.map((i) => `<li>${i}</li>`).join("")}</ul>`;
}

/** A one-line summary of an event's details for the compact view. */
function gist(e) {
  const d = e.details || {};
  const bits = [];
  for (const key of ["activity_type", "activity_id", "attempt", "signal_name", "name", "timer_id", "workflow_id", "reason", "timeout"]) {
    if (d[key] !== undefined && d[key] !== null) bits.push(`${key.replace("_", " ")} ${typeof d[key] === "string" ? d[key] : JSON.stringify(d[key])}`);
  }
  if (d.failure) bits.push(`${d.failure.error_type}: ${d.failure.message}`);
  if (d.result !== undefined) bits.push("result " + JSON.stringify(d.result).slice(0, 80));
  return bits.join(" · ");
}

const eventClass = (type) => (/Failed|TimedOut|Terminated/.test(type) ? "bad" : /Completed|Fired/.test(type) ? "good" : "");

function historyView(tab, events) {
  if (tab === "json") return `<pre class="json history-json">${esc(JSON.stringify(events, null, 2))}</pre>`;
  if (tab === "full") {
    return `<table class="history"><thead><tr><th scope="col">ID</th><th scope="col">Time</th><th scope="col">Event</th><th scope="col">Details</th></tr></thead><tbody>
      ${events.map((e) => `<tr id="event-${e.event_id}"><td>${e.event_id}</td><td>${timeTag(e.time_unix_ms)}</td><td class="${eventClass(e.event_type)}">${esc(e.event_type)}</td>
        <td>${code(e.details)}</td></tr>`).join("")}</tbody></table>`;
  }
  return `<ol class="compact">${events.map((e) => `<li id="event-${e.event_id}"><span class="eid">${e.event_id}</span>
    <span class="etime">${timeTag(e.time_unix_ms)}</span> <b class="${eventClass(e.event_type)}">${esc(e.event_type)}</b> <span class="muted">${esc(gist(e))}</span></li>`).join("")}</ol>`;
}

/** Run `run`'s history from its first event, a page of 1,000 at a time, up to `max` events. */
async function readHistory(base, run, signal, max = Infinity) {
  const all = [];
  for (let from = 1; all.length < max;) {
    const pageSize = Math.min(1000, max - all.length);
    const page = await api("GET", `${base}/events?` + new URLSearchParams({run_id: run, from, page_size: pageSize}), undefined, {signal});
    all.push(...page.events);
    if (page.events.length < pageSize) break;
    from = page.next_event_id;
  }
  return all;
}

/**
 * Activities, timers and children as bars in time, one lane each: the lanes that overlap the
 * zoom's window (the whole run unless zoomed), a page of `TIMELINE_LANES_MAX` of them (the
 * newest unless paged), each bar cut to the window. Says what it drew in `zoom.shown`.
 */
function timeline(events, zoom) {
  if (!events.length) {
    zoom.shown = {span: {start: 0, end: 1, from: 0, to: 1}, lanes: {first: 0, last: 0, total: 0}};
    return "<p>No events yet.</p>";
  }
  const start = events[0].time_unix_ms, end = Math.max(events[events.length - 1].time_unix_ms, start + 1);
  const lanes = new Map();
  for (const e of events) {
    const d = e.details || {};
    const key = d.activity_id !== undefined ? `activity ${d.activity_id}` : d.timer_id !== undefined ? `timer ${d.timer_id}`
      : d.child_id !== undefined ? `child ${d.child_id}` : null;
    if (!key) continue;
    let lane = lanes.get(key);
    if (!lane) { lane = {label: key, what: d.activity_type || d.workflow_type || (d.duration_ms !== undefined ? duration(d.duration_ms) : ""), from: e.time_unix_ms, to: null, kind: key.split(" ")[0], bad: false}; lanes.set(key, lane); }
    if (d.activity_type) lane.what = d.activity_type;
    if (/Completed|Failed|TimedOut|Canceled|Fired|Terminated/.test(e.event_type) && !/Scheduled|Started/.test(e.event_type)) {
      lane.to = e.time_unix_ms;
      lane.bad = /Failed|TimedOut/.test(e.event_type);
    }
  }
  const from = zoom.from ?? start, to = zoom.to ?? end;
  const inWindow = [...lanes.values()].filter((l) => l.from <= to && (l.to ?? end) >= from);
  const last = Math.min(zoom.lanesEnd ?? inWindow.length, inWindow.length);
  const first = Math.max(0, last - TIMELINE_LANES_MAX);
  zoom.shown = {span: {start, end, from, to}, lanes: {first, last, total: inWindow.length}};
  const span = Math.max(to - from, 1);
  const rows = inWindow.slice(first, last).map((l) => {
    const a = Math.max(l.from, from), b = Math.min(l.to ?? end, to);
    const left = ((a - from) / span) * 100, width = Math.max(0.4, ((b - a) / span) * 100);
    return `<div class="lane"><span class="lane-label">${esc(l.label)} <span class="muted">${esc(l.what)}</span></span>
      <span class="lane-track"><span class="bar ${l.kind} ${l.bad ? "bad" : ""} ${l.to === null ? "open" : ""}" style="left:${left}%;width:${Math.min(width, 100 - left)}%"
        title="${esc(l.label)}: ${l.to === null ? "running" : duration(l.to - l.from)}"></span></span>
      <span class="lane-time">${l.to === null ? "running" : duration(l.to - l.from)}</span></div>`;
  });
  const zoomed = zoom.from !== null;
  return `<p class="muted" id="timeline-window">${zoomed ? "Zoomed to " : ""}${timeTag(from)} → ${timeTag(to)} (${duration(to - from)}${zoomed ? ` of ${duration(end - start)}` : ""});
      lanes ${inWindow.length ? first + 1 : 0}–${last} of ${inWindow.length}${inWindow.length < lanes.size ? ` (${lanes.size} in the run)` : ""}, from ${events.length} events.</p>
    ${rows.length ? `<div class="timeline">${rows.join("")}</div>` : "<p>No activities, timers or children in this window.</p>"}`;
}

function callForms() {
  const form = (kind, label, argLabel) => `<form class="call" id="${kind}-form" aria-label="${label}">
    <b>${label}</b>
    <span id="${kind}-declared" class="declared"></span>
    <label>Name <input name="name" list="${kind}-names" required autocomplete="off" size="14"></label>
    <datalist id="${kind}-names"></datalist>
    <label>${argLabel} (JSON) <textarea name="args" rows="1" cols="24" spellcheck="false">null</textarea></label>
    <button class="submit">${label}</button>
    <output name="out" aria-live="polite"></output></form>`;
  return `<div class="calls">${form("signal", "Signal", "Input")}${form("query", "Query", "Arguments")}${form("update", "Update", "Arguments")}</div>`;
}

/** Handler names the run's code declares, from the built-in metadata query (by kind). */
const declared = {signal: [], query: [], update: []};

/** Asks the run which handlers its code declares (a remote run's worker answers for it). */
async function loadDeclared(base, signal) {
  const timeout = AbortSignal.any([signal, AbortSignal.timeout(5000)]);
  try {
    const metadata = await api("POST", `${base}/queries/__temporal_workflow_metadata`, null, {signal: timeout});
    const definition = metadata?.definition || {};
    const names = (list) => (list || []).map((d) => d.name).filter((n) => n && !n.startsWith("__"));
    declared.query = names(definition.queryDefinitions || definition.query_definitions);
    declared.signal = names(definition.signalDefinitions || definition.signal_definitions);
    declared.update = names(definition.updateDefinitions || definition.update_definitions);
  } catch {
    // No answer (an old worker, a run whose code is gone): the forms still take any name.
  }
  for (const kind of ["signal", "query", "update"]) {
    const place = document.getElementById(`${kind}-declared`);
    if (!place) continue;
    place.innerHTML = declared[kind].length
      ? "Declared: " + declared[kind].map((n) => `<button type="button" class="chip" data-name="${esc(n)}">${esc(n)}</button>`).join(" ")
      : '<span class="muted">No handler declared yet.</span>';
    for (const chip of place.querySelectorAll("button")) {
      chip.onclick = () => { const form = document.getElementById(`${kind}-form`); form.elements.name.value = chip.dataset.name; form.elements.args.focus(); };
    }
  }
}

/** Offers the handler names the code declares and those this run has seen. */
function fillNames(kind, events) {
  const names = new Set(declared[kind]);
  for (const e of events) {
    if (kind === "signal" && e.details?.signal_name) names.add(e.details.signal_name);
    if (kind === "update" && e.event_type === "WorkflowExecutionUpdateAccepted") names.add(e.details.name);
  }
  const list = document.getElementById(`${kind}-names`);
  if (list) list.innerHTML = [...names].map((n) => `<option value="${esc(n)}">`).join("");
}

function wireCalls(base, described) {
  const open = described.status === "running" && described.current;
  for (const kind of ["signal", "query", "update"]) {
    const form = document.getElementById(`${kind}-form`);
    if (kind !== "query" && !open) {
      for (const el of form.elements) el.disabled = true;
      form.title = "The run has closed";
    }
    form.onsubmit = async (e) => {
      e.preventDefault();
      const out = form.elements.out;
      let args;
      try { args = parseJson(kind === "signal" ? "The input" : "The arguments", form.elements.args.value); }
      catch (err) { out.value = err.message; out.className = "error"; form.elements.args.focus(); return; }
      const name = encodeURIComponent(form.elements.name.value.trim());
      out.className = ""; out.value = "sending…";
      try {
        if (kind === "signal") {
          await api("POST", `${base}/signals/${name}`, args);
          out.value = "Signal sent: it appears in the history below.";
        } else if (kind === "query") {
          const answer = await api("POST", `${base}/queries/${name}`, args);
          out.value = "Answer: " + JSON.stringify(answer);
        } else {
          const answer = await api("POST", `${base}/updates/${name}?wait=completed`, args);
          out.value = answer.failure ? `Rejected: ${answer.failure.error_type}: ${answer.failure.message}` : "Result: " + JSON.stringify(answer.result);
          out.className = answer.failure ? "error" : "";
        }
      } catch (err) { out.value = err.message; out.className = "error"; }
    };
  }
}
