//! The hosted page `/link/{token}` and its JSON calls under `/_link/{token}/…`.
//! The path token is the credential; its state is checked before anything
//! else, by the [`LiveSession`] extractor. The operations are in
//! [`crate::app::page`]; this module parses requests, calls them, and renders
//! the answers (HTML pages, headers, rate-limit answers).

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::api::{optional_json, required_json};
use crate::app::bank::AddOutcome;
use crate::app::page::{self, LiveSession};
use crate::app::AppState;
use crate::domain::link_session::{Provider, Status};
use crate::error::ApiError;

pub use crate::app::page::MAX_WIDGET_EVENTS;

const PAGE_HTML: &str = include_str!("../assets/link.html");
const MESSAGE_HTML: &str = include_str!("../assets/message.html");
const PAGE_CSS: &str = include_str!("../assets/link.css");
const PAGE_JS: &str = include_str!("../assets/link.js");

/// Content-Security-Policy of the page: our own files plus exactly the
/// provider origins their widgets need.
pub const CSP: &str = "default-src 'none'; \
    script-src 'self' https://cdn.plaid.com https://cdn.teller.io; \
    style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; \
    connect-src 'self' https://production.plaid.com https://sandbox.plaid.com; \
    frame-src https://cdn.plaid.com https://teller.io; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Headers every `/link/*` and `/_link/*` response carries.
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CACHE_CONTROL, "no-store"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add(("X-Robots-Tag", "noindex"))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::CONTENT_SECURITY_POLICY, CSP))
        .add((header::X_FRAME_OPTIONS, "DENY"))
}

/// Register the page, its assets and its JSON calls.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/assets")
            .wrap(
                DefaultHeaders::new()
                    .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                    .add((header::CACHE_CONTROL, "public, max-age=300")),
            )
            .route(
                "/link.css",
                web::get().to(|| asset(PAGE_CSS, "text/css; charset=utf-8")),
            )
            .route(
                "/link.js",
                web::get().to(|| asset(PAGE_JS, "text/javascript; charset=utf-8")),
            ),
    )
    .service(
        web::scope("/link")
            .wrap(security_headers())
            .route("/{token}", web::get().to(page))
            .default_service(web::to(|| async {
                message_page(StatusCode::NOT_FOUND, NOT_VALID)
            })),
    )
    .service(
        web::scope("/_link/{token}")
            .wrap(security_headers())
            .route("/session", web::get().to(get_session))
            .route("/qr.svg", web::get().to(get_qr))
            .route("/providers", web::get().to(get_providers))
            .route("/providers/{name}/start", web::post().to(post_start))
            .route("/connections", web::post().to(post_connection))
            .route("/reauth-complete", web::post().to(post_reauth_complete))
            .route("/events", web::post().to(post_event))
            .route("/cancel", web::post().to(post_cancel))
            .route("/complete", web::post().to(post_complete))
            .default_service(web::to(unknown_call)),
    );
}

/// Serve the link page at the path of `[plaid] redirect_uri`: Plaid sends
/// the person back there after an OAuth bank, and the page resumes the
/// session it kept in the browser (same headers as `/link`).
pub fn configure_oauth_return(cfg: &mut web::ServiceConfig, path: &str) {
    // Rendered once: the asset links rewritten for this path's depth.
    let html = web::Data::new(page_html_at(path));
    cfg.service(
        web::resource(path)
            .app_data(html)
            .wrap(security_headers())
            .route(web::get().to(oauth_return_page)),
    );
}

async fn oauth_return_page(html: web::Data<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(html.get_ref().clone())
}

async fn asset(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok().content_type(content_type).body(body)
}

const NOT_VALID: (&str, &str) = (
    "This link isn't valid",
    "Part of it may be missing. Open the whole link from the message you were sent, \
     or ask the person who sent it for a new one.",
);

/// Escape text placed in element content (the template has no attribute slots).
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn message_page(status: StatusCode, (title, message): (&str, &str)) -> HttpResponse {
    let body = MESSAGE_HTML
        .replace("{{title}}", &html_escape(title))
        .replace("{{message}}", &html_escape(message));
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body)
}

/// The token gate as an extractor: a handler that takes a [`LiveSession`]
/// runs only for a live session's token; otherwise the client gets the
/// error the token's state calls for.
impl FromRequest for LiveSession {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .cloned()
                .ok_or_else(|| ApiError::Internal("no application state".into()))?;
            let token = req.match_info().get("token").unwrap_or_default();
            page::live(&state, state.limits.client_ip(&req), token).await
        })
    }
}

async fn page(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let ip = state.limits.client_ip(&req);
    let status = match page::status(&state, ip, &path).await {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(message_page(StatusCode::NOT_FOUND, NOT_VALID)),
        Err(ApiError::RateLimited(wait)) => {
            let mut res = message_page(
                StatusCode::TOO_MANY_REQUESTS,
                (
                    "Please wait a minute",
                    "This device tried too many links that don't work. \
                     Wait a minute, then open your link again.",
                ),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(wait));
            return Ok(res);
        }
        Err(e) => return Err(e),
    };
    let text = match status {
        Status::Pending | Status::Active => {
            return Ok(HttpResponse::Ok()
                .content_type("text/html; charset=utf-8")
                .body(PAGE_HTML));
        }
        Status::Expired => (
            "This link has expired",
            "For your safety, links only work for a short time. \
             Ask the person who sent it for a new one.",
        ),
        Status::Completed | Status::Consumed => (
            "This link was already used",
            "Your bank was already connected with it, so there is nothing more to do. \
             You can close this window.",
        ),
        Status::Failed => (
            "This link is no longer active",
            "It was stopped before a bank was connected. If you still want to connect \
             a bank, ask the person who sent it for a new link.",
        ),
    };
    Ok(message_page(StatusCode::GONE, text))
}

async fn unknown_call(_: LiveSession) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("page call".into()))
}

async fn get_session(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    session: LiveSession,
) -> Result<HttpResponse, ApiError> {
    let ip = state.limits.client_ip(&req);
    // HEAD answers like GET but never starts the session (CONTRACT §4).
    let start = !crate::hygiene::is_head(&req);
    Ok(HttpResponse::Ok().json(page::open(&state, ip, &path, session, start).await?))
}

/// `GET /_link/{token}/qr.svg`: a QR code of the page's own URL, so a person
/// on a computer can continue on the phone where their banking app is.
async fn get_qr(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    _: LiveSession,
) -> Result<HttpResponse, ApiError> {
    let token = path.into_inner();
    let url = format!("{}/link/{token}", crate::api::public_base(&state, &req));
    let svg = qr_svg(&url).ok_or_else(|| ApiError::Internal("QR code: URL too long".into()))?;
    Ok(HttpResponse::Ok()
        .content_type("image/svg+xml; charset=utf-8")
        .body(svg))
}

/// `text` as a black-on-white QR code in SVG, with the standard 4-module
/// quiet zone; `None` when it does not fit in a QR code.
pub fn qr_svg(text: &str) -> Option<String> {
    use std::fmt::Write as _;
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let width = code.width();
    let size = width + 8;
    let mut path = String::new();
    for (i, color) in code.to_colors().iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let _ = write!(path, "M{} {}h1v1h-1z", i % width + 4, i / width + 4);
        }
    }
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" \
         shape-rendering=\"crispEdges\">\
         <rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/>\
         <path fill=\"#000\" d=\"{path}\"/></svg>"
    ))
}

/// The page's HTML for serving at another path (the Plaid OAuth return page,
/// `[plaid] redirect_uri`): its `../assets/` links rewritten so they reach
/// `/assets/` from `request_path`, wherever the server is mounted.
pub fn page_html_at(request_path: &str) -> String {
    // Directories between the root and the page: "/plaid/oauth" → 1.
    let depth = request_path.trim_start_matches('/').matches('/').count();
    let up = if depth == 0 {
        "./".to_owned()
    } else {
        "../".repeat(depth)
    };
    PAGE_HTML.replace("\"../assets/", &format!("\"{up}assets/"))
}

async fn get_providers(
    state: web::Data<AppState>,
    session: LiveSession,
) -> Result<HttpResponse, ApiError> {
    let list: Vec<_> = page::allowed_providers(&state, &session)
        .into_iter()
        .map(|p| json!({"name": p.as_str(), "display_name": p.display_name()}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "providers": list })))
}

async fn post_start(
    state: web::Data<AppState>,
    req: HttpRequest,
    session: LiveSession,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (_, name) = path.into_inner();
    let provider = Provider::parse(&name).ok_or_else(|| ApiError::NotFound("provider".into()))?;
    let _: Empty = optional_json(&req, payload).await?;
    Ok(HttpResponse::Ok().json(page::start(&state, &session, provider).await?))
}

async fn post_connection(
    state: web::Data<AppState>,
    req: HttpRequest,
    session: LiveSession,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let add = required_json(&req, payload).await?;
    Ok(match page::add_connection(&state, &session, add).await? {
        AddOutcome::Added(added) => HttpResponse::Created().json(json!({
            "connection_id": added.connection.id,
            "short_id": added.connection.short_id,
            "institution_name": added.connection.institution_name,
            "session_status": added.session.status,
            "accounts": added.connection.accounts,
        })),
        // §10: the member already has this bank; nothing new was stored.
        AddOutcome::Duplicate(dup) => HttpResponse::Ok().json(json!({
            "duplicate": true,
            "connection_id": dup.connection.id,
            "institution_name": dup.connection.institution_name,
            "session_status": dup.session_status,
        })),
    })
}

async fn post_reauth_complete(
    state: web::Data<AppState>,
    req: HttpRequest,
    session: LiveSession,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let _: Empty = optional_json(&req, payload).await?;
    page::reauth_complete(&state, &session).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn post_event(
    state: web::Data<AppState>,
    req: HttpRequest,
    session: LiveSession,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let ev = required_json(&req, payload).await?;
    page::record_event(&state, &session, ev).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn post_cancel(
    state: web::Data<AppState>,
    req: HttpRequest,
    session: LiveSession,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: CancelBody = optional_json(&req, payload).await?;
    page::cancel(&state, &session, body.reason).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Empty {}

async fn post_complete(
    state: web::Data<AppState>,
    req: HttpRequest,
    session: LiveSession,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let _: Empty = optional_json(&req, payload).await?;
    page::complete(&state, &session).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_svg_draws_modules_inside_a_quiet_zone() {
        let svg = qr_svg("http://127.0.0.1:8080/link/AAAAAAAAAAAAAAAAAAAAAA").expect("fits");
        assert!(svg.starts_with("<svg "), "{svg}");
        // 49 bytes at level M: version 4 (33 modules) plus 4 on each side.
        assert!(svg.contains("viewBox=\"0 0 41 41\""), "{svg}");
        assert!(
            svg.contains("M4 4h1v1h-1z"),
            "the finder pattern starts at the quiet zone"
        );
        assert!(qr_svg(&"x".repeat(8000)).is_none());
    }

    #[test]
    fn page_html_at_reaches_the_assets_from_any_depth() {
        assert!(page_html_at("/plaid/oauth").contains("\"../assets/link.js\""));
        assert!(page_html_at("/oauth").contains("\"./assets/link.js\""));
        assert!(page_html_at("/a/b/return").contains("\"../../assets/link.css\""));
        assert!(!page_html_at("/a/b/return").contains("\"../assets/"));
    }
}
