use super::*;

#[test]
fn ca_round_trips_through_pem_and_keeps_issuing() {
    let ca = Ca::generate("federation").unwrap();
    let loaded = Ca::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(loaded.cert_der(), ca.cert_der());
    // Certificates from the loaded CA name the same issuer, so they chain to the anchor.
    let issued = loaded
        .issue_role_cert(Role::Admin, "ops", Validity::days(1))
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(issued.cert_der.as_ref()).unwrap();
    let (_, anchor) = x509_parser::parse_x509_certificate(ca.cert_der().as_ref()).unwrap();
    assert_eq!(cert.issuer().as_raw(), anchor.subject().as_raw());
    cert.verify_signature(Some(anchor.public_key())).unwrap();
    loaded
        .crl(
            &[issued.serial],
            SystemTime::now(),
            SystemTime::now() + Duration::from_secs(60),
        )
        .unwrap();

    let other = Ca::generate("other").unwrap();
    assert!(matches!(
        Ca::from_pem(&ca.cert_pem(), &other.key_pem()),
        Err(TlsError::CaKeyMismatch)
    ));
}

#[test]
fn ca_files_load_back() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
    let ca = Ca::generate("federation").unwrap();
    ca.write_pem_files(&cert, &key).unwrap();
    assert_eq!(Ca::load(&cert, &key).unwrap().cert_der(), ca.cert_der());
}

#[test]
fn serials_print_and_parse_as_hex() {
    let serial = Serial::from_bytes(&[0x01, 0xab, 0x00, 0xff]);
    assert_eq!(serial.to_string(), "01ab00ff");
    assert_eq!("01ab00ff".parse::<Serial>().unwrap(), serial);
    assert_eq!("01:AB:00:FF".parse::<Serial>().unwrap(), serial);
    for bad in ["", "1", "0g", "01ab0"] {
        assert!(bad.parse::<Serial>().is_err(), "{bad}");
    }
    let ca = Ca::generate("ca").unwrap();
    let issued = ca
        .issue_role_cert(Role::Intake, "x", Validity::days(1))
        .unwrap();
    assert_eq!(issued.serial.as_bytes().len(), 16);
    assert_eq!(Serial::of_cert(&issued.cert_der).unwrap(), issued.serial);
}

#[test]
fn bad_inputs_are_refused() {
    let ca = Ca::generate("ca").unwrap();
    let now = SystemTime::now();
    for name in ["", " padded", "line\nbreak", &"x".repeat(65)] {
        assert!(matches!(
            ca.issue_role_cert(Role::Admin, name, Validity::days(1)),
            Err(TlsError::InvalidHolderName { .. })
        ));
    }
    assert!(matches!(
        ca.issue_role_cert(Role::Admin, "ok", Validity::new(now, now)),
        Err(TlsError::EmptyValidity)
    ));
    assert!(matches!(
        ca.crl(&[], now, now - Duration::from_secs(1)),
        Err(TlsError::EmptyValidity)
    ));
    let region: RegionCode = "310115".parse().unwrap();
    assert!(matches!(
        ca.issue_peer_cert(region, &["not a name".to_owned()], &[], Validity::days(1)),
        Err(TlsError::InvalidServerName { .. })
    ));
    assert!(matches!(
        Validity::new(
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::from_secs(MAX_UNIX_SECS + 1)
        )
        .apply(&mut CertificateParams::default()),
        Err(TlsError::TimeOutOfRange)
    ));
}
