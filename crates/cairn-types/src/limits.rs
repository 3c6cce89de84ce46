//! Named limits shared by every layer. Units are part of each name.
//!
//! Store limits (key, value, transaction size and age) are FoundationDB's and live in
//! `cairn-store`; the limits here are the ones the engine and its users see.

/// Longest workflow id, in UTF-8 bytes. Ids become store keys, so they must stay far below the
/// store's 10,000-byte key limit even after tuple encoding and a subspace prefix.
pub const WORKFLOW_ID_BYTES_MAX: usize = 1_000;

/// Longest activity id, in UTF-8 bytes.
pub const ACTIVITY_ID_BYTES_MAX: usize = 1_000;

/// Largest encoded payload (workflow input, activity result, signal argument), in bytes.
/// Larger than one store value (100,000 bytes): the engine chunks payloads across keys.
pub const PAYLOAD_BYTES_MAX: usize = 2 * 1024 * 1024;

/// Longest error-type name in a retry policy's non-retryable list, in UTF-8 bytes.
pub const ERROR_TYPE_BYTES_MAX: usize = 256;

/// Most entries in a retry policy's non-retryable error list.
pub const NON_RETRYABLE_ERROR_TYPES_MAX: usize = 64;

const _: () = assert!(WORKFLOW_ID_BYTES_MAX < 10_000);
const _: () = assert!(ACTIVITY_ID_BYTES_MAX < 10_000);
