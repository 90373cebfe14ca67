//! Generated code for interflow's wire contract (`proto/interflow/v1`), and nothing else.
//!
//! Conversions to domain types live in `interflow-core`; this crate must stay free of logic so
//! that the contract is exactly what the `.proto` files say.

#![allow(missing_docs, missing_debug_implementations, clippy::all, rustdoc::all)]

pub mod v1 {
    tonic::include_proto!("interflow.v1");
}

/// Encoded `FileDescriptorSet` of every interflow proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("interflow_descriptor");

/// Response metadata of `Intake.Submit`, on answers and refusals alike: the most items the node
/// takes in one request (its `limits.max_submit_batch`), so clients can size their batches.
pub const MAX_SUBMIT_BATCH_HEADER: &str = "x-interflow-max-batch";

/// Metadata of an `Intake.Submit` answered `RESOURCE_EXHAUSTED` because the node's intake is
/// full: milliseconds to wait before sending the same request again.
pub const RETRY_AFTER_MS_HEADER: &str = "retry-after-ms";

/// The wait a busy node asks for: `Some` only for `RESOURCE_EXHAUSTED` carrying a
/// [`RETRY_AFTER_MS_HEADER`] (other exhaustion, such as a rate limit, has no hint).
pub fn retry_after(status: &tonic::Status) -> Option<std::time::Duration> {
    if status.code() != tonic::Code::ResourceExhausted {
        return None;
    }
    let ms = status
        .metadata()
        .get(RETRY_AFTER_MS_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(std::time::Duration::from_millis(ms))
}
