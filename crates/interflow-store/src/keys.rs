//! Key construction and parsing for the single sled tree; the layout table is in the crate
//! root. Keys hold no personal data beyond the subject ref, a pseudonym.

use interflow_core::RegionCode;
use interflow_core::idempotency::IdempotencyDigest;
use interflow_core::payload::Kind;
use interflow_core::record::{ChannelId, DecodedRecord, RecordId};

use crate::seal::Vault;

pub const RECORD: u8 = b'r';
pub const ID: u8 = b'i';
pub const CHANNEL: u8 = b'c';
pub const DELIVERY: u8 = b'd';
pub const SUBJECT: u8 = b's';
/// Schema 2 before idempotency digests: raw keys, converted at node start.
pub const INTAKE_LEGACY: u8 = b'k';
pub const INTAKE: u8 = b'j';
pub const EVIDENCE: u8 = b'e';
pub const RECEIPT: u8 = b'x';
pub const HEADS_ACK: u8 = b'h';
pub const CHECKPOINT: u8 = b'v';
pub const RUN: u8 = b'p';
pub const AUDIT: u8 = b'a';
pub const INBOX: u8 = b'n';
pub const CURSOR: u8 = b'u';
pub const AGREEMENT: u8 = b'g';
pub const TERMINATION: u8 = b't';

pub const META_SCHEMA: &[u8] = b"mschema";
pub const META_AUDIT_HEAD: &[u8] = b"maudit_head";
/// Present once records received before the inbox existed were indexed into it.
pub const META_INBOX_INDEXED: &[u8] = b"minbox_indexed";

pub type Location = [u8; 20];

pub fn channel_bytes(c: ChannelId) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..6].copy_from_slice(c.origin.as_bytes());
    out[6..].copy_from_slice(c.destination.as_bytes());
    out
}

pub fn parse_channel(b: &[u8]) -> Option<ChannelId> {
    if b.len() != 12 {
        return None;
    }
    let o: RegionCode = std::str::from_utf8(&b[..6]).ok()?.parse().ok()?;
    let d: RegionCode = std::str::from_utf8(&b[6..]).ok()?.parse().ok()?;
    Some(ChannelId::new(o, d))
}

fn with_prefix(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

pub fn location(c: ChannelId, seq: u64) -> Location {
    let mut l = [0u8; 20];
    l[..12].copy_from_slice(&channel_bytes(c));
    l[12..].copy_from_slice(&seq.to_be_bytes());
    l
}

pub fn parse_location(b: &[u8]) -> Option<(ChannelId, u64)> {
    if b.len() != 20 {
        return None;
    }
    let seq = u64::from_be_bytes(b[12..].try_into().ok()?);
    Some((parse_channel(&b[..12])?, seq))
}

pub fn record(c: ChannelId, seq: u64) -> Vec<u8> {
    with_prefix(RECORD, &[&location(c, seq)])
}

pub fn records_of(c: ChannelId) -> Vec<u8> {
    with_prefix(RECORD, &[&channel_bytes(c)])
}

pub fn id(id: RecordId) -> Vec<u8> {
    with_prefix(ID, &[id.as_bytes()])
}

pub fn channel(c: ChannelId) -> Vec<u8> {
    with_prefix(CHANNEL, &[&channel_bytes(c)])
}

pub fn delivery(c: ChannelId) -> Vec<u8> {
    with_prefix(DELIVERY, &[&channel_bytes(c)])
}

pub fn kind_byte(k: Kind) -> u8 {
    match k {
        Kind::Pregnancy => 1,
        Kind::Contraception => 2,
        // Residence notices (schema 2 still: a v2 store holds none, so nothing to migrate).
        Kind::Residence => 3,
    }
}

/// Days since the epoch, sign-flipped so that big-endian bytes sort in date order.
pub fn day_bytes(days: i32) -> [u8; 4] {
    ((days as u32) ^ 0x8000_0000).to_be_bytes()
}

pub fn subject(subject: &[u8; 32], kind: Kind, days: i32, rid: RecordId) -> Vec<u8> {
    with_prefix(
        SUBJECT,
        &[
            subject,
            &[kind_byte(kind)],
            &day_bytes(days),
            rid.as_bytes(),
        ],
    )
}

pub fn subject_prefix(subject: &[u8; 32]) -> Vec<u8> {
    with_prefix(SUBJECT, &[subject])
}

pub fn intake(digest: &IdempotencyDigest) -> Vec<u8> {
    with_prefix(INTAKE, &[&digest.0])
}

pub fn evidence(c: ChannelId, seq: u64, rid: RecordId) -> Vec<u8> {
    with_prefix(EVIDENCE, &[&location(c, seq), rid.as_bytes()])
}

pub fn receipt(c: ChannelId) -> Vec<u8> {
    with_prefix(RECEIPT, &[&channel_bytes(c)])
}

pub fn heads_ack(c: ChannelId) -> Vec<u8> {
    with_prefix(HEADS_ACK, &[&channel_bytes(c)])
}

pub fn checkpoint(peer: RegionCode) -> Vec<u8> {
    with_prefix(CHECKPOINT, &[peer.as_bytes()])
}

pub fn agreement(id: &str) -> Vec<u8> {
    with_prefix(AGREEMENT, &[id.as_bytes()])
}

/// Agreement ids are ASCII tokens without a fixed length; the region (6 digits) ends the key.
pub fn termination(agreement_id: &str, by: RegionCode) -> Vec<u8> {
    with_prefix(TERMINATION, &[agreement_id.as_bytes(), by.as_bytes()])
}

pub fn run(id: u64) -> Vec<u8> {
    with_prefix(RUN, &[&id.to_be_bytes()])
}

pub fn inbox(position: u64) -> Vec<u8> {
    with_prefix(INBOX, &[&position.to_be_bytes()])
}

pub fn cursor(consumer: &str) -> Vec<u8> {
    with_prefix(CURSOR, &[consumer.as_bytes()])
}

pub fn audit(index: u64) -> Vec<u8> {
    with_prefix(AUDIT, &[&index.to_be_bytes()])
}

/// The subject index key of a record (the subject ref blinded by the vault).
pub(crate) fn subject_of(vault: &Vault, rec: &DecodedRecord) -> Vec<u8> {
    let days = rec
        .payload()
        .observed_on()
        .map(|d| (d - chrono::NaiveDate::default()).num_days() as i32)
        .unwrap_or(i32::MIN);
    subject(
        &vault.blind_subject(rec.subject().as_bytes()),
        rec.kind(),
        days,
        rec.id(),
    )
}

/// Puts a record, sealed, and its two index entries into `batch`.
pub(crate) fn stage_record(
    batch: &mut sled::Batch,
    vault: &Vault,
    rec: &DecodedRecord,
) -> crate::Result<()> {
    let c = rec.channel();
    let loc = location(c, rec.seq());
    let k = record(c, rec.seq());
    let sealed = vault.seal(&k, rec)?;
    batch.insert(k, sealed);
    batch.insert(id(rec.id()), loc.to_vec());
    batch.insert(subject_of(vault, rec), loc.to_vec());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_bytes_sort_in_date_order() {
        let days = [-40_000, -1, 0, 1, 20_000];
        for w in days.windows(2) {
            assert!(day_bytes(w[0]) < day_bytes(w[1]));
        }
    }

    #[test]
    fn locations_round_trip() {
        let c = ChannelId::new("310115".parse().unwrap(), "110105".parse().unwrap());
        assert_eq!(parse_location(&location(c, 42)), Some((c, 42)));
    }
}
