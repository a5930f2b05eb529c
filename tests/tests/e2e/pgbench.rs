//! An outside workload: pgbench's own tables and transactions (TPC-B like:
//! every transaction updates an account, a teller and a branch, and
//! inserts a history row), synced into a SQLite file of one branch while
//! pgbench runs, with the file editing accounts too. After a last sync the
//! file equals the branch's rows on the server, and `sync_verify` agrees.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use tandem_local::verify::Options;
use tandem_tests::local::{assert_converged, local, Scenario};

fn pgbench() -> std::path::PathBuf {
    let output = Command::new("pg_config").arg("--bindir").output().expect("pg_config (PostgreSQL's server development files)");
    std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()).join("pgbench")
}

#[test]
fn pgbench_tables_sync_while_pgbench_runs_and_end_equal() {
    let s = Scenario::new("pgbench", "", "bench");
    let init = Command::new(pgbench()).args(["-i", "-s", "2", "-q", "-n"]).arg(&s.db.url).output().expect("run pgbench -i");
    assert!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));

    // pgbench_history has no primary key: refused, saying how to fix it.
    let refused = s
        .server()
        .batch_execute(r#"SELECT sync_provision('bench', '{"tables": [{"name": "pgbench_history"}]}')"#)
        .expect_err("a table without a primary key");
    let message = tandem_tests::describe(&refused);
    assert!(message.contains("has no primary key") && message.contains("ADD PRIMARY KEY"), "{message}");

    s.server()
        .batch_execute(
            r#"SELECT sync_provision('bench', '{"tables": [
                 {"name": "pgbench_branches", "filter": {"bid": "branch"}},
                 {"name": "pgbench_tellers", "filter": {"bid": "branch"}},
                 {"name": "pgbench_accounts", "filter": {"bid": "branch"}}]}')"#,
        )
        .unwrap();
    let token = s.register(json!({"branch": 1}));
    let file = s.store("branch1.db");
    let first = s.sync_as(&file, &token);
    assert_eq!(first.pulled, 1 + 10 + 100_000, "branch 1: one branch, its tellers and accounts");

    let mut run = Command::new(pgbench())
        .args(["-c", "4", "-j", "2", "-T", "6", "-n", "--max-tries", "100"])
        .arg(&s.db.url)
        .spawn()
        .expect("run pgbench");
    let started = Instant::now();
    let mut rounds = 0;
    let mut pulled = 0;
    while started.elapsed() < Duration::from_secs(6) {
        // The file edits accounts pgbench may be updating too.
        local(&file, &format!("UPDATE pgbench_accounts SET filler = 'device {rounds}' WHERE aid IN ({}, {})", 1 + rounds, 50_000 + rounds));
        let report = s.sync_as(&file, &token);
        pulled += report.pulled;
        rounds += 1;
    }
    assert!(run.wait().expect("pgbench ends").success(), "pgbench failed");
    let transactions: i64 = s.server().query_one("SELECT count(*) FROM pgbench_history", &[]).unwrap().get(0);
    assert!(transactions > 100 && rounds > 5 && pulled > 0, "{transactions} transactions, {rounds} rounds, {pulled} rows pulled");

    s.sync_as(&file, &token);
    assert_converged(&mut s.server(), file.connection(), "bench", &json!({"branch": 1}));
    let verified = file.verify(&s.db.url, "bench", &Options { token: Some(token.clone()), ..Options::default() }).unwrap();
    assert!(verified.equal && verified.rows_checked == 100_011, "{verified:?}");
    let balance: i64 = s.server().query_one("SELECT sum(abalance)::int8 FROM pgbench_accounts WHERE bid = 1", &[]).unwrap().get(0);
    let local_balance: i64 = file.connection().query_row("SELECT sum(abalance) FROM pgbench_accounts", [], |r| r.get(0)).unwrap();
    assert_eq!(local_balance, balance, "the branch's balances add up the same on both sides");
}
