//! Fork-safe restore: the outbound channels on which no new record may be issued until this
//! node compared its head with the peer's signed view. Every channel starts held; only a
//! reconciliation run that did the comparison releases one. One owner (the [`Node`]), one type.
//!
//! [`Node`]: crate::node::Node

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use interflow_core::record::ChannelId;
use interflow_core::time::UnixMillis;

/// The held outbound channels, each with the time it has been held since (the node's start),
/// so a hold that lasts is visible as such to monitoring.
#[derive(Debug)]
pub struct Holds(Mutex<HashMap<ChannelId, UnixMillis>>);

impl Holds {
    /// Holds every channel in `channels` since `now`.
    pub fn all(channels: impl IntoIterator<Item = ChannelId>, now: UnixMillis) -> Self {
        Holds(Mutex::new(channels.into_iter().map(|c| (c, now)).collect()))
    }

    fn set(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelId, UnixMillis>> {
        // The set stays consistent even if a holder panicked: every operation is one call.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether new records on `channel` must wait for a head comparison with the peer.
    pub fn is_held(&self, channel: ChannelId) -> bool {
        self.set().contains_key(&channel)
    }

    /// Since when `channel` is held, if it is.
    pub fn held_since(&self, channel: ChannelId) -> Option<UnixMillis> {
        self.set().get(&channel).copied()
    }

    /// Releases `channel` after its head was compared; logs the first release.
    pub fn release(&self, channel: ChannelId) {
        if self.set().remove(&channel).is_some() {
            tracing::info!(%channel, "outbound channel released after comparing heads with the peer");
        }
    }

    /// Holds `channel` since `now` (a peer that joined while the node runs), unless it is.
    pub fn hold(&self, channel: ChannelId, now: UnixMillis) {
        self.set().entry(channel).or_insert(now);
    }

    /// Forgets `channel` (its peer left the federation): nothing is issued on it anyway.
    pub fn remove(&self, channel: ChannelId) {
        self.set().remove(&channel);
    }

    /// Whether any channel is still held.
    pub fn any(&self) -> bool {
        !self.set().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use interflow_core::record::ChannelId;

    fn a_to_b() -> ChannelId {
        ChannelId::new("310115".parse().unwrap(), "110105".parse().unwrap())
    }

    #[test]
    fn channels_stay_held_until_released() {
        let h = Holds::all([a_to_b()], 1_000);
        assert!(h.is_held(a_to_b()) && h.any());
        assert_eq!(h.held_since(a_to_b()), Some(1_000));
        assert!(!h.is_held(a_to_b().reverse()));
        h.release(a_to_b());
        assert!(!h.is_held(a_to_b()) && !h.any());
        assert_eq!(h.held_since(a_to_b()), None);
    }

    #[test]
    fn a_joining_channel_is_held_and_a_leaving_one_forgotten() {
        let h = Holds::all([], 1_000);
        h.hold(a_to_b(), 2_000);
        h.hold(a_to_b(), 3_000);
        assert_eq!(h.held_since(a_to_b()), Some(2_000));
        h.remove(a_to_b());
        assert!(!h.any());
    }
}
