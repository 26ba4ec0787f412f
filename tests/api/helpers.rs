//! Test harness: `spawn_app()` runs the real server on 127.0.0.1:0 with a
//! temporary database; `BinServer` runs the built binary.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use breadbox::config::{Config, Secret};
use breadbox::db::Db;
use breadbox::domain::api_key::Scope;
use serde_json::{json, Value};
use tempfile::TempDir;

/// A running server plus what tests need to talk to it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The same database the server uses.
    pub db: Db,
    /// A full_access key.
    pub key: String,
    /// A read_only key.
    pub read_key: String,
    /// The database file the server uses.
    pub db_path: PathBuf,
    /// Keeps the database directory alive.
    _dir: TempDir,
    http: reqwest::Client,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body text.
    pub text: String,
    /// Body as JSON (`Null` when it is not JSON).
    pub json: Value,
}

impl Resp {
    /// The error envelope's code.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }

    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A config for tests: temp database, no providers.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.database.path = dir.join("breadbox.db");
    c
}

/// Configure fake Plaid credentials (no calls are made unless a test does so).
pub fn with_plaid(c: &mut Config) {
    c.plaid.client_id = Some("client-id-test".into());
    c.plaid.secret = Some(Secret::new("plaid-secret-test"));
}

/// Start the app with the default test config.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Start the app after letting the test adjust the config.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(dir.path());
    adjust(&mut config);
    start(config, dir).await
}

/// Start the app on `config` (whose database lives in `dir`).
pub async fn start(config: Config, dir: TempDir) -> TestApp {
    start_with_options(config, dir, &breadbox::providers::ClientOptions::default()).await
}

/// Create an API key straight in the database; returns the plaintext.
pub fn make_key(db: &Db, name: &str, scope: Scope) -> String {
    let (_, plain) = db
        .write(|tx| breadbox::db::api_keys::insert(tx, name, scope, breadbox::domain::time::now()))
        .expect("insert key");
    plain.expose().to_owned()
}

/// Read a response whole.
pub async fn read(res: reqwest::Response) -> Resp {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        text,
        json,
    }
}

impl TestApp {
    /// A request builder for `path`, with no credentials.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// GET with the full_access key.
    pub async fn get(&self, path: &str) -> Resp {
        self.get_as(path, &self.key).await
    }

    /// GET with `key`.
    pub async fn get_as(&self, path: &str, key: &str) -> Resp {
        read(
            self.request(reqwest::Method::GET, path)
                .header("X-API-Key", key)
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    /// POST JSON with the full_access key.
    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.post_as(path, body, &self.key).await
    }

    /// POST JSON with `key`.
    pub async fn post_as(&self, path: &str, body: &Value, key: &str) -> Resp {
        read(
            self.request(reqwest::Method::POST, path)
                .header("X-API-Key", key)
                .json(body)
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    /// POST raw bytes with a content type, full_access key.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Resp {
        read(
            self.request(reqwest::Method::POST, path)
                .header("X-API-Key", &self.key)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    /// DELETE with the full_access key.
    pub async fn delete(&self, path: &str) -> Resp {
        read(
            self.request(reqwest::Method::DELETE, path)
                .header("X-API-Key", &self.key)
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    /// A page call: no API key.
    pub async fn page_get(&self, path: &str) -> Resp {
        read(
            self.request(reqwest::Method::GET, path)
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    /// A page POST with a JSON body (or none).
    pub async fn page_post(&self, path: &str, body: Option<Value>) -> Resp {
        let mut rb = self.request(reqwest::Method::POST, path);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        read(rb.send().await.expect("send")).await
    }

    /// Create a user; returns its JSON.
    pub async fn create_user(&self, name: &str) -> Value {
        let r = self.post("/api/v1/users", &json!({ "name": name })).await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json
    }

    /// Mint a session for a fresh user with extra body fields; returns the 201 JSON.
    pub async fn mint(&self, extra: Value) -> Value {
        let user = self.create_user("Ana").await;
        let mut body = json!({ "user_id": user["id"] });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let r = self.post("/api/v1/connections/link", &body).await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json
    }

    /// Move a session's expiry into the past, straight in the database.
    pub fn expire_now(&self, session_id: &str) {
        let id = session_id.to_owned();
        self.db
            .write(|tx| {
                tx.execute(
                    "UPDATE link_sessions SET expires_at = ?2 WHERE id = ?1",
                    (&id, breadbox::domain::time::now() - 1),
                )?;
                Ok(())
            })
            .expect("expire");
    }
}

/// The key in `dir/bootstrap-key.txt`, if that file exists.
pub fn bootstrap_key_in(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("bootstrap-key.txt")).ok()?;
    text.lines()
        .find(|l| l.starts_with("bb_"))
        .map(|l| l.trim().to_owned())
}

/// The built `breadbox` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_breadbox"))
}

/// Run the binary to completion in the working directory `dir`.
pub fn run_bin_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir).args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run breadbox")
}

/// Run the binary to completion with `args` and extra environment.
pub fn run_bin(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run breadbox")
}

/// `breadbox serve` running as a child process; killed on drop.
pub struct BinServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Lines printed on stdout before it was ready.
    pub stdout_lines: Vec<String>,
    /// Everything printed on stderr so far (log lines), filled by a thread.
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
    stdout: Option<mpsc::Receiver<String>>,
    /// The database file it serves.
    pub db: PathBuf,
}

impl BinServer {
    /// Start `breadbox --database DB serve --listen 127.0.0.1:0 [extra]` and wait
    /// until it prints its address.
    pub fn start(db: &Path, extra: &[&str], env: &[(&str, &str)]) -> BinServer {
        let mut cmd = Command::new(bin());
        cmd.arg("--database")
            .arg(db)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn breadbox");
        let mut server = BinServer {
            child,
            base: String::new(),
            stdout_lines: Vec::new(),
            stderr: std::sync::Arc::new(std::sync::Mutex::new(String::new())),
            stdout: None,
            db: db.to_owned(),
        };
        let stdout = server.child.stdout.take().expect("stdout");
        let stderr = server.child.stderr.take().expect("stderr");
        let sink = server.stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[breadbox] {line}");
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        server.stdout = Some(rx);
        server.wait_for_address();
        server
    }

    fn wait_for_address(&mut self) {
        let rx = self.stdout.as_ref().expect("stdout reader");
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("server printed its address");
            let done = line
                .strip_prefix("breadbox listening on ")
                .map(|a| a.trim().to_owned());
            self.stdout_lines.push(line);
            if let Some(base) = done {
                self.base = base;
                return;
            }
        }
    }

    /// The bootstrap key of a first start: its stdout is not a terminal, so
    /// the key is in `bootstrap-key.txt` beside the database.
    pub fn bootstrap_key(&self) -> String {
        bootstrap_key_in(self.db.parent().expect("database directory"))
            .expect("the first start wrote bootstrap-key.txt")
    }

    /// The log text so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait")
    }
}

impl Drop for BinServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Like [`start`], but builds the server with explicit provider client
/// options (e.g. a short timeout) through `breadbox::build_with`.
pub async fn start_with_options(
    config: Config,
    dir: TempDir,
    opts: &breadbox::providers::ClientOptions,
) -> TestApp {
    let db = Db::open(
        &config.database.path,
        config.database.synchronous.as_pragma(),
    )
    .expect("open database");
    let key = make_key(&db, "test-full", Scope::FullAccess);
    let read_key = make_key(&db, "test-read", Scope::ReadOnly);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let db_path = config.database.path.clone();
    let server = breadbox::build_with(config, db.clone(), listener, opts).expect("build server");
    actix_web::rt::spawn(server);
    TestApp {
        base,
        db,
        key,
        read_key,
        db_path,
        _dir: dir,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
    }
}

impl BinServer {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGKILL (no chance to clean up, like a crash) and wait for the exit.
    pub fn kill9(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait")
    }
}

/// Run an admin command with `--database db --json`; it must succeed and
/// print exactly one JSON document, which is returned.
pub fn admin(db: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--database", db.to_str().expect("utf-8 path"), "--json"];
    all.extend_from_slice(args);
    let out = run_bin(&all, &[]);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "one JSON document: {text}");
    serde_json::from_str(&text).expect("stdout is JSON")
}

/// Create (and migrate) an empty database at `db`, as `breadbox serve`
/// would: admin commands refuse a database that does not exist.
pub fn new_database(db: &Path) {
    Db::open(db, "FULL").expect("create database");
}

/// A user and a fresh link for them, made with the CLI on `db`.
pub fn admin_user_and_link(db: &Path) -> (serde_json::Value, serde_json::Value) {
    let user = admin(db, &["users", "create", "--name", "Ana"]);
    let id = user["id"].as_str().expect("user id").to_owned();
    let link = admin(db, &["links", "create", "--user", &id]);
    (user, link)
}
