//! `agreement terminate` against real nodes: the operator ends an agreement at one node and
//! the partner has the notice.

use interflow_tests::TestCluster;

use crate::e2e::{args, ctl};
use crate::p;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreement_terminate_ends_the_agreement_at_both_nodes_and_can_be_resent() {
    let c = TestCluster::start(2).await;
    let id = c
        .node(0)
        .fed()
        .agreements
        .iter()
        .next()
        .map(|g| g.id.clone())
        .unwrap();
    let (code, stdout, stderr) = ctl(args(&c, 0, &["agreement", "terminate", &id])).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("agreement {id} terminated at"))
            && stdout.contains("the partner has the notice"),
        "{stdout}"
    );
    let at = c
        .node(0)
        .fed()
        .agreements
        .get(&id)
        .unwrap()
        .terminated_at_ms;
    assert!(at.is_some());
    // The partner applied the notice before it answered.
    assert_eq!(
        c.node(1)
            .fed()
            .agreements
            .get(&id)
            .unwrap()
            .terminated_at_ms,
        at
    );

    // Again: the kept notice is resent, the end does not move.
    let (code, stdout, stderr) = ctl(args(&c, 0, &["--json", "agreement", "terminate", &id])).await;
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["agreement_id"], id.as_str());
    assert_eq!(v["terminated_at_ms"].as_i64(), at);
    assert_eq!(v["partner_has_it"], true);

    // The list shows it terminated at both nodes, with the end of the grace period.
    for i in [0, 1] {
        let (code, stdout, stderr) = ctl(args(&c, i, &["--json", "agreement", "list"])).await;
        assert_eq!(code, 0, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let row = &v["agreements"][0];
        assert_eq!(row["agreement_id"], id.as_str());
        assert_eq!(row["state"], "terminated", "{stdout}");
        assert!(row["grace_end"].is_string(), "{stdout}");
    }
    let (code, stdout, _) = ctl(args(&c, 1, &["agreement", "list"])).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("terminated") && stdout.contains(&id),
        "{stdout}"
    );

    let (code, _, stderr) = ctl(args(&c, 0, &["agreement", "terminate", "agr-none"])).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("agr-none"), "{stderr}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreement_install_puts_a_signed_agreement_in_force_at_the_node() {
    let c = TestCluster::start(3).await;
    let (agreement, key) = c.new_agreement(0, 2);
    let file = c.dir.path().join("agr-new.pb");
    std::fs::write(&file, prost::Message::encode_to_vec(&agreement)).unwrap();
    let id = format!("agr-new-{}-{}", c.region(0), c.region(2));
    let cmd = |json: bool| {
        let mut v = vec!["agreement", "install", p(&file), "--pseudonym-key", p(&key)];
        if json {
            v.insert(0, "--json");
        }
        args(&c, 0, &v)
    };
    let (code, stdout, stderr) = ctl(cmd(false)).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("agreement {id} with {} installed", c.region(2))),
        "{stdout}"
    );
    assert!(c.node(0).fed().agreements.get(&id).is_some());
    let (code, stdout, stderr) = ctl(cmd(true)).await;
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["installed_now"], false);
    c.shutdown().await;
}
