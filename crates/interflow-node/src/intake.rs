//! The local `Intake` service: validates each submission, pseudonymizes the national ID under
//! the covering agreement's key, and seals and appends every valid item in one durable batch.
//! The national ID never leaves this function: it is neither stored, sent nor logged.

use std::sync::Arc;

use interflow_core::agreement::CoverError;
use interflow_core::idempotency::{IdempotencyDigest, IdempotencyKey};
use interflow_core::payload::{Payload, ResidenceEvent};
use interflow_core::pb;
use interflow_core::pseudonym::SubjectRef;
use interflow_core::record::{ChannelId, DecodedRecord, NewRecord, RecordId};
use interflow_core::time::latest_permitted_date;
use interflow_core::{NationalId, RegionCode};
use interflow_store::{AppendOutcome, AuditNote, GroupAudit, OutboundGroup, Store};
use interflow_tls::Role;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use crate::error::NodeError;
use crate::node::Node;
use crate::residence::latest_event;

#[derive(Debug, Clone)]
pub struct IntakeService {
    pub node: Arc<Node>,
    commits: Arc<GroupCommit>,
    queue: Arc<IntakeQueue>,
}

impl IntakeService {
    pub fn new(node: Arc<Node>) -> Self {
        let queue = Arc::new(IntakeQueue::new(&node.config.intake));
        IntakeService {
            node,
            commits: Arc::default(),
            queue,
        }
    }
}

/// The retry hint's bounds: never "now" (the queue is full now), never so long that a
/// submitter gives up on a node that drains in a moment.
const RETRY_AFTER_MIN_MS: u64 = 20;
const RETRY_AFTER_MAX_MS: u64 = 5000;

/// The commit time per record assumed until a group commit has been measured.
const ASSUMED_COMMIT_US_PER_RECORD: u64 = 50;

/// Backpressure: the Submit work this node has taken on and not yet answered (items and
/// calls), bounded by `[intake]`. A call beyond the bound is refused before anything of it is
/// read, so memory and latency stay bounded however many clients push, and what waits for the
/// store writer is bounded too (one group commit at a time, the rest of the queue behind it).
#[derive(Debug)]
struct IntakeQueue {
    max_records: usize,
    max_calls: usize,
    /// (items, calls) admitted and not yet answered.
    held: std::sync::Mutex<(usize, usize)>,
}

/// A call's place in the intake queue; given back when the call is answered.
struct Admitted<'a> {
    queue: &'a IntakeQueue,
    items: usize,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let mut held = self.queue.held();
        held.0 -= self.items;
        held.1 -= 1;
    }
}

impl IntakeQueue {
    fn new(c: &crate::config::IntakeQueue) -> Self {
        IntakeQueue {
            max_records: c.max_queued_records,
            max_calls: c.max_waiting_calls,
            held: std::sync::Mutex::new((0, 0)),
        }
    }

    /// The counts; a poisoned lock still holds valid counts.
    fn held(&self) -> std::sync::MutexGuard<'_, (usize, usize)> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a call of `items` on, or refuses it with the status to answer; the hint assumes
    /// the work ahead drains at `us_per_record`.
    fn admit(&self, items: usize, us_per_record: u64) -> Result<Admitted<'_>, Status> {
        let mut held = self.held();
        let (records, calls) = *held;
        if records + items <= self.max_records && calls < self.max_calls {
            *held = (records + items, calls + 1);
            return Ok(Admitted { queue: self, items });
        }
        drop(held);
        // About when the work ahead is committed, if it drains at the recent rate.
        let wait_ms =
            (records as u64 * us_per_record / 1000).clamp(RETRY_AFTER_MIN_MS, RETRY_AFTER_MAX_MS);
        let mut status = Status::resource_exhausted(format!(
            "intake is busy: {records} items of {calls} calls are waiting to be stored (this node takes {} items and {} calls at most); nothing of this call was stored, send it again after {wait_ms} ms",
            self.max_records, self.max_calls
        ));
        status.metadata_mut().insert(
            interflow_core::RETRY_AFTER_MS_HEADER,
            tonic::metadata::MetadataValue::from(wait_ms),
        );
        Err(status)
    }
}

/// One Submit call's valid records waiting for the group commit, and where its outcome goes.
struct Job {
    records: Vec<NewRecord>,
    /// Items in the call, refused ones included (the audit entry counts them).
    items: usize,
    caller: String,
    at_ms: i64,
    done: oneshot::Sender<Result<Vec<AppendOutcome>, Status>>,
}

/// Group commit of concurrent Submit calls: each call queues its records, and whichever call
/// gets the commit turn takes everything queued so far into one store call (one flush and
/// fsync, the audit entries of every call in the same batch). While one group is durably
/// committed the next one gathers. No background task: the calls themselves take turns.
#[derive(Debug, Default)]
struct GroupCommit {
    queued: std::sync::Mutex<Vec<Job>>,
    turn: tokio::sync::Mutex<()>,
    /// Recent commit time per record in microseconds (a moving average over about eight
    /// groups; 0 until the first), for the backpressure hint.
    us_per_record: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// The queue; a poisoned one still holds valid jobs.
    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Job>> {
        self.queued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes how long a group of `records` items took to commit.
    fn observe(&self, records: usize, took: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let per_record = (took.as_micros() as u64 / records.max(1) as u64).max(1);
        let old = self.us_per_record.load(Relaxed);
        let new = match old {
            0 => per_record,
            _ => (old * 7 + per_record) / 8,
        };
        self.us_per_record.store(new, Relaxed);
    }

    /// The commit time per record the backpressure hint assumes.
    fn us_per_record(&self) -> u64 {
        match self
            .us_per_record
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => ASSUMED_COMMIT_US_PER_RECORD,
            us => us,
        }
    }

    /// Queues a call's records and waits until a group holding them was committed durably.
    async fn commit(&self, node: &Arc<Node>, job: Job) -> Result<Vec<AppendOutcome>, Status> {
        let (tx, mut rx) = oneshot::channel();
        self.queue().push(Job { done: tx, ..job });
        {
            let _turn = self.turn.lock().await;
            // The previous turn took this call along: answer it rather than lead a group.
            if let Ok(done) = rx.try_recv() {
                return done;
            }
            let jobs = std::mem::take(&mut *self.queue());
            // Empty when an earlier turn took this call's records with its group.
            if !jobs.is_empty() {
                let records: usize = jobs.iter().map(|j| j.items).sum();
                let started = std::time::Instant::now();
                // In its own task: a leader whose client goes away must not abandon the other
                // calls of its group halfway (their answers would be lost with it).
                let n = node.clone();
                let _ = tokio::spawn(async move { run_group(&n, jobs).await }).await;
                self.observe(records, started.elapsed());
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(Status::internal("internal error")))
    }
}

/// Commits one group in one store call and answers every call in it.
async fn run_group(node: &Arc<Node>, jobs: Vec<Job>) {
    let n = node.clone();
    let result = node
        .store
        .call(move |store| {
            let groups = jobs
                .iter()
                .map(|j| {
                    let items = j.items;
                    OutboundGroup {
                        items: &j.records,
                        audit: Some(GroupAudit {
                            at_ms: j.at_ms,
                            actor: j.caller.clone(),
                            action: "Intake.Submit".into(),
                            note: Box::new(move |outcomes| submit_note(items, outcomes)),
                        }),
                    }
                })
                .collect();
            let result = store.append_outbound_groups(n.signer().sealer(), groups);
            Ok((jobs, result))
        })
        .await;
    let (jobs, result) = match result {
        Ok(r) => r,
        // The store call did not run to its end (a panic): every call of the group is lost.
        Err(e) => {
            tracing::error!(error = %e, "group commit failed");
            return;
        }
    };
    match result {
        Ok(outcomes) => {
            for (job, out) in jobs.into_iter().zip(outcomes) {
                let _ = job.done.send(Ok(out));
            }
        }
        Err(e) => {
            // A failed commit fails every call of the group, none is acknowledged.
            let status = Status::from(NodeError::from(e));
            for job in jobs {
                let _ = job.done.send(Err(status.clone()));
            }
        }
    }
}

/// The audit note of one Submit call: the counts, never the contents (no refs, no ids).
fn submit_note(items: usize, outcomes: &[AppendOutcome]) -> AuditNote {
    let stored = outcomes
        .iter()
        .filter(|o| matches!(o, AppendOutcome::Stored(_)))
        .count();
    let duplicate = outcomes
        .iter()
        .filter(|o| matches!(o, AppendOutcome::Duplicate(_)))
        .count();
    AuditNote {
        detail: format!(
            "items:{items} stored:{stored} duplicate:{duplicate} refused:{}",
            items - stored - duplicate
        ),
        ..Default::default()
    }
}

type Code = pb::SubmitErrorCode;

fn error(code: Code, field: &str, reason: impl Into<String>) -> pb::SubmitResult {
    pb::SubmitResult {
        outcome: Some(pb::submit_result::Outcome::Error(pb::SubmitError {
            code: code as i32,
            field: field.into(),
            reason: reason.into(),
        })),
        duplicate: false,
    }
}

/// The record first submitted under an idempotency digest, if it is still readable.
fn first_submission(store: &Store, digest: &IdempotencyDigest) -> Option<DecodedRecord> {
    let read = store
        .submitted_under(digest)
        .and_then(|id| id.map(|id| store.get(id)).transpose());
    match read {
        Ok(r) => r.flatten(),
        Err(e) => {
            // The append that follows reads the same entry and reports the failure.
            tracing::error!(error = %e, "reading an earlier submission");
            None
        }
    }
}

impl Node {
    /// Turns one submission into a record to seal, or the precise reason it cannot be.
    fn prepare(&self, store: &Store, item: pb::Submission) -> Result<NewRecord, pb::SubmitResult> {
        let idempotency_key = IdempotencyKey::parse(&item.idempotency_key).map_err(|_| {
            error(
                Code::InvalidIdempotencyKey,
                "idempotency_key",
                IdempotencyKey::RULE,
            )
        })?;
        let now = self.now();
        let destination: RegionCode =
            item.destination
                .parse()
                .map_err(|e: interflow_core::region::RegionCodeError| {
                    error(Code::InvalidDestination, "destination", e.to_string())
                })?;
        if destination == self.region {
            return Err(error(
                Code::InvalidDestination,
                "destination",
                "is this node itself",
            ));
        }
        // One snapshot for the whole item: directory, agreement and key agree with each other.
        let fed = self.fed();
        if fed.directory.member(destination).is_none() {
            return Err(error(
                Code::InvalidDestination,
                "destination",
                format!("`{destination}` is not a federation member"),
            ));
        }
        let today = latest_permitted_date(now, 0);
        let id = NationalId::parse(&item.national_id, today)
            .map_err(|e| error(Code::InvalidNationalId, "national_id", e.to_string()))?;
        let mut payload = Payload::from_submission(item.payload)
            .map_err(|e| error(Code::InvalidPayload, e.field(), e.reason().to_string()))?;
        let supersedes = match item.supersedes.len() {
            0 => None,
            _ => Some(
                RecordId::try_from(item.supersedes.as_slice())
                    .map_err(|e| error(Code::InvalidSupersedes, "supersedes", e.to_string()))?,
            ),
        };
        payload
            .validate(&self.rules(), supersedes.is_some())
            .map_err(|e| error(Code::InvalidPayload, e.field(), e.reason().to_string()))?;
        let kind = payload.kind();
        let agreement = fed
            .agreements
            .find_covering(self.region, destination, kind, now)
            .map_err(|e| {
                let code = match e {
                    CoverError::WrongDirection { .. } => Code::WrongDirection,
                    _ => Code::NoAgreement,
                };
                error(code, "destination", e.to_string())
            })?;
        // A suite the agreement requires: the partner would refuse what this node signs.
        if let Some(required) = agreement.required_alg
            && required != self.signer().alg()
        {
            return Err(error(
                Code::NoAgreement,
                "destination",
                format!(
                    "agreement `{}` requires {required:?} signatures and this node signs with {:?}; rotate to a key of that suite",
                    agreement.id,
                    self.signer().alg()
                ),
            ));
        }
        // Coarse dates: the agreement asks for months, so the days are dropped here, before
        // the record is sealed (the receiver refuses finer dates under it).
        if agreement.month_dates {
            payload.coarsen_dates();
        }
        let keys = fed.pseudonym_keys.get(&agreement.id).ok_or_else(|| {
            tracing::error!(agreement = %agreement.id, "no pseudonym key for agreement");
            error(
                Code::NoAgreement,
                "destination",
                "this node has no pseudonym key for the agreement",
            )
        })?;
        // Her refs under every epoch kept, oldest first; a new record uses the newest.
        let refs: Vec<SubjectRef> = keys.refs(&id).into_iter().map(|(_, r)| r).collect();
        let (mut epoch, newest) = keys.newest();
        let mut subject = SubjectRef::derive(newest, &id);
        // Status follows residence: this node is the home bureau, so a new status goes to the
        // destination only while its latest residence notice for her is ARRIVED (no notice at
        // all counts as not resident). A retraction withdraws an error and is always allowed.
        if kind.is_status()
            && !payload.is_retraction()
            && agreement.status_follows_residence
            && agreement.residence_home() == Some(self.region)
        {
            let records = crate::person::records_of(store, &refs).map_err(|e| {
                tracing::error!(error = %e, "reading residence notices");
                error(
                    Code::NotResident,
                    "destination",
                    "the residence notices could not be read; retry later",
                )
            })?;
            let from_destination = ChannelId::new(destination, self.region);
            if latest_event(&records, from_destination, None) != Some(ResidenceEvent::Arrived) {
                return Err(error(
                    Code::NotResident,
                    "destination",
                    format!(
                        "`{destination}` has no current arrival notice for this person (status follows residence under agreement `{}`); send status to the bureau where she lives",
                        agreement.id
                    ),
                ));
            }
        }
        let channel = ChannelId::new(self.region, destination);
        if self.holds.is_held(channel) {
            return Err(error(
                Code::ChannelHeld,
                "destination",
                format!(
                    "new records for `{destination}` wait until this node has compared its feed with that peer after start (restore safety); retry shortly"
                ),
            ));
        }
        let digest = idempotency_key.digest(self.signer().digest_key());
        // After a rotation, a resubmission of a record made under an older epoch keeps that
        // epoch, so it is recognised as the same record, not an idempotency conflict. (Only
        // agreements with several epochs pay for the extra read.)
        if keys.epochs().nth(1).is_some()
            && let Some(prior) = first_submission(store, &digest)
            && let Some(e) = keys.epoch_of(&id, prior.subject())
        {
            (epoch, subject) = (e, *prior.subject());
        }
        if let Some(target) = supersedes {
            let found = match store.get(target) {
                Ok(Some(r)) if r.channel() == channel && r.kind() == kind => {
                    keys.epoch_of(&id, r.subject()).map(|e| (e, *r.subject()))
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::error!(error = %e, "reading superseded record");
                    None
                }
            };
            // A correction or retraction keeps the epoch of the record it supersedes, so a
            // record and its corrections stay under one ref (the receiver links them by ref).
            if let Some((e, s)) = found {
                (epoch, subject) = (e, s);
            } else {
                return Err(error(
                    Code::InvalidSupersedes,
                    "supersedes",
                    "names no record of this person and kind sent by this node to this destination",
                ));
            }
        }
        // Only the keyed digest of the key is kept and sent, inside the signed body.
        Ok(NewRecord {
            channel,
            agreement_id: agreement.id.clone(),
            subject,
            pseudonym_epoch: epoch,
            issued_at_ms: now,
            supersedes,
            idempotency: Some(digest),
            payload,
        })
    }

    /// Validates every item (on the blocking pool: validation reads the store for
    /// `supersedes` and residence), giving the refusals in place and the records to seal.
    async fn prepare_all(
        self: &Arc<Self>,
        items: Vec<pb::Submission>,
    ) -> Result<Prepared, NodeError> {
        let node = self.clone();
        self.store
            .call(move |store| {
                let mut p = Prepared::default();
                for item in items {
                    match node.prepare(store, item) {
                        Ok(r) => {
                            p.slots.push(p.results.len());
                            p.results.push(None);
                            p.records.push(r);
                        }
                        Err(e) => p.results.push(Some(e)),
                    }
                }
                Ok(p)
            })
            .await
    }
}

/// The validated items of one Submit call.
#[derive(Debug, Default)]
struct Prepared {
    /// One per item: the refusal, or `None` for a record to seal.
    results: Vec<Option<pb::SubmitResult>>,
    /// Where each record's outcome goes in `results`.
    slots: Vec<usize>,
    records: Vec<NewRecord>,
}

impl IntakeService {
    /// Validates, then seals and appends every valid item with the group commit; the call's
    /// audit entry is written in the same durable batch.
    async fn submit_audited(
        &self,
        caller: String,
        items: Vec<pb::Submission>,
    ) -> Result<Vec<pb::SubmitResult>, Status> {
        let node = &self.node;
        let total = items.len();
        let Prepared {
            mut results,
            slots,
            records,
        } = node.prepare_all(items).await?;
        let destinations: Vec<RegionCode> = records.iter().map(|r| r.channel.destination).collect();
        let job = Job {
            records,
            items: total,
            caller,
            at_ms: node.now(),
            done: oneshot::channel().0,
        };
        let outcomes = self.commits.commit(node, job).await?;
        let mut woken = Vec::new();
        for ((slot, destination), out) in slots.into_iter().zip(destinations).zip(outcomes) {
            let r = match out {
                AppendOutcome::Stored(id) => {
                    node.metrics.submitted.inc();
                    woken.push(destination);
                    pb::SubmitResult {
                        outcome: Some(pb::submit_result::Outcome::RecordId(id.0.to_vec())),
                        duplicate: false,
                    }
                }
                AppendOutcome::Duplicate(id) => pb::SubmitResult {
                    outcome: Some(pb::submit_result::Outcome::RecordId(id.0.to_vec())),
                    duplicate: true,
                },
                AppendOutcome::Conflict => error(
                    Code::IdempotencyConflict,
                    "idempotency_key",
                    "was used before with different content; use a new key for a new fact",
                ),
                AppendOutcome::Invalid(e) => error(Code::InvalidPayload, "payload", e.to_string()),
            };
            results[slot] = Some(r);
        }
        woken.sort();
        woken.dedup();
        for d in woken {
            node.wake_delivery(d);
        }
        Ok(results.into_iter().map(|r| r.unwrap_or_default()).collect())
    }
}

#[tonic::async_trait]
impl pb::intake_server::Intake for IntakeService {
    #[tracing::instrument(skip_all, fields(caller))]
    async fn submit(
        &self,
        req: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let who = crate::audited::caller_name(&req);
        let caller = self.node.local_caller(&req, Role::Intake);
        let caller = self
            .node
            .audit_refusal(&who, "Intake.Submit", caller)
            .await?;
        tracing::Span::current().record("caller", caller.as_str());
        let items = req.into_inner().items;
        let max = self.node.config.limits.max_submit_batch;
        // Every answer says the limit, so clients size their batches to it.
        let limit = tonic::metadata::MetadataValue::from(max as u64);
        if items.len() > max {
            let refused = NodeError::InvalidArgument(format!(
                "a batch holds at most {max} items, got {}; split it",
                items.len()
            ));
            self.node
                .write_refusal(&who, "Intake.Submit", &refused)
                .await;
            let mut status = Status::from(refused);
            status
                .metadata_mut()
                .insert(interflow_core::MAX_SUBMIT_BATCH_HEADER, limit);
            return Err(status);
        }
        // Backpressure before anything of the call is read: refused, it stores and audits
        // nothing (as the rate limit, a full queue must not let a flood grow the audit log).
        let admitted = match self.queue.admit(items.len(), self.commits.us_per_record()) {
            Ok(a) => a,
            Err(mut status) => {
                self.node.metrics.intake_busy.inc();
                status
                    .metadata_mut()
                    .insert(interflow_core::MAX_SUBMIT_BATCH_HEADER, limit);
                return Err(status);
            }
        };
        let started = std::time::Instant::now();
        let results = self.submit_audited(caller, items).await;
        drop(admitted);
        self.node
            .metrics
            .submit_seconds
            .observe(started.elapsed().as_secs_f64());
        let results = results?;
        let mut resp = Response::new(pb::SubmitResponse { results });
        resp.metadata_mut()
            .insert(interflow_core::MAX_SUBMIT_BATCH_HEADER, limit);
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(records: usize, calls: usize) -> IntakeQueue {
        IntakeQueue::new(&crate::config::IntakeQueue {
            max_queued_records: records,
            max_waiting_calls: calls,
        })
    }

    fn hint(s: &Status) -> u64 {
        s.metadata()
            .get(interflow_core::RETRY_AFTER_MS_HEADER)
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn the_queue_takes_calls_up_to_its_bounds_and_frees_their_places_when_answered() {
        let q = queue(10, 2);
        let a = q.admit(6, 50).unwrap();
        // Over the item bound.
        let refused = q.admit(5, 50).err().unwrap();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        let b = q.admit(4, 50).unwrap();
        // Over the call bound, though one item would fit.
        assert!(q.admit(0, 50).is_err());
        drop(a);
        let c = q.admit(6, 50).unwrap();
        drop((b, c));
        assert_eq!(*q.held(), (0, 0));
    }

    #[test]
    fn the_hint_follows_the_work_ahead_within_its_bounds() {
        let q = queue(5000, 64);
        let _held = q.admit(4000, 100).unwrap();
        // 4000 items at 100 µs each: 400 ms.
        assert_eq!(hint(&q.admit(1001, 100).err().unwrap()), 400);
        assert_eq!(hint(&q.admit(1001, 1).err().unwrap()), RETRY_AFTER_MIN_MS);
        assert_eq!(
            hint(&q.admit(1001, 100_000).err().unwrap()),
            RETRY_AFTER_MAX_MS
        );
        let s = q.admit(1001, 100).err().unwrap();
        assert!(s.message().contains("send it again after 400 ms"), "{s:?}");
    }
}
