//! Offline key and certificate tools: record-signing keys and pseudonym keys through
//! `interflow_core::keys`, and the federation and local PKIs through `interflow_tls::pki`.
//! Private keys are written with mode 0600; nothing here talks to a node.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use interflow_core::keys;
use interflow_core::pseudonym::PseudonymKey;
use interflow_tls::pki::{Ca, Issued, Validity};
use serde::Serialize;

use crate::Report;
use crate::cli::{CertsCommand, KeysCommand};
use crate::conn::error_chain;

/// Files an offline command wrote.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Written {
    /// What was made, e.g. `signing key`, `node certificate`.
    pub what: String,
    pub files: Vec<String>,
    /// Ed25519 public key (hex) for `keys gen`; the certificate serial (hex) for `certs`.
    pub fingerprint: Option<String>,
    /// What to do next.
    pub note: Option<String>,
}

impl Report for Written {
    fn human(&self) -> String {
        let mut s = format!("wrote {}:\n", self.what);
        for f in &self.files {
            s.push_str(&format!("  {f}\n"));
        }
        if let Some(fp) = &self.fingerprint {
            s.push_str(&format!("fingerprint: {fp}\n"));
        }
        if let Some(n) = &self.note {
            s.push_str(&format!("{n}\n"));
        }
        s
    }
}

fn refuse_overwrite(paths: &[&Path], force: bool) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    for p in paths {
        if p.exists() {
            bail!(
                "`{}` exists; move it away or pass --force to replace it",
                p.display()
            );
        }
    }
    Ok(())
}

fn ensure_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating directory `{}`", dir.display()))?;
    }
    Ok(())
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

pub fn keys(cmd: &KeysCommand) -> anyhow::Result<Written> {
    match cmd {
        KeysCommand::Gen { out, force } => {
            let public = public_key_path(out);
            refuse_overwrite(&[out, &public], *force)?;
            ensure_parent(out)?;
            let key = keys::generate_signing_key();
            if *force && out.exists() {
                // The key writer keeps an existing file's mode; start from a fresh 0600 file.
                std::fs::remove_file(out)
                    .with_context(|| format!("replacing `{}`", out.display()))?;
            }
            keys::save_signing_key(out, &key).context("writing the signing key")?;
            keys::save_verifying_key(&public, &key.verifying_key())
                .context("writing the public key")?;
            Ok(Written {
                what: "an Ed25519 record-signing key".into(),
                files: vec![out.display().to_string(), public.display().to_string()],
                fingerprint: Some(hex::encode(key.verifying_key().to_bytes())),
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

fn load_ca(dir: &Path) -> anyhow::Result<Ca> {
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
    Ca::load(&cert, &key)
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))
        .with_context(|| {
            format!(
                "loading the CA from `{}` and `{}`; make one with `interflowctl certs ca --out {}`",
                cert.display(),
                key.display(),
                dir.display()
            )
        })
}

fn write_issued(issued: &Issued, out: &Path, stem: &str) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("creating directory `{}`", out.display()))?;
    let cert = out.join(format!("{stem}.pem"));
    let key = out.join(format!("{stem}.key"));
    issued
        .write_pem_files(&cert, &key)
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))
        .with_context(|| format!("writing `{}` and `{}`", cert.display(), key.display()))?;
    Ok(vec![cert.display().to_string(), key.display().to_string()])
}

fn tls(e: interflow_tls::TlsError) -> anyhow::Error {
    anyhow::anyhow!(error_chain(&e))
}

pub fn certs(cmd: &CertsCommand) -> anyhow::Result<Written> {
    match cmd {
        CertsCommand::Ca { name, out } => {
            std::fs::create_dir_all(out)
                .with_context(|| format!("creating directory `{}`", out.display()))?;
            let (cert, key) = (out.join("ca.pem"), out.join("ca.key"));
            refuse_overwrite(&[&cert, &key], false)?;
            let ca = Ca::generate(name)
                .map_err(tls)
                .context("generating the CA")?;
            ca.write_pem_files(&cert, &key)
                .map_err(tls)
                .with_context(|| format!("writing the CA to `{}`", out.display()))?;
            Ok(Written {
                what: format!("CA `{name}`"),
                files: vec![cert.display().to_string(), key.display().to_string()],
                fingerprint: None,
                note: Some("distribute ca.pem as the trust anchor; keep ca.key offline".into()),
            })
        }
        CertsCommand::Node {
            ca_dir,
            region,
            dns,
            ip,
            out,
            days,
        } => {
            let region = crate::cli::region(region)?;
            let ca = load_ca(ca_dir)?;
            let issued = ca
                .issue_peer_cert(region, dns, ip, Validity::days(*days))
                .map_err(tls)
                .with_context(|| format!("issuing the peer certificate of `{region}`"))?;
            Ok(Written {
                what: format!("the federation peer certificate of `{region}`"),
                files: write_issued(&issued, out, "node")?,
                fingerprint: Some(issued.serial.to_string()),
                note: Some(format!(
                    "set [tls] cert and key of node `{region}` to these files; it is valid as `{}`",
                    interflow_tls::peer_server_name(region)
                )),
            })
        }
        CertsCommand::Client {
            ca_dir,
            role,
            name,
            out,
            days,
        } => {
            let ca = load_ca(ca_dir)?;
            let role: interflow_tls::Role = (*role).into();
            let issued = ca
                .issue_role_cert(role, name, Validity::days(*days))
                .map_err(tls)
                .with_context(|| format!("issuing the {role} certificate of `{name}`"))?;
            Ok(Written {
                what: format!("the {role} client certificate of `{name}`"),
                files: write_issued(&issued, out, role.as_str())?,
                fingerprint: Some(issued.serial.to_string()),
                note: Some(format!(
                    "point [client] {role}_cert and {role}_key (or --cert/--key) at these files"
                )),
            })
        }
        CertsCommand::LocalServer {
            ca_dir,
            region,
            out,
            days,
        } => {
            let region = crate::cli::region(region)?;
            let ca = load_ca(ca_dir)?;
            let issued = ca
                .issue_local_server_cert(region, Validity::days(*days))
                .map_err(tls)
                .with_context(|| format!("issuing the local server certificate of `{region}`"))?;
            Ok(Written {
                what: format!("the local listener certificate of `{region}`"),
                files: write_issued(&issued, out, "local-server")?,
                fingerprint: Some(issued.serial.to_string()),
                note: Some(
                    "set [tls] local_cert and local_key to these files, and local_ca to the CA's ca.pem"
                        .into(),
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::RoleArg;

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
        let w = keys(&KeysCommand::Gen {
            out: out.clone(),
            force: false,
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
        let again = keys(&KeysCommand::Gen {
            out: out.clone(),
            force: false,
        });
        assert!(again.unwrap_err().to_string().contains("--force"));

        let psk = dir.path().join("agr.key");
        keys(&KeysCommand::Pseudonym {
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
    fn certificates_load_with_interflow_tls() {
        let dir = tempfile::tempdir().unwrap();
        let fed = dir.path().join("fed-ca");
        let local = dir.path().join("local-ca");
        certs(&CertsCommand::Ca {
            name: "test federation".into(),
            out: fed.clone(),
        })
        .unwrap();
        certs(&CertsCommand::Ca {
            name: "test local".into(),
            out: local.clone(),
        })
        .unwrap();
        let region = "310115".parse().unwrap();
        certs(&CertsCommand::Node {
            ca_dir: fed.clone(),
            region: "310115".into(),
            dns: vec!["node.example".into()],
            ip: vec!["127.0.0.1".parse().unwrap()],
            out: dir.path().join("node"),
            days: 30,
        })
        .unwrap();
        certs(&CertsCommand::LocalServer {
            ca_dir: local.clone(),
            region: "310115".into(),
            out: dir.path().join("server"),
            days: 30,
        })
        .unwrap();
        certs(&CertsCommand::Client {
            ca_dir: local.clone(),
            role: RoleArg::Admin,
            name: "ops".into(),
            out: dir.path().join("clients"),
            days: 30,
        })
        .unwrap();

        // Client configs build from what was written: the chain and the key pair are usable.
        interflow_tls::client_config(
            &local.join("ca.pem"),
            &dir.path().join("clients/admin.pem"),
            &dir.path().join("clients/admin.key"),
        )
        .unwrap();
        interflow_tls::client_config(
            &fed.join("ca.pem"),
            &dir.path().join("node/node.pem"),
            &dir.path().join("node/node.key"),
        )
        .unwrap();
        // The identities are the ones the node reads.
        let admin = interflow_tls::load_certs(&dir.path().join("clients/admin.pem")).unwrap();
        assert_eq!(
            interflow_tls::identity_from_cert(&admin[0]).unwrap().role(),
            Some(interflow_tls::Role::Admin)
        );
        let node = interflow_tls::load_certs(&dir.path().join("node/node.pem")).unwrap();
        assert_eq!(
            interflow_tls::identity_from_cert(&node[0])
                .unwrap()
                .region(),
            Some(region)
        );
        interflow_tls::load_key(&dir.path().join("server/local-server.key")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(local.join("ca.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        // A missing CA says how to make one; an existing CA is never overwritten.
        let err = certs(&CertsCommand::LocalServer {
            ca_dir: dir.path().join("nope"),
            region: "310115".into(),
            out: dir.path().join("x"),
            days: 1,
        })
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("interflowctl certs ca"),
            "{err:#}"
        );
        assert!(
            certs(&CertsCommand::Ca {
                name: "again".into(),
                out: fed,
            })
            .is_err()
        );
    }
}
