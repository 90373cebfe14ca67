//! `interflowctl` against real nodes: a `TestCluster` (real mTLS, real sled directories) and the
//! binary reaching it through the cluster's `federation.json` with `--dev-node`.

use std::time::{Duration, Instant};

use interflow_tests::TestCluster;

use crate::{p, run};

/// Runs the CLI off the async threads, so the in-process nodes keep serving.
async fn ctl(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&a)
    })
    .await
    .expect("cli task")
}

fn args(c: &TestCluster, node: usize, cmd: &[&str]) -> Vec<String> {
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
    let ch = interflow_core::record::ChannelId::new(c.region(0), c.region(1));
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
    let (code, out, err) = ctl(args(&c, 0, &["lookup", "--id", &good_id])).await;
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
    let (code, out, err) = ctl(args(&c, 0, &["disclosure", "--id", &good_id, "--json"])).await;
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
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, _, _) = ctl(args(&c, 0, &["pending", "--max-age", "1s"])).await;
        if code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "pending never became clean");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.stop(1).await;
    let one = c.dir.path().join("one.csv");
    std::fs::write(
        &one,
        format!("{HEADER}\nrow-9,{dest},{good_id},contraception,,implant,2025-11-12,,,2025-11-12,,3101150042,\n"),
    )
    .unwrap();
    let (code, out, err) = ctl(args(&c, 0, &["submit", "--file", p(&one)])).await;
    assert_eq!(code, 0, "{out}{err}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let stuck = loop {
        let (code, out, _) = ctl(args(&c, 0, &["pending", "--max-age", "1s"])).await;
        if code == 1 {
            break out;
        }
        assert_eq!(code, 0);
        assert!(
            Instant::now() < deadline,
            "pending never reported the stuck record"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(stuck.contains(&dest), "{stuck}");
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
