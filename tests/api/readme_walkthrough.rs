//! The README's curl walk-through, pasted into bash as a household admin
//! would (only the server address and key lines are this test's own).

use std::process::Command;

use crate::helpers::{admin, BinServer};

/// The first ```sh block after `heading` in the README.
fn sh_block_after(heading: &str) -> String {
    let readme = include_str!("../../README.md");
    let from = readme.find(heading).expect("the README has the heading");
    let rest = &readme[from..];
    let start = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let len = rest[start..].find("```").expect("the block ends");
    rest[start..start + len].to_owned()
}

#[test]
fn readme_walkthrough_runs_as_pasted() {
    let jq = Command::new("jq").arg("--version").output();
    if jq.is_err() {
        assert!(std::env::var("CI").is_err(), "CI must install jq");
        eprintln!("skipping: jq is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("breadbox.db");
    let server = BinServer::start(&db, &[], &[]);
    let key = admin(
        &db,
        &[
            "keys",
            "create",
            "--name",
            "admin",
            "--scope",
            "full_access",
        ],
    )["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let script = sh_block_after("## Walk-through")
        .replace(
            "export BB=http://127.0.0.1:8080",
            &format!("export BB={}", server.base),
        )
        .replace("bb_paste_your_bootstrap_key_here", &key);
    assert!(script.contains(&server.base) && script.contains(&key));
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // What the comments promise, in order.
    for expected in [
        "\"providers\":[]",
        "\"status\": \"pending\"",
        "\"result_connection_ids\": []",
        "session.created",
        "\"error_code\": \"CANCELED\"",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected} in:\n{stdout}"
        );
    }
    let url_line = stdout
        .lines()
        .find(|l| l.contains("\"url\""))
        .expect("the url is shown");
    assert!(
        url_line.contains(&format!("{}/link/", server.base)),
        "{url_line}"
    );
    drop(server);
}
