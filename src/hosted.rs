//! The hosted page `/link/{token}` and its JSON calls under `/_link/{token}/…`.
//! The path token is the credential; its state is checked before anything else.

use actix_web::http::{header, StatusCode};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::{optional_json, required_json};
use crate::app::AppState;
use crate::db::link_sessions::{self as store, Change};
use crate::db::{connections, events, users};
use crate::domain::ids::{self, EntityRef};
use crate::domain::link_session::{Action, LinkSession, Provider, Status, Transition};
use crate::domain::time::{self, Timestamp};
use crate::error::ApiError;

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

/// Look the token up; unknown → `None`. No database work for a malformed
/// token. A client that guessed too many unknown tokens is refused (429)
/// whatever it presents, until its bucket refills.
async fn lookup(
    state: &AppState,
    req: &HttpRequest,
    token: &str,
) -> Result<Option<LinkSession>, ApiError> {
    let ip = state.limits.client_ip(req);
    if let Some(wait) = state.limits.token_locked(ip) {
        return Err(ApiError::RateLimited(wait));
    }
    let found = if ids::is_link_token(token) {
        let hash = ids::sha256_hex(token);
        state
            .db
            .read_async(move |c| store::get_by_token_hash(c, &hash))
            .await?
    } else {
        None
    };
    if found.is_none() {
        if let Some(wait) = state.limits.unknown_token(ip) {
            return Err(ApiError::RateLimited(wait));
        }
    }
    Ok(found)
}

/// The token gate for `/_link`: a live session, or the error its state calls for.
async fn gate(state: &AppState, req: &HttpRequest, token: &str) -> Result<LinkSession, ApiError> {
    let session = lookup(state, req, token)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    let now = time::now();
    let status = session.status_at(now);
    if status.is_terminal() {
        return Err(ApiError::ended(status));
    }
    Ok(session.at(now))
}

async fn page(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let session = match lookup(&state, &req, &path).await {
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
    let text = match session.status_at(time::now()) {
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

async fn unknown_call(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    gate(&state, &req, &path).await?;
    Err(ApiError::NotFound("page call".into()))
}

/// What `GET /_link/{token}/session` returns (no user or connection ids).
#[derive(Serialize)]
struct PageSession {
    id: String,
    short_id: String,
    /// The member's name only, so a forwarded link is noticed.
    for_name: String,
    provider: &'static str,
    action: Action,
    single_use: bool,
    label: String,
    redirect_url: String,
    status: Status,
    result_connection_ids: Vec<String>,
    connections: Vec<connections::Summary>,
    #[serde(serialize_with = "time::ser")]
    expires_at: Timestamp,
    #[serde(serialize_with = "time::ser_opt")]
    started_at: Option<Timestamp>,
}

async fn get_session(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut session = gate(&state, &req, &path).await?;
    // HEAD answers like GET but never starts the session (CONTRACT §4).
    if session.status == Status::Pending && !crate::hygiene::is_head(&req) {
        match apply(&state, &session.id, Transition::Open, Change::default()).await {
            Ok(s) => session = s,
            // Another tab opened it first: read it again through the gate.
            Err(ApiError::InvalidState(_)) => session = gate(&state, &req, &path).await?,
            Err(e) => return Err(e),
        }
    }
    let ids = session.result_connection_ids.clone();
    let member = EntityRef::Uuid(session.user_id.clone());
    let (conns, user) = state
        .db
        .read_async(move |c| Ok((connections::summaries(c, &ids)?, users::get(c, &member)?)))
        .await?;
    Ok(HttpResponse::Ok().json(PageSession {
        id: session.id,
        short_id: session.short_id,
        for_name: user.map(|u| u.name).unwrap_or_default(),
        provider: crate::domain::link_session::provider_str(session.provider),
        action: session.action,
        single_use: session.single_use,
        label: session.label,
        redirect_url: session.redirect_url,
        status: session.status,
        result_connection_ids: session.result_connection_ids,
        connections: conns,
        expires_at: session.expires_at,
        started_at: session.started_at,
    }))
}

/// `GET /_link/{token}/qr.svg`: a QR code of the page's own URL, so a person
/// on a computer can continue on the phone where their banking app is.
async fn get_qr(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let token = path.into_inner();
    gate(&state, &req, &token).await?;
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

/// Providers this session may use: configured here, and the pinned one only.
pub fn allowed_providers(state: &AppState, session: &LinkSession) -> Vec<Provider> {
    state
        .rules
        .configured
        .iter()
        .copied()
        .filter(|p| session.provider.is_none_or(|pinned| pinned == *p))
        .collect()
}

async fn get_providers(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let session = gate(&state, &req, &path).await?;
    let list: Vec<_> = allowed_providers(&state, &session)
        .into_iter()
        .map(|p| json!({"name": p.as_str(), "display_name": p.display_name()}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "providers": list })))
}

async fn post_start(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (token, name) = path.into_inner();
    let session = gate(&state, &req, &token).await?;
    let provider = Provider::parse(&name).ok_or_else(|| ApiError::NotFound("provider".into()))?;
    let _: Empty = optional_json(&req, payload).await?;
    Ok(HttpResponse::Ok().json(crate::app::bank::start(&state, &session, provider).await?))
}

async fn post_connection(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let session = gate(&state, &req, &path).await?;
    let add: crate::app::bank::AddConnection = required_json(&req, payload).await?;
    Ok(
        match crate::app::bank::add_connection(&state, &session, add).await? {
            crate::app::bank::AddOutcome::Added(added) => HttpResponse::Created().json(json!({
                "connection_id": added.connection.id,
                "short_id": added.connection.short_id,
                "institution_name": added.connection.institution_name,
                "session_status": added.session.status,
                "accounts": added.connection.accounts,
            })),
            // §10: the member already has this bank; nothing new was stored.
            crate::app::bank::AddOutcome::Duplicate(dup) => HttpResponse::Ok().json(json!({
                "duplicate": true,
                "connection_id": dup.connection.id,
                "institution_name": dup.connection.institution_name,
                "session_status": dup.session_status,
            })),
        },
    )
}

async fn post_reauth_complete(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let session = gate(&state, &req, &path).await?;
    let _: Empty = optional_json(&req, payload).await?;
    crate::app::bank::reauth_complete(&state, &session).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WidgetEvent {
    #[serde(rename = "type")]
    kind: String,
    provider: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn bounded(field: &str, v: Option<String>, max: usize) -> Result<String, ApiError> {
    let v = v.unwrap_or_default();
    if v.chars().count() > max {
        return Err(ApiError::Validation(format!(
            "{field}: must be at most {max} characters"
        )));
    }
    Ok(v)
}

async fn post_event(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let session = gate(&state, &req, &path).await?;
    let ev: WidgetEvent = required_json(&req, payload).await?;
    let kind = match ev.kind.as_str() {
        "exit" => "widget.exit",
        "error" => "widget.error",
        other => {
            return Err(ApiError::Validation(format!(
                "type: must be \"exit\" or \"error\", got {other:?}"
            )))
        }
    };
    let provider = Provider::parse(&ev.provider).ok_or_else(|| {
        ApiError::Validation(format!(
            "provider: must be \"plaid\" or \"teller\", got {:?}",
            ev.provider
        ))
    })?;
    let detail = json!({
        "provider": provider.as_str(),
        "code": bounded("code", ev.code, 100)?,
        "message": bounded("message", ev.message, 500)?,
    });
    let id = session.id;
    state
        .db
        .write_checked_async(move |tx| {
            let kinds = ["widget.exit", "widget.error"];
            if events::count_capped(tx, &id, &kinds, MAX_WIDGET_EVENTS)? >= MAX_WIDGET_EVENTS {
                return Ok(Err(ApiError::TooManyEvents(MAX_WIDGET_EVENTS)));
            }
            events::insert(tx, &id, kind, time::now(), &detail).map(Ok)
        })
        .await??;
    Ok(HttpResponse::NoContent().finish())
}

/// Most widget events (`exit`, `error`) one session records: a person retries
/// a handful of times; a script posting in a loop must not fill the disk
/// (issue 8, "bounded input").
pub const MAX_WIDGET_EVENTS: u32 = 200;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn post_cancel(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let session = gate(&state, &req, &path).await?;
    let body: CancelBody = optional_json(&req, payload).await?;
    let reason = bounded("reason", body.reason, 200)?;
    let mut detail = serde_json::Map::new();
    detail.insert("by".into(), json!("person"));
    let message = if reason.is_empty() {
        "the person declined".to_owned()
    } else {
        reason
    };
    let change = crate::api::link_sessions::failure("USER_CANCELED", message, detail);
    apply(&state, &session.id, Transition::Fail, change).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Empty {}

async fn post_complete(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let session = gate(&state, &req, &path).await?;
    let _: Empty = optional_json(&req, payload).await?;
    apply(&state, &session.id, Transition::Complete, Change::default()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Run a transition as one compare-and-set; wake waiters and webhooks on
/// success, or answer the error the session's state calls for.
pub async fn apply(
    state: &AppState,
    session_id: &str,
    t: Transition,
    change: Change,
) -> Result<LinkSession, ApiError> {
    let id = session_id.to_owned();
    let emit = state.db.emit();
    let s = state
        .db
        .write_async(move |tx| store::transition(tx, &id, t, change, time::now(), emit))
        .await?
        .map_err(ApiError::from_refusal)?;
    state.changed(&s.id);
    Ok(s)
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
