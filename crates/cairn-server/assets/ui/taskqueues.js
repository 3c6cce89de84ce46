// Task queues: the workers that polled each queue lately (Temporal SDK workers included), when
// they last did and through which node, and what waits in the queue at each node; refreshed
// while the page is open. Each node matches the tasks of the shards it holds and notes the
// workers polling through it, so the page asks every live node (scope=cluster) and merges.

import {api, duration, esc, timeTag} from "./util.js";

const REFRESH_MS = 2_000;

export async function render(app, params, signal) {
  for (;;) {
    const [answer, cluster] = await Promise.all([
      api("GET", "/api/v1/task-queues?scope=cluster", undefined, {signal}),
      api("GET", "/api/v1/cluster", undefined, {signal}),
    ]);
    draw(app, answer, cluster.now_unix_ms);
    await new Promise((resolve) => setTimeout(resolve, REFRESH_MS));
    if (signal.aborted) return;
  }
}

/** The queues of every node that answered, merged by name: pollers with the node they polled
 * through, waiting tasks summed (and by node). */
function merge(answer) {
  const nodes = answer.nodes || [{node_id: answer.node_id, task_queues: answer.task_queues}];
  const queues = new Map();
  for (const node of nodes) {
    for (const q of node.task_queues || []) {
      const merged = queues.get(q.name) || {name: q.name, pollers: [], activities: 0, workflows: 0, waiting: []};
      merged.pollers.push(...q.pollers.map((p) => ({...p, node_id: node.node_id})));
      merged.activities += q.activities_waiting;
      merged.workflows += q.workflow_tasks_waiting;
      if (q.activities_waiting || q.workflow_tasks_waiting) merged.waiting.push(`${node.node_id}: ${q.activities_waiting + q.workflow_tasks_waiting}`);
      queues.set(q.name, merged);
    }
  }
  const silent = nodes.filter((n) => !n.task_queues).map((n) => n.node_id);
  return {queues: [...queues.values()].sort((a, b) => a.name.localeCompare(b.name)), nodes: nodes.length, silent};
}

function draw(app, answer, now) {
  const {queues, nodes, silent} = merge(answer);
  app.innerHTML = `<h1>Task queues <span class="muted">${queues.length}</span></h1>
    <p class="muted">Across ${nodes} live node(s), asked through <b>${esc(answer.node_id)}</b>: workers that polled in the last five minutes
      (through which node), and the tasks waiting for a poll at each node (a node matches the tasks of the shards it holds).
      Activities of types registered on a node run there and never wait here. Refreshes every ${REFRESH_MS / 1000} s.</p>
    ${silent.length ? `<p class="error">No answer from ${silent.map(esc).join(", ")}: their queues are not shown.</p>` : ""}
    ${queues.length ? queues.map((q) => `<section class="panel" aria-label="Task queue ${esc(q.name)}">
      <h2>${esc(q.name)}</h2>
      <p>${q.activities} activity task(s) and ${q.workflows} workflow task(s) waiting for a poll${q.waiting.length ? ` <span class="muted">(${q.waiting.map(esc).join(", ")})</span>` : ""}</p>
      ${q.pollers.length ? `<table><thead><tr><th scope="col">Worker identity</th><th scope="col">Polls for</th><th scope="col">Through node</th><th scope="col">Last poll</th></tr></thead><tbody>
        ${q.pollers.map((p) => `<tr><td>${esc(p.identity || "(no identity)")}</td><td>${p.kind === "workflow" ? "workflow tasks" : "activity tasks"}</td>
          <td>${esc(p.node_id)}</td><td>${timeTag(p.last_poll_unix_ms)} <span class="muted">(${duration(Math.max(0, now - p.last_poll_unix_ms))} ago)</span></td></tr>`).join("")}</tbody></table>`
        : '<p class="error">No worker has polled this queue lately: its tasks wait until one does.</p>'}
    </section>`).join("") : "<p>No task queue has a worker or a waiting task in the cluster.</p>"}`;
}
