//! The `cairn` binary as a person uses it: a dev server on a fresh data directory, workflow
//! commands against it, a second server on the same directory refused with a clear error, and
//! a clean stop on Ctrl-C (SIGINT). Loopback only; every wait is bounded.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

struct Server {
    child: Child,
    address: String,
    /// Kept open so the server can keep writing to its stdout.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(db: &std::path::Path) -> Server {
    let mut child = Command::new(CAIRN)
        .args([
            "server",
            "start-dev",
            "--port",
            "0",
            "--temporal-port",
            "0",
            "--db",
        ])
        .arg(db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the server");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    let address = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Server {
        child,
        address,
        _stdout: out,
    }
}

fn cairn(server: &Server, args: &[&str]) -> Output {
    Command::new(CAIRN)
        .args(["workflow", "--address", &server.address])
        .args(args)
        .output()
        .expect("run cairn")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Proves the dev server runs the demo workflows through the CLI end to end.
#[test]
fn dev_server_and_workflow_commands() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("data"));
    let started = cairn(
        &server,
        &[
            "start", "--type", "hello", "--id", "h-1", "--input", "\"Ada\"", "--wait",
        ],
    );
    assert!(started.status.success(), "{started:?}");
    assert!(
        stdout(&started).contains("completed: \"hello Ada\""),
        "{}",
        stdout(&started)
    );
    // A demo relay one step past its bound fails at once, saying why.
    let too_long = cairn(
        &server,
        &[
            "start", "--type", "relay", "--id", "r-1", "--input", "5001", "--wait",
        ],
    );
    let said = format!(
        "{}{}",
        stdout(&too_long),
        String::from_utf8_lossy(&too_long.stderr)
    );
    assert!(
        said.contains("TooManySteps") && said.contains("at most 5000 steps"),
        "{said}"
    );

    let listed = cairn(&server, &["list", "--status", "completed"]);
    assert!(stdout(&listed).contains("h-1"), "{}", stdout(&listed));
    let shown = cairn(&server, &["show", "h-1"]);
    assert!(stdout(&shown).contains("TimerFired"), "{}", stdout(&shown));
    let as_json = cairn(&server, &["--output", "json", "result", "h-1"]);
    let value: serde_json::Value = serde_json::from_slice(&as_json.stdout).unwrap();
    assert_eq!(value["result"], "hello Ada");

    cairn(
        &server,
        &[
            "start", "--type", "approval", "--id", "a-1", "--input", "1250",
        ],
    );
    let amended = cairn(&server, &["update", "a-1", "amend", "--args", "2000"]);
    assert!(amended.status.success(), "{amended:?}");
    assert!(
        stdout(&amended).contains("amount is now 2000 cents"),
        "{}",
        stdout(&amended)
    );
    let refused = cairn(&server, &["update", "a-1", "amend", "--args", "0"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("InvalidAmount"),
        "{refused:?}"
    );
    let accepted = cairn(
        &server,
        &[
            "update",
            "a-1",
            "amend",
            "--args",
            "3000",
            "--wait",
            "accepted",
            "--update-id",
            "u-3",
        ],
    );
    assert!(accepted.status.success(), "{accepted:?}");
    let signaled = cairn(&server, &["signal", "a-1", "decide", "--input", "true"]);
    assert!(signaled.status.success(), "{signaled:?}");
    let result = cairn(&server, &["result", "a-1", "--wait-ms", "10000"]);
    assert!(
        stdout(&result).contains("approved 3000 cents"),
        "{}",
        stdout(&result)
    );

    let bad = cairn(&server, &["start", "--type", "nope"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("[unknown_workflow_type]"));
    let bad_json = cairn(&server, &["start", "--type", "hello", "--input", "{oops"]);
    assert!(String::from_utf8_lossy(&bad_json.stderr).contains("not valid JSON"));

    // A cron workflow: its first run waits for the schedule's time; a terminate ends it.
    let cron = cairn(
        &server,
        &[
            "start",
            "--type",
            "hello",
            "--id",
            "c-1",
            "--input",
            "\"Bo\"",
            "--cron",
            "@every 1h",
        ],
    );
    assert!(cron.status.success(), "{cron:?}");
    let runs = cairn(&server, &["list", "--query", "WorkflowId = 'c-1'"]);
    assert!(stdout(&runs).contains("c-1"), "{}", stdout(&runs));
    let terminated = cairn(&server, &["terminate", "c-1", "--reason", "enough"]);
    assert!(terminated.status.success(), "{terminated:?}");
    let bad_cron = cairn(
        &server,
        &[
            "start", "--type", "hello", "--id", "c-2", "--input", "\"Al\"", "--cron", "whenever",
        ],
    );
    assert!(!bad_cron.status.success());
    assert!(
        String::from_utf8_lossy(&bad_cron.stderr).contains("[invalid_cron_schedule]"),
        "{bad_cron:?}"
    );
}

fn cli(server: &Server, args: &[&str]) -> Output {
    Command::new(CAIRN)
        .args(args)
        .args(["--address", &server.address])
        .output()
        .expect("run cairn")
}

/// Proves the schedule commands (create with an interval, list, describe with next times and
/// recent actions, pause with a note, trigger, backfill, delete) and the visibility commands
/// (list --query, count) against a dev server, and that bad input gets a clear error.
#[test]
fn schedule_and_visibility_commands() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("data"));
    let created = cli(
        &server,
        &[
            "schedule",
            "create",
            "greeter",
            "--type",
            "hello",
            "--input",
            "\"Bo\"",
            "--every-ms",
            "300",
            "--overlap",
            "allow_all",
        ],
    );
    assert!(created.status.success(), "{created:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let counted = cli(
            &server,
            &[
                "workflow",
                "count",
                "--query",
                "WorkflowId STARTS_WITH 'greeter-'",
            ],
        );
        let n: u64 = stdout(&counted).trim().parse().unwrap_or(0);
        if n >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the schedule did not start two workflows"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let described = cli(&server, &["schedule", "describe", "greeter"]);
    let text = stdout(&described);
    assert!(
        text.contains("next") && text.contains("Started greeter-"),
        "{text}"
    );
    let paused = cli(
        &server,
        &["schedule", "pause", "greeter", "--note", "quiet hours"],
    );
    assert!(paused.status.success(), "{paused:?}");
    let listed = cli(&server, &["schedule", "list"]);
    assert!(stdout(&listed).contains("greeter") && stdout(&listed).contains("true"));
    let triggered = cli(&server, &["schedule", "trigger", "greeter"]);
    assert!(triggered.status.success(), "{triggered:?}");
    let backfilled = cli(
        &server,
        &[
            "schedule",
            "backfill",
            "greeter",
            "--start",
            "2026-01-01T00:00:00Z",
            "--end",
            "2026-01-01T00:00:01Z",
            "--overlap",
            "allow_all",
        ],
    );
    assert!(backfilled.status.success(), "{backfilled:?}");
    let listed = cli(
        &server,
        &[
            "workflow",
            "list",
            "--query",
            "WorkflowType = 'hello' AND WorkflowId STARTS_WITH 'greeter-2026-01-01' ORDER BY WorkflowId",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut text = stdout(&listed);
    while !text.contains("greeter-2026-01-01T00:00:00.900Z") {
        assert!(Instant::now() < deadline, "backfill did not start: {text}");
        std::thread::sleep(Duration::from_millis(100));
        text = stdout(&cli(
            &server,
            &[
                "workflow",
                "list",
                "--query",
                "WorkflowId STARTS_WITH 'greeter-2026-01-01'",
            ],
        ));
    }
    let bad_query = cli(&server, &["workflow", "list", "--query", "Colour = 'red'"]);
    assert!(!bad_query.status.success());
    let stderr = String::from_utf8_lossy(&bad_query.stderr);
    assert!(
        stderr.contains("[invalid_query]") && stderr.contains("position 0"),
        "{stderr}"
    );
    let bad_cron = cli(
        &server,
        &[
            "schedule",
            "create",
            "bad",
            "--type",
            "hello",
            "--cron",
            "every day",
        ],
    );
    assert!(String::from_utf8_lossy(&bad_cron.stderr).contains("[invalid_schedule]"));
    let deleted = cli(&server, &["schedule", "delete", "greeter"]);
    assert!(deleted.status.success(), "{deleted:?}");
    let gone = cli(&server, &["schedule", "describe", "greeter"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("[schedule_not_found]"));
    let status = cli(&server, &["cluster", "status"]);
    assert!(
        stdout(&status).contains("dev")
            && stdout(&status).contains("alive")
            && stdout(&status).contains("LAG MS"),
        "{}",
        stdout(&status)
    );
}

/// Proves a second server on the same data directory is refused with a clear error, and the
/// first stops cleanly on SIGINT.
#[test]
fn one_server_per_directory_and_clean_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data");
    let mut server = start_server(&db);
    let second = Command::new(CAIRN)
        .args([
            "server",
            "start-dev",
            "--port",
            "0",
            "--temporal-port",
            "0",
            "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("is in use by another process"),
        "{second:?}"
    );
    let pid = i32::try_from(server.child.id()).unwrap();
    #[allow(unsafe_code)]
    // SAFETY: sends SIGINT to our own child process; no memory is involved.
    let sent = unsafe { libc::kill(pid, libc::SIGINT) };
    assert_eq!(sent, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "server exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Proves `--log-format json` writes one JSON object per log line.
#[test]
fn json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(CAIRN)
        .args([
            "server",
            "start-dev",
            "--port",
            "0",
            "--temporal-port",
            "0",
            "--log-format",
            "json",
            "--db",
        ])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let log: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(log["level"], "INFO", "{log}");
    assert!(log["fields"]["message"].as_str().is_some(), "{log}");
}

/// Proves `server start` names what it needs: a store it understands, and FoundationDB support
/// compiled in (this test binary is built without it).
#[test]
fn production_server_explains_what_it_needs() {
    let unknown = Command::new(CAIRN)
        .args(["server", "start", "--store", "postgres://x"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("fdb:<cluster-file>"),
        "{unknown:?}"
    );
    let fdb = Command::new(CAIRN)
        .args([
            "server",
            "start",
            "--store",
            "fdb:/etc/foundationdb/fdb.cluster",
        ])
        .output()
        .unwrap();
    assert!(!fdb.status.success());
    let stderr = String::from_utf8_lossy(&fdb.stderr);
    assert!(
        stderr.contains("--features fdb") || stderr.contains("FoundationDB"),
        "{stderr}"
    );
}

/// Proves the dev server serves Temporal's gRPC port and says where, that a port already taken
/// is a clear error naming the flags that avoid it (nothing half-started), and that
/// `--no-temporal` serves none.
#[test]
fn temporal_port_is_served_and_a_clash_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let clash = Command::new(CAIRN)
        .args([
            "server",
            "start-dev",
            "--port",
            "0",
            "--temporal-port",
            &port,
            "--db",
        ])
        .arg(dir.path().join("a"))
        .output()
        .unwrap();
    assert!(!clash.status.success());
    let stderr = String::from_utf8_lossy(&clash.stderr);
    assert!(
        stderr.contains("binding Temporal's gRPC port") && stderr.contains("--no-temporal"),
        "{stderr}"
    );
    drop(taken);

    let mut child = Command::new(CAIRN)
        .args([
            "server",
            "start-dev",
            "--port",
            "0",
            "--temporal-port",
            "0",
            "--db",
        ])
        .arg(dir.path().join("b"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut first, mut second) = (String::new(), String::new());
    out.read_line(&mut first).unwrap();
    out.read_line(&mut second).unwrap();
    let grpc = second
        .split_whitespace()
        .last()
        .unwrap_or_else(|| panic!("no Temporal address in {second:?}"))
        .to_string();
    assert!(second.contains("Temporal gRPC API"), "{second:?}");
    assert!(
        std::net::TcpStream::connect(&grpc).is_ok(),
        "{grpc} accepts connections"
    );
    let _ = child.kill();
    let _ = child.wait();

    let mut child = Command::new(CAIRN)
        .args([
            "server",
            "start-dev",
            "--port",
            "0",
            "--no-temporal",
            "--db",
        ])
        .arg(dir.path().join("c"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("listening on http://"), "{line:?}");
    let _ = child.kill();
    let _ = child.wait();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    assert!(!rest.contains("Temporal gRPC API"), "{rest:?}");
}
