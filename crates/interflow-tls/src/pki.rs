//! PKI generation with rcgen: a CA that issues peer, local server and role certificates and
//! signs CRLs, following the identity scheme in the crate docs. Used by the dev tooling, by
//! tests, and by operators who run a small PKI; a production federation CA may be anything that
//! issues the same SANs.
//!
//! Keys are ECDSA P-256. Serial numbers are 16 random bytes (positive, first byte non-zero), so
//! the serial shown by [`Issued::serial`] is exactly what a CRL lists.

use std::fmt;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, DnsName};

use crate::client::{local_server_name, peer_server_name};
use crate::error::{Result, TlsError};
use crate::identity::{REGION_URI_PREFIX, Role, parse_cert};
use interflow_core::RegionCode;

/// Largest time X.509 can carry (9999-12-31T23:59:59Z), in seconds since the Unix epoch.
const MAX_UNIX_SECS: u64 = 253_402_300_799;
/// Longest accepted certificate holder name: the X.520 upper bound for a common name.
const MAX_HOLDER_NAME_CHARS: usize = 64;
/// Default lifetime of a CA made by [`Ca::generate`].
const DEFAULT_CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// When a certificate is valid. Tests set both ends freely to make expired or not-yet-valid
/// certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// How far `not_before` is moved into the past by [`Validity::from_now`], so a freshly issued
    /// certificate is accepted by a peer whose clock is a little behind.
    pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

    /// A validity from `not_before` to `not_after`.
    pub fn new(not_before: SystemTime, not_after: SystemTime) -> Self {
        Self {
            not_before,
            not_after,
        }
    }

    /// Valid from [`Validity::CLOCK_SKEW`] ago for `lifetime` from now.
    pub fn from_now(lifetime: Duration) -> Self {
        let now = SystemTime::now();
        let max = UNIX_EPOCH + Duration::from_secs(MAX_UNIX_SECS);
        Self {
            not_before: now.checked_sub(Self::CLOCK_SKEW).unwrap_or(now),
            not_after: now.checked_add(lifetime).map_or(max, |t| t.min(max)),
        }
    }

    /// Valid from [`Validity::CLOCK_SKEW`] ago for `days` days from now.
    pub fn days(days: u64) -> Self {
        Self::from_now(Duration::from_secs(days.saturating_mul(24 * 3600)))
    }

    fn apply(&self, params: &mut CertificateParams) -> Result<()> {
        if self.not_after <= self.not_before {
            return Err(TlsError::EmptyValidity);
        }
        params.not_before = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(self.not_before)?;
        params.not_after = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(self.not_after)?;
        Ok(())
    }
}

/// A certificate serial number, as the raw big-endian bytes of its DER integer. Displays as
/// lowercase hex and parses from hex (colons allowed), the form operators pass to revoke.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// A serial from its big-endian bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    /// The big-endian bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The serial number of a DER certificate.
    pub fn of_cert(der: &CertificateDer<'_>) -> Result<Self> {
        let cert = parse_cert(der).map_err(TlsError::cert_parse)?;
        Ok(Self(cert.tbs_certificate.raw_serial().to_vec()))
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

impl FromStr for Serial {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = || TlsError::InvalidSerial {
            value: s.to_owned(),
        };
        let digits: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
        if digits.is_empty() || !digits.len().is_multiple_of(2) {
            return Err(invalid());
        }
        digits
            .chunks(2)
            .map(|pair| {
                let hex = std::str::from_utf8(pair).map_err(|_| invalid())?;
                u8::from_str_radix(hex, 16).map_err(|_| invalid())
            })
            .collect::<Result<Vec<u8>>>()
            .map(Self)
    }
}

/// A certificate and its freshly generated private key, as PEM, with its serial number.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub serial: Serial,
    pub cert_der: CertificateDer<'static>,
}

impl fmt::Debug for Issued {
    // The private key is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// Writes the certificate (mode 0644) and the key (mode 0600), each atomically.
    pub fn write_pem_files(&self, cert_path: &Path, key_path: &Path) -> Result<()> {
        write_cert_file(cert_path, &self.cert_pem)?;
        write_key_file(key_path, &self.key_pem)
    }
}

/// A certificate authority: a self-signed CA certificate and its key.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    // The key is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new CA named `common_name`, valid for ten years.
    pub fn generate(common_name: &str) -> Result<Self> {
        Self::generate_with_validity(common_name, Validity::from_now(DEFAULT_CA_LIFETIME))
    }

    /// A new CA named `common_name` with the given validity.
    pub fn generate_with_validity(common_name: &str, validity: Validity) -> Result<Self> {
        let key = KeyPair::generate().map_err(|source| TlsError::KeyGen { source })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        // Path length 0: this CA issues leaf certificates only, never other CAs.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.key_identifier_method = KeyIdMethod::Sha256;
        params.serial_number = Some(random_serial()?.into_rcgen());
        validity.apply(&mut params)?;
        let cert = params.self_signed(&key).map_err(|source| TlsError::Sign {
            subject: common_name.to_owned(),
            source,
        })?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its PEM certificate and PEM private key (e.g. files written by
    /// [`Ca::write_pem_files`]). The key must match the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let key = KeyPair::from_pem(key_pem).map_err(|source| TlsError::InvalidCa { source })?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|source| TlsError::CaCertPem { source })?;
        let cert = parse_cert(&cert_der).map_err(TlsError::cert_parse)?;
        // Refuse a key that is not the certificate's: everything it signed would fail to verify.
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(TlsError::CaKeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|source| TlsError::InvalidCa { source })?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            cert_der,
            issuer,
        })
    }

    /// Reads a CA from a PEM certificate file and a PEM key file.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let cert = read_text(cert_path)?;
        let key = read_text(key_path)?;
        Self::from_pem(&cert, &key)
    }

    /// The CA certificate as PEM (the trust anchor to distribute).
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA certificate as DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA private key as PKCS#8 PEM. Keep it secret.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Writes the CA certificate (mode 0644) and key (mode 0600), each atomically.
    pub fn write_pem_files(&self, cert_path: &Path, key_path: &Path) -> Result<()> {
        write_cert_file(cert_path, &self.cert_pem)?;
        write_key_file(key_path, &self.key_pem())
    }

    /// A federation peer certificate for `region`: URI SAN `urn:interflow:region:<code>`, DNS
    /// SAN `<code>.region.interflow`, the extra DNS names and IPs of its real endpoint, usable
    /// for both server and client authentication.
    pub fn issue_peer_cert(
        &self,
        region: RegionCode,
        extra_dns: &[String],
        extra_ips: &[IpAddr],
        validity: Validity,
    ) -> Result<Issued> {
        let mut sans = vec![uri_san(&format!("{REGION_URI_PREFIX}{region}"))?];
        sans.push(dns_san(&peer_server_name(region))?);
        for name in extra_dns {
            sans.push(dns_san(name)?);
        }
        sans.extend(extra_ips.iter().copied().map(SanType::IpAddress));
        self.issue(
            &peer_server_name(region),
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            validity,
        )
    }

    /// The local listener's server certificate: DNS SANs `localhost` and
    /// `<code>.local.interflow`, IP SAN `127.0.0.1`; server authentication only, no identity.
    pub fn issue_local_server_cert(
        &self,
        region: RegionCode,
        validity: Validity,
    ) -> Result<Issued> {
        let sans = vec![
            dns_san("localhost")?,
            dns_san(&local_server_name(region))?,
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        self.issue(
            &local_server_name(region),
            sans,
            vec![ExtendedKeyUsagePurpose::ServerAuth],
            validity,
        )
    }

    /// A local client certificate: URI SAN `urn:interflow:role:<role>` and CN `name` (the
    /// holder, who becomes the audit actor); client authentication only.
    pub fn issue_role_cert(&self, role: Role, name: &str, validity: Validity) -> Result<Issued> {
        validate_holder_name(name)?;
        self.issue(
            name,
            vec![uri_san(&role.uri())?],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            validity,
        )
    }

    /// A PEM CRL listing `revoked` serials, signed by this CA. Its CRL number is
    /// `this_update` in seconds since the Unix epoch, so later lists have larger numbers.
    pub fn crl(
        &self,
        revoked: &[Serial],
        this_update: SystemTime,
        next_update: SystemTime,
    ) -> Result<String> {
        if next_update <= this_update {
            return Err(TlsError::EmptyValidity);
        }
        let this = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(this_update)?;
        let params = CertificateRevocationListParams {
            this_update: this,
            next_update: rcgen::date_time_ymd(1970, 1, 1) + since_epoch(next_update)?,
            crl_number: SerialNumber::from(unix_secs(this_update)?),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: serial.clone().into_rcgen(),
                    revocation_time: this,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(|source| TlsError::SignCrl { source })?;
        crl.pem().map_err(|source| TlsError::SignCrl { source })
    }

    /// Also the seam tests use to issue certificates the public methods would never make.
    pub(crate) fn issue_with_params(
        &self,
        subject: &str,
        mut params: CertificateParams,
    ) -> Result<Issued> {
        let key = KeyPair::generate().map_err(|source| TlsError::KeyGen { source })?;
        let serial = random_serial()?;
        params.serial_number = Some(serial.clone().into_rcgen());
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| TlsError::Sign {
                subject: subject.to_owned(),
                source,
            })?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial,
            cert_der: cert.der().clone(),
        })
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
        validity: Validity,
    ) -> Result<Issued> {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = extended_key_usages;
        validity.apply(&mut params)?;
        self.issue_with_params(common_name, params)
    }
}

/// Writes a certificate or CRL file (mode 0644), atomically: readers see the old or the new
/// file, never half of one, so a reload racing a rotation fails cleanly instead of mixing.
pub fn write_cert_file(path: &Path, pem: &str) -> Result<()> {
    write_atomic(path, pem.as_bytes(), 0o644)
}

/// Writes a private key file with mode 0600 (owner read/write only), atomically. The mode is set
/// when the file is created, so the key is never readable by others, even briefly.
pub fn write_key_file(path: &Path, pem: &str) -> Result<()> {
    write_atomic(path, pem.as_bytes(), 0o600)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let write_err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| write_err(std::io::Error::other("path has no file name")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    // A temp file left by a crash would make `create_new` fail; it holds nothing of value.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(write_err(e)),
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(write_err)?;
    file.write_all(bytes).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(write_err)
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = crate::load::read_capped(path)?;
    String::from_utf8(bytes).map_err(|e| TlsError::Read {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

fn validate_holder_name(name: &str) -> Result<()> {
    let chars = name.chars().count();
    let ok = (1..=MAX_HOLDER_NAME_CHARS).contains(&chars)
        && name.trim() == name
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(TlsError::InvalidHolderName {
            name: name.to_owned(),
        })
    }
}

fn common_name_dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn uri_san(uri: &str) -> Result<SanType> {
    let ia5 = uri
        .to_owned()
        .try_into()
        .map_err(|source| TlsError::InvalidSan {
            value: uri.to_owned(),
            source,
        })?;
    Ok(SanType::URI(ia5))
}

fn dns_san(name: &str) -> Result<SanType> {
    // Checked as a DNS name first, so a typo fails here and not at every handshake.
    DnsName::try_from(name).map_err(|source| TlsError::InvalidServerName {
        name: name.to_owned(),
        source,
    })?;
    let ia5 = name
        .to_owned()
        .try_into()
        .map_err(|source| TlsError::InvalidSan {
            value: name.to_owned(),
            source,
        })?;
    Ok(SanType::DnsName(ia5))
}

fn random_serial() -> Result<Serial> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| TlsError::Random)?;
    // First byte in 1..=0x7f: the DER integer is positive and has no leading zero to strip, so
    // these bytes are exactly the serial a verifier compares with CRL entries.
    bytes[0] = (bytes[0] & 0x7f).max(1);
    Ok(Serial(bytes.to_vec()))
}

impl Serial {
    fn into_rcgen(self) -> SerialNumber {
        SerialNumber::from_slice(&self.0)
    }
}

fn unix_secs(t: SystemTime) -> Result<u64> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| TlsError::TimeOutOfRange)?
        .as_secs();
    if secs > MAX_UNIX_SECS {
        return Err(TlsError::TimeOutOfRange);
    }
    Ok(secs)
}

/// The whole seconds since the Unix epoch of a time a certificate can carry. Callers add them to
/// `rcgen::date_time_ymd(1970, 1, 1)`, which converts to rcgen's time type without depending on
/// the `time` crate directly; X.509 times carry no fractions.
fn since_epoch(t: SystemTime) -> Result<Duration> {
    unix_secs(t).map(Duration::from_secs)
}

#[cfg(test)]
mod tests;
