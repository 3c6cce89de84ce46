//! Identifiers: a workflow id chosen by the user, a run id minted by Cairn (UUIDv7, so runs sort
//! by creation time), and an activity id unique within one run.

use crate::limits::{ACTIVITY_ID_BYTES_MAX, WORKFLOW_ID_BYTES_MAX};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} bytes long; the limit is {max} bytes")]
    TooLong {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind} contains a control character at byte {index}; use printable characters")]
    ControlCharacter { kind: &'static str, index: usize },
    #[error("run id {text:?} is not a UUID")]
    RunIdNotUuid { text: String },
    #[error("run id {uuid} is a version {version} UUID; run ids are UUIDv7")]
    RunIdNotV7 { uuid: Uuid, version: usize },
}

fn validate_name(kind: &'static str, text: &str, max: usize) -> Result<(), IdError> {
    if text.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if text.len() > max {
        return Err(IdError::TooLong {
            kind,
            len: text.len(),
            max,
        });
    }
    if let Some((index, _)) = text.char_indices().find(|(_, c)| c.is_control()) {
        return Err(IdError::ControlCharacter { kind, index });
    }
    Ok(())
}

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `text`.
            pub fn new(text: impl Into<String>) -> Result<Self, IdError> {
                let text = text.into();
                validate_name($kind, &text, $max)?;
                Ok(Self(text))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(text: &str) -> Result<Self, IdError> {
                Self::new(text)
            }
        }

        // Deserialization validates too: an id read from an API body or from the store is held
        // to the same rules as one built in code.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::new(text).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_id!(
    /// A workflow id: chosen by the user, unique per namespace among open runs (subject to the
    /// id-reuse policy). At most [`WORKFLOW_ID_BYTES_MAX`] bytes, no control characters.
    ///
    /// # Examples
    /// ```
    /// use cairn_types::WorkflowId;
    /// let id = WorkflowId::new("order-1042").unwrap();
    /// assert_eq!(id.as_str(), "order-1042");
    /// assert!(WorkflowId::new("").is_err());
    /// ```
    WorkflowId,
    "workflow id",
    WORKFLOW_ID_BYTES_MAX
);

name_id!(
    /// An activity id, unique within one run. At most [`ACTIVITY_ID_BYTES_MAX`] bytes.
    ///
    /// # Examples
    /// ```
    /// use cairn_types::ActivityId;
    /// assert!(ActivityId::new("charge-card").is_ok());
    /// assert!(ActivityId::new("tab\there").is_err());
    /// ```
    ActivityId,
    "activity id",
    ACTIVITY_ID_BYTES_MAX
);

/// A run id: one execution of a workflow id. Always a UUIDv7, whose leading 48 bits are the
/// creation time in milliseconds, so run ids sort by age in the store.
///
/// # Examples
/// ```
/// use cairn_types::RunId;
/// let run = RunId::from_parts(1_764_000_000_000, [7; 10]);
/// let text = run.to_string();
/// assert_eq!(text.parse::<RunId>().unwrap(), run);
/// assert!("not-a-uuid".parse::<RunId>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RunId(Uuid);

impl RunId {
    /// Builds a run id from a creation time (Unix milliseconds) and 10 random bytes. The caller
    /// supplies both, so this crate reads neither a clock nor a random source.
    pub fn from_parts(unix_ms: u64, random: [u8; 10]) -> Self {
        let uuid = uuid::Builder::from_unix_timestamp_millis(unix_ms, &random).into_uuid();
        debug_assert_eq!(uuid.get_version_num(), 7);
        Self(uuid)
    }

    /// Wraps a UUID, refusing any version other than 7.
    pub fn from_uuid(uuid: Uuid) -> Result<Self, IdError> {
        let version = uuid.get_version_num();
        if version != 7 {
            return Err(IdError::RunIdNotV7 { uuid, version });
        }
        Ok(Self(uuid))
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The creation time embedded in the id, in Unix milliseconds.
    pub fn unix_ms(&self) -> u64 {
        let b = self.0.as_bytes();
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RunId {
    type Err = IdError;
    fn from_str(text: &str) -> Result<Self, IdError> {
        let uuid = Uuid::parse_str(text).map_err(|_| IdError::RunIdNotUuid {
            text: text.chars().take(64).collect(),
        })?;
        Self::from_uuid(uuid)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let uuid = Uuid::deserialize(deserializer)?;
        Self::from_uuid(uuid).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves every way an id can be malformed is refused with its own error.
    #[test]
    fn malformed_ids_are_refused_with_specific_errors() {
        assert_eq!(
            WorkflowId::new(""),
            Err(IdError::Empty {
                kind: "workflow id"
            })
        );
        let long = "x".repeat(WORKFLOW_ID_BYTES_MAX + 1);
        assert!(matches!(
            WorkflowId::new(long),
            Err(IdError::TooLong { len, max, .. }) if len == max + 1
        ));
        assert!(WorkflowId::new("x".repeat(WORKFLOW_ID_BYTES_MAX)).is_ok());
        assert_eq!(
            ActivityId::new("a\nb"),
            Err(IdError::ControlCharacter {
                kind: "activity id",
                index: 1
            })
        );
        let v4 = Uuid::from_bytes([0x11; 16]);
        assert!(matches!(
            RunId::from_uuid(v4),
            Err(IdError::RunIdNotV7 { .. })
        ));
    }

    /// Proves run ids carry their creation time and sort by it.
    #[test]
    fn run_ids_sort_by_creation_time() {
        let early = RunId::from_parts(1_000, [0xff; 10]);
        let late = RunId::from_parts(2_000, [0x00; 10]);
        assert_eq!(early.unix_ms(), 1_000);
        assert_eq!(late.unix_ms(), 2_000);
        assert!(early < late);
    }

    /// Proves deserialization applies the same validation as construction.
    #[test]
    fn deserialization_validates() {
        let bytes = rmp_serde::to_vec(&"").unwrap();
        assert!(rmp_serde::from_slice::<WorkflowId>(&bytes).is_err());
        let run = RunId::from_parts(5, [1; 10]);
        let bytes = rmp_serde::to_vec(&run).unwrap();
        assert_eq!(rmp_serde::from_slice::<RunId>(&bytes).unwrap(), run);
    }
}
