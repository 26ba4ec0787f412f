//! Pagination shared by every paginated list (CONTRACT §4): `limit` 1–200
//! (default 50) and an opaque `cursor` that is the `next_cursor` of the
//! previous page. A cursor names its list (a prefix inside the base64), so
//! one list's cursor is refused by another.

use base64::Engine as _;

use crate::error::ApiError;

/// Which list a cursor belongs to.
#[derive(Debug, Clone, Copy)]
pub struct CursorKind(&'static str);

/// The link-session list (newest first).
pub const SESSIONS: CursorKind = CursorKind("ls1:");
/// A link session's audit timeline (oldest first).
pub const SESSION_EVENTS: CursorKind = CursorKind("ev1:");
/// A connection's health timeline (oldest first).
pub const CONNECTION_EVENTS: CursorKind = CursorKind("ce1:");

impl CursorKind {
    /// The opaque cursor for the row at `seq`.
    pub fn encode(self, seq: i64) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}{seq}", self.0))
    }

    /// The row position a cursor of this kind names, or `None`.
    pub fn decode(self, raw: &str) -> Option<i64> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        text.strip_prefix(self.0)?.parse().ok()
    }

    /// `cursor` as given by a client: absent or empty (as a client building
    /// URLs may send it) is no cursor; anything not issued for this list is
    /// a 400 `VALIDATION_ERROR`.
    pub fn parse(self, cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
        cursor
            .filter(|c| !c.is_empty())
            .map(|c| {
                self.decode(c)
                    .ok_or_else(|| ApiError::Validation("cursor: not a valid cursor".into()))
            })
            .transpose()
    }
}

/// `limit`: 1 to 200, default 50; anything else is a 400 `VALIDATION_ERROR`.
pub fn parse_limit(limit: Option<&str>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(50),
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| ApiError::Validation(format!("limit: must be 1 to 200, got {l:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_belong_to_one_list() {
        assert_eq!(SESSIONS.decode(&SESSIONS.encode(42)), Some(42));
        assert_eq!(SESSION_EVENTS.decode(&SESSIONS.encode(42)), None);
        assert_eq!(CONNECTION_EVENTS.decode(&SESSION_EVENTS.encode(7)), None);
        assert_eq!(SESSIONS.decode("nope"), None);
        assert_eq!(SESSIONS.parse(Some("")).ok(), Some(None));
        assert!(SESSIONS.parse(Some("nope")).is_err());
        assert_eq!(parse_limit(None).ok(), Some(50));
        assert!(parse_limit(Some("0")).is_err() && parse_limit(Some("201")).is_err());
    }
}
