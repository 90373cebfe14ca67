//! `interflow bench` as an operator runs it, for one second (CI stays fast; the figures in the
//! README come from longer runs): it starts its own two `interflow serve` processes, and its
//! report accounts for every record it submitted. With `--catch-up` and `--reopen` it also
//! stops and starts nodes, and a tiny run of those phases accounts for every record too.

use std::process::Command;

/// Runs a one-second bench with `extra` arguments and answers its JSON report.
fn bench(extra: &[&str]) -> serde_json::Value {
    bench_with(&[&["--duration", "1s"], extra].concat())
}

/// Runs a bench of 100-item calls from two submitters with `args` and answers its JSON report.
fn bench_with(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_interflow"))
        .args([
            "bench",
            "--batch",
            "100",
            "--concurrency",
            "2",
            "--drain-timeout",
            "60s",
            "--json",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn one_second_bench_reports_every_record_receipted() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("bench.svg");
    let r = bench(&["--svg", svg.to_str().unwrap()]);
    assert_eq!(r["suite"], "ed25519", "{r}");
    let submitted = r["submitted"].as_u64().unwrap();
    assert!(submitted >= 100, "{r}");
    assert_eq!(r["submit_errors"], 0, "{r}");
    assert_eq!(r["drained"], true, "{r}");
    assert_eq!(r["receipted"].as_u64(), Some(submitted), "{r}");
    assert!(r["intake_rate"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["end_to_end_rate"].as_f64().unwrap() > 0.0, "{r}");
    let lat = &r["submit_latency_ms"];
    assert!(lat["p50"].as_f64().unwrap() > 0.0, "{r}");
    assert!(lat["p50"].as_f64() <= lat["p99"].as_f64(), "{r}");
    assert!(r["ceilings"]["batch_verify_per_core"].as_f64().unwrap() > 0.0);
    assert!(r["ceilings"]["sm2_sign_per_core"].as_f64().unwrap() > 0.0);
    assert!(r["ceilings"]["sm2_verify_per_core"].as_f64().unwrap() > 0.0);
    let nodes = r["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    for n in nodes {
        // The warm-up record too: every record the bench made is in both stores.
        assert_eq!(n["records"].as_u64(), Some(submitted + 1), "{n}");
        assert!(n["cpu_cores"].as_f64().unwrap() > 0.0, "{n}");
        assert!(n["rss_bytes"].as_u64().unwrap() > 0, "{n}");
        assert!(n["store_bytes_per_record"].as_f64().unwrap() > 0.0, "{n}");
    }
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.contains("throughput (records/s)"));
    // The phases not asked for are not in the report.
    for absent in ["intake_alone_rate", "catch_up_rate", "reopen_secs"] {
        assert!(r.get(absent).is_none(), "{absent}: {r}");
    }
}

#[test]
fn catch_up_and_reopen_phases_account_for_every_record() {
    let r = bench_with(&["--records", "300", "--catch-up", "--reopen"]);
    assert_eq!(r["submitted"], 300, "{r}");
    assert_eq!(r["submit_errors"], 0, "{r}");
    assert_eq!(r["drained"], true, "{r}");
    assert_eq!(r["receipted"], 300, "{r}");
    // B was stopped while A took the records: the whole backlog was caught up after its start.
    assert_eq!(r["catch_up_backlog"], 300, "{r}");
    assert!(r["intake_alone_rate"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["catch_up_rate"].as_f64().unwrap() > 0.0, "{r}");
    let first = r["catch_up_first_receipt_secs"].as_f64().unwrap();
    let all = r["catch_up_secs"].as_f64().unwrap();
    assert!(first > 0.0 && first <= all, "{r}");
    // A started again on its store, with the warm-up record and the 300.
    assert!(r["reopen_secs"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["reopen_stop_secs"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["reopen_records"], 301, "{r}");
    assert!(r["reopen_rss_bytes"].as_u64().unwrap() > 0, "{r}");
    for n in r["nodes"].as_array().unwrap() {
        assert_eq!(n["records"], 301, "{n}");
    }
}

#[test]
fn a_bench_with_sm2_keys_signs_every_record_in_the_national_suite() {
    let r = bench(&["--sm2"]);
    assert_eq!(r["suite"], "sm2_sm3", "{r}");
    let submitted = r["submitted"].as_u64().unwrap();
    assert!(submitted >= 100, "{r}");
    assert_eq!(r["drained"], true, "{r}");
    assert_eq!(r["receipted"].as_u64(), Some(submitted), "{r}");
    assert!(r["end_to_end_of_batch_verify_ceiling"].as_f64().unwrap() > 0.0);
}
