//! `interflowctl` against real nodes: a `TestCluster` (real mTLS, real sled directories) and the
//! binary reaching it through the cluster's `federation.json` with `--dev-node`.

use std::time::Duration;

use interflow_core::record::{ChannelId, DecodedRecord};
use interflow_tests::{TestCluster, eventually};

use crate::{interflowctl, p, run};

/// Runs the CLI off the async threads, so the in-process nodes keep serving.
pub async fn ctl(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&a)
    })
    .await
    .expect("cli task")
}

/// `cmd` with `--dev-node <node> --dev-dir <cluster>` after it.
pub fn args(c: &TestCluster, node: usize, cmd: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
    v.extend([
        "--dev-node".into(),
        c.region(node).to_string(),
        "--dev-dir".into(),
        p(c.dir.path()).into(),
    ]);
    v
}

const HEADER: &str = "idempotency_key,destination,national_id,kind,state,method,observed_on,expected_delivery,event_date,since,prenatal_visits,service_point,supersedes";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_lookup_verify_and_pending_against_real_nodes() {
    let mut c = TestCluster::start(2).await;
    let dest = c.region(1).to_string();
    let good_id = interflow_node_free_id();
    let csv = c.dir.path().join("batch.csv");
    let errors = c.dir.path().join("errors.csv");
    std::fs::write(
        &csv,
        format!(
            "{HEADER}\n\
             row-1,{dest},{good_id},contraception,,iud,2025-11-10,,,2025-01-01,,3101150042,\n\
             row-2,{dest},11010519491231002X,pregnancy,pregnant,,2025-11-10,2026-05,,,3,3101150042,\n\
             row-3,{dest},110105194912310021,pregnancy,not_pregnant,,2025-11-10,,,,0,3101150042,\n\
             row-4,{dest},11010519491231002X,pregnancy,pregnant,,2025-11-10,,,,3,3101150042,\n"
        ),
    )
    .unwrap();

    // Two good rows are stored; the bad check character and the missing due month are
    // reported with their row numbers; exit 1 because rows failed.
    let (code, out, err) = ctl(args(
        &c,
        0,
        &[
            "submit",
            "--file",
            p(&csv),
            "--errors",
            p(&errors),
            "--json",
        ],
    ))
    .await;
    assert_eq!(code, 1, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["stored"], 2, "{report}");
    assert_eq!(report["failed"], 2, "{report}");
    let errs = std::fs::read_to_string(&errors).unwrap();
    // Row numbers are file lines (the header is line 1).
    assert!(
        errs.lines().any(|l| l.starts_with("4,row-3,national_id,")),
        "{errs}"
    );
    assert!(
        errs.lines()
            .any(|l| l.starts_with("5,row-4,") && l.contains("expected_delivery")),
        "{errs}"
    );
    assert!(
        !errs.contains("110105194912310021"),
        "the report must not echo national IDs: {errs}"
    );
    let ch = ChannelId::new(c.region(0), c.region(1));
    assert_eq!(c.node(0).store.head(ch).0, 2);

    // A rerun adds nothing.
    let (_, out, _) = ctl(args(
        &c,
        0,
        &[
            "submit",
            "--file",
            p(&csv),
            "--errors",
            p(&errors),
            "--json",
        ],
    ))
    .await;
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["stored"], 0, "{report}");
    assert_eq!(report["duplicates"], 2, "{report}");
    assert_eq!(c.node(0).store.head(ch).0, 2);

    // Lookup at the sender shows the submitted status, masked, and is audited.
    let (code, out, err) = ctl(args(
        &c,
        0,
        &[
            "lookup",
            "--purpose",
            "service-continuity",
            "--id",
            &good_id,
        ],
    ))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.to_lowercase().contains("iud"), "{out}");
    assert!(
        !out.contains(&good_id),
        "the full ID must never be printed: {out}"
    );
    let (code, out, _) = ctl(args(&c, 0, &["audit", "--json"])).await;
    assert_eq!(code, 0);
    assert!(out.contains("Admin.Lookup"), "{out}");

    // The person's disclosure report: the record sent, its legal basis, and the lookup above.
    let (code, out, err) = ctl(args(
        &c,
        0,
        &[
            "disclosure",
            "--purpose",
            "service-continuity",
            "--id",
            &good_id,
            "--json",
        ],
    ))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let exchanges = report["exchanges"].as_array().unwrap();
    assert_eq!(exchanges.len(), 1, "{report}");
    assert_eq!(exchanges[0]["direction"], "sent");
    assert!(
        exchanges[0]["legal_basis"]
            .as_str()
            .unwrap()
            .starts_with("statutory duty")
    );
    let reads: Vec<&str> = report["reads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert!(
        reads.contains(&"Admin.Lookup") && reads.contains(&"Admin.Disclosure"),
        "{reads:?}"
    );
    assert!(!out.contains(&good_id));

    // A clean log verifies.
    let (code, out, err) = ctl(args(&c, 0, &["verify"])).await;
    assert_eq!(code, 0, "{out}{err}");
    // The connection flags also go before the command, as `interflow dev` prints them.
    let mut before = args(&c, 0, &[]);
    before.extend(["verify".to_owned(), "--json".to_owned()]);
    let (code, out, err) = ctl(before).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.trim_start().starts_with('{'), "{out}");

    // Pending: fine while B takes everything; exit 1 once a record waits past --max-age.
    eventually(
        Duration::from_secs(20),
        "pending to become clean",
        || async {
            let (code, _, _) = ctl(args(&c, 0, &["pending", "--max-age", "1s"])).await;
            (code == 0).then_some(())
        },
    )
    .await;
    c.stop(1).await;
    let one = c.dir.path().join("one.csv");
    std::fs::write(
        &one,
        format!("{HEADER}\nrow-9,{dest},{good_id},contraception,,implant,2025-11-12,,,2025-11-12,,3101150042,\n"),
    )
    .unwrap();
    let (code, out, err) = ctl(args(&c, 0, &["submit", "--file", p(&one)])).await;
    assert_eq!(code, 0, "{out}{err}");
    let stuck = eventually(
        Duration::from_secs(20),
        "pending to report the stuck record",
        || async {
            let (code, out, _) = ctl(args(&c, 0, &["pending", "--max-age", "1s"])).await;
            assert!(code == 0 || code == 1, "{out}");
            (code == 1).then_some(out)
        },
    )
    .await;
    assert!(stuck.contains(&dest), "{stuck}");
    c.shutdown().await;
}

/// The sample file through a real node: rows invalid here and rows the node refuses go to the
/// error report with their line numbers; a rerun stores nothing twice; a clean rerun removes
/// the stale report; a row without an idempotency key is refused before it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_reports_failures_and_reruns_safely() {
    // Agreements link neighbours only: node 0 may send to node 1 (the sample file's
    // destination), not to node 2, a member without an agreement.
    let c = TestCluster::start(3).await;
    assert_eq!(
        c.region(1).as_str(),
        "110105",
        "the sample file's destination"
    );
    let far = c.region(2);
    let sample = include_str!("../../../../deploy/examples/submit-sample.csv");
    let input = c.dir.path().join("batch.csv");
    let mut text = sample.to_owned();
    // Invalid here (check character), and refused by the node (no agreement).
    text.push_str(
        "bad-1,110105,110105194912310021,pregnancy,not_pregnant,,2025-10-05,,,,0,3101150042,\n",
    );
    text.push_str(&format!(
        "far-1,{far},11010519491231002X,pregnancy,not_pregnant,,2025-10-05,,,,0,3101150042,\n"
    ));
    std::fs::write(&input, &text).unwrap();
    let rows = sample.lines().count() as u64 - 1;
    let errors = c.dir.path().join("batch.errors.csv");

    let (code, stdout, stderr) = ctl(args(
        &c,
        0,
        &[
            "--json",
            "submit",
            "--file",
            p(&input),
            "--batch",
            "4",
            "--report",
            p(&errors),
        ],
    ))
    .await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["rows"], rows + 2);
    assert_eq!(v["stored"], rows);
    assert_eq!(v["duplicates"], 0);
    assert_eq!(v["failed"], 2);
    assert_eq!(v["failed_locally"], 1);
    assert_eq!(v["rejected_by_node"], 1);
    assert_eq!(v["batches"], (rows + 1).div_ceil(4));
    assert_eq!(v["errors_file"], p(&errors));
    let report = std::fs::read_to_string(&errors).unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[0], "row,idempotency_key,field,code,reason");
    let bad_row = rows + 2;
    assert!(
        lines[1].starts_with(&format!("{bad_row},bad-1,national_id,invalid_national_id,")),
        "{report}"
    );
    assert!(
        lines[2].starts_with(&format!("{},far-1,destination,no_agreement,", bad_row + 1)),
        "{report}"
    );
    assert!(
        !report.contains("110105194912310021") && !report.contains("11010519491231002X"),
        "{report}"
    );

    // A rerun stores nothing twice.
    let rerun = ["submit", "--file", p(&input), "--report", p(&errors)];
    let (code, stdout, _) = ctl(args(&c, 0, &rerun)).await;
    assert_eq!(code, 1);
    assert!(
        stdout.contains(&format!("0 stored, {rows} already stored, 2 failed")),
        "{stdout}"
    );
    let ch = ChannelId::new(c.region(0), c.region(1));
    assert_eq!(c.node(0).store.head(ch).0, rows);

    // Fixed: exit 0, and the old error report is gone.
    std::fs::write(&input, sample).unwrap();
    let (code, stdout, stderr) = ctl(args(&c, 0, &rerun)).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!errors.exists());

    // Without an idempotency key a row is refused locally: the key is what makes reruns safe.
    let jsonl = c.dir.path().join("one.jsonl");
    std::fs::write(&jsonl, r#"{"destination":"110105","national_id":"11010519491231002X","kind":"contraception","method":"none","observed_on":"2025-11-21","service_point":"3101150042"}"#).unwrap();
    let errs = c.dir.path().join("one-errors.csv");
    let (code, stdout, _) = ctl(args(
        &c,
        0,
        &["submit", "--file", p(&jsonl), "--errors", p(&errs)],
    ))
    .await;
    assert_eq!(code, 1);
    assert!(stdout.contains("idempotency_key"), "{stdout}");
    assert!(
        std::fs::read_to_string(&errs)
            .unwrap()
            .contains("1,,idempotency_key,invalid_idempotency_key")
    );
    assert_eq!(c.node(0).store.head(ch).0, rows);
    c.shutdown().await;
}

/// A valid national ID (check character `X`) for the reads below.
const PERSON: &str = "11010519491231002X";

/// Submits one pregnancy status of `PERSON` from node 0 to node 1 with `submit` and returns the
/// record as node 1 holds it once it has arrived.
async fn submit_one_pregnancy(c: &TestCluster) -> DecodedRecord {
    let csv = c.dir.path().join("pregnancy.csv");
    std::fs::write(
        &csv,
        format!(
            "{HEADER}\nrow-1,{},{PERSON},pregnancy,pregnant,,2025-11-10,2026-06,,,3,3101150042,\n",
            c.region(1)
        ),
    )
    .unwrap();
    let (code, out, err) = ctl(args(c, 0, &["submit", "--file", p(&csv)])).await;
    assert_eq!(code, 0, "{out}{err}");
    let (seq, id) = c
        .node(0)
        .store
        .head(ChannelId::new(c.region(0), c.region(1)));
    assert_eq!(seq, 1);
    c.wait_for_record(1, &id.0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_never_print_a_national_id_or_a_whole_subject_ref() {
    let c = TestCluster::start(2).await;
    let got = submit_one_pregnancy(&c).await;
    let full_ref = hex::encode(got.subject().as_bytes());
    let id = got.id().to_hex();

    // At the peer that received it: the record shows its payload and only the short ref.
    let (code, stdout, stderr) = ctl(args(
        &c,
        1,
        &["record", "--purpose", "service-continuity", &id],
    ))
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("ref:{}", &full_ref[..16])),
        "{stdout}"
    );
    assert!(
        stdout.contains("3101150042") && stdout.contains("2026-06"),
        "{stdout}"
    );
    assert!(!stdout.contains(&full_ref) && !stdout.contains(PERSON));

    let (code, stdout, _) = ctl(args(
        &c,
        1,
        &["--json", "record", "--purpose", "service-continuity", &id],
    ))
    .await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["signature_valid"], true);
    assert_eq!(v["record"]["seq"], 1);
    assert_eq!(v["record"]["payload"]["type"], "pregnancy");
    assert_eq!(v["record"]["payload"]["expected_delivery"], "2026-06");
    assert!(!stdout.contains(&full_ref) && !stdout.contains(PERSON));

    let (code, _, stderr) = ctl(args(
        &c,
        1,
        &["record", "--purpose", "service-continuity", "abc"],
    ))
    .await;
    assert_eq!(code, 2);
    assert!(stderr.contains("64 hex"), "{stderr}");

    // `--id -` reads the ID from stdin; only the masked form comes back.
    let lookup = args(
        &c,
        1,
        &[
            "lookup",
            "--purpose",
            "own-request",
            "--case",
            "CASE-17",
            "--id",
            "-",
        ],
    );
    let out = tokio::task::spawn_blocking(move || {
        interflowctl()
            .args(&lookup)
            .write_stdin(format!("{PERSON}\n"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("**************002X"), "{stdout}");
    assert!(stdout.contains("pregnant, due 2026-06"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("warning"), "{stderr}");
    // The node wrote why: the purpose and the case are in its audit log.
    let (code, audit, _) = ctl(args(&c, 1, &["--json", "audit"])).await;
    assert_eq!(code, 0);
    let audit: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let lookups: Vec<_> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "Admin.Lookup")
        .collect();
    assert!(
        lookups
            .iter()
            .any(|e| e["purpose"] == "own-request" && e["case_ref"] == "CASE-17"),
        "{audit}"
    );
    assert!(
        !stdout.contains(PERSON) && !stdout.contains(&full_ref),
        "{stdout}"
    );
    // An ID on the command line works, with a warning about shell history and `ps`.
    let (code, stdout, stderr) = ctl(args(
        &c,
        1,
        &[
            "--json",
            "lookup",
            "--purpose",
            "service-continuity",
            "--id",
            PERSON,
        ],
    ))
    .await;
    assert_eq!(code, 0);
    assert!(
        stderr.contains("warning") && stderr.contains("shell history") && stderr.contains("--id -"),
        "{stderr}"
    );
    assert!(!stderr.contains(PERSON), "{stderr}");
    // Without a purpose nothing is read, and the error says what to give.
    let (code, _, stderr) = ctl(args(&c, 1, &["lookup", "--id", "-"])).await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("needs `--purpose`") && stderr.contains("service-continuity"),
        "{stderr}"
    );
    assert!(stdout.contains("**************002X"), "{stdout}");
    assert!(
        !stdout.contains(PERSON) && !stdout.contains(&full_ref),
        "{stdout}"
    );

    // A mistyped ID is refused before it reaches the node, and is not echoed.
    let (code, _, stderr) = ctl(args(
        &c,
        1,
        &[
            "lookup",
            "--purpose",
            "service-continuity",
            "--id",
            "110105194912310021",
        ],
    ))
    .await;
    assert_eq!(code, 2);
    assert!(stderr.contains("check character"), "{stderr}");
    assert!(!stderr.contains("110105194912310021"), "{stderr}");
    c.shutdown().await;
}

/// `stats` counts what each node sent and received, `verify` checks the records it holds, and
/// `audit --since` lists the reads made through the admin certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_verify_and_audit_show_what_the_node_did() {
    let c = TestCluster::start(2).await;
    submit_one_pregnancy(&c).await;

    let (code, stdout, stderr) = ctl(args(&c, 0, &["--json", "stats"])).await;
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["region_code"], c.region(0).as_str());
    assert_eq!(v["records_outbound"], 1, "{v}");
    assert_eq!(v["records_inbound"], 0, "{v}");
    let (code, stdout, stderr) = ctl(args(&c, 1, &["stats"])).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("INBOUND") && stdout.contains(c.region(1).as_str()),
        "{stdout}"
    );
    let (_, stdout, _) = ctl(args(&c, 1, &["--json", "stats"])).await;
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["records_inbound"], 1, "{v}");

    let (code, stdout, stderr) = ctl(args(&c, 1, &["verify"])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("checked 1 records"), "{stdout}");

    let (code, _, stderr) = ctl(args(
        &c,
        1,
        &["lookup", "--purpose", "service-continuity", "--id", PERSON],
    ))
    .await;
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = ctl(args(&c, 1, &["audit", "--since", "24h"])).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("Admin.Lookup") && stdout.contains("dev-operator"),
        "{stdout}"
    );
    assert!(!stdout.contains(PERSON), "{stdout}");
    let (code, stdout, _) = ctl(args(&c, 1, &["--json", "audit", "--since", "24h"])).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let lookup = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "Admin.Lookup")
        .unwrap_or_else(|| panic!("{v}"));
    assert!(lookup["at_ms"].as_i64().unwrap() > 0, "{lookup}");
    c.shutdown().await;
}

/// A synthetic valid ID distinct from the sample file's.
fn interflow_node_free_id() -> String {
    // 110105 + 1985-03-07 + 951, check character by ISO 7064 MOD 11-2.
    let body = "11010519850307951";
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body
        .bytes()
        .zip(W)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    format!("{body}{}", b"10X98765432"[(sum % 11) as usize] as char)
}

/// Residence rows go in through `submit` like any other; `coverage` at the home bureau counts
/// the arrivals and `pending` shows them as its worklist, counts only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn residence_rows_show_in_coverage_and_the_pending_worklist() {
    let c = TestCluster::start_residence(3).await;
    // Node 1 is the home bureau of node 2, where the people now live.
    let home = c.region(1).to_string();
    let person = interflow_node_free_id();
    let csv = c.dir.path().join("residence.csv");
    std::fs::write(
        &csv,
        format!(
            "idempotency_key,destination,national_id,kind,event,month\n\
             res-1,{home},{person},residence,arrived,2025-06\n\
             res-2,{home},11010519491231002X,residence,arrived,2025-07\n"
        ),
    )
    .unwrap();
    let (code, out, err) = ctl(args(&c, 2, &["submit", "--file", p(&csv), "--json"])).await;
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["stored"], 2, "{report}");
    let to_home = ChannelId::new(c.region(2), c.region(1));
    let node = c.node(1).clone();
    eventually(
        Duration::from_secs(10),
        "the arrivals to reach home",
        || {
            let n = node.clone();
            async move { (n.store.head(to_home).0 == 2).then_some(()) }
        },
    )
    .await;

    let (code, out, err) = ctl(args(&c, 1, &["--json", "coverage"])).await;
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "one row per month of arrival: {v}");
    for r in rows {
        assert_eq!(r["role"], "home", "{v}");
        assert_eq!(r["peer"], c.region(2).as_str(), "{v}");
        assert_eq!(
            (r["arrivals"].as_u64(), r["unanswered"].as_u64()),
            (Some(1), Some(1)),
            "{v}"
        );
    }
    assert!(!out.contains(&person), "{out}");
    let (code, out, _) = ctl(args(&c, 1, &["coverage"])).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("UNANSWERED") && out.contains("2025-06"),
        "{out}"
    );

    let (code, out, err) = ctl(args(&c, 1, &["--json", "pending", "--max-age", "1h"])).await;
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["worklist"][0]["unanswered"], 2, "{v}");
    assert_eq!(v["late_worklists"], 0, "{v}");
    c.shutdown().await;
}

/// A node whose intake is full answers RESOURCE_EXHAUSTED with a `retry-after-ms` hint;
/// `submit` waits, sends the batch again, and in the end has stored every row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_waits_for_a_busy_node_and_stores_every_row_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    // One call at a time, and no request rate limit in the way of the other submitters.
    let c = TestCluster::start_edited(2, |_, text| {
        text.push_str(
            "\n[limits]\nmax_submit_batch = 2\npeer_requests_per_sec = 1000000\npeer_burst = 1000000\n[intake]\nmax_queued_records = 2\nmax_waiting_calls = 1\n",
        );
    })
    .await;
    c.wait_released(0).await;
    let dest = c.region(1).to_string();
    let id = interflow_node_free_id();
    let rows = 40;
    let csv = c.dir.path().join("busy.csv");
    let mut text = format!("{HEADER}\n");
    for k in 0..rows {
        text.push_str(&format!(
            "busy-{k},{dest},{id},contraception,,iud,2025-11-10,,,2025-01-01,,3101150042,\n"
        ));
    }
    std::fs::write(&csv, text).unwrap();

    // Other submitters keep the node's one intake slot busy until the CLI has been refused.
    let node = c.node(0).clone();
    let stop = Arc::new(AtomicBool::new(false));
    let (ours_refused, ours_stored) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let ours_in_flight = Arc::new(AtomicU64::new(0));
    let mut hammers = Vec::new();
    for h in 0..4u64 {
        let mut intake = c.intake(0).await;
        let (stop, refused, stored, in_flight, dest) = (
            stop.clone(),
            ours_refused.clone(),
            ours_stored.clone(),
            ours_in_flight.clone(),
            dest.clone(),
        );
        hammers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let items = (0..2)
                    .map(|i| {
                        interflow_node::dev::sample_submission(10_000 * (h + 1) + n * 2 + i, &dest)
                    })
                    .collect();
                in_flight.fetch_add(1, Ordering::SeqCst);
                let r = intake
                    .submit(interflow_core::pb::SubmitRequest { items })
                    .await;
                // Counted as refused before it stops being in flight (see the watch below).
                match r {
                    Ok(_) => {
                        stored.fetch_add(2, Ordering::SeqCst);
                        n += 1;
                    }
                    Err(_) => {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
                in_flight.fetch_sub(1, Ordering::SeqCst);
                if r.is_err() {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    let watch = {
        let (stop, ours_refused, ours_in_flight) =
            (stop.clone(), ours_refused.clone(), ours_in_flight.clone());
        tokio::spawn(async move {
            eventually(
                Duration::from_secs(60),
                "the CLI to be refused once",
                || {
                    // Read in this order, every refusal of ours the node counted shows in flight
                    // or refused: more refusals than that were the CLI's.
                    let busy = node.metrics.intake_busy.get();
                    let ours =
                        ours_in_flight.load(Ordering::SeqCst) + ours_refused.load(Ordering::SeqCst);
                    async move { (busy > ours).then_some(()) }
                },
            )
            .await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    let (code, out, err) = ctl(args(&c, 0, &["submit", "--file", p(&csv), "--json"])).await;
    watch.await.unwrap();
    for h in hammers {
        h.await.unwrap();
    }
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["stored"], rows, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert!(report["busy_retries"].as_u64().unwrap() >= 1, "{report}");
    let ch = ChannelId::new(c.region(0), c.region(1));
    assert_eq!(
        c.node(0).store.head(ch).0,
        ours_stored.load(Ordering::SeqCst) + rows
    );
    // Every row was stored once: a rerun finds them all already stored.
    let (code, out, err) = ctl(args(&c, 0, &["submit", "--file", p(&csv), "--json"])).await;
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["stored"], 0, "{report}");
    assert_eq!(report["duplicates"], rows, "{report}");
}
