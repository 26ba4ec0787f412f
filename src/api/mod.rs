//! The JSON API under `/api/v1`, plus health and version routes.

pub mod api_keys;
pub mod connections;
pub mod errors;
pub mod health;
pub mod idempotency;
pub mod link_sessions;
pub mod providers;
pub mod users;

use std::sync::OnceLock;

use actix_web::dev::ResourceDef;
use actix_web::http::{header, Method};
use actix_web::{web, FromRequest, Handler, HttpRequest, Responder, Route};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::error::ApiError;

/// Largest accepted request body.
pub const MAX_BODY: usize = 64 * 1024;

/// One `/api/v1` route: method, path (relative to `/api/v1`) and handler.
pub type RouteEntry = (Method, &'static str, Route);

/// A route entry whose method guard is built from `method`.
pub fn route<F, Args>(method: Method, path: &'static str, handler: F) -> RouteEntry
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    (method.clone(), path, web::method(method).to(handler))
}

/// Every `/api/v1` route, in matching order (`/connections/link` before
/// `/connections/{id}`). The OpenAPI test compares this list with the document.
pub fn routes() -> Vec<RouteEntry> {
    let mut all = link_sessions::routes();
    all.extend(connections::routes());
    all.extend(users::routes());
    all.extend(api_keys::routes());
    all.extend(providers::routes());
    all
}

/// Register every `/api/v1` route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let scope = routes()
        .into_iter()
        .fold(web::scope("/api/v1"), |scope, (_, path, route)| {
            scope.route(path, route)
        });
    // Some responses carry a token or a key: no cache may keep any of them.
    let no_store =
        actix_web::middleware::DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store"));
    cfg.service(scope.default_service(web::to(no_route)).wrap(no_store));
}

/// The JSON 404 for unknown routes.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound("route".into()))
}

/// Route patterns with their methods, matched once per process.
fn patterns() -> &'static [(Method, ResourceDef)] {
    static PATTERNS: OnceLock<Vec<(Method, ResourceDef)>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        routes()
            .into_iter()
            .map(|(m, path, _)| (m, ResourceDef::new(format!("/api/v1{path}"))))
            .collect()
    })
}

/// No `/api/v1` route matched: 405 with `Allow` when the path exists under
/// another method, else 404.
async fn no_route(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    let mut allowed: Vec<&str> = patterns()
        .iter()
        .filter(|(_, def)| def.is_match(req.path()))
        .map(|(m, _)| m.as_str())
        .collect();
    if allowed.contains(&"GET") {
        allowed.push("HEAD");
    }
    allowed.sort_unstable();
    allowed.dedup();
    if allowed.is_empty() {
        return Err(ApiError::NotFound("route".into()));
    }
    Err(ApiError::MethodNotAllowed(allowed.join(", ")))
}

fn is_json(req: &HttpRequest) -> bool {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(ct) = ct.to_str() else { return false };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Read a request body of at most [`MAX_BODY`] bytes.
pub async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::InvalidBody(format!("could not read the body: {e}")))?;
            if body.len() + chunk.len() > MAX_BODY {
                return Err(ApiError::PayloadTooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    // The server's request timeout covers only the head; a body that stalls
    // must not hold a connection forever.
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .map_err(|_| ApiError::RequestTimeout)?
}

/// How long a client may take to send its whole body.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Parse a JSON object body into `T`. An empty body is `None` (the caller
/// decides whether that is allowed); anything else must be `application/json`.
pub fn parse_json<T: DeserializeOwned>(
    req: &HttpRequest,
    body: &[u8],
) -> Result<Option<T>, ApiError> {
    let has_ct = req.headers().contains_key(header::CONTENT_TYPE);
    if (!has_ct || is_json(req)) && body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if !is_json(req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidBody(format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::InvalidBody(
            "the body must be a JSON object".into(),
        ));
    }
    serde_path_to_error::deserialize(value)
        .map(Some)
        .map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." {
                ApiError::Validation(inner)
            } else {
                ApiError::Validation(format!("{path}: {inner}"))
            }
        })
}

/// Parse a JSON object body that must be present.
pub fn parse_required_json<T: DeserializeOwned>(
    req: &HttpRequest,
    body: &[u8],
) -> Result<T, ApiError> {
    parse_json(req, body)?
        .ok_or_else(|| ApiError::InvalidBody("a JSON object body is required".into()))
}

/// Read and parse a required JSON object body.
pub async fn required_json<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<T, ApiError> {
    let body = read_body(req, payload).await?;
    parse_required_json(req, &body)
}

/// Read and parse an optional JSON object body (empty = default).
pub async fn optional_json<T: DeserializeOwned + Default>(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<T, ApiError> {
    let body = read_body(req, payload).await?;
    Ok(parse_json(req, &body)?.unwrap_or_default())
}

/// Parse a query string into `T`, answering 400 `VALIDATION_ERROR` on failure.
pub fn parse_query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::Validation(format!("query: {e}")))
}

/// The query of a paginated timeline: `limit` and `cursor` (checked by
/// [`crate::app::paging`]); any other parameter is a validation error.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size as given, 1–200.
    pub limit: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// A path `{id}`: UUID or short id, else 404.
pub fn entity_ref(raw: &str, what: &str) -> Result<crate::domain::ids::EntityRef, ApiError> {
    crate::app::entity_ref(raw, what)
}

/// `scheme://host[:port]` (no trailing slash) that links are built on:
/// `server.public_url` when set, else the request's scheme and `Host` (the
/// `X-Forwarded-*` headers only when `server.trust_forwarded_headers`).
pub fn public_base(state: &AppState, req: &HttpRequest) -> String {
    if let Some(base) = state.config.server.public_base() {
        return base;
    }
    let headers = req.headers();
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_owned())
    };
    let trust = state.config.server.trust_forwarded_headers;
    let scheme = trust
        .then(|| first("x-forwarded-proto"))
        .flatten()
        // A URI scheme is case-insensitive (RFC 3986 §3.1): HTTPS is https.
        .map(|s| s.to_ascii_lowercase())
        .filter(|s| s == "http" || s == "https")
        .unwrap_or_else(|| "http".to_owned());
    let host = trust
        .then(|| first("x-forwarded-host"))
        .flatten()
        .or_else(|| first("host"))
        .filter(|h| valid_host(h))
        .unwrap_or_else(|| state.config.server.listen.to_string());
    format!("{scheme}://{host}")
}

/// A Host header value safe to put in a URL: name or address, optional port.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert!(valid_host("example.com:8080"));
        assert!(valid_host("[::1]:80"));
        assert!(!valid_host("evil.com/path"));
        assert!(!valid_host("a b"));
        assert!(!valid_host(""));
    }
}
