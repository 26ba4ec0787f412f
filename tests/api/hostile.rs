//! Hostile input: every refused request gets a clear 4xx JSON envelope
//! `{"error":{"code","message"}}` and writes nothing (CONTRACT §4); the server
//! never answers 5xx to a client's mistake and cannot be held by slow or
//! oversized requests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{
    Config as PropConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use breadbox::domain::link_session::{Provider, Rules};

use crate::helpers::{read, spawn_app, spawn_app_with, with_plaid, Resp, TestApp};

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// A refused request: 4xx, JSON, `{"error":{"code":"UPPER_SNAKE","message":"…"}}`.
fn assert_envelope(r: &Resp, what: &str) {
    assert!(
        (400..500).contains(&r.status),
        "{what}: expected a 4xx, got {} {}",
        r.status,
        r.text
    );
    assert!(
        r.header("content-type").starts_with("application/json"),
        "{what}: content-type {:?}",
        r.header("content-type")
    );
    let code = r.code();
    assert!(
        !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
        "{what}: error.code must be UPPER_SNAKE: {}",
        r.text
    );
    let message = r.json["error"]["message"].as_str().unwrap_or("");
    assert!(
        !message.trim().is_empty(),
        "{what}: error.message must be a non-empty string: {}",
        r.text
    );
}

/// Rows in every table: "writes nothing" means this does not change.
fn row_counts(app: &TestApp) -> BTreeMap<String, i64> {
    app.db
        .read(|c| {
            let mut stmt = c.prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )?;
            let names = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            let mut out = BTreeMap::new();
            for name in names {
                let n: i64 = c.query_row(&format!("SELECT count(*) FROM \"{name}\""), [], |r| {
                    r.get(0)
                })?;
                out.insert(name, n);
            }
            Ok(out)
        })
        .expect("count rows")
}

fn session_count(app: &TestApp) -> i64 {
    app.db
        .read(|c| Ok(c.query_row("SELECT count(*) FROM link_sessions", [], |r| r.get(0))?))
        .expect("count sessions")
}

/// POST raw bytes as `application/json` to the create endpoint.
async fn post_create_raw(app: &TestApp, body: impl Into<Vec<u8>>) -> Resp {
    app.post_raw("/api/v1/connections/link", "application/json", body.into())
        .await
}

/// `http://127.0.0.1:PORT` → `127.0.0.1:PORT`.
fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// What a raw socket exchange produced.
struct RawOutcome {
    /// The status of the first response, when one arrived.
    status: Option<u16>,
    /// Everything read.
    bytes: Vec<u8>,
    /// The server closed (EOF or reset) before `wait` ran out.
    closed: bool,
}

/// Send `request` (write errors are ignored: the server may close early), then
/// read until the server closes or `wait` passes.
async fn raw_exchange(addr: &str, request: &[u8], wait: Duration) -> RawOutcome {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(request).await;
    let mut bytes = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut closed = false;
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
        // One complete response is enough when the server keeps the socket.
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|n| bytes.len() >= end + 4 + n) {
                break;
            }
        }
    }
    let status = std::str::from_utf8(&bytes)
        .ok()
        .or_else(|| {
            let end = bytes.iter().position(|&b| b == b'\n')?;
            std::str::from_utf8(&bytes[..end]).ok()
        })
        .and_then(|t| t.split(' ').nth(1))
        .and_then(|s| s.trim().parse().ok());
    RawOutcome {
        status,
        bytes,
        closed,
    }
}

async fn assert_alive(app: &TestApp, after: &str) {
    let started = Instant::now();
    let r = app.page_get("/health/live").await;
    assert_eq!(
        r.status, 200,
        "after {after}: /health/live answered {}",
        r.status
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "after {after}: /health/live took {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Hostile redirect URLs
// ---------------------------------------------------------------------------

const PREFIXES: &[&str] = &[
    "//evil.com",
    "\\\\evil.com",
    "/\\evil.com",
    "javascript:",
    "JaVaScRiPt:",
    "data:",
    "https://user:pw@",
    "https://user@",
    "https://:pw@",
    "http:/",
    "https:",
    "https:/",
    " https://",
    "https://example.com@evil.com",
    "https://evil.com#@example.com",
    "https://evil.com\\@example.com",
    "https://evil.com?@example.com",
    "%68ttps://",
    "https://\u{0435}xample.com",
    "https://xn--",
    "https://",
    "http://",
    "HTTPS://",
    "https://example.com",
    "https://example.com.",
    "https://EXAMPLE.com",
    "https://example.com:443",
    "https://example.com:8443",
    "http://example.com",
    "https://example.com.evil.com",
    "https://[::1]",
    "https://127.0.0.1",
    "https://0x7f.1",
    "\thttps://example.com",
    "\u{202e}https://",
    "https://exa\u{0}mple.com",
    "https://exa%00mple.com",
    "https://example\u{3002}com",
    "https://example\u{ff0e}com",
    "https:\\\\example.com",
    "ftp://example.com",
    "ws://example.com",
    "blob:https://example.com/",
    "",
];

const PIECES: &[&str] = &[
    "",
    "/",
    "//",
    "evil.com",
    "example.com",
    "@",
    "@evil.com",
    ":",
    ":443",
    ":80",
    "\\",
    "#",
    "#@example.com",
    "?",
    "?next=https://evil.com",
    "%2F",
    "%40",
    "%5C",
    "%00",
    "\t",
    "\n",
    "\r",
    "\0",
    "\u{202e}",
    "\u{200b}",
    "\u{a0}",
    " ",
    "user:pw@",
    ".",
    "xn--80ak6aa92e.com",
    "\u{0435}xample.com",
    "/path?q=1#frag",
    "javascript:alert(1)",
    "\u{ff0e}",
    "\u{3002}",
];

/// Strings built to confuse URL parsers and browsers.
fn hostile_redirect() -> BoxedStrategy<String> {
    let built = (
        prop::sample::select(PREFIXES.to_vec()),
        prop::collection::vec(prop::sample::select(PIECES.to_vec()), 0..4),
        "[ -~]{0,6}",
        prop::option::weighted(0.3, (any::<usize>(), prop::sample::select(PIECES.to_vec()))),
    )
        .prop_map(|(prefix, pieces, tail, insert)| {
            let mut s: String = prefix.to_owned();
            for p in pieces {
                s.push_str(p);
            }
            s.push_str(&tail);
            if let Some((at, piece)) = insert {
                let boundaries: Vec<usize> = s
                    .char_indices()
                    .map(|(i, _)| i)
                    .chain(std::iter::once(s.len()))
                    .collect();
                let i = boundaries[at % boundaries.len()];
                s.insert_str(i, piece);
            }
            s
        });
    prop_oneof![
        8 => built,
        1 => "[ -~]{0,40}",
        1 => any::<String>(),
    ]
    .boxed()
}

fn open_rules() -> Rules {
    Rules {
        default_ttl: 900,
        max_ttl: 3600,
        allowed_redirect_origins: vec![],
        configured: vec![Provider::Plaid],
    }
}

/// What an accepted redirect URL must satisfy.
fn safe_url(value: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(value).map_err(|e| format!("accepted but unparsable: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("accepted scheme {}", u.scheme()));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("accepted without a host".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("accepted with credentials".into());
    }
    Ok(u)
}

#[test]
fn proptest_redirect_url_never_escapes() {
    let open = open_rules();
    let pinned = Rules {
        allowed_redirect_origins: vec!["https://example.com".into()],
        ..open_rules()
    };
    let cases: u32 = std::env::var("REDIRECT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let mut runner = TestRunner::new(PropConfig {
        cases,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let accepted_open = AtomicUsize::new(0);
    let accepted_pinned = AtomicUsize::new(0);
    let outcome = runner.run(&hostile_redirect(), |value| {
        if let Ok(stored) = open.check_redirect(Some(&value)) {
            accepted_open.fetch_add(1, Ordering::Relaxed);
            if !value.is_empty() {
                safe_url(&value).map_err(|e| TestCaseError::fail(format!("{value:?}: {e}")))?;
                prop_assert_eq!(&stored, &value, "stored exactly as given");
            }
        }
        if let Ok(stored) = pinned.check_redirect(Some(&value)) {
            if !value.is_empty() {
                accepted_pinned.fetch_add(1, Ordering::Relaxed);
                let u =
                    safe_url(&value).map_err(|e| TestCaseError::fail(format!("{value:?}: {e}")))?;
                prop_assert_eq!(
                    u.origin().ascii_serialization(),
                    "https://example.com",
                    "{:?} escapes the allowlist",
                    value
                );
                prop_assert!(stored == value);
                prop_assert!(
                    open.check_redirect(Some(&value)).is_ok(),
                    "the allowlist only narrows"
                );
            }
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("check_redirect let a hostile URL through: {e}");
    }
    let (a, p) = (
        accepted_open.load(Ordering::Relaxed),
        accepted_pinned.load(Ordering::Relaxed),
    );
    println!("redirect proptest: {cases} cases, {a} accepted without an allowlist, {p} with it");
    // The generator must reach both sides of the rule, or it proves nothing.
    assert!(a > 0 && p > 0 && a < cases as usize, "{a} / {p}");

    // Fixed regressions from the brief (all must be refused).
    for bad in [
        "//evil.com",
        "\\\\evil.com",
        "/\\evil.com",
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,hi",
        "https://user:pw@example.com",
        "https://user@example.com",
        "http:/example.com",
        "https:example.com",
        " https://example.com",
        "https://example.com@evil.com",
        "%68ttps://example.com",
        "https://exa\tmple.com",
        "https://example.com/\n",
        "https://example.com/\0",
        "\u{202e}https://example.com",
        "https:\\\\example.com",
    ] {
        assert!(open.check_redirect(Some(bad)).is_err(), "{bad:?} accepted");
    }
    for off_origin in [
        "https://evil.com#@example.com",
        "https://\u{0435}xample.com/",
        "https://xn--xample-2of.com/",
        "https://example.com.evil.com/",
        "http://example.com/",
        "https://example.com:8443/",
    ] {
        assert!(
            pinned.check_redirect(Some(off_origin)).is_err(),
            "{off_origin:?} passed the allowlist"
        );
    }
    for fine in [
        "https://example.com",
        "https://example.com/",
        "https://EXAMPLE.com/x?y=1#z",
        "https://example.com:443/done",
    ] {
        assert!(
            pinned.check_redirect(Some(fine)).is_ok(),
            "{fine:?} refused"
        );
    }
}

// ---------------------------------------------------------------------------
// Random create bodies, black box
// ---------------------------------------------------------------------------

fn json_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,16}".prop_map(Value::String),
    ]
    .boxed()
}

fn json_any() -> BoxedStrategy<Value> {
    json_leaf()
        .prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-z_]{1,6}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
}

const KNOWN: [&str; 6] = [
    "user_id",
    "provider",
    "single_use",
    "redirect_url",
    "label",
    "expires_in_seconds",
];

/// Mostly `valid`, sometimes `hostile`.
fn mix(
    valid: impl Strategy<Value = Value> + 'static,
    hostile: impl Strategy<Value = Value> + 'static,
) -> BoxedStrategy<Value> {
    prop_oneof![6 => valid, 1 => hostile].boxed()
}

/// A random create body for a server where only Plaid is configured.
fn create_body(user_id: String, short_id: String) -> BoxedStrategy<Map<String, Value>> {
    // Each field: mostly values the contract accepts (so that about a third
    // of the bodies are valid as a whole), else something hostile.
    let user = prop_oneof![
        8 => Just(Value::from(user_id.clone())),
        4 => Just(Value::from(short_id)),
        2 => Just(Value::from(user_id.to_uppercase())),
        1 => "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
            .prop_map(Value::from),
        1 => "[0-9A-Za-z]{8}".prop_map(Value::from),
        1 => ".{0,40}".prop_map(Value::from),
        1 => json_any(),
    ];
    let provider = mix(
        prop_oneof![
            Just(Value::from("")),
            Just(Value::from("plaid")),
            Just(Value::Null)
        ],
        prop_oneof![
            3 => prop::sample::select(vec!["teller", "Plaid", " plaid", "PLAID", "plaid\0", "plaid "])
                .prop_map(Value::from),
            1 => ".{0,10}".prop_map(Value::from),
            1 => json_any(),
        ],
    );
    let single_use = mix(
        prop_oneof![any::<bool>().prop_map(Value::Bool), Just(Value::Null)],
        prop_oneof![
            prop::sample::select(vec!["true", "false", "1", ""]).prop_map(Value::from),
            json_any(),
        ],
    );
    let redirect = mix(
        prop_oneof![
            Just(Value::from("https://example.com/done?x=1")),
            "https://[a-z]{1,12}\\.example(:[1-9][0-9]{0,3})?/[a-zA-Z0-9/._~%-]{0,30}"
                .prop_map(Value::from),
            Just(Value::from("http://localhost:8080/cb#done")),
            Just(Value::Null),
        ],
        prop_oneof![
            6 => hostile_redirect().prop_map(Value::from),
            1 => (2030usize..2070)
                .prop_map(|n| Value::from(format!("https://example.com/{}", "a".repeat(n)))),
            1 => json_any(),
        ],
    );
    let label = mix(
        prop_oneof![
            3 => "[^\\p{Cc}]{0,24}".prop_map(Value::from),
            1 => "[^\\p{Cc}]{190,200}".prop_map(Value::from),
            1 => prop::sample::select(vec![
                "a".repeat(200),
                "\u{e9}".repeat(200),
                "\u{1F35E}".repeat(200),
                "\u{202e}rtl".to_owned(),
                "<script>alert(1)</script>".to_owned(),
            ])
            .prop_map(Value::from),
            1 => Just(Value::Null),
        ],
        prop_oneof![
            2 => "[^\\p{Cc}]{201,210}".prop_map(Value::from),
            2 => any::<String>().prop_map(Value::from),
            1 => prop::sample::select(vec![
                "\u{e9}".repeat(201),
                "x\u{0}y".to_owned(),
                "tab\there".to_owned(),
                "line\nbreak".to_owned(),
                "del\u{7f}".to_owned(),
                "c1\u{85}".to_owned(),
            ])
            .prop_map(Value::from),
            1 => json_any(),
        ],
    );
    let ttl = mix(
        prop_oneof![
            4 => (0i64..=3600).prop_map(Value::from),
            1 => prop::sample::select(vec![0i64, 1, 3600]).prop_map(Value::from),
            1 => Just(Value::Null),
        ],
        prop_oneof![
            2 => any::<i64>().prop_map(Value::from),
            1 => prop::sample::select(vec![-1i64, 3601, i64::MIN, i64::MAX]).prop_map(Value::from),
            1 => prop::sample::select(vec![
                json!(u64::MAX),
                json!(1.5),
                json!(60.0),
                json!(1e300),
                json!(-0.0),
                json!("60"),
                json!("9999999999999999999999"),
            ]),
            1 => any::<f64>().prop_map(|f| json!(f)),
            1 => json_any(),
        ],
    );
    let unknown = prop::collection::vec(("[a-zA-Z_]{1,12}", json_any()), 0..2);
    (
        prop::option::weighted(0.9, user),
        prop::option::weighted(0.6, provider),
        prop::option::weighted(0.6, single_use),
        prop::option::weighted(0.6, redirect),
        prop::option::weighted(0.6, label),
        prop::option::weighted(0.6, ttl),
        prop::option::weighted(0.1, unknown),
        any::<bool>(),
    )
        .prop_map(|(u, p, s, r, l, t, extra, extra_first)| {
            let mut m = Map::new();
            let extra = extra.unwrap_or_default();
            if extra_first {
                for (k, v) in &extra {
                    m.insert(k.clone(), v.clone());
                }
            }
            for (k, v) in KNOWN.iter().zip([u, p, s, r, l, t]) {
                if let Some(v) = v {
                    m.insert((*k).to_owned(), v);
                }
            }
            if !extra_first {
                for (k, v) in extra {
                    m.insert(k, v);
                }
            }
            m
        })
        .boxed()
}

/// The contract's verdict on a create body: `Ok(())` for 201, else the
/// expected status and the reasons.
fn expected_outcome(
    body: &Map<String, Value>,
    user_id: &str,
    short_id: &str,
) -> Result<(), (u16, Vec<String>)> {
    let rules = open_rules();
    let mut bad = Vec::new();
    let mut unknown_user = false;
    for (k, v) in body {
        let ok = match (k.as_str(), v) {
            ("user_id", Value::String(s)) => match breadbox::domain::ids::EntityRef::parse(s) {
                None => false,
                Some(breadbox::domain::ids::EntityRef::Uuid(u)) => {
                    unknown_user |= u != user_id;
                    true
                }
                Some(breadbox::domain::ids::EntityRef::Short(sh)) => {
                    unknown_user |= sh != short_id;
                    true
                }
            },
            ("user_id", _) => false,
            ("provider", Value::Null) => true,
            ("provider", Value::String(s)) => s.is_empty() || s == "plaid",
            ("single_use", Value::Null | Value::Bool(_)) => true,
            ("redirect_url", Value::Null) => true,
            ("redirect_url", Value::String(s)) => rules.check_redirect(Some(s)).is_ok(),
            ("label", Value::Null) => true,
            ("label", Value::String(s)) => {
                s.chars().count() <= 200 && !s.chars().any(char::is_control)
            }
            ("expires_in_seconds", Value::Null) => true,
            // A whole number, as JSON Schema's `integer` counts (`60.0` too).
            ("expires_in_seconds", Value::Number(n)) => {
                let text = n.to_string();
                let whole = match text.split_once('.') {
                    Some((int, frac)) if !frac.is_empty() && frac.bytes().all(|b| b == b'0') => {
                        int.to_owned()
                    }
                    _ => text.clone(),
                };
                whole.parse::<i64>().is_ok_and(|t| (0..=3600).contains(&t))
            }
            _ => false,
        };
        if !ok {
            bad.push(k.clone());
        }
    }
    if !body.contains_key("user_id") {
        bad.push("user_id (missing)".into());
    }
    if !bad.is_empty() {
        Err((400, bad))
    } else if unknown_user {
        Err((404, vec!["user_id (unknown user)".into()]))
    } else {
        Ok(())
    }
}

fn runner_from_env(cases: u32) -> (TestRunner, u64) {
    let seed = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    let mut bytes = [0u8; 32];
    for (i, b) in seed.to_le_bytes().iter().cycle().take(32).enumerate() {
        bytes[i] = b.wrapping_add(i as u8);
    }
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let config = PropConfig {
        cases,
        failure_persistence: None,
        ..PropConfig::default()
    };
    (TestRunner::new_with_rng(config, rng), seed)
}

fn rfc3339(v: &Value) -> i64 {
    let s = v.as_str().expect("timestamp string");
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339")
        .unix_timestamp()
}

#[actix_web::test]
async fn random_create_bodies_get_201_or_a_clear_4xx() {
    // Plaid configured (so "plaid" is valid and "teller" is not); no per-key
    // rate limit, so HOSTILE_CASES can be raised.
    let app = spawn_app_with(|c| {
        with_plaid(c);
        c.limits.api_per_minute = 0;
    })
    .await;
    let user = app.create_user("Hostile").await;
    let user_id = user["id"].as_str().expect("id").to_owned();
    let short_id = user["short_id"].as_str().expect("short_id").to_owned();
    let cases: u32 = std::env::var("HOSTILE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let (mut runner, seed) = runner_from_env(cases);
    let strategy = create_body(user_id.clone(), short_id.clone());
    let before = session_count(&app);
    let mut created = 0i64;
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for i in 0..cases {
        let body = strategy
            .new_tree(&mut runner)
            .expect("generate a body")
            .current();
        let r = app
            .post("/api/v1/connections/link", &Value::Object(body.clone()))
            .await;
        *by_status.entry(r.status).or_default() += 1;
        let what = format!(
            "case {i} (HOSTILE_SEED={seed}) body {}",
            Value::Object(body.clone())
        );
        assert!(r.status < 500, "{what}: answered {} {}", r.status, r.text);
        match expected_outcome(&body, &user_id, &short_id) {
            Ok(()) => {
                assert_eq!(r.status, 201, "{what}: expected 201, got {}", r.text);
                created += 1;
                let s = &r.json;
                assert_eq!(s["user_id"], user_id.as_str(), "{what}");
                assert_eq!(s["status"], "pending", "{what}");
                assert_eq!(s["action"], "link", "{what}");
                let str_or_empty = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
                assert_eq!(s["provider"], str_or_empty("provider"), "{what}");
                assert_eq!(s["redirect_url"], str_or_empty("redirect_url"), "{what}");
                assert_eq!(s["label"], str_or_empty("label"), "{what}");
                let single = body
                    .get("single_use")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                assert_eq!(s["single_use"], single, "{what}");
                let ttl = body
                    .get("expires_in_seconds")
                    // A whole-number float (60.0) is the number 60.
                    .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
                    .filter(|t| *t != 0)
                    .unwrap_or(900);
                let lived = rfc3339(&s["expires_at"]) - rfc3339(&s["created_at"]);
                assert!(
                    (lived - ttl).abs() <= 1,
                    "{what}: ttl {lived}, expected {ttl}"
                );
                assert!(s["token"].as_str().is_some_and(|t| t.len() == 22), "{what}");
            }
            Err((status, reasons)) => {
                assert_envelope(&r, &what);
                assert_eq!(
                    r.status, status,
                    "{what}: expected {status} because of {reasons:?}, got {}",
                    r.text
                );
                let allowed: &[&str] = if status == 404 {
                    &["NOT_FOUND"]
                } else {
                    &["VALIDATION_ERROR", "PROVIDER_NOT_CONFIGURED"]
                };
                assert!(allowed.contains(&r.code()), "{what}: code {}", r.code());
                // Only unknown keys wrong: the message names one of them.
                let unknown: Vec<&String> = reasons
                    .iter()
                    .filter(|k| !KNOWN.contains(&k.as_str()) && !k.contains(' '))
                    .collect();
                if !unknown.is_empty() && unknown.len() == reasons.len() {
                    let msg = r.json["error"]["message"].as_str().unwrap_or("");
                    assert!(
                        unknown.iter().any(|k| msg.contains(k.as_str())),
                        "{what}: an unknown field must be named: {msg}"
                    );
                }
            }
        }
    }
    let after = session_count(&app);
    println!("random create bodies: {cases} cases (seed {seed}), statuses {by_status:?}");
    assert_eq!(
        after - before,
        created,
        "one session per 201, none otherwise"
    );
    assert!(created > 0, "the generator must reach valid bodies too");
    assert_alive(&app, "random bodies").await;
}

// ---------------------------------------------------------------------------
// Malformed bodies
// ---------------------------------------------------------------------------

#[actix_web::test]
async fn malformed_bodies() {
    let app = spawn_app().await;
    let user = app.create_user("Mal").await;
    let uid = user["id"].as_str().expect("id").to_owned();
    let before = row_counts(&app);

    // Invalid UTF-8.
    for bytes in [
        b"\xff\xfe{}".to_vec(),
        [b"{\"user_id\":\"".as_slice(), b"\xc3\x28", b"\"}"].concat(),
        [
            format!("{{\"user_id\":\"{uid}\",\"label\":\"").as_bytes(),
            b"\xed\xa0\x80",
            b"\"}",
        ]
        .concat(),
    ] {
        let r = post_create_raw(&app, bytes.clone()).await;
        assert_envelope(&r, &format!("invalid UTF-8 {bytes:?}"));
        assert_eq!((r.status, r.code()), (400, "INVALID_BODY"), "{}", r.text);
    }

    // Deep nesting within the size limit: refused as a body, no crash.
    let arrays = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let objects = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let in_field = format!(
        "{{\"user_id\":\"{uid}\",\"label\":{}{}}}",
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    for (name, body) in [
        ("arrays", &arrays),
        ("objects", &objects),
        ("in a field", &in_field),
    ] {
        assert!(body.len() <= 64 * 1024);
        let r = post_create_raw(&app, body.clone()).await;
        assert_envelope(&r, &format!("deep {name}"));
        assert_eq!(r.status, 400, "deep {name}: {}", r.text);
        assert!(
            ["INVALID_BODY", "VALIDATION_ERROR"].contains(&r.code()),
            "deep {name}: {}",
            r.text
        );
        assert_alive(&app, &format!("deep {name}")).await;
    }
    // 100 000 levels: over 64 KiB, so 413 before any parsing.
    let arrays = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let objects = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    for (name, body) in [("arrays", arrays), ("objects", objects)] {
        let r = post_create_raw(&app, body).await;
        assert_envelope(&r, &format!("100k-deep {name}"));
        assert_eq!(
            (r.status, r.code()),
            (413, "PAYLOAD_TOO_LARGE"),
            "{}",
            r.text
        );
        assert_alive(&app, &format!("100k-deep {name}")).await;
    }

    // Numbers no i64 can hold: valid JSON with a wrong value (CONTRACT §4:
    // VALIDATION_ERROR, not INVALID_BODY). Checked at the end of the test so
    // that the other cases still run.
    let mut number_mistakes = Vec::new();
    for n in [
        "1e999999",
        "123456789012345678901234567890",
        "-1e999999",
        "1e-999999",
    ] {
        let body = format!("{{\"user_id\":\"{uid}\",\"expires_in_seconds\":{n}}}");
        let r = post_create_raw(&app, body).await;
        assert_envelope(&r, &format!("expires_in_seconds {n}"));
        assert_eq!(r.status, 400, "expires_in_seconds {n}: {}", r.text);
        if r.code() != "VALIDATION_ERROR" {
            number_mistakes.push(format!("expires_in_seconds {n}: {}", r.text));
        }
    }

    // A 1 MB string: 413, with and without Content-Length.
    let big = json!({ "user_id": uid, "label": "x".repeat(1 << 20) }).to_string();
    let r = post_create_raw(&app, big.clone()).await;
    assert_envelope(&r, "1 MB body");
    assert_eq!(
        (r.status, r.code()),
        (413, "PAYLOAD_TOO_LARGE"),
        "{}",
        r.text
    );
    let mut chunked = format!(
        "POST /api/v1/connections/link HTTP/1.1\r\nHost: {}\r\nX-API-Key: {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        addr(&app),
        app.key
    )
    .into_bytes();
    for piece in big.as_bytes().chunks(16 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let out = raw_exchange(&addr(&app), &chunked, Duration::from_secs(5)).await;
    assert!(
        out.status == Some(413) || (out.status.is_none() && out.closed),
        "chunked 1 MB body: {:?}",
        String::from_utf8_lossy(&out.bytes[..out.bytes.len().min(300)])
    );
    assert_alive(&app, "1 MB bodies").await;

    assert_eq!(row_counts(&app), before, "refused bodies wrote something");

    // `null` for each field: only user_id is required.
    let full = json!({
        "user_id": uid,
        "provider": "",
        "single_use": true,
        "redirect_url": "https://example.com/x",
        "label": "lbl",
        "expires_in_seconds": 60,
    });
    let fields: Vec<String> = full.as_object().expect("object").keys().cloned().collect();
    let mut created = 0;
    for f in &fields {
        let mut body = full.clone();
        body[f.as_str()] = Value::Null;
        let r = app.post("/api/v1/connections/link", &body).await;
        if f == "user_id" {
            assert_envelope(&r, "null user_id");
            assert_eq!(
                (r.status, r.code()),
                (400, "VALIDATION_ERROR"),
                "{}",
                r.text
            );
        } else {
            assert_eq!(r.status, 201, "null {f} means absent: {}", r.text);
            created += 1;
            if f == "expires_in_seconds" {
                let lived = rfc3339(&r.json["expires_at"]) - rfc3339(&r.json["created_at"]);
                assert!(
                    (lived - 900).abs() <= 1,
                    "null expires_in_seconds → 900, got {lived}"
                );
            } else {
                let dflt = if f == "single_use" {
                    json!(false)
                } else {
                    json!("")
                };
                assert_eq!(r.json[f.as_str()], dflt, "null {f}");
            }
        }
    }
    let all_null: Map<String, Value> = fields.iter().map(|f| (f.clone(), Value::Null)).collect();
    let r = app
        .post("/api/v1/connections/link", &Value::Object(all_null))
        .await;
    assert_envelope(&r, "all null");
    assert_eq!(
        (r.status, r.code()),
        (400, "VALIDATION_ERROR"),
        "{}",
        r.text
    );

    // Duplicate keys: any clear answer, never a 5xx, and writes match 201s.
    let sessions_before = session_count(&app);
    for body in [
        format!("{{\"user_id\":\"{uid}\",\"user_id\":\"{uid}\"}}"),
        format!("{{\"user_id\":\"nope\",\"user_id\":\"{uid}\"}}"),
        format!("{{\"user_id\":\"{uid}\",\"user_id\":\"nope\"}}"),
        format!("{{\"user_id\":\"{uid}\",\"label\":\"a\",\"label\":\"\\u0000\"}}"),
        format!("{{\"user_id\":\"{uid}\",\"expires_in_seconds\":60,\"expires_in_seconds\":-1}}"),
        format!("{{\"user_id\":\"{uid}\",\"redirect_url\":\"javascript:x\",\"redirect_url\":\"https://example.com\"}}"),
    ] {
        let r = post_create_raw(&app, body.clone()).await;
        assert!(r.status < 500, "duplicate keys {body}: {} {}", r.status, r.text);
        if r.status == 201 {
            created += 1;
        } else {
            assert_envelope(&r, &format!("duplicate keys {body}"));
            assert_eq!(r.status, 400, "{body}: {}", r.text);
        }
    }
    let dup_created = session_count(&app) - sessions_before;
    println!("malformed bodies: {created} bodies with nulls/duplicates created sessions");
    assert_eq!(
        session_count(&app),
        before["link_sessions"] + created,
        "one session per 201 ({dup_created} from duplicate-key bodies)"
    );
    assert_alive(&app, "malformed bodies").await;
    assert!(
        number_mistakes.is_empty(),
        "out-of-range numbers must be 400 VALIDATION_ERROR: {number_mistakes:#?}"
    );
}

// ---------------------------------------------------------------------------
// Oversized headers, slow clients, wrong methods
// ---------------------------------------------------------------------------

#[actix_web::test]
async fn oversized_headers_are_refused() {
    let app = spawn_app().await;
    let a = addr(&app);
    let before = row_counts(&app);

    // A 64 KiB junk header: a clear answer (a 4xx, or served normally), never a 5xx or a hang.
    let value = "v".repeat(64 * 1024);
    let req = format!(
        "GET /health/live HTTP/1.1\r\nHost: {a}\r\nX-Junk: {value}\r\nConnection: close\r\n\r\n"
    );
    let out = raw_exchange(&a, req.as_bytes(), Duration::from_secs(5)).await;
    println!("64 KiB header on /health/live: {:?}", out.status);
    assert!(
        out.status.is_some_and(|s| s < 500) || (out.status.is_none() && out.closed),
        "64 KiB header: {:?}",
        String::from_utf8_lossy(&out.bytes[..out.bytes.len().min(200)])
    );
    assert_alive(&app, "a 64 KiB header").await;

    // A 64 KiB API key on a write: refused with the envelope, nothing written.
    let r = read(
        app.request(reqwest::Method::POST, "/api/v1/users")
            .header("X-API-Key", format!("bb_{}", "A".repeat(64 * 1024)))
            .json(&json!({"name": "x"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_envelope(&r, "64 KiB API key");
    assert_eq!(r.status, 401, "{}", r.text);
    // The same key spread as a Bearer token, and a 64 KiB Idempotency-Key.
    let r = read(
        app.request(reqwest::Method::POST, "/api/v1/users")
            .header(
                "Authorization",
                format!("Bearer bb_{}", "B".repeat(64 * 1024)),
            )
            .json(&json!({"name": "x"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_envelope(&r, "64 KiB bearer");
    assert_eq!(r.status, 401, "{}", r.text);
    let user = app.create_user("Head").await;
    let before_user = row_counts(&app);
    let r = read(
        app.request(reqwest::Method::POST, "/api/v1/connections/link")
            .header("X-API-Key", &app.key)
            .header("Idempotency-Key", "k".repeat(64 * 1024))
            .json(&json!({"user_id": user["id"]}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_envelope(&r, "64 KiB Idempotency-Key");
    assert_eq!(
        (r.status, r.code()),
        (400, "VALIDATION_ERROR"),
        "{}",
        r.text
    );
    assert_eq!(
        row_counts(&app),
        before_user,
        "64 KiB Idempotency-Key wrote something"
    );

    // Heads beyond what the HTTP layer buffers (one 200 KiB header; 200
    // headers): 431 or closed, never served, never a 5xx.
    let huge = format!(
        "GET /api/v1/users HTTP/1.1\r\nHost: {a}\r\nX-API-Key: {}\r\nX-Junk: {}\r\n\r\n",
        app.key,
        "v".repeat(200 * 1024)
    );
    let mut many = format!(
        "GET /api/v1/users HTTP/1.1\r\nHost: {a}\r\nX-API-Key: {}\r\n",
        app.key
    );
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    for (name, req) in [("200 KiB header", huge), ("200 headers", many)] {
        let out = raw_exchange(&a, req.as_bytes(), Duration::from_secs(5)).await;
        println!("{name}: {:?} closed={}", out.status, out.closed);
        assert!(
            out.status.is_some_and(|s| (400..500).contains(&s))
                || (out.status.is_none() && out.closed),
            "{name}: {:?}",
            String::from_utf8_lossy(&out.bytes[..out.bytes.len().min(200)])
        );
        assert_alive(&app, name).await;
    }
    let mut after = row_counts(&app);
    // Only the one user this test created on purpose.
    if let Some(n) = after.get_mut("users") {
        *n -= 1;
    }
    assert_eq!(after, before, "oversized headers wrote something");
}

#[actix_web::test]
async fn slow_clients_cannot_hold_the_server() {
    let app = spawn_app().await;
    let a = addr(&app);
    let user = app.create_user("Slow").await;
    let opened = Instant::now();
    let mut stalled = Vec::new();
    for i in 0..50 {
        let mut s = TcpStream::connect(&a).await.expect("connect");
        let partial = match i % 3 {
            0 => "GET /health/li".to_owned(),
            1 => format!("POST /api/v1/connections/link HTTP/1.1\r\nHost: {a}\r\n"),
            _ => format!(
                "POST /api/v1/connections/link HTTP/1.1\r\nHost: {a}\r\nX-API-Key: {}\r\nContent-Type: appl",
                app.key
            ),
        };
        s.write_all(partial.as_bytes())
            .await
            .expect("write partial");
        stalled.push(s);
    }

    // The server keeps serving everyone else, quickly.
    for i in 0..20 {
        let t = Instant::now();
        let r = app.page_get("/health/live").await;
        assert_eq!(r.status, 200);
        let r = if i % 2 == 0 {
            app.get("/api/v1/connections/link?limit=5").await
        } else {
            app.post("/api/v1/connections/link", &json!({"user_id": user["id"]}))
                .await
        };
        assert!(r.status == 200 || r.status == 201, "{}", r.text);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "request {i} took {:?} with 50 stalled sockets",
            t.elapsed()
        );
    }

    // After client_request_timeout (10 s) the server drops every stalled
    // socket (possibly after a 408).
    let deadline = tokio::time::Instant::from_std(opened + Duration::from_secs(15));
    let closes = join_all(
        stalled
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| async move {
                let mut buf = [0u8; 1024];
                let mut got = Vec::new();
                loop {
                    match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                        Err(_) => {
                            return Err(format!(
                                "socket {i} still open after 15 s: {:?}",
                                String::from_utf8_lossy(&got)
                            ))
                        }
                        Ok(Ok(0)) | Ok(Err(_)) => return Ok(got),
                        Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                    }
                }
            }),
    )
    .await;
    let mut answered_408 = 0;
    for c in closes {
        let got = c.unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&got);
        assert!(
            got.is_empty() || text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.1 4"),
            "a stalled socket got {text:?}"
        );
        if text.starts_with("HTTP/1.1 408") {
            answered_408 += 1;
        }
    }
    println!(
        "slow clients: 50 stalled sockets closed by the server after {:.1} s ({answered_408} with a 408)",
        opened.elapsed().as_secs_f64()
    );
    assert_alive(&app, "stalled sockets").await;
}

/// Complete headers, then a body that never finishes: the server must not
/// wait for it forever (client_request_timeout only covers the head). Each
/// such socket holds a connection and a file descriptor; a few thousand would
/// exhaust a Raspberry Pi's descriptor limit.
#[actix_web::test]
async fn stalled_request_bodies_are_dropped() {
    let app = spawn_app().await;
    let a = addr(&app);
    let user = app.create_user("Stall").await;
    let before = row_counts(&app);
    let opened = Instant::now();
    let mut stalled = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(&a).await.expect("connect");
        let (path, partial_body) = if i % 2 == 0 {
            (
                "/api/v1/connections/link",
                format!("{{\"user_id\":\"{}\"", user["id"].as_str().unwrap_or("")),
            )
        } else {
            ("/api/v1/users", "{\"name\":".to_owned())
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {a}\r\nX-API-Key: {}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{partial_body}",
            app.key
        );
        s.write_all(head.as_bytes()).await.expect("write");
        stalled.push(s);
    }
    // Others are served meanwhile.
    for _ in 0..5 {
        let t = Instant::now();
        let r = app.get("/api/v1/users").await;
        assert_eq!(r.status, 200);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
    let deadline = tokio::time::Instant::from_std(opened + Duration::from_secs(20));
    let outcomes = join_all(stalled.into_iter().map(|mut s| async move {
        let mut buf = [0u8; 1024];
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Err(_) => return (false, got),
                Ok(Ok(0)) | Ok(Err(_)) => return (true, got),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    }))
    .await;
    let held = outcomes.iter().filter(|(closed, _)| !closed).count();
    for (_, got) in &outcomes {
        let text = String::from_utf8_lossy(got);
        assert!(
            got.is_empty() || text.starts_with("HTTP/1.1 4"),
            "a stalled body got {text:?}"
        );
    }
    println!(
        "stalled bodies: {} of 20 dropped by the server within {:.1} s",
        20 - held,
        opened.elapsed().as_secs_f64()
    );
    assert_eq!(
        held, 0,
        "{held} of 20 requests whose body stalled were still held open after 20 s"
    );
    assert_eq!(row_counts(&app), before, "stalled bodies wrote something");
    assert_alive(&app, "stalled bodies").await;
}

#[actix_web::test]
async fn wrong_methods() {
    let app = spawn_app().await;
    let session = app.mint(json!({})).await;
    let sid = session["id"].as_str().expect("id").to_owned();
    let uid = session["user_id"].as_str().expect("user").to_owned();
    let before = row_counts(&app);
    let paths = [
        "/api/v1/connections/link".to_owned(),
        format!("/api/v1/connections/link/{sid}"),
        format!("/api/v1/connections/link/{sid}/cancel"),
        format!("/api/v1/connections/link/{sid}/events"),
        "/api/v1/connections".to_owned(),
        format!("/api/v1/connections/{sid}"),
        format!("/api/v1/connections/{sid}/relink"),
        "/api/v1/users".to_owned(),
        format!("/api/v1/users/{uid}"),
        "/api/v1/api-keys".to_owned(),
        format!("/api/v1/api-keys/{sid}"),
    ];
    let mut seen = BTreeMap::<u16, usize>::new();
    for path in &paths {
        for method in [reqwest::Method::PUT, reqwest::Method::PATCH] {
            let r = read(
                app.request(method.clone(), path)
                    .header("X-API-Key", &app.key)
                    .json(&json!({"user_id": uid, "name": "x", "scope": "full_access"}))
                    .send()
                    .await
                    .expect("send"),
            )
            .await;
            let what = format!("{method} {path}");
            assert_envelope(&r, &what);
            assert!(
                r.status == 404 || r.status == 405,
                "{what}: {} {}",
                r.status,
                r.text
            );
            if r.status == 405 {
                assert_eq!(r.code(), "METHOD_NOT_ALLOWED", "{what}");
                assert!(!r.header("allow").is_empty(), "{what}: 405 without Allow");
            } else {
                assert_eq!(r.code(), "NOT_FOUND", "{what}");
            }
            *seen.entry(r.status).or_default() += 1;
            if r.status == 404 {
                println!("{what}: 404 {}", r.text);
            }
        }
    }
    // Other methods that no route has.
    for (method, path) in [
        (
            reqwest::Method::DELETE,
            "/api/v1/connections/link".to_owned(),
        ),
        (
            reqwest::Method::DELETE,
            format!("/api/v1/connections/link/{sid}"),
        ),
        (reqwest::Method::POST, format!("/api/v1/users/{uid}")),
        (reqwest::Method::DELETE, "/api/v1/users".to_owned()),
    ] {
        let r = read(
            app.request(method.clone(), &path)
                .header("X-API-Key", &app.key)
                .json(&json!({}))
                .send()
                .await
                .expect("send"),
        )
        .await;
        let what = format!("{method} {path}");
        assert_envelope(&r, &what);
        assert!(
            r.status == 404 || r.status == 405,
            "{what}: {} {}",
            r.status,
            r.text
        );
        if r.status == 404 {
            println!("{what}: 404 {}", r.text);
        }
        *seen.entry(r.status).or_default() += 1;
    }
    // When the answer is 405, Allow names the methods the path does have.
    for (path, methods) in [
        ("/api/v1/connections/link".to_owned(), &["GET", "POST"][..]),
        (
            format!("/api/v1/connections/link/{sid}/cancel"),
            &["POST"][..],
        ),
        (format!("/api/v1/users/{uid}"), &["GET"][..]),
        (format!("/api/v1/api-keys/{sid}"), &["DELETE"][..]),
    ] {
        let r = read(
            app.request(reqwest::Method::PUT, &path)
                .header("X-API-Key", &app.key)
                .send()
                .await
                .expect("send"),
        )
        .await;
        if r.status == 405 {
            let allow = r.header("allow").to_ascii_uppercase();
            for m in methods {
                assert!(allow.contains(m), "PUT {path}: Allow {allow:?} lacks {m}");
            }
            assert!(!allow.contains("PUT"), "PUT {path}: Allow {allow:?}");
        }
    }
    println!("wrong methods: statuses {seen:?}");
    assert_eq!(row_counts(&app), before, "wrong methods wrote something");
    // The session is untouched.
    let r = app.get(&format!("/api/v1/connections/link/{sid}")).await;
    assert_eq!(r.json["status"], "pending");
}
