//! The one error type of the operations layer. Each front-end maps it to its
//! wire form: `api::errors` to an HTTP status and the JSON envelope
//! `{"error":{"code","message"}}`, `mcp` to a tool error with the same code
//! and message, the CLI to an exit code.

use crate::db::DbError;
use crate::domain::link_session::{Invalid, Refusal, Status};

/// Every error the HTTP API can answer with.
#[derive(Debug)]
pub enum ApiError {
    /// 400: body is not JSON or not an object.
    InvalidBody(String),
    /// 400: a field or parameter is missing, of the wrong type or value.
    Validation(String),
    /// 400: the pinned provider has no credentials here.
    ProviderNotConfigured(String),
    /// 401: no API key presented.
    MissingCredentials,
    /// 401: the key is unknown.
    InvalidApiKey,
    /// 401: the key was revoked.
    RevokedApiKey,
    /// 401: unknown hosted-link token.
    InvalidToken,
    /// 403: the key's scope is too small.
    InsufficientScope,
    /// 403: the session's provider or action does not allow this.
    Forbidden(String),
    /// 404: no such entity.
    NotFound(String),
    /// 405: the path exists with these methods only.
    MethodNotAllowed(String),
    /// 409: the entity's state does not allow this.
    InvalidState(String),
    /// 409: relink of a disconnected connection.
    ConnectionDisconnected,
    /// 409: the idempotency key was used with another body.
    IdempotencyConflict,
    /// 409: a collection holds the most entries this server keeps.
    LimitReached(String),
    /// 410: the session expired.
    Expired,
    /// 410: the session was used up.
    Consumed,
    /// 410: the session failed.
    Gone,
    /// 408: the body did not arrive in time.
    RequestTimeout,
    /// 413: body over 64 KiB.
    PayloadTooLarge,
    /// 415: not `application/json`.
    UnsupportedMediaType,
    /// 429: slow down; seconds until a retry can succeed.
    RateLimited(u64),
    /// 429: the session used up its widget events or provider attempts (no
    /// retry helps).
    TooManyEvents(u32),
    /// 502: the provider failed; its display message when it has one.
    /// Trying again may help (`"retryable": true`).
    Provider(String),
    /// 502: the provider refused in a way trying again cannot fix (our own
    /// credentials, an unsupported institution or product): `"retryable": false`.
    ProviderFinal(String),
    /// 500: the detail is logged, never sent.
    Internal(String),
}

impl ApiError {
    /// The `UPPER_SNAKE` code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidBody(_) => "INVALID_BODY",
            ApiError::Validation(_) => "VALIDATION_ERROR",
            ApiError::ProviderNotConfigured(_) => "PROVIDER_NOT_CONFIGURED",
            ApiError::MissingCredentials => "MISSING_CREDENTIALS",
            ApiError::InvalidApiKey => "INVALID_API_KEY",
            ApiError::RevokedApiKey => "REVOKED_API_KEY",
            ApiError::InvalidToken => "INVALID_TOKEN",
            ApiError::InsufficientScope => "INSUFFICIENT_SCOPE",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            ApiError::InvalidState(_) => "INVALID_STATE",
            ApiError::ConnectionDisconnected => "CONNECTION_DISCONNECTED",
            ApiError::IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
            ApiError::LimitReached(_) => "LIMIT_REACHED",
            ApiError::Expired => "EXPIRED",
            ApiError::Consumed => "CONSUMED",
            ApiError::Gone => "GONE",
            ApiError::RequestTimeout => "REQUEST_TIMEOUT",
            ApiError::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ApiError::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::RateLimited(_) => "RATE_LIMITED",
            ApiError::TooManyEvents(_) => "TOO_MANY_EVENTS",
            ApiError::Provider(_) | ApiError::ProviderFinal(_) => "PROVIDER_ERROR",
            ApiError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// The human message sent to the client.
    pub fn message(&self) -> String {
        match self {
            ApiError::InvalidBody(m)
            | ApiError::Validation(m)
            | ApiError::Forbidden(m)
            | ApiError::InvalidState(m)
            | ApiError::LimitReached(m)
            | ApiError::Provider(m)
            | ApiError::ProviderFinal(m) => m.clone(),
            ApiError::ProviderNotConfigured(p) => {
                format!("provider {p} is not configured on this server")
            }
            ApiError::NotFound(what) => format!("{what} not found"),
            ApiError::MethodNotAllowed(allowed) => format!("this path allows {allowed}"),
            ApiError::MissingCredentials => {
                "send an API key in the X-API-Key header (or Authorization: Bearer)".into()
            }
            ApiError::InvalidApiKey => "the API key is not valid".into(),
            ApiError::RevokedApiKey => "the API key was revoked".into(),
            ApiError::InvalidToken => "this link isn't valid".into(),
            ApiError::InsufficientScope => {
                "this API key is read_only; this call needs full_access".into()
            }
            ApiError::ConnectionDisconnected => {
                "the connection is disconnected; create a new link instead".into()
            }
            ApiError::IdempotencyConflict => {
                "this Idempotency-Key was already used with a different request".into()
            }
            ApiError::Expired => "this link has expired; ask for a new one".into(),
            ApiError::Consumed => "this link was already used".into(),
            ApiError::Gone => "this link is no longer active".into(),
            ApiError::RequestTimeout => "the request body did not arrive in time".into(),
            ApiError::PayloadTooLarge => "the request body is larger than 64 KiB".into(),
            ApiError::UnsupportedMediaType => "send the body as application/json".into(),
            ApiError::RateLimited(s) => format!("too many requests; retry after {s}s"),
            ApiError::TooManyEvents(cap) => format!(
                "this link has reached its limit of {cap} attempts; ask the person who sent it \
                 for a new one"
            ),
            ApiError::Internal(_) => "internal error".into(),
        }
    }

    /// A 410 for a session that has ended in `status`, or 409 for a live one
    /// in the wrong state.
    pub fn from_refusal(r: Refusal) -> Self {
        match r {
            Refusal::Ended(s) => Self::ended(s),
            Refusal::WrongState(s) => {
                ApiError::InvalidState(format!("the session is {}", s.as_str()))
            }
        }
    }

    /// The 410 matching a terminal status.
    pub fn ended(status: Status) -> Self {
        match status {
            Status::Expired => ApiError::Expired,
            Status::Completed | Status::Consumed => ApiError::Consumed,
            _ => ApiError::Gone,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        match e {
            Invalid::Field(m) => ApiError::Validation(m),
            Invalid::ProviderNotConfigured(p) => ApiError::ProviderNotConfigured(p.as_str().into()),
        }
    }
}
