//! The real binary: bootstrap key, config errors, admin commands with --json,
//! log redaction.

use serde_json::{json, Value};

use crate::helpers::{run_bin, BinServer};

fn stdout_json(out: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "exactly one JSON document: {text}");
    serde_json::from_str(&text).expect("stdout is JSON")
}

#[test]
fn serve_writes_the_bootstrap_key_once_to_a_private_file_when_not_on_a_terminal() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("b.db");
    let mut server = BinServer::start(&db, &[], &[]);
    let key = server.bootstrap_key();
    let file = std::fs::read_to_string(dir.path().join("bootstrap-key.txt")).expect("file");
    assert!(file.contains("X-API-Key"), "one line on how to use it");
    let status = reqwest::blocking_get_status(&format!("{}/api/v1/users", server.base), &key);
    assert_eq!(status, 200);
    assert!(
        !server.logs().contains(&key),
        "the key never reaches the log"
    );
    assert!(
        !server.stdout_lines.iter().any(|l| l.contains(&key)),
        "nor stdout, which is not a terminal here"
    );
    assert!(server.terminate().success() || cfg!(not(unix)));

    std::fs::remove_file(dir.path().join("bootstrap-key.txt")).expect("admin deletes it");
    let _server = BinServer::start(&db, &[], &[]);
    assert!(
        !dir.path().join("bootstrap-key.txt").exists(),
        "made only once"
    );
}

/// Tiny blocking HTTP helper so sync tests need no runtime.
mod reqwest {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    pub fn blocking_get_status(url: &str, key: &str) -> u16 {
        request("GET", url, key).0
    }

    pub fn request(method: &str, url: &str, key: &str) -> (u16, String) {
        let rest = url.strip_prefix("http://").expect("http url");
        let (host, path) = rest
            .split_once('/')
            .map(|(h, p)| (h, format!("/{p}")))
            .expect("path");
        let mut s = TcpStream::connect(host).expect("connect");
        write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

#[test]
fn config_errors_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("breadbox.toml");
    std::fs::write(&cfg, "[server]\nlisten = \"127.0.0.1:0\"\nlisenn = 1\n").expect("write");
    let out = run_bin(
        &["--config", cfg.to_str().unwrap_or(""), "users", "list"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server.lisenn"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let db = dir.path().join("x.db");
    let out = run_bin(
        &["--database", db.to_str().unwrap_or(""), "users", "list"],
        &[("BREADBOX_LIMITS_API_PER_MINUTE", "lots")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BREADBOX_LIMITS_API_PER_MINUTE"));

    let out = run_bin(
        &[
            "--config",
            dir.path().join("missing.toml").to_str().unwrap_or(""),
            "users",
            "list",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn admin_commands_print_one_json_document_and_share_the_database_with_the_server() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("b.db");
    let dbs = db.to_str().unwrap_or("").to_owned();
    let server = BinServer::start(&db, &[], &[]);
    let key = server.bootstrap_key();

    let out = run_bin(
        &[
            "--database",
            &dbs,
            "--json",
            "users",
            "create",
            "--name",
            "Ana",
            "--email",
            "ana@example.com",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user = stdout_json(&out);
    assert_eq!(user["name"], "Ana");
    let short = user["short_id"].as_str().unwrap_or("").to_owned();

    // The running server sees what the CLI wrote.
    let (status, body) = reqwest::request(
        "GET",
        &format!("{}/api/v1/users/{short}", server.base),
        &key,
    );
    assert_eq!(status, 200, "{body}");

    let out = run_bin(
        &[
            "--database",
            &dbs,
            "--json",
            "keys",
            "create",
            "--name",
            "bot",
            "--scope",
            "read_only",
        ],
        &[],
    );
    let k = stdout_json(&out);
    for f in [
        "id",
        "short_id",
        "name",
        "scope",
        "prefix",
        "key",
        "created_at",
    ] {
        assert!(k.get(f).is_some(), "keys create prints {f}");
    }
    let (status, _) = reqwest::request(
        "GET",
        &format!("{}/api/v1/users", server.base),
        k["key"].as_str().unwrap_or(""),
    );
    assert_eq!(status, 200);

    let out = run_bin(
        &[
            "--database",
            &dbs,
            "--json",
            "links",
            "create",
            "--user",
            &short,
            "--label",
            "CLI link",
            "--expires-in",
            "120",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = stdout_json(&out);
    let token = link["token"].as_str().unwrap_or("").to_owned();
    assert_eq!(link["url"], format!("http://127.0.0.1:8080/link/{token}"));
    assert_eq!(link["status"], "pending");
    assert_eq!(link["label"], "CLI link");

    // The page served by the running server accepts the CLI's token; the log hides it.
    let (status, _) = reqwest::request("GET", &format!("{}/link/{token}", server.base), "");
    assert_eq!(status, 200);
    let (status, _) =
        reqwest::request("GET", &format!("{}/_link/{token}/session", server.base), "");
    assert_eq!(status, 200);
    let logs = {
        let mut logs = server.logs();
        for _ in 0..50 {
            if logs.contains("/_link/[redacted]/session") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            logs = server.logs();
        }
        logs
    };
    assert!(
        logs.contains("/link/[redacted]") && logs.contains("/_link/[redacted]/session"),
        "{logs}"
    );
    assert!(!logs.contains(&token), "token leaked into the log");

    let out = run_bin(
        &[
            "--database",
            &dbs,
            "--json",
            "links",
            "get",
            link["short_id"].as_str().unwrap_or(""),
        ],
        &[],
    );
    let got = stdout_json(&out);
    assert_eq!(got["status"], "active");
    assert!(got.get("token").is_none());
    let out = run_bin(
        &[
            "--database",
            &dbs,
            "--json",
            "links",
            "list",
            "--status",
            "active",
        ],
        &[],
    );
    assert_eq!(stdout_json(&out)["sessions"][0]["id"], link["id"]);
    let out = run_bin(&["--database", &dbs, "--json", "users", "list"], &[]);
    assert_eq!(stdout_json(&out)["users"][0]["id"], user["id"]);
    let out = run_bin(&["--database", &dbs, "--json", "keys", "list"], &[]);
    let listed = stdout_json(&out);
    assert!(!listed
        .to_string()
        .contains(k["key"].as_str().unwrap_or("?")));
    let out = run_bin(
        &[
            "--database",
            &dbs,
            "--json",
            "keys",
            "revoke",
            k["short_id"].as_str().unwrap_or(""),
        ],
        &[],
    );
    assert!(stdout_json(&out)["revoked_at"].is_string());
    let (status, _) = reqwest::request(
        "GET",
        &format!("{}/api/v1/users", server.base),
        k["key"].as_str().unwrap_or(""),
    );
    assert_eq!(
        status, 401,
        "revoked by the CLI, refused by the server at once"
    );
    let out = run_bin(&["--database", &dbs, "--json", "connections", "list"], &[]);
    assert_eq!(stdout_json(&out), json!({"connections": []}));

    let out = run_bin(
        &["--database", &dbs, "links", "create", "--user", "ZZZZZZZZ"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let out = run_bin(
        &[
            "--database",
            &dbs,
            "links",
            "create",
            "--user",
            &short,
            "--expires-in",
            "9999",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn backup_while_serving_then_restore() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("live.db");
    let dbs = db.to_str().unwrap_or("").to_owned();
    let server = BinServer::start(&db, &[], &[]);
    let key = server.bootstrap_key();
    let (user, link) = crate::helpers::admin_user_and_link(&db);

    let copy = dir.path().join("backup").join("copy.db");
    std::fs::create_dir_all(copy.parent().expect("parent")).expect("mkdir");
    let copys = copy.to_str().unwrap_or("").to_owned();
    let out = run_bin(&["--database", &dbs, "--json", "backup", &copys], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = stdout_json(&out);
    assert_eq!(report["key_file"], format!("{copys}.key"));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(format!("{copys}.key"))
        .expect("key copy")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = run_bin(&["--database", &dbs, "backup", &copys], &[]);
    assert_eq!(again.status.code(), Some(2), "never overwrites");
    drop(server);

    let check = rusqlite::Connection::open(&copy).expect("open copy");
    let ok: String = check
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(ok, "ok");
    drop(check);

    // Restore = `breadbox restore` with the server stopped: same key, same data.
    let out = run_bin(&["--database", &dbs, "restore", &copys], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = BinServer::start(&db, &[], &[]);
    let (status, body) = reqwest::request(
        "GET",
        &format!(
            "{}/api/v1/connections/link/{}",
            restored.base,
            link["id"].as_str().unwrap_or("")
        ),
        &key,
    );
    assert_eq!(status, 200, "{body}");
    let got: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(got["user_id"], user["id"]);
}
