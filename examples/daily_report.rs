//! The daily report of the Temporal guide, on Cairn's durable embedded store: a schedule starts
//! `daily_report` every day at 09:00 UTC, each run named `daily-report-{scheduled time}`.
//!
//! Waiting for 09:00 would make a slow example, so it shows the real schedule's next run times,
//! then demonstrates the same workflow on a one-second interval: three reports come out, each
//! under the id of its scheduled time; the schedule is paused (with a note) and nothing more
//! starts; a manual trigger produces one more; describe lists the recent actions.
//!
//! Run: `cargo run --example daily_report`

use anyhow::{Result, ensure};
use cairn::{ActivityContext, Ctx, Failure, Node, NodeConfig, OverlapPolicy, WorkflowError};
use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
use std::sync::Mutex;
use std::time::Duration;

static SENT: Mutex<Vec<String>> = Mutex::new(Vec::new());

// ----- activities (the outside world) ---------------------------------------------------------

async fn gather_metrics(ctx: ActivityContext, _: ()) -> Result<Vec<(String, u64)>, Failure> {
    // A stable "yesterday" per run: the workflow id carries the scheduled time.
    let seed = ctx.info().workflow_id.as_str().len() as u64;
    Ok(vec![
        ("orders".into(), 1_200 + seed),
        ("refunds".into(), 14),
        ("signups".into(), 87 + seed % 7),
    ])
}

async fn send_report(ctx: ActivityContext, body: String) -> Result<(), Failure> {
    SENT.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(format!("{}: {body}", ctx.info().workflow_id));
    Ok(())
}

// ----- the workflow -----------------------------------------------------------------------------

/// Gathers yesterday's numbers and mails them.
async fn daily_report(ctx: Ctx, recipients: Vec<String>) -> Result<String, WorkflowError> {
    let metrics = ctx
        .activity(gather_metrics, ())
        .start_to_close(Duration::from_secs(60))
        .await?;
    let body = metrics
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(", ");
    let body = format!("to {}: {body}", recipients.join(", "));
    ctx.activity(send_report, body.clone())
        .start_to_close(Duration::from_secs(60))
        .await?;
    Ok(body)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("cairn-daily-report-{}", std::process::id()));
    let store = EmbeddedStore::open(EmbeddedConfig::new(&dir))?;
    let node = Node::builder()
        .workflow(daily_report)
        .activity(gather_metrics)
        .activity(send_report)
        .config(NodeConfig {
            node_id: "daily-report-example".into(),
            ..NodeConfig::default()
        })
        .start(store)
        .await?;
    let client = node.client();
    let recipients = vec!["ops@example.com".to_string()];

    // The guide's schedule: every day at 09:00 UTC.
    let daily = client
        .schedule(daily_report, "daily-report", recipients.clone())
        .cron("0 9 * * *")
        .time_zone("UTC")
        .create()
        .await?;
    let described = daily.describe().await?;
    println!("daily-report: next runs at");
    for at in &described.next_times_unix_ms {
        let time = cairn::format_time(*at);
        println!("  {time}");
        ensure!(time.ends_with("T09:00:00.000Z"), "every run at 09:00 UTC");
    }
    ensure!(described.next_times_unix_ms.len() == 5, "five next times");

    // The same report every second, to see it run.
    let demo = client
        .schedule(daily_report, "report-every-second", recipients)
        .interval(Duration::from_secs(1))
        .overlap(OverlapPolicy::Skip)
        .create()
        .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sent_by("report-every-second-").len() < 3 {
        ensure!(
            std::time::Instant::now() < deadline,
            "three reports within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    demo.pause("enough for the demo").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_pause = sent_by("report-every-second-").len();
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    ensure!(
        sent_by("report-every-second-").len() == after_pause,
        "nothing starts while paused"
    );
    demo.trigger().await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sent_by("report-every-second-").len() < after_pause + 1 {
        ensure!(std::time::Instant::now() < deadline, "the triggered report");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let described = demo.describe().await?;
    println!(
        "report-every-second: {} started, paused ({}), recent:",
        described.record.actions_started, described.record.note
    );
    for action in &described.record.recent_actions {
        println!(
            "  {} {:?} {}",
            cairn::format_time(action.nominal_unix_ms),
            action.kind,
            action.workflow_id.as_deref().unwrap_or("")
        );
    }
    for line in sent_by("report-every-second-").iter().take(3) {
        println!("  sent {line}");
    }
    // Each report's workflow is named after its scheduled time, and each time ran once.
    let names = sent_by("report-every-second-");
    let distinct: std::collections::BTreeSet<_> = names
        .iter()
        .map(|l| l.split(": ").next().unwrap_or(""))
        .collect();
    ensure!(distinct.len() == names.len(), "no scheduled time ran twice");
    ensure!(
        names
            .iter()
            .all(|l| l.starts_with("report-every-second-20")),
        "ids carry the scheduled time"
    );
    daily.delete().await?;
    demo.delete().await?;
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!("daily report example finished");
    Ok(())
}

fn sent_by(prefix: &str) -> Vec<String> {
    SENT.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|l| l.starts_with(prefix))
        .cloned()
        .collect()
}
