//! Folds the change logs into tracking before a sync call reads it. The
//! triggers only append to `tandem.log_<id>` (see
//! `tandem_core::sql::tracking`), so the indexed tracking update happens
//! here, once per key per sync, instead of inside every user statement.

use tandem_core::sql::{tracking, Scope};
use tandem_core::Result;

use crate::spi::{self, Client};

/// Folds the logs of `tables` (indexes into the scope).
pub fn fold(client: &mut Client<'_>, scope: &Scope<'_>, tables: impl IntoIterator<Item = usize>) -> Result<()> {
    for t in tables {
        spi::exec(client, &tracking::fold(scope, t), &[])?;
    }
    Ok(())
}
