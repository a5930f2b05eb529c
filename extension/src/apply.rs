//! `sync_apply_changes`: applies an upload in one transaction, set-based.
//!
//! Order of work: check the whole changeset (types, directions, partitions)
//! before writing anything; classify every row against the server's version
//! in one join per table; settle conflicts by policy; write with one
//! statement per kind of write, comparing each row's `xmin` with the one
//! classified so a concurrent change is classified again instead of being
//! overwritten; log conflicts; record the client's progress.

use std::collections::{BTreeMap, HashMap};

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use serde_json::{json, Map, Value};
use tandem_core::apply_result::{AppliedRow, ApplyResult, ConflictReport, CurrentRow};
use tandem_core::changeset::{Changeset, Op};
use tandem_core::conflict::{classify, parse_resolution, ConflictKind, Decision, Outcome, Resolution, ServerRow};
use tandem_core::ident::quote_ident;
use tandem_core::options::{ApplyOptions, Policy};
use tandem_core::setup::Filter;
use tandem_core::sql::partition::bind_params;
use tandem_core::sql::{apply as sql, upsert_row, Dialect, Scope};
use tandem_core::types::{json_to_pg_text, pg_text_to_json};
use tandem_core::validate::{check_changeset, CheckedRow, CheckedTable};
use tandem_core::{Error, Rejection, RejectionKind, Result};

use crate::fold;
use crate::json_text::JsonbText;
use crate::registry;
use crate::report::run;
use crate::spi::{self, Client};

/// Applies a changeset from a client in one transaction and returns the new
/// versions of the rows it wrote and how each conflict ended. Any refused row
/// fails the whole changeset, with each refused row named in the DETAIL.
#[pg_extern(volatile)]
fn sync_apply_changes(scope: &str, changeset: JsonbText, options: default!(Option<JsonbText>, "'{}'")) -> JsonbText {
    run("sync_apply_changes", || {
        let options = ApplyOptions::parse(options.map(|o| o.parse()).as_ref())?;
        let changeset = Changeset::parse(&changeset.0)?;
        Spi::connect_mut(|client| apply_changes(client, scope, changeset, &options).map(|r| JsonbText::from_value(&r)))
    })
}

/// `sync_apply_changes` with `json` text both ways, for agents that send the
/// changeset as they wrote it and parse the result themselves (no jsonb
/// parse and print of either).
#[pg_extern(volatile)]
fn sync_apply_changes_json(scope: &str, changeset: crate::json_text::JsonText, options: default!(Option<JsonbText>, "'{}'")) -> crate::json_text::JsonText {
    run("sync_apply_changes_json", || {
        let options = ApplyOptions::parse(options.map(|o| o.parse()).as_ref())?;
        let changeset = Changeset::parse(&changeset.0)?;
        Spi::connect_mut(|client| apply_changes(client, scope, changeset, &options))
            .map(|r| crate::json_text::JsonText(serde_json::to_string(&r).unwrap_or_default()))
    })
}

/// What happens to one uploaded row.
#[derive(Clone, Debug, PartialEq)]
enum Verdict {
    /// Write as sent.
    Apply,
    /// Already applied from an earlier upload (same client, same seq).
    AlreadyApplied,
    /// Both sides agree already (a delete of a row the server lacks).
    Converged,
    Conflict(ConflictKind),
}

/// The server's side of one uploaded row, from classification.
#[derive(Clone, Debug, Default)]
struct Seen {
    version: Option<String>,
    own: bool,
    live: bool,
    xmin: Option<String>,
    server_in: bool,
    new_in: bool,
}

/// How a conflict ended.
#[derive(Clone, Debug)]
struct Settled {
    kind: ConflictKind,
    decision: Decision,
    /// The resolver's row, for `Decision::Merged`.
    merged: Option<Map<String, Value>>,
    reason: Option<String>,
}

struct Plan<'s> {
    t: usize,
    checked: CheckedTable<'s, Option<String>>,
    seen: Vec<Seen>,
    verdicts: Vec<Verdict>,
    settled: HashMap<usize, Settled>,
    /// Rows written as the client sent them.
    written: Vec<usize>,
    /// Written rows that the server stores differently from what was sent.
    rewritten: HashMap<usize, Map<String, Value>>,
}

pub fn apply_changes(client: &mut Client<'_>, scope_name: &str, changeset: Changeset, options: &ApplyOptions) -> Result<ApplyResult> {
    let stored = registry::load_scope(client, scope_name)?;
    let scope = stored.scope();
    if changeset.origin.is_empty() {
        return Err(Error::Malformed { what: "changeset", reason: "\"origin\" is empty: it names the uploading client".into() });
    }
    let claimed = options.client_id.as_deref().or(if options.token.is_some() { None } else { Some(changeset.origin.as_str()) });
    let identity = registry::resolve_identity(client, scope_name, claimed, options.token.as_deref(), options.params.as_ref())?;
    let client_id = identity.client_id.unwrap_or_else(|| changeset.origin.clone());
    if client_id != changeset.origin {
        return Err(Error::IdentityMismatch { origin: changeset.origin.clone(), client: client_id });
    }
    let params = identity.params;
    let resolver = match options.policy() {
        Policy::Resolver(name) => Some(find_resolver(client, &name)?),
        Policy::ClientWins => None,
        Policy::ServerWins => None,
    };
    let client_wins = options.policy() == Policy::ClientWins;
    let (checked, mut rejections) = check_changeset(&stored.schema, changeset, json_to_pg_text)?;
    let mut plans: Vec<Plan<'_>> = Vec::new();
    for table in checked {
        let t = scope.index_of(&table.schema.name).ok_or_else(|| Error::Internal("table outside scope".into()))?;
        check_partition_columns(&scope, t, &table)?;
        if !table.schema.direction.uploads() {
            for row in &table.rows {
                rejections.push(Rejection {
                    table: table.schema.name.clone(),
                    key: row.key.clone(),
                    seq: row.seq,
                    kind: RejectionKind::DownloadOnly,
                    reason: format!("table {} is download_only: clients may not change it", table.schema.name),
                    row: None,
                    version: None,
                });
            }
        }
        if !table.rows.is_empty() {
            plans.push(Plan {
                t,
                checked: table,
                seen: Vec::new(),
                verdicts: Vec::new(),
                settled: HashMap::new(),
                written: Vec::new(),
                rewritten: HashMap::new(),
            });
        }
    }
    // Parameters of every table the upload touches, refused rows included
    // (their server rows are looked up for the client to take).
    let touched: Vec<usize> = plans
        .iter()
        .map(|p| p.t)
        .chain(rejections.iter().filter_map(|r| scope.index_of(&r.table)))
        .collect();
    let bound = bind_params(&scope, &params, touched)?;
    let mut staged: Vec<Option<Vec<usize>>> = vec![None; scope.schema.tables.len()];
    for plan in &plans {
        staged[plan.t] = Some(plan.checked.columns.clone());
    }
    let applied_seqs = client_seqs(client, &client_id)?;
    let work = Work { scope: &scope, staged: &staged, client_id: &client_id, bound: &bound, resolver: resolver.as_deref(), client_wins, scope_name };

    let result = spi::with_apply_settings(client, |client| {
        // Room to sort and hash a large upload in memory (put back below).
        let work_mem = spi::one::<String>(
            client,
            "SELECT current_setting('work_mem'), CASE WHEN pg_size_bytes(current_setting('work_mem')) < 64 * 1024 * 1024 \
             THEN set_config('work_mem', '64MB', true) END",
            &[],
        )?;
        for plan in &plans {
            stage(client, &scope, plan)?;
        }
        // Classifying reads the logs too (what committed since the last
        // fold), joined row by row; folding just before keeps them short.
        fold::fold(client, &scope, 0..scope.schema.tables.len())?;
        for plan in plans.iter_mut() {
            let all: Vec<usize> = (0..plan.checked.rows.len()).collect();
            plan.seen = work.classify(client, plan.t, &all)?;
            partition_rejections(&scope, plan, &mut rejections);
        }
        if !rejections.is_empty() {
            for rejection in rejections.iter_mut() {
                work.visible_row(client, rejection)?;
            }
            return Err(Error::Rejected(rejections.clone()));
        }
        let mut before = ServerRows::new();
        for plan in plans.iter_mut() {
            let done = applied_seqs.get(&scope.id(plan.t)).copied();
            plan.verdicts = plan.checked.rows.iter().zip(&plan.seen).map(|(row, seen)| verdict(row, seen, done)).collect();
            let conflicts: Vec<usize> = (0..plan.verdicts.len()).filter(|&i| matches!(plan.verdicts[i], Verdict::Conflict(_))).collect();
            before.insert(plan.t, work.server_rows(client, plan.t, &conflicts)?);
            for i in conflicts {
                work.settle(client, plan, i, &before)?;
            }
        }
        set_origin(client, &client_id)?;
        for p in 0..plans.len() {
            work.write_table(client, &mut plans[p], Op::Upsert, &mut before)?;
        }
        for p in (0..plans.len()).rev() {
            work.write_table(client, &mut plans[p], Op::Delete, &mut before)?;
        }
        set_origin(client, "")?;
        if let Some(work_mem) = &work_mem {
            spi::exec(client, "SELECT set_config('work_mem', $1, true)", &[work_mem.as_str().into()])?;
        }
        for plan in &plans {
            work.write_merged(client, plan, &before)?;
        }
        let version = spi::one::<String>(client, "SELECT pg_current_xact_id()::text", &[])?;
        let mut after = ServerRows::new();
        for plan in &plans {
            let idx: Vec<usize> = (0..plan.verdicts.len()).filter(|&i| plan.verdicts[i] != Verdict::Apply).collect();
            after.insert(plan.t, work.server_rows(client, plan.t, &idx)?);
        }
        Ok(build_result(&plans, &before, &after, version))
    });
    let result = result?;
    log_conflicts(client, scope_name, &client_id, &result.conflicts)?;
    registry::record_client(client, scope_name, &client_id, &params, None)?;
    record_seqs(client, &scope, &client_id, &plans)?;
    Ok(result)
}

/// Uploads to a filtered table must carry the columns its partition is
/// decided by, or the server could not check them.
fn check_partition_columns(scope: &Scope<'_>, t: usize, table: &CheckedTable<'_, Option<String>>) -> Result<()> {
    if table.rows.is_empty() {
        return Ok(());
    }
    let needed: Vec<&String> = match &scope.table(t).filter {
        None => Vec::new(),
        Some(Filter::Columns(map)) => map.keys().collect(),
        Some(Filter::Via { on, .. }) => on.keys().collect(),
    };
    for column in needed {
        let index = scope.table(t).column_index(column);
        if !table.columns.iter().any(|c| Some(*c) == index) {
            return Err(Error::Malformed {
                what: "changeset",
                reason: format!("{} must carry column \"{column}\": the server checks each row's partition by it", scope.table(t).name),
            });
        }
    }
    Ok(())
}

fn stage(client: &mut Client<'_>, scope: &Scope<'_>, plan: &Plan<'_>) -> Result<()> {
    let table = plan.checked.schema;
    let count = plan.checked.rows.len();
    let mut idx = Vec::with_capacity(count);
    let mut ops = Vec::with_capacity(count);
    let mut bases: Vec<Option<String>> = Vec::with_capacity(count);
    let mut columns: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(count); plan.checked.columns.len()];
    let key_slots: Vec<usize> = table
        .key_indexes()
        .iter()
        .map(|k| plan.checked.columns.iter().position(|c| c == k).unwrap_or(0))
        .collect();
    for (i, row) in plan.checked.rows.iter().enumerate() {
        idx.push(i as i32);
        bases.push(row.base.clone());
        match row.op {
            Op::Upsert => {
                ops.push("upsert".to_string());
                for (c, value) in row.values.iter().enumerate() {
                    columns[c].push(value.clone());
                }
            }
            Op::Delete => {
                ops.push("delete".to_string());
                for column in columns.iter_mut() {
                    column.push(None);
                }
                for (k, slot) in key_slots.iter().enumerate() {
                    columns[*slot][i] = row.values[k].clone();
                }
            }
        }
    }
    let left_over = spi::one::<bool>(client, "SELECT to_regclass($1) IS NOT NULL", &[scope.stage(plan.t).into()])?;
    if left_over == Some(true) {
        spi::exec(client, &sql::drop_stage(scope, plan.t), &[])?;
    }
    let mut args: Vec<DatumWithOid<'_>> = vec![idx.into(), ops.into(), bases.into()];
    for column in columns {
        args.push(column.into());
    }
    spi::exec(client, &sql::stage(scope, plan.t, &plan.checked.columns), &args)?;
    // Row counts for the planner: a stage can hold one row or a million.
    // Statistics of the columns the statements join and filter on are
    // enough; those of every column cost ten times as much.
    spi::exec(client, &sql::analyze_stage(scope, plan.t, &plan.checked.columns), &[])?;
    Ok(())
}

fn partition_rejections(scope: &Scope<'_>, plan: &Plan<'_>, rejections: &mut Vec<Rejection>) {
    if scope.table(plan.t).filter.is_none() {
        return;
    }
    for (row, seen) in plan.checked.rows.iter().zip(&plan.seen) {
        let reason = if seen.live && !seen.server_in {
            Some("the server's row with this key is outside the client's partition")
        } else if row.op == Op::Upsert && !seen.new_in {
            Some("the row's values put it outside the client's partition")
        } else {
            None
        };
        if let Some(reason) = reason {
            rejections.push(Rejection {
                table: plan.checked.schema.name.clone(),
                key: row.key.clone(),
                seq: row.seq,
                kind: RejectionKind::OutsidePartition,
                reason: reason.to_string(),
                row: None,
                version: None,
            });
        }
    }
}

fn verdict(row: &CheckedRow<Option<String>>, seen: &Seen, applied_seq: Option<i64>) -> Verdict {
    if let (Some(seq), Some(done)) = (row.seq, applied_seq) {
        if seq <= done {
            return Verdict::AlreadyApplied;
        }
    }
    let server = ServerRow { version: seen.version.as_deref(), exists: seen.live, last_writer_is_client: seen.own };
    match classify(row.op, row.base.as_deref(), &server) {
        Outcome::Apply => Verdict::Apply,
        Outcome::Converged => Verdict::Converged,
        Outcome::Conflict(kind) => Verdict::Conflict(kind),
    }
}

fn client_seqs(client: &mut Client<'_>, client_id: &str) -> Result<HashMap<i64, i64>> {
    Ok(spi::query(client, "SELECT table_id, seq FROM tandem.client_seqs WHERE client_id = $1", &[client_id.into()], |row| {
        Ok((spi::get::<i64>(row, 1)?.unwrap_or_default(), spi::get::<i64>(row, 2)?.unwrap_or_default()))
    })?
    .into_iter()
    .collect())
}

/// A server row as the client should see it: version, and the row as a JSON
/// object of its columns (None when it no longer exists).
type RowState = (Option<String>, Option<Map<String, Value>>);

/// Server rows by table index, then by idx.
type ServerRows = HashMap<usize, HashMap<usize, RowState>>;

/// The uploaded row as a JSON object of its columns (None for a delete).
fn client_row(plan: &Plan<'_>, i: usize) -> Option<Map<String, Value>> {
    let row = &plan.checked.rows[i];
    (row.op == Op::Upsert).then(|| {
        plan.checked
            .columns
            .iter()
            .zip(&row.raw)
            .map(|(&c, v)| (plan.checked.schema.columns[c].name.clone(), v.clone()))
            .collect()
    })
}

/// A resolver named in the options: a function `(jsonb) -> jsonb`; returns
/// its quoted name.
fn find_resolver(client: &mut Client<'_>, name: &str) -> Result<String> {
    let found = spi::query(
        client,
        "SELECT n.nspname::text, p.proname::text, p.prorettype = 'jsonb'::regtype \
         FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
         WHERE p.oid = to_regprocedure($1 || '(jsonb)')",
        &[name.into()],
        |row| Ok((spi::text(row, 1)?.unwrap_or_default(), spi::text(row, 2)?.unwrap_or_default(), spi::get::<bool>(row, 3)?.unwrap_or(false))),
    )?;
    match found.into_iter().next() {
        None => Err(Error::Resolver { name: name.into(), reason: format!("no function {name}(jsonb) exists") }),
        Some((_, _, false)) => Err(Error::Resolver { name: name.into(), reason: "must return jsonb".into() }),
        Some((schema, function, true)) => Ok(format!("{}.{}", quote_ident(&schema), quote_ident(&function))),
    }
}

fn set_origin(client: &mut Client<'_>, client_id: &str) -> Result<()> {
    spi::exec(client, "SELECT set_config('tandem.origin', $1, true)", &[client_id.into()])?;
    Ok(())
}

/// How many times a write is retried against rows that other transactions
/// keep changing before the apply gives up (and can be retried whole).
const WRITE_ROUNDS: usize = 8;

/// What every step of one apply needs to know.
struct Work<'a, 's> {
    scope: &'a Scope<'s>,
    staged: sql::Staged<'a>,
    client_id: &'a str,
    bound: &'a BTreeMap<String, Vec<String>>,
    resolver: Option<&'a str>,
    client_wins: bool,
    scope_name: &'a str,
}

impl Work<'_, '_> {
    fn classify(&self, client: &mut Client<'_>, t: usize, idx: &[usize]) -> Result<Vec<Seen>> {
        let (query, names) = sql::classify(self.scope, self.staged, t);
        let mut args: Vec<DatumWithOid<'_>> = vec![self.client_id.into()];
        for name in &names {
            args.push(self.bound.get(name).cloned().unwrap_or_default().into());
        }
        args.push(idx.iter().map(|&i| i as i32).collect::<Vec<i32>>().into());
        let mut rows = Vec::with_capacity(idx.len());
        spi::with_index_probes(client, |client| {
            spi::text_rows_mut(client, &query, &args, |fields| {
                let flag = |n: usize| fields[n] == Some("true");
                rows.push((
                    index_of(fields[0])?,
                    Seen {
                        version: fields[1].map(str::to_string),
                        own: flag(2),
                        live: flag(3),
                        xmin: fields[4].map(str::to_string),
                        server_in: flag(5),
                        new_in: flag(6),
                    },
                ));
                Ok(())
            })
        })?;
        let mut out = vec![Seen::default(); idx.iter().max().map_or(0, |m| m + 1)];
        for (i, seen) in rows {
            if i < out.len() {
                out[i] = seen;
            }
        }
        Ok(out)
    }

    /// Fills in the server's state of a refused row, if the client may see
    /// it, so the client can take it instead of its refused change.
    fn visible_row(&self, client: &mut Client<'_>, rejection: &mut Rejection) -> Result<()> {
        let Some(t) = self.scope.schema.tables.iter().position(|t| t.name == rejection.table) else { return Ok(()) };
        let table = self.scope.table(t);
        let mut args: Vec<DatumWithOid<'_>> = Vec::new();
        for (column, value) in table.key_columns().iter().zip(&rejection.key) {
            match json_to_pg_text(column.ty, value) {
                Ok(Some(text)) => args.push(text.into()),
                _ => return Ok(()),
            }
        }
        let (query, names) = sql::visible_row(self.scope, t);
        for name in &names {
            args.push(self.bound.get(name).cloned().unwrap_or_default().into());
        }
        let found = spi::query(client, &query, &args, |row| {
            let version = spi::text(row, 1)?;
            let mut object = Map::new();
            for (c, column) in table.columns.iter().enumerate() {
                object.insert(column.name.clone(), pg_text_to_json(column.ty, spi::text(row, c + 2)?.as_deref()));
            }
            Ok((version, object))
        })?;
        if let Some((version, object)) = found.into_iter().next() {
            rejection.version = version;
            rejection.row = Some(object);
        }
        Ok(())
    }

    /// The server's current rows for the given idx.
    fn server_rows(&self, client: &mut Client<'_>, t: usize, idx: &[usize]) -> Result<HashMap<usize, RowState>> {
        let mut out: HashMap<usize, RowState> = idx.iter().map(|&i| (i, (None, None))).collect();
        if idx.is_empty() {
            return Ok(out);
        }
        let table = self.scope.table(t);
        let list: Vec<i32> = idx.iter().map(|&i| i as i32).collect();
        let rows = spi::query(client, &sql::server_rows(self.scope, self.staged, t), &[list.clone().into()], |row| {
            let i = spi::get::<i32>(row, 1)?.unwrap_or_default() as usize;
            let version = spi::text(row, 2)?;
            let mut object = Map::new();
            for (c, column) in table.columns.iter().enumerate() {
                object.insert(column.name.clone(), pg_text_to_json(column.ty, spi::text(row, c + 3)?.as_deref()));
            }
            Ok((i, version, object))
        })?;
        for (i, version, object) in rows {
            out.insert(i, (version, Some(object)));
        }
        // A row that is gone reports its tombstone's version.
        let tombstones = spi::query(client, &sql::tombstones(self.scope, self.staged, t), &[list.into()], |row| {
            Ok((spi::get::<i32>(row, 1)?.unwrap_or_default() as usize, spi::text(row, 2)?))
        })?;
        for (i, version) in tombstones {
            if let Some(entry) = out.get_mut(&i) {
                if entry.1.is_none() {
                    entry.0 = version;
                }
            }
        }
        Ok(out)
    }

    /// Settles conflict `i` of `plan` by the policy (or the resolver).
    fn settle(&self, client: &mut Client<'_>, plan: &mut Plan<'_>, i: usize, before: &ServerRows) -> Result<()> {
        let Verdict::Conflict(kind) = plan.verdicts[i] else { return Ok(()) };
        let settled = match self.resolver {
            None if self.client_wins => Settled { kind, decision: Decision::ClientWins, merged: None, reason: None },
            None => Settled { kind, decision: Decision::ServerWins, merged: None, reason: None },
            Some(function) => {
                let server_row = before.get(&plan.t).and_then(|m| m.get(&i)).and_then(|(_, r)| r.clone());
                let input = json!({
                    "scope": self.scope_name,
                    "table": plan.checked.schema.name,
                    "key": plan.checked.rows[i].key,
                    "kind": kind.as_str(),
                    "server_row": server_row,
                    "client_row": client_row(plan, i),
                    "client_id": self.client_id,
                });
                let answer: Option<String> =
                    spi::one(client, &format!("SELECT {function}($1::text::jsonb)::text"), &[input.to_string().into()])?;
                let answer = answer.and_then(|a| serde_json::from_str(&a).ok()).unwrap_or(Value::Null);
                match parse_resolution(&answer).map_err(|reason| Error::Resolver { name: function.into(), reason })? {
                    Resolution::ServerWins => Settled { kind, decision: Decision::ServerWins, merged: None, reason: None },
                    Resolution::ClientWins => Settled { kind, decision: Decision::ClientWins, merged: None, reason: None },
                    Resolution::Row(row) => Settled { kind, decision: Decision::Merged, merged: Some(row), reason: None },
                }
            }
        };
        plan.settled.insert(i, settled);
        Ok(())
    }

    /// Writes the rows of `plan` whose op is `op` and that apply as sent (or
    /// won their conflict), re-classifying rows that changed underneath.
    fn write_table(&self, client: &mut Client<'_>, plan: &mut Plan<'_>, op: Op, before: &mut ServerRows) -> Result<()> {
        let wanted = |plan: &Plan<'_>, i: usize| {
            plan.checked.rows[i].op == op
                && match &plan.verdicts[i] {
                    Verdict::Apply => true,
                    Verdict::Conflict(_) => plan.settled.get(&i).is_some_and(|s| s.decision == Decision::ClientWins),
                    _ => false,
                }
        };
        let mut pending: Vec<usize> = (0..plan.checked.rows.len()).filter(|&i| wanted(plan, i)).collect();
        for _ in 0..WRITE_ROUNDS {
            if pending.is_empty() {
                return Ok(());
            }
            let written = self.write_rows(client, plan, op, &pending)?;
            let done: std::collections::HashSet<usize> = written.iter().map(|(i, _)| *i).collect();
            let missed: Vec<usize> = pending
                .iter()
                .copied()
                .filter(|i| !done.contains(i) && !plan.settled.get(i).is_some_and(|s| s.kind == ConflictKind::ConstraintViolated))
                .collect();
            for row in &written {
                self.note_written(plan, row);
                if plan.verdicts[row.0] == Verdict::Apply {
                    plan.written.push(row.0);
                }
            }
            if missed.is_empty() {
                return Ok(());
            }
            // Someone else changed these rows since they were classified.
            let seen = self.classify(client, plan.t, &missed)?;
            let mut conflicts = Vec::new();
            for &i in &missed {
                let was_insert = !plan.seen[i].live;
                plan.seen[i] = seen[i].clone();
                if op == Op::Upsert && was_insert && !plan.seen[i].live {
                    // Not taken by a concurrent insert of the key: another
                    // unique value of the row is in use. Insert it strictly
                    // to learn which (or to write it, if that row went).
                    let strict = sql::insert_rows(self.scope, self.staged, plan.t, true);
                    match spi::in_subtransaction(|| written_rows(client, &strict, &[vec![i as i32].into()])) {
                        Ok(Ok(done)) if !done.is_empty() => {
                            self.note_written(plan, &done[0]);
                            if plan.verdicts[i] == Verdict::Apply {
                                plan.written.push(i);
                            }
                        }
                        Ok(Err(error)) => return Err(error),
                        Ok(Ok(_)) => {
                            plan.verdicts[i] = Verdict::Conflict(ConflictKind::ConstraintViolated);
                            plan.settled.insert(i, constraint_violation("the row could not be inserted".into()));
                        }
                        Err(error) => {
                            plan.verdicts[i] = Verdict::Conflict(ConflictKind::ConstraintViolated);
                            plan.settled.insert(i, constraint_violation(error.describe()));
                        }
                    }
                    continue;
                }
                plan.verdicts[i] = verdict(&plan.checked.rows[i], &plan.seen[i], None);
                if let Verdict::Conflict(_) = plan.verdicts[i] {
                    plan.settled.remove(&i);
                    conflicts.push(i);
                }
            }
            let fresh = self.server_rows(client, plan.t, &conflicts)?;
            before.entry(plan.t).or_default().extend(fresh);
            for i in conflicts {
                self.settle(client, plan, i, before)?;
            }
            pending = missed.into_iter().filter(|&i| wanted(plan, i)).collect();
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(Error::Database {
                sqlstate: "40001".into(),
                message: format!(
                    "rows of {} kept changing while this changeset was applied; nothing was applied: retry the sync",
                    plan.checked.schema.name
                ),
            })
        }
    }

    /// One write attempt for `idx`, set-based; when a constraint fails, row
    /// by row, each failing row becoming a `constraint_violated` conflict.
    fn write_rows(&self, client: &mut Client<'_>, plan: &mut Plan<'_>, op: Op, idx: &[usize]) -> Result<Vec<Written>> {
        let attempt = |client: &mut Client<'_>, rows: &[usize]| -> Result<Vec<Written>> {
            let (live, new): (Vec<usize>, Vec<usize>) = rows.iter().partition(|&&i| plan.seen[i].live);
            let mut written = Vec::with_capacity(rows.len());
            if !live.is_empty() {
                let list: Vec<i32> = live.iter().map(|&i| i as i32).collect();
                // The classified xmins by idx, from the first row written to
                // the last ("0" matches no row), so the statement reads
                // them without a join; a retry of one row passes one.
                let first = live.iter().copied().min().unwrap_or_default();
                let last = live.iter().copied().max().unwrap_or_default();
                let mut seen: Vec<String> = vec!["0".to_string(); last - first + 1];
                for &i in &live {
                    if let Some(xmin) = &plan.seen[i].xmin {
                        seen[i - first] = xmin.clone();
                    }
                }
                let statement = match op {
                    Op::Upsert => sql::update_rows(self.scope, self.staged, plan.t),
                    Op::Delete => sql::delete_rows(self.scope, self.staged, plan.t),
                };
                // By key, row by row: a hash of the whole user table per
                // batch made an upload's cost grow with the table.
                let args = [list.into(), seen.into(), (first as i32).into()];
                written.extend(spi::with_index_probes(client, |client| written_rows(client, &statement, &args))?);
            }
            if !new.is_empty() && op == Op::Upsert {
                let list: Vec<i32> = new.iter().map(|&i| i as i32).collect();
                written.extend(written_rows(client, &sql::insert_rows(self.scope, self.staged, plan.t, false), &[list.into()])?);
            }
            Ok(written)
        };
        match spi::in_subtransaction(|| attempt(client, idx)) {
            Ok(result) => result,
            Err(error) if error.sqlstate.starts_with("23") => {
                let mut written = Vec::new();
                for &i in idx {
                    match spi::in_subtransaction(|| attempt(client, &[i])) {
                        Ok(result) => written.extend(result?),
                        Err(error) if error.sqlstate.starts_with("23") => {
                            plan.verdicts[i] = Verdict::Conflict(ConflictKind::ConstraintViolated);
                            plan.settled.insert(i, constraint_violation(error.describe()));
                        }
                        Err(error) => return Err(error.into()),
                    }
                }
                Ok(written)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Keeps the row as written when it differs from what the client sent,
    /// so the client takes it (defaults, casts, triggers).
    fn note_written(&self, plan: &mut Plan<'_>, written: &Written) {
        let (i, texts) = written;
        if texts.is_empty() {
            return;
        }
        let table = self.scope.table(plan.t);
        let row = &plan.checked.rows[*i];
        let mut object = Map::new();
        let mut differs = false;
        for (c, column) in table.columns.iter().enumerate() {
            let now = pg_text_to_json(column.ty, texts.get(c).and_then(|t| t.as_deref()));
            match plan.checked.columns.iter().position(|&sent| sent == c) {
                Some(position) if row.raw.get(position) == Some(&now) => {}
                _ => differs = true,
            }
            object.insert(column.name.clone(), now);
        }
        if differs {
            plan.rewritten.insert(*i, object);
        }
    }

    /// Writes the rows resolvers returned; they go to every client, the
    /// uploader included. Columns a resolver leaves out keep the server's
    /// value (or the client's, when the server row is gone).
    fn write_merged(&self, client: &mut Client<'_>, plan: &Plan<'_>, before: &ServerRows) -> Result<()> {
        let table = plan.checked.schema;
        let resolver = self.resolver.unwrap_or_default();
        for (&i, settled) in &plan.settled {
            let Some(merged) = &settled.merged else { continue };
            let server_row = before.get(&plan.t).and_then(|rows| rows.get(&i)).and_then(|(_, row)| row.clone());
            let mut row = server_row.or_else(|| client_row(plan, i)).unwrap_or_default();
            row.extend(merged.clone());
            let key = &plan.checked.rows[i].key;
            let mut columns = Vec::new();
            let mut casts = Vec::new();
            let mut values: Vec<DatumWithOid<'_>> = Vec::new();
            for (k, name) in table.primary_key.iter().enumerate() {
                if row.get(name).is_some_and(|v| *v != key[k]) {
                    return Err(Error::Resolver {
                        name: resolver.into(),
                        reason: format!("returned a row whose {name} differs from the conflicting row's key"),
                    });
                }
            }
            for column in &table.columns {
                let value = match table.primary_key.iter().position(|k| *k == column.name) {
                    Some(k) => &key[k],
                    None => match row.get(&column.name) {
                        Some(v) => v,
                        None => continue,
                    },
                };
                let text = json_to_pg_text(column.ty, value).map_err(|reason| Error::Resolver {
                    name: resolver.into(),
                    reason: format!("column {}: {reason}", column.name),
                })?;
                columns.push(column.name.clone());
                casts.push(column.pg_type.clone());
                values.push(text.into());
            }
            if let Some(unknown) = merged.keys().find(|k| table.column_index(k).is_none()) {
                return Err(Error::Resolver { name: resolver.into(), reason: format!("returned unknown column \"{unknown}\"") });
            }
            let statement = upsert_row(Dialect::Postgres, &table.table_name().quoted(), &columns, &table.primary_key, Some(&casts));
            spi::exec(client, &statement, &values)?;
        }
        Ok(())
    }
}

/// A written row: its idx, and (for upserts) its columns as text.
type Written = (usize, Vec<Option<String>>);

/// Runs a write statement and reads the rows it returns, all text: each
/// written row's staged idx, then its columns (none for deletes).
fn written_rows(client: &mut Client<'_>, sql: &str, args: &[DatumWithOid<'_>]) -> Result<Vec<Written>> {
    let mut written = Vec::new();
    spi::text_rows_mut(client, sql, args, |fields| {
        written.push((index_of(fields[0])?, fields[1..].iter().map(|f| f.map(str::to_string)).collect()));
        Ok(())
    })?;
    Ok(written)
}

/// A staged row's idx, returned as text.
fn index_of(text: Option<&str>) -> Result<usize> {
    text.and_then(|t| t.parse().ok()).ok_or_else(|| Error::Internal(format!("apply: unreadable row index {text:?}")))
}

fn constraint_violation(message: String) -> Settled {
    Settled { kind: ConflictKind::ConstraintViolated, decision: Decision::ServerWins, merged: None, reason: Some(message) }
}

fn build_result(plans: &[Plan<'_>], before: &ServerRows, after: &ServerRows, version: Option<String>) -> ApplyResult {
    let mut result = ApplyResult { version: version.clone(), ..ApplyResult::default() };
    let empty = HashMap::new();
    for plan in plans {
        let name = &plan.checked.schema.name;
        let before = before.get(&plan.t).unwrap_or(&empty);
        let after = after.get(&plan.t).unwrap_or(&empty);
        for &i in &plan.written {
            result.versions.push(AppliedRow {
                table: name.clone(),
                key: plan.checked.rows[i].key.clone(),
                version: version.clone().unwrap_or_default(),
                row: plan.rewritten.get(&i).cloned(),
            });
        }
        result.applied += plan.written.len() as u64;
        for (i, verdict) in plan.verdicts.iter().enumerate() {
            let (now_version, now_row) = after.get(&i).cloned().unwrap_or((None, None));
            match verdict {
                Verdict::Apply => {}
                Verdict::AlreadyApplied | Verdict::Converged => result.current.push(CurrentRow {
                    table: name.clone(),
                    key: plan.checked.rows[i].key.clone(),
                    row: now_row,
                    version: now_version,
                }),
                Verdict::Conflict(kind) => {
                    let Some(settled) = plan.settled.get(&i) else { continue };
                    result.conflicts.push(ConflictReport {
                        table: name.clone(),
                        key: plan.checked.rows[i].key.clone(),
                        kind: *kind,
                        decision: settled.decision,
                        server_row: before.get(&i).and_then(|(_, r)| r.clone()),
                        client_row: client_row(plan, i),
                        row: now_row,
                        version: now_version,
                        reason: settled.reason.clone(),
                    });
                }
            }
        }
    }
    result
}

/// Every conflict goes to `tandem.conflicts` with both rows and the
/// decision: the losing version is never lost.
fn log_conflicts(client: &mut Client<'_>, scope: &str, client_id: &str, conflicts: &[ConflictReport]) -> Result<()> {
    if conflicts.is_empty() {
        return Ok(());
    }
    let rows: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({
                "scope": scope, "table_name": c.table, "key": c.key, "kind": c.kind.as_str(),
                "decision": c.decision.as_str(), "server_row": c.server_row, "client_row": c.client_row,
                "resolved_row": c.row, "reason": c.reason, "client_id": client_id,
            })
        })
        .collect();
    spi::exec(
        client,
        "INSERT INTO tandem.conflicts (scope, table_name, key, kind, decision, server_row, client_row, resolved_row, reason, client_id) \
         SELECT scope, table_name, key, kind, decision, server_row, client_row, resolved_row, reason, client_id \
         FROM jsonb_to_recordset($1::text::jsonb) AS x(scope text, table_name text, key jsonb, kind text, decision text, \
              server_row jsonb, client_row jsonb, resolved_row jsonb, reason text, client_id text)",
        &[Value::Array(rows).to_string().into()],
    )?;
    Ok(())
}

/// Remembers the highest change counter of each table this client uploaded,
/// so the same changes uploaded again are acknowledged, not applied twice.
fn record_seqs(client: &mut Client<'_>, scope: &Scope<'_>, client_id: &str, plans: &[Plan<'_>]) -> Result<()> {
    for plan in plans {
        let Some(seq) = plan.checked.rows.iter().filter_map(|r| r.seq).max() else { continue };
        spi::exec(
            client,
            "INSERT INTO tandem.client_seqs (client_id, table_id, seq) VALUES ($1, $2, $3) \
             ON CONFLICT (client_id, table_id) DO UPDATE SET seq = greatest(tandem.client_seqs.seq, excluded.seq)",
            &[client_id.into(), scope.id(plan.t).into(), seq.into()],
        )?;
    }
    Ok(())
}
