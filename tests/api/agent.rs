//! Agent ergonomics: long-poll, idempotency, webhooks end to end, CLI --wait,
//! pagination while minting.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{run_bin, spawn_app, spawn_app_with, TestApp};

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_owned()
}

async fn poll(app: &TestApp, id: &str, wait: u64) -> (crate::helpers::Resp, Duration) {
    let started = Instant::now();
    let r = app
        .get(&format!("/api/v1/connections/link/{id}?wait={wait}"))
        .await;
    (r, started.elapsed())
}

#[actix_web::test]
async fn long_poll_returns_early_on_a_page_action() {
    let app = spawn_app().await;
    let m = app.mint(json!({})).await;
    let (id, token) = (s(&m["id"]), s(&m["token"]));
    let waiter = poll(&app, &id, 20);
    let opener = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.page_get(&format!("/_link/{token}/session")).await
    };
    let ((r, took), opened) = futures_util::join!(waiter, opener);
    assert_eq!(opened.status, 200);
    assert_eq!(r.status, 200);
    assert_eq!(r.json["status"], "active");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[actix_web::test]
async fn long_poll_returns_at_once_when_terminal_and_late_without_change() {
    let app = spawn_app().await;
    let m = app.mint(json!({})).await;
    let id = s(&m["id"]);
    let (r, took) = poll(&app, &id, 1).await;
    assert_eq!(r.json["status"], "pending");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );

    app.post(&format!("/api/v1/connections/link/{id}/cancel"), &json!({}))
        .await;
    let (r, took) = poll(&app, &id, 30).await;
    assert_eq!(r.json["status"], "failed");
    assert!(took < Duration::from_millis(500), "{took:?}");

    for bad in ["0", "61", "x", "-1"] {
        let r = app
            .get(&format!("/api/v1/connections/link/{id}?wait={bad}"))
            .await;
        assert_eq!((r.status, r.code()), (400, "VALIDATION_ERROR"), "{bad}");
    }
}

#[actix_web::test]
async fn long_poll_wakes_on_a_cli_cancel_within_a_second() {
    let app = spawn_app().await;
    let m = app.mint(json!({})).await;
    let id = s(&m["id"]);
    let db = app.db_path.to_str().unwrap_or("").to_owned();
    let short = s(&m["short_id"]);
    let waiter = poll(&app, &id, 20);
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (db, short) = (db.clone(), short.clone());
        tokio::task::spawn_blocking(move || {
            run_bin(
                &["--database", &db, "--json", "links", "cancel", &short],
                &[],
            )
        })
        .await
        .expect("cli")
    };
    let ((r, took), out) = futures_util::join!(waiter, cancel);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r.json["status"], "failed");
    assert_eq!(r.json["error_code"], "CANCELED");
    // The CLI runs ~0.3 s after the wait began; allow its start-up plus < 1 s detection.
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

#[actix_web::test]
async fn many_waiters_are_answered_by_one_change() {
    let app = spawn_app().await;
    let m = app.mint(json!({})).await;
    let (id, token) = (s(&m["id"]), s(&m["token"]));
    let waiters = join_all((0..100).map(|_| poll(&app, &id, 20)));
    let opener = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        app.page_get(&format!("/_link/{token}/session")).await
    };
    let (results, _) = futures_util::join!(waiters, opener);
    assert!(results
        .iter()
        .all(|(r, took)| r.json["status"] == "active" && *took < Duration::from_secs(3)));
}

async fn mint_with_key(app: &TestApp, idem: &str, body: &Value, key: &str) -> crate::helpers::Resp {
    crate::helpers::read(
        app.request(reqwest::Method::POST, "/api/v1/connections/link")
            .header("X-API-Key", key)
            .header("Idempotency-Key", idem)
            .json(body)
            .send()
            .await
            .expect("send"),
    )
    .await
}

#[actix_web::test]
async fn idempotent_mint_replays_byte_for_byte() {
    let app = spawn_app().await;
    let user = app.create_user("Ana").await;
    let body = json!({"user_id": user["id"], "label": "once"});
    let first = mint_with_key(&app, "order-1", &body, &app.key).await;
    assert_eq!(first.status, 201);
    let again = mint_with_key(&app, "order-1", &body, &app.key).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.text, first.text, "same bytes, same token");
    let list = app.get("/api/v1/connections/link").await;
    assert_eq!(list.json["sessions"].as_array().map(Vec::len), Some(1));

    let other = mint_with_key(
        &app,
        "order-1",
        &json!({"user_id": user["id"], "label": "twice"}),
        &app.key,
    )
    .await;
    assert_eq!((other.status, other.code()), (409, "IDEMPOTENCY_CONFLICT"));

    // Keys are scoped to the API key that sent them.
    let key2 = crate::helpers::make_key(
        &app.db,
        "second",
        breadbox::domain::api_key::Scope::FullAccess,
    );
    let second = mint_with_key(&app, "order-1", &body, &key2).await;
    assert_eq!(second.status, 201);
    assert_ne!(second.json["id"], first.json["id"]);

    for bad in ["", &"x".repeat(256), "tab\there"] {
        let r = mint_with_key(&app, bad, &body, &app.key).await;
        assert_eq!((r.status, r.code()), (400, "VALIDATION_ERROR"), "{bad:?}");
    }
}

#[actix_web::test]
async fn concurrent_requests_with_one_key_create_one_session() {
    let app = spawn_app().await;
    let user = app.create_user("Ana").await;
    let body = json!({"user_id": user["id"]});
    let results = join_all((0..16).map(|_| mint_with_key(&app, "same", &body, &app.key))).await;
    assert!(results.iter().all(|r| r.status == 201));
    assert!(results.iter().all(|r| r.text == results[0].text));
    let list = app.get("/api/v1/connections/link").await;
    assert_eq!(list.json["sessions"].as_array().map(Vec::len), Some(1));
}

#[actix_web::test]
async fn idempotent_cancel_replays_the_first_answer() {
    let app = spawn_app().await;
    let m = app.mint(json!({})).await;
    let path = format!("/api/v1/connections/link/{}/cancel", s(&m["id"]));
    let send = || async {
        crate::helpers::read(
            app.request(reqwest::Method::POST, &path)
                .header("X-API-Key", &app.key)
                .header("Idempotency-Key", "cancel-1")
                .send()
                .await
                .expect("send"),
        )
        .await
    };
    let first = send().await;
    assert_eq!(first.status, 200);
    let again = send().await;
    assert_eq!((again.status, again.text), (200, first.text));
    let plain = app.post(&path, &json!({})).await;
    assert_eq!(
        plain.status, 409,
        "without the key a second cancel is refused"
    );
}

#[actix_web::test]
async fn pagination_sees_every_session_once_while_minting() {
    let app = spawn_app().await;
    let user = app.create_user("Ana").await;
    for _ in 0..30 {
        app.post("/api/v1/connections/link", &json!({"user_id": user["id"]}))
            .await;
    }
    let before: Vec<Value> = app.get("/api/v1/connections/link?limit=200").await.json["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    let pager = async {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/connections/link?limit=4&cursor={c}"),
                None => "/api/v1/connections/link?limit=4".into(),
            };
            let r = app.get(&path).await;
            seen.extend(
                r.json["sessions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|s| s["id"].clone()),
            );
            match r.json["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break seen,
            }
        }
    };
    let body = json!({"user_id": user["id"]});
    let minter = join_all((0..20).map(|_| app.post("/api/v1/connections/link", &body)));
    let (seen, _) = futures_util::join!(pager, minter);
    let unique: std::collections::HashSet<&Value> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no session twice");
    assert!(
        before.iter().all(|id| unique.contains(id)),
        "every older session seen"
    );
}

/// A webhook receiver: records (headers, body, arrival time).
type Seen = Arc<Mutex<Vec<(reqwest::header::HeaderMap, String, Instant)>>>;

async fn receiver() -> (String, Seen) {
    receiver_on(std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
}

fn receiver_on(listener: std::net::TcpListener) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let data = web::Data::new(seen.clone());
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let server = HttpServer::new(move || {
        App::new().app_data(data.clone()).default_service(web::to(
            |req: HttpRequest, body: web::Bytes, seen: web::Data<Seen>| async move {
                let mut headers = reqwest::header::HeaderMap::new();
                for (k, v) in req.headers() {
                    if let (Ok(name), Ok(value)) = (
                        reqwest::header::HeaderName::from_bytes(k.as_str().as_bytes()),
                        reqwest::header::HeaderValue::from_bytes(v.as_bytes()),
                    ) {
                        headers.insert(name, value);
                    }
                }
                if let Ok(mut s) = seen.lock() {
                    s.push((
                        headers,
                        String::from_utf8_lossy(&body).into_owned(),
                        Instant::now(),
                    ));
                }
                HttpResponse::NoContent().finish()
            },
        ))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("listen")
    .run();
    actix_web::rt::spawn(server);
    (url, seen)
}

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

async fn wait_for_types(seen: &Seen, want: &[&str]) -> Vec<(String, Value, Instant)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got: Vec<(String, Value, Instant)> = seen
            .lock()
            .map(|all| {
                all.iter()
                    .map(|(h, b, t)| {
                        let v: Value = serde_json::from_str(b).unwrap_or_default();
                        let wh = standardwebhooks::Webhook::new(SECRET).expect("secret");
                        wh.verify(b.as_bytes(), h).expect("signature verifies");
                        (s(&v["type"]), v, *t)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let types: Vec<&str> = got.iter().map(|(t, _, _)| t.as_str()).collect();
        if want.iter().all(|w| types.contains(w)) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "webhooks {want:?} not all delivered; got {types:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn signed_webhooks_for_page_actions_and_cli_changes() {
    let (url, seen) = receiver().await;
    let app = spawn_app_with(|c| {
        c.webhooks.url = Some(url.parse().expect("url"));
        c.webhooks.secret = Some(breadbox::config::Secret::new(SECRET));
    })
    .await;
    let m = app.mint(json!({})).await;
    let token = s(&m["token"]);
    let opened_at = Instant::now();
    app.page_get(&format!("/_link/{token}/session")).await;
    let got = wait_for_types(&seen, &["link_session.active"]).await;
    let (_, body, arrived) = got
        .iter()
        .find(|(t, _, _)| t == "link_session.active")
        .cloned()
        .expect("active");
    assert_eq!(body["data"]["id"], m["id"]);
    assert_eq!(body["data"]["status"], "active");
    assert!(body["timestamp"].as_str().unwrap_or("").ends_with('Z'));
    assert!(arrived.duration_since(opened_at) < Duration::from_secs(2));
    app.page_post(&format!("/_link/{token}/complete"), None)
        .await;
    wait_for_types(&seen, &["link_session.completed"]).await;

    // A change made by the CLI on the same database is delivered too.
    let other = app.mint(json!({})).await;
    let db = app.db_path.to_str().unwrap_or("").to_owned();
    let short = s(&other["short_id"]);
    let out = tokio::task::spawn_blocking(move || {
        run_bin(
            &["--database", &db, "links", "cancel", &short],
            &[
                ("BREADBOX_WEBHOOKS_URL", "http://127.0.0.1:9/unused"),
                ("BREADBOX_WEBHOOKS_SECRET", SECRET),
            ],
        )
    })
    .await
    .expect("cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = wait_for_types(&seen, &["link_session.failed"]).await;
    let failed = got
        .iter()
        .find(|(t, _, _)| t == "link_session.failed")
        .expect("failed");
    assert_eq!(failed.1["data"]["id"], other["id"]);
    assert_eq!(failed.1["data"]["error_code"], "CANCELED");
}

#[test]
fn cli_wait_exit_codes() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("w.db");
    let dbs = db.to_str().unwrap_or("").to_owned();
    crate::helpers::new_database(&db);
    let user = crate::helpers::admin(&db, &["users", "create", "--name", "Ana"]);
    let short = s(&user["short_id"]);

    // Times out: exit 4.
    let out = run_bin(
        &[
            "--database",
            &dbs,
            "--json",
            "links",
            "create",
            "--user",
            &short,
            "--wait",
            "--timeout",
            "1",
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or(""),
    )
    .expect("create response line");
    assert!(first["token"].is_string());

    // Expires: exit 1, printing the change as one JSON line.
    let out = run_bin(
        &[
            "--database",
            &dbs,
            "--json",
            "links",
            "create",
            "--user",
            &short,
            "--expires-in",
            "1",
            "--wait",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(
        lines.last().map(|l| l["status"].clone()),
        Some(json!("expired"))
    );

    // Completed by the page while waiting: exit 0 (driven through the DB like a second process would).
    let mut child = std::process::Command::new(crate::helpers::bin())
        .args([
            "--database",
            &dbs,
            "--json",
            "links",
            "create",
            "--user",
            &short,
            "--wait",
            "--timeout",
            "20",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("line");
    let created: Value = serde_json::from_str(&line).expect("json");
    let database = breadbox::db::Db::open(&db, "FULL").expect("db");
    let id = s(&created["id"]);
    for t in [
        breadbox::domain::link_session::Transition::Open,
        breadbox::domain::link_session::Transition::Complete,
    ] {
        let id = id.clone();
        database
            .write(|tx| {
                breadbox::db::link_sessions::transition(
                    tx,
                    &id,
                    t,
                    Default::default(),
                    breadbox::domain::time::now(),
                    Default::default(),
                )
            })
            .expect("transition")
            .expect("allowed");
    }
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));

    let out = run_bin(
        &[
            "--database",
            &dbs,
            "links",
            "create",
            "--user",
            &short,
            "--qr",
        ],
        &[],
    );
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains('█'),
        "a QR code is drawn"
    );
}

#[actix_web::test]
async fn webhook_arrives_soon_after_a_page_action() {
    let (url, seen) = receiver().await;
    let app = spawn_app_with(|c| {
        c.webhooks.url = Some(url.parse().expect("url"));
        c.webhooks.secret = Some(breadbox::config::Secret::new(SECRET));
    })
    .await;
    let mut delays = Vec::new();
    for _ in 0..20 {
        let m = app.mint(json!({})).await;
        let before = seen.lock().map(|s| s.len()).unwrap_or(0);
        let acted = Instant::now();
        app.page_get(&format!("/_link/{}/session", s(&m["token"])))
            .await;
        let deadline = acted + Duration::from_secs(5);
        loop {
            let arrived = seen
                .lock()
                .ok()
                .and_then(|all| all.get(before).map(|(_, _, t)| *t));
            if let Some(t) = arrived {
                delays.push(t.duration_since(acted));
                break;
            }
            assert!(Instant::now() < deadline, "webhook did not arrive");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    delays.sort();
    let median = delays[delays.len() / 2];
    println!(
        "page action to webhook arrival: median {median:?}, max {:?}",
        delays[delays.len() - 1]
    );
    assert!(median < Duration::from_millis(500), "{delays:?}");
}

#[test]
fn sigterm_answers_waiters_and_exits_quickly() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("t.db");
    let mut server = crate::helpers::BinServer::start(&db, &[], &[]);
    let key = server.bootstrap_key();
    let (_, link) = crate::helpers::admin_user_and_link(&db);
    let host = server.base.trim_start_matches("http://").to_owned();
    let path = format!("/api/v1/connections/link/{}?wait=60", s(&link["id"]));
    let waiter = std::thread::spawn(move || {
        let mut sock = std::net::TcpStream::connect(&host).expect("connect");
        write!(
            sock,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut answer = String::new();
        let _ = sock.read_to_string(&mut answer);
        answer
    });
    // Let the request reach the server and start waiting.
    std::thread::sleep(Duration::from_millis(500));
    let stopped = Instant::now();
    let status = server.terminate();
    let took = stopped.elapsed();
    let answer = waiter.join().expect("waiter");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"status\":\"pending\""), "{answer}");
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[actix_web::test]
async fn webhook_queued_while_the_receiver_is_down_arrives_after_a_restart() {
    // A port with nobody listening yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let env = [
        ("BREADBOX_WEBHOOKS_URL", url.as_str()),
        ("BREADBOX_WEBHOOKS_SECRET", SECRET),
    ];
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("w.db");
    crate::helpers::new_database(&db);
    let (_, link) = crate::helpers::admin_user_and_link(&db);
    let mut first = crate::helpers::BinServer::start(&db, &[], &env);
    let http = reqwest::Client::new();
    let opened = http
        .get(format!(
            "{}/_link/{}/session",
            first.base,
            s(&link["token"])
        ))
        .send()
        .await
        .expect("open");
    assert_eq!(opened.status(), 200);
    // The first attempt fails (connection refused); then the server stops.
    let pending = || {
        rusqlite::Connection::open(&db)
            .and_then(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM webhook_outbox WHERE delivered_at IS NULL AND attempts > 0",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while pending() == 0 {
        assert!(Instant::now() < deadline, "no failed attempt recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(first.terminate().success());

    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("rebind the port");
    let (_, seen) = receiver_on(listener);
    let _second = crate::helpers::BinServer::start(&db, &[], &env);
    let got = wait_for_types(&seen, &["link_session.active"]).await;
    let active = got
        .iter()
        .filter(|(t, _, _)| t == "link_session.active")
        .count();
    assert_eq!(active, 1, "delivered once");
    assert_eq!(got[0].1["data"]["id"], link["id"]);
}
