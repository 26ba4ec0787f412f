//! Hosted-link sessions: the wire shape, the state machine and the create rules.

use serde::{Deserialize, Serialize};

use super::time::{self, Timestamp};

/// A bank-data provider the server can talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Plaid Link.
    Plaid,
    /// Teller Connect.
    Teller,
}

impl Provider {
    /// Every provider, in picker order.
    pub const ALL: [Provider; 2] = [Provider::Plaid, Provider::Teller];

    /// The stored and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Plaid => "plaid",
            Provider::Teller => "teller",
        }
    }

    /// The name shown to people.
    pub fn display_name(self) -> &'static str {
        match self {
            Provider::Plaid => "Plaid",
            Provider::Teller => "Teller",
        }
    }

    /// Parse the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "plaid" => Some(Provider::Plaid),
            "teller" => Some(Provider::Teller),
            _ => None,
        }
    }
}

/// `Option<Provider>` on the wire: `""` means "let the person pick".
pub fn provider_str(p: Option<Provider>) -> &'static str {
    p.map_or("", Provider::as_str)
}

fn ser_provider<S: serde::Serializer>(p: &Option<Provider>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(provider_str(*p))
}

/// What the session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Add new connections.
    Link,
    /// Re-authenticate one existing connection.
    Relink,
}

impl Action {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Link => "link",
            Action::Relink => "relink",
        }
    }

    /// Parse the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "link" => Some(Action::Link),
            "relink" => Some(Action::Relink),
            _ => None,
        }
    }
}

/// A session's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Minted, page not opened yet.
    Pending,
    /// The page loaded the session.
    Active,
    /// The person said "I'm done".
    Completed,
    /// A single-use session linked its connection, or a relink succeeded.
    Consumed,
    /// Canceled or failed.
    Failed,
    /// The TTL ran out before the session ended.
    Expired,
}

impl Status {
    /// Every status, for validating filters.
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Active,
        Status::Completed,
        Status::Consumed,
        Status::Failed,
        Status::Expired,
    ];

    /// The stored and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Active => "active",
            Status::Completed => "completed",
            Status::Consumed => "consumed",
            Status::Failed => "failed",
            Status::Expired => "expired",
        }
    }

    /// Parse the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A terminal session never changes again.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Status::Pending | Status::Active)
    }
}

/// A hosted-link session as stored and as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LinkSession {
    /// UUID.
    pub id: String,
    /// Base62 short id.
    pub short_id: String,
    /// The household member's UUID.
    pub user_id: String,
    /// Pinned provider, or `""` for the picker.
    #[serde(serialize_with = "ser_provider")]
    pub provider: Option<Provider>,
    /// `link` or `relink`.
    pub action: Action,
    /// The connection being re-authenticated (relink only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    /// Burns after the first connection.
    pub single_use: bool,
    /// Where the page sends the person afterwards (`""` when unset).
    pub redirect_url: String,
    /// Free-form label (`""` when unset).
    pub label: String,
    /// Current status (already `expired` once `expires_at` has passed).
    pub status: Status,
    /// Present only when failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Present only when failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Connections added, in order.
    pub result_connection_ids: Vec<String>,
    /// When the link stops working.
    #[serde(serialize_with = "time::ser")]
    pub expires_at: Timestamp,
    /// When the page first loaded the session.
    #[serde(serialize_with = "time::ser_opt")]
    pub started_at: Option<Timestamp>,
    /// When the session ended (not stamped for `expired`).
    #[serde(serialize_with = "time::ser_opt")]
    pub completed_at: Option<Timestamp>,
    /// When it was minted.
    #[serde(serialize_with = "time::ser")]
    pub created_at: Timestamp,
}

impl LinkSession {
    /// The status as of `now`: a live session past its expiry reads `expired`.
    pub fn status_at(&self, now: Timestamp) -> Status {
        effective_status(self.status, self.expires_at, now)
    }

    /// The session as it must be shown at `now`.
    pub fn at(mut self, now: Timestamp) -> Self {
        self.status = self.status_at(now);
        self
    }
}

/// A stored status as of `now`.
pub fn effective_status(stored: Status, expires_at: Timestamp, now: Timestamp) -> Status {
    if !stored.is_terminal() && now >= expires_at {
        Status::Expired
    } else {
        stored
    }
}

/// A state change the server can attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The page loaded the session.
    Open,
    /// A new connection was recorded.
    AddConnection {
        /// Whether the session burns on its first connection.
        single_use: bool,
    },
    /// The relinked connection works again.
    Reauthenticate,
    /// The person said "I'm done".
    Complete,
    /// The agent or the person canceled, or a fatal error.
    Fail,
    /// The sweeper found it past `expires_at`.
    Expire,
}

/// Why a transition cannot happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The session has already ended (this is how it ended).
    Ended(Status),
    /// The session is live but not in a state that allows this.
    WrongState(Status),
}

impl Transition {
    /// States this transition may start from.
    pub fn from_states(self) -> &'static [Status] {
        match self {
            Transition::Open => &[Status::Pending],
            Transition::AddConnection { .. }
            | Transition::Reauthenticate
            | Transition::Complete => &[Status::Active],
            Transition::Fail | Transition::Expire => &[Status::Pending, Status::Active],
        }
    }

    /// The state this transition leads to.
    pub fn to_state(self) -> Status {
        match self {
            Transition::Open => Status::Active,
            Transition::AddConnection { single_use: false } => Status::Active,
            Transition::AddConnection { single_use: true } | Transition::Reauthenticate => {
                Status::Consumed
            }
            Transition::Complete => Status::Completed,
            Transition::Fail => Status::Failed,
            Transition::Expire => Status::Expired,
        }
    }

    /// Decide the transition for a session whose stored status is `stored`.
    /// Pure: the database runs the same rule as a compare-and-set.
    pub fn apply(
        self,
        stored: Status,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<Status, Refusal> {
        let current = effective_status(stored, expires_at, now);
        if self == Transition::Expire {
            return if current == Status::Expired && !stored.is_terminal() {
                Ok(Status::Expired)
            } else if stored.is_terminal() {
                Err(Refusal::Ended(stored))
            } else {
                Err(Refusal::WrongState(current))
            };
        }
        if current.is_terminal() {
            return Err(Refusal::Ended(current));
        }
        if self.from_states().contains(&current) {
            Ok(self.to_state())
        } else {
            Err(Refusal::WrongState(current))
        }
    }

    /// Whether entering the target state stamps `completed_at`.
    pub fn stamps_completed_at(self) -> bool {
        let to = self.to_state();
        to.is_terminal() && to != Status::Expired
    }
}

/// An optional whole number; like JSON Schema's `integer`, `60.0` counts.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error as _;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    // Judge the text, not a rounded float: `60.000` is whole, `1e-9` is not.
    let text = n.to_string();
    let whole = match text.split_once('.') {
        Some((int, frac)) if !frac.is_empty() && frac.bytes().all(|b| b == b'0') => int,
        _ => text.as_str(),
    };
    whole
        .parse::<i64>()
        .map(Some)
        .map_err(|_| D::Error::custom(format!("expected a whole number of seconds, got {text}")))
}

/// The POST /connections/link body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// UUID or short id of the household member.
    pub user_id: String,
    /// `""`, `"plaid"` or `"teller"`.
    #[serde(default)]
    pub provider: Option<String>,
    /// Burn after the first connection.
    #[serde(default)]
    pub single_use: Option<bool>,
    /// Absolute http(s) URL.
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// At most 200 characters.
    #[serde(default)]
    pub label: Option<String>,
    /// 0 or absent = default TTL.
    #[serde(default, deserialize_with = "whole_number")]
    pub expires_in_seconds: Option<i64>,
}

/// The POST /connections/{id}/relink body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelinkRequest {
    /// Absolute http(s) URL.
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// At most 200 characters.
    #[serde(default)]
    pub label: Option<String>,
    /// 0 or absent = default TTL.
    #[serde(default, deserialize_with = "whole_number")]
    pub expires_in_seconds: Option<i64>,
}

/// Server-side limits that apply to new sessions.
#[derive(Debug, Clone)]
pub struct Rules {
    /// TTL used for 0 or absent.
    pub default_ttl: i64,
    /// Largest TTL accepted.
    pub max_ttl: i64,
    /// When non-empty, `redirect_url` must have one of these origins.
    pub allowed_redirect_origins: Vec<String>,
    /// Providers with credentials on this server.
    pub configured: Vec<Provider>,
}

/// A create request that passed validation (the user is not resolved yet).
#[derive(Debug, Clone)]
pub struct ValidCreate {
    /// Pinned provider, if any.
    pub provider: Option<Provider>,
    /// Burn after first connection.
    pub single_use: bool,
    /// `""` when unset.
    pub redirect_url: String,
    /// `""` when unset.
    pub label: String,
    /// Seconds until expiry.
    pub ttl: i64,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// A field's value is not acceptable.
    Field(String),
    /// The pinned provider has no credentials here.
    ProviderNotConfigured(Provider),
}

/// Label length limit, in characters.
pub const MAX_LABEL_CHARS: usize = 200;
/// Redirect URL length limit, in bytes.
pub const MAX_REDIRECT_BYTES: usize = 2048;

impl Rules {
    /// Validate a create body.
    pub fn check_create(&self, req: &CreateRequest) -> Result<ValidCreate, Invalid> {
        let provider = match req.provider.as_deref().unwrap_or("") {
            "" => None,
            other => {
                let p = Provider::parse(other).ok_or_else(|| {
                    Invalid::Field(format!(
                        "provider: must be \"\", \"plaid\" or \"teller\", got {other:?}"
                    ))
                })?;
                if !self.configured.contains(&p) {
                    return Err(Invalid::ProviderNotConfigured(p));
                }
                Some(p)
            }
        };
        Ok(ValidCreate {
            provider,
            single_use: req.single_use.unwrap_or(false),
            redirect_url: self.check_redirect(req.redirect_url.as_deref())?,
            label: check_label(req.label.as_deref())?,
            ttl: self.check_ttl(req.expires_in_seconds)?,
        })
    }

    /// Validate a relink body; the provider comes from the connection.
    pub fn check_relink(&self, req: &RelinkRequest) -> Result<ValidCreate, Invalid> {
        Ok(ValidCreate {
            provider: None,
            single_use: true,
            redirect_url: self.check_redirect(req.redirect_url.as_deref())?,
            label: check_label(req.label.as_deref())?,
            ttl: self.check_ttl(req.expires_in_seconds)?,
        })
    }

    fn check_ttl(&self, ttl: Option<i64>) -> Result<i64, Invalid> {
        match ttl.unwrap_or(0) {
            0 => Ok(self.default_ttl),
            t if (1..=self.max_ttl).contains(&t) => Ok(t),
            t => Err(Invalid::Field(format!(
                "expires_in_seconds: must be between 0 and {}, got {t}",
                self.max_ttl
            ))),
        }
    }

    /// Validate a redirect URL: absolute http(s), no credentials, bounded,
    /// and on the allowlist when one is configured.
    pub fn check_redirect(&self, raw: Option<&str>) -> Result<String, Invalid> {
        let raw = raw.unwrap_or("");
        if raw.is_empty() {
            return Ok(String::new());
        }
        let bad = |why: &str| Invalid::Field(format!("redirect_url: {why}"));
        if raw.len() > MAX_REDIRECT_BYTES {
            return Err(bad("must be at most 2048 bytes"));
        }
        // Browsers silently drop or reinterpret these; refuse rather than guess.
        if raw
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        {
            return Err(bad(
                "must not contain whitespace, control characters or backslashes",
            ));
        }
        let url = url::Url::parse(raw).map_err(|_| bad("must be an absolute http or https URL"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(bad("must be an absolute http or https URL"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not contain credentials"));
        }
        // The raw text must itself start with the scheme, so that what we checked is what
        // a browser resolves (no scheme-relative or oddly cased tricks).
        let lower = raw.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(bad("must be an absolute http or https URL"));
        }
        if !self.allowed_redirect_origins.is_empty() {
            let origin = url.origin().ascii_serialization();
            if !self.allowed_redirect_origins.contains(&origin) {
                return Err(bad(&format!(
                    "origin {origin} is not in [link] allowed_redirect_origins"
                )));
            }
        }
        Ok(raw.to_owned())
    }
}

fn check_label(raw: Option<&str>) -> Result<String, Invalid> {
    let label = raw.unwrap_or("");
    if label.chars().count() > MAX_LABEL_CHARS {
        return Err(Invalid::Field(
            "label: must be at most 200 characters".into(),
        ));
    }
    if label.chars().any(char::is_control) {
        return Err(Invalid::Field(
            "label: must not contain control characters".into(),
        ));
    }
    Ok(label.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = 1_000_000;
    const LATER: Timestamp = NOW + 900;

    fn rules() -> Rules {
        Rules {
            default_ttl: 900,
            max_ttl: 3600,
            allowed_redirect_origins: vec![],
            configured: vec![Provider::Plaid],
        }
    }

    fn req(json: &str) -> CreateRequest {
        serde_json::from_str(json).expect("valid test body")
    }

    #[test]
    fn allowed_transitions() {
        use Status::*;
        let cases = [
            (Transition::Open, Pending, Active),
            (
                Transition::AddConnection { single_use: false },
                Active,
                Active,
            ),
            (
                Transition::AddConnection { single_use: true },
                Active,
                Consumed,
            ),
            (Transition::Reauthenticate, Active, Consumed),
            (Transition::Complete, Active, Completed),
            (Transition::Fail, Pending, Failed),
            (Transition::Fail, Active, Failed),
        ];
        for (t, from, to) in cases {
            assert_eq!(t.apply(from, LATER, NOW), Ok(to), "{t:?} from {from:?}");
        }
        assert_eq!(Transition::Expire.apply(Pending, NOW, NOW), Ok(Expired));
        assert_eq!(Transition::Expire.apply(Active, NOW - 1, NOW), Ok(Expired));
    }

    #[test]
    fn refused_transitions_from_live_states() {
        use Status::*;
        let wrong = [
            (Transition::Open, Active),
            (Transition::AddConnection { single_use: false }, Pending),
            (Transition::AddConnection { single_use: true }, Pending),
            (Transition::Reauthenticate, Pending),
            (Transition::Complete, Pending),
        ];
        for (t, from) in wrong {
            assert_eq!(t.apply(from, LATER, NOW), Err(Refusal::WrongState(from)));
        }
        // Not yet expired: the sweeper must leave it alone.
        assert_eq!(
            Transition::Expire.apply(Active, LATER, NOW),
            Err(Refusal::WrongState(Active))
        );
    }

    #[test]
    fn terminal_states_never_change() {
        let all = [
            Transition::Open,
            Transition::AddConnection { single_use: false },
            Transition::AddConnection { single_use: true },
            Transition::Reauthenticate,
            Transition::Complete,
            Transition::Fail,
            Transition::Expire,
        ];
        for from in [
            Status::Completed,
            Status::Consumed,
            Status::Failed,
            Status::Expired,
        ] {
            for t in all {
                assert_eq!(
                    t.apply(from, LATER, NOW),
                    Err(Refusal::Ended(from)),
                    "{t:?}"
                );
                assert_eq!(
                    t.apply(from, NOW - 5, NOW),
                    Err(Refusal::Ended(from)),
                    "{t:?}"
                );
            }
        }
    }

    #[test]
    fn past_expiry_reads_expired_and_refuses_everything_but_expire() {
        for from in [Status::Pending, Status::Active] {
            for t in [
                Transition::Open,
                Transition::AddConnection { single_use: true },
                Transition::Reauthenticate,
                Transition::Complete,
                Transition::Fail,
            ] {
                assert_eq!(
                    t.apply(from, NOW, NOW),
                    Err(Refusal::Ended(Status::Expired))
                );
            }
        }
    }

    #[test]
    fn completed_at_is_stamped_except_for_expired() {
        assert!(Transition::Complete.stamps_completed_at());
        assert!(Transition::Fail.stamps_completed_at());
        assert!(Transition::Reauthenticate.stamps_completed_at());
        assert!(Transition::AddConnection { single_use: true }.stamps_completed_at());
        assert!(!Transition::AddConnection { single_use: false }.stamps_completed_at());
        assert!(!Transition::Expire.stamps_completed_at());
        assert!(!Transition::Open.stamps_completed_at());
    }

    #[test]
    fn ttl_rules() {
        let r = rules();
        let ttl = |j: &str| r.check_create(&req(j)).map(|v| v.ttl);
        assert_eq!(ttl(r#"{"user_id":"u"}"#), Ok(900));
        assert_eq!(ttl(r#"{"user_id":"u","expires_in_seconds":0}"#), Ok(900));
        assert_eq!(ttl(r#"{"user_id":"u","expires_in_seconds":1}"#), Ok(1));
        assert_eq!(
            ttl(r#"{"user_id":"u","expires_in_seconds":3600}"#),
            Ok(3600)
        );
        assert!(ttl(r#"{"user_id":"u","expires_in_seconds":3601}"#).is_err());
        assert!(ttl(r#"{"user_id":"u","expires_in_seconds":-1}"#).is_err());
        assert_eq!(ttl(r#"{"user_id":"u","expires_in_seconds":60.0}"#), Ok(60));
        assert!(serde_json::from_str::<CreateRequest>(
            r#"{"user_id":"u","expires_in_seconds":1.5}"#
        )
        .is_err());
        assert!(serde_json::from_str::<CreateRequest>(
            r#"{"user_id":"u","expires_in_seconds":"60"}"#
        )
        .is_err());
    }

    #[test]
    fn provider_rules() {
        let r = rules();
        let p = |j: &str| r.check_create(&req(j)).map(|v| v.provider);
        assert_eq!(p(r#"{"user_id":"u","provider":""}"#), Ok(None));
        assert_eq!(
            p(r#"{"user_id":"u","provider":"plaid"}"#),
            Ok(Some(Provider::Plaid))
        );
        assert_eq!(
            p(r#"{"user_id":"u","provider":"teller"}"#),
            Err(Invalid::ProviderNotConfigured(Provider::Teller))
        );
        assert!(matches!(
            p(r#"{"user_id":"u","provider":"mx"}"#),
            Err(Invalid::Field(_))
        ));
    }

    #[test]
    fn redirect_rules() {
        let mut r = rules();
        for ok in [
            "https://example.com/done?x=1",
            "http://localhost:3000/cb",
            "HTTPS://Example.com",
        ] {
            assert!(r.check_redirect(Some(ok)).is_ok(), "{ok}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2048));
        for bad in [
            "javascript:alert(1)",
            "//evil.com",
            "/relative",
            "https://user:pw@example.com/",
            "https://user@example.com/",
            "https:\\\\evil.com",
            " https://example.com",
            "https://exa mple.com",
            "https://example.com/\n",
            "ftp://example.com",
            "data:text/html,hi",
            "https:evil.com",
            long.as_str(),
        ] {
            assert!(r.check_redirect(Some(bad)).is_err(), "{bad:?} accepted");
        }
        r.allowed_redirect_origins = vec!["https://example.com".into()];
        assert!(r.check_redirect(Some("https://example.com/x")).is_ok());
        assert!(r.check_redirect(Some("https://example.com:443/x")).is_ok());
        assert!(r
            .check_redirect(Some("https://example.com.evil.io/x"))
            .is_err());
        assert!(r.check_redirect(Some("http://example.com/x")).is_err());
        assert!(r
            .check_redirect(Some("https://example.com:8443/x"))
            .is_err());
    }

    #[test]
    fn label_rules() {
        let r = rules();
        let ok = format!(r#"{{"user_id":"u","label":"{}"}}"#, "é".repeat(200));
        assert!(r.check_create(&req(&ok)).is_ok());
        let bad = format!(r#"{{"user_id":"u","label":"{}"}}"#, "é".repeat(201));
        assert!(r.check_create(&req(&bad)).is_err());
    }

    #[test]
    fn wire_shape_omits_relink_and_error_fields() {
        let s = LinkSession {
            id: "id".into(),
            short_id: "short".into(),
            user_id: "u".into(),
            provider: None,
            action: Action::Link,
            connection_id: None,
            single_use: false,
            redirect_url: String::new(),
            label: String::new(),
            status: Status::Active,
            error_code: None,
            error_message: None,
            result_connection_ids: vec![],
            expires_at: NOW,
            started_at: None,
            completed_at: None,
            created_at: NOW - 10,
        };
        let v = serde_json::to_value(s.at(NOW)).expect("serializes");
        assert_eq!(v["provider"], "");
        assert_eq!(v["status"], "expired");
        assert!(v.get("connection_id").is_none());
        assert!(v.get("error_code").is_none());
        assert!(v["started_at"].is_null() && v["completed_at"].is_null());
        assert_eq!(v["result_connection_ids"], serde_json::json!([]));
    }
}
