//! The inbound layer: the chain rule for verified records received from peers (duplicates,
//! gaps, broken links, equivocation kept as evidence and stopping the channel), and the
//! operator's decision to resume a stopped channel.

use std::collections::{BTreeMap, HashMap};

use interflow_core::record::{ChannelId, RecordId, VerifiedRecord};

use crate::engine::decode_record_key;
use crate::error::{Place, corrupt};
use crate::inbox::{self, Arrival};
use crate::state::ChannelState;
use crate::{Result, Store, keys};

/// What happened to one inbound record that was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Stored,
    /// The identical record was already stored.
    Duplicate,
}

/// Why an inbound record was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("seq `{seq}` leaves a gap after head `{head}`")]
    Gap { head: u64, seq: u64 },
    #[error("seq `{seq}` does not link to the record at seq `{}`", seq - 1)]
    ChainBroken { seq: u64 },
    #[error("a different record is already stored at seq `{seq}` (equivocation)")]
    Equivocation {
        seq: u64,
        stored: RecordId,
        received: RecordId,
    },
    #[error("channel is stopped: {0}")]
    ChannelStopped(String),
}

/// An equivocation proof: two different records signed for one channel position, as the
/// `SignedRecord` bytes each was signed and received with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub channel: ChannelId,
    pub seq: u64,
    pub stored: Vec<u8>,
    pub received: Vec<u8>,
}

impl Store {
    /// Applies verified records in order, in one durable write. Each gets its own outcome:
    /// an identical stored record is a duplicate; a different one at a stored seq is
    /// equivocation (kept as evidence, and the channel stops); a seq past head + 1 is a gap;
    /// a record that does not link to the head is refused.
    pub fn apply(&self, recs: &[VerifiedRecord]) -> Result<Vec<Result<ApplyOutcome, ApplyError>>> {
        self.apply_arriving(recs, None)
    }

    /// [`Store::apply`], and with an arrival, inbox positions for what is stored for it.
    pub(crate) fn apply_arriving(
        &self,
        recs: &[VerifiedRecord],
        arrival: Option<&Arrival>,
    ) -> Result<Vec<Result<ApplyOutcome, ApplyError>>> {
        let _w = self.write.lock();
        self.check_writable()?;
        let mut batch = sled::Batch::default();
        let mut states: BTreeMap<ChannelId, ChannelState> = BTreeMap::new();
        let mut staged: HashMap<(ChannelId, u64), RecordId> = HashMap::new();
        let mut arrived = Vec::new();
        let mut dirty = false;
        let mut out = Vec::with_capacity(recs.len());
        for rec in recs {
            let c = rec.channel();
            let st = match states.entry(c) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(self.channel_state(c)?),
            };
            if let Some(reason) = &st.stopped {
                out.push(Err(ApplyError::ChannelStopped(reason.clone())));
                continue;
            }
            let seq = rec.seq();
            if seq <= st.head_seq {
                let stored = match staged.get(&(c, seq)) {
                    Some(id) => *id,
                    None => self
                        .entry_at(c, seq)?
                        .ok_or_else(|| {
                            corrupt(
                                Place::Record { channel: c, seq },
                                "is missing below the channel's head",
                            )
                        })?
                        .id(),
                };
                if stored == rec.id() {
                    out.push(Ok(ApplyOutcome::Duplicate));
                } else {
                    let k = keys::evidence(c, seq, rec.id());
                    let sealed = self.db()?.vault.seal(&k, rec)?;
                    batch.insert(k, sealed);
                    tracing::warn!(channel = %c, seq, "equivocation: a second record for a stored seq; channel stopped");
                    st.stopped = Some(format!(
                        "equivocation at seq {seq}: record {} differs from stored {stored}",
                        rec.id()
                    ));
                    dirty = true;
                    out.push(Err(ApplyError::Equivocation {
                        seq,
                        stored,
                        received: rec.id(),
                    }));
                }
                continue;
            }
            if seq > st.head_seq + 1 {
                out.push(Err(ApplyError::Gap {
                    head: st.head_seq,
                    seq,
                }));
                continue;
            }
            if rec.prev_hash() != st.head {
                out.push(Err(ApplyError::ChainBroken { seq }));
                continue;
            }
            keys::stage_record(&mut batch, &self.db()?.vault, rec)?;
            // Our own records recovered from a peer bring back their idempotency, so a
            // resubmission after a disk loss is recognised.
            if let (Some(a), Some(d)) = (arrival, rec.idempotency())
                && c.origin == a.me
            {
                batch.insert(
                    keys::intake(&d),
                    crate::outbound::intake_value(rec.id(), &rec.content_hash()),
                );
            }
            st.advance(seq, rec.id());
            staged.insert((c, seq), rec.id());
            arrived.push((c, seq));
            dirty = true;
            out.push(Ok(ApplyOutcome::Stored));
        }
        if dirty {
            if let Some(arrival) = arrival {
                inbox::stage(&mut batch, self.inbox_head()? + 1, arrived, arrival);
            }
            for (c, st) in &states {
                batch.insert(keys::channel(*c), st.encode());
            }
            self.commit(batch)?;
            self.publish_heads(&states);
        }
        Ok(out)
    }

    /// Equivocation evidence kept for a channel.
    pub fn evidence(&self, c: ChannelId) -> Result<Vec<Evidence>> {
        let mut out = Vec::new();
        let mut prefix = vec![keys::EVIDENCE];
        prefix.extend_from_slice(&keys::channel_bytes(c));
        let db = self.db()?;
        for kv in db.scan_prefix(prefix) {
            let (k, received) = kv?;
            let (_, seq) = decode_record_key(k.get(..21).unwrap_or_default())?;
            let at = || Place::Evidence { channel: c, seq };
            // A stored record erased at the end of its retention takes that half of the proof.
            let stored_key = keys::record(c, seq);
            let stored = db
                .get(&stored_key)?
                .ok_or_else(|| corrupt(at(), "has no stored record beside it"))?;
            if crate::retention::is_stub(&stored) {
                continue;
            }
            let (Some(stored), Some(received)) = (
                db.vault.unseal(at(), &stored_key, &stored)?,
                db.vault.unseal(at(), &k, &received)?,
            ) else {
                continue;
            };
            out.push(Evidence {
                channel: c,
                seq,
                stored,
                received,
            });
        }
        Ok(out)
    }

    /// Lets a channel stopped by equivocation accept records again (an operator's decision).
    pub fn clear_stop(&self, c: ChannelId) -> Result<()> {
        let _w = self.write.lock();
        self.check_writable()?;
        let mut st = self.channel_state(c)?;
        st.stopped = None;
        let mut batch = sled::Batch::default();
        batch.insert(keys::channel(c), st.encode());
        self.commit(batch)
    }
}
