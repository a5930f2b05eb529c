//! `tandem verify`: checks a local file against its partition on the
//! server, and with `--repair` fixes exactly the rows that differ.

use crate::stdout::say;
use serde_json::Value;
use tandem_local::verify::{Options, VerifyReport};

use crate::error::CliError;
use crate::local_cmds::{LocalFile, ServerArgs, REPORT_VERSION};
use crate::progress::Progress;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    file: LocalFile,
    #[command(flatten)]
    server: ServerArgs,
    /// Write the server's rows where the file differs and remove rows the
    /// server does not hold; rows with unsent changes are kept (a sync
    /// sends them).
    #[arg(long)]
    repair: bool,
    /// Print the report (or the error) as JSON, with a format version.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> Result<(), CliError> {
    if !args.file.path.exists() {
        return Err(CliError::Invalid(format!(
            "{} does not exist: verify checks a file that synced (tandem sync makes it)",
            args.file.path.display()
        )));
    }
    let store = args.file.open()?;
    let options = Options { token: args.server.token.clone(), ca_cert: args.server.ca_cert(), repair: args.repair };
    let progress = (!args.json).then(|| Progress::new("verifying"));
    let report = store.verify(&args.server.remote, &args.server.scope, &options);
    if let Some(p) = progress {
        p.finish();
    }
    let report = report?;
    if args.json {
        let mut shown = serde_json::to_value(&report).map_err(|e| CliError::Invalid(format!("the report: {e}")))?;
        shown["version"] = Value::from(REPORT_VERSION);
        say!("{shown}");
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(report: &VerifyReport) {
    let verdict = if report.equal { "holds its partition exactly" } else { "differs from its partition" };
    say!(
        "scope {}: the file {verdict} ({} row(s) checked, {} KB exchanged, {} ms)",
        report.scope,
        report.rows_checked,
        report.bytes_moved.div_ceil(1024),
        report.took_ms
    );
    for t in &report.tables {
        // "3 missing: [7] [9] [12]", the first five keys.
        let shown = |what: &str, keys: &[Value]| {
            let mut text = format!("{} {what}", keys.len());
            if !keys.is_empty() {
                text.push_str(": ");
                text.push_str(&keys.iter().take(5).map(Value::to_string).collect::<Vec<_>>().join(" "));
                if keys.len() > 5 {
                    text.push_str(" ...");
                }
            }
            text
        };
        if t.differs() {
            say!(
                "  {}: {}; {}; {} ({} of {} ranges differ)",
                t.table,
                shown("missing", &t.missing),
                shown("extra", &t.extra),
                shown("different", &t.different),
                t.ranges_differ,
                t.buckets
            );
        }
        if t.pending > 0 {
            say!("  {}: {} row(s) changed since the last sync, left for the next one", t.table, t.pending);
        }
    }
    match report.repaired {
        Some(n) if report.kept_local > 0 => {
            say!("repaired {n} row(s); {} row(s) changed in the file meanwhile were kept and go up with the next sync", report.kept_local)
        }
        Some(n) => say!("repaired {n} row(s)"),
        None if !report.equal => say!("run it again with --repair to fix exactly these rows"),
        None => {}
    }
}
