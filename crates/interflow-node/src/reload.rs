//! Reloading at runtime (SIGHUP, `Admin.Reload`): the config file is read again and its
//! certificates, CRLs, directory and agreements are installed together. Everything is loaded
//! and checked before anything is installed, so a bad file keeps the old state; a directory
//! with a lower serial than the installed one is a rollback and is refused.

use std::sync::Arc;

use interflow_tls::ReloadableServerConfig;

use crate::config::{Config, ConfigError, Material};
use crate::federation::Federation;
use crate::node::Node;

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
        let (region, material): (_, Material) = tokio::task::spawn_blocking(move || {
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
        let installed = self.fed().directory.serial;
        if material.directory.serial < installed {
            return Err(ReloadError::Rollback {
                offered: material.directory.serial,
                installed,
            });
        }
        for (listener, tls) in self.server_tls() {
            reload_tls(listener, tls)?;
        }
        self.replace_federation(Federation {
            directory: material.directory,
            agreements: material.agreements,
            pseudonym_keys: material.pseudonym_keys,
        });
        Ok(self.fed())
    }
}

fn reload_tls(listener: &'static str, tls: &ReloadableServerConfig) -> Result<(), ReloadError> {
    tls.reload().map_err(|e| ReloadError::Tls {
        listener,
        reason: format!("{e:#}"),
    })
}
