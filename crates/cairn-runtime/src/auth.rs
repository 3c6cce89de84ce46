//! The bearer-token check both of a node's APIs apply: the HTTP API (`cairn-server`) and
//! Temporal's gRPC API (`cairn-temporal`). Pure byte comparisons; imports nothing of the crate.

/// Whether an `Authorization` header value carries `token` as its bearer credentials (scheme
/// in any case), compared in constant time.
pub fn bearer_matches(authorization: Option<&[u8]>, token: &[u8]) -> bool {
    authorization
        .and_then(bearer_credentials)
        .is_some_and(|given| constant_time_eq(given, token))
}

/// The credentials of an `Authorization: Bearer <credentials>` value (scheme in any case).
fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || value.get(6) != Some(&b' ') {
        return None;
    }
    let credentials = value[7..].trim_ascii();
    (!credentials.is_empty()).then_some(credentials)
}

/// Equality whose time depends only on the lengths, not on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Schemes in any case, surrounding spaces, other schemes and empty credentials, and
    /// equality of unequal lengths.
    #[test]
    fn bearer_headers_parse() {
        assert_eq!(bearer_credentials(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"bEaReR abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"Basic abc"), None);
        assert_eq!(bearer_credentials(b"Bearer "), None);
        assert_eq!(bearer_credentials(b"Bearerabc"), None);
        assert!(bearer_matches(Some(b"bearer s3cret"), b"s3cret"));
        assert!(!bearer_matches(Some(b"bearer s3cre"), b"s3cret"));
        assert!(!bearer_matches(None, b"s3cret"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
