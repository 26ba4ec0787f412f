//! HTTP side of `Idempotency-Key`: read the header into an
//! [`IdemKey`](crate::app::idempotency::IdemKey) and answer a
//! [`Reply`](crate::app::idempotency::Reply) as is. The store-and-replay core
//! is [`crate::app::idempotency`].

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};

use crate::app::idempotency::{IdemKey, Reply};
use crate::error::ApiError;

/// Read the `Idempotency-Key` header (1–255 printable ASCII characters);
/// the fingerprint covers method, path and body.
pub fn from_request(req: &HttpRequest, body: &[u8]) -> Result<Option<IdemKey>, ApiError> {
    let Some(raw) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let raw = raw.to_str().map_err(|_| {
        ApiError::Validation("Idempotency-Key: must be 1 to 255 printable ASCII characters".into())
    })?;
    IdemKey::new(raw, req.method().as_str(), req.path(), body).map(Some)
}

/// The reply as an HTTP response: its status and exact JSON text.
pub fn respond(reply: Reply) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK))
        .content_type("application/json")
        .body(reply.body)
}
