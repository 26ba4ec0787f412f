//! MCP (CONTRACT §9), driven by the official Python SDK (`pip install mcp`):
//! one client script per test under `tests/mcp/`, run with `python3` while
//! the server runs in this process. Without the SDK the tests are skipped
//! locally and fail under CI (`CI=true`).

use std::path::{Path, PathBuf};

use breadbox::domain::api_key::Scope;
use serde_json::{json, Value};

use crate::helpers::{bin, make_key, run_bin, spawn_app, spawn_app_with, with_plaid, TestApp};

/// Whether `python3` can import the MCP SDK; panics under CI when it cannot.
fn python_mcp() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import mcp, jsonschema"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but `python3 -c 'import mcp'` fails: run `pip install mcp`"
        );
        eprintln!("skipping: the Python MCP SDK is not installed (pip install mcp)");
    }
    ok
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp")
}

/// Run `tests/mcp/<script>` against `app` with extra env; assert it passed
/// and return the JSON lines it printed.
async fn run_script(app: &TestApp, script: &str, env: &[(&str, &str)]) -> Vec<Value> {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(scripts().join(script))
        .current_dir(scripts())
        .env("BREADBOX_BASE", &app.base)
        .env("BREADBOX_KEY", &app.key)
        .env("BREADBOX_READ_KEY", &app.read_key)
        .env_remove("BREADBOX_API_KEY")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
        .await
        .expect("script finished in time")
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The `session.created` event of a session, read over REST.
async fn created_event(app: &TestApp, session_id: &str) -> Value {
    let r = app
        .get(&format!("/api/v1/connections/link/{session_id}/events"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["type"] == "session.created"))
        .cloned()
        .expect("session.created event")
}

/// A stored, active Plaid connection for a new member; returns (member, connection) ids.
fn insert_connection(app: &TestApp) -> (String, String) {
    app.db
        .write(|tx| {
            let now = breadbox::domain::time::now();
            let user = breadbox::db::users::insert(tx, "Bo Owner", None, now)?;
            let new = breadbox::db::connections::NewConnection {
                id: breadbox::domain::ids::new_uuid(),
                user_id: user.id.clone(),
                provider: "plaid",
                institution_id: "ins_1".into(),
                institution_name: "First Test Bank".into(),
                credential: breadbox::db::connections::Credential {
                    sealed: vec![0; 40],
                    external_id: "item-mcp-test".into(),
                },
                accounts: vec![breadbox::domain::connection::Account {
                    id: "acc-1".into(),
                    name: "Checking".into(),
                    mask: Some("1234".into()),
                    kind: "depository".into(),
                    subtype: Some("checking".into()),
                }],
            };
            let c = breadbox::db::connections::insert(tx, &new, now)?;
            Ok((user.id, c.id))
        })
        .expect("insert connection")
}

#[actix_web::test]
async fn tools_list_names_schemas_annotations_and_read_only_scope() {
    if !python_mcp() {
        return;
    }
    let app = spawn_app().await;
    run_script(&app, "tools_list.py", &[]).await;
}

#[actix_web::test]
async fn every_tool_happy_path_and_error_mapping_with_the_key_in_the_audit_timeline() {
    if !python_mcp() {
        return;
    }
    let app = spawn_app_with(with_plaid).await;
    let (owner, conn) = insert_connection(&app);
    let out = run_script(
        &app,
        "happy_paths.py",
        &[
            ("BREADBOX_CONNECTION_ID", &conn),
            ("BREADBOX_OWNER_ID", &owner),
        ],
    )
    .await;
    let ids = out.last().expect("ids printed");
    for key in ["link_id", "relink_id"] {
        let event = created_event(&app, ids[key].as_str().expect("id")).await;
        assert_eq!(event["detail"]["api_key_name"], "test-full", "{event}");
        assert!(event["detail"]["api_key_id"].is_string(), "{event}");
    }
}

#[actix_web::test]
async fn wait_for_bank_link_is_woken_by_the_page_and_times_out() {
    if !python_mcp() {
        return;
    }
    let app = spawn_app().await;
    run_script(&app, "wait.py", &[]).await;
}

#[actix_web::test]
async fn link_bank_account_url_elicitation_end_to_end_and_fallback() {
    if !python_mcp() {
        return;
    }
    let app = spawn_app().await;
    let out = run_script(&app, "elicitation.py", &[]).await;
    let id = out[0]["session_id"].as_str().expect("session id");
    let r = app.get(&format!("/api/v1/connections/link/{id}")).await;
    assert_eq!(r.json["status"], "completed", "{}", r.text);
}

#[actix_web::test]
async fn stdio_server_acts_as_the_key_in_breadbox_api_key() {
    if !python_mcp() {
        return;
    }
    let app = spawn_app().await;
    let stdio_key = make_key(&app.db, "assistant", Scope::FullAccess);
    let bin = bin();
    let db = app.db_path.to_string_lossy().into_owned();
    let out = run_script(
        &app,
        "stdio.py",
        &[
            ("BREADBOX_BIN", &bin.to_string_lossy()),
            ("BREADBOX_DB", &db),
            ("BREADBOX_STDIO_KEY", &stdio_key),
            ("BREADBOX_STDIO_READ_KEY", &app.read_key),
        ],
    )
    .await;
    let id = out[0]["session_id"].as_str().expect("session id");
    let event = created_event(&app, id).await;
    assert_eq!(event["detail"]["api_key_name"], "assistant", "{event}");
}

#[actix_web::test]
async fn mcp_without_a_valid_key_is_401_with_the_envelope() {
    let app = spawn_app().await;
    let init = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": { "name": "t", "version": "0" }
        }
    });
    let post = |key: Option<(&'static str, String)>| {
        let mut b = app
            .request(reqwest::Method::POST, "/mcp")
            .header("Accept", "application/json, text/event-stream")
            .json(&init);
        if let Some((h, v)) = key {
            b = b.header(h, v);
        }
        b
    };
    let r = crate::helpers::read(post(None).send().await.expect("send")).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.code(), "MISSING_CREDENTIALS");
    let bad = "bb_".to_owned() + &"x".repeat(32);
    let r = crate::helpers::read(post(Some(("X-API-Key", bad))).send().await.expect("send")).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.code(), "INVALID_API_KEY");
    let res = post(Some(("Authorization", format!("Bearer {}", app.key))))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
}

#[actix_web::test]
async fn mcp_can_be_turned_off() {
    let app = spawn_app_with(|c| c.mcp.enabled = false).await;
    let r = crate::helpers::read(
        app.request(reqwest::Method::POST, "/mcp")
            .header("X-API-Key", &app.key)
            .json(&json!({}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text);
}

#[test]
fn mcp_command_refuses_a_missing_database_naming_it() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("nope.db");
    let out = run_bin(
        &["--database", &db.to_string_lossy(), "mcp"],
        &[("BREADBOX_API_KEY", "bb_x")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&*db.to_string_lossy()), "{err}");
    assert!(!db.exists());
}

/// The operations layer stays below every front-end: no file under
/// `src/app/` may use actix or rmcp.
#[test]
fn operations_layer_imports_neither_actix_nor_rmcp() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src/app") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/app"),
        &mut files,
    );
    assert!(files.len() >= 5, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for banned in ["actix", "rmcp"] {
                assert!(
                    !code.contains(banned),
                    "{}:{}: the operations layer must not use {banned}: {line}",
                    f.display(),
                    n + 1
                );
            }
        }
    }
}
