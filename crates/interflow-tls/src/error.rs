//! The crate's single error type. Variants name the file or value involved and carry their
//! source, so an operator can tell which file to fix without reading code.

use std::path::PathBuf;

use crate::identity::IdentityError;

/// Everything that can go wrong while generating, loading or using TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    // --- files ---
    #[error("reading `{path}` failed")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` is larger than {limit} bytes, which no certificate, key or crl file is")]
    FileTooLarge { path: PathBuf, limit: u64 },
    #[error("writing `{path}` failed")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` is not valid pem")]
    Pem {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("`{path}` contains no `{expected}` pem block")]
    NoPemBlock {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("`{path}` contains a `{found}` pem block where only `{expected}` blocks belong")]
    WrongPemType {
        path: PathBuf,
        expected: &'static str,
        found: String,
    },
    #[error("`{path}` contains {count} private keys, expected exactly one")]
    SeveralKeys { path: PathBuf, count: usize },
    #[error("`{path}` contains a certificate that is not usable as a trust anchor")]
    BadCaCert {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("`{path}` contains a certificate revocation list that does not parse")]
    BadCrl {
        path: PathBuf,
        source: x509_parser::error::X509Error,
    },
    #[error("certificate `{cert}` and key `{key}` are unusable together")]
    BadCertOrKey {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },

    // --- building configs ---
    #[error("building the certificate verifier from `{ca}` failed")]
    Verifier {
        ca: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("the crypto provider rejected the tls protocol versions")]
    Protocol { source: rustls::Error },
    #[error("`{name}` is not a valid tls server name")]
    InvalidServerName {
        name: String,
        source: rustls_pki_types::InvalidDnsNameError,
    },

    // --- certificate generation ---
    #[error("generating a key pair failed")]
    KeyGen { source: rcgen::Error },
    #[error("signing the certificate for `{subject}` failed")]
    Sign {
        subject: String,
        source: rcgen::Error,
    },
    #[error("signing the certificate revocation list failed")]
    SignCrl { source: rcgen::Error },
    #[error("`{value}` is not a valid subject alternative name")]
    InvalidSan { value: String, source: rcgen::Error },
    #[error("the ca certificate or key does not parse")]
    InvalidCa { source: rcgen::Error },
    #[error("the ca key does not match the ca certificate")]
    CaKeyMismatch,
    #[error("the ca certificate is not valid pem")]
    CaCertPem {
        source: rustls_pki_types::pem::Error,
    },
    #[error("the certificate does not parse as x.509")]
    CertParse {
        source: x509_parser::error::X509Error,
    },
    #[error("`{name}` is not a valid certificate holder name (1 to 64 printable characters)")]
    InvalidHolderName { name: String },
    #[error("certificate validity must end after it starts")]
    EmptyValidity,
    #[error("time is outside the range a certificate can express (1970 to 9999)")]
    TimeOutOfRange,
    #[error("the system random number generator failed")]
    Random,
    #[error("`{value}` is not a certificate serial number (hex digits expected)")]
    InvalidSerial { value: String },
    #[error("certificate carries no valid interflow identity")]
    Identity {
        #[from]
        source: IdentityError,
    },

    // --- connecting ---
    #[error("`{endpoint}` is not a valid endpoint (host:port expected)")]
    InvalidEndpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("connecting to `{endpoint}` failed")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
}

impl TlsError {
    /// Reports a certificate that does not parse as such, rather than as a missing identity.
    pub(crate) fn cert_parse(e: IdentityError) -> Self {
        match e {
            IdentityError::Parse { source } => TlsError::CertParse { source },
            other => TlsError::Identity { source: other },
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = TlsError> = std::result::Result<T, E>;

/// Displays an error followed by its sources, `a: b: c`, for log lines (a log field shows only
/// the top message otherwise, and the cause is usually in a source).
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}
