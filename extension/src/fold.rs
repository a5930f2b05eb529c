//! Folds the change logs into tracking before a sync call reads it. The
//! triggers only append to `tandem.log_<id>` (see
//! `tandem_core::sql::tracking`), so the indexed tracking update happens
//! here, once per key per sync, instead of inside every user statement.

use tandem_core::sql::{tracking, Scope};
use tandem_core::Result;

use crate::spi::{self, Spi};

/// Folds the logs of `tables` (indexes into the scope). One query first
/// finds the logs that hold anything, so a sync call on a wide scope with
/// few changes runs few statements.
pub fn fold(spi: &mut Spi<'_>, scope: &Scope<'_>, tables: impl IntoIterator<Item = usize>) -> Result<()> {
    let tables: Vec<usize> = tables.into_iter().collect();
    if tables.is_empty() {
        return Ok(());
    }
    let mut pending = Vec::new();
    spi::each_kept(spi, tracking::pending_logs(scope, &tables), |t| {
        pending.push(t);
        Ok(())
    })?;
    // In the scope's order, whatever order the probes came back in: two
    // calls folding the same tables take their locks in the same order.
    pending.sort_unstable();
    for t in pending {
        spi::exec(spi, &tracking::fold(scope, t), &[])?;
    }
    Ok(())
}
