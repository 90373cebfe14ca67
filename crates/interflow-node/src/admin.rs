//! The local `Admin` service for operators. Every call is written to the audit log with the
//! caller's certificate identity before it answers; subjects are recorded as record ids or
//! short subject-ref digests, never as national IDs.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use interflow_core::NationalId;
use interflow_core::agreement::LegalBasis;
use interflow_core::payload::Kind;
use interflow_core::pb;
use interflow_core::pseudonym::SubjectRef;
use interflow_core::record::{ChannelId, RecordId};
use interflow_core::statement::verify_heads;
use interflow_core::time::latest_permitted_date;
use interflow_store::{AuditChainAt, AuditNote};
use interflow_tls::Role;
use tonic::{Request, Response, Status};

use crate::audited::{caller_name, read_note};
use crate::error::NodeError;
use crate::node::Node;
use crate::person::{PersonRefs, person_refs, records_of};
use crate::wire;

#[derive(Debug, Clone)]
pub struct AdminService {
    pub node: Arc<Node>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn subject_digest(s: &SubjectRef) -> String {
    format!("ref:{}", hex::encode(&s.as_bytes()[..8]))
}

/// The fewest hex digits of a record id `Admin.GetRecord` looks up by prefix.
const MIN_ID_PREFIX: usize = 8;

/// How many ids a prefix lookup counts before it calls the prefix ambiguous.
const MAX_PREFIX_MATCHES: usize = 100;

impl AdminService {
    /// Validates a national ID and computes the person's ref under each agreement and each
    /// pseudonym epoch kept (refs differ between agreements and epochs by design). Returns the
    /// masked ID and the digests of every ref for the audit entry; the ID goes no further.
    fn person(
        &self,
        national_id: &str,
    ) -> Result<(String, Vec<PersonRefs>, Vec<String>), NodeError> {
        let today = latest_permitted_date(self.node.now(), 0);
        let id = NationalId::parse(national_id, today)
            .map_err(|e| NodeError::bad_field("national_id", e))?;
        let refs = person_refs(&self.node.fed(), self.node.region, &id);
        let digests = refs
            .iter()
            .flat_map(|p| p.refs.iter().map(subject_digest))
            .collect();
        Ok((id.masked(), refs, digests))
    }

    /// The one stored record id that starts with the hex digits `prefix` (at least
    /// [`MIN_ID_PREFIX`]).
    async fn record_id_by_prefix(&self, prefix: &str) -> Result<RecordId, NodeError> {
        let field = "record_id_prefix";
        let prefix = prefix.to_ascii_lowercase();
        if !(MIN_ID_PREFIX..=64).contains(&prefix.len())
            || !prefix.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(NodeError::bad_field(
                field,
                format!("must be {MIN_ID_PREFIX} to 64 hex digits"),
            ));
        }
        // Whole bytes go to the index scan; an odd last digit is matched here.
        let whole = hex::decode(&prefix[..prefix.len() / 2 * 2])
            .map_err(|e| NodeError::bad_field(field, e))?;
        let found: Vec<RecordId> = self
            .node
            .store
            .run(move |s| s.ids_with_prefix(&whole, MAX_PREFIX_MATCHES))
            .await?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&prefix))
            .collect();
        match found.as_slice() {
            [] => Err(NodeError::NotFound(format!(
                "no record id starts with `{prefix}`"
            ))),
            [id] => Ok(*id),
            many => Err(NodeError::InvalidArgument(format!(
                "{}{} record ids start with `{prefix}`; give more digits",
                many.len(),
                if many.len() >= MAX_PREFIX_MATCHES {
                    " or more"
                } else {
                    ""
                }
            ))),
        }
    }

    /// Checks the role and writes the audit entry; returns the actor.
    async fn audited<T>(
        &self,
        req: &Request<T>,
        action: &'static str,
        subjects: Vec<String>,
    ) -> Result<String, NodeError> {
        self.audited_why(req, action, subjects, AuditNote::default())
            .await
    }

    /// [`Self::audited`] for a read of a person's data, with its purpose and case.
    async fn audited_why<T>(
        &self,
        req: &Request<T>,
        action: &'static str,
        subjects: Vec<String>,
        note: AuditNote,
    ) -> Result<String, NodeError> {
        let actor = self.node.local_caller(req, Role::Admin)?;
        let (a, now) = (actor.clone(), self.node.now());
        self.node
            .store
            .run(move |s| s.audit_noted(now, &a, action, subjects, note))
            .await?;
        Ok(actor)
    }
}

impl AdminService {
    /// What each peer with an agreement holds of this node's audit chain (the audit head in
    /// the latest head statement this node signed for it), compared with the local chain
    /// recomputed at that index.
    async fn peer_anchors(&self) -> Result<Vec<pb::PeerAnchor>, NodeError> {
        let n = &self.node;
        let me = n.region;
        let mut out = Vec::new();
        for peer in n.fed().agreements.all_peers(me) {
            let mut a = pb::PeerAnchor {
                peer: peer.to_string(),
                ..Default::default()
            };
            let answer = match n.exchange_client(peer) {
                Ok(mut c) => tokio::time::timeout(
                    n.config.limits.request_timeout(),
                    c.audit_anchor(pb::AuditAnchorRequest {}),
                )
                .await
                .map_err(|_| "timed out".to_owned())
                .and_then(|r| r.map_err(|s| s.message().to_owned())),
                Err(e) => Err(e.to_string()),
            };
            let signed = match answer {
                Ok(r) => r.into_inner().heads,
                Err(why) => {
                    a.state = pb::AnchorState::Unreachable as i32;
                    a.problem = format!("the peer did not answer: {why}");
                    out.push(a);
                    continue;
                }
            };
            let Some(signed) = signed else {
                a.state = pb::AnchorState::None as i32;
                a.problem = "the peer holds no head statement of this node yet (it keeps one when it reconciles)".into();
                out.push(a);
                continue;
            };
            // Signed by whichever of this node's keys was in use then.
            let heads = match verify_heads(&signed, &n.fed().directory) {
                Ok(h) if h.signer == me && h.peer == peer => h,
                Ok(_) => {
                    a.state = pb::AnchorState::BadStatement as i32;
                    a.problem =
                        "the statement the peer holds is not one this node signed for it".into();
                    out.push(a);
                    continue;
                }
                Err(e) => {
                    a.state = pb::AnchorState::BadStatement as i32;
                    a.problem = format!(
                        "the statement the peer holds does not verify under this node's key: {e}"
                    );
                    out.push(a);
                    continue;
                }
            };
            a.issued_at_ms = heads.issued_at_ms;
            let Some(anchor) = heads.audit else {
                a.state = pb::AnchorState::None as i32;
                a.problem = "the statement the peer holds carries no audit head".into();
                out.push(a);
                continue;
            };
            a.audit_seq = anchor.seq;
            a.audit_hash = anchor.hash.to_vec();
            let local = n.store.run(move |s| s.audit_chain_at(anchor.seq)).await?;
            let (state, problem) = match local {
                AuditChainAt::Hash(h) if h == anchor.hash => {
                    (pb::AnchorState::Matches, String::new())
                }
                AuditChainAt::Hash(_) => (
                    pb::AnchorState::Mismatch,
                    format!(
                        "the audit log was rewritten: entry `{}` (or one before it) differs from what this node signed to `{peer}`",
                        anchor.seq
                    ),
                ),
                AuditChainAt::Missing { index } => (
                    pb::AnchorState::Mismatch,
                    format!(
                        "audit entry `{index}` is missing, but this node signed to `{peer}` an audit head at `{}`",
                        anchor.seq
                    ),
                ),
                AuditChainAt::Broken { index } => (
                    pb::AnchorState::Mismatch,
                    format!(
                        "the audit chain breaks at entry `{index}`, before the head at `{}` this node signed to `{peer}`",
                        anchor.seq
                    ),
                ),
            };
            a.state = state as i32;
            a.problem = problem;
            out.push(a);
        }
        Ok(out)
    }
}

/// The handlers: each returns a [`NodeError`], so the trait methods below can audit a refusal.
impl AdminService {
    async fn list_channels_inner(
        &self,
        req: Request<pb::ListChannelsRequest>,
    ) -> Result<Response<pb::ListChannelsResponse>, NodeError> {
        self.audited(&req, "Admin.ListChannels", vec![]).await?;
        let n = &self.node;
        let mut all = n.store.run(|s| s.channels()).await?;
        let fed = n.fed();
        let channels = {
            // Channels of every agreement, also those with no record yet.
            for peer in n.fed().agreements.all_peers(n.region) {
                for c in [
                    ChannelId::new(n.region, peer),
                    ChannelId::new(peer, n.region),
                ] {
                    if !all.iter().any(|(x, _)| *x == c) {
                        all.push((c, interflow_store::ChannelState::default()));
                    }
                }
            }
            all.sort_by_key(|(c, _)| (c.origin != n.region, *c));
            all.into_iter()
                .map(|(c, st)| {
                    let (head, hash) = n.store.head(c);
                    pb::ChannelInfo {
                        origin: c.origin.to_string(),
                        destination: c.destination.to_string(),
                        direction: if c.origin == n.region {
                            pb::Direction::Outbound
                        } else {
                            pb::Direction::Inbound
                        } as i32,
                        head_seq: head,
                        head_hash: hash.0.to_vec(),
                        acked_seq: st.acked_seq,
                        stopped: st.stopped.is_some(),
                        held: c.origin == n.region && n.holds.is_held(c),
                        removed: fed
                            .directory
                            .member(if c.origin == n.region {
                                c.destination
                            } else {
                                c.origin
                            })
                            .is_none(),
                    }
                })
                .collect()
        };
        let last_reload_error = self
            .node
            .last_reload()
            .and_then(|r| r.error)
            .unwrap_or_default();
        Ok(Response::new(pb::ListChannelsResponse {
            channels,
            last_reload_error,
        }))
    }

    async fn list_pending_inner(
        &self,
        req: Request<pb::ListPendingRequest>,
    ) -> Result<Response<pb::ListPendingResponse>, NodeError> {
        self.audited(&req, "Admin.ListPending", vec![]).await?;
        let n = &self.node;
        let region = n.region;
        let mut pending = n.store.run(move |s| s.pending(region)).await?;
        let resp = {
            for peer in n.fed().agreements.all_peers(n.region) {
                let c = ChannelId::new(n.region, peer);
                if !pending.iter().any(|p| p.channel == c) {
                    pending.push(interflow_store::PendingChannel {
                        channel: c,
                        head_seq: 0,
                        acked_seq: 0,
                        pending_count: 0,
                        oldest_pending_issued_at_ms: None,
                        delivery: Default::default(),
                    });
                }
            }
            pb::ListPendingResponse {
                now_ms: n.now(),
                channels: pending
                    .into_iter()
                    .map(|p| {
                        // One read, so `held` and `held_since_ms` agree.
                        let held_since = n.holds.held_since(p.channel);
                        pb::PendingChannel {
                            destination: p.channel.destination.to_string(),
                            head_seq: p.head_seq,
                            acked_seq: p.acked_seq,
                            pending_count: p.pending_count,
                            oldest_pending_issued_at_ms: p.oldest_pending_issued_at_ms.unwrap_or(0),
                            attempts: p.delivery.attempts,
                            last_error: p.delivery.last_error.unwrap_or_default(),
                            next_attempt_at_ms: p.delivery.next_attempt_ms.unwrap_or(0),
                            held: held_since.is_some(),
                            held_since_ms: held_since.unwrap_or(0),
                        }
                    })
                    .collect(),
            }
        };
        Ok(Response::new(resp))
    }

    async fn get_record_inner(
        &self,
        req: Request<pb::GetRecordRequest>,
    ) -> Result<Response<pb::GetRecordResponse>, NodeError> {
        let note = read_note(req.get_ref().purpose, &req.get_ref().case_ref)?;
        let id = match req.get_ref().record_id_prefix.as_str() {
            "" => RecordId::try_from(req.get_ref().record_id.as_slice())
                .map_err(|e| NodeError::bad_field("record_id", e))?,
            prefix => {
                // Only an admin may learn which ids exist; the audited call below admits.
                if !matches!(
                    interflow_tls::peer_identity(&req),
                    Some(interflow_tls::PeerIdentity::Local {
                        role: Role::Admin,
                        ..
                    })
                ) {
                    self.node.local_caller(&req, Role::Admin)?;
                }
                self.record_id_by_prefix(prefix).await?
            }
        };
        self.audited_why(&req, "Admin.GetRecord", vec![id.to_hex()], note)
            .await?;
        let entry = self
            .node
            .store
            .run(move |s| s.get_entry(id))
            .await?
            .ok_or_else(|| NodeError::NotFound(format!("no record `{id}`")))?;
        let resp = match entry.record() {
            None => pb::GetRecordResponse {
                record: None,
                signature_valid: false,
                erased: true,
                record_id: id.0.to_vec(),
            },
            Some(rec) => {
                let valid = rec.check_signature(&self.node.fed().directory).is_ok();
                pb::GetRecordResponse {
                    record: Some(rec.into_signed()),
                    signature_valid: valid,
                    erased: false,
                    record_id: id.0.to_vec(),
                }
            }
        };
        Ok(Response::new(resp))
    }

    async fn lookup_inner(
        &self,
        req: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, NodeError> {
        let note = read_note(req.get_ref().purpose, &req.get_ref().case_ref)?;
        let (masked, refs, digests) = self.person(&req.get_ref().national_id)?;
        self.audited_why(&req, "Admin.Lookup", digests, note)
            .await?;
        let resp = self
            .node
            .store
            .call(move |store| {
                let mut current = Vec::new();
                let mut timeline = Vec::new();
                for PersonRefs {
                    agreement,
                    peer,
                    refs,
                } in refs
                {
                    // Her records under every epoch: a status is current across a rotation.
                    let records = records_of(store, &refs)?;
                    for kind in Kind::ALL {
                        // A status that crossed our DEPARTED notice is kept but never current.
                        if let Some(r) = crate::residence::current_excluding_after_departure(
                            &records, kind, None,
                        ) {
                            current.push(pb::SubjectStatus {
                                agreement_id: agreement.clone(),
                                peer: peer.to_string(),
                                kind: pb::RecordKind::from(kind) as i32,
                                current: Some(r.into_signed()),
                            });
                        }
                    }
                    timeline.extend(records);
                }
                timeline.sort_by_key(|r| (r.payload().observed_on(), r.issued_at_ms()));
                Ok(pb::LookupResponse {
                    masked_id: masked,
                    current,
                    timeline: timeline.into_iter().map(|r| r.into_signed()).collect(),
                })
            })
            .await?;
        Ok(Response::new(resp))
    }

    async fn reconcile_inner(
        &self,
        req: Request<pb::ReconcileRequest>,
    ) -> Result<Response<BoxStream<pb::ReconcileProgress>>, NodeError> {
        // Arguments are checked first: a refused call is audited once, as refused.
        let only = match req.get_ref().peer.as_str() {
            "" => None,
            p => Some(
                p.parse::<interflow_core::RegionCode>()
                    .map_err(|e| NodeError::bad_field("peer", e))?,
            ),
        };
        if let Some(p) = only
            && self
                .node
                .fed()
                .agreements
                .all_peers(self.node.region)
                .binary_search(&p)
                .is_err()
        {
            return Err(NodeError::bad_field(
                "peer",
                format!("no agreement with `{p}`"),
            ));
        }
        self.audited(&req, "Admin.Reconcile", vec![]).await?;
        let r = req.into_inner();
        let rx = crate::reconcile::start_run(
            self.node.clone(),
            only,
            r.recover || self.node.config.reconcile.recover,
        )
        .await
        .map_err(|s| NodeError::InvalidArgument(s.message().to_owned()))?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_reconcile_reports_inner(
        &self,
        req: Request<pb::ListReconcileReportsRequest>,
    ) -> Result<Response<pb::ListReconcileReportsResponse>, NodeError> {
        self.audited(&req, "Admin.ListReconcileReports", vec![])
            .await?;
        let limit = match req.get_ref().limit {
            0 => 20,
            l => l.min(1000) as usize,
        };
        let reports = self.node.store.run(move |s| s.reports(limit)).await?;
        Ok(Response::new(pb::ListReconcileReportsResponse {
            reports: reports.iter().map(wire::report).collect(),
        }))
    }

    async fn verify_log_inner(
        &self,
        req: Request<pb::VerifyLogRequest>,
    ) -> Result<Response<pb::VerifyLogResponse>, NodeError> {
        self.audited(&req, "Admin.VerifyLog", vec![]).await?;
        let req_with_peers = req.get_ref().with_peers;
        let node = self.node.clone();
        let r = self
            .node
            .store
            .run(move |s| {
                let fed = node.fed();
                s.verify_log(&|r| r.check_signature(&fed.directory))
            })
            .await?;
        let peers = if req_with_peers {
            self.peer_anchors().await?
        } else {
            Vec::new()
        };
        let anchors_ok = peers.iter().all(|p| {
            p.state != pb::AnchorState::Mismatch as i32
                && p.state != pb::AnchorState::BadStatement as i32
        });
        Ok(Response::new(pb::VerifyLogResponse {
            ok: r.ok() && anchors_ok,
            peers,
            records_checked: r.records_checked,
            audit_entries_checked: r.audit_entries_checked,
            problems: r
                .problems
                .into_iter()
                .map(|p| pb::ChannelProblem {
                    origin: p.channel.map(|c| c.origin.to_string()).unwrap_or_default(),
                    destination: p
                        .channel
                        .map(|c| c.destination.to_string())
                        .unwrap_or_default(),
                    seq: p.seq,
                    problem: p.problem,
                })
                .collect(),
        }))
    }

    async fn audit_log_inner(
        &self,
        req: Request<pb::AuditLogRequest>,
    ) -> Result<Response<pb::AuditLogResponse>, NodeError> {
        self.audited(&req, "Admin.AuditLog", vec![]).await?;
        let since = req.get_ref().since_ms;
        let limit = match req.get_ref().limit {
            0 => 100,
            l => l.min(10_000) as usize,
        };
        let newest_first = req.get_ref().newest_first;
        let page = self
            .node
            .store
            .run(move |s| s.audit_page(since, limit, newest_first))
            .await?;
        Ok(Response::new(pb::AuditLogResponse {
            entries: page.entries.iter().map(wire::audit_entry).collect(),
            total: page.total,
        }))
    }

    async fn resume_channel_inner(
        &self,
        req: Request<pb::ResumeChannelRequest>,
    ) -> Result<Response<pb::ResumeChannelResponse>, NodeError> {
        let parse = |field: &'static str, v: &str| {
            v.parse::<interflow_core::RegionCode>()
                .map_err(|e| NodeError::bad_field(field, e))
        };
        let r = req.get_ref();
        let channel = interflow_core::record::ChannelId::new(
            parse("origin", &r.origin)?,
            parse("destination", &r.destination)?,
        );
        let actor = self
            .audited(&req, "Admin.ResumeChannel", vec![channel.to_string()])
            .await?;
        let resp = self
            .node
            .store
            .call(move |store| {
                let was_stopped = store.channel_state(channel)?.stopped.is_some();
                let evidence = store.evidence(channel)?.len();
                if was_stopped {
                    store.clear_stop(channel)?;
                }
                Ok(pb::ResumeChannelResponse {
                    was_stopped,
                    evidence: u32::try_from(evidence).unwrap_or(u32::MAX),
                })
            })
            .await?;
        if resp.was_stopped {
            tracing::warn!(%channel, %actor, "channel resumed by an operator");
        }
        Ok(Response::new(resp))
    }

    async fn disclosure_inner(
        &self,
        req: Request<pb::DisclosureRequest>,
    ) -> Result<Response<pb::DisclosureResponse>, NodeError> {
        let note = read_note(req.get_ref().purpose, &req.get_ref().case_ref)?;
        let (masked, refs, digests) = self.person(&req.get_ref().national_id)?;
        self.audited_why(&req, "Admin.Disclosure", digests.clone(), note)
            .await?;
        let n = self.node.clone();
        let resp = self
            .node
            .store
            .call(move |store| {
                let mut exchanges = Vec::new();
                let mut record_ids = std::collections::HashSet::new();
                for p in &refs {
                    for r in records_of(store, &p.refs)? {
                        let c = r.channel();
                        let outbound = c.origin == n.region;
                        let acknowledged = outbound && store.channel_state(c)?.acked_seq >= r.seq();
                        let fed = n.fed();
                        let agreement = fed.agreements.get(r.agreement_id());
                        let (legal_basis, statute) = match agreement.map(|a| &a.legal_basis) {
                            Some(LegalBasis::StatutoryDuty { statute }) => {
                                (pb::LegalBasisKind::StatutoryDuty, statute.clone())
                            }
                            Some(LegalBasis::Consent) => {
                                (pb::LegalBasisKind::Consent, String::new())
                            }
                            None => (pb::LegalBasisKind::Unspecified, String::new()),
                        };
                        record_ids.insert(r.id().to_hex());
                        exchanges.push(pb::ExchangeEvent {
                            record_id: r.id().0.to_vec(),
                            origin: c.origin.to_string(),
                            destination: c.destination.to_string(),
                            seq: r.seq(),
                            direction: if outbound {
                                pb::Direction::Outbound
                            } else {
                                pb::Direction::Inbound
                            } as i32,
                            kind: pb::RecordKind::from(r.kind()) as i32,
                            issued_at_ms: r.issued_at_ms(),
                            agreement_id: r.agreement_id().to_owned(),
                            legal_basis: legal_basis as i32,
                            statute_reference: statute,
                            acknowledged,
                        });
                    }
                }
                exchanges.sort_by_key(|e| e.issued_at_ms);
                // Reads name a person by ref digest (lookups) or by record id (GetRecord).
                let reads = store
                    .audit_entries(0, usize::MAX)?
                    .into_iter()
                    .filter(|e| {
                        e.subjects
                            .iter()
                            .any(|s| digests.contains(s) || record_ids.contains(s))
                    })
                    .map(|e| pb::ReadEvent {
                        audit_index: e.index,
                        at_ms: e.at_ms,
                        actor: e.actor,
                        action: e.action,
                        purpose: e.note.purpose,
                        case_ref: e.note.case_ref,
                    })
                    .collect();
                Ok(pb::DisclosureResponse {
                    masked_id: masked,
                    exchanges,
                    reads,
                })
            })
            .await?;
        Ok(Response::new(resp))
    }

    async fn list_agreements_inner(
        &self,
        req: Request<pb::ListAgreementsRequest>,
    ) -> Result<Response<pb::ListAgreementsResponse>, NodeError> {
        self.audited(&req, "Admin.ListAgreements", vec![]).await?;
        let (now, grace) = (self.node.now(), self.node.termination_grace_ms());
        let agreements = self
            .node
            .fed()
            .agreements
            .iter()
            .map(|a| wire::agreement_info(a, now, grace))
            .collect();
        Ok(Response::new(pb::ListAgreementsResponse { agreements }))
    }

    async fn install_agreement_inner(
        &self,
        req: Request<pb::InstallAgreementRequest>,
    ) -> Result<Response<pb::InstallAgreementResponse>, NodeError> {
        let actor = self.audited(&req, "Admin.InstallAgreement", vec![]).await?;
        let r = req.into_inner();
        let signed = r
            .agreement
            .ok_or_else(|| NodeError::bad_field("agreement", "is required"))?;
        let (id, peer, installed_now) = self
            .node
            .install_agreement(signed, &r.pseudonym_key_file)
            .await?;
        tracing::warn!(agreement = %id, %peer, %actor, installed_now, "agreement installed by an operator");
        Ok(Response::new(pb::InstallAgreementResponse {
            agreement_id: id,
            peer: peer.to_string(),
            installed_now,
        }))
    }

    async fn terminate_agreement_inner(
        &self,
        req: Request<pb::TerminateAgreementRequest>,
    ) -> Result<Response<pb::TerminateAgreementResponse>, NodeError> {
        let id = req.get_ref().agreement_id.clone();
        interflow_core::agreement::check_agreement_id(&id)
            .map_err(|r| NodeError::bad_field("agreement_id", r))?;
        let actor = self
            .audited(&req, "Admin.TerminateAgreement", vec![id.clone()])
            .await?;
        let (t, partner_has_it) = self.node.terminate_agreement(&id).await?;
        tracing::warn!(agreement = %id, %actor, partner_has_it, "agreement terminated by an operator");
        Ok(Response::new(pb::TerminateAgreementResponse {
            termination: Some(t.signed().clone()),
            terminated_at_ms: t.terminated_at_ms,
            partner_has_it,
        }))
    }

    async fn stats_inner(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, NodeError> {
        self.audited(&req, "Admin.Stats", vec![]).await?;
        let region = self.node.region;
        let s = self.node.store.run(move |s| s.stats(region)).await?;
        Ok(Response::new(pb::StatsResponse {
            region_code: self.node.region.to_string(),
            records_outbound: s.records_outbound,
            records_inbound: s.records_inbound,
            pending: s.pending,
            equivocations: s.equivocations,
            audit_entries: s.audit_entries,
            reconcile_runs: s.reconcile_runs,
        }))
    }

    async fn coverage_inner(
        &self,
        req: Request<pb::CoverageRequest>,
    ) -> Result<Response<pb::CoverageResponse>, NodeError> {
        self.audited(&req, "Admin.Coverage", vec![]).await?;
        let resp = self.node.coverage().await?;
        Ok(Response::new(resp))
    }

    async fn federation_inner(
        &self,
        req: Request<pb::FederationRequest>,
    ) -> Result<Response<pb::FederationResponse>, NodeError> {
        self.audited(&req, "Admin.Federation", vec![]).await?;
        let n = &self.node;
        let fed = n.fed();
        let now = n.now();
        let last = n.last_reload().unwrap_or_default();
        Ok(Response::new(pb::FederationResponse {
            directory_serial: fed.directory.serial,
            directory_issued_at_ms: fed.directory.issued_at_ms,
            directory_expires_at_ms: fed.directory.expires_at_ms.unwrap_or(0),
            directory_expired: fed.directory.expired_at(now),
            directory_source: n.directory_source().1.to_string(),
            members: u32::try_from(fed.directory.members().count()).unwrap_or(u32::MAX),
            agreements: u32::try_from(fed.agreements.iter().count()).unwrap_or(u32::MAX),
            last_reload_at_ms: last.at_ms,
            last_reload_error: last.error.unwrap_or_default(),
            rollbacks_refused: n.metrics.directory_rollbacks.get(),
            now_ms: now,
        }))
    }

    async fn reload_inner(
        &self,
        req: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, NodeError> {
        self.audited(&req, "Admin.Reload", vec![]).await?;
        let fed = self
            .node
            .reload()
            .await
            .map_err(|e| NodeError::FailedPrecondition(e.to_string()))?;
        Ok(Response::new(pb::ReloadResponse {
            directory_serial: fed.directory.serial,
            members: u32::try_from(fed.directory.members().count()).unwrap_or(u32::MAX),
            agreements: u32::try_from(fed.agreements.iter().count()).unwrap_or(u32::MAX),
        }))
    }
}

/// Every method writes one audit entry: the read (in the handler), or the refusal (here).
#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    type ReconcileStream = BoxStream<pb::ReconcileProgress>;

    async fn list_channels(
        &self,
        req: Request<pb::ListChannelsRequest>,
    ) -> Result<Response<pb::ListChannelsResponse>, Status> {
        let caller = caller_name(&req);
        let r = self.list_channels_inner(req).await;
        Ok(self
            .node
            .audit_refusal(&caller, "Admin.ListChannels", r)
            .await?)
    }

    async fn list_pending(
        &self,
        req: Request<pb::ListPendingRequest>,
    ) -> Result<Response<pb::ListPendingResponse>, Status> {
        let caller = caller_name(&req);
        let r = self.list_pending_inner(req).await;
        Ok(self
            .node
            .audit_refusal(&caller, "Admin.ListPending", r)
            .await?)
    }

    async fn get_record(
        &self,
        req: Request<pb::GetRecordRequest>,
    ) -> Result<Response<pb::GetRecordResponse>, Status> {
        let caller = caller_name(&req);
        let r = self.get_record_inner(req).await;
        Ok(self
            .node
            .audit_refusal(&caller, "Admin.GetRecord", r)
            .await?)
    }

    async fn lookup(
        &self,
        req: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        let caller = caller_name(&req);
        let r = self.lookup_inner(req).await;
        Ok(self.node.audit_refusal(&caller, "Admin.Lookup", r).await?)
    }

    async fn reconcile(
        &self,
        req: Request<pb::ReconcileRequest>,
    ) -> Result<Response<Self::ReconcileStream>, Status> {
        let caller = caller_name(&req);
        let r = self.reconcile_inner(req).await;
        Ok(self
            .node
            .audit_refusal(&caller, "Admin.Reconcile", r)
            .await?)
    }

    async fn list_reconcile_reports(
        &self,
        req: Request<pb::ListReconcileReportsRequest>,
    ) -> Result<Response<pb::ListReconcileReportsResponse>, Status> {
        let caller = caller_name(&req);
        let r = self.list_reconcile_reports_inner(req).await;
        Ok(self
            .node
            .audit_refusal(&caller, "Admin.ListReconcileReports", r)
            .await?)
    }

    async fn verify_log(
        &self,
        req: Request<pb::VerifyLogRequest>,
    ) -> Result<Response<pb::VerifyLogResponse>, Status> {
        let caller = caller_name(&req);
        let r = self.verify_log_inner(req).await;
        Ok(self
            .node
            .audit_refusal(&caller, "Admin.VerifyLog", r)
            .await?)
    }

    async fn audit_log(
        &self,
        req: Request<pb::AuditLogRequest>,
    ) -> Result<Response<pb::AuditLogResponse>, Status> {
        let caller = caller_name(&req);
        let r = self.audit_log_inner(req).await;
        Ok(self
            .node
            .audit_refusal(&caller, "Admin.AuditLog", r)
            .await?)
    }

    async fn resume_channel(
        &self,
        req: Request<pb::ResumeChannelRequest>,
    ) -> Result<Response<pb::ResumeChannelResponse>, Status> {
        let caller = caller_name(&req);
        let r = self.resume_channel_inner(req).await;
        Ok(self
            .node
            .audit_refusal(&caller, "Admin.ResumeChannel", r)
            .await?)
    }

    async fn disclosure(
        &self,
        req: Request<pb::DisclosureRequest>,
    ) -> Result<Response<pb::DisclosureResponse>, Status> {
        let caller = caller_name(&req);
        let r = self.disclosure_inner(req).await;
        Ok(self
            .node
            .audit_refusal(&caller, "Admin.Disclosure", r)
            .await?)
    }

    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let caller = caller_name(&req);
        let r = self.stats_inner(req).await;
        Ok(self.node.audit_refusal(&caller, "Admin.Stats", r).await?)
    }

    async fn coverage(
        &self,
        req: Request<pb::CoverageRequest>,
    ) -> Result<Response<pb::CoverageResponse>, Status> {
        let caller = caller_name(&req);
        let r = self.coverage_inner(req).await;
        Ok(self
            .node
            .audit_refusal(&caller, "Admin.Coverage", r)
            .await?)
    }

    async fn reload(
        &self,
        req: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        let caller = caller_name(&req);
        let r = self.reload_inner(req).await;
        Ok(self.node.audit_refusal(&caller, "Admin.Reload", r).await?)
    }

    async fn federation(
        &self,
        req: Request<pb::FederationRequest>,
    ) -> Result<Response<pb::FederationResponse>, Status> {
        let caller = caller_name(&req);
        let r = self.federation_inner(req).await;
        Ok(self
            .node
            .audit_refusal(&caller, "Admin.Federation", r)
            .await?)
    }

    async fn list_agreements(
        &self,
        req: Request<pb::ListAgreementsRequest>,
    ) -> Result<Response<pb::ListAgreementsResponse>, Status> {
        let caller = caller_name(&req);
        let r = self.list_agreements_inner(req).await;
        Ok(self
            .node
            .audit_refusal(&caller, "Admin.ListAgreements", r)
            .await?)
    }

    async fn install_agreement(
        &self,
        req: Request<pb::InstallAgreementRequest>,
    ) -> Result<Response<pb::InstallAgreementResponse>, Status> {
        let caller = caller_name(&req);
        let r = self.install_agreement_inner(req).await;
        Ok(self
            .node
            .audit_refusal(&caller, "Admin.InstallAgreement", r)
            .await?)
    }

    async fn terminate_agreement(
        &self,
        req: Request<pb::TerminateAgreementRequest>,
    ) -> Result<Response<pb::TerminateAgreementResponse>, Status> {
        let caller = caller_name(&req);
        let r = self.terminate_agreement_inner(req).await;
        Ok(self
            .node
            .audit_refusal(&caller, "Admin.TerminateAgreement", r)
            .await?)
    }
}
