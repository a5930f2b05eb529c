//! Tandem's PostgreSQL side: `CREATE EXTENSION tandem` installs the `tandem`
//! schema and the `sync_*` functions. Change tracking is generated per scope
//! table by `tandem_core::sql` and installed by `sync_provision`.

use pgrx::prelude::*;

mod apply;
mod catalog;
mod clients;
mod cluster;
mod ddl;
mod fold;
mod guc;
mod json_text;
mod owner_settings;
mod partitions;
mod plan_cache;
mod privileges;
mod provision;
mod pull;
mod registry;
mod report;
mod spi;
mod status;
mod verify;
mod version;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);

#[cfg(any(test, feature = "pg_test"))]
mod tests;

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
