//! The CLI as operators use it, against real nodes: what a refused certificate or an
//! unreachable node says, channel and record id forms that survive a shell, `audit` paging and
//! where `submit` writes its error report.

use interflow_tests::TestCluster;

use crate::e2e::ctl;
use crate::p;

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
