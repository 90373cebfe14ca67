//! The interflow node: the peer service `Exchange` over mutual TLS, the local services
//! `Intake` and `Admin`, delivery workers, scheduled reconciliation, configuration and metrics.
//!
//! Owns everything with a socket or a timer. Domain rules come from `interflow-core`; all
//! persistence goes through `interflow-store`, reached only through [`store::StoreHandle`]
//! (every sled call in `spawn_blocking`). Errors meet the wire in one place, [`error`].
//! Never logs national IDs, subject refs or payloads.

pub mod admin;
pub mod audited;
pub mod bench;
pub mod config;
pub mod delivery;
pub mod dev;
pub mod error;
pub mod exchange;
pub mod federation;
pub mod guard;
pub mod holds;
pub mod inbox;
pub mod install;
pub mod intake;
pub mod metrics;
pub mod node;
pub mod person;
pub mod process;
pub mod reconcile;
pub mod rejects;
pub mod reload;
pub mod residence;
pub mod server;
pub mod signer;
pub mod store;
pub mod termination;
pub mod wire;

pub use config::Config;
pub use node::{Clock, Node, system_clock};
pub use server::{Listeners, Running, start};
