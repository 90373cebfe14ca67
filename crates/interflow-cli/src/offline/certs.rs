//! `certs`: the federation and local PKIs for dev or small deployments (a CA, a node's peer
//! certificate, a role client certificate, the local listener's server certificate) through
//! `interflow_tls::pki`. Private keys are written with mode 0600; nothing here talks to a node.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use interflow_tls::pki::{Ca, Issued, Validity};

use super::{Written, refuse_overwrite};
use crate::cli::region_code;
use crate::conn::error_chain;

#[derive(Subcommand, Debug, Clone)]
pub enum CertsCommand {
    /// A new CA: `ca.pem` and `ca.key` (mode 0600) in `--out`.
    Ca {
        /// The CA's common name.
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// A node's federation peer certificate: `node.pem`, `node.key` in `--out`.
    Node {
        /// Directory with the federation CA's `ca.pem` and `ca.key`.
        #[arg(long)]
        ca_dir: PathBuf,
        #[arg(long, value_parser = region_code)]
        region: String,
        /// Extra DNS name of the node's peer endpoint (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// Extra IP address of the node's peer endpoint (repeatable).
        #[arg(long)]
        ip: Vec<std::net::IpAddr>,
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u64,
    },
    /// A local client certificate with a role: `<role>.pem`, `<role>.key` in `--out`.
    Client {
        /// Directory with the node's local CA `ca.pem` and `ca.key`.
        #[arg(long)]
        ca_dir: PathBuf,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The holder's name; the node's audit log records it as the actor.
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u64,
    },
    /// The local listener's server certificate: `local-server.pem`, `local-server.key`.
    LocalServer {
        /// Directory with the node's local CA `ca.pem` and `ca.key`.
        #[arg(long)]
        ca_dir: PathBuf,
        #[arg(long, value_parser = region_code)]
        region: String,
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u64,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleArg {
    Admin,
    Intake,
    Inbox,
}

impl From<RoleArg> for interflow_tls::Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Admin => interflow_tls::Role::Admin,
            RoleArg::Intake => interflow_tls::Role::Intake,
            RoleArg::Inbox => interflow_tls::Role::Inbox,
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

/// The SHA-256 fingerprint of the certificate (over its DER), in hex: what
/// `openssl x509 -noout -fingerprint -sha256` shows, to compare out of band.
fn fingerprint(issued: &Issued) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(issued.cert_der.as_ref()))
}

pub fn run(cmd: &CertsCommand) -> anyhow::Result<Written> {
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
                fingerprint: Some(fingerprint(&issued)),
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
                fingerprint: Some(fingerprint(&issued)),
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
                fingerprint: Some(fingerprint(&issued)),
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

    #[test]
    fn the_fingerprint_is_the_sha256_of_the_certificate() {
        use sha2::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("local-ca");
        run(&CertsCommand::Ca {
            name: "test local".into(),
            out: local.clone(),
        })
        .unwrap();
        let written = run(&CertsCommand::Client {
            ca_dir: local,
            role: RoleArg::Intake,
            name: "ops".into(),
            out: dir.path().join("clients"),
            days: 30,
        })
        .unwrap();
        let der = interflow_tls::load_certs(&dir.path().join("clients/intake.pem")).unwrap();
        let want = hex::encode(sha2::Sha256::digest(der[0].as_ref()));
        assert_eq!(written.fingerprint.as_deref(), Some(want.as_str()));
    }

    #[test]
    fn certificates_load_with_interflow_tls() {
        let dir = tempfile::tempdir().unwrap();
        let fed = dir.path().join("fed-ca");
        let local = dir.path().join("local-ca");
        run(&CertsCommand::Ca {
            name: "test federation".into(),
            out: fed.clone(),
        })
        .unwrap();
        run(&CertsCommand::Ca {
            name: "test local".into(),
            out: local.clone(),
        })
        .unwrap();
        let region = "310115".parse().unwrap();
        run(&CertsCommand::Node {
            ca_dir: fed.clone(),
            region: "310115".into(),
            dns: vec!["node.example".into()],
            ip: vec!["127.0.0.1".parse().unwrap()],
            out: dir.path().join("node"),
            days: 30,
        })
        .unwrap();
        run(&CertsCommand::LocalServer {
            ca_dir: local.clone(),
            region: "310115".into(),
            out: dir.path().join("server"),
            days: 30,
        })
        .unwrap();
        run(&CertsCommand::Client {
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
        let err = run(&CertsCommand::LocalServer {
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
            run(&CertsCommand::Ca {
                name: "again".into(),
                out: fed,
            })
            .is_err()
        );
    }
}
