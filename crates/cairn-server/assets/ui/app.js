// Cairn's web UI: a hash router over the views, and the token flow. Plain ES modules served by
// every node from its binary (no build step).

import {ApiError, esc, token, zone} from "./util.js";

const app = document.getElementById("app");

// Views by the hash's first segment; each module is loaded when first shown, renders into
// `app`, and stops its live updates when `signal` aborts (the user went elsewhere).
const ROUTES = [
  [/^#\/workflows\/(.+)$/, async (m, params, signal) => (await import("./workflow.js")).render(app, decodeURIComponent(m[1]), params, signal), "workflows"],
  [/^#\/schedules\/(.+)$/, async (m, params, signal) => (await import("./schedules.js")).renderOne(app, decodeURIComponent(m[1]), params, signal), "schedules"],
  [/^#\/schedules$/, async (m, params, signal) => (await import("./schedules.js")).renderList(app, params, signal), "schedules"],
  [/^#\/task-queues$/, async (m, params, signal) => (await import("./taskqueues.js")).render(app, params, signal), "task-queues"],
  [/^#\/cluster$/, async (m, params, signal) => (await import("./cluster.js")).render(app, params, signal), "cluster"],
  [/^#\/(workflows)?$/, async (m, params, signal) => (await import("./workflows.js")).render(app, params, signal), "workflows"],
];

let current = null;

async function route() {
  current?.abort();
  const controller = new AbortController();
  current = controller;
  const [path, query] = (location.hash || "#/").split("?");
  const params = new URLSearchParams(query || "");
  const found = ROUTES.find(([pattern]) => pattern.test(path));
  for (const link of document.querySelectorAll("header nav a")) {
    link.toggleAttribute("aria-current", found && link.dataset.section === found[2]);
  }
  if (!found) {
    app.innerHTML = `<h1>Not found</h1><p>No page at <code>${esc(location.hash)}</code>. <a href="#/">Workflows</a></p>`;
    return;
  }
  try {
    await found[1](path.match(found[0]), params, controller.signal);
  } catch (err) {
    if (controller.signal.aborted) return;
    if (err instanceof ApiError && err.status === 401) {
      signIn(Boolean(token.get()));
    } else {
      app.innerHTML = `<h1>Something went wrong</h1><p class="error" role="alert">${esc(err.message)}</p>
        <p><button id="retry">Try again</button> <a href="#/">Workflows</a></p>`;
      document.getElementById("retry").onclick = route;
    }
  }
}

/** The token form: asked once, kept in this browser; a refused token says so. */
function signIn(refused) {
  app.innerHTML = `<form class="panel signin" id="signin">
    <h1>Sign in</h1>
    <p>${refused ? '<span class="error" role="alert">This node refused the token. Enter the right one.</span>'
      : "This node needs an API token (the one it was started with, <code>--auth-token</code>)."}</p>
    <label>API token <input name="token" type="password" autocomplete="current-password" required size="40"></label>
    <button>Sign in</button></form>`;
  const form = document.getElementById("signin");
  form.token.focus();
  form.onsubmit = (e) => {
    e.preventDefault();
    token.set(form.token.value.trim());
    renderTokenState();
    route();
  };
}

function renderTokenState() {
  const place = document.getElementById("session");
  const zoneButton = `<button type="button" class="link" id="zone" title="Times are shown in this zone">${esc(zone.name())}</button>`;
  place.innerHTML = token.get()
    ? `${zoneButton} <button type="button" class="link" id="change-token">Change token</button> <button type="button" class="link" id="sign-out">Sign out</button>`
    : zoneButton;
  document.getElementById("zone").onclick = () => { zone.set(zone.get() === "UTC" ? "local" : "UTC"); renderTokenState(); route(); };
  if (token.get()) {
    document.getElementById("sign-out").onclick = () => { token.set(""); renderTokenState(); route(); };
    document.getElementById("change-token").onclick = () => signIn(false);
  }
}

// Keyboard: "/" focuses the page's search box, "g" then w/s/t/c goes to a section.
let pendingG = false;
document.addEventListener("keydown", (e) => {
  if (e.target.closest("input, textarea, select, dialog") || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "/") {
    const search = document.querySelector("[data-search]");
    if (search) { e.preventDefault(); search.focus(); }
  } else if (pendingG) {
    pendingG = false;
    const to = {w: "#/", s: "#/schedules", t: "#/task-queues", c: "#/cluster"}[e.key];
    if (to) location.hash = to;
  } else if (e.key === "g") {
    pendingG = true;
    setTimeout(() => (pendingG = false), 1000);
  }
});

// A view's requests end with the view (its signal aborts when the user goes elsewhere): a
// reload or poll it had scheduled then fails with AbortError, which is not an error.
window.addEventListener("unhandledrejection", (e) => {
  if (e.reason && e.reason.name === "AbortError") e.preventDefault();
});
window.addEventListener("hashchange", route);
renderTokenState();
route();
