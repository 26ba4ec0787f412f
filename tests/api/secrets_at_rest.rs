//! CONTRACT §2 "At rest": no link token, link URL or API key in anything the
//! server writes — database, WAL, backups — including idempotency replays.

use std::path::Path;

use serde_json::{json, Value};

use crate::helpers::{admin, read, run_bin, BinServer};

/// Every byte of every file under `dir`, file by file.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_file() {
            let bytes = std::fs::read(&path).expect("read file");
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[actix_web::test]
async fn idempotent_create_leaves_no_token_in_db_wal_or_backup() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("breadbox.db");
    let server = BinServer::start(&db, &[], &[]);
    let key = admin(
        &db,
        &[
            "keys",
            "create",
            "--name",
            "agent",
            "--scope",
            "full_access",
        ],
    )["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let user = admin(&db, &["users", "create", "--name", "Ana"]);
    let http = reqwest::Client::new();
    let mint = || async {
        read(
            http.post(format!("{}/api/v1/connections/link", server.base))
                .header("X-API-Key", &key)
                .header("Idempotency-Key", "abc-123")
                .json(&json!({"user_id": user["id"]}))
                .send()
                .await
                .expect("send"),
        )
        .await
    };
    let first = mint().await;
    assert_eq!(first.status, 201, "{}", first.text);
    let again = mint().await;
    assert_eq!(again.text, first.text, "the replay is byte for byte");
    let token = first.json["token"].as_str().expect("token").to_owned();
    let url = first.json["url"].as_str().expect("url").to_owned();

    // A backup taken while serving, beside the live files.
    let backup = dir.path().join("copy.db");
    let out = run_bin(
        &[
            "--database",
            db.to_str().expect("utf-8"),
            "backup",
            backup.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let files = files_under(dir.path());
    assert!(
        files
            .iter()
            .any(|(name, _)| name.ends_with("breadbox.db-wal")),
        "the WAL is among the files checked: {:?}",
        files.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    for (name, bytes) in &files {
        for (what, secret) in [
            ("link token", &token),
            ("link URL", &url),
            ("API key", &key),
        ] {
            assert!(!contains(bytes, secret), "{what} in plain text in {name}");
        }
    }
    // The stored replay still opens after all that.
    let third = mint().await;
    assert_eq!(third.text, first.text);
    let _: Value = third.json;
}
