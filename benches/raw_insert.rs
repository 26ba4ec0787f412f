//! Baseline for the mint benchmark: how many link sessions per second SQLite
//! itself can take on this machine, with the server's pragmas and schema and
//! exactly the statements a mint runs in its one `BEGIN IMMEDIATE`
//! transaction (user look-up, short-id check, `link_sessions` row,
//! `session.created` event row, COMMIT) — but no HTTP, no JSON body, no
//! thread hand-off.
//!
//! ```sh
//! cargo bench --bench raw_insert -- --seconds 10 --db target/bench/raw.db
//! ```
//!
//! Prints `raw_insert_per_sec=<n>` (and a few `key=value` details) on stdout.
//! The file given to `--db` is deleted first (with its `-wal`/`-shm`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use breadbox::domain::ids;
use rusqlite::{params, Connection, OptionalExtension as _, TransactionBehavior};

/// The server's migrations, in order (same files as `src/db/migrate.rs`).
const MIGRATIONS: &[&str] = &[
    include_str!("../src/db/migrations/0001_init.sql"),
    include_str!("../src/db/migrations/0002_outbox.sql"),
    include_str!("../src/db/migrations/0003_idempotency.sql"),
    include_str!("../src/db/migrations/0004_meta.sql"),
    include_str!("../src/db/migrations/0005_growth.sql"),
    include_str!("../src/db/migrations/0006_connection_health.sql"),
    include_str!("../src/db/migrations/0007_sealed_idempotency.sql"),
    include_str!("../src/db/migrations/0008_event_timeline_by_seq.sql"),
];

/// Same as the server's `BUSY_TIMEOUT` (src/db/mod.rs).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

struct Args {
    seconds: f64,
    db: PathBuf,
    synchronous: String,
}

fn args() -> Result<Args> {
    let mut out = Args {
        seconds: 10.0,
        db: std::env::temp_dir().join(format!("breadbox-raw-insert-{}.db", std::process::id())),
        synchronous: "FULL".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                out.seconds = it
                    .next()
                    .context("--seconds needs a value")?
                    .parse()
                    .context("--seconds: not a number")?;
            }
            "--db" => out.db = it.next().context("--db needs a path")?.into(),
            "--synchronous" => {
                out.synchronous = it.next().context("--synchronous needs FULL or NORMAL")?;
                if !["FULL", "NORMAL"].contains(&out.synchronous.to_uppercase().as_str()) {
                    bail!("--synchronous: FULL or NORMAL");
                }
            }
            // `cargo bench` appends `--bench`; filters are meaningless here.
            "--bench" => {}
            "-h" | "--help" => {
                println!("raw_insert [--seconds N] [--db PATH] [--synchronous FULL|NORMAL]");
                std::process::exit(0);
            }
            other if other.starts_with('-') => bail!("unknown option {other}"),
            _ => {}
        }
    }
    if !(out.seconds > 0.0 && out.seconds <= 3600.0) {
        bail!("--seconds must be in (0, 3600]");
    }
    Ok(out)
}

fn now() -> i64 {
    breadbox::domain::time::now()
}

/// Open like `Db::open` does: WAL set once on the file, then busy_timeout,
/// foreign_keys and synchronous on the connection that writes.
fn open(args: &Args) -> Result<Connection> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = args.db.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    let c = Connection::open(&args.db).with_context(|| format!("open {}", args.db.display()))?;
    c.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = c.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("journal_mode is {mode}, not wal");
    }
    c.execute_batch(&format!(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = {};",
        args.synchronous.to_uppercase()
    ))?;
    Ok(c)
}

fn migrate(c: &mut Connection) -> Result<()> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}

/// A fresh short id not used in `link_sessions` (what `unique_short_id` does).
fn unique_short_id(tx: &rusqlite::Transaction) -> Result<String> {
    loop {
        let s = ids::new_short_id();
        let taken: bool = tx
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM link_sessions WHERE short_id = ?1)")?
            .query_row([&s], |r| r.get(0))?;
        if !taken {
            return Ok(s);
        }
    }
}

fn main() -> Result<()> {
    let args = args()?;
    let mut c = open(&args)?;
    migrate(&mut c)?;

    let user_id = ids::new_uuid();
    let user_short = ids::new_short_id();
    c.execute(
        "INSERT INTO users (id, short_id, name, email, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![user_id, user_short, "Bench", Option::<String>::None, now()],
    )?;
    let api_key_id = ids::new_uuid();
    let detail = serde_json::json!({"api_key_id": api_key_id, "api_key_name": "bench"}).to_string();

    let budget = Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let mut n: u64 = 0;
    let mut worst = Duration::ZERO;
    while start.elapsed() < budget {
        let t0 = Instant::now();
        // What a mint's token handling costs besides the database.
        let token = ids::new_link_token();
        let token_hash = ids::sha256_hex(&token);
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // users::get: the mint resolves the body's user_id inside the transaction.
        let uid: Option<String> = tx
            .prepare_cached("SELECT id FROM users WHERE short_id = ?1")?
            .query_row([&user_short], |r| r.get(0))
            .optional()?;
        let uid = uid.context("user vanished")?;
        let id = ids::new_uuid();
        let short_id = unique_short_id(&tx)?;
        let ts = now();
        // Same statement and columns as db::link_sessions::insert.
        tx.prepare_cached(
            "INSERT INTO link_sessions (id, short_id, token_hash, user_id, provider, action,
                connection_id, single_use, redirect_url, label, status, expires_at, created_at, api_key_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', ?11, ?12, ?13)",
        )?
        .execute(params![
            id,
            short_id,
            token_hash,
            uid,
            "",
            "link",
            Option::<String>::None,
            false,
            "",
            "",
            ts + 900,
            ts,
            api_key_id,
        ])?;
        // Same statement as db::events::insert_at.
        let seq = tx.last_insert_rowid();
        tx.prepare_cached(
            "INSERT INTO link_session_events (id, session_seq, type, at, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![ids::new_uuid(), seq, "session.created", ts, detail])?;
        tx.commit()?;
        n += 1;
        worst = worst.max(t0.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    let rows: i64 = c.query_row("SELECT count(*) FROM link_sessions", [], |r| r.get(0))?;
    if rows as u64 != n {
        bail!("expected {n} sessions, found {rows}");
    }
    println!("raw_insert_transactions={n}");
    println!("raw_insert_seconds={secs:.3}");
    println!("raw_insert_worst_ms={:.3}", worst.as_secs_f64() * 1000.0);
    println!("raw_insert_synchronous={}", args.synchronous.to_uppercase());
    println!("raw_insert_per_sec={:.0}", n as f64 / secs);
    Ok(())
}
