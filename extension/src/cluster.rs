//! The database a server's tracking belongs to. Versions, stamps and
//! watermarks are transaction ids, which count per cluster: a database
//! restored from a dump into another cluster (a new host, a major upgrade
//! by dump and restore) holds stamps of another count, which the new
//! cluster's snapshots would read as past or future at random, and a
//! device's watermark would silently skip changes. A dump restored into
//! another database of the same cluster counts alike, but is a copy that
//! goes its own way: a device moving between the two would miss what
//! either changed. So the first volatile sync call in a database that is
//! not the one recorded (by the cluster's system identifier and the
//! database's oid, both kept by pg_upgrade and physical backups) restamps
//! every scope's tracking under this count and takes a new server id that
//! names the old one: each device then pulls its partition again, keeping
//! its unsent changes, and the original's devices are refused here
//! without --rebind.

use std::cell::Cell;

use pgrx::pg_sys;
use tandem_core::sql::tracking;
use tandem_core::Result;

use crate::registry;
use crate::spi::{self, Spi};

thread_local! {
    /// The extension this backend checked already, by its oid: a live
    /// database does not change clusters, but a `DROP EXTENSION` and
    /// `CREATE EXTENSION` in it makes a new, empty `tandem.server`, whose
    /// row the next call must write again.
    static CHECKED: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
}

/// The oid of the extension as it is now (an index lookup in
/// `pg_extension`, no SPI query).
fn extension_oid() -> Option<pg_sys::Oid> {
    // SAFETY: a catalog lookup by name in a transaction, which every
    // caller runs in; `missing_ok` makes a missing extension `InvalidOid`.
    let oid = unsafe { pg_sys::get_extension_oid(c"tandem".as_ptr(), true) };
    (oid != pg_sys::InvalidOid).then_some(oid)
}

/// What `tandem.server` says of the cluster, against the running one.
enum Found {
    /// No row yet (nothing provisioned since `CREATE EXTENSION`).
    Nothing,
    /// A row from before Tandem recorded the cluster (0.1.0).
    Unrecorded,
    Same,
    Moved,
}

const CURRENT: &str = "(SELECT c.system_identifier FROM pg_catalog.pg_control_system() c)";
const DATABASE: &str = "(SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())";

fn look(spi: &mut Spi<'_>, lock: bool) -> Result<Found> {
    let sql = format!(
        "SELECT s.system_identifier IS NULL, s.system_identifier = {CURRENT} AND s.database_oid = {DATABASE} \
         FROM tandem.server s{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let rows = spi::select(spi, &sql, &[], |row| Ok((spi::required::<bool>(row, 1)?, spi::get::<bool>(row, 2)?)))?;
    Ok(match rows.into_iter().next() {
        None => Found::Nothing,
        Some((true, _)) => Found::Unrecorded,
        Some((false, Some(true))) => Found::Same,
        Some((false, _)) => Found::Moved,
    })
}

/// Makes sure the database's tracking counts in this cluster's
/// transaction ids (see the module's comment), making the server's row
/// when there is none yet.
pub fn ensure_here(spi: &mut Spi<'_>) -> Result<()> {
    let extension = extension_oid();
    if extension.is_some() && CHECKED.get() == extension {
        return Ok(());
    }
    if matches!(look(spi, false)?, Found::Same) {
        CHECKED.set(extension);
        return Ok(());
    }
    // Written in this call's transaction, which may yet roll back: the
    // next call looks again.
    match look(spi, true)? {
        Found::Same => {}
        Found::Nothing => {
            let sql = format!(
                "INSERT INTO tandem.server (system_identifier, database_oid) VALUES ({CURRENT}, {DATABASE}) ON CONFLICT DO NOTHING"
            );
            spi::exec(spi, &sql, &[])?;
        }
        Found::Unrecorded => {
            spi::exec(spi, &format!("UPDATE tandem.server SET system_identifier = {CURRENT}, database_oid = {DATABASE}"), &[])?;
        }
        Found::Moved => restamp_everything(spi)?,
    }
    Ok(())
}

/// Restamps every scope's tracking, makes every watermark too old (each
/// device resyncs) and takes a new server id naming the old one.
fn restamp_everything(spi: &mut Spi<'_>) -> Result<()> {
    let names = spi::select(spi, "SELECT name FROM tandem.scopes ORDER BY name", &[], |row| spi::required_text(row, 1))?;
    for name in names {
        // A scope whose tracking someone dropped says so at its own calls.
        let Ok(stored) = registry::load_scope(spi, &name) else { continue };
        let scope = stored.scope();
        // As the extension's owner, so that the first call after a move
        // may be anyone's: only Tandem's stamp columns change, and the
        // index upkeep that compares keys uses btree operators, which
        // only a superuser can define.
        for t in 0..scope.schema.tables.len() {
            for statement in tracking::restamp_moved(&scope, t) {
                spi::exec(spi, &statement, &[])?;
            }
        }
    }
    spi::exec(spi, "UPDATE tandem.scopes SET tracked_since = pg_current_xact_id(), purged_before = NULL", &[])?;
    spi::exec(spi, "UPDATE tandem.replicas SET last_since = NULL", &[])?;
    spi::exec(
        spi,
        &format!(
            "UPDATE tandem.server SET moved_from = moved_from || server_id, server_id = gen_random_uuid(), \
             system_identifier = {CURRENT}, database_oid = {DATABASE}"
        ),
        &[],
    )?;
    pgrx::notice!(
        "this database was restored into another database or cluster: Tandem restamped its tracking under a new server id, \
         and its devices pull their partitions again"
    );
    Ok(())
}
