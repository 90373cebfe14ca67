//! Offline commands: keys, certificates, agreements, and usage errors.

use interflow_core::agreement::Agreement;
use interflow_core::{RegionCode, keys, pb};
use prost::Message as _;

use crate::{p, run};

#[test]
fn keys_gen_writes_a_private_pkcs8_key_and_its_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("signing.pem");
    let (code, stdout, stderr) = run(&["keys", "gen", "--out", p(&out)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("signing.pub.pem"), "{stdout}");
    let key = keys::load_signing_key(&out).unwrap();
    let public = keys::load_verifying_key(&dir.path().join("signing.pub.pem")).unwrap();
    assert_eq!(key.verifying_key(), public);
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Never overwritten by accident.
    let (code, _, stderr) = run(&["keys", "gen", "--out", p(&out)]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--force"), "{stderr}");

    let psk = dir.path().join("agr.key");
    let (code, stdout, stderr) = run(&["--json", "keys", "pseudonym", "--out", p(&psk)]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["files"][0], p(&psk));
    assert_eq!(std::fs::read_to_string(&psk).unwrap().trim().len(), 64);
    keys::load_pseudonym_key(&psk).unwrap();
}

#[test]
fn certs_commands_make_a_pki_that_interflow_tls_loads() {
    let dir = tempfile::tempdir().unwrap();
    let d = |s: &str| dir.path().join(s);
    for (name, out) in [("fed", "fed-ca"), ("local", "local-ca")] {
        let (code, _, stderr) = run(&["certs", "ca", "--name", name, "--out", p(&d(out))]);
        assert_eq!(code, 0, "{stderr}");
    }
    let steps: Vec<Vec<String>> = vec![
        vec![
            "node",
            "--ca-dir",
            p(&d("fed-ca")),
            "--region",
            "310115",
            "--dns",
            "node.example",
            "--ip",
            "127.0.0.1",
            "--out",
            p(&d("node")),
        ],
        vec![
            "client",
            "--ca-dir",
            p(&d("local-ca")),
            "--role",
            "admin",
            "--name",
            "ops",
            "--out",
            p(&d("clients")),
        ],
        vec![
            "client",
            "--ca-dir",
            p(&d("local-ca")),
            "--role",
            "intake",
            "--name",
            "his",
            "--out",
            p(&d("clients")),
        ],
        vec![
            "local-server",
            "--ca-dir",
            p(&d("local-ca")),
            "--region",
            "310115",
            "--out",
            p(&d("server")),
        ],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(str::to_owned).collect())
    .collect();
    for step in steps {
        let mut args = vec!["certs"];
        args.extend(step.iter().map(String::as_str));
        let (code, _, stderr) = run(&args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
    }
    for role in ["admin", "intake"] {
        interflow_tls::client_config(
            &d("local-ca/ca.pem"),
            &d(&format!("clients/{role}.pem")),
            &d(&format!("clients/{role}.key")),
        )
        .unwrap();
    }
    interflow_tls::client_config(
        &d("fed-ca/ca.pem"),
        &d("node/node.pem"),
        &d("node/node.key"),
    )
    .unwrap();
    let server = interflow_tls::load_certs(&d("server/local-server.pem")).unwrap();
    assert_eq!(server.len(), 1);
    interflow_tls::load_key(&d("server/local-server.key")).unwrap();
    let node = interflow_tls::load_certs(&d("node/node.pem")).unwrap();
    let region: RegionCode = "310115".parse().unwrap();
    assert_eq!(
        interflow_tls::identity_from_cert(&node[0])
            .unwrap()
            .region(),
        Some(region)
    );

    let (code, _, stderr) = run(&[
        "certs",
        "client",
        "--ca-dir",
        p(&d("nope")),
        "--role",
        "admin",
        "--name",
        "x",
        "--out",
        p(&d("x")),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("certs ca"), "{stderr}");
}

const AGREEMENT: &str = r#"id = "agr-310115-110105"
party_a = "310115"
party_b = "110105"
kinds = ["pregnancy", "contraception"]
valid_from = 2026-01-01T00:00:00Z
valid_until = 2031-01-01T00:00:00Z
legal_basis = "statutory_duty"
statute_reference = "PFPL-2021-art-19"
retention_days = 3650
"#;

#[test]
fn an_agreement_may_ask_for_month_precision_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = |s: &str| dir.path().join(s);
    let (code, _, stderr) = run(&["keys", "gen", "--out", p(&d("a.pem"))]);
    assert_eq!(code, 0, "{stderr}");
    let sign = |body: &str, out: &str| {
        std::fs::write(d("agreement.toml"), body).unwrap();
        run(&[
            "--json",
            "agreement",
            "sign",
            "--body",
            p(&d("agreement.toml")),
            "--key",
            p(&d("a.pem")),
            "--region",
            "310115",
            "--out",
            p(&d(out)),
        ])
    };
    let (code, stdout, stderr) = sign(&format!("{AGREEMENT}date_precision = \"month\"\n"), "m.pb");
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["date_precision"], "month", "{v}");
    let (code, stdout, _) = sign(AGREEMENT, "d.pb");
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["date_precision"], "day", "{v}");
    let (code, _, stderr) = sign(&format!("{AGREEMENT}date_precision = \"week\"\n"), "w.pb");
    assert_eq!(code, 2);
    assert!(
        stderr.contains("`date_precision`") && stderr.contains("`month`"),
        "{stderr}"
    );
}

#[test]
fn agreement_signed_by_both_parties_verifies_and_shows() {
    let dir = tempfile::tempdir().unwrap();
    let d = |s: &str| dir.path().join(s);
    std::fs::write(d("agreement.toml"), AGREEMENT).unwrap();
    for party in ["a", "b"] {
        let (code, _, stderr) = run(&["keys", "gen", "--out", p(&d(&format!("{party}.pem")))]);
        assert_eq!(code, 0, "{stderr}");
    }
    let agr = d("agr.pb");
    let (code, stdout, stderr) = run(&[
        "agreement",
        "sign",
        "--body",
        p(&d("agreement.toml")),
        "--key",
        p(&d("a.pem")),
        "--region",
        "310115",
        "--out",
        p(&agr),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("110105: MISSING"), "{stdout}");
    assert!(stdout.contains("--in"), "{stdout}");
    let first = std::fs::read(&agr).unwrap();

    // The first party's file is never overwritten by a fresh encoding.
    let (code, _, stderr) = run(&[
        "agreement",
        "sign",
        "--body",
        p(&d("agreement.toml")),
        "--key",
        p(&d("a.pem")),
        "--region",
        "310115",
        "--out",
        p(&agr),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("exists"), "{stderr}");

    // A stranger cannot sign.
    let (code, _, stderr) = run(&[
        "agreement",
        "sign",
        "--in",
        p(&agr),
        "--key",
        p(&d("b.pem")),
        "--region",
        "440305",
        "--out",
        p(&agr),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not a party"), "{stderr}");

    let (code, _, stderr) = run(&[
        "agreement",
        "sign",
        "--in",
        p(&agr),
        "--key",
        p(&d("b.pem")),
        "--region",
        "110105",
        "--out",
        p(&agr),
    ]);
    assert_eq!(code, 0, "{stderr}");

    let signed = pb::SignedAgreement::decode(std::fs::read(&agr).unwrap().as_slice()).unwrap();
    let original = pb::SignedAgreement::decode(first.as_slice()).unwrap();
    assert_eq!(
        signed.body, original.body,
        "the body bytes are kept as first stored"
    );
    assert_eq!(signed.signatures.len(), 2);
    let ka = keys::load_verifying_key(&d("a.pub.pem")).unwrap();
    let kb = keys::load_verifying_key(&d("b.pub.pem")).unwrap();
    let a: RegionCode = "310115".parse().unwrap();
    let verified =
        Agreement::verify(signed, &|r| if r == a { Some(ka) } else { Some(kb) }).unwrap();
    assert_eq!(verified.id, "agr-310115-110105");

    let (code, stdout, stderr) = run(&["--json", "agreement", "show", p(&agr)]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["complete"], true);
    assert_eq!(v["signatures"].as_array().unwrap().len(), 2);
    assert_eq!(
        v["kinds"],
        serde_json::json!(["pregnancy", "contraception"])
    );
    assert_eq!(v["valid_until"], "2031-01-01T00:00:00Z");
    assert_eq!(v["verified"], serde_json::Value::Null);

    let with = |a: &str, b: &str| {
        run(&[
            "agreement",
            "show",
            p(&agr),
            "--verify-with",
            &format!("310115={}", p(&d(a))),
            "--verify-with",
            &format!("110105={}", p(&d(b))),
        ])
    };
    let (code, stdout, stderr) = with("a.pub.pem", "b.pub.pem");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("a node would accept it"), "{stdout}");
    let (code, stdout, _) = with("b.pub.pem", "b.pub.pem");
    assert_eq!(code, 1);
    assert!(stdout.contains("DOES NOT VERIFY"), "{stdout}");
    // A key for one party only: a signature that does not verify still exits 1.
    let (code, stdout, _) = run(&[
        "agreement",
        "show",
        p(&agr),
        "--verify-with",
        &format!("310115={}", p(&d("b.pub.pem"))),
    ]);
    assert!(stdout.contains("DOES NOT VERIFY"), "{stdout}");
    assert_eq!(code, 1, "{stdout}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, stderr) = run(&["pending", "--max-age", "5x"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown time unit \"x\""), "{stderr}");
    assert_eq!(run(&["frobnicate"]).0, 2);
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for cmd in [
        "pending",
        "channels",
        "record",
        "lookup",
        "submit",
        "reconcile",
        "verify",
        "audit",
        "keys",
        "certs",
        "agreement",
    ] {
        assert!(stdout.contains(cmd), "{cmd}: {stdout}");
    }
}

#[test]
fn offline_region_flags_are_checked_and_connection_flags_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let (code, _, stderr) = run(&["certs", "ca", "--name", "local", "--out", p(&ca)]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run(&[
        "certs",
        "local-server",
        "--ca-dir",
        p(&ca),
        "--region",
        "12",
        "--out",
        p(&dir.path().join("tls")),
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("invalid value '12' for '--region <REGION>'"),
        "{stderr}"
    );
    // A global connection flag before an offline command changes nothing.
    let (code, stdout, stderr) = run(&[
        "--region",
        "440305",
        "--dev-node",
        "440305",
        "certs",
        "local-server",
        "--ca-dir",
        p(&ca),
        "--region",
        "310115",
        "--out",
        p(&dir.path().join("tls")),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("310115"), "{stdout}");
}

#[test]
fn missing_connection_settings_are_named() {
    let (code, _, stderr) = run(&["pending"]);
    assert_eq!(code, 2);
    for want in ["--addr", "INTERFLOW_CA", "--config", "--dev-node"] {
        assert!(stderr.contains(want), "{stderr}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(&["stats", "--dev-node", "310115", "--dev-dir", p(dir.path())]);
    assert_eq!(code, 2);
    assert!(stderr.contains("interflow dev"), "{stderr}");
    let (code, _, stderr) = run(&["--dev-node", "310115", "--dev-dir", p(dir.path()), "stats"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("interflow dev"), "{stderr}");
}

#[test]
fn directory_signed_by_the_operator_verifies_as_a_node_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for k in ["operator", "a", "b"] {
        let (code, out, err) = run(&["keys", "gen", "--out", p(&d.join(format!("{k}.pem")))]);
        assert_eq!(code, 0, "{out}{err}");
    }
    std::fs::write(
        d.join("members.toml"),
        "serial = 3\nvalid_days = 7\n\n\
         [[member]]\nregion = \"310115\"\nname = \"Pudong\"\nendpoint = \"pudong.example:7443\"\nsigning_key = \"a.pub.pem\"\n\n\
         [[member]]\nregion = \"110105\"\nname = \"Chaoyang\"\nendpoint = \"chaoyang.example:7443\"\nsigning_key = \"b.pub.pem\"\n",
    )
    .unwrap();
    let out_file = d.join("directory.pb");
    let (code, out, err) = run(&[
        "directory",
        "sign",
        "--members",
        p(&d.join("members.toml")),
        "--key",
        p(&d.join("operator.pem")),
        "--out",
        p(&out_file),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // What a node does at start: verify under the operator's public key.
    let bytes = std::fs::read(&out_file).unwrap();
    let signed =
        <interflow_core::pb::SignedDirectory as prost::Message>::decode(bytes.as_slice()).unwrap();
    let operator = interflow_core::keys::load_verifying_key(&d.join("operator.pub.pem")).unwrap();
    let directory = interflow_core::directory::Directory::verify(&signed, &operator).unwrap();
    assert_eq!(directory.serial, 3);
    // `valid_days`: it expires a week after signing.
    let week = directory.expires_at_ms.unwrap() - directory.issued_at_ms;
    assert_eq!(week, 7 * 86_400_000);
    let a = interflow_core::keys::load_verifying_key(&d.join("a.pub.pem")).unwrap();
    assert_eq!(directory.signing_key("310115".parse().unwrap()), Some(a));

    let (code, out, _) = run(&[
        "directory",
        "show",
        p(&out_file),
        "--operator-key",
        p(&d.join("operator.pub.pem")),
        "--json",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("\"signature_valid\": true"), "{out}");
    // Another key: the check fails with exit 1.
    let (code, out, _) = run(&[
        "directory",
        "show",
        p(&out_file),
        "--operator-key",
        p(&d.join("a.pub.pem")),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("INVALID"), "{out}");
    // A member whose key file is missing is named.
    std::fs::write(
        d.join("bad.toml"),
        "serial = 4\n[[member]]\nregion = \"310115\"\nname = \"P\"\nendpoint = \"x:1\"\nsigning_key = \"nope.pem\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&[
        "directory",
        "sign",
        "--members",
        p(&d.join("bad.toml")),
        "--key",
        p(&d.join("operator.pem")),
        "--out",
        p(&d.join("bad.pb")),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("nope.pem") && err.contains("member 1"),
        "{err}"
    );
}

#[test]
fn a_rotated_key_and_a_revocation_reach_the_signed_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for k in ["operator", "a"] {
        let (code, out, err) = run(&["keys", "gen", "--out", p(&d.join(format!("{k}.pem")))]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let (code, out, err) = run(&[
        "keys",
        "rotate",
        "--out",
        p(&d.join("a-1.pem")),
        "--key-id",
        "1",
        "--alg",
        "sm2",
        "--valid-from",
        "2026-12-05T08:00:00Z",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let entry = &out[out.find("[[member.key]]").expect("the printed entry")..];
    std::fs::write(
        d.join("members.toml"),
        format!(
            "serial = 2\n\n[[member]]\nregion = \"310115\"\nname = \"Pudong\"\nendpoint = \"pudong.example:7443\"\nsigning_key = \"a.pub.pem\"\n\n\
             [[member.key]]\nid = 0\nsigning_key = \"a.pub.pem\"\nrevoked_at = \"2026-12-06T00:00:00Z\"\n\n{entry}"
        ),
    )
    .unwrap();
    let out_file = d.join("directory.pb");
    let (code, out, err) = run(&[
        "directory",
        "sign",
        "--members",
        p(&d.join("members.toml")),
        "--key",
        p(&d.join("operator.pem")),
        "--out",
        p(&out_file),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let bytes = std::fs::read(&out_file).unwrap();
    let signed =
        <interflow_core::pb::SignedDirectory as prost::Message>::decode(bytes.as_slice()).unwrap();
    let operator = interflow_core::keys::load_verifying_key(&d.join("operator.pub.pem")).unwrap();
    let directory = interflow_core::directory::Directory::verify(&signed, &operator).unwrap();
    let a: interflow_core::RegionCode = "310115".parse().unwrap();
    let revoked = 1_780_272_000_000 + 188 * 86_400_000; // 2026-12-06T00:00:00Z
    assert!(directory.key_for(a, 0, revoked - 1).is_ok());
    assert!(directory.key_for(a, 0, revoked).is_err());
    let sm2 = interflow_core::keys::load_record_signing_key(&d.join("a-1.pem")).unwrap();
    assert_eq!(directory.key_id_of(a, &sm2.public_key(), revoked), Some(1));

    let (code, out, _) = run(&["directory", "show", p(&out_file), "--json"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"alg\": \"sm2\""), "{out}");
    assert!(
        out.contains("\"revoked_at\": \"2026-12-06T00:00:00Z\""),
        "{out}"
    );
}
