//! The local `Inbox` service: the receiving bureau's systems read inbound records in arrival
//! order through named consumers with durable cursors (`Pull`, `Follow`, `Ack`, `Consumers`),
//! and find which of their residents have records (`Match`, national IDs computed to refs
//! under every agreement, never stored or echoed). Callers hold an `inbox` certificate (an
//! `admin` one may read too). Every Pull, Follow batch and Match is audited with the caller.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use interflow_core::payload::Kind;
use interflow_core::pb;
use interflow_core::record::{ChannelId, DecodedRecord};
use interflow_core::time::latest_permitted_date;
use interflow_core::{NationalId, RegionCode};
use interflow_store::{InboxEntry, Store, Stored};
use interflow_tls::Role;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::audited::{caller_name, read_note};
use crate::error::NodeError;
use crate::metrics::ConsumerLabel;
use crate::node::Node;
use crate::person::{PersonRefs, person_refs, records_of};
use crate::residence;

/// Items per Pull by default, and at most.
const DEFAULT_MAX: usize = 100;
const MAX_ITEMS: usize = 1000;
/// Positions one read looks at, so a filter that matches little cannot make a read unbounded.
const SCAN: usize = 10_000;
/// National IDs one Match call takes at most.
const MAX_MATCH_IDS: usize = 100_000;

#[derive(Debug, Clone)]
pub struct InboxService {
    pub node: Arc<Node>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A checked `InboxFilter`.
#[derive(Debug, Clone, Default)]
struct Filter {
    kinds: Vec<Kind>,
    origins: Vec<RegionCode>,
    agreements: Vec<String>,
}

impl Filter {
    fn parse(f: Option<pb::InboxFilter>) -> Result<Self, NodeError> {
        let f = f.unwrap_or_default();
        Ok(Filter {
            kinds: f
                .kinds
                .into_iter()
                .map(|k| Kind::try_from(k).map_err(|e| NodeError::bad_field("filter.kinds", e)))
                .collect::<Result<_, _>>()?,
            origins: f
                .origins
                .iter()
                .map(|o| {
                    o.parse()
                        .map_err(|e| NodeError::bad_field("filter.origins", e))
                })
                .collect::<Result<_, _>>()?,
            agreements: f.agreement_ids,
        })
    }

    /// Erased records keep no kind: a kind filter passes them over.
    fn keeps(&self, s: &Stored) -> bool {
        let (origin, agreement, kind) = match s {
            Stored::Record(r) => (r.channel().origin, r.agreement_id(), Some(r.kind())),
            Stored::Erased(e) => (e.channel.origin, e.agreement_id.as_str(), None),
        };
        (self.origins.is_empty() || self.origins.contains(&origin))
            && (self.agreements.is_empty() || self.agreements.iter().any(|a| a == agreement))
            && (self.kinds.is_empty() || kind.is_some_and(|k| self.kinds.contains(&k)))
    }
}

fn consumer(name: &str) -> Result<String, NodeError> {
    if interflow_store::valid_consumer(name) {
        Ok(name.to_owned())
    } else {
        Err(NodeError::bad_field(
            "consumer",
            format!("must be {}", interflow_store::CONSUMER_RULE),
        ))
    }
}

fn date(d: chrono::NaiveDate) -> pb::Date {
    use chrono::Datelike as _;
    pb::Date {
        year: u32::try_from(d.year()).unwrap_or(0),
        month: d.month(),
        day: d.day(),
    }
}

/// The wire item for a stored record; `current` is looked up among the subject's records.
fn item(
    store: &Store,
    position: u64,
    arrived_at_ms: i64,
    stored: Stored,
) -> Result<pb::InboxItem, NodeError> {
    let mut it = pb::InboxItem {
        position,
        arrived_at_ms,
        ..Default::default()
    };
    match stored {
        Stored::Erased(e) => {
            it.record_id = e.id.0.to_vec();
            it.origin = e.channel.origin.to_string();
            it.seq = e.seq;
            it.agreement_id = e.agreement_id;
            it.issued_at_ms = e.issued_at_ms;
            it.erased = true;
        }
        Stored::Record(r) => {
            let records = store.subject_records(r.subject())?;
            let after = residence::after_departure(&records, &r, arrived_at_ms);
            let current = !after
                && residence::current_excluding_after_departure(&records, r.kind(), None)
                    .is_some_and(|c| c.id() == r.id());
            it.after_departure = after;
            it.awaiting_answer = residence::awaiting_answer(&records, &r);
            fill(&mut it, &r, current);
        }
    }
    Ok(it)
}

fn fill(it: &mut pb::InboxItem, r: &DecodedRecord, current: bool) {
    it.record_id = r.id().0.to_vec();
    it.origin = r.channel().origin.to_string();
    it.seq = r.seq();
    it.agreement_id = r.agreement_id().to_owned();
    it.kind = pb::RecordKind::from(r.kind()) as i32;
    it.subject_ref = r.subject().as_bytes().to_vec();
    it.payload = match pb::record_body::Payload::from(r.payload()) {
        pb::record_body::Payload::Pregnancy(p) => Some(pb::inbox_item::Payload::Pregnancy(p)),
        pb::record_body::Payload::Contraception(c) => {
            Some(pb::inbox_item::Payload::Contraception(c))
        }
        pb::record_body::Payload::Residence(x) => Some(pb::inbox_item::Payload::Residence(x)),
        pb::record_body::Payload::Retraction(x) => Some(pb::inbox_item::Payload::Retraction(x)),
    };
    it.issued_at_ms = r.issued_at_ms();
    it.observed_on = r.payload().observed_on().map(date);
    it.supersedes = r.supersedes().map(|s| s.0.to_vec()).unwrap_or_default();
    it.current = current;
}

/// One read: up to `max` items after `after`, and the last position looked at.
fn read(
    store: &Store,
    after: u64,
    max: usize,
    filter: &Filter,
) -> Result<(Vec<pb::InboxItem>, u64), NodeError> {
    let page = store.inbox_after(after, max, SCAN, &|s| filter.keeps(s))?;
    let items = page
        .entries
        .into_iter()
        .map(
            |InboxEntry {
                 position,
                 arrived_at_ms,
                 stored,
             }| item(store, position, arrived_at_ms, stored),
        )
        .collect::<Result<_, _>>()?;
    Ok((items, page.scanned_to))
}

impl InboxService {
    fn reader<T>(&self, req: &Request<T>) -> Result<String, NodeError> {
        self.node.local_caller_in(req, &[Role::Inbox, Role::Admin])
    }

    /// Where a read starts: `after` if given, else the consumer's cursor.
    async fn start(&self, name: &str, after: Option<u64>) -> Result<u64, NodeError> {
        match after {
            Some(a) => Ok(a),
            None => {
                let n = name.to_owned();
                Ok(self.node.store.run(move |s| s.cursor(&n)).await?.position)
            }
        }
    }

    /// Audits one read of `items` by `actor` through `consumer`.
    async fn audit(
        node: &Node,
        actor: &str,
        action: &'static str,
        name: &str,
        items: &[pb::InboxItem],
    ) -> Result<(), NodeError> {
        let mut subjects = vec![format!("consumer:{name}")];
        subjects.extend(items.iter().map(|i| hex::encode(&i.record_id)));
        let (actor, now) = (actor.to_owned(), node.now());
        node.store
            .run(move |s| s.audit(now, &actor, action, subjects))
            .await?;
        Ok(())
    }

    async fn pull_inner(
        &self,
        req: Request<pb::PullRequest>,
    ) -> Result<pb::PullResponse, NodeError> {
        let actor = self.reader(&req)?;
        let r = req.into_inner();
        let name = consumer(&r.consumer)?;
        let filter = Filter::parse(r.filter)?;
        let max = match r.max as usize {
            0 => DEFAULT_MAX,
            m => m.min(MAX_ITEMS),
        };
        let after = self.start(&name, r.after).await?;
        let n = name.clone();
        let (items, scanned_to, head, cursor) = self
            .node
            .store
            .call(move |s| {
                let (items, scanned_to) = read(s, after, max, &filter)?;
                Ok((items, scanned_to, s.inbox_head()?, s.cursor(&n)?.position))
            })
            .await?;
        Self::audit(&self.node, &actor, "Inbox.Pull", &name, &items).await?;
        Ok(pb::PullResponse {
            items,
            head,
            cursor,
            next_after: scanned_to,
        })
    }

    async fn match_inner(
        &self,
        req: Request<Streaming<pb::MatchRequest>>,
    ) -> Result<pb::MatchResponse, NodeError> {
        let actor = self.reader(&req)?;
        let mut stream = req.into_inner();
        let node = &self.node;
        let today = latest_permitted_date(node.now(), 0);
        // One snapshot for the whole call: every ID is computed under the same agreements
        // and pseudonym epochs.
        let fed = node.fed();
        let mut purpose = None;
        let mut received = 0u32;
        let mut invalid = Vec::new();
        // (index, her refs under one agreement and every epoch): the IDs themselves are
        // dropped as soon as they are computed to refs.
        let mut refs: Vec<(u32, PersonRefs)> = Vec::new();
        while let Some(msg) = stream.next().await {
            let msg = msg.map_err(|s| {
                NodeError::InvalidArgument(format!("the request stream failed: {}", s.message()))
            })?;
            if purpose.is_none() {
                purpose = Some(
                    read_note(msg.purpose, &msg.case_ref).map_err(|e| match e {
                        NodeError::BadField { field: "purpose", .. } => NodeError::bad_field(
                            "purpose",
                            "is required in the first message: service continuity, own request, correction, audit or legal obligation",
                        ),
                        e => e,
                    })?,
                );
            }
            for id in msg.national_ids {
                if received as usize >= MAX_MATCH_IDS {
                    return Err(NodeError::InvalidArgument(format!(
                        "a Match call takes at most {MAX_MATCH_IDS} IDs; split the list"
                    )));
                }
                let index = received;
                received += 1;
                match NationalId::parse(&id, today) {
                    Ok(nid) => refs.extend(
                        person_refs(&fed, node.region, &nid)
                            .into_iter()
                            .map(|p| (index, p)),
                    ),
                    Err(_) => invalid.push(index),
                }
            }
        }
        let Some(mut note) = purpose else {
            return Err(NodeError::bad_field(
                "purpose",
                "is required in the first message",
            ));
        };
        let me = node.region;
        let matches = node
            .store
            .call(move |s| {
                let mut out: Vec<pb::MatchResult> = Vec::new();
                for (
                    index,
                    PersonRefs {
                        agreement,
                        peer,
                        refs,
                    },
                ) in refs
                {
                    // All of her records under every epoch, ours too: a status after our
                    // DEPARTED notice is never current.
                    let all = records_of(s, &refs)?;
                    let inbound = ChannelId::new(peer, me);
                    if !all.iter().any(|r| r.channel() == inbound) {
                        continue;
                    }
                    let mut statuses = Vec::new();
                    for kind in Kind::ALL {
                        let current =
                            residence::current_excluding_after_departure(&all, kind, Some(inbound));
                        if let Some(c) = current {
                            let mut it = pb::InboxItem::default();
                            fill(&mut it, &c, true);
                            statuses.push(pb::MatchedStatus {
                                agreement_id: agreement.clone(),
                                peer: peer.to_string(),
                                kind: pb::RecordKind::from(kind) as i32,
                                current: Some(it),
                            });
                        }
                    }
                    match out.last_mut() {
                        Some(m) if m.index == index => m.statuses.extend(statuses),
                        _ => out.push(pb::MatchResult { index, statuses }),
                    }
                }
                Ok(out)
            })
            .await?;
        let (now, a) = (node.now(), actor.clone());
        note.detail = format!("ids:{received} matched:{}", matches.len());
        node.store
            .run(move |s| s.audit_noted(now, &a, "Inbox.Match", vec![], note))
            .await?;
        Ok(pb::MatchResponse {
            ids_received: received,
            invalid,
            matches,
        })
    }
}

/// Every consumer with its lag; also refreshes the lag gauges.
pub async fn consumers(node: &Node) -> Result<pb::ConsumersResponse, NodeError> {
    let (head, list) = node
        .store
        .call(|s| {
            let head = s.inbox_head()?;
            let mut out = Vec::new();
            for c in s.cursors()? {
                let oldest = match s.inbox_at(c.position + 1)? {
                    Some(e) => e.arrived_at_ms,
                    None => 0,
                };
                out.push(pb::ConsumerInfo {
                    name: c.consumer,
                    cursor: c.position,
                    lag_items: head.saturating_sub(c.position),
                    oldest_unacked_arrived_at_ms: oldest,
                    acked_at_ms: c.acked_at_ms,
                });
            }
            Ok((head, out))
        })
        .await?;
    let now = node.now();
    for c in &list {
        let label = ConsumerLabel {
            consumer: c.name.clone(),
        };
        node.metrics
            .consumer_lag_items
            .get_or_create(&label)
            .set(i64::try_from(c.lag_items).unwrap_or(i64::MAX));
        let age = if c.oldest_unacked_arrived_at_ms > 0 {
            (now - c.oldest_unacked_arrived_at_ms).max(0) / 1000
        } else {
            0
        };
        node.metrics
            .consumer_lag_seconds
            .get_or_create(&label)
            .set(age);
    }
    Ok(pb::ConsumersResponse {
        head,
        now_ms: now,
        consumers: list,
    })
}

impl InboxService {
    /// `Follow` up to its first audit entry; a refusal is audited by the caller of this.
    async fn follow_inner(
        &self,
        req: Request<pb::FollowRequest>,
    ) -> Result<Response<BoxStream<pb::InboxItem>>, NodeError> {
        let actor = self.reader(&req)?;
        let r = req.into_inner();
        let name = consumer(&r.consumer)?;
        let filter = Filter::parse(r.filter)?;
        let mut after = self.start(&name, r.after).await?;
        Self::audit(&self.node, &actor, "Inbox.Follow", &name, &[]).await?;
        let (tx, rx) = mpsc::channel(DEFAULT_MAX);
        let node = self.node.clone();
        let mut head = node.inbox_head.subscribe();
        tokio::spawn(async move {
            loop {
                let f = filter.clone();
                let got = node
                    .store
                    .call(move |s| read(s, after, DEFAULT_MAX, &f))
                    .await;
                let (items, scanned_to) = match got {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                if !items.is_empty() {
                    if let Err(e) = Self::audit(&node, &actor, "Inbox.Follow", &name, &items).await
                    {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                    for it in items {
                        if tx.send(Ok(it)).await.is_err() {
                            return;
                        }
                    }
                }
                let caught_up = scanned_to == after || scanned_to >= *head.borrow_and_update();
                after = scanned_to;
                if caught_up {
                    // Wait for a new arrival, the caller leaving, or the node stopping.
                    tokio::select! {
                        changed = head.changed() => if changed.is_err() { return },
                        _ = tx.closed() => return,
                        _ = node.stopping.cancelled() => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

#[tonic::async_trait]
impl pb::inbox_server::Inbox for InboxService {
    type FollowStream = BoxStream<pb::InboxItem>;

    #[tracing::instrument(skip_all)]
    async fn pull(
        &self,
        req: Request<pb::PullRequest>,
    ) -> Result<Response<pb::PullResponse>, Status> {
        let caller = caller_name(&req);
        let r = self.pull_inner(req).await;
        Ok(Response::new(
            self.node.audit_refusal(&caller, "Inbox.Pull", r).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn follow(
        &self,
        req: Request<pb::FollowRequest>,
    ) -> Result<Response<Self::FollowStream>, Status> {
        let caller = caller_name(&req);
        let r = self.follow_inner(req).await;
        Ok(self.node.audit_refusal(&caller, "Inbox.Follow", r).await?)
    }

    async fn ack(&self, req: Request<pb::AckRequest>) -> Result<Response<pb::AckResponse>, Status> {
        let _actor = self.reader(&req)?;
        let r = req.into_inner();
        let name = consumer(&r.consumer)?;
        let head = *self.node.inbox_head.borrow();
        if r.position > head {
            return Err(NodeError::bad_field(
                "position",
                format!("`{}` is past the newest position `{head}`", r.position),
            )
            .into());
        }
        let now = self.node.now();
        let cursor = self
            .node
            .store
            .run(move |s| s.ack(&name, r.position, now))
            .await?;
        Ok(Response::new(pb::AckResponse {
            cursor: cursor.position,
        }))
    }

    async fn consumers(
        &self,
        req: Request<pb::ConsumersRequest>,
    ) -> Result<Response<pb::ConsumersResponse>, Status> {
        self.reader(&req)?;
        Ok(Response::new(consumers(&self.node).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn r#match(
        &self,
        req: Request<Streaming<pb::MatchRequest>>,
    ) -> Result<Response<pb::MatchResponse>, Status> {
        let caller = caller_name(&req);
        let r = self.match_inner(req).await;
        Ok(Response::new(
            self.node.audit_refusal(&caller, "Inbox.Match", r).await?,
        ))
    }
}
