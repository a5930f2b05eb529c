//! The benchmark's database and files, dropped and removed at the end.

use std::path::PathBuf;

use postgres::{Client, NoTls};
use tandem_core::dsn::{redacted, with_database};

use super::timed;
use crate::error::CliError;

pub struct Scratch {
    admin_url: String,
    name: String,
    pub url: String,
    pub dir: PathBuf,
    pub seed_s: f64,
    pub provision_s: f64,
}

/// The table of every case.
pub const TABLE: &str = "CREATE TABLE bench (id bigint PRIMARY KEY, tenant int NOT NULL, body text NOT NULL, \
                          amount numeric(12,2) NOT NULL, at timestamptz NOT NULL)";

/// Rows `first..=last` of the table, as a SELECT.
pub fn rows_sql(first: &str, last: &str) -> String {
    format!(
        "SELECT g, (g % 10)::int, md5(g::text) || '-row', ((g % 100000) / 100.0)::numeric(12,2), \
         timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' FROM generate_series({first}, {last}) g"
    )
}

impl Scratch {
    pub fn create(admin_url: &str, rows: u64) -> Result<Scratch, CliError> {
        let name = format!("tandem_bench_{}", std::process::id());
        let mut admin = Client::connect(admin_url, NoTls).map_err(|e| CliError::connect(admin_url, &e))?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .map_err(|e| CliError::database("drop old benchmark database", &e))?;
        admin.batch_execute(&format!("CREATE DATABASE {name}")).map_err(|e| CliError::database("create benchmark database", &e))?;
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| CliError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        let mut scratch =
            Scratch { admin_url: admin_url.to_string(), url: with_database(admin_url, &name), name, dir, seed_s: 0.0, provision_s: 0.0 };
        let mut client = scratch.connect()?;
        client.batch_execute("CREATE EXTENSION tandem").map_err(|_| CliError::ExtensionMissing { url: redacted(admin_url) })?;
        let ((), seed) = timed(|| {
            client.batch_execute(TABLE).map_err(|e| CliError::database("create table", &e))?;
            client
                .batch_execute(&format!("INSERT INTO bench {}; ANALYZE bench;", rows_sql("1", &rows.to_string())))
                .map_err(|e| CliError::database("seed rows", &e))
        })?;
        scratch.seed_s = seed.as_secs_f64();
        let ((), provision) = timed(|| {
            client
                .batch_execute(r#"SELECT sync_provision('bench', '{"tables": [{"name": "bench"}]}'); ANALYZE tandem.track_1;"#)
                .map_err(|e| CliError::database("provision", &e))
        })?;
        scratch.provision_s = provision.as_secs_f64();
        scratch.settle()?;
        Ok(scratch)
    }

    /// Writes out what the setup of a case left in PostgreSQL's buffers
    /// (seeding a table writes hundreds of MB), so the checkpoint it calls
    /// for does not land in the middle of whichever timed run comes first.
    /// Without the right to checkpoint, the cases run as they are.
    pub fn settle(&self) -> Result<(), CliError> {
        let _ = self.connect()?.batch_execute("CHECKPOINT");
        Ok(())
    }

    pub fn connect(&self) -> Result<Client, CliError> {
        Client::connect(&self.url, NoTls).map_err(|e| CliError::connect(&self.url, &e))
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Ok(mut admin) = Client::connect(&self.admin_url, NoTls) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}
