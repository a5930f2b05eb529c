//! Rows that point at another partition's row. A tenant-filtered upload
//! is checked row by row against the uploader's partition, but a foreign
//! key between two scope tables may name any row of the parent: a device
//! could tie its own row to another tenant's customer, whose device could
//! then never delete that customer (the delete would take a row it never
//! received; helper 88). A row whose foreign key (one the server declares
//! onto a filtered scope table's primary key) takes a parent outside the
//! uploader's partition is refused as outside it, as its own values would
//! be.

use tandem_core::changeset::Op;
use tandem_core::error::RejectionKind;
use tandem_core::sql::apply::{self as sql, Staged};
use tandem_core::sql::partition::FilterValues;
use tandem_core::sql::Scope;
use tandem_core::upload::Outcome;
use tandem_core::Result;

use super::parents::ForeignKey;
use super::plan::TablePlan;
use crate::spi::{self, Spi};

/// Refuses each upserted row of `plans` that points, by one of `keys`, at
/// a parent row outside the partition `values` describe.
pub fn refuse_references_outside(
    spi: &mut Spi<'_>,
    scope: &Scope<'_>,
    staged: Staged<'_>,
    plans: &mut [TablePlan<'_>],
    keys: &[ForeignKey],
    values: &FilterValues,
) -> Result<()> {
    for key in keys {
        let Some(plan) = plans.iter_mut().find(|plan| plan.t == key.child) else { continue };
        if !plan.rows.iter().any(|row| row.change.op == Op::Upsert) {
            continue;
        }
        let moves = plan.rows.iter().any(|row| row.is_move());
        let Some(query) = sql::references_outside(scope, staged, key.child, &key.columns, key.parent, values, moves) else { continue };
        for i in spi::all(spi, query)? {
            let Some(row) = plan.rows.get_mut(i) else { continue };
            if !matches!(row.outcome, Outcome::Refused { .. }) {
                row.outcome = Outcome::Refused {
                    kind: RejectionKind::OutsidePartition,
                    reason: format!(
                        "its {} names a row of {} outside the client's partition",
                        key.columns.join(", "),
                        scope.table(key.parent).name
                    ),
                };
            }
        }
    }
    Ok(())
}
