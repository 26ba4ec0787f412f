//! `GET /api/v1/providers`: the providers configured on this server, so an
//! agent can tell before minting whether a link can work at all (CONTRACT §4).

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{route, RouteEntry};
use crate::app::{configured_providers, provider_environment, AppState};
use crate::auth::Auth;

/// The routes of this module.
pub fn routes() -> Vec<RouteEntry> {
    vec![route(Method::GET, "/providers", list_providers)]
}

/// `{"providers":[{"name","display_name","environment"}]}`, Plaid first.
async fn list_providers(_auth: Auth, state: web::Data<AppState>) -> HttpResponse {
    let list: Vec<_> = configured_providers(&state.config)
        .into_iter()
        .map(|p| {
            json!({
                "name": p.as_str(),
                "display_name": p.display_name(),
                "environment": provider_environment(&state.config, p),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({ "providers": list }))
}
