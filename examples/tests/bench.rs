//! `execd bench` end to end with tiny sizes: every scenario runs against a local server and
//! reports its metrics. Numbers are not checked (tests never time things), only that each
//! metric is present and well formed. Every wait is bounded.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

mod common;

use common::EXECD;

const TIMEOUT: Duration = Duration::from_secs(120);

fn bench(args: &[&str]) -> Output {
    let mut cmd = Command::new(EXECD);
    cmd.arg("bench").args(args);
    common::output_within(cmd, TIMEOUT)
}

/// The metrics of a successful `execd bench --json` run with `args`.
fn metrics(args: &[&str]) -> Vec<Value> {
    let out = bench(args);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    report["metrics"].as_array().expect("metrics array").clone()
}

#[test]
fn json_report_has_every_selected_metric() {
    let metrics = metrics(&[
        "--json",
        "--only",
        "rss,spawn,concurrent,echo,throughput,sandbox,http,floor",
        "--iterations",
        "3",
        "--concurrent",
        "4",
        "--sessions",
        "4",
        "--processes",
        "4",
        "--bytes",
        "300000",
        "--http-bytes",
        "3000000",
    ]);
    let keys: Vec<&str> = metrics.iter().filter_map(|m| m["key"].as_str()).collect();
    for key in [
        "floor_spawn",
        "floor_fork_spawn",
        "floor_concurrent_wall",
        "floor_echo",
        "floor_throughput",
        "rss_baseline",
        "rss_idle_sessions",
        "rss_idle_sessions_peak",
        "rss_live_processes",
        "rss_live_processes_peak",
        "spawn_response",
        "spawn_closed",
        "concurrent_wall",
        "concurrent_closed",
        "echo",
        "throughput",
        "throughput_server_cpu",
        "sandbox_off_closed",
        "sandbox_ro_closed",
        "sandbox_ro_ratio",
        "sandbox_ww_closed",
        "sandbox_ww_ratio",
        "http_floor",
        "http_stream",
        "http_stream_peak_rss",
        "http_stream_binary",
        "http_stream_binary_peak_rss",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    for m in &metrics {
        let has_number = m["p50_ms"].is_number() || m["value"].is_number();
        assert!(has_number, "metric without a number: {m}");
    }
    assert_eq!(
        metrics
            .iter()
            .find(|m| m["key"] == "spawn_closed")
            .and_then(|m| m["n"].as_u64()),
        Some(3)
    );
}

#[test]
fn rss_is_skipped_without_a_server_pid() {
    let metrics = metrics(&["--url", "ws://127.0.0.1:9", "--only", "rss", "--json"]);
    assert!(!metrics.is_empty());
    assert!(
        metrics.iter().all(|m| m["skipped"].is_string()),
        "{metrics:?}"
    );
}

#[test]
fn unknown_scenario_is_refused() {
    let out = bench(&["--only", "nope"]);
    assert!(!out.status.success());
}

#[test]
fn tls_reports_plain_and_tls_connects() {
    let out = bench(&["--only", "tls", "--iterations", "5"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "connect ws://",
        "connect wss://",
        "connect + initialize round trip, ws://",
        "connect + initialize round trip, wss://",
        "TLS adds to a connect (p50)",
        "TLS adds to connect + initialize (p50)",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    assert_eq!(stdout.matches("(n=5)").count(), 4, "{stdout}");
}

#[test]
fn fs_reports_reads_writes_metadata_and_walk() {
    let metrics = metrics(&[
        "--json",
        "--only",
        "fs",
        "--fs-bytes",
        "3000000",
        "--iterations",
        "3",
    ]);
    for key in [
        "floor_fs_cat",
        "fs_read_file",
        "fs_read_blocks",
        "fs_read_file_binary",
        "fs_read_blocks_binary",
        "floor_fs_write",
        "fs_write_file",
        "floor_fs_stat",
        "fs_get_metadata",
        "fs_get_metadata_pipelined",
        "floor_fs_walk",
        "fs_walk",
    ] {
        let m = metrics
            .iter()
            .find(|m| m["key"] == key)
            .unwrap_or_else(|| panic!("{key} missing from {metrics:?}"));
        assert!(
            m["p50_ms"].is_number() || m["value"].is_number(),
            "{key} has no number: {m}"
        );
    }
    let metadata = metrics.iter().find(|m| m["key"] == "fs_get_metadata");
    assert_eq!(metadata.and_then(|m| m["n"].as_u64()), Some(3));
    let walk = metrics.iter().find(|m| m["key"] == "fs_walk");
    assert_eq!(
        walk.and_then(|m| m["detail"].as_str()),
        Some("10100 entries listed")
    );
}
