//! The inbox: inbound records in arrival order, for the receiving bureau's own systems. Each
//! record stored for this node gets the next position (1, 2, ...) in the same durable batch
//! that stores it, so a position never moves and never names a record that is not there.
//! Named consumers keep a durable cursor (the last position they acknowledged); delivery is
//! at-least-once.
//!
//! Positions are kept in runs: one entry for consecutive positions that hold consecutive seqs
//! of one channel, as a delivered batch arrives (schema 4). A key per record cost the receiver
//! one more sled insert per record, about 8 % of the end-to-end rate and 400 bytes of sled
//! file per record (`interflow bench`). An entry of schema 3 and before is a run of one.
//!
//! Records received before the inbox existed are indexed once, in channel order, by
//! [`Store::index_inbox`]. Erased records keep their position and read back as stubs.

use interflow_core::RegionCode;
use interflow_core::record::{ChannelId, VerifiedRecord};
use interflow_core::time::UnixMillis;

use crate::engine::decode_record_key;
use crate::error::{Place, corrupt};
use crate::retention::Stored;
use crate::{Result, Store, keys};

/// Where inbound records are being stored: this node, and the time they arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub me: RegionCode,
    pub at_ms: UnixMillis,
}

/// One inbox entry: its position, when it arrived, and what is stored there now.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxEntry {
    pub position: u64,
    pub arrived_at_ms: UnixMillis,
    pub stored: Stored,
}

/// A consumer's durable cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub consumer: String,
    /// The last position acknowledged (0: none).
    pub position: u64,
    pub acked_at_ms: UnixMillis,
}

/// What one read of the inbox found.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxPage {
    pub entries: Vec<InboxEntry>,
    /// The last position looked at (past the last entry when a filter skipped some).
    pub scanned_to: u64,
}

/// The rule for a consumer name, said where a name is refused.
pub const CONSUMER_RULE: &str = "1 to 64 characters from A-Z, a-z, 0-9, `.`, `_` and `-`";

/// Whether `name` is a valid consumer name.
pub fn valid_consumer(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One inbox entry as stored: `len` positions from the key's, holding seqs `seq..seq + len`
/// of channel `c`, all arrived at `at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    c: ChannelId,
    seq: u64,
    at_ms: UnixMillis,
    pub(crate) len: u32,
}

/// A stored entry: its first position and its run. A run that would end past the last
/// position or seq is damaged data, refused here so no caller's sum overflows.
fn decode_stored(k: &[u8], v: &[u8]) -> Result<(u64, Run)> {
    let (first, run) = (position_of(k)?, decode_run(v)?);
    let len = u64::from(run.len);
    if first.checked_add(len).is_none() || run.seq.checked_add(len).is_none() {
        return Err(corrupt(Place::Inbox, "run ends past the last position"));
    }
    Ok((first, run))
}

impl Run {
    /// The position after the run's last one, for a run stored at `first`.
    pub(crate) fn end(&self, first: u64) -> u64 {
        first + u64::from(self.len)
    }

    /// The channel position at `offset` positions into the run.
    pub(crate) fn at(&self, offset: u64) -> (ChannelId, u64) {
        (self.c, self.seq + offset)
    }
}

/// A run's value: location(20) arrived-at(8) length(4); schema 3 wrote runs of one without
/// the length.
fn encode_run(r: &Run) -> Vec<u8> {
    let mut v = keys::location(r.c, r.seq).to_vec();
    v.extend_from_slice(&r.at_ms.to_be_bytes());
    v.extend_from_slice(&r.len.to_be_bytes());
    v
}

fn decode_run(v: &[u8]) -> Result<Run> {
    let bad = || corrupt(Place::Inbox, "entry is not a position, a time and a length");
    let (loc, rest) = v.split_at_checked(20).ok_or_else(bad)?;
    let (c, seq) = keys::parse_location(loc).ok_or_else(bad)?;
    let (at, len) = match rest.len() {
        8 => (rest, 1),
        12 => {
            let len = u32::from_be_bytes(rest[8..].try_into().map_err(|_| bad())?);
            (&rest[..8], len)
        }
        _ => return Err(bad()),
    };
    if len == 0 {
        return Err(bad());
    }
    let at: [u8; 8] = at.try_into().map_err(|_| bad())?;
    Ok(Run {
        c,
        seq,
        at_ms: i64::from_be_bytes(at),
        len,
    })
}

fn position_of(k: &[u8]) -> Result<u64> {
    k.get(1..)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt(Place::Inbox, "key is not a position"))
}

/// Stages inbox entries for the stored records destined to `arrival.me`, from `next` on, one
/// run for each stretch of consecutive seqs of a channel; returns the position after the last
/// one staged.
pub(crate) fn stage(
    batch: &mut sled::Batch,
    next: u64,
    stored: impl IntoIterator<Item = (ChannelId, u64)>,
    arrival: &Arrival,
) -> u64 {
    let mut position = next;
    let mut open: Option<(u64, Run)> = None;
    let close = |batch: &mut sled::Batch, open: Option<(u64, Run)>| {
        if let Some((first, run)) = open {
            batch.insert(keys::inbox(first), encode_run(&run));
        }
    };
    for (c, seq) in stored {
        if c.destination != arrival.me {
            continue;
        }
        match &mut open {
            Some((_, run))
                if run.c == c && run.seq + u64::from(run.len) == seq && run.len < u32::MAX =>
            {
                run.len += 1;
            }
            _ => {
                let run = Run {
                    c,
                    seq,
                    at_ms: arrival.at_ms,
                    len: 1,
                };
                close(batch, open.replace((position, run)));
            }
        }
        position += 1;
    }
    close(batch, open);
    position
}

impl Store {
    /// The newest inbox position (0 when empty).
    pub fn inbox_head(&self) -> Result<u64> {
        match self.db()?.scan_prefix([keys::INBOX]).next_back() {
            Some(kv) => {
                let (k, v) = kv?;
                let (first, run) = decode_stored(&k, &v)?;
                Ok(run.end(first) - 1)
            }
            None => Ok(0),
        }
    }

    /// The run that holds `position`, with its first position.
    fn run_holding(&self, position: u64) -> Result<Option<(u64, Run)>> {
        let db = self.db()?;
        let Some(kv) = db.range(..=keys::inbox(position)).next_back() else {
            return Ok(None);
        };
        let (k, v) = kv?;
        if k.first() != Some(&keys::INBOX) {
            return Ok(None);
        }
        let (first, run) = decode_stored(&k, &v)?;
        Ok((position < run.end(first)).then_some((first, run)))
    }

    /// Inbox runs from the one holding `position` on (or the first after it), in order.
    pub(crate) fn runs_from(
        &self,
        position: u64,
    ) -> Result<impl Iterator<Item = Result<(u64, Run)>> + use<>> {
        let start = match self.run_holding(position)? {
            Some((first, _)) => first,
            None => position,
        };
        let runs = self
            .db()?
            .range(keys::inbox(start)..)
            .take_while(|kv| {
                kv.as_ref()
                    .map_or(true, |(k, _)| k.first() == Some(&keys::INBOX))
            })
            .map(|kv| {
                let (k, v) = kv?;
                decode_stored(&k, &v)
            });
        Ok(runs)
    }

    /// Applies records received from a peer like [`Store::apply`], and gives every record
    /// stored for `arrival.me` its inbox position in the same durable batch.
    pub fn receive(
        &self,
        recs: &[VerifiedRecord],
        arrival: Arrival,
    ) -> Result<Vec<std::result::Result<crate::ApplyOutcome, crate::ApplyError>>> {
        self.apply_arriving(recs, Some(&arrival))
    }

    /// Indexes, once, the records received for `me` before the inbox existed (in channel
    /// order, arriving "at" their issue time). Returns how many were indexed.
    pub fn index_inbox(&self, me: RegionCode) -> Result<u64> {
        let _w = self.write.lock();
        if self.db()?.get(keys::META_INBOX_INDEXED)?.is_some() {
            return Ok(0);
        }
        self.check_writable()?;
        let mut batch = sled::Batch::default();
        let mut next = self.inbox_head()? + 1;
        let first = next;
        for (c, _) in self.channels()? {
            if c.destination != me {
                continue;
            }
            for kv in self.db()?.scan_prefix(keys::records_of(c)) {
                let (k, v) = kv?;
                let (_, seq) = decode_record_key(&k)?;
                let (_, at) = crate::retention::entry_facts(c, seq, &v)?;
                next = stage(&mut batch, next, [(c, seq)], &Arrival { me, at_ms: at });
            }
        }
        batch.insert(keys::META_INBOX_INDEXED, &[1u8]);
        self.commit(batch)?;
        Ok(next - first)
    }

    /// Up to `max` entries after `after` that `keep` accepts, looking at no more than
    /// `scan` positions.
    pub fn inbox_after(
        &self,
        after: u64,
        max: usize,
        scan: usize,
        keep: &dyn Fn(&Stored) -> bool,
    ) -> Result<InboxPage> {
        let mut page = InboxPage {
            entries: Vec::new(),
            scanned_to: after,
        };
        let mut scanned = 0usize;
        'runs: for run in self.runs_from(after.saturating_add(1))? {
            let (first, run) = run?;
            // The first run may begin at or before `after`.
            for offset in (after + 1).saturating_sub(first)..u64::from(run.len) {
                let position = first + offset;
                if scanned >= scan || page.entries.len() >= max {
                    break 'runs;
                }
                scanned += 1;
                let (c, seq) = run.at(offset);
                let stored = self
                    .entry_at(c, seq)?
                    .ok_or_else(|| corrupt(Place::Inbox, "points at a missing record"))?;
                page.scanned_to = position;
                if keep(&stored) {
                    page.entries.push(InboxEntry {
                        position,
                        arrived_at_ms: run.at_ms,
                        stored,
                    });
                }
            }
        }
        Ok(page)
    }

    /// The entry at one position.
    pub fn inbox_at(&self, position: u64) -> Result<Option<InboxEntry>> {
        let Some((first, run)) = self.run_holding(position)? else {
            return Ok(None);
        };
        let (c, seq) = run.at(position - first);
        let arrived_at_ms = run.at_ms;
        let stored = self
            .entry_at(c, seq)?
            .ok_or_else(|| corrupt(Place::Inbox, "points at a missing record"))?;
        Ok(Some(InboxEntry {
            position,
            arrived_at_ms,
            stored,
        }))
    }

    /// A consumer's cursor (position 0 when it never acknowledged).
    pub fn cursor(&self, consumer: &str) -> Result<Cursor> {
        let v = self.db()?.get(keys::cursor(consumer))?;
        decode_cursor(consumer, v.as_deref())
    }

    /// Moves a consumer's cursor forward to `position` (never back), durably. Returns the
    /// cursor after the call.
    pub fn ack(&self, consumer: &str, position: u64, at_ms: UnixMillis) -> Result<Cursor> {
        let _w = self.write.lock();
        self.check_writable()?;
        let current = self.cursor(consumer)?;
        if position <= current.position {
            return Ok(current);
        }
        let mut v = position.to_be_bytes().to_vec();
        v.extend_from_slice(&at_ms.to_be_bytes());
        let mut batch = sled::Batch::default();
        batch.insert(keys::cursor(consumer), v);
        self.commit(batch)?;
        Ok(Cursor {
            consumer: consumer.to_owned(),
            position,
            acked_at_ms: at_ms,
        })
    }

    /// Every consumer's cursor, by name.
    pub fn cursors(&self) -> Result<Vec<Cursor>> {
        let mut out = Vec::new();
        for kv in self.db()?.scan_prefix([keys::CURSOR]) {
            let (k, v) = kv?;
            let name = std::str::from_utf8(k.get(1..).unwrap_or_default())
                .map_err(|_| corrupt(Place::Inbox, "consumer name is not UTF-8"))?;
            out.push(decode_cursor(name, Some(&v))?);
        }
        Ok(out)
    }
}

fn decode_cursor(consumer: &str, v: Option<&[u8]>) -> Result<Cursor> {
    let (position, acked_at_ms) = match v {
        None => (0, 0),
        Some(v) => {
            let (p, t) = v
                .split_first_chunk::<8>()
                .and_then(|(p, t)| Some((*p, <[u8; 8]>::try_from(t).ok()?)))
                .ok_or_else(|| corrupt(Place::Inbox, "cursor is not 16 bytes"))?;
            (u64::from_be_bytes(p), i64::from_be_bytes(t))
        }
    };
    Ok(Cursor {
        consumer: consumer.to_owned(),
        position,
        acked_at_ms,
    })
}
