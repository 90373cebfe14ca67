//! Signed statements between peers: delivery receipts (the destination's proof that it stored
//! a channel up to a seq) and head statements (a peer's signed checkpoint of its channel heads).

use prost::Message;

use crate::canonical::{CanonicalError, decode_canonical};
use crate::directory::{KeySource, SignedBy, SignedByError};
use crate::pb;
use crate::record::{ChannelId, RecordId, Sealer};
use crate::region::RegionCode;
use crate::sign::Domain;
use crate::time::UnixMillis;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    #[error("statement signature algorithm `{0}` is not supported")]
    UnsupportedAlgorithm(i32),
    #[error(transparent)]
    Body(#[from] CanonicalError),
    #[error("statement signature: {0}")]
    Signature(#[from] SignedByError),
    #[error("statement field `{field}` is invalid: {reason}")]
    BadField { field: &'static str, reason: String },
}

fn bad(field: &'static str, reason: impl Into<String>) -> StatementError {
    StatementError::BadField {
        field,
        reason: reason.into(),
    }
}

fn region(field: &'static str, s: &str) -> Result<RegionCode, StatementError> {
    s.parse()
        .map_err(|e: crate::region::RegionCodeError| bad(field, e.to_string()))
}

fn hash(field: &'static str, b: &[u8]) -> Result<RecordId, StatementError> {
    RecordId::try_from(b).map_err(|e| bad(field, e.to_string()))
}

/// A verified delivery receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub channel: ChannelId,
    pub acked_seq: u64,
    pub head_hash: RecordId,
    pub issued_at_ms: UnixMillis,
}

/// Signs a receipt as the destination of `channel`.
pub fn sign_receipt<'a>(key: impl Into<Sealer<'a>>, r: &Receipt) -> pb::SignedReceipt {
    let key = key.into();
    let body = pb::ReceiptBody {
        origin: r.channel.origin.to_string(),
        destination: r.channel.destination.to_string(),
        acked_seq: r.acked_seq,
        head_hash: r.head_hash.0.to_vec(),
        issued_at_ms: r.issued_at_ms,
    }
    .encode_to_vec();
    pb::SignedReceipt {
        alg: key.alg(),
        signature: key.sign(Domain::Receipt, &body),
        body,
        key_id: key.key_id,
    }
}

/// Verifies a receipt under the destination's key it names, valid at its issue time. The
/// body is decoded first (canonically) to learn the signer and the time; nothing of it is
/// trusted before the signature verifies.
pub fn verify_receipt(
    s: &pb::SignedReceipt,
    keys: &impl KeySource,
) -> Result<Receipt, StatementError> {
    let b: pb::ReceiptBody = decode_canonical("ReceiptBody", &s.body)?;
    let destination = region("destination", &b.destination)?;
    keys.verify_signed(
        SignedBy {
            signer: destination,
            key_id: s.key_id,
            at_ms: b.issued_at_ms,
        },
        s.alg,
        Domain::Receipt,
        &s.body,
        &s.signature,
    )?;
    Ok(Receipt {
        channel: ChannelId::new(region("origin", &b.origin)?, destination),
        acked_seq: b.acked_seq,
        head_hash: hash("head_hash", &b.head_hash)?,
        issued_at_ms: b.issued_at_ms,
    })
}

/// One channel's head in a head statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub channel: ChannelId,
    pub seq: u64,
    pub hash: RecordId,
}

/// The signer's audit-chain head in a head statement: the index of its last audit entry and
/// the SHA-256 of that entry's stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// A verified head statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heads {
    pub signer: RegionCode,
    pub peer: RegionCode,
    pub issued_at_ms: UnixMillis,
    pub heads: Vec<Head>,
    /// `None` before the signer's first audit entry.
    pub audit: Option<AuditHead>,
    /// The serial of the signer's installed directory (0 from older signers).
    pub directory_serial: u64,
}

impl Heads {
    pub fn head(&self, channel: ChannelId) -> Option<&Head> {
        self.heads.iter().find(|h| h.channel == channel)
    }
}

/// Signs a head statement.
pub fn sign_heads<'a>(key: impl Into<Sealer<'a>>, h: &Heads) -> pb::SignedHeads {
    let key = key.into();
    let body = pb::HeadsBody {
        signer: h.signer.to_string(),
        peer: h.peer.to_string(),
        issued_at_ms: h.issued_at_ms,
        heads: h
            .heads
            .iter()
            .map(|x| pb::ChannelHead {
                origin: x.channel.origin.to_string(),
                destination: x.channel.destination.to_string(),
                seq: x.seq,
                head_hash: x.hash.0.to_vec(),
            })
            .collect(),
        audit_seq: h.audit.map_or(0, |a| a.seq),
        audit_hash: h.audit.map(|a| a.hash.to_vec()).unwrap_or_default(),
        directory_serial: h.directory_serial,
    }
    .encode_to_vec();
    pb::SignedHeads {
        alg: key.alg(),
        signature: key.sign(Domain::Heads, &body),
        body,
        key_id: key.key_id,
    }
}

/// Verifies a head statement under the signer's key it names, valid at its issue time. Every
/// listed channel must be between the signer and its peer.
pub fn verify_heads(s: &pb::SignedHeads, keys: &impl KeySource) -> Result<Heads, StatementError> {
    let b: pb::HeadsBody = decode_canonical("HeadsBody", &s.body)?;
    let signer = region("signer", &b.signer)?;
    keys.verify_signed(
        SignedBy {
            signer,
            key_id: s.key_id,
            at_ms: b.issued_at_ms,
        },
        s.alg,
        Domain::Heads,
        &s.body,
        &s.signature,
    )?;
    let peer = region("peer", &b.peer)?;
    let mut heads = Vec::with_capacity(b.heads.len());
    for h in &b.heads {
        let channel = ChannelId::new(
            region("origin", &h.origin)?,
            region("destination", &h.destination)?,
        );
        let between = (channel.origin == signer && channel.destination == peer)
            || (channel.origin == peer && channel.destination == signer);
        if !between {
            return Err(bad(
                "heads",
                format!("channel `{channel}` is not between signer and peer"),
            ));
        }
        heads.push(Head {
            channel,
            seq: h.seq,
            hash: hash("head_hash", &h.head_hash)?,
        });
    }
    let audit = match (b.audit_seq, b.audit_hash.as_slice()) {
        (0, []) => None,
        (0, _) => return Err(bad("audit_hash", "is set without `audit_seq`")),
        (seq, h) => Some(AuditHead {
            seq,
            hash: h
                .try_into()
                .map_err(|_| bad("audit_hash", format!("is {} bytes, not 32", h.len())))?,
        }),
    };
    Ok(Heads {
        signer,
        peer,
        issued_at_ms: b.issued_at_ms,
        heads,
        audit,
        directory_serial: b.directory_serial,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::{key, region as r};

    #[test]
    fn receipt_round_trip_and_forgery() {
        let k = key(2);
        let receipt = Receipt {
            channel: ChannelId::new(r("310115"), r("110105")),
            acked_seq: 7,
            head_hash: RecordId([3; 32]),
            issued_at_ms: 5,
        };
        let s = sign_receipt(&k, &receipt);
        assert_eq!(verify_receipt(&s, &k.verifying_key()), Ok(receipt));
        assert!(matches!(
            verify_receipt(&s, &key(1).verifying_key()),
            Err(StatementError::Signature(_))
        ));
    }

    #[test]
    fn heads_round_trip_and_foreign_channels_are_refused() {
        let k = key(2);
        let mut h = Heads {
            signer: r("110105"),
            peer: r("310115"),
            issued_at_ms: 9,
            heads: vec![Head {
                channel: ChannelId::new(r("310115"), r("110105")),
                seq: 3,
                hash: RecordId([1; 32]),
            }],
            audit: None,
            directory_serial: 4,
        };
        assert_eq!(
            verify_heads(&sign_heads(&k, &h), &k.verifying_key()),
            Ok(h.clone())
        );
        // The signer's audit head travels signed, and a forged one does not verify.
        h.audit = Some(AuditHead {
            seq: 12,
            hash: [7; 32],
        });
        let signed = sign_heads(&k, &h);
        assert_eq!(verify_heads(&signed, &k.verifying_key()), Ok(h.clone()));
        let mut body = pb::HeadsBody::decode(signed.body.as_slice()).unwrap();
        body.audit_hash = vec![8; 32];
        let forged = pb::SignedHeads {
            body: body.encode_to_vec(),
            ..signed
        };
        assert!(matches!(
            verify_heads(&forged, &k.verifying_key()),
            Err(StatementError::Signature(_))
        ));
        h.heads[0].channel = ChannelId::new(r("440305"), r("110105"));
        assert!(matches!(
            verify_heads(&sign_heads(&k, &h), &k.verifying_key()),
            Err(StatementError::BadField { .. })
        ));
    }
}
