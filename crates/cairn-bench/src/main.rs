//! `cairn-bench`: Cairn's load generator.
//!
//! Today it measures the store under the engine's commit pattern (`cairn-bench store`); the
//! workflow scenarios of DESIGN §9 (W1–W4) join it with the engine.

mod store_pattern;

use clap::{Parser, Subcommand};

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Store(args) => store_pattern::run(&args),
    }
}
