//! Running for years (CONTRACT §11 "Growth"): retention prunes finished
//! history and the file shrinks, the sweeper drains a backlog in small
//! writes, and long-poll waiters are woken only for their own session.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use breadbox::config::RetentionConfig;
use breadbox::db::{outbox, Db};
use breadbox::domain::time::now;
use breadbox::maintenance::{Maintenance, EXPIRE_BATCH};
use serde_json::json;

use crate::helpers::{admin, admin_user_and_link, spawn_app, BinServer};

const DAY: i64 = 86_400;

/// Insert `n` sessions for `user_id` straight into the database in one
/// transaction, each with `events` events: `status`, created at `created_at`,
/// expiring at `expires_at`, with a label of `pad` bytes.
#[allow(clippy::too_many_arguments)]
fn bulk_sessions(
    db: &Db,
    user_id: &str,
    n: usize,
    status: &'static str,
    created_at: i64,
    expires_at: i64,
    events: usize,
    pad: usize,
) {
    let user_id = user_id.to_owned();
    db.write(move |tx| {
        let mut session = tx.prepare(
            "INSERT INTO link_sessions (id, short_id, token_hash, user_id, action, single_use,
                label, status, expires_at, created_at)
             VALUES (?1, ?2, ?3, ?4, 'link', 0, ?5, ?6, ?7, ?8)",
        )?;
        let mut event = tx.prepare(
            "INSERT INTO link_session_events (id, session_seq, type, at, detail)
             VALUES (?1, ?2, 'session.created', ?3, '{}')",
        )?;
        let label = "x".repeat(pad);
        for _ in 0..n {
            let id = breadbox::domain::ids::new_uuid();
            let short = breadbox::domain::ids::new_short_id();
            let hash = breadbox::domain::ids::new_uuid() + &breadbox::domain::ids::new_uuid();
            session.execute(rusqlite::params![
                id, short, hash, user_id, label, status, expires_at, created_at
            ])?;
            let seq = tx.last_insert_rowid();
            for _ in 0..events {
                event.execute(rusqlite::params![
                    breadbox::domain::ids::new_uuid(),
                    seq,
                    created_at
                ])?;
            }
        }
        Ok(())
    })
    .expect("bulk insert");
}

fn count(db: &Db, sql: &'static str) -> i64 {
    db.read(|c| Ok(c.query_row(sql, [], |r| r.get(0))?))
        .expect("count")
}

/// Checkpoint the WAL into the file and return the file's size in bytes.
fn file_size_after_checkpoint(path: &std::path::Path) -> u64 {
    let c = rusqlite::Connection::open(path).expect("open");
    c.busy_timeout(Duration::from_secs(10)).expect("busy");
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    std::fs::metadata(path).expect("stat").len()
}

fn tiny_retention() -> RetentionConfig {
    RetentionConfig {
        link_sessions: Duration::from_secs(1),
        webhook_deliveries: Duration::from_secs(1),
    }
}

fn no_op() -> breadbox::maintenance::OnChanged {
    Arc::new(|_: &str| {})
}

#[actix_web::test]
async fn retention_prunes_finished_sessions_events_and_webhooks_keeps_connections_and_shrinks_the_file(
) {
    let app = spawn_app().await;
    let t0 = now();
    // A finished session made through the API, with its timeline.
    let done = app.mint(json!({})).await;
    let done_id = done["id"].as_str().expect("id").to_owned();
    let user_id = done["user_id"].as_str().expect("user").to_owned();
    let r = app
        .post(
            &format!("/api/v1/connections/link/{done_id}/cancel"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A live session, which must stay.
    let live = app.mint(json!({})).await;
    let live_id = live["id"].as_str().expect("id").to_owned();
    // A connection, which is never pruned.
    let uid = user_id.clone();
    app.db
        .write(move |tx| {
            tx.execute(
                "INSERT INTO connections (id, short_id, user_id, provider, external_id, status,
                    created_at, updated_at)
                 VALUES ('c0ffee00-0000-4000-8000-000000000001', 'Conn0001', ?1, 'plaid',
                    'item-1', 'active', ?2, ?2)",
                (&uid, t0 - 500 * DAY),
            )?;
            Ok(())
        })
        .expect("connection");
    // Webhook rows: delivered, dead, undelivered but past the retry window,
    // and one still being retried (kept: its retry window is open).
    let ids: Vec<String> = (0..4)
        .map(|i| {
            let at = if i == 2 { t0 - 4 * DAY } else { t0 };
            app.db
                .write(move |tx| outbox::enqueue(tx, "link_session.failed", &json!({}), at))
                .expect("enqueue")
        })
        .collect();
    let (a, b) = (ids[0].clone(), ids[1].clone());
    app.db
        .write(move |tx| outbox::mark_delivered(tx, &a, t0))
        .expect("delivered");
    app.db
        .write(move |tx| outbox::mark_dead(tx, &b, t0, "gone"))
        .expect("dead");
    // Ten days of old history, big enough for the file to notice.
    bulk_sessions(
        &app.db,
        &user_id,
        3000,
        "completed",
        t0 - 10 * DAY,
        t0 - 10 * DAY,
        3,
        200,
    );
    let before = file_size_after_checkpoint(&app.db_path);
    let did = done_id.clone();
    let done_seq: i64 = app
        .db
        .read(move |c| {
            Ok(
                c.query_row("SELECT seq FROM link_sessions WHERE id = ?1", [&did], |r| {
                    r.get(0)
                })?,
            )
        })
        .expect("seq");

    let m =
        Maintenance::new(app.db.clone(), tiny_retention(), no_op()).converting(app.db_path.clone());
    let report = m.run_once(t0 + 10).await.expect("pass");

    assert!(report.sessions >= 3001, "{report:?}");
    assert!(
        report.writes > 3001 / breadbox::maintenance::PRUNE_BATCH as usize,
        "small batches: {report:?}"
    );
    let gone = app
        .get(&format!("/api/v1/connections/link/{done_id}"))
        .await;
    assert_eq!(gone.status, 404, "the finished session is gone");
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM link_sessions WHERE status = 'completed'"
        ),
        0
    );
    let events: i64 = app
        .db
        .read(move |c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM link_session_events WHERE session_seq = ?1",
                [done_seq],
                |r| r.get(0),
            )?)
        })
        .expect("events");
    assert_eq!(events, 0, "its events are gone");
    assert_eq!(
        count(&app.db, "SELECT COUNT(*) FROM webhook_outbox"),
        1,
        "only the message still being retried is left"
    );
    let kept = app
        .get(&format!("/api/v1/connections/link/{live_id}"))
        .await;
    assert_eq!(kept.status, 200, "a live session stays");
    let conn = app.get("/api/v1/connections/Conn0001").await;
    assert_eq!(
        conn.status, 200,
        "connections are never pruned: {}",
        conn.text
    );
    assert_eq!(report.free_pages, 0, "{report:?}");
    let after = file_size_after_checkpoint(&app.db_path);
    assert!(
        after * 2 < before,
        "the file shrinks: {before} bytes before, {after} after"
    );

    // Nothing left to do: a second pass deletes nothing.
    let again = m.run_once(t0 + 10).await.expect("pass");
    assert_eq!((again.sessions, again.webhooks), (0, 0), "{again:?}");
}

#[actix_web::test]
async fn the_sweeper_drains_a_bulk_inserted_backlog_in_small_writes() {
    let dir = tempfile::tempdir().expect("dir");
    let db = Db::open(&dir.path().join("backlog.db"), "NORMAL").expect("open");
    let t0 = now();
    let user = db
        .write(move |tx| breadbox::db::users::insert(tx, "Ana", None, t0))
        .expect("user");
    // A server that was off for a while: 5,000 sessions that expired unswept.
    let backlog = 5_000;
    bulk_sessions(
        &db,
        &user.id,
        backlog / 2,
        "pending",
        t0 - 7200,
        t0 - 3600,
        1,
        0,
    );
    bulk_sessions(
        &db,
        &user.id,
        backlog / 2,
        "active",
        t0 - 7200,
        t0 - 60,
        1,
        0,
    );
    bulk_sessions(&db, &user.id, 10, "pending", t0, t0 + 900, 1, 0);

    let heard = Arc::new(AtomicUsize::new(0));
    let h = heard.clone();
    let m = Maintenance::new(
        db.clone(),
        RetentionConfig::default(),
        Arc::new(move |_: &str| {
            h.fetch_add(1, Ordering::SeqCst);
        }),
    );
    let report = m.run_once(t0).await.expect("pass");
    assert_eq!(report.expired, backlog, "{report:?}");
    assert_eq!(
        heard.load(Ordering::SeqCst),
        backlog,
        "every change announced"
    );
    assert!(
        report.writes > backlog / EXPIRE_BATCH as usize,
        "in batches of at most {EXPIRE_BATCH}: {report:?}"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM link_sessions WHERE status = 'expired'"
        ),
        backlog as i64
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM link_session_events WHERE type = 'session.expired'"
        ),
        backlog as i64,
        "each expiry is on its timeline"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM link_sessions WHERE status = 'pending'"
        ),
        10,
        "live sessions are untouched"
    );
    let again = m.run_once(t0).await.expect("pass");
    assert_eq!(again.expired, 0);
}

#[actix_web::test]
async fn a_waiter_sleeps_through_other_sessions_changes_and_wakes_for_a_cli_cancel() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("w.db");
    let server = BinServer::start(
        &db,
        &[],
        &[("BREADBOX_LOG", "info,breadbox::waiters=debug")],
    );
    let key = server.bootstrap_key();
    let (user, link) = admin_user_and_link(&db);
    let watched = link["id"].as_str().expect("id").to_owned();
    let http = reqwest::Client::new();
    // Let the cross-process watch see the CLI's commits before anyone waits
    // (it checks every 250 ms), so they wake nobody.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let url = format!("{}/api/v1/connections/link/{watched}?wait=30", server.base);
    let (h, k) = (http.clone(), key.clone());
    let waiter = tokio::spawn(async move {
        let r = h
            .get(url)
            .header("X-API-Key", k)
            .send()
            .await
            .expect("poll");
        assert_eq!(r.status(), 200);
        r.json::<serde_json::Value>().await.expect("json")
    });

    // This server changes other sessions for a while (several watch ticks).
    for _ in 0..6 {
        let r = http
            .post(format!("{}/api/v1/connections/link", server.base))
            .header("X-API-Key", &key)
            .json(&json!({"user_id": user["id"]}))
            .send()
            .await
            .expect("mint");
        assert_eq!(r.status(), 201);
        let other: serde_json::Value = r.json().await.expect("json");
        let r = http
            .post(format!(
                "{}/api/v1/connections/link/{}/cancel",
                server.base,
                other["id"].as_str().expect("id")
            ))
            .header("X-API-Key", &key)
            .send()
            .await
            .expect("cancel");
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(!waiter.is_finished(), "the waiter is still waiting");
    let logs = server.logs();
    assert!(
        !logs.contains("waking the waiters"),
        "nobody was woken by changes to other sessions:\n{logs}"
    );

    // The CLI (another process) cancels the watched session.
    let cancelled = admin(&db, &["links", "cancel", &watched]);
    assert_eq!(cancelled["status"], "failed");
    let seen = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken within seconds")
        .expect("waiter task");
    assert_eq!(seen["status"], "failed");
    assert_eq!(seen["error_code"], "CANCELED");
    assert!(
        server.logs().contains("another process wrote"),
        "woken by the cross-process watch"
    );
}
