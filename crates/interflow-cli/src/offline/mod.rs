//! The offline tools: record-signing and pseudonym keys ([`keys`]), certificates ([`certs`]),
//! bilateral agreements ([`agreement`]) and the federation directory ([`directory`]). They
//! read and write files only: nothing here talks to a node, and the command line decides that
//! by the variant of [`OfflineCommand`] alone. Private keys are written with mode 0600.

pub mod agreement;
pub mod certs;
pub mod directory;
pub mod keys;

use std::path::Path;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde::Serialize;

use crate::{Ctx, Outcome, Report, emit};

/// The commands that need no node.
#[derive(Subcommand, Debug, Clone)]
pub enum OfflineCommand {
    /// Offline: record-signing and pseudonym keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Offline: certificates for the federation and local PKIs (dev or small deployments).
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Offline: author, sign and inspect bilateral agreements.
    #[command(subcommand)]
    Agreement(agreement::AgreementCommand),
    /// Offline, for the federation operator: build, sign and inspect the member directory.
    #[command(subcommand)]
    Directory(directory::DirectoryCommand),
}

/// Runs an offline command.
pub fn run(command: &OfflineCommand, ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    match command {
        OfflineCommand::Keys(k) => emit(ctx, &keys::run(k)?),
        OfflineCommand::Certs(c) => emit(ctx, &certs::run(c)?),
        OfflineCommand::Agreement(a) => agreement::run(a, ctx),
        OfflineCommand::Directory(d) => directory::run(d, ctx),
    }
}

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

pub(crate) fn refuse_overwrite(paths: &[&Path], force: bool) -> anyhow::Result<()> {
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

pub(crate) fn ensure_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating directory `{}`", dir.display()))?;
    }
    Ok(())
}
