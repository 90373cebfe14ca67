//! The accept path of a listener: TCP accept, the TLS handshake under a deadline and within
//! handshake slots (global and per source address), admission against the connection caps
//! (per listener and per peer identity), and the wait for the HTTP/2 client preface. Only a
//! connection that passed all of these reaches the HTTP/2 server.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use crate::identity::PeerIdentity;
use crate::server::{
    ReloadableServerConfig, TlsConn, handshake as tls_handshake, is_per_connection_error,
};

/// Pause after an accept error that is not about one connection (e.g. out of file
/// descriptors), so the loop does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// What every HTTP/2 client sends first (RFC 9113, section 3.4).
pub(crate) const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a refused connection is drained after its GOAWAY, so the client reads the GOAWAY
/// instead of a reset.
const REFUSAL_DRAIN: Duration = Duration::from_secs(1);

/// The limits of one listener's accept path. Every count is clamped to at least 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingLimits {
    /// Longest a TLS handshake may take; then the connection is dropped.
    pub handshake_timeout: Duration,
    /// TLS handshakes in progress at once. While all are busy, new connections wait in the
    /// kernel's accept queue.
    pub max_pending_handshakes: usize,
    /// TLS handshakes in progress at once from one source address (an IPv4 address, or an
    /// IPv6 /64). A connection from an address already at its cap is closed at once, so one
    /// address cannot take every handshake slot.
    pub max_handshakes_per_address: usize,
    /// Longest a connection may stay open after its TLS handshake without sending the HTTP/2
    /// client preface; then it is closed.
    pub preface_timeout: Duration,
    /// Open connections on this listener, counted from the end of the handshake to the close.
    pub max_connections: usize,
    /// Open connections of one certificate identity (a region, or a local role and name).
    /// One more is answered with an HTTP/2 GOAWAY (`ENHANCE_YOUR_CALM`) and closed.
    pub max_connections_per_identity: usize,
}

impl Default for IncomingLimits {
    fn default() -> Self {
        IncomingLimits {
            handshake_timeout: Duration::from_secs(5),
            max_pending_handshakes: 256,
            max_handshakes_per_address: 8,
            preface_timeout: Duration::from_secs(5),
            max_connections: 1024,
            max_connections_per_identity: 8,
        }
    }
}

/// Accepts TCP connections and yields the authenticated TLS ones, for tonic's
/// `Server::serve_with_incoming`, with the default [`IncomingLimits`] except for the handshake
/// timeout and slots. See [`tls_incoming_with_limits`].
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ReloadableServerConfig>,
    handshake_timeout: Duration,
    max_pending_handshakes: usize,
) -> impl Stream<Item = Result<TlsConn, io::Error>> + Send + 'static {
    tls_incoming_with_limits(
        listener,
        config,
        IncomingLimits {
            handshake_timeout,
            max_pending_handshakes,
            ..IncomingLimits::default()
        },
    )
}

/// Accepts TCP connections and yields the authenticated TLS ones that started HTTP/2, for
/// tonic's `Server::serve_with_incoming`.
///
/// Each handshake runs in its own task under `handshake_timeout`, and at most
/// `max_pending_handshakes` run at once, at most `max_handshakes_per_address` of them from one
/// source address. So a slow or stalled client holds one slot for at most the timeout, and one
/// address cannot hold them all. After the handshake a connection counts against
/// `max_connections` and `max_connections_per_identity` until it closes; over either it is
/// refused. It is then handed to the server only once the client sent the HTTP/2 preface,
/// which must come within `preface_timeout`. A failed handshake, or a client certificate
/// without a valid interflow identity, is logged and dropped; the stream never yields an
/// error, so it never stops the server. It ends, and the listener closes, when the stream is
/// dropped.
///
/// The accept task starts on the first poll, inside the server's runtime.
pub fn tls_incoming_with_limits(
    listener: TcpListener,
    config: Arc<ReloadableServerConfig>,
    limits: IncomingLimits,
) -> impl Stream<Item = Result<TlsConn, io::Error>> + Send + 'static {
    let limits = IncomingLimits {
        max_pending_handshakes: limits.max_pending_handshakes.max(1),
        max_handshakes_per_address: limits.max_handshakes_per_address.max(1),
        max_connections: limits.max_connections.max(1),
        max_connections_per_identity: limits.max_connections_per_identity.max(1),
        ..limits
    };
    let start = async move {
        let (tx, rx) = mpsc::channel(limits.max_pending_handshakes);
        tokio::spawn(accept_loop(listener, config, Arc::new(limits), tx));
        ReceiverStream::new(rx).map(Ok)
    };
    futures::stream::once(start).flatten()
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<ReloadableServerConfig>,
    limits: Arc<IncomingLimits>,
    tx: mpsc::Sender<TlsConn>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_pending_handshakes));
    let per_address = Arc::new(Counts::<IpAddr>::default());
    let connections = Arc::new(Connections::default());
    loop {
        // Take a slot before accepting, so excess clients queue in the kernel instead of
        // being accepted and dropped.
        let slot = tokio::select! {
            () = tx.closed() => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote_addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_per_connection_error(&e) => {
                tracing::debug!(error = %e, "accepting a tcp connection failed");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting tcp connections failed, retrying");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let source = address_key(remote_addr.ip());
        let ticket = match per_address.take(source, limits.max_handshakes_per_address) {
            Ok(ticket) => ticket,
            Err(first) => {
                if first {
                    tracing::warn!(
                        %source,
                        cap = limits.max_handshakes_per_address,
                        "too many tls handshakes in progress from one address; closing its new connections while it stays at the cap"
                    );
                } else {
                    tracing::debug!(%remote_addr, "tls handshake refused: address at its cap");
                }
                // Dropped: the client sees the connection close at once, and the slot is free.
                continue;
            }
        };
        // Taken per connection, so a reload applies to the next handshake.
        let acceptor = TlsAcceptor::from(config.current());
        let (tx, limits, connections) = (tx.clone(), limits.clone(), connections.clone());
        tokio::spawn(async move {
            let conn = {
                // Both are held for the handshake only.
                let (_slot, _ticket) = (slot, ticket);
                tls_handshake(tcp, remote_addr, acceptor, limits.handshake_timeout).await
            };
            let Some((stream, info)) = conn else { return };
            let guard = match connections.admit(&info.identity, &limits) {
                Ok(guard) => guard,
                Err(refusal) => {
                    refusal.log(&info.identity, remote_addr, &limits);
                    refuse(stream, refusal.reason()).await;
                    return;
                }
            };
            let mut stream = stream;
            let mut preface = [0u8; H2_PREFACE.len()];
            match tokio::time::timeout(limits.preface_timeout, stream.read_exact(&mut preface))
                .await
            {
                Ok(Ok(_)) if &preface == H2_PREFACE => {}
                Ok(Ok(_)) => {
                    tracing::debug!(%remote_addr, identity = %info.identity, "client did not speak HTTP/2; connection closed");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%remote_addr, error = %e, "connection closed before the HTTP/2 preface");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote_addr, identity = %info.identity, timeout = ?limits.preface_timeout, "no HTTP/2 preface in time; connection closed");
                    return;
                }
            }
            // The server may have stopped meanwhile; then the connection is just dropped.
            let _ = tx.send(TlsConn::new(stream, info, guard)).await;
        });
    }
}

/// The key source addresses are counted by: the IPv4 address, or the /64 of an IPv6 address
/// (what one host or site usually holds). IPv4-mapped IPv6 addresses count as IPv4.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Counters by key with a cap; an entry lives while its count is positive.
#[derive(Debug)]
struct Counts<K> {
    map: Mutex<HashMap<K, Count>>,
}

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Counts {
            map: Mutex::new(HashMap::new()),
        }
    }
}

#[derive(Debug, Default)]
struct Count {
    n: usize,
    /// A refusal was logged since the count last dropped below the cap.
    warned: bool,
}

impl Count {
    /// One more under `cap`, or `Err(first refusal since under the cap)`.
    fn take(&mut self, cap: usize) -> Result<(), bool> {
        if self.n >= cap {
            let first = !self.warned;
            self.warned = true;
            return Err(first);
        }
        self.n += 1;
        Ok(())
    }

    fn release(&mut self) {
        self.n = self.n.saturating_sub(1);
        self.warned = false;
    }
}

impl<K: Hash + Eq + Clone> Counts<K> {
    fn take(self: &Arc<Self>, key: K, cap: usize) -> Result<Ticket<K>, bool> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(key.clone()).or_default().take(cap)?;
        Ok(Ticket {
            counts: self.clone(),
            key,
        })
    }

    fn release(&self, key: &K) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Entry::Occupied(mut e) = map.entry(key.clone()) {
            e.get_mut().release();
            if e.get().n == 0 {
                e.remove();
            }
        }
    }
}

/// One counted item; released when dropped.
#[derive(Debug)]
struct Ticket<K: Hash + Eq + Clone> {
    counts: Arc<Counts<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for Ticket<K> {
    fn drop(&mut self) {
        self.counts.release(&self.key);
    }
}

/// The open connections of one listener: in all and per identity.
#[derive(Debug, Default)]
struct Connections {
    state: Mutex<ConnState>,
}

#[derive(Debug, Default)]
struct ConnState {
    all: Count,
    by_identity: HashMap<PeerIdentity, Count>,
}

/// Why a connection was not admitted; `first` says whether it is the first refusal since the
/// count was last under its cap (only that one is logged as a warning).
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Listener { first: bool },
    Identity { first: bool },
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::Listener { .. } => "too many connections to this listener",
            Refusal::Identity { .. } => "too many connections from this certificate identity",
        }
    }

    fn log(self, identity: &PeerIdentity, remote_addr: SocketAddr, limits: &IncomingLimits) {
        match self {
            Refusal::Identity { first: true } => tracing::warn!(
                %identity,
                %remote_addr,
                cap = limits.max_connections_per_identity,
                "connection refused: identity at its connection cap; further refusals are logged at debug while it stays there"
            ),
            Refusal::Listener { first: true } => tracing::warn!(
                %identity,
                %remote_addr,
                cap = limits.max_connections,
                "connection refused: listener at its connection cap; further refusals are logged at debug while it stays there"
            ),
            _ => {
                tracing::debug!(%identity, %remote_addr, reason = self.reason(), "connection refused")
            }
        }
    }
}

impl Connections {
    fn admit(
        self: &Arc<Self>,
        identity: &PeerIdentity,
        limits: &IncomingLimits,
    ) -> Result<ConnGuard, Refusal> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *state;
        let mine = state.by_identity.entry(identity.clone()).or_default();
        if let Err(first) = mine.take(limits.max_connections_per_identity) {
            return Err(Refusal::Identity { first });
        }
        if let Err(first) = state.all.take(limits.max_connections) {
            mine.release();
            if mine.n == 0 {
                state.by_identity.remove(identity);
            }
            return Err(Refusal::Listener { first });
        }
        Ok(ConnGuard {
            connections: self.clone(),
            identity: identity.clone(),
        })
    }
}

/// Counts one open connection; dropped with it.
#[derive(Debug)]
pub(crate) struct ConnGuard {
    connections: Arc<Connections>,
    identity: PeerIdentity,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut state = self
            .connections
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.all.release();
        if let Entry::Occupied(mut e) = state.by_identity.entry(self.identity.clone()) {
            e.get_mut().release();
            if e.get().n == 0 {
                e.remove();
            }
        }
    }
}

/// An HTTP/2 server preface (empty SETTINGS) and a GOAWAY with `ENHANCE_YOUR_CALM` and
/// `reason` as debug data, so the client learns why before the connection closes.
pub(crate) fn goaway_frames(reason: &str) -> Vec<u8> {
    let debug = reason.as_bytes();
    let len = 8 + debug.len();
    let mut out = Vec::with_capacity(9 + 9 + len);
    // SETTINGS: length 0, type 0x4, no flags, stream 0.
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    // GOAWAY: type 0x7, stream 0; last stream id 0, error ENHANCE_YOUR_CALM (0xb).
    out.extend_from_slice(&u32::try_from(len).unwrap_or(8).to_be_bytes()[1..]);
    out.extend_from_slice(&[0x7, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&0xbu32.to_be_bytes());
    out.extend_from_slice(debug);
    out
}

/// Answers a connection that is not admitted with a GOAWAY, closes our side, and drains what
/// the client still sends for a moment, so closing does not turn into a reset that could
/// discard the GOAWAY before the client reads it.
async fn refuse(mut stream: tokio_rustls::server::TlsStream<TcpStream>, reason: &str) {
    let frames = goaway_frames(reason);
    let drain = async {
        stream.write_all(&frames).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_DRAIN, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_count_by_their_64_and_mapped_ones_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(address_key(mapped), "127.0.0.2".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(address_key(v4), v4);
    }

    #[test]
    fn counts_refuse_over_the_cap_warn_once_and_forget_empty_keys() {
        let counts = Arc::new(Counts::<u8>::default());
        let a = counts.take(1, 2).unwrap();
        let b = counts.take(1, 2).unwrap();
        assert!(counts.take(1, 2).unwrap_err(), "first refusal");
        assert!(!counts.take(1, 2).unwrap_err(), "then quiet");
        let _other = counts.take(2, 2).unwrap();
        drop(a);
        let a = counts.take(1, 2).unwrap();
        assert!(
            counts.take(1, 2).unwrap_err(),
            "warned again after a release"
        );
        drop((a, b));
        assert!(
            !counts.map.lock().unwrap().contains_key(&1),
            "an empty entry is removed"
        );
    }

    #[test]
    fn the_goaway_is_a_well_formed_frame() {
        let f = goaway_frames("why");
        assert_eq!(&f[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let g = &f[9..];
        assert_eq!(&g[..3], &[0, 0, 11], "length: 8 + 3");
        assert_eq!(g[3], 7, "GOAWAY");
        assert_eq!(&g[5..9], &[0, 0, 0, 0], "stream 0");
        assert_eq!(&g[9..13], &[0, 0, 0, 0], "last stream id");
        assert_eq!(&g[13..17], &[0, 0, 0, 0xb], "ENHANCE_YOUR_CALM");
        assert_eq!(&g[17..], b"why");
    }
}
