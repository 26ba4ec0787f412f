//! Bank-linking flows end to end against fake Plaid and Teller servers:
//! starting a widget, exchanging its result for a stored connection, races on
//! single-use sessions, provider failures and timeouts, relink (re-auth),
//! disconnect, and what ends up in the database file.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use base64::Engine as _;
use breadbox::config::{Config, Secret};
use breadbox::db::Db;
use breadbox::providers::ClientOptions;
use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::fakes::{
    FakePlaid, FakeTeller, LOGIN_REQUIRED_MESSAGE, PLAID_CLIENT_ID, PLAID_INSTITUTION_ID,
    PLAID_INSTITUTION_NAME, PLAID_SECRET, TELLER_APP_ID, TELLER_ENROLLMENT, TELLER_TOKEN,
};
use crate::helpers::{read, spawn_app_with, start_with_options, test_config, Resp, TestApp};

/// The fields a connection has on the API (CONTRACT §6), and nothing else.
const CONNECTION_FIELDS: [&str; 15] = [
    "id",
    "short_id",
    "user_id",
    "provider",
    "institution_id",
    "institution_name",
    "status",
    "error_code",
    "error_message",
    "created_at",
    "updated_at",
    "accounts",
    "access_expires_at",
    "new_accounts_available",
    "last_checked_at",
];

const EXCHANGE: &str = "/item/public_token/exchange";
const LINK_TOKEN_CREATE: &str = "/link/token/create";
const ITEM_REMOVE: &str = "/item/remove";

// ------------------------------------------------------------------ helpers

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn token(session: &Value) -> String {
    s(&session["token"]).to_owned()
}

/// Lowercase hyphenated UUID v4.
fn is_uuid(v: &str) -> bool {
    let b = v.as_bytes();
    v.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
        && b[14] == b'4'
}

fn is_short_id(v: &str) -> bool {
    v.len() == 8 && v.bytes().all(|c| c.is_ascii_alphanumeric())
}

fn plaid_body(public_token: &str) -> Value {
    json!({
        "provider": "plaid",
        "credentials": {
            "public_token": public_token,
            "institution_id": "ins_from_browser",
            "institution_name": "Bank The Browser Claims",
            "accounts": [{"id": "acc-1", "name": "Checking", "mask": "0000"}],
        },
    })
}

fn teller_body(access_token: &str, enrollment_id: &str) -> Value {
    json!({
        "provider": "teller",
        "credentials": {
            "access_token": access_token,
            "enrollment_id": enrollment_id,
            "institution_id": "browser_bank",
            "institution_name": "Bank The Browser Claims",
            "accounts": [{"id": "acc-1"}],
        },
    })
}

async fn plaid_app(plaid: &FakePlaid) -> TestApp {
    let cfg = plaid.plaid_config();
    spawn_app_with(move |c| c.plaid = cfg).await
}

async fn teller_app(teller: &FakeTeller) -> TestApp {
    let cfg = teller.teller_config();
    spawn_app_with(move |c| c.teller = cfg).await
}

async fn both_app(plaid: &FakePlaid, teller: &FakeTeller) -> TestApp {
    let (p, t) = (plaid.plaid_config(), teller.teller_config());
    spawn_app_with(move |c| {
        c.plaid = p;
        c.teller = t;
    })
    .await
}

/// `GET /_link/{token}/session`, asserting it is live (and now `active`).
async fn open(app: &TestApp, t: &str) -> Resp {
    let r = app.page_get(&format!("/_link/{t}/session")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "active", "{}", r.text);
    r
}

async fn start_provider(app: &TestApp, t: &str, provider: &str) -> Resp {
    app.page_post(
        &format!("/_link/{t}/providers/{provider}/start"),
        Some(json!({})),
    )
    .await
}

async fn add_connection(app: &TestApp, t: &str, body: Value) -> Resp {
    app.page_post(&format!("/_link/{t}/connections"), Some(body))
        .await
}

/// The session as the API shows it.
async fn api_session(app: &TestApp, id: &Value) -> Value {
    let r = app
        .get(&format!("/api/v1/connections/link/{}", s(id)))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

async fn events(app: &TestApp, id: &Value) -> Vec<Value> {
    let r = app
        .get(&format!("/api/v1/connections/link/{}/events", s(id)))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["events"].as_array().cloned().unwrap_or_default()
}

fn event_types(evs: &[Value]) -> Vec<String> {
    evs.iter().map(|e| s(&e["type"]).to_owned()).collect()
}

/// Rows in the `connections` table.
fn stored_connections(app: &TestApp) -> i64 {
    app.db
        .read(|c| Ok(c.query_row("SELECT count(*) FROM connections", [], |r| r.get(0))?))
        .expect("count connections")
}

/// Poll `check` every 20 ms until it holds or `within` passes.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The access tokens the fake Plaid's `/item/remove` received.
fn removed_tokens(plaid: &FakePlaid) -> Vec<String> {
    plaid
        .requests_to(ITEM_REMOVE)
        .iter()
        .map(|r| s(&r.body["access_token"]).to_owned())
        .collect()
}

/// Mint a picker session, open it, start Plaid and add one connection.
/// Returns (session create JSON, 201 connection JSON).
async fn link_plaid(app: &TestApp, extra: Value, public_token: &str) -> (Value, Value) {
    let session = app.mint(extra).await;
    let t = token(&session);
    open(app, &t).await;
    let started = start_provider(app, &t, "plaid").await;
    assert_eq!(started.status, 200, "{}", started.text);
    let added = add_connection(app, &t, plaid_body(public_token)).await;
    assert_eq!(added.status, 201, "{}", added.text);
    (session, added.json)
}

/// The same with Teller and its default token.
async fn link_teller(app: &TestApp) -> (Value, Value) {
    let session = app.mint(json!({})).await;
    let t = token(&session);
    open(app, &t).await;
    let started = start_provider(app, &t, "teller").await;
    assert_eq!(started.status, 200, "{}", started.text);
    let added = add_connection(app, &t, teller_body(TELLER_TOKEN, TELLER_ENROLLMENT)).await;
    assert_eq!(added.status, 201, "{}", added.text);
    (session, added.json)
}

async fn delete_as(app: &TestApp, path: &str, key: &str) -> Resp {
    read(
        app.request(reqwest::Method::DELETE, path)
            .header("X-API-Key", key)
            .send()
            .await
            .expect("send"),
    )
    .await
}

/// A page POST with a raw body and content type.
async fn page_post_raw(app: &TestApp, path: &str, content_type: &str, body: &str) -> Resp {
    read(
        app.request(reqwest::Method::POST, path)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("send"),
    )
    .await
}

// ------------------------------------------------------------------ Plaid link

#[actix_web::test]
async fn plaid_link_flow_end_to_end() {
    let plaid = FakePlaid::start().await;
    let mut cfg = plaid.plaid_config();
    cfg.products = vec!["transactions".into(), "auth".into()];
    let app = spawn_app_with(move |c| c.plaid = cfg).await;

    let session = app.mint(json!({})).await;
    let user_id = s(&session["user_id"]).to_owned();
    assert!(is_uuid(&user_id), "{session}");
    let t = token(&session);
    let page = open(&app, &t).await;
    assert_eq!(page.json["provider"], "");

    // Start: a link token from /link/token/create, for this user, new-Item mode.
    let started = start_provider(&app, &t, "plaid").await;
    assert_eq!(started.status, 200, "{}", started.text);
    assert!(
        !s(&started.json["link_token"]).is_empty(),
        "{}",
        started.text
    );
    assert_eq!(started.json["expiration"], "2026-12-31T23:59:59Z");
    let created = plaid.requests_to(LINK_TOKEN_CREATE);
    assert_eq!(created.len(), 1);
    let req = &created[0];
    assert_eq!(req.header("PLAID-CLIENT-ID"), Some(PLAID_CLIENT_ID));
    assert_eq!(req.header("PLAID-SECRET"), Some(PLAID_SECRET));
    assert_eq!(req.body["user"]["client_user_id"], user_id.as_str());
    assert_eq!(req.body["products"], json!(["transactions", "auth"]));
    assert!(req.body.get("access_token").is_none(), "{}", req.body);
    // The widget gets exactly the token Plaid issued.
    assert!(
        s(&started.json["link_token"]).starts_with("link-sandbox-"),
        "{}",
        started.text
    );

    // Exchange the widget's result.
    let added = add_connection(&app, &t, plaid_body("public-sandbox-e2e")).await;
    assert_eq!(added.status, 201, "{}", added.text);
    let conn_id = s(&added.json["connection_id"]).to_owned();
    assert!(is_uuid(&conn_id), "{}", added.text);
    assert!(is_short_id(s(&added.json["short_id"])), "{}", added.text);
    // The institution is Plaid's word (/item/get), not the browser's.
    assert_eq!(added.json["institution_name"], PLAID_INSTITUTION_NAME);
    assert_eq!(added.json["session_status"], "active");
    let exchanged = plaid.requests_to(EXCHANGE);
    assert_eq!(exchanged.len(), 1);
    assert_eq!(exchanged[0].body["public_token"], "public-sandbox-e2e");
    let issued = plaid.issued_access_tokens();
    assert_eq!(issued.len(), 1);

    // The page shows the connection on the session.
    let page = open(&app, &t).await;
    assert_eq!(page.json["result_connection_ids"], json!([conn_id]));
    assert_eq!(page.json["connections"][0]["id"], conn_id.as_str());
    assert_eq!(
        page.json["connections"][0]["institution_name"],
        PLAID_INSTITUTION_NAME
    );

    // The API lists it, without any credential.
    let list = app.get("/api/v1/connections").await;
    assert_eq!(list.status, 200, "{}", list.text);
    let conns = list.json["connections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(conns.len(), 1, "{}", list.text);
    let c = &conns[0];
    assert_eq!(c["id"], conn_id.as_str());
    assert_eq!(c["short_id"], added.json["short_id"]);
    assert_eq!(c["status"], "active");
    assert_eq!(c["user_id"], user_id.as_str());
    assert_eq!(c["provider"], "plaid");
    assert_eq!(c["institution_id"], PLAID_INSTITUTION_ID);
    assert_eq!(c["institution_name"], PLAID_INSTITUTION_NAME);
    let keys: BTreeSet<&str> = c
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(keys, CONNECTION_FIELDS.into_iter().collect(), "{c}");
    for secret in issued.iter().map(String::as_str).chain([
        "public-sandbox-e2e",
        PLAID_SECRET,
        "access_token",
        "credential",
    ]) {
        assert!(!list.text.contains(secret), "{secret} in {}", list.text);
    }

    // One connection by short id and by UUID.
    for r in [s(&added.json["short_id"]), conn_id.as_str()] {
        let one = app.get(&format!("/api/v1/connections/{r}")).await;
        assert_eq!(one.status, 200, "{}", one.text);
        assert_eq!(one.json["id"], conn_id.as_str());
        for secret in &issued {
            assert!(!one.text.contains(secret.as_str()), "{}", one.text);
        }
        assert!(!one.text.contains("credential"), "{}", one.text);
    }

    // "I'm done".
    let done = app.page_post(&format!("/_link/{t}/complete"), None).await;
    assert_eq!(done.status, 204, "{}", done.text);
    let got = api_session(&app, &session["id"]).await;
    assert_eq!(got["status"], "completed");
    assert_eq!(got["result_connection_ids"], json!([conn_id]));
    assert!(got["completed_at"].is_string(), "{got}");

    let evs = events(&app, &session["id"]).await;
    assert_eq!(
        event_types(&evs),
        [
            "session.created",
            "session.opened",
            "provider.started",
            "connection.added",
            "session.completed"
        ]
    );
    let added_ev = &evs[3];
    assert_eq!(added_ev["detail"]["connection_id"], conn_id.as_str());
    assert_eq!(
        added_ev["detail"]["institution_name"],
        PLAID_INSTITUTION_NAME
    );
}

#[actix_web::test]
async fn single_use_plaid_consumes_on_first_connection() {
    let plaid = FakePlaid::start().await;
    let app = plaid_app(&plaid).await;
    let (session, added) = link_plaid(&app, json!({"single_use": true}), "public-one").await;
    assert_eq!(added["session_status"], "consumed");

    let got = api_session(&app, &session["id"]).await;
    assert_eq!(got["status"], "consumed");
    assert!(got["completed_at"].is_string(), "{got}");
    assert_eq!(
        got["result_connection_ids"],
        json!([added["connection_id"]])
    );

    let again = add_connection(&app, &token(&session), plaid_body("public-two")).await;
    assert_eq!(
        (again.status, again.code()),
        (410, "CONSUMED"),
        "{}",
        again.text
    );
    assert_eq!(stored_connections(&app), 1);
    // The dead token is refused before the provider is asked anything.
    assert_eq!(plaid.requests_to(EXCHANGE).len(), 1);
    let types = event_types(&events(&app, &session["id"]).await);
    assert!(
        types.ends_with(&["connection.added".into(), "session.consumed".into()]),
        "{types:?}"
    );
}

// ------------------------------------------------------------------ Teller

#[actix_web::test]
async fn teller_link_flow_verifies_enrollment() {
    let teller = FakeTeller::start().await;
    let app = teller_app(&teller).await;
    let session = app.mint(json!({})).await;
    let t = token(&session);
    open(&app, &t).await;

    let started = start_provider(&app, &t, "teller").await;
    assert_eq!(started.status, 200, "{}", started.text);
    assert_eq!(
        started.json,
        json!({"application_id": TELLER_APP_ID, "environment": "sandbox", "enrollment_id": null})
    );

    let added = add_connection(&app, &t, teller_body(TELLER_TOKEN, TELLER_ENROLLMENT)).await;
    assert_eq!(added.status, 201, "{}", added.text);
    assert!(is_uuid(s(&added.json["connection_id"])), "{}", added.text);
    assert_eq!(added.json["institution_name"], "Chase");
    assert_eq!(added.json["session_status"], "active");

    let seen = teller.requests_to("/accounts");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{TELLER_TOKEN}:"));
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );

    let one = app
        .get(&format!(
            "/api/v1/connections/{}",
            s(&added.json["connection_id"])
        ))
        .await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.json["provider"], "teller");
    assert_eq!(one.json["institution_id"], "chase");
    assert_eq!(one.json["institution_name"], "Chase");
    assert_eq!(one.json["user_id"], session["user_id"]);
    assert!(!one.text.contains(TELLER_TOKEN), "{}", one.text);
}

#[actix_web::test]
async fn teller_wrong_enrollment_is_refused() {
    let teller = FakeTeller::start().await;
    teller.add_token("token_other_person", "enr_other");
    let app = teller_app(&teller).await;
    let session = app.mint(json!({})).await;
    let t = token(&session);
    open(&app, &t).await;

    // A real token, but not one of this enrollment.
    let r = add_connection(
        &app,
        &t,
        teller_body("token_other_person", TELLER_ENROLLMENT),
    )
    .await;
    assert_eq!((r.status, r.code()), (502, "PROVIDER_ERROR"), "{}", r.text);
    assert!(!r.text.contains("token_other_person"), "{}", r.text);
    assert_eq!(stored_connections(&app), 0);
    assert_eq!(api_session(&app, &session["id"]).await["status"], "active");
    assert_eq!(
        api_session(&app, &session["id"]).await["result_connection_ids"],
        json!([])
    );
}

#[actix_web::test]
async fn teller_double_submit_keeps_the_stored_enrollment() {
    // The page posts the same Teller result several times at once (a
    // double-click, a retried request) on a single-use session. One wins; the
    // losers must not remove at Teller the enrollment the winner just stored:
    // the clean-up is only for connections that could not be recorded.
    let teller = FakeTeller::start().await;
    let app = teller_app(&teller).await;
    let session = app.mint(json!({"single_use": true})).await;
    let t = token(&session);
    open(&app, &t).await;

    let results = join_all(
        (0..10).map(|_| add_connection(&app, &t, teller_body(TELLER_TOKEN, TELLER_ENROLLMENT))),
    )
    .await;
    let wins = results.iter().filter(|r| r.status == 201).count();
    let consumed = results
        .iter()
        .filter(|r| r.status == 410 && r.code() == "CONSUMED")
        .count();
    assert_eq!((wins, consumed), (1, 9));
    assert_eq!(stored_connections(&app), 1);
    let deletes: Vec<String> = teller
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path)
        .collect();
    assert!(
        deletes.is_empty(),
        "the stored enrollment was deleted at Teller: {deletes:?}"
    );
}

// ------------------------------------------------------------------ provider failures

#[actix_web::test]
async fn plaid_error_becomes_502_with_display_message() {
    let plaid = FakePlaid::start().await;
    let app = plaid_app(&plaid).await;
    let session = app.mint(json!({"single_use": true})).await;
    let t = token(&session);
    open(&app, &t).await;

    plaid.fail_login_required(EXCHANGE);
    let r = add_connection(&app, &t, plaid_body("public-fails")).await;
    assert_eq!((r.status, r.code()), (502, "PROVIDER_ERROR"), "{}", r.text);
    assert_eq!(r.json["error"]["message"], LOGIN_REQUIRED_MESSAGE);
    assert!(!r.text.contains(PLAID_SECRET), "{}", r.text);
    assert_eq!(stored_connections(&app), 0);
    let got = api_session(&app, &session["id"]).await;
    assert_eq!(got["status"], "active");
    assert_eq!(got["result_connection_ids"], json!([]));

    // Not terminal: the person tries again and it works.
    plaid.reset(EXCHANGE);
    let retry = add_connection(&app, &t, plaid_body("public-works")).await;
    assert_eq!(retry.status, 201, "{}", retry.text);
    assert_eq!(retry.json["session_status"], "consumed");
    assert_eq!(stored_connections(&app), 1);
}

#[actix_web::test]
async fn plaid_start_failure_becomes_502() {
    let plaid = FakePlaid::start().await;
    let app = plaid_app(&plaid).await;
    let session = app.mint(json!({})).await;
    let t = token(&session);
    open(&app, &t).await;

    plaid.fail_with(LINK_TOKEN_CREATE, 500, "INTERNAL_SERVER_ERROR", None);
    let r = start_provider(&app, &t, "plaid").await;
    assert_eq!((r.status, r.code()), (502, "PROVIDER_ERROR"), "{}", r.text);
    assert!(!s(&r.json["error"]["message"]).is_empty(), "{}", r.text);
    assert!(!r.text.contains(PLAID_SECRET), "{}", r.text);
    assert_eq!(api_session(&app, &session["id"]).await["status"], "active");

    plaid.reset(LINK_TOKEN_CREATE);
    let again = start_provider(&app, &t, "plaid").await;
    assert_eq!(again.status, 200, "{}", again.text);
}

#[actix_web::test]
async fn hanging_provider_times_out_and_stores_nothing() {
    let plaid = FakePlaid::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(dir.path());
    config.plaid = plaid.plaid_config();
    let opts = ClientOptions {
        timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    };
    let app = start_with_options(config, dir, &opts).await;
    let session = app.mint(json!({})).await;
    let t = token(&session);
    open(&app, &t).await;

    plaid.hang(EXCHANGE);
    let began = Instant::now();
    let r = add_connection(&app, &t, plaid_body("public-slow")).await;
    let took = began.elapsed();
    assert_eq!((r.status, r.code()), (502, "PROVIDER_ERROR"), "{}", r.text);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(plaid.requests_to(EXCHANGE).len(), 1);
    assert_eq!(stored_connections(&app), 0);
    assert_eq!(api_session(&app, &session["id"]).await["status"], "active");
}

// ------------------------------------------------------------------ races

#[actix_web::test]
async fn twenty_way_race_on_single_use() {
    let plaid = FakePlaid::start().await;
    // Hold every request after its exchange, so that all twenty are past the
    // token check and have an access token before the first one is recorded.
    // (/item/get failing is tolerated: the browser's institution is used.)
    plaid.hang_for("/item/get", Duration::from_secs(1));
    let app = plaid_app(&plaid).await;
    let session = app.mint(json!({"single_use": true})).await;
    let t = token(&session);
    open(&app, &t).await;

    let bodies: Vec<Value> = (0..20)
        .map(|i| plaid_body(&format!("public-race-{i}")))
        .collect();
    let results = join_all(bodies.into_iter().map(|b| add_connection(&app, &t, b))).await;
    let winners: Vec<&Resp> = results.iter().filter(|r| r.status == 201).collect();
    let consumed = results
        .iter()
        .filter(|r| r.status == 410 && r.code() == "CONSUMED")
        .count();
    assert_eq!(
        (winners.len(), consumed),
        (1, 19),
        "{:?}",
        results
            .iter()
            .map(|r| (r.status, r.code()))
            .collect::<Vec<_>>()
    );
    let winner = winners[0];
    assert_eq!(winner.json["session_status"], "consumed");
    assert_eq!(stored_connections(&app), 1);
    let got = api_session(&app, &session["id"]).await;
    assert_eq!(got["status"], "consumed");
    assert_eq!(
        got["result_connection_ids"],
        json!([winner.json["connection_id"]])
    );

    // Every exchanged-but-unrecorded Item is removed at Plaid again.
    let issued: BTreeSet<String> = plaid.issued_access_tokens().into_iter().collect();
    assert_eq!(issued.len(), 20);
    assert!(
        eventually(Duration::from_secs(5), || async {
            plaid.requests_to(ITEM_REMOVE).len() >= 19
        })
        .await
    );
    let removed_list = removed_tokens(&plaid);
    assert_eq!(removed_list.len(), 19, "{removed_list:?}");
    let removed: BTreeSet<String> = removed_list.into_iter().collect();
    assert_eq!(removed.len(), 19, "a token was removed twice");
    assert!(removed.is_subset(&issued), "{removed:?} vs {issued:?}");
    let kept: Vec<&String> = issued.difference(&removed).collect();
    assert_eq!(kept.len(), 1);

    // The kept token is the recorded one: the fake numbers access tokens and
    // item ids alike (access-sandbox-N / item-N), and the row keeps the item id.
    let conn_id = s(&winner.json["connection_id"]).to_owned();
    let external_id: String = app
        .db
        .read(move |c| {
            Ok(c.query_row(
                "SELECT external_id FROM connections WHERE id = ?1",
                [&conn_id],
                |r| r.get(0),
            )?)
        })
        .expect("read external id");
    let n = external_id.strip_prefix("item-").unwrap_or("?");
    assert_eq!(kept[0].as_str(), format!("access-sandbox-{n}"));
}

// ------------------------------------------------------------------ relink

#[actix_web::test]
async fn relink_plaid_update_mode() {
    let plaid = FakePlaid::start().await;
    let app = plaid_app(&plaid).await;
    let (first, added) = link_plaid(&app, json!({}), "public-relink").await;
    let conn_id = s(&added["connection_id"]).to_owned();
    let done = app
        .page_post(&format!("/_link/{}/complete", token(&first)), None)
        .await;
    assert_eq!(done.status, 204, "{}", done.text);
    // The bank wants a new sign-in.
    let cid = conn_id.clone();
    app.db
        .write(move |tx| {
            tx.execute(
                "UPDATE connections SET status = 'pending_reauth',
                    error_code = 'ITEM_LOGIN_REQUIRED', error_message = 'sign in again'
                 WHERE id = ?1",
                [&cid],
            )?;
            Ok(())
        })
        .expect("mark pending_reauth");

    let r = app
        .post(&format!("/api/v1/connections/{conn_id}/relink"), &json!({}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let relink = r.json;
    assert_eq!(relink["action"], "relink");
    assert_eq!(relink["single_use"], true);
    assert_eq!(relink["provider"], "plaid");
    assert_eq!(relink["connection_id"], conn_id.as_str());
    assert_eq!(relink["user_id"], first["user_id"]);
    assert_eq!(relink["status"], "pending");
    let t = token(&relink);

    let page = open(&app, &t).await;
    assert_eq!(page.json["action"], "relink");
    let started = start_provider(&app, &t, "plaid").await;
    assert_eq!(started.status, 200, "{}", started.text);
    assert!(
        !s(&started.json["link_token"]).is_empty(),
        "{}",
        started.text
    );
    let created = plaid.requests_to(LINK_TOKEN_CREATE);
    let update = created.last().expect("a link token request");
    let issued = plaid.issued_access_tokens();
    assert_eq!(issued.len(), 1);
    assert_eq!(update.body["access_token"], issued[0].as_str());
    assert!(update.body.get("products").is_none(), "{}", update.body);
    assert_eq!(update.body["user"]["client_user_id"], first["user_id"]);

    // A relink session cannot add a new bank.
    let exchanges = plaid.requests_to(EXCHANGE).len();
    let refused = add_connection(&app, &t, plaid_body("public-new")).await;
    assert_eq!(
        (refused.status, refused.code()),
        (403, "FORBIDDEN"),
        "{}",
        refused.text
    );
    assert_eq!(plaid.requests_to(EXCHANGE).len(), exchanges);
    assert_eq!(stored_connections(&app), 1);

    let re = app
        .page_post(&format!("/_link/{t}/reauth-complete"), Some(json!({})))
        .await;
    assert_eq!(re.status, 204, "{}", re.text);
    let got = api_session(&app, &relink["id"]).await;
    assert_eq!(got["status"], "consumed");
    assert_eq!(got["result_connection_ids"], json!([conn_id]));
    assert!(got["completed_at"].is_string(), "{got}");
    let conn = app.get(&format!("/api/v1/connections/{conn_id}")).await;
    assert_eq!(conn.json["status"], "active", "{}", conn.text);
    assert_eq!(conn.json["error_code"], Value::Null, "{}", conn.text);
    assert_eq!(conn.json["error_message"], Value::Null, "{}", conn.text);
    let types = event_types(&events(&app, &relink["id"]).await);
    assert!(
        types.ends_with(&[
            "connection.reauthenticated".into(),
            "session.consumed".into()
        ]),
        "{types:?}"
    );
    // Used up.
    let twice = app
        .page_post(&format!("/_link/{t}/reauth-complete"), None)
        .await;
    assert_eq!(
        (twice.status, twice.code()),
        (410, "CONSUMED"),
        "{}",
        twice.text
    );
}

#[actix_web::test]
async fn link_session_cannot_reauth_complete() {
    let plaid = FakePlaid::start().await;
    let app = plaid_app(&plaid).await;
    let session = app.mint(json!({})).await;
    let t = token(&session);
    open(&app, &t).await;
    let r = app
        .page_post(&format!("/_link/{t}/reauth-complete"), None)
        .await;
    assert_eq!((r.status, r.code()), (403, "FORBIDDEN"), "{}", r.text);
    assert_eq!(api_session(&app, &session["id"]).await["status"], "active");
}

#[actix_web::test]
async fn relink_needs_a_known_connection_and_full_access() {
    let plaid = FakePlaid::start().await;
    let app = plaid_app(&plaid).await;
    let (_, added) = link_plaid(&app, json!({}), "public-x").await;
    let conn_id = s(&added["connection_id"]).to_owned();

    let unknown = app
        .post(
            "/api/v1/connections/00000000-0000-4000-8000-000000000000/relink",
            &json!({}),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (404, "NOT_FOUND"),
        "{}",
        unknown.text
    );
    let unknown_short = app
        .post("/api/v1/connections/ZZZZZZZZ/relink", &json!({}))
        .await;
    assert_eq!(unknown_short.status, 404, "{}", unknown_short.text);

    let read_only = app
        .post_as(
            &format!("/api/v1/connections/{conn_id}/relink"),
            &json!({}),
            &app.read_key,
        )
        .await;
    assert_eq!(
        (read_only.status, read_only.code()),
        (403, "INSUFFICIENT_SCOPE"),
        "{}",
        read_only.text
    );
    let sessions = app.get("/api/v1/connections/link").await;
    assert_eq!(
        sessions.json["sessions"].as_array().map(Vec::len),
        Some(1),
        "{}",
        sessions.text
    );
}

#[actix_web::test]
async fn relink_teller_start_returns_enrollment_id() {
    let teller = FakeTeller::start().await;
    let app = teller_app(&teller).await;
    let (_, added) = link_teller(&app).await;
    let short = s(&added["short_id"]).to_owned();

    let r = app
        .post(&format!("/api/v1/connections/{short}/relink"), &json!({}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["provider"], "teller");
    assert_eq!(r.json["connection_id"], added["connection_id"]);
    let t = token(&r.json);
    open(&app, &t).await;
    let started = start_provider(&app, &t, "teller").await;
    assert_eq!(started.status, 200, "{}", started.text);
    assert_eq!(
        started.json,
        json!({
            "application_id": TELLER_APP_ID,
            "environment": "sandbox",
            "enrollment_id": TELLER_ENROLLMENT,
        })
    );
    assert!(!started.text.contains(TELLER_TOKEN), "{}", started.text);
}

// ------------------------------------------------------------------ provider rules

#[actix_web::test]
async fn pinned_provider_is_enforced() {
    let plaid = FakePlaid::start().await;
    let teller = FakeTeller::start().await;
    let app = both_app(&plaid, &teller).await;
    let session = app.mint(json!({"provider": "teller"})).await;
    let t = token(&session);
    open(&app, &t).await;

    let providers = app.page_get(&format!("/_link/{t}/providers")).await;
    assert_eq!(
        providers.json,
        json!({"providers": [{"name": "teller", "display_name": "Teller"}]})
    );
    let r = start_provider(&app, &t, "plaid").await;
    assert_eq!((r.status, r.code()), (403, "FORBIDDEN"), "{}", r.text);
    let r = add_connection(&app, &t, plaid_body("public-pinned")).await;
    assert_eq!((r.status, r.code()), (403, "FORBIDDEN"), "{}", r.text);
    let r = start_provider(&app, &t, "bogus").await;
    assert_eq!((r.status, r.code()), (404, "NOT_FOUND"), "{}", r.text);
    assert!(plaid.requests().is_empty(), "{:?}", plaid.requests());
    assert_eq!(stored_connections(&app), 0);
    // The pinned provider itself works.
    let ok = start_provider(&app, &t, "teller").await;
    assert_eq!(ok.status, 200, "{}", ok.text);
}

#[actix_web::test]
async fn unconfigured_provider_is_refused() {
    let plaid = FakePlaid::start().await;
    let app = plaid_app(&plaid).await;
    let session = app.mint(json!({})).await;
    let t = token(&session);
    open(&app, &t).await;

    let r = start_provider(&app, &t, "teller").await;
    assert_eq!(
        (r.status, r.code()),
        (400, "PROVIDER_NOT_CONFIGURED"),
        "{}",
        r.text
    );
    let r = add_connection(&app, &t, teller_body(TELLER_TOKEN, TELLER_ENROLLMENT)).await;
    assert_eq!(
        (r.status, r.code()),
        (400, "PROVIDER_NOT_CONFIGURED"),
        "{}",
        r.text
    );
    assert_eq!(stored_connections(&app), 0);
    assert_eq!(api_session(&app, &session["id"]).await["status"], "active");
}

// ------------------------------------------------------------------ disconnect

#[actix_web::test]
async fn disconnect_wipes_credential_and_tells_provider() {
    let plaid = FakePlaid::start().await;
    let app = plaid_app(&plaid).await;
    let (_, added) = link_plaid(&app, json!({}), "public-bye").await;
    let conn_id = s(&added["connection_id"]).to_owned();
    let issued = plaid.issued_access_tokens();
    assert_eq!(issued.len(), 1);
    let path = format!("/api/v1/connections/{conn_id}");

    let read_only = delete_as(&app, &path, &app.read_key).await;
    assert_eq!(
        (read_only.status, read_only.code()),
        (403, "INSUFFICIENT_SCOPE"),
        "{}",
        read_only.text
    );
    assert_eq!(app.get(&path).await.json["status"], "active");
    let unknown = app
        .delete("/api/v1/connections/00000000-0000-4000-8000-000000000000")
        .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (404, "NOT_FOUND"),
        "{}",
        unknown.text
    );

    let r = app.delete(&path).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["id"], conn_id.as_str());
    assert_eq!(r.json["status"], "disconnected");
    assert!(!r.text.contains(issued[0].as_str()), "{}", r.text);

    let cid = conn_id.clone();
    let credential_is_null: bool = app
        .db
        .read(move |c| {
            Ok(c.query_row(
                "SELECT credential IS NULL FROM connections WHERE id = ?1",
                [&cid],
                |r| r.get(0),
            )?)
        })
        .expect("read credential");
    assert!(credential_is_null, "the credential was not wiped");

    assert!(
        eventually(Duration::from_secs(5), || async {
            removed_tokens(&plaid).contains(&issued[0])
        })
        .await,
        "Plaid /item/remove never got the access token: {:?}",
        plaid.requests_to(ITEM_REMOVE)
    );

    let relink = app.post(&format!("{path}/relink"), &json!({})).await;
    assert_eq!(
        (relink.status, relink.code()),
        (409, "CONNECTION_DISCONNECTED"),
        "{}",
        relink.text
    );
    let list = app.get("/api/v1/connections?status=disconnected").await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.json["connections"][0]["id"], conn_id.as_str());
    assert_eq!(list.json["connections"].as_array().map(Vec::len), Some(1));
    let active = app.get("/api/v1/connections?status=active").await;
    assert_eq!(active.json["connections"], json!([]), "{}", active.text);
}

#[actix_web::test]
async fn disconnect_teller_deletes_the_enrollment() {
    let teller = FakeTeller::start().await;
    let app = teller_app(&teller).await;
    let (_, added) = link_teller(&app).await;
    let r = app
        .delete(&format!(
            "/api/v1/connections/{}",
            s(&added["connection_id"])
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "disconnected");
    let path = format!("/enrollments/{TELLER_ENROLLMENT}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            teller
                .requests_to(&path)
                .iter()
                .any(|r| r.method == "DELETE")
        })
        .await,
        "{:?}",
        teller.requests()
    );
}

// ------------------------------------------------------------------ storage

fn file_contains(bytes: &[u8], needle: &str) -> bool {
    let n = needle.as_bytes();
    !n.is_empty() && bytes.windows(n.len()).any(|w| w == n)
}

#[actix_web::test]
async fn database_holds_no_plaintext_access_token() {
    let plaid = FakePlaid::start().await;
    let teller = FakeTeller::start().await;
    let app = both_app(&plaid, &teller).await;
    let (plaid_session, _) = link_plaid(&app, json!({}), "public-stored").await;
    let (teller_session, _) = link_teller(&app).await;
    assert_eq!(stored_connections(&app), 2);

    let mut secrets: Vec<String> = plaid.issued_access_tokens();
    assert_eq!(secrets.len(), 1);
    secrets.push(TELLER_TOKEN.to_owned());
    // Plaintext link tokens are never stored either.
    secrets.push(token(&plaid_session));
    secrets.push(token(&teller_session));

    let mut files = vec![app.db_path.clone()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut p = app.db_path.clone().into_os_string();
        p.push(suffix);
        files.push(p.into());
    }
    let mut read_any = false;
    for file in &files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        read_any = true;
        for secret in &secrets {
            assert!(
                !file_contains(&bytes, secret),
                "{secret} found in plaintext in {}",
                file.display()
            );
        }
    }
    assert!(
        read_any,
        "no database file found at {}",
        app.db_path.display()
    );
    // Sanity: the search does find what is there in plaintext.
    let bytes = std::fs::read(&app.db_path).unwrap_or_default();
    let wal = std::fs::read(files[1].as_path()).unwrap_or_default();
    assert!(
        file_contains(&bytes, PLAID_INSTITUTION_NAME)
            || file_contains(&wal, PLAID_INSTITUTION_NAME),
        "the byte search found nothing at all"
    );

    // The credentials are sealed with this database's key: a server started
    // on the same file with another key refuses to start.
    let mut other: Config = test_config(app.db_path.parent().expect("db dir"));
    other.database.path = app.db_path.clone();
    other.plaid = plaid.plaid_config();
    other.security.encryption_key = Some(Secret::new("ab".repeat(32)));
    let db = Db::open(&other.database.path, other.database.synchronous.as_pragma())
        .expect("open database again");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    match breadbox::build(other, db, listener) {
        Ok(_) => panic!("a server with the wrong encryption key started"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("encryption key"), "{msg}");
        }
    }
    // The running server still works with its own key (relink decrypts).
    let conn = app.get("/api/v1/connections").await;
    let plaid_conn = conn.json["connections"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["provider"] == "plaid"))
        .cloned()
        .unwrap_or_default();
    let relink = app
        .post(
            &format!("/api/v1/connections/{}/relink", s(&plaid_conn["id"])),
            &json!({}),
        )
        .await;
    assert_eq!(relink.status, 201, "{}", relink.text);
    let t = token(&relink.json);
    open(&app, &t).await;
    let started = start_provider(&app, &t, "plaid").await;
    assert_eq!(started.status, 200, "{}", started.text);
    let last = plaid.requests_to(LINK_TOKEN_CREATE);
    assert_eq!(
        last.last().map(|r| r.body["access_token"].clone()),
        Some(json!(secrets[0]))
    );
}

// ------------------------------------------------------------------ token gate

#[actix_web::test]
async fn token_errors_precede_provider_checks() {
    // No provider configured at all: a provider check would say 400.
    let app = spawn_app_with(|_| {}).await;
    let unknown = "AAAAAAAAAAAAAAAAAAAAAA";
    let r = start_provider(&app, unknown, "plaid").await;
    assert_eq!((r.status, r.code()), (401, "INVALID_TOKEN"), "{}", r.text);
    let r = start_provider(&app, unknown, "bogus").await;
    assert_eq!((r.status, r.code()), (401, "INVALID_TOKEN"), "{}", r.text);

    let session = app.mint(json!({})).await;
    let t = token(&session);
    open(&app, &t).await;
    app.expire_now(s(&session["id"]));
    let r = page_post_raw(
        &app,
        &format!("/_link/{t}/connections"),
        "application/json",
        "{not json",
    )
    .await;
    assert_eq!((r.status, r.code()), (410, "EXPIRED"), "{}", r.text);
    let r = page_post_raw(&app, &format!("/_link/{t}/connections"), "text/plain", "x").await;
    assert_eq!((r.status, r.code()), (410, "EXPIRED"), "{}", r.text);
    let r = start_provider(&app, &t, "plaid").await;
    assert_eq!((r.status, r.code()), (410, "EXPIRED"), "{}", r.text);
    let r = app
        .page_post(&format!("/_link/{t}/reauth-complete"), None)
        .await;
    assert_eq!((r.status, r.code()), (410, "EXPIRED"), "{}", r.text);

    // A canceled session: 410 GONE, again before the body or provider checks.
    let canceled = app.mint(json!({})).await;
    let t = token(&canceled);
    let c = app.page_post(&format!("/_link/{t}/cancel"), None).await;
    assert_eq!(c.status, 204, "{}", c.text);
    let r = page_post_raw(
        &app,
        &format!("/_link/{t}/connections"),
        "application/json",
        "[]",
    )
    .await;
    assert_eq!((r.status, r.code()), (410, "GONE"), "{}", r.text);
    let r = start_provider(&app, &t, "teller").await;
    assert_eq!((r.status, r.code()), (410, "GONE"), "{}", r.text);
}
