//! Per-channel state kept beside the records, in two keys with different promises:
//! - [`ChannelState`] (`c`): the durable chain figures — head, integrity figures (count and
//!   rolling hash, written in the same batch as the records they cover), the acknowledged seq
//!   and the equivocation stop. Changed only inside a durable commit.
//! - [`DeliveryState`] (`d`): advice for operators and the delivery scheduler (attempts, last
//!   error, next retry). Written without the writer lock and without an fsync: after a crash
//!   the next attempt rebuilds it.
//!
//! Both are a version byte followed by a postcard encoding of a store-owned struct, so no wire
//! (protobuf) type decides their bytes.

use interflow_core::record::{ChannelId, RecordId};
use interflow_core::time::UnixMillis;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Place, StoreError, corrupt, undecodable};

/// Version byte of both encodings.
const VERSION: u8 = 2;

/// Durable state of one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelState {
    pub head_seq: u64,
    /// The record id at `head_seq`; zero when the channel is empty.
    pub head: RecordId,
    /// Records stored; equals `head_seq` in a healthy channel.
    pub count: u64,
    /// SHA-256 chain over the ids of every stored record: `r' = H(r || id)`.
    pub rolling: [u8; 32],
    /// Outbound: highest seq the destination acknowledged with a verified receipt.
    pub acked_seq: u64,
    /// Set after equivocation; the channel applies nothing until cleared.
    pub stopped: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct ChannelWire {
    head_seq: u64,
    head: [u8; 32],
    count: u64,
    rolling: [u8; 32],
    acked_seq: u64,
    stopped: Option<String>,
}

/// The rolling hash after one more record.
pub fn roll(prev: [u8; 32], id: RecordId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(id.as_bytes());
    h.finalize().into()
}

impl ChannelState {
    pub(crate) fn decode(c: ChannelId, v: &[u8]) -> Result<Self, StoreError> {
        let w: ChannelWire = decode_versioned(Place::Channel(c), v)?;
        Ok(ChannelState {
            head_seq: w.head_seq,
            head: RecordId(w.head),
            count: w.count,
            rolling: w.rolling,
            acked_seq: w.acked_seq,
            stopped: w.stopped,
        })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        encode_versioned(&ChannelWire {
            head_seq: self.head_seq,
            head: self.head.0,
            count: self.count,
            rolling: self.rolling,
            acked_seq: self.acked_seq,
            stopped: self.stopped.clone(),
        })
    }

    /// Moves the head to `seq` with record `id` and folds it into the integrity figures.
    pub(crate) fn advance(&mut self, seq: u64, id: RecordId) {
        self.rolling = roll(self.rolling, id);
        self.count += 1;
        self.head_seq = seq;
        self.head = id;
    }
}

/// Delivery progress advice for one outbound channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_ms: Option<UnixMillis>,
}

impl DeliveryState {
    pub(crate) fn decode(c: ChannelId, v: &[u8]) -> Result<Self, StoreError> {
        decode_versioned(Place::Channel(c), v)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        encode_versioned(self)
    }
}

pub(crate) fn encode_versioned<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    // Encoding plain structs into a growable Vec cannot fail.
    out.extend(postcard::to_allocvec(value).unwrap_or_default());
    out
}

pub(crate) fn decode_versioned<T: for<'a> Deserialize<'a>>(
    at: Place,
    v: &[u8],
) -> Result<T, StoreError> {
    match v.split_first() {
        Some((&VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|e| undecodable(at, "does not decode", e))
        }
        _ => Err(corrupt(at, "has an unknown encoding version")),
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
    pub delivery: DeliveryState,
}

#[cfg(test)]
mod tests {
    use super::*;
    use interflow_core::fixtures::a_to_b;

    #[test]
    fn states_round_trip_and_refuse_other_versions() {
        let mut st = ChannelState::default();
        st.advance(1, RecordId([7; 32]));
        st.acked_seq = 1;
        st.stopped = Some("equivocation".into());
        let bytes = st.encode();
        assert_eq!(ChannelState::decode(a_to_b(), &bytes).unwrap(), st);
        let d = DeliveryState {
            attempts: 3,
            last_error: Some("unreachable".into()),
            next_attempt_ms: Some(42),
        };
        assert_eq!(DeliveryState::decode(a_to_b(), &d.encode()).unwrap(), d);
        // A version-1 (JSON) state is not read as version 2: the migration converts it.
        assert!(ChannelState::decode(a_to_b(), b"{\"head_seq\":1}").is_err());
    }
}
