//! Installing agreements at runtime (`Admin.InstallAgreement`): both parties' signatures
//! checked against the current directory, the agreement kept in the store with the path of its
//! pseudonym key, and put in force at once through `Node::replace_federation`. Installed
//! agreements are applied again, on top of the configured ones, at every start.

use std::path::Path;
use std::sync::Arc;

use interflow_core::RegionCode;
use interflow_core::agreement::{Agreement, AgreementSet};
use interflow_core::pseudonym::{Epoch, EpochKeys};
use interflow_core::termination::{Termination, TerminationError};
use interflow_core::{keys, pb};
use interflow_store::InstalledAgreement;
use prost::Message;

use crate::error::NodeError;
use crate::federation::Federation;
use crate::node::Node;

impl Node {
    /// Verifies `signed` against `fed`'s directory, checks this node is a party and loads the
    /// pseudonym key; answers the agreement and its key without changing anything.
    fn check_installable(
        &self,
        fed: &Federation,
        signed: pb::SignedAgreement,
        key_file: &str,
    ) -> Result<(Agreement, interflow_core::pseudonym::PseudonymKey), NodeError> {
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
        let (a, key) = self.check_installable(&fed, signed, key_file)?;
        let (id, peer) = (a.id.clone(), a.peer_of(self.region).unwrap_or(a.party_b));
        if let Some(old) = fed.agreements.get(&id) {
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
        let cur = self.fed();
        self.replace_federation(with_agreement(&cur, a, key));
        tracing::info!(agreement = %id, "agreement installed");
        Ok((id, peer, true))
    }

    /// `fed` (from the config files) with what operators changed at runtime on top: the
    /// installed agreements in force and the kept terminations applied. Start and every reload
    /// install this, so neither forgets an installed agreement or revives a terminated one. An
    /// installed agreement that no longer verifies (or whose key file is gone) is logged and
    /// left out.
    pub async fn with_kept_state(&self, mut fed: Federation) -> Result<Federation, NodeError> {
        let (installed, terminations) = self
            .store
            .run(|s| Ok((s.agreements()?, s.terminations()?)))
            .await?;
        for i in installed {
            let checked = pb::SignedAgreement::decode(i.signed.as_slice())
                .map_err(|e| NodeError::InvalidArgument(format!("kept agreement: {e}")))
                .and_then(|signed| self.check_installable(&fed, signed, &i.pseudonym_key_file));
            match checked {
                Ok((a, key)) => fed = with_agreement(&fed, a, key),
                Err(e) => tracing::error!(agreement = %i.id, error = %e,
                    "an installed agreement cannot be put in force; install it again"),
            }
        }
        for k in terminations {
            let signed = pb::SignedTermination::decode(k.signed.as_slice())
                .map_err(|e| NodeError::InvalidArgument(format!("kept termination: {e}")))?;
            match Termination::verify_in(signed, &fed.agreements, &fed.directory) {
                Ok(t) => {
                    fed.agreements.terminate(&t);
                }
                // An agreement no longer in force: nothing to apply; the notice stays.
                Err(TerminationError::UnknownAgreement { .. }) => {}
                Err(e) => tracing::warn!(agreement = %k.agreement_id, error = %e,
                    "a kept termination does not verify against the current directory"),
            }
        }
        Ok(fed)
    }
}

/// `cur` with `a` in force, its pseudonym key as epoch 1 (a new partner gets a delivery worker
/// once installed). Later epochs the config file lists for the agreement (a rotation) stay.
fn with_agreement(
    cur: &Federation,
    a: Agreement,
    key: interflow_core::pseudonym::PseudonymKey,
) -> Federation {
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
    Federation {
        directory: cur.directory.clone(),
        agreements,
        pseudonym_keys,
    }
}
