//! Durability of the embedded store across abrupt process death.
//!
//! This test binary is its own child process: run normally it plays the parent, starting itself
//! again with `CAIRN_DURABILITY_CHILD=<scenario>:<dir>` to do the writes, then killing that child
//! with SIGKILL at a chosen point and reopening the data directory. It proves:
//! - a commit that returned is present after SIGKILL (fsync on commit);
//! - a transaction killed before its commit leaves nothing behind;
//! - a kill at a random moment during a stream of large commits, and a journal whose tail was
//!   torn (truncated mid-record), never yield a half-applied transaction.

use cairn_store::{RangeRequest, Store, Transaction};
use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "CAIRN_DURABILITY_CHILD";
/// Keys written by each commit of the torn-commit scenario.
const TORN_KEYS: usize = 200;
/// Bytes per value in the torn-commit scenario: ~200 KB per commit, so kills land mid-write.
const TORN_VALUE_BYTES: usize = 1_000;

/// A parent-side scenario: starts children, kills them, checks the reopened store.
type Scenario = fn(&tokio::runtime::Runtime);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (scenario, dir) = spec.split_once(':').expect("scenario:dir");
        runtime.block_on(child(scenario, Path::new(dir)));
        return;
    }
    let scenarios: [(&str, Scenario); 3] = [
        ("committed_survives_sigkill", committed_survives_sigkill),
        (
            "uncommitted_vanishes_on_sigkill",
            uncommitted_vanishes_on_sigkill,
        ),
        (
            "sigkill_and_torn_tail_never_half_apply",
            sigkill_and_torn_tail_never_half_apply,
        ),
    ];
    let mut failed = 0;
    for (name, scenario) in scenarios {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&runtime)));
        match outcome {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("{} passed, {} failed", scenarios.len() - failed, failed);
    if failed > 0 {
        std::process::exit(1);
    }
}

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedConfig::new(dir)).expect("open store")
}

fn spawn_child(scenario: &str, dir: &Path) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD_ENV, format!("{scenario}:{}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    (child, stdout)
}

fn read_line(stdout: &mut BufReader<std::process::ChildStdout>) -> String {
    let mut line = String::new();
    stdout.read_line(&mut line).expect("child output");
    assert!(!line.is_empty(), "child exited before reporting");
    line.trim().to_string()
}

/// SIGKILL (std's `Child::kill` on Unix) and reap.
fn kill(mut child: Child) {
    child.kill().expect("SIGKILL child");
    let status = child.wait().expect("reap child");
    assert!(!status.success(), "child should have died by the signal");
}

/// The child side of every scenario; it never returns on its own in the kill scenarios.
async fn child(scenario: &str, dir: &Path) {
    let store = open(dir);
    match scenario {
        "commit" => {
            let mut tx = store.begin().unwrap();
            for i in 0..100 {
                tx.set(format!("a/{i:03}").as_bytes(), b"durable").unwrap();
            }
            let info = tx.commit().await.unwrap();
            println!("committed {}", info.version);
        }
        "mid_transaction" => {
            let mut tx = store.begin().unwrap();
            tx.set(b"base", b"present").unwrap();
            tx.commit().await.unwrap();
            let mut tx = store.begin().unwrap();
            for i in 0..1_000 {
                tx.set(format!("b/{i:04}").as_bytes(), b"never").unwrap();
            }
            println!("in transaction");
            // Keep the transaction open until killed.
            tokio::time::sleep(Duration::from_secs(600)).await;
            drop(tx);
        }
        "torn" => {
            let value_pad = vec![b'.'; TORN_VALUE_BYTES - 8];
            let start = torn_generation(&store).await.unwrap_or(0);
            for generation in start + 1.. {
                let mut tx = store.begin().unwrap();
                let mut value = generation.to_be_bytes().to_vec();
                value.extend_from_slice(&value_pad);
                for i in 0..TORN_KEYS {
                    tx.set(format!("t/{i:04}").as_bytes(), &value).unwrap();
                }
                tx.set(b"t-generation", &generation.to_be_bytes()).unwrap();
                tx.commit().await.unwrap();
                println!("committed {generation}");
            }
        }
        other => panic!("unknown scenario {other}"),
    }
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// Reads the torn scenario's state and checks it is one whole generation. Returns `None` when
/// nothing was ever committed.
async fn torn_generation(store: &EmbeddedStore) -> Option<u64> {
    let mut tx = store.begin().unwrap();
    let generation = tx
        .get(b"t-generation")
        .await
        .unwrap()
        .map(|v| u64::from_be_bytes(v.try_into().unwrap()));
    let rows = tx.get_range(&RangeRequest::prefix(b"t/")).await.unwrap();
    match generation {
        None => assert!(rows.is_empty(), "rows without a generation marker"),
        Some(g) => {
            assert_eq!(rows.len(), TORN_KEYS, "a commit was partly applied");
            for row in &rows {
                let row_generation = u64::from_be_bytes(row.value[..8].try_into().unwrap());
                assert_eq!(
                    row_generation, g,
                    "rows from two generations: half-applied commit"
                );
            }
        }
    }
    generation
}

/// Proves a commit that returned survives SIGKILL of its process right after.
fn committed_survives_sigkill(runtime: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let (child, mut stdout) = spawn_child("commit", dir.path());
    let line = read_line(&mut stdout);
    let version: u64 = line.strip_prefix("committed ").unwrap().parse().unwrap();
    kill(child);
    let store = open(dir.path());
    assert_eq!(store.last_version(), version);
    runtime.block_on(async {
        let mut tx = store.begin().unwrap();
        let rows = tx.get_range(&RangeRequest::prefix(b"a/")).await.unwrap();
        assert_eq!(rows.len(), 100);
        assert!(rows.iter().all(|kv| kv.value == b"durable"));
    });
}

/// Proves a transaction that had not committed when its process was killed leaves no trace,
/// while the earlier commit of the same process is intact.
fn uncommitted_vanishes_on_sigkill(runtime: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let (child, mut stdout) = spawn_child("mid_transaction", dir.path());
    assert_eq!(read_line(&mut stdout), "in transaction");
    kill(child);
    let store = open(dir.path());
    runtime.block_on(async {
        let mut tx = store.begin().unwrap();
        assert_eq!(tx.get(b"base").await.unwrap(), Some(b"present".to_vec()));
        let rows = tx.get_range(&RangeRequest::prefix(b"b/")).await.unwrap();
        assert!(
            rows.is_empty(),
            "{} keys of an uncommitted transaction",
            rows.len()
        );
    });
}

/// Proves that killing a process at arbitrary moments during large commits, and then tearing
/// the journal's last record, always leaves whole transactions: every row carries the same
/// generation as the marker, and no acknowledged commit is lost to the kill.
fn sigkill_and_torn_tail_never_half_apply(runtime: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = 0;
    let mut recovered = 0;
    for round in 0..4u64 {
        let (child, mut stdout) = spawn_child("torn", dir.path());
        // Let some commits through, then kill at a moment that varies by round.
        let wait_for = 3 + round * 2;
        let deadline = Instant::now() + Duration::from_secs(60);
        for _ in 0..wait_for {
            let line = read_line(&mut stdout);
            acknowledged = line.strip_prefix("committed ").unwrap().parse().unwrap();
            assert!(Instant::now() < deadline, "child too slow");
        }
        std::thread::sleep(Duration::from_millis(round * 3));
        kill(child);
        let store = open(dir.path());
        let generation = runtime
            .block_on(torn_generation(&store))
            .expect("some commit");
        assert!(
            generation >= acknowledged,
            "acknowledged commit {acknowledged} lost; store has {generation}"
        );
        recovered = generation;
    }
    // Tear the tail of the newest journal file, as a crash mid-append would, and reopen.
    let journal = newest_journal(dir.path()).expect("a journal file");
    let len = std::fs::metadata(&journal).unwrap().len();
    assert!(len > 100, "journal unexpectedly small");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap();
    file.set_len(len - 77).unwrap();
    drop(file);
    let store = open(dir.path());
    let generation = runtime
        .block_on(torn_generation(&store))
        .expect("some commit");
    // Exactly the torn (last) commit is gone; everything before it is whole.
    assert_eq!(generation, recovered - 1, "torn tail recovery");
}

/// The most recently written journal file under the data directory.
fn newest_journal(dir: &Path) -> Option<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "jnl") {
                let modified = entry.metadata().ok()?.modified().ok()?;
                files.push((modified, entry.metadata().ok()?.len(), path));
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .rev()
        .find(|(_, len, _)| *len > 0)
        .map(|(_, _, p)| p)
}
