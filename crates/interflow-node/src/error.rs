//! The node's errors and the one place that maps them to `tonic::Status`. Request handlers
//! return [`NodeError`]; internal details are logged in full and answered tersely; nothing
//! personal ever enters a status message.

use interflow_store::StoreError;
use tonic::Status;

/// Why a request (or a background step) failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A request field is invalid; the reason never echoes personal data.
    #[error("`{field}`: {reason}")]
    BadField { field: &'static str, reason: String },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is well formed but the node's state refuses it (a reload with a bad file).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("no client certificate identity")]
    Unauthenticated,
    #[error("request rate limit exceeded; slow down and retry")]
    RateLimited,
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl NodeError {
    pub fn bad_field(field: &'static str, reason: impl ToString) -> Self {
        NodeError::BadField {
            field,
            reason: reason.to_string(),
        }
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        match e {
            NodeError::Store(e) => store_status(e),
            NodeError::BadField { .. } | NodeError::InvalidArgument(_) => {
                Status::invalid_argument(e.to_string())
            }
            NodeError::NotFound(m) => Status::not_found(m),
            NodeError::PermissionDenied(m) => Status::permission_denied(m),
            NodeError::FailedPrecondition(m) => Status::failed_precondition(m),
            NodeError::Unauthenticated => Status::unauthenticated(e.to_string()),
            NodeError::RateLimited => Status::resource_exhausted(e.to_string()),
            NodeError::Task(e) => {
                tracing::error!(error = %e, "background task failed");
                Status::internal("internal error")
            }
        }
    }
}

fn store_status(e: StoreError) -> Status {
    if e.is_disk_full() {
        tracing::error!(error = %e, "store write refused: disk full");
        return Status::resource_exhausted("storage is full; writes resume when space is freed");
    }
    if e.refuses_writes() {
        tracing::error!(error = %e, "store refuses writes");
        return Status::unavailable("storage cannot accept writes; an operator must act");
    }
    tracing::error!(error = %e, "store error");
    Status::internal("internal storage error")
}
