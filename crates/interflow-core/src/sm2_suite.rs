//! The national signature suite `SM2_SM3`: SM2 signatures (GB/T 32918.2, GM/T 0003.2) with SM3
//! hashing (GB/T 32905), beside Ed25519.
//!
//! Choices, each fixed so that two implementations agree on every byte:
//! - **Distinguishing identifier**: [`DISTINGUISHING_ID`], the default of GM/T 0009 that
//!   OpenSSL, GmSSL and most libraries use when none is given. It enters the signature through
//!   `Z_A = SM3(ENTL || ID || a || b || xG || yG || xA || yA)`; a verifier with another ID
//!   refuses every signature.
//! - **Message**: the same domain separation as Ed25519 records: the signed message is
//!   `domain prefix || body` ([`Domain::prefix`]), so an SM2 signature made for a receipt never
//!   verifies as a record.
//! - **Encoding**: a signature is exactly 64 bytes, `r || s`, each a 32-byte big-endian integer.
//!   There is no DER, so there is no encoding malleability; `r` and `s` must lie in `[1, n-1]`.
//! - **Keys**: a public key is the 65-byte uncompressed SEC1 point `04 || x || y`, checked to
//!   lie on the curve (the identity has no such encoding); a secret key file is PKCS#8 PEM, the
//!   form `openssl genpkey -algorithm SM2` writes.
//! - **Signing** is deterministic (RFC 6979 nonces with SM3), so the same key and message give
//!   the same signature; verifiers accept any valid nonce.

use ::sm2::dsa::signature::{Signer as _, Verifier as _};
use ::sm2::elliptic_curve::sec1::ToEncodedPoint as _;
use ::sm2::pkcs8::{
    DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _,
    LineEnding,
};

use crate::sign::{Domain, SignatureError};

/// The distinguishing identifier every interflow SM2 signature uses (GM/T 0009's default).
pub const DISTINGUISHING_ID: &str = "1234567812345678";

/// Length of a public key as stored in the directory: uncompressed SEC1.
pub const PUBLIC_KEY_LEN: usize = 65;

/// Why SM2 key material was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Sm2KeyError {
    #[error(
        "an SM2 public key must be {PUBLIC_KEY_LEN} bytes (uncompressed SEC1: 04 || x || y), got {0}"
    )]
    PublicKeyLength(usize),
    #[error("the SM2 public key is not a point on the SM2 curve")]
    NotOnCurve,
    #[error("the SM2 secret key is not a scalar in [1, n-1]")]
    BadSecret,
    #[error("not an SM2 PKCS#8 private key PEM (as `openssl genpkey -algorithm SM2` writes): {0}")]
    Pem(String),
}

/// An SM2 record-signing key.
#[derive(Clone)]
pub struct Sm2SigningKey(::sm2::dsa::SigningKey);

/// An SM2 public key, bound to [`DISTINGUISHING_ID`].
#[derive(Clone)]
pub struct Sm2VerifyingKey(::sm2::dsa::VerifyingKey);

impl PartialEq for Sm2VerifyingKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_affine() == other.0.as_affine()
    }
}

impl Eq for Sm2VerifyingKey {}

impl std::fmt::Debug for Sm2SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sm2SigningKey")
            .field("public", &self.verifying_key())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Sm2VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sm2VerifyingKey({})", hex::encode(self.to_bytes()))
    }
}

impl Sm2SigningKey {
    /// A new random key.
    pub fn generate() -> Sm2SigningKey {
        let secret = ::sm2::SecretKey::random(&mut rand::rngs::OsRng);
        Self::from_secret(&secret)
    }

    /// The key with this 32-byte big-endian secret scalar.
    pub fn from_bytes(secret: &[u8; 32]) -> Result<Sm2SigningKey, Sm2KeyError> {
        let secret = ::sm2::SecretKey::from_slice(secret).map_err(|_| Sm2KeyError::BadSecret)?;
        Ok(Self::from_secret(&secret))
    }

    fn from_secret(secret: &::sm2::SecretKey) -> Sm2SigningKey {
        // `SigningKey::new` fails only for a distinguishing identifier longer than 8191 bytes;
        // ours is a 16-byte constant.
        #[allow(clippy::expect_used)]
        let key = ::sm2::dsa::SigningKey::new(DISTINGUISHING_ID, secret)
            .expect("the fixed distinguishing identifier is short enough");
        Sm2SigningKey(key)
    }

    /// Reads a PKCS#8 PEM private key (`openssl genpkey -algorithm SM2`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Sm2SigningKey, Sm2KeyError> {
        let secret =
            ::sm2::SecretKey::from_pkcs8_pem(pem).map_err(|e| Sm2KeyError::Pem(e.to_string()))?;
        Ok(Self::from_secret(&secret))
    }

    /// The key as PKCS#8 PEM, readable by OpenSSL.
    pub fn to_pkcs8_pem(&self) -> Result<zeroize::Zeroizing<String>, Sm2KeyError> {
        let secret = ::sm2::SecretKey::from(self.0.as_nonzero_scalar());
        secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| Sm2KeyError::Pem(e.to_string()))
    }

    pub fn verifying_key(&self) -> Sm2VerifyingKey {
        Sm2VerifyingKey(self.0.verifying_key().clone())
    }

    /// The 32-byte big-endian secret scalar, for keys derived from this one.
    pub fn secret_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.0.as_nonzero_scalar().to_bytes().into())
    }

    /// Signs `body` for `domain`: `r || s` over `domain prefix || body`.
    pub fn sign(&self, domain: Domain, body: &[u8]) -> [u8; 64] {
        let sig: ::sm2::dsa::Signature = self.0.sign(&message(domain, body));
        sig.to_bytes()
    }
}

impl Sm2VerifyingKey {
    /// Reads a 65-byte uncompressed SEC1 point and checks it lies on the curve.
    pub fn from_bytes(bytes: &[u8]) -> Result<Sm2VerifyingKey, Sm2KeyError> {
        // Only the uncompressed form: one encoding per key, so the directory's bytes name it.
        if bytes.len() != PUBLIC_KEY_LEN || bytes[0] != 0x04 {
            return Err(Sm2KeyError::PublicKeyLength(bytes.len()));
        }
        ::sm2::dsa::VerifyingKey::from_sec1_bytes(DISTINGUISHING_ID, bytes)
            .map(Sm2VerifyingKey)
            .map_err(|_| Sm2KeyError::NotOnCurve)
    }

    /// Reads a public key PEM (`BEGIN PUBLIC KEY`, SubjectPublicKeyInfo), as `openssl pkey
    /// -pubout` writes for an SM2 key.
    pub fn from_public_key_pem(pem: &str) -> Result<Sm2VerifyingKey, Sm2KeyError> {
        let public = ::sm2::PublicKey::from_public_key_pem(pem)
            .map_err(|e| Sm2KeyError::Pem(e.to_string()))?;
        Self::from_bytes(public.to_encoded_point(false).as_bytes())
    }

    /// The public key as PEM (SubjectPublicKeyInfo), readable by OpenSSL.
    pub fn to_public_key_pem(&self) -> Result<String, Sm2KeyError> {
        ::sm2::PublicKey::from(self.0.clone())
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Sm2KeyError::Pem(e.to_string()))
    }

    /// The uncompressed SEC1 encoding.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        let point = self.0.as_affine().to_encoded_point(false);
        let mut out = [0u8; PUBLIC_KEY_LEN];
        out.copy_from_slice(point.as_bytes());
        out
    }

    /// Verifies `r || s` over `domain prefix || body`; `r` and `s` must be in `[1, n-1]`.
    pub fn verify(
        &self,
        domain: Domain,
        body: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        self.verify_message(&message(domain, body), signature)
    }

    /// Verifies a signature over exactly `msg` (no domain prefix): for standard test vectors
    /// and cross-checks with other implementations only.
    pub fn verify_message(&self, msg: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        if signature.len() != 64 {
            return Err(SignatureError::WrongLength(signature.len()));
        }
        let sig =
            ::sm2::dsa::Signature::from_slice(signature).map_err(|_| SignatureError::Invalid)?;
        self.0
            .verify(msg, &sig)
            .map_err(|_| SignatureError::Invalid)
    }
}

fn message(domain: Domain, body: &[u8]) -> Vec<u8> {
    let prefix = domain.prefix();
    let mut m = Vec::with_capacity(prefix.len() + body.len());
    m.extend_from_slice(prefix);
    m.extend_from_slice(body);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// GM/T 0003.5-2012 (republished as GB/T 32918.5-2017), Annex A.2: the signature example
    /// on the recommended curve, with ID "1234567812345678" and message "message digest".
    const VECTOR_SECRET: &str = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8";
    const VECTOR_PUBLIC: &str = "04\
        09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020\
        CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13";
    const VECTOR_R: &str = "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3";
    const VECTOR_S: &str = "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA";

    fn vector_key() -> Sm2VerifyingKey {
        Sm2VerifyingKey::from_bytes(&unhex(VECTOR_PUBLIC)).unwrap()
    }

    fn vector_signature() -> Vec<u8> {
        [unhex(VECTOR_R), unhex(VECTOR_S)].concat()
    }

    #[test]
    fn the_standard_signature_example_verifies() {
        let key = vector_key();
        key.verify_message(b"message digest", &vector_signature())
            .unwrap();
        assert_eq!(
            key.verify_message(b"message digesT", &vector_signature()),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn the_standard_secret_gives_the_standard_public_key() {
        let secret: [u8; 32] = unhex(VECTOR_SECRET).try_into().unwrap();
        let key = Sm2SigningKey::from_bytes(&secret).unwrap();
        assert_eq!(key.verifying_key(), vector_key());
        assert_eq!(
            hex::encode_upper(key.verifying_key().to_bytes()),
            VECTOR_PUBLIC
        );
    }

    #[test]
    fn a_signature_verifies_only_for_its_domain_body_and_key() {
        let key = Sm2SigningKey::generate();
        let sig = key.sign(Domain::Record, b"body");
        let vk = key.verifying_key();
        vk.verify(Domain::Record, b"body", &sig).unwrap();
        assert_eq!(
            vk.verify(Domain::Receipt, b"body", &sig),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            vk.verify(Domain::Record, b"bodz", &sig),
            Err(SignatureError::Invalid)
        );
        let other = Sm2SigningKey::generate().verifying_key();
        assert_eq!(
            other.verify(Domain::Record, b"body", &sig),
            Err(SignatureError::Invalid)
        );
        // Without the prefix the message differs, so a bare signature never passes.
        assert_eq!(
            vk.verify_message(b"body", &sig),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn signing_is_deterministic() {
        let key = Sm2SigningKey::from_bytes(&[7; 32]).unwrap();
        assert_eq!(
            key.sign(Domain::Record, b"x"),
            key.sign(Domain::Record, b"x")
        );
    }

    /// n, the order of the SM2 base point.
    const ORDER: &str = "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123";

    #[test]
    fn out_of_range_and_malformed_signatures_are_refused() {
        let key = vector_key();
        let msg = b"message digest";
        let r = unhex(VECTOR_R);
        let s = unhex(VECTOR_S);
        let zero = vec![0u8; 32];
        let n = unhex(ORDER);
        for (what, sig) in [
            ("r = 0", [zero.clone(), s.clone()].concat()),
            ("s = 0", [r.clone(), zero].concat()),
            ("r = n", [n.clone(), s.clone()].concat()),
            ("s = n", [r.clone(), n].concat()),
            ("r = 2^256 - 1", [vec![0xff; 32], s.clone()].concat()),
        ] {
            assert_eq!(
                key.verify_message(msg, &sig),
                Err(SignatureError::Invalid),
                "{what}"
            );
        }
        // Only the fixed 64-byte form is read: a longer (DER-like) encoding is refused.
        assert_eq!(
            key.verify_message(msg, &[r.as_slice(), &[0], s.as_slice()].concat()),
            Err(SignatureError::WrongLength(65))
        );
        // The ECDSA malleation (r, n - s) does not carry over to SM2.
        let minus_s = sub_mod(&unhex(ORDER), &s);
        assert_eq!(
            key.verify_message(msg, &[r, minus_s].concat()),
            Err(SignatureError::Invalid)
        );
    }

    /// a - b for 32-byte big-endian a > b.
    fn sub_mod(a: &[u8], b: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
            borrow = 0;
            if d < 0 {
                d += 256;
                borrow = 1;
            }
            out[i] = u8::try_from(d).unwrap();
        }
        out
    }

    #[test]
    fn public_keys_must_be_uncompressed_points_on_the_curve() {
        let good = unhex(VECTOR_PUBLIC);
        let mut off_curve = good.clone();
        off_curve[64] ^= 1;
        assert_eq!(
            Sm2VerifyingKey::from_bytes(&off_curve),
            Err(Sm2KeyError::NotOnCurve)
        );
        // The compressed form of a valid key names the same point but is refused: one
        // encoding per key.
        let mut compressed = vec![0x02 | (good[64] & 1)];
        compressed.extend_from_slice(&good[1..33]);
        assert_eq!(
            Sm2VerifyingKey::from_bytes(&compressed),
            Err(Sm2KeyError::PublicKeyLength(33))
        );
        assert_eq!(
            Sm2VerifyingKey::from_bytes(&[0u8]),
            Err(Sm2KeyError::PublicKeyLength(1))
        );
        let mut zero_point = vec![0x04];
        zero_point.extend_from_slice(&[0u8; 64]);
        assert_eq!(
            Sm2VerifyingKey::from_bytes(&zero_point),
            Err(Sm2KeyError::NotOnCurve)
        );
    }

    #[test]
    fn secrets_outside_the_scalar_range_are_refused() {
        assert_eq!(
            Sm2SigningKey::from_bytes(&[0u8; 32]).err(),
            Some(Sm2KeyError::BadSecret)
        );
        assert_eq!(
            Sm2SigningKey::from_bytes(&[0xff; 32]).err(),
            Some(Sm2KeyError::BadSecret)
        );
    }

    #[test]
    fn pkcs8_pem_round_trips() {
        let key = Sm2SigningKey::generate();
        let pem = key.to_pkcs8_pem().unwrap();
        let back = Sm2SigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.verifying_key(), key.verifying_key());
        assert!(matches!(
            Sm2SigningKey::from_pkcs8_pem(
                "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"
            ),
            Err(Sm2KeyError::Pem(_))
        ));
    }
}
