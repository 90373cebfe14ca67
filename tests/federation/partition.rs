//! Partitions through a TCP proxy in front of the receiver: nothing is lost, retries back off
//! instead of looping hot, and the nodes converge once the link heals.

use std::time::{Duration, Instant};

use interflow_core::pb;
use interflow_core::record::ChannelId;
use interflow_node::dev::sample_submission;
use interflow_tests::{TestCluster, eventually};

async fn submit(c: &TestCluster, range: std::ops::Range<u64>) {
    let b = c.region(1);
    let items: Vec<_> = range.map(|n| sample_submission(n, b.as_str())).collect();
    let r = c
        .intake(0)
        .await
        .submit(pb::SubmitRequest { items })
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.results
            .iter()
            .all(|r| matches!(r.outcome, Some(pb::submit_result::Outcome::RecordId(_))))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_backs_off_loses_nothing_and_heals() {
    let c = TestCluster::start_behind_proxies(2).await;
    let ch = ChannelId::new(c.region(0), c.region(1));
    let (a, b) = (c.node(0).clone(), c.node(1).clone());
    submit(&c, 0..50).await;
    // Delivered means stored at B and its receipt kept at A: cutting before the receipt
    // arrives would leave those 50 pending too.
    eventually(Duration::from_secs(10), "first 50 delivered", || {
        let (a, b) = (a.clone(), b.clone());
        async move {
            let acked = a
                .store
                .run(move |s| s.channel_state(ch))
                .await
                .ok()?
                .acked_seq;
            (b.store.head(ch).0 == 50 && acked == 50).then_some(())
        }
    })
    .await;
    // And acknowledged: A has B's receipt before the cut, so only what follows is pending.
    eventually(Duration::from_secs(10), "first 50 acknowledged", || {
        let a = a.clone();
        async move {
            let region = a.region;
            let pending = a.store.run(move |s| s.pending(region)).await.ok()?;
            pending
                .iter()
                .all(|p| p.channel != ch || p.pending_count == 0)
                .then_some(())
        }
    })
    .await;

    // Cut A's way to B: open connections drop, new ones are refused.
    c.proxies[1].cut();
    submit(&c, 50..150).await;
    async fn attempts(a: &interflow_node::Node, ch: ChannelId) -> u32 {
        a.store
            .run(move |s| s.delivery_state(ch))
            .await
            .map(|s| s.attempts)
            .unwrap_or(0)
    }
    eventually(Duration::from_secs(10), "failed delivery attempts", || {
        let a = a.clone();
        async move { (attempts(&a, ch).await >= 2).then_some(()) }
    })
    .await;
    // Backoff, not a hot loop: over two seconds of partition, only a handful of attempts
    // (dev backoff: 100 ms doubling to 2 s, with jitter). This waits to measure, not to sync.
    let (t0, n0) = (Instant::now(), attempts(&a, ch).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n1 = attempts(&a, ch).await;
    assert!(
        n1 - n0 <= 8,
        "{} attempts in {:?}: retrying too fast",
        n1 - n0,
        t0.elapsed()
    );
    assert_eq!(b.store.head(ch).0, 50, "nothing crosses the partition");
    let region = a.region;
    let pending = a.store.run(move |s| s.pending(region)).await.unwrap();
    let p = pending.iter().find(|p| p.channel == ch).unwrap();
    assert_eq!(p.pending_count, 100);
    assert!(p.delivery.last_error.is_some() && p.delivery.next_attempt_ms.is_some());

    // Heal: everything arrives once, and the retry state clears.
    c.proxies[1].heal();
    eventually(
        Duration::from_secs(15),
        "convergence after the heal",
        || {
            let (a, b) = (a.clone(), b.clone());
            async move {
                let done = b.store.head(ch) == a.store.head(ch)
                    && a.store
                        .run(move |s| s.channel_state(ch))
                        .await
                        .ok()?
                        .acked_seq
                        == 150;
                done.then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        b.store
            .run(move |s| s.records_from(ch, 1, 1000))
            .await
            .unwrap()
            .len(),
        150
    );
    // The retry state clears once the worker sees nothing pending (it may still be sleeping
    // off its last backoff when reconciliation completes the channel).
    eventually(Duration::from_secs(10), "the retry state cleared", || {
        let a = a.clone();
        async move { (attempts(&a, ch).await == 0).then_some(()) }
    })
    .await;
    drop((a, b));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_peer_shows_as_what_delivery_and_reconciliation_wait_on() {
    let c = TestCluster::start_behind_proxies(2).await;
    let b = c.region(1);
    // B accepts connections and answers nothing, as a SIGSTOPped process does.
    c.proxies[1].freeze();
    submit(&c, 0..1).await;
    let mut admin = c.admin(0).await;
    // Well before the 30 s request timeout, pending names the peer delivery waits on.
    let waiting = eventually(Duration::from_secs(4), "a waiting attempt noted", || {
        let mut admin = admin.clone();
        async move {
            let pending = admin
                .list_pending(pb::ListPendingRequest {})
                .await
                .ok()?
                .into_inner();
            let p = pending
                .channels
                .into_iter()
                .find(|p| p.destination == b.as_str())?;
            (p.attempts >= 1 && !p.last_error.is_empty()).then_some(p)
        }
    })
    .await;
    assert!(
        waiting
            .last_error
            .starts_with(&format!("waiting for `{b}` since ")),
        "{waiting:?}"
    );

    // A reconciliation run names the peer it compares with as soon as it starts.
    let mut stream = admin
        .reconcile(pb::ReconcileRequest {
            peer: b.to_string(),
            recover: false,
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(3), stream.message())
        .await
        .expect("a progress event before the peer answers")
        .unwrap()
        .and_then(|p| p.event);
    assert_eq!(
        first,
        Some(pb::reconcile_progress::Event::PeerStarted(
            pb::PeerStarted {
                peer: b.to_string()
            }
        ))
    );
    drop(stream);
    c.shutdown().await;
}
