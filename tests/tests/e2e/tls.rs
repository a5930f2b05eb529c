//! TLS to PostgreSQL: a server that takes only TLS connections, with a
//! certificate made here, syncs with a file that checks it against its CA,
//! and a file holding another CA, or not using TLS, is refused with a
//! message that says why.

use serde_json::json;
use tandem_local::SyncOptions;
use tandem_tests::certificates::make as certificates;
use tandem_tests::cluster::Cluster;
use tandem_tests::json as query_json;
use tandem_tests::local::{local_count, Files};

#[test]
fn a_server_that_requires_tls_syncs_with_its_ca_and_refuses_another() {
    let ours = certificates("ours");
    let theirs = certificates("theirs");
    let cluster = Cluster::start(
        "tls",
        &[("server.crt", ours.cert.as_bytes()), ("server.key", ours.key.as_bytes())],
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'",
        "hostssl all all 127.0.0.1/32 trust",
    );
    let mut admin = cluster.admin();
    admin
        .batch_execute(
            "CREATE EXTENSION tandem;
             CREATE TABLE customers (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text);
             INSERT INTO customers VALUES (1, 1, 'Ada'), (2, 1, 'Bob'), (3, 2, 'Cy');
             SELECT sync_provision('crm', '{\"tables\": [{\"name\": \"customers\", \"filter\": {\"tenant_id\": \"tenant\"}}]}');",
        )
        .unwrap();
    let token = query_json(&mut admin, "SELECT sync_register_client('crm', '{\"tenant\": 1}')", &[])["token"].as_str().unwrap().to_string();
    let files = Files::new("tls");
    let our_ca = files.path("ours.pem");
    let their_ca = files.path("theirs.pem");
    std::fs::write(&our_ca, &ours.ca).unwrap();
    std::fs::write(&their_ca, &theirs.ca).unwrap();
    let url = |host: &str, query: &str| format!("postgres://postgres@{host}:{}/postgres?{query}", cluster.port);
    let options = |ca: Option<&std::path::Path>| -> SyncOptions {
        serde_json::from_value(json!({"token": token, "ca_cert": ca.map(|p| p.to_string_lossy().into_owned())})).unwrap()
    };
    let store = |name: &str| tandem_local::Store::open(files.path(name)).unwrap();

    // Verified against our CA, by IP and by name, through the URL or --ca-cert.
    let file = store("full.db");
    let ca_in_url = format!("sslmode=verify-full&sslrootcert={}", our_ca.display());
    file.sync(&url("127.0.0.1", &ca_in_url), "crm", &options(None)).unwrap_or_else(|e| panic!("verify-full: {e}"));
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers"), 2);
    let file = store("by_name.db");
    file.sync(&url("localhost", "sslmode=verify-full"), "crm", &options(Some(&our_ca))).unwrap_or_else(|e| panic!("by name: {e}"));
    assert_eq!(local_count(&file, "SELECT count(*) FROM customers"), 2);
    // Encrypted without a check, as libpq's require and prefer (the default).
    for query in ["sslmode=require", ""] {
        let file = store(&format!("unverified{}.db", query.len()));
        file.sync(&url("127.0.0.1", query), "crm", &options(None)).unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_eq!(local_count(&file, "SELECT count(*) FROM customers"), 2, "{query}");
    }

    // Another CA: refused, whichever verifying mode, and the file is unchanged.
    for mode in ["verify-ca", "verify-full", "require"] {
        let file = store(&format!("{mode}.db"));
        let error = file.sync(&url("127.0.0.1", &format!("sslmode={mode}")), "crm", &options(Some(&their_ca))).unwrap_err().to_string();
        assert!(error.contains("TLS failed") && error.contains("certificate"), "{mode}: {error}");
        assert!(!error.contains("(SQLSTATE"), "{mode}: {error}");
    }
    // Without TLS: this server's pg_hba.conf has no entry for it.
    let file = store("plain.db");
    let error = file.sync(&url("127.0.0.1", "sslmode=disable"), "crm", &options(None)).unwrap_err().to_string();
    assert!(error.contains("refused:") && error.contains("no encryption"), "{error}");
}

#[test]
fn tls_is_refused_by_a_server_without_it_unless_only_preferred() {
    let cluster = Cluster::start("notls", &[], "ssl = off", "host all all 127.0.0.1/32 trust");
    cluster
        .admin()
        .batch_execute(
            "CREATE EXTENSION tandem; CREATE TABLE t (id int PRIMARY KEY); SELECT sync_provision('s', '{\"tables\": [{\"name\": \"t\"}]}')",
        )
        .unwrap();
    let files = Files::new("notls");
    let file = tandem_local::Store::open(files.path("a.db")).unwrap();
    let url = |query: &str| format!("postgres://postgres@127.0.0.1:{}/postgres?{query}", cluster.port);
    file.sync(&url("sslmode=prefer"), "s", &SyncOptions::default()).unwrap_or_else(|e| panic!("prefer falls back to plain: {e}"));
    let error = file.sync(&url("sslmode=require"), "s", &SyncOptions::default()).unwrap_err().to_string();
    assert!(error.contains("TLS"), "{error}");
}
