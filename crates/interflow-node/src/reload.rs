//! Reloading at runtime (SIGHUP, `Admin.Reload`): the config file is read again and its
//! certificates, CRLs, directory and agreements are installed together. Everything is loaded
//! and checked before anything is installed, so a bad file keeps the old state; a directory
//! with a lower serial than the installed one is a rollback and is refused, and so is a config
//! that drops a pseudonym epoch whose records are still inside retention.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use interflow_core::RegionCode;
use interflow_core::directory::Directory;
use interflow_core::pb;
use interflow_core::pseudonym::{Epoch, EpochKeys};
use interflow_core::record::ChannelId;
use interflow_core::time::rfc3339;
use interflow_tls::ReloadableServerConfig;
use prost::Message as _;

use crate::config::{Config, ConfigError, Material};
use crate::federation::Federation;
use crate::node::Node;
use crate::signer::NodeSigner;

/// Why a reload kept the old state.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(
        "the config file now names region `{found}` but this node runs as `{running}`; a region change needs a restart"
    )]
    Region { running: String, found: String },
    #[error(
        "the directory's serial {offered} is lower than the installed serial {installed}: a rollback is refused; publish a directory with a higher serial"
    )]
    Rollback { offered: u64, installed: u64 },
    #[error("reloading the {listener} listener's TLS files: {reason}")]
    Tls {
        listener: &'static str,
        reason: String,
    },
    #[error("the reload task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the directory with serial {serial} expired at {expired}; publish a fresh one")]
    Expired { serial: u64, expired: String },
    #[error("the directory from `{peer}`: {reason}")]
    FromPeer { peer: RegionCode, reason: String },
    #[error("persisting the installed directory in the data directory: {0}")]
    Persist(std::io::Error),
    #[error("{0}")]
    Signer(#[from] crate::signer::NotListed),
    #[error(
        "pseudonym epoch {epoch} of agreement `{agreement}` is no longer listed, but records made under it are inside retention (the newest issued {newest}, kept until {until}); keep its `[[pseudonym_keys]]` entry until then"
    )]
    EpochInUse {
        agreement: String,
        epoch: Epoch,
        newest: String,
        until: String,
    },
    #[error("checking the records of a dropped pseudonym epoch: {0}")]
    Store(String),
    #[error("reading the agreements installed and terminated at runtime: {0}")]
    KeptState(String),
}

/// The installed directory's copy in the data directory, so a restart does not roll back to
/// an older directory file named in the config.
const PERSISTED_DIRECTORY: &str = "directory.pb";

/// Where the directory in force came from, for `interflowctl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectorySource {
    /// The file the config names.
    File,
    /// Learnt from this peer at runtime.
    Peer(RegionCode),
    /// The copy kept in the data directory, newer than the file at start.
    Persisted,
}

impl std::fmt::Display for DirectorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirectorySource::File => f.write_str("file"),
            DirectorySource::Peer(p) => write!(f, "peer {p}"),
            DirectorySource::Persisted => f.write_str("data directory"),
        }
    }
}

/// The material to start with: the config file's directory, or the copy persisted in the
/// data directory if that one (checked against the operator key) has a higher serial. A
/// persisted copy that does not verify is ignored with a warning.
pub fn with_persisted_directory(
    config: &Config,
    mut material: Material,
) -> Result<(Material, DirectorySource), String> {
    let path = config.data_dir.join(PERSISTED_DIRECTORY);
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok((material, DirectorySource::File));
    };
    let operator = interflow_core::keys::load_verifying_key(&config.operator_key)
        .map_err(|e| e.to_string())?;
    let persisted = pb::SignedDirectory::decode(bytes.as_slice())
        .map_err(|e| e.to_string())
        .and_then(|s| {
            Directory::verify(&s, &operator)
                .map(|d| (d, s))
                .map_err(|e| e.to_string())
        });
    match persisted {
        Ok((d, s)) if d.serial > material.directory.serial => {
            tracing::info!(
                serial = d.serial,
                file_serial = material.directory.serial,
                "starting with the newer directory installed earlier"
            );
            material.directory = d;
            material.signed_directory = s;
            Ok((material, DirectorySource::Persisted))
        }
        Ok(_) => Ok((material, DirectorySource::File)),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring the persisted directory");
            Ok((material, DirectorySource::File))
        }
    }
}

/// Writes `signed` to the data directory atomically (temp file, fsync, rename).
fn persist_directory(data_dir: &Path, signed: &pb::SignedDirectory) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = data_dir.join(format!("{PERSISTED_DIRECTORY}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&signed.encode_to_vec())?;
    f.sync_all()?;
    std::fs::rename(&tmp, data_dir.join(PERSISTED_DIRECTORY))?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// The outcome of the latest reload, for `interflowctl` and monitoring.
#[derive(Debug, Clone, Default)]
pub struct LastReload {
    pub at_ms: i64,
    /// Why it kept the old state; `None` after a reload that installed.
    pub error: Option<String>,
}

impl Node {
    /// Reloads TLS material, directory and agreements from the config file, or nothing.
    pub async fn reload(self: &Arc<Self>) -> Result<Arc<Federation>, ReloadError> {
        let result = self.try_reload().await;
        let error = match &result {
            Ok(fed) => {
                tracing::info!(
                    directory_serial = fed.directory.serial,
                    agreements = fed.agreements.iter().count(),
                    "certificates, directory and agreements reloaded"
                );
                None
            }
            Err(e) => {
                self.metrics.reload_failures.inc();
                tracing::error!(error = %e, "reload failed; keeping the current certificates, directory and agreements");
                Some(e.to_string())
            }
        };
        self.set_last_reload(LastReload {
            at_ms: self.now(),
            error,
        });
        result
    }

    async fn try_reload(self: &Arc<Self>) -> Result<Arc<Federation>, ReloadError> {
        let path = self.config.path.clone();
        let (region, mut material): (_, Material) = tokio::task::spawn_blocking(move || {
            let config = Config::load(&path)?;
            Ok::<_, ConfigError>((config.region, config.load_material()?))
        })
        .await??;
        if region != self.region {
            return Err(ReloadError::Region {
                running: self.region.to_string(),
                found: region.to_string(),
            });
        }
        let current = self.fed();
        let installed = current.directory.serial;
        let (signed, source) = self.directory_source();
        let learnt = source != DirectorySource::File;
        if material.directory.serial < installed && learnt {
            // The file lags behind a directory learnt from peers: keep the newer one.
            tracing::info!(
                file_serial = material.directory.serial,
                installed,
                "the config file's directory is older than the installed one; keeping it"
            );
            material.directory = current.directory.clone();
            material.signed_directory = signed;
        } else if material.directory.serial < installed {
            self.metrics.directory_rollbacks.inc();
            return Err(ReloadError::Rollback {
                offered: material.directory.serial,
                installed,
            });
        }
        let newer = material.directory.serial > installed;
        if newer {
            self.check_not_expired(&material.directory)?;
        }
        // The key file may be a new one (a rotation): it must be listed and valid now.
        let signer = NodeSigner::find(
            self.region,
            material.signing_key,
            &material.directory,
            self.now(),
        )?;
        self.check_dropped_epochs(&current, &material.pseudonym_keys)
            .await?;
        for (listener, tls) in self.server_tls() {
            reload_tls(listener, tls)?;
        }
        if newer {
            self.persist(&material.signed_directory).await?;
            self.set_directory_source(material.signed_directory, DirectorySource::File);
        }
        let fed = self
            .with_kept_state(Federation {
                directory: material.directory,
                agreements: material.agreements,
                pseudonym_keys: material.pseudonym_keys,
            })
            .await
            .map_err(|e| ReloadError::KeptState(e.to_string()))?;
        self.replace_federation(fed);
        let key_id = signer.key_id();
        if key_id != self.signer().key_id() {
            tracing::info!(key_id, "signing with another record-signing key");
        }
        self.set_signer(signer);
        Ok(self.fed())
    }

    /// Refuses a config that drops a pseudonym epoch of an agreement in force while records
    /// made under it are inside retention: searches by national ID would stop finding them.
    /// An agreement dropped altogether is not checked (its records follow the retention of
    /// agreements known nowhere).
    async fn check_dropped_epochs(
        &self,
        current: &Federation,
        next: &HashMap<String, EpochKeys>,
    ) -> Result<(), ReloadError> {
        let me = self.region;
        let dropped: Vec<(String, RegionCode, Epoch, u32)> = current
            .agreements
            .iter()
            .filter_map(|a| {
                let (was, now) = (current.pseudonym_keys.get(&a.id)?, next.get(&a.id)?);
                let peer = a.peer_of(me)?;
                Some(
                    was.epochs()
                        .filter(|e| now.get(*e).is_none())
                        .map(|e| (a.id.clone(), peer, e, a.retention_days))
                        .collect::<Vec<_>>(),
                )
            })
            .flatten()
            .collect();
        if dropped.is_empty() {
            return Ok(());
        }
        let found = self
            .store
            .call(move |s| {
                for (agreement, peer, epoch, days) in dropped {
                    for c in [ChannelId::new(me, peer), ChannelId::new(peer, me)] {
                        if let Some(t) = s.newest_under_epoch(c, &agreement, epoch)? {
                            return Ok(Some((agreement, epoch, t, days)));
                        }
                    }
                }
                Ok(None)
            })
            .await
            .map_err(|e| ReloadError::Store(e.to_string()))?;
        match found {
            None => Ok(()),
            Some((agreement, epoch, newest, days)) => Err(ReloadError::EpochInUse {
                agreement,
                epoch,
                newest: rfc3339(newest),
                until: rfc3339(newest.saturating_add(i64::from(days) * 86_400_000)),
            }),
        }
    }

    fn check_not_expired(&self, d: &Directory) -> Result<(), ReloadError> {
        match d.expires_at_ms {
            Some(t) if d.expired_at(self.now()) => Err(ReloadError::Expired {
                serial: d.serial,
                expired: rfc3339(t),
            }),
            _ => Ok(()),
        }
    }

    async fn persist(&self, signed: &pb::SignedDirectory) -> Result<(), ReloadError> {
        let (dir, signed) = (self.config.data_dir.clone(), signed.clone());
        tokio::task::spawn_blocking(move || persist_directory(&dir, &signed))
            .await?
            .map_err(ReloadError::Persist)
    }

    /// Fetches `peer`'s directory (it announced `serial` in its signed heads) and installs it
    /// if it is operator-signed, newer than the installed one and not expired.
    pub async fn learn_directory(self: &Arc<Self>, peer: RegionCode) -> Result<u64, ReloadError> {
        let from_peer = |reason: String| ReloadError::FromPeer { peer, reason };
        let mut client = self
            .exchange_client(peer)
            .map_err(|e| from_peer(e.to_string()))?;
        let signed = tokio::time::timeout(
            self.config.limits.request_timeout(),
            client.directory(pb::DirectoryRequest {}),
        )
        .await
        .map_err(|_| from_peer("timed out".into()))?
        .map_err(|s| from_peer(s.message().to_owned()))?
        .into_inner()
        .directory
        .ok_or_else(|| from_peer("the answer carries no directory".into()))?;
        let path = self.config.operator_key.clone();
        let operator =
            tokio::task::spawn_blocking(move || interflow_core::keys::load_verifying_key(&path))
                .await?
                .map_err(|e| from_peer(format!("cannot read the operator key: {e}")))?;
        let directory =
            Directory::verify(&signed, &operator).map_err(|e| from_peer(e.to_string()))?;
        let installed = self.fed().directory.serial;
        if directory.serial < installed {
            self.metrics.directory_rollbacks.inc();
            return Err(ReloadError::Rollback {
                offered: directory.serial,
                installed,
            });
        }
        if directory.serial == installed {
            return Ok(installed);
        }
        self.check_not_expired(&directory)?;
        self.persist(&signed).await?;
        let old = self.fed();
        let serial = directory.serial;
        self.set_directory_source(signed, DirectorySource::Peer(peer));
        self.replace_federation(Federation {
            directory,
            agreements: old.agreements.clone(),
            pseudonym_keys: old.pseudonym_keys.clone(),
        });
        tracing::info!(%peer, serial, "installed a newer directory learnt from a peer");
        let signer = self.signer();
        if self
            .fed()
            .directory
            .key_id_of(self.region, &signer.public_key(), self.now())
            != Some(signer.key_id())
        {
            // Peers refuse what this node signs from now on: the operator must act.
            tracing::error!(
                serial,
                key_id = signer.key_id(),
                "the installed directory no longer lists this node's signing key as valid; rotate to a listed key and reload"
            );
        }
        Ok(serial)
    }
}

fn reload_tls(listener: &'static str, tls: &ReloadableServerConfig) -> Result<(), ReloadError> {
    tls.reload().map_err(|e| ReloadError::Tls {
        listener,
        reason: format!("{e:#}"),
    })
}

/// What the files a reload reads hold now: SHA-256 over each path and its content (or that it
/// is missing). Contents, not modification times, so a file replaced within the same second,
/// or by a Kubernetes ConfigMap's symlink swap, is still seen.
fn fingerprint(files: &[std::path::PathBuf]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for f in files {
        h.update(f.as_os_str().as_encoded_bytes());
        h.update([0]);
        match std::fs::read(f) {
            Ok(bytes) => {
                h.update((bytes.len() as u64).to_be_bytes());
                h.update(&bytes);
            }
            Err(e) => h.update(format!("unreadable: {}", e.kind())),
        }
    }
    h.finalize().into()
}

/// Reloads when a file a reload reads changes (`[federation] watch_interval_ms`), so an
/// operator who publishes a new directory or agreement file need not also send SIGHUP. A file
/// caught half-written fails to load and keeps the old state; the next change (its last write)
/// reloads again.
pub async fn watch_files(
    node: Arc<Node>,
    interval: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let files = node.config.reload_inputs();
    let read = |files: Vec<std::path::PathBuf>| async move {
        tokio::task::spawn_blocking(move || fingerprint(&files))
            .await
            .ok()
    };
    let mut seen = read(files.clone()).await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        let now = read(files.clone()).await;
        if now != seen {
            seen = now;
            tracing::info!("a file the configuration names changed; reloading");
            // The outcome is logged, counted and kept for `interflowctl federation`.
            let _ = node.reload().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn fingerprint_changes_with_content_and_not_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("directory.pb");
        std::fs::write(&f, b"serial 1").unwrap();
        let files = vec![f.clone(), dir.path().join("missing.pb")];
        let first = fingerprint(&files);
        assert_eq!(first, fingerprint(&files));
        std::fs::write(&f, b"serial 2").unwrap();
        assert_ne!(first, fingerprint(&files));
    }
}
