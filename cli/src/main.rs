//! `tandem`: the command line of the Tandem sync engine.

mod bench;
mod error;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::CliError;

/// Where the PostgreSQL server is, when a command is not told.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Parser)]
#[command(name = "tandem", version, about = "Two-way sync between PostgreSQL and local SQLite files")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure sync throughput against plain-copy baselines, in a database of its own.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<(), CliError> = match cli.command {
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tandem: {error}");
            ExitCode::FAILURE
        }
    }
}
