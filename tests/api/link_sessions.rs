//! `/api/v1/connections/link`: minting, reading, listing, cancel, events, auth.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, with_plaid};

const SESSION_FIELDS: [&str; 15] = [
    "id",
    "short_id",
    "user_id",
    "provider",
    "action",
    "single_use",
    "redirect_url",
    "label",
    "status",
    "result_connection_ids",
    "expires_at",
    "started_at",
    "completed_at",
    "created_at",
    "token",
];

fn parse_time(v: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        v.as_str().expect("timestamp"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339")
}

#[actix_web::test]
async fn mint_returns_the_seed_shape_with_token_and_url() {
    let app = spawn_app().await;
    let user = app.create_user("Ana").await;
    let r = app
        .post(
            "/api/v1/connections/link",
            &json!({"user_id": user["short_id"], "label": "Checking", "redirect_url": "https://example.com/done"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let s = &r.json;
    let obj = s.as_object().expect("object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected: Vec<&str> = SESSION_FIELDS.iter().copied().chain(["url"]).collect();
    expected.sort_unstable();
    assert_eq!(
        keys, expected,
        "exact field set (no connection_id/error fields on a link session)"
    );
    let token = s["token"].as_str().expect("token");
    assert_eq!(token.len(), 22);
    assert!(token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(s["url"], format!("{}/link/{token}", app.base));
    assert_eq!(
        s["user_id"], user["id"],
        "user_id is the user's UUID even when given a short id"
    );
    assert_eq!(s["provider"], "");
    assert_eq!(s["action"], "link");
    assert_eq!(s["status"], "pending");
    assert_eq!(s["single_use"], false);
    assert_eq!(s["label"], "Checking");
    assert_eq!(s["result_connection_ids"], json!([]));
    assert!(s["started_at"].is_null() && s["completed_at"].is_null());
    assert!(s["expires_at"].as_str().unwrap_or("").ends_with('Z'));
    let ttl = parse_time(&s["expires_at"]) - parse_time(&s["created_at"]);
    assert_eq!(ttl.whole_seconds(), 900);
    assert_eq!(s["short_id"].as_str().map(str::len), Some(8));
    assert!(uuid::Uuid::parse_str(s["id"].as_str().unwrap_or("")).is_ok());
}

#[actix_web::test]
async fn get_by_uuid_or_short_id_never_shows_the_token() {
    let app = spawn_app().await;
    let s = app.mint(json!({})).await;
    for id in [&s["id"], &s["short_id"]] {
        let r = app
            .get(&format!(
                "/api/v1/connections/link/{}",
                id.as_str().unwrap_or("")
            ))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json["id"], s["id"]);
        assert!(r.json.get("token").is_none() && r.json.get("url").is_none());
        assert!(!r.text.contains(s["token"].as_str().unwrap_or("?")));
    }
    let r = app.get("/api/v1/connections/link/nope").await;
    assert_eq!((r.status, r.code()), (404, "NOT_FOUND"));
    let r = app
        .get(&format!(
            "/api/v1/connections/link/{}",
            uuid::Uuid::new_v4()
        ))
        .await;
    assert_eq!((r.status, r.code()), (404, "NOT_FOUND"));
}

#[actix_web::test]
async fn ttl_defaults_and_bounds() {
    let app = spawn_app().await;
    let user = app.create_user("Ana").await;
    for (given, expected) in [
        (json!(0), Some(900)),
        (json!(1), Some(1)),
        (json!(3600), Some(3600)),
        (json!(3601), None),
        (json!(-1), None),
    ] {
        let r = app
            .post(
                "/api/v1/connections/link",
                &json!({"user_id": user["id"], "expires_in_seconds": given}),
            )
            .await;
        match expected {
            Some(ttl) => {
                assert_eq!(r.status, 201, "{given}: {}", r.text);
                let got = parse_time(&r.json["expires_at"]) - parse_time(&r.json["created_at"]);
                assert_eq!(got.whole_seconds(), ttl);
            }
            None => {
                assert_eq!((r.status, r.code()), (400, "VALIDATION_ERROR"), "{given}");
                assert!(r.json["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("expires_in_seconds"));
            }
        }
    }
}

#[actix_web::test]
async fn configured_ttl_tightens_the_bounds() {
    let app = spawn_app_with(|c| {
        c.link.default_ttl_seconds = 60;
        c.link.max_ttl_seconds = 120;
    })
    .await;
    let user = app.create_user("Ana").await;
    let r = app
        .post("/api/v1/connections/link", &json!({"user_id": user["id"]}))
        .await;
    let got = parse_time(&r.json["expires_at"]) - parse_time(&r.json["created_at"]);
    assert_eq!(got.whole_seconds(), 60);
    let r = app
        .post(
            "/api/v1/connections/link",
            &json!({"user_id": user["id"], "expires_in_seconds": 121}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "VALIDATION_ERROR"));
}

#[actix_web::test]
async fn body_validation_errors_and_nothing_written() {
    let app = spawn_app().await;
    let user = app.create_user("Ana").await;
    let uid = user["id"].clone();
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"user_id": uid, "colour": "red"}),
            "VALIDATION_ERROR",
            "colour",
        ),
        (json!({}), "VALIDATION_ERROR", "user_id"),
        (
            json!({"user_id": uid, "single_use": "yes"}),
            "VALIDATION_ERROR",
            "single_use",
        ),
        (
            json!({"user_id": uid, "expires_in_seconds": "60"}),
            "VALIDATION_ERROR",
            "expires_in_seconds",
        ),
        (
            json!({"user_id": uid, "expires_in_seconds": 1e30}),
            "VALIDATION_ERROR",
            "expires_in_seconds",
        ),
        (
            json!({"user_id": uid, "provider": "mx"}),
            "VALIDATION_ERROR",
            "provider",
        ),
        (
            json!({"user_id": uid, "label": "x".repeat(201)}),
            "VALIDATION_ERROR",
            "label",
        ),
        (json!({"user_id": 5}), "VALIDATION_ERROR", "user_id"),
        (
            json!({"user_id": "not an id"}),
            "VALIDATION_ERROR",
            "user_id",
        ),
        (
            json!({"user_id": uid, "redirect_url": "javascript:alert(1)"}),
            "VALIDATION_ERROR",
            "redirect_url",
        ),
        (
            json!({"user_id": uid, "redirect_url": "/relative"}),
            "VALIDATION_ERROR",
            "redirect_url",
        ),
        (
            json!({"user_id": uid, "redirect_url": "https://me:pw@example.com/"}),
            "VALIDATION_ERROR",
            "redirect_url",
        ),
        (
            json!({"user_id": uid, "redirect_url": format!("https://example.com/{}", "a".repeat(2040))}),
            "VALIDATION_ERROR",
            "redirect_url",
        ),
        (json!([1, 2]), "INVALID_BODY", ""),
        (json!("text"), "INVALID_BODY", ""),
    ];
    for (body, code, mention) in cases {
        let r = app.post("/api/v1/connections/link", &body).await;
        assert_eq!((r.status, r.code()), (400, code), "{body}: {}", r.text);
        let msg = r.json["error"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(mention),
            "message {msg:?} should name {mention}"
        );
    }
    let r = app
        .post_raw(
            "/api/v1/connections/link",
            "application/json",
            b"{\"user_id\":".to_vec(),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "INVALID_BODY"));
    let r = app
        .post_raw("/api/v1/connections/link", "application/json", Vec::new())
        .await;
    assert_eq!((r.status, r.code()), (400, "INVALID_BODY"));
    let r = app
        .post_raw("/api/v1/connections/link", "text/plain", b"{}".to_vec())
        .await;
    assert_eq!((r.status, r.code()), (415, "UNSUPPORTED_MEDIA_TYPE"));
    let big = format!(
        "{{\"user_id\":\"{}\",\"label\":\"{}\"}}",
        uid.as_str().unwrap_or(""),
        "x".repeat(70_000)
    );
    let r = app
        .post_raw(
            "/api/v1/connections/link",
            "application/json",
            big.into_bytes(),
        )
        .await;
    assert_eq!((r.status, r.code()), (413, "PAYLOAD_TOO_LARGE"));
    let r = app
        .post(
            "/api/v1/connections/link",
            &json!({"user_id": uuid::Uuid::new_v4().to_string()}),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "NOT_FOUND"));
    let r = app
        .post("/api/v1/connections/link", &json!({"user_id": "AAAAAAAA"}))
        .await;
    assert_eq!((r.status, r.code()), (404, "NOT_FOUND"));

    let list = app.get("/api/v1/connections/link").await;
    assert_eq!(
        list.json["sessions"],
        json!([]),
        "no failed request wrote a session"
    );
}

#[actix_web::test]
async fn redirect_origin_allowlist() {
    let app =
        spawn_app_with(|c| c.link.allowed_redirect_origins = vec!["https://agent.example".into()])
            .await;
    let user = app.create_user("Ana").await;
    let ok = app
        .post(
            "/api/v1/connections/link",
            &json!({"user_id": user["id"], "redirect_url": "https://agent.example/cb?x=1"}),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    assert_eq!(ok.json["redirect_url"], "https://agent.example/cb?x=1");
    for bad in [
        "https://agent.example.evil.io/",
        "http://agent.example/",
        "https://evil.example/",
    ] {
        let r = app
            .post(
                "/api/v1/connections/link",
                &json!({"user_id": user["id"], "redirect_url": bad}),
            )
            .await;
        assert_eq!((r.status, r.code()), (400, "VALIDATION_ERROR"), "{bad}");
    }
}

#[actix_web::test]
async fn pinned_provider_must_be_configured() {
    let app = spawn_app().await;
    let user = app.create_user("Ana").await;
    let r = app
        .post(
            "/api/v1/connections/link",
            &json!({"user_id": user["id"], "provider": "plaid"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "PROVIDER_NOT_CONFIGURED"));

    let app = spawn_app_with(with_plaid).await;
    let user = app.create_user("Ana").await;
    let r = app
        .post(
            "/api/v1/connections/link",
            &json!({"user_id": user["id"], "provider": "plaid"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["provider"], "plaid");
    let r = app
        .post(
            "/api/v1/connections/link",
            &json!({"user_id": user["id"], "provider": "teller"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "PROVIDER_NOT_CONFIGURED"));
}

#[actix_web::test]
async fn url_uses_public_url_or_trusted_forwarded_headers() {
    let app = spawn_app_with(|c| {
        c.server.public_url = Some("https://bank.example.org/".parse().expect("url"))
    })
    .await;
    let s = app.mint(json!({})).await;
    assert_eq!(
        s["url"],
        format!(
            "https://bank.example.org/link/{}",
            s["token"].as_str().unwrap_or("")
        )
    );

    let send = |app: &crate::helpers::TestApp, user: Value| {
        app.request(reqwest::Method::POST, "/api/v1/connections/link")
            .header("X-API-Key", &app.key)
            .header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-Host", "proxy.example")
            .json(&json!({"user_id": user["id"]}))
            .send()
    };
    let app = spawn_app().await;
    let user = app.create_user("Ana").await;
    let r = crate::helpers::read(send(&app, user).await.expect("send")).await;
    assert!(
        r.json["url"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("{}/link/", app.base)),
        "{}",
        r.json["url"]
    );

    let app = spawn_app_with(|c| c.server.trust_forwarded_headers = true).await;
    let user = app.create_user("Ana").await;
    let r = crate::helpers::read(send(&app, user).await.expect("send")).await;
    assert!(
        r.json["url"]
            .as_str()
            .unwrap_or("")
            .starts_with("https://proxy.example/link/"),
        "{}",
        r.json["url"]
    );
}

#[actix_web::test]
async fn api_key_errors_and_scopes() {
    let app = spawn_app().await;
    let r = crate::helpers::read(
        app.request(reqwest::Method::GET, "/api/v1/users")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((r.status, r.code()), (401, "MISSING_CREDENTIALS"));
    let r = app.get_as("/api/v1/users", "bb_notakey").await;
    assert_eq!((r.status, r.code()), (401, "INVALID_API_KEY"));
    let r = app
        .get_as("/api/v1/users", &format!("bb_{}", "A".repeat(32)))
        .await;
    assert_eq!((r.status, r.code()), (401, "INVALID_API_KEY"));
    let bearer = crate::helpers::read(
        app.request(reqwest::Method::GET, "/api/v1/users")
            .header("Authorization", format!("Bearer {}", app.key))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(bearer.status, 200);
    let user = app.create_user("Ana").await;
    let r = app
        .post_as(
            "/api/v1/connections/link",
            &json!({"user_id": user["id"]}),
            &app.read_key,
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "INSUFFICIENT_SCOPE"));
    let r = app.get_as("/api/v1/connections/link", &app.read_key).await;
    assert_eq!(r.status, 200);
}

#[actix_web::test]
async fn expired_reads_expired_everywhere_before_the_sweeper() {
    let app = spawn_app().await;
    let s = app.mint(json!({})).await;
    let id = s["id"].as_str().unwrap_or("").to_owned();
    let token = s["token"].as_str().unwrap_or("").to_owned();
    app.expire_now(&id);
    let r = app.get(&format!("/api/v1/connections/link/{id}")).await;
    assert_eq!(r.json["status"], "expired");
    assert!(r.json["completed_at"].is_null());
    let r = app.get("/api/v1/connections/link?status=expired").await;
    assert_eq!(r.json["sessions"][0]["id"], json!(id));
    let r = app.get("/api/v1/connections/link?status=pending").await;
    assert_eq!(r.json["sessions"], json!([]));
    let r = app.page_get(&format!("/_link/{token}/session")).await;
    assert_eq!((r.status, r.code()), (410, "EXPIRED"));

    // The sweeper's write: stored as expired, completed_at stays null, event recorded.
    let swept = app
        .db
        .write(|tx| {
            breadbox::db::link_sessions::expire_due(
                tx,
                breadbox::domain::time::now(),
                100,
                Default::default(),
            )
        })
        .expect("sweep");
    assert_eq!(swept, vec![id.clone()]);
    let stored: (String, Option<i64>) = app
        .db
        .read(|c| {
            Ok(c.query_row(
                "SELECT status, completed_at FROM link_sessions WHERE id = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .expect("read");
    assert_eq!(stored, ("expired".to_owned(), None));
    let ev = app
        .get(&format!("/api/v1/connections/link/{id}/events"))
        .await;
    let types: Vec<&str> = ev.json["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(types, ["session.created", "session.expired"]);
}

#[actix_web::test]
async fn list_is_newest_first_with_filters_and_cursor() {
    let app = spawn_app().await;
    let ana = app.create_user("Ana").await;
    let bo = app.create_user("Bo").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let user = if i % 2 == 0 { &ana } else { &bo };
        let r = app
            .post("/api/v1/connections/link", &json!({"user_id": user["id"]}))
            .await;
        ids.push(r.json["id"].clone());
    }
    let r = app.get("/api/v1/connections/link").await;
    let got: Vec<Value> = r.json["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(got, newest_first);
    assert!(r.json["next_cursor"].is_null());

    let r = app
        .get(&format!(
            "/api/v1/connections/link?user_id={}",
            bo["short_id"].as_str().unwrap_or("")
        ))
        .await;
    assert_eq!(r.json["sessions"].as_array().map(Vec::len), Some(2));

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/connections/link?limit=2&cursor={c}"),
            None => "/api/v1/connections/link?limit=2".into(),
        };
        let r = app.get(&path).await;
        assert_eq!(r.status, 200, "{}", r.text);
        seen.extend(
            r.json["sessions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|s| s["id"].clone()),
        );
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);

    for bad in [
        "limit=0",
        "limit=201",
        "limit=x",
        "status=done",
        "cursor=zzz",
        "colour=red",
    ] {
        let r = app.get(&format!("/api/v1/connections/link?{bad}")).await;
        assert_eq!((r.status, r.code()), (400, "VALIDATION_ERROR"), "{bad}");
    }
}

#[actix_web::test]
async fn cancel_then_cancel_again() {
    let app = spawn_app().await;
    let s = app.mint(json!({})).await;
    let path = format!(
        "/api/v1/connections/link/{}/cancel",
        s["short_id"].as_str().unwrap_or("")
    );
    let r = app.post_as(&path, &json!({}), &app.read_key).await;
    assert_eq!((r.status, r.code()), (403, "INSUFFICIENT_SCOPE"));
    let r = app.post(&path, &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "failed");
    assert_eq!(r.json["error_code"], "CANCELED");
    assert!(r.json["error_message"].is_string());
    assert!(r.json["completed_at"].is_string());
    let r = app.post(&path, &json!({})).await;
    assert_eq!((r.status, r.code()), (409, "INVALID_STATE"));
    let r = app
        .page_get(&format!(
            "/_link/{}/session",
            s["token"].as_str().unwrap_or("")
        ))
        .await;
    assert_eq!((r.status, r.code()), (410, "GONE"));
}

#[actix_web::test]
async fn health_version_and_unknown_routes() {
    let app = spawn_app().await;
    assert_eq!(app.page_get("/health/live").await.status, 200);
    let ready = app.page_get("/health/ready").await;
    assert_eq!((ready.status, ready.json["db"].as_str()), (200, Some("ok")));
    let v = app.page_get("/version").await;
    assert_eq!(v.json["version"], env!("CARGO_PKG_VERSION"));
    let r = app.get("/api/v1/nothing-here").await;
    assert_eq!((r.status, r.code()), (404, "NOT_FOUND"));
}
