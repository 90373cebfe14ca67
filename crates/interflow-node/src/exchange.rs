//! The peer service `Exchange`: `Deliver` (verify, durably append, answer signed receipts),
//! `Heads` (a signed checkpoint of every channel with the caller) and `Fetch` (pull part of a
//! channel the caller is a party to). The caller's region always comes from its certificate.

use std::pin::Pin;
use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt};
use interflow_core::pb;
use interflow_core::record::{ChannelId, RecordId, VerifiedRecord};
use interflow_core::statement::{AuditHead, Head, Heads, Receipt, sign_heads, sign_receipt};
use interflow_store::{ApplyError, ApplyOutcome, AuditNote};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::NodeError;
use crate::node::Node;
use crate::wire;

/// Most records gathered into one durable batch on `Deliver`.
const DELIVER_BATCH: usize = 512;

/// A `Deliver` batch stops growing at this many bytes of records, so a batch of large records
/// does not hold much more than one message's worth of memory.
const DELIVER_BATCH_BYTES: usize = 1024 * 1024;

fn record_bytes(r: &pb::SignedRecord) -> usize {
    r.body.len() + r.signature.len()
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Debug, Clone)]
pub struct ExchangeService {
    pub node: Arc<Node>,
}

fn rejection(seq: u64, reason: pb::RejectReason, id: Option<RecordId>) -> pb::DeliveryAck {
    pb::DeliveryAck {
        result: Some(pb::delivery_ack::Result::Rejection(pb::Rejection {
            seq,
            reason: reason as i32,
            record_id: id.map(|i| i.0.to_vec()).unwrap_or_default(),
        })),
    }
}

/// Best-effort seq of a record that could not be verified, for the rejection.
fn claimed_seq(body: &[u8]) -> u64 {
    <pb::RecordBody as prost::Message>::decode(body)
        .map(|b| b.seq)
        .unwrap_or(0)
}

/// A received batch after the signature checks.
struct Checked {
    verified: Vec<VerifiedRecord>,
    acks: Vec<pb::DeliveryAck>,
}

/// How the inbound stream ended after a batch: cleanly (`None`) or with a status.
type End = Option<Status>;

/// Group commit: the next record, then whatever has already arrived after it, up to a batch;
/// with how the stream ended if it did.
async fn next_batch(
    inbound: &mut Streaming<pb::SignedRecord>,
) -> (Vec<pb::SignedRecord>, Option<End>) {
    let first = match inbound.next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => return (Vec::new(), Some(Some(e))),
        None => return (Vec::new(), Some(None)),
    };
    let mut bytes = record_bytes(&first);
    let mut batch = vec![first];
    while batch.len() < DELIVER_BATCH && bytes < DELIVER_BATCH_BYTES {
        match inbound.next().now_or_never() {
            Some(Some(Ok(r))) => {
                bytes += record_bytes(&r);
                batch.push(r);
            }
            Some(Some(Err(e))) => return (batch, Some(Some(e))),
            Some(None) => return (batch, Some(None)),
            None => break,
        }
    }
    (batch, None)
}

/// Fewest records worth a task of their own on the blocking pool.
const MIN_VERIFY_CHUNK: usize = 32;

/// The cores this process may use, read once.
fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Splits `batch` into at most `cpus` chunks of at least [`MIN_VERIFY_CHUNK`] records, in order.
fn verify_chunks(mut batch: Vec<pb::SignedRecord>, cpus: usize) -> Vec<Vec<pb::SignedRecord>> {
    let n = (batch.len() / MIN_VERIFY_CHUNK).clamp(1, cpus.max(1));
    let size = batch.len().div_ceil(n);
    let mut chunks = Vec::with_capacity(n);
    while batch.len() > size {
        let rest = batch.split_off(size);
        chunks.push(batch);
        batch = rest;
    }
    chunks.push(batch);
    chunks
}

impl Node {
    /// Checks each record of a chunk with the acceptance rule; the rejected ones are noted and
    /// answered with their rejection.
    fn verify_chunk(
        &self,
        channel: ChannelId,
        chunk: Vec<pb::SignedRecord>,
    ) -> (Vec<VerifiedRecord>, Vec<pb::DeliveryAck>) {
        let mut acks = Vec::new();
        let mut verified = Vec::with_capacity(chunk.len());
        let fed = self.fed();
        let ctx = fed.accept_context(self.rules());
        for signed in chunk {
            // Kept for a rejection only; an accepted record carries its own seq and id.
            let body = signed.body.clone();
            match ctx.accept(signed, channel) {
                Ok(v) => verified.push(v),
                Err(e) => {
                    let seq = claimed_seq(&body);
                    let id = RecordId::of_body(&body);
                    let reason = e.reject_reason();
                    self.metrics.reject(reason);
                    self.reject_log
                        .note(channel.origin, seq, reason.as_str_name());
                    acks.push(rejection(seq, reason, Some(id)));
                }
            }
        }
        (verified, acks)
    }

    /// Verifies one batch received on `channel`: the records that pass, in order, and the
    /// rejections of those that do not.
    async fn verify_batch(
        self: &Arc<Self>,
        channel: ChannelId,
        batch: Vec<pb::SignedRecord>,
    ) -> Result<Checked, NodeError> {
        // Signature checks are CPU work: off the async threads, like the store calls, and
        // spread over the cores in chunks (each record still checked with `verify_strict`).
        let chunks = verify_chunks(batch, cpus());
        let checks = chunks
            .into_iter()
            .map(|chunk| self.cpu(move |n| n.verify_chunk(channel, chunk)));
        let mut verified: Vec<VerifiedRecord> = Vec::new();
        let mut acks = Vec::new();
        // In chunk order, so records and rejections keep the order they arrived in.
        for r in futures::future::join_all(checks).await {
            let (v, a) = r?;
            verified.extend(v);
            acks.extend(a);
        }
        Ok(Checked { verified, acks })
    }

    /// Durably applies what [`Node::verify_batch`] passed; returns the acks to send: its
    /// rejections, those of the store, and a receipt for the new durable head.
    async fn apply_batch(
        self: &Arc<Self>,
        channel: ChannelId,
        Checked { verified, mut acks }: Checked,
    ) -> Result<Vec<pb::DeliveryAck>, NodeError> {
        if verified.is_empty() {
            return Ok(acks);
        }
        let (verified, outcomes) = self.receive(verified).await?;
        let mut any = false;
        for (rec, out) in verified.iter().zip(outcomes) {
            match out {
                Ok(ApplyOutcome::Stored) => {
                    self.metrics.received.inc();
                    any = true;
                }
                Ok(ApplyOutcome::Duplicate) => any = true,
                Err(e) => {
                    if matches!(e, ApplyError::Equivocation { .. }) {
                        self.metrics.equivocations.inc();
                    }
                    let reason = wire::apply_reject_reason(&e);
                    if matches!(e, ApplyError::Equivocation { .. }) {
                        // At most one per channel: it stops the channel.
                        tracing::warn!(peer = %channel.origin, seq = rec.seq(), "equivocation: record conflicts with a stored one; channel stopped");
                    } else {
                        self.reject_log
                            .note(channel.origin, rec.seq(), reason.as_str_name());
                    }
                    self.metrics.reject(reason);
                    acks.push(rejection(rec.seq(), reason, Some(rec.id())));
                }
            }
        }
        if any {
            acks.push(self.receipt(channel));
        }
        Ok(acks)
    }

    /// A signed receipt for the durable head of an inbound channel.
    pub(crate) fn receipt(&self, channel: ChannelId) -> pb::DeliveryAck {
        let (seq, hash) = self.store.head(channel);
        let r = Receipt {
            channel,
            acked_seq: seq,
            head_hash: hash,
            issued_at_ms: self.now(),
        };
        pb::DeliveryAck {
            result: Some(pb::delivery_ack::Result::Receipt(sign_receipt(
                &self.signing_key,
                &r,
            ))),
        }
    }

    /// This node's signed heads of both channels with `peer`, and its audit head: the peer
    /// keeps the latest, so a rewritten audit log shows against it.
    pub fn heads_for(&self, peer: interflow_core::RegionCode) -> pb::SignedHeads {
        let audit = self
            .store
            .audit_head()
            .map(|(seq, hash)| AuditHead { seq, hash });
        let heads = [
            ChannelId::new(self.region, peer),
            ChannelId::new(peer, self.region),
        ]
        .into_iter()
        .map(|c| {
            let (seq, hash) = self.store.head(c);
            Head {
                channel: c,
                seq,
                hash,
            }
        })
        .collect();
        sign_heads(
            &self.signing_key,
            &Heads {
                signer: self.region,
                peer,
                issued_at_ms: self.now(),
                heads,
                audit,
                directory_serial: self.fed().directory.serial,
            },
        )
    }
}

#[tonic::async_trait]
impl pb::exchange_server::Exchange for ExchangeService {
    type DeliverStream = BoxStream<pb::DeliveryAck>;
    type FetchStream = BoxStream<pb::SignedRecord>;

    #[tracing::instrument(skip_all, fields(peer))]
    async fn deliver(
        &self,
        req: Request<Streaming<pb::SignedRecord>>,
    ) -> Result<Response<Self::DeliverStream>, Status> {
        let peer = self.node.peer_of(&req)?;
        tracing::Span::current().record("peer", tracing::field::display(peer));
        let channel = ChannelId::new(peer, self.node.region);
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let node = self.node.clone();
        tokio::spawn(async move {
            let max = node.config.limits.max_message_bytes;
            // An error on the inbound stream (a message that does not decode or is too large, a
            // budget refused) ends it: the peer gets the status, after the acks of what came
            // before it, instead of a stream that just stops.
            let fail = |e: Status| {
                let status = crate::guard::wire_status(e, max);
                tracing::debug!(%peer, code = ?status.code(), reason = %status.message(), "deliver stream ended with an error");
                let tx = tx.clone();
                async move {
                    let _ = tx.send(Err(status)).await;
                }
            };
            // Two stages, so the next batch is verified while this one is written: the reader
            // checks signatures, the writer applies and answers in order. One checked batch
            // waits between them at most, so memory stays bounded by three batches.
            let (stage_tx, mut stage_rx) =
                mpsc::channel::<(Result<Checked, NodeError>, Option<End>)>(1);
            let reader = node.clone();
            tokio::spawn(async move {
                loop {
                    let (batch, end) = next_batch(&mut inbound).await;
                    let checked = if batch.is_empty() {
                        Ok(Checked {
                            verified: Vec::new(),
                            acks: Vec::new(),
                        })
                    } else {
                        reader.throttle_records(peer, batch.len()).await;
                        reader.verify_batch(channel, batch).await
                    };
                    let stop = end.is_some() || checked.is_err();
                    if stage_tx.send((checked, end)).await.is_err() || stop {
                        return;
                    }
                }
            });
            while let Some((checked, end)) = stage_rx.recv().await {
                let acks = match checked {
                    Ok(c) => node.apply_batch(channel, c).await,
                    Err(e) => Err(e),
                };
                match acks {
                    Ok(acks) => {
                        for a in acks {
                            if tx.send(Ok(a)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
                match end {
                    Some(Some(e)) => return fail(e).await,
                    Some(None) => return,
                    None => {}
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all, fields(peer))]
    async fn heads(
        &self,
        req: Request<pb::HeadsRequest>,
    ) -> Result<Response<pb::HeadsResponse>, Status> {
        let peer = self.node.peer_of(&req)?;
        tracing::Span::current().record("peer", tracing::field::display(peer));
        if self
            .node
            .fed()
            .agreements
            .all_peers(self.node.region)
            .binary_search(&peer)
            .is_err()
        {
            return Err(NodeError::PermissionDenied(format!("no agreement with `{peer}`")).into());
        }
        ended(&self.node, peer)?;
        Ok(Response::new(pb::HeadsResponse {
            heads: Some(self.node.heads_for(peer)),
        }))
    }

    async fn fetch(
        &self,
        req: Request<pb::FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let caller = crate::audited::caller_name(&req);
        let r = self.fetch_inner(req).await;
        let items = self
            .node
            .audit_refusal(&caller, "Exchange.Fetch", r)
            .await?;
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    #[tracing::instrument(skip_all, fields(peer))]
    async fn audit_anchor(
        &self,
        req: Request<pb::AuditAnchorRequest>,
    ) -> Result<Response<pb::AuditAnchorResponse>, Status> {
        let peer = self.node.peer_of(&req)?;
        tracing::Span::current().record("peer", tracing::field::display(peer));
        // The caller's own signed statement, as kept: it tells the caller nothing new but
        // what this node holds of it.
        let kept = self.node.store.run(move |s| s.checkpoint(peer)).await?;
        let heads = match kept {
            Some(b) => Some(pb::SignedHeads::decode(b.as_slice()).map_err(|e| {
                tracing::error!(%peer, error = %e, "a kept head statement does not decode");
                Status::internal("internal storage error")
            })?),
            None => None,
        };
        Ok(Response::new(pb::AuditAnchorResponse { heads }))
    }

    async fn directory(
        &self,
        req: Request<pb::DirectoryRequest>,
    ) -> Result<Response<pb::DirectoryResponse>, Status> {
        self.node.peer_of(&req)?;
        let (signed, _) = self.node.directory_source();
        Ok(Response::new(pb::DirectoryResponse {
            directory: Some(signed),
        }))
    }

    #[tracing::instrument(skip_all, fields(peer))]
    async fn terminate(
        &self,
        req: Request<pb::SignedTermination>,
    ) -> Result<Response<pb::TerminateResponse>, Status> {
        let peer = self.node.peer_of(&req)?;
        tracing::Span::current().record("peer", tracing::field::display(peer));
        self.node
            .receive_termination(peer, req.into_inner())
            .await?;
        Ok(Response::new(pb::TerminateResponse {}))
    }
}

/// Refuses `Heads` and `Fetch` once every agreement with `peer` is terminated and its grace
/// period is over: the partner had that long to recover the records issued while active.
fn ended(node: &Node, peer: interflow_core::RegionCode) -> Result<(), NodeError> {
    if node.serves_partner(peer) {
        Ok(())
    } else {
        Err(NodeError::PermissionDenied(format!(
            "every agreement with `{peer}` was terminated and its grace period has ended"
        )))
    }
}

impl ExchangeService {
    /// `Fetch` up to its audit entry (peer, channel, range served); a refusal is audited by the
    /// caller of this.
    async fn fetch_inner(
        &self,
        req: Request<pb::FetchRequest>,
    ) -> Result<Vec<Result<pb::SignedRecord, Status>>, NodeError> {
        let peer = self.node.peer_of(&req)?;
        tracing::Span::current().record("peer", tracing::field::display(peer));
        let r = req.into_inner();
        let parse = |field: &'static str, v: &str| {
            v.parse::<interflow_core::RegionCode>()
                .map_err(|e| NodeError::bad_field(field, e))
        };
        let channel = ChannelId::new(
            parse("origin", &r.origin)?,
            parse("destination", &r.destination)?,
        );
        let me = self.node.region;
        let party = (channel.origin == peer && channel.destination == me)
            || (channel.origin == me && channel.destination == peer);
        if !party {
            return Err(NodeError::PermissionDenied(format!(
                "`{peer}` is not a party to channel `{channel}` on this node"
            )));
        }
        ended(&self.node, peer)?;
        let max = self.node.config.limits.max_fetch;
        let limit = if r.limit == 0 { max } else { r.limit.min(max) } as usize;
        let from = r.from_seq.max(1);
        let recs = self
            .node
            .store
            .run(move |s| s.records_from(channel, from, limit))
            .await?;
        let detail = match (recs.first(), recs.last()) {
            (Some(f), Some(l)) => format!("seq:{}..{} records:{}", f.seq, l.seq, recs.len()),
            _ => format!("seq:{from}.. records:0"),
        };
        let (now, actor) = (self.node.now(), format!("peer:{peer}"));
        let note = AuditNote {
            detail,
            ..AuditNote::default()
        };
        self.node
            .store
            .run(move |s| {
                s.audit_noted(
                    now,
                    &actor,
                    "Exchange.Fetch",
                    vec![channel.to_string()],
                    note,
                )
            })
            .await?;
        Ok(recs
            .iter()
            .map(|r| wire::signed_record(channel, r.seq, &r.bytes).map_err(Status::from))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(n: usize) -> Vec<pb::SignedRecord> {
        (0..n)
            .map(|i| pb::SignedRecord {
                body: i.to_le_bytes().to_vec(),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn verify_chunks_keep_every_record_in_order_and_stay_within_the_cores() {
        for (len, cpus, want) in [(0, 4, 1), (10, 4, 1), (64, 2, 2), (512, 2, 2), (500, 3, 3)] {
            let chunks = verify_chunks(numbered(len), cpus);
            assert_eq!(chunks.len(), want, "{len} records on {cpus} cores");
            let flat: Vec<_> = chunks.into_iter().flatten().collect();
            assert_eq!(flat, numbered(len));
        }
    }
}
