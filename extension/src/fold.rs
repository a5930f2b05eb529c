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
    let checks: Vec<String> = tables.iter().map(|&t| format!("EXISTS (SELECT 1 FROM {})", scope.log(t))).collect();
    let pending =
        spi::query(
            spi,
            &format!("SELECT ARRAY[{}]", checks.join(", ")),
            &[],
            |row| Ok(spi::get::<Vec<bool>>(row, 1)?.unwrap_or_default()),
        )?;
    let pending = pending.into_iter().next().unwrap_or_default();
    for (i, &t) in tables.iter().enumerate() {
        // An answer missing for a table (never expected) folds it anyway.
        if pending.get(i).copied().unwrap_or(true) {
            spi::exec(spi, &tracking::fold(scope, t), &[])?;
        }
    }
    Ok(())
}
