//! The outbound layer: sealing submissions into this node's channels (idempotency keys, next
//! seq, chain link, one durable batch), delivery receipts that advance the acknowledged seq,
//! the delivery advice, and what is pending per outbound channel.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};

use interflow_core::RegionCode;
use interflow_core::idempotency::IdempotencyDigest;
use interflow_core::record::{
    ChannelId, NewRecord, RecordError, RecordId, Sealer, UnsignedRecord, VerifiedRecord,
};
use interflow_core::statement::Receipt;
use interflow_core::time::UnixMillis;

use crate::engine::id_at;
use crate::error::{Place, StoreError, corrupt};
use crate::state::{DeliveryState, PendingChannel};
use crate::{AuditNote, Result, Store, audit, keys};

/// What a peer's signed head statement did to an outbound channel's acknowledged seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadsAck {
    Advanced,
    /// The statement acknowledges no more than is acknowledged already.
    NothingNew,
    /// This node holds no record, or another one, at the statement's head: nothing moves.
    Mismatch,
}

/// What happened to one submission.
#[derive(Debug, Clone, PartialEq)]
pub enum AppendOutcome {
    Stored(RecordId),
    /// The key was seen before with the same content; nothing new was stored.
    Duplicate(RecordId),
    /// The key was seen before with different content.
    Conflict,
    /// The record could not be sealed (a bug in the caller's validation).
    Invalid(RecordError),
}

/// The value of an idempotency entry: the record it named and its content hash.
pub(crate) fn intake_value(id: RecordId, content_hash: &[u8; 32]) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(id.as_bytes());
    v.extend_from_slice(content_hash);
    v
}

/// One caller's share of a group commit: its records, and the audit entry that reports them
/// (written in the same durable batch, so a Submit costs no second fsync).
pub struct OutboundGroup<'a> {
    pub items: &'a [NewRecord],
    pub audit: Option<GroupAudit>,
}

/// Makes a group's audit note from what happened to its items.
pub type NoteFn = Box<dyn FnOnce(&[AppendOutcome]) -> AuditNote + Send>;

/// The audit entry of one group; its note is made from what happened to the group's items.
pub struct GroupAudit {
    pub at_ms: UnixMillis,
    pub actor: String,
    pub action: String,
    pub note: NoteFn,
}

impl std::fmt::Debug for OutboundGroup<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundGroup")
            .field("items", &self.items.len())
            .field("audit", &self.audit)
            .finish()
    }
}

impl std::fmt::Debug for GroupAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupAudit")
            .field("actor", &self.actor)
            .field("action", &self.action)
            .finish_non_exhaustive()
    }
}

/// A placed record and the idempotency entry (digest, content hash) it writes.
type Placed<R> = (R, Option<(IdempotencyDigest, [u8; 32])>);

/// Records placed in seq order, and the heads their channels were placed after.
struct Plan {
    outcomes: Vec<Vec<AppendOutcome>>,
    placed: Vec<Placed<UnsignedRecord>>,
    from: BTreeMap<ChannelId, (u64, RecordId)>,
}

/// Below this many records one thread signs them: starting threads costs more.
const PARALLEL_SIGN_MIN: usize = 64;

/// Signs placed records on every core, keeping their order.
fn sign_all(key: Sealer<'_>, placed: Vec<Placed<UnsignedRecord>>) -> Vec<Placed<VerifiedRecord>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || placed.len() < PARALLEL_SIGN_MIN {
        return placed.into_iter().map(|(r, i)| (r.sign(key), i)).collect();
    }
    let chunk = placed.len().div_ceil(threads);
    let mut placed = placed.into_iter();
    let chunks: Vec<Vec<_>> = std::iter::from_fn(|| {
        let c: Vec<_> = placed.by_ref().take(chunk).collect();
        (!c.is_empty()).then_some(c)
    })
    .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    c.into_iter()
                        .map(|(r, i)| (r.sign(key), i))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            // A signing thread only panics on a bug; carry the panic to the caller.
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

impl Store {
    /// Seals and appends a batch of new records in one durable write: each gets the next seq
    /// of its channel and links to the previous one. A record's idempotency digest makes a
    /// resubmission return the first record's id; a digest reused with other content
    /// conflicts; a record without one is always stored.
    pub fn append_outbound<'k>(
        &self,
        key: impl Into<Sealer<'k>>,
        items: &[NewRecord],
    ) -> Result<Vec<AppendOutcome>> {
        let group = OutboundGroup { items, audit: None };
        let mut out = self.append_outbound_groups(key, vec![group])?;
        Ok(out.pop().unwrap_or_default())
    }

    /// The group commit: appends the records of several callers' groups, in order, and their
    /// audit entries in one durable write (one flush and fsync for all), as
    /// [`Self::append_outbound`] does for one. Records are placed (seq, link, id) in order
    /// first, then signed on every core without the writer lock, so receipts and inbound
    /// records are not held up by signing; only the commit takes the lock. A failed commit
    /// fails every group. One group commit runs at a time. The records name `key`'s key id.
    pub fn append_outbound_groups<'k>(
        &self,
        key: impl Into<Sealer<'k>>,
        groups: Vec<OutboundGroup<'_>>,
    ) -> Result<Vec<Vec<AppendOutcome>>> {
        let key = key.into();
        let _seq = self.sequencer.lock();
        self.check_writable()?;
        let mut plan = self.plan_outbound(&groups, key)?;
        let mut signed = sign_all(key, std::mem::take(&mut plan.placed));
        let w = self.write.lock();
        self.check_writable()?;
        let mut states = BTreeMap::new();
        for (c, from) in &plan.from {
            let st = self.channel_state(*c)?;
            if (st.head_seq, st.head) != *from {
                states.clear();
                break;
            }
            states.insert(*c, st);
        }
        if states.len() != plan.from.len() {
            // Another writer (this node's own feed recovered from a peer) moved a channel
            // while the records were signed: place them again, now under the lock.
            plan = self.plan_outbound(&groups, key)?;
            signed = sign_all(key, std::mem::take(&mut plan.placed));
            for c in plan.from.keys() {
                states.insert(*c, self.channel_state(*c)?);
            }
        }
        let mut batch = sled::Batch::default();
        let vault = &self.db()?.vault;
        for (rec, idem) in &signed {
            keys::stage_record(&mut batch, vault, rec)?;
            if let Some(st) = states.get_mut(&rec.channel()) {
                st.advance(rec.seq(), rec.id());
            }
            if let Some((d, hash)) = idem {
                batch.insert(keys::intake(d), intake_value(rec.id(), hash));
            }
        }
        for (c, st) in &states {
            batch.insert(keys::channel(*c), st.encode());
        }
        let mut audit_head = None;
        for (g, outcomes) in groups.into_iter().zip(&plan.outcomes) {
            if let Some(a) = g.audit {
                let head = match audit_head {
                    Some(h) => Some(h),
                    None => self.stored_audit_head()?,
                };
                let note = (a.note)(outcomes);
                audit_head = Some(audit::stage_audit(
                    &mut batch,
                    head,
                    a.at_ms,
                    &a.actor,
                    &a.action,
                    vec![],
                    note,
                ));
            }
        }
        if states.is_empty() && audit_head.is_none() {
            return Ok(plan.outcomes);
        }
        self.commit(batch)?;
        self.publish_heads(&states);
        if audit_head.is_some() {
            // Only a durable head is ever signed to a peer.
            *self.audit_head.write() = audit_head;
        }
        // Fairness: hand the writer lock straight to the writer that waited longest during
        // this commit (a receipt, inbound records), with no barging by a later caller. With
        // the sequencer (one group at a time, signed before it takes the writer), a delivery
        // write waits behind at most one group commit.
        parking_lot::MutexGuard::unlock_fair(w);
        Ok(plan.outcomes)
    }

    /// Places every new record of `groups` in order: idempotency first (a key seen before,
    /// in the store or earlier in these groups, gives its record), then the next seq of its
    /// channel, linked to the one before, naming `key`'s id and algorithm. Reads only; signs
    /// nothing.
    fn plan_outbound(&self, groups: &[OutboundGroup<'_>], key: Sealer<'_>) -> Result<Plan> {
        let mut heads: BTreeMap<ChannelId, (u64, RecordId)> = BTreeMap::new();
        let mut from = BTreeMap::new();
        let mut seen: HashMap<IdempotencyDigest, (RecordId, [u8; 32])> = HashMap::new();
        let mut placed = Vec::new();
        let mut outcomes = Vec::with_capacity(groups.len());
        for g in groups {
            let mut out = Vec::with_capacity(g.items.len());
            for item in g.items {
                let hash = item.content_hash();
                let prior = match item.idempotency {
                    None => None,
                    Some(d) => match seen.get(&d) {
                        Some(p) => Some(*p),
                        None => self.intake_entry(&d)?,
                    },
                };
                if let Some((rid, h)) = prior {
                    out.push(if h == hash {
                        AppendOutcome::Duplicate(rid)
                    } else {
                        AppendOutcome::Conflict
                    });
                    continue;
                }
                let c = item.channel;
                let head = match heads.entry(c) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        let st = self.channel_state(c)?;
                        from.insert(c, (st.head_seq, st.head));
                        e.insert((st.head_seq, st.head))
                    }
                };
                let rec = match item.place(head.0 + 1, head.1, key) {
                    Ok(r) => r,
                    Err(e) => {
                        out.push(AppendOutcome::Invalid(e));
                        continue;
                    }
                };
                *head = (head.0 + 1, rec.id());
                let idem = item.idempotency.map(|d| (d, hash));
                if let Some(d) = item.idempotency {
                    seen.insert(d, (rec.id(), hash));
                }
                out.push(AppendOutcome::Stored(rec.id()));
                placed.push((rec, idem));
            }
            outcomes.push(out);
        }
        Ok(Plan {
            outcomes,
            placed,
            from,
        })
    }

    /// The record first submitted under idempotency digest `digest`, if any.
    pub fn submitted_under(&self, digest: &IdempotencyDigest) -> Result<Option<RecordId>> {
        Ok(self.intake_entry(digest)?.map(|(id, _)| id))
    }

    fn intake_entry(&self, digest: &IdempotencyDigest) -> Result<Option<(RecordId, [u8; 32])>> {
        let Some(v) = self.db()?.get(keys::intake(digest))? else {
            return Ok(None);
        };
        if v.len() != 64 {
            return Err(corrupt(Place::Intake, "entry is not 64 bytes"));
        }
        let rid = id_at(Place::Intake, &v[..32])?;
        let mut h = [0u8; 32];
        h.copy_from_slice(&v[32..]);
        Ok(Some((rid, h)))
    }

    /// Replaces idempotency keys stored in the clear by an earlier build with their digests
    /// (`digest` gives `None` for a key that is not valid, which is dropped). Returns how many
    /// were converted; the keys no longer exist in the store afterwards.
    pub fn digest_legacy_intake_keys(
        &self,
        digest: &dyn Fn(&str) -> Option<IdempotencyDigest>,
    ) -> Result<u64> {
        let _seq = self.sequencer.lock();
        let _w = self.write.lock();
        let mut converted = 0u64;
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0usize;
            for kv in self.db()?.scan_prefix([keys::INTAKE_LEGACY]).take(4096) {
                let (k, v) = kv?;
                if let Some(d) = std::str::from_utf8(&k[1..]).ok().and_then(digest) {
                    batch.insert(keys::intake(&d), v);
                }
                batch.remove(k);
                n += 1;
            }
            if n == 0 {
                return Ok(converted);
            }
            self.check_writable()?;
            self.commit(batch)?;
            converted += n as u64;
        }
    }

    /// Records a verified delivery receipt (`signed` are its bytes as received) for an
    /// outbound channel: the acked seq only moves forward, and the latest receipt is kept as
    /// proof of delivery. `Ok(false)` when it acknowledges nothing new.
    pub fn record_receipt(&self, receipt: &Receipt, signed: &[u8]) -> Result<bool> {
        let _w = self.write.lock();
        self.check_writable()?;
        let c = receipt.channel;
        let mut st = self.channel_state(c)?;
        if receipt.acked_seq <= st.acked_seq {
            return Ok(false);
        }
        let stored = self.entry_at(c, receipt.acked_seq)?;
        if stored.map(|r| r.id()) != Some(receipt.head_hash) {
            return Err(StoreError::ReceiptMismatch {
                channel: c,
                seq: receipt.acked_seq,
            });
        }
        st.acked_seq = receipt.acked_seq;
        let mut batch = sled::Batch::default();
        batch.insert(keys::channel(c), st.encode());
        batch.insert(keys::receipt(c), signed);
        self.commit(batch)?;
        Ok(true)
    }

    /// Advances an outbound channel's acknowledged seq to `seq` on the strength of the
    /// destination's verified signed head statement (`signed`, as received), as reconciliation
    /// finds it when delivery is off: only forward, and only when this node's record at `seq`
    /// is `hash`, the one the statement names. The statement is kept as the proof, as a
    /// receipt is.
    pub fn ack_by_heads(
        &self,
        c: ChannelId,
        seq: u64,
        hash: RecordId,
        signed: &[u8],
    ) -> Result<HeadsAck> {
        let _w = self.write.lock();
        self.check_writable()?;
        let mut st = self.channel_state(c)?;
        if seq <= st.acked_seq {
            return Ok(HeadsAck::NothingNew);
        }
        if self.entry_at(c, seq)?.map(|r| r.id()) != Some(hash) {
            return Ok(HeadsAck::Mismatch);
        }
        st.acked_seq = seq;
        let mut batch = sled::Batch::default();
        batch.insert(keys::channel(c), st.encode());
        batch.insert(keys::heads_ack(c), signed);
        self.commit(batch)?;
        Ok(HeadsAck::Advanced)
    }

    /// The head statement that last advanced an outbound channel's acked seq, as received.
    pub fn heads_ack(&self, c: ChannelId) -> Result<Option<Vec<u8>>> {
        Ok(self.db()?.get(keys::heads_ack(c))?.map(|v| v.to_vec()))
    }

    /// The latest receipt for an outbound channel, as received.
    pub fn receipt(&self, c: ChannelId) -> Result<Option<Vec<u8>>> {
        Ok(self.db()?.get(keys::receipt(c))?.map(|v| v.to_vec()))
    }

    /// Notes a delivery attempt's outcome. Advice only: written under its own key without the
    /// writer lock or an fsync, so it never waits behind a durable commit; the next attempt
    /// rebuilds it after a crash.
    pub fn set_delivery_state(&self, c: ChannelId, st: &DeliveryState) -> Result<()> {
        self.db()?.insert(keys::delivery(c), st.encode())?;
        Ok(())
    }

    /// Per outbound channel of `me`: what the destination has not acknowledged yet.
    pub fn pending(&self, me: RegionCode) -> Result<Vec<PendingChannel>> {
        let mut out = Vec::new();
        for (c, st) in self.channels()? {
            if c.origin != me {
                continue;
            }
            let (head, _) = self.head(c);
            let pending_count = head.saturating_sub(st.acked_seq);
            let oldest = if pending_count > 0 {
                self.entry_at(c, st.acked_seq + 1)?
                    .map(|r| r.issued_at_ms())
            } else {
                None
            };
            out.push(PendingChannel {
                channel: c,
                head_seq: head,
                acked_seq: st.acked_seq,
                pending_count,
                oldest_pending_issued_at_ms: oldest,
                delivery: self.delivery_state(c)?,
            });
        }
        Ok(out)
    }
}
