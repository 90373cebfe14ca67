//! The CLI as operators use it, against real nodes: what a refused certificate or an
//! unreachable node says, channel and record id forms that survive a shell, `audit` paging and
//! where `submit` writes its error report.

use interflow_tests::TestCluster;

use crate::e2e::{args, ctl};
use crate::{interflowctl, p};

/// `["--config", <node i's config>]` followed by `rest`.
fn with_config(c: &TestCluster, i: usize, rest: &[&str]) -> Vec<String> {
    let mut v = vec!["--config".to_owned(), p(&c.fed.nodes[i].config).to_owned()];
    v.extend(rest.iter().map(|s| s.to_string()));
    v
}

const HEADER: &str = "idempotency_key,destination,national_id,kind,state,method,observed_on,expected_delivery,event_date,since,prenatal_visits,service_point,supersedes";

/// One valid row for node 1 of `c`.
fn one_row(c: &TestCluster, key: &str) -> String {
    format!(
        "{key},{},11010519491231002X,pregnancy,not_pregnant,,2025-10-05,,,,0,3101150042,\n",
        c.region(1)
    )
}

/// Another bureau's client certificate is refused in or after the handshake; the error says
/// so and what to check, and `submit` does not advise a rerun that cannot help.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_bureaus_certificate_is_named_as_the_cause() {
    let c = TestCluster::start(2).await;
    let other = c.fed.nodes[1].clone();
    let (code, _, stderr) = ctl(with_config(
        &c,
        0,
        &[
            "stats",
            "--cert",
            p(&other.admin_cert),
            "--key",
            p(&other.admin_key),
        ],
    ))
    .await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("refused the client certificate") && stderr.contains("local CA"),
        "{stderr}"
    );
    let csv = c.dir.path().join("one.csv");
    std::fs::write(&csv, format!("{HEADER}\n{}", one_row(&c, "k-1"))).unwrap();
    let (code, _, stderr) = ctl(with_config(
        &c,
        0,
        &[
            "submit",
            "--file",
            p(&csv),
            "--cert",
            p(&other.intake_cert),
            "--key",
            p(&other.intake_key),
        ],
    ))
    .await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("refused the client certificate"),
        "{stderr}"
    );
    assert!(!stderr.contains("rerun"), "{stderr}");
    c.shutdown().await;
}

/// A failed connection is one short line: the address, what failed and the one thing to check,
/// each said once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_are_one_concise_line() {
    let c = TestCluster::start(2).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (code, _, stderr) = ctl(with_config(&c, 0, &["pending", "--addr", &closed])).await;
    assert_eq!(code, 2);
    let line = stderr.trim();
    assert_eq!(line.lines().count(), 1, "{stderr}");
    assert_eq!(line.matches(&closed).count(), 1, "{stderr}");
    assert!(
        line.contains("refused") && line.contains("--addr"),
        "{stderr}"
    );
    assert!(line.contains("check that the node runs"), "{stderr}");
    assert!(line.len() < 250, "{} characters: {line}", line.len());

    // The wrong region: the node there presents another name.
    let other = c.region(1).to_string();
    let (code, _, stderr) = ctl(with_config(&c, 0, &["stats", "--region", &other])).await;
    assert_eq!(code, 2);
    let line = stderr.trim();
    assert_eq!(line.lines().count(), 1, "{stderr}");
    assert!(
        line.contains(&format!("{other}.local.interflow")),
        "{stderr}"
    );
    assert!(line.contains("check the region"), "{stderr}");
    assert!(line.len() < 400, "{} characters: {line}", line.len());
    c.shutdown().await;
}

/// The error report goes to the working directory (not beside the input, which may be a
/// checkout), the summary says where, and its rows are in input order even when the node
/// refuses an earlier row than one found invalid here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_report_is_written_in_the_working_directory_in_input_order() {
    let c = TestCluster::start(2).await;
    let input_dir = c.dir.path().join("checkout");
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&input_dir).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let input = input_dir.join("batch.csv");
    // Row 2 is refused by the node (440305 is no member), row 3 here (check character).
    std::fs::write(
        &input,
        format!(
            "{HEADER}\n\
             r-1,440305,11010519491231002X,pregnancy,not_pregnant,,2025-10-05,,,,0,3101150042,\n\
             r-2,{},110105194912310021,pregnancy,not_pregnant,,2025-10-05,,,,0,3101150042,\n\
             {}",
            c.region(1),
            one_row(&c, "r-3")
        ),
    )
    .unwrap();
    let cmd = args(&c, 0, &["submit", "--file", p(&input), "--batch", "10"]);
    let dir = work.clone();
    let out = tokio::task::spawn_blocking(move || {
        interflowctl()
            .args(&cmd)
            .current_dir(&dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let report = work.join("batch.errors.csv");
    assert!(!input_dir.join("batch.errors.csv").exists());
    assert!(stdout.contains(p(&report)), "{stdout}");
    let text = std::fs::read_to_string(&report).unwrap();
    let rows: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap_or_default())
        .collect();
    assert_eq!(rows, ["2", "3"], "{text}");

    // `--report` puts it elsewhere, and the summary says so.
    let elsewhere = c.dir.path().join("mine.csv");
    let (code, stdout, _) = ctl(args(
        &c,
        0,
        &["submit", "--file", p(&input), "--report", p(&elsewhere)],
    ))
    .await;
    assert_eq!(code, 1);
    assert!(stdout.contains(p(&elsewhere)), "{stdout}");
    assert!(elsewhere.exists());
    c.shutdown().await;
}

/// The node's refusal of a certificate with the wrong role reads as English.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_role_is_refused_with_the_right_article() {
    let c = TestCluster::start(2).await;
    let node = c.fed.nodes[0].clone();
    let (code, _, stderr) = ctl(with_config(
        &c,
        0,
        &[
            "stats",
            "--cert",
            p(&node.intake_cert),
            "--key",
            p(&node.intake_key),
        ],
    ))
    .await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains(
            "an `intake` certificate cannot call this service; use an `admin` certificate"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("a `intake`"), "{stderr}");
    c.shutdown().await;
}

/// `audit --limit N` shows the newest N, newest first, and says how many there are in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_shows_the_newest_entries_and_how_many_in_all() {
    let c = TestCluster::start(2).await;
    // Every admin read is audited: four `stats` calls, then the audit reads themselves.
    for _ in 0..4 {
        let (code, _, stderr) = ctl(args(&c, 0, &["stats"])).await;
        assert_eq!(code, 0, "{stderr}");
    }
    let (code, stdout, stderr) = ctl(args(&c, 0, &["--json", "audit", "--limit", "2"])).await;
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{v}");
    let total = v["total"].as_u64().unwrap();
    assert!(total >= 5, "{v}");
    let first = entries[0]["index"].as_u64().unwrap();
    assert_eq!(first, total, "the newest entry first: {v}");
    assert_eq!(entries[0]["action"], "Admin.AuditLog", "{v}");
    assert_eq!(entries[1]["index"].as_u64().unwrap(), first - 1, "{v}");

    let (code, stdout, _) = ctl(args(&c, 0, &["audit", "--limit", "2"])).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&format!("2 of {} entries, newest first", total + 1)),
        "{stdout}"
    );

    let (code, stdout, _) = ctl(args(
        &c,
        0,
        &["--json", "audit", "--limit", "1", "--oldest-first"],
    ))
    .await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["entries"][0]["index"], 1, "{v}");
    c.shutdown().await;
}

/// A record id as tables show it (12 hex digits) finds the record; a prefix nothing starts with
/// is named, and one too short is refused before the node is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_takes_a_unique_prefix_of_the_id() {
    let c = TestCluster::start(2).await;
    let csv = c.dir.path().join("one.csv");
    std::fs::write(&csv, format!("{HEADER}\n{}", one_row(&c, "p-1"))).unwrap();
    let (code, out, err) = ctl(args(&c, 0, &["submit", "--file", p(&csv)])).await;
    assert_eq!(code, 0, "{out}{err}");
    let ch = interflow_core::record::ChannelId::new(c.region(0), c.region(1));
    let full = c.node(0).store.head(ch).1.to_hex();

    let (code, stdout, stderr) = ctl(args(
        &c,
        0,
        &[
            "--json",
            "record",
            "--purpose",
            "service-continuity",
            &full[..12],
        ],
    ))
    .await;
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["id"], full.as_str(), "{v}");
    assert_eq!(v["record"]["seq"], 1, "{v}");
    // Odd lengths and capitals work too.
    let (code, stdout, stderr) = ctl(args(
        &c,
        0,
        &[
            "record",
            "--purpose",
            "service-continuity",
            &full[..9].to_uppercase(),
        ],
    ))
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&full), "{stdout}");

    let missing = if full.starts_with('0') {
        "11111111"
    } else {
        "00000000"
    };
    let (code, _, stderr) = ctl(args(
        &c,
        0,
        &["record", "--purpose", "service-continuity", missing],
    ))
    .await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains(&format!("no record id starts with `{missing}`")),
        "{stderr}"
    );
    let (code, _, stderr) = ctl(args(
        &c,
        0,
        &["record", "--purpose", "service-continuity", &full[..7]],
    ))
    .await;
    assert_eq!(code, 2);
    assert!(stderr.contains("8 or more"), "{stderr}");
    c.shutdown().await;
}

/// A node that takes 3 items per call and one call per second (burst 2): `submit` learns the
/// limit from the node's answer, splits its batches to it, and backs off on the rate limit
/// instead of aborting; every row is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_fits_the_nodes_batch_limit_and_backs_off_on_its_rate_limit() {
    let c = TestCluster::start_edited(2, |i, text| {
        if i == 0 {
            *text = text.replace(
                "[delivery]\n",
                "[limits]\nmax_submit_batch = 3\npeer_requests_per_sec = 1\npeer_burst = 2\n\n[delivery]\n",
            );
        }
    })
    .await;
    let rows: String = (0..7)
        .map(|i| {
            format!(
                "lim-{i},{},11010519491231002X,contraception,,iud,2025-10-0{},,,2025-01-01,,3101150042,\n",
                c.region(1),
                i + 1
            )
        })
        .collect();
    let csv = c.dir.path().join("seven.csv");
    std::fs::write(&csv, format!("{HEADER}\n{rows}")).unwrap();
    let (code, stdout, stderr) = ctl(args(&c, 0, &["--json", "submit", "--file", p(&csv)])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["stored"], 7, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    let ch = interflow_core::record::ChannelId::new(c.region(0), c.region(1));
    assert_eq!(c.node(0).store.head(ch).0, 7);
    c.shutdown().await;
}
