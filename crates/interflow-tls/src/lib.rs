//! Certificates and mutual TLS for interflow.
//!
//! This crate owns everything about certificates and mutual TLS: generating the federation and
//! local PKIs with rcgen ([`pki`]), loading PEM certificates, keys and CRLs from files
//! ([`load_certs`], [`load_key`], [`load_crls`]), building rustls server and client configs that
//! check CRLs, reloading the server's TLS material without a restart
//! ([`ReloadableServerConfig::reload`]), accepting TLS connections for tonic within limits, so a
//! slow, idle or greedy client cannot block others ([`tls_incoming_with_limits`]), dialling peers ([`connect`], [`connect_lazy`]),
//! and reading the caller's identity from its certificate ([`identity_from_cert`],
//! [`peer_identity`]). It contains no gRPC service logic and no storage: deciding what an
//! identity may do (is this region a member, does this role allow that call) is the node's job.
//!
//! # Identity scheme
//!
//! - **Federation PKI**: a federation CA issues each node's peer certificate. A peer certificate
//!   carries a URI SAN `urn:interflow:region:<6-digit code>` (this is the node's identity) and a
//!   DNS SAN `<code>.region.interflow` (the TLS server name clients verify, see
//!   [`peer_server_name`]), plus any extra DNS/IP SANs for its real endpoint. Its key usages
//!   allow both server and client authentication: the node uses the same certificate as server
//!   and as client.
//! - **Local PKI**: each node has its own local CA for its local listener. The local listener's
//!   server certificate is issued by the local CA with DNS SANs `localhost`,
//!   `<code>.local.interflow` (see [`local_server_name`]) and IP SAN `127.0.0.1`; it carries no
//!   identity URI. Client certificates from the local CA carry URI SAN `urn:interflow:role:admin`
//!   `urn:interflow:role:intake` or `urn:interflow:role:inbox`, and their CN is the holder's name (e.g. the operator's
//!   name), which becomes the audit actor.
//!
//! A certificate has an interflow identity when it carries **exactly one** URI SAN starting with
//! `urn:interflow:` (compared case-insensitively, so look-alikes count as duplicates rather than
//! being ignored), and that URI is a well-formed region or role URI as above. The server computes
//! the identity of the client's leaf certificate during the handshake; a client certificate
//! without a valid identity fails the connection before any request is read.
//!
//! # Revocation and validity
//!
//! Every handshake verifies the full chain, the validity period and, when CRL files are
//! configured, revocation: session resumption is disabled on the server, so a reload that adds a
//! CRL takes effect for every new connection (connections already open are not cut). A CRL whose
//! `nextUpdate` has passed is treated as an error (rustls' `enforce_revocation_expiration`): with
//! a stale CRL the server cannot know what was revoked since, so it refuses the certificates that
//! CRL covers instead of accepting them. Operators must publish fresh CRLs before `nextUpdate`
//! and call [`ReloadableServerConfig::reload`]. When CRLs are configured they must cover every CA
//! in the trust bundle: a certificate whose issuer has no CRL is refused (unknown status).
//! Only TLS 1.3 is offered, with the ring crypto provider, and the application protocol is `h2`.

mod client;
mod error;
mod identity;
mod incoming;
mod load;
pub mod pki;
mod server;

#[cfg(test)]
mod tests;

pub use client::{
    TlsConnector, client_config, client_config_with_crls, connect, connect_lazy, local_server_name,
    peer_server_name,
};
pub use error::TlsError;
pub use identity::{
    IdentityError, PeerIdentity, REGION_URI_PREFIX, ROLE_URI_PREFIX, Role, cert_not_after,
    identity_from_cert,
};
pub use incoming::{IncomingLimits, tls_incoming, tls_incoming_with_limits};
pub use load::{load_certs, load_crls, load_key};
pub use server::{
    PeerConnectInfo, ReloadableServerConfig, ServerTlsFiles, TlsConn, peer_connect_info,
    peer_identity,
};

/// Re-exported so callers can name configs and DER types without depending on rustls directly.
pub use rustls;
