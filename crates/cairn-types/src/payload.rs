//! `Payload`: user data (inputs, results, signal arguments) as MessagePack bytes.
//!
//! MessagePack with named fields (`rmp_serde::to_vec_named`) is the one codec: compact, typed
//! enough for Rust, and convertible to JSON at the HTTP edge without knowing the Rust type.

use crate::limits::PAYLOAD_BYTES_MAX;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Why a payload could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    #[error("value could not be encoded as MessagePack: {source}")]
    Encode {
        #[source]
        source: rmp_serde::encode::Error,
    },
    #[error("payload does not decode as {type_name}: {source}")]
    Decode {
        type_name: &'static str,
        #[source]
        source: rmp_serde::decode::Error,
    },
    #[error("payload is {len} bytes; the limit is {max} bytes")]
    TooLarge { len: usize, max: usize },
}

/// Temporal payloads kept exactly as a Temporal worker made them: what Cairn stores (as a
/// MessagePack map with the one key `$temporal_payloads`) when converting them to one value
/// would not give back the same bytes. [`Payload::decode`] reads one kept `json/plain`
/// payload from its JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExactPayloads {
    #[serde(rename = "$temporal_payloads")]
    pub payloads: Vec<ExactPayload>,
}

/// One Temporal payload of [`ExactPayloads`]: its metadata and data, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExactPayload {
    pub metadata: std::collections::BTreeMap<String, Vec<u8>>,
    pub data: Vec<u8>,
}

/// Encoded user data.
///
/// # Examples
/// ```
/// use cairn_types::Payload;
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Order { id: u64, item: String }
///
/// let order = Order { id: 7, item: "lamp".into() };
/// let payload = Payload::encode(&order).unwrap();
/// assert_eq!(payload.decode::<Order>().unwrap(), order);
/// assert!(payload.decode::<Vec<u8>>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Payload {
    #[serde(with = "serde_bytes_compat")]
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.bytes.len())
    }
}

impl Payload {
    /// Encodes `value`, refusing results over [`PAYLOAD_BYTES_MAX`].
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, PayloadError> {
        let bytes =
            rmp_serde::to_vec_named(value).map_err(|source| PayloadError::Encode { source })?;
        Self::from_bytes(bytes)
    }

    /// Wraps bytes that are already MessagePack (for example, read from the store or an API
    /// body), refusing more than [`PAYLOAD_BYTES_MAX`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, PayloadError> {
        if bytes.len() > PAYLOAD_BYTES_MAX {
            return Err(PayloadError::TooLarge {
                len: bytes.len(),
                max: PAYLOAD_BYTES_MAX,
            });
        }
        Ok(Self { bytes })
    }

    /// Decodes into `T`; a mismatch names the type it was asked for.
    ///
    /// A payload a Temporal worker made that Cairn keeps exactly (one `json/plain` payload
    /// whose bytes MessagePack could not reproduce, see [`ExactPayloads`]) decodes from its
    /// JSON.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        rmp_serde::from_slice(&self.bytes).or_else(|source| {
            self.exact_json()
                .and_then(|json| serde_json::from_slice(&json).ok())
                .ok_or(PayloadError::Decode {
                    type_name: std::any::type_name::<T>(),
                    source,
                })
        })
    }

    /// The JSON of a payload kept exactly that holds one `json/plain` Temporal payload.
    fn exact_json(&self) -> Option<Vec<u8>> {
        let kept: ExactPayloads = rmp_serde::from_slice(&self.bytes).ok()?;
        let [one] = <[ExactPayload; 1]>::try_from(kept.payloads).ok()?;
        (one.metadata.get("encoding").map(Vec::as_slice) == Some(b"json/plain".as_slice()))
            .then_some(one.data)
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Length of the encoded bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True for a zero-length payload (which no `encode` produces).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Serializes the bytes as a MessagePack binary (not an array of integers), without pulling in
/// the `serde_bytes` crate for two functions.
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the size limit is enforced on encode and on raw bytes, at the exact boundary.
    #[test]
    fn payload_limit_is_enforced_at_the_boundary() {
        assert!(Payload::from_bytes(vec![0; PAYLOAD_BYTES_MAX]).is_ok());
        assert!(matches!(
            Payload::from_bytes(vec![0; PAYLOAD_BYTES_MAX + 1]),
            Err(PayloadError::TooLarge { len, .. }) if len == PAYLOAD_BYTES_MAX + 1
        ));
        let big = "x".repeat(PAYLOAD_BYTES_MAX);
        assert!(matches!(
            Payload::encode(&big),
            Err(PayloadError::TooLarge { .. })
        ));
    }

    /// Proves a payload nested in a record survives a MessagePack round trip as a binary.
    #[test]
    fn payload_round_trips_inside_a_record() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Envelope {
            input: Payload,
        }
        let envelope = Envelope {
            input: Payload::encode(&("a", 1u8)).unwrap(),
        };
        let bytes = rmp_serde::to_vec_named(&envelope).unwrap();
        let back: Envelope = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, envelope);
        assert_eq!(
            back.input.decode::<(String, u8)>().unwrap(),
            ("a".into(), 1)
        );
    }
}
