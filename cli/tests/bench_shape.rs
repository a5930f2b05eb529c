//! `tandem bench` on a small table: it runs every case end to end and prints
//! the JSON the issue asks for. Shape only, never a timing: figures depend on
//! the machine and belong in docs/benchmarks.md.

use std::process::Command;

use serde_json::Value;

const KEYS: [&str; 39] = [
    "rows",
    "download_rows_per_s",
    "baseline_rows_per_s",
    "download_ratio",
    "filtered_download_rows_per_s",
    "incremental_ms",
    "incremental_held_ms",
    "upload_rows_per_s",
    "upload_ratio",
    "upload_apply_ratio",
    "upload_tracked_ratio",
    "server_write_overhead",
    "local_write_overhead",
    "local_trigger_floor_insert",
    "local_trigger_floor_update",
    "local_row_insert_overhead",
    "local_row_update_overhead",
    "peak_rss_mb",
    "gateway_download_ratio",
    "live_p50_ms",
    "live_p99_ms",
    "watchers_live_s",
    "watchers_converge_s",
    "watchers_gateway_rss_mb",
    "add_column_round_ms",
    "verify_ms",
    "verify_bytes",
    "verify_repair_ms",
    "tables",
    "idle_round_ms",
    "one_change_round_ms",
    "one_table_idle_round_ms",
    "held_idle_round_ms",
    "gateway_idle_round_ms",
    "gateway_one_change_round_ms",
    "clients_p50_ms",
    "clients_p99_ms",
    "clients_first_p50_ms",
    "clients_first_p99_ms",
];

#[test]
fn bench_json_has_every_figure() {
    let output = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["bench", "--rows", "2000", "--watchers", "5", "--tables", "5", "--clients", "3", "--clients-seconds", "3", "--json"])
        .env("TANDEM_DATABASE_URL", tandem_tests::server_url())
        .output()
        .expect("run tandem bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tandem bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");
    assert_eq!(report["rows"], 2000);
    for key in KEYS {
        let figure = report[key].as_f64().unwrap_or_else(|| panic!("{key} missing or not a number in {report}"));
        assert!(figure.is_finite() && figure > 0.0, "{key} = {figure}");
    }
    // Five devices through one gateway: each ends with its partition, and
    // one session waits for all of them.
    assert_eq!((report["watchers"].as_u64(), report["watchers_converged"].as_bool()), (Some(5), Some(true)), "{report}");
    assert_eq!(report["watchers_listen_sessions"], 1, "{report}");
    // An unchanged file's verify moves less than its rows do.
    let (verify, rows) = (report["verify_bytes"].as_f64().unwrap_or_default(), report["verify_rows_bytes"].as_f64().unwrap_or_default());
    assert!(verify < rows, "verify moved {verify} bytes for {rows} bytes of rows");
    // Three clients syncing every second: every file ends equal to its
    // partition, and no round failed.
    assert_eq!((report["clients"].as_u64(), report["clients_converged"].as_bool()), (Some(3), Some(true)), "{report}");
    assert_eq!(report["clients_failed_rounds"], 0, "{report}");
    // The round after ADD COLUMN ... DEFAULT moved the 100 changed rows only.
    assert_eq!(report["add_column_rows_pulled"], 100, "{report}");
}

#[test]
fn bench_refuses_a_table_too_small_to_measure() {
    let output = Command::new(env!("CARGO_BIN_EXE_tandem")).args(["bench", "--rows", "10"]).output().expect("run tandem bench");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--rows must be at least 1000"));
}
