//! The node's only way to its store: an async handle that runs every sled call in
//! `spawn_blocking`, so no async task blocks a runtime thread on the disk (fsync takes
//! milliseconds). Only the durable heads and the write refusal, both kept in memory by the
//! store, are read directly.

use std::sync::Arc;

use interflow_core::record::{ChannelId, RecordId};
use interflow_store::{Store, StoreError};

use crate::error::NodeError;

/// A cheap, cloneable handle to the node's store.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    store: Arc<Store>,
}

impl StoreHandle {
    pub fn new(store: Store) -> Self {
        StoreHandle {
            store: Arc::new(store),
        }
    }

    /// Runs `f` with the store on the blocking pool and waits for it.
    pub async fn call<T, F>(&self, f: F) -> Result<T, NodeError>
    where
        F: FnOnce(&Store) -> Result<T, NodeError> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store)).await?
    }

    /// As [`Self::call`] for a single store method.
    pub async fn run<T, F>(&self, f: F) -> Result<T, NodeError>
    where
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.call(move |s| f(s).map_err(NodeError::from)).await
    }

    /// The durable head of a channel (in memory).
    pub fn head(&self, c: ChannelId) -> (u64, RecordId) {
        self.store.head(c)
    }

    /// The durable audit head (in memory), as head statements carry it.
    pub fn audit_head(&self) -> Option<(u64, [u8; 32])> {
        self.store.audit_head()
    }

    /// Why the store refuses writes, if it does (in memory).
    pub fn write_refusal(&self) -> Option<StoreError> {
        self.store.write_refusal()
    }

    /// Whether no other task holds the store any more (the last holder closes it).
    pub fn is_last_holder(&self) -> bool {
        Arc::strong_count(&self.store) == 1
    }
}
