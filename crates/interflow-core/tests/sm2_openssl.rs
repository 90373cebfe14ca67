//! Cross-implementation check of the `SM2_SM3` suite against OpenSSL 3: a signature interflow
//! makes verifies with `openssl pkeyutl` under the same distinguishing identifier, and one
//! OpenSSL makes verifies in interflow. Both sign the same domain-separated message.
//!
//! Skipped (with a message) when `openssl` is missing, unless `INTERFLOW_REQUIRE_OPENSSL=1`
//! (CI sets it), so it cannot pass by not running there.

use std::path::Path;
use std::process::Command;

use interflow_core::sign::Domain;
use interflow_core::sm2_suite::{DISTINGUISHING_ID, Sm2SigningKey};

const BODY: &[u8] = b"\x08\x02\x12\x06310115\x1a\x06110105 \x01";

fn openssl_available() -> bool {
    let ok = Command::new("openssl")
        .args(["list", "-public-key-algorithms"])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("SM2"))
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var("INTERFLOW_REQUIRE_OPENSSL").as_deref() != Ok("1"),
            "INTERFLOW_REQUIRE_OPENSSL=1 but `openssl` with SM2 is not available; install OpenSSL 3 (apt-get install openssl)"
        );
        eprintln!("SKIPPED: `openssl` with SM2 is not available");
    }
    ok
}

/// The exact bytes interflow signs for a record body.
fn signed_message() -> Vec<u8> {
    [Domain::Record.prefix(), BODY].concat()
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn distid_opt() -> String {
    format!("distid:{DISTINGUISHING_ID}")
}

#[test]
fn an_interflow_sm2_signature_verifies_in_openssl() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = Sm2SigningKey::generate();
    std::fs::write(
        dir.path().join("key.pem"),
        key.to_pkcs8_pem().unwrap().as_bytes(),
    )
    .unwrap();
    std::fs::write(dir.path().join("msg"), signed_message()).unwrap();
    let sig = key.sign(Domain::Record, BODY);
    std::fs::write(dir.path().join("sig.der"), der_signature(&sig)).unwrap();
    openssl(
        &["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"],
        dir.path(),
    );
    let verify = |msg: &str| {
        Command::new("openssl")
            .args([
                "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin",
            ])
            .args(["-digest", "sm3", "-pkeyopt", &distid_opt()])
            .args(["-in", msg, "-sigfile", "sig.der"])
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = verify("msg");
    assert!(
        out.status.success(),
        "OpenSSL refused interflow's signature: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // And OpenSSL is really checking: the body alone (no domain prefix) does not verify.
    std::fs::write(dir.path().join("bare"), BODY).unwrap();
    assert!(!verify("bare").status.success());
}

#[test]
fn an_openssl_sm2_signature_verifies_in_interflow() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("msg"), signed_message()).unwrap();
    openssl(
        &["genpkey", "-algorithm", "SM2", "-out", "key.pem"],
        dir.path(),
    );
    openssl(
        &[
            "pkeyutl",
            "-sign",
            "-inkey",
            "key.pem",
            "-rawin",
            "-digest",
            "sm3",
            "-pkeyopt",
            &distid_opt(),
            "-in",
            "msg",
            "-out",
            "sig.der",
        ],
        dir.path(),
    );
    let pem = std::fs::read_to_string(dir.path().join("key.pem")).unwrap();
    let key = Sm2SigningKey::from_pkcs8_pem(&pem).unwrap().verifying_key();
    let der = std::fs::read(dir.path().join("sig.der")).unwrap();
    let sig = raw_signature(&der);
    key.verify(Domain::Record, BODY, &sig).unwrap();
    assert!(key.verify(Domain::Receipt, BODY, &sig).is_err());
}

/// `r || s` as the DER `SEQUENCE { INTEGER r, INTEGER s }` OpenSSL reads.
fn der_signature(sig: &[u8; 64]) -> Vec<u8> {
    let int = |x: &[u8]| {
        let mut v: Vec<u8> = x.iter().copied().skip_while(|b| *b == 0).collect();
        if v.first().is_none_or(|b| b & 0x80 != 0) {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, u8::try_from(v.len()).unwrap()];
        out.extend(v);
        out
    };
    let body = [int(&sig[..32]), int(&sig[32..])].concat();
    let mut out = vec![0x30, u8::try_from(body.len()).unwrap()];
    out.extend(body);
    out
}

/// The DER signature OpenSSL writes, as the fixed 64-byte `r || s`.
fn raw_signature(der: &[u8]) -> Vec<u8> {
    assert_eq!(der[0], 0x30, "not a DER SEQUENCE");
    assert_eq!(
        usize::from(der[1]),
        der.len() - 2,
        "short-form length expected"
    );
    let mut rest = &der[2..];
    let mut out = Vec::new();
    for _ in 0..2 {
        assert_eq!(rest[0], 0x02, "not a DER INTEGER");
        let len = usize::from(rest[1]);
        let int = &rest[2..2 + len];
        let int: Vec<u8> = int.iter().copied().skip_while(|b| *b == 0).collect();
        assert!(int.len() <= 32);
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend(int);
        rest = &rest[2 + len..];
    }
    assert!(rest.is_empty());
    out
}
