//! Connection lifecycle (CONTRACT §10, §5 provider errors) against the fake
//! providers: accounts on connections, the duplicate guard and its race,
//! provider errors the agent hears about, the connection timeline API, the
//! CLI, and the Plaid OAuth return path.

use std::future::Future;
use std::time::{Duration, Instant};

use breadbox::config::{Config, Secret};
use futures_util::future::join_all;
use serde_json::{json, Value};
use url::Url;

use crate::fakes::{FakePlaid, FakeTeller, PLAID_INSTITUTION_ID, TELLER_ENROLLMENT, TELLER_TOKEN};
use crate::helpers::{run_bin, spawn_app_with, Resp, TestApp};

/// Outbound webhooks on, to a receiver that is not there: the messages stay
/// in the outbox, where the tests read them.
const WH_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// A server using the given fakes, with outbound webhooks queued.
pub async fn app_with(
    plaid: Option<&FakePlaid>,
    teller: Option<&FakeTeller>,
    adjust: impl FnOnce(&mut Config),
) -> TestApp {
    let p = plaid.map(FakePlaid::plaid_config);
    let t = teller.map(FakeTeller::teller_config);
    spawn_app_with(move |c| {
        if let Some(p) = p {
            c.plaid = p;
        }
        if let Some(t) = t {
            c.teller = t;
        }
        c.webhooks.url = Some(Url::parse("http://127.0.0.1:9/hook").expect("url"));
        c.webhooks.secret = Some(Secret::new(WH_SECRET));
        adjust(c);
    })
    .await
}

/// A live (opened) link session for `user_id`; returns (session JSON, token).
pub async fn session_for(app: &TestApp, user_id: &str, extra: Value) -> (Value, String) {
    let mut body = json!({ "user_id": user_id });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let r = app.post("/api/v1/connections/link", &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let t = s(&r.json["token"]).to_owned();
    let opened = app.page_get(&format!("/_link/{t}/session")).await;
    assert_eq!(opened.status, 200, "{}", opened.text);
    (r.json, t)
}

pub fn plaid_body(public_token: &str, masks: &[&str]) -> Value {
    let accounts: Vec<Value> = masks
        .iter()
        .map(|m| {
            json!({"id": format!("w-{m}"), "name": "Checking", "mask": m,
            "type": "depository", "subtype": "checking", "verification_status": null})
        })
        .collect();
    json!({
        "provider": "plaid",
        "credentials": {
            "public_token": public_token,
            "institution_id": PLAID_INSTITUTION_ID,
            "institution_name": "First Platypus Bank",
            "accounts": accounts,
        },
    })
}

pub fn teller_body(access_token: &str, enrollment_id: &str) -> Value {
    json!({
        "provider": "teller",
        "credentials": {
            "access_token": access_token,
            "enrollment_id": enrollment_id,
            "institution_name": "Chase",
        },
    })
}

pub async fn add(app: &TestApp, t: &str, body: Value) -> Resp {
    app.page_post(&format!("/_link/{t}/connections"), Some(body))
        .await
}

/// Link one Plaid Item for a new user; returns (user id, 201 body).
pub async fn link_plaid(app: &TestApp, public_token: &str) -> (String, Value) {
    let user = app.create_user("Ana").await;
    let uid = s(&user["id"]).to_owned();
    let (_, t) = session_for(app, &uid, json!({})).await;
    let r = add(app, &t, plaid_body(public_token, &[])).await;
    assert_eq!(r.status, 201, "{}", r.text);
    (uid, r.json)
}

/// Link the fake Teller's default enrollment for a new user.
pub async fn link_teller(app: &TestApp) -> (String, Value) {
    let user = app.create_user("Ana").await;
    let uid = s(&user["id"]).to_owned();
    let (_, t) = session_for(app, &uid, json!({})).await;
    let r = add(app, &t, teller_body(TELLER_TOKEN, TELLER_ENROLLMENT)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    (uid, r.json)
}

pub async fn connection(app: &TestApp, id: &str) -> Value {
    let r = app.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

/// Every event of a connection's timeline (following `next_cursor`).
pub async fn connection_events(app: &TestApp, id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = app
            .get(&format!("/api/v1/connections/{id}/events?cursor={cursor}"))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        out.extend(r.json["events"].as_array().cloned().unwrap_or_default());
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => return out,
        }
    }
}

pub async fn session_events(app: &TestApp, session_id: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/api/v1/connections/link/{session_id}/events"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["events"].as_array().cloned().unwrap_or_default()
}

/// The queued outbound webhooks `(type, body)`, oldest first.
pub fn outbox(app: &TestApp) -> Vec<(String, Value)> {
    app.db
        .read(|c| {
            let mut stmt =
                c.prepare("SELECT event_type, payload FROM webhook_outbox ORDER BY seq")?;
            let rows = stmt.query_map([], |r| {
                let body: String = r.get(1)?;
                Ok((
                    r.get(0)?,
                    serde_json::from_str(&body).unwrap_or(Value::Null),
                ))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .expect("outbox")
}

pub fn outbox_of(app: &TestApp, kind: &str) -> Vec<Value> {
    outbox(app)
        .into_iter()
        .filter(|(k, _)| k == kind)
        .map(|(_, v)| v)
        .collect()
}

/// Rows in the `connections` table.
pub fn stored_connections(app: &TestApp) -> i64 {
    app.db
        .read(|c| Ok(c.query_row("SELECT count(*) FROM connections", [], |r| r.get(0))?))
        .expect("count")
}

/// Poll `check` every 50 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn masks(conn: &Value) -> Vec<String> {
    conn["accounts"]
        .as_array()
        .map(|a| a.iter().map(|x| s(&x["mask"]).to_owned()).collect())
        .unwrap_or_default()
}

// ------------------------------------------------------------------ accounts

#[actix_web::test]
async fn accounts_are_stored_and_shown_everywhere() {
    let plaid = FakePlaid::start().await;
    let teller = FakeTeller::start().await;
    let app = app_with(Some(&plaid), Some(&teller), |_| {}).await;
    plaid.set_accounts(&[("Everyday Checking", "4321"), ("Rainy Day", "8765")]);

    let user = app.create_user("Ana").await;
    let (session, t) = session_for(&app, s(&user["id"]), json!({})).await;
    let r = add(&app, &t, plaid_body("public-acc", &["4321"])).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let want = json!([
        {"id": "acc-0", "name": "Everyday Checking", "mask": "4321", "type": "depository", "subtype": "checking"},
        {"id": "acc-1", "name": "Rainy Day", "mask": "8765", "type": "depository", "subtype": "savings"},
    ]);
    assert_eq!(r.json["accounts"], want, "{}", r.text);
    assert_eq!(plaid.requests_to("/accounts/get").len(), 1);
    let id = s(&r.json["connection_id"]).to_owned();

    // The connection API, with the health fields.
    let conn = connection(&app, &id).await;
    assert_eq!(conn["accounts"], want);
    assert_eq!(conn["access_expires_at"], Value::Null);
    assert_eq!(conn["new_accounts_available"], false);
    assert_eq!(conn["last_checked_at"], Value::Null);
    // No balances are kept.
    assert!(!conn.to_string().contains("balances"));

    // The page's "linked so far" list.
    let page = app.page_get(&format!("/_link/{t}/session")).await;
    assert_eq!(
        page.json["connections"][0]["accounts"], want,
        "{}",
        page.text
    );
    assert_eq!(
        page.json["connections"][0]["institution_name"],
        "First Platypus Bank"
    );

    // The connection_added webhook.
    let added = outbox_of(&app, "link_session.connection_added");
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["data"]["id"], session["id"]);
    assert_eq!(added[0]["data"]["connection"]["accounts"], want);

    // Teller: the accounts of the enrollment, masks from last_four.
    let (_, tel) = link_teller(&app).await;
    assert_eq!(masks(&tel), ["1234", "5678"], "{tel}");
    assert_eq!(tel["accounts"][0]["type"], "depository");
    assert_eq!(tel["accounts"][0]["subtype"], "checking");

    // The CLI shows them too.
    let db = app.db_path.to_str().expect("path").to_owned();
    let out = run_bin(
        &["--database", &db, "--json", "connections", "get", &id],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(cli["accounts"], want);
    let out = run_bin(&["--database", &db, "connections", "get", &id], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Everyday Checking ••4321"), "{text}");
    assert!(text.contains("status:                 active"), "{text}");
}

#[actix_web::test]
async fn relink_refreshes_accounts_and_reactivates() {
    let plaid = FakePlaid::start().await;
    let app = app_with(Some(&plaid), None, |_| {}).await;
    plaid.set_accounts(&[("Checking", "1111")]);
    let (_, added) = link_plaid(&app, "public-relink").await;
    let id = s(&added["connection_id"]).to_owned();
    let item = plaid.item_ids().pop().expect("item");
    // The bank wants a new sign-in, pushed by Plaid.
    let body = json!({"webhook_type": "ITEM", "webhook_code": "ERROR", "item_id": item,
        "error": {"error_code": "ITEM_LOGIN_REQUIRED", "error_message": "login"},
        "environment": "sandbox"})
    .to_string();
    let r = crate::provider_webhooks::post_plaid(&app, &plaid, body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(connection(&app, &id).await["status"], "pending_reauth");

    plaid.set_accounts(&[("Checking", "1111"), ("New Savings", "2222")]);
    let r = app
        .post(&format!("/api/v1/connections/{id}/relink"), &json!({}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let t = s(&r.json["token"]).to_owned();
    app.page_get(&format!("/_link/{t}/session")).await;
    let started = app
        .page_post(&format!("/_link/{t}/providers/plaid/start"), None)
        .await;
    assert_eq!(started.status, 200, "{}", started.text);
    let done = app
        .page_post(&format!("/_link/{t}/reauth-complete"), None)
        .await;
    assert_eq!(done.status, 204, "{}", done.text);

    let conn = connection(&app, &id).await;
    assert_eq!(conn["status"], "active");
    assert_eq!(conn["error_code"], Value::Null);
    assert_eq!(masks(&conn), ["1111", "2222"]);
    let reasons: Vec<String> = connection_events(&app, &id)
        .await
        .iter()
        .map(|e| s(&e["detail"]["reason"]).to_owned())
        .collect();
    assert_eq!(reasons, ["reauth_required", "relinked"]);
    let changed = outbox_of(&app, "connection.status_changed");
    assert_eq!(changed.len(), 2);
    assert_eq!(changed[1]["data"]["reason"], "relinked");
    assert_eq!(changed[1]["data"]["status"], "active");
}

// ------------------------------------------------------------------ duplicates

#[actix_web::test]
async fn plaid_duplicate_is_not_exchanged() {
    let plaid = FakePlaid::start().await;
    let app = app_with(Some(&plaid), None, |_| {}).await;
    plaid.set_accounts(&[("Checking", "1234"), ("Savings", "9876")]);
    let user = app.create_user("Ana").await;
    let uid = s(&user["id"]);
    let (_, t1) = session_for(&app, uid, json!({})).await;
    let first = add(&app, &t1, plaid_body("public-one", &["1234"])).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let existing = s(&first.json["connection_id"]).to_owned();

    // The same bank again, sharing an account: nothing is exchanged or stored.
    let (second, t2) = session_for(&app, uid, json!({})).await;
    let dup = add(&app, &t2, plaid_body("public-two", &["0000", "9876"])).await;
    assert_eq!(dup.status, 200, "{}", dup.text);
    assert_eq!(
        dup.json,
        json!({"duplicate": true, "connection_id": existing,
            "institution_name": "First Platypus Bank", "session_status": "active"})
    );
    assert_eq!(plaid.requests_to("/item/public_token/exchange").len(), 1);
    assert_eq!(stored_connections(&app), 1);
    let evs = session_events(&app, s(&second["id"])).await;
    let dup_ev = evs
        .iter()
        .find(|e| e["type"] == "connection.duplicate")
        .expect("connection.duplicate event");
    assert_eq!(dup_ev["detail"]["connection_id"], existing.as_str());
    let session = app
        .get(&format!("/api/v1/connections/link/{}", s(&second["id"])))
        .await;
    assert_eq!(session.json["result_connection_ids"], json!([]));

    // Another member, or no shared mask: not a duplicate.
    let other = app.create_user("Ben").await;
    let (_, t3) = session_for(&app, s(&other["id"]), json!({})).await;
    assert_eq!(
        add(&app, &t3, plaid_body("public-3", &["1234"]))
            .await
            .status,
        201
    );
    plaid.set_accounts(&[("Checking", "5555")]);
    let (_, t4) = session_for(&app, uid, json!({})).await;
    assert_eq!(
        add(&app, &t4, plaid_body("public-4", &["5555"]))
            .await
            .status,
        201
    );
}

#[actix_web::test]
async fn racing_duplicates_store_one_connection() {
    let plaid = FakePlaid::start().await;
    let app = app_with(Some(&plaid), None, |_| {}).await;
    // The widget gives no masks, so only the recording transaction can tell.
    plaid.set_accounts(&[("Checking", "1234")]);
    let user = app.create_user("Ana").await;
    let (_, t) = session_for(&app, s(&user["id"]), json!({})).await;
    let results =
        join_all((0..6).map(|i| add(&app, &t, plaid_body(&format!("public-race-{i}"), &[])))).await;
    let created: Vec<&Resp> = results.iter().filter(|r| r.status == 201).collect();
    let dups: Vec<&Resp> = results
        .iter()
        .filter(|r| r.status == 200 && r.json["duplicate"] == true)
        .collect();
    assert_eq!((created.len(), dups.len()), (1, 5), "{results:?}");
    let winner = &created[0].json["connection_id"];
    assert!(dups.iter().all(|d| d.json["connection_id"] == *winner));
    assert_eq!(stored_connections(&app), 1);
    // Every losing Item is removed at Plaid again; the winner's is kept.
    assert!(
        eventually(Duration::from_secs(5), || async {
            plaid.requests_to("/item/remove").len() == 5
        })
        .await
    );
}

#[actix_web::test]
async fn teller_duplicate_enrollment_is_not_recorded() {
    let teller = FakeTeller::start().await;
    let app = app_with(None, Some(&teller), |_| {}).await;
    let (uid, first) = link_teller(&app).await;
    teller.add_token("token_again", "enr_again");
    teller.set_masks("enr_again", ["1234", "0042"]);
    let (_, t) = session_for(&app, &uid, json!({})).await;
    let dup = add(&app, &t, teller_body("token_again", "enr_again")).await;
    assert_eq!(dup.status, 200, "{}", dup.text);
    assert_eq!(dup.json["duplicate"], true);
    assert_eq!(dup.json["connection_id"], first["connection_id"]);
    assert_eq!(stored_connections(&app), 1);
    // The new enrollment is not kept at Teller either; the stored one is.
    assert!(
        eventually(Duration::from_secs(5), || async {
            teller
                .requests()
                .iter()
                .any(|r| r.method == "DELETE" && r.path == "/enrollments/enr_again")
        })
        .await
    );
    assert!(!teller
        .requests()
        .iter()
        .any(|r| r.method == "DELETE" && r.path.ends_with(TELLER_ENROLLMENT)));
}

// ------------------------------------------------------------------ provider errors

#[actix_web::test]
async fn rejected_credentials_are_final_and_the_agent_is_told() {
    let plaid = FakePlaid::start().await;
    let app = app_with(Some(&plaid), None, |c| {
        c.plaid.secret = Some(Secret::new("wrong-secret"));
    })
    .await;
    let user = app.create_user("Ana").await;
    let (session, t) = session_for(&app, s(&user["id"]), json!({})).await;
    let r = app
        .page_post(&format!("/_link/{t}/providers/plaid/start"), None)
        .await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "PROVIDER_ERROR");
    assert_eq!(r.json["error"]["retryable"], false);
    let message = s(&r.json["error"]["message"]);
    assert!(message.contains("won't help"), "{message}");
    assert!(!r.text.contains("wrong-secret"));

    let evs = session_events(&app, s(&session["id"])).await;
    let ev = evs
        .iter()
        .find(|e| e["type"] == "provider.error")
        .expect("provider.error event");
    assert_eq!(
        ev["detail"],
        json!({"provider": "plaid", "code": "INVALID_API_KEYS", "retryable": false})
    );
    let hooks = outbox_of(&app, "link_session.provider_error");
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["data"]["id"], session["id"]);
    assert_eq!(hooks[0]["data"]["status"], "active");
    assert_eq!(
        hooks[0]["data"]["provider_error"]["code"],
        "INVALID_API_KEYS"
    );
    // Never fails the session.
    let got = app
        .get(&format!("/api/v1/connections/link/{}", s(&session["id"])))
        .await;
    assert_eq!(got.json["status"], "active");
}

#[actix_web::test]
async fn retryable_failures_are_recorded_without_a_webhook() {
    let plaid = FakePlaid::start().await;
    let app = app_with(Some(&plaid), None, |_| {}).await;
    let user = app.create_user("Ana").await;
    let (session, t) = session_for(&app, s(&user["id"]), json!({})).await;
    plaid.fail_with(
        "/item/public_token/exchange",
        500,
        "INTERNAL_SERVER_ERROR",
        None,
    );
    let r = add(&app, &t, plaid_body("public-500", &[])).await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert_eq!(r.json["error"]["retryable"], true);
    plaid.fail_with(
        "/item/public_token/exchange",
        400,
        "INSTITUTION_NOT_SUPPORTED",
        None,
    );
    let r = add(&app, &t, plaid_body("public-400", &[])).await;
    assert_eq!(r.json["error"]["retryable"], false, "{}", r.text);

    let details: Vec<Value> = session_events(&app, s(&session["id"]))
        .await
        .into_iter()
        .filter(|e| e["type"] == "provider.error")
        .map(|e| e["detail"].clone())
        .collect();
    assert_eq!(
        details,
        [
            json!({"provider": "plaid", "code": "INTERNAL_SERVER_ERROR", "retryable": true}),
            json!({"provider": "plaid", "code": "INSTITUTION_NOT_SUPPORTED", "retryable": false}),
        ]
    );
    assert_eq!(outbox_of(&app, "link_session.provider_error").len(), 1);

    // Teller refusing our application (401) is final too.
    let teller = FakeTeller::start().await;
    let app = app_with(None, Some(&teller), |_| {}).await;
    let user = app.create_user("Ana").await;
    let (_, t) = session_for(&app, s(&user["id"]), json!({})).await;
    teller.fail_with("/accounts", 401, "unauthorized", "bad certificate");
    let r = add(&app, &t, teller_body(TELLER_TOKEN, TELLER_ENROLLMENT)).await;
    assert_eq!(
        (r.status, &r.json["error"]["retryable"]),
        (502, &json!(false)),
        "{}",
        r.text
    );
}

// ------------------------------------------------------------------ timeline API

#[actix_web::test]
async fn connection_events_page_with_a_cursor() {
    let plaid = FakePlaid::start().await;
    let app = app_with(Some(&plaid), None, |_| {}).await;
    let (_, added) = link_plaid(&app, "public-ev").await;
    let id = s(&added["connection_id"]).to_owned();
    let item = plaid.item_ids().pop().expect("item");
    for code in [
        "NEW_ACCOUNTS_AVAILABLE",
        "PENDING_EXPIRATION",
        "LOGIN_REPAIRED",
    ] {
        let body = json!({"webhook_type": "ITEM", "webhook_code": code, "item_id": item,
            "consent_expiration_time": "2030-01-01T00:00:00Z", "environment": "sandbox"});
        let r =
            crate::provider_webhooks::post_plaid(&app, &plaid, body.to_string().as_bytes()).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let r = app
        .get(&format!("/api/v1/connections/{id}/events?limit=2"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["events"].as_array().map(Vec::len), Some(2));
    let cursor = s(&r.json["next_cursor"]).to_owned();
    assert!(!cursor.is_empty());
    let r2 = app
        .get(&format!(
            "/api/v1/connections/{id}/events?limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(
        r2.json["events"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r2.text
    );
    assert_eq!(r2.json["next_cursor"], Value::Null);
    let all = connection_events(&app, &id).await;
    let types: Vec<&str> = all.iter().map(|e| s(&e["type"])).collect();
    assert_eq!(
        types,
        [
            "connection.status_changed",
            "connection.status_changed",
            "connection.access_expiring"
        ]
    );
    // LOGIN_REPAIRED on an active connection changes nothing.
    assert_eq!(all.len(), 3);

    for bad in ["limit=0", "limit=201", "cursor=nope", "other=1"] {
        let r = app
            .get(&format!("/api/v1/connections/{id}/events?{bad}"))
            .await;
        assert_eq!((r.status, r.code()), (400, "VALIDATION_ERROR"), "{bad}");
    }
    let r = app.get("/api/v1/connections/AAAAAAAA/events").await;
    assert_eq!(r.status, 404);
    let r = app
        .get_as(&format!("/api/v1/connections/{id}/events"), &app.read_key)
        .await;
    assert_eq!(r.status, 200);

    // A disconnect through the API is on the timeline too.
    assert_eq!(
        app.delete(&format!("/api/v1/connections/{id}"))
            .await
            .status,
        200
    );
    let last = connection_events(&app, &id).await.pop().expect("event");
    assert_eq!(last["detail"]["reason"], "disconnected");
    assert_eq!(last["detail"]["to"], "disconnected");
}

// ------------------------------------------------------------------ OAuth redirect, webhook URL

#[actix_web::test]
async fn link_tokens_carry_redirect_uri_and_webhook_url() {
    let plaid = FakePlaid::start().await;
    let app = app_with(Some(&plaid), None, |c| {
        c.server.public_url = Some(Url::parse("https://bank.example.com/bb/").expect("url"));
        c.plaid.redirect_uri =
            Some(Url::parse("https://bank.example.com/bb/oauth-return").expect("url"));
    })
    .await;
    let (_, added) = link_plaid(&app, "public-oauth").await;
    let creates = plaid.requests_to("/link/token/create");
    assert_eq!(creates.len(), 0, "link_plaid does not start");
    let id = s(&added["connection_id"]).to_owned();
    // A new-Item token and an update-mode token both carry redirect_uri.
    let user = app.create_user("Ben").await;
    let (_, t) = session_for(&app, s(&user["id"]), json!({})).await;
    let r = app
        .page_post(&format!("/_link/{t}/providers/plaid/start"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let relink = app
        .post(&format!("/api/v1/connections/{id}/relink"), &json!({}))
        .await;
    let rt = s(&relink.json["token"]).to_owned();
    app.page_get(&format!("/_link/{rt}/session")).await;
    let r = app
        .page_post(&format!("/_link/{rt}/providers/plaid/start"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let creates = plaid.requests_to("/link/token/create");
    assert_eq!(creates.len(), 2);
    for c in &creates {
        assert_eq!(
            c.body["redirect_uri"],
            "https://bank.example.com/bb/oauth-return"
        );
    }
    assert_eq!(
        creates[0].body["webhook"],
        "https://bank.example.com/bb/webhooks/plaid"
    );

    // The return page is the link page, with the /link headers.
    let page = app.page_get("/bb/oauth-return?oauth_state_id=abc").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.header("content-type").starts_with("text/html"));
    assert_eq!(page.header("cache-control"), "no-store");
    assert_eq!(page.header("referrer-policy"), "no-referrer");
    assert!(page
        .header("content-security-policy")
        .contains("frame-ancestors 'none'"));
    let link_page = app.page_get(&format!("/link/{rt}")).await;
    assert_eq!(page.text, link_page.text);
    let head = app
        .request(reqwest::Method::HEAD, "/bb/oauth-return")
        .send()
        .await
        .expect("head");
    assert_eq!(head.status(), 200);

    // Without redirect_uri nothing is sent and there is no such page.
    let plain = app_with(Some(&plaid), None, |_| {}).await;
    let user = plain.create_user("Cy").await;
    let (_, t) = session_for(&plain, s(&user["id"]), json!({})).await;
    plain
        .page_post(&format!("/_link/{t}/providers/plaid/start"), None)
        .await;
    let last = plaid
        .requests_to("/link/token/create")
        .pop()
        .expect("create");
    assert!(last.body.get("redirect_uri").is_none(), "{:?}", last.body);
    assert!(last.body.get("webhook").is_none(), "{:?}", last.body);
    assert_eq!(plain.page_get("/bb/oauth-return").await.status, 404);
}
