//! Multi-node scenarios against real nodes on loopback with real mTLS and sled directories.

mod delivery;
mod reconcile;
mod security;
mod service;
