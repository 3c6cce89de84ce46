#!/usr/bin/env python3
"""The web UI's load budget (issue 24): with many workflows on a dev server, how long the
workflow list's first page and a workflow with a long history take to show in headless
Chromium, and how many bytes each load transfers.

Starts `cairn server start-dev` on a fresh data directory, starts `--workflows` `noop` workflows
over the HTTP API, one `countdown` workflow signalled until its history has `--events` events,
then opens each view in a fresh browser profile (cold cache) `--runs` times, timing from the
navigation's start until the view shows its data (the list: its 50 rows; the workflow: its
first page of history), and summing the bytes of every response that completed by then.
Loopback only; stops everything it started.

  python3 scripts/ui-bench.py --cairn target/release/cairn [--workflows 100000] [--events 10000]
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(host, port, paths_bodies, threads):
    """POSTs each (path, body) over `threads` keep-alive connections; returns the seconds."""
    work = list(paths_bodies)
    lock = threading.Lock()
    failures = []

    def worker():
        conn = http.client.HTTPConnection(host, port, timeout=60)
        while True:
            with lock:
                if not work:
                    return
                path, body = work.pop()
            for attempt in range(50):
                conn.request("POST", path, body=body, headers={"content-type": "application/json"})
                response = conn.getresponse()
                response.read()
                if response.status in (429, 503):
                    time.sleep(0.05 * (attempt + 1))
                    continue
                if response.status >= 300:
                    failures.append((path, response.status))
                break

    started = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, first: {failures[0]}")
    return time.monotonic() - started


def webdriver(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["value"]


MEASURE = """
const [ready, done] = [arguments[0], arguments[arguments.length - 1]];
const check = () => {
  if (eval(ready)) {
    const at = performance.now();
    const entries = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')];
    done({ms: at, bytes: entries.reduce((n, e) => n + (e.transferSize || 0), 0),
          requests: entries.length});
  } else { setTimeout(check, 2); }
};
check();
"""


def measure(driver, address, hash_, ready, runs):
    results = []
    for _ in range(runs):
        profile = tempfile.mkdtemp(prefix="cairn-ui-bench-")
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1440,900", f"--user-data-dir={profile}"]}}}}
        session = webdriver(driver, "POST", "/session", caps)["sessionId"]
        try:
            webdriver(driver, "POST", f"/session/{session}/timeouts", {"script": 60000})
            webdriver(driver, "POST", f"/session/{session}/url", {"url": f"{address}/{hash_}"})
            results.append(webdriver(driver, "POST", f"/session/{session}/execute/async",
                                     {"script": MEASURE, "args": [ready]}))
        finally:
            webdriver(driver, "DELETE", f"/session/{session}")
            shutil.rmtree(profile, ignore_errors=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cairn", default="target/release/cairn")
    parser.add_argument("--workflows", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()

    data = tempfile.mkdtemp(prefix="cairn-ui-bench-data-")
    server = subprocess.Popen([args.cairn, "server", "start-dev", "--db", f"{data}/db", "--port", "0",
                               "--temporal-port", "0", "--log-level", "warn"],
                              stdout=subprocess.PIPE, text=True)
    chromedriver = None
    try:
        line = server.stdout.readline()
        address = next(w for w in line.split() if w.startswith("http://"))
        host, port = address[len("http://"):].split(":")
        port = int(port)

        seconds = load(host, port, ((
            "/api/v1/workflows",
            json.dumps({"workflow_id": f"w-{i:07d}", "workflow_type": "noop", "input": None}),
        ) for i in range(args.workflows)), args.threads)
        print(f"started {args.workflows} workflows in {seconds:.1f} s ({args.workflows / seconds:.0f}/s)")

        load(host, port, [("/api/v1/workflows", json.dumps(
            {"workflow_id": "long-history", "workflow_type": "countdown", "input": 360000}))], 1)
        while True:
            with urllib.request.urlopen(f"{address}/api/v1/workflows/long-history") as r:
                length = json.loads(r.read())["history_length"]
            if length >= args.events:
                break
            seconds = load(host, port, [("/api/v1/workflows/long-history/signals/poke", str(i))
                                        for i in range(max(1, (args.events - length) // 2 + 1))], args.threads)
        print(f"long-history has {length} events")

        # The API calls behind each view, alone (keep-alive, 20 each).
        conn = http.client.HTTPConnection(host, port, timeout=60)
        for name, path in [("list page", "/api/v1/visibility/workflows?query=&page_size=50"),
                           ("counts", "/api/v1/visibility/counts"),
                           ("describe", "/api/v1/workflows/long-history"),
                           ("history page", "/api/v1/workflows/long-history/events?from=1&page_size=200")]:
            times, size = [], 0
            for _ in range(20):
                started = time.monotonic()
                conn.request("GET", path)
                response = conn.getresponse()
                size = len(response.read())
                times.append((time.monotonic() - started) * 1000)
            print(f"API {name}: {statistics.median(times):.1f} ms median, {size / 1024:.1f} KiB")

        driver_port = free_port()
        chromedriver = subprocess.Popen(["/usr/bin/chromedriver", f"--port={driver_port}"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        driver = f"http://127.0.0.1:{driver_port}"
        for _ in range(100):
            try:
                webdriver(driver, "GET", "/status")
                break
            except OSError:
                time.sleep(0.1)

        views = [
            ("workflow list, first page", "#/",
             "document.querySelectorAll('table.list tbody tr').length === 50"),
            (f"workflow with {length} events", "#/workflows/long-history",
             "document.querySelectorAll('ol.compact li').length >= 200"),
        ]
        report = []
        for name, hash_, ready in views:
            results = measure(driver, address, hash_, ready, args.runs)
            ms = [r["ms"] for r in results]
            kb = [r["bytes"] / 1024 for r in results]
            report.append({"view": name, "runs": len(results), "median_ms": statistics.median(ms),
                           "max_ms": max(ms), "median_kib": statistics.median(kb),
                           "requests": results[-1]["requests"]})
            print(f"{name}: shown in {statistics.median(ms):.0f} ms median ({min(ms):.0f}-{max(ms):.0f}), "
                  f"{statistics.median(kb):.1f} KiB transferred, {results[-1]['requests']} requests "
                  f"({len(results)} cold loads)")
        print(json.dumps(report))
    finally:
        if chromedriver:
            chromedriver.terminate()
            chromedriver.wait()
        server.terminate()
        server.wait()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    main()
