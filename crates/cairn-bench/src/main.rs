//! `cairn-bench`: Cairn's load generator.
//!
//! `cairn-bench store` measures the store under the engine's commit pattern; `cairn-bench run
//! --scenario w1|w2|w2-latency|w3|w4` runs the workflow scenarios of DESIGN §9 (`--nodes N`:
//! on an in-process cluster); `cairn-bench failover` times how long a killed node's shards stay
//! dark.

mod failover;
mod store_pattern;
mod workflows;

use clap::{Parser, Subcommand};

/// The same allocator as the `cairn` server binary, so figures are the product's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(name = "cairn-bench", about = "Cairn's load generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Durable commits/s and logical transactions/s of the embedded engines under the workflow
    /// commit pattern, at several batch sizes.
    Store(store_pattern::StoreArgs),
    /// The workflow scenarios of DESIGN §9 (W1, W2, W2-latency, W3, W4) on the durable
    /// embedded store, load generator in the same process.
    Run(workflows::RunArgs),
    /// Serve the bench workflows over the HTTP API (for `run --address`).
    Serve(workflows::ServeArgs),
    /// Kill a node of an in-process cluster under load and time how long its shards stay
    /// dark (from the kill to each shard committing again on a survivor).
    Failover(failover::FailoverArgs),
}

fn main() -> anyhow::Result<()> {
    // `cairn-bench --scenario w2 ...` (the form the issues and reports use) means `run`.
    let mut argv: Vec<String> = std::env::args().collect();
    if argv.get(1).is_some_and(|a| a.starts_with("--scenario")) {
        argv.insert(1, "run".to_string());
    }
    match Cli::parse_from(argv).command {
        Command::Store(args) => store_pattern::run(&args),
        Command::Run(args) => workflows::run(&args),
        Command::Serve(args) => workflows::serve(&args),
        Command::Failover(args) => failover::run(&args),
    }
}
