//! The client side: a rustls client config with our client certificate, and a tonic channel
//! whose connector does TCP + TLS itself (tonic's own TLS is not used), so server names, CRLs
//! and the crypto provider are ours to choose.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::client::WebPkiServerVerifier;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Result, TlsError};
use crate::load::{load_certs, load_crls, load_key};
use crate::server::{provider, root_store};
use interflow_core::RegionCode;

/// How often an idle HTTP/2 connection is pinged, so a peer that vanished (power loss, a
/// blackholed route, a stopped process) is noticed and the channel reconnects.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keepalive ping may go unanswered before the connection is dropped.
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS server name of a federation peer: `<code>.region.interflow`.
pub fn peer_server_name(region: RegionCode) -> String {
    format!("{region}.region.interflow")
}

/// The TLS server name of a node's local listener: `<code>.local.interflow`.
pub fn local_server_name(region: RegionCode) -> String {
    format!("{region}.local.interflow")
}

/// A client config that trusts the CAs in `ca_pem_path` and presents the certificate chain in
/// `cert_path` with the key in `key_path`. TLS 1.3 only, ALPN `h2`. Blocks on file I/O.
pub fn client_config(
    ca_pem_path: &Path,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<ClientConfig>> {
    client_config_with_crls(ca_pem_path, cert_path, key_path, &[])
}

/// Like [`client_config`], and also checks the server's certificate against the CRLs in
/// `crl_paths` (stale CRLs are errors, as on the server side).
pub fn client_config_with_crls(
    ca_pem_path: &Path,
    cert_path: &Path,
    key_path: &Path,
    crl_paths: &[PathBuf],
) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let roots = root_store(ca_pem_path)?;
    let crls = load_crls(crl_paths)?;
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .with_crls(crls)
        .enforce_revocation_expiration()
        .build()
        .map_err(|source| TlsError::Verifier {
            ca: ca_pem_path.to_owned(),
            source,
        })?;
    let certs = load_certs(cert_path)?;
    let key = load_key(key_path)?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Protocol { source })?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(certs, key)
        .map_err(|source| TlsError::BadCertOrKey {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A tower connector for tonic: TCP connect to a fixed `host:port`, then a TLS handshake that
/// verifies the server as `server_name`. The URI tonic passes is ignored: the endpoint is fixed.
#[derive(Clone)]
pub struct TlsConnector {
    endpoint: Arc<str>,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("endpoint", &self.endpoint)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// A connector to `endpoint` (`host:port`) that expects the server to be `server_name`.
    pub fn new(endpoint: &str, server_name: &str, config: Arc<ClientConfig>) -> Result<Self> {
        let server_name = ServerName::try_from(server_name.to_owned()).map_err(|source| {
            TlsError::InvalidServerName {
                name: server_name.to_owned(),
                source,
            }
        })?;
        Ok(Self {
            endpoint: endpoint.into(),
            server_name,
            tls: tokio_rustls::TlsConnector::from(config),
        })
    }
}

type ConnectFuture = Pin<
    Box<
        dyn Future<Output = std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>>
            + Send,
    >,
>;

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&*this.endpoint).await?;
            // gRPC sends many small frames; Nagle would delay them.
            tcp.set_nodelay(true)?;
            let tls = this.tls.connect(this.server_name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// The tonic endpoint for `endpoint`. The scheme is `http` because TLS is done by our
/// connector, not by tonic; `connect_timeout` bounds TCP connect and TLS handshake together.
fn tonic_endpoint(endpoint: &str, connect_timeout: Duration) -> Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{endpoint}"))
        .map_err(|source| TlsError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            source,
        })?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT))
}

/// Connects now to `endpoint` (`host:port`), verifying the server as `server_name` (e.g.
/// [`peer_server_name`]); fails if TCP, TLS or HTTP/2 setup fails within `connect_timeout`.
///
/// With TLS 1.3 a server refuses a client certificate only after the client finished its side
/// of the handshake, so a refused client may see the error on its first call instead.
pub async fn connect(
    endpoint: &str,
    server_name: &str,
    config: Arc<ClientConfig>,
    connect_timeout: Duration,
) -> Result<Channel> {
    let connector = TlsConnector::new(endpoint, server_name, config)?;
    tonic_endpoint(endpoint, connect_timeout)?
        .connect_with_connector(connector)
        .await
        .map_err(|source| TlsError::Connect {
            endpoint: endpoint.to_owned(),
            source,
        })
}

/// Like [`connect`], but connects on first use and reconnects after failures: what a long-lived
/// peer worker wants. Errors only on an invalid endpoint or server name.
pub fn connect_lazy(
    endpoint: &str,
    server_name: &str,
    config: Arc<ClientConfig>,
    connect_timeout: Duration,
) -> Result<Channel> {
    let connector = TlsConnector::new(endpoint, server_name, config)?;
    Ok(tonic_endpoint(endpoint, connect_timeout)?.connect_with_connector_lazy(connector))
}
