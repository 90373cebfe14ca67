use super::*;

pub(crate) use crate::fixtures::{NOW, key, region};

pub(crate) fn sample(seq_hint: u8) -> NewRecord {
    crate::fixtures::sample_record(i64::from(seq_hint))
}

#[test]
fn sealed_record_round_trips_and_verifies() {
    let k = key(1);
    let rec = sample(0).seal(1, RecordId::ZERO, &k).unwrap();
    let decoded = DecodedRecord::decode(rec.signed().clone()).unwrap();
    assert_eq!(decoded.id(), rec.id());
    assert_eq!(decoded.id(), RecordId::of_body(&rec.signed().body));
    let verified = decoded.verify(&k.verifying_key()).unwrap();
    assert_eq!(verified.seq(), 1);
    assert_eq!(verified.channel().to_string(), "310115->110105");
    let rules = ValidationRules {
        now_ms: NOW,
        max_future_skew_ms: 0,
    };
    assert_eq!(verified.validate(&rules), Ok(()));
}

#[test]
fn one_bit_change_in_body_is_refused() {
    let k = key(1);
    let mut signed = sample(0)
        .seal(1, RecordId::ZERO, &k)
        .unwrap()
        .into_decoded()
        .into_signed();
    // Flip a bit inside the issue time, which keeps the body decodable.
    let body = signed.body.clone();
    for i in 0..body.len() {
        signed.body = body.clone();
        signed.body[i] ^= 0x01;
        match DecodedRecord::decode(signed.clone()) {
            Ok(d) => assert!(matches!(
                d.verify(&k.verifying_key()),
                Err(RecordError::Signature(SignatureError::Invalid))
            )),
            Err(_) => continue,
        }
    }
}

#[test]
fn wrong_key_and_missing_domain_prefix_are_refused() {
    let k = key(1);
    let rec = sample(0).seal(1, RecordId::ZERO, &k).unwrap();
    let d = rec.clone().into_decoded();
    assert_eq!(
        d.verify(&key(2).verifying_key())
            .unwrap_err()
            .reject_reason(),
        pb::RejectReason::BadSignature
    );
    let mut signed = rec.into_decoded().into_signed();
    use ed25519_dalek::Signer as _;
    signed.signature = k.sign(&signed.body).to_bytes().to_vec();
    let err = DecodedRecord::decode(signed)
        .unwrap()
        .verify(&k.verifying_key())
        .unwrap_err();
    assert_eq!(err.reject_reason(), pb::RejectReason::BadSignature);
}

/// `body` signed as it is, without the checks sealing makes.
fn signed_as_is(k: &SigningKey, body: Vec<u8>) -> pb::SignedRecord {
    let signature = sign::sign(k, Domain::Record, &body).to_vec();
    pb::SignedRecord {
        alg: pb::SignatureAlgorithm::Ed25519 as i32,
        body,
        signature,
    }
}

#[test]
fn validly_signed_body_with_unknown_field_is_non_canonical() {
    let k = key(1);
    let mut body = sample(0).body(1, RecordId::ZERO).encode_to_vec();
    // Field 99, varint 1: unknown to the schema.
    body.extend_from_slice(&[0x98, 0x06, 0x01]);
    let err = DecodedRecord::decode(signed_as_is(&k, body)).unwrap_err();
    assert_eq!(err.reject_reason(), pb::RejectReason::NonCanonical);
}

#[test]
fn unsupported_algorithm_and_bad_structure_are_refused() {
    let k = key(1);
    let mut signed = sample(0)
        .seal(1, RecordId::ZERO, &k)
        .unwrap()
        .into_decoded()
        .into_signed();
    signed.alg = 0;
    assert_eq!(
        DecodedRecord::decode(signed).unwrap_err().reject_reason(),
        pb::RejectReason::UnsupportedAlgorithm
    );
    // seq 1 must link to zero.
    let bad_link = sample(0).seal(1, RecordId([1; 32]), &k);
    assert!(matches!(
        bad_link,
        Err(RecordError::BadField {
            field: "prev_hash",
            ..
        })
    ));
    let mut same = sample(0);
    same.channel.destination = same.channel.origin;
    assert_eq!(
        same.seal(1, RecordId::ZERO, &k).unwrap_err(),
        RecordError::SelfChannel
    );
}

#[test]
fn a_signed_body_with_an_invalid_payload_is_refused_when_decoded() {
    let k = key(1);
    let mut body = sample(0).body(1, RecordId::ZERO);
    if let Some(pb::record_body::Payload::Contraception(c)) = &mut body.payload {
        c.method = 0;
    }
    let err = DecodedRecord::decode(signed_as_is(&k, body.encode_to_vec())).unwrap_err();
    assert_eq!(err.reject_reason(), pb::RejectReason::InvalidPayload);
    assert!(matches!(err, RecordError::Payload(e) if e.field() == "contraception.method"));
}

#[test]
fn issue_time_beyond_skew_is_refused() {
    let k = key(1);
    let mut r = sample(0);
    r.issued_at_ms = NOW + 60_000;
    let rec = r.seal(1, RecordId::ZERO, &k).unwrap();
    let strict = ValidationRules {
        now_ms: NOW,
        max_future_skew_ms: 1_000,
    };
    assert_eq!(
        rec.validate(&strict).unwrap_err().reject_reason(),
        pb::RejectReason::FromTheFuture
    );
    let lenient = ValidationRules {
        now_ms: NOW,
        max_future_skew_ms: 120_000,
    };
    assert_eq!(rec.validate(&lenient), Ok(()));
}

#[test]
fn debug_never_prints_payload_or_subject() {
    let rec = sample(0).seal(1, RecordId::ZERO, &key(1)).unwrap();
    let s = format!("{rec:?} {:?}", sample(0));
    assert!(!s.contains("3101150042"), "{s}");
    assert!(!s.contains(&hex::encode(rec.subject().as_bytes())), "{s}");
}

#[test]
fn content_hash_ignores_issue_time_but_not_content() {
    let a = sample(0);
    let b = sample(5);
    assert_eq!(a.content_hash(), b.content_hash());
    let mut c = sample(0);
    c.agreement_id = "agr-other".into();
    assert_ne!(a.content_hash(), c.content_hash());
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decode_and_verify_never_panic_on_arbitrary_bytes(
            alg in 0i32..3,
            body in proptest::collection::vec(any::<u8>(), 0..256),
            sig in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let signed = pb::SignedRecord { alg, body, signature: sig };
            if let Ok(d) = DecodedRecord::decode(signed) {
                let _ = d.verify(&key(1).verifying_key());
            }
        }

        #[test]
        fn a_verifying_body_has_exactly_one_id(
            seq in 1u64..1_000_000,
            issued in 0i64..NOW,
            seed in 1u8..=255,
        ) {
            let k = key(seed);
            let mut r = sample(0);
            r.issued_at_ms = issued;
            let prev = if seq == 1 { RecordId::ZERO } else { RecordId([seed; 32]) };
            let rec = r.seal(seq, prev, &k).unwrap();
            let signed = rec.signed().clone();
            // Any other encoding of the same content is refused, so the id is unique.
            let again = DecodedRecord::decode(signed.clone()).unwrap().verify(&k.verifying_key()).unwrap();
            prop_assert_eq!(again.id(), rec.id());
            prop_assert_eq!(again.id(), RecordId::of_body(&signed.body));
            let reencoded = again.body().encode_to_vec();
            prop_assert_eq!(reencoded, signed.body);
        }
    }
}

#[test]
fn the_idempotency_digest_travels_signed_and_leaves_the_content_hash_alone() {
    let mut r = sample(0);
    let plain = r.content_hash();
    r.idempotency = Some(crate::idempotency::IdempotencyDigest([7; 32]));
    assert_eq!(r.content_hash(), plain, "the digest is not content");
    let sealed = r.seal(1, RecordId::ZERO, &key(1)).unwrap();
    let back = DecodedRecord::from_bytes(&sealed.to_bytes()).unwrap();
    assert_eq!(back.idempotency(), r.idempotency);
    // A received record gives the same content hash as the submission it was sealed from.
    assert_eq!(back.content_hash(), plain);
    // A digest of another length is refused.
    let mut body = sample(0).body(1, RecordId::ZERO);
    body.idempotency_digest = vec![1; 31];
    let bytes = body.encode_to_vec();
    let signed = pb::SignedRecord {
        alg: pb::SignatureAlgorithm::Ed25519 as i32,
        signature: sign::sign(&key(1), Domain::Record, &bytes).to_vec(),
        body: bytes,
    };
    assert!(matches!(
        DecodedRecord::decode(signed),
        Err(RecordError::BadField {
            field: "idempotency_digest",
            ..
        })
    ));
}

#[test]
fn the_pseudonym_epoch_is_in_the_body_and_epoch_one_keeps_the_old_bytes() {
    use crate::pseudonym::Epoch;
    let k = key(1);
    // Epoch 1 leaves the field out: the bytes are those of a body from before epochs.
    let first = sample(0).seal(1, RecordId::ZERO, &k).unwrap();
    assert_eq!(first.body().pseudonym_epoch, 0);
    assert_eq!(first.pseudonym_epoch(), Epoch::FIRST);
    let mut rotated = sample(0);
    rotated.pseudonym_epoch = Epoch::new(2).unwrap();
    let second = rotated.seal(1, RecordId::ZERO, &k).unwrap();
    assert_eq!(second.pseudonym_epoch(), Epoch::new(2).unwrap());
    let decoded = DecodedRecord::decode(second.signed().clone()).unwrap();
    assert_eq!(decoded.pseudonym_epoch(), Epoch::new(2).unwrap());
    assert_ne!(first.id(), second.id());
    assert_ne!(first.content_hash(), second.content_hash());
}

#[test]
fn an_explicit_epoch_one_is_refused() {
    let k = key(1);
    let mut body = sample(0).body(1, RecordId::ZERO);
    body.pseudonym_epoch = 1;
    let body = body.encode_to_vec();
    let signature = sign::sign(&k, Domain::Record, &body).to_vec();
    let signed = pb::SignedRecord {
        alg: pb::SignatureAlgorithm::Ed25519 as i32,
        body,
        signature,
    };
    assert!(matches!(
        DecodedRecord::decode(signed),
        Err(RecordError::BadField {
            field: "pseudonym_epoch",
            ..
        })
    ));
}

#[test]
fn a_placed_record_signed_later_is_what_decoding_its_bytes_gives() {
    let k = key(1);
    let placed = sample(0).place(3, RecordId([7; 32]), (&k).into()).unwrap();
    let id = placed.id();
    let rec = placed.sign((&k).into());
    assert_eq!(rec.id(), id);
    let again = DecodedRecord::from_bytes(&rec.to_bytes()).unwrap();
    assert_eq!(&again, &*rec);
    again.verify(&k.verifying_key()).unwrap();
}

/// 310115's key id 0 is key(1); key id 1 (key(3)) is valid from NOW − 1 h, revoked at NOW;
/// key id 2 (key(4)) is valid from NOW − 1 h on.
fn rotated_directory() -> Directory {
    use crate::fixtures::{directory, member, member_key};
    let hour = 3_600_000;
    directory(vec![
        member(
            "310115",
            1,
            vec![
                member_key(1, 3, NOW - hour, 0, NOW),
                member_key(2, 4, NOW - hour, 0, 0),
            ],
        ),
        member("110105", 2, vec![]),
    ])
}

fn issued(age_ms: i64) -> NewRecord {
    crate::fixtures::sample_record(age_ms)
}

#[test]
fn a_version_1_body_verifies_under_key_id_0() {
    let dir = rotated_directory();
    let rec = issued(1).seal(1, RecordId::ZERO, &key(1)).unwrap();
    assert_eq!(rec.body().version, BODY_VERSION);
    assert_eq!(rec.key_id(), 0);
    assert!(rec.into_decoded().verify_in(&dir).is_ok());
    // A version-1 body signed by another key of the origin names no key id: key id 0 fails.
    let other = issued(1).seal(1, RecordId::ZERO, &key(4)).unwrap();
    assert_eq!(
        other
            .into_decoded()
            .verify_in(&dir)
            .unwrap_err()
            .reject_reason(),
        pb::RejectReason::BadSignature
    );
}

#[test]
fn a_record_verifies_only_under_the_key_it_names_inside_its_window() {
    let dir = rotated_directory();
    let sealer = |k, key_id| Sealer {
        key: SealKey::Ed25519(k),
        key_id,
    };
    let (k3, k4) = (key(3), key(4));
    let v2 = issued(1).seal(1, RecordId::ZERO, sealer(&k4, 2)).unwrap();
    assert_eq!((v2.body().version, v2.key_id()), (BODY_VERSION_KEY_ID, 2));
    assert!(v2.into_decoded().verify_in(&dir).is_ok());

    let reason = |r: NewRecord, s: Sealer<'_>| {
        let d = r.seal(1, RecordId::ZERO, s).unwrap().into_decoded();
        d.verify_in(&dir).map(|_| ()).map_err(|e| e.reject_reason())
    };
    // Issued before its revocation time: still valid.
    assert_eq!(reason(issued(1), sealer(&k3, 1)), Ok(()));
    // At and after the revocation time, and before the window opens: not valid.
    assert_eq!(
        reason(issued(0), sealer(&k3, 1)),
        Err(pb::RejectReason::KeyNotValid)
    );
    assert_eq!(
        reason(issued(2 * 3_600_000), sealer(&k4, 2)),
        Err(pb::RejectReason::KeyNotValid)
    );
    // A key id the origin does not list, and another key than the one named.
    assert_eq!(
        reason(issued(1), sealer(&k4, 9)),
        Err(pb::RejectReason::UnknownKey)
    );
    assert_eq!(
        reason(issued(1), sealer(&k3, 2)),
        Err(pb::RejectReason::BadSignature)
    );
}

#[test]
fn key_id_and_version_must_agree() {
    let k = key(1);
    let mut body = issued(1).body(1, RecordId::ZERO);
    body.key_id = 3;
    let v1_with_id = pb::SignedRecord {
        alg: pb::SignatureAlgorithm::Ed25519 as i32,
        signature: sign::sign(&k, Domain::Record, &body.encode_to_vec()).to_vec(),
        body: body.encode_to_vec(),
    };
    assert!(matches!(
        DecodedRecord::decode(v1_with_id),
        Err(RecordError::BadField {
            field: "key_id",
            ..
        })
    ));
    let mut body = issued(1).body(1, RecordId::ZERO);
    body.version = BODY_VERSION_KEY_ID;
    let v2_without_id = pb::SignedRecord {
        alg: pb::SignatureAlgorithm::Ed25519 as i32,
        signature: sign::sign(&k, Domain::Record, &body.encode_to_vec()).to_vec(),
        body: body.encode_to_vec(),
    };
    assert!(matches!(
        DecodedRecord::decode(v2_without_id),
        Err(RecordError::BadField {
            field: "key_id",
            ..
        })
    ));
}

#[test]
fn the_signing_key_is_not_content() {
    let r = issued(1);
    let before = r.seal(1, RecordId::ZERO, &key(1)).unwrap();
    let k4 = key(4);
    let after = r
        .seal(
            1,
            RecordId::ZERO,
            Sealer {
                key: (&k4).into(),
                key_id: 2,
            },
        )
        .unwrap();
    assert_ne!(before.id(), after.id());
    assert_eq!(r.content_hash(), content_hash_of(after.body().clone()));
}

/// 310115 lists SM2 key id 1 (sm2_key(5)) besides its Ed25519 key id 0.
fn sm2_directory() -> Directory {
    use crate::fixtures::{directory, member, sm2_member_key};
    directory(vec![
        member("310115", 1, vec![sm2_member_key(1, 5, 0)]),
        member("110105", 2, vec![]),
    ])
}

fn sm2_sealed() -> VerifiedRecord {
    let k = crate::fixtures::sm2_key(5);
    issued(1)
        .seal(
            1,
            RecordId::ZERO,
            Sealer {
                key: (&k).into(),
                key_id: 1,
            },
        )
        .unwrap()
}

/// `n - s` for the SM2 group order `n`, big-endian.
fn negate_mod_order(s: &[u8]) -> Vec<u8> {
    let n =
        hex::decode("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123").unwrap();
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(n[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        out[i] = d.rem_euclid(256) as u8;
    }
    out
}

#[test]
fn an_sm2_record_verifies_under_its_sm2_key_and_forgeries_do_not() {
    let dir = sm2_directory();
    let rec = sm2_sealed();
    assert_eq!(rec.signed().alg, pb::SignatureAlgorithm::Sm2Sm3 as i32);
    assert_eq!(rec.signed().signature.len(), 64);
    // Record ids stay SHA-256 of the body.
    assert_eq!(rec.id(), RecordId::of_body(&rec.signed().body));
    assert!(rec.clone().into_decoded().verify_in(&dir).is_ok());

    let refused = |signed: pb::SignedRecord| {
        DecodedRecord::decode(signed)
            .and_then(|d| d.verify_in(&dir).map(|_| ()))
            .unwrap_err()
            .reject_reason()
    };
    let signed = rec.into_decoded().into_signed();
    // Malleated: s replaced by n - s.
    let mut m = signed.clone();
    let s = negate_mod_order(&m.signature[32..]);
    m.signature[32..].copy_from_slice(&s);
    assert_eq!(refused(m), pb::RejectReason::BadSignature);
    // A flipped byte in r.
    let mut f = signed.clone();
    f.signature[3] ^= 0x40;
    assert_eq!(refused(f), pb::RejectReason::BadSignature);
    // Forged: another SM2 key naming key id 1.
    let other = crate::fixtures::sm2_key(6);
    let forged = issued(1)
        .seal(
            1,
            RecordId::ZERO,
            Sealer {
                key: (&other).into(),
                key_id: 1,
            },
        )
        .unwrap();
    assert_eq!(
        refused(forged.into_decoded().into_signed()),
        pb::RejectReason::BadSignature
    );
    // The envelope's algorithm must be the named key's.
    let mut wrong_alg = signed.clone();
    wrong_alg.alg = pb::SignatureAlgorithm::Ed25519 as i32;
    assert_eq!(refused(wrong_alg), pb::RejectReason::UnsupportedAlgorithm);
    // An Ed25519 signature naming the SM2 key id.
    let ed = issued(1)
        .seal(
            1,
            RecordId::ZERO,
            Sealer {
                key: (&key(1)).into(),
                key_id: 1,
            },
        )
        .unwrap();
    assert_eq!(
        refused(ed.into_decoded().into_signed()),
        pb::RejectReason::UnsupportedAlgorithm
    );
}

#[test]
fn sm2_receipts_and_heads_verify_under_the_signer_s_sm2_key() {
    use crate::statement::{Receipt, sign_receipt, verify_receipt};
    let dir = directory_with_sm2_destination();
    let k = crate::fixtures::sm2_key(5);
    let r = Receipt {
        channel: crate::fixtures::a_to_b(),
        acked_seq: 3,
        head_hash: RecordId([1; 32]),
        issued_at_ms: NOW,
    };
    let signed = sign_receipt(
        Sealer {
            key: (&k).into(),
            key_id: 1,
        },
        &r,
    );
    assert_eq!(signed.alg, pb::SignatureAlgorithm::Sm2Sm3 as i32);
    assert_eq!(verify_receipt(&signed, &dir).unwrap(), r);
    let mut bad = signed.clone();
    bad.signature[40] ^= 1;
    assert!(verify_receipt(&bad, &dir).is_err());
}

/// 110105 (the destination of `a_to_b`) lists SM2 key id 1 (sm2_key(5)).
fn directory_with_sm2_destination() -> Directory {
    use crate::fixtures::{directory, member, sm2_member_key};
    directory(vec![
        member("310115", 1, vec![]),
        member("110105", 2, vec![sm2_member_key(1, 5, 0)]),
    ])
}
