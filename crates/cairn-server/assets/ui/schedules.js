// Schedules: the list, one schedule (its spec in words, next times, recent actions), and
// create, pause/unpause with a note, trigger, backfill, delete.

import {api, confirmWithReason, duration, esc, notify, parseJson, timeTag, workflowLink} from "./util.js";

/** A schedule's spec in words ("every 5 min", "cron 0 9 * * MON-FRI in Europe/Paris"). */
export function specInWords(spec) {
  const parts = [];
  for (const c of spec.cron || []) parts.push(`cron “${c}”`);
  for (const i of spec.intervals || []) parts.push(`every ${duration(i.every_ms)}${i.offset_ms ? ` (offset ${duration(i.offset_ms)})` : ""}`);
  let words = parts.join(", or ") || "no times (trigger only)";
  if (spec.time_zone && spec.time_zone !== "UTC") words += ` in ${spec.time_zone}`;
  else if ((spec.cron || []).length) words += " in UTC";
  if (spec.jitter_ms) words += `, jitter up to ${duration(spec.jitter_ms)}`;
  if (spec.start_unix_ms) words += `, from ${new Date(spec.start_unix_ms).toISOString()}`;
  if (spec.end_unix_ms) words += `, until ${new Date(spec.end_unix_ms).toISOString()}`;
  return words;
}

export async function renderList(app, params, signal) {
  const list = await api("GET", "/api/v1/schedules", undefined, {signal});
  app.innerHTML = `<h1>Schedules <span class="muted">${list.length}</span></h1>
    <p><a href="#/schedules/new" class="button">New schedule</a></p>
    <table class="list"><thead><tr><th scope="col">Schedule ID</th><th scope="col">Workflow type</th><th scope="col">Spec</th>
      <th scope="col">State</th><th scope="col">Started</th><th scope="col">Last action</th></tr></thead><tbody>
    ${list.map((s) => {
      const last = s.recent_actions[s.recent_actions.length - 1];
      return `<tr><td><a href="#/schedules/${encodeURIComponent(s.schedule_id)}">${esc(s.schedule_id)}</a></td><td>${esc(s.workflow_type)}</td>
        <td>${esc(specInWords(s.spec))}</td><td>${s.paused ? '<span class="status paused">Paused</span>' : '<span class="status running">Active</span>'}</td>
        <td>${s.actions_started}</td><td>${last ? timeTag(last.actual_unix_ms) : "—"}</td></tr>`;
    }).join("") || '<tr><td colspan="6">No schedules yet.</td></tr>'}</tbody></table>`;
}

export async function renderOne(app, id, params, signal) {
  if (id === "new") return renderForm(app, null);
  if (params.get("edit") === "1") {
    const current = await api("GET", "/api/v1/schedules/" + encodeURIComponent(id), undefined, {signal});
    return renderForm(app, current);
  }
  const path = "/api/v1/schedules/" + encodeURIComponent(id);
  const s = await api("GET", path, undefined, {signal});
  const reload = () => renderOne(app, id, params, signal);
  app.innerHTML = `<nav class="crumbs" aria-label="Breadcrumb"><a href="#/schedules">Schedules</a> › ${esc(id)}</nav>
    <h1>${esc(id)} ${s.paused ? '<span class="status paused">Paused</span>' : '<span class="status running">Active</span>'}</h1>
    <div class="actions" role="toolbar" aria-label="Schedule actions">
      <a class="button" id="edit" href="#/schedules/${encodeURIComponent(id)}?edit=1">Edit</a>
      <button id="toggle">${s.paused ? "Unpause" : "Pause"}</button>
      <button id="trigger">Trigger now</button>
      <button id="delete" class="danger">Delete</button>
    </div>
    <div class="grid2">
      <section class="panel" aria-labelledby="spec-h"><h2 id="spec-h">What and when</h2><dl class="facts">
        <dt>Runs</dt><dd>${esc(specInWords(s.spec))}</dd>
        <dt>Workflow type</dt><dd>${esc(s.workflow_type)}</dd>
        <dt>Input</dt><dd><pre class="json">${esc(JSON.stringify(s.input, null, 2))}</pre></dd>
        <dt>Overlap policy</dt><dd>${esc(s.overlap_policy)}</dd>
        <dt>Catch-up window</dt><dd>${esc(duration(s.catchup_window_ms))}</dd>
        <dt>Note</dt><dd>${esc(s.note) || "—"}</dd>
        <dt>Created</dt><dd>${timeTag(s.created_unix_ms)}</dd>
        <dt>Updated</dt><dd>${timeTag(s.updated_unix_ms)}</dd>
        <dt>Actions</dt><dd>${s.actions_started} started, ${s.actions_skipped} skipped, ${s.actions_missed} missed${s.buffered ? `, ${s.buffered} buffered` : ""}</dd>
      </dl></section>
      <section class="panel" aria-labelledby="next-h"><h2 id="next-h">Next times</h2>
        <ol>${s.next_times_unix_ms.map((t) => `<li>${timeTag(t)}</li>`).join("") || "<li>none</li>"}</ol>
        <h2>Running now</h2>
        <ul>${s.running.map((r) => `<li><a href="${workflowLink(r.workflow_id, r.run_id)}">${esc(r.workflow_id)}</a></li>`).join("") || "<li>none</li>"}</ul>
      </section>
    </div>
    <section class="panel" aria-labelledby="recent-h"><h2 id="recent-h">Recent actions</h2>
      <table><thead><tr><th scope="col">Scheduled for</th><th scope="col">Taken</th><th scope="col">Action</th><th scope="col">Workflow</th></tr></thead><tbody>
      ${s.recent_actions.slice().reverse().map((a) => `<tr><td>${timeTag(a.scheduled_unix_ms)}</td><td>${timeTag(a.actual_unix_ms)}</td><td>${esc(a.action)}</td>
        <td>${a.workflow_id ? `<a href="${workflowLink(a.workflow_id, a.run_id)}">${esc(a.workflow_id)}</a>` : "—"}</td></tr>`).join("") || '<tr><td colspan="4">none yet</td></tr>'}</tbody></table>
    </section>
    <form class="panel" id="backfill" aria-labelledby="backfill-h"><h2 id="backfill-h">Backfill</h2>
      <p>Start the workflows of every scheduled time in a range (times in this browser's zone).</p>
      <label>From <input type="datetime-local" name="start" required></label>
      <label>To <input type="datetime-local" name="end" required></label>
      <button>Backfill</button></form>`;
  document.getElementById("toggle").onclick = async () => {
    const verb = s.paused ? "Unpause" : "Pause";
    const note = await confirmWithReason(`${verb} ${id}?`, s.paused ? "Actions start again at the next scheduled time." : "No action starts until it is unpaused.", verb);
    if (note === null) return;
    try { await api("POST", `${path}/${s.paused ? "unpause" : "pause"}`, {note}); notify(`${verb}d.`); reload(); } catch (err) { notify(err.message, true); }
  };
  document.getElementById("trigger").onclick = async () => {
    try { await api("POST", `${path}/trigger`, {}); notify("Triggered: the action starts under the overlap policy."); setTimeout(reload, 500); } catch (err) { notify(err.message, true); }
  };
  document.getElementById("delete").onclick = async () => {
    const reason = await confirmWithReason(`Delete ${id}?`, "The schedule stops for good; workflows it started run on.", "Delete");
    if (reason === null) return;
    try { await api("DELETE", path); notify("Deleted."); location.hash = "#/schedules"; } catch (err) { notify(err.message, true); }
  };
  const backfill = document.getElementById("backfill");
  backfill.onsubmit = async (e) => {
    e.preventDefault();
    const start = new Date(backfill.start.value).toISOString(), end = new Date(backfill.end.value).toISOString();
    try { await api("POST", `${path}/backfill`, {start, end}); notify("Backfill started."); setTimeout(reload, 500); } catch (err) { notify(err.message, true); }
  };
}

/** The create form, or with `current` the edit form of that schedule (prefilled). */
function renderForm(app, current) {
  const editing = Boolean(current);
  const spec = current?.spec || {};
  const every = spec.intervals?.[0]?.every_ms ? spec.intervals[0].every_ms / 1000 : "";
  const policies = [["skip", "Skip"], ["buffer_one", "Buffer one"], ["buffer_all", "Buffer all"], ["cancel_other", "Cancel other"],
    ["terminate_other", "Terminate other"], ["allow_all", "Allow all"]];
  const id = current?.schedule_id || "";
  app.innerHTML = `<nav class="crumbs" aria-label="Breadcrumb"><a href="#/schedules">Schedules</a> › ${editing ? `<a href="#/schedules/${encodeURIComponent(id)}">${esc(id)}</a> › edit` : "new"}</nav>
    <h1>${editing ? `Edit ${esc(id)}` : "New schedule"}</h1>
    ${editing ? "<p>What it does and when change; its recent actions and counts stay. Times of the new spec already past are not made up.</p>" : ""}
    <form class="panel form" id="create">
      <label>Schedule ID <input name="schedule_id" required autocomplete="off" value="${esc(id)}" ${editing ? "readonly" : ""}></label>
      <label>Workflow type <input name="workflow_type" required autocomplete="off" value="${esc(current?.workflow_type || "")}"></label>
      <label>Input (JSON) <textarea name="input" rows="2" spellcheck="false">${esc(JSON.stringify(current ? current.input : null))}</textarea></label>
      <fieldset><legend>When</legend>
        <label>Every <input name="every" type="number" min="1" placeholder="seconds" value="${esc(every)}"> seconds</label>
        <label>or cron <input name="cron" placeholder="0 9 * * MON-FRI" autocomplete="off" value="${esc(spec.cron?.[0] || "")}"></label>
        <label>Time zone <input name="time_zone" placeholder="UTC" autocomplete="off" value="${esc(spec.time_zone && spec.time_zone !== "UTC" ? spec.time_zone : "")}"></label>
      </fieldset>
      <label>Overlap policy <select name="overlap_policy">
        ${policies.map(([value, label]) => `<option value="${value}" ${current?.overlap_policy === value ? "selected" : ""}>${label}</option>`).join("")}</select></label>
      <label>Note <input name="note" autocomplete="off" value="${esc(current?.note || "")}"></label>
      <label><input type="checkbox" name="paused" ${current?.paused ? "checked" : ""}> ${editing ? "Paused" : "Start paused"}</label>
      <p><button class="submit">${editing ? "Save" : "Create"}</button> <output name="out" aria-live="polite"></output></p>
    </form>`;
  const form = document.getElementById("create");
  form.onsubmit = async (e) => {
    e.preventDefault();
    const out = form.elements.out;
    try {
      const body = {
        schedule_id: form.schedule_id.value.trim(), workflow_type: form.workflow_type.value.trim(),
        input: parseJson("The input", form.input.value), overlap_policy: form.overlap_policy.value,
        note: form.note.value, paused: form.paused.checked,
        intervals: form.every.value ? [{every_ms: Number(form.every.value) * 1000}] : [],
        cron: form.cron.value.trim() ? [form.cron.value.trim()] : [],
      };
      if (form.time_zone.value.trim()) body.time_zone = form.time_zone.value.trim();
      if (!body.intervals.length && !body.cron.length) throw new Error("Give an interval or a cron expression.");
      const path = "/api/v1/schedules" + (editing ? "/" + encodeURIComponent(body.schedule_id) : "");
      await api(editing ? "PUT" : "POST", path, body);
      location.hash = "#/schedules/" + encodeURIComponent(body.schedule_id);
    } catch (err) { out.value = err.message; out.className = "error"; }
  };
}
