//! Records: ids, channels, decoding with the canonical check, sealing (signing) new records,
//! and signature verification. Verification never re-encodes: the signature and the id are
//! computed over the body bytes exactly as received.

use std::fmt;

use ed25519_dalek::{SigningKey, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::canonical::{CanonicalError, decode_canonical};
use crate::directory::{
    Directory, KeyLookupError, KeySource, PublicKey, SignatureAlgorithm, SignedBy, SignedByError,
};
use crate::idempotency::IdempotencyDigest;
use crate::payload::{Kind, Payload, PayloadError, ValidationRules};
use crate::pb;
use crate::pseudonym::{Epoch, SubjectRef};
use crate::region::RegionCode;
use crate::sign::{self, Domain, SignatureError};
use crate::sm2_suite::Sm2SigningKey;
use crate::time::UnixMillis;

/// Body format version of records signed with key id 0 (no `key_id` in the body).
pub const BODY_VERSION: u32 = 1;
/// Body format version of records that name their signing key (`key_id` ≥ 1).
pub const BODY_VERSION_KEY_ID: u32 = 2;

/// A record-signing secret key in its suite, borrowed for signing.
#[derive(Clone, Copy)]
pub enum SealKey<'a> {
    Ed25519(&'a SigningKey),
    Sm2(&'a Sm2SigningKey),
}

impl fmt::Debug for SealKey<'_> {
    // Never the key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealKey({:?})", self.alg())
    }
}

impl SealKey<'_> {
    /// The suite, as envelopes carry it.
    pub fn alg(&self) -> SignatureAlgorithm {
        match self {
            SealKey::Ed25519(_) => SignatureAlgorithm::Ed25519,
            SealKey::Sm2(_) => SignatureAlgorithm::Sm2Sm3,
        }
    }

    pub fn public_key(&self) -> PublicKey {
        match self {
            SealKey::Ed25519(k) => PublicKey::Ed25519(k.verifying_key()),
            SealKey::Sm2(k) => PublicKey::Sm2(k.verifying_key()),
        }
    }

    /// A domain-separated signature over `body` in this key's suite.
    pub fn sign(&self, domain: Domain, body: &[u8]) -> Vec<u8> {
        match self {
            SealKey::Ed25519(k) => sign::sign(k, domain, body).to_vec(),
            SealKey::Sm2(k) => k.sign(domain, body).to_vec(),
        }
    }
}

impl<'a> From<&'a SigningKey> for SealKey<'a> {
    fn from(key: &'a SigningKey) -> Self {
        SealKey::Ed25519(key)
    }
}

impl<'a> From<&'a Sm2SigningKey> for SealKey<'a> {
    fn from(key: &'a Sm2SigningKey) -> Self {
        SealKey::Sm2(key)
    }
}

/// A record-signing key with the id the signer's directory entry lists it under (0: the
/// legacy `signing_key`). A bare `&SigningKey` is key id 0.
#[derive(Clone, Copy)]
pub struct Sealer<'a> {
    pub key: SealKey<'a>,
    pub key_id: u32,
}

impl Sealer<'_> {
    /// The envelope's algorithm value.
    pub fn alg(&self) -> i32 {
        self.key.alg().to_pb()
    }

    /// A domain-separated signature over `body`.
    pub fn sign(&self, domain: Domain, body: &[u8]) -> Vec<u8> {
        self.key.sign(domain, body)
    }
}

impl fmt::Debug for Sealer<'_> {
    // Never the key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl<'a> From<&'a SigningKey> for Sealer<'a> {
    fn from(key: &'a SigningKey) -> Self {
        Sealer {
            key: key.into(),
            key_id: 0,
        }
    }
}

/// SHA-256 of a record body; also the `prev_hash` link of the next record.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RecordId(pub [u8; 32]);

impl RecordId {
    /// The `prev_hash` of seq 1.
    pub const ZERO: RecordId = RecordId([0; 32]);

    pub fn of_body(body: &[u8]) -> Self {
        RecordId(Sha256::digest(body).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The id of the record in stored or transmitted `SignedRecord` bytes, reading only the
    /// envelope: no canonical check, no payload, no signature.
    pub fn of_signed_bytes(bytes: &[u8]) -> Result<Self, RecordError> {
        let signed = pb::SignedRecord::decode(bytes).map_err(|e| {
            RecordError::Body(CanonicalError::Malformed {
                message: "SignedRecord",
                reason: e.to_string(),
            })
        })?;
        Ok(RecordId::of_body(&signed.body))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Result<Self, RecordIdError> {
        let v = hex::decode(s).map_err(|_| RecordIdError::NotHex)?;
        Self::try_from(v.as_slice())
    }
}

impl TryFrom<&[u8]> for RecordId {
    type Error = RecordIdError;
    fn try_from(b: &[u8]) -> Result<Self, Self::Error> {
        <[u8; 32]>::try_from(b)
            .map(RecordId)
            .map_err(|_| RecordIdError::WrongLength(b.len()))
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({})", &self.to_hex()[..12])
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordIdError {
    #[error("record id must be 32 bytes, got {0}")]
    WrongLength(usize),
    #[error("record id must be 64 hex characters")]
    NotHex,
}

/// The ordered feed of records from one origin to one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId {
    pub origin: RegionCode,
    pub destination: RegionCode,
}

impl ChannelId {
    pub fn new(origin: RegionCode, destination: RegionCode) -> Self {
        ChannelId {
            origin,
            destination,
        }
    }

    /// The channel in the other direction.
    pub fn reverse(self) -> Self {
        ChannelId::new(self.destination, self.origin)
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.origin, self.destination)
    }
}

/// Why a signed record is refused. Each variant maps to one wire `RejectReason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("signature algorithm `{0}` is not supported; only ED25519 is")]
    UnsupportedAlgorithm(i32),
    #[error(transparent)]
    Body(#[from] CanonicalError),
    #[error("record body version `{0}` is not supported; this node reads versions 1 and 2")]
    UnsupportedVersion(u32),
    #[error("field `{field}` is invalid: {reason}")]
    BadField { field: &'static str, reason: String },
    #[error("origin and destination are the same region")]
    SelfChannel,
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("record issued at `{issued_at_ms}` ms is beyond now plus the allowed clock skew")]
    FromTheFuture { issued_at_ms: i64 },
    #[error("record signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("record signing key: {0}")]
    Key(#[from] KeyLookupError),
}

impl RecordError {
    /// The wire reason code for this refusal.
    pub fn reject_reason(&self) -> pb::RejectReason {
        use pb::RejectReason as R;
        match self {
            RecordError::UnsupportedAlgorithm(_) => R::UnsupportedAlgorithm,
            RecordError::Body(CanonicalError::NonCanonical { .. }) => R::NonCanonical,
            RecordError::Body(CanonicalError::Malformed { .. })
            | RecordError::UnsupportedVersion(_)
            | RecordError::BadField { .. }
            | RecordError::SelfChannel => R::Malformed,
            RecordError::Payload(_) => R::InvalidPayload,
            RecordError::FromTheFuture { .. } => R::FromTheFuture,
            RecordError::Signature(_) => R::BadSignature,
            RecordError::Key(KeyLookupError::UnknownMember(_)) => R::UnknownOrigin,
            RecordError::Key(KeyLookupError::UnknownKey { .. }) => R::UnknownKey,
            RecordError::Key(KeyLookupError::NotValid { .. }) => R::KeyNotValid,
        }
    }
}

/// A record whose body is canonical and structurally valid, with its payload parsed into the
/// checked domain type; its signature and the clock checks are not yet done.
/// `Debug` shows only the channel position and id: payloads and subject refs never reach logs.
#[derive(Clone, PartialEq)]
pub struct DecodedRecord {
    signed: pb::SignedRecord,
    body: pb::RecordBody,
    id: RecordId,
    channel: ChannelId,
    subject: SubjectRef,
    supersedes: Option<RecordId>,
    idempotency: Option<IdempotencyDigest>,
    payload: Payload,
}

impl fmt::Debug for DecodedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodedRecord")
            .field("channel", &self.channel)
            .field("seq", &self.body.seq)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn bad(field: &'static str, reason: impl Into<String>) -> RecordError {
    RecordError::BadField {
        field,
        reason: reason.into(),
    }
}

fn region(field: &'static str, s: &str) -> Result<RegionCode, RecordError> {
    s.parse::<RegionCode>()
        .map_err(|e| bad(field, e.to_string()))
}

impl DecodedRecord {
    /// Checks the algorithm, decodes the body canonically and checks its structure, parsing the
    /// payload once into its checked type (every payload rule but the clock's).
    pub fn decode(signed: pb::SignedRecord) -> Result<Self, RecordError> {
        if SignatureAlgorithm::from_pb(signed.alg).is_none() {
            return Err(RecordError::UnsupportedAlgorithm(signed.alg));
        }
        let body: pb::RecordBody = decode_canonical("RecordBody", &signed.body)?;
        Self::from_body(signed, body)
    }

    /// The structural checks of [`Self::decode`] on a body already decoded from (or encoded
    /// into) `signed.body`.
    fn from_body(signed: pb::SignedRecord, body: pb::RecordBody) -> Result<Self, RecordError> {
        match (body.version, body.key_id) {
            (BODY_VERSION, 0) => {}
            (BODY_VERSION, _) => return Err(bad("key_id", "is not allowed in a version-1 body")),
            (BODY_VERSION_KEY_ID, 0) => {
                return Err(bad("key_id", "must be at least 1 in a version-2 body"));
            }
            (BODY_VERSION_KEY_ID, _) => {}
            (v, _) => return Err(RecordError::UnsupportedVersion(v)),
        }
        let channel = ChannelId::new(
            region("origin", &body.origin)?,
            region("destination", &body.destination)?,
        );
        if channel.origin == channel.destination {
            return Err(RecordError::SelfChannel);
        }
        if body.seq == 0 {
            return Err(bad("seq", "must start at 1"));
        }
        if body.prev_hash.len() != 32 {
            return Err(bad("prev_hash", "must be 32 bytes"));
        }
        if body.seq == 1 && body.prev_hash != RecordId::ZERO.0 {
            return Err(bad("prev_hash", "must be 32 zero bytes at seq 1"));
        }
        crate::agreement::check_agreement_id(&body.agreement_id)
            .map_err(|reason| bad("agreement_id", reason))?;
        let subject = SubjectRef::try_from(body.subject_ref.as_slice())
            .map_err(|e| bad("subject_ref", e.to_string()))?;
        Epoch::from_wire(body.pseudonym_epoch)
            .map_err(|e| bad("pseudonym_epoch", e.to_string()))?;
        let supersedes = match body.supersedes.len() {
            0 => None,
            _ => Some(
                RecordId::try_from(body.supersedes.as_slice())
                    .map_err(|e| bad("supersedes", e.to_string()))?,
            ),
        };
        let idempotency = match body.idempotency_digest.len() {
            0 => None,
            _ => Some(IdempotencyDigest(
                body.idempotency_digest
                    .as_slice()
                    .try_into()
                    .map_err(|_| bad("idempotency_digest", "must be 32 bytes"))?,
            )),
        };
        let payload = Payload::from_record(body.payload.clone())?;
        if payload.is_retraction() && supersedes.is_none() {
            return Err(bad(
                "supersedes",
                "a retraction must name the record it retracts",
            ));
        }
        let id = RecordId::of_body(&signed.body);
        Ok(DecodedRecord {
            signed,
            body,
            id,
            channel,
            subject,
            supersedes,
            idempotency,
            payload,
        })
    }

    /// Decodes the stored or transmitted bytes of a `SignedRecord`, then as [`Self::decode`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RecordError> {
        let signed = pb::SignedRecord::decode(bytes).map_err(|e| {
            RecordError::Body(CanonicalError::Malformed {
                message: "SignedRecord",
                reason: e.to_string(),
            })
        })?;
        Self::decode(signed)
    }

    /// The `SignedRecord` bytes as stored and sent: the body and signature exactly as signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.signed.encode_to_vec()
    }

    /// Verifies the signature over the body bytes as received under one given key (whatever
    /// key id the body names); [`Self::verify_in`] is the check against the directory.
    pub fn verify(self, origin_key: &VerifyingKey) -> Result<VerifiedRecord, RecordError> {
        self.check_signature(origin_key)?;
        Ok(VerifiedRecord(self))
    }

    /// Verifies the record under the key of its origin it names (key id 0 for version-1
    /// bodies), which must have been valid at its issue time: the one record check of
    /// receive, Fetch, reconciliation and VerifyLog.
    pub fn verify_in(self, directory: &Directory) -> Result<VerifiedRecord, RecordError> {
        self.check_signature(directory)?;
        Ok(VerifiedRecord(self))
    }

    /// The signature check of [`Self::verify_in`] without taking the record: the origin's key
    /// the body names, valid at `issued_at_ms`, in the envelope's algorithm.
    pub fn check_signature(&self, keys: &impl KeySource) -> Result<(), RecordError> {
        let by = SignedBy {
            signer: self.channel.origin,
            key_id: self.key_id(),
            at_ms: self.body.issued_at_ms,
        };
        keys.verify_signed(
            by,
            self.signed.alg,
            Domain::Record,
            &self.signed.body,
            &self.signed.signature,
        )
        .map_err(|e| match e {
            SignedByError::UnsupportedAlgorithm(a) => RecordError::UnsupportedAlgorithm(a),
            SignedByError::Key(k) => RecordError::Key(k),
            SignedByError::Signature(s) => RecordError::Signature(s),
        })
    }

    /// The id of the origin's key that signed the record (0 for version-1 bodies).
    pub fn key_id(&self) -> u32 {
        self.body.key_id
    }

    /// Checks what needs the clock, against `rules.now_ms`: the issue time and the payload's
    /// dates.
    pub fn validate(&self, rules: &ValidationRules) -> Result<(), RecordError> {
        if self.body.issued_at_ms > rules.now_ms.saturating_add(rules.max_future_skew_ms) {
            return Err(RecordError::FromTheFuture {
                issued_at_ms: self.body.issued_at_ms,
            });
        }
        self.payload
            .validate(rules, self.supersedes.is_some())
            .map_err(RecordError::from)
    }

    pub fn id(&self) -> RecordId {
        self.id
    }
    pub fn channel(&self) -> ChannelId {
        self.channel
    }
    pub fn seq(&self) -> u64 {
        self.body.seq
    }
    /// The id of the record at `seq - 1` (zero at seq 1).
    pub fn prev_hash(&self) -> RecordId {
        RecordId::try_from(self.body.prev_hash.as_slice()).unwrap_or(RecordId::ZERO)
    }
    pub fn agreement_id(&self) -> &str {
        &self.body.agreement_id
    }
    pub fn subject(&self) -> &SubjectRef {
        &self.subject
    }
    /// The epoch of the agreement's pseudonym key the subject ref was made under.
    pub fn pseudonym_epoch(&self) -> Epoch {
        // Checked in `decode`.
        Epoch::from_wire(self.body.pseudonym_epoch).unwrap_or(Epoch::FIRST)
    }
    pub fn issued_at_ms(&self) -> UnixMillis {
        self.body.issued_at_ms
    }
    pub fn supersedes(&self) -> Option<RecordId> {
        self.supersedes
    }
    /// The keyed digest of the idempotency key it was submitted with, if any.
    pub fn idempotency(&self) -> Option<IdempotencyDigest> {
        self.idempotency
    }
    /// The same digest as [`NewRecord::content_hash`] of the record it was sealed from.
    pub fn content_hash(&self) -> [u8; 32] {
        content_hash_of(self.body.clone())
    }
    pub fn payload(&self) -> &Payload {
        &self.payload
    }
    pub fn kind(&self) -> Kind {
        self.payload.kind()
    }
    pub fn body(&self) -> &pb::RecordBody {
        &self.body
    }
    pub fn signed(&self) -> &pb::SignedRecord {
        &self.signed
    }
    pub fn into_signed(self) -> pb::SignedRecord {
        self.signed
    }
}

fn content_hash_of(mut body: pb::RecordBody) -> [u8; 32] {
    // The signing key is not content: a resubmission after a rotation is still a duplicate.
    body.version = BODY_VERSION;
    body.key_id = 0;
    body.seq = 0;
    body.prev_hash = RecordId::ZERO.0.to_vec();
    body.issued_at_ms = 0;
    body.idempotency_digest = Vec::new();
    Sha256::digest(body.encode_to_vec()).into()
}

/// Picks a subject's current record of one kind among `records` (all of that kind): the
/// latest by observed date, then issue time, among records that no other record corrects or
/// retracts. A retraction itself is never current.
pub fn current_of(records: Vec<DecodedRecord>) -> Option<DecodedRecord> {
    let superseded: std::collections::HashSet<RecordId> =
        records.iter().filter_map(|r| r.supersedes()).collect();
    records
        .into_iter()
        .filter(|r| !r.payload().is_retraction() && !superseded.contains(&r.id()))
        .max_by_key(|r| (r.payload().observed_on(), r.issued_at_ms()))
}

/// A new record at its channel position whose signature is still to be computed.
#[derive(Clone, PartialEq, Debug)]
pub struct UnsignedRecord(DecodedRecord);

impl UnsignedRecord {
    pub fn id(&self) -> RecordId {
        self.0.id
    }

    /// Signs the body bytes as placed with the origin's key (the one it was placed for).
    pub fn sign(mut self, key: Sealer<'_>) -> VerifiedRecord {
        self.0.signed.signature = key.sign(Domain::Record, &self.0.signed.body);
        VerifiedRecord(self.0)
    }
}

/// A record whose signature verified under its origin's key (or that this node sealed).
#[derive(Clone, PartialEq, Debug)]
pub struct VerifiedRecord(DecodedRecord);

impl std::ops::Deref for VerifiedRecord {
    type Target = DecodedRecord;
    fn deref(&self) -> &DecodedRecord {
        &self.0
    }
}

impl VerifiedRecord {
    pub fn into_decoded(self) -> DecodedRecord {
        self.0
    }
}

/// The content of a record before it has a channel position.
#[derive(Clone, PartialEq)]
pub struct NewRecord {
    pub channel: ChannelId,
    pub agreement_id: String,
    pub subject: SubjectRef,
    /// The epoch of the agreement's pseudonym key `subject` was made under.
    pub pseudonym_epoch: Epoch,
    pub issued_at_ms: UnixMillis,
    pub supersedes: Option<RecordId>,
    /// The keyed digest of the submitter's idempotency key, carried in the signed body.
    pub idempotency: Option<IdempotencyDigest>,
    pub payload: Payload,
}

impl fmt::Debug for NewRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewRecord")
            .field("channel", &self.channel)
            .field("kind", &self.payload.kind())
            .finish_non_exhaustive()
    }
}

impl NewRecord {
    /// The body this record gets at `seq`, linked to `prev`.
    pub fn body(&self, seq: u64, prev: RecordId) -> pb::RecordBody {
        self.body_with_key(seq, prev, 0)
    }

    /// The body, naming `key_id` (version 2) unless it is 0 (version 1, as before key ids).
    fn body_with_key(&self, seq: u64, prev: RecordId, key_id: u32) -> pb::RecordBody {
        pb::RecordBody {
            version: if key_id == 0 {
                BODY_VERSION
            } else {
                BODY_VERSION_KEY_ID
            },
            key_id,
            origin: self.channel.origin.to_string(),
            destination: self.channel.destination.to_string(),
            seq,
            prev_hash: prev.0.to_vec(),
            agreement_id: self.agreement_id.clone(),
            subject_ref: self.subject.as_bytes().to_vec(),
            issued_at_ms: self.issued_at_ms,
            supersedes: self.supersedes.map(|r| r.0.to_vec()).unwrap_or_default(),
            idempotency_digest: self.idempotency.map(|d| d.0.to_vec()).unwrap_or_default(),
            payload: Some(pb::record_body::Payload::from(&self.payload)),
            pseudonym_epoch: self.pseudonym_epoch.to_wire(),
        }
    }

    /// Signs this record at `seq` after `prev` with the origin's key, naming its key id.
    pub fn seal<'a>(
        &self,
        seq: u64,
        prev: RecordId,
        key: impl Into<Sealer<'a>>,
    ) -> Result<VerifiedRecord, RecordError> {
        let key = key.into();
        Ok(self.place(seq, prev, key)?.sign(key))
    }

    /// This record at `seq` after `prev`, naming `key`'s id (0: version 1) and algorithm,
    /// checked and with its id, but not signed yet: a channel's records are placed in seq
    /// order (each links to the id before it), and their signatures can then be computed in
    /// any order, on any thread, with `key`.
    pub fn place(
        &self,
        seq: u64,
        prev: RecordId,
        key: Sealer<'_>,
    ) -> Result<UnsignedRecord, RecordError> {
        let body = self.body_with_key(seq, prev, key.key_id);
        // Encoded once: these bytes are what is signed, stored and sent. Encoding is
        // canonical, so only the structure is checked, as for a received record.
        let signed = pb::SignedRecord {
            alg: key.alg(),
            body: body.encode_to_vec(),
            signature: Vec::new(),
        };
        Ok(UnsignedRecord(DecodedRecord::from_body(signed, body)?))
    }

    /// A stable digest of the content, for intake idempotency (same key, same content): the
    /// body without its position, link, issue time (assigned by this node, not the submitter)
    /// or idempotency digest.
    pub fn content_hash(&self) -> [u8; 32] {
        content_hash_of(self.body(0, RecordId::ZERO))
    }
}

#[cfg(test)]
pub(crate) mod tests;
