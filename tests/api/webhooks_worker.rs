//! The webhook delivery task against a local receiver: signing, retries with
//! a stable message id, restarts, polling for rows written by another
//! process, and no redirect following.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use breadbox::db::{outbox, Db};
use breadbox::webhooks::{self, WorkerHandle, WorkerOptions};
use serde_json::json;
use tempfile::TempDir;
use url::Url;

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// Every wait in these tests gives up after this long.
const DEADLINE: Duration = Duration::from_secs(10);

/// One request the receiver saw.
#[derive(Clone)]
struct Received {
    path: String,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// What the receiver answers and remembers.
#[derive(Default)]
struct ReceiverState {
    seen: Mutex<Vec<Received>>,
    /// Status to answer (0 = 200).
    status: AtomicU16,
    /// Milliseconds to hold each request before answering.
    delay_ms: AtomicU64,
}

/// A local HTTP server that records webhook requests.
struct Receiver {
    url: Url,
    state: Arc<ReceiverState>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    /// Serve on `listener`, answering `status` to every request.
    fn start(listener: TcpListener, status: u16) -> Receiver {
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(ReceiverState::default());
        state.status.store(status, Ordering::SeqCst);
        let data = web::Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(record))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Receiver {
            url: Url::parse(&format!("http://{addr}/hook")).expect("url"),
            state,
            handle,
        }
    }

    fn answer(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    fn seen(&self) -> Vec<Received> {
        self.state
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // The stop command is sent at once; nothing needs to wait for it.
        drop(self.handle.stop(false));
    }
}

async fn record(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ReceiverState>,
) -> HttpResponse {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in req.headers() {
        headers.append(
            reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()).expect("name"),
            reqwest::header::HeaderValue::from_bytes(value.as_bytes()).expect("value"),
        );
    }
    state
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Received {
            path: req.path().to_owned(),
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    match state.status.load(Ordering::SeqCst) {
        0 | 200 => HttpResponse::Ok().finish(),
        307 => HttpResponse::TemporaryRedirect()
            .insert_header(("location", "/elsewhere"))
            .finish(),
        s => HttpResponse::build(actix_web::http::StatusCode::from_u16(s).expect("status code"))
            .finish(),
    }
}

fn key() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .expect("base64")
}

fn open_db() -> (TempDir, Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("breadbox.db"), "FULL").expect("open db");
    (dir, db)
}

/// Options for fast tests: frequent polls, retries as soon as possible.
fn fast() -> WorkerOptions {
    WorkerOptions {
        poll_interval: Duration::from_millis(50),
        timeout: Duration::from_secs(10),
        base_backoff: Duration::ZERO,
    }
}

fn start_worker(db: &Db, url: &Url, opts: WorkerOptions) -> WorkerHandle {
    webhooks::spawn(db.clone(), url.clone(), key(), opts).expect("spawn worker")
}

/// Enqueue one message; returns its id and the exact body it will send.
fn enqueue(db: &Db, event_type: &str, data: serde_json::Value) -> (String, String) {
    let now = breadbox::domain::time::now();
    let id = db
        .write(|tx| outbox::enqueue(tx, event_type, &data, now))
        .expect("enqueue");
    let body = pending(db)
        .into_iter()
        .find(|d| d.id == id)
        .expect("queued")
        .payload;
    (id, body)
}

/// Every message not yet delivered or given up, due or not.
fn pending(db: &Db) -> Vec<outbox::Delivery> {
    db.read(|c| outbox::due(c, i64::MAX, 100)).expect("outbox")
}

/// Poll `check` until it holds; panic naming `what` after [`DEADLINE`].
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_delivered(db: &Db) {
    wait_until("the outbox to drain", || async {
        db.read_async(outbox::pending_count).await.expect("count") == 0
    })
    .await;
}

async fn wait_requests(r: &Receiver, n: usize) {
    wait_until(&format!("{n} requests"), || async { r.seen().len() >= n }).await;
}

async fn wait_attempts(db: &Db, id: &str, n: u32) {
    wait_until(&format!("{n} attempts"), || async {
        let id = id.to_owned();
        let rows = db
            .read_async(|c| outbox::due(c, i64::MAX, 100))
            .await
            .expect("outbox");
        rows.iter().any(|d| d.id == id && d.attempts >= n)
    })
    .await;
}

/// Check a request is exactly what Standard Webhooks promises for `id`/`body`.
fn assert_signed(req: &Received, id: &str, body: &str) {
    assert_eq!(req.header("webhook-id"), id);
    assert_eq!(req.header("content-type"), "application/json");
    assert_eq!(req.body, body);
    let wh = standardwebhooks::Webhook::new(SECRET).expect("secret");
    wh.verify(req.body.as_bytes(), &req.headers)
        .expect("signature verifies");
}

/// A port that nothing listens on (bound, then released).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

/// Bind `addr` again, retrying briefly in case the old socket lingers.
async fn rebind(addr: SocketAddr) -> TcpListener {
    let start = Instant::now();
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return l,
            Err(e) => assert!(start.elapsed() < DEADLINE, "rebind {addr}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn delivers_once_signed_with_the_exact_body() {
    let (_dir, db) = open_db();
    let receiver = Receiver::start(TcpListener::bind("127.0.0.1:0").expect("bind"), 200);
    let (id, body) = enqueue(
        &db,
        "link_session.completed",
        json!({"id": "7c1e…", "label": "Ünïcode & \"quotes\"", "result_connection_ids": []}),
    );
    assert!(id.starts_with("msg_") && id.len() == 31, "{id}");
    let body_json: serde_json::Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(body_json["type"], "link_session.completed");
    assert!(body_json["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(body_json["data"]["label"], "Ünïcode & \"quotes\"");

    // Polls are an hour apart, so only the start and wake-ups deliver.
    let worker = start_worker(
        &db,
        &receiver.url,
        WorkerOptions {
            poll_interval: Duration::from_secs(3600),
            ..fast()
        },
    );
    wait_delivered(&db).await;
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/hook");
    assert_signed(&seen[0], &id, &body);

    // The task now idles until the next poll; a wake-up delivers at once.
    let (id2, body2) = enqueue(&db, "link_session.active", json!({"n": 2}));
    worker.wake();
    wait_delivered(&db).await;
    let seen = receiver.seen();
    assert_eq!(seen.len(), 2, "each message is sent once");
    assert_signed(&seen[1], &id2, &body2);
    assert_ne!(id, id2);
    worker.shutdown().await;
}

#[actix_web::test]
async fn retries_until_the_receiver_is_up_with_the_same_id() {
    let (_dir, db) = open_db();
    let addr = free_port();
    let url = Url::parse(&format!("http://{addr}/hook")).expect("url");
    let (id, body) = enqueue(&db, "link_session.active", json!({"n": 1}));
    let worker = start_worker(&db, &url, fast());

    // Nobody listens: the attempts fail and the message stays queued.
    wait_attempts(&db, &id, 2).await;

    // Up, but failing.
    let receiver = Receiver::start(rebind(addr).await, 500);
    wait_requests(&receiver, 2).await;
    assert_eq!(db.read(outbox::pending_count).expect("count"), 1);

    // Healthy at last.
    receiver.answer(204);
    wait_delivered(&db).await;
    let seen = receiver.seen();
    assert!(seen.len() >= 3);
    for req in &seen {
        assert_signed(req, &id, &body);
    }
    worker.shutdown().await;
}

#[actix_web::test]
async fn pending_delivery_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breadbox.db");
    let db = Db::open(&path, "FULL").expect("open db");
    let receiver = Receiver::start(TcpListener::bind("127.0.0.1:0").expect("bind"), 503);
    let (id, body) = enqueue(
        &db,
        "link_session.failed",
        json!({"error_code": "CANCELED"}),
    );

    let worker = start_worker(&db, &receiver.url, fast());
    wait_attempts(&db, &id, 2).await;
    drop(worker);
    drop(db);

    // Dropping the handle stopped the task: once a request already on the
    // wire has landed, no more attempts arrive (a live one would retry every 50 ms).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tried = receiver.seen().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.seen().len(),
        tried,
        "the dropped worker kept going"
    );

    // "Restart": a new Db handle on the same file and a new worker.
    receiver.answer(200);
    let db = Db::open(&path, "FULL").expect("reopen db");
    let worker = start_worker(&db, &receiver.url, fast());
    wait_delivered(&db).await;
    let seen = receiver.seen();
    assert_eq!(seen.len(), tried + 1);
    assert_signed(&seen[tried], &id, &body);
    worker.shutdown().await;
}

#[actix_web::test]
async fn shutdown_abandons_an_attempt_in_flight() {
    let (_dir, db) = open_db();
    let receiver = Receiver::start(TcpListener::bind("127.0.0.1:0").expect("bind"), 200);
    receiver.state.delay_ms.store(30_000, Ordering::SeqCst);
    enqueue(&db, "link_session.active", json!({}));
    let worker = start_worker(&db, &receiver.url, fast());
    worker.wake();
    wait_requests(&receiver, 1).await;

    tokio::time::timeout(Duration::from_secs(2), worker.shutdown())
        .await
        .expect("shutdown waits for no request");
    // The answer never came, so the message is still owed.
    assert_eq!(db.read(outbox::pending_count).expect("count"), 1);
}

#[actix_web::test]
async fn delivers_rows_written_by_another_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breadbox.db");
    let server_db = Db::open(&path, "FULL").expect("open db");
    let receiver = Receiver::start(TcpListener::bind("127.0.0.1:0").expect("bind"), 200);
    let worker = start_worker(&server_db, &receiver.url, fast());

    // Like the CLI: its own handle on the file, and no way to wake the server.
    let cli_db = Db::open(&path, "FULL").expect("open db again");
    let (id, body) = enqueue(&cli_db, "link_session.completed", json!({"via": "cli"}));
    wait_delivered(&server_db).await;
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    assert_signed(&seen[0], &id, &body);
    worker.shutdown().await;
}

#[actix_web::test]
async fn does_not_follow_redirects() {
    let (_dir, db) = open_db();
    let receiver = Receiver::start(TcpListener::bind("127.0.0.1:0").expect("bind"), 307);
    let (id, _) = enqueue(&db, "link_session.expired", json!({}));
    let worker = start_worker(&db, &receiver.url, fast());
    worker.wake();

    // A 307 counts as a failure: the message is retried, never delivered.
    wait_attempts(&db, &id, 2).await;
    worker.shutdown().await;
    let seen = receiver.seen();
    assert!(seen.len() >= 2);
    assert!(
        seen.iter().all(|r| r.path == "/hook"),
        "the redirect was followed"
    );
    assert_eq!(db.read(outbox::pending_count).expect("count"), 1);
}
