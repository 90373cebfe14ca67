//! Authoring and signing bilateral agreements offline.
//!
//! An agreement is written as TOML, encoded once into `AgreementBody` bytes, and stored as a
//! `SignedAgreement` (binary protobuf). Each party then adds its signature over those bytes as
//! stored: the second party signs the file the first one produced and the body is never
//! re-encoded, so both signatures cover the same bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail, ensure};
use chrono::DateTime;
use clap::Subcommand;
use ed25519_dalek::{SigningKey, VerifyingKey};
use interflow_core::canonical::decode_canonical;
use interflow_core::payload::Kind;
use interflow_core::sign::{self, Domain};
use interflow_core::{RegionCode, agreement, keys, pb};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::cli::region_code;
use crate::{Ctx, Outcome, Report, emit};

#[derive(Subcommand, Debug, Clone)]
pub enum AgreementCommand {
    /// Adds this party's signature to an agreement.
    ///
    /// The first party encodes the TOML body once (`--body`) and signs it; the second party
    /// signs the same file (`--in agr.pb`), whose body bytes are kept exactly as stored.
    Sign {
        /// Agreement body as TOML (first signer).
        #[arg(long, conflicts_with = "input", required_unless_present = "input")]
        body: Option<PathBuf>,
        /// A signed agreement file to add a signature to (second signer).
        #[arg(long = "in", value_name = "PB")]
        input: Option<PathBuf>,
        /// This party's record-signing key (PKCS#8 PEM).
        #[arg(long)]
        key: PathBuf,
        /// This party's region code; must be party_a or party_b.
        #[arg(long, value_parser = region_code)]
        region: String,
        /// Where to write the signed agreement (binary protobuf `SignedAgreement`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Prints an agreement and which signatures it carries; with `--verify-with` for both
    /// parties, also checks them.
    Show {
        /// The signed agreement file.
        file: PathBuf,
        /// A party's public key, `CODE=signing.pub.pem` (repeatable).
        #[arg(long, value_name = "CODE=PEM")]
        verify_with: Vec<String>,
    },
    /// Installs an agreement signed by both parties at the node, without a restart (talks to
    /// the node, admin role): the node checks both signatures against the directory, keeps it
    /// and puts it in force at once. Run it at both parties' nodes.
    Install {
        /// The signed agreement file (binary protobuf `SignedAgreement`).
        file: PathBuf,
        /// The agreement's pseudonym key file on the node's host (64 hex characters, mode
        /// 0600), as `[[pseudonym_keys]] key_file`; a relative path is taken from here.
        #[arg(long, value_name = "KEY_FILE")]
        pseudonym_key: PathBuf,
    },
    /// The agreements in force at the node (configured and installed): parties, state
    /// (active, terminated, expired, not yet valid), validity, when terminated and when the
    /// grace period ends (talks to the node, admin role).
    List,
    /// Terminates an agreement this node is a party to, now (talks to the node, admin role):
    /// the node signs a termination, keeps it, refuses new records under the agreement and
    /// sends the notice to the partner. Run it again if the partner was unreachable: the kept
    /// notice is resent. The partner may recover what was issued before for
    /// `[federation] termination_grace_days`.
    Terminate {
        /// The agreement id, e.g. `agr-310115-110105`.
        agreement_id: String,
    },
}

/// The TOML an agreement is authored in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementToml {
    /// 1 to 64 ASCII letters, digits, `-`, `_` or `.`, e.g. `agr-310115-110105`.
    pub id: String,
    pub party_a: String,
    pub party_b: String,
    /// Kinds covered both ways: `pregnancy` and/or `contraception` (never `residence`).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Kinds only `party_a` sends to `party_b`, e.g. `residence` when `party_a` is the bureau
    /// where people now live and `party_b` their home bureau.
    #[serde(default)]
    pub kinds_a_to_b: Vec<String>,
    /// Kinds only `party_b` sends to `party_a`.
    #[serde(default)]
    pub kinds_b_to_a: Vec<String>,
    /// Status follows residence: status goes to the residence bureau only while its latest
    /// notice for the person is `arrived`.
    #[serde(default)]
    pub status_follows_residence: bool,
    /// RFC 3339, as a TOML datetime or a string.
    pub valid_from: toml::Value,
    pub valid_until: toml::Value,
    /// `statutory_duty` or `consent`.
    pub legal_basis: String,
    #[serde(default)]
    pub statute_reference: Option<String>,
    pub retention_days: u32,
    /// `day` (the default) or `month`: how precise `observed_on` and `since` may be in
    /// records under the agreement (month: stored as the first day of their month).
    #[serde(default)]
    pub date_precision: Option<String>,
    /// `ed25519` or `sm2`: the suite both parties' records under the agreement must be signed
    /// with; absent: any.
    #[serde(default)]
    pub required_signature_algorithm: Option<String>,
}

fn instant_ms(field: &str, v: &toml::Value) -> anyhow::Result<i64> {
    let text = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) => d.to_string(),
        _ => bail!("`{field}` must be an RFC 3339 time such as 2026-01-01T00:00:00Z"),
    };
    let t = DateTime::parse_from_rfc3339(&text).map_err(|_| {
        anyhow!(
            "`{field}` = `{text}` is not an RFC 3339 time with a UTC offset, e.g. 2026-01-01T00:00:00Z or 2026-01-01T00:00:00+08:00"
        )
    })?;
    Ok(t.timestamp_millis())
}

fn kind_list(field: &str, names: &[String]) -> anyhow::Result<Vec<Kind>> {
    let mut kinds: Vec<Kind> = Vec::new();
    for k in names {
        let kind: Kind = k.parse().with_context(|| format!("`{field}`"))?;
        ensure!(!kinds.contains(&kind), "`{field}` lists `{kind}` twice");
        kinds.push(kind);
    }
    Ok(kinds)
}

fn wire_kinds(kinds: Vec<Kind>) -> Vec<i32> {
    kinds
        .into_iter()
        .map(|k| pb::RecordKind::from(k) as i32)
        .collect()
}

/// Checks the authored fields and builds the body the parties will sign.
pub fn body_from_toml(text: &str) -> anyhow::Result<pb::AgreementBody> {
    let a: AgreementToml = toml::from_str(text).context("parsing the agreement TOML")?;
    ensure!(
        !a.id.is_empty()
            && a.id.len() <= 64
            && a.id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
        "`id` must be 1 to 64 ASCII letters, digits, `-`, `_` or `.`"
    );
    let party_a: RegionCode = a
        .party_a
        .parse()
        .with_context(|| format!("`party_a` = `{}`", a.party_a))?;
    let party_b: RegionCode = a
        .party_b
        .parse()
        .with_context(|| format!("`party_b` = `{}`", a.party_b))?;
    ensure!(party_a != party_b, "`party_b` must differ from `party_a`");
    let kinds = kind_list("kinds", &a.kinds)?;
    let kinds_a_to_b = kind_list("kinds_a_to_b", &a.kinds_a_to_b)?;
    let kinds_b_to_a = kind_list("kinds_b_to_a", &a.kinds_b_to_a)?;
    ensure!(
        !(kinds.is_empty() && kinds_a_to_b.is_empty() && kinds_b_to_a.is_empty()),
        "`kinds` must list at least one of `pregnancy`, `contraception` (or name kinds per direction in `kinds_a_to_b` / `kinds_b_to_a`)"
    );
    ensure!(
        !kinds.contains(&Kind::Residence),
        "`kinds` may not list `residence`: it goes one way, from the residence bureau to the home bureau; name it in `kinds_a_to_b` or `kinds_b_to_a`"
    );
    ensure!(
        !a.status_follows_residence
            || kinds_a_to_b.contains(&Kind::Residence)
            || kinds_b_to_a.contains(&Kind::Residence),
        "`status_follows_residence` needs `residence` in `kinds_a_to_b` or `kinds_b_to_a`"
    );
    let valid_from_ms = instant_ms("valid_from", &a.valid_from)?;
    let valid_until_ms = instant_ms("valid_until", &a.valid_until)?;
    ensure!(
        valid_until_ms > valid_from_ms,
        "`valid_until` must be after `valid_from`"
    );
    let statute = a.statute_reference.unwrap_or_default();
    let legal_basis = match a.legal_basis.as_str() {
        "statutory_duty" => {
            ensure!(
                !statute.trim().is_empty(),
                "`statute_reference` is required when `legal_basis` is `statutory_duty`"
            );
            pb::LegalBasisKind::StatutoryDuty
        }
        "consent" => {
            ensure!(
                statute.is_empty(),
                "`statute_reference` must be absent when `legal_basis` is `consent`"
            );
            pb::LegalBasisKind::Consent
        }
        other => bail!("`legal_basis` = `{other}`: expected `statutory_duty` or `consent`"),
    };
    ensure!(a.retention_days >= 1, "`retention_days` must be at least 1");
    let date_precision = match a.date_precision.as_deref() {
        None | Some("day") => pb::DatePrecision::Day,
        Some("month") => pb::DatePrecision::Month,
        Some(other) => anyhow::bail!("`date_precision` is `{other}`; use `day` or `month`"),
    };
    let required_signature_algorithm = match a.required_signature_algorithm.as_deref() {
        None => pb::SignatureAlgorithm::Unspecified,
        Some("ed25519") => pb::SignatureAlgorithm::Ed25519,
        Some("sm2") => pb::SignatureAlgorithm::Sm2Sm3,
        Some(other) => {
            anyhow::bail!("`required_signature_algorithm` is `{other}`; use `ed25519` or `sm2`")
        }
    };
    Ok(pb::AgreementBody {
        agreement_id: a.id,
        party_a: party_a.to_string(),
        party_b: party_b.to_string(),
        kinds: wire_kinds(kinds),
        kinds_a_to_b: wire_kinds(kinds_a_to_b),
        kinds_b_to_a: wire_kinds(kinds_b_to_a),
        status_follows_residence: a.status_follows_residence,
        valid_from_ms,
        valid_until_ms,
        legal_basis: legal_basis as i32,
        statute_reference: statute,
        retention_days: a.retention_days,
        date_precision: date_precision as i32,
        required_signature_algorithm: required_signature_algorithm as i32,
    })
}

/// Reads a `SignedAgreement` file and its canonical body.
pub fn read_signed(path: &Path) -> anyhow::Result<(pb::SignedAgreement, pb::AgreementBody)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading `{}`", path.display()))?;
    let signed = pb::SignedAgreement::decode(bytes.as_slice()).with_context(|| {
        format!(
            "`{}` is not a signed agreement (binary protobuf `SignedAgreement`)",
            path.display()
        )
    })?;
    let body: pb::AgreementBody = decode_canonical("AgreementBody", &signed.body)
        .with_context(|| format!("the body in `{}`", path.display()))?;
    Ok((signed, body))
}

/// Adds `region`'s signature made with `key` to `signed`. Signing twice with the same key is a
/// no-op (Ed25519 signatures are deterministic); a different signature for the same region is
/// refused.
pub fn add_signature(
    signed: &mut pb::SignedAgreement,
    body: &pb::AgreementBody,
    key: &SigningKey,
    region: RegionCode,
) -> anyhow::Result<bool> {
    ensure!(
        body.party_a == region.as_str() || body.party_b == region.as_str(),
        "`{region}` is not a party of agreement `{}` (parties `{}` and `{}`)",
        body.agreement_id,
        body.party_a,
        body.party_b
    );
    let sig = agreement::party_signature(key, region, &signed.body);
    if let Some(existing) = signed
        .signatures
        .iter()
        .find(|s| s.region == region.as_str())
    {
        ensure!(
            existing == &sig,
            "the agreement already carries a different signature of `{region}`; sign a fresh copy of the other party's file instead"
        );
        return Ok(false);
    }
    sign::verify(
        &key.verifying_key(),
        Domain::Agreement,
        &signed.body,
        &sig.signature,
    )
    .context("the new signature does not verify; the key file may be damaged")?;
    signed.signatures.push(sig);
    Ok(true)
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("`{}` names no file", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing `{}`", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing `{}`", path.display()))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// An agreement as `agreement show` and `agreement sign` print it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AgreementView {
    pub file: String,
    pub agreement_id: String,
    pub party_a: String,
    pub party_b: String,
    /// Kinds both ways.
    pub kinds: Vec<&'static str>,
    /// Kinds only party A sends to party B (e.g. `residence`: A is where people live).
    pub kinds_a_to_b: Vec<&'static str>,
    pub kinds_b_to_a: Vec<&'static str>,
    pub status_follows_residence: bool,
    pub valid_from: String,
    pub valid_until: String,
    /// `statutory_duty` or `consent`.
    pub legal_basis: &'static str,
    pub statute_reference: Option<String>,
    pub retention_days: u32,
    /// `day` or `month`: how precise `observed_on` and `since` are under the agreement.
    pub date_precision: &'static str,
    /// SHA-256 of the body bytes both parties sign; compare it out of band.
    pub body_sha256: String,
    pub signatures: Vec<SignatureView>,
    /// Parties whose signature is missing.
    pub missing: Vec<String>,
    /// Both parties have signed.
    pub complete: bool,
    /// With `--verify-with` for both parties: whether the agreement verifies as a node checks
    /// it; `null` otherwise.
    pub verified: Option<bool>,
    pub verify_error: Option<String>,
    /// `agreement sign`: whether this run added a signature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_now: Option<bool>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SignatureView {
    pub region: String,
    /// `party_a`, `party_b` or `stranger`.
    pub role: &'static str,
    pub alg: &'static str,
    /// Checked against a `--verify-with` key; `null` when no key was given.
    pub valid: Option<bool>,
}

pub fn view(
    file: &Path,
    signed: &pb::SignedAgreement,
    body: &pb::AgreementBody,
    keys_of: &BTreeMap<RegionCode, VerifyingKey>,
) -> AgreementView {
    let signatures: Vec<SignatureView> = signed
        .signatures
        .iter()
        .map(|s| SignatureView {
            region: s.region.clone(),
            role: if s.region == body.party_a {
                "party_a"
            } else if s.region == body.party_b {
                "party_b"
            } else {
                "stranger"
            },
            alg: if s.alg == pb::SignatureAlgorithm::Ed25519 as i32 {
                "ed25519"
            } else {
                "unsupported"
            },
            valid: s
                .region
                .parse::<RegionCode>()
                .ok()
                .and_then(|r| keys_of.get(&r))
                .map(|k| sign::verify(k, Domain::Agreement, &signed.body, &s.signature).is_ok()),
        })
        .collect();
    let missing: Vec<String> = [&body.party_a, &body.party_b]
        .into_iter()
        .filter(|p| !signed.signatures.iter().any(|s| &&s.region == p))
        .cloned()
        .collect();
    let both_keys = [&body.party_a, &body.party_b].into_iter().all(|p| {
        p.parse::<RegionCode>()
            .is_ok_and(|r| keys_of.contains_key(&r))
    });
    let (verified, verify_error) = if both_keys {
        match agreement::Agreement::verify(signed.clone(), &|r| keys_of.get(&r).copied()) {
            Ok(_) => (Some(true), None),
            Err(e) => (Some(false), Some(e.to_string())),
        }
    } else {
        (None, None)
    };
    AgreementView {
        file: file.display().to_string(),
        agreement_id: body.agreement_id.clone(),
        party_a: body.party_a.clone(),
        party_b: body.party_b.clone(),
        kinds: body
            .kinds
            .iter()
            .map(|k| crate::names::kind_name(*k))
            .collect(),
        kinds_a_to_b: body
            .kinds_a_to_b
            .iter()
            .map(|k| crate::names::kind_name(*k))
            .collect(),
        kinds_b_to_a: body
            .kinds_b_to_a
            .iter()
            .map(|k| crate::names::kind_name(*k))
            .collect(),
        status_follows_residence: body.status_follows_residence,
        valid_from: crate::human::instant(body.valid_from_ms),
        valid_until: crate::human::instant(body.valid_until_ms),
        legal_basis: match pb::LegalBasisKind::try_from(body.legal_basis) {
            Ok(pb::LegalBasisKind::StatutoryDuty) => "statutory_duty",
            Ok(pb::LegalBasisKind::Consent) => "consent",
            _ => "unspecified",
        },
        statute_reference: Some(body.statute_reference.clone()).filter(|s| !s.is_empty()),
        retention_days: body.retention_days,
        date_precision: match pb::DatePrecision::try_from(body.date_precision) {
            Ok(pb::DatePrecision::Day) => "day",
            Ok(pb::DatePrecision::Month) => "month",
            Err(_) => "unknown",
        },
        body_sha256: hex::encode(Sha256::digest(&signed.body)),
        complete: missing.is_empty(),
        signatures,
        missing,
        verified,
        verify_error,
        signed_now: None,
    }
}

impl Report for AgreementView {
    fn human(&self) -> String {
        let mut t = crate::human::table(&["FIELD", "VALUE"]);
        let mut row = |k: &str, v: String| {
            t.add_row(vec![k.to_owned(), v]);
        };
        row("file", self.file.clone());
        row("id", self.agreement_id.clone());
        row("parties", format!("{} and {}", self.party_a, self.party_b));
        row("kinds", self.kinds.join(", "));
        if !self.kinds_a_to_b.is_empty() {
            row("kinds a → b", self.kinds_a_to_b.join(", "));
        }
        if !self.kinds_b_to_a.is_empty() {
            row("kinds b → a", self.kinds_b_to_a.join(", "));
        }
        if self.status_follows_residence {
            row("status follows residence", "yes".into());
        }
        row(
            "valid",
            format!("from {} until {}", self.valid_from, self.valid_until),
        );
        row(
            "legal basis",
            match &self.statute_reference {
                Some(s) => format!("{} ({s})", self.legal_basis),
                None => self.legal_basis.to_owned(),
            },
        );
        row("retention", format!("{} days", self.retention_days));
        row("dates", format!("to the {}", self.date_precision));
        row("body sha-256", self.body_sha256.clone());
        for s in &self.signatures {
            let valid = match s.valid {
                Some(true) => ", verified",
                Some(false) => ", DOES NOT VERIFY",
                None => "",
            };
            row(
                "signature",
                format!("{} ({}, {}{valid})", s.region, s.role, s.alg),
            );
        }
        for m in &self.missing {
            row("signature", format!("{m}: MISSING"));
        }
        match (self.verified, &self.verify_error) {
            (Some(true), _) => row("verified", "yes: a node would accept it".into()),
            (Some(false), e) => row("verified", format!("NO: {}", e.clone().unwrap_or_default())),
            (None, _) => {}
        }
        let mut s = format!("{t}\n");
        match self.signed_now {
            Some(true) => s.push_str("added this party's signature\n"),
            Some(false) => s.push_str("this party had already signed; nothing changed\n"),
            None => {}
        }
        if !self.complete {
            s.push_str(&format!(
                "next: party {} signs with `interflowctl agreement sign --in {} --key <its signing.pem> --region {} --out {}`\n",
                self.missing.join(" and "),
                self.file,
                self.missing.first().cloned().unwrap_or_default(),
                self.file
            ));
        }
        s
    }

    fn outcome(&self) -> Outcome {
        Outcome::problem_if(
            self.verified == Some(false) || self.signatures.iter().any(|s| s.valid == Some(false)),
        )
    }
}

fn parse_verify_with(items: &[String]) -> anyhow::Result<BTreeMap<RegionCode, VerifyingKey>> {
    let mut out = BTreeMap::new();
    for item in items {
        let (code, path) = item.split_once('=').ok_or_else(|| {
            anyhow!("`--verify-with {item}`: expected `CODE=PATH`, e.g. `310115=signing.pub.pem`")
        })?;
        let region: RegionCode = code
            .parse()
            .with_context(|| format!("`--verify-with {item}`"))?;
        let key = keys::load_verifying_key(Path::new(path))
            .with_context(|| format!("`--verify-with {item}`"))?;
        out.insert(region, key);
    }
    Ok(out)
}

pub fn run(cmd: &AgreementCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    match cmd {
        AgreementCommand::Sign {
            body,
            input,
            key,
            region,
            out,
        } => {
            let (mut signed, decoded) = match (body, input) {
                (Some(toml_path), None) => {
                    let text = std::fs::read_to_string(toml_path)
                        .with_context(|| format!("reading `{}`", toml_path.display()))?;
                    let b = body_from_toml(&text)
                        .with_context(|| format!("in `{}`", toml_path.display()))?;
                    let signed = pb::SignedAgreement {
                        body: agreement::encode_body(&b),
                        signatures: Vec::new(),
                    };
                    (signed, b)
                }
                (None, Some(pb_path)) => read_signed(pb_path)?,
                _ => bail!(
                    "pass either --body agreement.toml (first party) or --in agr.pb (second party)"
                ),
            };
            let same_as_input = input.as_deref().is_some_and(|i| same_file(i, out));
            ensure!(
                same_as_input || !out.exists(),
                "`{}` exists; choose another --out, or pass it as --in to add a signature to it",
                out.display()
            );
            let signing = keys::load_signing_key(key).context("loading the signing key")?;
            let added =
                add_signature(&mut signed, &decoded, &signing, crate::cli::region(region)?)?;
            if added || !same_as_input {
                write_atomic(out, &signed.encode_to_vec())?;
            }
            let mut v = view(out, &signed, &decoded, &BTreeMap::new());
            v.signed_now = Some(added);
            emit(ctx, &v)
        }
        AgreementCommand::Show { file, verify_with } => {
            let keys_of = parse_verify_with(verify_with)?;
            let (signed, body) = read_signed(file)?;
            emit(ctx, &view(file, &signed, &body, &keys_of))
        }
        // Dispatched to the node before offline commands run (`crate::run_with`).
        AgreementCommand::Terminate { .. }
        | AgreementCommand::Install { .. }
        | AgreementCommand::List => {
            bail!("`agreement terminate` and `agreement install` talk to a node")
        }
    }
}

#[cfg(test)]
mod tests;
