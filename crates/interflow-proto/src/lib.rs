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
