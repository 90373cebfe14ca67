//! Multi-node scenarios against real nodes on loopback with real mTLS and sled directories.

mod agreements;
mod audit;
mod delivery;
mod directory;
mod epochs;
mod inbox;
mod input;
mod keys;
mod partition;
mod privacy;
mod reconcile;
mod residence;
mod security;
mod service;
