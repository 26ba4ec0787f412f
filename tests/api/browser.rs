//! Real-browser end-to-end tests of the hosted page `/link/{token}`.
//!
//! Headless Chromium (Debian's `/usr/bin/chromium`) is driven over the
//! DevTools Protocol by the small client in this file, WebSocket included, so
//! no extra crate is needed. The provider SDKs (`cdn.plaid.com`,
//! `cdn.teller.io`) never touch the network: `Fetch.enable` pauses those
//! requests and `Fetch.fulfillRequest` answers them with stub scripts whose
//! widgets report success at once. The server talks to the fake Plaid and
//! Teller APIs of `fakes.rs`.
//!
//! Without Chromium the tests print a note and pass, unless `CI=true`, where
//! they fail. Screenshots land in `target/browser-e2e/`.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::fakes::{FakePlaid, FakeTeller, PLAID_INSTITUTION_NAME, TELLER_APP_ID};
use crate::helpers::{spawn_app, spawn_app_with, TestApp};

/// Every wait in these tests ends by then.
pub(crate) const WAIT: Duration = Duration::from_secs(15);
/// How often a wait looks again.
pub(crate) const POLL: Duration = Duration::from_millis(50);

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

pub(crate) fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ------------------------------------------------------------------ browser

/// A canned answer for paused requests whose URL starts with `prefix` (and,
/// when `method` is set, whose method matches).
#[derive(Clone)]
pub(crate) struct Stub {
    pub(crate) prefix: String,
    pub(crate) method: Option<&'static str>,
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
}

impl Stub {
    fn script(prefix: &str, body: &str) -> Stub {
        Stub {
            prefix: prefix.to_owned(),
            method: None,
            status: 200,
            content_type: "application/javascript; charset=utf-8",
            body: body.to_owned(),
        }
    }
}

/// Canned answers; other requests go on to the network untouched, except the
/// SDK origins, which get a 404 (the tests never reach the real CDNs).
type Stubs = Arc<Mutex<Vec<Stub>>>;

/// A headless Chromium with one page, killed (with its helpers) on drop.
pub(crate) struct Browser {
    child: Child,
    cdp: Cdp,
    /// The page's flattened DevTools session.
    session: String,
    stubs: Stubs,
    /// Console messages and uncaught exceptions of the page.
    console: Arc<Mutex<Vec<String>>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    _profile: tempfile::TempDir,
}

fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

impl Browser {
    /// Start Chromium and open a blank page; `None` (skip) when there is no
    /// Chromium outside CI.
    pub(crate) async fn launch() -> Option<Browser> {
        let path = chromium_path();
        if !path.exists() {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "browser tests need Chromium at {} (apt-get install -y chromium) or CHROMIUM=<path>",
                path.display()
            );
            eprintln!(
                "note: skipping browser test: no Chromium at {} (apt-get install -y chromium)",
                path.display()
            );
            return None;
        }
        let profile = tempfile::tempdir().expect("browser profile dir");
        let mut child = Command::new(&path)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-quic",
                "--hide-scrollbars",
                "--mute-audio",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so that drop ends its helpers too.
            .process_group(0)
            .spawn()
            .expect("start chromium");

        // Read stderr on a thread for good (a full pipe would stall Chromium);
        // hand over the DevTools address and keep the last lines for failures.
        let stderr = child.stderr.take().expect("chromium stderr");
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let sink = tail.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(ws) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(ws.trim().to_owned());
                }
                let mut t = lock(&sink);
                if t.len() >= 40 {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        let ws_url = match tokio::task::spawn_blocking(move || rx.recv_timeout(WAIT)).await {
            Ok(Ok(url)) => url,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let tail: Vec<String> = lock(&tail).iter().cloned().collect();
                panic!(
                    "chromium printed no DevTools address within {WAIT:?}:\n{}",
                    tail.join("\n")
                );
            }
        };

        let stubs: Stubs = Arc::new(Mutex::new(Vec::new()));
        let console = Arc::new(Mutex::new(Vec::new()));
        let cdp = Cdp::connect(&ws_url, stubs.clone(), console.clone())
            .await
            .unwrap_or_else(|e| panic!("DevTools connection to {ws_url}: {e}"));
        let mut browser = Browser {
            child,
            cdp,
            session: String::new(),
            stubs,
            console,
            stderr_tail: tail,
            _profile: profile,
        };
        let target = browser
            .call_browser("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = browser
            .call_browser(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        browser.session = str_of(&attached["sessionId"]);
        browser.enable_domains().await;
        Some(browser)
    }

    /// Page, Runtime, Log and request interception on the current page.
    async fn enable_domains(&self) {
        for method in ["Page.enable", "Runtime.enable", "Log.enable"] {
            self.call(method, json!({})).await;
        }
        self.call(
            "Fetch.enable",
            json!({ "patterns": [{ "urlPattern": "*", "requestStage": "Request" }] }),
        )
        .await;
    }

    /// The tab driven now (see [`Browser::use_tab`]).
    pub(crate) fn tab(&self) -> String {
        self.session.clone()
    }

    /// Drive the tab `tab` (from [`Browser::tab`]) again.
    pub(crate) fn use_tab(&mut self, tab: String) {
        self.session = tab;
    }

    /// Open `url` in a new tab of the same browser (shared localStorage) and
    /// drive that tab from now on.
    pub(crate) async fn open_tab(&mut self, url: &str) {
        let target = self
            .call_browser("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = self
            .call_browser(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        self.session = str_of(&attached["sessionId"]);
        self.enable_domains().await;
        self.goto(url).await;
    }

    /// Answer requests starting with `prefix` (and of `method`, if given) with
    /// `status` and a JSON `body`, without reaching the server.
    pub(crate) fn intercept_json(
        &self,
        method: Option<&'static str>,
        prefix: &str,
        status: u16,
        body: &Value,
    ) {
        lock(&self.stubs).push(Stub {
            prefix: prefix.to_owned(),
            method,
            status,
            content_type: "application/json",
            body: body.to_string(),
        });
    }

    /// Answer GETs of URLs starting with `prefix` with this HTML.
    pub(crate) fn intercept_html(&self, prefix: &str, html: &str) {
        lock(&self.stubs).push(Stub {
            prefix: prefix.to_owned(),
            method: Some("GET"),
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: html.to_owned(),
        });
    }

    /// Emulate `prefers-color-scheme: dark` (or light).
    pub(crate) async fn color_scheme(&self, dark: bool) {
        let value = if dark { "dark" } else { "light" };
        self.call(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": value }] }),
        )
        .await;
    }

    /// The browser's default font size, in px (16 is 100 %).
    pub(crate) async fn text_size(&self, px: u32) {
        self.call(
            "Page.setFontSizes",
            json!({ "fontSizes": { "standard": px, "fixed": px * 13 / 16 } }),
        )
        .await;
    }

    /// A viewport of `width`×`height` CSS pixels.
    pub(crate) async fn viewport(&self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": if mobile { 2 } else { 1 }, "mobile": mobile }),
        )
        .await;
    }

    /// Press a key (`Tab`, `Enter`, …) as a keyboard would.
    pub(crate) async fn press(&self, key: &str, shift: bool) {
        let code = match key {
            "Tab" => 9,
            "Enter" => 13,
            "Escape" => 27,
            _ => 0,
        };
        // Enter needs its text to activate a button, like a real key press.
        let (down, text) = if key == "Enter" {
            ("keyDown", "\r")
        } else {
            ("rawKeyDown", "")
        };
        for kind in [down, "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({ "type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code,
                        "text": if kind == "keyUp" { "" } else { text },
                        "modifiers": if shift { 8 } else { 0 } }),
            )
            .await;
        }
    }

    /// A PNG of the element `id` as shown, in `target/browser-e2e/<name>.png`.
    pub(crate) async fn screenshot_element(&self, id: &str, name: &str) -> PathBuf {
        let rect = self
            .eval(&format!(
                "(() => {{ const r = document.getElementById({}).getBoundingClientRect(); \
                 return {{ x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height }}; }})()",
                json!(id)
            ))
            .await;
        let mut clip = rect;
        clip["scale"] = json!(2);
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "clip": clip, "captureBeyondViewport": true }),
            )
            .await;
        save_png(name, &str_of(&r["data"]))
    }

    async fn call_browser(&self, method: &str, params: Value) -> Value {
        self.cdp
            .call(None, method, params)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}\n{}", self.diagnostics()))
    }

    pub(crate) async fn call(&self, method: &str, params: Value) -> Value {
        self.cdp
            .call(Some(&self.session), method, params)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}\n{}", self.diagnostics()))
    }

    /// Console output and Chromium's last log lines, for failure messages.
    pub(crate) fn diagnostics(&self) -> String {
        let console = lock(&self.console).join("\n");
        let tail: Vec<String> = lock(&self.stderr_tail).iter().cloned().collect();
        format!(
            "page console:\n{console}\nchromium stderr (last lines):\n{}",
            tail.join("\n")
        )
    }

    /// No uncaught exception, `console.error` or Content-Security-Policy
    /// violation so far (a missing favicon is fine).
    pub(crate) fn assert_no_page_errors(&self) {
        let bad: Vec<String> = lock(&self.console)
            .iter()
            .filter(|l| {
                l.starts_with("uncaught:")
                    || l.starts_with("console.error")
                    || l.contains("(security)")
            })
            .cloned()
            .collect();
        assert!(bad.is_empty(), "page errors:\n{}", bad.join("\n"));
    }

    /// Serve these scripts for the Plaid and Teller SDK URLs (and drop any
    /// other canned answer).
    pub(crate) fn stub_sdks(&self, plaid: &str, teller: &str) {
        *lock(&self.stubs) = vec![
            Stub::script("https://cdn.plaid.com/", plaid),
            Stub::script("https://cdn.teller.io/", teller),
        ];
    }

    /// A phone: 390×844 CSS pixels, touch, device scale 2.
    pub(crate) async fn phone(&self) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true }),
        )
        .await;
    }

    /// A laptop screen: 1280×900, scale 1.
    pub(crate) async fn desktop(&self) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
    }

    pub(crate) async fn goto(&self, url: &str) {
        let r = self.call("Page.navigate", json!({ "url": url })).await;
        if let Some(err) = r.get("errorText").and_then(Value::as_str) {
            panic!("navigating to {url}: {err}\n{}", self.diagnostics());
        }
    }

    /// Evaluate `expr` in the page (awaiting promises); its value as JSON.
    pub(crate) async fn try_eval(&self, expr: &str) -> Result<Value, String> {
        let r = self
            .cdp
            .call(
                Some(&self.session),
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(format!("exception: {ex}"));
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    pub(crate) async fn eval(&self, expr: &str) -> Value {
        self.try_eval(expr)
            .await
            .unwrap_or_else(|e| panic!("evaluating {expr}: {e}\n{}", self.diagnostics()))
    }

    /// Poll `expr` every 50 ms until `done` accepts its value; panics after [`WAIT`].
    pub(crate) async fn wait_for(
        &self,
        what: &str,
        expr: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + WAIT;
        let mut last = Err("not evaluated yet".to_owned());
        while Instant::now() < deadline {
            // Errors are expected while a navigation swaps the document.
            last = self.try_eval(expr).await;
            if let Ok(v) = &last {
                if done(v) {
                    return v.clone();
                }
            }
            tokio::time::sleep(POLL).await;
        }
        let page = self
            .try_eval("document.body ? document.body.innerText : ''")
            .await;
        panic!(
            "timed out after {WAIT:?} waiting for {what} ({expr}); last value {last:?}\n\
             location: {:?}\npage text: {page:?}\n{}",
            self.try_eval("location.href").await,
            self.diagnostics()
        );
    }

    /// Wait until `document.body.dataset.state` is `state`; fails at once on
    /// the page's error screen.
    pub(crate) async fn wait_state(&self, state: &str) {
        let expr = "document.body ? (document.body.dataset.state || '') : ''";
        let seen = self
            .wait_for(&format!("state {state:?}"), expr, |v| {
                v == state || (v == "error" && state != "error")
            })
            .await;
        if seen != state {
            panic!(
                "page shows its error screen while waiting for {state:?}: {}\n{}",
                self.text("error-message").await,
                self.diagnostics()
            );
        }
    }

    pub(crate) async fn click(&self, id: &str) {
        let id_js = json!(id);
        let expr = format!(
            "(() => {{ const b = document.getElementById({id_js}); \
             if (!b || b.disabled || b.offsetParent === null) return false; b.click(); return true; }})()"
        );
        self.wait_for(&format!("#{id} to be clickable"), &expr, |v| v == true)
            .await;
    }

    pub(crate) async fn text(&self, id: &str) -> String {
        let expr = format!(
            "(document.getElementById({}) || {{}}).textContent || ''",
            json!(id)
        );
        str_of(&self.eval(&expr).await)
    }

    pub(crate) async fn body_text(&self) -> String {
        str_of(&self.eval("document.body.innerText").await)
    }

    /// Save a PNG of the viewport as `target/browser-e2e/<name>.png`.
    pub(crate) async fn screenshot(&self, name: &str) {
        // Let the screen's fade-in end first (endless spinners aside).
        self.wait_for(
            "animations to settle",
            "document.getAnimations().every((a) => a.playState !== 'running' \
             || a.effect.getComputedTiming().iterations === Infinity)",
            |v| v == true,
        )
        .await;
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": false }),
            )
            .await;
        save_png(name, &str_of(&r["data"]));
    }
}

/// Write a base64 PNG as `target/browser-e2e/<name>.png`; its path.
fn save_png(name: &str, data: &str) -> PathBuf {
    let png = base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("screenshot base64");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-e2e");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
    path
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.cdp.reader.abort();
        // The browser leads its own process group: end it and its helpers.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ CDP

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A DevTools Protocol connection: numbered calls matched to their answers by
/// a reader task, which also fulfils paused SDK requests and notes console output.
struct Cdp {
    writer: Arc<tokio::sync::Mutex<WsWriter>>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    reader: tokio::task::JoinHandle<()>,
}

impl Cdp {
    async fn connect(
        ws_url: &str,
        stubs: Stubs,
        console: Arc<Mutex<Vec<String>>>,
    ) -> Result<Cdp, String> {
        let (reader, writer) = ws_connect(ws_url).await?;
        let writer = Arc::new(tokio::sync::Mutex::new(writer));
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let next_id = Arc::new(AtomicU64::new(1));
        let task = tokio::spawn(read_loop(
            reader,
            writer.clone(),
            pending.clone(),
            next_id.clone(),
            stubs,
            console,
        ));
        Ok(Cdp {
            writer,
            pending,
            next_id,
            reader: task,
        })
    }

    async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        self.writer
            .lock()
            .await
            .send(0x1, msg.to_string().as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let answer = match tokio::time::timeout(WAIT, rx).await {
            Ok(Ok(v)) => v,
            Ok(Err(_)) => return Err("connection closed".into()),
            Err(_) => {
                lock(&self.pending).remove(&id);
                return Err(format!("no answer within {WAIT:?}"));
            }
        };
        match answer.get("error") {
            Some(e) => Err(e.to_string()),
            None => Ok(answer.get("result").cloned().unwrap_or(Value::Null)),
        }
    }
}

async fn read_loop(
    mut reader: WsReader,
    writer: Arc<tokio::sync::Mutex<WsWriter>>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    stubs: Stubs,
    console: Arc<Mutex<Vec<String>>>,
) {
    while let Ok(frame) = reader.next().await {
        let text = match frame {
            Frame::Text(t) => t,
            Frame::Ping(p) => {
                let _ = writer.lock().await.send(0xA, &p).await;
                continue;
            }
            Frame::Close => break,
        };
        let Ok(msg) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some(id) = msg.get("id").and_then(Value::as_u64) {
            if let Some(tx) = lock(&pending).remove(&id) {
                let _ = tx.send(msg);
            }
            continue;
        }
        let params = &msg["params"];
        match msg["method"].as_str().unwrap_or("") {
            "Fetch.requestPaused" => {
                let url = str_of(&params["request"]["url"]);
                let method = str_of(&params["request"]["method"]);
                // The latest matching answer wins.
                let stub = lock(&stubs)
                    .iter()
                    .rev()
                    .find(|s| {
                        url.starts_with(s.prefix.as_str()) && s.method.is_none_or(|m| m == method)
                    })
                    .cloned();
                let sdk = url.starts_with("https://cdn.plaid.com/")
                    || url.starts_with("https://cdn.teller.io/");
                let stub = match stub {
                    Some(s) => s,
                    None if sdk => Stub {
                        status: 404,
                        body: String::new(),
                        ..Stub::script("", "")
                    },
                    None => {
                        let mut reply = json!({
                            "id": next_id.fetch_add(1, Ordering::SeqCst),
                            "method": "Fetch.continueRequest",
                            "params": { "requestId": params["requestId"] },
                        });
                        if let Some(s) = msg.get("sessionId") {
                            reply["sessionId"] = s.clone();
                        }
                        let _ = writer
                            .lock()
                            .await
                            .send(0x1, reply.to_string().as_bytes())
                            .await;
                        continue;
                    }
                };
                let mut reply = json!({
                    "id": next_id.fetch_add(1, Ordering::SeqCst),
                    "method": "Fetch.fulfillRequest",
                    "params": {
                        "requestId": params["requestId"],
                        "responseCode": stub.status,
                        "responseHeaders": [
                            { "name": "Content-Type", "value": stub.content_type },
                            { "name": "Access-Control-Allow-Origin", "value": "*" },
                            { "name": "Content-Security-Policy", "value": breadbox::hosted::CSP },
                        ],
                        "body": base64::engine::general_purpose::STANDARD.encode(stub.body),
                    },
                });
                if let Some(s) = msg.get("sessionId") {
                    reply["sessionId"] = s.clone();
                }
                // Fire and forget: its answer matches no pending call.
                let _ = writer
                    .lock()
                    .await
                    .send(0x1, reply.to_string().as_bytes())
                    .await;
            }
            "Runtime.consoleAPICalled" => {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| match x.get("value") {
                                Some(Value::String(s)) => s.clone(),
                                Some(v) => v.to_string(),
                                None => str_of(&x["description"]),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                lock(&console).push(format!(
                    "console.{}: {}",
                    str_of(&params["type"]),
                    args.join(" ")
                ));
            }
            "Log.entryAdded" => {
                let e = &params["entry"];
                lock(&console).push(format!(
                    "log.{} ({}): {} {}",
                    str_of(&e["level"]),
                    str_of(&e["source"]),
                    str_of(&e["text"]),
                    str_of(&e["url"])
                ));
            }
            "Runtime.exceptionThrown" => {
                let d = &params["exceptionDetails"];
                lock(&console).push(format!(
                    "uncaught: {} {}",
                    str_of(&d["text"]),
                    str_of(&d["exception"]["description"])
                ));
            }
            _ => {}
        }
    }
    // Wake every waiting call: the connection is gone.
    lock(&pending).clear();
}

// ------------------------------------------------------------------ WebSocket

/// A minimal RFC 6455 client: text messages out (masked), text/ping/close in.
async fn ws_connect(url: &str) -> Result<(WsReader, WsWriter), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("not a ws:// URL: {url}"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = TcpStream::connect(host)
        .await
        .map_err(|e| format!("connect {host}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let key = base64::engine::general_purpose::STANDARD.encode(nonce());
    let request = format!(
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    // Read the handshake answer byte by byte, so no frame bytes are swallowed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err("handshake answer too long".into());
        }
        let b = stream
            .read_u8()
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        head.push(b);
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!("handshake refused: {head}"));
    }
    let (r, w) = stream.into_split();
    Ok((
        WsReader { r },
        WsWriter {
            w,
            seed: nonce_u32(),
        },
    ))
}

fn nonce() -> [u8; 16] {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("random bytes");
    b
}

fn nonce_u32() -> u32 {
    let b = nonce();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

struct WsWriter {
    w: OwnedWriteHalf,
    seed: u32,
}

impl WsWriter {
    /// One final frame with `opcode` and `payload`, masked as a client must.
    async fn send(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        // xorshift: a fresh mask per frame.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 17;
        self.seed ^= self.seed << 5;
        let mask = self.seed.to_be_bytes();
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&short.to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.w.write_all(&frame).await
    }
}

enum Frame {
    Text(String),
    Ping(Vec<u8>),
    Close,
}

struct WsReader {
    r: OwnedReadHalf,
}

impl WsReader {
    /// The next whole message (fragments joined).
    async fn next(&mut self) -> std::io::Result<Frame> {
        let mut message = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.r.read_exact(&mut h).await?;
            let (fin, opcode, masked) = (h[0] & 0x80 != 0, h[0] & 0x0F, h[1] & 0x80 != 0);
            let len = match h[1] & 0x7F {
                126 => u64::from(self.r.read_u16().await?),
                127 => self.r.read_u64().await?,
                n => u64::from(n),
            };
            let mut mask = [0u8; 4];
            if masked {
                self.r.read_exact(&mut mask).await?;
            }
            let len = usize::try_from(len).map_err(std::io::Error::other)?;
            let mut payload = vec![0u8; len];
            self.r.read_exact(&mut payload).await?;
            if masked {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
            }
            match opcode {
                0x8 => return Ok(Frame::Close),
                0x9 => return Ok(Frame::Ping(payload)),
                0xA => continue,
                _ => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return Ok(Frame::Text(String::from_utf8_lossy(&message).into_owned()));
                    }
                }
            }
        }
    }
}
