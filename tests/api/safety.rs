//! A household's data is safe, through the real binary: private file modes,
//! start checks that run before anything is created, a clean stop, admin
//! commands that find the right database, and link URLs that say where they
//! open. Backup and restore are in `restore.rs`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::crash::http;
use crate::helpers::{admin, bin, run_bin, run_bin_in, BinServer};

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

pub(crate) fn suffixed(p: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", p.display()))
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `breadbox serve` in the foreground with a permissive umask (022), run to
/// its exit (for starts that must fail).
pub(crate) fn serve_fails(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    let mut cmd = Command::new("sh");
    cmd.current_dir(cwd)
        .arg("-c")
        .arg("umask 022; exec \"$0\" \"$@\"")
        .arg(bin())
        .args(args)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // A start that wrongly succeeds would run forever: give it a bounded time.
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "serve should have exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// A server on `db` started with umask 022 (the usual default).
fn start_umask_022(db: &Path) -> BinServer {
    // The test binary's umask is the shell's (022 here); every file below is
    // created by the server, which must make them private itself.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    BinServer::start(db, &[], &[])
}

pub(crate) fn create_user(base: &str, key: &str, name: &str) -> Value {
    let r = http(
        base,
        "POST",
        "/api/v1/users",
        Some(key),
        Some(&json!({ "name": name }).to_string()),
    )
    .expect("create user");
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).expect("json")
}

#[test]
fn every_file_and_directory_created_is_private_whatever_the_umask() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let db = data.join("b.db");
    let mut server = start_umask_022(&db);
    let key = server.bootstrap_key();
    create_user(&server.base, &key, "Ana");
    let (_user, _link) = crate::helpers::admin_user_and_link(&db);

    assert_eq!(mode(&data), 0o700, "created directory");
    for f in ["b.db", "b.db-wal", "b.db-shm", "b.db.key", "b.db.lock"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    let key_file = data.join("bootstrap-key.txt");
    assert_eq!(mode(&key_file), 0o600, "bootstrap-key.txt");
    let logs = server.logs();
    assert!(
        logs.contains(s(&key_file)),
        "the log names the file: {logs}"
    );
    assert!(
        logs.contains(&format!("database {}", db.display())),
        "the log names the database: {logs}"
    );
    assert!(logs.contains("no provider is configured"), "{logs}");
    assert!(!logs.contains(&key), "never the key");
    assert!(
        !server.stdout_lines.iter().any(|l| l.contains(&key)),
        "stdout is not a terminal: the key stays off it"
    );

    let backups = dir.path().join("backups").join("nightly");
    let copy = backups.join("copy.db");
    let out = run_bin(&["--database", s(&db), "backup", s(&copy)], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&copy), 0o600, "backup");
    assert_eq!(mode(&suffixed(&copy, ".key")), 0o600, "backup key file");
    assert_eq!(mode(&backups), 0o700, "backup directory");
    assert!(server.terminate().success());
}

#[test]
fn a_bad_teller_certificate_on_an_empty_directory_creates_nothing_and_exits_2() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("b.db");
    let env = [
        ("BREADBOX_TELLER_APPLICATION_ID", "app_test"),
        ("BREADBOX_TELLER_ENVIRONMENT", "development"),
        (
            "BREADBOX_TELLER_CERTIFICATE_PATH",
            "/nonexistent/certificate.pem",
        ),
        (
            "BREADBOX_TELLER_PRIVATE_KEY_PATH",
            "/nonexistent/private_key.pem",
        ),
    ];
    let out = serve_fails(&["--database", s(&db)], &env, dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent/certificate.pem"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "", "nothing printed: no key, no address");
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn relative_paths_in_the_config_file_follow_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).expect("mkdir");
    let elsewhere = tempfile::tempdir().expect("cwd");
    let cfg = etc.join("breadbox.toml");
    std::fs::write(
        &cfg,
        "[database]\npath = \"b.db\"\n[teller]\napplication_id = \"app_x\"\n\
         environment = \"development\"\ncertificate_path = \"certs/c.pem\"\n\
         private_key_path = \"certs/k.pem\"\n",
    )
    .expect("write");
    // The certificate path is looked for beside the config file.
    let out = serve_fails(&["--config", s(&cfg)], &[], elsewhere.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(s(&etc.join("certs").join("c.pem"))),
        "{}",
        stderr(&out)
    );
    assert!(entries(elsewhere.path()).is_empty());

    // The database too: an admin command run from anywhere finds it.
    std::fs::write(&cfg, "[database]\npath = \"b.db\"\n").expect("write");
    let mut server = BinServer::start(&etc.join("b.db"), &[], &[]);
    let out = run_bin_in(
        elsewhere.path(),
        &[
            "--config",
            s(&cfg),
            "keys",
            "create",
            "--name",
            "a",
            "--scope",
            "full_access",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let key = stdout(&out).trim().to_owned();
    let r = http(&server.base, "GET", "/api/v1/users", Some(&key), None).expect("get");
    assert_eq!(r.status, 200, "the server knows the key");
    assert!(
        entries(elsewhere.path()).is_empty(),
        "nothing created in cwd"
    );
    assert!(server.terminate().success());
}

#[test]
fn an_admin_command_in_the_wrong_directory_exits_2_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let args = [
        "keys",
        "create",
        "--name",
        "assistant",
        "--scope",
        "full_access",
    ];
    let out = run_bin_in(dir.path(), &args, &[]);
    assert_eq!(out.status.code(), Some(2));
    let expected = std::fs::canonicalize(dir.path())
        .expect("canonical")
        .join("breadbox.db");
    assert!(
        stderr(&out).contains(s(&expected))
            || stderr(&out).contains(s(&dir.path().join("breadbox.db"))),
        "names the full path: {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "", "no key printed");
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
    for cmd in [
        vec!["users", "list"],
        vec!["links", "list"],
        vec!["connections", "list"],
        vec!["backup", "x.db"],
    ] {
        let out = run_bin_in(dir.path(), &cmd, &[]);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}");
    }
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn links_create_urls_never_use_a_wildcard_host_and_warn_when_loopback() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("b.db");
    let mut server = BinServer::start(&db, &[], &[]);
    let user = admin(&db, &["users", "create", "--name", "Ana"]);
    let uid = user["short_id"].as_str().expect("id").to_owned();
    let create = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["--database", s(&db), "links", "create", "--user", &uid];
        args.extend_from_slice(extra);
        run_bin(&args, env)
    };
    let first_line = |out: &Output| stdout(out).lines().next().unwrap_or("").to_owned();

    let out = create(&[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(first_line(&out).starts_with("http://127.0.0.1:8080/link/"));
    assert!(
        stderr(&out).contains("only on this machine"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("server.public_url"));

    let out = create(&[("BREADBOX_SERVER_LISTEN", "0.0.0.0:8094")], &[]);
    assert!(
        first_line(&out).starts_with("http://127.0.0.1:8094/link/"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("0.0.0.0"));
    assert!(stderr(&out).contains("server.public_url"));

    let out = create(&[("BREADBOX_SERVER_LISTEN", "[::]:8094")], &[]);
    assert!(first_line(&out).starts_with("http://[::1]:8094/link/"));
    assert!(stderr(&out).contains("only on this machine"));

    let out = create(&[("BREADBOX_SERVER_LISTEN", "192.168.1.20:8094")], &[]);
    assert!(first_line(&out).starts_with("http://192.168.1.20:8094/link/"));
    assert!(!stderr(&out).contains("only on this machine"));

    let public = [("BREADBOX_SERVER_PUBLIC_URL", "https://bank.example.com/")];
    let out = create(&public, &[]);
    assert!(first_line(&out).starts_with("https://bank.example.com/link/"));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));

    // --qr: the warning comes again right before the code.
    let out = create(&[], &["--qr"]);
    assert!(out.status.success());
    assert_eq!(stderr(&out).matches("only on this machine").count(), 2);
    assert!(server.terminate().success());
}

#[test]
fn a_read_only_database_or_directory_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let db = data.join("b.db");
    let mut server = BinServer::start(&db, &[], &[]);
    assert!(server.terminate().success());

    let set = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    set(&db, 0o444);
    let out = serve_fails(&["--database", s(&db)], &[], dir.path());
    set(&db, 0o600);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));
    assert!(stderr(&out).contains(s(&db)), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");

    set(&data, 0o555);
    let out = serve_fails(&["--database", s(&db)], &[], dir.path());
    set(&data, 0o700);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));
    assert!(stderr(&out).contains(s(&data)), "{}", stderr(&out));
}

#[test]
fn a_corrupt_or_newer_database_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("b.db");
    let mut server = BinServer::start(&db, &[], &[]);
    let key = server.bootstrap_key();
    for i in 0..200 {
        create_user(
            &server.base,
            &key,
            &format!("member {i} {}", "x".repeat(150)),
        );
    }
    assert!(server.terminate().success());

    // Newer schema: named with both versions.
    let version: i64 = rusqlite::Connection::open(&db)
        .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
        .expect("version");
    {
        let c = rusqlite::Connection::open(&db).expect("open");
        c.pragma_update(None, "user_version", 99)
            .expect("set version");
    }
    let out = serve_fails(&["--database", s(&db)], &[], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("99"), "{}", stderr(&out));
    assert!(stderr(&out).contains("newer"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("schema version {version} at most")),
        "names this build's version too: {}",
        stderr(&out)
    );
    {
        let c = rusqlite::Connection::open(&db).expect("open");
        c.pragma_update(None, "user_version", version)
            .expect("set version");
    }

    // Damage every page after the first two: the start stops and points at restore.
    let mut bytes = std::fs::read(&db).expect("read");
    let page = 4096;
    assert!(bytes.len() > 4 * page, "{} bytes", bytes.len());
    for (i, b) in bytes.iter_mut().enumerate().skip(2 * page) {
        *b = (i % 251) as u8;
    }
    std::fs::write(&db, &bytes).expect("write");
    let out = serve_fails(&["--database", s(&db)], &[], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("breadbox restore"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "", "no address printed");
}

#[test]
fn sigterm_checkpoints_so_the_database_file_alone_holds_everything() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("b.db");
    let env = [
        ("BREADBOX_LIMITS_API_PER_MINUTE", "0"),
        ("BREADBOX_LOG_LEVEL", "warn"),
    ];
    let mut server = BinServer::start(&db, &[], &env);
    let key = server.bootstrap_key();
    let user = create_user(&server.base, &key, "Ana");
    let uid = user["id"].as_str().expect("id").to_owned();

    // 1,000 sessions, from 8 clients at once, as fast as the server takes them.
    let total = 1000;
    let clients = 8;
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (base, key, uid) = (server.base.clone(), key.clone(), uid.clone());
            std::thread::spawn(move || {
                for _ in 0..total / clients {
                    let body = json!({ "user_id": uid, "label": format!("client {c}") });
                    let r = http(
                        &base,
                        "POST",
                        "/api/v1/connections/link",
                        Some(&key),
                        Some(&body.to_string()),
                    )
                    .expect("create");
                    assert_eq!(r.status, 201);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client");
    }
    let writing = started.elapsed();
    let wal = suffixed(&db, "-wal");
    let wal_before = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let stop = Instant::now();
    let status = server.terminate();
    let to_exit = stop.elapsed();
    eprintln!(
        "{total} sessions written in {writing:?}; WAL {wal_before} bytes; SIGTERM to exit {to_exit:?}"
    );
    assert!(status.success(), "{status:?}");
    assert!(to_exit < Duration::from_secs(5), "{to_exit:?}");
    let wal_after = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_after, 0, "the WAL was folded into the database file");

    // The database file alone (no -wal, no -shm) is the whole state.
    let alone = tempfile::tempdir().expect("dir");
    let copy = alone.path().join("copy.db");
    std::fs::copy(&db, &copy).expect("copy");
    let c = rusqlite::Connection::open(&copy).expect("open");
    let n: i64 = c
        .query_row("SELECT COUNT(*) FROM link_sessions", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, total as i64);
}

#[test]
fn on_a_terminal_the_bootstrap_key_is_printed_and_no_file_is_written() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("b.db");
    let pid_file = dir.path().join("pid");
    // util-linux `script` gives the server a pseudo-terminal as stdout.
    let inner = format!(
        "echo $$ > '{}'; exec '{}' --database '{}' serve --listen 127.0.0.1:0",
        pid_file.display(),
        bin().display(),
        db.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &format!("sh -c \"{inner}\""), "/dev/null"])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script");
    let out = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    for line in BufReader::new(out).lines() {
        let line = line.expect("line");
        let done = line.contains("breadbox listening on");
        lines.push(line);
        if done {
            break;
        }
    }
    let pid = std::fs::read_to_string(&pid_file).expect("pid");
    let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
    let _ = child.wait();
    assert!(
        lines.iter().any(|l| l.trim().starts_with("bb_")),
        "{lines:?}"
    );
    assert!(!dir.path().join("bootstrap-key.txt").exists());
}
