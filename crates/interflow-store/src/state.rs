//! Per-channel state kept beside the records: the head, the integrity figures (count and
//! rolling hash, written in the same batch as the records they cover) and, for outbound
//! channels, delivery progress and retry state.

use interflow_core::record::{ChannelId, RecordId};
use interflow_core::time::UnixMillis;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Result, StoreError};

/// Stored state of one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelState {
    pub head_seq: u64,
    /// Hex of the record id at `head_seq`; empty when the channel is empty.
    #[serde(default)]
    pub head: String,
    /// Records stored; equals `head_seq` in a healthy channel.
    pub count: u64,
    /// Hex SHA-256 chain over the ids of every stored record: `r' = H(r || id)`.
    #[serde(default)]
    pub rolling: String,
    /// Outbound: highest seq the destination acknowledged with a verified receipt.
    pub acked_seq: u64,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_ms: Option<UnixMillis>,
    /// Set after equivocation; the channel applies nothing until cleared.
    pub stopped: Option<String>,
}

fn hex32(field: &str, s: &str) -> Result<[u8; 32]> {
    if s.is_empty() {
        return Ok([0; 32]);
    }
    let v =
        hex::decode(s).map_err(|_| StoreError::Corrupt(format!("channel {field} is not hex")))?;
    v.try_into()
        .map_err(|_| StoreError::Corrupt(format!("channel {field} is not 32 bytes")))
}

/// The rolling hash after one more record.
pub fn roll(prev: [u8; 32], id: RecordId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(id.as_bytes());
    h.finalize().into()
}

impl ChannelState {
    pub fn decode(v: &[u8]) -> Result<Self> {
        serde_json::from_slice(v).map_err(|e| StoreError::Corrupt(format!("channel state: {e}")))
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain fields to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn head_hash(&self) -> Result<RecordId> {
        hex32("head", &self.head).map(RecordId)
    }

    pub fn rolling_hash(&self) -> Result<[u8; 32]> {
        hex32("rolling", &self.rolling)
    }

    /// Moves the head to `seq` with record `id` and folds it into the integrity figures.
    pub(crate) fn advance(&mut self, seq: u64, id: RecordId) -> Result<()> {
        self.rolling = hex::encode(roll(self.rolling_hash()?, id));
        self.count += 1;
        self.head_seq = seq;
        self.head = id.to_hex();
        Ok(())
    }
}

/// What `pending` reports for one outbound channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChannel {
    pub channel: ChannelId,
    pub head_seq: u64,
    pub acked_seq: u64,
    pub pending_count: u64,
    pub oldest_pending_issued_at_ms: Option<UnixMillis>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_ms: Option<UnixMillis>,
}
