//! Identifiers and bearer secrets: UUIDs, base62 short ids, link tokens.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The base62 alphabet used by short ids and API keys.
pub const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Fill `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) {
    // The OS generator failing means the machine cannot produce secrets at all;
    // continuing would be worse than stopping.
    getrandom::fill(buf).expect("the OS random number generator failed");
}

/// `n` uniformly random base62 characters (rejection sampling, no modulo bias).
pub fn random_base62(n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        random_bytes(&mut buf);
        for &b in &buf {
            // 248 = 4 * 62: bytes at or above it would favour the first characters.
            if b < 248 {
                out.push(BASE62[usize::from(b % 62)] as char);
                if out.len() == n {
                    break;
                }
            }
        }
    }
    out
}

/// A new lowercase hyphenated UUID v4.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A new 8-character short id.
pub fn new_short_id() -> String {
    random_base62(8)
}

/// True when `s` looks like a short id (8 base62 characters).
pub fn is_short_id(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A path `{id}` parameter: either a UUID or a short id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityRef {
    /// Canonical lowercase hyphenated UUID.
    Uuid(String),
    /// Base62 short id.
    Short(String),
}

impl EntityRef {
    /// Parse a UUID (any case, normalised) or short id; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        if is_short_id(s) {
            return Some(Self::Short(s.to_owned()));
        }
        uuid::Uuid::try_parse(s)
            .ok()
            .map(|u| Self::Uuid(u.hyphenated().to_string()))
    }
}

/// A hosted-link bearer token: 16 random bytes, unpadded base64url.
pub fn new_link_token() -> String {
    let mut raw = [0u8; 16];
    random_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// True when `s` has the shape of a link token (22 base64url characters).
pub fn is_link_token(s: &str) -> bool {
    s.len() == 22
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Lowercase hex SHA-256, the only form in which tokens and keys are stored.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_are_base62_of_length_8() {
        for _ in 0..200 {
            let s = new_short_id();
            assert!(is_short_id(&s), "{s}");
        }
    }

    #[test]
    fn base62_is_roughly_uniform() {
        let mut counts = [0u32; 62];
        let s = random_base62(62 * 2000);
        for b in s.bytes() {
            let i = BASE62.iter().position(|&c| c == b).expect("alphabet");
            counts[i] += 1;
        }
        // Expected 2000 each; a modulo bias of 256 % 62 would show as ~25% skew.
        assert!(
            counts.iter().all(|&c| (1700..2300).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn link_tokens_are_22_chars_and_distinct() {
        let a = new_link_token();
        let b = new_link_token();
        assert!(is_link_token(&a) && is_link_token(&b));
        assert_ne!(a, b);
    }

    #[test]
    fn entity_refs() {
        assert_eq!(
            EntityRef::parse("AbCd1234"),
            Some(EntityRef::Short("AbCd1234".into()))
        );
        assert_eq!(
            EntityRef::parse("6F9619FF-8B86-D011-B42D-00CF4FC964FF"),
            Some(EntityRef::Uuid(
                "6f9619ff-8b86-d011-b42d-00cf4fc964ff".into()
            ))
        );
        assert_eq!(EntityRef::parse("nope!"), None);
        assert_eq!(EntityRef::parse(""), None);
    }

    #[test]
    fn sha256_is_lower_hex() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
