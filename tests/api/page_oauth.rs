//! Plaid OAuth banks in real Chromium: the page keeps what it needs before
//! opening Plaid, the bank sends the person to the return page
//! (`redirect_uri?oauth_state_id=…`), and there Plaid is re-opened with
//! `receivedRedirectUri` and the same link token, finishing on the same
//! session — in the same tab, and in a new one.
//!
//! The server serves the return page at the path of `[plaid] redirect_uri`.

use serde_json::{json, Value};

use crate::browser::{session, teller_stub};
use crate::chromium::{str_of, Browser};
use crate::fakes::{FakePlaid, PLAID_INSTITUTION_NAME};
use crate::helpers::{spawn_app_with, TestApp};

/// Where the bank sends the person back to.
const RETURN_PATH: &str = "/plaid/oauth";
/// The page's own resume state in localStorage.
const OAUTH_KEY: &str = "breadbox.plaid-oauth";

#[actix_web::test]
async fn page_plaid_oauth_resumes_in_the_same_tab() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let fake = FakePlaid::start().await;
    let app = spawn_app_with(|c| with_oauth_return(c, &fake)).await;
    let s = app.mint(json!({ "single_use": false })).await;
    browser.stub_sdks(&oauth_plaid_stub(&app, true), &teller_stub("-", "-"));
    browser.phone().await;
    browser.goto(&str_of(&s["url"])).await;
    browser.wait_state("welcome").await;
    browser.click("provider-plaid").await;

    browser
        .wait_for("the return page", "location.pathname", |v| v == RETURN_PATH)
        .await;
    browser.wait_state("result").await;
    assert_resumed(&browser).await;
    let linked = browser.text("result-linked").await;
    assert!(linked.contains(PLAID_INSTITUTION_NAME), "{linked:?}");
    browser.screenshot("oauth-same-tab-result").await;

    // Finished on the same session.
    let done = session(&app, &str_of(&s["id"])).await;
    assert_eq!(done["status"], "active", "{done}");
    assert_eq!(
        done["result_connection_ids"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(fake.requests_to("/item/public_token/exchange").len(), 1);
    // "I'm done" works from the return page too.
    browser.click("done").await;
    browser.wait_state("final").await;
    let done = session(&app, &str_of(&s["id"])).await;
    assert_eq!(done["status"], "completed", "{done}");
    browser.assert_no_page_errors();
}

#[actix_web::test]
async fn page_plaid_oauth_resumes_in_a_new_tab() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let fake = FakePlaid::start().await;
    let app = spawn_app_with(|c| with_oauth_return(c, &fake)).await;
    let s = app.mint(json!({ "single_use": true })).await;
    browser.stub_sdks(&oauth_plaid_stub(&app, false), &teller_stub("-", "-"));
    browser.desktop().await;
    browser.goto(&str_of(&s["url"])).await;
    browser.wait_state("welcome").await;
    browser.click("provider-plaid").await;
    browser
        .wait_for(
            "the resume state",
            &format!("localStorage.getItem({})", json!(OAUTH_KEY)),
            |v| v.is_string(),
        )
        .await;

    // The bank's app opens the return address in a new tab.
    let first = browser.tab();
    browser
        .open_tab(&format!(
            "{}{RETURN_PATH}?oauth_state_id=state-from-the-bank",
            app.base
        ))
        .await;
    browser.desktop().await;
    browser.wait_state("final").await;
    assert_resumed(&browser).await;
    let done = session(&app, &str_of(&s["id"])).await;
    assert_eq!(done["status"], "consumed", "{done}");
    assert_eq!(
        done["result_connection_ids"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(fake.requests_to("/item/public_token/exchange").len(), 1);
    browser.assert_no_page_errors();

    // The first tab notices and stops waiting.
    browser.use_tab(first);
    browser.wait_state("final").await;
    let message = browser.text("final-message").await;
    assert!(message.contains("other tab"), "{message:?}");
    browser.assert_no_page_errors();
}

#[actix_web::test]
async fn page_plaid_oauth_return_without_saved_state_says_what_to_do() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let fake = FakePlaid::start().await;
    let app = spawn_app_with(|c| with_oauth_return(c, &fake)).await;
    browser.stub_sdks("", "");
    browser.phone().await;
    browser
        .goto(&format!("{}{RETURN_PATH}?oauth_state_id=x", app.base))
        .await;
    browser.wait_state("ended").await;
    let title = browser.text("ended-title").await;
    assert!(title.contains("pick up where you left off"), "{title:?}");
    let message = browser.text("ended-message").await;
    assert!(message.contains("link you were sent"), "{message:?}");
    browser.assert_no_page_errors();
}

/// Plaid configured against `fake`, with its OAuth return page at
/// [`RETURN_PATH`] (http is allowed on loopback).
fn with_oauth_return(c: &mut breadbox::config::Config, fake: &FakePlaid) {
    c.plaid = fake.plaid_config();
    c.plaid.redirect_uri =
        Some(url::Url::parse(&format!("http://127.0.0.1{RETURN_PATH}")).expect("url"));
}

/// The return page re-opened Plaid with the first link token and its own
/// address as `receivedRedirectUri`, and the page cleared its resume state.
async fn assert_resumed(browser: &Browser) {
    let calls = browser
        .eval("JSON.parse(localStorage.getItem('__stubPlaid') || '[]')")
        .await;
    let calls = calls.as_array().cloned().unwrap_or_default();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(str_of(&calls[0]["page"]).starts_with("/link/"), "{calls:?}");
    assert_eq!(calls[0]["receivedRedirectUri"], Value::Null, "{calls:?}");
    assert!(
        str_of(&calls[0]["token"]).starts_with("link-sandbox-"),
        "{calls:?}"
    );
    assert_eq!(calls[1]["token"], calls[0]["token"], "the same link token");
    assert_eq!(calls[1]["page"], RETURN_PATH, "{calls:?}");
    let href = browser.eval("location.href").await;
    assert_eq!(calls[1]["receivedRedirectUri"], href, "{calls:?}");
    assert!(str_of(&href).contains("oauth_state_id="), "{href}");
    let left = browser
        .eval(&format!("localStorage.getItem({})", json!(OAUTH_KEY)))
        .await;
    assert_eq!(left, Value::Null, "resume state cleared");
}

/// `window.Plaid` for an OAuth bank: the first `open()` leaves for the bank
/// (in this tab when `same_tab`, else it waits while the bank's app opens a
/// new one); opened with `receivedRedirectUri`, it succeeds. Every `create`
/// is logged to localStorage, which both tabs share.
fn oauth_plaid_stub(app: &TestApp, same_tab: bool) -> String {
    let back = json!(format!(
        "{}{RETURN_PATH}?oauth_state_id=state-from-the-bank",
        app.base
    ));
    format!(
        r#"(() => {{
  const log = (e) => {{
    const l = JSON.parse(localStorage.getItem('__stubPlaid') || '[]');
    l.push(e);
    localStorage.setItem('__stubPlaid', JSON.stringify(l));
  }};
  window.Plaid = {{
    create(cfg) {{
      log({{ token: cfg.token, receivedRedirectUri: cfg.receivedRedirectUri || null, page: location.pathname }});
      return {{
        open() {{
          if (cfg.receivedRedirectUri) {{
            setTimeout(() => cfg.onSuccess('public-sandbox-oauth', {{
              institution: {{ name: 'First Platypus Bank', institution_id: 'ins_109508' }},
              accounts: [{{ id: 'acc_1', name: 'Checking', mask: '0000', type: 'depository', subtype: 'checking' }}],
            }}), 50);
          }} else if ({same_tab}) {{
            setTimeout(() => {{ location.href = {back}; }}, 50);
          }}
        }},
        exit() {{}},
        destroy() {{}},
      }};
    }},
  }};
}})();
"#
    )
}
