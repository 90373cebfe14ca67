//! `keys gen` and `keys pseudonym`: a record-signing key pair or an agreement pseudonym key,
//! written through `interflow_core::keys` with the private part at mode 0600. Nothing here
//! talks to a node.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use interflow_core::keys;
use interflow_core::pseudonym::PseudonymKey;
use interflow_core::sm2_suite::Sm2SigningKey;

use super::{Written, ensure_parent, refuse_overwrite};

/// A record-signing suite.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Alg {
    #[default]
    Ed25519,
    /// SM2 with SM3 (the national suite).
    Sm2,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Alg::Ed25519 => "an Ed25519",
            Alg::Sm2 => "an SM2",
        }
    }
}

#[derive(Subcommand, Debug, Clone)]
pub enum KeysCommand {
    /// A new record-signing key: PKCS#8 PEM (mode 0600) and `<stem>.pub.pem` beside it.
    Gen {
        /// Private key file to create.
        #[arg(long)]
        out: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
        /// The suite: `ed25519` (the directory's key id 0 must be one) or `sm2`.
        #[arg(long, value_enum, default_value_t = Alg::Ed25519)]
        alg: Alg,
    },
    /// Rotation: a new record-signing key under key id `--key-id`, never replacing a
    /// file, and the `[[member.key]]` entry for the federation operator's members file
    /// (`directory sign`). Switch the node to it (`[keys] signing_key`, then reload) only once
    /// the directory that lists it is installed at the node.
    Rotate {
        /// Private key file to create (PKCS#8 PEM, mode 0600; `<stem>.pub.pem` beside it).
        #[arg(long)]
        out: PathBuf,
        /// The new key's id in this member's directory entry: higher than every id it lists.
        #[arg(long)]
        key_id: u32,
        /// Start of the key's validity (RFC 3339, e.g. `2026-12-05T08:00:00Z`); default now.
        /// Records issued before it do not verify under the key.
        #[arg(long)]
        valid_from: Option<String>,
        /// The suite of the new key.
        #[arg(long, value_enum, default_value_t = Alg::Ed25519)]
        alg: Alg,
    },
    /// A new 32-byte agreement pseudonym key as 64 hex digits (mode 0600). Give the same file
    /// to the other party over a secure channel.
    Pseudonym {
        /// Key file to create.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}
/// `signing.pem` → `signing.pub.pem`.
pub fn public_key_path(private: &Path) -> PathBuf {
    let name = private
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "signing.pem".into());
    let stem = name.strip_suffix(".pem").unwrap_or(&name);
    private.with_file_name(format!("{stem}.pub.pem"))
}

/// Parses an RFC 3339 time into Unix milliseconds.
pub fn parse_time(what: &str, s: &str) -> anyhow::Result<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .with_context(|| {
            format!("`{what}` `{s}` is not an RFC 3339 time like `2026-12-05T08:00:00Z`")
        })
}

/// The members-file entry that lists a rotated key.
fn member_key_entry(key_id: u32, public: &Path, valid_from_ms: i64) -> String {
    let file = public
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(
        "[[member.key]]\nid = {key_id}\n# the public key file, relative to the members file\nsigning_key = \"{file}\"\nvalid_from = \"{}\"\n",
        interflow_core::time::rfc3339(valid_from_ms)
    )
}

/// Writes a new record-signing key of `alg` at `out` (0600) and its public key beside it;
/// returns the public key's path and its hex (the directory's bytes).
fn write_new_key(out: &Path, alg: Alg, force: bool) -> anyhow::Result<(PathBuf, String)> {
    let public = public_key_path(out);
    refuse_overwrite(&[out, &public], force)?;
    ensure_parent(out)?;
    if force && out.exists() {
        // The key writer keeps an existing file's mode; start from a fresh 0600 file.
        std::fs::remove_file(out).with_context(|| format!("replacing `{}`", out.display()))?;
    }
    let key = match alg {
        Alg::Ed25519 => {
            let key = keys::generate_signing_key();
            keys::save_signing_key(out, &key).context("writing the signing key")?;
            keys::RecordSigningKey::Ed25519(key)
        }
        Alg::Sm2 => {
            let key = Sm2SigningKey::generate();
            keys::save_sm2_signing_key(out, &key).context("writing the signing key")?;
            keys::RecordSigningKey::Sm2(key)
        }
    };
    let pk = key.public_key();
    keys::save_public_key(&public, &pk).context("writing the public key")?;
    Ok((public, hex::encode(pk.to_bytes())))
}

pub fn run(cmd: &KeysCommand) -> anyhow::Result<Written> {
    match cmd {
        KeysCommand::Rotate {
            out,
            key_id,
            valid_from,
            alg,
        } => {
            anyhow::ensure!(
                *key_id >= 1,
                "`--key-id` must be at least 1 (key id 0 is the member's first `signing_key`)"
            );
            let valid_from_ms = match valid_from {
                Some(s) => parse_time("--valid-from", s)?,
                None => crate::human::now_ms(),
            };
            // A rotation never replaces a key: the old one signs until the switch.
            let (public, fingerprint) = write_new_key(out, *alg, false)?;
            Ok(Written {
                what: format!("{} record-signing key for key id {key_id}", alg.name()),
                files: vec![out.display().to_string(), public.display().to_string()],
                fingerprint: Some(fingerprint),
                note: Some(format!(
                    "give the public key to the federation operator with this entry for your `[[member]]` in the members file; once the signed directory is installed at your node, set `[keys] signing_key` to the new file and reload:\n{}",
                    member_key_entry(*key_id, &public, valid_from_ms)
                )),
            })
        }
        KeysCommand::Gen { out, force, alg } => {
            let (public, fingerprint) = write_new_key(out, *alg, *force)?;
            Ok(Written {
                what: format!("{} record-signing key", alg.name()),
                files: vec![out.display().to_string(), public.display().to_string()],
                fingerprint: Some(fingerprint),
                note: Some(
                    "keep the private key secret (mode 0600); the federation operator puts the public key in the directory"
                        .into(),
                ),
            })
        }
        KeysCommand::Pseudonym { out, force } => {
            refuse_overwrite(&[out], *force)?;
            ensure_parent(out)?;
            if *force && out.exists() {
                std::fs::remove_file(out)
                    .with_context(|| format!("replacing `{}`", out.display()))?;
            }
            let key = PseudonymKey::generate(&mut rand::rngs::OsRng);
            keys::save_pseudonym_key(out, &key).context("writing the pseudonym key")?;
            Ok(Written {
                what: "an agreement pseudonym key".into(),
                files: vec![out.display().to_string()],
                fingerprint: None,
                note: Some(
                    "give the same file to the other party over a secure channel and list it under [[pseudonym_keys]] in both configs"
                        .into(),
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_path_sits_beside_the_private_key() {
        assert_eq!(
            public_key_path(Path::new("keys/signing.pem")),
            PathBuf::from("keys/signing.pub.pem")
        );
        assert_eq!(public_key_path(Path::new("k")), PathBuf::from("k.pub.pem"));
    }

    #[test]
    fn signing_key_files_load_back_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sub/signing.pem");
        let w = run(&KeysCommand::Gen {
            out: out.clone(),
            force: false,
            alg: Alg::Ed25519,
        })
        .unwrap();
        let key = keys::load_signing_key(&out).unwrap();
        let public = keys::load_verifying_key(&dir.path().join("sub/signing.pub.pem")).unwrap();
        assert_eq!(key.verifying_key(), public);
        assert_eq!(w.fingerprint, Some(hex::encode(public.to_bytes())));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = run(&KeysCommand::Gen {
            out: out.clone(),
            force: false,
            alg: Alg::Ed25519,
        });
        assert!(again.unwrap_err().to_string().contains("--force"));

        let psk = dir.path().join("agr.key");
        run(&KeysCommand::Pseudonym {
            out: psk.clone(),
            force: false,
        })
        .unwrap();
        keys::load_pseudonym_key(&psk).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&psk).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn rotate_writes_a_new_key_and_the_members_file_entry_that_lists_it() {
        let dir = tempfile::tempdir().unwrap();
        run(&KeysCommand::Gen {
            out: dir.path().join("signing.pem"),
            force: false,
            alg: Alg::Ed25519,
        })
        .unwrap();
        let rotate = KeysCommand::Rotate {
            out: dir.path().join("signing-1.pem"),
            key_id: 1,
            valid_from: Some("2026-12-05T08:00:00Z".into()),
            alg: Alg::Sm2,
        };
        let w = run(&rotate).unwrap();
        let new = keys::load_record_signing_key(&dir.path().join("signing-1.pem")).unwrap();
        assert!(matches!(new, keys::RecordSigningKey::Sm2(_)));
        // Never over an existing key, not even with the same arguments.
        assert!(run(&rotate).unwrap_err().to_string().contains("exists"));

        let note = w.note.unwrap();
        let entry = &note[note.find("[[member.key]]").unwrap()..];
        let members = format!(
            "serial = 2\n[[member]]\nregion = \"310115\"\nname = \"Pudong\"\nendpoint = \"127.0.0.1:7000\"\nsigning_key = \"signing.pub.pem\"\n{entry}"
        );
        let body = crate::offline::directory::body_from_toml(&members, dir.path(), 0).unwrap();
        let operator = keys::generate_signing_key();
        let d = interflow_core::directory::Directory::verify(
            &interflow_core::directory::Directory::sign(&body, &operator),
            &operator.verifying_key(),
        )
        .unwrap();
        let region = "310115".parse().unwrap();
        let from = parse_time("t", "2026-12-05T08:00:00Z").unwrap();
        assert_eq!(d.key_id_of(region, &new.public_key(), from), Some(1));
        assert_eq!(d.key_id_of(region, &new.public_key(), from - 1), None);
    }
}
