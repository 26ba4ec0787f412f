//! Numbered SQL migrations, each applied in the writer's transaction, with
//! the schema version kept in `PRAGMA user_version`.

use rusqlite::Transaction;

use super::{DbError, DbResult};

/// Every migration in order; index + 1 is its version.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_outbox.sql"),
    include_str!("migrations/0003_idempotency.sql"),
    include_str!("migrations/0004_meta.sql"),
    include_str!("migrations/0005_growth.sql"),
    include_str!("migrations/0006_connection_health.sql"),
    include_str!("migrations/0007_sealed_idempotency.sql"),
    include_str!("migrations/0008_event_timeline_by_seq.sql"),
];

/// The schema version this build writes.
pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// Why a database of schema version `found` cannot be used by this build.
pub fn too_new(found: i64) -> String {
    format!(
        "the database has schema version {found}, written by a newer breadbox; this build \
         knows schema version {} at most: run the newer breadbox (or restore a backup made \
         by this version with `breadbox restore FILE`)",
        latest()
    )
}

/// Apply whatever migrations this database has not seen yet.
pub fn run(tx: &Transaction) -> DbResult<()> {
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > latest() {
        return Err(DbError::Corrupt(too_new(current)));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    /// Migrate an in-memory database up to `version` (all when `None`).
    fn migrate_to(conn: &mut Connection, version: Option<usize>) {
        let tx = conn.transaction().expect("tx");
        for (i, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .take(version.unwrap_or(MIGRATIONS.len()))
        {
            tx.execute_batch(sql).expect("migration");
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .expect("version");
        }
        tx.commit().expect("commit");
    }

    #[test]
    fn plaintext_idempotency_replays_of_older_versions_are_deleted() {
        let mut conn = Connection::open_in_memory().expect("db");
        migrate_to(&mut conn, Some(6));
        conn.execute_batch(
            "INSERT INTO idempotency_keys VALUES ('k', 'plain', 'f', 201, '{\"token\":\"t\"}', 1);
             INSERT INTO idempotency_keys VALUES ('k', 'sealed', 'f', 201, x'01AB', 1);",
        )
        .expect("rows");
        let tx = conn.transaction().expect("tx");
        run(&tx).expect("migrate");
        tx.commit().expect("commit");
        let left: Vec<String> = conn
            .prepare("SELECT key FROM idempotency_keys")
            .expect("stmt")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(left, ["sealed"]);
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, latest());
    }

    #[test]
    fn events_keep_their_ids_order_and_session_when_keyed_by_session_seq() {
        let mut conn = Connection::open_in_memory().expect("db");
        migrate_to(&mut conn, Some(7));
        conn.execute_batch(
            "INSERT INTO users (id, short_id, name, created_at) VALUES ('u', 'us', 'U', 1);
             INSERT INTO link_sessions (seq, id, short_id, token_hash, user_id, action,
                 single_use, status, expires_at, created_at)
             VALUES (10, 'sa', 'a', 'ha', 'u', 'link', 0, 'pending', 9, 1),
                    (20, 'sb', 'b', 'hb', 'u', 'link', 0, 'pending', 9, 1);
             INSERT INTO link_session_events (seq, id, session_id, type, at, detail)
             VALUES (1, 'e1', 'sb', 'session.created', 1, '{}'),
                    (2, 'e2', 'sa', 'session.created', 2, '{\"k\":1}'),
                    (3, 'e3', 'sb', 'session.opened', 3, '{}');",
        )
        .expect("rows");
        let tx = conn.transaction().expect("tx");
        run(&tx).expect("migrate");
        tx.commit().expect("commit");
        let rows: Vec<(i64, String, i64, String, i64, String)> = conn
            .prepare("SELECT seq, id, session_seq, type, at, detail FROM link_session_events ORDER BY seq")
            .expect("stmt")
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let want = [
            (1, "e1", 20, "session.created", 1, "{}"),
            (2, "e2", 10, "session.created", 2, "{\"k\":1}"),
            (3, "e3", 20, "session.opened", 3, "{}"),
        ]
        .map(|(a, b, c, d, e, f)| (a, b.to_owned(), c, d.to_owned(), e, f.to_owned()));
        assert_eq!(rows, want);
        let fk: i64 = conn
            .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .expect("fk check");
        assert_eq!(fk, 0);
    }
}
