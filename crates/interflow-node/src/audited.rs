//! What the audit log says besides who read what: why a person's data was read (a purpose
//! from a closed list and an optional case reference, checked here for every read that names
//! a person), and which calls were refused and why. Every audited method writes exactly one
//! entry per call: the read (or the write's counts) when it is answered, or the refusal.
//!
//! Refusals are the caller's faults — no permission, no identity, a bad argument. A call
//! refused by the rate limit is not written (a flood must not grow the log; the metrics count
//! it), nor is a failure of the node itself.

use interflow_core::pb;
use interflow_store::AuditNote;
use interflow_tls::PeerIdentity;

use crate::error::NodeError;
use crate::node::Node;

/// The longest case reference.
pub const MAX_CASE_REF: usize = 32;

/// The purpose's name in the audit log, e.g. `service-continuity`.
pub fn purpose_name(p: pb::Purpose) -> &'static str {
    match p {
        pb::Purpose::Unspecified => "",
        pb::Purpose::ServiceContinuity => "service-continuity",
        pb::Purpose::OwnRequest => "own-request",
        pb::Purpose::Correction => "correction",
        pb::Purpose::Audit => "audit",
        pb::Purpose::LegalObligation => "legal-obligation",
    }
}

/// Checks a read's purpose (required) and case reference (empty, or 1 to [`MAX_CASE_REF`] of
/// `[A-Za-z0-9._-]`) into the note its audit entry carries.
pub fn read_note(purpose: i32, case_ref: &str) -> Result<AuditNote, NodeError> {
    let purpose = pb::Purpose::try_from(purpose)
        .ok()
        .filter(|p| *p != pb::Purpose::Unspecified)
        .ok_or_else(|| {
            NodeError::bad_field(
                "purpose",
                "is required: service continuity, own request, correction, audit or legal obligation",
            )
        })?;
    let ok = case_ref.len() <= MAX_CASE_REF
        && case_ref
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        // The value is not echoed: it may be anything a clerk typed.
        return Err(NodeError::bad_field(
            "case_ref",
            format!("must be 1 to {MAX_CASE_REF} characters of [A-Za-z0-9._-], or empty"),
        ));
    }
    if looks_like_national_id(case_ref) {
        return Err(NodeError::bad_field(
            "case_ref",
            "looks like a resident ID number; use the bureau's case number instead",
        ));
    }
    Ok(AuditNote {
        purpose: purpose_name(purpose).to_owned(),
        case_ref: case_ref.to_owned(),
        ..AuditNote::default()
    })
}

/// 18 digits (the last may be `X`) or 15 digits: what a resident ID number looks like, which
/// must never become a case reference in the audit log.
fn looks_like_national_id(s: &str) -> bool {
    let b = s.as_bytes();
    match b.len() {
        15 => b.iter().all(u8::is_ascii_digit),
        18 => b[..17].iter().all(u8::is_ascii_digit) && matches!(b[17], b'0'..=b'9' | b'X' | b'x'),
        _ => false,
    }
}

/// The caller as the audit log names it, whatever its role: `admin:ops`, `peer:310115`, or
/// `unknown` without a certificate identity.
pub fn caller_name<T>(req: &tonic::Request<T>) -> String {
    match interflow_tls::peer_identity(req) {
        Some(PeerIdentity::Local { role, name }) => format!("{}:{name}", role.as_str()),
        Some(PeerIdentity::Region(r)) => format!("peer:{r}"),
        None => "unknown".into(),
    }
}

/// Whether `e` refuses the call for something the caller did (and so is audited).
pub fn is_refusal(e: &NodeError) -> bool {
    matches!(
        e,
        NodeError::BadField { .. }
            | NodeError::InvalidArgument(_)
            | NodeError::PermissionDenied(_)
            | NodeError::Unauthenticated
    )
}

impl Node {
    /// Writes the refusal of a call to the audit log when `result` is one, and passes it on.
    /// Handlers call this with the outcome of everything before their own audit entry, so a
    /// call is written once either way.
    pub async fn audit_refusal<T>(
        &self,
        caller: &str,
        action: &'static str,
        result: Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        if let Err(e) = &result {
            self.write_refusal(caller, action, e).await;
        }
        result
    }

    /// Writes `e` to the audit log as the refusal of a call, if it is one.
    pub async fn write_refusal(&self, caller: &str, action: &'static str, e: &NodeError) {
        if !is_refusal(e) {
            return;
        }
        let note = AuditNote {
            refused: e.to_string(),
            ..AuditNote::default()
        };
        let (actor, now) = (caller.to_owned(), self.now());
        if let Err(w) = self
            .store
            .run(move |s| s.audit_noted(now, &actor, action, vec![], note))
            .await
        {
            // The refusal stands either way; the caller learns nothing more.
            tracing::warn!(action, error = %w, "cannot write a refused call to the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_needs_a_purpose_and_at_most_a_short_token_as_case() {
        let sc = pb::Purpose::ServiceContinuity as i32;
        let n = read_note(sc, "CASE-2026.04_7").unwrap();
        assert_eq!(n.purpose, "service-continuity");
        assert_eq!(n.case_ref, "CASE-2026.04_7");
        assert_eq!(read_note(sc, "").unwrap().case_ref, "");
        assert_eq!(
            read_note(pb::Purpose::LegalObligation as i32, "x")
                .unwrap()
                .purpose,
            "legal-obligation"
        );
        for bad_purpose in [0, 6, -1] {
            let e = read_note(bad_purpose, "").unwrap_err();
            assert!(
                matches!(
                    e,
                    NodeError::BadField {
                        field: "purpose",
                        ..
                    }
                ),
                "{e}"
            );
        }
        let id = "11010519491231002X";
        for bad_case in [
            "has space",
            "a/b",
            &"x".repeat(33),
            "名字",
            id,
            &id[..15],
            "C\n",
        ] {
            let e = read_note(sc, bad_case).unwrap_err();
            assert!(
                matches!(
                    e,
                    NodeError::BadField {
                        field: "case_ref",
                        ..
                    }
                ),
                "{bad_case}: {e}"
            );
            assert!(
                !e.to_string().contains(bad_case),
                "the value is echoed: {e}"
            );
        }
        assert!(read_note(sc, &"x".repeat(32)).is_ok());
    }
}
