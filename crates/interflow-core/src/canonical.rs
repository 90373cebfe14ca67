//! Canonical protobuf decoding for signed bytes.
//!
//! A signed body is accepted only if decoding it and encoding the result gives back exactly the
//! same bytes. That rejects unknown fields (which would carry data past the closed schema),
//! default values written explicitly, and reordered fields, so each document has one encoding
//! and one id.

use prost::Message;

/// Why bytes are not a canonical encoding of the expected message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error("not a valid `{message}` encoding: {reason}")]
    Malformed {
        message: &'static str,
        reason: String,
    },
    #[error("`{message}` encoding is not canonical (unknown, repeated or reordered fields)")]
    NonCanonical { message: &'static str },
}

/// Decodes `bytes` as `M` and refuses any encoding other than the canonical one.
pub fn decode_canonical<M: Message + Default>(
    message: &'static str,
    bytes: &[u8],
) -> Result<M, CanonicalError> {
    let m = M::decode(bytes).map_err(|e| CanonicalError::Malformed {
        message,
        reason: e.to_string(),
    })?;
    if m.encoded_len() != bytes.len() || m.encode_to_vec() != bytes {
        return Err(CanonicalError::NonCanonical { message });
    }
    Ok(m)
}
