//! Shared test fixtures: a fixed clock, keys from seeds and sample records. Compiled for this
//! crate's tests and, with the `fixtures` feature, for other crates' tests and benchmarks;
//! never part of a release build.

use ed25519_dalek::SigningKey;

use crate::payload::{ContraceptionMethod, Payload};
use crate::pb;
use crate::pseudonym::{PseudonymKey, SubjectRef};
use crate::record::{ChannelId, NewRecord};
use crate::{NationalId, RegionCode};

/// 2026-06-01T00:00:00Z.
pub const NOW: i64 = 1_780_272_000_000;

/// The published sample resident ID.
pub const SAMPLE_ID: &str = "11010519491231002X";

pub fn region(s: &str) -> RegionCode {
    s.parse().expect("fixture region code")
}

/// The channel 310115→110105.
pub fn a_to_b() -> ChannelId {
    ChannelId::new(region("310115"), region("110105"))
}

/// A deterministic signing key.
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// The sample person's ref under a fixed pseudonym key.
pub fn subject() -> SubjectRef {
    let today = chrono::NaiveDate::from_ymd_opt(2026, 6, 1).expect("real date");
    let id = NationalId::parse(SAMPLE_ID, today).expect("sample id");
    SubjectRef::derive(&PseudonymKey::from_bytes([9; 32]), &id)
}

/// A contraception status observed on 2026-05-`day`.
pub fn contraception(method: ContraceptionMethod, day: u32) -> Payload {
    let status = pb::ContraceptionStatus {
        method: pb::ContraceptiveMethod::from(method) as i32,
        since: Some(pb::Date {
            year: 2025,
            month: 3,
            day: 1,
        }),
        observed_on: Some(pb::Date {
            year: 2026,
            month: 5,
            day,
        }),
        service_point: "3101150042".into(),
    };
    Payload::Contraception(status.try_into().expect("fixture payload"))
}

/// A valid record of the sample person on 310115→110105: an IUD observed on 2026-05-20,
/// issued `age_ms` before [`NOW`].
pub fn sample_record(age_ms: i64) -> NewRecord {
    NewRecord {
        channel: a_to_b(),
        agreement_id: "agr-310115-110105".into(),
        subject: subject(),
        pseudonym_epoch: crate::pseudonym::Epoch::FIRST,
        issued_at_ms: NOW - age_ms,
        supersedes: None,
        idempotency: None,
        payload: contraception(ContraceptionMethod::Iud, 20),
    }
}

/// The idempotency digest of `key` under a fixed node key.
pub fn idempotency(key: &str) -> crate::idempotency::IdempotencyDigest {
    let node = crate::idempotency::DigestKey::derive(&self::key(1));
    crate::idempotency::IdempotencyKey::parse(key)
        .expect("fixture idempotency key")
        .digest(&node)
}

/// A directory member `code` whose key id 0 is [`key`]`(seed)`, listing `keys` besides.
pub fn member(code: &str, seed: u8, keys: Vec<pb::MemberKey>) -> pb::Member {
    pb::Member {
        region_code: code.into(),
        name: format!("bureau {code}"),
        endpoint: "127.0.0.1:7000".into(),
        signing_key: key(seed).verifying_key().to_bytes().to_vec(),
        tls_identity: format!("urn:interflow:region:{code}"),
        keys,
    }
}

/// A listed Ed25519 key `key_id` = [`key`]`(seed)` valid in `[from, until)` (0: open).
pub fn member_key(key_id: u32, seed: u8, from: i64, until: i64, revoked: i64) -> pb::MemberKey {
    pb::MemberKey {
        key_id,
        alg: pb::SignatureAlgorithm::Ed25519 as i32,
        public_key: key(seed).verifying_key().to_bytes().to_vec(),
        valid_from_ms: from,
        valid_until_ms: until,
        revoked_at_ms: revoked,
    }
}

/// The verified directory of `members`, signed by the operator key [`key`]`(99)`.
pub fn directory(members: Vec<pb::Member>) -> crate::directory::Directory {
    let body = pb::DirectoryBody {
        serial: 1,
        members,
        ..Default::default()
    };
    let signed = crate::directory::Directory::sign(&body, &key(99));
    crate::directory::Directory::verify(&signed, &key(99).verifying_key())
        .expect("fixture directory")
}

/// A deterministic SM2 signing key.
pub fn sm2_key(seed: u8) -> crate::sm2_suite::Sm2SigningKey {
    crate::sm2_suite::Sm2SigningKey::from_bytes(&[seed; 32]).expect("fixture SM2 key")
}

/// A listed SM2 key `key_id` = [`sm2_key`]`(seed)`, valid from `from` on.
pub fn sm2_member_key(key_id: u32, seed: u8, from: i64) -> pb::MemberKey {
    pb::MemberKey {
        key_id,
        alg: pb::SignatureAlgorithm::Sm2Sm3 as i32,
        public_key: sm2_key(seed).verifying_key().to_bytes().to_vec(),
        valid_from_ms: from,
        valid_until_ms: 0,
        revoked_at_ms: 0,
    }
}
