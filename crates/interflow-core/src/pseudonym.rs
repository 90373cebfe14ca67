//! Pseudonymous subjects: an agreement's secret pseudonym key and the `SubjectRef` it derives
//! from a national ID, `HMAC-SHA256(key, normalized ID)`. Refs differ between agreements, so a
//! leaked log names no one and cannot be joined across agreements. An agreement's key is
//! rotated by *epoch* (1, 2, …): new records use the newest epoch and say which one in their
//! body, and a search by national ID computes her ref under every epoch still kept
//! ([`EpochKeys`]). This module owns the derivation and keeps keys and refs out of logs; it
//! does not load, store or distribute keys.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::NationalId;

/// HMAC-SHA256 block size: keys shorter than this are zero-padded to it (RFC 2104).
const HMAC_BLOCK: usize = 64;

/// An agreement's 32-byte pseudonym key. Wiped from memory on drop; `Debug` never shows it.
#[derive(Clone)]
pub struct PseudonymKey(Zeroizing<[u8; 32]>);

/// Why a string is not a hex-encoded pseudonym key. Never carries any part of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyHexError {
    #[error("pseudonym key must be 64 hex digits, got {len} characters")]
    WrongLength { len: usize },
    /// `position` counts characters from 1.
    #[error(
        "pseudonym key must be 64 hex digits, found a non-hex character at position {position}"
    )]
    NotHex { position: usize },
}

impl PseudonymKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A fresh random key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut key[..]);
        Self(key)
    }

    /// Parses 64 hex digits (either case). Surrounding whitespace is not trimmed.
    pub fn from_hex(s: &str) -> Result<Self, KeyHexError> {
        let len = s.chars().count();
        if len != 64 {
            return Err(KeyHexError::WrongLength { len });
        }
        let mut key = Zeroizing::new([0u8; 32]);
        let mut high = 0u8;
        for (i, c) in s.chars().enumerate() {
            // A hex digit is below 16, so it fits in a `u8`.
            let nibble = c
                .to_digit(16)
                .and_then(|n| u8::try_from(n).ok())
                .ok_or(KeyHexError::NotHex { position: i + 1 })?;
            if i % 2 == 0 {
                high = nibble;
            } else {
                key[i / 2] = (high << 4) | nibble;
            }
        }
        Ok(Self(key))
    }

    /// The key as 64 lower-case hex digits, wiped from memory when dropped.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.as_ref()))
    }
}

impl fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PseudonymKey(..)")
    }
}

/// The pseudonym of one person under one agreement: `HMAC-SHA256(key, normalized ID)`.
///
/// `Debug` and `Display` show only the first four bytes, e.g. `ref:1a2b3c4d…`, so a ref is
/// never logged in full.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubjectRef([u8; 32]);

/// A subject ref of the wrong length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("subject ref must be 32 bytes, got {len}")]
pub struct SubjectRefLengthError {
    pub len: usize,
}

impl SubjectRef {
    /// The ref of `id` under `key`.
    pub fn derive(key: &PseudonymKey, id: &NationalId) -> Self {
        // `Hmac::new_from_slice` would return an error we could never see; padding the
        // 32-byte key to the block size ourselves is what HMAC does anyway and keeps this
        // infallible.
        let mut block = Zeroizing::new([0u8; HMAC_BLOCK]);
        block[..32].copy_from_slice(key.0.as_ref());
        let mut mac = <Hmac<Sha256> as KeyInit>::new((&*block).into());
        mac.update(id.normalized().as_bytes());
        Self(mac.finalize().into_bytes().into())
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl TryFrom<&[u8]> for SubjectRef {
    type Error = SubjectRefLengthError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| SubjectRefLengthError { len: bytes.len() })
    }
}

impl fmt::Display for SubjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ref:{}…", hex::encode(&self.0[..4]))
    }
}

impl fmt::Debug for SubjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The generation of an agreement's pseudonym key a subject ref was made under: 1 for the key
/// an agreement starts with, one more for each rotation. In a record body epoch 1 is written as
/// `0` (absent), so bodies made before epochs existed read as epoch 1 and keep their bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Epoch(NonZeroU32);

/// An epoch number that cannot be one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EpochError {
    #[error("pseudonym epoch `0` does not exist; epochs count from 1")]
    Zero,
    /// Epoch 1 has one encoding only, so a body has one meaning per byte string.
    #[error("pseudonym epoch 1 is written as `0` (left out) in a record body")]
    ExplicitFirst,
}

impl Epoch {
    pub const FIRST: Epoch = Epoch(NonZeroU32::MIN);

    pub fn new(n: u32) -> Result<Self, EpochError> {
        NonZeroU32::new(n).map(Epoch).ok_or(EpochError::Zero)
    }

    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// The epoch a record body's `pseudonym_epoch` field names.
    pub fn from_wire(n: u32) -> Result<Self, EpochError> {
        match n {
            0 => Ok(Self::FIRST),
            1 => Err(EpochError::ExplicitFirst),
            n => Self::new(n),
        }
    }

    /// The value of a record body's `pseudonym_epoch` field: `0` for epoch 1.
    pub fn to_wire(self) -> u32 {
        if self == Self::FIRST { 0 } else { self.get() }
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a set of epoch keys cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EpochKeysError {
    #[error("pseudonym epoch {0} is listed twice; give each key of an agreement its own epoch")]
    Duplicate(Epoch),
    #[error("no pseudonym key given")]
    Empty,
}

/// The pseudonym keys of one agreement by epoch; never empty. New refs are made under the
/// newest; a search by national ID uses every one ([`Self::refs`]). An old epoch is dropped
/// (left out of the config) once no record made under it is inside retention.
#[derive(Clone)]
pub struct EpochKeys(BTreeMap<Epoch, PseudonymKey>);

impl EpochKeys {
    /// An agreement with one key, at epoch 1.
    pub fn first(key: PseudonymKey) -> Self {
        Self(BTreeMap::from([(Epoch::FIRST, key)]))
    }

    /// The keys of one agreement; each epoch at most once.
    pub fn new(
        keys: impl IntoIterator<Item = (Epoch, PseudonymKey)>,
    ) -> Result<Self, EpochKeysError> {
        let mut map = BTreeMap::new();
        for (epoch, key) in keys {
            if map.insert(epoch, key).is_some() {
                return Err(EpochKeysError::Duplicate(epoch));
            }
        }
        if map.is_empty() {
            return Err(EpochKeysError::Empty);
        }
        Ok(Self(map))
    }

    /// The epoch new records are made under, with its key.
    pub fn newest(&self) -> (Epoch, &PseudonymKey) {
        // Never empty (checked in every constructor), so this falls back only in theory.
        self.0
            .last_key_value()
            .map(|(e, k)| (*e, k))
            .unwrap_or_else(|| unreachable!("EpochKeys is never empty"))
    }

    /// Adds `key` at `epoch` unless that epoch has a key already (which is kept).
    pub fn add_if_absent(&mut self, epoch: Epoch, key: PseudonymKey) {
        self.0.entry(epoch).or_insert(key);
    }

    pub fn get(&self, epoch: Epoch) -> Option<&PseudonymKey> {
        self.0.get(&epoch)
    }

    /// The epochs kept, oldest first.
    pub fn epochs(&self) -> impl Iterator<Item = Epoch> + '_ {
        self.0.keys().copied()
    }

    /// The person's ref under every epoch kept, oldest first: what a search by national ID
    /// looks for.
    pub fn refs(&self, id: &NationalId) -> Vec<(Epoch, SubjectRef)> {
        self.0
            .iter()
            .map(|(e, k)| (*e, SubjectRef::derive(k, id)))
            .collect()
    }

    /// The epoch whose key makes `subject` for `id`, if one kept does.
    pub fn epoch_of(&self, id: &NationalId, subject: &SubjectRef) -> Option<Epoch> {
        self.refs(id)
            .into_iter()
            .find_map(|(e, r)| (&r == subject).then_some(e))
    }
}

impl fmt::Debug for EpochKeys {
    // Only the epochs: the keys are secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EpochKeys")
            .field(&self.epochs().map(Epoch::get).collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn id(s: &str) -> NationalId {
        let today = NaiveDate::from_ymd_opt(2026, 6, 1).expect("real date");
        NationalId::parse(s, today).expect("valid id")
    }

    fn key(byte: u8) -> PseudonymKey {
        PseudonymKey::from_bytes([byte; 32])
    }

    #[test]
    fn same_key_and_id_give_the_same_ref() {
        let a = SubjectRef::derive(&key(7), &id("11010519491231002X"));
        let b = SubjectRef::derive(&key(7), &id("11010519491231002X"));
        assert_eq!(a, b);
    }

    #[test]
    fn different_keys_give_different_refs() {
        let a = SubjectRef::derive(&key(7), &id("11010519491231002X"));
        let b = SubjectRef::derive(&key(8), &id("11010519491231002X"));
        assert_ne!(a, b);
    }

    #[test]
    fn different_ids_give_different_refs() {
        let a = SubjectRef::derive(&key(7), &id("11010519491231002X"));
        let b = SubjectRef::derive(&key(7), &id("110105194912310003"));
        assert_ne!(a, b);
    }

    #[test]
    fn lower_and_upper_case_x_give_the_same_ref() {
        let a = SubjectRef::derive(&key(7), &id("11010519491231002x"));
        let b = SubjectRef::derive(&key(7), &id("11010519491231002X"));
        assert_eq!(a, b);
    }

    #[test]
    fn derive_is_standard_hmac_sha256() {
        let k = PseudonymKey::from_bytes(std::array::from_fn(|i| i as u8));
        let nid = id("11010519491231002X");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(k.0.as_ref()).expect("any key length");
        mac.update(b"11010519491231002X");
        let want: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(SubjectRef::derive(&k, &nid).as_bytes(), &want);
    }

    #[test]
    fn padded_hmac_matches_rfc_4231_test_case_2() {
        // Key "Jefe", data "what do ya want for nothing?": the padding we do by hand must give
        // the published digest.
        let mut block = [0u8; HMAC_BLOCK];
        block[..4].copy_from_slice(b"Jefe");
        let mut mac = <Hmac<Sha256> as KeyInit>::new((&block).into());
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn key_hex_round_trips_in_either_case() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let k = PseudonymKey::from_hex(hex).expect("valid hex");
        assert_eq!(k.to_hex().as_str(), hex.to_lowercase());
        let again = PseudonymKey::from_hex(&k.to_hex()).expect("valid hex");
        assert_eq!(again.0.as_ref(), k.0.as_ref());
    }

    #[test]
    fn bad_key_hex_gets_precise_errors() {
        let good = "00".repeat(32);
        let cases: Vec<(String, KeyHexError)> = vec![
            (String::new(), KeyHexError::WrongLength { len: 0 }),
            ("0".repeat(63), KeyHexError::WrongLength { len: 63 }),
            (format!("{good}\n"), KeyHexError::WrongLength { len: 65 }),
            (
                format!("g{}", &good[1..]),
                KeyHexError::NotHex { position: 1 },
            ),
            (
                format!("{} ", &good[..63]),
                KeyHexError::NotHex { position: 64 },
            ),
            (
                format!("{}é", &good[..63]),
                KeyHexError::NotHex { position: 64 },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                PseudonymKey::from_hex(&input).map(|_| ()),
                Err(want),
                "{input:?}"
            );
        }
        assert_eq!(
            KeyHexError::WrongLength { len: 65 }.to_string(),
            "pseudonym key must be 64 hex digits, got 65 characters"
        );
    }

    #[test]
    fn generated_keys_differ() {
        let mut rng = rand::rngs::OsRng;
        let a = PseudonymKey::generate(&mut rng);
        let b = PseudonymKey::generate(&mut rng);
        assert_ne!(a.to_hex(), b.to_hex());
    }

    #[test]
    fn keys_and_refs_are_not_printed_in_full() {
        let k = key(0xab);
        assert_eq!(format!("{k:?}"), "PseudonymKey(..)");
        let r = SubjectRef::from_bytes([
            0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]);
        assert_eq!(r.to_string(), "ref:1a2b3c4d…");
        assert_eq!(format!("{r:?}"), "ref:1a2b3c4d…");
    }

    #[test]
    fn refs_convert_from_exactly_32_bytes() {
        let bytes = [9u8; 33];
        assert_eq!(
            SubjectRef::try_from(&bytes[..32]),
            Ok(SubjectRef::from_bytes([9; 32]))
        );
        assert_eq!(
            SubjectRef::try_from(&bytes[..]),
            Err(SubjectRefLengthError { len: 33 })
        );
        assert_eq!(
            SubjectRef::try_from(&bytes[..0]),
            Err(SubjectRefLengthError { len: 0 })
        );
    }

    fn epoch(n: u32) -> Epoch {
        Epoch::new(n).expect("not zero")
    }

    #[test]
    fn epochs_count_from_one_and_epoch_one_is_absent_on_the_wire() {
        assert_eq!(Epoch::new(0), Err(EpochError::Zero));
        assert_eq!(Epoch::from_wire(0), Ok(Epoch::FIRST));
        assert_eq!(Epoch::from_wire(1), Err(EpochError::ExplicitFirst));
        assert_eq!(Epoch::from_wire(7), Ok(epoch(7)));
        assert_eq!(Epoch::FIRST.to_wire(), 0);
        assert_eq!(epoch(2).to_wire(), 2);
        for n in [0, 2, 3, u32::MAX] {
            assert_eq!(Epoch::from_wire(n).map(Epoch::to_wire), Ok(n));
        }
    }

    #[test]
    fn new_refs_use_the_newest_epoch_and_searches_use_every_one() {
        let keys = EpochKeys::new([
            (epoch(3), key(3)),
            (Epoch::FIRST, key(1)),
            (epoch(2), key(2)),
        ])
        .expect("distinct epochs");
        let (newest, k) = keys.newest();
        assert_eq!(newest, epoch(3));
        let nid = id("11010519491231002X");
        assert_eq!(
            SubjectRef::derive(k, &nid),
            SubjectRef::derive(&key(3), &nid)
        );
        let refs = keys.refs(&nid);
        assert_eq!(
            refs,
            vec![
                (Epoch::FIRST, SubjectRef::derive(&key(1), &nid)),
                (epoch(2), SubjectRef::derive(&key(2), &nid)),
                (epoch(3), SubjectRef::derive(&key(3), &nid)),
            ]
        );
        assert_eq!(keys.epoch_of(&nid, &refs[1].1), Some(epoch(2)));
        let other = SubjectRef::derive(&key(9), &nid);
        assert_eq!(keys.epoch_of(&nid, &other), None);
        assert_eq!(format!("{keys:?}"), "EpochKeys([1, 2, 3])");
    }

    #[test]
    fn an_agreement_without_rotation_has_epoch_one_only() {
        let keys = EpochKeys::first(key(1));
        assert_eq!(keys.newest().0, Epoch::FIRST);
        assert_eq!(keys.epochs().collect::<Vec<_>>(), vec![Epoch::FIRST]);
    }

    #[test]
    fn duplicate_epochs_and_no_keys_are_refused() {
        assert_eq!(
            EpochKeys::new([(epoch(2), key(1)), (epoch(2), key(2))]).map(|_| ()),
            Err(EpochKeysError::Duplicate(epoch(2)))
        );
        assert_eq!(EpochKeys::new([]).map(|_| ()), Err(EpochKeysError::Empty));
        assert_eq!(
            EpochKeysError::Duplicate(epoch(2)).to_string(),
            "pseudonym epoch 2 is listed twice; give each key of an agreement its own epoch"
        );
    }
}
