//! Who may call what. The `sync_*` functions run with the extension's rights
//! (`SECURITY DEFINER`), so a device's role needs nothing but `EXECUTE` on
//! the three it calls, and can read no table directly; what a call may see
//! and write is decided here and by its token. No one holds `EXECUTE` until
//! granted it: `CREATE EXTENSION` revokes every function from `PUBLIC`.

use pgrx::prelude::*;
use tandem_core::{Error, Result};

use crate::spi::{self, Spi};

extension_sql!(
    r#"
-- Least privilege: nothing of Tandem's is callable until granted
-- (docs/deploy.md lists the grants for operators and devices).
DO $revoke$
DECLARE
    _function regprocedure;
BEGIN
    FOR _function IN
        SELECT d.objid::regprocedure FROM pg_catalog.pg_depend d
        WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.deptype = 'e'
          AND d.refclassid = 'pg_catalog.pg_extension'::regclass
          AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'tandem')
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', _function);
    END LOOP;
END $revoke$;
"#,
    name = "revoke_from_public",
    finalize
);

/// The role a call acts for: the session's role as `SET ROLE` left it,
/// never the function's owner (which `current_user` names inside a
/// `SECURITY DEFINER` function), nor the login role behind a `SET ROLE`.
fn caller_oid() -> i64 {
    // SAFETY: reads a backend global that is always set inside a transaction.
    let oid = unsafe { pg_sys::GetOuterUserId() };
    i64::from(oid.to_u32())
}

/// The caller's role name, for messages and for recording a scope's owner.
pub fn caller_name(spi: &mut Spi<'_>) -> Result<String> {
    spi::one::<String>(spi, "SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = $1::int8::oid", &[caller_oid().into()])?
        .ok_or_else(|| Error::Internal("the calling role does not exist".into()))
}

/// Whether the caller may act for any client of `scope`: it is the scope's
/// owner (or a member of that role) or a superuser, so it may read the
/// tables anyway. `None` when the scope does not exist.
fn owns(spi: &mut Spi<'_>, scope: &str) -> Result<Option<(bool, String)>> {
    let rows = spi::select(
        spi,
        "SELECT (pg_catalog.pg_has_role($2::int8::oid, r.oid, 'MEMBER') \
                 OR (SELECT u.rolsuper FROM pg_catalog.pg_roles u WHERE u.oid = $2::int8::oid)) IS TRUE, s.owner \
         FROM tandem.scopes s LEFT JOIN pg_catalog.pg_roles r ON r.rolname = s.owner WHERE s.name = $1",
        &[scope.into(), caller_oid().into()],
        |row| Ok((spi::required::<bool>(row, 1)?, spi::required_text(row, 2)?)),
    )?;
    Ok(rows.into_iter().next())
}

/// Whether the caller may act for any client of `scope` (see [`owns`]).
pub fn caller_owns(spi: &mut Spi<'_>, scope: &str) -> Result<bool> {
    Ok(owns(spi, scope)?.is_some_and(|(owns, _)| owns))
}

/// Refuses a caller that does not own `scope`, for the functions that
/// manage it (`function` names the one called).
pub fn require_owner(spi: &mut Spi<'_>, scope: &str, function: &'static str) -> Result<()> {
    match owns(spi, scope)? {
        Some((true, _)) => Ok(()),
        Some((false, owner)) => Err(Error::NotScopeOwner { role: caller_name(spi)?, scope: scope.to_string(), owner, function }),
        None => Err(Error::UnknownScope(scope.to_string())),
    }
}

/// Refuses to track a table the caller does not own: provisioning installs
/// triggers on it and lets devices write it, which only its owner may allow.
pub fn require_table_owner(spi: &mut Spi<'_>, table: &str) -> Result<()> {
    let owned = spi::one::<bool>(
        spi,
        "SELECT (pg_catalog.pg_has_role($2::int8::oid, c.relowner, 'USAGE') \
                 OR (SELECT u.rolsuper FROM pg_catalog.pg_roles u WHERE u.oid = $2::int8::oid)) IS TRUE \
         FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass($1)",
        &[table.into(), caller_oid().into()],
    )?;
    match owned {
        Some(true) | None => Ok(()),
        Some(false) => Err(Error::NotTableOwner { role: caller_name(spi)?, table: table.to_string() }),
    }
}
