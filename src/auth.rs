//! API-key authentication: the extractor and the scope check.

use std::future::Future;
use std::pin::Pin;

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};

use crate::app::AppState;
use crate::domain::api_key::{ApiKey, PlainKey, Scope};
use crate::error::ApiError;

/// The authenticated caller of an `/api/v1` route.
#[derive(Debug, Clone)]
pub struct Auth {
    /// The key that was presented.
    pub key: ApiKey,
}

impl Auth {
    /// Fail with 403 unless the key's scope allows `needed`.
    pub fn require(&self, needed: Scope) -> Result<(), ApiError> {
        crate::app::require(&self.key, needed)
    }
}

/// The key presented in `X-API-Key` or `Authorization: Bearer`.
pub fn presented_key(req: &HttpRequest) -> Option<String> {
    if let Some(v) = req.headers().get("x-api-key") {
        return v.to_str().ok().map(|s| s.trim().to_owned());
    }
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim().to_owned())
}

/// A presented key, checked for shape and rate limits but not looked up
/// yet: handlers on hot paths look it up in the same database call as their
/// own read (see [`Presented::accept`]).
pub struct Presented {
    state: web::Data<AppState>,
    ip: std::net::IpAddr,
    raw: Option<String>,
}

impl Presented {
    /// The stored hash to look the key up by, or why there is nothing to look up.
    pub fn hash(&self) -> Result<String, ApiError> {
        if let Some(wait) = self.state.limits.api_key_locked(self.ip) {
            return Err(ApiError::RateLimited(wait));
        }
        let raw = self
            .raw
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::MissingCredentials)?;
        let plain = PlainKey::from_presented(raw);
        if !plain.well_formed() {
            return Err(self.refuse(ApiError::InvalidApiKey));
        }
        Ok(plain.hash())
    }

    /// A wrong key counts against the client; too many and it waits.
    fn refuse(&self, e: ApiError) -> ApiError {
        match self.state.limits.bad_api_key(self.ip) {
            Some(wait) => ApiError::RateLimited(wait),
            None => e,
        }
    }

    /// Judge what the look-up found.
    pub fn accept(&self, found: Option<ApiKey>) -> Result<Auth, ApiError> {
        let key = found.ok_or_else(|| self.refuse(ApiError::InvalidApiKey))?;
        if key.revoked_at.is_some() {
            return Err(self.refuse(ApiError::RevokedApiKey));
        }
        if let Some(wait) = self.state.limits.api_request(&key.id) {
            return Err(ApiError::RateLimited(wait));
        }
        crate::app::api_keys::record_use(&self.state, &key);
        Ok(Auth { key })
    }
}

impl FromRequest for Presented {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        std::future::ready(match state {
            Some(state) => Ok(Presented {
                ip: state.limits.client_ip(req),
                raw: presented_key(req),
                state,
            }),
            None => Err(ApiError::Internal("no app state".into())),
        })
    }
}

impl FromRequest for Auth {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let presented = Presented::from_request(req, payload).into_inner();
        Box::pin(async move {
            let presented = presented?;
            let hash = presented.hash()?;
            let found = presented
                .state
                .db
                .read_async(move |c| crate::db::api_keys::find_by_hash(c, &hash))
                .await?;
            presented.accept(found)
        })
    }
}
