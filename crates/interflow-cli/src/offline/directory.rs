//! The federation operator's offline commands for the signed member directory: build it from
//! a TOML member list and sign it with the operator key (`directory sign`), or print and check
//! one (`directory show`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};
use clap::Subcommand;
use interflow_core::directory::{Directory, tls_identity_for};
use interflow_core::{RegionCode, keys, pb};
use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::{Ctx, Outcome, Report, emit};

#[derive(Subcommand, Debug, Clone)]
pub enum DirectoryCommand {
    /// Builds the directory from a members TOML file and signs it with the operator key.
    ///
    /// The file holds `serial = N`, optionally `valid_days = D` (the directory expires D days
    /// after signing), and one `[[member]]` per bureau with `region`, `name`,
    /// `endpoint` (`host:port` of its peer listener) and `signing_key` (path of its public
    /// record-signing key, relative to the file: key id 0), and optionally `[[member.key]]`
    /// entries for rotated keys (`id`, `signing_key`, `valid_from`, `valid_until`,
    /// `revoked_at`; times RFC 3339), as `keys rotate` prints them; the directory is checked
    /// as nodes check it before it is written. Give every node the output and the
    /// operator's public key (`federation.directory`, `federation.operator_key`).
    Sign {
        /// The members file (TOML).
        #[arg(long)]
        members: PathBuf,
        /// The federation operator's signing key (PKCS#8 PEM).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the signed directory (binary protobuf `SignedDirectory`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Prints a directory's members; with `--operator-key`, checks its signature (exit 1 if
    /// it does not verify).
    Show {
        /// The signed directory file.
        file: PathBuf,
        /// The federation operator's public key (PEM).
        #[arg(long)]
        operator_key: Option<PathBuf>,
    },
}

/// The member list as the operator writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersFile {
    /// Increases with every new directory, so nodes can tell newer from older.
    serial: u64,
    /// Days from signing until the directory expires (nodes alarm and install no expired
    /// directory); absent: no expiry.
    #[serde(default)]
    valid_days: Option<u32>,
    #[serde(rename = "member")]
    members: Vec<MemberEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberEntry {
    region: String,
    name: String,
    /// `host:port` of the member's peer listener.
    endpoint: String,
    /// The member's record-signing public key (PEM), relative to the members file: key id 0.
    signing_key: String,
    /// Further record-signing keys (rotation), as `interflowctl keys rotate` prints them.
    #[serde(default, rename = "key")]
    keys: Vec<KeyEntry>,
}

/// One `[[member.key]]`: a record-signing key with its id and validity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    /// ≥ 1; or 0 to give the member's `signing_key` an end or a revocation time.
    id: u32,
    /// The public key (PEM), relative to the members file.
    signing_key: String,
    /// RFC 3339; absent: from the beginning of time.
    #[serde(default)]
    valid_from: Option<String>,
    /// RFC 3339; absent: open.
    #[serde(default)]
    valid_until: Option<String>,
    /// RFC 3339; records issued at or after it do not verify under the key.
    #[serde(default)]
    revoked_at: Option<String>,
}

impl KeyEntry {
    fn to_pb(&self, base: &Path) -> anyhow::Result<pb::MemberKey> {
        let time = |what: &str, t: &Option<String>| {
            t.as_deref()
                .map_or(Ok(0), |s| crate::offline::keys::parse_time(what, s))
        };
        // The suite is the one the PEM names (Ed25519 or SM2).
        let key = keys::load_public_key(&base.join(&self.signing_key))
            .with_context(|| format!("key id {}", self.id))?;
        Ok(pb::MemberKey {
            key_id: self.id,
            alg: key.alg_pb(),
            public_key: key.to_bytes(),
            valid_from_ms: match &self.valid_from {
                Some(s) => crate::offline::keys::parse_time("valid_from", s)?,
                None => i64::MIN,
            },
            valid_until_ms: time("valid_until", &self.valid_until)?,
            revoked_at_ms: time("revoked_at", &self.revoked_at)?,
        })
    }
}

/// Builds the directory body from a members TOML file.
pub fn body_from_toml(text: &str, base: &Path, now_ms: i64) -> anyhow::Result<pb::DirectoryBody> {
    let file: MembersFile = toml::from_str(text).context("reading the members file")?;
    ensure!(
        !file.members.is_empty(),
        "the members file lists no `[[member]]`"
    );
    let mut members = Vec::with_capacity(file.members.len());
    for (i, m) in file.members.iter().enumerate() {
        let at = || format!("member {} (`{}`)", i + 1, m.region);
        let region: RegionCode = m.region.parse().with_context(at)?;
        let key_path = base.join(&m.signing_key);
        let key = keys::load_verifying_key(&key_path).with_context(at)?;
        ensure!(
            !m.endpoint.trim().is_empty(),
            "{}: `endpoint` is empty",
            at()
        );
        let keys = m
            .keys
            .iter()
            .map(|k| k.to_pb(base))
            .collect::<anyhow::Result<Vec<_>>>()
            .with_context(at)?;
        members.push(pb::Member {
            region_code: region.to_string(),
            name: m.name.clone(),
            endpoint: m.endpoint.clone(),
            signing_key: key.to_bytes().to_vec(),
            tls_identity: tls_identity_for(region),
            keys,
        });
    }
    Ok(pb::DirectoryBody {
        serial: file.serial,
        issued_at_ms: now_ms,
        members,
        expires_at_ms: file
            .valid_days
            .map_or(0, |d| now_ms.saturating_add(i64::from(d) * 86_400_000)),
    })
}

#[derive(Debug, Serialize)]
pub struct DirectoryView {
    pub file: String,
    pub serial: u64,
    /// Whether the operator signature verified (`None` when no key was given).
    pub signature_valid: Option<bool>,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Serialize)]
pub struct MemberView {
    pub region: String,
    pub name: String,
    pub endpoint: String,
    pub tls_identity: String,
    pub signing_key: String,
    /// The listed record-signing keys (rotation), beside key id 0 (`signing_key`).
    pub keys: Vec<KeyView>,
}

#[derive(Debug, Serialize)]
pub struct KeyView {
    pub id: u32,
    /// `ed25519` or `sm2`.
    pub alg: String,
    pub public_key: String,
    /// RFC 3339; absent: from the beginning of time, open, not revoked.
    pub valid_from: Option<String>,
    pub valid_until: Option<String>,
    pub revoked_at: Option<String>,
}

impl KeyView {
    fn of(k: pb::MemberKey) -> KeyView {
        let time = |t: i64, none: i64| (t != none).then(|| interflow_core::time::rfc3339(t));
        KeyView {
            id: k.key_id,
            alg: match pb::SignatureAlgorithm::try_from(k.alg) {
                Ok(pb::SignatureAlgorithm::Ed25519) => "ed25519".into(),
                Ok(pb::SignatureAlgorithm::Sm2Sm3) => "sm2".into(),
                _ => format!("unknown ({})", k.alg),
            },
            public_key: hex::encode(k.public_key),
            valid_from: time(k.valid_from_ms, i64::MIN),
            valid_until: time(k.valid_until_ms, 0),
            revoked_at: time(k.revoked_at_ms, 0),
        }
    }
}

impl Report for DirectoryView {
    fn human(&self) -> String {
        let mut s = format!(
            "{}: directory serial {}, {} member(s), operator signature {}\n",
            self.file,
            self.serial,
            self.members.len(),
            match self.signature_valid {
                Some(true) => "valid",
                Some(false) => "INVALID",
                None => "not checked (pass --operator-key)",
            }
        );
        let mut t = crate::human::table(&["REGION", "NAME", "ENDPOINT", "SIGNING KEY"]);
        for m in &self.members {
            t.add_row(vec![
                m.region.clone(),
                m.name.clone(),
                m.endpoint.clone(),
                m.signing_key.chars().take(16).collect(),
            ]);
            for k in &m.keys {
                let window = format!(
                    "key {} {} {} from {} until {}{}",
                    k.id,
                    k.alg,
                    k.public_key.chars().take(16).collect::<String>(),
                    k.valid_from.as_deref().unwrap_or("the start"),
                    k.valid_until.as_deref().unwrap_or("open"),
                    k.revoked_at
                        .as_deref()
                        .map(|r| format!(", REVOKED at {r}"))
                        .unwrap_or_default(),
                );
                t.add_row(vec![String::new(), String::new(), String::new(), window]);
            }
        }
        s.push_str(&format!("{t}\n"));
        s
    }

    fn outcome(&self) -> Outcome {
        Outcome::problem_if(self.signature_valid == Some(false))
    }
}

fn view(
    file: &Path,
    signed: &pb::SignedDirectory,
    operator: Option<&Path>,
) -> anyhow::Result<DirectoryView> {
    let body = pb::DirectoryBody::decode(signed.body.as_slice())
        .with_context(|| format!("`{}` holds no directory body", file.display()))?;
    let signature_valid = match operator {
        Some(p) => {
            let key = keys::load_verifying_key(p).context("loading the operator key")?;
            Some(Directory::verify(signed, &key).is_ok())
        }
        None => None,
    };
    Ok(DirectoryView {
        file: file.display().to_string(),
        serial: body.serial,
        signature_valid,
        members: body
            .members
            .into_iter()
            .map(|m| MemberView {
                region: m.region_code,
                name: m.name,
                endpoint: m.endpoint,
                tls_identity: m.tls_identity,
                signing_key: hex::encode(m.signing_key),
                keys: m.keys.into_iter().map(KeyView::of).collect(),
            })
            .collect(),
    })
}

pub fn run(cmd: &DirectoryCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    match cmd {
        DirectoryCommand::Sign { members, key, out } => {
            if out.exists() {
                bail!("`{}` exists; choose another --out", out.display());
            }
            let text = std::fs::read_to_string(members)
                .with_context(|| format!("reading `{}`", members.display()))?;
            let base = members.parent().unwrap_or(Path::new("."));
            let body = body_from_toml(&text, base, crate::human::now_ms())
                .with_context(|| format!("in `{}`", members.display()))?;
            let operator = keys::load_signing_key(key).context("loading the operator key")?;
            let signed = Directory::sign(&body, &operator);
            // Check what nodes will check before anyone installs it.
            Directory::verify(&signed, &operator.verifying_key())
                .context("the signed directory does not verify")?;
            std::fs::write(out, signed.encode_to_vec())
                .with_context(|| format!("writing `{}`", out.display()))?;
            let v = view(out, &signed, None)?;
            emit(
                ctx,
                &DirectoryView {
                    signature_valid: Some(true),
                    ..v
                },
            )
        }
        DirectoryCommand::Show { file, operator_key } => {
            let bytes =
                std::fs::read(file).with_context(|| format!("reading `{}`", file.display()))?;
            let signed = pb::SignedDirectory::decode(bytes.as_slice())
                .with_context(|| format!("`{}` is not a signed directory", file.display()))?;
            emit(ctx, &view(file, &signed, operator_key.as_deref())?)
        }
    }
}
