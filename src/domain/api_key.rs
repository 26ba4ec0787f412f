//! API keys: format, scopes, and the stored form.

use serde::{Deserialize, Serialize};

use super::ids;
use super::time::{self, Timestamp};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every GET.
    ReadOnly,
    /// Everything.
    FullAccess,
}

impl Scope {
    /// The stored and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ReadOnly => "read_only",
            Scope::FullAccess => "full_access",
        }
    }

    /// Parse the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read_only" => Some(Scope::ReadOnly),
            "full_access" => Some(Scope::FullAccess),
            _ => None,
        }
    }

    /// Whether a key with this scope may act where `needed` is required.
    pub fn allows(self, needed: Scope) -> bool {
        self == Scope::FullAccess || needed == Scope::ReadOnly
    }
}

/// A plaintext API key. Its `Debug` never shows the value.
pub struct PlainKey(String);

impl PlainKey {
    /// A fresh key: `bb_` + 32 base62 characters (about 190 bits).
    pub fn generate() -> Self {
        PlainKey(format!("bb_{}", ids::random_base62(32)))
    }

    /// Wrap a presented key.
    pub fn from_presented(s: &str) -> Self {
        PlainKey(s.to_owned())
    }

    /// Whether it has the `bb_` + 32 base62 shape.
    pub fn well_formed(&self) -> bool {
        self.0.len() == 35
            && self.0.starts_with("bb_")
            && self.0[3..].bytes().all(|b| b.is_ascii_alphanumeric())
    }

    /// The stored lookup hash.
    pub fn hash(&self) -> String {
        ids::sha256_hex(&self.0)
    }

    /// The display prefix: `bb_` plus the first 6 characters.
    pub fn prefix(&self) -> String {
        self.0.chars().take(9).collect()
    }

    /// The value, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PlainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlainKey([redacted])")
    }
}

/// An API key as listed (never the key itself).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    /// UUID.
    pub id: String,
    /// Base62 short id.
    pub short_id: String,
    /// Human name.
    pub name: String,
    /// `read_only` or `full_access`.
    pub scope: Scope,
    /// `bb_` + first 6 characters.
    pub prefix: String,
    /// Creation time.
    #[serde(serialize_with = "time::ser")]
    pub created_at: Timestamp,
    /// Last use, tracked at most about once a minute.
    #[serde(serialize_with = "time::ser_opt")]
    pub last_used_at: Option<Timestamp>,
    /// When revoked.
    #[serde(serialize_with = "time::ser_opt")]
    pub revoked_at: Option<Timestamp>,
}

/// The POST /api-keys body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// 1–100 characters.
    pub name: String,
    /// `read_only` or `full_access`.
    pub scope: String,
}

impl CreateApiKey {
    /// Validate; the error names the field.
    pub fn validate(&self) -> Result<(String, Scope), String> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err("name: must be 1 to 100 characters, without control characters".into());
        }
        let scope = Scope::parse(&self.scope).ok_or_else(|| {
            format!(
                "scope: must be \"read_only\" or \"full_access\", got {:?}",
                self.scope
            )
        })?;
        Ok((name.to_owned(), scope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed() {
        let k = PlainKey::generate();
        assert!(k.well_formed());
        assert_eq!(k.prefix().len(), 9);
        assert!(k.expose().starts_with(&k.prefix()));
        assert_eq!(format!("{k:?}"), "PlainKey([redacted])");
        assert!(!PlainKey::from_presented("bb_short").well_formed());
    }

    #[test]
    fn scopes() {
        assert!(Scope::FullAccess.allows(Scope::FullAccess));
        assert!(Scope::FullAccess.allows(Scope::ReadOnly));
        assert!(Scope::ReadOnly.allows(Scope::ReadOnly));
        assert!(!Scope::ReadOnly.allows(Scope::FullAccess));
    }
}
