//! The catalogue of statements the API, the page and the background tasks
//! run on the tables that grow (link sessions, their events, the webhook
//! outbox), gathered from the modules that own them, so one test can check
//! every plan (CONTRACT §11 "Growth", §4 list filters): a statement added to
//! one of those modules' `queries()` is covered without touching the test.

use super::{events, link_sessions, outbox, retention};

/// Every catalogued statement as `(name, sql)`.
pub fn all() -> Vec<(String, String)> {
    let mut out = link_sessions::queries();
    out.extend(events::queries());
    out.extend(outbox::queries());
    out.extend(retention::queries());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    /// `EXPLAIN QUERY PLAN` lines of `sql` on `db`'s schema.
    fn plan(db: &Db, sql: &str) -> Vec<String> {
        db.read(|c| {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            // Parameters stay unbound (NULL): the plan does not depend on them.
            let mut rows = stmt.raw_query();
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(r.get::<_, String>(3)?);
            }
            Ok(out)
        })
        .expect("explain")
    }

    /// A plan step that reads a whole table or index, or sorts: the cost
    /// then grows with the history. A scan of a partial index over live rows
    /// only (the webhook worker's pending messages) stays small and is fine,
    /// and so are a scan of `json_each` (it walks a bound parameter, not a
    /// table) and of a subquery's rows (its own steps are checked too).
    fn grows(line: &str) -> bool {
        let bounded_scan = line.contains("USING COVERING INDEX webhook_outbox_pending")
            || line.contains("USING INDEX webhook_outbox_pending")
            || line.starts_with("SCAN json_each VIRTUAL TABLE")
            || line.starts_with("SCAN (subquery-");
        line.contains("TEMP B-TREE") || (line.starts_with("SCAN ") && !bounded_scan)
    }

    #[test]
    fn no_statement_scans_or_sorts_a_growing_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("plans.db"), "NORMAL").expect("open");
        let all = all();
        assert!(all.len() > 20, "the catalogue lists the list filters too");
        let mut bad = Vec::new();
        for (name, sql) in &all {
            let lines = plan(&db, sql);
            if lines.iter().any(|l| grows(l)) {
                bad.push(format!("{name}:\n  {}\n  {sql}", lines.join("\n  ")));
            }
        }
        assert!(
            bad.is_empty(),
            "plans that grow with history:\n{}",
            bad.join("\n")
        );
    }

    #[test]
    fn the_expired_filter_merges_indexed_arms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("plans.db"), "NORMAL").expect("open");
        for (name, sql) in all() {
            if name.contains("status=expired") {
                let lines = plan(&db, &sql);
                assert!(
                    lines.iter().any(|l| l.contains("MERGE")),
                    "{name}: {lines:?}"
                );
                let searches = lines.iter().filter(|l| l.starts_with("SEARCH")).count();
                assert_eq!(searches, 3, "{name}: {lines:?}");
            }
        }
    }
}
