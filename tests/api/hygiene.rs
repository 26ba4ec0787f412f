//! CONTRACT §4 "HTTP hygiene", `GET /api/v1/providers`, and bounded input a
//! token holder controls (widget events, the events timeline).

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{read, spawn_app, spawn_app_with, with_plaid, Resp, TestApp};

fn s(v: &Value) -> String {
    v.as_str().expect("a string").to_owned()
}

/// Fill a route template's `{id}` with a real entity of the right kind.
fn concrete(path: &str, session: &str, user: &str, key_id: &str) -> String {
    let id = if path.starts_with("/connections/link") {
        session
    } else if path.starts_with("/users") {
        user
    } else if path.starts_with("/api-keys") {
        key_id
    } else {
        // No connection exists: the 404 must be the same for HEAD.
        "00000000-0000-4000-8000-000000000000"
    };
    format!("/api/v1{}", path.replace("{id}", id))
}

async fn send(app: &TestApp, method: Method, path: &str, key: Option<&str>) -> Resp {
    let mut rb = app.request(method, path);
    if let Some(k) = key {
        rb = rb.header("X-API-Key", k);
    }
    read(rb.send().await.expect("send")).await
}

/// HEAD must answer exactly like GET, without the body.
async fn assert_head_like_get(app: &TestApp, path: &str, key: Option<&str>) {
    let get = send(app, Method::GET, path, key).await;
    let head = send(app, Method::HEAD, path, key).await;
    assert_eq!(head.status, get.status, "HEAD {path}: {}", get.text);
    assert!(head.text.is_empty(), "HEAD {path} sent a body");
    let names = |r: &Resp| {
        let mut n: Vec<String> = r
            .headers
            .keys()
            .map(|k| k.as_str().to_owned())
            .filter(|k| k != "date")
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&head), names(&get), "HEAD {path}: header names");
    for name in [
        "content-type",
        "cache-control",
        "allow",
        "content-security-policy",
    ] {
        assert_eq!(head.header(name), get.header(name), "HEAD {path}: {name}");
    }
}

#[actix_web::test]
async fn head_answers_like_get_on_every_get_route() {
    let app = spawn_app().await;
    let minted = app.mint(json!({})).await;
    let (session, token) = (s(&minted["id"]), s(&minted["token"]));
    let user = s(&minted["user_id"]);
    let keys = app.get("/api/v1/api-keys").await;
    let key_id = s(&keys.json["api_keys"][0]["id"]);

    // Every GET of the API route table, so a new route is covered by itself.
    let api_gets: Vec<String> = breadbox::api::routes()
        .into_iter()
        .filter(|(m, _, _)| m == Method::GET.as_str())
        .map(|(_, path, _)| concrete(path, &session, &user, &key_id))
        .collect();
    assert!(api_gets.len() >= 9, "{api_gets:?}");
    for path in &api_gets {
        assert_head_like_get(&app, path, Some(&app.key)).await;
        assert_head_like_get(&app, path, None).await;
    }
    for path in [
        "/health/live",
        "/health/ready",
        "/version",
        "/openapi.json",
        "/assets/link.js",
        "/assets/link.css",
        "/link/AAAAAAAAAAAAAAAAAAAAAA",
    ] {
        assert_head_like_get(&app, path, None).await;
    }

    // The page: HEAD of the first `session` call does not start the session.
    let page = format!("/link/{token}");
    let head = send(&app, Method::HEAD, &page, None).await;
    assert_eq!(head.status, 200);
    let head = send(&app, Method::HEAD, &format!("/_link/{token}/session"), None).await;
    assert_eq!(head.status, 200);
    assert!(head.text.is_empty());
    let now = app
        .get(&format!("/api/v1/connections/link/{session}"))
        .await;
    assert_eq!(now.json["status"], "pending", "HEAD changed the session");
    assert_head_like_get(&app, &page, None).await;
}

#[actix_web::test]
async fn wrong_method_lists_head_with_get() {
    let app = spawn_app().await;
    let r = send(&app, Method::PUT, "/api/v1/users", Some(&app.key)).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), "GET, HEAD, POST");
}

#[actix_web::test]
async fn every_api_response_has_no_store() {
    let app = spawn_app().await;
    let minted = app.mint(json!({})).await;
    let (session, user) = (s(&minted["id"]), s(&minted["user_id"]));
    let keys = app.get("/api/v1/api-keys").await;
    let key_id = s(&keys.json["api_keys"][0]["id"]);
    // Every method and path of the route table, with and without a key; the
    // writes get an empty body (a 4xx: still no caching).
    for (method, path, _) in breadbox::api::routes() {
        let path = concrete(path, &session, &user, &key_id);
        for key in [Some(app.read_key.as_str()), None] {
            let m = Method::from_bytes(method.as_str().as_bytes()).expect("method");
            let r = send(&app, m, &path, key).await;
            assert_eq!(
                r.header("cache-control"),
                "no-store",
                "{method} {path} ({}) has no Cache-Control: no-store",
                r.status
            );
        }
    }
    // The two responses that carry a secret, on success.
    let link = app
        .post("/api/v1/connections/link", &json!({"user_id": user}))
        .await;
    assert_eq!(
        (link.status, link.header("cache-control")),
        (201, "no-store")
    );
    let key = app
        .post(
            "/api/v1/api-keys",
            &json!({"name": "assistant", "scope": "read_only"}),
        )
        .await;
    assert_eq!((key.status, key.header("cache-control")), (201, "no-store"));
    // Unknown API paths too.
    let r = send(&app, Method::GET, "/api/v1/nope", Some(&app.key)).await;
    assert_eq!((r.status, r.header("cache-control")), (404, "no-store"));
}

#[actix_web::test]
async fn trailing_slash_redirects_to_the_canonical_path() {
    let app = spawn_app().await;
    let minted = app.mint(json!({})).await;
    let token = s(&minted["token"]);
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for (path, to) in [
        (
            "/api/v1/users/?limit=1".to_owned(),
            "/api/v1/users?limit=1".to_owned(),
        ),
        (format!("/link/{token}/"), format!("/link/{token}")),
        ("/health/live/".to_owned(), "/health/live".to_owned()),
        ("//evil.example/".to_owned(), "/evil.example".to_owned()),
    ] {
        let r = no_follow
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 308, "{path}");
        assert_eq!(
            r.headers().get("location").and_then(|v| v.to_str().ok()),
            Some(to.as_str()),
            "{path}"
        );
    }
    // A client that follows it gets the live page, and a POST keeps its body.
    let follow = reqwest::Client::new();
    let page = follow
        .get(format!("{}/link/{token}/", app.base))
        .send()
        .await
        .expect("send");
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.expect("body").contains("<html"));
    let created = read(
        follow
            .post(format!("{}/api/v1/users/", app.base))
            .header("X-API-Key", &app.key)
            .json(&json!({"name": "Bo"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json["name"], "Bo");
}

#[actix_web::test]
async fn forwarded_proto_is_case_insensitive_and_first_value_wins() {
    let app = spawn_app_with(|c| c.server.trust_forwarded_headers = true).await;
    let user = app.create_user("Ana").await;
    for (proto, scheme) in [
        ("HTTPS", "https"),
        ("Https, http", "https"),
        ("HTTP", "http"),
    ] {
        let r = read(
            app.request(Method::POST, "/api/v1/connections/link")
                .header("X-API-Key", &app.key)
                .header("X-Forwarded-Proto", proto)
                .header("X-Forwarded-Host", "Bank.Example")
                .json(&json!({"user_id": user["id"]}))
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let url = s(&r.json["url"]);
        assert!(
            url.starts_with(&format!("{scheme}://")),
            "X-Forwarded-Proto: {proto} gave {url}"
        );
    }
}

#[actix_web::test]
async fn providers_lists_what_is_configured() {
    let none = spawn_app().await;
    let r = none.get_as("/api/v1/providers", &none.read_key).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json, json!({"providers": []}));

    let plaid = spawn_app_with(with_plaid).await;
    let r = plaid.get_as("/api/v1/providers", &plaid.read_key).await;
    assert_eq!(
        r.json,
        json!({"providers": [
            {"name": "plaid", "display_name": "Plaid", "environment": "sandbox"}
        ]})
    );
    let anon = send(&plaid, Method::GET, "/api/v1/providers", None).await;
    assert_eq!((anon.status, anon.code()), (401, "MISSING_CREDENTIALS"));
}

#[actix_web::test]
async fn widget_events_are_capped_and_the_timeline_is_paginated() {
    let app = spawn_app().await;
    let minted = app.mint(json!({})).await;
    let (id, token) = (s(&minted["id"]), s(&minted["token"]));
    let event = json!({"type": "error", "provider": "plaid", "code": "X", "message": "m"});
    let cap = breadbox::hosted::MAX_WIDGET_EVENTS;
    for i in 0..cap {
        let r = app
            .page_post(&format!("/_link/{token}/events"), Some(event.clone()))
            .await;
        assert_eq!(r.status, 204, "event {i}: {}", r.text);
    }
    let over = app
        .page_post(&format!("/_link/{token}/events"), Some(event.clone()))
        .await;
    assert_eq!(
        (over.status, over.code()),
        (429, "TOO_MANY_EVENTS"),
        "{}",
        over.text
    );
    assert!(over.json["error"]["message"].is_string());

    // Walk the timeline page by page: every event once, oldest first.
    let mut seen: Vec<Value> = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = app
            .get(&format!(
                "/api/v1/connections/link/{id}/events?limit=37&cursor={cursor}"
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let page = r.json["events"].as_array().expect("events").clone();
        assert!(page.len() <= 37);
        seen.extend(page);
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    let widget = seen.iter().filter(|e| e["type"] == "widget.error").count();
    assert_eq!(widget, cap as usize, "the refused event was not written");
    assert_eq!(seen[0]["type"], "session.created", "oldest first");
    let ids: std::collections::BTreeSet<_> = seen.iter().map(|e| s(&e["id"])).collect();
    assert_eq!(ids.len(), seen.len(), "no event twice");
    let default = app
        .get(&format!("/api/v1/connections/link/{id}/events"))
        .await;
    assert_eq!(default.json["events"].as_array().map(Vec::len), Some(50));

    // Bad parameters are validation errors; a session-list cursor is refused.
    let sessions = app.get("/api/v1/connections/link?limit=1").await;
    let _ = app.mint(json!({})).await;
    let sessions = if sessions.json["next_cursor"].is_null() {
        app.get("/api/v1/connections/link?limit=1").await
    } else {
        sessions
    };
    let foreign = s(&sessions.json["next_cursor"]);
    for q in [
        "limit=0",
        "limit=201",
        "cursor=nope",
        &format!("cursor={foreign}"),
        "x=1",
    ] {
        let r = app
            .get(&format!("/api/v1/connections/link/{id}/events?{q}"))
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, "VALIDATION_ERROR"),
            "{q}: {}",
            r.text
        );
    }
}

#[actix_web::test]
async fn members_and_keys_are_bounded() {
    let app = spawn_app().await;
    let max_users = breadbox::api::users::MAX_USERS;
    app.db
        .write(|tx| {
            for i in 1..max_users {
                breadbox::db::users::insert(tx, &format!("m{i}"), None, 0)?;
            }
            Ok(())
        })
        .expect("seed members");
    let last = app.post("/api/v1/users", &json!({"name": "last"})).await;
    assert_eq!(last.status, 201, "{}", last.text);
    let over = app.post("/api/v1/users", &json!({"name": "over"})).await;
    assert_eq!(
        (over.status, over.code()),
        (409, "LIMIT_REACHED"),
        "{}",
        over.text
    );
    let list = app.get("/api/v1/users").await;
    assert_eq!(
        list.json["users"].as_array().map(Vec::len),
        Some(max_users as usize)
    );

    let max_keys = breadbox::api::api_keys::MAX_API_KEYS;
    let existing = app.get("/api/v1/api-keys").await.json["api_keys"]
        .as_array()
        .map_or(0, Vec::len) as u32;
    app.db
        .write(|tx| {
            for i in existing..max_keys {
                breadbox::db::api_keys::insert(
                    tx,
                    &format!("k{i}"),
                    breadbox::domain::api_key::Scope::ReadOnly,
                    0,
                )?;
            }
            Ok(())
        })
        .expect("seed keys");
    let over = app
        .post(
            "/api/v1/api-keys",
            &json!({"name": "over", "scope": "read_only"}),
        )
        .await;
    assert_eq!(
        (over.status, over.code()),
        (409, "LIMIT_REACHED"),
        "{}",
        over.text
    );
}

#[actix_web::test]
async fn provider_attempts_per_link_are_bounded() {
    let fake = crate::fakes::FakePlaid::start().await;
    let app = spawn_app_with(|c| c.plaid = fake.plaid_config()).await;
    let minted = app.mint(json!({})).await;
    let token = s(&minted["token"]);
    let cap = breadbox::app::page::MAX_PROVIDER_ATTEMPTS;
    for i in 0..cap {
        let r = app
            .page_post(&format!("/_link/{token}/providers/plaid/start"), None)
            .await;
        assert_eq!(r.status, 200, "start {i}: {}", r.text);
    }
    let calls = fake.requests_to("/link/token/create").len();
    let over = app
        .page_post(&format!("/_link/{token}/providers/plaid/start"), None)
        .await;
    assert_eq!(
        (over.status, over.code()),
        (429, "TOO_MANY_EVENTS"),
        "{}",
        over.text
    );
    assert_eq!(
        fake.requests_to("/link/token/create").len(),
        calls,
        "no provider call past the cap"
    );
}
