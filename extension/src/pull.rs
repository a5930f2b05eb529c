//! `sync_select_changes`: the changes a client has not seen, in batches.

use pgrx::prelude::*;
use serde_json::Value;
use tandem_core::changeset::ChangesetWriter;
use tandem_core::options::{SelectOptions, MAX_ROW_BYTES};
use tandem_core::sql::partition::{bind_params, FilterValues};
use tandem_core::sql::{pull, Scope};
use tandem_core::types::{json_to_pg_text, pg_text_to_json, write_pg_text_as_json};
use tandem_core::watermark::{Phase, Snapshot, Watermark};
use tandem_core::{Error, Result};

use crate::fold;
use crate::json_text::JsonbText;
use crate::privileges;
use crate::registry::{self, Issued};
use crate::report::{self, required, run};
use crate::spi::{self, Spi};

/// The changes after watermark `since` (NULL: everything) that the client
/// may see, at most `max_rows` of them; pass the returned `watermark` to the
/// next call. A change is never skipped, even when transactions commit out
/// of xid order.
#[pg_extern(volatile, security_definer)]
fn sync_select_changes(scope: Option<&str>, since: Option<&str>, options: default!(Option<JsonbText>, "'{}'")) -> JsonbText {
    run("sync_select_changes", || {
        let scope = required(scope, "scope")?;
        let options = SelectOptions::parse(report::options(options)?.as_ref())?;
        spi::connect(|spi| select_changes(spi, scope, since, &options).map(JsonbText))
    })
}

/// `sync_select_changes` as `json`: the same changeset, as the text it was
/// written in, for agents that parse it themselves (a large batch skips
/// jsonb's parse and print).
#[pg_extern(volatile, security_definer)]
fn sync_select_changes_json(
    scope: Option<&str>,
    since: Option<&str>,
    options: default!(Option<JsonbText>, "'{}'"),
) -> crate::json_text::JsonText {
    run("sync_select_changes_json", || {
        let scope = required(scope, "scope")?;
        let options = SelectOptions::parse(report::options(options)?.as_ref())?;
        spi::connect(|spi| select_changes(spi, scope, since, &options).map(crate::json_text::JsonText))
    })
}

/// Where this call starts and which window it reads.
struct Window {
    until: Snapshot,
    since: Option<Snapshot>,
    phase: Phase,
    table: usize,
    after: Option<Vec<Value>>,
}

pub fn select_changes(spi: &mut Spi<'_>, scope_name: &str, since: Option<&str>, options: &SelectOptions) -> Result<String> {
    crate::guc::refuse_read_only("sync_select_changes")?;
    let (stored, identity) =
        registry::device_caller(spi, scope_name, options.client_id.as_deref(), options.token.as_deref(), options.params.as_ref())?;
    let scope = stored.scope();
    if let Some(asked) = options.schema_version.filter(|&asked| asked != stored.schema.version) {
        return Err(Error::SchemaMoved { scope: scope_name.to_string(), asked, now: stored.schema.version });
    }
    let client_id = identity.client_id.as_deref();
    let replica = options.replica.as_deref().or(client_id);
    let echoes = options.echoes.clone().unwrap_or_default();
    if let (Some(since), Some(replica)) = (since, replica) {
        if from_a_lost_history(spi, replica, client_id.is_some(), since, &echoes)? {
            return Err(Error::WatermarkTooOld(scope_name.to_string()));
        }
    }
    let params = identity.filter_params(&scope, options.params.is_some());
    let downloading: Vec<usize> = (0..scope.schema.tables.len()).filter(|&t| scope.table(t).direction.downloads()).collect();
    let bound = bind_params(&scope, &params, downloading.iter().copied())?;
    let (origin, _) = registry::server_id(spi)?;

    // The filter's casts and comparisons (a domain's check, say) run with
    // the scope owner's rights, never the extension's.
    let (changeset, needs) = privileges::as_scope_owner(spi, scope_name, |spi| {
        spi::with_text_settings(spi, |spi| {
            let own = spi::select(spi, "SELECT pg_current_xact_id_if_assigned()::text", &[], |row| spi::text(row, 1))?
                .into_iter()
                .next()
                .flatten();
            let mut window = start_window(spi, scope_name, since, own.as_deref())?;
            // After the window's end is taken: every change it covers has
            // committed, so the fold sees it; a table another call is
            // folding is read through its log instead (`busy`).
            let busy = fold::fold_unless_busy(spi, &scope, downloading.iter().copied())?;
            if let (Some(since), Some(purged)) = (&window.since, &stored.purged_before) {
                if purged.parse::<u64>().is_ok_and(|purged| since.xmin < purged) {
                    return Err(Error::WatermarkTooOld(scope_name.to_string()));
                }
            }
            // A watermark from before the scope's tracking was made (again):
            // what happened in between is unknown. (One this transaction took
            // after making it marks it running, yet saw it.)
            if let (Some(since), Some(tracked)) = (&window.since, &stored.tracked_since) {
                if own.as_deref() != Some(tracked.as_str()) && tracked.parse::<u64>().is_ok_and(|xid| !since.sees(xid)) {
                    return Err(Error::WatermarkTooOld(scope_name.to_string()));
                }
            }
            let max_rows = options.max_rows();
            let mut writer = ChangesetWriter::with_capacity(scope_name, &origin, batch_bytes(&scope, max_rows));
            let mut has_more = false;
            // Rows read count against max_rows even when skipped (changed after
            // the pull began), so a batch stays bounded.
            let mut budget_used: u64 = 0;
            let until = window.until.to_string();
            let since_text = window.since.as_ref().map(|s| s.to_string());
            // An incremental window reads only the tables where something
            // was stamped in it: a round on a wide scope costs what changed.
            let mut active = vec![true; scope.schema.tables.len()];
            if let Some(since) = &window.since {
                active.fill(false);
                spi::each_kept(spi, pull::changed_tables(&scope, &downloading, since.xmin), |t| {
                    if let Some(slot) = active.get_mut(t) {
                        *slot = true;
                    }
                    Ok(())
                })?;
                for &t in &busy {
                    active[t] = true;
                }
            }
            loop {
                if window.phase == Phase::Deletes && window.since.is_none() {
                    break;
                }
                if window.table >= scope.schema.tables.len() {
                    match window.phase {
                        Phase::Upserts => {
                            window.phase = Phase::Deletes;
                            window.table = 0;
                            continue;
                        }
                        Phase::Deletes => break,
                    }
                }
                if !scope.table(window.table).direction.downloads() || !active[window.table] {
                    window.table += 1;
                    window.after = None;
                    continue;
                }
                let remaining = max_rows.saturating_sub(budget_used);
                if remaining == 0 {
                    has_more = true;
                    break;
                }
                let fixed = pull::Window {
                    until: &until,
                    since: since_text.as_deref(),
                    own_xid: own.as_deref(),
                    replica,
                    echoes: &echoes,
                    limit: remaining.min(i64::MAX as u64) as i64,
                };
                let how = HowToRead {
                    through_log: busy.contains(&window.table),
                    respellings: options.respellings == Some(true),
                    max_bytes: options.max_bytes(),
                };
                let (read, last_key, full) = read_batch(spi, &scope, &window, &fixed, &bound, &how, &mut writer)?;
                budget_used += read as u64;
                if read as u64 == remaining || full {
                    window.after = last_key;
                    has_more = true;
                    break;
                }
                window.table += 1;
                window.after = None;
            }
            let watermark = if has_more {
                Watermark::Partial {
                    until: window.until.clone(),
                    since: window.since.clone(),
                    phase: window.phase,
                    table: window.table,
                    after: window.after.clone(),
                }
            } else {
                Watermark::Complete(window.until.clone())
            };
            // What this client still needs: changes after the window's start
            // (for a first pull, after its end). Cleanup keeps those.
            let needs = window.since.clone().unwrap_or_else(|| window.until.clone()).to_string();
            let issued = watermark.to_string();
            Ok((writer.finish(&issued, has_more), (needs, issued)))
        })
    })?;
    // A caller that says which schema it holds reads under that one only.
    // The scope read at the start may predate a change that committed
    // before the window began (whose rows the window then holds, a changed
    // filter's among them): read again now, after the window.
    if let Some(asked) = options.schema_version {
        let now = registry::schema_version(spi, scope_name)?;
        if now != stored.schema.version {
            return Err(Error::SchemaMoved { scope: scope_name.to_string(), asked, now });
        }
    }
    if let Some(id) = client_id {
        registry::record_client(spi, scope_name, id, &identity)?;
        let (needs, issued) = &needs;
        registry::record_replica(spi, replica.unwrap_or(id), id, Some(registry::Pulled { needs, issued }))?;
    }
    Ok(changeset)
}

/// Whether a replica's pull holds what the server's history never gave
/// it, so that history is gone (a dump restored over the database, a
/// point-in-time recovery): what the replica pulled or sent since may be
/// undone, and transactions may reuse its ids. It pulls again. That is a
/// watermark beyond the last one its pulls were given, or from a replica
/// no pull of it is on record for, or an answer to an upload newer than
/// its last one on record (its upload was answered, its pull failed).
/// A pull without a client records nothing, and is checked only against
/// what its replica's record holds.
fn from_a_lost_history(spi: &Spi<'_>, replica: &str, has_client: bool, since: &str, echoes: &[String]) -> Result<bool> {
    let since = Watermark::parse(since)?;
    let history = registry::history_of(spi, replica)?;
    let beyond = match history.issued {
        Issued::Unknown | Issued::NeverPulled => has_client,
        Issued::Unrecorded => false,
        Issued::Watermark(issued) => since.frontier() > Watermark::parse(&issued)?.frontier(),
    };
    if beyond || echoes.is_empty() || !has_client {
        return Ok(beyond);
    }
    let Some(last) = history.last_upload_version else { return Ok(true) };
    let xid = |text: &str| text.parse::<u64>();
    let last = xid(&last).map_err(|e| Error::Internal(format!("replica {replica}'s last upload version {last}: {e}")))?;
    let mut answered_beyond = false;
    for echo in echoes {
        let echo =
            xid(echo).map_err(|_| Error::InvalidOptions(format!("echoes: \"{echo}\" is not a version returned by sync_apply_changes")))?;
        answered_beyond |= echo > last;
    }
    Ok(answered_beyond)
}

/// A guess at a full batch's size (the widest table's rows at about 24
/// bytes a value), capped: the buffer grows past it if it must.
fn batch_bytes(scope: &Scope<'_>, max_rows: u64) -> usize {
    let widest = scope.schema.tables.iter().map(|t| t.columns.len()).max().unwrap_or(1);
    let bytes = max_rows.saturating_mul(48 + 24 * widest as u64);
    bytes.min(16 << 20) as usize
}

fn start_window(spi: &Spi<'_>, scope: &str, since: Option<&str>, own: Option<&str>) -> Result<Window> {
    let current = || -> Result<Snapshot> {
        let text = spi::current_snapshot(spi)?;
        let snapshot = Snapshot::parse(&text).ok_or_else(|| Error::Internal(format!("unreadable snapshot {text}")))?;
        // The caller's own uncommitted changes are included now and, being
        // marked in progress, sent again once committed.
        Ok(match own.and_then(|x| x.parse().ok()) {
            Some(xid) => snapshot.with_in_progress(xid),
            None => snapshot,
        })
    };
    let window = match since.map(Watermark::parse).transpose()? {
        None => return Ok(Window { until: current()?, since: None, phase: Phase::Upserts, table: 0, after: None }),
        Some(Watermark::Complete(since)) => Window { until: current()?, since: Some(since), phase: Phase::Upserts, table: 0, after: None },
        Some(Watermark::Partial { until, since, phase, table, after }) => Window { until, since, phase, table, after },
    };
    // A watermark from the future: the database went back in time (a
    // physical backup restored, a point-in-time recovery), so what the
    // device pulled after that point is not here, and transactions will
    // reuse those ids. It pulls afresh.
    let now = current()?;
    if window.until.xmax > now.xmax || window.since.as_ref().is_some_and(|since| since.xmax > now.xmax) {
        return Err(Error::WatermarkTooOld(scope.to_string()));
    }
    Ok(window)
}

/// The text of a resumed pull's position, checked: a stamp (incremental
/// upserts) then the key, each as its column's input text.
fn position_texts(scope: &Scope<'_>, t: usize, after: &[Value], stamped: bool) -> Result<Vec<String>> {
    let bad = || Error::InvalidWatermark(Value::Array(after.to_vec()).to_string());
    if after.len() != pull::position_len(scope, t, stamped) {
        return Err(bad());
    }
    let (stamp, key) = if stamped { (Some(&after[0]), &after[1..]) } else { (None, after) };
    let mut texts = Vec::with_capacity(after.len());
    if let Some(stamp) = stamp {
        texts.push(stamp.as_str().filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).ok_or_else(bad)?.to_string());
    }
    for (column, value) in scope.table(t).key_columns().iter().zip(key) {
        texts.push(json_to_pg_text(column.ty, value).ok().flatten().ok_or_else(bad)?);
    }
    Ok(texts)
}

/// How [`read_batch`] reads a table.
#[derive(Clone, Copy)]
struct HowToRead {
    /// Another call is folding the table (see `fold::fold_unless_busy`).
    through_log: bool,
    /// The caller takes deletes marked `respelled`.
    respellings: bool,
    /// Changeset bytes after which the batch ends.
    max_bytes: usize,
}

/// Reads one batch of table `window.table` into the changeset; returns how
/// many rows it read (the batch size counts rows read, so the next batch
/// starts after them), the position after the last one, and whether the
/// changeset reached `max_bytes` (the batch ends there).
fn read_batch(
    spi: &Spi<'_>,
    scope: &Scope<'_>,
    window: &Window,
    fixed: &pull::Window<'_>,
    filters: &FilterValues,
    how: &HowToRead,
    writer: &mut ChangesetWriter,
) -> Result<(usize, Option<Vec<Value>>, bool)> {
    let HowToRead { through_log, respellings, max_bytes } = *how;
    let t = window.table;
    let table = scope.table(t);
    let stamped = window.phase == Phase::Upserts && window.since.is_some();
    let position = window.after.as_deref().map(|after| position_texts(scope, t, after, stamped)).transpose()?;
    let names = table.column_names();
    let key_positions = table.key_indexes();
    let key_columns = table.key_columns();
    let limit = fixed.limit as usize;
    let mut read = 0;
    let mut started = false;
    let mut full = false;
    let mut last: Option<Vec<Value>> = None;
    // A row too large to move alone is an error naming it; one that fills
    // the batch ends it.
    let measure = |writer: &ChangesetWriter, before: usize, key: &dyn Fn() -> String| -> Result<bool> {
        let bytes = writer.len() - before;
        if bytes > MAX_ROW_BYTES {
            return Err(Error::RowTooLarge { table: table.name.clone(), key: key(), bytes });
        }
        Ok(writer.len() >= max_bytes)
    };
    let result = match window.phase {
        Phase::Upserts => spi::each(spi, pull::upserts(scope, t, fixed, position.as_deref(), filters, through_log), |row| {
            if full {
                return Ok(());
            }
            read += 1;
            let before = writer.len();
            if row.in_window {
                if !started {
                    writer.begin_table(&table.name, &names);
                    started = true;
                }
                let out = writer.begin_upsert(row.version);
                for (i, (column, value)) in table.columns.iter().zip(row.values).enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_pg_text_as_json(out, column.ty, *value);
                }
                writer.end_row();
            }
            let key =
                || Value::Array(key_positions.iter().map(|&k| pg_text_to_json(table.columns[k].ty, row.values[k])).collect()).to_string();
            full = measure(writer, before, &key)?;
            if full || read == limit {
                let mut position: Vec<Value> = key_positions.iter().map(|&k| pg_text_to_json(table.columns[k].ty, row.values[k])).collect();
                if let Some(stamp) = row.stamp {
                    position.insert(0, Value::String(stamp.to_string()));
                }
                last = Some(position);
            }
            Ok(())
        }),
        Phase::Deletes => spi::each(spi, pull::deletes(scope, t, fixed, position.as_deref(), filters, respellings), |row| {
            if full {
                return Ok(());
            }
            read += 1;
            let before = writer.len();
            if !started {
                writer.begin_table(&table.name, &names);
                started = true;
            }
            let out = writer.begin_delete(row.version, row.respelled);
            for (i, (column, value)) in key_columns.iter().zip(row.key).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_pg_text_as_json(out, column.ty, *value);
            }
            writer.end_row();
            let key = || Value::Array(key_columns.iter().zip(row.key).map(|(c, v)| pg_text_to_json(c.ty, *v)).collect()).to_string();
            full = measure(writer, before, &key)?;
            if full || read == limit {
                last = Some(key_columns.iter().zip(row.key).map(|(column, value)| pg_text_to_json(column.ty, *value)).collect());
            }
            Ok(())
        }),
    };
    match result {
        Err(error @ Error::RowTooLarge { .. }) => return Err(error),
        Err(e) => return Err(Error::Internal(format!("pull of {}: {e}", table.name))),
        Ok(_) => {}
    }
    Ok((read, last, full))
}
