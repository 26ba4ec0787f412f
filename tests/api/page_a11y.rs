//! The hosted page as a person meets it, in real Chromium: every screen
//! checked with axe-core in light and dark mode, photographed at phone and
//! desktop sizes, and read at 320 px wide with 200 % text; whom the link is
//! for; the provider choice; keyboard order and focus ring; the "continue on
//! your phone" QR code.
//!
//! axe-core comes from the npm registry (`npm ci --prefix tests`, see
//! `tests/package.json`) and is injected by these tests only; the QR code is
//! read back with `zbarimg` (Debian's `zbar-tools`). Without them the tests
//! print a note and pass, unless `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::browser::{plaid_stub, teller_stub};
use crate::chromium::{str_of, Browser};
use crate::fakes::{FakePlaid, FakeTeller, PLAID_INSTITUTION_NAME};
use crate::helpers::spawn_app_with;

// ------------------------------------------------------------------ tests

#[actix_web::test]
async fn page_every_screen_is_accessible_and_fits() {
    let Some(axe) = axe_source() else { return };
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let plaid = FakePlaid::start().await;
    let teller = FakeTeller::start().await;
    teller.add_token("token_a11y", "enr_a11y");
    let app = spawn_app_with(|c| {
        c.plaid = plaid.plaid_config();
        c.teller = teller.teller_config();
    })
    .await;
    // Another member, whose details must never reach this page.
    let other = app.create_user("Sam Otherperson").await;
    let s = app.mint(json!({ "single_use": false })).await;
    let url = str_of(&s["url"]);
    let token = str_of(&s["token"]);
    let mut report = Vec::new();

    browser.stub_sdks(&plaid_stub(), &teller_stub("token_a11y", "enr_a11y"));
    browser.desktop().await;
    browser.goto(&url).await;
    browser.wait_state("welcome").await;
    watch_status(&browser).await;

    // Whom it is for, and nobody else.
    assert_eq!(browser.text("for-name").await, "Ana");
    let body = browser.body_text().await;
    assert!(body.contains("This link is for Ana."), "{body}");
    assert!(body.contains("Not Ana? Please don't continue"), "{body}");
    for secret in [
        "Otherperson",
        &str_of(&other["id"]),
        &str_of(&s["user_id"]),
        &token,
    ] {
        assert!(!body.contains(secret), "{secret:?} shown: {body}");
        let html = str_of(&browser.eval("document.documentElement.outerHTML").await);
        assert!(!html.contains(secret), "{secret:?} in the DOM");
    }
    // Two providers: a plain line under each, the footer names both.
    let about = browser.text("provider-plaid-about").await;
    assert!(about.contains("banks and credit unions"), "{about:?}");
    let about = browser.text("provider-teller-about").await;
    assert!(about.contains("largest US banks"), "{about:?}");
    let described = browser
        .eval("document.getElementById('provider-plaid').getAttribute('aria-describedby')")
        .await;
    assert_eq!(described, "provider-plaid-about");
    let footer = browser.text("footer-text").await;
    assert!(footer.contains("Plaid or Teller"), "{footer:?}");
    // The live region and the countdown are there.
    assert_eq!(
        browser
            .eval("document.getElementById('status').getAttribute('aria-live')")
            .await,
        "polite"
    );
    assert_countdown(&browser).await;
    keyboard_and_focus(&browser).await;
    check_screen(&browser, &axe, "welcome", &mut report).await;

    // A provider failure that passes: "try again", countdown, decline.
    let connections = format!("{}/_link/{token}/connections", app.base);
    browser.intercept_json(
        Some("POST"),
        &connections,
        502,
        &json!({"error": {"code": "PROVIDER_ERROR", "message": "plaid: upstream timeout", "retryable": true}}),
    );
    browser.click("provider-plaid").await;
    browser.wait_state("error").await;
    assert_visible(&browser, "retry", true).await;
    assert_visible(&browser, "cancel", true).await;
    assert_countdown(&browser).await;
    let text = browser.body_text().await;
    assert!(
        !text.contains("plaid: upstream"),
        "server message shown: {text}"
    );
    check_screen(&browser, &axe, "provider-error", &mut report).await;

    // One that never will: no "try again", the sender has been told.
    browser.intercept_json(
        Some("POST"),
        &connections,
        502,
        &json!({"error": {"code": "PROVIDER_ERROR", "message": "invalid client_id or secret", "retryable": false}}),
    );
    browser.click("retry").await;
    browser.wait_state("welcome").await;
    browser.click("provider-plaid").await;
    browser.wait_state("error").await;
    assert_visible(&browser, "retry", false).await;
    assert_visible(&browser, "cancel", true).await;
    assert_countdown(&browser).await;
    let text = browser.body_text().await;
    assert!(text.contains("trying again won't help"), "{text}");
    assert!(text.contains("has been told"), "{text}");
    assert!(!text.contains("invalid client_id"), "{text}");
    check_screen(&browser, &axe, "provider-refused", &mut report).await;

    // The other provider, offered there, meets a bank already connected.
    browser.intercept_json(
        Some("POST"),
        &connections,
        200,
        &json!({"duplicate": true, "connection_id": "c0ffee00-0000-4000-8000-000000000000",
                "institution_name": "Chase", "session_status": "active"}),
    );
    browser.click("try-teller").await;
    // Leaving the error screen: wait for the state itself, not wait_state.
    browser
        .wait_for("the duplicate screen", "document.body.dataset.state", |v| {
            v == "duplicate"
        })
        .await;
    assert_eq!(
        browser.text("duplicate-title").await,
        "Chase is already connected"
    );
    assert_visible(&browser, "retry", false).await;
    assert_countdown(&browser).await;
    check_screen(&browser, &axe, "duplicate", &mut report).await;

    // A real connection, through the server.
    browser.stub_sdks(&plaid_stub(), &teller_stub("token_a11y", "enr_a11y"));
    browser.click("duplicate-another").await;
    browser.wait_state("welcome").await;
    browser.click("provider-plaid").await;
    browser.wait_state("result").await;
    let linked = browser
        .eval("document.getElementById('result-linked').innerText")
        .await;
    let linked = str_of(&linked);
    assert!(linked.starts_with(PLAID_INSTITUTION_NAME), "{linked:?}");
    assert!(
        linked.contains(" — ") && linked.contains("••"),
        "{linked:?}"
    );
    let focused = browser.eval("document.activeElement.id").await;
    assert_eq!(
        focused, "result-title",
        "the new screen's heading has focus"
    );
    let said = browser.eval("window.__said").await;
    assert!(
        said.as_array()
            .is_some_and(|a| a.iter().any(|t| t == "Opening Plaid…")),
        "status announcements: {said}"
    );
    check_screen(&browser, &axe, "connected", &mut report).await;

    browser.click("done").await;
    browser.wait_state("final").await;
    check_screen(&browser, &axe, "done", &mut report).await;

    // Declining.
    let declined = app.mint(json!({})).await;
    browser.goto(&str_of(&declined["url"])).await;
    browser.wait_state("welcome").await;
    browser.click("cancel").await;
    browser.click("cancel-yes").await;
    browser.wait_state("canceled").await;
    check_screen(&browser, &axe, "declined", &mut report).await;

    // The server's own pages.
    let expired = app.mint(json!({})).await;
    app.expire_now(&str_of(&expired["id"]));
    browser.goto(&str_of(&expired["url"])).await;
    browser.wait_state("message").await;
    assert!(browser.body_text().await.contains("expired"));
    check_screen(&browser, &axe, "expired", &mut report).await;

    browser
        .goto(&format!("{}/link/AAAAAAAAAAAAAAAAAAAAAA", app.base))
        .await;
    browser.wait_state("message").await;
    assert!(browser.body_text().await.contains("isn't valid"));
    check_screen(&browser, &axe, "invalid", &mut report).await;

    // Guess tokens until this client is locked out (10 a minute by default).
    for _ in 0..12 {
        app.page_get("/_link/BBBBBBBBBBBBBBBBBBBBBB/session").await;
    }
    browser
        .goto(&format!("{}/link/AAAAAAAAAAAAAAAAAAAAAA", app.base))
        .await;
    browser.wait_state("message").await;
    assert!(browser.body_text().await.contains("wait a minute"));
    check_screen(&browser, &axe, "rate-limited", &mut report).await;

    let summary = report.join("\n");
    eprintln!("axe-core, serious or critical violations per screen:\n{summary}");
    std::fs::write(
        screens_dir().join("axe-summary.txt"),
        format!("{summary}\n"),
    )
    .expect("write axe summary");
    browser.assert_no_page_errors();
}

#[actix_web::test]
async fn page_qr_code_on_wide_screens_opens_the_page_on_a_phone() {
    let Some(zbarimg) = tool("zbarimg", "apt-get install -y zbar-tools") else {
        return;
    };
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let plaid = FakePlaid::start().await;
    let app = spawn_app_with(|c| c.plaid = plaid.plaid_config()).await;
    let s = app.mint(json!({})).await;
    let url = str_of(&s["url"]);

    browser.stub_sdks(&plaid_stub(), &teller_stub("unused", "unused"));
    browser.desktop().await;
    browser.goto(&url).await;
    browser.wait_state("welcome").await;
    browser
        .wait_for(
            "the QR image",
            "document.getElementById('qr').complete && document.getElementById('qr').naturalWidth",
            |v| v.as_u64().is_some_and(|w| w > 0),
        )
        .await;
    assert_visible(&browser, "qr-box", true).await;
    // One provider: no choice lines, and the footer names only Plaid.
    assert_eq!(
        browser
            .eval("document.getElementById('provider-plaid-about') === null")
            .await,
        true
    );
    let footer = browser.text("footer-text").await;
    assert!(
        footer.contains("from Plaid,") && !footer.contains("Teller"),
        "{footer:?}"
    );
    let png = browser.screenshot_element("qr", "qr-code").await;
    assert_eq!(
        decode_qr(&zbarimg, &png),
        url,
        "the QR code holds the page URL"
    );

    browser.phone().await;
    browser
        .wait_for(
            "the QR code to go on a phone",
            "getComputedStyle(document.getElementById('qr-box')).display",
            |v| v == "none",
        )
        .await;
    browser.screenshot("qr-phone-hidden").await;
    browser.assert_no_page_errors();
}

#[actix_web::test]
async fn page_refusals_never_offer_a_try_again_that_cannot_work() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let plaid = FakePlaid::start().await;
    let app = spawn_app_with(|c| c.plaid = plaid.plaid_config()).await;
    let s = app.mint(json!({})).await;
    let start = format!(
        "{}/_link/{}/providers/plaid/start",
        app.base,
        str_of(&s["token"])
    );
    browser.stub_sdks(&plaid_stub(), &teller_stub("-", "-"));
    browser.intercept_json(
        Some("POST"),
        &start,
        409,
        &json!({"error": {"code": "INVALID_STATE", "message": "session is not in a state that allows this"}}),
    );
    browser.phone().await;
    browser.goto(&str_of(&s["url"])).await;
    browser.wait_state("welcome").await;
    browser.click("provider-plaid").await;
    browser.wait_state("error").await;
    assert_visible(&browser, "retry", false).await;
    assert_visible(&browser, "cancel", true).await;
    assert_countdown(&browser).await;
    let text = browser.body_text().await;
    assert!(
        !text.contains("session is not"),
        "server message shown: {text}"
    );
    assert!(!text.contains("Something went wrong"), "{text}");
    browser.assert_no_page_errors();
}

#[actix_web::test]
async fn page_qr_svg_follows_the_token_rules() {
    let app = spawn_app_with(|_| {}).await;
    let s = app.mint(json!({})).await;
    let token = str_of(&s["token"]);
    let qr = app.page_get(&format!("/_link/{token}/qr.svg")).await;
    assert_eq!(qr.status, 200, "{}", qr.text);
    assert!(qr.header("content-type").starts_with("image/svg+xml"));
    assert!(qr.text.starts_with("<svg "), "{}", qr.text);
    assert_eq!(qr.header("cache-control"), "no-store");
    assert_eq!(qr.header("x-content-type-options"), "nosniff");
    assert_eq!(qr.header("referrer-policy"), "no-referrer");
    assert!(qr
        .header("content-security-policy")
        .contains("frame-ancestors 'none'"));
    // Drawing the code does not open the session.
    let session = crate::browser::session(&app, &str_of(&s["id"])).await;
    assert_eq!(session["status"], "pending", "{session}");
    // The page's session call names the member, and only by name.
    let page = app.page_get(&format!("/_link/{token}/session")).await;
    assert_eq!(page.json["for_name"], "Ana", "{}", page.text);
    assert!(page.json.get("user_id").is_none(), "{}", page.text);

    let unknown = app.page_get("/_link/AAAAAAAAAAAAAAAAAAAAAA/qr.svg").await;
    assert_eq!(unknown.status, 401, "{}", unknown.text);
    assert_eq!(unknown.code(), "INVALID_TOKEN");
    let expired = app.mint(json!({})).await;
    app.expire_now(&str_of(&expired["id"]));
    let gone = app
        .page_get(&format!("/_link/{}/qr.svg", str_of(&expired["token"])))
        .await;
    assert_eq!(gone.status, 410, "{}", gone.text);
    assert_eq!(gone.code(), "EXPIRED");
}

// ------------------------------------------------------------------ checks

/// axe-core's browser bundle, or `None` (skip) when it is not installed
/// outside CI.
fn axe_source() -> Option<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node_modules/axe-core/axe.min.js");
    match std::fs::read_to_string(&path) {
        Ok(s) => Some(s),
        Err(e) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(!ci, "{}: {e}; run `npm ci --prefix tests`", path.display());
            eprintln!(
                "note: skipping: no axe-core at {} (npm ci --prefix tests)",
                path.display()
            );
            None
        }
    }
}

/// A command-line tool's path, or `None` (skip) when missing outside CI.
fn tool(name: &str, install: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!ci, "this test needs {name} ({install})");
        eprintln!("note: skipping: no {name} ({install})");
    }
    found
}

fn decode_qr(zbarimg: &Path, png: &Path) -> String {
    let out = Command::new(zbarimg)
        .args(["--raw", "-q"])
        .arg(png)
        .output()
        .expect("run zbarimg");
    assert!(
        out.status.success(),
        "zbarimg found no code in {}",
        png.display()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn screens_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-e2e");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Record every text the live region shows, as `window.__said`.
async fn watch_status(b: &Browser) {
    b.eval(
        "(() => { window.__said = []; const el = document.getElementById('status'); \
         new MutationObserver(() => { if (el.textContent) window.__said.push(el.textContent); }) \
         .observe(el, { childList: true, characterData: true, subtree: true }); return true; })()",
    )
    .await;
}

async fn assert_visible(b: &Browser, id: &str, visible: bool) {
    let expr = format!(
        "(() => {{ const e = document.getElementById({}); return !!e && e.getClientRects().length > 0; }})()",
        json!(id)
    );
    assert_eq!(b.eval(&expr).await, visible, "#{id} visible");
}

/// The countdown shows on the current screen.
async fn assert_countdown(b: &Browser) {
    let shown = b
        .eval(
            "[...document.querySelectorAll('.countdown')].filter((e) => e.getClientRects().length) \
             .map((e) => e.textContent).join('|')",
        )
        .await;
    let shown = str_of(&shown);
    assert!(
        shown.starts_with("This link expires in "),
        "countdown: {shown:?}"
    );
}

/// Tab order on the welcome screen, the decline dialog by keyboard, and a
/// focus ring with at least 3:1 contrast in both colour schemes.
async fn keyboard_and_focus(b: &Browser) {
    let mut order = Vec::new();
    for _ in 0..3 {
        b.press("Tab", false).await;
        order.push(str_of(&b.eval("document.activeElement.id").await));
    }
    assert_eq!(order, ["provider-plaid", "provider-teller", "cancel"]);
    b.press("Enter", false).await;
    assert_eq!(b.eval("document.activeElement.id").await, "cancel-question");
    b.press("Tab", false).await;
    assert_eq!(b.eval("document.activeElement.id").await, "cancel-yes");
    b.press("Tab", false).await;
    assert_eq!(b.eval("document.activeElement.id").await, "cancel-no");
    b.press("Escape", false).await;
    assert_eq!(b.eval("document.activeElement.id").await, "cancel");
    b.press("Tab", true).await;
    b.press("Tab", true).await;
    assert_eq!(b.eval("document.activeElement.id").await, "provider-plaid");
    for dark in [false, true] {
        b.color_scheme(dark).await;
        let ratio = b.eval(FOCUS_CONTRAST).await;
        let ratio = ratio
            .as_f64()
            .unwrap_or_else(|| panic!("focus ring: {ratio}"));
        assert!(
            ratio >= 3.0,
            "focus ring contrast {ratio:.2}:1 (dark: {dark})"
        );
    }
    b.color_scheme(false).await;
}

/// Contrast between the focused element's outline and the background
/// around it (the nearest ancestor with one).
const FOCUS_CONTRAST: &str = r#"(() => {
  const el = document.activeElement;
  const cs = getComputedStyle(el);
  if (cs.outlineStyle === 'none' || parseFloat(cs.outlineWidth) < 2) return 'no outline: ' + cs.outline;
  const rgb = (c) => c.match(/[\d.]+/g).map(Number);
  let bg = el.parentElement;
  while (bg && rgb(getComputedStyle(bg).backgroundColor)[3] === 0) bg = bg.parentElement;
  const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  const a = lum(rgb(cs.outlineColor)), b = lum(rgb(getComputedStyle(bg || document.body).backgroundColor));
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
})()"#;

/// Screenshots, axe in light and dark mode, and the 320 px / 200 % text read.
async fn check_screen(b: &Browser, axe: &str, name: &str, report: &mut Vec<String>) {
    b.phone().await;
    b.screenshot(&format!("screen-{name}-phone")).await;
    b.desktop().await;
    b.screenshot(&format!("screen-{name}-desktop")).await;

    let mut line = format!("{name:<17}");
    for dark in [false, true] {
        b.color_scheme(dark).await;
        if dark {
            b.screenshot(&format!("screen-{name}-desktop-dark")).await;
        }
        let violations = run_axe(b, axe).await;
        let bad: Vec<&Value> = violations
            .iter()
            .filter(|v| v["impact"] == "serious" || v["impact"] == "critical")
            .collect();
        assert!(
            bad.is_empty(),
            "{name} ({}): axe-core violations:\n{}",
            if dark { "dark" } else { "light" },
            serde_json::to_string_pretty(&bad).unwrap_or_default()
        );
        let minor: Vec<String> = violations
            .iter()
            .map(|v| format!("{} ({})", str_of(&v["id"]), str_of(&v["impact"])))
            .collect();
        line.push_str(&format!(
            " {}: 0 serious/critical{}",
            if dark { "dark" } else { "light" },
            if minor.is_empty() {
                String::new()
            } else {
                format!(", minor: {}", minor.join(", "))
            }
        ));
    }
    b.color_scheme(false).await;
    report.push(line);

    // 320 px wide with 200 % text.
    b.viewport(320, 640, true).await;
    b.text_size(32).await;
    b.screenshot(&format!("screen-{name}-320-200pct")).await;
    let problems = b.eval(NARROW_PROBLEMS).await;
    assert_eq!(problems, json!([]), "{name} at 320 px with 200 % text");
    b.text_size(16).await;
    b.desktop().await;
}

async fn run_axe(b: &Browser, axe: &str) -> Vec<Value> {
    if b.eval("typeof window.axe").await != "object" {
        b.eval(&format!("{axe};\ntrue")).await;
    }
    let r = b
        .eval(
            "axe.run(document, { resultTypes: ['violations'] }).then((r) => ({ passes: r.passes.length, \
             violations: r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, \
             nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ') + ' ' + (n.failureSummary || '')) })) }))",
        )
        .await;
    // A run that checked nothing would pass too: make sure it looked.
    assert!(r["passes"].as_u64().is_some_and(|n| n >= 10), "axe: {r}");
    r["violations"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("axe: {r}"))
}

/// Sideways scrolling, clipped boxes and words split across lines.
const NARROW_PROBLEMS: &str = r#"(() => {
  const out = [];
  const de = document.documentElement;
  if (de.scrollWidth > de.clientWidth + 1) out.push(`page scrolls sideways: ${de.scrollWidth} > ${de.clientWidth}`);
  const name = (e) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}${e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : ''}`;
  for (const el of document.querySelectorAll('body *')) {
    if (!el.getClientRects().length || el.closest('.sr-only')) continue;
    const cs = getComputedStyle(el);
    if (cs.overflowX !== 'visible' && el.scrollWidth > el.clientWidth + 1) out.push(`clipped: ${name(el)}`);
    if (el.getBoundingClientRect().right > de.clientWidth + 1) out.push(`past the right edge: ${name(el)}`);
  }
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const p = n.parentElement;
    if (!p || !p.getClientRects().length || p.closest('.sr-only, noscript, script, style')) continue;
    const words = /[^\s\u2014\u2013\-\/\u2022]{2,}/g;
    for (let m = words.exec(n.data); m; m = words.exec(n.data)) {
      const r = document.createRange();
      r.setStart(n, m.index);
      r.setEnd(n, m.index + m[0].length);
      const lines = new Set([...r.getClientRects()].filter((x) => x.width > 0).map((x) => Math.round(x.bottom)));
      if (lines.size > 1) out.push(`"${m[0]}" broken across lines in ${name(p)}`);
    }
  }
  return out;
})()"#;
