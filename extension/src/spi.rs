//! Small helpers over pgrx's SPI: run a statement, fetch rows, and keep
//! PostgreSQL's text output settings fixed while Tandem reads or stages
//! values as text.

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiHeapTupleData, SpiTupleTable};
use tandem_core::sql::query::{Decode, NoRows, Param, Query};
use tandem_core::{Error, Result};

use crate::guc;
use crate::plan_cache::{self, Admit};

/// The SPI connection every sync function works through (`spi` in
/// signatures; a sync *client* is a device, never this).
pub type Spi<'c> = SpiClient<'c>;

/// The `search_path` every sync function runs with: PostgreSQL's own
/// functions and operators only, so no function or operator a user planted
/// in a schema on the caller's path can run inside a sync call. Tandem
/// qualifies every table it names.
const PINNED_PATH: &str = "pg_catalog, pg_temp";

thread_local! {
    /// The callers' own `search_path`s, innermost last: what a scope's
    /// owner had when it provisioned is kept for its users' code.
    static CALLER_PATHS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The `search_path`s the users' code runs with, innermost last (set by
    /// `privileges::as_scope_owner`; see [`as_users_code`]).
    static USER_PATHS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Statements run with the users' path now (inside [`as_users_code`]).
    static IN_USERS_CODE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The text settings of the scopes' owners, innermost last (see
    /// [`with_owners_text_settings`]).
    static OWNER_TEXT: std::cell::RefCell<Vec<Vec<(&'static str, String)>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An entry on one of the stacks above for as long as it lives: a
/// PostgreSQL error unwinds through it, and an entry left behind would
/// outlive the call in this backend.
struct Pushed<T: 'static>(&'static std::thread::LocalKey<std::cell::RefCell<Vec<T>>>);

impl<T> Pushed<T> {
    fn new(stack: &'static std::thread::LocalKey<std::cell::RefCell<Vec<T>>>, value: T) -> Pushed<T> {
        stack.with(|entries| entries.borrow_mut().push(value));
        Pushed(stack)
    }
}

impl<T> Drop for Pushed<T> {
    fn drop(&mut self) {
        self.0.with(|entries| entries.borrow_mut().pop());
    }
}

/// Marks the users' code as running while it lives (see [`Pushed`]).
struct InUsersCode;

impl InUsersCode {
    fn new() -> InUsersCode {
        IN_USERS_CODE.set(true);
        InUsersCode
    }
}

impl Drop for InUsersCode {
    fn drop(&mut self) {
        IN_USERS_CODE.set(false);
    }
}

/// The `search_path` of the session that called the running sync function.
pub fn caller_search_path() -> Option<String> {
    CALLER_PATHS.with(|paths| paths.borrow().last().cloned())
}

/// Runs `body`, all of which runs as a scope's owner, with the owner's
/// `search_path` (see [`as_users_code`]): the owner's own code (a domain's
/// check in a cast, a trigger) finds what the owner's statements would,
/// and no caller's path reaches it.
pub fn with_users_path<T>(spi: &mut Spi<'_>, path: &str, body: impl FnOnce(&mut Spi<'_>) -> Result<T>) -> Result<T> {
    // Nested (a sync called from an owner's trigger), the inner scope's
    // owner's path holds while its code runs, then the outer one's again.
    let outer = IN_USERS_CODE.get().then(|| USER_PATHS.with(|paths| paths.borrow().last().cloned())).flatten();
    let _path = Pushed::new(&USER_PATHS, path.to_string());
    match outer {
        None => as_users_code(spi, body),
        Some(outer) => {
            guc::set_local("search_path", &users_path(path))?;
            let result = body(spi);
            guc::set_local("search_path", &users_path(&outer))?;
            result
        }
    }
}

/// Settings every sync call runs with. The literals Tandem writes into the
/// SQL it generates (names of the owner's tables in trigger bodies) mean
/// what they say only with standard strings; and the plans it keeps (see
/// [`plan_cache`]) are chosen as PostgreSQL chooses by default, whatever
/// plan mode the caller set. A caller must not change either.
const CALL_SETTINGS: [(&str, &str); 2] = [("standard_conforming_strings", "on"), ("plan_cache_mode", "auto")];

/// Whether a sync call pins `name` itself before a scope's owner's code
/// runs ([`connect`]'s path, [`CALL_SETTINGS`], the lock wait, [`quietly`]):
/// kept when that code starts from the session's own settings (see
/// `owner_settings::OwnerSettings::start`).
pub fn pinned_by_call(name: &str) -> bool {
    CALL_SETTINGS
        .iter()
        .map(|&(pinned, _)| pinned)
        .chain(["search_path", "lock_timeout", "client_min_messages"])
        .any(|p| p.eq_ignore_ascii_case(name))
}

/// Connects to SPI for a sync function's body, with `search_path` pinned
/// (see [`PINNED_PATH`]) and [`CALL_SETTINGS`], all put back when the body
/// ends.
pub fn connect<T>(body: impl FnOnce(&mut Spi<'_>) -> Result<T>) -> Result<T> {
    pgrx::spi::Spi::connect_mut(|spi| {
        // The caller's transaction may hold deferred checks (a constraint
        // trigger on a table of its own, temporary ones too): they run
        // here, as the caller and under its settings, as they would at its
        // commit. Later in the call they would run with the rights of the
        // extension's owner, or of the scope's, whose code sets its own
        // checks immediate at the end (see `privileges::as_scope_owner`).
        crate::privileges::as_caller(|| exec(spi, "SET CONSTRAINTS ALL IMMEDIATE", &[]))?;
        refuse_deferred_again(spi)?;
        let caller = guc::swap_local("search_path", PINNED_PATH)?;
        crate::version::require_matching(spi)?;
        let pushed = Pushed::new(&CALLER_PATHS, caller.clone());
        let result = with_lock_wait(spi, |spi| with_settings(spi, &CALL_SETTINGS, body));
        drop(pushed);
        guc::set_local("search_path", &caller)?;
        result
    })
}

/// Refuses a call whose transaction still holds deferred checks after
/// they fired as the caller: a trigger that deferred the checks again
/// while it ran (`SET CONSTRAINTS ... DEFERRED`) and queued another would
/// have it fire later in the call, with the rights of the extension's
/// owner or the scope's. Only a deferrable trigger can wait.
fn refuse_deferred_again(spi: &mut Spi<'_>) -> Result<()> {
    let deferrable =
        query(spi, "SELECT DISTINCT tgrelid::int8 FROM pg_catalog.pg_trigger WHERE tgdeferrable = $1", &[true.into()], |row| {
            required::<i64>(row, 1)
        })?;
    for relid in deferrable {
        let oid = u32::try_from(relid).map(pg_sys::Oid::from).map_err(|_| Error::Internal(format!("relation oid {relid}")))?;
        // SAFETY: reads the transaction's queue of trigger events.
        if unsafe { pg_sys::AfterTriggerPendingOnRel(oid) } {
            return Err(Error::DeferredAgain);
        }
    }
    Ok(())
}

/// The longest a sync call waits for a lock another session holds: a
/// transaction left open after writing the rows an upload writes, or any
/// role that can connect holding the advisory lock of a table's fold
/// (its key is in design.md). Past it the call fails with SQLSTATE 55P03
/// (`lock_not_available`) and keeps nothing, so no device's sync waits for
/// good on someone else's session. A caller's shorter `lock_timeout` stands.
const LONGEST_LOCK_WAIT: &str = "30s";
const LONGEST_LOCK_WAIT_MS: i64 = 30_000;

/// Runs `body` with `lock_timeout` at most [`LONGEST_LOCK_WAIT`], then puts
/// back the caller's.
fn with_lock_wait<T>(spi: &mut Spi<'_>, body: impl FnOnce(&mut Spi<'_>) -> Result<T>) -> Result<T> {
    let caller = guc::get("lock_timeout")?;
    if !(1..=LONGEST_LOCK_WAIT_MS).contains(&guc::lock_timeout_ms()) {
        guc::set_local("lock_timeout", LONGEST_LOCK_WAIT)?;
    }
    let result = body(spi);
    guc::set_local("lock_timeout", &caller)?;
    result
}

/// Runs `body`, whose statements run the users' own code (their tables'
/// triggers, a resolver function), with the `search_path` the scope's
/// owner provisioned it with, between `pg_catalog` and `pg_temp`: that code
/// finds its tables as in the owner's own statements, whatever path the
/// caller set, Tandem's statements still find PostgreSQL's own operators
/// and functions first, and a caller's temporary table comes last.
pub fn as_users_code<T>(spi: &mut Spi<'_>, body: impl FnOnce(&mut Spi<'_>) -> Result<T>) -> Result<T> {
    let Some(users) = USER_PATHS.with(|paths| paths.borrow().last().cloned()) else { return body(spi) };
    if IN_USERS_CODE.get() {
        return body(spi);
    }
    guc::set_local("search_path", &users_path(&users))?;
    let marked = InUsersCode::new();
    let result = body(spi);
    drop(marked);
    guc::set_local("search_path", PINNED_PATH)?;
    result
}

/// Runs `body` without NOTICEs (`DROP ... IF EXISTS` of an object that is
/// not there says so): the caller's `client_min_messages` is put back.
pub fn quietly<T>(spi: &mut Spi<'_>, body: impl FnOnce(&mut Spi<'_>) -> Result<T>) -> Result<T> {
    guc::with_local("client_min_messages", "warning", || body(spi))
}

/// `pg_catalog`, the owner's schemas, then `pg_temp` (see [`as_users_code`]).
fn users_path(caller: &str) -> String {
    let temporary = |entry: &str| {
        let name = entry.trim().trim_matches('"');
        name == "pg_temp" || name.starts_with("pg_temp_")
    };
    let mut path = vec!["pg_catalog"];
    path.extend(caller.split(',').map(str::trim).filter(|e| !e.is_empty() && !temporary(e) && *e != "pg_catalog"));
    path.push("pg_temp");
    path.join(", ")
}

fn spi_error(sql: &str, error: impl std::fmt::Display) -> Error {
    Error::Internal(format!("SPI: {error} in: {}", tandem_core::error::shorten(sql, 200)))
}

/// A generated statement's values as datums, moved, not copied (a stage's
/// arrays hold a whole batch).
fn datums(params: Vec<Param>) -> Vec<DatumWithOid<'static>> {
    params
        .into_iter()
        .map(|param| match param {
            Param::Text(text) => text.into(),
            Param::Int8(value) => value.into(),
            Param::Int4(value) => value.into(),
            Param::Bool(value) => value.into(),
            Param::TextArray(values) => values.into(),
            Param::Int4Array(values) => values.into(),
        })
        .collect()
}

/// A kept plan runs as planned once, whatever its parameters' values.
const GENERIC_PLAN: [(&str, &str); 1] = [("plan_cache_mode", "force_generic_plan")];

/// [`each_mut`] with one generic plan, planned once: for the small probes
/// every sync call runs over each table of a scope (which logs hold
/// anything, which tables changed), whose planning cost many times their
/// run on a wide scope, and which PostgreSQL would otherwise plan again for
/// each call's values.
pub fn each_kept<D: Decode>(spi: &mut Spi<'_>, query: Query<D>, mut each: impl FnMut(D::Row<'_>) -> Result<()>) -> Result<usize> {
    let (sql, params, reader) = query.split();
    let args = datums(params);
    with_settings(spi, &GENERIC_PLAN, |spi| {
        let table = update_as(spi, &sql, &args, Admit::Now)?;
        each_text_row(table, &sql, |fields| each(reader.decode(fields)?))
    })
}

/// Runs `sql` through the plan this backend keeps for it, if it keeps one
/// (see [`plan_cache`]), as a statement that may write.
fn update<'c>(spi: &mut Spi<'c>, sql: &str, args: &[DatumWithOid<'_>]) -> Result<SpiTupleTable<'c>> {
    update_as(spi, sql, args, Admit::Repeated)
}

fn update_as<'c>(spi: &mut Spi<'c>, sql: &str, args: &[DatumWithOid<'_>], admit: Admit) -> Result<SpiTupleTable<'c>> {
    let ran = match plan_cache::plan_for(spi, sql, args, admit).map_err(|e| spi_error(sql, e))? {
        Some(plan) => spi.update(&*plan, None, args),
        None => spi.update(sql, None, args),
    };
    ran.map_err(|e| spi_error(sql, e))
}

/// [`update`] of a read-only statement (sharing the calling statement's
/// snapshot while the transaction has not written).
fn read<'c>(spi: &Spi<'c>, sql: &str, args: &[DatumWithOid<'_>]) -> Result<SpiTupleTable<'c>> {
    let ran = match plan_cache::plan_for(spi, sql, args, Admit::Repeated).map_err(|e| spi_error(sql, e))? {
        Some(plan) => spi.select(&*plan, None, args),
        None => spi.select(sql, None, args),
    };
    ran.map_err(|e| spi_error(sql, e))
}

/// Runs a generated statement that may write and hands each decoded row to
/// `each`; returns how many rows it returned or changed.
pub fn each_mut<D: Decode>(spi: &mut Spi<'_>, query: Query<D>, mut each: impl FnMut(D::Row<'_>) -> Result<()>) -> Result<usize> {
    let (sql, params, reader) = query.split();
    let args = datums(params);
    text_rows_mut(spi, &sql, &args, |fields| each(reader.decode(fields)?))
}

/// [`each_mut`] of a read-only statement (sharing the calling statement's
/// snapshot while the transaction has not written).
pub fn each<D: Decode>(spi: &Spi<'_>, query: Query<D>, mut each: impl FnMut(D::Row<'_>) -> Result<()>) -> Result<usize> {
    let (sql, params, reader) = query.split();
    let args = datums(params);
    text_rows(spi, &sql, &args, |fields| each(reader.decode(fields)?))
}

/// Every decoded row of a generated statement that may write.
pub fn all<D, T>(spi: &mut Spi<'_>, query: Query<D>) -> Result<Vec<T>>
where
    D: for<'a> Decode<Row<'a> = T>,
{
    let mut rows = Vec::new();
    each_mut(spi, query, |row| {
        rows.push(row);
        Ok(())
    })?;
    Ok(rows)
}

/// The first decoded row of a generated read-only statement, if any.
pub fn first<D, T>(spi: &Spi<'_>, query: Query<D>) -> Result<Option<T>>
where
    D: for<'a> Decode<Row<'a> = T>,
{
    let mut found = None;
    each(spi, query, |row| {
        found.get_or_insert(row);
        Ok(())
    })?;
    Ok(found)
}

/// The snapshot a read-only statement sees now, as text
/// (`xmin:xmax:xip,...`).
pub fn current_snapshot(spi: &Spi<'_>) -> Result<String> {
    first(spi, tandem_core::sql::registry::current_snapshot())?
        .flatten()
        .ok_or_else(|| Error::Internal("pg_current_snapshot() returned nothing".into()))
}

/// [`first`] of a statement that may write, or must see what the
/// transaction wrote before it.
pub fn first_mut<D, T>(spi: &mut Spi<'_>, query: Query<D>) -> Result<Option<T>>
where
    D: for<'a> Decode<Row<'a> = T>,
{
    let mut found = None;
    each_mut(spi, query, |row| {
        found.get_or_insert(row);
        Ok(())
    })?;
    Ok(found)
}

/// Runs a generated statement whose rows are not read; returns how many
/// rows it changed.
pub fn run(spi: &mut Spi<'_>, query: Query<NoRows>) -> Result<u64> {
    let (sql, params, _) = query.split();
    exec(spi, &sql, &datums(params))
}

/// Runs a statement that may write.
pub fn exec(spi: &mut Spi<'_>, sql: &str, args: &[DatumWithOid<'_>]) -> Result<u64> {
    Ok(update(spi, sql, args)?.len() as u64)
}

/// Runs a query and maps each row.
pub fn query<T>(
    spi: &mut Spi<'_>,
    sql: &str,
    args: &[DatumWithOid<'_>],
    map: impl FnMut(&SpiHeapTupleData<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    map_rows(update(spi, sql, args)?, map)
}

/// Runs a read-only query (sharing the calling statement's snapshot while
/// the transaction has not written) and maps each row.
pub fn select<T>(
    spi: &Spi<'_>,
    sql: &str,
    args: &[DatumWithOid<'_>],
    map: impl FnMut(&SpiHeapTupleData<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    map_rows(read(spi, sql, args)?, map)
}

/// Runs a read-only query whose columns are all `text` and hands each row
/// to `each` as string slices into the result. A large pull reads millions
/// of values: through pgrx's rows, building each row costs two guarded
/// calls into PostgreSQL per column and reading each value several more
/// (half of the server's time in a 1M-row download); here a row costs one.
/// `each` must not run SPI itself: the slices point into this result.
pub fn text_rows(spi: &Spi<'_>, sql: &str, args: &[DatumWithOid<'_>], each: impl FnMut(&[Option<&str>]) -> Result<()>) -> Result<usize> {
    each_text_row(read(spi, sql, args)?, sql, each)
}

/// [`text_rows`] of a statement that may write (`... RETURNING`).
pub fn text_rows_mut(
    spi: &mut Spi<'_>,
    sql: &str,
    args: &[DatumWithOid<'_>],
    each: impl FnMut(&[Option<&str>]) -> Result<()>,
) -> Result<usize> {
    each_text_row(update(spi, sql, args)?, sql, each)
}

/// Walks the result the last SPI call left, which `table` holds.
fn each_text_row(table: SpiTupleTable<'_>, sql: &str, mut each: impl FnMut(&[Option<&str>]) -> Result<()>) -> Result<usize> {
    let rows = table.len();
    // SAFETY: the caller has just run the query through SPI, so
    // SPI_tuptable is its result (or NULL), and it stays valid while
    // `table` lives; neither this function nor `each` makes another SPI
    // call before `table` is dropped. Each tuple is deformed into `values`,
    // which then point into the tuple (or into a detoasted copy in the
    // current memory context); the slices handed to `each` live no longer
    // than that call.
    unsafe {
        let tuptable = pg_sys::SPI_tuptable;
        if tuptable.is_null() || rows == 0 {
            return Ok(rows);
        }
        let tupdesc = (*tuptable).tupdesc;
        let natts = usize::try_from((*tupdesc).natts).unwrap_or_default();
        for column in 1..=natts {
            if pg_sys::SPI_gettypeid(tupdesc, column as i32) != pg_sys::TEXTOID {
                return Err(Error::Internal(format!(
                    "text_rows: column {column} is not text in: {}",
                    tandem_core::error::shorten(sql, 200)
                )));
            }
        }
        let mut values = vec![pg_sys::Datum::from(0usize); natts];
        let mut nulls = vec![false; natts];
        let mut fields: Vec<Option<&str>> = Vec::with_capacity(natts);
        for row in 0..rows {
            let tuple = *(*tuptable).vals.add(row);
            pg_sys::heap_deform_tuple(tuple, tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
            fields.clear();
            for column in 0..natts {
                if nulls[column] {
                    fields.push(None);
                    continue;
                }
                let mut text = values[column].cast_mut_ptr::<pg_sys::varlena>();
                // Long values of text columns may come toasted: flatten them.
                if pgrx::varlena::varatt_is_1b_e(text) || pgrx::varlena::varatt_is_4b_c(text) {
                    text = pg_sys::pg_detoast_datum_packed(text);
                }
                let bytes = pgrx::varlena::varlena_to_byte_slice(text);
                let value = std::str::from_utf8(bytes).map_err(|_| Error::Internal("text_rows: a value is not UTF-8".into()))?;
                fields.push(Some(value));
            }
            each(&fields)?;
        }
    }
    Ok(rows)
}

fn map_rows<T>(table: SpiTupleTable<'_>, mut map: impl FnMut(&SpiHeapTupleData<'_>) -> Result<T>) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(table.len());
    for row in table {
        out.push(map(&row)?);
    }
    Ok(out)
}

/// Column `ordinal` (1-based) of a row.
pub fn get<T: IntoDatum + FromDatum>(row: &SpiHeapTupleData<'_>, ordinal: usize) -> Result<Option<T>> {
    row.get::<T>(ordinal).map_err(|e| Error::Internal(format!("SPI: column {ordinal}: {e}")))
}

/// A text column, as a string slice into the row when possible.
pub fn text(row: &SpiHeapTupleData<'_>, ordinal: usize) -> Result<Option<String>> {
    get::<String>(row, ordinal)
}

/// A column the statement never returns NULL (a catalog name, a count, a
/// NOT NULL column): a NULL is a bug, reported as one, never a default.
pub fn required<T: IntoDatum + FromDatum>(row: &SpiHeapTupleData<'_>, ordinal: usize) -> Result<T> {
    get::<T>(row, ordinal)?.ok_or_else(|| Error::Internal(format!("SPI: column {ordinal} is NULL where it never is")))
}

/// [`required`] of a text column.
pub fn required_text(row: &SpiHeapTupleData<'_>, ordinal: usize) -> Result<String> {
    required::<String>(row, ordinal)
}

/// One value of the first row, or `None`.
pub fn one<T: IntoDatum + FromDatum>(spi: &mut Spi<'_>, sql: &str, args: &[DatumWithOid<'_>]) -> Result<Option<T>> {
    Ok(query(spi, sql, args, |row| get::<T>(row, 1))?.into_iter().next().flatten())
}

/// Settings that make PostgreSQL's text output of values what
/// `tandem_core::types` reads, and its input of them what was sent: an
/// unquoted NULL in an array is NULL (not the text `NULL`, as under
/// `array_nulls = off`), XML content need not be one document, a
/// timestamp without an offset is UTC, and a zone's abbreviation means
/// what PostgreSQL's default set says. Set for the duration of `body`,
/// then put back.
pub(crate) const TEXT_SETTINGS: [(&str, &str); 8] = [
    ("DateStyle", "ISO, YMD"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "1"),
    ("bytea_output", "hex"),
    ("IntervalStyle", "postgres"),
    ("array_nulls", "on"),
    ("xmloption", "content"),
    ("timezone_abbreviations", "Default"),
];

pub fn with_text_settings<T>(spi: &mut Spi<'_>, body: impl FnOnce(&mut Spi<'_>) -> Result<T>) -> Result<T> {
    with_settings(spi, &TEXT_SETTINGS, body)
}

/// Runs `body` with the owner's text settings (see
/// `owner_settings::OwnerSettings`) known to [`with_owners_text_settings`].
pub fn with_owners_settings<T>(settings: Vec<(&'static str, String)>, body: impl FnOnce() -> Result<T>) -> Result<T> {
    let _owners = Pushed::new(&OWNER_TEXT, settings);
    body()
}

/// Runs `body`, statements that write the users' tables and so run their
/// triggers and column defaults (`current_date`, `to_char`, a timestamp
/// cast to text), with the owner's text settings: the database's zone and
/// date style, as in the owner's and the app's own sessions, and nothing a
/// caller's session set. Those statements read and write no value as
/// text; sync's own settings ([`TEXT_SETTINGS`]) hold again after them.
pub fn with_owners_text_settings<T>(spi: &mut Spi<'_>, body: impl FnOnce(&mut Spi<'_>) -> Result<T>) -> Result<T> {
    let Some(owners) = OWNER_TEXT.with(|stack| stack.borrow().last().cloned()) else { return body(spi) };
    let settings: Vec<(&str, &str)> = owners.iter().map(|(name, value)| (*name, value.as_str())).collect();
    with_settings(spi, &settings, body)
}

/// Plans that look rows up by key, one index probe per row. A batch is
/// small next to the tables it is checked against, and without this the
/// planner would rather read whole tables into a hash than probe an index
/// ten thousand times.
const PROBE_SETTINGS: [(&str, &str); 2] = [("enable_hashjoin", "off"), ("enable_mergejoin", "off")];

pub fn with_index_probes<T>(spi: &mut Spi<'_>, body: impl FnOnce(&mut Spi<'_>) -> Result<T>) -> Result<T> {
    with_settings(spi, &PROBE_SETTINGS, body)
}

/// An apply plans each statement once for a batch of rows; compiling
/// those plans (JIT) costs more than it saves.
const APPLY_SETTINGS: [(&str, &str); 1] = [("jit", "off")];

/// Text settings plus the planner settings of an apply, its statements
/// planned for each batch (see [`plan_cache::Unkept`]).
pub fn with_apply_settings<T>(spi: &mut Spi<'_>, body: impl FnOnce(&mut Spi<'_>) -> Result<T>) -> Result<T> {
    let _unkept = plan_cache::Unkept::new();
    with_settings(spi, &APPLY_SETTINGS, |spi| with_text_settings(spi, body))
}

/// Runs `body` with `settings`, then puts back what they were.
fn with_settings<T>(spi: &mut Spi<'_>, settings: &[(&str, &str)], body: impl FnOnce(&mut Spi<'_>) -> Result<T>) -> Result<T> {
    let saved = set_settings(settings)?;
    let planned_under = plan_cache::Settings::new(settings);
    let result = body(spi);
    drop(planned_under);
    restore_settings(saved)?;
    result
}

/// Sets `settings` for the transaction and returns what they were.
fn set_settings<'a>(settings: &[(&'a str, &str)]) -> Result<Vec<(&'a str, String)>> {
    settings.iter().map(|&(name, value)| Ok((name, guc::swap_local(name, value)?))).collect()
}

fn restore_settings(saved: Vec<(&str, String)>) -> Result<()> {
    saved.into_iter().try_for_each(|(name, value)| guc::set_local(name, &value))
}

/// The five-character SQLSTATE of an error code (inverse of `MAKE_SQLSTATE`).
pub fn sqlstate(code: PgSqlErrorCode) -> String {
    let value = code as isize;
    (0..5).map(|i| (((value >> (6 * i)) & 0x3F) as u8 + b'0') as char).collect()
}

/// A PostgreSQL error caught in a subtransaction.
#[derive(Debug, Clone)]
pub struct PgError {
    pub sqlstate: String,
    pub message: String,
    pub detail: Option<String>,
}

impl PgError {
    /// The message with its detail, as one line.
    pub fn describe(&self) -> String {
        match &self.detail {
            Some(detail) => format!("{}: {detail}", self.message),
            None => self.message.clone(),
        }
    }
}

impl From<PgError> for Error {
    fn from(e: PgError) -> Self {
        Error::Database { sqlstate: e.sqlstate, message: e.message }
    }
}

/// Runs `body` in a subtransaction; on a PostgreSQL error, rolls the
/// subtransaction back and returns the error instead of aborting the whole
/// transaction.
pub fn in_subtransaction<T>(body: impl FnOnce() -> T) -> std::result::Result<T, PgError> {
    in_subtransaction_kept_if(body, |_| true)
}

/// [`in_subtransaction`], kept only when `keep` accepts what `body`
/// returned: otherwise its writes are rolled back and what it returned is
/// still handed back, so what comes next reads the database as it was
/// before `body` (a failed apply's refused rows, not a trigger's work).
pub fn in_subtransaction_kept_if<T>(body: impl FnOnce() -> T, keep: impl FnOnce(&T) -> bool) -> std::result::Result<T, PgError> {
    // SAFETY: this is PostgreSQL's own pattern for trapping an error in C
    // (as PL/pgSQL's exception blocks do): the memory context and resource
    // owner are saved before BeginInternalSubTransaction and put back after
    // it is released or rolled back, on every path; `body` runs inside
    // PgTryBuilder, which turns a longjmp'd ERROR into the Err arm, so no
    // error escapes with the subtransaction still open. Called only from a
    // sync function, inside a transaction.
    unsafe {
        let old_context = pg_sys::CurrentMemoryContext;
        let old_owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        let outcome = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| Ok(body())))
            .catch_others(|caught| {
                let report = match &caught {
                    pgrx::pg_sys::panic::CaughtError::PostgresError(report) | pgrx::pg_sys::panic::CaughtError::ErrorReport(report) => {
                        report
                    }
                    pgrx::pg_sys::panic::CaughtError::RustPanic { ereport, .. } => ereport,
                };
                Err(PgError {
                    sqlstate: sqlstate(report.sql_error_code()),
                    message: report.message().to_string(),
                    detail: report.detail().map(str::to_string),
                })
            })
            .execute();
        if matches!(&outcome, Ok(value) if keep(value)) {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::MemoryContextSwitchTo(old_context);
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(old_context);
        pg_sys::CurrentResourceOwner = old_owner;
        outcome
    }
}
