//! The server side: a rustls server config that requires client certificates checked against
//! the CA bundle and CRLs, reloadable without a restart, the handshake of one connection, and
//! the connection type tonic serves, tagged with its peer identity. The accept path with its
//! limits is in `incoming`.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

use crate::error::{ErrorChain, Result, TlsError};
use crate::identity::{PeerIdentity, identity_from_cert};
use crate::incoming::{ConnGuard, H2_PREFACE};
use crate::load::{load_certs, load_crls, load_key};

/// The files a TLS server is built from; all are re-read on every reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// PEM bundle of the CA certificates whose client certificates are accepted.
    pub ca: PathBuf,
    /// PEM certificate chain the server presents (leaf first).
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM CRL files; empty means no revocation checking. When present they must cover every
    /// CA in `ca`, and a CRL past its `nextUpdate` makes the certificates it covers fail.
    pub crls: Vec<PathBuf>,
}

/// The current server config, swapped atomically by [`ReloadableServerConfig::reload`]. Each
/// new connection uses the config current when it was accepted; open connections are kept.
#[derive(Debug)]
pub struct ReloadableServerConfig {
    files: ServerTlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl ReloadableServerConfig {
    /// Builds the config from `files`. Blocks on file I/O.
    pub fn load(files: ServerTlsFiles) -> Result<Self> {
        let config = build_server_config(&files)?;
        Ok(Self {
            files,
            current: RwLock::new(config),
        })
    }

    /// The files this config is built from.
    pub fn files(&self) -> &ServerTlsFiles {
        &self.files
    }

    /// The config new connections use now.
    pub fn current(&self) -> Arc<ServerConfig> {
        // The lock only guards an `Arc` swap, which cannot leave it half-updated: a poisoned
        // lock still holds a valid config.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads every file and swaps the config in for new connections. If any file is bad the
    /// previous config stays in force, a warning is logged, and the error is returned. Blocks
    /// on file I/O: call it from `spawn_blocking` in async code.
    pub fn reload(&self) -> Result<()> {
        match build_server_config(&self.files) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
                tracing::info!(cert = %self.files.cert.display(), "server tls configuration reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    error = %ErrorChain(&e),
                    "reloading server tls configuration failed, keeping the previous one"
                );
                Err(e)
            }
        }
    }
}

/// The crypto provider of every config this crate builds: explicit, so nothing depends on a
/// process-wide default being installed.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store of every certificate in `path`.
pub(crate) fn root_store(path: &Path) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|source| TlsError::BadCaCert {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(Arc::new(roots))
}

fn build_server_config(files: &ServerTlsFiles) -> Result<Arc<ServerConfig>> {
    let provider = provider();
    let roots = root_store(&files.ca)?;
    let crls = load_crls(&files.crls)?;
    // Client certificates are required (no `allow_unauthenticated`), and revocation status
    // that a CRL cannot vouch for (stale CRL, issuer without CRL) counts as a failure.
    let webpki = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .with_crls(crls)
        .enforce_revocation_expiration()
        .build()
        .map_err(|source| TlsError::Verifier {
            ca: files.ca.clone(),
            source,
        })?;
    let verifier = Arc::new(IdentityVerifier { webpki });
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Protocol { source })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::BadCertOrKey {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    // No session resumption: a resumed session would skip certificate, validity and CRL
    // checks, so a revocation would not bite until the session expired.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The WebPKI client verifier plus the interflow identity check, so a certificate without a
/// valid identity fails inside the handshake: the client gets a TLS alert, and the server's log
/// line says which identity rule it broke.
#[derive(Debug)]
struct IdentityVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for IdentityVerifier {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)?;
        identity_from_cert(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// What the server knows about a connection, put into every request's extensions by tonic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConnectInfo {
    pub remote_addr: SocketAddr,
    /// Read from the client's leaf certificate during the handshake.
    pub identity: PeerIdentity,
}

/// An accepted, authenticated TLS connection whose client started HTTP/2. It counts against
/// its listener's connection caps until dropped.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerConnectInfo,
    /// How much of the HTTP/2 client preface, already read by the accept path, has been handed
    /// on to the server.
    preface_replayed: usize,
    _guard: ConnGuard,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl TlsConn {
    pub(crate) fn new(
        stream: tokio_rustls::server::TlsStream<TcpStream>,
        info: PeerConnectInfo,
        guard: ConnGuard,
    ) -> Self {
        TlsConn {
            stream,
            info,
            preface_replayed: 0,
            _guard: guard,
        }
    }

    /// The remote address and identity of this connection.
    pub fn info(&self) -> &PeerConnectInfo {
        &self.info
    }

    /// The TLS stream, e.g. to inspect the negotiated parameters.
    pub fn get_ref(&self) -> &tokio_rustls::server::TlsStream<TcpStream> {
        &self.stream
    }
}

impl Connected for TlsConn {
    type ConnectInfo = PeerConnectInfo;

    fn connect_info(&self) -> PeerConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // The preface the accept path read to see that the client speaks HTTP/2 comes first.
        if self.preface_replayed < H2_PREFACE.len() {
            let rest = &H2_PREFACE[self.preface_replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.preface_replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The connection info of the connection a request arrived on, if it came through
/// [`tls_incoming`](crate::tls_incoming).
pub fn peer_connect_info<T>(req: &tonic::Request<T>) -> Option<&PeerConnectInfo> {
    req.extensions().get::<PeerConnectInfo>()
}

/// The identity of the client that sent `req`, if it came through
/// [`tls_incoming`](crate::tls_incoming).
pub fn peer_identity<T>(req: &tonic::Request<T>) -> Option<PeerIdentity> {
    peer_connect_info(req).map(|info| info.identity.clone())
}

/// The TLS handshake of one accepted connection under `timeout`, and the identity of the
/// client's certificate.
pub(crate) async fn handshake(
    tcp: TcpStream,
    remote_addr: SocketAddr,
    acceptor: TlsAcceptor,
    timeout: Duration,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, PeerConnectInfo)> {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(%remote_addr, error = %e, "setting tcp_nodelay failed");
    }
    let stream = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            log_handshake_error(remote_addr, &e);
            return None;
        }
        Err(_) => {
            tracing::debug!(%remote_addr, ?timeout, "tls handshake timed out");
            return None;
        }
    };
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first());
    let Some(leaf) = leaf else {
        // Unreachable with a verifier that requires client certificates; refuse regardless.
        tracing::warn!(%remote_addr, "tls client presented no certificate");
        return None;
    };
    // The verifier already checked the identity; computed again here to keep it.
    match identity_from_cert(leaf) {
        Ok(identity) => {
            tracing::debug!(%remote_addr, %identity, "tls connection accepted");
            Some((
                stream,
                PeerConnectInfo {
                    remote_addr,
                    identity,
                },
            ))
        }
        Err(e) => {
            tracing::warn!(
                %remote_addr,
                error = %ErrorChain(&e),
                "tls client certificate has no valid interflow identity, connection refused"
            );
            None
        }
    }
}

/// Certificate problems are worth an operator's attention (a peer's certificate expired or was
/// revoked); anything else (resets, scanners, garbage) is noise at debug level.
fn log_handshake_error(remote_addr: SocketAddr, e: &io::Error) {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        // Our identity check: log its own message rather than rustls' wrapper.
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))) => {
            tracing::warn!(%remote_addr, error = %inner, "tls client certificate refused");
        }
        Some(
            err @ (rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertRevocationList(_)),
        ) => {
            tracing::warn!(%remote_addr, error = %err, "tls client certificate refused");
        }
        _ => tracing::debug!(%remote_addr, error = %e, "tls handshake failed"),
    }
}

/// Errors that concern only the connection being accepted, not the listener.
pub(crate) fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
