//! Bad input through the real RPC path gets a precise answer, changes nothing, and never
//! stops the node from serving others.

use interflow_core::pb;
use interflow_core::record::ChannelId;
use interflow_node::dev::sample_submission;
use interflow_tests::{TestCluster, eventually};
use tokio_stream::StreamExt;

fn error_of(name: &str, r: &pb::SubmitResult) -> (i32, String) {
    match &r.outcome {
        Some(pb::submit_result::Outcome::Error(e)) => (e.code, e.field.clone()),
        other => panic!("case `{name}`: expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_submissions_get_field_precise_errors_and_store_nothing() {
    let c = TestCluster::start(3).await;
    let b = c.region(1).to_string();
    let base = || sample_submission(1, &b);
    let with = |f: &dyn Fn(&mut pb::Submission)| {
        let mut s = base();
        f(&mut s);
        s
    };
    let contra = |f: &dyn Fn(&mut pb::ContraceptionStatus)| {
        with(&|s| {
            if let Some(pb::submission::Payload::Contraception(p)) = &mut s.payload {
                f(p);
            }
        })
    };
    use pb::SubmitErrorCode as E;
    let cases: Vec<(&str, pb::Submission, E, &str)> = vec![
        (
            "bad check character",
            with(&|s| {
                let other = if s.national_id.ends_with('0') {
                    "1"
                } else {
                    "0"
                };
                s.national_id.replace_range(17..18, other)
            }),
            E::InvalidNationalId,
            "national_id",
        ),
        (
            "short id",
            with(&|s| s.national_id.truncate(17)),
            E::InvalidNationalId,
            "national_id",
        ),
        (
            "future date",
            contra(&|p| {
                p.observed_on = Some(pb::Date {
                    year: 2999,
                    month: 1,
                    day: 1,
                })
            }),
            E::InvalidPayload,
            "contraception.observed_on",
        ),
        (
            "impossible date",
            contra(&|p| {
                p.since = Some(pb::Date {
                    year: 2024,
                    month: 2,
                    day: 30,
                })
            }),
            E::InvalidPayload,
            "contraception.since",
        ),
        (
            "unknown enum",
            contra(&|p| p.method = 99),
            E::InvalidPayload,
            "contraception.method",
        ),
        (
            "unspecified enum",
            contra(&|p| p.method = 0),
            E::InvalidPayload,
            "contraception.method",
        ),
        (
            "bad service point",
            contra(&|p| p.service_point = "abc".into()),
            E::InvalidPayload,
            "contraception.service_point",
        ),
        (
            "no payload",
            with(&|s| s.payload = None),
            E::InvalidPayload,
            "payload",
        ),
        (
            "self as destination",
            with(&|s| s.destination = "310115".into()),
            E::InvalidDestination,
            "destination",
        ),
        (
            "not a member",
            with(&|s| s.destination = "650102".into()),
            E::InvalidDestination,
            "destination",
        ),
        (
            "no agreement",
            with(&|s| s.destination = "440305".into()),
            E::NoAgreement,
            "destination",
        ),
        (
            "empty key",
            with(&|s| s.idempotency_key.clear()),
            E::InvalidIdempotencyKey,
            "idempotency_key",
        ),
        (
            "unknown supersedes",
            with(&|s| s.supersedes = vec![7; 32]),
            E::InvalidSupersedes,
            "supersedes",
        ),
    ];
    let mut items = Vec::new();
    for (i, (_, s, _, _)) in cases.iter().enumerate() {
        let mut s = s.clone();
        if !s.idempotency_key.is_empty() {
            s.idempotency_key = format!("case-{i}");
        }
        items.push(s);
    }
    let resp = c
        .intake(0)
        .await
        .submit(pb::SubmitRequest { items })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.results.len(), cases.len());
    for ((name, _, code, field), r) in cases.iter().zip(&resp.results) {
        assert_eq!(
            error_of(name, r),
            (*code as i32, field.to_string()),
            "case `{name}`"
        );
    }
    let ch = ChannelId::new(c.region(0), c.region(1));
    assert_eq!(c.node(0).store.head(ch).0, 0, "nothing stored");

    // Too many items at once: refused whole, with the limit in the message.
    let many: Vec<_> = (0..1001).map(|n| sample_submission(n, &b)).collect();
    let err = c
        .intake(0)
        .await
        .submit(pb::SubmitRequest { items: many })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("1000"), "{}", err.message());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_deliveries_are_refused_and_the_node_keeps_serving() {
    let c = TestCluster::start(2).await;
    let ch = ChannelId::new(c.region(1), c.region(0));
    let garbage = [
        vec![0xff; 10],                     // truncated varint
        vec![0x0a, 0xff, 0xff, 0xff, 0x0f], // length beyond the buffer
        vec![0x0b],                         // start-group wire type
        Vec::new(),                         // empty body
    ];
    let records: Vec<_> = garbage
        .iter()
        .map(|body| pb::SignedRecord {
            alg: pb::SignatureAlgorithm::Ed25519 as i32,
            body: body.clone(),
            signature: vec![0; 64],
        })
        .collect();
    let n = records.len();
    let mut acks = c
        .exchange_from(1, 0)
        .await
        .deliver(tokio_stream::iter(records))
        .await
        .unwrap()
        .into_inner();
    let mut reasons = Vec::new();
    while let Some(a) = acks.next().await {
        match a.unwrap().result {
            Some(pb::delivery_ack::Result::Rejection(r)) => reasons.push(r.reason),
            other => panic!("expected a rejection, got {other:?}"),
        }
        if reasons.len() == n {
            break;
        }
    }
    assert!(
        reasons
            .iter()
            .all(|r| *r == pb::RejectReason::Malformed as i32),
        "{reasons:?}"
    );
    assert_eq!(c.node(0).store.head(ch).0, 0);

    // A message over the size limit ends the stream with RESOURCE_EXHAUSTED and the limit.
    let huge = pb::SignedRecord {
        alg: 1,
        body: vec![0; 5 * 1024 * 1024],
        signature: vec![],
    };
    let mut client = c
        .exchange_from(1, 0)
        .await
        .max_encoding_message_size(8 * 1024 * 1024);
    let status = client
        .deliver(tokio_stream::iter(vec![huge]))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .expect("an answer, not a silent end")
        .expect_err("a status");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("4194304"), "{}", status.message());

    // The node still serves: a real record from A reaches B.
    let b = c.region(1).to_string();
    c.intake(0)
        .await
        .submit(pb::SubmitRequest {
            items: vec![sample_submission(1, &b)],
        })
        .await
        .unwrap();
    let mut heads = c.exchange_from(1, 0).await;
    assert!(heads.heads(pb::HeadsRequest {}).await.is_ok());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_record_delivered_a_thousand_times_concurrently_is_stored_once() {
    // Ten connections of one identity, beside the node's own: over the default cap of 8.
    let c = TestCluster::start_edited(2, |_, text| {
        text.push_str("\n[limits]\nmax_connections_per_identity = 16\n");
    })
    .await;
    let ch = ChannelId::new(c.region(1), c.region(0));
    let key = c.signing_key(1);
    let rec = c
        .crafted_record(1, 0, 1, interflow_core::record::RecordId::ZERO, &key, 9)
        .into_decoded()
        .into_signed();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = c.exchange_from(1, 0).await;
        let rec = rec.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            let mut acks = client
                .deliver(tokio_stream::iter(vec![rec; 100]))
                .await
                .unwrap()
                .into_inner();
            let mut answers = Vec::new();
            while let Some(a) = acks.next().await {
                answers.push(a.unwrap());
            }
            answers
        }));
    }
    let mut receipts = 0;
    for t in tasks {
        for a in t.await.unwrap() {
            match a.result {
                Some(pb::delivery_ack::Result::Receipt(r)) => {
                    let body =
                        <pb::ReceiptBody as prost::Message>::decode(r.body.as_slice()).unwrap();
                    assert_eq!(body.acked_seq, 1, "the same answer every time");
                    receipts += 1;
                }
                other => panic!("expected a receipt, got {other:?}"),
            }
        }
    }
    assert!(receipts >= 10, "each stream is acknowledged");
    assert_eq!(c.node(0).store.head(ch).0, 1);
    assert_eq!(
        c.node(0)
            .store
            .run(move |s| s.records_from(ch, 1, 10))
            .await
            .unwrap()
            .len(),
        1
    );
    c.shutdown().await;
}

fn heads_request() -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri("/interflow.v1.Exchange/Heads")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resetting_streams_rapidly_is_cut_off_and_others_are_still_served() {
    let c = TestCluster::start(2).await;
    let (mut send, conn) = c.raw_h2(1, 0).await;
    // Open streams and reset each at once (the HTTP/2 "rapid reset" pattern).
    // Far more than the server tolerates, and the loop yields so the connection task can read
    // the server's GOAWAY even on a loaded machine: the count only bounds the test's running time.
    const ATTEMPTS: usize = 50_000;
    let mut sent = 0;
    for _ in 0..ATTEMPTS {
        tokio::task::yield_now().await;
        let Ok(ready) = send.clone().ready().await else {
            break;
        };
        send = ready;
        match send.send_request(heads_request(), false) {
            Ok((_resp, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                sent += 1;
            }
            Err(_) => break,
        }
    }
    // The server ends the connection (GOAWAY) long before the client runs out of streams.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), conn).await;
    assert!(
        ended.is_ok(),
        "the connection was not closed after {sent} reset streams"
    );
    assert!(
        sent < ATTEMPTS,
        "the server let {sent} rapid resets through"
    );
    // The node goes on serving. The same peer identity may first be told to slow down (the
    // resets that reached a handler counted against its request rate), so allow the bucket to
    // refill.
    eventually(
        std::time::Duration::from_secs(10),
        "heads answered after the attack",
        || {
            let c = &c;
            async move {
                c.exchange_from(1, 0)
                    .await
                    .heads(pb::HeadsRequest {})
                    .await
                    .ok()
            }
        },
    )
    .await;
    c.shutdown().await;
}

/// One gRPC message on the wire: the 5-byte prefix and `body`.
fn grpc_message(body: &[u8]) -> bytes::Bytes {
    let mut v = vec![0];
    v.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    v.extend_from_slice(body);
    v.into()
}

fn grpc_request(path: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// Sends `data` as the whole request body of `path` over `send`, and reads the answer: the
/// messages (their bytes) and the final gRPC status, from headers or trailers.
async fn raw_call(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    path: &str,
    data: bytes::Bytes,
) -> (Vec<bytes::Bytes>, tonic::Status) {
    let ready = send.clone().ready().await.unwrap();
    *send = ready;
    let (resp, mut stream) = send.send_request(grpc_request(path), false).unwrap();
    stream.send_data(data, true).unwrap();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), resp)
        .await
        .expect("answered promptly")
        .unwrap();
    if let Some(s) = tonic::Status::from_header_map(resp.headers()) {
        return (Vec::new(), s);
    }
    let mut body = resp.into_body();
    let mut chunks = Vec::new();
    while let Some(d) = body.data().await {
        let d = d.unwrap();
        let _ = body.flow_control().release_capacity(d.len());
        chunks.push(d);
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    (
        chunks,
        tonic::Status::from_header_map(&trailers).expect("grpc-status"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_to_a_unary_rpc_is_invalid_argument_without_decoder_details() {
    let c = TestCluster::start(2).await;
    let (mut send, _conn) = c.raw_h2(1, 0).await;
    let garbage: [&[u8]; 3] = [
        &[0xff; 10],                     // truncated varint
        &[0x0a, 0xff, 0xff, 0xff, 0x0f], // a length beyond the buffer
        &[0x0b],                         // start-group wire type
    ];
    for path in [
        "/interflow.v1.Exchange/Heads",
        "/interflow.v1.Exchange/Fetch",
        "/grpc.health.v1.Health/Check",
    ] {
        for body in garbage {
            let (_, status) = raw_call(&mut send, path, grpc_message(body)).await;
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{path} {body:?}: {status:?}"
            );
            let m = status.message();
            assert!(
                !m.contains("failed to decode")
                    && !m.contains("wire type")
                    && !m.contains("buffer"),
                "{path}: decoder internals in `{m}`"
            );
        }
        // A truncated message (prefix says 10 bytes, 3 come) is the caller's fault too.
        let mut cut = grpc_message(&[0x0a; 10]).to_vec();
        cut.truncate(8);
        let (_, status) = raw_call(&mut send, path, cut.into()).await;
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{path}: {status:?}"
        );
        // Over the size limit: RESOURCE_EXHAUSTED with the limit.
        let (_, status) = raw_call(&mut send, path, vec![0, 0xff, 0xff, 0xff, 0xff].into()).await;
        assert_eq!(
            status.code(),
            tonic::Code::ResourceExhausted,
            "{path}: {status:?}"
        );
        assert!(status.message().contains("4194304"), "{}", status.message());
    }
    // The same connection still serves a well-formed request.
    let (_, status) = raw_call(&mut send, "/interflow.v1.Exchange/Heads", grpc_message(&[])).await;
    assert_eq!(status.code(), tonic::Code::Ok, "{status:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deliver_stream_that_goes_bad_ends_with_a_status_after_its_acks() {
    let c = TestCluster::start(2).await;
    let forger = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let forged = c
        .crafted_record(1, 0, 1, interflow_core::record::RecordId::ZERO, &forger, 7)
        .into_decoded()
        .into_signed();
    let forged = prost::Message::encode_to_vec(&forged);
    let (mut send, _conn) = c.raw_h2(1, 0).await;
    let deliver = "/interflow.v1.Exchange/Deliver";
    // A good message, then one that does not decode as a SignedRecord.
    let mut data = grpc_message(&forged).to_vec();
    data.extend_from_slice(&grpc_message(&[0x0b]));
    let (messages, status) = raw_call(&mut send, deliver, data.into()).await;
    assert!(!messages.is_empty(), "the ack comes first");
    let mut acks = bytes::Bytes::from(messages.concat());
    let mut n = 0;
    while acks.len() >= 5 {
        let len = u32::from_be_bytes([acks[1], acks[2], acks[3], acks[4]]) as usize;
        let ack: pb::DeliveryAck = prost::Message::decode(&acks[5..5 + len]).unwrap();
        assert!(
            matches!(ack.result, Some(pb::delivery_ack::Result::Rejection(ref r)) if r.reason == pb::RejectReason::BadSignature as i32),
            "{ack:?}"
        );
        acks = acks.slice(5 + len..);
        n += 1;
    }
    assert_eq!(n, 1);
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        !status.message().contains("wire type"),
        "{}",
        status.message()
    );
    // A 4 GiB length prefix: RESOURCE_EXHAUSTED, at once and with the limit.
    let (messages, status) =
        raw_call(&mut send, deliver, vec![0, 0xff, 0xff, 0xff, 0xff].into()).await;
    assert!(messages.is_empty());
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("4194304"), "{}", status.message());
    // A stream cut inside a message.
    let mut cut = grpc_message(&forged).to_vec();
    cut.truncate(20);
    let (_, status) = raw_call(&mut send, deliver, cut.into()).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    c.shutdown().await;
}

/// Backpressure: with a tiny `[intake]` bound, concurrent Submit calls beyond it are answered
/// RESOURCE_EXHAUSTED with a `retry-after-ms` hint, and nothing of a refused call is stored or
/// audited; sent again later, it is stored as new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_intake_queue_answers_resource_exhausted_with_a_hint_and_stores_nothing() {
    let c = TestCluster::start_edited(2, |_, text| {
        text.push_str(
            "\n[limits]\nmax_submit_batch = 2\n[intake]\nmax_queued_records = 2\nmax_waiting_calls = 1\n",
        );
    })
    .await;
    c.wait_released(0).await;
    let b = c.region(1).to_string();
    let channel = ChannelId::new(c.region(0), c.region(1));
    let audited = || async {
        c.admin(0)
            .await
            .audit_log(pb::AuditLogRequest {
                since_ms: 0,
                limit: 10_000,
                newest_first: false,
            })
            .await
            .unwrap()
            .into_inner()
            .entries
            .iter()
            .filter(|e| e.action == "Intake.Submit")
            .count()
    };
    let intake = c.intake(0).await;
    let mut accepted = 0u64;
    let mut refused = Vec::new();
    // Calls sent at once: while one is validated and committed the queue is full. A round in
    // which the node happened to finish each call before the next arrived is sent again.
    for round in 0..10u64 {
        let calls: Vec<_> = (0..32u64)
            .map(|k| {
                let mut intake = intake.clone();
                let item = sample_submission(1000 + round * 100 + k, &b);
                tokio::spawn(async move {
                    let r = intake
                        .submit(pb::SubmitRequest {
                            items: vec![item.clone()],
                        })
                        .await;
                    (item, r)
                })
            })
            .collect();
        for call in calls {
            match call.await.unwrap() {
                (_, Ok(_)) => accepted += 1,
                (item, Err(s)) => refused.push((item, s)),
            }
        }
        if !refused.is_empty() {
            break;
        }
    }
    assert!(!refused.is_empty(), "no call was refused");
    for (_, s) in &refused {
        assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
        let hint: u64 = s
            .metadata()
            .get(interflow_core::RETRY_AFTER_MS_HEADER)
            .expect("a retry hint")
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(hint > 0, "{hint}");
        assert!(
            s.message()
                .contains(&format!("send it again after {hint} ms")),
            "{}",
            s.message()
        );
    }
    // Only the accepted calls stored a record and wrote an audit entry.
    assert_eq!(c.node(0).store.head(channel).0, accepted);
    assert_eq!(audited().await as u64, accepted);
    // A refused call left nothing behind: sent again, its item is new, not a duplicate.
    let (item, _) = refused.swap_remove(0);
    let again = eventually(
        std::time::Duration::from_secs(10),
        "the refused call to be taken",
        || {
            let mut intake = intake.clone();
            let item = item.clone();
            async move {
                intake
                    .submit(pb::SubmitRequest { items: vec![item] })
                    .await
                    .ok()
            }
        },
    )
    .await
    .into_inner();
    assert!(!again.results[0].duplicate, "{again:?}");
    assert!(matches!(
        again.results[0].outcome,
        Some(pb::submit_result::Outcome::RecordId(_))
    ));
    assert_eq!(c.node(0).store.head(channel).0, accepted + 1);
}
