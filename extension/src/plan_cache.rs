//! Plans this backend keeps for the statements it runs again and again.
//!
//! A sync call runs some forty small statements (registry lookups, the
//! settings it pins, a probe per table), each with its parameters bound.
//! Run as text, PostgreSQL parsed, analysed and planned every one of them
//! on every call: three fifths of an idle pull's CPU, against a tenth for
//! running them. A statement's plan is kept the second time its text runs
//! in this backend with parameters; a text run once (an apply's statement
//! with a batch's values written in) is never kept, so it cannot push out
//! the others. A statement without parameters is planned each time for
//! the data as it is then: its kept plan would be generic for good, and
//! the fold, for one, reads a log that a bulk write takes from a few rows
//! to millions between two calls. Probes that cost the same at any size
//! are kept at once ([`Admit::Now`]). Nothing is kept inside an apply's
//! work on its batch ([`Unkept`]).
//!
//! PostgreSQL's plan cache then does what it does for any prepared
//! statement: it analyses the statement again when a table it reads
//! changes or the `search_path` differs, plans each run with its values
//! until a generic plan proves no dearer, and checks rights and row
//! security on every run. Planner settings Tandem sets for a stretch of
//! work ([`Settings`]) are part of a plan's key, so a plan made with index
//! probes forced is never used without them, nor the reverse.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{self, PgOid};
use pgrx::spi::{OwnedPreparedStatement, SpiClient};

/// Plans kept at most; past it the cache starts again (a backend serving
/// many scopes keeps those it uses).
const MAX_KEPT: usize = 256;

/// Texts remembered as seen once, at most; past it they are forgotten.
const MAX_SEEN: usize = 4096;

/// A kept plan, with what it was made for (the map is keyed by their hash).
struct Kept {
    sql: String,
    types: Vec<pg_sys::Oid>,
    settings: u64,
    plan: Rc<OwnedPreparedStatement>,
}

thread_local! {
    static KEPT: RefCell<HashMap<u64, Kept>> = RefCell::new(HashMap::new());
    static SEEN: RefCell<HashSet<u64>> = RefCell::new(HashSet::new());
    /// For each [`Settings`] in force, innermost last, the hash of its
    /// settings and of the entry before it: the last one stands for all.
    static IN_FORCE: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    /// How many [`Unkept`] are alive: while any is, nothing is kept.
    static UNKEPT: Cell<usize> = const { Cell::new(0) };
}

/// Settings in force while it lives: plans made under them are kept apart.
/// A PostgreSQL error unwinds through it, and an entry left behind would
/// outlive the call in this backend.
pub struct Settings(());

impl Settings {
    pub fn new(settings: &[(&str, &str)]) -> Settings {
        IN_FORCE.with(|stack| {
            let mut stack = stack.borrow_mut();
            let mut hasher = DefaultHasher::new();
            (stack.last(), settings).hash(&mut hasher);
            stack.push(hasher.finish());
        });
        Settings(())
    }
}

impl Drop for Settings {
    fn drop(&mut self) {
        IN_FORCE.with(|stack| stack.borrow_mut().pop());
    }
}

/// While it lives, statements run as text and no plan is kept or used:
/// an apply's statements read a batch's staged rows, whose count differs
/// from batch to batch, and the generic plan PostgreSQL settles on after
/// five runs fits one batch, not the next (uploads ran at two thirds of
/// their speed with the apply's plans kept; docs/benchmarks.md).
pub struct Unkept(());

impl Unkept {
    pub fn new() -> Unkept {
        UNKEPT.with(|n| n.set(n.get() + 1));
        Unkept(())
    }
}

impl Drop for Unkept {
    fn drop(&mut self) {
        UNKEPT.with(|n| n.set(n.get() - 1));
    }
}

/// Only plannable statements are kept: utility statements (DDL, `SET
/// CONSTRAINTS`) gain nothing from a plan.
fn plannable(sql: &str) -> bool {
    let word: String = sql.trim_start().chars().take_while(char::is_ascii_alphabetic).collect();
    ["SELECT", "WITH", "INSERT", "UPDATE", "DELETE"].iter().any(|w| word.eq_ignore_ascii_case(w))
}

/// When a statement's plan is kept.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The second time it runs, if it has parameters.
    Repeated,
    /// The first time it runs.
    Now,
}

/// The plan kept for `sql` with these arguments' types under the settings
/// in force, made now if `admit` says so; `None` when it runs as text.
/// Preparing runs the parser, which may raise the statement's error as
/// running it would.
pub fn plan_for(
    spi: &SpiClient<'_>,
    sql: &str,
    args: &[DatumWithOid<'_>],
    admit: Admit,
) -> Result<Option<Rc<OwnedPreparedStatement>>, pgrx::spi::SpiError> {
    if !plannable(sql) || (admit == Admit::Repeated && args.is_empty()) || UNKEPT.with(|n| n.get() > 0) {
        return Ok(None);
    }
    let types = || args.iter().map(DatumWithOid::oid);
    let settings = IN_FORCE.with(|stack| stack.borrow().last().copied().unwrap_or(0));
    let mut hasher = DefaultHasher::new();
    (sql, settings).hash(&mut hasher);
    types().for_each(|oid| oid.hash(&mut hasher));
    let key = hasher.finish();
    let found = KEPT.with(|kept| {
        kept.borrow()
            .get(&key)
            .filter(|k| k.sql == sql && k.types.iter().copied().eq(types()) && k.settings == settings)
            .map(|k| Rc::clone(&k.plan))
    });
    if found.is_some() {
        return Ok(found);
    }
    let seen_before = admit == Admit::Now
        || SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            if seen.len() >= MAX_SEEN {
                seen.clear();
            }
            !seen.insert(key)
        });
    if !seen_before {
        return Ok(None);
    }
    let oids: Vec<PgOid> = types().map(PgOid::from).collect();
    // Not `prepare_mut`: a plan runs read-only exactly when the same text
    // would (pgrx's `select` on a transaction that has not written).
    let plan = Rc::new(spi.prepare(sql, &oids)?.keep());
    KEPT.with(|kept| {
        let mut kept = kept.borrow_mut();
        if kept.len() >= MAX_KEPT {
            kept.clear();
        }
        kept.insert(key, Kept { sql: sql.to_string(), types: types().collect(), settings, plan: Rc::clone(&plan) });
    });
    Ok(Some(plan))
}
