//! The one place that maps internal errors to `tonic::Status`: internal details are logged in
//! full and answered tersely; nothing personal ever enters a status message.

use interflow_store::StoreError;
use tonic::Status;

/// A store failure as a gRPC status.
pub fn store(e: StoreError) -> Status {
    match &e {
        _ if e.is_disk_full() => {
            tracing::error!(error = %e, "store write refused: disk full");
            Status::resource_exhausted("storage is full; writes resume when space is freed")
        }
        StoreError::Poisoned(_) | StoreError::ReadOnly(_) | StoreError::Closed(_) => {
            tracing::error!(error = %e, "store refuses writes");
            Status::unavailable("storage cannot accept writes; an operator must act")
        }
        _ => {
            tracing::error!(error = %e, "store error");
            Status::internal("internal storage error")
        }
    }
}
