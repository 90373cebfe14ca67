//! Installing agreements at runtime (`Admin.InstallAgreement`): both parties' signatures
//! checked against the current directory, the agreement kept in the store with the path of its
//! pseudonym key, and put in force at once through `Node::replace_federation`. Installed
//! agreements are applied again, on top of the configured ones, at every start.

use std::path::Path;
use std::sync::Arc;

use interflow_core::RegionCode;
use interflow_core::agreement::{Agreement, AgreementSet};
use interflow_core::pseudonym::{Epoch, EpochKeys};
use interflow_core::{keys, pb};
use interflow_store::InstalledAgreement;
use prost::Message;

use crate::error::NodeError;
use crate::federation::Federation;
use crate::node::Node;

impl Node {
    /// Verifies `signed` against the directory, checks this node is a party and loads the
    /// pseudonym key; answers the agreement and its key without changing anything.
    fn check_installable(
        &self,
        signed: pb::SignedAgreement,
        key_file: &str,
    ) -> Result<(Agreement, interflow_core::pseudonym::PseudonymKey), NodeError> {
        let fed = self.fed();
        let a = Agreement::verify(signed, &fed.directory)
            .map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
        if a.peer_of(self.region).is_none() {
            return Err(NodeError::PermissionDenied(format!(
                "agreement `{}` is between `{}` and `{}`, not this node",
                a.id, a.party_a, a.party_b
            )));
        }
        let key = keys::load_pseudonym_key(Path::new(key_file))
            .map_err(|e| NodeError::bad_field("pseudonym_key_file", e))?;
        Ok((a, key))
    }

    /// Puts `a` in force with its pseudonym key as epoch 1 (a new partner gets a delivery
    /// worker). Later epochs the config file lists for the agreement (a rotation) stay.
    fn put_in_force(self: &Arc<Self>, a: Agreement, key: interflow_core::pseudonym::PseudonymKey) {
        let cur = self.fed();
        let mut pseudonym_keys = cur.pseudonym_keys.clone();
        match pseudonym_keys.get_mut(&a.id) {
            Some(keys) => keys.add_if_absent(Epoch::FIRST, key),
            None => {
                pseudonym_keys.insert(a.id.clone(), EpochKeys::first(key));
            }
        }
        let id = a.id.clone();
        let agreements = AgreementSet::new(
            cur.agreements
                .iter()
                .filter(|g| g.id != id)
                .cloned()
                .chain([a]),
        );
        self.replace_federation(Federation {
            directory: cur.directory.clone(),
            agreements,
            pseudonym_keys,
        });
        tracing::info!(agreement = %id, "agreement installed");
    }

    /// `Admin.InstallAgreement`: answers the other party and whether it was installed now
    /// (false: the same signed agreement is in force already).
    pub async fn install_agreement(
        self: &Arc<Self>,
        signed: pb::SignedAgreement,
        key_file: &str,
    ) -> Result<(String, RegionCode, bool), NodeError> {
        // An expired directory admits no new member: nothing new is put in force on its word
        // until the operator installs a fresh one (the members in force go on exchanging).
        let fed = self.fed();
        if let Some(t) = fed
            .directory
            .expires_at_ms
            .filter(|_| fed.directory.expired_at(self.now()))
        {
            return Err(NodeError::FailedPrecondition(format!(
                "the installed directory (serial {}) expired at {}; install a fresh directory (interflowctl reload after publishing it), then install the agreement",
                fed.directory.serial,
                interflow_core::time::rfc3339(t)
            )));
        }
        let bytes = signed.encode_to_vec();
        let (a, key) = self.check_installable(signed, key_file)?;
        let (id, peer) = (a.id.clone(), a.peer_of(self.region).unwrap_or(a.party_b));
        if let Some(old) = self.fed().agreements.get(&id) {
            if old.signed() == a.signed() {
                return Ok((id, peer, false));
            }
            return Err(NodeError::InvalidArgument(format!(
                "another agreement `{id}` is in force; terminate it and install the new one under another id"
            )));
        }
        let stored = InstalledAgreement {
            id: id.clone(),
            retention_days: a.retention_days,
            signed: bytes,
            pseudonym_key_file: key_file.to_owned(),
        };
        self.store.run(move |s| s.save_agreement(&stored)).await?;
        self.put_in_force(a, key);
        Ok((id, peer, true))
    }

    /// At start: the installed agreements put in force on top of the configured ones. One that
    /// no longer verifies (or whose key file is gone) is logged and left out.
    pub async fn apply_installed_agreements(self: &Arc<Self>) -> Result<(), NodeError> {
        let installed = self.store.run(|s| s.agreements()).await?;
        for i in installed {
            let checked = pb::SignedAgreement::decode(i.signed.as_slice())
                .map_err(|e| NodeError::InvalidArgument(format!("kept agreement: {e}")))
                .and_then(|signed| self.check_installable(signed, &i.pseudonym_key_file));
            match checked {
                Ok((a, key)) => self.put_in_force(a, key),
                Err(e) => tracing::error!(agreement = %i.id, error = %e,
                    "an installed agreement cannot be put in force; install it again"),
            }
        }
        Ok(())
    }
}
