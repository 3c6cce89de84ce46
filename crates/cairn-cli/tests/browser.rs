//! The web UI in a real browser: headless Chromium driven over WebDriver (Debian's `chromium`
//! and `chromium-driver`, which `.ci/run` installs). Starts the dev server and a workflow, sees
//! it in the list, opens it, sends a signal from the page, sees the history update, and saves a
//! screenshot under the test's output directory. Loopback only; every wait is bounded.
//! Set `CAIRN_SKIP_BROWSER_TEST=1` to skip on a machine without Chromium.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Driver {
    agent: ureq::Agent,
    base: String,
    session: String,
}

impl Driver {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut response = match method {
            "GET" => self.agent.get(&url).call().unwrap(),
            "DELETE" => self.agent.delete(&url).call().unwrap(),
            _ => self
                .agent
                .post(&url)
                .send_json(body.unwrap_or(json!({})))
                .unwrap(),
        };
        let value: Value = response.body_mut().read_json().unwrap();
        value["value"].clone()
    }

    fn find(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        // W3C WebDriver's web element identifier key.
        found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    fn body_text(&self) -> String {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": "return document.body.innerText", "args": []})),
        )
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    /// Waits (bounded) until the page text contains `needle`, reloading with `reload`.
    fn wait_for_text(&self, needle: &str, reload: Option<&str>) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.body_text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "page never showed {needle:?}; it shows:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(200));
            if let Some(url) = reload {
                self.call("POST", "/url", Some(json!({"url": url})));
            }
        }
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        other => panic!("not base64: {other}"),
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|c| u32::from(value(*c))).collect();
        let n = v
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, x)| acc | (x << (18 - 6 * i)));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    out
}

/// Proves the UI lists a workflow, opens it, sends a signal and shows the updated history.
#[test]
fn web_ui_in_headless_chromium() {
    if std::env::var("CAIRN_SKIP_BROWSER_TEST").is_ok_and(|v| v == "1") {
        println!("skipped: CAIRN_SKIP_BROWSER_TEST=1");
        return;
    }
    let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect(
            "chromedriver not found: install Debian's chromium and chromium-driver (.ci/run does)",
        );
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(CAIRN)
        .args([
            "server",
            "start-dev",
            "--port",
            "0",
            "--temporal-port",
            "0",
            "--db",
        ])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let _server = Killed(server);
    let address = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let started = Command::new(CAIRN)
        .args([
            "workflow",
            "--address",
            &address,
            "start",
            "--type",
            "approval",
            "--id",
            "exp-1",
            "--input",
            "1250",
        ])
        .output()
        .unwrap();
    assert!(started.status.success(), "{started:?}");

    let port = free_port();
    let _driver = Killed(
        Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.get(&format!("{base}/status")).call().is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let profile = tempfile::tempdir().unwrap();
    let capabilities = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,900",
                 format!("--user-data-dir={}", profile.path().display())]
    }}}});
    let mut response = agent
        .post(&format!("{base}/session"))
        .send_json(capabilities)
        .unwrap();
    let created: Value = response.body_mut().read_json().unwrap();
    let session = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {created}"))
        .to_string();
    let driver = Driver {
        agent,
        base,
        session,
    };

    driver.call("POST", "/url", Some(json!({"url": format!("{address}/")})));
    driver.wait_for_text("exp-1", None);
    let link = driver.find("a[href=\"#/workflows/exp-1\"]");
    driver.call("POST", &format!("/element/{link}/click"), None);
    driver.wait_for_text("WorkflowExecutionStarted", None);

    let name = driver.find("#signal input[name=name]");
    driver.call(
        "POST",
        &format!("/element/{name}/value"),
        Some(json!({"text": "decide"})),
    );
    let input = driver.find("#signal input[name=input]");
    driver.call("POST", &format!("/element/{input}/clear"), None);
    driver.call(
        "POST",
        &format!("/element/{input}/value"),
        Some(json!({"text": "true"})),
    );
    let send = driver.find("#signal button");
    driver.call("POST", &format!("/element/{send}/click"), None);
    let detail = format!("{address}/#/workflows/exp-1");
    let text = driver.wait_for_text("WorkflowExecutionSignaled", Some(&detail));
    let text = if text.contains("approved 1250 cents") {
        text
    } else {
        driver.wait_for_text("approved 1250 cents", Some(&detail))
    };
    assert!(text.contains("completed"), "{text}");

    let shot = driver.call("GET", "/screenshot", None);
    let png = decode_base64(shot.as_str().unwrap());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-ui-detail.png");
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
    driver.call("DELETE", "", None);
}
