//! A small headless-Chromium driver for the page tests: the browser process,
//! a DevTools Protocol client (flattened sessions, request interception,
//! console capture) and the minimal WebSocket client under it.
//!
//! Without Chromium, [`Browser::launch`] prints a note and returns `None`
//! (the test passes), unless `CI=true`, where it fails.

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
use tokio::sync::oneshot;

use crate::ws::{ws_connect, Frame, WsReader, WsWriter};

/// Every wait in these tests ends by then.
pub(crate) const WAIT: Duration = Duration::from_secs(15);
/// How often a wait looks again.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// A JSON string's value, or "".
pub(crate) fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
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
