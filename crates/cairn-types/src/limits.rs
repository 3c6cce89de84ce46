//! Named limits shared by every layer. Units are part of each name.
//!
//! Store limits (key, value, transaction size and age) are FoundationDB's and live in
//! `cairn-store`; the limits here are the ones the engine and its users see.

/// Longest workflow id, in UTF-8 bytes. Ids become store keys, so they must stay far below the
/// store's 10,000-byte key limit even after tuple encoding and a subspace prefix.
pub const WORKFLOW_ID_BYTES_MAX: usize = 1_000;

/// Longest timeout of any kind (a workflow's execution or run, an activity's), in
/// milliseconds: a hundred years. Longer is a mistake (`u64::MAX` ms), and would overflow the
/// time arithmetic of the timers it arms.
pub const TIMEOUT_MS_MAX: u64 = 100 * 365 * 24 * 3_600_000;

/// Longest activity id, in UTF-8 bytes.
pub const ACTIVITY_ID_BYTES_MAX: usize = 1_000;

/// Longest workflow or activity type name given at registration.
pub const TYPE_NAME_BYTES_MAX: usize = 256;

/// Largest encoded payload (workflow input, activity result, signal argument), in bytes.
/// Larger than one store value (100,000 bytes): what the engine stores in a history event is
/// bounded by [`INLINE_PAYLOAD_BYTES_MAX`] instead.
pub const PAYLOAD_BYTES_MAX: usize = 2 * 1024 * 1024;

/// Largest payload the engine stores inline, in one history event or mailbox entry: workflow
/// and child inputs, results, activity inputs and results, signal arguments, heartbeat
/// details, and the whole of a failure. It leaves room for the event around it in a
/// 100,000-byte store value. Larger payloads are refused at their source with this limit in
/// the error (an activity's or a workflow's result fails it, as `PayloadTooLarge`).
pub const INLINE_PAYLOAD_BYTES_MAX: usize = 90_000;

/// Longest error-type name in a retry policy's non-retryable list, in UTF-8 bytes.
pub const ERROR_TYPE_BYTES_MAX: usize = 256;

/// Deepest cause chain a failure keeps (`Failure::cause`); deeper links are dropped, and the
/// last one kept says how many.
pub const FAILURE_CAUSES_MAX: usize = 16;

/// Most entries in a retry policy's non-retryable error list.
pub const NON_RETRYABLE_ERROR_TYPES_MAX: usize = 64;

/// History length at which a run is told to continue as new
/// (`continue_as_new_suggested`), and a warning is logged.
pub const HISTORY_EVENTS_SUGGEST_CONTINUE: u64 = 10_240;
/// History size, in encoded bytes, at which a run is told to continue as new.
pub const HISTORY_BYTES_SUGGEST_CONTINUE: u64 = 10 * 1024 * 1024;
/// History length past which a run is terminated (its history would grow without bound).
pub const HISTORY_EVENTS_MAX: u64 = 51_200;
/// History size, in encoded bytes, past which a run is terminated.
pub const HISTORY_BYTES_MAX: u64 = 50 * 1024 * 1024;

/// Longest custom search attribute name, in bytes.
pub const SEARCH_ATTRIBUTE_NAME_BYTES_MAX: usize = 64;
/// Largest one search attribute value (a keyword list counts all its keywords), in bytes.
pub const SEARCH_ATTRIBUTE_VALUE_BYTES_MAX: usize = 2_048;
/// Most custom search attributes on one workflow.
pub const SEARCH_ATTRIBUTES_MAX: usize = 64;
/// Largest set of custom search attributes of one workflow, names included, in bytes. They
/// live in the workflow's visibility record, which must stay well under one store value.
pub const SEARCH_ATTRIBUTES_BYTES_MAX: usize = 40_000;

/// Longest update id, in UTF-8 bytes (Temporal's id limit). Every update a run accepted is
/// kept in its snapshot by id, for deduplication.
pub const UPDATE_ID_BYTES_MAX: usize = 1_000;
/// Longest update name, in UTF-8 bytes.
pub const UPDATE_NAME_BYTES_MAX: usize = 256;
/// Most updates of one run admitted or accepted but not completed (Temporal's
/// `history.maxInFlightUpdates`): one more is refused until one completes.
pub const UPDATES_IN_FLIGHT_MAX: usize = 10;
/// Most distinct updates one run takes in its life (Temporal's `history.maxTotalUpdates`):
/// past it, new update ids are refused; the workflow should continue as new.
pub const UPDATES_TOTAL_MAX: usize = 2_000;

const _: () = assert!(WORKFLOW_ID_BYTES_MAX < 10_000);
const _: () = assert!(INLINE_PAYLOAD_BYTES_MAX < 100_000);
const _: () = assert!(INLINE_PAYLOAD_BYTES_MAX < PAYLOAD_BYTES_MAX);
const _: () = assert!(HISTORY_EVENTS_SUGGEST_CONTINUE < HISTORY_EVENTS_MAX);
const _: () = assert!(HISTORY_BYTES_SUGGEST_CONTINUE < HISTORY_BYTES_MAX);
const _: () = assert!(SEARCH_ATTRIBUTES_BYTES_MAX < 100_000);
const _: () = assert!(ACTIVITY_ID_BYTES_MAX < 10_000);

/// Most fields in one workflow's memo.
pub const MEMO_FIELDS_MAX: usize = 64;
/// Longest memo key, in bytes.
pub const MEMO_KEY_BYTES_MAX: usize = 256;
/// Largest memo of one workflow, keys and encoded values included, in bytes. It lives in the
/// workflow's visibility record next to its search attributes.
pub const MEMO_BYTES_MAX: usize = 32_000;

const _: () = assert!(SEARCH_ATTRIBUTES_BYTES_MAX + MEMO_BYTES_MAX < 90_000);
