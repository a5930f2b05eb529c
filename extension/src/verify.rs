//! The server's `sync_verify`: one step of a file's check of its partition
//! (see `tandem_core::verify`). It reads every row of the client's
//! partition in the user table, hashing each in its changeset form; rows
//! changed after the file's watermark, and keys that left the partition
//! since, are not hashed but named as pending.

use std::collections::HashSet;

use pgrx::prelude::*;
use serde_json::Value;
use tandem_core::changeset::{Changeset, Op, RowChange, TableChanges, FORMAT};
use tandem_core::sql::partition::{bind_params, FilterValues};
use tandem_core::sql::{pull, tracking, verify as sql, Scope};
use tandem_core::types::write_pg_text_as_json;
use tandem_core::verify::{self as core_verify, key_text, Buckets, RowDigest, Step, TableAnswer, TableAsk, VerifyAnswer, VerifyOptions};
use tandem_core::watermark::{Snapshot, Watermark};
use tandem_core::{Error, Result};

use crate::fold;
use crate::json_text::JsonbText;
use crate::privileges;
use crate::registry;
use crate::report::{self, required, run};
use crate::spi::{self, Spi};

/// Rows read per query while walking a partition.
const BATCH: i64 = 10_000;

/// One step of a file's verify of its partition against the server (see
/// design.md, Verify): bucket digests, row hashes in some buckets, or rows
/// by key. Read-only; a device calls it with its token.
#[pg_extern(volatile, security_definer)]
fn sync_verify(scope: Option<&str>, options: default!(Option<JsonbText>, "'{}'")) -> JsonbText {
    run("sync_verify", || {
        let scope = required(scope, "scope")?;
        let options = VerifyOptions::parse(report::options(options)?.as_ref())?;
        let answer = spi::connect(|spi| verify(spi, scope, &options))?;
        serde_json::to_string(&answer).map(JsonbText).map_err(|e| Error::Internal(format!("verify answer: {e}")))
    })
}

/// What one table's walk is asked to collect.
struct Walk<'a> {
    ask: Option<&'a TableAsk>,
    excluded: HashSet<String>,
    only: HashSet<u32>,
    keys: HashSet<String>,
}

fn verify(spi: &mut Spi<'_>, scope_name: &str, options: &VerifyOptions) -> Result<VerifyAnswer> {
    let (stored, identity) =
        registry::device_caller(spi, scope_name, options.client_id.as_deref(), options.token.as_deref(), options.params.as_ref())?;
    let scope = stored.scope();
    let since = match options.since.as_deref().map(Watermark::parse).transpose()? {
        Some(Watermark::Complete(since)) => since,
        _ => {
            return Err(Error::InvalidOptions(
                "verify compares a file that finished a pull: pass its complete watermark as \"since\" (sync first)".into(),
            ))
        }
    };
    if let Some(purged) = stored.purged_before.as_deref().and_then(|p| p.parse::<u64>().ok()) {
        if since.xmin < purged {
            return Err(Error::WatermarkTooOld(scope_name.to_string()));
        }
    }
    if let Some(tracked) = stored.tracked_since.as_deref().and_then(|t| t.parse::<u64>().ok()) {
        if !since.sees(tracked) {
            return Err(Error::WatermarkTooOld(scope_name.to_string()));
        }
    }
    let tables = chosen_tables(&scope, options)?;
    let params = identity.filter_params(&scope, options.params.is_some());
    let bound = bind_params(&scope, &params, tables.iter().map(|(t, _)| *t))?;
    let (origin, _) = registry::server_id(spi)?;

    privileges::as_scope_owner(spi, scope_name, |spi| {
        spi::with_text_settings(spi, |spi| {
            let now_text = spi::current_snapshot(spi)?;
            let now = Snapshot::parse(&now_text).ok_or_else(|| Error::Internal(format!("unreadable snapshot {now_text}")))?;
            if since.xmax > now.xmax {
                // From a history this database no longer has (see pulls).
                return Err(Error::WatermarkTooOld(scope_name.to_string()));
            }
            fold::fold(spi, &scope, tables.iter().map(|(t, _)| *t))?;
            let mut answer = VerifyAnswer { step: options.step, tables: Vec::new(), changeset: None };
            let mut fetched = Vec::new();
            for (t, ask) in &tables {
                let walk = Walk {
                    ask: *ask,
                    excluded: ask.map(|a| a.exclude.iter().map(|k| key_text(k)).collect()).unwrap_or_default(),
                    only: ask.map(|a| a.only.iter().copied().collect()).unwrap_or_default(),
                    keys: ask.map(|a| a.keys.iter().map(|k| key_text(k)).collect()).unwrap_or_default(),
                };
                let since = since.to_string();
                let (mut table_answer, mut rows) = walk_table(spi, &scope, *t, &since, &bound, options.step, &walk)?;
                if rows.iter().any(|row| row.version.is_none()) {
                    // Rows tracking never saw: adopted now, so the file
                    // gets them with a version (its edits are then judged
                    // against it) and every other device of the partition
                    // gets them in its next pull.
                    spi::exec(spi, &tracking::adopt_untracked(&scope, *t), &[])?;
                    fold::fold(spi, &scope, [*t])?;
                    (table_answer, rows) = walk_table(spi, &scope, *t, &since, &bound, options.step, &walk)?;
                }
                if !rows.is_empty() {
                    fetched.push(TableChanges { name: scope.table(*t).name.clone(), columns: scope.table(*t).column_names(), rows });
                }
                answer.tables.push(table_answer);
            }
            if options.step == Step::Fetch {
                answer.changeset = Some(Changeset {
                    format: FORMAT,
                    scope: scope_name.to_string(),
                    origin: origin.clone(),
                    tables: fetched,
                    watermark: None,
                    has_more: false,
                });
            }
            Ok(answer)
        })
    })
}

/// The tables a step covers, by schema position: those asked for (each
/// must be one the client downloads), or for `buckets` with none asked,
/// every table the client downloads.
fn chosen_tables<'o>(scope: &Scope<'_>, options: &'o VerifyOptions) -> Result<Vec<(usize, Option<&'o TableAsk>)>> {
    if options.tables.is_empty() && options.step == Step::Buckets {
        return Ok((0..scope.schema.tables.len()).filter(|&t| scope.table(t).direction.downloads()).map(|t| (t, None)).collect());
    }
    let mut out = Vec::new();
    for ask in &options.tables {
        let table = scope.schema.table(&ask.name)?;
        if !table.direction.downloads() {
            return Err(Error::InvalidOptions(format!("\"{}\" is upload_only: the scope sends none of its rows to devices", ask.name)));
        }
        ask.check(table)?;
        let t = scope.schema.position(table);
        if out.iter().any(|(seen, _)| *seen == t) {
            return Err(Error::InvalidOptions(format!("table \"{}\" is named twice", ask.name)));
        }
        out.push((t, Some(ask)));
    }
    Ok(out)
}

/// Walks table `t`'s partition in key order, batch by batch, and then its
/// exits since the watermark; gives the table's answer and, for a fetch,
/// the rows asked for.
#[allow(clippy::too_many_arguments)]
fn walk_table(
    spi: &mut Spi<'_>,
    scope: &Scope<'_>,
    t: usize,
    since: &str,
    bound: &FilterValues,
    step: Step,
    walk: &Walk<'_>,
) -> Result<(TableAnswer, Vec<RowChange>)> {
    let table = scope.table(t);
    let key_positions = table.key_indexes();
    let count = walk.ask.and_then(|a| a.buckets).unwrap_or(core_verify::DEFAULT_BUCKETS);
    let mut buckets = Buckets::new(count);
    let mut answer = TableAnswer { name: table.name.clone(), buckets: count, ..TableAnswer::default() };
    let mut rows = Vec::new();
    let mut text = String::new();
    let mut position: Option<Vec<String>> = None;
    // Every row of the partition; one whose last change the watermark does
    // not see is the next pull's.
    loop {
        let mut read = 0;
        let mut last: Option<Vec<String>> = None;
        spi::each(spi, sql::partition_rows(scope, t, since, position.as_deref(), BATCH, bound), |row| {
            read += 1;
            text.clear();
            text.push('[');
            for (i, (column, value)) in table.columns.iter().zip(row.values).enumerate() {
                if i > 0 {
                    text.push(',');
                }
                write_pg_text_as_json(&mut text, column.ty, *value);
            }
            text.push(']');
            let values: Vec<Value> =
                serde_json::from_str(&text).map_err(|e| Error::Internal(format!("a row of {} as JSON: {e}", table.name)))?;
            let key: Vec<Value> = key_positions.iter().map(|&k| values[k].clone()).collect();
            last = Some(key_positions.iter().map(|&k| row.values[k].unwrap_or_default().to_string()).collect());
            if !row.settled {
                answer.pending.push(key);
                return Ok(());
            }
            let text_key = key_text(&key);
            if walk.excluded.contains(&text_key) {
                return Ok(());
            }
            let digest = RowDigest::of(table, &values);
            match step {
                Step::Buckets => buckets.add(&digest),
                Step::Rows if walk.only.contains(&digest.bucket(count)) => {
                    answer.rows += 1;
                    answer.digests.push((key, digest.row_hex()));
                }
                Step::Fetch if walk.keys.contains(&text_key) => {
                    answer.rows += 1;
                    rows.push(RowChange {
                        op: Op::Upsert,
                        version: row.version.map(str::to_string),
                        base: None,
                        seq: None,
                        values: Some(values),
                        key: None,
                        moved_from: None,
                        respelled: None,
                    });
                }
                Step::Rows | Step::Fetch => {}
            }
            Ok(())
        })?;
        if read < BATCH as usize {
            break;
        }
        position = last;
    }
    // Keys that left the partition since the watermark: the file still
    // holds them until its next pull. Those that left while the walk ran
    // (a delete committed after the step's first fold) are in the log:
    // folded now, and read up to now.
    fold::fold(spi, scope, [t])?;
    let now = spi::current_snapshot(spi)?;
    let gone = pull::Window { until: &now, since: Some(since), own_xid: None, replica: None, echoes: &[], limit: BATCH };
    let mut position: Option<Vec<String>> = None;
    loop {
        let mut read = 0;
        let mut last = None;
        spi::each(spi, pull::deletes(scope, t, &gone, position.as_deref(), bound, false), |row| {
            read += 1;
            text.clear();
            text.push('[');
            for (i, (column, value)) in table.key_columns().iter().zip(row.key).enumerate() {
                if i > 0 {
                    text.push(',');
                }
                write_pg_text_as_json(&mut text, column.ty, *value);
            }
            text.push(']');
            let key: Vec<Value> =
                serde_json::from_str(&text).map_err(|e| Error::Internal(format!("a key of {} as JSON: {e}", table.name)))?;
            answer.pending.push(key);
            last = Some(row.key.iter().map(|v| v.unwrap_or_default().to_string()).collect());
            Ok(())
        })?;
        if read < BATCH as usize {
            break;
        }
        position = last;
    }
    if answer.pending.len() > core_verify::MAX_PENDING {
        return Err(Error::InvalidOptions(format!(
            "{} rows of {} changed since the file's watermark: sync the file, then verify it",
            answer.pending.len(),
            table.name
        )));
    }
    if step == Step::Buckets {
        answer.rows = buckets.rows;
        answer.sums = buckets.encode();
    }
    Ok((answer, rows))
}
