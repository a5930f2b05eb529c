//! An HTTPS gateway in the test's process for end-to-end tests: a scope,
//! a role holding nothing but EXECUTE on the three device functions, a CA
//! and a certificate made here, and `tandem serve`'s gateway over TLS on a
//! loopback port.

use std::path::Path;
use std::time::Duration;

use reqwest::blocking::Client as Http;
use serde_json::json;
use tandem_local::{Store, SyncOptions};
use tandem_server::{Config, Running, TlsFiles};

use crate::local::Scenario;
use crate::role::{Role, GATEWAY_GRANTS};

/// Tenants 1 and 2, 20 customers each, in scope `crm`.
pub const SCHEMA: &str = r#"
CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text);
INSERT INTO customers SELECT i, 1 + i % 2, 'customer ' || i FROM generate_series(1, 40) i;
SELECT sync_provision('crm', '{"tables": [{"name": "customers", "filter": {"tenant_id": "tenant"}}]}');
"#;

pub use crate::certificates::Files as Certificates;

/// A CA, and a certificate it signed for localhost and 127.0.0.1, in files.
pub fn certificates(dir: &Path, name: &str) -> Certificates {
    crate::certificates::in_files(dir, name)
}

/// A scope, the gateway's role, certificates and a gateway over TLS. Fields
/// drop in this order: the gateway (its pool) first, then the role, then the
/// database and files the role's grants live in.
pub struct Setup {
    pub gateway: Option<Running>,
    pub role: Role,
    pub certs: Certificates,
    pub s: Scenario,
}

impl Setup {
    pub fn new(label: &str) -> Setup {
        Setup::with(label, |_| {})
    }

    pub fn with(label: &str, tweak: impl FnOnce(&mut Config)) -> Setup {
        Setup::with_schema(label, SCHEMA, tweak)
    }

    /// With `schema` (SQL making scope `crm` and anything else) instead of
    /// [`SCHEMA`].
    pub fn with_schema(label: &str, schema: &str, tweak: impl FnOnce(&mut Config)) -> Setup {
        let s = Scenario::new(label, schema, "crm");
        let role = Role::new(&s, "gw", GATEWAY_GRANTS);
        let certs = certificates(&s.files.dir, "ours");
        let mut setup = Setup { gateway: None, role, certs, s };
        let mut config = setup.config();
        tweak(&mut config);
        setup.gateway = Some(Running::start(config).unwrap_or_else(|e| panic!("the gateway did not start: {e}")));
        setup
    }

    pub fn config(&self) -> Config {
        let mut config = Config::new(self.role.url(&self.s));
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.tls = Some(TlsFiles { cert: self.certs.cert.clone(), key: self.certs.key.clone() });
        config.shutdown_grace = Duration::from_secs(20);
        config
    }

    pub fn gateway(&self) -> &Running {
        self.gateway.as_ref().expect("a running gateway")
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.gateway().addr().port())
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url())
    }

    pub fn options(&self, token: &str) -> SyncOptions {
        serde_json::from_value(json!({"token": token, "ca_cert": self.certs.ca})).unwrap()
    }

    pub fn sync(&self, file: &Store, token: &str) -> tandem_local::SyncReport {
        file.sync(&self.url(), "crm", &self.options(token)).unwrap_or_else(|e| panic!("sync through the gateway: {e}"))
    }

    /// An HTTP client that trusts our CA and leaves bodies as they come.
    pub fn http(&self) -> Http {
        let tls = tandem_tls::https_client_config(Some(&self.certs.ca)).unwrap();
        Http::builder().tls_backend_preconfigured(tls).no_gzip().no_zstd().build().unwrap()
    }

    /// Every row of the server's table, for "nothing changed".
    pub fn server_rows(&self) -> Vec<(i64, i32, Option<String>)> {
        let rows = self.s.server().query("SELECT id, tenant_id, name FROM customers ORDER BY id", &[]).unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
    }

    /// Kills the gateway (connections cut, as a crash would) and starts
    /// another at the same address.
    pub fn restart(&mut self, down_for: Duration) {
        let addr = self.gateway().addr();
        if let Some(gateway) = self.gateway.take() {
            gateway.kill().unwrap();
        }
        std::thread::sleep(down_for);
        let mut config = self.config();
        config.listen = addr;
        self.gateway = Some(Running::start(config).unwrap_or_else(|e| panic!("the gateway did not start again: {e}")));
    }
}
