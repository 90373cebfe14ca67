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
