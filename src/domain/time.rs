//! Timestamps: unix seconds in storage, RFC 3339 UTC with `Z` on the wire.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Seconds since the unix epoch.
pub type Timestamp = i64;

/// The current time in whole seconds.
pub fn now() -> Timestamp {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Format as `2026-11-07T05:31:56Z`.
pub fn rfc3339(ts: Timestamp) -> String {
    OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// Serialize a [`Timestamp`] as RFC 3339 (serde `serialize_with`).
pub fn ser<S: serde::Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ts))
}

/// Serialize an optional [`Timestamp`] as RFC 3339 or `null`.
pub fn ser_opt<S: serde::Serializer>(ts: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match ts {
        Some(t) => s.serialize_str(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_with_z() {
        assert_eq!(super::rfc3339(1_699_335_116), "2023-11-07T05:31:56Z");
    }
}
