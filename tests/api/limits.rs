//! Rate limits: unknown link tokens and bad API keys per client IP, requests
//! per API key, 429 with Retry-After.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::{read, spawn_app, spawn_app_with, Resp, TestApp};

async fn page_as(app: &TestApp, path: &str, forwarded_for: Option<&str>) -> Resp {
    let mut rb = app.request(reqwest::Method::GET, path);
    if let Some(ip) = forwarded_for {
        rb = rb.header("X-Forwarded-For", ip);
    }
    read(rb.send().await.expect("send")).await
}

#[actix_web::test]
async fn a_thousand_wrong_tokens_are_slowed_down_and_lock_out_valid_ones_too() {
    let app = spawn_app().await;
    let live = app.mint(json!({})).await;
    let token = live["token"].as_str().unwrap_or("").to_owned();
    let mut limited = 0;
    for i in 0..1000 {
        let r = page_as(&app, &format!("/_link/{:0>22}/session", i), None).await;
        match r.status {
            401 => assert_eq!(r.code(), "INVALID_TOKEN"),
            429 => {
                assert_eq!(r.code(), "RATE_LIMITED");
                assert!(r.header("retry-after").parse::<u64>().is_ok_and(|s| s >= 1));
                limited += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    println!("of 1000 wrong tokens, {limited} got 429");
    assert!(limited >= 985, "{limited}");
    // Locked out: even the valid token (and the HTML page) gets 429 now.
    let r = page_as(&app, &format!("/_link/{token}/session"), None).await;
    assert_eq!((r.status, r.code()), (429, "RATE_LIMITED"));
    let r = page_as(&app, &format!("/link/{token}"), None).await;
    assert_eq!(r.status, 429);
    assert!(!r.header("retry-after").is_empty());
}

#[actix_web::test]
async fn valid_tokens_work_again_once_the_bucket_refills() {
    // 120 a minute: one token back every half second.
    let app = spawn_app_with(|c| c.limits.bad_token_per_minute = 120).await;
    let live = app.mint(json!({})).await;
    let token = live["token"].as_str().unwrap_or("").to_owned();
    let wrong = (0..121)
        .map(|i| format!("/_link/{:0>22}/providers", i))
        .collect::<Vec<_>>();
    let results = join_all(wrong.iter().map(|p| page_as(&app, p, None))).await;
    assert!(results.iter().any(|r| r.status == 429));
    let r = page_as(&app, &format!("/_link/{token}/session"), None).await;
    assert_eq!(r.status, 429);
    let wait: u64 = r.header("retry-after").parse().unwrap_or(1);
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(100)).await;
    let r = page_as(&app, &format!("/_link/{token}/session"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[actix_web::test]
async fn known_dead_tokens_do_not_count() {
    let app = spawn_app().await;
    let dead = app.mint(json!({})).await;
    app.expire_now(dead["id"].as_str().unwrap_or(""));
    for _ in 0..30 {
        let r = page_as(
            &app,
            &format!("/_link/{}/session", dead["token"].as_str().unwrap_or("")),
            None,
        )
        .await;
        assert_eq!((r.status, r.code()), (410, "EXPIRED"));
    }
}

#[actix_web::test]
async fn forwarded_for_is_used_only_when_trusted() {
    let untrusted = spawn_app_with(|c| c.limits.bad_token_per_minute = 3).await;
    for i in 0..3 {
        page_as(
            &untrusted,
            &format!("/_link/{:0>22}/session", i),
            Some(&format!("10.0.0.{i}")),
        )
        .await;
    }
    let r = page_as(
        &untrusted,
        "/_link/AAAAAAAAAAAAAAAAAAAAAA/session",
        Some("10.0.0.99"),
    )
    .await;
    assert_eq!(
        r.status, 429,
        "the header is ignored: same peer, same bucket"
    );

    let trusted = spawn_app_with(|c| {
        c.limits.bad_token_per_minute = 3;
        c.server.trust_forwarded_headers = true;
    })
    .await;
    for i in 0..3 {
        page_as(
            &trusted,
            &format!("/_link/{:0>22}/session", i),
            Some("203.0.113.7"),
        )
        .await;
    }
    let r = page_as(
        &trusted,
        "/_link/AAAAAAAAAAAAAAAAAAAAAA/session",
        Some("203.0.113.7"),
    )
    .await;
    assert_eq!(r.status, 429);
    let r = page_as(
        &trusted,
        "/_link/AAAAAAAAAAAAAAAAAAAAAA/session",
        Some("198.51.100.1, 203.0.113.8"),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (401, "INVALID_TOKEN"),
        "another client, its own bucket"
    );
}

#[actix_web::test]
async fn per_key_limit_answers_429_with_retry_after() {
    let app = spawn_app_with(|c| c.limits.api_per_minute = 5).await;
    let results = join_all((0..8).map(|_| app.get("/api/v1/users"))).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    let limited: Vec<&Resp> = results.iter().filter(|r| r.status == 429).collect();
    assert_eq!((ok, limited.len()), (5, 3));
    assert_eq!(limited[0].code(), "RATE_LIMITED");
    assert!(limited[0]
        .header("retry-after")
        .parse::<u64>()
        .is_ok_and(|s| s >= 1));
    // Another key has its own budget.
    assert_eq!(app.get_as("/api/v1/users", &app.read_key).await.status, 200);
}

#[actix_web::test]
async fn bad_api_keys_lock_the_client_out() {
    let app = spawn_app_with(|c| c.limits.bad_api_key_per_minute = 3).await;
    for _ in 0..3 {
        let r = app
            .get_as("/api/v1/users", "bb_wrongwrongwrongwrongwrongwrong12")
            .await;
        assert_eq!(r.status, 401);
    }
    let r = app
        .get_as("/api/v1/users", "bb_wrongwrongwrongwrongwrongwrong12")
        .await;
    assert_eq!((r.status, r.code()), (429, "RATE_LIMITED"));
    let r = app.get("/api/v1/users").await;
    assert_eq!(
        r.status, 429,
        "a valid key from a locked-out client waits too"
    );
}

#[actix_web::test]
async fn zero_disables_a_limit() {
    let app = spawn_app_with(|c| {
        c.limits.bad_token_per_minute = 0;
        c.limits.api_per_minute = 0;
    })
    .await;
    for i in 0..40 {
        let r = page_as(&app, &format!("/_link/{:0>22}/session", i), None).await;
        assert_eq!(r.status, 401);
    }
    let _ = spawn_app().await;
}
