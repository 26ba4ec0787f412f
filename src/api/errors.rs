//! HTTP wire form of [`ApiError`]: status code, headers and the JSON
//! envelope `{"error":{"code","message"}}`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::error::ApiError;

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidBody(_)
            | ApiError::Validation(_)
            | ApiError::ProviderNotConfigured(_) => StatusCode::BAD_REQUEST,
            ApiError::MissingCredentials
            | ApiError::InvalidApiKey
            | ApiError::RevokedApiKey
            | ApiError::InvalidToken => StatusCode::UNAUTHORIZED,
            ApiError::InsufficientScope | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::InvalidState(_)
            | ApiError::ConnectionDisconnected
            | ApiError::IdempotencyConflict
            | ApiError::LimitReached(_) => StatusCode::CONFLICT,
            ApiError::Expired | ApiError::Consumed | ApiError::Gone => StatusCode::GONE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited(_) | ApiError::TooManyEvents(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Provider(_) | ApiError::ProviderFinal(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(detail) = self {
            log::error!("internal error: {detail}");
        }
        let mut res = HttpResponse::build(self.status_code());
        match self {
            ApiError::RateLimited(secs) => {
                res.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            ApiError::MethodNotAllowed(allowed) => {
                res.insert_header((header::ALLOW, allowed.clone()));
            }
            _ => {}
        }
        match self {
            ApiError::Provider(_) | ApiError::ProviderFinal(_) => res.json(json!({"error": {
                "code": self.code(),
                "message": self.message(),
                "retryable": matches!(self, ApiError::Provider(_)),
            }})),
            _ => res.json(json!({"error": {"code": self.code(), "message": self.message()}})),
        }
    }
}
