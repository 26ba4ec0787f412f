//! Backup and restore through the real binary: `breadbox restore` refuses
//! while a server runs, checks the copy, keeps what it replaced, and the
//! README's steps work when pasted.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::crash::http;
use crate::helpers::{bin, bootstrap_key_in, run_bin, BinServer};
use crate::safety::{create_user, mode, s, serve_fails, stderr, stdout, suffixed};

#[test]
fn restore_is_refused_while_a_server_runs_and_works_once_it_stopped() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("live.db");
    let mut server = BinServer::start(&db, &[], &[]);
    let key = server.bootstrap_key();
    let before = create_user(&server.base, &key, "Before");
    let copy = dir.path().join("copy.db");
    let out = run_bin(&["--database", s(&db), "backup", s(&copy)], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = create_user(&server.base, &key, "After");

    let out = run_bin(&["--database", s(&db), "restore", s(&copy)], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("running"), "{}", stderr(&out));
    // A second server is refused too: one server per database.
    let second = serve_fails(&["--database", s(&db)], &[], dir.path());
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    let r = http(&server.base, "GET", "/api/v1/users", Some(&key), None).expect("get");
    assert!(
        String::from_utf8_lossy(&r.body).contains("After"),
        "untouched"
    );

    // Killed, not stopped: the newest rows are only in the -wal.
    server.kill9();
    let out = run_bin(&["--database", s(&db), "--json", "restore", s(&copy)], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    let replaced = PathBuf::from(report["replaced"].as_str().expect("replaced path"));
    assert!(!suffixed(&db, "-wal").exists() && !suffixed(&db, "-shm").exists());
    assert_eq!(mode(&db), 0o600);

    let mut server = BinServer::start(&db, &[], &[]);
    let r = http(&server.base, "GET", "/api/v1/users", Some(&key), None).expect("get");
    let users: Value = serde_json::from_slice(&r.body).expect("json");
    let names: Vec<&str> = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, ["Before"], "{users}");
    assert!(server.terminate().success());

    // The replaced database is kept, with everything it had.
    let c = rusqlite::Connection::open(&replaced).expect("open replaced");
    let n: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM users WHERE id IN (?1, ?2)",
            [
                before["id"].as_str().unwrap_or(""),
                after["id"].as_str().unwrap_or(""),
            ],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(n, 2);

    // A copy from a newer breadbox is refused naming both versions.
    let newer = dir.path().join("newer.db");
    std::fs::copy(&copy, &newer).expect("copy");
    rusqlite::Connection::open(&newer)
        .and_then(|c| c.pragma_update(None, "user_version", 99))
        .expect("set version");
    std::fs::copy(suffixed(&copy, ".key"), suffixed(&newer, ".key")).expect("key");
    let out = run_bin(&["--database", s(&db), "restore", s(&newer)], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("99") && stderr(&out).contains("newer"),
        "{}",
        stderr(&out)
    );

    // A damaged copy or one without its key is refused, and nothing changes.
    let bad = dir.path().join("bad.db");
    std::fs::write(&bad, b"not a database at all, just some bytes").expect("write");
    let out = run_bin(&["--database", s(&db), "restore", s(&bad)], &[]);
    assert_ne!(out.status.code(), Some(0));
    let keyless = dir.path().join("keyless").join("copy.db");
    std::fs::create_dir(keyless.parent().expect("dir")).expect("mkdir");
    std::fs::copy(&copy, &keyless).expect("copy");
    std::fs::write(suffixed(&keyless, ".key"), "11".repeat(32)).expect("wrong key");
    std::fs::write(suffixed(&db, ".key"), "22".repeat(32)).expect("wrong key");
    let out = run_bin(&["--database", s(&db), "restore", s(&keyless)], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("key"), "{}", stderr(&out));
}

/// The fenced ```sh block that follows `marker` in the README.
fn readme_block(marker: &str) -> String {
    let readme = include_str!("../../README.md");
    let at = readme
        .find(marker)
        .unwrap_or_else(|| panic!("README has {marker}"));
    let rest = &readme[at..];
    let start = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let len = rest[start..].find("```").expect("block end");
    rest[start..start + len].to_owned()
}

#[test]
fn the_readme_backup_and_restore_steps_work_when_pasted() {
    // The steps as an admin pastes them, with the system paths mapped into a
    // temporary directory, and stand-ins for sudo (runs the command) and
    // systemctl (stops the test's server; records the start).
    let root = tempfile::tempdir().expect("root");
    let map = |text: &str| {
        [
            "/etc/breadbox",
            "/var/lib/breadbox",
            "/var/backups/breadbox",
        ]
        .iter()
        .fold(text.to_owned(), |t, p| {
            t.replace(p, &format!("{}{p}", root.path().display()))
        })
    };
    for d in [
        "etc/breadbox",
        "var/lib/breadbox",
        "var/backups/breadbox",
        "bin",
        "state",
    ] {
        std::fs::create_dir_all(root.path().join(d)).expect("mkdir");
    }
    let cfg = root.path().join("etc/breadbox/breadbox.toml");
    std::fs::write(
        &cfg,
        map(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[database]\npath = \"{}\"\n",
            "/var/lib/breadbox/breadbox.db"
        )),
    )
    .expect("config");
    let db = root.path().join("var/lib/breadbox/breadbox.db");
    let bin_dir = root.path().join("bin");
    let state = root.path().join("state");
    std::os::unix::fs::symlink(bin(), bin_dir.join("breadbox")).expect("link");
    let shim = |name: &str, body: &str| {
        let p = bin_dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("shim");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    shim("sudo", "if [ \"$1\" = -u ]; then shift 2; fi\nexec \"$@\"");
    shim(
        "systemctl",
        &format!(
            "S={}\ncase \"$1\" in\n\
             stop) kill -TERM $(cat $S/pid); flock {} true; echo stopped >> $S/log ;;\n\
             start) echo started >> $S/log ;;\n\
             *) exit 1 ;;\nesac",
            state.display(),
            // The server holds its lock until it has checkpointed and exits.
            suffixed(&db, ".lock").display()
        ),
    );
    let run_steps = |marker: &str| {
        let script = map(&readme_block(marker));
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("sh")
            .args(["-ec", &script])
            .env("PATH", path)
            .env_remove("RUST_LOG")
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{script}\n{}\n{}",
            stdout(&out),
            stderr(&out)
        );
    };

    let server = BinServer::start(&db, &[], &[]);
    let key = server.bootstrap_key();
    std::fs::write(state.join("pid"), server.pid().to_string()).expect("pid");
    create_user(&server.base, &key, "Kept");
    run_steps("<!-- backup-steps -->");
    create_user(&server.base, &key, "Lost");
    run_steps("<!-- restore-steps -->");
    let log = std::fs::read_to_string(state.join("log")).unwrap_or_default();
    assert_eq!(log, "stopped\nstarted\n", "stop, restore, start");
    drop(server);

    let mut server = BinServer::start(&db, &[], &[]);
    let r = http(&server.base, "GET", "/api/v1/users", Some(&key), None).expect("get");
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert!(text.contains("Kept") && !text.contains("Lost"), "{text}");
    assert!(server.terminate().success());
    assert_eq!(
        bootstrap_key_in(&root.path().join("var/lib/breadbox")),
        Some(key)
    );
}

/// `sudo breadbox restore` run as root hands the restored database and key
/// file to the owner of the database it replaces, so the service user can
/// still open them; and a backup whose key file name is taken writes nothing.
#[test]
fn restore_keeps_the_owner_and_backup_checks_both_destinations() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let db = data.join("bb.db");
    let mut server = BinServer::start(&db, &[], &[]);
    server.terminate();
    let copy = dir.path().join("copy.db");
    let out = run_bin(&["--database", s(&db), "backup", s(&copy)], &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The same backup again: the copy exists → refused, nothing new written.
    let other = dir.path().join("other.db");
    std::fs::write(dir.path().join("other.db.key"), "old").expect("stale key");
    let out = run_bin(&["--database", s(&db), "backup", s(&other)], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("other.db.key"), "{}", stderr(&out));
    assert!(
        !other.exists(),
        "nothing written when the key file name is taken"
    );

    // Hand the data to another user (root only, as in CI), restore as root.
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if !is_root {
        assert!(std::env::var("CI").is_err(), "CI runs as root");
        eprintln!("skipping the ownership half: not root");
        return;
    }
    let nobody = 65534;
    for entry in std::fs::read_dir(&data).expect("ls").flatten() {
        std::os::unix::fs::chown(entry.path(), Some(nobody), Some(nobody)).expect("chown");
    }
    std::os::unix::fs::chown(&data, Some(nobody), Some(nobody)).expect("chown dir");
    let out = run_bin(&["--database", s(&db), "restore", s(&copy)], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    for path in [db.clone(), data.join("bb.db.key")] {
        let m = std::fs::metadata(&path).expect("restored file");
        assert_eq!((m.uid(), m.gid()), (nobody, nobody), "{}", path.display());
    }
}
