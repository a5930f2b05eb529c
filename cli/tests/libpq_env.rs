//! libpq's TLS environment (`PGSSLMODE`, `PGSSLROOTCERT`) holds where the
//! URL is silent: an operator who sets them is not connected unverified
//! by the URL's default `prefer` (helper 74). The URL still wins.

use std::process::Command;

use tandem_tests::certificates::make as certificates;
use tandem_tests::local::Files;
use tandem_tests::TestDb;

const SCHEMA: &str = "
CREATE TABLE customers (id bigint PRIMARY KEY, name text);
INSERT INTO customers VALUES (1, 'Ada');
SELECT sync_provision('crm', '{\"tables\": [{\"name\": \"customers\"}]}');
";

#[test]
fn pgsslmode_and_pgsslrootcert_hold_where_the_url_is_silent() {
    let db = TestDb::new("libpq_env");
    db.connect().batch_execute(SCHEMA).unwrap();
    let files = Files::new("libpq_env");
    // A CA this server's certificate does not chain to.
    let other_ca = files.path("other.pem");
    std::fs::write(&other_ca, certificates("other").ca).unwrap();
    let sync = |url: &str, file: &str| {
        Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["sync", "--scope", "crm", "--remote", url, "--local"])
            .arg(files.path(file))
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", &other_ca)
            .output()
            .expect("run tandem sync")
    };
    let refused = sync(&db.url, "env.db");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "connected unverified: {said}");
    assert!(said.contains("TLS") || said.contains("SSL"), "{said}");
    let separator = if db.url.contains('?') { '&' } else { '?' };
    let allowed = sync(&format!("{}{separator}sslmode=disable", db.url), "url.db");
    assert!(allowed.status.success(), "the URL's sslmode wins: {}", String::from_utf8_lossy(&allowed.stderr));
}
