//! Agreements that end: records of an agreement this node no longer has are erased on schedule,
//! never kept forever.

use interflow_core::record::RecordId;
use interflow_node::dev::sample_submission;
use interflow_tests::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_an_agreement_removed_from_the_config_are_erased_after_the_default() {
    let mut c = TestCluster::start(3).await;
    let (a, b) = (c.region(0), c.region(1));
    let rid = c.submit_one(0, sample_submission(31, b.as_str())).await;
    c.wait_for_record(1, &rid).await;
    let agreement = c
        .node(1)
        .fed()
        .agreements
        .iter()
        .find(|g| g.peer_of(b) == Some(a))
        .map(|g| g.id.clone())
        .expect("an agreement between nodes 0 and 1");

    // The operator removes the agreement from node 1's config (it keeps the one with node 2)
    // and sets a short default for records of agreements known nowhere any more.
    c.stop(1).await;
    let config = c.config_path(1);
    let text = std::fs::read_to_string(&config).unwrap();
    let pb_entry = format!("\"agreements/{agreement}.pb\"");
    let key_entry = format!(
        "\n[[pseudonym_keys]]\nagreement = \"{agreement}\"\nkey_file = \"agreements/{agreement}.key\"\n"
    );
    assert!(
        text.contains(&pb_entry) && text.contains(&key_entry),
        "{text}"
    );
    let edited = text
        .replace(&format!("{pb_entry}, "), "")
        .replace(&format!(", {pb_entry}"), "")
        .replace(&key_entry, "")
        + "\n[retention]\nunknown_agreement_days = 30\n";
    std::fs::write(&config, edited).unwrap();
    c.restart(1).await;
    assert!(c.node(1).fed().agreements.get(&agreement).is_none());

    assert_eq!(c.erase_as_if_after(1, 29).await, 0);
    assert_eq!(c.erase_as_if_after(1, 31).await, 1);
    let id = RecordId::try_from(rid.as_slice()).unwrap();
    let node = c.node(1).clone();
    assert!(node.store.run(move |s| s.get(id)).await.unwrap().is_none());
    c.shutdown().await;
}
