//! Loading certificates, keys and CRLs from PEM files, with errors that name the file and say
//! what was wrong with it. These functions block on file I/O: call them at startup, on reload,
//! or from `spawn_blocking`.

use std::io::Read;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs1KeyDer,
    PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};

use crate::error::{Result, TlsError};

/// No certificate, key or CRL file is anywhere near this big; the cap keeps a misconfigured
/// path (a device, a log file) from being read into memory.
const MAX_PEM_FILE_BYTES: u64 = 16 * 1024 * 1024;

const CERTIFICATE: &str = "CERTIFICATE";
const PRIVATE_KEY: &str = "PRIVATE KEY";
const X509_CRL: &str = "X509 CRL";

/// Reads every `CERTIFICATE` block of a PEM file (a leaf followed by intermediates, or a bundle
/// of CA certificates). Any other block type is an error, as is a file without certificates.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let sections = read_sections(path)?;
    let mut certs = Vec::with_capacity(sections.len());
    for (kind, der) in sections {
        match kind {
            SectionKind::Certificate => certs.push(CertificateDer::from(der)),
            other => return Err(wrong_type(path, CERTIFICATE, other)),
        }
    }
    if certs.is_empty() {
        return Err(no_block(path, CERTIFICATE));
    }
    Ok(certs)
}

/// Reads the single private key of a PEM file (PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY`
/// or SEC1 `EC PRIVATE KEY`). Certificates next to the key are tolerated, so a combined
/// cert+key file works; anything else, or several keys, is an error.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let mut keys = Vec::with_capacity(1);
    for (kind, der) in read_sections(path)? {
        match kind {
            SectionKind::PrivateKey => {
                keys.push(PrivateKeyDer::from(PrivatePkcs8KeyDer::from(der)))
            }
            SectionKind::RsaPrivateKey => {
                keys.push(PrivateKeyDer::from(PrivatePkcs1KeyDer::from(der)));
            }
            SectionKind::EcPrivateKey => {
                keys.push(PrivateKeyDer::from(PrivateSec1KeyDer::from(der)));
            }
            SectionKind::Certificate => {}
            other => return Err(wrong_type(path, PRIVATE_KEY, other)),
        }
    }
    let count = keys.len();
    match keys.pop() {
        Some(key) if count == 1 => Ok(key),
        Some(_) => Err(TlsError::SeveralKeys {
            path: path.to_owned(),
            count,
        }),
        None => Err(no_block(path, PRIVATE_KEY)),
    }
}

/// Reads every `X509 CRL` block of each file, checking that each one parses as a CRL so a bad
/// file is reported by name rather than by the verifier later. A file may hold several CRLs
/// (one per CA of a bundle); a file without any is an error.
///
/// A CRL past its `nextUpdate` is loaded (with a warning): the verifier refuses the
/// certificates it covers, which is the safe reading of a stale list.
pub fn load_crls(paths: &[PathBuf]) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let mut crls = Vec::new();
    for path in paths {
        let before = crls.len();
        for (kind, der) in read_sections(path)? {
            match kind {
                SectionKind::Crl => {
                    check_crl(path, &der)?;
                    crls.push(CertificateRevocationListDer::from(der));
                }
                other => return Err(wrong_type(path, X509_CRL, other)),
            }
        }
        if crls.len() == before {
            return Err(no_block(path, X509_CRL));
        }
    }
    Ok(crls)
}

fn check_crl(path: &Path, der: &[u8]) -> Result<()> {
    let bad = |source| TlsError::BadCrl {
        path: path.to_owned(),
        source,
    };
    let crl = match x509_parser::parse_x509_crl(der) {
        Ok(([], crl)) => crl,
        Ok((_, _)) => return Err(bad(x509_parser::error::X509Error::InvalidCertificate)),
        Err(x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e)) => {
            return Err(bad(e));
        }
        Err(x509_parser::nom::Err::Incomplete(_)) => {
            return Err(bad(x509_parser::error::X509Error::InvalidCertificate));
        }
    };
    let now = x509_parser::time::ASN1Time::now();
    if let Some(next_update) = crl.next_update()
        && next_update < now
    {
        tracing::warn!(
            path = %path.display(),
            next_update = %next_update,
            "crl is past its next update: the certificates it covers will be refused until a fresh crl is loaded"
        );
    }
    Ok(())
}

/// Reads a whole PEM file and splits it into its recognised sections.
fn read_sections(path: &Path) -> Result<Vec<(SectionKind, Vec<u8>)>> {
    let bytes = read_capped(path)?;
    <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
        })
}

pub(crate) fn read_capped(path: &Path) -> Result<Vec<u8>> {
    let read_err = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(TlsError::FileTooLarge {
            path: path.to_owned(),
            limit: MAX_PEM_FILE_BYTES,
        });
    }
    Ok(bytes)
}

fn wrong_type(path: &Path, expected: &'static str, found: SectionKind) -> TlsError {
    TlsError::WrongPemType {
        path: path.to_owned(),
        expected,
        found: section_label(found).to_owned(),
    }
}

fn no_block(path: &Path, expected: &'static str) -> TlsError {
    TlsError::NoPemBlock {
        path: path.to_owned(),
        expected,
    }
}

/// The PEM label of a section kind (rustls-pki-types keeps its own mapping private).
fn section_label(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Certificate => CERTIFICATE,
        SectionKind::PublicKey => "PUBLIC KEY",
        SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
        SectionKind::PrivateKey => PRIVATE_KEY,
        SectionKind::EcPrivateKey => "EC PRIVATE KEY",
        SectionKind::Crl => X509_CRL,
        SectionKind::Csr => "CERTIFICATE REQUEST",
        SectionKind::EchConfigList => "ECHCONFIG",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Ca;
    use std::time::Duration;

    fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("test ca").unwrap();
        let cert = write(dir.path(), "ca.pem", &ca.cert_pem());
        let key = write(dir.path(), "ca.key", &ca.key_pem());
        let empty = write(dir.path(), "empty.pem", "");
        let missing = dir.path().join("missing.pem");

        assert_eq!(load_certs(&cert).unwrap().len(), 1);
        load_key(&key).unwrap();

        let err = load_certs(&missing).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let err = load_certs(&empty).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::NoPemBlock {
                    expected: "CERTIFICATE",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("empty.pem"), "{err}");

        let err = load_certs(&key).unwrap_err();
        assert!(
            matches!(&err, TlsError::WrongPemType { found, .. } if found == "PRIVATE KEY"),
            "{err:?}"
        );
        assert!(err.to_string().contains("ca.key"), "{err}");

        let err = load_key(&cert).unwrap_err();
        assert!(matches!(err, TlsError::NoPemBlock { .. }), "{err:?}");

        let two = write(
            dir.path(),
            "two.key",
            &format!("{}{}", ca.key_pem(), ca.key_pem()),
        );
        let err = load_key(&two).unwrap_err();
        assert!(
            matches!(err, TlsError::SeveralKeys { count: 2, .. }),
            "{err:?}"
        );

        let err = load_crls(std::slice::from_ref(&cert)).unwrap_err();
        assert!(matches!(err, TlsError::WrongPemType { .. }), "{err:?}");

        let garbage = write(
            dir.path(),
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        let err = load_certs(&garbage).unwrap_err();
        assert!(matches!(err, TlsError::Pem { .. }), "{err:?}");

        let bad_crl = write(
            dir.path(),
            "bad.crl",
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        );
        let err = load_crls(&[bad_crl]).unwrap_err();
        assert!(matches!(err, TlsError::BadCrl { .. }), "{err:?}");
        assert!(err.to_string().contains("bad.crl"), "{err}");

        let now = std::time::SystemTime::now();
        let crl = ca.crl(&[], now, now + Duration::from_secs(3600)).unwrap();
        let good_crl = write(dir.path(), "good.crl", &crl);
        assert_eq!(load_crls(&[good_crl]).unwrap().len(), 1);
    }
}
