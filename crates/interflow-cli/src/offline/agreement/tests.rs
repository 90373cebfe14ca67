use super::*;

pub(crate) const SAMPLE: &str = r#"
id = "agr-310115-110105"
party_a = "310115"
party_b = "110105"
kinds = ["pregnancy", "contraception"]
valid_from = 2026-01-01T00:00:00Z
valid_until = "2031-01-01T00:00:00+08:00"
legal_basis = "statutory_duty"
statute_reference = "PFPL-2021-art-19"
retention_days = 3650
"#;

#[test]
fn toml_becomes_a_body_that_two_parties_sign_and_a_node_accepts() {
    let body = body_from_toml(SAMPLE).unwrap();
    assert_eq!(body.valid_from_ms, 1_767_225_600_000);
    assert_eq!(body.valid_until_ms, 1_924_992_000_000 - 8 * 3_600_000);
    assert_eq!(
        body.kinds,
        vec![
            pb::RecordKind::PregnancyStatus as i32,
            pb::RecordKind::ContraceptionStatus as i32
        ]
    );
    let bytes = agreement::encode_body(&body);
    let mut signed = pb::SignedAgreement {
        body: bytes.clone(),
        signatures: vec![],
    };
    let ka = keys::generate_signing_key();
    let kb = keys::generate_signing_key();
    let (a, b): (RegionCode, RegionCode) = ("310115".parse().unwrap(), "110105".parse().unwrap());
    assert!(add_signature(&mut signed, &body, &ka, a).unwrap());
    // Through a file, as the second party receives it.
    let wire = signed.encode_to_vec();
    let mut second = pb::SignedAgreement::decode(wire.as_slice()).unwrap();
    assert!(add_signature(&mut second, &body, &kb, b).unwrap());
    assert_eq!(second.body, bytes, "the body is never re-encoded");
    // Signing again with the same key changes nothing; another key is refused.
    assert!(!add_signature(&mut second, &body, &kb, b).unwrap());
    assert!(add_signature(&mut second, &body, &ka, b).is_err());
    // A stranger cannot sign.
    let c: RegionCode = "440305".parse().unwrap();
    assert!(
        add_signature(&mut second, &body, &kb, c)
            .unwrap_err()
            .to_string()
            .contains("not a party")
    );

    let keys_of = |r: RegionCode| {
        if r == a {
            Some(ka.verifying_key())
        } else if r == b {
            Some(kb.verifying_key())
        } else {
            None
        }
    };
    let verified = agreement::Agreement::verify(second.clone(), &keys_of).unwrap();
    assert_eq!(verified.id, "agr-310115-110105");
    assert_eq!(verified.retention_days, 3650);

    let mut map = BTreeMap::new();
    map.insert(a, ka.verifying_key());
    map.insert(b, kb.verifying_key());
    let v = view(Path::new("agr.pb"), &second, &body, &map);
    assert!(v.complete && v.verified == Some(true));
    assert_eq!(v.signatures[0].role, "party_a");
    assert_eq!(v.signatures[1].valid, Some(true));
    // With a wrong key, the check fails and says so.
    map.insert(a, kb.verifying_key());
    let v = view(Path::new("agr.pb"), &second, &body, &map);
    assert_eq!(v.verified, Some(false));
    assert_eq!(v.outcome(), Outcome::Problem);
    // Half signed: the missing party is named.
    let v = view(Path::new("agr.pb"), &signed, &body, &BTreeMap::new());
    assert_eq!(v.missing, vec!["110105".to_owned()]);
    assert!(v.human().contains("--region 110105"));
}

#[test]
fn bad_agreement_toml_is_explained() {
    let cases = [
        ("id = \"agr-310115-110105\"", "id = \"has space\"", "`id`"),
        (
            "party_b = \"110105\"",
            "party_b = \"310115\"",
            "must differ",
        ),
        ("party_b = \"110105\"", "party_b = \"990000\"", "party_b"),
        (
            "kinds = [\"pregnancy\", \"contraception\"]",
            "kinds = []",
            "at least one",
        ),
        (
            "kinds = [\"pregnancy\", \"contraception\"]",
            "kinds = [\"pregnancy\", \"pregnancy\"]",
            "twice",
        ),
        (
            "valid_from = 2026-01-01T00:00:00Z",
            "valid_from = 2040-01-01T00:00:00Z",
            "after `valid_from`",
        ),
        (
            "valid_from = 2026-01-01T00:00:00Z",
            "valid_from = 2026-01-01T00:00:00",
            "UTC offset",
        ),
        (
            "legal_basis = \"statutory_duty\"",
            "legal_basis = \"consent\"",
            "must be absent",
        ),
        (
            "legal_basis = \"statutory_duty\"",
            "legal_basis = \"contract\"",
            "expected `statutory_duty` or `consent`",
        ),
        (
            "statute_reference = \"PFPL-2021-art-19\"",
            "statute_reference = \" \"",
            "is required",
        ),
        ("retention_days = 3650", "retention_days = 0", "at least 1"),
        (
            "retention_days = 3650",
            "retention_days = 3650\ncolour = 1",
            "colour",
        ),
    ];
    for (from, to, want) in cases {
        let text = SAMPLE.replace(from, to);
        assert_ne!(text, SAMPLE, "{from}");
        let e = format!("{:#}", body_from_toml(&text).unwrap_err());
        assert!(e.contains(want), "{to}: {e}");
    }
}
