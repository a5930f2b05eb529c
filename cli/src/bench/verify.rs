//! What a verify costs: a file of every row checked against the server
//! when nothing differs (the common case, which should move far less than
//! the rows), and when ten rows drifted on the server and are repaired.

use std::path::Path;

use tandem_local::verify::Options;
use tandem_local::{Store, SyncOptions};

use super::{timed, Scratch};
use crate::error::CliError;

pub struct Verify {
    pub ms: f64,
    pub bytes: u64,
    /// The rows as changeset-like JSON (`row_to_json`), what moving them
    /// would cost instead.
    pub rows_bytes: u64,
    pub repair_ms: f64,
    pub repair_bytes: u64,
}

pub fn run(scratch: &Scratch, file: &Path) -> Result<Verify, CliError> {
    let store = Store::open(file)?;
    store.sync(&scratch.url, "bench", &SyncOptions::default())?;
    let mut server = scratch.connect()?;
    let rows_bytes: i64 = server
        .query_one("SELECT sum(length(row_to_json(b)::text))::int8 FROM bench b", &[])
        .map_err(|e| CliError::database("size the rows", &e))?
        .get(0);
    let (clean, took) = timed(|| Ok(store.verify(&scratch.url, "bench", &Options::default())?))?;
    if !clean.equal {
        return Err(CliError::Invalid(format!("a file that just synced differs from the server: {:?}", clean.tables)));
    }
    // Drift nobody reported: ten rows changed with Tandem's triggers off.
    server
        .batch_execute(
            "BEGIN; SET LOCAL session_replication_role = replica; \
             UPDATE bench SET body = 'drifted' \
             WHERE id IN (SELECT 1 + g * ((SELECT max(id) FROM bench) / 10) FROM generate_series(0, 9) g); COMMIT",
        )
        .map_err(|e| CliError::database("change rows with triggers off", &e))?;
    let repair = Options { repair: true, ..Options::default() };
    let (repaired, repair_took) = timed(|| Ok(store.verify(&scratch.url, "bench", &repair)?))?;
    if repaired.repaired != Some(10) {
        return Err(CliError::Invalid(format!("the repair wrote {:?} rows, not the 10 that drifted", repaired.repaired)));
    }
    Ok(Verify {
        ms: took.as_secs_f64() * 1000.0,
        bytes: clean.bytes_moved,
        rows_bytes: rows_bytes.max(0) as u64,
        repair_ms: repair_took.as_secs_f64() * 1000.0,
        repair_bytes: repaired.bytes_moved,
    })
}
