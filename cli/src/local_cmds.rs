//! `tandem sql`, `tandem sync` and `tandem rekey`: work on a local file.

use crate::stdout::say;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fallible_iterator::FallibleIterator;
use serde_json::Value;
use signal_hook::consts::{SIGINT, SIGTERM};
use tandem_local::{Step, Store, SyncOptions, SyncReport, WatchStep};

use crate::progress::Progress;

use crate::error::CliError;

/// The local file and its key, shared by the commands that open one.
#[derive(clap::Args, Clone)]
pub struct LocalFile {
    /// The local SQLite file (`sql` and `sync` create it when missing;
    /// `verify` and `rekey` need it to exist).
    #[arg(long = "local", value_name = "FILE")]
    pub path: PathBuf,
    /// Encryption key of the file (SQLCipher).
    #[arg(long, env = "TANDEM_KEY", hide_env_values = true)]
    pub key: Option<String>,
}

impl LocalFile {
    pub fn open(&self) -> Result<Store, CliError> {
        Ok(Store::open_with_key(&self.path, self.key.as_deref())?)
    }
}

#[derive(clap::Args)]
pub struct SqlArgs {
    #[command(flatten)]
    file: LocalFile,
    /// SQL to run: one statement, or several separated by `;` that run in
    /// one transaction (all or nothing). The sync_* functions are available.
    sql: String,
    /// Print each row as a JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn sql(args: &SqlArgs) -> Result<(), CliError> {
    let store = args.file.open()?;
    let conn = store.connection();
    let invalid = |e: rusqlite::Error| CliError::Invalid(format!("SQL: {e}"));
    // Statements are prepared one after the other ran, so a script can
    // create a table and then use it.
    let mut batch = rusqlite::Batch::new(conn, &args.sql);
    let Some(mut first) = batch.next().map_err(invalid)? else { return Ok(()) };
    // One statement runs as it is (it may be a sync_run that commits batch
    // by batch); a script runs whole or not at all.
    let rest = first.expanded_sql().and_then(|text| args.sql.find(&text).map(|at| &args.sql[at + text.len()..]));
    let single = rest.is_some_and(|rest| rest.trim_matches(|c: char| c.is_whitespace() || c == ';').is_empty());
    let mut out = Output::default();
    if single {
        return print_rows(&mut first, args.json, &mut out);
    }
    conn.execute_batch("BEGIN").map_err(invalid)?;
    let result = print_rows(&mut first, args.json, &mut out).and_then(|()| {
        while let Some(mut statement) = batch.next().map_err(invalid)? {
            print_rows(&mut statement, args.json, &mut out)?;
        }
        Ok(())
    });
    drop(first);
    conn.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" }).map_err(invalid)?;
    result
}

/// Standard output, for rows. A reader that stops early (`| head`) closes
/// it: the statements still run to their end, without printing more.
#[derive(Default)]
struct Output {
    closed: bool,
}

impl Output {
    fn line(&mut self, text: &str) -> Result<(), CliError> {
        use std::io::Write;
        if self.closed {
            return Ok(());
        }
        match writeln!(std::io::stdout().lock(), "{text}") {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(CliError::Invalid(format!("cannot write the rows to standard output: {e}"))),
            Ok(()) => Ok(()),
        }
    }
}

/// Runs one statement and prints its rows, if it returns any: in text, a
/// header of column names first; in JSON, one object per row.
fn print_rows(statement: &mut rusqlite::Statement<'_>, json: bool, out: &mut Output) -> Result<(), CliError> {
    let invalid = |e: rusqlite::Error| CliError::Invalid(format!("SQL: {e}"));
    let columns = statement.column_count();
    let names: Vec<String> = statement.column_names().into_iter().map(str::to_string).collect();
    let mut rows = statement.query([]).map_err(invalid)?;
    let mut header = !json && columns > 0;
    while let Some(row) = rows.next().map_err(invalid)? {
        let cells: Vec<Value> = (0..columns)
            .map(|i| match row.get_ref(i) {
                Ok(rusqlite::types::ValueRef::Null) | Err(_) => Value::Null,
                Ok(rusqlite::types::ValueRef::Integer(n)) => Value::from(n),
                // JSON has no infinities: they print as text, as a changeset carries them.
                Ok(rusqlite::types::ValueRef::Real(f)) => serde_json::Number::from_f64(f).map(Value::Number).unwrap_or_else(|| {
                    Value::String(
                        if f.is_nan() {
                            "NaN"
                        } else if f > 0.0 {
                            "Infinity"
                        } else {
                            "-Infinity"
                        }
                        .into(),
                    )
                }),
                Ok(rusqlite::types::ValueRef::Text(t)) => Value::String(String::from_utf8_lossy(t).into_owned()),
                Ok(rusqlite::types::ValueRef::Blob(b)) => {
                    Value::String(format!("x'{}'", b.iter().map(|x| format!("{x:02x}")).collect::<String>()))
                }
            })
            .collect();
        if json {
            out.line(&Value::Object(names.iter().cloned().zip(cells).collect()).to_string())?;
        } else {
            if header {
                out.line(&names.join(" | "))?;
                header = false;
            }
            let shown: Vec<String> = cells
                .iter()
                .map(|c| match c {
                    Value::Null => "NULL".to_string(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            out.line(&shown.join(" | "))?;
        }
    }
    Ok(())
}

/// Which server and scope, as whom: shared by the commands that talk to a
/// server about a file.
#[derive(clap::Args)]
pub struct ServerArgs {
    /// The server: postgres://user@host:port/database[?sslmode=verify-full]
    /// (the password from PGPASSWORD, or in the URL; PGSSLMODE and
    /// PGSSLROOTCERT where the URL has no sslmode or sslrootcert), or a
    /// gateway's https:// URL.
    #[arg(long, env = "TANDEM_REMOTE", hide_env_values = true)]
    pub remote: String,
    /// The scope.
    #[arg(long)]
    pub scope: String,
    /// A client token from the server's sync_register_client (the server then
    /// uses the parameters it was registered with).
    #[arg(long, env = "TANDEM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM file of the root certificate the server's must chain to (as
    /// sslrootcert=FILE in the URL; use with sslmode=verify-full).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

impl ServerArgs {
    pub fn ca_cert(&self) -> Option<String> {
        self.ca_cert.as_ref().map(|p| p.to_string_lossy().into_owned())
    }
}

#[derive(clap::Args)]
pub struct SyncArgs {
    #[command(flatten)]
    file: LocalFile,
    #[command(flatten)]
    server: ServerArgs,
    /// A filter parameter, name=value (a number, true/false, a JSON list, or
    /// text); repeatable. Only the scope's owner may pass parameters; a
    /// device passes --token, which carries its own.
    #[arg(long = "param", value_name = "NAME=VALUE", conflicts_with = "token")]
    params: Vec<String>,
    /// Sync this file under a new identity: with another server or database
    /// than it synced with, or as the client of a new token after its old
    /// one was revoked. It pulls the scope again and sends its unsent changes.
    #[arg(long)]
    rebind: bool,
    /// Download the scope afresh, keeping the file's unsent changes (they
    /// are sent as usual) and dropping rows the server no longer holds for
    /// it: for a copy that drifted. Works for any file that synced before.
    #[arg(long)]
    reinit: bool,
    /// Rows per batch.
    #[arg(long)]
    max_rows: Option<u64>,
    /// Bytes of changeset after which a batch ends (default 64 MB).
    #[arg(long)]
    max_bytes: Option<u64>,
    /// Keep the file live until SIGINT or SIGTERM: a round whenever the
    /// server says the scope saw a commit or the file has unsent changes.
    /// A lost network is waited out; the report sums the rounds.
    #[arg(long)]
    watch: bool,
    /// Print the report (or the error) as JSON, with a format version.
    #[arg(long)]
    pub json: bool,
}

/// The version of `tandem sync --json`'s report (docs/reference.md).
pub const REPORT_VERSION: u32 = 1;

/// `tenant=3` -> ("tenant", 3); `region=eu` -> ("region", "eu").
pub fn parse_param(text: &str) -> Result<(String, Value), CliError> {
    let (name, value) = text.split_once('=').ok_or_else(|| CliError::Invalid(format!("--param {text}: write it as name=value")))?;
    let value = serde_json::from_str::<Value>(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((name.to_string(), value))
}

/// A sync that fails leaves no file behind where there was none and it
/// stored nothing (a refused first sync would leave an empty, maybe
/// unencrypted one). A file that holds anything stays: a watch that made
/// its file and ran for hours, or a first download cut short, which the
/// next sync resumes.
pub fn sync(args: &SyncArgs) -> Result<(), CliError> {
    let existed = args.file.path.exists();
    let result = sync_file(args);
    if result.is_err() && !existed {
        let worth_keeping = args.file.open().map_or(true, |store| store.holds_data(&args.server.scope));
        if !worth_keeping {
            Store::remove(&args.file.path);
        }
    }
    result
}

fn sync_file(args: &SyncArgs) -> Result<(), CliError> {
    let store = args.file.open()?;
    let params = if args.params.is_empty() { None } else { Some(args.params.iter().map(|p| parse_param(p)).collect::<Result<_, _>>()?) };
    let options = SyncOptions {
        params,
        max_rows: args.max_rows,
        max_bytes: args.max_bytes,
        token: args.server.token.clone(),
        ca_cert: args.server.ca_cert(),
        rebind: args.rebind,
        reinit: args.reinit,
        watch: None,
    };
    options.check()?;
    let report = if args.watch { watch(&store, args, &options)? } else { one_round(&store, args, &options)? };
    if args.json {
        let mut shown = serde_json::to_value(&report).map_err(|e| CliError::Invalid(format!("the report: {e}")))?;
        shown["version"] = Value::from(REPORT_VERSION);
        say!("{shown}");
    } else {
        print_report(&report);
    }
    Ok(())
}

/// One round, its progress on a terminal.
fn one_round(store: &Store, args: &SyncArgs, options: &SyncOptions) -> Result<SyncReport, CliError> {
    let mut progress = (!args.json).then(|| Progress::new("syncing"));
    let (mut up, mut to_push, mut down) = (0, 0, 0);
    let report = store.sync_observed(&args.server.remote, &args.server.scope, options, &mut |step| {
        match step {
            Step::ToPush(n) => to_push = n,
            Step::Pushed(n) => up += n,
            Step::Pulled(n) => down += n,
        }
        if let Some(p) = progress.as_mut() {
            p.show(up + down, &format!("{up}/{} change(s) up, {down} row(s) down", to_push.max(up)));
        }
    })?;
    if let Some(p) = progress {
        p.finish();
    }
    Ok(report)
}

/// Rounds until SIGINT or SIGTERM; the round under way then finishes. A
/// second signal ends the process at once.
fn watch(store: &Store, args: &SyncArgs, options: &SyncOptions) -> Result<SyncReport, CliError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)))
            .map_err(|e| CliError::Invalid(format!("cannot watch for signal {signal}: {e}")))?;
    }
    let mut progress = (!args.json).then(|| Progress::new("watching"));
    let (mut up, mut down) = (0, 0);
    let report = store.watch(&args.server.remote, &args.server.scope, options, &|| stop.load(Ordering::Relaxed), &mut |step| {
        // A watch that waits out a failure says so each time, also where
        // no terminal shows progress (a service's log): a device whose
        // changes cannot go up must not wait in silence.
        if let WatchStep::Retrying { error, retry_in } = &step {
            let line = format!("{error}; trying again in {:.1} s", retry_in.as_secs_f64());
            match progress.as_ref().filter(|_| std::io::stderr().is_terminal()) {
                Some(p) => p.say(&line),
                None => eprintln!("tandem sync --watch: {line}"),
            }
        }
        let Some(p) = progress.as_mut() else { return };
        match step {
            WatchStep::Batch(Step::ToPush(_)) => p.show(up + down, "syncing"),
            WatchStep::Batch(Step::Pushed(n)) => up += n,
            WatchStep::Batch(Step::Pulled(n)) => down += n,
            WatchStep::Round(round) => {
                if round.pushed + round.pulled + round.removed > 0 || !round.conflicts.is_empty() || !round.rejected.is_empty() {
                    p.say(&format!(
                        "round: {} change(s) up, {} down, {} conflict(s), {} refused",
                        round.pushed,
                        round.pulled,
                        round.conflicts.len(),
                        round.rejected.len()
                    ));
                }
            }
            WatchStep::Waiting => p.show(up + down, "waiting for a change on the server or in the file"),
            WatchStep::Retrying { retry_in, .. } => p.show(up + down, &format!("trying again in {:.1} s", retry_in.as_secs_f64())),
        }
    })?;
    if let Some(p) = progress {
        p.finish();
    }
    // Changes a failed upload left: said, so a watch that stops is never
    // taken for one that sent everything.
    let conn = store.connection();
    let unsent = tandem_local::status::pending(conn, &tandem_local::meta::require(conn, &args.server.scope)?)?;
    if unsent > 0 {
        eprintln!("tandem sync --watch: {unsent} change(s) of this file not sent yet; they go with its next sync");
    }
    Ok(report)
}

pub fn print_report(report: &SyncReport) {
    say!(
        "synced scope {}{}: {} change(s) up, {} down, {} conflict(s), {} refused{}",
        report.scope,
        report.rounds.map(|n| format!(" in {n} round(s)")).unwrap_or_default(),
        report.pushed,
        report.pulled,
        report.conflicts.len(),
        report.rejected.len(),
        if report.provisioned { format!(", schema v{} provisioned", report.schema_version) } else { String::new() }
    );
    for c in &report.conflicts {
        say!("  conflict {} {}: {} -> {}", c.table, Value::Array(c.key.clone()), c.kind.as_str(), c.decision.as_str());
    }
    for r in &report.rejected {
        say!("  refused {} {}: {} (kept in tandem_rejected)", r.table, Value::Array(r.key.clone()), r.reason);
    }
    if report.resynced {
        say!(
            "  pulled this file's partition again (asked for, a new client, or a server that could not vouch for the file's \
             watermark: restored or moved); {} row(s) the server no longer has were removed from the file",
            report.removed
        );
    }
    if report.kept_local > 0 {
        say!("  {} server change(s) wait behind unsent local changes", report.kept_local);
    }
    if report.not_stored > 0 {
        say!(
            "  {} server row(s) this file's own constraints refuse wait aside (tandem_rejected, kind not_stored; tried again each sync)",
            report.not_stored
        );
    }
}

#[derive(clap::Args)]
pub struct RekeyArgs {
    #[command(flatten)]
    file: LocalFile,
    /// The new key.
    #[arg(long = "new-key", env = "TANDEM_NEW_KEY", hide_env_values = true)]
    new_key: String,
}

pub fn rekey(args: &RekeyArgs) -> Result<(), CliError> {
    if !args.file.path.exists() {
        return Err(CliError::Invalid(format!("{} does not exist: rekey changes the key of an existing file", args.file.path.display())));
    }
    let store = args.file.open()?;
    store.rekey(&args.new_key)?;
    say!("{} is encrypted with the new key", args.file.path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_typed_when_they_look_typed() {
        assert_eq!(parse_param("tenant=3").unwrap(), ("tenant".into(), Value::from(3)));
        assert_eq!(parse_param("t=[1,2]").unwrap().1, serde_json::json!([1, 2]));
        assert_eq!(parse_param("region=eu-west").unwrap().1, Value::from("eu-west"));
        assert!(parse_param("tenant").is_err());
    }
}
