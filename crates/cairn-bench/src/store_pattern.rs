//! The store benchmark: the commit pattern of a workflow actor's transition, batched.
//!
//! One *logical transaction* is what one workflow transition writes: three history events
//! appended (150 bytes each), the run's snapshot overwritten (400 bytes), the two mailbox
//! messages it consumed deleted, and two new mailbox messages (100 bytes each) standing in for
//! the messages other runs send it. Logical transactions rotate over `--runs` runs. A *commit*
//! carries `batch` logical transactions, as the engine's commit batching will; every commit is
//! durable (fsync) unless `--relaxed` says otherwise, and runs one after another on one thread,
//! as the engine's single committer does.

use anyhow::{Context, Result};
use cairn_store::keyspace::pack;
use cairn_store::{Store, Transaction};
use cairn_store_embedded::{Durability, EmbeddedConfig, EmbeddedStore};
use clap::{Args, ValueEnum};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct StoreArgs {
    /// Engines to measure.
    #[arg(long, value_delimiter = ',', default_values = ["cairn-embedded", "fjall", "redb"])]
    engines: Vec<Engine>,
    /// Logical transactions per commit.
    #[arg(long, value_delimiter = ',', default_values = ["1", "10", "100", "1000"])]
    batches: Vec<usize>,
    /// Seconds to run each (engine, batch) pair.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Distinct runs the logical transactions rotate over.
    #[arg(long, default_value_t = 10_000)]
    runs: u64,
    /// Hand commits to the OS without fsync (survives a process crash, not power loss).
    #[arg(long)]
    relaxed: bool,
    /// Where to create the temporary data directories (default: the system temp dir).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Engine {
    /// The Cairn embedded store through the store contract (fjall underneath).
    CairnEmbedded,
    /// fjall used directly: one write batch per commit.
    Fjall,
    /// redb used directly: one write transaction per commit.
    Redb,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::CairnEmbedded => "cairn-embedded",
            Engine::Fjall => "fjall",
            Engine::Redb => "redb",
        }
    }
}

enum Op {
    Set(Vec<u8>, &'static [u8]),
    Clear(Vec<u8>),
}

/// Generates the keys of successive logical transactions.
struct Pattern {
    runs: u64,
    next: u64,
    /// Per run: next history event id and next mailbox sequence.
    cursors: Vec<(u64, u64)>,
}

static HISTORY_EVENT: [u8; 150] = [b'h'; 150];
static SNAPSHOT: [u8; 400] = [b's'; 400];
static MESSAGE: [u8; 100] = [b'm'; 100];

impl Pattern {
    fn new(runs: u64) -> Self {
        Self {
            runs,
            next: 0,
            cursors: vec![(0, 0); usize::try_from(runs).expect("runs fit in memory")],
        }
    }

    fn logical_transaction(&mut self, ops: &mut Vec<Op>) {
        let run = self.next % self.runs;
        self.next += 1;
        let (event, seq) = &mut self.cursors[run as usize];
        for _ in 0..3 {
            ops.push(Op::Set(pack(&("run", run, "hist", *event)), &HISTORY_EVENT));
            *event += 1;
        }
        ops.push(Op::Set(pack(&("run", run, "state")), &SNAPSHOT));
        if *seq >= 2 {
            ops.push(Op::Clear(pack(&("run", run, "inbox", *seq - 2))));
            ops.push(Op::Clear(pack(&("run", run, "inbox", *seq - 1))));
        }
        for _ in 0..2 {
            ops.push(Op::Set(pack(&("run", run, "inbox", *seq)), &MESSAGE));
            *seq += 1;
        }
    }
}

struct Measurement {
    engine: Engine,
    batch: usize,
    commits: u64,
    seconds: f64,
    latencies: Vec<Duration>,
}

pub fn run(args: &StoreArgs) -> Result<()> {
    anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
    anyhow::ensure!(args.runs > 0, "--runs must be positive");
    anyhow::ensure!(
        args.batches.iter().all(|b| *b > 0),
        "--batches must be positive"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if !args.json {
        println!(
            "{:<15} {:>6} {:>10} {:>12} {:>14} {:>9} {:>9}",
            "engine", "batch", "commits", "commits/s", "logical tx/s", "p50 ms", "p99 ms"
        );
    }
    for &engine in &args.engines {
        for &batch in &args.batches {
            let dir = match &args.dir {
                Some(d) => tempfile::tempdir_in(d)?,
                None => tempfile::tempdir()?,
            };
            let m = match engine {
                Engine::CairnEmbedded => bench_cairn(args, batch, dir.path(), &runtime)?,
                Engine::Fjall => bench_fjall(args, batch, dir.path())?,
                Engine::Redb => bench_redb(args, batch, dir.path())?,
            };
            report(args, &m);
        }
    }
    Ok(())
}

fn report(args: &StoreArgs, m: &Measurement) {
    let mut sorted = m.latencies.clone();
    sorted.sort_unstable();
    let pct = |p: f64| {
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let commits_per_sec = m.commits as f64 / m.seconds;
    let ltx_per_sec = commits_per_sec * m.batch as f64;
    if args.json {
        let line = serde_json::json!({
            "scenario": "store",
            "engine": m.engine.name(),
            "durability": if args.relaxed { "os-buffered" } else { "fsync" },
            "batch": m.batch,
            "commits": m.commits,
            "seconds": m.seconds,
            "commits_per_sec": commits_per_sec,
            "logical_tx_per_sec": ltx_per_sec,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
        });
        println!("{line}");
    } else {
        println!(
            "{:<15} {:>6} {:>10} {:>12.0} {:>14.0} {:>9.3} {:>9.3}",
            m.engine.name(),
            m.batch,
            m.commits,
            commits_per_sec,
            ltx_per_sec,
            pct(0.50),
            pct(0.99)
        );
    }
}

/// Runs `commit` over successive batches until the time is up.
fn drive(
    args: &StoreArgs,
    engine: Engine,
    batch: usize,
    mut commit: impl FnMut(&[Op]) -> Result<()>,
) -> Result<Measurement> {
    let mut pattern = Pattern::new(args.runs);
    let mut ops = Vec::with_capacity(batch * 8);
    let budget = Duration::from_secs_f64(args.seconds);
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < budget {
        ops.clear();
        for _ in 0..batch {
            pattern.logical_transaction(&mut ops);
        }
        let t = Instant::now();
        commit(&ops)?;
        latencies.push(t.elapsed());
    }
    Ok(Measurement {
        engine,
        batch,
        commits: latencies.len() as u64,
        seconds: started.elapsed().as_secs_f64(),
        latencies,
    })
}

fn bench_cairn(
    args: &StoreArgs,
    batch: usize,
    dir: &std::path::Path,
    runtime: &tokio::runtime::Runtime,
) -> Result<Measurement> {
    let durability = if args.relaxed {
        Durability::OsBuffered
    } else {
        Durability::Fsync
    };
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir).durability(durability))?;
    drive(args, Engine::CairnEmbedded, batch, |ops| {
        let mut tx = store.begin()?;
        for op in ops {
            match op {
                Op::Set(k, v) => tx.set(k, v)?,
                Op::Clear(k) => tx.clear(k)?,
            }
        }
        runtime.block_on(tx.commit()).context("commit")?;
        Ok(())
    })
}

fn bench_fjall(args: &StoreArgs, batch: usize, dir: &std::path::Path) -> Result<Measurement> {
    let db = fjall::Database::builder(dir).open()?;
    let data = db.keyspace("data", fjall::KeyspaceCreateOptions::default)?;
    let mode = if args.relaxed {
        fjall::PersistMode::Buffer
    } else {
        fjall::PersistMode::SyncAll
    };
    drive(args, Engine::Fjall, batch, |ops| {
        let mut wb = db.batch().durability(Some(mode));
        for op in ops {
            match op {
                Op::Set(k, v) => wb.insert(&data, k.as_slice(), *v),
                Op::Clear(k) => wb.remove(&data, k.as_slice()),
            }
        }
        wb.commit()?;
        Ok(())
    })
}

fn bench_redb(args: &StoreArgs, batch: usize, dir: &std::path::Path) -> Result<Measurement> {
    const TABLE: redb::TableDefinition<'_, &[u8], &[u8]> = redb::TableDefinition::new("data");
    let db = redb::Database::create(dir.join("bench.redb"))?;
    let durability = if args.relaxed {
        redb::Durability::None
    } else {
        redb::Durability::Immediate
    };
    drive(args, Engine::Redb, batch, |ops| {
        let mut tx = db.begin_write()?;
        tx.set_durability(durability)?;
        {
            let mut table = tx.open_table(TABLE)?;
            for op in ops {
                match op {
                    Op::Set(k, v) => {
                        table.insert(k.as_slice(), *v)?;
                    }
                    Op::Clear(k) => {
                        table.remove(k.as_slice())?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    })
}
