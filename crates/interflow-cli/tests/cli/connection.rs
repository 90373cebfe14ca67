//! How `interflowctl` finds and reaches a node, against a real node (a `TestCluster`) through
//! its own config file (`--config`): connection flags on either side of the command, the
//! precedence flag > environment > file, and errors that name what to check.

use interflow_tests::TestCluster;

use crate::e2e::ctl;
use crate::{interflowctl, p};

/// `["--config", <node i's config>]` followed by `rest`.
fn with_config(c: &TestCluster, i: usize, rest: &[&str]) -> Vec<String> {
    let mut v = vec!["--config".to_owned(), p(&c.fed.nodes[i].config).to_owned()];
    v.extend(rest.iter().map(|s| s.to_string()));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flags_work_before_and_after_the_command() {
    let c = TestCluster::start(2).await;
    let node = &c.fed.nodes[0];
    let config = p(&node.config);
    // Before the command, as `interflow dev` prints them.
    let (code, stdout, stderr) = ctl(with_config(&c, 0, &["pending", "--max-age", "3h"])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(c.region(1).as_str()), "{stdout}");
    let (code, stdout, stderr) = ctl(with_config(&c, 0, &["--json", "stats"])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["region_code"], c.region(0).as_str());
    // After the command.
    let (code, stdout, stderr) = ctl(vec![
        "stats".into(),
        "--json".into(),
        "--config".into(),
        config.into(),
    ])
    .await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["region_code"], c.region(0).as_str());
    // Some before, some after: a flag after the command still beats the config file.
    let (code, _, stderr) = ctl(with_config(
        &c,
        0,
        &[
            "--cert",
            p(&node.intake_cert),
            "stats",
            "--key",
            p(&node.intake_key),
        ],
    ))
    .await;
    assert_eq!(code, 2);
    assert!(stderr.contains("admin role"), "{stderr}");
    // `--config` and `--dev-node` exclude each other on either side of the command.
    let region = c.region(0).to_string();
    for args in [
        ["--config", config, "pending", "--dev-node", region.as_str()],
        ["--dev-node", region.as_str(), "pending", "--config", config],
    ] {
        let (code, _, stderr) = ctl(args.iter().map(|s| s.to_string()).collect()).await;
        assert_eq!(code, 2, "{args:?}");
        assert!(stderr.contains("cannot be used with"), "{args:?}: {stderr}");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_problems_name_the_address_certificate_and_what_to_check() {
    let c = TestCluster::start(2).await;
    let node = c.fed.nodes[0].clone();
    // Nothing listens on a port we just closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (code, _, stderr) = ctl(with_config(&c, 0, &["pending", "--addr", &closed])).await;
    assert_eq!(code, 2);
    assert!(stderr.contains(&closed), "{stderr}");
    assert!(stderr.contains("--addr"), "{stderr}");
    assert!(stderr.contains("check that the node runs"), "{stderr}");

    // The wrong region: the server name does not match the node's certificate.
    let other = c.region(1).to_string();
    let (code, _, stderr) = ctl(with_config(&c, 0, &["stats", "--region", &other])).await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains(&format!("{other}.local.interflow")),
        "{stderr}"
    );

    // An intake certificate cannot call Admin; the flag overrides the config file.
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
    assert!(stderr.contains("admin role"), "{stderr}");

    // Environment variables apply when no flag is given.
    let region = c.region(0).to_string();
    let out = tokio::task::spawn_blocking(move || {
        interflowctl()
            .args(["--json", "stats"])
            .env("INTERFLOW_ADDR", node.local_addr.to_string())
            .env("INTERFLOW_CA", &node.local_ca)
            .env("INTERFLOW_CERT", &node.admin_cert)
            .env("INTERFLOW_KEY", &node.admin_key)
            .env("INTERFLOW_REGION", &region)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["region_code"], c.region(0).as_str());
    c.shutdown().await;
}
