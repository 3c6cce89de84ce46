// The cluster: its nodes (alive, draining, heartbeats, lag), every shard's lease and holder, how
// far each lease is from expiring and how far each shard lags (its earliest due timer or
// schedule wake, still waiting past its time); refreshed while the page is open.

import {api, duration, esc, timeTag} from "./util.js";

const REFRESH_MS = 2_000;
// A shard whose due work has waited longer than this is shown as lagging; a holder keeping up
// consumes a due timer within milliseconds.
const LAG_WARN_MS = 1_000;

const lagText = (ms) => (ms >= LAG_WARN_MS ? `<span class="error">${duration(ms)}</span>` : ms > 0 ? duration(ms) : "none");

export async function render(app, params, signal) {
  for (;;) {
    const c = await api("GET", "/api/v1/cluster", undefined, {signal});
    draw(app, c);
    await new Promise((resolve) => setTimeout(resolve, REFRESH_MS));
    if (signal.aborted) return;
  }
}

function draw(app, c) {
  const now = c.now_unix_ms;
  const unheld = c.shards.filter((s) => !s.held).length;
  const lagging = c.shards.filter((s) => s.lag_ms >= LAG_WARN_MS).length;
  app.innerHTML = `<h1>Cluster <span class="muted">${c.nodes.length} node(s), ${c.shard_count} shards${unheld ? `, <span class="error">${unheld} unheld</span>` : ""}${lagging ? `, <span class="error">${lagging} lagging</span>` : ""}</span></h1>
    <p class="muted">Answered by node <b>${esc(c.this_node)}</b> at ${timeTag(now)}; leases last ${duration(c.lease_timeout_ms)}. Lag is how long a shard's earliest due timer or schedule wake has waited past its time (most now: <span id="cluster-lag">${lagText(c.lag_ms)}</span>). Refreshes every ${REFRESH_MS / 1000} s.</p>
    <section class="panel" aria-labelledby="nodes-h"><h2 id="nodes-h">Nodes</h2>
    <table><thead><tr><th scope="col">Node</th><th scope="col">Address</th><th scope="col">State</th><th scope="col">Started</th>
      <th scope="col">Last heartbeat</th><th scope="col">Shards held</th><th scope="col">Lag</th></tr></thead><tbody>
    ${c.nodes.map((n) => `<tr><td>${esc(n.node_id)}${n.node_id === c.this_node ? ' <span class="tag">this node</span>' : ""}</td><td class="mono">${esc(n.address || "—")}</td>
      <td>${n.alive ? (n.draining ? '<span class="status pending">Draining</span>' : '<span class="status completed">Alive</span>') : '<span class="status failed">Gone</span>'}</td>
      <td>${timeTag(n.started_unix_ms)}</td><td>${timeTag(n.heartbeat_unix_ms)} <span class="muted">(${duration(Math.max(0, now - n.heartbeat_unix_ms))} ago)</span></td>
      <td>${n.shards.length}</td><td>${lagText(n.lag_ms)}</td></tr>`).join("")}</tbody></table></section>
    <section class="panel" aria-labelledby="shards-h"><h2 id="shards-h">Shard leases</h2>
    <div class="shards" role="list">${c.shards.map((s) => {
      const left = s.lease_expires_unix_ms ? s.lease_expires_unix_ms - now : 0;
      const lag = s.lag_ms > 0 ? `, lagging ${duration(s.lag_ms)}` : "";
      const label = `shard ${s.shard}: ${s.held ? `held by ${s.holder}, epoch ${s.epoch}, lease ends in ${duration(Math.max(0, left))}` : "not held"}${lag}`;
      const state = s.held ? (s.lag_ms >= LAG_WARN_MS ? "held lagging" : "held") : "unheld";
      return `<span role="listitem" class="shard ${state}" title="${esc(label)}" aria-label="${esc(label)}">${s.shard}<small>${esc(s.holder || "—")}</small></span>`;
    }).join("")}</div></section>`;
}
