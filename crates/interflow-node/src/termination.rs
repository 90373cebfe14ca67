//! Terminating agreements at runtime: the node's own notice (`Admin.TerminateAgreement`), the
//! partner's (`Exchange.Terminate`), both kept in the store as evidence and applied to the
//! federation snapshot, and the grace period after which `Heads` and `Fetch` serve the
//! partner nothing. What a terminated agreement permits is decided in core.

use std::sync::Arc;
use std::time::Duration;

use interflow_core::RegionCode;
use interflow_core::pb;
use interflow_core::termination::{Termination, TerminationError};
use interflow_store::StoredTermination;
use prost::Message;

use crate::error::NodeError;
use crate::federation::Federation;
use crate::node::Node;

/// How long the partner is waited for when a termination is sent.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

fn refused(e: TerminationError) -> NodeError {
    NodeError::InvalidArgument(e.to_string())
}

impl Node {
    /// The grace period after termination, in milliseconds.
    pub fn termination_grace_ms(&self) -> i64 {
        i64::from(self.config.termination_grace_days).saturating_mul(86_400_000)
    }

    /// Whether `peer` may still read its channels with this node (`Heads`, `Fetch`): some
    /// agreement with it is not terminated or is inside the grace period.
    pub fn serves_partner(&self, peer: RegionCode) -> bool {
        self.fed().agreements.serves_partner_at(
            self.region,
            peer,
            self.now(),
            self.termination_grace_ms(),
        )
    }

    /// Applies a verified termination to the current federation snapshot.
    fn apply_termination(self: &Arc<Self>, t: &Termination) {
        let cur = self.fed();
        let mut agreements = cur.agreements.clone();
        if agreements.terminate(t) {
            self.replace_federation(Federation {
                directory: cur.directory.clone(),
                agreements,
                pseudonym_keys: cur.pseudonym_keys.clone(),
            });
            tracing::info!(
                agreement = %t.agreement_id,
                by = %t.by,
                at = t.terminated_at_ms,
                "agreement terminated"
            );
        }
    }

    /// Verifies, keeps and applies a termination notice.
    async fn keep_termination(
        self: &Arc<Self>,
        signed: pb::SignedTermination,
    ) -> Result<Termination, NodeError> {
        let fed = self.fed();
        let t = Termination::verify_in(signed, &fed.agreements, &fed.directory).map_err(refused)?;
        let stored = StoredTermination {
            agreement_id: t.agreement_id.clone(),
            by: t.by,
            signed: t.signed().encode_to_vec(),
        };
        self.store.run(move |s| s.save_termination(&stored)).await?;
        self.apply_termination(&t);
        Ok(t)
    }

    /// `Exchange.Terminate`: the partner `peer` ends an agreement with this node.
    pub async fn receive_termination(
        self: &Arc<Self>,
        peer: RegionCode,
        signed: pb::SignedTermination,
    ) -> Result<(), NodeError> {
        let body = pb::TerminationBody::decode(signed.body.as_slice())
            .map_err(|e| NodeError::bad_field("body", e))?;
        if body.by != peer.as_str() {
            return Err(NodeError::PermissionDenied(format!(
                "a termination sent by `{peer}` must be signed by `{peer}`, not `{}`",
                body.by
            )));
        }
        self.keep_termination(signed).await.map(|_| ())
    }

    /// `Admin.TerminateAgreement`: signs (or, when already terminated by this node, takes the
    /// kept) notice, applies it and sends it to the partner. Answers the notice and whether
    /// the partner has it.
    pub async fn terminate_agreement(
        self: &Arc<Self>,
        agreement_id: &str,
    ) -> Result<(Termination, bool), NodeError> {
        let fed = self.fed();
        let agreement = fed.agreements.get(agreement_id).ok_or_else(|| {
            NodeError::NotFound(format!(
                "agreement `{agreement_id}` is not one this node has"
            ))
        })?;
        let peer = agreement.peer_of(self.region).ok_or_else(|| {
            NodeError::PermissionDenied(format!("this node is no party to `{agreement_id}`"))
        })?;
        let (id, me) = (agreement_id.to_owned(), self.region);
        let kept = self
            .store
            .run(move |s| {
                Ok(s.terminations()?
                    .into_iter()
                    .find(|t| t.agreement_id == id && t.by == me))
            })
            .await?;
        let signed = match kept {
            Some(k) => pb::SignedTermination::decode(k.signed.as_slice())
                .map_err(|e| NodeError::InvalidArgument(format!("kept termination: {e}")))?,
            None => Termination::sign(self.signer().sealer(), agreement_id, me, self.now()),
        };
        let t = self.keep_termination(signed).await?;
        let partner_has_it = match self.send_termination(peer, t.signed().clone()).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%peer, agreement = %t.agreement_id, error = %e,
                    "the partner did not take the termination; call terminate again");
                false
            }
        };
        Ok((t, partner_has_it))
    }

    async fn send_termination(
        &self,
        peer: RegionCode,
        signed: pb::SignedTermination,
    ) -> Result<(), String> {
        let mut client = self.exchange_client(peer).map_err(|e| e.to_string())?;
        match tokio::time::timeout(SEND_TIMEOUT, client.terminate(signed)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
            Err(_) => Err(format!("no answer within {}s", SEND_TIMEOUT.as_secs())),
        }
    }

    /// Sends `peer` again this node's termination notices of agreements with it that are inside
    /// their grace period (the partner keeps the first copy; a repeat changes nothing there).
    pub async fn resend_terminations(self: &Arc<Self>, peer: RegionCode) {
        let fed = self.fed();
        let (now, grace) = (self.now(), self.termination_grace_ms());
        let me = self.region;
        let kept = match self.store.run(|s| s.terminations()).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the kept terminations");
                return;
            }
        };
        for k in kept.into_iter().filter(|k| k.by == me) {
            let due = fed
                .agreements
                .get(&k.agreement_id)
                .is_some_and(|a| a.peer_of(me) == Some(peer) && a.serves_partner_at(now, grace));
            if !due {
                continue;
            }
            let sent = match pb::SignedTermination::decode(k.signed.as_slice()) {
                Ok(signed) => self.send_termination(peer, signed).await,
                Err(e) => Err(format!("kept termination does not decode: {e}")),
            };
            if let Err(e) = sent {
                tracing::warn!(%peer, agreement = %k.agreement_id, error = %e,
                    "the partner did not take the termination; retried with the next run");
            }
        }
    }
}
