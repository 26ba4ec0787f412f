//! Inbound provider webhooks and pulled health checks (CONTRACT §10) against
//! the fakes: Plaid's ES256-signed JWTs (forged, stale, altered, replayed),
//! Teller's HMAC signatures (rotation, tolerance, replay), what each health
//! change does, and health polling that flips a connection with no webhook.

use std::time::Duration;

use breadbox::config::Secret;
use serde_json::{json, Value};

use crate::connection_lifecycle::{
    app_with, connection, connection_events, eventually, link_plaid, link_teller, outbox_of, s,
};
use crate::fakes::{
    new_signing_key, now, sign_es256, teller_signature, FakePlaid, FakeTeller, PLAID_WEBHOOK_KID,
    TELLER_ENROLLMENT,
};
use crate::helpers::{read, run_bin, Resp, TestApp};

const TELLER_SECRETS: [&str; 2] = ["teller-secret-old", "teller-secret-new"];

/// POST `body` to `/webhooks/plaid` with the given `Plaid-Verification` header.
pub async fn post_plaid_signed(app: &TestApp, jwt: Option<&str>, body: &[u8]) -> Resp {
    let mut rb = app
        .request(reqwest::Method::POST, "/webhooks/plaid")
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(jwt) = jwt {
        rb = rb.header("Plaid-Verification", jwt);
    }
    read(rb.send().await.expect("send")).await
}

/// POST `body` to `/webhooks/plaid`, signed by the fake Plaid now.
pub async fn post_plaid(app: &TestApp, plaid: &FakePlaid, body: &[u8]) -> Resp {
    post_plaid_signed(app, Some(&plaid.sign_webhook(body)), body).await
}

async fn post_teller(app: &TestApp, signature: Option<&str>, body: &[u8]) -> Resp {
    let mut rb = app
        .request(reqwest::Method::POST, "/webhooks/teller")
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(sig) = signature {
        rb = rb.header("Teller-Signature", sig);
    }
    read(rb.send().await.expect("send")).await
}

fn item_hook(item: &str, code: &str, extra: Value) -> Vec<u8> {
    let mut body = json!({"webhook_type": "ITEM", "webhook_code": code, "item_id": item,
        "environment": "sandbox"});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body.to_string().into_bytes()
}

fn login_required(item: &str) -> Vec<u8> {
    item_hook(
        item,
        "ERROR",
        json!({"error": {"error_type": "ITEM_ERROR", "error_code": "ITEM_LOGIN_REQUIRED",
            "error_message": "the login details of this item have changed",
            "display_message": null}}),
    )
}

async fn plaid_app_with_item(plaid: &FakePlaid) -> (TestApp, String, String) {
    let app = app_with(Some(plaid), None, |_| {}).await;
    let (_, added) = link_plaid(&app, "public-hooks").await;
    let item = plaid.item_ids().pop().expect("item");
    (app, s(&added["connection_id"]).to_owned(), item)
}

// ------------------------------------------------------------------ Plaid

#[actix_web::test]
async fn plaid_webhook_moves_a_connection_and_tells_the_agent() {
    let plaid = FakePlaid::start().await;
    let (app, id, item) = plaid_app_with_item(&plaid).await;

    let r = post_plaid(&app, &plaid, &login_required(&item)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let conn = connection(&app, &id).await;
    assert_eq!(conn["status"], "pending_reauth");
    assert_eq!(conn["error_code"], "ITEM_LOGIN_REQUIRED");
    // The key was fetched once and is cached by kid.
    let keys = plaid.requests_to("/webhook_verification_key/get");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].body["key_id"], PLAID_WEBHOOK_KID);

    let evs = connection_events(&app, &id).await;
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["type"], "connection.status_changed");
    assert_eq!(
        evs[0]["detail"],
        json!({"reason": "reauth_required", "source": "plaid_webhook", "from": "active",
            "to": "pending_reauth", "error_code": "ITEM_LOGIN_REQUIRED"})
    );
    let hooks = outbox_of(&app, "connection.status_changed");
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["data"]["id"], id.as_str());
    assert_eq!(hooks[0]["data"]["status"], "pending_reauth");
    assert_eq!(hooks[0]["data"]["reason"], "reauth_required");
    assert!(hooks[0]["data"]["accounts"].is_array());

    // Repaired elsewhere: active again, fields cleared.
    let r = post_plaid(&app, &plaid, &item_hook(&item, "LOGIN_REPAIRED", json!({}))).await;
    assert_eq!(r.status, 200);
    let conn = connection(&app, &id).await;
    assert_eq!(
        (conn["status"].clone(), conn["error_code"].clone()),
        (json!("active"), Value::Null)
    );
    assert_eq!(plaid.requests_to("/webhook_verification_key/get").len(), 1);

    // Unknown types and unknown items are acknowledged and ignored.
    for body in [
        item_hook(&item, "WEBHOOK_UPDATE_ACKNOWLEDGED", json!({})),
        json!({"webhook_type": "TRANSACTIONS", "webhook_code": "SYNC_UPDATES_AVAILABLE",
            "item_id": item})
        .to_string()
        .into_bytes(),
        login_required("item-nobody"),
    ] {
        let r = post_plaid(&app, &plaid, &body).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert_eq!(connection(&app, &id).await["status"], "active");
    assert_eq!(connection_events(&app, &id).await.len(), 2);
}

#[actix_web::test]
async fn forged_stale_altered_and_replayed_plaid_webhooks_change_nothing() {
    let plaid = FakePlaid::start().await;
    let (app, id, item) = plaid_app_with_item(&plaid).await;
    let body = login_required(&item);

    // Forged: another key under Plaid's kid, or a kid Plaid never issued.
    let (other_der, _) = new_signing_key(PLAID_WEBHOOK_KID);
    let forged = sign_es256(&other_der, PLAID_WEBHOOK_KID, &body, now());
    let unknown_kid = sign_es256(&other_der, "attacker-kid", &body, now());
    // Stale: issued six minutes ago.
    let stale = plaid.sign_webhook_at(&body, now() - 6 * 60);
    // Altered: signed for another body.
    let altered = plaid.sign_webhook(&item_hook(&item, "LOGIN_REPAIRED", json!({})));
    // Not ES256: an HS256 token.
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iat": now(), "request_body_sha256": "x"}),
        &jsonwebtoken::EncodingKey::from_secret(b"k"),
    )
    .expect("hs256");
    for (what, jwt) in [
        ("forged", Some(forged.as_str())),
        ("unknown kid", Some(unknown_kid.as_str())),
        ("stale", Some(stale.as_str())),
        ("altered", Some(altered.as_str())),
        ("hs256", Some(hs.as_str())),
        ("garbage", Some("not.a.jwt")),
        ("missing", None),
    ] {
        let r = post_plaid_signed(&app, jwt, &body).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text);
        assert_eq!(connection(&app, &id).await["status"], "active", "{what}");
    }
    assert!(connection_events(&app, &id).await.is_empty());
    assert!(outbox_of(&app, "connection.status_changed").is_empty());

    // Replayed: the same signed request twice, with a repair in between,
    // changes the connection once.
    let jwt = plaid.sign_webhook(&body);
    assert_eq!(post_plaid_signed(&app, Some(&jwt), &body).await.status, 200);
    assert_eq!(connection(&app, &id).await["status"], "pending_reauth");
    post_plaid(&app, &plaid, &item_hook(&item, "LOGIN_REPAIRED", json!({}))).await;
    assert_eq!(connection(&app, &id).await["status"], "active");
    let again = post_plaid_signed(&app, Some(&jwt), &body).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(connection(&app, &id).await["status"], "active");
    // A second, freshly signed identical notice is a no-op on an already
    // changed connection too.
    post_plaid(&app, &plaid, &body).await;
    post_plaid(&app, &plaid, &body).await;
    let evs = connection_events(&app, &id).await;
    assert_eq!(evs.len(), 3, "{evs:?}");

    // A key Plaid retired verifies nothing (after the cache is refreshed: a
    // new server asks again).
    plaid.retire_signing_key();
    let fresh = app_with(Some(&plaid), None, |_| {}).await;
    let r = post_plaid(&fresh, &plaid, &body).await;
    assert_eq!(r.status, 401, "{}", r.text);
}

#[actix_web::test]
async fn expiring_new_accounts_and_revoked() {
    let plaid = FakePlaid::start().await;
    let (app, id, item) = plaid_app_with_item(&plaid).await;
    let expiring = item_hook(
        &item,
        "PENDING_EXPIRATION",
        json!({"consent_expiration_time": "2030-01-02T03:04:05Z"}),
    );
    assert_eq!(post_plaid(&app, &plaid, &expiring).await.status, 200);
    let conn = connection(&app, &id).await;
    assert_eq!(conn["access_expires_at"], "2030-01-02T03:04:05Z");
    assert_eq!(conn["status"], "active");
    // Sent once: a later notice with another date does not repeat it.
    let moved = item_hook(
        &item,
        "PENDING_DISCONNECT",
        json!({"reason": "INSTITUTION_TOKEN_EXPIRATION", "disconnect_time": "2030-01-01T00:00:00Z"}),
    );
    assert_eq!(post_plaid(&app, &plaid, &moved).await.status, 200);
    assert_eq!(
        connection(&app, &id).await["access_expires_at"],
        "2030-01-01T00:00:00Z"
    );
    let expiring_hooks = outbox_of(&app, "connection.access_expiring");
    assert_eq!(expiring_hooks.len(), 1);
    assert_eq!(expiring_hooks[0]["data"]["id"], id.as_str());
    assert_eq!(
        expiring_hooks[0]["data"]["access_expires_at"],
        "2030-01-02T03:04:05Z"
    );
    assert_eq!(expiring_hooks[0]["data"]["reason"], "access_expiring");

    assert_eq!(
        post_plaid(
            &app,
            &plaid,
            &item_hook(&item, "NEW_ACCOUNTS_AVAILABLE", json!({}))
        )
        .await
        .status,
        200
    );
    assert_eq!(connection(&app, &id).await["new_accounts_available"], true);

    let revoked = item_hook(
        &item,
        "USER_PERMISSION_REVOKED",
        json!({"error": {"error_code": "USER_PERMISSION_REVOKED", "error_message": "revoked"}}),
    );
    assert_eq!(post_plaid(&app, &plaid, &revoked).await.status, 200);
    let conn = connection(&app, &id).await;
    assert_eq!(conn["status"], "disconnected");
    assert_eq!(conn["error_code"], "USER_PERMISSION_REVOKED");
    // Plaid is told to stop billing for it, and the credential is wiped; a
    // relink is refused.
    assert!(
        eventually(Duration::from_secs(5), || async {
            plaid.requests_to("/item/remove").len() == 1
        })
        .await
    );
    let r = app
        .post(&format!("/api/v1/connections/{id}/relink"), &json!({}))
        .await;
    assert_eq!(r.code(), "CONNECTION_DISCONNECTED");
    // A disconnected connection never changes again.
    assert_eq!(
        post_plaid(&app, &plaid, &item_hook(&item, "LOGIN_REPAIRED", json!({})))
            .await
            .status,
        200
    );
    assert_eq!(connection(&app, &id).await["status"], "disconnected");

    let reasons: Vec<String> = outbox_of(&app, "connection.status_changed")
        .iter()
        .map(|h| s(&h["data"]["reason"]).to_owned())
        .collect();
    assert_eq!(
        reasons,
        [
            "access_expiring",
            "access_expiring",
            "new_accounts_available",
            "access_revoked"
        ]
    );
}

// ------------------------------------------------------------------ Teller

#[actix_web::test]
async fn teller_webhooks_are_verified_with_any_configured_secret() {
    let teller = FakeTeller::start().await;
    let app = app_with(None, Some(&teller), |c| {
        c.teller.webhook_signing_secrets = TELLER_SECRETS.iter().map(|s| Secret::new(*s)).collect();
    })
    .await;
    let (_, added) = link_teller(&app).await;
    let id = s(&added["connection_id"]).to_owned();
    let body = json!({"id": "wh_1", "type": "enrollment.disconnected",
        "timestamp": "2026-11-30T00:00:00Z",
        "payload": {"enrollment_id": TELLER_ENROLLMENT, "reason": "disconnected.credentials_invalid"}})
    .to_string()
    .into_bytes();

    for (what, sig) in [
        (
            "wrong secret",
            Some(teller_signature(&["nope"], now(), &body)),
        ),
        (
            "stale",
            Some(teller_signature(&TELLER_SECRETS, now() - 200, &body)),
        ),
        (
            "future",
            Some(teller_signature(&TELLER_SECRETS, now() + 200, &body)),
        ),
        (
            "altered",
            Some(teller_signature(&TELLER_SECRETS, now(), b"{}")),
        ),
        ("missing", None),
    ] {
        let r = post_teller(&app, sig.as_deref(), &body).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text);
    }
    assert_eq!(connection(&app, &id).await["status"], "active");

    // Rotation: a header carrying an unknown and the new secret's signature.
    let sig = teller_signature(&["unknown", TELLER_SECRETS[1]], now(), &body);
    let r = post_teller(&app, Some(&sig), &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let conn = connection(&app, &id).await;
    assert_eq!(conn["status"], "pending_reauth");
    assert_eq!(conn["error_code"], "disconnected.credentials_invalid");

    // Redelivery of wh_1 after a repair changes nothing.
    app.post(&format!("/api/v1/connections/{id}/relink"), &json!({}))
        .await;
    let cid = id.clone();
    app.db
        .write(move |tx| {
            breadbox::db::connections::apply_health(
                tx,
                &cid,
                &breadbox::domain::connection::Signal::Repaired,
                "test",
                breadbox::domain::time::now(),
                breadbox::db::Emit::default(),
            )
        })
        .expect("repair");
    let sig = teller_signature(&[TELLER_SECRETS[0]], now(), &body);
    assert_eq!(post_teller(&app, Some(&sig), &body).await.status, 200);
    assert_eq!(connection(&app, &id).await["status"], "active");

    // Other types are acknowledged and ignored.
    let test_hook = br#"{"id":"wh_2","type":"webhook.test","payload":{}}"#;
    let sig = teller_signature(&[TELLER_SECRETS[0]], now(), test_hook);
    assert_eq!(post_teller(&app, Some(&sig), test_hook).await.status, 200);

    // Without any configured secret every Teller webhook is refused.
    let closed = app_with(None, Some(&teller), |_| {}).await;
    let sig = teller_signature(&TELLER_SECRETS, now(), &body);
    assert_eq!(post_teller(&closed, Some(&sig), &body).await.status, 401);
}

// ------------------------------------------------------------------ pulled health

#[actix_web::test]
async fn health_polling_flips_connections_without_webhooks() {
    let plaid = FakePlaid::start().await;
    let teller = FakeTeller::start().await;
    let app = app_with(Some(&plaid), Some(&teller), |c| {
        c.connections.health_check_interval = Duration::from_secs(1);
    })
    .await;
    let (_, p) = link_plaid(&app, "public-poll").await;
    let (_, t) = link_teller(&app).await;
    let (pid, tid) = (
        s(&p["connection_id"]).to_owned(),
        s(&t["connection_id"]).to_owned(),
    );
    let item = plaid.item_ids().pop().expect("item");
    plaid.set_item_error(&item, Some("ITEM_LOGIN_REQUIRED"));
    teller.set_enrollment_error(TELLER_ENROLLMENT, Some((404, "enrollment.disconnected")));

    let flipped = eventually(Duration::from_secs(15), || async {
        connection(&app, &pid).await["status"] == "pending_reauth"
            && connection(&app, &tid).await["status"] == "pending_reauth"
    })
    .await;
    assert!(
        flipped,
        "{} {}",
        connection(&app, &pid).await,
        connection(&app, &tid).await
    );
    let ev = &connection_events(&app, &pid).await[0];
    assert_eq!(ev["detail"]["source"], "health_check");
    assert_eq!(ev["detail"]["reason"], "reauth_required");
    assert_eq!(
        connection(&app, &tid).await["error_code"],
        "enrollment.disconnected"
    );
    assert!(connection(&app, &pid).await["last_checked_at"].is_string());
    assert!(!plaid.requests_to("/item/get").is_empty());
    let hooks = outbox_of(&app, "connection.status_changed");
    assert!(hooks.len() >= 2, "{hooks:?}");

    // Fixed at the bank: the next checks bring them back.
    plaid.set_item_error(&item, None);
    teller.set_enrollment_error(TELLER_ENROLLMENT, None);
    let back = eventually(Duration::from_secs(15), || async {
        connection(&app, &pid).await["status"] == "active"
            && connection(&app, &tid).await["status"] == "active"
    })
    .await;
    assert!(back);
    let reasons: Vec<String> = connection_events(&app, &pid)
        .await
        .iter()
        .map(|e| s(&e["detail"]["reason"]).to_owned())
        .collect();
    assert_eq!(reasons, ["reauth_required", "repaired"]);
}

#[actix_web::test]
async fn no_checks_at_zero_nor_before_the_default_interval() {
    let plaid = FakePlaid::start().await;
    let off = app_with(Some(&plaid), None, |c| {
        c.connections.health_check_interval = Duration::ZERO;
    })
    .await;
    link_plaid(&off, "public-off").await;
    // The default (24 h) does not check a connection linked just now either.
    let default = app_with(Some(&plaid), None, |_| {}).await;
    link_plaid(&default, "public-default").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // /item/get was called once per link (the institution), never by a check.
    assert_eq!(plaid.requests_to("/item/get").len(), 2);
}

#[actix_web::test]
async fn cli_check_runs_a_health_check_now() {
    let plaid = FakePlaid::start().await;
    let (app, id, item) = plaid_app_with_item(&plaid).await;
    plaid.set_item_error(&item, Some("ITEM_LOCKED"));
    // A consent end within Plaid's 7-day notice is news; one months ahead is not.
    let soon = breadbox::domain::time::rfc3339(now() + 3 * 24 * 60 * 60);
    plaid.set_consent_expiration(&item, Some(&soon));
    let db = app.db_path.to_str().expect("path").to_owned();
    let base = plaid.base_url();
    let env = [
        ("BREADBOX_PLAID_CLIENT_ID", crate::fakes::PLAID_CLIENT_ID),
        ("BREADBOX_PLAID_SECRET", crate::fakes::PLAID_SECRET),
        ("BREADBOX_PLAID_BASE_URL", base.as_str()),
    ];
    let out = run_bin(
        &["--database", &db, "--json", "connections", "check", &id],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conn: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(conn["status"], "pending_reauth");
    assert_eq!(conn["error_code"], "ITEM_LOCKED");
    assert_eq!(conn["access_expires_at"], soon.as_str());
    assert!(conn["last_checked_at"].is_string());
    // The server sees the same, with the events.
    assert_eq!(connection(&app, &id).await["status"], "pending_reauth");
    let types: Vec<String> = connection_events(&app, &id)
        .await
        .iter()
        .map(|e| s(&e["type"]).to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "connection.status_changed",
            "connection.status_changed",
            "connection.access_expiring"
        ]
    );
    let missing = run_bin(
        &["--database", &db, "connections", "check", "AAAAAAAA"],
        &env,
    );
    assert!(!missing.status.success());
}

#[actix_web::test]
async fn health_checks_back_off_on_rate_limits() {
    let plaid = FakePlaid::start().await;
    let app = app_with(Some(&plaid), None, |c| {
        c.connections.health_check_interval = Duration::from_secs(1);
    })
    .await;
    let (_, p) = link_plaid(&app, "public-limited").await;
    let id = s(&p["connection_id"]).to_owned();
    plaid.fail_with("/item/get", 429, "RATE_LIMIT", None);
    let linked_calls = plaid.requests_to("/item/get").len();
    // The first check hits the limit; the checker then waits (a minute)
    // instead of asking again every second.
    assert!(
        eventually(Duration::from_secs(10), || async {
            plaid.requests_to("/item/get").len() > linked_calls
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(plaid.requests_to("/item/get").len(), linked_calls + 1);
    // A rate limit says nothing about the connection.
    let conn = connection(&app, &id).await;
    assert_eq!(conn["status"], "active");
    assert_eq!(conn["last_checked_at"], Value::Null);
}

#[actix_web::test]
async fn run_once_checks_every_due_connection() {
    let plaid = FakePlaid::start().await;
    let app = app_with(Some(&plaid), None, |c| {
        c.connections.health_check_interval = Duration::ZERO;
    })
    .await;
    let (_, a) = link_plaid(&app, "public-a").await;
    let (_, b) = link_plaid(&app, "public-b").await;
    for item in plaid.item_ids() {
        plaid.set_item_error(&item, Some("INVALID_CREDENTIALS"));
        plaid.set_consent_expiration(&item, Some("2035-01-01T00:00:00Z"));
    }
    let mut config = breadbox::config::Config::default();
    config.database.path = app.db_path.clone();
    config.plaid = plaid.plaid_config();
    let bank = breadbox::app::bank::setup(
        &config,
        &app.db,
        &breadbox::providers::ClientOptions::default(),
    )
    .expect("bank");
    let before = plaid.requests_to("/item/get").len();
    // Nothing is due yet at a one-hour interval; everything at zero.
    let n = breadbox::health_check::run_once(&app.db, &bank, Duration::from_secs(3600))
        .await
        .expect("run");
    assert_eq!(n, 0);
    let n = breadbox::health_check::run_once(&app.db, &bank, Duration::ZERO)
        .await
        .expect("run");
    assert_eq!(n, 2);
    // One provider call per connection per check.
    assert_eq!(plaid.requests_to("/item/get").len(), before + 2);
    for c in [&a, &b] {
        let conn = connection(&app, s(&c["connection_id"])).await;
        assert_eq!(conn["status"], "pending_reauth");
        assert_eq!(conn["error_code"], "INVALID_CREDENTIALS");
        // A consent end years ahead is not an expiry notice.
        assert_eq!(conn["access_expires_at"], Value::Null);
    }
}
