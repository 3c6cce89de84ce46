// Task queues: the workers that polled each queue lately (Temporal SDK workers included), when
// they last did, and what waits in the queue; refreshed while the page is open. Each node
// matches the tasks of the shards it holds, so this is the answering node's view.

import {api, duration, esc, timeTag} from "./util.js";

const REFRESH_MS = 2_000;

export async function render(app, params, signal) {
  for (;;) {
    const [answer, cluster] = await Promise.all([
      api("GET", "/api/v1/task-queues", undefined, {signal}),
      api("GET", "/api/v1/cluster", undefined, {signal}),
    ]);
    draw(app, answer, cluster.now_unix_ms);
    await new Promise((resolve) => setTimeout(resolve, REFRESH_MS));
    if (signal.aborted) return;
  }
}

function draw(app, answer, now) {
  const queues = answer.task_queues;
  app.innerHTML = `<h1>Task queues <span class="muted">${queues.length}</span></h1>
    <p class="muted">As node <b>${esc(answer.node_id)}</b> sees them: workers that polled through it in the last five minutes,
      and the tasks of its shards waiting for a poll. Activities of types registered on a node run there and never wait here.
      Refreshes every ${REFRESH_MS / 1000} s.</p>
    ${queues.length ? queues.map((q) => `<section class="panel" aria-label="Task queue ${esc(q.name)}">
      <h2>${esc(q.name)}</h2>
      <p>${q.activities_waiting} activity task(s) and ${q.workflow_tasks_waiting} workflow task(s) waiting for a poll</p>
      ${q.pollers.length ? `<table><thead><tr><th scope="col">Worker identity</th><th scope="col">Polls for</th><th scope="col">Last poll</th></tr></thead><tbody>
        ${q.pollers.map((p) => `<tr><td>${esc(p.identity || "(no identity)")}</td><td>${p.kind === "workflow" ? "workflow tasks" : "activity tasks"}</td>
          <td>${timeTag(p.last_poll_unix_ms)} <span class="muted">(${duration(Math.max(0, now - p.last_poll_unix_ms))} ago)</span></td></tr>`).join("")}</tbody></table>`
        : '<p class="error">No worker has polled this queue lately: its tasks wait until one does.</p>'}
    </section>`).join("") : "<p>No task queue has a worker or a waiting task on this node.</p>"}`;
}
