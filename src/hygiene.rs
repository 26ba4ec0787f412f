//! HTTP hygiene on every route (CONTRACT §4 "HTTP hygiene"): `HEAD` answers
//! wherever `GET` does, and a trailing slash is not a different resource.
//!
//! Written here rather than taken from a crate: actix's `NormalizePath`
//! serves `/link/<token>/` in place, which breaks the page's relative asset
//! URLs, and nothing in actix answers `HEAD` on `GET` routes.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, HttpResponse};

/// Marks a request that arrived as `HEAD` and is being served as `GET`:
/// handlers with a side effect on `GET` (the page's first `session` call)
/// look for it and skip the side effect.
#[derive(Debug, Clone, Copy)]
pub struct HeadRequest;

/// True when `req` arrived as `HEAD`.
pub fn is_head(req: &actix_web::HttpRequest) -> bool {
    req.extensions().contains::<HeadRequest>()
}

/// Redirect (308, method and body kept) a path with a trailing slash to the
/// same path without it; serve `HEAD` as `GET` (the HTTP/1 codec remembers
/// the request was `HEAD` and sends the headers, `Content-Length` included,
/// without the body).
pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if let Some(location) = canonical_location(req.path(), req.query_string()) {
        // Behind a proxy that serves us under a path (`public_url` =
        // `https://host/breadbox`), the redirect must stay under it.
        let prefix = req
            .app_data::<actix_web::web::Data<crate::app::AppState>>()
            .and_then(|s| s.config.server.public_url.as_ref())
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let location = format!("{prefix}{location}");
        let res = HttpResponse::PermanentRedirect()
            .insert_header((header::LOCATION, location))
            .finish();
        return Ok(req.into_response(res).map_into_right_body());
    }
    if req.method() == Method::HEAD {
        req.head_mut().method = Method::GET;
        req.extensions_mut().insert(HeadRequest);
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// Where a path with trailing slashes lives: the same path without them, one
/// leading slash (so `//host/` can never become a protocol-relative URL),
/// and the query kept. `None` when the path is already canonical.
fn canonical_location(path: &str, query: &str) -> Option<String> {
    if path.len() <= 1 || !path.ends_with('/') {
        return None;
    }
    let mut location = format!("/{}", path.trim_matches('/'));
    if !query.is_empty() {
        location.push('?');
        location.push_str(query);
    }
    Some(location)
}

#[cfg(test)]
mod tests {
    use super::canonical_location;

    #[test]
    fn trailing_slashes_redirect_to_one_local_path() {
        assert_eq!(canonical_location("/api/v1/users", ""), None);
        assert_eq!(canonical_location("/", ""), None);
        assert_eq!(
            canonical_location("/api/v1/users/", "limit=1"),
            Some("/api/v1/users?limit=1".into())
        );
        assert_eq!(
            canonical_location("/link/abc//", ""),
            Some("/link/abc".into())
        );
        assert_eq!(
            canonical_location("//evil.example/", ""),
            Some("/evil.example".into())
        );
        assert_eq!(canonical_location("///", ""), Some("/".into()));
    }
}
