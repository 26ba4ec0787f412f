//! Liveness, readiness, version and the OpenAPI document.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::server::AppState;

/// Register the routes (outside `/api/v1`, no auth).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready))
        .route("/version", web::get().to(version))
        .route("/openapi.json", web::get().to(openapi));
}

/// The OpenAPI 3.1 description of every `/api/v1` route.
pub const OPENAPI: &str = include_str!("../../assets/openapi.json");

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let ping = state
        .db
        .read_async(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
        .await;
    match ping {
        Ok(_) => HttpResponse::Ok().json(json!({"status": "ok", "db": "ok"})),
        Err(e) => {
            log::error!("readiness check failed: {e}");
            HttpResponse::ServiceUnavailable().json(json!({"status": "degraded", "db": "error"}))
        }
    }
}

async fn version() -> HttpResponse {
    HttpResponse::Ok().json(json!({"name": "breadbox", "version": env!("CARGO_PKG_VERSION")}))
}
