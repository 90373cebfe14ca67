//! The outbound layer: sealing submissions into this node's channels (idempotency keys, next
//! seq, chain link, one durable batch), delivery receipts that advance the acknowledged seq,
//! the delivery advice, and what is pending per outbound channel.

use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::SigningKey;
use interflow_core::RegionCode;
use interflow_core::idempotency::IdempotencyDigest;
use interflow_core::record::{ChannelId, NewRecord, RecordError, RecordId};
use interflow_core::statement::Receipt;

use crate::engine::id_at;
use crate::error::{Place, StoreError, corrupt};
use crate::state::{ChannelState, DeliveryState, PendingChannel};
use crate::{Result, Store, keys};

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

impl Store {
    /// Seals and appends a batch of new records in one durable write: each gets the next seq
    /// of its channel and links to the previous one. A record's idempotency digest makes a
    /// resubmission return the first record's id; a digest reused with other content
    /// conflicts; a record without one is always stored.
    pub fn append_outbound(
        &self,
        key: &SigningKey,
        items: &[NewRecord],
    ) -> Result<Vec<AppendOutcome>> {
        let _w = self.write.lock();
        self.check_writable()?;
        let mut batch = sled::Batch::default();
        let mut states: BTreeMap<ChannelId, ChannelState> = BTreeMap::new();
        let mut seen: HashMap<IdempotencyDigest, (RecordId, [u8; 32])> = HashMap::new();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
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
            let st = match states.entry(c) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(self.channel_state(c)?),
            };
            let rec = match item.seal(st.head_seq + 1, st.head, key) {
                Ok(r) => r,
                Err(e) => {
                    out.push(AppendOutcome::Invalid(e));
                    continue;
                }
            };
            keys::stage_record(&mut batch, &self.db()?.vault, &rec)?;
            st.advance(rec.seq(), rec.id());
            if let Some(d) = item.idempotency {
                batch.insert(keys::intake(&d), intake_value(rec.id(), &hash));
                seen.insert(d, (rec.id(), hash));
            }
            out.push(AppendOutcome::Stored(rec.id()));
        }
        if states.is_empty() {
            return Ok(out);
        }
        for (c, st) in &states {
            batch.insert(keys::channel(*c), st.encode());
        }
        self.commit(batch)?;
        self.publish_heads(&states);
        Ok(out)
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
