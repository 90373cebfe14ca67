//! Identities read from certificates: the region of a federation peer, or the role and name of
//! a local client. Parsing only; what an identity is allowed to do is decided by the node.

use std::fmt;
use std::str::FromStr;

use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use interflow_core::RegionCode;
use interflow_core::region::RegionCodeError;

/// Prefix of every interflow identity URI; compared case-insensitively when counting.
const INTERFLOW_URN_PREFIX: &str = "urn:interflow:";
/// URI SAN prefix of a peer certificate; the 6-digit region code follows.
pub const REGION_URI_PREFIX: &str = "urn:interflow:region:";
/// URI SAN prefix of a local client certificate; `admin`, `intake` or `inbox` follows.
pub const ROLE_URI_PREFIX: &str = "urn:interflow:role:";

/// What a local client certificate allows its holder to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Operators: reads and operations, every read audited.
    Admin,
    /// Local systems that submit records.
    Intake,
    /// The receiving bureau's systems that read what arrived (`Inbox`), every read audited.
    Inbox,
}

impl Role {
    /// The role's name as it appears in the URI SAN.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Intake => "intake",
            Role::Inbox => "inbox",
        }
    }

    /// The URI SAN that carries this role.
    pub fn uri(&self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "intake" => Ok(Role::Intake),
            "inbox" => Ok(Role::Inbox),
            other => Err(IdentityError::UnknownRole {
                role: other.to_owned(),
            }),
        }
    }
}

/// Who is on the other end of a mutually authenticated connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerIdentity {
    /// A federation node, named by its region code (from the federation PKI).
    Region(RegionCode),
    /// A local client (from the node's local PKI): its role and the certificate's CN, which is
    /// the audit actor.
    Local { role: Role, name: String },
}

impl PeerIdentity {
    /// The region, if this is a federation peer.
    pub fn region(&self) -> Option<RegionCode> {
        match self {
            PeerIdentity::Region(code) => Some(*code),
            PeerIdentity::Local { .. } => None,
        }
    }

    /// The role, if this is a local client.
    pub fn role(&self) -> Option<Role> {
        match self {
            PeerIdentity::Region(_) => None,
            PeerIdentity::Local { role, .. } => Some(*role),
        }
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerIdentity::Region(code) => write!(f, "region {code}"),
            PeerIdentity::Local { role, name } => write!(f, "{role} `{name}`"),
        }
    }
}

/// Why a certificate carries no valid interflow identity.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IdentityError {
    #[error("certificate does not parse as x.509")]
    Parse {
        source: x509_parser::error::X509Error,
    },
    #[error("certificate has no `urn:interflow:` uri subject alternative name")]
    NoIdentity,
    #[error("certificate has {count} `urn:interflow:` uri subject alternative names, expected one")]
    SeveralIdentities { count: usize },
    #[error("`{value}` in `{uri}` is not a valid region code")]
    MalformedRegion {
        uri: String,
        value: String,
        source: RegionCodeError,
    },
    #[error("`{role}` is not a known role")]
    UnknownRole { role: String },
    #[error("`{uri}` is neither a region nor a role identity")]
    UnknownKind { uri: String },
    #[error("role certificate has no common name to name its holder")]
    MissingHolderName,
}

/// When a certificate stops being valid (its `notAfter`), in Unix seconds: for a gauge that
/// warns before a node's own certificates expire.
pub fn cert_not_after(der: &CertificateDer<'_>) -> Result<i64, IdentityError> {
    Ok(parse_cert(der)?.validity().not_after.timestamp())
}

/// Reads the interflow identity of a certificate (see the crate docs for the scheme).
///
/// This parses only; it does not check the signature, validity or revocation, which the TLS
/// handshake already did for certificates presented by a peer.
pub fn identity_from_cert(der: &CertificateDer<'_>) -> Result<PeerIdentity, IdentityError> {
    let cert = parse_cert(der)?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|source| IdentityError::Parse { source })?;
    let uris: Vec<&str> = sans
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .filter(|uri| has_prefix_ignore_case(uri, INTERFLOW_URN_PREFIX))
        .collect();
    let uri = match uris.as_slice() {
        [] => return Err(IdentityError::NoIdentity),
        [one] => *one,
        several => {
            return Err(IdentityError::SeveralIdentities {
                count: several.len(),
            });
        }
    };

    if let Some(code) = uri.strip_prefix(REGION_URI_PREFIX) {
        let region =
            code.parse::<RegionCode>()
                .map_err(|source| IdentityError::MalformedRegion {
                    uri: uri.to_owned(),
                    value: code.to_owned(),
                    source,
                })?;
        return Ok(PeerIdentity::Region(region));
    }
    if let Some(role) = uri.strip_prefix(ROLE_URI_PREFIX) {
        let role = role.parse::<Role>()?;
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .filter(|name| !name.trim().is_empty())
            .ok_or(IdentityError::MissingHolderName)?;
        return Ok(PeerIdentity::Local {
            role,
            name: name.to_owned(),
        });
    }
    Err(IdentityError::UnknownKind {
        uri: uri.to_owned(),
    })
}

/// Parses a DER certificate, refusing trailing bytes (a certificate is exactly one structure).
pub(crate) fn parse_cert<'a>(
    der: &'a CertificateDer<'_>,
) -> Result<X509Certificate<'a>, IdentityError> {
    match X509Certificate::from_der(der.as_ref()) {
        Ok(([], cert)) => Ok(cert),
        Ok((_, _)) => Err(IdentityError::Parse {
            source: x509_parser::error::X509Error::InvalidCertificate,
        }),
        Err(x509_parser::nom::Err::Error(source) | x509_parser::nom::Err::Failure(source)) => {
            Err(IdentityError::Parse { source })
        }
        Err(x509_parser::nom::Err::Incomplete(_)) => Err(IdentityError::Parse {
            source: x509_parser::error::X509Error::InvalidCertificate,
        }),
    }
}

fn has_prefix_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Ca, Validity};

    fn region(code: &str) -> RegionCode {
        code.parse().unwrap()
    }

    /// A certificate from `ca` with exactly these URI SANs and common name.
    fn cert_with_uris(ca: &Ca, uris: &[&str], cn: Option<&str>) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        params.subject_alt_names = uris
            .iter()
            .map(|u| rcgen::SanType::URI((*u).to_owned().try_into().unwrap()))
            .collect();
        params.subject_alt_names.push(rcgen::SanType::DnsName(
            "x.region.interflow".try_into().unwrap(),
        ));
        ca.issue_with_params("test", params).unwrap().cert_der
    }

    #[test]
    fn not_after_is_read_in_unix_seconds() {
        let local = Ca::generate("local").unwrap();
        let end = std::time::UNIX_EPOCH + std::time::Duration::from_secs(4_102_444_800);
        let validity = Validity::new(std::time::SystemTime::now(), end);
        let admin = local
            .issue_role_cert(Role::Admin, "Li Na", validity)
            .unwrap();
        assert_eq!(cert_not_after(&admin.cert_der), Ok(4_102_444_800));
    }

    #[test]
    fn each_certificate_kind_has_its_identity() {
        let fed = Ca::generate("federation").unwrap();
        let local = Ca::generate("local").unwrap();
        let validity = Validity::days(1);

        let peer = fed
            .issue_peer_cert(
                region("310115"),
                &["node.example.org".to_owned()],
                &["10.0.0.7".parse().unwrap()],
                validity,
            )
            .unwrap();
        assert_eq!(
            identity_from_cert(&peer.cert_der),
            Ok(PeerIdentity::Region(region("310115")))
        );

        let admin = local
            .issue_role_cert(Role::Admin, "Li Na", validity)
            .unwrap();
        assert_eq!(
            identity_from_cert(&admin.cert_der),
            Ok(PeerIdentity::Local {
                role: Role::Admin,
                name: "Li Na".to_owned()
            })
        );

        let intake = local
            .issue_role_cert(Role::Intake, "hospital-his", validity)
            .unwrap();
        assert_eq!(
            identity_from_cert(&intake.cert_der),
            Ok(PeerIdentity::Local {
                role: Role::Intake,
                name: "hospital-his".to_owned()
            })
        );

        // The local server certificate names a host, not a caller.
        let server = local
            .issue_local_server_cert(region("310115"), validity)
            .unwrap();
        assert_eq!(
            identity_from_cert(&server.cert_der),
            Err(IdentityError::NoIdentity)
        );
        // A CA certificate carries no identity either.
        assert_eq!(
            identity_from_cert(fed.cert_der()),
            Err(IdentityError::NoIdentity)
        );
    }

    #[test]
    fn identity_errors_are_precise() {
        let ca = Ca::generate("ca").unwrap();
        let check =
            |uris: &[&str], cn: Option<&str>| identity_from_cert(&cert_with_uris(&ca, uris, cn));

        // Other URIs are not ours and are ignored.
        assert_eq!(
            check(
                &["https://example.org/", "urn:interflow:region:310115"],
                None
            ),
            Ok(PeerIdentity::Region(region("310115")))
        );
        assert_eq!(
            check(&["https://example.org/"], None),
            Err(IdentityError::NoIdentity)
        );
        assert_eq!(
            check(
                &["urn:interflow:region:310115", "urn:interflow:region:110101"],
                None
            ),
            Err(IdentityError::SeveralIdentities { count: 2 })
        );
        // A look-alike in other case still counts, so it cannot hide a second identity.
        assert_eq!(
            check(
                &["urn:interflow:region:310115", "URN:Interflow:role:admin"],
                Some("x")
            ),
            Err(IdentityError::SeveralIdentities { count: 2 })
        );
        for bad in ["31011", "3101150", "31011x", "", "990000"] {
            let uri = format!("urn:interflow:region:{bad}");
            match check(&[&uri], None) {
                Err(IdentityError::MalformedRegion { value, .. }) => assert_eq!(value, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert_eq!(
            check(&["urn:interflow:role:root"], Some("x")),
            Err(IdentityError::UnknownRole {
                role: "root".to_owned()
            })
        );
        assert_eq!(
            check(&["urn:interflow:node:310115"], None),
            Err(IdentityError::UnknownKind {
                uri: "urn:interflow:node:310115".to_owned()
            })
        );
        assert_eq!(
            check(&["urn:interflow:role:admin"], None),
            Err(IdentityError::MissingHolderName)
        );
        assert_eq!(
            check(&["urn:interflow:role:admin"], Some("  ")),
            Err(IdentityError::MissingHolderName)
        );
        assert!(matches!(
            identity_from_cert(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01])),
            Err(IdentityError::Parse { .. })
        ));
    }
}
