//! A tour of Cairn's storage layer on the embedded (durable, fsync-on-commit) store: the
//! pieces a workflow actor's transition is made of, shown one by one, then a restart to show
//! that what committed is still there.
//!
//! Run: `cargo run --example store_tour` (uses a fresh temporary directory), or
//! `cargo run --example store_tour -- --db ./cairn-data` to keep the data.

use anyhow::{Context, Result, ensure};
use cairn_store::keyspace::{Subspace, TupleVersionstamp};
use cairn_store::{RangeRequest, Store, StoreError, TransactOptions, Transaction, transact};
use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
use cairn_types::{Payload, RetryPolicy, RunId, WorkflowId};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Serialize, Deserialize, Debug)]
struct Snapshot {
    status: String,
    next_event_id: i64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = match args.iter().position(|a| a == "--db") {
        Some(i) => args.get(i + 1).context("--db needs a path")?.into(),
        None => tempfile_dir()?,
    };
    println!("store: embedded at {}", path.display());
    let store = EmbeddedStore::open(EmbeddedConfig::new(&path))?;

    // Identifiers and payloads are validated values; nonsense is refused with a reason.
    let workflow = WorkflowId::new("order-1042")?;
    let run = RunId::from_parts(1_764_000_000_000, *b"tour-run-1");
    let bad_policy = RetryPolicy::builder().backoff_coefficient(0.5).build();
    println!("workflow {workflow}, run {run}");
    println!(
        "a retry policy with coefficient 0.5 is refused: {}",
        bad_policy.unwrap_err()
    );

    // One transition = one transaction: history events appended, the snapshot overwritten,
    // the consumed mailbox message deleted, a queue item enqueued under a versionstamp.
    let root = Subspace::from_bytes(b"tour/".to_vec());
    let history = root.subspace(&("run", run.to_string(), "hist"));
    let state_key = root.pack(&("run", run.to_string(), "state"));
    let inbox_key = root.pack(&("run", run.to_string(), "inbox", 1_i64));
    let queue = root.subspace(&("tq", "payments"));

    let mut tx = store.begin()?;
    tx.set(&inbox_key, Payload::encode(&"start")?.as_bytes())?;
    tx.commit().await?;

    let mut tx = store.begin()?;
    let message = tx.get(&inbox_key).await?.context("mailbox message")?;
    let message: String = Payload::from_bytes(message)?.decode()?;
    tx.set(
        &history.pack(&(1_i64,)),
        Payload::encode(&"WorkflowExecutionStarted")?.as_bytes(),
    )?;
    tx.set(
        &history.pack(&(2_i64,)),
        Payload::encode(&"ActivityTaskScheduled")?.as_bytes(),
    )?;
    let snapshot = Snapshot {
        status: "Running".into(),
        next_event_id: 3,
    };
    tx.set(&state_key, Payload::encode(&snapshot)?.as_bytes())?;
    tx.clear(&inbox_key)?;
    tx.set_versionstamped_key(
        &queue.pack_with_versionstamp(&(TupleVersionstamp::incomplete(0),)),
        Payload::encode(&"charge_card")?.as_bytes(),
    )?;
    let info = tx.commit().await?;
    println!(
        "transition for message {message:?} committed at version {} (2 events, snapshot, mailbox delete, 1 task)",
        info.version
    );

    // Optimistic concurrency: two transitions that read the same snapshot cannot both commit.
    let mut first = store.begin()?;
    let mut second = store.begin()?;
    first.get(&state_key).await?;
    second.get(&state_key).await?;
    // Each appends event 3 and rewrites the snapshot it read.
    for tx in [&mut first, &mut second] {
        tx.set(
            &history.pack(&(3_i64,)),
            Payload::encode(&"TimerStarted")?.as_bytes(),
        )?;
        tx.set(&state_key, Payload::encode(&snapshot)?.as_bytes())?;
    }
    first.commit().await?;
    let outcome = second.commit().await;
    ensure!(outcome == Err(StoreError::Conflict), "expected a conflict");
    println!(
        "a concurrent transition on the same run conflicted, as it must: {}",
        outcome.unwrap_err()
    );

    // A watch: wake up when the snapshot changes (how an idle actor learns of new work).
    let mut tx = store.begin()?;
    let watch = tx.watch(&state_key)?;
    tx.commit().await?;
    let writer = store.clone();
    let state = state_key.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let done = Snapshot {
            status: "Completed".into(),
            next_event_id: 4,
        };
        let mut tx = writer.begin().expect("begin");
        tx.set(&state, Payload::encode(&done).expect("encode").as_bytes())
            .expect("set");
        tx.commit().await.expect("commit");
    });
    tokio::time::timeout(Duration::from_secs(5), watch).await??;
    println!("the watch on the snapshot fired when another task completed the run");

    // The retry loop, with an atomic counter that never conflicts.
    let counter = root.pack(&("stats", "transitions"));
    transact(&store, &TransactOptions::default(), |tx, _| {
        let counter = counter.clone();
        Box::pin(async move {
            tx.atomic_add(&counter, 3)?;
            Ok::<_, StoreError>(())
        })
    })
    .await?;

    // Restart: close the store, open it again, read everything back.
    drop(store);
    let store = EmbeddedStore::open(EmbeddedConfig::new(&path))?;
    let mut tx = store.begin()?;
    let (begin, end) = history.range();
    let events = tx.get_range(&RangeRequest::new(begin, end)).await?;
    let snapshot: Snapshot =
        Payload::from_bytes(tx.get(&state_key).await?.context("snapshot")?)?.decode()?;
    let (begin, end) = queue.range();
    let tasks = tx.get_range(&RangeRequest::new(begin, end)).await?;
    let transitions = tx.get(&counter).await?.context("counter")?;
    let transitions = i64::from_le_bytes(transitions.as_slice().try_into()?);
    ensure!(
        events.len() == 3,
        "expected 3 history events, found {}",
        events.len()
    );
    ensure!(snapshot.status == "Completed", "snapshot lost");
    ensure!(tasks.len() == 1, "task queue lost");
    println!(
        "after reopening: {} history events, snapshot {:?} (next event {}), {} queued task, counter {}",
        events.len(),
        snapshot.status,
        snapshot.next_event_id,
        tasks.len(),
        transitions
    );
    drop(store);
    if !args.iter().any(|a| a == "--db") {
        std::fs::remove_dir_all(&path)?;
    }
    println!("store tour finished");
    Ok(())
}

/// A fresh directory under the system temp dir, named by process id (removed at the end of a
/// successful run).
fn tempfile_dir() -> Result<std::path::PathBuf> {
    let path = std::env::temp_dir().join(format!("cairn-store-tour-{}", std::process::id()));
    if path.exists() {
        std::fs::remove_dir_all(&path)?;
    }
    Ok(path)
}
