//! The first step of an apply: the checked changeset as one plan per scope
//! table, with what the table admits. Rows whose values do not fit their
//! columns were refused by the check itself and come back as rejections.

use tandem_core::error::{Rejection, RejectionKind};
use tandem_core::options::Policy;
use tandem_core::schema::{Schema, TableSchema};
use tandem_core::setup::Filter;
use tandem_core::sql::apply::StageType;
use tandem_core::sql::Scope;
use tandem_core::types::to_pg_text;
use tandem_core::upload::{Outcome, UploadRow};
use tandem_core::validate::{check_changeset, Raw, Sender};
use tandem_core::{Error, Result};

/// The uploaded rows of one scope table.
pub struct TablePlan<'s> {
    /// The table's position in the scope.
    pub t: usize,
    pub table: &'s TableSchema,
    /// The uploaded columns: positions in the table's columns, in the
    /// changeset's order.
    pub columns: Vec<usize>,
    /// Their names, in the same order.
    pub column_names: Vec<String>,
    /// Values as the text PostgreSQL's input functions read.
    pub rows: Vec<UploadRow<Option<String>>>,
    /// How the table's conflicts are settled (a resolver by its quoted
    /// name), as the scope's setup says.
    pub policy: Policy,
    /// How the server stores each uploaded column (read when staged).
    pub types: Vec<StageType>,
}

/// Checks the changeset's text and plans each table with rows, parents
/// first.
pub fn plan<'s>(scope: &Scope<'s>, schema: &'s Schema, text: &str) -> Result<(Vec<TablePlan<'s>>, Vec<Rejection>)> {
    let checked = check_changeset(schema, text, Sender::Device, to_pg_text, Raw::Kept)?;
    let (checked, rejections) = (checked.tables, checked.rejections);
    let mut plans = Vec::new();
    for table in checked {
        let t = scope.index_of(&table.schema.name).ok_or_else(|| Error::Internal("table outside scope".into()))?;
        if table.rows.is_empty() {
            continue;
        }
        check_partition_columns(scope, t, &table.columns)?;
        let mut rows: Vec<UploadRow<Option<String>>> = table.rows.into_iter().map(UploadRow::new).collect();
        if !table.schema.direction.uploads() {
            for row in rows.iter_mut() {
                row.outcome = Outcome::Refused {
                    kind: RejectionKind::DownloadOnly,
                    reason: format!("table {} is download_only: clients may not change it", table.schema.name),
                };
            }
        }
        let policy = Policy::parse(table.schema.policy.as_deref())?;
        plans.push(TablePlan {
            t,
            policy,
            types: Vec::new(),
            table: table.schema,
            column_names: table.columns.iter().map(|&c| table.schema.columns[c].name.clone()).collect(),
            columns: table.columns,
            rows,
        });
    }
    Ok((plans, rejections))
}

/// For each table of the scope, the columns its upload carries, or `None`
/// when the upload has no rows for it.
pub fn staged_columns(scope: &Scope<'_>, plans: &[TablePlan<'_>]) -> Vec<Option<Vec<usize>>> {
    let mut staged = vec![None; scope.schema.tables.len()];
    for plan in plans {
        staged[plan.t] = Some(plan.columns.clone());
    }
    staged
}

/// Uploads to a filtered table must carry the columns its partition is
/// decided by, or the server could not check them.
fn check_partition_columns(scope: &Scope<'_>, t: usize, columns: &[usize]) -> Result<()> {
    let table = scope.table(t);
    let needed: Vec<&String> = match &table.filter {
        None => Vec::new(),
        Some(Filter::Columns(map)) => map.keys().collect(),
        Some(Filter::Via { on, .. }) => on.keys().collect(),
    };
    for column in needed {
        let index = table.column_index(column);
        if !columns.iter().any(|c| Some(*c) == index) {
            return Err(Error::Malformed {
                what: "changeset",
                reason: format!("{} must carry column \"{column}\": the server checks each row's partition by it", table.name),
            });
        }
    }
    Ok(())
}
