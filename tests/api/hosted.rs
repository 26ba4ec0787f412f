//! The hosted page and its `/_link/{token}` calls.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, with_plaid, Resp, TestApp};

fn token(s: &Value) -> String {
    s["token"].as_str().unwrap_or("").to_owned()
}

fn assert_page_headers(r: &Resp) {
    assert_eq!(r.header("cache-control"), "no-store");
    assert_eq!(r.header("referrer-policy"), "no-referrer");
    assert_eq!(r.header("x-robots-tag"), "noindex");
    assert_eq!(r.header("x-content-type-options"), "nosniff");
    let csp = r.header("content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        csp.contains("script-src 'self' https://cdn.plaid.com https://cdn.teller.io;"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-eval") && !csp.contains('*'), "{csp}");
    let script_src = csp
        .split(';')
        .find(|d| d.trim().starts_with("script-src"))
        .unwrap_or("");
    assert!(!script_src.contains("unsafe-inline"), "{csp}");
}

async fn events(app: &TestApp, id: &Value) -> Vec<String> {
    let r = app
        .get(&format!(
            "/api/v1/connections/link/{}/events",
            id.as_str().unwrap_or("")
        ))
        .await;
    r.json["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect()
}

#[actix_web::test]
async fn page_for_a_live_token_without_the_token_in_it() {
    let app = spawn_app().await;
    let s = app.mint(json!({})).await;
    let t = token(&s);
    let r = app.page_get(&format!("/link/{t}")).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/html"));
    assert!(!r.text.contains(&t));
    assert!(r.text.contains("../assets/link.js"));
    assert_page_headers(&r);
    // Fetching the HTML does not start the session.
    let got = app
        .get(&format!(
            "/api/v1/connections/link/{}",
            s["id"].as_str().unwrap_or("")
        ))
        .await;
    assert_eq!(got.json["status"], "pending");

    let css = app.page_get("/assets/link.css").await;
    assert_eq!(
        (css.status, css.header("content-type")),
        (200, "text/css; charset=utf-8")
    );
    let js = app.page_get("/assets/link.js").await;
    assert_eq!(
        (js.status, js.header("content-type")),
        (200, "text/javascript; charset=utf-8")
    );
}

#[actix_web::test]
async fn dead_links_get_friendly_pages() {
    let app = spawn_app().await;
    let r = app.page_get("/link/AAAAAAAAAAAAAAAAAAAAAA").await;
    assert_eq!(r.status, 404);
    assert!(r.text.contains("isn't valid"), "{}", r.text);
    assert_page_headers(&r);
    assert_eq!(app.page_get("/link/short").await.status, 404);

    let expired = app.mint(json!({})).await;
    app.expire_now(expired["id"].as_str().unwrap_or(""));
    let r = app.page_get(&format!("/link/{}", token(&expired))).await;
    assert_eq!(r.status, 410);
    assert!(r.text.contains("expired"), "{}", r.text);
    assert_page_headers(&r);

    let done = app.mint(json!({})).await;
    let t = token(&done);
    app.page_get(&format!("/_link/{t}/session")).await;
    assert_eq!(
        app.page_post(&format!("/_link/{t}/complete"), None)
            .await
            .status,
        204
    );
    let r = app.page_get(&format!("/link/{t}")).await;
    assert_eq!(r.status, 410);
    assert!(r.text.contains("already used"), "{}", r.text);

    let failed = app.mint(json!({})).await;
    let t = token(&failed);
    assert_eq!(
        app.page_post(&format!("/_link/{t}/cancel"), None)
            .await
            .status,
        204
    );
    let r = app.page_get(&format!("/link/{t}")).await;
    assert_eq!(r.status, 410);
    assert!(r.text.contains("no longer active"), "{}", r.text);
}

#[actix_web::test]
async fn session_call_starts_the_session_once() {
    let app = spawn_app().await;
    let s = app
        .mint(json!({"label": "Joint account", "redirect_url": "https://example.com/x"}))
        .await;
    let t = token(&s);
    let first = app.page_get(&format!("/_link/{t}/session")).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_page_headers(&first);
    let v = &first.json;
    assert_eq!(v["status"], "active");
    assert_eq!(v["label"], "Joint account");
    assert_eq!(v["redirect_url"], "https://example.com/x");
    assert_eq!(v["connections"], json!([]));
    assert!(v.get("user_id").is_none() && v.get("connection_id").is_none());
    for k in [
        "id",
        "short_id",
        "provider",
        "action",
        "single_use",
        "result_connection_ids",
        "expires_at",
        "started_at",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    let started = v["started_at"].clone();
    assert!(started.is_string());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second = app.page_get(&format!("/_link/{t}/session")).await;
    assert_eq!(
        second.json["started_at"], started,
        "started_at is stamped once"
    );
    let api = app
        .get(&format!(
            "/api/v1/connections/link/{}",
            s["id"].as_str().unwrap_or("")
        ))
        .await;
    assert_eq!(api.json["status"], "active");
    assert_eq!(api.json["started_at"], started);
    assert_eq!(
        events(&app, &s["id"]).await,
        ["session.created", "session.opened"]
    );
}

#[actix_web::test]
async fn providers_lists_configured_and_allowed_ones() {
    let app = spawn_app().await;
    let s = app.mint(json!({})).await;
    let r = app
        .page_get(&format!("/_link/{}/providers", token(&s)))
        .await;
    assert_eq!(r.json, json!({"providers": []}));

    let app = spawn_app_with(|c| {
        with_plaid(c);
        c.teller.application_id = Some("app_test".into());
    })
    .await;
    let s = app.mint(json!({})).await;
    let r = app
        .page_get(&format!("/_link/{}/providers", token(&s)))
        .await;
    assert_eq!(
        r.json,
        json!({"providers": [{"name": "plaid", "display_name": "Plaid"}, {"name": "teller", "display_name": "Teller"}]})
    );
    let pinned = app.mint(json!({"provider": "teller"})).await;
    let r = app
        .page_get(&format!("/_link/{}/providers", token(&pinned)))
        .await;
    assert_eq!(
        r.json,
        json!({"providers": [{"name": "teller", "display_name": "Teller"}]})
    );
}

#[actix_web::test]
async fn widget_events_are_recorded_and_not_terminal() {
    let app = spawn_app().await;
    let s = app.mint(json!({})).await;
    let t = token(&s);
    app.page_get(&format!("/_link/{t}/session")).await;
    let r = app
        .page_post(
            &format!("/_link/{t}/events"),
            Some(json!({"type": "error", "provider": "plaid", "code": "INSTITUTION_DOWN", "message": "try later"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = app
        .page_post(
            &format!("/_link/{t}/events"),
            Some(json!({"type": "exit", "provider": "teller"})),
        )
        .await;
    assert_eq!(r.status, 204);
    for bad in [
        json!({"type": "boom", "provider": "plaid"}),
        json!({"type": "exit", "provider": "mx"}),
        json!({"type": "exit"}),
        json!({"type": "exit", "provider": "plaid", "extra": 1}),
    ] {
        let r = app
            .page_post(&format!("/_link/{t}/events"), Some(bad.clone()))
            .await;
        assert_eq!((r.status, r.code()), (400, "VALIDATION_ERROR"), "{bad}");
    }
    let api = app
        .get(&format!(
            "/api/v1/connections/link/{}",
            s["id"].as_str().unwrap_or("")
        ))
        .await;
    assert_eq!(api.json["status"], "active");
    let r = app
        .get(&format!(
            "/api/v1/connections/link/{}/events",
            s["id"].as_str().unwrap_or("")
        ))
        .await;
    let evs = r.json["events"].as_array().cloned().unwrap_or_default();
    let err = evs
        .iter()
        .find(|e| e["type"] == "widget.error")
        .expect("widget.error recorded");
    assert_eq!(
        err["detail"],
        json!({"provider": "plaid", "code": "INSTITUTION_DOWN", "message": "try later"})
    );
    assert!(evs.iter().any(|e| e["type"] == "widget.exit"));
}

#[actix_web::test]
async fn person_cancel_fails_the_session() {
    let app = spawn_app().await;
    let s = app.mint(json!({})).await;
    let t = token(&s);
    let r = app
        .page_post(
            &format!("/_link/{t}/cancel"),
            Some(json!({"reason": "not now"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let api = app
        .get(&format!(
            "/api/v1/connections/link/{}",
            s["id"].as_str().unwrap_or("")
        ))
        .await;
    assert_eq!(api.json["status"], "failed");
    assert_eq!(api.json["error_code"], "USER_CANCELED");
    assert!(api.json["completed_at"].is_string());
    for path in ["session", "providers"] {
        let r = app.page_get(&format!("/_link/{t}/{path}")).await;
        assert_eq!((r.status, r.code()), (410, "GONE"), "{path}");
    }
    let r = app.page_post(&format!("/_link/{t}/complete"), None).await;
    assert_eq!((r.status, r.code()), (410, "GONE"));
    assert_eq!(
        events(&app, &s["id"]).await,
        ["session.created", "session.failed"]
    );
}

#[actix_web::test]
async fn complete_once_then_consumed() {
    let app = spawn_app().await;
    let s = app.mint(json!({})).await;
    let t = token(&s);
    let r = app.page_post(&format!("/_link/{t}/complete"), None).await;
    assert_eq!(
        (r.status, r.code()),
        (409, "INVALID_STATE"),
        "pending cannot complete"
    );
    app.page_get(&format!("/_link/{t}/session")).await;
    let r = app
        .page_post(&format!("/_link/{t}/complete"), Some(json!({})))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_page_headers(&r);
    let r = app.page_post(&format!("/_link/{t}/complete"), None).await;
    assert_eq!((r.status, r.code()), (410, "CONSUMED"));
    let api = app
        .get(&format!(
            "/api/v1/connections/link/{}",
            s["id"].as_str().unwrap_or("")
        ))
        .await;
    assert_eq!(api.json["status"], "completed");
    assert!(api.json["completed_at"].is_string());
    assert!(api.json.get("error_code").is_none());
    assert_eq!(
        events(&app, &s["id"]).await,
        ["session.created", "session.opened", "session.completed"]
    );
}

#[actix_web::test]
async fn token_errors_come_before_body_errors() {
    let app = spawn_app().await;
    let garbage = Some(json!({"type": 5}));
    let r = app
        .page_post("/_link/AAAAAAAAAAAAAAAAAAAAAA/events", garbage.clone())
        .await;
    assert_eq!((r.status, r.code()), (401, "INVALID_TOKEN"));
    assert_page_headers(&r);
    let r = app.page_get("/_link/nonsense/session").await;
    assert_eq!((r.status, r.code()), (401, "INVALID_TOKEN"));
    let s = app.mint(json!({})).await;
    app.expire_now(s["id"].as_str().unwrap_or(""));
    let r = app
        .page_post(&format!("/_link/{}/events", token(&s)), garbage)
        .await;
    assert_eq!((r.status, r.code()), (410, "EXPIRED"));
    let live = app.mint(json!({})).await;
    let r = crate::helpers::read(
        app.request(
            reqwest::Method::POST,
            &format!("/_link/{}/complete", token(&live)),
        )
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .expect("send"),
    )
    .await;
    assert_eq!((r.status, r.code()), (415, "UNSUPPORTED_MEDIA_TYPE"));
}
