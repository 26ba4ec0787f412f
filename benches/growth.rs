//! Growth benchmark (CONTRACT §11 "Growth", issue 9): how the server's costs
//! move as the history grows from 10 k to 1 M link sessions.
//!
//! ```sh
//! cargo build --release && cargo bench --bench growth
//! cargo bench --bench growth -- --sizes 10000,100000 --mint-seconds 5
//! ```
//!
//! For each size it builds a database the honest way: the server's own
//! migrations, users and API key (through `breadbox::db`), then the sessions
//! bulk-inserted in one transaction with the rows a mint and its life write
//! (UUID, short id, token hash, member, provider, redirect URL and label on
//! some, `result_connection_ids` on the finished ones, one to four events
//! each), statuses and members spread like a household's year (half
//! expired, a fifth completed, the rest consumed or failed; one busy member
//! with 60 %), 360 days of history, plus 3,000 sessions that expired while
//! the server was off. Then it runs the release binary on every size's file
//! at once, and the measurements take turns between the sizes (so other load
//! on a shared machine hits them alike): every list filter (median of 31), a
//! poll, minting (16 concurrent clients, three turns),
//! how fast the start-up pass writes the unswept sessions, 1,000 long-poll
//! waiters during a mint loop (re-reads, counted from the server's debug log
//! of wake-ups), RSS after the list/poll/mint mix and with the waiters, the
//! file and WAL sizes; then it stops
//! the server, adds a 35,000-session backlog, restarts it and mints during
//! the drain (p99 against the idle p99). Prints a Markdown table and the
//! issue's goal ratios; also written to `target/bench/growth.md`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use base64::Engine as _;
use breadbox::db::{api_keys, users, Db};
use breadbox::domain::api_key::Scope;
use breadbox::domain::ids;
use rusqlite::params;
use serde_json::{json, Value};

const DAY: i64 = 86_400;
const UNSWEPT: usize = 3_000;
const LIST_RUNS: usize = 31;

struct Args {
    sizes: Vec<usize>,
    bin: PathBuf,
    dir: PathBuf,
    mint_seconds: f64,
    backlog: usize,
    waiters: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        sizes: vec![10_000, 100_000, 1_000_000],
        bin: PathBuf::from("target/release/breadbox"),
        dir: PathBuf::from("target/bench/growth"),
        mint_seconds: 5.0,
        backlog: 35_000,
        waiters: 1_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--sizes" => {
                a.sizes = val()?
                    .split(',')
                    .map(|s| s.trim().parse().context("--sizes"))
                    .collect::<Result<_>>()?
            }
            "--bin" => a.bin = PathBuf::from(val()?),
            "--dir" => a.dir = PathBuf::from(val()?),
            "--mint-seconds" => a.mint_seconds = val()?.parse()?,
            "--backlog" => a.backlog = val()?.parse()?,
            "--waiters" => a.waiters = val()?.parse()?,
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    if !a.bin.exists() {
        bail!(
            "{} not found: run `cargo build --release` first",
            a.bin.display()
        );
    }
    Ok(a)
}

fn now() -> i64 {
    breadbox::domain::time::now()
}

fn rand_below(n: u32) -> u32 {
    getrandom::u32().unwrap_or(0) % n
}

/// What a built database holds that the measurements need.
struct Built {
    key: String,
    busy_user: String,
    build_secs: f64,
}

/// Sessions + events inserted straight, in one transaction.
struct Inserter<'c> {
    conn: &'c rusqlite::Connection,
    session: rusqlite::Statement<'c>,
    event: rusqlite::Statement<'c>,
    key_id: String,
}

impl Inserter<'_> {
    #[allow(clippy::too_many_arguments)]
    fn session(
        &mut self,
        user: &str,
        status: &str,
        created: i64,
        expires: i64,
        connection: Option<&str>,
    ) -> Result<()> {
        let id = ids::new_uuid();
        let token_hash = ids::sha256_hex(&ids::new_link_token());
        let provider = ["", "plaid", "teller"][rand_below(3) as usize];
        let redirect = if rand_below(3) == 0 {
            "https://agent.example.com/linked?member=1"
        } else {
            ""
        };
        let label = if rand_below(2) == 0 {
            "Checking and savings for the tax return"
        } else {
            ""
        };
        let terminal_done = matches!(status, "completed" | "consumed");
        let results = match connection {
            Some(c) if terminal_done => format!("[\"{c}\"]"),
            _ => "[]".to_owned(),
        };
        let started = (status != "expired" && status != "pending").then_some(created + 20);
        let completed =
            matches!(status, "completed" | "consumed" | "failed").then_some(created + 240);
        let (code, message) = if status == "failed" {
            (Some("USER_CANCELED"), Some("The person declined."))
        } else {
            (None, None)
        };
        self.session.execute(params![
            id,
            ids::new_short_id(),
            token_hash,
            user,
            provider,
            rand_below(2),
            redirect,
            label,
            status,
            code,
            message,
            results,
            expires,
            started,
            completed,
            created,
            self.key_id,
        ])?;
        let seq = self.conn.last_insert_rowid();
        let mut ev = |kind: &str, at: i64, detail: &str| -> Result<()> {
            self.event
                .execute(params![ids::new_uuid(), seq, kind, at, detail])?;
            Ok(())
        };
        ev(
            "session.created",
            created,
            &format!(
                r#"{{"api_key_id":"{}","api_key_name":"agent"}}"#,
                self.key_id
            ),
        )?;
        match status {
            "completed" | "consumed" => {
                ev("session.opened", created + 20, "{}")?;
                ev(
                    "connection.added",
                    created + 200,
                    &format!(
                        r#"{{"connection_id":"{}","institution_name":"First Platypus Bank"}}"#,
                        connection.unwrap_or("")
                    ),
                )?;
                ev(&format!("session.{status}"), created + 240, "{}")?;
            }
            "failed" => ev(
                "session.failed",
                created + 240,
                r#"{"error_code":"USER_CANCELED"}"#,
            )?,
            "expired" => ev("session.expired", expires + 5, "{}")?,
            _ => {}
        }
        Ok(())
    }
}

fn open_raw(path: &Path) -> Result<rusqlite::Connection> {
    let c = rusqlite::Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(30))?;
    c.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -1048576;")?;
    Ok(c)
}

fn with_inserter(
    path: &Path,
    key_id: &str,
    f: impl FnOnce(&mut Inserter) -> Result<()>,
) -> Result<()> {
    let mut c = open_raw(path)?;
    let tx = c.transaction()?;
    {
        let mut ins = Inserter {
            conn: &tx,
            session: tx.prepare(
                "INSERT INTO link_sessions (id, short_id, token_hash, user_id, provider, action,
                    single_use, redirect_url, label, status, error_code, error_message,
                    result_connection_ids, expires_at, started_at, completed_at, created_at,
                    api_key_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'link', ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                    ?15, ?16, ?17)",
            )?,
            event: tx.prepare(
                "INSERT INTO link_session_events (id, session_seq, type, at, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?,
            key_id: key_id.to_owned(),
        };
        f(&mut ins)?;
    }
    tx.commit()?;
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

fn build(path: &Path, n: usize) -> Result<(Built, String)> {
    let started = Instant::now();
    remove_db(path);
    let t = now();
    let db = Db::open(path, "FULL")?;
    let members: Vec<String> = (0..5)
        .map(|i| {
            db.write(|tx| users::insert(tx, &format!("Member {i}"), None, t - 400 * DAY))
                .map(|u| u.id)
        })
        .collect::<Result<_, _>>()?;
    let (key, plain) = db.write(|tx| api_keys::insert(tx, "agent", Scope::FullAccess, t))?;
    drop(db);
    let busy = members[0].clone();
    let span = 360 * DAY - 3 * 3600;
    with_inserter(path, &key.id, |ins| {
        let history = n.saturating_sub(UNSWEPT);
        for i in 0..history {
            let created = t - 360 * DAY + (i as i64 * span) / history.max(1) as i64;
            let user = if rand_below(10) < 6 {
                &members[0]
            } else {
                &members[1 + rand_below(4) as usize]
            };
            let status = match rand_below(100) {
                0..50 => "expired",
                50..70 => "completed",
                70..85 => "consumed",
                _ => "failed",
            };
            let conn = ids::new_uuid();
            ins.session(user, status, created, created + 900, Some(&conn))?;
        }
        unswept(ins, &members, UNSWEPT, t)
    })?;
    Ok((
        Built {
            key: plain.expose().to_owned(),
            busy_user: busy,
            build_secs: started.elapsed().as_secs_f64(),
        },
        key.id,
    ))
}

/// `count` sessions that expired while the server was off (stored live).
fn unswept(ins: &mut Inserter, members: &[String], count: usize, t: i64) -> Result<()> {
    for j in 0..count {
        let created = t - 7200 + (j as i64 * 3600) / count.max(1) as i64;
        let user = &members[j % members.len()];
        let status = if j % 2 == 0 { "pending" } else { "active" };
        ins.session(user, status, created, created + 900, None)?;
    }
    Ok(())
}

/// The release binary, serving the database; SIGTERM on drop.
struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(bin: &Path, db: &Path) -> Result<Server> {
        let mut child = Command::new(bin)
            .arg("--database")
            .arg(db)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("BREADBOX_LIMITS_API_PER_MINUTE", "0")
            .env("BREADBOX_LIMITS_BAD_TOKEN_PER_MINUTE", "0")
            .env("BREADBOX_LIMITS_BAD_API_KEY_PER_MINUTE", "0")
            .env("BREADBOX_LOG_LEVEL", "warn")
            .env(
                "BREADBOX_LOG",
                "warn,breadbox::waiters=debug,breadbox::maintenance=info",
            )
            .env_remove("RUST_LOG")
            .env_remove("BREADBOX_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the server")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().context("stderr")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines.next().context("server exited before listening")??;
            if let Some(a) = line.strip_prefix("breadbox listening on ") {
                break a.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Server { child, base, log })
    }

    fn log_lines(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Milliseconds the first maintenance pass took, once it logged.
    fn first_pass_ms(&self) -> Option<u64> {
        self.log_lines().iter().find_map(|l| {
            let rest = l.split("maintenance: ").nth(1)?;
            let ms = rest.split(" in ").nth(1)?.split(" ms").next()?;
            ms.trim().parse().ok()
        })
    }

    /// Session re-reads caused by wake-ups so far (each woken session's
    /// waiters re-read it once).
    fn wakeups(&self) -> u64 {
        self.log_lines()
            .iter()
            .map(|l| {
                if l.contains("waking the waiters of session ") {
                    1
                } else if let Some(rest) = l.split("waking the waiters of ").nth(1) {
                    rest.split(' ')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0)
                } else {
                    0
                }
            })
            .sum()
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get((v.len() * 99) / 100).copied().unwrap_or(f64::NAN)
}

async fn get_ms(http: &reqwest::Client, url: &str, key: &str) -> Result<f64> {
    let t = Instant::now();
    let r = http.get(url).header("X-API-Key", key).send().await?;
    if !r.status().is_success() {
        bail!("GET {url}: {}", r.status());
    }
    r.bytes().await?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// Mint with `clients` concurrent clients until `until` returns true;
/// returns latencies (ms), the elapsed seconds and the minted ids.
async fn mint_loop(
    http: &reqwest::Client,
    s: &Server,
    key: &str,
    user: &str,
    clients: usize,
    until: impl Fn(Duration) -> bool + Send + Sync + 'static,
) -> Result<(Vec<f64>, f64, Vec<String>)> {
    let until = Arc::new(until);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, key, user, until) = (
            http.clone(),
            format!("{}/api/v1/connections/link", s.base),
            key.to_owned(),
            user.to_owned(),
            until.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut minted = Vec::new();
            while !until(start.elapsed()) {
                let t = Instant::now();
                let r = http
                    .post(&url)
                    .header("X-API-Key", &key)
                    .json(&json!({"user_id": user, "label": "bench"}))
                    .send()
                    .await?;
                if r.status() != 201 {
                    bail!("mint: {}", r.status());
                }
                let v: Value = r.json().await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                if let Some(id) = v["id"].as_str() {
                    minted.push(id.to_owned());
                }
            }
            Ok((lat, minted))
        }));
    }
    let mut lat = Vec::new();
    let mut ids = Vec::new();
    for t in tasks {
        let (l, m) = t.await??;
        lat.extend(l);
        ids.extend(m);
    }
    Ok((lat, start.elapsed().as_secs_f64(), ids))
}

#[derive(Default)]
struct Row {
    n: usize,
    build_secs: f64,
    lists: Vec<(String, f64)>,
    poll_ms: f64,
    mint_rps: f64,
    mint_p99: f64,
    unswept_ms: Option<u64>,
    rereads: u64,
    rss_mib: f64,
    waiters_rss_mib: f64,
    file_mib: f64,
    wal_mib: f64,
    backlog_ms: Option<u64>,
    backlog_p99: f64,
    idle_p99: f64,
}

fn cursor(seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("ls1:{seq}"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn size(path: &Path, suffix: &str) -> u64 {
    std::fs::metadata(format!("{}{suffix}", path.display()))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// A built database and what the measurements need of it.
struct Setup {
    n: usize,
    path: PathBuf,
    key: String,
    key_id: String,
    user: String,
    build_secs: f64,
}

fn prepare(a: &Args, n: usize) -> Result<Setup> {
    std::fs::create_dir_all(&a.dir)?;
    let path = a.dir.join(format!("growth-{n}.db"));
    eprintln!("[{n}] building…");
    let (built, key_id) = build(&path, n)?;
    eprintln!("[{n}] built in {:.1} s", built.build_secs);
    Ok(Setup {
        n,
        path,
        key: built.key,
        key_id,
        user: built.busy_user,
        build_secs: built.build_secs,
    })
}

/// The list queries measured, by name.
fn filters(st: &Setup) -> Vec<(String, String)> {
    let user = &st.user;
    let mid = cursor((st.n / 2) as i64);
    vec![
        ("no filter".into(), String::new()),
        ("status=pending".into(), "status=pending".into()),
        ("status=active".into(), "status=active".into()),
        ("status=completed".into(), "status=completed".into()),
        ("status=consumed".into(), "status=consumed".into()),
        ("status=failed".into(), "status=failed".into()),
        ("status=expired".into(), "status=expired".into()),
        ("user_id=busy".into(), format!("user_id={user}")),
        (
            "user_id=busy&status=active".into(),
            format!("user_id={user}&status=active"),
        ),
        (
            "user_id=busy&status=expired".into(),
            format!("user_id={user}&status=expired"),
        ),
        (
            "status=completed, deep cursor".into(),
            format!("status=completed&cursor={mid}"),
        ),
        (
            "user_id=busy&status=failed, deep cursor".into(),
            format!("user_id={user}&status=failed&cursor={mid}"),
        ),
    ]
}

/// Every size's server runs at once and the rate measurements take turns
/// (round-robin), so the other load on a shared machine hits every size
/// alike and the ratios compare like with like.
async fn measure_all(a: &Args, setups: &[Setup]) -> Result<Vec<Row>> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let mut rows: Vec<Row> = setups
        .iter()
        .map(|st| Row {
            n: st.n,
            build_secs: st.build_secs,
            ..Row::default()
        })
        .collect();
    let mut servers = Vec::new();
    for (st, row) in setups.iter().zip(&mut rows) {
        let s = Server::start(&a.bin, &st.path)?;
        let deadline = Instant::now() + Duration::from_secs(300);
        while s.first_pass_ms().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        row.unswept_ms = s.first_pass_ms();
        servers.push(s);
    }
    let api = |s: &Server| format!("{}/api/v1/connections/link", s.base);

    // Lists: one request per filter per size per round; round 0 warms up.
    let all_filters: Vec<_> = setups.iter().map(filters).collect();
    let mut lat = vec![vec![Vec::new(); all_filters[0].len()]; setups.len()];
    for round in 0..=LIST_RUNS {
        for (i, (s, st)) in servers.iter().zip(setups).enumerate() {
            for (f, (_, q)) in all_filters[i].iter().enumerate() {
                let ms = get_ms(&http, &format!("{}?{q}", api(s)), &st.key).await?;
                if round > 0 {
                    lat[i][f].push(ms);
                }
            }
        }
    }
    for (i, row) in rows.iter_mut().enumerate() {
        for (f, (name, _)) in all_filters[i].iter().enumerate() {
            row.lists.push((name.clone(), median(lat[i][f].clone())));
        }
    }

    // Minting: idle p99 at 4 clients, then 16 clients, in turns.
    const TURNS: usize = 3;
    let mut minted = vec![Vec::new(); setups.len()];
    let mut mint_lat = vec![Vec::new(); setups.len()];
    let mut idle_lat = vec![Vec::new(); setups.len()];
    let mut mint_secs = vec![0.0; setups.len()];
    let turn = a.mint_seconds / TURNS as f64;
    for _ in 0..TURNS {
        for (i, (s, st)) in servers.iter().zip(setups).enumerate() {
            let (l, _, _) =
                mint_loop(&http, s, &st.key, &st.user, 4, |e| e.as_secs_f64() > 1.0).await?;
            idle_lat[i].extend(l);
            let (l, took, ids) = mint_loop(&http, s, &st.key, &st.user, 16, move |e| {
                e.as_secs_f64() > turn
            })
            .await?;
            mint_lat[i].extend(l);
            mint_secs[i] += took;
            minted[i].extend(ids);
        }
    }
    for (i, row) in rows.iter_mut().enumerate() {
        row.mint_rps = mint_lat[i].len() as f64 / mint_secs[i];
        row.mint_p99 = p99(mint_lat[i].clone());
        row.idle_p99 = p99(idle_lat[i].clone());
    }

    // Poll, in turns.
    let mut poll = vec![Vec::new(); setups.len()];
    for _ in 0..200 {
        for (i, (s, st)) in servers.iter().zip(setups).enumerate() {
            let one = minted[i].first().context("nothing minted")?;
            poll[i].push(get_ms(&http, &format!("{}/{one}", api(s)), &st.key).await?);
        }
    }
    for (i, row) in rows.iter_mut().enumerate() {
        row.poll_ms = median(poll[i].clone());
        // RSS after the list/poll/mint mix, before any waiter.
        row.rss_mib = servers[i].rss_kib() as f64 / 1024.0;
    }

    // 1,000 long-poll waiters, then a mint loop on other sessions.
    for (i, (s, st)) in servers.iter().zip(setups).enumerate() {
        let waiters: Vec<_> = minted[i]
            .iter()
            .take(a.waiters)
            .map(|id| {
                let (http, url, key) = (
                    http.clone(),
                    format!("{}/{id}?wait=60", api(s)),
                    st.key.clone(),
                );
                tokio::spawn(async move {
                    let _ = http.get(url).header("X-API-Key", key).send().await;
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = s.wakeups();
        mint_loop(&http, s, &st.key, &st.user, 4, |e| e.as_secs_f64() > 3.0).await?;
        tokio::time::sleep(Duration::from_millis(600)).await;
        rows[i].rereads = s.wakeups() - before;
        rows[i].file_mib = mib(size(&st.path, ""));
        rows[i].wal_mib = mib(size(&st.path, "-wal"));
        rows[i].waiters_rss_mib = s.rss_kib() as f64 / 1024.0;
        for w in waiters {
            w.abort();
        }
    }
    for s in servers {
        s.stop();
    }

    // A server that was off for a while: the backlog is written at start,
    // while clients mint. One size at a time.
    for (st, row) in setups.iter().zip(&mut rows) {
        let members: Vec<String> = {
            let c = open_raw(&st.path)?;
            let mut q = c.prepare("SELECT id FROM users ORDER BY seq")?;
            let ids = q.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            ids
        };
        let t = now();
        with_inserter(&st.path, &st.key_id, |ins| {
            unswept(ins, &members, a.backlog, t)
        })?;
        let s = Server::start(&a.bin, &st.path)?;
        let log = s.log.clone();
        let drained = move |e: Duration| {
            e > Duration::from_secs(300)
                || log
                    .lock()
                    .map(|l| l.iter().any(|x| x.contains("maintenance: ")))
                    .unwrap_or(true)
        };
        let (lat, _, _) = mint_loop(&http, &s, &st.key, &st.user, 4, drained).await?;
        row.backlog_ms = s.first_pass_ms();
        row.backlog_p99 = p99(lat);
        s.stop();
    }
    Ok(rows)
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.2} ms")
    }
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let head: Vec<String> = rows.iter().map(|r| format!("{} sessions", r.n)).collect();
    out.push_str(&format!("| | {} |\n", head.join(" | ")));
    out.push_str(&format!("|---|{}\n", "---|".repeat(rows.len())));
    let mut line = |name: &str, f: &dyn Fn(&Row) -> String| {
        let cells: Vec<String> = rows.iter().map(f).collect();
        out.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
    };
    let names: Vec<String> = rows
        .first()
        .map(|r| r.lists.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    for (i, name) in names.iter().enumerate() {
        line(&format!("`GET /connections/link?{name}` median"), &|r| {
            fmt_ms(r.lists[i].1)
        });
    }
    line("poll `GET /connections/link/{id}` median", &|r| {
        fmt_ms(r.poll_ms)
    });
    line("mint, 16 clients, req/s (p99)", &|r| {
        format!("{:.0} ({})", r.mint_rps, fmt_ms(r.mint_p99))
    });
    line("3,000 unswept written after start", &|r| {
        r.unswept_ms.map_or("n/a".into(), |m| format!("{m} ms"))
    });
    line("35,000 backlog written after start", &|r| {
        r.backlog_ms
            .map_or("n/a".into(), |m| format!("{:.1} s", m as f64 / 1000.0))
    });
    line("mint p99 during the drain / idle (4 clients)", &|r| {
        format!("{} / {}", fmt_ms(r.backlog_p99), fmt_ms(r.idle_p99))
    });
    line("re-reads by 1,000 waiters during a mint loop", &|r| {
        r.rereads.to_string()
    });
    line("RSS after the list/poll/mint mix", &|r| {
        format!("{:.1} MiB", r.rss_mib)
    });
    line("RSS with 1,000 waiters connected too", &|r| {
        format!("{:.1} MiB", r.waiters_rss_mib)
    });
    line("file + WAL", &|r| {
        format!("{:.0} MiB + {:.1} MiB", r.file_mib, r.wal_mib)
    });
    line("database build (bulk insert)", &|r| {
        format!("{:.0} s", r.build_secs)
    });
    out
}

fn goals(rows: &[Row]) -> String {
    let (Some(small), Some(big)) = (rows.first(), rows.last()) else {
        return String::new();
    };
    let worst = small
        .lists
        .iter()
        .zip(&big.lists)
        .map(|((name, a), (_, b))| (b / a, name.clone()))
        .max_by(|x, y| x.0.total_cmp(&y.0))
        .unwrap_or((f64::NAN, String::new()));
    let mut out = format!("\nGoals ({} vs {} sessions):\n", big.n, small.n);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    out.push_str(&format!(
        "- worst list median ratio: {:.2}× ({}) — goal ≤ 2× — {}\n",
        worst.0,
        worst.1,
        verdict(worst.0 <= 2.0)
    ));
    let mint = big.mint_rps / small.mint_rps;
    out.push_str(&format!(
        "- mint req/s ratio: {mint:.2}× — goal ≥ 0.8× — {}\n",
        verdict(mint >= 0.8)
    ));
    out.push_str(&format!(
        "- RSS after the mix: {:.1} MiB — goal ≤ 32 MiB — {}\n",
        big.rss_mib,
        verdict(big.rss_mib <= 32.0)
    ));
    let drain = big.backlog_ms.map_or(f64::INFINITY, |m| m as f64 / 1000.0);
    let p = big.backlog_p99 / big.idle_p99;
    out.push_str(&format!(
        "- 35k backlog: {drain:.1} s (goal ≤ 60 s), mint p99 during/idle {p:.2}× (goal ≤ 2×) — {}\n",
        verdict(drain <= 60.0 && p <= 2.0)
    ));
    let rr: u64 = rows.iter().map(|r| r.rereads).sum();
    out.push_str(&format!(
        "- waiter re-reads during mint loops: {rr} — goal 0 — {}\n",
        verdict(rr == 0)
    ));
    out
}

fn main() -> Result<()> {
    let a = args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let setups = a
        .sizes
        .iter()
        .map(|&n| prepare(&a, n))
        .collect::<Result<Vec<_>>>()?;
    let rows = rt.block_on(measure_all(&a, &setups))?;
    let text = format!("{}{}", table(&rows), goals(&rows));
    println!("{text}");
    let out = PathBuf::from("target/bench/growth.md");
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &text)?;
    if std::env::var_os("BENCH_KEEP").is_none() {
        for n in &a.sizes {
            remove_db(&a.dir.join(format!("growth-{n}.db")));
        }
    }
    Ok(())
}
