//! Durability under SIGKILL (CONTRACT §1: WAL + `synchronous=FULL`, "a 201
//! means the row survives a crash or a power cut"): the real binary is killed
//! with SIGKILL while clients mint sessions as fast as they can; every session
//! it answered 201 for must still be there, byte for byte, after a restart, and
//! the database file must be intact in between.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::helpers::BinServer;

/// A complete HTTP response (status and body) read from a raw socket.
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// Decode a `Transfer-Encoding: chunked` body; `None` when it is cut short.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if raw.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// A tiny blocking HTTP/1.1 client (`Connection: close`). A response that is
/// cut short (the server died mid-answer) is an error, never a success.
pub(crate) fn http(
    base: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<RawResponse> {
    let broken = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let addr = base.strip_prefix("http://").unwrap_or(base);
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(k) = key {
        req.push_str(&format!("X-API-Key: {k}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| broken("no complete response head"))?;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let rest = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| broken("bad status line"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            length = value.parse::<usize>().ok();
        } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let body = if chunked {
        dechunk(rest).ok_or_else(|| broken("chunked body cut short"))?
    } else if let Some(n) = length {
        if rest.len() < n {
            return Err(broken("body cut short"));
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(RawResponse { status, body })
}

/// xorshift64*: enough randomness for kill timing, no extra crates.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the clients of one round saw.
#[derive(Default)]
struct RoundLog {
    /// Every 201 body, parsed.
    created: Vec<Value>,
    /// Complete answers that were not 201 (there must be none).
    unexpected: Vec<String>,
    /// Requests that failed at the socket (the kill).
    errors: u64,
}

/// Mint sessions as fast as possible until `stop`, from `threads` threads.
fn hammer(
    base: &str,
    key: &str,
    user_id: &str,
    round: u64,
    threads: u64,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<RoundLog>> {
    let seq = Arc::new(AtomicU64::new(0));
    (0..threads)
        .map(|t| {
            let (base, key, user_id) = (base.to_owned(), key.to_owned(), user_id.to_owned());
            let (stop, seq) = (stop.clone(), seq.clone());
            std::thread::spawn(move || {
                let mut log = RoundLog::default();
                while !stop.load(Ordering::SeqCst) {
                    let n = seq.fetch_add(1, Ordering::SeqCst);
                    let body = json!({
                        "user_id": user_id,
                        "expires_in_seconds": 3600,
                        "single_use": n % 2 == 0,
                        "label": format!("crash round {round} thread {t} #{n}"),
                        "redirect_url": format!("https://example.com/after/{round}/{n}"),
                    })
                    .to_string();
                    match http(
                        &base,
                        "POST",
                        "/api/v1/connections/link",
                        Some(&key),
                        Some(&body),
                    ) {
                        Ok(r) if r.status == 201 => {
                            match serde_json::from_slice::<Value>(&r.body) {
                                Ok(v) => log.created.push(v),
                                Err(e) => log.unexpected.push(format!("201 with a bad body: {e}")),
                            }
                        }
                        Ok(r) => log.unexpected.push(format!(
                            "{}: {}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        )),
                        Err(_) => {
                            log.errors += 1;
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                }
                log
            })
        })
        .collect()
}

/// With the server dead: the file passes `integrity_check`, is still WAL, and
/// holds at least `recorded` sessions. Returns the size of the WAL the crash
/// left behind. The check does not checkpoint on close, so the restarted
/// server itself has to recover that WAL.
fn check_file(db: &Path, recorded: usize, round: u64) -> u64 {
    let wal = |p: &Path| {
        let mut name = p.as_os_str().to_owned();
        name.push("-wal");
        std::fs::metadata(std::path::PathBuf::from(name)).map_or(0, |m| m.len())
    };
    let wal_bytes = wal(db);
    let c = rusqlite::Connection::open(db).expect("open the database after the kill");
    c.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .expect("no checkpoint on close");
    let integrity: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(integrity, "ok", "round {round}: integrity_check");
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal", "round {round}: journal_mode");
    let rows: i64 = c
        .query_row("SELECT count(*) FROM link_sessions", [], |r| r.get(0))
        .expect("count sessions");
    assert!(
        usize::try_from(rows).unwrap_or(0) >= recorded,
        "round {round}: {rows} rows in link_sessions but {recorded} sessions were answered 201"
    );
    drop(c);
    assert!(
        wal(db) >= wal_bytes,
        "round {round}: the check must leave the crash's WAL for the server"
    );
    wal_bytes
}

/// GET every session in `sessions` and compare with its 201 body minus
/// `token` and `url`.
fn verify(base: &str, key: &str, sessions: &[Value], round: u64) {
    for created in sessions {
        let mut expected = created.clone();
        let obj = expected.as_object_mut().expect("201 body is an object");
        assert!(obj.remove("token").is_some(), "201 body has a token");
        assert!(obj.remove("url").is_some(), "201 body has a url");
        let id = created["id"].as_str().expect("id");
        let r = http(
            base,
            "GET",
            &format!("/api/v1/connections/link/{id}"),
            Some(key),
            None,
        )
        .expect("GET after restart");
        let body = String::from_utf8_lossy(&r.body);
        assert_eq!(
            r.status, 200,
            "round {round}: session {id} lost after SIGKILL: {body}"
        );
        let got: Value = serde_json::from_slice(&r.body).expect("session JSON");
        assert_eq!(
            got, expected,
            "round {round}: session {id} changed after SIGKILL"
        );
        assert_eq!(got["status"], "pending");
    }
}

#[test]
fn sessions_answered_201_survive_kill_9() {
    let rounds = env_u64("CRASH_ROUNDS", 8).max(1);
    let threads = env_u64("CRASH_THREADS", 4).max(1);
    let seed = env_u64(
        "CRASH_SEED",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15),
    ) | 1;
    let mut rng = XorShift(seed);
    // Keep the whole test within about a minute even on a slow machine.
    let budget = Duration::from_secs(env_u64("CRASH_BUDGET_SECS", 40));
    let started = Instant::now();

    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("crash.db");
    // No per-key rate limit (the clients go as fast as they can), quiet logs.
    let env = [
        ("BREADBOX_LIMITS_API_PER_MINUTE", "0"),
        ("BREADBOX_LOG_LEVEL", "warn"),
    ];

    let mut server = BinServer::start(&db, &[], &env);
    let key = server.bootstrap_key();
    let r = http(
        &server.base,
        "POST",
        "/api/v1/users",
        Some(&key),
        Some(&json!({"name": "Crash Test"}).to_string()),
    )
    .expect("create user");
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let user: Value = serde_json::from_slice(&r.body).expect("user JSON");
    let user_id = user["id"].as_str().expect("user id").to_owned();

    let mut all: Vec<Value> = Vec::new();
    let mut unverified: Vec<Value> = Vec::new();
    let mut survived = 0u64;
    let mut kill_errors = 0u64;
    let mut wal_left = 0u64;
    let mut round = 1;
    loop {
        // Every session answered 201 before the last kill is there, unchanged.
        verify(&server.base, &key, &unverified, round);
        unverified.clear();

        let stop = Arc::new(AtomicBool::new(false));
        let clients = hammer(&server.base, &key, &user_id, round, threads, &stop);
        let delay = rng.between(100, 700);
        std::thread::sleep(Duration::from_millis(delay));
        let pid = server.pid();
        let status = server.kill9();
        stop.store(true, Ordering::SeqCst);
        assert_eq!(
            status.signal(),
            Some(9),
            "round {round}: server {pid} should die of SIGKILL, got {status:?}"
        );
        let mut created_now = 0;
        for c in clients {
            let log = c.join().expect("client thread");
            assert!(
                log.unexpected.is_empty(),
                "round {round}: answers other than 201: {:?}",
                &log.unexpected[..log.unexpected.len().min(5)]
            );
            kill_errors += log.errors;
            created_now += log.created.len();
            unverified.extend(log.created.iter().cloned());
            all.extend(log.created);
        }
        let wal_bytes = check_file(&db, all.len(), round);
        wal_left = wal_left.max(wal_bytes);
        println!(
            "round {round}: killed after {delay} ms, {created_now} sessions answered 201, \
             {wal_bytes} bytes of WAL left for the restart"
        );
        survived += 1;

        server = BinServer::start(&db, &[], &env);
        assert_eq!(
            server.bootstrap_key(),
            key,
            "round {round}: a restart must not mint another bootstrap key"
        );
        round += 1;
        if round > rounds || started.elapsed() > budget {
            break;
        }
    }

    // Last restart: the newest sessions, then every session ever answered 201.
    verify(&server.base, &key, &unverified, round);
    verify(&server.base, &key, &all, round);
    let ids: HashSet<&str> = all.iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(ids.len(), all.len(), "every 201 is a distinct session");
    assert!(!all.is_empty(), "no session was created at all");
    let _ = server.terminate();
    check_file(&db, all.len(), round);
    println!(
        "crash: {survived} of {rounds} rounds survived SIGKILL, {} sessions verified \
         ({kill_errors} requests cut off by the kills, largest WAL left by a kill {wal_left} bytes, \
         seed {seed}, {:.1} s)",
        all.len(),
        started.elapsed().as_secs_f64()
    );
}
