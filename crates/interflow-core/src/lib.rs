//! interflow's pure domain: region codes, national IDs and pseudonyms, payload validation,
//! record signing and verification, agreements, and the federation directory.
//!
//! This crate does no I/O beyond reading and writing key files on request, starts no tasks and
//! never reads the clock: every check that depends on time takes `now` from its caller.

pub mod accept;
pub mod agreement;
pub mod canonical;
pub mod directory;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod idempotency;
pub mod keys;
pub mod national_id;
pub mod payload;
pub mod pseudonym;
pub mod record;
pub mod region;
pub mod sign;
pub mod sm2_suite;
pub mod statement;
pub mod termination;
pub mod time;

/// The encoded descriptor set of every `interflow.v1` service, for server reflection.
pub use interflow_proto::FILE_DESCRIPTOR_SET;
/// The wire types. Every crate above core reaches them through this re-export (one way), and
/// the store not at all.
pub use interflow_proto::v1 as pb;
/// The `Intake.Submit` response header that names the node's batch limit.
pub use interflow_proto::{MAX_SUBMIT_BATCH_HEADER, RETRY_AFTER_MS_HEADER, retry_after};
pub use national_id::NationalId;
pub use region::RegionCode;
