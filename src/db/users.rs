//! Household members.

use rusqlite::{Connection, OptionalExtension, Row, Transaction};

use super::{ref_clause, unique_short_id, DbResult};
use crate::domain::ids::{new_uuid, EntityRef};
use crate::domain::time::Timestamp;
use crate::domain::user::User;

const COLS: &str = "id, short_id, name, email, created_at";

fn from_row(r: &Row) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        short_id: r.get(1)?,
        name: r.get(2)?,
        email: r.get(3)?,
        created_at: r.get(4)?,
    })
}

/// Insert a member.
pub fn insert(tx: &Transaction, name: &str, email: Option<&str>, now: Timestamp) -> DbResult<User> {
    let user = User {
        id: new_uuid(),
        short_id: unique_short_id(tx, "users")?,
        name: name.to_owned(),
        email: email.map(str::to_owned),
        created_at: now,
    };
    tx.execute(
        "INSERT INTO users (id, short_id, name, email, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        (
            &user.id,
            &user.short_id,
            &user.name,
            &user.email,
            user.created_at,
        ),
    )?;
    Ok(user)
}

/// One member by UUID or short id.
pub fn get(conn: &Connection, r: &EntityRef) -> DbResult<Option<User>> {
    let (cond, val) = ref_clause(r);
    let sql = format!("SELECT {COLS} FROM users WHERE {cond}");
    Ok(conn.query_row(&sql, [val], from_row).optional()?)
}

/// Every member, oldest first.
pub fn list(conn: &Connection) -> DbResult<Vec<User>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLS} FROM users ORDER BY seq"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
