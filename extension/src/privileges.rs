//! Who may call what. The `sync_*` functions run with the extension's rights
//! (`SECURITY DEFINER`), so a device's role needs nothing but `EXECUTE` on
//! the three it calls, and can read no table directly; what a call may see
//! and write is decided here and by its token. No one holds `EXECUTE` until
//! granted it: `CREATE EXTENSION` revokes every function from `PUBLIC`.

use pgrx::prelude::*;
use tandem_core::{Error, Result};

use crate::owner_settings::OwnerSettings;
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
-- But the notifying trigger's function, which scope owners attach to their
-- partitions: it does nothing anyone cannot do with pg_notify.
GRANT EXECUTE ON FUNCTION tandem.notify_change() TO PUBLIC;
"#,
    name = "revoke_from_public",
    finalize
);

thread_local! {
    /// The scope owners a sync is running code as, innermost last (see
    /// [`as_scope_owner`]).
    static OWNERS: std::cell::RefCell<Vec<pg_sys::Oid>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The role a call acts for: the session's role as `SET ROLE` left it,
/// never the function's owner (which `current_user` names inside a
/// `SECURITY DEFINER` function), nor the login role behind a `SET ROLE`;
/// and inside a scope owner's code (a trigger that calls a sync function),
/// that owner.
pub fn caller_oid() -> i64 {
    // SAFETY: reads backend globals that are always set inside a transaction.
    let (current, outer) = unsafe { (pg_sys::GetUserId(), pg_sys::GetOuterUserId()) };
    // The owner's code itself (not another role's SECURITY DEFINER code it
    // called) acts for the owner.
    let owner = OWNERS.with(|owners| owners.borrow().last().copied()).filter(|&owner| owner == current);
    i64::from(owner.unwrap_or(outer).to_u32())
}

/// Runs `body` as the caller ([`caller_oid`]) rather than as the
/// extension's owner, whose rights a sync function has: for what the
/// caller's own transaction left to run.
pub fn as_caller<T>(body: impl FnOnce() -> Result<T>) -> Result<T> {
    let _caller = AsUser::switch(role_oid(caller_oid())?);
    body()
}

/// The current user set to a role for as long as this lives (as a
/// `SECURITY DEFINER` function's is), put back when it goes.
struct AsUser {
    previous: pg_sys::Oid,
    context: i32,
}

/// A role's oid as PostgreSQL's functions take it.
fn role_oid(role: i64) -> Result<pg_sys::Oid> {
    u32::try_from(role).map(pg_sys::Oid::from).map_err(|_| Error::Internal(format!("role oid {role}")))
}

impl AsUser {
    fn switch(role: pg_sys::Oid) -> AsUser {
        let mut previous = pg_sys::Oid::INVALID;
        let mut context = 0;
        // SAFETY: the user id and security context are backend globals
        // these functions read and set; `drop` puts them back on every way
        // out, and an ERROR's abort puts them back itself.
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut previous, &mut context);
            pg_sys::SetUserIdAndSecContext(role, context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
        }
        AsUser { previous, context }
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        // SAFETY: as in `switch`.
        unsafe { pg_sys::SetUserIdAndSecContext(self.previous, self.context) };
    }
}

/// The caller's role name, for messages.
pub fn caller_name(spi: &mut Spi<'_>) -> Result<String> {
    spi::one::<String>(spi, "SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = $1::int8::oid", &[caller_oid().into()])?
        .ok_or_else(|| Error::Internal("the calling role does not exist".into()))
}

/// SQL that is true when the caller (`$2`, its role oid) acts as `role`,
/// an expression giving a role's oid: it has that role's privileges, as
/// PostgreSQL's own ownership checks ask, or it is a superuser. A role that
/// no longer exists is nobody's but a superuser's.
fn acts_as(role: &str) -> String {
    format!(
        "(pg_catalog.pg_has_role($2::int8::oid, {role}, 'USAGE') \
          OR (SELECT u.rolsuper FROM pg_catalog.pg_roles u WHERE u.oid = $2::int8::oid)) IS TRUE"
    )
}

/// A role's name for a message, from an expression giving its oid.
fn role_name(role: &str) -> String {
    format!(
        "coalesce((SELECT r.rolname::text FROM pg_catalog.pg_roles r WHERE r.oid = {role}), \
                  'a role that no longer exists (oid ' || {role}::oid || ')')"
    )
}

/// Whether the caller may act for any client of `scope`: it acts as the
/// scope's owner (see [`acts_as`]), so it may read the tables anyway, and
/// the owner's name. `None` when the scope does not exist.
fn owns(spi: &mut Spi<'_>, scope: &str) -> Result<Option<(bool, String)>> {
    let sql = format!("SELECT {}, {} FROM tandem.scopes s WHERE s.name = $1", acts_as("s.owner"), role_name("s.owner"));
    let rows = spi::select(spi, &sql, &[scope.into(), caller_oid().into()], |row| {
        Ok((spi::required::<bool>(row, 1)?, spi::required_text(row, 2)?))
    })?;
    Ok(rows.into_iter().next())
}

/// Whether the caller may act for any client of `scope` (see [`owns`]).
pub fn caller_owns(spi: &mut Spi<'_>, scope: &str) -> Result<bool> {
    Ok(owns(spi, scope)?.is_some_and(|(owns, _)| owns))
}

/// Refuses a device's call naming a scope that does not exist with the
/// error it would get for an existing scope it may not reach: the refusal
/// of its token (or of its lack of one), so that the device functions
/// never tell whether another tenant's scope exists. The owner of a scope
/// (who could list the scopes anyway) and a superuser, and the holder of a
/// token registered under the name (its scope was deprovisioned), learn
/// that it does not.
pub fn require_known_scope(spi: &mut Spi<'_>, scope: &str, token: Option<&str>) -> Result<()> {
    // The common case, on every device call, costs one lookup by name.
    if spi::one::<bool>(spi, "SELECT EXISTS (SELECT FROM tandem.scopes s WHERE s.name = $1)", &[scope.into()])? == Some(true) {
        return Ok(());
    }
    let sql = format!(
        "SELECT EXISTS (SELECT FROM tandem.clients c WHERE c.scope = $1 AND c.token_hash = sha256(convert_to($3, 'UTF8'))) \
                OR EXISTS (SELECT FROM tandem.scopes s WHERE {}) \
                OR (SELECT u.rolsuper FROM pg_catalog.pg_roles u WHERE u.oid = $2::int8::oid) IS TRUE",
        acts_as("s.owner")
    );
    let may_know = spi::one::<bool>(spi, &sql, &[scope.into(), caller_oid().into(), token.into()])?;
    match may_know {
        Some(true) => Err(Error::UnknownScope(scope.to_string())),
        _ if token.is_some() => Err(Error::InvalidToken(scope.to_string())),
        _ => Err(Error::TokenRequired(scope.to_string())),
    }
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

/// Refuses a caller that may not manage the clients registered under
/// `scope`: its owner's, or once it is deprovisioned (its registrations
/// stay, to come back with it), the role's that registered them, so they
/// can still be listed and revoked.
pub fn require_clients_owner(spi: &mut Spi<'_>, scope: &str, function: &'static str) -> Result<()> {
    if owns(spi, scope)?.is_some() {
        return require_owner(spi, scope, function);
    }
    let sql = format!("SELECT bool_and({}), min({}) FROM tandem.clients c WHERE c.scope = $1", acts_as("c.owner"), role_name("c.owner"));
    let found = spi::select(spi, &sql, &[scope.into(), caller_oid().into()], |row| Ok((spi::get::<bool>(row, 1)?, spi::text(row, 2)?)))?;
    match found.into_iter().next() {
        Some((Some(true), _)) => Ok(()),
        Some((Some(false), owner)) => Err(Error::NotScopeOwner {
            role: caller_name(spi)?,
            scope: scope.to_string(),
            owner: owner.unwrap_or_else(|| "nobody: it was registered directly".into()),
            function,
        }),
        _ => Err(Error::UnknownScope(scope.to_string())),
    }
}

/// Refuses to track a table the caller does not own: provisioning installs
/// triggers on it and lets devices write it, which only its owner may allow.
pub fn require_table_owner(spi: &mut Spi<'_>, table: &str) -> Result<()> {
    let sql = format!("SELECT {} FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass($1)", acts_as("c.relowner"));
    let owned = spi::one::<bool>(spi, &sql, &[table.into(), caller_oid().into()])?;
    match owned {
        Some(true) | None => Ok(()),
        Some(false) => Err(Error::NotTableOwner { role: caller_name(spi)?, table: table.to_string() }),
    }
}

/// Refuses tables whose owner's code would gain rights in a sync: the
/// tables' triggers, defaults and checks run as the scope's owner (see
/// [`as_scope_owner`]), so each table, and each partition, must belong to
/// a role that has the owner's rights already (the owner itself, or a
/// role that is a member of it). A superuser's scope over a table another
/// role owns would run that role's triggers as a superuser.
pub fn require_owned_alike(spi: &mut Spi<'_>, scope_owner: i64, tables: &[String]) -> Result<()> {
    let found = spi::select(
        spi,
        "SELECT p.relid::regclass::text, pg_catalog.pg_get_userbyid(c.relowner)::text, pg_catalog.pg_get_userbyid($2::int8::oid)::text, \
                c.relforcerowsecurity \
         FROM pg_catalog.unnest($1::text[]) t(name) \
         CROSS JOIN LATERAL (SELECT pg_catalog.to_regclass(t.name) AS relid \
                             UNION SELECT r.relid FROM pg_catalog.pg_partition_tree(pg_catalog.to_regclass(t.name)) r) p \
         JOIN pg_catalog.pg_class c ON c.oid = p.relid \
         WHERE NOT pg_catalog.pg_has_role(c.relowner, $2::int8::oid, 'USAGE') OR c.relforcerowsecurity \
         ORDER BY c.relforcerowsecurity DESC LIMIT 1",
        &[tables.to_vec().into(), scope_owner.into()],
        |row| Ok((spi::required_text(row, 1)?, spi::required_text(row, 2)?, spi::required_text(row, 3)?, spi::required::<bool>(row, 4)?)),
    )?;
    match found.into_iter().next() {
        None => Ok(()),
        Some((table, _, _, true)) => Err(Error::ForcedRowSecurity { table }),
        Some((table, owner, scope_owner, false)) => Err(Error::InvalidSetup(format!(
            "{table} belongs to role {owner}, whose triggers, defaults and checks a sync would run with the rights of role \
             {scope_owner}, the scope's owner, which {owner} does not have: provision the scope as {owner}, in a session of its \
             own, or give the table to {scope_owner} (ALTER TABLE ... OWNER TO)"
        ))),
    }
}

/// The oid of a scope's owner.
pub fn scope_owner(spi: &mut Spi<'_>, scope: &str) -> Result<i64> {
    spi::one::<i64>(spi, "SELECT owner::oid::int8 FROM tandem.scopes WHERE name = $1", &[scope.into()])?
        .ok_or_else(|| Error::UnknownScope(scope.to_string()))
}

/// Runs `body` as the scope's owner, with the `search_path` it provisioned
/// the scope with for the users' code: the tables' triggers, domain checks,
/// defaults, casts and the scope's resolver run with the rights of the
/// role that owns them, never with the extension's (a superuser's), and a
/// caller's `search_path` cannot redirect them. Tandem's own statements in
/// `body` touch only the scope's tracking, which provisioning grants the
/// owner. A PostgreSQL error inside ends the transaction, which puts the
/// role back. Every way a table's code runs in a sync comes through here,
/// so here each table's owner is checked to have the owner's rights (a
/// table given to another role since provisioning, a REASSIGN OWNED).
pub fn as_scope_owner<T>(spi: &mut Spi<'_>, scope: &str, body: impl FnOnce(&mut Spi<'_>) -> Result<T>) -> Result<T> {
    let found = spi::select(
        spi,
        "SELECT r.oid::int8, s.search_path, \
                array(SELECT t.relid::regclass::text FROM tandem.scope_tables t WHERE t.scope = s.name ORDER BY t.id), \
                array(SELECT c FROM pg_catalog.pg_db_role_setting d, pg_catalog.unnest(d.setconfig) c \
                      WHERE d.setrole IN (0::oid, s.owner) \
                        AND d.setdatabase IN (0::oid, (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())) \
                      ORDER BY d.setrole <> 0::oid DESC, d.setdatabase <> 0::oid DESC) \
         FROM tandem.scopes s JOIN pg_catalog.pg_roles r ON r.oid = s.owner WHERE s.name = $1",
        &[scope.into()],
        |row| {
            Ok((
                spi::required::<i64>(row, 1)?,
                spi::required_text(row, 2)?,
                spi::required::<Vec<String>>(row, 3)?,
                spi::required::<Vec<String>>(row, 4)?,
            ))
        },
    )?;
    let Some((owner, path, tables, configured)) = found.into_iter().next() else {
        return Err(Error::Internal(format!("the owner of scope \"{scope}\" is no role: provision it again as its owner")));
    };
    // A non-superuser's code never runs in a superuser's session, whatever
    // role the session SET: what it could leave behind there (a deferred
    // trigger, a temporary object that shadows a catalog) would later run
    // as the superuser once the session resets its role.
    // The session's role and the role it logged in as: SET SESSION
    // AUTHORIZATION moves the first, never the second.
    // SAFETY: read backend globals that are always set inside a transaction.
    let (session, login) =
        unsafe { (i64::from(pg_sys::GetSessionUserId().to_u32()), i64::from(pg_sys::GetAuthenticatedUserId().to_u32())) };
    let refused = spi::one::<bool>(
        spi,
        "SELECT (o.rolsuper OR l.rolsuper OR a.rolsuper) AND NOT s.rolsuper \
         FROM pg_catalog.pg_roles o, pg_catalog.pg_roles l, pg_catalog.pg_roles s, pg_catalog.pg_roles a \
         WHERE o.oid = $1::int8::oid AND s.oid = $2::int8::oid AND l.oid = $3::int8::oid AND a.oid = $4::int8::oid",
        &[caller_oid().into(), owner.into(), session.into(), login.into()],
    )?;
    if refused == Some(true) {
        return Err(Error::SuperuserSession { scope: scope.to_string(), owner: owner_name(spi, owner)? });
    }
    require_owned_alike(spi, owner, &tables)?;
    let settings = OwnerSettings::read(spi, &configured)?;
    let owner = role_oid(owner)?;
    // SAFETY: the GUC nest level makes every setting the owner's code
    // changes (even with a plain, session-wide SET) go back when it
    // returns, as PostgreSQL does around ANALYZE and index builds; an
    // ERROR's abort undoes them too.
    let level = unsafe { pg_sys::NewGUCNestLevel() };
    // Nothing the caller's session set reaches the owner's code.
    settings.start()?;
    let as_owner = AsUser::switch(owner);
    struct Owning;
    impl Drop for Owning {
        fn drop(&mut self) {
            OWNERS.with(|owners| owners.borrow_mut().pop());
        }
    }
    OWNERS.with(|owners| owners.borrow_mut().push(owner));
    let owning = Owning;
    // Its writes run with the owner's own text settings (see
    // `spi::with_owners_text_settings`).
    let result = spi::with_owners_settings(settings.text, || {
        spi::with_users_path(spi, &path, |spi| {
            let result = body(spi)?;
            // Constraint triggers the owner's code deferred fire now, as the
            // owner, not at commit as the caller.
            spi::exec(spi, "SET CONSTRAINTS ALL IMMEDIATE", &[])?;
            Ok(result)
        })
    });
    // SAFETY: as above; reached only when `body` returned.
    unsafe { pg_sys::AtEOXact_GUC(false, level) };
    drop(owning);
    drop(as_owner);
    result
}

fn owner_name(spi: &mut Spi<'_>, owner: i64) -> Result<String> {
    Ok(spi::one::<String>(spi, "SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = $1::int8::oid", &[owner.into()])?
        .unwrap_or_default())
}

/// Refuses a resolver the caller may not execute: it runs as the scope's
/// owner at every conflict, so naming it is calling it.
pub fn require_execute(spi: &mut Spi<'_>, function: &str) -> Result<()> {
    let allowed = spi::one::<bool>(
        spi,
        "SELECT pg_catalog.has_function_privilege($2::int8::oid, pg_catalog.to_regproc($1)::oid, 'EXECUTE')",
        &[function.into(), caller_oid().into()],
    )?;
    match allowed {
        Some(false) => Err(Error::InvalidSetup(format!(
            "role \"{}\" may not execute {function}: grant it EXECUTE to use it as the scope's resolver",
            caller_name(spi)?
        ))),
        _ => Ok(()),
    }
}

/// Refuses to make a scope under a name whose earlier registrations belong
/// to another role: deprovisioning keeps them, and they would let their
/// tokens into the new scope's rows.
pub fn require_registrations_own(spi: &mut Spi<'_>, scope: &str) -> Result<()> {
    let sql = format!(
        "SELECT {} FROM tandem.clients c WHERE c.scope = $1 AND c.owner IS NOT NULL AND NOT ({}) LIMIT 1",
        role_name("c.owner"),
        acts_as("c.owner")
    );
    let other = spi::select(spi, &sql, &[scope.into(), caller_oid().into()], |row| spi::required_text(row, 1))?;
    match other.into_iter().next() {
        Some(owner) => Err(Error::NotScopeOwner {
            role: caller_name(spi)?,
            scope: scope.to_string(),
            owner,
            function: "sync_provision (its earlier clients are that role's)",
        }),
        None => Ok(()),
    }
}
