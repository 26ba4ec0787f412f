//! Real-browser end-to-end tests of the hosted page `/link/{token}`.
//!
//! Headless Chromium (Debian's `/usr/bin/chromium`) is driven over the
//! DevTools Protocol by the small client in `chromium.rs`, WebSocket
//! included, so no extra crate is needed. The provider SDKs (`cdn.plaid.com`,
//! `cdn.teller.io`) never touch the network: `Fetch.enable` pauses those
//! requests and `Fetch.fulfillRequest` answers them with stub scripts whose
//! widgets report success at once. The server talks to the fake Plaid and
//! Teller APIs of `fakes.rs`.
//!
//! Without Chromium the tests print a note and pass, unless `CI=true`, where
//! they fail. Screenshots land in `target/browser-e2e/`.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::chromium::{str_of, Browser};
use crate::fakes::{FakePlaid, FakeTeller, PLAID_INSTITUTION_NAME, TELLER_APP_ID};
use crate::helpers::{spawn_app, spawn_app_with, TestApp};

// ------------------------------------------------------------------ tests

#[actix_web::test]
async fn browser_plaid_multi_use_then_done_redirects() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let fake = FakePlaid::start().await;
    let app = spawn_app_with(|c| c.plaid = fake.plaid_config()).await;
    let redirect = format!("{}/health/live?from=test", app.base);
    let s = app
        .mint(json!({ "redirect_url": redirect, "single_use": false }))
        .await;
    let session_id = str_of(&s["id"]);

    browser.stub_sdks(&plaid_stub(), &teller_stub("unused", "unused"));
    browser.phone().await;
    browser.goto(&str_of(&s["url"])).await;
    browser.wait_state("welcome").await;
    assert!(
        browser
            .text("provider-plaid")
            .await
            .contains("Connect with Plaid"),
        "the Plaid button is labelled"
    );
    browser.screenshot("welcome-phone").await;
    browser.desktop().await;
    browser.screenshot("welcome-desktop").await;

    browser.click("provider-plaid").await;
    browser.wait_state("result").await;
    let linked = browser.text("result-linked").await;
    assert!(linked.contains(PLAID_INSTITUTION_NAME), "{linked:?}");
    // The widget was opened with the link token the fake minted.
    let token = browser.eval("window.__plaidCalls[0].token").await;
    assert!(str_of(&token).starts_with("link-sandbox-"), "{token}");
    browser.screenshot("plaid-result").await;
    let mid = session(&app, &session_id).await;
    assert_eq!(mid["status"], "active", "{mid}");

    browser.click("done").await;
    let href = browser
        .wait_for("the redirect", "location.href", |v| {
            v.as_str().is_some_and(|h| h.starts_with(&redirect))
        })
        .await;
    let href = url::Url::parse(&str_of(&href)).expect("redirected URL");
    let query: HashMap<String, String> = href.query_pairs().into_owned().collect();
    assert_eq!(
        query.get("from").map(String::as_str),
        Some("test"),
        "{href}"
    );
    assert_eq!(
        query.get("breadbox_session").map(String::as_str),
        Some(str_of(&s["short_id"]).as_str()),
        "{href}"
    );
    assert_eq!(
        query.get("status").map(String::as_str),
        Some("completed"),
        "{href}"
    );

    let done = session(&app, &session_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let ids = done["result_connection_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(ids.len(), 1, "{done}");
    let conn = app
        .get(&format!("/api/v1/connections/{}", str_of(&ids[0])))
        .await;
    assert_eq!(conn.status, 200, "{}", conn.text);
    assert_eq!(conn.json["institution_name"], PLAID_INSTITUTION_NAME);
    assert_eq!(conn.json["provider"], "plaid");
    assert_eq!(fake.requests_to("/item/public_token/exchange").len(), 1);
    browser.assert_no_page_errors();
}

#[actix_web::test]
async fn browser_teller_single_use_consumes() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let fake = FakeTeller::start().await;
    fake.add_token("token_browser_1", "enr_browser_1");
    let app = spawn_app_with(|c| c.teller = fake.teller_config()).await;
    let s = app
        .mint(json!({ "provider": "teller", "single_use": true }))
        .await;
    let session_id = str_of(&s["id"]);

    browser.stub_sdks(
        &plaid_stub(),
        &teller_stub("token_browser_1", "enr_browser_1"),
    );
    browser.desktop().await;
    browser.goto(&str_of(&s["url"])).await;
    browser.wait_state("welcome").await;
    // Pinned to Teller: no Plaid button.
    let plaid = browser
        .eval("document.getElementById('provider-plaid') === null")
        .await;
    assert_eq!(plaid, json!(true));

    browser.click("provider-teller").await;
    browser.wait_state("final").await;
    let message = browser.text("final-message").await;
    assert!(message.contains("All set"), "{message:?}");
    let cfg = browser.eval("window.__tellerCalls[0]").await;
    assert_eq!(cfg["applicationId"], TELLER_APP_ID, "{cfg}");
    assert_eq!(cfg["environment"], "sandbox", "{cfg}");
    browser.screenshot("teller-final").await;

    let done = session(&app, &session_id).await;
    assert_eq!(done["status"], "consumed", "{done}");
    let ids = done["result_connection_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(ids.len(), 1, "{done}");
    let conn = app
        .get(&format!("/api/v1/connections/{}", str_of(&ids[0])))
        .await;
    assert_eq!(conn.status, 200, "{}", conn.text);
    assert_eq!(conn.json["provider"], "teller", "{}", conn.text);
    assert_eq!(conn.json["institution_name"], "Chase", "{}", conn.text);
    assert!(!fake.requests_to("/accounts").is_empty());
    browser.assert_no_page_errors();
}

#[actix_web::test]
async fn browser_teller_relink_reconnects_the_enrollment() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let fake = FakeTeller::start().await;
    fake.add_token("token_browser_2", "enr_browser_2");
    let app = spawn_app_with(|c| c.teller = fake.teller_config()).await;
    // A connection made through the page's API, as the first visit would.
    let first = app.mint(json!({ "provider": "teller" })).await;
    let token = str_of(&first["token"]);
    app.page_get(&format!("/_link/{token}/session")).await;
    let added = app
        .page_post(
            &format!("/_link/{token}/connections"),
            Some(json!({"provider": "teller", "credentials": {
                "access_token": "token_browser_2", "enrollment_id": "enr_browser_2"}})),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    let conn_id = str_of(&added.json["connection_id"]);
    let relink = app
        .post(&format!("/api/v1/connections/{conn_id}/relink"), &json!({}))
        .await;
    assert_eq!(relink.status, 201, "{}", relink.text);

    browser.stub_sdks(
        &plaid_stub(),
        &teller_stub("token_browser_2", "enr_browser_2"),
    );
    browser.desktop().await;
    browser.goto(&str_of(&relink.json["url"])).await;
    browser.wait_state("welcome").await;
    let label = browser.text("provider-teller").await;
    assert!(label.contains("Reconnect"), "{label:?}");
    browser.click("provider-teller").await;
    browser.wait_state("final").await;
    let cfg = browser.eval("window.__tellerCalls[0]").await;
    assert_eq!(cfg["enrollmentId"], "enr_browser_2", "{cfg}");

    let done = session(&app, &str_of(&relink.json["id"])).await;
    assert_eq!(done["status"], "consumed", "{done}");
    assert_eq!(done["result_connection_ids"], json!([conn_id]), "{done}");
    let conn = app.get(&format!("/api/v1/connections/{conn_id}")).await;
    assert_eq!(conn.json["status"], "active", "{}", conn.text);
    assert_eq!(
        app.get("/api/v1/connections").await.json["connections"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "a relink adds no connection"
    );
    browser.assert_no_page_errors();
}

#[actix_web::test]
async fn browser_dead_link_page() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let app = spawn_app().await;
    browser.desktop().await;

    browser
        .goto(&format!("{}/link/AAAAAAAAAAAAAAAAAAAAAA", app.base))
        .await;
    browser.wait_state("message").await;
    let text = browser.body_text().await;
    assert!(text.contains("isn't valid"), "{text:?}");
    browser.screenshot("dead-unknown").await;

    let s = app.mint(json!({})).await;
    app.expire_now(&str_of(&s["id"]));
    browser.goto(&str_of(&s["url"])).await;
    browser
        .wait_for("the expired page", "document.body.innerText", |v| {
            v.as_str().is_some_and(|t| t.contains("expired"))
        })
        .await;
    assert_eq!(browser.eval("document.body.dataset.state").await, "message");
}

// ------------------------------------------------------------------ helpers

pub(crate) async fn session(app: &TestApp, id: &str) -> Value {
    let r = app.get(&format!("/api/v1/connections/link/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

/// `window.Plaid` whose widget succeeds 50 ms after `open()`.
pub(crate) fn plaid_stub() -> String {
    r#"(() => {
  window.__plaidCalls = [];
  window.Plaid = {
    create(cfg) {
      window.__plaidCalls.push({ token: cfg.token });
      return {
        open() {
          setTimeout(() => cfg.onSuccess('public-sandbox-xyz', {
            institution: { name: 'First Platypus Bank', institution_id: 'ins_109508' },
            accounts: [{ id: 'acc_1', name: 'Checking', mask: '0000', type: 'depository', subtype: 'checking' }],
            link_session_id: 'ls',
          }), 50);
        },
        exit() {},
        destroy() {},
      };
    },
  };
})();
"#
    .to_owned()
}

/// `window.TellerConnect` whose widget enrolls `token`/`enrollment` 50 ms after `open()`.
pub(crate) fn teller_stub(token: &str, enrollment: &str) -> String {
    format!(
        r#"(() => {{
  window.__tellerCalls = [];
  window.TellerConnect = {{
    setup(cfg) {{
      window.__tellerCalls.push({{ applicationId: cfg.applicationId, environment: cfg.environment, enrollmentId: cfg.enrollmentId }});
      return {{
        open() {{
          setTimeout(() => cfg.onSuccess({{
            accessToken: {token},
            user: {{ id: 'usr_1' }},
            enrollment: {{ id: {enrollment}, institution: {{ name: 'Chase' }} }},
            signatures: null,
          }}), 50);
        }},
        destroy() {{}},
      }};
    }},
  }};
}})();
"#,
        token = json!(token),
        enrollment = json!(enrollment),
    )
}
