//! Folds the change logs into tracking before a sync call reads it. The
//! triggers only append to `tandem.log_<id>` (see
//! `tandem_core::sql::tracking`), so the indexed tracking update happens
//! here, once per key per sync, instead of inside every user statement.
//!
//! One call at a time folds a table, holding the right to until it commits
//! (`tracking::lock_fold`). A pull does not wait for it while the log is
//! small: it reads that table through the log instead, so pulls of many
//! devices do not queue behind each other's folds. Behind a bulk write's
//! log it waits, as reading through it would cost each pull a fold.

use tandem_core::sql::query::{Binds, NoRows, Query};
use tandem_core::sql::tracking::{self, FoldLock};
use tandem_core::sql::Scope;
use tandem_core::{Error, Result};

use crate::spi::{self, Spi};

/// Folds the logs of `tables` (indexes into the scope), waiting for any
/// other call folding them. One query first finds the logs that hold
/// anything, so a sync call on a wide scope with few changes runs few
/// statements.
pub fn fold(spi: &mut Spi<'_>, scope: &Scope<'_>, tables: impl IntoIterator<Item = usize>) -> Result<()> {
    fold_with(spi, scope, tables, FoldLock::Wait, |t| plain(scope, t)).map(|_| ())
}

/// [`fold`], each table's log with the statement `fold_of` makes for it
/// (an apply marks its echoes as it folds).
pub fn fold_each(
    spi: &mut Spi<'_>,
    scope: &Scope<'_>,
    tables: impl IntoIterator<Item = usize>,
    fold_of: impl Fn(usize) -> Query<NoRows>,
) -> Result<()> {
    fold_with(spi, scope, tables, FoldLock::Wait, fold_of).map(|_| ())
}

fn plain(scope: &Scope<'_>, t: usize) -> Query<NoRows> {
    Query::exec(tracking::fold(scope, t), Binds::new())
}

/// Folds the logs of `tables` that no other call is folding; returns the
/// others, which the caller reads through `tracking::folded_track`.
pub fn fold_unless_busy(spi: &mut Spi<'_>, scope: &Scope<'_>, tables: impl IntoIterator<Item = usize>) -> Result<Vec<usize>> {
    fold_with(spi, scope, tables, FoldLock::Try, |t| plain(scope, t))
}

fn fold_with(
    spi: &mut Spi<'_>,
    scope: &Scope<'_>,
    tables: impl IntoIterator<Item = usize>,
    lock: FoldLock,
    fold_of: impl Fn(usize) -> Query<NoRows>,
) -> Result<Vec<usize>> {
    let tables: Vec<usize> = tables.into_iter().collect();
    let mut busy = Vec::new();
    if tables.is_empty() {
        return Ok(busy);
    }
    let mut pending = Vec::new();
    spi::each_kept(spi, tracking::pending_logs(scope, &tables), |t| {
        pending.push(t);
        Ok(())
    })?;
    // In the scope's order, whatever order the probes came back in: two
    // calls that wait take their locks in the same order.
    pending.sort_unstable();
    for t in pending {
        let mut got = spi::first_mut(spi, tracking::lock_fold(scope, t, lock))? == Some(true);
        // A large log (a bulk write) costs every pull reading through it
        // about what its one fold costs: waiting for that fold is cheaper.
        if !got && lock == FoldLock::Try && spi::first(spi, tracking::log_is_small(scope, t))? != Some(true) {
            got = spi::first_mut(spi, tracking::lock_fold(scope, t, FoldLock::Wait))? == Some(true);
        }
        match (got, lock) {
            (true, _) => {
                spi::run(spi, fold_of(t))?;
            }
            (false, FoldLock::Try) => busy.push(t),
            (false, FoldLock::Wait) => return Err(Error::Internal(format!("waiting for the fold of {} did not take it", scope.log(t)))),
        }
    }
    Ok(busy)
}
