//! Login roles made for one test, holding only what a test grants them
//! (a device's or the gateway's rights), dropped when the test ends.

use std::sync::atomic::{AtomicUsize, Ordering};

use postgres::{Client, NoTls};
use tandem_core::dsn::with_database;

use crate::local::Scenario;
use crate::server_url;

/// What the gateway's role holds: EXECUTE on the functions it relays to,
/// nothing else (docs/deploy.md).
pub const GATEWAY_GRANTS: &str =
    "GRANT EXECUTE ON FUNCTION sync_schema, sync_select_changes_json, sync_apply_changes_json, sync_verify TO {role};";

/// A role of the cluster (roles are shared by every database), granted
/// rights in one test's database; `{role}` in the grants names it. Make it
/// after its scenario, so it is dropped first.
pub struct Role {
    pub name: String,
    db_url: String,
}

impl Role {
    pub fn new(s: &Scenario, label: &str, grants: &str) -> Role {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("tandem_{label}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        s.server()
            .batch_execute(&format!("DROP ROLE IF EXISTS {name}; CREATE ROLE {name} LOGIN; {}", grants.replace("{role}", &name)))
            .unwrap_or_else(|e| panic!("create role {name}: {e}"));
        Role { name, db_url: s.db.url.clone() }
    }

    /// The test database's URL, as this role.
    pub fn url(&self, s: &Scenario) -> String {
        with_database(&server_url(), &s.db.name).replacen("postgres@", &format!("{}@", self.name), 1)
    }

    /// A connection to the test database as this role.
    pub fn connect(&self, s: &Scenario) -> Client {
        Client::connect(&self.url(s), NoTls).unwrap_or_else(|e| panic!("connect as {}: {e}", self.name))
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        // Its objects go to the database's owner rather than away: another
        // role's objects may depend on them (a default calling its
        // function, a cast through it), which DROP OWNED refuses, and the
        // role would outlive the test in the cluster. The test's database
        // is dropped next, with them.
        if let Ok(mut admin) = Client::connect(&self.db_url, NoTls) {
            let drop = format!("REASSIGN OWNED BY {0} TO CURRENT_USER; DROP OWNED BY {0}; DROP ROLE IF EXISTS {0}", self.name);
            if let Err(error) = admin.batch_execute(&drop) {
                eprintln!("role {} outlives its test: {error}", self.name);
            }
        }
    }
}
