//! Streamable HTTP at `/mcp` (rmcp-actix-web), behind the same API-key
//! authentication as `/api/v1`: no key → 401 with the JSON envelope, before
//! rmcp sees the request. The authenticated [`Caller`] travels to the tools
//! in the request's extensions.
//!
//! Host check: rmcp's default allow-list accepts only loopback `Host`
//! headers (against DNS rebinding). Breadbox is reached under whatever name
//! the household gives it (`public_url`, a LAN name), and every `/mcp`
//! request must carry an API key that a rebinding page cannot know, so the
//! check is turned off here (an empty list) and authentication does the job.

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{HttpServiceFactory, Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, FromRequest as _, HttpMessage as _, ResponseError as _};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp_actix_web::transport::StreamableHttpService;

use super::{Breadbox, Caller};
use crate::app::AppState;
use crate::auth::Auth;

/// The MCP session table, shared by every worker of one server.
pub fn sessions() -> Arc<LocalSessionManager> {
    Arc::new(LocalSessionManager::default())
}

/// The `/mcp` scope for one worker of the app.
pub fn service(
    state: &web::Data<AppState>,
    sessions: Arc<LocalSessionManager>,
) -> impl HttpServiceFactory {
    let shared: Arc<AppState> = state.clone().into_inner();
    StreamableHttpService::builder()
        .service_factory(Arc::new(move || Ok(Breadbox::http(shared.clone()))))
        .session_manager(sessions)
        .allowed_hosts(Vec::new())
        .on_request_fn(|req, ext| {
            if let Some(c) = req.extensions().get::<Caller>() {
                ext.insert(c.clone());
            }
        })
        .build()
        .scope_with_path("/mcp")
        .wrap(from_fn(authenticate))
        .wrap(from_fn(no_store))
}

/// Tool results carry link tokens and URLs: nothing may keep any response
/// (rmcp's own `no-cache` on event streams is tightened to `no-store`).
async fn no_store(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut res = next.call(req).await?;
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(res)
}

/// Authenticate like `/api/v1` (`X-API-Key` or `Authorization: Bearer`,
/// rate limits included) and record the [`Caller`].
async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let auth = Auth::from_request(req.request(), &mut Payload::None).await;
    match auth {
        Err(e) => Ok(req.into_response(e.error_response()).map_into_right_body()),
        Ok(auth) => {
            let public_base = match req.app_data::<web::Data<AppState>>() {
                Some(state) => crate::api::public_base(state, req.request()),
                None => String::new(),
            };
            req.extensions_mut().insert(Caller {
                key: auth.key,
                public_base,
            });
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
    }
}
