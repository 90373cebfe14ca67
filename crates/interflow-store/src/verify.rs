//! Re-checking what is stored: the integrity figures on open, and `verify_log`, which walks
//! every chain, every index entry and the audit chain and reports the first inconsistency per
//! channel. Signatures are re-checked by the caller's check (the store holds no keys).

use std::collections::BTreeMap;

use interflow_core::record::{ChannelId, DecodedRecord, RecordError, RecordId};

use crate::audit::{AuditEntry, decode_head, entry_hash};
use crate::error::IntegrityProblem;
use crate::retention::{Stored, decode_entry, entry_facts};
use crate::state::{ChannelState, roll};
use crate::{Result, Store, keys};

/// One inconsistency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The channel, or `None` for the audit log and orphaned index entries.
    pub channel: Option<ChannelId>,
    pub seq: u64,
    pub problem: String,
}

/// Result of `verify_log`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub records_checked: u64,
    pub audit_entries_checked: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The check on open: the channel's last stored record is the head its durable figures name
/// (seq and id). Reads one record, so a store opens in time independent of its size; a lost or
/// damaged tail shows here, the heads anchor catches a consistent loss of records and state
/// together, and [`check_channel_integrity`] (run by `verify_log`) walks every record.
pub(crate) fn check_channel_head(
    db: &sled::Db,
    c: ChannelId,
    st: &ChannelState,
) -> std::result::Result<(), IntegrityProblem> {
    let unreadable = |e: &dyn std::fmt::Display| IntegrityProblem::Unreadable(e.to_string());
    let Some(kv) = db.scan_prefix(keys::records_of(c)).next_back() else {
        return match st.head_seq {
            0 => Ok(()),
            recorded => Err(IntegrityProblem::Head { found: 0, recorded }),
        };
    };
    let (k, v) = kv.map_err(|e| unreadable(&e))?;
    let (_, seq) = keys::parse_location(k.get(1..).unwrap_or_default())
        .ok_or_else(|| unreadable(&"bad record key"))?;
    let (id, _) = entry_facts(c, seq, &v).map_err(|e| unreadable(&e))?;
    if seq != st.head_seq {
        return Err(IntegrityProblem::Head {
            found: seq,
            recorded: st.head_seq,
        });
    }
    if id != st.head {
        return Err(IntegrityProblem::HeadRecord { seq });
    }
    Ok(())
}

/// Walks a channel's records and compares them with its stored figures.
pub(crate) fn check_channel_integrity(
    db: &sled::Db,
    c: ChannelId,
    st: &ChannelState,
) -> std::result::Result<(), IntegrityProblem> {
    let unreadable = |e: &dyn std::fmt::Display| IntegrityProblem::Unreadable(e.to_string());
    let mut count = 0u64;
    let mut rolling = [0u8; 32];
    let mut last = (0u64, RecordId::ZERO);
    for kv in db.scan_prefix(keys::records_of(c)) {
        let (k, v) = kv.map_err(|e| unreadable(&e))?;
        let (_, seq) = keys::parse_location(k.get(1..).unwrap_or_default())
            .ok_or_else(|| unreadable(&"bad record key"))?;
        count += 1;
        if seq != count {
            return Err(IntegrityProblem::SeqGap {
                found: seq,
                expected: count,
            });
        }
        let (id, _) = entry_facts(c, seq, &v).map_err(|e| unreadable(&e))?;
        rolling = roll(rolling, id);
        last = (seq, id);
    }
    if count != st.count || rolling != st.rolling {
        return Err(IntegrityProblem::Figures {
            count,
            recorded: st.count,
            rolling_matches: rolling == st.rolling,
        });
    }
    if last.0 != st.head_seq || last.1 != st.head {
        return Err(IntegrityProblem::Head {
            found: last.0,
            recorded: st.head_seq,
        });
    }
    Ok(())
}

impl Store {
    /// Re-checks every chain link, every index entry and the audit chain, and every
    /// signature with `check_signature` (the node's: the origin's key the record names in the
    /// directory, valid at its issue time; the store has no keys of its own).
    pub fn verify_log(
        &self,
        check_signature: &dyn Fn(&DecodedRecord) -> std::result::Result<(), RecordError>,
    ) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let mut first: BTreeMap<ChannelId, Problem> = BTreeMap::new();
        let mut note = |c: ChannelId, seq: u64, problem: String| {
            first.entry(c).or_insert(Problem {
                channel: Some(c),
                seq,
                problem,
            });
        };
        for (c, st) in self.channels()? {
            let mut prev = RecordId::ZERO;
            let mut expected = 1u64;
            for kv in self.db()?.scan_prefix(keys::records_of(c)) {
                let (k, v) = kv?;
                let seq = keys::parse_location(&k[1..]).map(|(_, s)| s).unwrap_or(0);
                report.records_checked += 1;
                let entry = match decode_entry(&self.db()?.vault, c, seq, &v) {
                    Ok(r) => r,
                    Err(e) => {
                        note(c, seq, e.to_string());
                        continue;
                    }
                };
                if seq != expected || entry.seq() != seq {
                    note(c, seq, format!("expected seq `{expected}`"));
                }
                if entry.prev_hash() != prev {
                    note(c, seq, "does not link to the previous record".into());
                }
                match self.db()?.get(keys::id(entry.id()))? {
                    Some(loc) if loc.as_ref() == keys::location(c, seq) => {}
                    _ => note(c, seq, "id index entry missing or wrong".into()),
                }
                prev = entry.id();
                expected = seq + 1;
                // An erased record keeps its id and link; its body and signature are gone.
                let Stored::Record(rec) = entry else {
                    continue;
                };
                if self
                    .db()?
                    .get(keys::subject_of(&self.db()?.vault, &rec))?
                    .is_none()
                {
                    note(c, seq, "subject index entry missing".into());
                }
                if let Err(e) = check_signature(&rec) {
                    note(c, seq, format!("signature does not verify: {e}"));
                }
            }
            if let Err(problem) = check_channel_integrity(&self.db()?.db, c, &st) {
                note(c, st.head_seq, problem.to_string());
            }
        }
        report.problems.extend(first.into_values());

        // Every index entry must point at a record that exists and matches.
        for kv in self.db()?.scan_prefix([keys::ID]) {
            let (k, loc) = kv?;
            let ok = keys::parse_location(&loc)
                .map(|(c, s)| {
                    self.entry_at(c, s)
                        .ok()
                        .flatten()
                        .map(|r| r.id().as_bytes() == &k[1..])
                        == Some(true)
                })
                .unwrap_or(false);
            if !ok {
                report.problems.push(Problem {
                    channel: None,
                    seq: 0,
                    problem: format!(
                        "id index entry `{}` points at no matching record",
                        hex::encode(&k[1..])
                    ),
                });
                break;
            }
        }
        for kv in self.db()?.scan_prefix([keys::SUBJECT]) {
            let (_, loc) = kv?;
            let ok = keys::parse_location(&loc)
                .and_then(|(c, s)| self.record_at(c, s).ok().flatten())
                .is_some();
            if !ok {
                report.problems.push(Problem {
                    channel: None,
                    seq: 0,
                    problem: "subject index entry points at no record".into(),
                });
                break;
            }
        }

        // Inbox positions run 1, 2, ... (in runs) and each names a stored record.
        let mut expected = 1u64;
        for run in self.runs_from(1)? {
            let missing = |position: u64| {
                (
                    position,
                    format!("inbox position `{position}` is missing or names no record"),
                )
            };
            let problem = match run {
                Err(e) => Some((expected, e.to_string())),
                Ok((first, _)) if first != expected => Some(missing(expected)),
                Ok((first, run)) => {
                    expected = run.end(first);
                    (0..u64::from(run.len))
                        .find(|&o| {
                            let (c, seq) = run.at(o);
                            !matches!(self.entry_at(c, seq), Ok(Some(_)))
                        })
                        .map(|o| missing(first + o))
                }
            };
            if let Some((seq, problem)) = problem {
                report.problems.push(Problem {
                    channel: None,
                    seq,
                    problem,
                });
                break;
            }
        }

        // The audit chain.
        let mut prev = [0u8; 32];
        let mut last = None;
        let mut broken = false;
        for (expected, kv) in (1u64..).zip(self.db()?.scan_prefix([keys::AUDIT])) {
            let (_, v) = kv?;
            report.audit_entries_checked += 1;
            let problem = match AuditEntry::decode(expected, &v) {
                Err(e) => Some(e.to_string()),
                Ok(e) if e.index != expected => {
                    Some(format!("audit entry `{expected}` is missing"))
                }
                Ok(e) if e.prev_hash != prev => Some(format!(
                    "audit entry `{}` does not link to the previous entry",
                    e.index
                )),
                Ok(_) => None,
            };
            if let Some(problem) = problem {
                report.problems.push(Problem {
                    channel: None,
                    seq: expected,
                    problem,
                });
                broken = true;
                break;
            }
            prev = entry_hash(&v);
            last = Some((expected, prev));
        }
        if let Some(head) = self.db()?.get(keys::META_AUDIT_HEAD)? {
            let matches = last.is_some() && decode_head(&head).ok() == last;
            if !matches && !broken {
                report.problems.push(Problem {
                    channel: None,
                    seq: 0,
                    problem:
                        "audit log does not end at its recorded head (entries removed from the end)"
                            .into(),
                });
            }
        }
        Ok(report)
    }
}
