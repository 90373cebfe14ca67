//! Real `interflow serve` processes: the receiving node is SIGKILLed again and again while
//! records are being delivered to it; in the end every record is there exactly once, the log
//! verifies, and the sender has nothing pending.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use interflow_core::pb;
use interflow_node::dev::{DevFederation, DevNode, generate, sample_submission};
use interflow_tests::eventually;
use tonic::transport::Channel;

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(config: &Path) -> Node {
    Node(
        Command::new(env!("CARGO_BIN_EXE_interflow"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn interflow serve"),
    )
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn local(n: &DevNode, admin: bool) -> Option<Channel> {
    let (cert, key) = if admin {
        (&n.admin_cert, &n.admin_key)
    } else {
        (&n.intake_cert, &n.intake_key)
    };
    let cfg = interflow_tls::client_config(&n.local_ca, cert, key).ok()?;
    interflow_tls::connect(
        &n.local_addr.to_string(),
        &interflow_tls::local_server_name(n.region.parse().ok()?),
        cfg,
        Duration::from_secs(2),
    )
    .await
    .ok()
}

/// Items `range` of the sample submissions, addressed to `dest`.
fn submission(range: std::ops::Range<u64>, dest: &DevNode) -> pb::SubmitRequest {
    let items: Vec<_> = range.map(|n| sample_submission(n, &dest.region)).collect();
    pb::SubmitRequest { items }
}

/// A's intake once its channel to B accepts records (held until heads were compared): items
/// 0..10 are submitted to B on the way.
async fn released_intake(a: &DevNode, b: &DevNode) -> pb::intake_client::IntakeClient<Channel> {
    let intake = eventually(Duration::from_secs(30), "A's intake", || async {
        local(a, false).await
    })
    .await;
    let intake = pb::intake_client::IntakeClient::new(intake);
    eventually(Duration::from_secs(30), "A's channel to B released", || {
        let mut intake = intake.clone();
        let req = submission(0..10, b);
        async move {
            let r = intake.submit(req).await.ok()?.into_inner();
            r.results
                .iter()
                .all(|r| matches!(r.outcome, Some(pb::submit_result::Outcome::RecordId(_))))
                .then_some(())
        }
    })
    .await;
    intake
}

/// `VerifyLog` at `n` is clean and checked `records` records.
async fn assert_log_verifies(n: &DevNode, records: u64) {
    let ch = local(n, true).await.unwrap();
    let verify = pb::admin_client::AdminClient::new(ch)
        .verify_log(pb::VerifyLogRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(verify.ok, "{:?}", verify.problems);
    assert_eq!(verify.records_checked, records);
}

async fn stats(n: &DevNode) -> Option<pb::StatsResponse> {
    let ch = local(n, true).await?;
    let r = pb::admin_client::AdminClient::new(ch)
        .stats(pb::StatsRequest {})
        .await
        .ok()?;
    Some(r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_receiver_ends_with_every_record_exactly_once() {
    kill_during_delivery(Victim::Receiver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_sender_loses_no_acknowledged_submission() {
    kill_during_delivery(Victim::Sender).await;
}

#[derive(Clone, Copy, PartialEq)]
enum Victim {
    Sender,
    Receiver,
}

/// Five rounds: A accepts 200 records for B, and right after A's acknowledgement the victim
/// is SIGKILLed (while delivery is in flight) and restarted on the same data.
async fn kill_during_delivery(victim: Victim) {
    let tmp = tempfile::tempdir().unwrap();
    let addrs: Vec<_> = (0..2).map(|_| (free_addr(), free_addr())).collect();
    let fed: DevFederation =
        generate(tmp.path(), &addrs, interflow_node::system_clock()()).unwrap();
    let (a, b) = (&fed.nodes[0], &fed.nodes[1]);
    let mut na = serve(&a.config);
    let mut nb = serve(&b.config);

    let mut submitted = 0;
    while submitted < 1000 {
        let intake = eventually(Duration::from_secs(30), "A's intake", || async {
            local(a, false).await
        })
        .await;
        let mut intake = pb::intake_client::IntakeClient::new(intake);
        let items: Vec<_> = (submitted..submitted + 200)
            .map(|n| sample_submission(n, &b.region))
            .collect();
        let r = intake
            .submit(pb::SubmitRequest { items })
            .await
            .unwrap()
            .into_inner();
        let stored = r
            .results
            .iter()
            .all(|r| matches!(r.outcome, Some(pb::submit_result::Outcome::RecordId(_))));
        if !stored {
            // Held until A has compared heads with B after start; retry shortly.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        submitted += 200;
        let (child, node) = match victim {
            Victim::Sender => (&mut na, a),
            Victim::Receiver => (&mut nb, b),
        };
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        *child = serve(&node.config);
    }

    let done = eventually(
        Duration::from_secs(60),
        "all 1000 records at B and nothing pending at A",
        || async {
            let sb = stats(b).await?;
            let sa = stats(a).await?;
            (sb.records_inbound == 1000 && sa.pending == 0).then_some(sb)
        },
    )
    .await;
    assert_eq!(done.equivocations, 0);
    assert_log_verifies(b, 1000).await;
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_receiver_times_out_the_sender_which_retries_and_converges() {
    let tmp = tempfile::tempdir().unwrap();
    let addrs: Vec<_> = (0..2).map(|_| (free_addr(), free_addr())).collect();
    let fed = generate(tmp.path(), &addrs, interflow_node::system_clock()()).unwrap();
    // Short request timeouts, so a frozen peer is given up on in seconds.
    for n in &fed.nodes {
        let text = std::fs::read_to_string(&n.config).unwrap();
        std::fs::write(
            &n.config,
            format!("{text}\n[limits]\nrequest_timeout_secs = 1\n"),
        )
        .unwrap();
    }
    let (a, b) = (&fed.nodes[0], &fed.nodes[1]);
    let _na = serve(&a.config);
    let nb = serve(&b.config);
    let mut intake = released_intake(a, b).await;
    let submit = |range: std::ops::Range<u64>| submission(range, b);
    eventually(Duration::from_secs(30), "first records at B", || async {
        stats(b)
            .await
            .filter(|s| s.records_inbound == 10)
            .map(|_| ())
    })
    .await;

    // Freeze B (SIGSTOP): its sockets stay open but nothing answers.
    signal(&nb.0, "-STOP");
    intake.submit(submit(10..110)).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "A notices the frozen peer and backs off",
        || async {
            let ch = local(a, true).await?;
            let r = pb::admin_client::AdminClient::new(ch)
                .list_pending(pb::ListPendingRequest {})
                .await
                .ok()?
                .into_inner();
            r.channels
                .iter()
                .find(|p| p.destination == b.region && p.attempts > 0 && p.pending_count == 100)
                .map(|_| ())
        },
    )
    .await;

    // Thaw B: the sender's retries deliver everything, once.
    signal(&nb.0, "-CONT");
    let done = eventually(
        Duration::from_secs(60),
        "convergence after SIGCONT",
        || async {
            let sb = stats(b).await?;
            let sa = stats(a).await?;
            (sb.records_inbound == 110 && sa.pending == 0).then_some(sb)
        },
    )
    .await;
    assert_eq!(done.equivocations, 0);
}

/// A's pending state towards `dest`, as `Admin.ListPending` shows it.
async fn pending_to(a: &DevNode, dest: &str) -> Option<pb::PendingChannel> {
    let ch = local(a, true).await?;
    let r = pb::admin_client::AdminClient::new(ch)
        .list_pending(pb::ListPendingRequest {})
        .await
        .ok()?
        .into_inner();
    r.channels.into_iter().find(|p| p.destination == dest)
}

/// The delivery window: A has streamed records to a frozen B (sent, never receipted) and is
/// waiting on it when B is SIGKILLed. After B restarts, A resends from B's durable head:
/// every record is at B exactly once, with no gap, and A has nothing pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_receiver_with_a_window_in_flight_ends_with_every_record_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let addrs: Vec<_> = (0..2).map(|_| (free_addr(), free_addr())).collect();
    let fed = generate(tmp.path(), &addrs, interflow_node::system_clock()()).unwrap();
    let (a, b) = (&fed.nodes[0], &fed.nodes[1]);
    let _na = serve(&a.config);
    let mut nb = serve(&b.config);
    let mut intake = released_intake(a, b).await;
    let submit = |range: std::ops::Range<u64>| submission(range, b);
    eventually(
        Duration::from_secs(30),
        "A's first records receipted",
        || async {
            pending_to(a, &b.region)
                .await
                .filter(|p| p.acked_seq == 10)
                .map(|_| ())
        },
    )
    .await;

    // Freeze B, so what A streams next stays in flight, unreceipted, until B dies.
    signal(&nb.0, "-STOP");
    let r = intake.submit(submit(10..1010)).await.unwrap().into_inner();
    assert_eq!(r.results.len(), 1000);
    eventually(
        Duration::from_secs(30),
        "A streaming to B and waiting for receipts",
        || async {
            pending_to(a, &b.region)
                .await
                .filter(|p| p.pending_count == 1000 && p.last_error.starts_with("waiting for"))
                .map(|_| ())
        },
    )
    .await;
    nb.0.kill().unwrap(); // SIGKILL, while stopped
    nb.0.wait().unwrap();
    nb = serve(&b.config);

    let done = eventually(
        Duration::from_secs(60),
        "convergence after restart",
        || async {
            let sb = stats(b).await?;
            let p = pending_to(a, &b.region).await?;
            (sb.records_inbound == 1010 && p.pending_count == 0 && p.acked_seq == 1010)
                .then_some(sb)
        },
    )
    .await;
    assert_eq!(done.equivocations, 0);
    assert_log_verifies(b, 1010).await;
    drop(nb);
}
