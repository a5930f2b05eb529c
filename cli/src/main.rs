//! `tandem`: the command line of the Tandem sync engine.

mod bench;
mod demo;
mod error;
mod local_cmds;
mod progress;
mod serve;
mod stdout;
mod verify_cmd;

use crate::stdout::say;
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
    /// The main job, end to end: PostgreSQL and two tenants' SQLite files, a full round trip.
    Demo(demo::Args),
    /// Sync a local file with the server: push local changes, pull the server's.
    Sync(local_cmds::SyncArgs),
    /// Check a local file against its partition on the server; --repair fixes the rows that differ.
    Verify(verify_cmd::Args),
    /// Run SQL on a local file, with the sync_* functions registered.
    Sql(local_cmds::SqlArgs),
    /// Re-encrypt a local file with a new key.
    Rekey(local_cmds::RekeyArgs),
    /// Measure sync throughput against plain-copy baselines, in a database of its own.
    Bench(bench::Args),
    /// Serve devices over HTTPS: each syncs with its token alone, through the sync_* functions.
    Serve(serve::Args),
}

/// A sync allocates and frees millions of small values (parsed JSON,
/// converted rows); mimalloc does that with markedly less CPU than the
/// system allocator, and the CPU is shared with the server on small hosts.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Sync(args) => args.json,
        Command::Sql(args) => args.json,
        Command::Verify(args) => args.json,
        _ => false,
    };
    let result: Result<(), CliError> = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Sync(args) => local_cmds::sync(&args),
        Command::Verify(args) => verify_cmd::run(&args),
        Command::Sql(args) => local_cmds::sql(&args),
        Command::Rekey(args) => local_cmds::rekey(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Serve(args) => serve::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if json => {
            let shown = serde_json::json!({"version": local_cmds::REPORT_VERSION, "error": {"message": error.to_string()}});
            say!("{shown}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("tandem: {error}");
            ExitCode::FAILURE
        }
    }
}
