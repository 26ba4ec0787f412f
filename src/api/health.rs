//! Liveness, readiness, version and the OpenAPI document.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::app::AppState;

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

/// 200 while the database answers reads and writes; 503 with the reason
/// (disk full, read-only, damaged file…) while it does not. At most one
/// probe write a second, whatever the polling rate.
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let now = crate::domain::time::now();
    if state.db.claim_write_probe(now) {
        // A failure is recorded by the writer as the write fault, read below.
        let _ = state
            .db
            .write_async(move |tx| crate::db::meta::write_probe(tx, now))
            .await;
    }
    let read = state.db.read_async(crate::db::meta::ping).await;
    let reason = match (read, state.db.write_fault()) {
        (Ok(()), None) => {
            return HttpResponse::Ok().json(json!({"status": "ok", "db": "ok"}));
        }
        (Err(e), _) => format!("the database cannot be read ({e})"),
        (Ok(()), Some(fault)) => fault,
    };
    log::error!("not ready: {reason}");
    HttpResponse::ServiceUnavailable().json(json!({
        "status": "degraded",
        "db": "error",
        "reason": reason,
    }))
}

async fn version() -> HttpResponse {
    HttpResponse::Ok().json(json!({"name": "breadbox", "version": env!("CARGO_PKG_VERSION")}))
}
