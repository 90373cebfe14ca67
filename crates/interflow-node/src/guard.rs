//! The HTTP layer in front of every service of a listener (including health and reflection):
//!
//! - **In-flight byte budgets.** Each request is charged the largest message it announced (the
//!   5-byte gRPC prefix says how long a message is before its bytes arrive, and the decoder
//!   reserves that much at once), against its caller's identity and against the listener, until
//!   the request and its response are done. A message that would take either over its budget
//!   fails the request with RESOURCE_EXHAUSTED before the decoder sees it. So what one peer can
//!   make the node hold is bounded by the configuration, not by how many streams it opens.
//! - **Client-fault statuses.** tonic answers a request that does not decode with INTERNAL and
//!   the decoder's own message, and an oversized one with OUT_OF_RANGE. Both are the caller's
//!   fault: they become INVALID_ARGUMENT and RESOURCE_EXHAUSTED with a terse reason
//!   ([`client_fault`]), in response headers and trailers alike.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::Frame;
use interflow_tls::{PeerConnectInfo, PeerIdentity};
use tonic::body::Body;
use tonic::{Code, Status};

/// The gRPC length-prefixed message header: a compression flag and a big-endian length.
const PREFIX: usize = 5;

/// A byte budget shared by the requests it covers.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    pub fn new(limit: usize) -> Self {
        Budget {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    fn try_charge(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
    }
}

/// The budgets of one listener: one per identity, and the listener's own.
#[derive(Debug)]
pub struct Budgets {
    per_identity: usize,
    listener: Arc<Budget>,
    identities: Mutex<HashMap<PeerIdentity, Arc<Budget>>>,
    max_message: usize,
}

impl Budgets {
    pub fn new(per_identity: usize, listener: usize, max_message: usize) -> Arc<Self> {
        Arc::new(Budgets {
            per_identity,
            listener: Arc::new(Budget::new(listener)),
            identities: Mutex::new(HashMap::new()),
            max_message,
        })
    }

    /// The listener's budget.
    pub fn listener(&self) -> &Budget {
        &self.listener
    }

    /// Bytes charged to `identity` now.
    pub fn used_by(&self, identity: &PeerIdentity) -> usize {
        self.identities
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(identity)
            .map_or(0, |b| b.used())
    }

    fn charge_for(&self, identity: Option<&PeerIdentity>) -> Charge {
        let identity = identity.map(|id| {
            let mut map = self
                .identities
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Entries nobody holds and that carry no charge are dropped as new ones come, so
            // the map holds only identities with requests in flight (plus this one).
            if map.len() > 64 {
                map.retain(|_, b| Arc::strong_count(b) > 1 || b.used() > 0);
            }
            map.entry(id.clone())
                .or_insert_with(|| Arc::new(Budget::new(self.per_identity)))
                .clone()
        });
        Charge {
            identity,
            listener: self.listener.clone(),
            held: AtomicUsize::new(0),
        }
    }
}

/// What one request holds of its budgets; released when the request and its response are both
/// done.
#[derive(Debug)]
struct Charge {
    identity: Option<Arc<Budget>>,
    listener: Arc<Budget>,
    held: AtomicUsize,
}

impl Charge {
    /// Raises the charge to `to` bytes, if both budgets allow it.
    fn raise_to(&self, to: usize) -> bool {
        let held = self.held.load(Ordering::Acquire);
        if to <= held {
            return true;
        }
        let more = to - held;
        if let Some(id) = &self.identity
            && !id.try_charge(more)
        {
            return false;
        }
        if !self.listener.try_charge(more) {
            if let Some(id) = &self.identity {
                id.release(more);
            }
            return false;
        }
        self.held.store(to, Ordering::Release);
        true
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let held = *self.held.get_mut();
        if let Some(id) = &self.identity {
            id.release(held);
        }
        self.listener.release(held);
    }
}

/// Follows the gRPC message framing of a request body, to see each message's announced length
/// when its prefix arrives.
#[derive(Debug)]
enum Framing {
    Prefix { got: usize, buf: [u8; PREFIX] },
    Message { left: usize },
}

impl Framing {
    fn new() -> Self {
        Framing::Prefix {
            got: 0,
            buf: [0; PREFIX],
        }
    }

    /// Consumes `data`; returns the largest message length announced in it.
    fn scan(&mut self, mut data: &[u8]) -> Option<usize> {
        let mut largest: Option<usize> = None;
        while !data.is_empty() {
            match self {
                Framing::Prefix { got, buf } => {
                    let n = (PREFIX - *got).min(data.len());
                    buf[*got..*got + n].copy_from_slice(&data[..n]);
                    *got += n;
                    data = &data[n..];
                    if *got == PREFIX {
                        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                        largest = Some(largest.map_or(len, |l| l.max(len)));
                        *self = if len == 0 {
                            Framing::new()
                        } else {
                            Framing::Message { left: len }
                        };
                    }
                }
                Framing::Message { left } => {
                    let n = (*left).min(data.len());
                    *left -= n;
                    data = &data[n..];
                    if *left == 0 {
                        *self = Framing::new();
                    }
                }
            }
        }
        largest
    }
}

/// A request body that charges each message's announced length before passing it on.
struct ChargedBody {
    inner: Body,
    charge: Arc<Charge>,
    framing: Framing,
    max_message: usize,
    failed: bool,
}

impl http_body::Body for ChargedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            let largest = self.framing.scan(data);
            // Longer than the limit: the decoder refuses it without reserving anything.
            if let Some(len) = largest.filter(|l| *l <= self.max_message)
                && !self.charge.raise_to(len + PREFIX)
            {
                self.failed = true;
                return Poll::Ready(Some(Err(Status::resource_exhausted(
                    "too many request bytes in flight from this client or to this node; retry later",
                ))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request's charge and rewrites client-fault statuses in its
/// trailers.
struct GuardedBody {
    inner: Body,
    _charge: Arc<Charge>,
    max_message: usize,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let max = self.max_message;
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(mut frame))) => {
                if let Some(trailers) = frame.trailers_mut() {
                    rewrite(trailers, max);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The status a client-fault error should be answered with, if `status` is one: a request that
/// does not decode, is truncated, has no message or a bad framing flag is INVALID_ARGUMENT; one
/// over `max_message` bytes is RESOURCE_EXHAUSTED. Reasons are terse and never echo decoder
/// internals.
pub fn client_fault(status: &Status, max_message: usize) -> Option<Status> {
    let m = status.message();
    match status.code() {
        // prost's `DecodeError` (through tonic-prost), and tonic's own framing errors.
        Code::Internal if m.starts_with("failed to decode Protobuf message") => Some(
            Status::invalid_argument("malformed message: not valid protobuf for this method"),
        ),
        Code::Internal if m.starts_with("Unexpected EOF decoding stream") => Some(
            Status::invalid_argument("malformed message: the stream ended inside a message"),
        ),
        Code::Internal if m.starts_with("Missing request message") => {
            Some(Status::invalid_argument("the request carries no message"))
        }
        Code::Internal if m.starts_with("protocol error: received message with") => Some(
            Status::invalid_argument("malformed message: invalid gRPC compression flag"),
        ),
        Code::OutOfRange if m.starts_with("Error, decoded message length too large") => {
            Some(Status::resource_exhausted(format!(
                "message too large: the limit is {max_message} bytes"
            )))
        }
        _ => None,
    }
}

/// `status` itself, or the answer [`client_fault`] gives for it.
pub fn wire_status(status: Status, max_message: usize) -> Status {
    client_fault(&status, max_message).unwrap_or(status)
}

/// Rewrites a `grpc-status` in `headers` (response headers of a trailers-only answer, or
/// trailers) that [`client_fault`] maps.
fn rewrite(headers: &mut http::HeaderMap, max_message: usize) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if let Some(mapped) = client_fault(&status, max_message) {
        for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
            headers.remove(name);
        }
        if mapped.add_header(headers).is_err() {
            tracing::debug!("cannot encode a rewritten grpc status");
        }
    }
}

/// The layer: put it on a listener's `Server` with [`tonic::transport::Server::layer`].
#[derive(Debug, Clone)]
pub struct GuardLayer {
    budgets: Arc<Budgets>,
}

impl GuardLayer {
    pub fn new(budgets: Arc<Budgets>) -> Self {
        GuardLayer { budgets }
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            budgets: self.budgets.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    budgets: Arc<Budgets>,
}

impl<S> tower::Service<http::Request<Body>> for Guard<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let identity = req
            .extensions()
            .get::<PeerConnectInfo>()
            .map(|i| &i.identity);
        let charge = Arc::new(self.budgets.charge_for(identity));
        let max_message = self.budgets.max_message;
        let req = req.map(|inner| {
            Body::new(ChargedBody {
                inner,
                charge: charge.clone(),
                framing: Framing::new(),
                max_message,
                failed: false,
            })
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            rewrite(resp.headers_mut(), max_message);
            Ok(resp.map(|inner| {
                Body::new(GuardedBody {
                    inner,
                    _charge: charge,
                    max_message,
                })
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(len: u32) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&len.to_be_bytes());
        v
    }

    #[test]
    fn framing_sees_each_announced_length_across_chunks() {
        let mut f = Framing::new();
        let mut stream = prefix(3);
        stream.extend_from_slice(b"abc");
        stream.extend(prefix(0));
        stream.extend(prefix(10));
        stream.extend_from_slice(&[7; 10]);
        stream.extend(prefix(u32::MAX));
        // Byte by byte: each length is seen once, when its prefix completes.
        let seen: Vec<usize> = stream.iter().filter_map(|b| f.scan(&[*b])).collect();
        assert_eq!(seen, vec![3, 0, 10, u32::MAX as usize]);
        // All at once: the largest.
        let mut f = Framing::new();
        assert_eq!(f.scan(&stream), Some(u32::MAX as usize));
    }

    #[test]
    fn charges_are_held_against_both_budgets_and_released_on_drop() {
        let budgets = Budgets::new(100, 150, 1000);
        let a = PeerIdentity::Region("110105".parse().unwrap());
        let b = PeerIdentity::Region("440305".parse().unwrap());
        let c1 = budgets.charge_for(Some(&a));
        assert!(c1.raise_to(60));
        assert!(c1.raise_to(40), "lower than held: nothing to do");
        let c2 = budgets.charge_for(Some(&a));
        assert!(!c2.raise_to(41), "over the identity's budget");
        assert!(c2.raise_to(40));
        assert_eq!(budgets.used_by(&a), 100);
        let c3 = budgets.charge_for(Some(&b));
        assert!(!c3.raise_to(51), "over the listener's budget");
        assert_eq!(budgets.used_by(&b), 0, "a refused raise charges nothing");
        assert!(c3.raise_to(50));
        assert_eq!(budgets.listener().used(), 150);
        drop((c1, c2, c3));
        assert_eq!(budgets.used_by(&a), 0);
        assert_eq!(budgets.listener().used(), 0);
    }

    #[test]
    fn decode_and_size_errors_become_client_faults_without_internals() {
        let decode = Status::internal(
            "failed to decode Protobuf message: SignedRecord.body: invalid wire type: Varint (expected LengthDelimited)",
        );
        let s = client_fault(&decode, 10).unwrap();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(!s.message().contains("wire type"), "{}", s.message());
        let big = Status::out_of_range(
            "Error, decoded message length too large: found 4294967295 bytes, the limit is: 10 bytes",
        );
        let s = client_fault(&big, 10).unwrap();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("10 bytes"), "{}", s.message());
        assert!(client_fault(&Status::internal("internal storage error"), 10).is_none());
        assert!(client_fault(&Status::permission_denied("no"), 10).is_none());
    }

    #[test]
    fn statuses_in_headers_are_rewritten_in_place() {
        let mut h = http::HeaderMap::new();
        Status::internal("failed to decode Protobuf message: x")
            .add_header(&mut h)
            .unwrap();
        rewrite(&mut h, 10);
        let s = Status::from_header_map(&h).unwrap();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(h.get_all("grpc-status").iter().count(), 1);
    }
}
