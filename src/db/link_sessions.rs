//! Link sessions: insert, look-ups, listing and compare-and-set transitions.

use rusqlite::{Connection, OptionalExtension, Row, Transaction};
use serde_json::json;

use super::{
    connections, events, outbox, parse_col, ref_clause, unique_short_id, DbError, DbResult, Emit,
};
use crate::domain::ids::{new_uuid, EntityRef};
use crate::domain::link_session::{
    provider_str, Action, LinkSession, Provider, Refusal, Status, Transition, ValidCreate,
};
use crate::domain::time::Timestamp;

const COLS: &str = "id, short_id, user_id, provider, action, connection_id, single_use, \
    redirect_url, label, status, error_code, error_message, result_connection_ids, \
    expires_at, started_at, completed_at, created_at, seq";

fn from_row(r: &Row) -> rusqlite::Result<(LinkSession, i64)> {
    let provider: String = r.get(3)?;
    let ids: String = r.get(12)?;
    Ok((
        LinkSession {
            id: r.get(0)?,
            short_id: r.get(1)?,
            user_id: r.get(2)?,
            provider: Provider::parse(&provider),
            action: parse_col(r.get(4)?, Action::parse, "action")?,
            connection_id: r.get(5)?,
            single_use: r.get(6)?,
            redirect_url: r.get(7)?,
            label: r.get(8)?,
            status: parse_col(r.get(9)?, Status::parse, "status")?,
            error_code: r.get(10)?,
            error_message: r.get(11)?,
            result_connection_ids: serde_json::from_str(&ids).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(12, rusqlite::types::Type::Text, e.into())
            })?,
            expires_at: r.get(13)?,
            started_at: r.get(14)?,
            completed_at: r.get(15)?,
            created_at: r.get(16)?,
        },
        r.get(17)?,
    ))
}

/// Who minted a session, for the audit timeline.
#[derive(Debug, Clone)]
pub struct Minter {
    /// API key id, or `None` for the CLI.
    pub api_key_id: Option<String>,
    /// API key name, or `cli`.
    pub name: String,
}

/// What a new session is made of.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Validated body.
    pub valid: ValidCreate,
    /// Resolved user UUID.
    pub user_id: String,
    /// `link` or `relink`.
    pub action: Action,
    /// Relink target.
    pub connection_id: Option<String>,
    /// Token hash (the plaintext never reaches the database).
    pub token_hash: String,
}

const INSERT_SQL: &str = "INSERT INTO link_sessions (id, short_id, token_hash, user_id, provider,
    action, connection_id, single_use, redirect_url, label, status, expires_at, created_at,
    api_key_id)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', ?11, ?12, ?13)";

/// Insert a session and its `session.created` event.
pub fn insert(
    tx: &Transaction,
    new: NewSession,
    minter: &Minter,
    now: Timestamp,
) -> DbResult<LinkSession> {
    let s = LinkSession {
        id: new_uuid(),
        short_id: unique_short_id(tx, "link_sessions")?,
        user_id: new.user_id,
        provider: new.valid.provider,
        action: new.action,
        connection_id: new.connection_id,
        single_use: new.valid.single_use,
        redirect_url: new.valid.redirect_url,
        label: new.valid.label,
        status: Status::Pending,
        error_code: None,
        error_message: None,
        result_connection_ids: Vec::new(),
        expires_at: now + new.valid.ttl,
        started_at: None,
        completed_at: None,
        created_at: now,
    };
    tx.prepare_cached(INSERT_SQL)?.execute(rusqlite::params![
        s.id,
        s.short_id,
        new.token_hash,
        s.user_id,
        provider_str(s.provider),
        s.action.as_str(),
        s.connection_id,
        s.single_use,
        s.redirect_url,
        s.label,
        s.expires_at,
        s.created_at,
        minter.api_key_id,
    ])?;
    // The row just inserted: its `seq` keys the timeline, no look-up needed.
    events::insert_at(
        tx,
        tx.last_insert_rowid(),
        "session.created",
        now,
        &json!({"api_key_id": minter.api_key_id, "api_key_name": minter.name}),
    )?;
    Ok(s)
}

/// One session by UUID or short id (stored status; call `.at(now)` to show it).
pub fn get(conn: &Connection, r: &EntityRef) -> DbResult<Option<LinkSession>> {
    let (cond, val) = ref_clause(r);
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLS} FROM link_sessions WHERE {cond}"))?;
    Ok(stmt.query_row([val], from_row).optional()?.map(|(s, _)| s))
}

/// One session by its token's hash.
pub fn get_by_token_hash(conn: &Connection, hash: &str) -> DbResult<Option<LinkSession>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM link_sessions WHERE token_hash = ?1"
    ))?;
    Ok(stmt.query_row([hash], from_row).optional()?.map(|(s, _)| s))
}

/// List filters.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this user's sessions (UUID).
    pub user_id: Option<String>,
    /// Only sessions whose effective status is this.
    pub status: Option<Status>,
    /// Only sessions older than this position (from a cursor).
    pub before_seq: Option<i64>,
    /// Page size.
    pub limit: u32,
}

/// The derived `expired` filter as three arms, each served in `seq` order by
/// an index ((status, seq) or (user_id, status, seq)) and merged by SQLite:
/// an `OR` across statuses would scan the table or sort it.
const EXPIRED_ARMS: [&str; 3] = [
    "status = 'expired'",
    "status = 'pending' AND expires_at <= ?2",
    "status = 'active' AND expires_at <= ?2",
];

/// The SQL of one list query. Parameters: ?1 before-seq, ?2 now, ?3 status,
/// ?4 user id, ?5 page size + 1. Every combination is in [`queries`], so the
/// query-plan test covers it.
fn list_sql(status: Option<Status>, by_user: bool) -> String {
    let user = if by_user { " AND user_id = ?4" } else { "" };
    let arm =
        |cond: &str| format!("SELECT {COLS} FROM link_sessions WHERE seq < ?1 AND {cond}{user}");
    let body = match status {
        None => format!("SELECT {COLS} FROM link_sessions WHERE seq < ?1{user}"),
        Some(Status::Expired) => EXPIRED_ARMS.map(arm).join(" UNION ALL "),
        Some(Status::Pending | Status::Active) => arm("status = ?3 AND expires_at > ?2"),
        Some(_) => arm("status = ?3"),
    };
    format!("{body} ORDER BY seq DESC LIMIT ?5")
}

/// A page of sessions, newest first, and the position to continue from.
pub fn list(
    conn: &Connection,
    f: &ListFilter,
    now: Timestamp,
) -> DbResult<(Vec<LinkSession>, Option<i64>)> {
    let mut stmt = conn.prepare_cached(&list_sql(f.status, f.user_id.is_some()))?;
    // SQLite counts parameters up to the highest number used (?5), so binding all
    // five is right even when a filter leaves ?2, ?3 or ?4 out.
    let page = stmt
        .query_map(
            rusqlite::params![
                f.before_seq.unwrap_or(i64::MAX),
                now,
                f.status.map(Status::as_str),
                f.user_id,
                i64::from(f.limit) + 1,
            ],
            from_row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let (page, next) = super::split_page(page, f.limit);
    Ok((page.into_iter().map(|s| s.at(now)).collect(), next))
}

/// Extra data carried by a transition.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// Stored with `failed`.
    pub error: Option<(String, String)>,
    /// Appended to `result_connection_ids`.
    pub connection_id: Option<String>,
    /// Merged into the event detail.
    pub detail: serde_json::Map<String, serde_json::Value>,
}

/// The compare-and-set of a transition. The expiry guard differs for
/// `Expire`: it needs the time to have passed.
fn transition_sql(expire: bool) -> String {
    let time_guard = if expire {
        "expires_at <= ?5"
    } else {
        "expires_at > ?5"
    };
    format!(
        "UPDATE link_sessions SET
            status = ?2,
            started_at = CASE WHEN ?3 THEN COALESCE(started_at, ?5) ELSE started_at END,
            completed_at = CASE WHEN ?4 THEN ?5 ELSE completed_at END,
            error_code = COALESCE(?6, error_code),
            error_message = COALESCE(?7, error_message),
            result_connection_ids = CASE WHEN ?8 IS NULL THEN result_connection_ids
                ELSE json_insert(result_connection_ids, '$[#]', ?8) END
         WHERE id = ?1 AND status IN (?9, ?10) AND {time_guard}"
    )
}

/// Attempt `t` on session `id` as one compare-and-set, recording its events.
/// Returns the updated session, or why it was refused (nothing written then).
pub fn transition(
    tx: &Transaction,
    id: &str,
    t: Transition,
    change: Change,
    now: Timestamp,
    emit: Emit,
) -> DbResult<Result<LinkSession, Refusal>> {
    let from = t.from_states();
    let to = t.to_state();
    let (code, message) = change.error.clone().unzip();
    let sql = transition_sql(t == Transition::Expire);
    let changed = tx.prepare_cached(&sql)?.execute(rusqlite::params![
        id,
        to.as_str(),
        t == Transition::Open,
        t.stamps_completed_at(),
        now,
        code,
        message,
        change.connection_id,
        from[0].as_str(),
        from[from.len() - 1].as_str(),
    ])?;
    let current = get(tx, &EntityRef::Uuid(id.to_owned()))?
        .ok_or_else(|| DbError::Corrupt(format!("session {id} vanished")))?;
    if changed == 0 {
        return Ok(Err(
            match t.apply(current.status, current.expires_at, now) {
                Err(refusal) => refusal,
                // Same rule in SQL and in the domain; a mismatch is a bug, not a state.
                Ok(_) => {
                    return Err(DbError::Corrupt(format!(
                        "transition {t:?} on {id} diverged"
                    )))
                }
            },
        ));
    }
    record_events(tx, &current, t, &change, now)?;
    if emit.webhooks {
        queue_webhooks(tx, &current, t, change.connection_id.as_deref(), now)?;
    }
    Ok(Ok(current))
}

/// Queue the outbound webhooks of a transition, in its transaction.
fn queue_webhooks(
    tx: &Transaction,
    s: &LinkSession,
    t: Transition,
    connection_id: Option<&str>,
    now: Timestamp,
) -> DbResult<()> {
    let data = serde_json::to_value(s).map_err(|e| DbError::Corrupt(e.to_string()))?;
    if let (Transition::AddConnection { .. }, Some(cid)) = (t, connection_id) {
        let mut with_conn = data.clone();
        with_conn["connection"] = json!(connections::get(tx, &EntityRef::Uuid(cid.to_owned()))?);
        outbox::enqueue(tx, "link_session.connection_added", &with_conn, now)?;
    }
    let status_changed = t == Transition::Open || s.status.is_terminal();
    if status_changed {
        let kind = format!("link_session.{}", s.status.as_str());
        outbox::enqueue(tx, &kind, &data, now)?;
    }
    Ok(())
}

fn record_events(
    tx: &Transaction,
    s: &LinkSession,
    t: Transition,
    change: &Change,
    now: Timestamp,
) -> DbResult<()> {
    let mut detail = serde_json::Value::Object(change.detail.clone());
    match t {
        Transition::Open => events::insert(tx, &s.id, "session.opened", now, &detail)?,
        Transition::AddConnection { .. } => {
            events::insert(tx, &s.id, "connection.added", now, &detail)?;
        }
        Transition::Reauthenticate => {
            events::insert(tx, &s.id, "connection.reauthenticated", now, &detail)?;
        }
        Transition::Fail => {
            if let Some((code, _)) = &change.error {
                detail["error_code"] = json!(code);
            }
            events::insert(tx, &s.id, "session.failed", now, &detail)?;
        }
        Transition::Complete | Transition::Expire => {}
    }
    match s.status {
        Status::Completed => events::insert(tx, &s.id, "session.completed", now, &json!({}))?,
        Status::Consumed => events::insert(tx, &s.id, "session.consumed", now, &json!({}))?,
        Status::Expired => events::insert(tx, &s.id, "session.expired", now, &json!({}))?,
        _ => {}
    }
    Ok(())
}

/// Live sessions whose time has passed, served by the partial index
/// `link_sessions_live` (expires_at) WHERE status IN ('pending', 'active').
const EXPIRE_DUE_SQL: &str = "SELECT id FROM link_sessions
    WHERE status IN ('pending', 'active') AND expires_at <= ?1 LIMIT ?2";

/// Write `expired` on up to `batch` live sessions whose time has passed
/// (one compare-and-set each, with its event and webhook).
/// Returns the ids that changed.
pub fn expire_due(
    tx: &Transaction,
    now: Timestamp,
    batch: u32,
    emit: Emit,
) -> DbResult<Vec<String>> {
    let ids: Vec<String> = {
        let mut stmt = tx.prepare_cached(EXPIRE_DUE_SQL)?;
        let rows = stmt.query_map((now, batch), |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut done = Vec::with_capacity(ids.len());
    for id in ids {
        if transition(tx, &id, Transition::Expire, Change::default(), now, emit)?.is_ok() {
            done.push(id);
        }
    }
    Ok(done)
}

/// SQLite's `data_version` on this connection: it changes when another
/// connection commits, never for this connection's own commits. On the
/// writer connection, a change means another process (the CLI) wrote.
pub fn data_version(conn: &Connection) -> DbResult<i64> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
}

/// Every statement this module runs, as `(name, sql)`, for the query-plan
/// test (`db::queries`): every list filter combination included.
pub fn queries() -> Vec<(String, String)> {
    let mut out = vec![
        ("link_sessions.insert".to_owned(), INSERT_SQL.to_owned()),
        (
            "link_sessions.get(id)".to_owned(),
            format!("SELECT {COLS} FROM link_sessions WHERE id = ?1"),
        ),
        (
            "link_sessions.get(short_id)".to_owned(),
            format!("SELECT {COLS} FROM link_sessions WHERE short_id = ?1"),
        ),
        (
            "link_sessions.get_by_token_hash".to_owned(),
            format!("SELECT {COLS} FROM link_sessions WHERE token_hash = ?1"),
        ),
        ("link_sessions.transition".to_owned(), transition_sql(false)),
        (
            "link_sessions.transition(expire)".to_owned(),
            transition_sql(true),
        ),
        (
            "link_sessions.expire_due".to_owned(),
            EXPIRE_DUE_SQL.to_owned(),
        ),
    ];
    let statuses = [
        None,
        Some(Status::Pending),
        Some(Status::Active),
        Some(Status::Completed),
        Some(Status::Consumed),
        Some(Status::Failed),
        Some(Status::Expired),
    ];
    for status in statuses {
        for by_user in [false, true] {
            let name = format!(
                "link_sessions.list(status={}, user={by_user})",
                status.map_or("any", Status::as_str)
            );
            out.push((name, list_sql(status, by_user)));
        }
    }
    out
}
