//! Issue 8 "storage faults": a full disk makes `/health/ready` answer 503
//! with a reason until writes succeed again. (A file that is read-only at
//! start is refused before the server listens; see the start-up tests.)
//!
//! The database lives on a small tmpfs mounted for the test (needs root, as
//! CI has; elsewhere the test says why it cannot run, and fails under CI).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{admin, read, BinServer, Resp};

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("temp dir");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var("CI").is_err(),
                "CI must be able to mount a tmpfs (runs as root)"
            );
            eprintln!("skipping: cannot mount a tmpfs here (not root?)");
            return None;
        }
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fill the file system holding `dir` until it refuses another byte.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let block = vec![0u8; 16 * 1024];
    while f.write_all(&block).is_ok() {}
    while f.write_all(&block[..512]).is_ok() {}
    let _ = f.sync_all();
    path
}

async fn ready(http: &reqwest::Client, base: &str) -> Resp {
    read(
        http.get(format!("{base}/health/ready"))
            .send()
            .await
            .expect("send"),
    )
    .await
}

/// Poll readiness (the probe writes at most once a second) until `status`.
async fn wait_ready(http: &reqwest::Client, base: &str, status: u16) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = ready(http, base).await;
        if r.status == status || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[actix_web::test]
async fn readiness_reports_a_full_disk_until_writes_work_again() {
    let Some(disk) = SmallDisk::mount("3m") else {
        return;
    };
    let db = disk.path().join("breadbox.db");
    let server = BinServer::start(&db, &[], &[]);
    let key = admin(
        &db,
        &["keys", "create", "--name", "t", "--scope", "full_access"],
    )["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let http = reqwest::Client::new();
    let base = server.base.clone();
    let create_user = |name: String| {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        async move {
            read(
                http.post(format!("{base}/api/v1/users"))
                    .header("X-API-Key", key)
                    .json(&json!({ "name": name }))
                    .send()
                    .await
                    .expect("send"),
            )
            .await
        }
    };
    assert_eq!(ready(&http, &base).await.status, 200);

    // Disk full: writes fail, and readiness says so.
    let filler = fill(disk.path());
    let mut failed = None;
    for i in 0..5000 {
        let r = create_user(format!("member {i} {}", "x".repeat(150))).await;
        if r.status != 201 {
            failed = Some(r);
            break;
        }
    }
    let failed = failed.expect("a write failed on the full disk");
    assert_eq!((failed.status, failed.code()), (500, "INTERNAL_ERROR"));
    let r = wait_ready(&http, &base, 503).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.json["status"], "degraded");
    let reason = r.json["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("full") || reason.contains("I/O"),
        "reason: {reason}"
    );

    // Space again: the next probe succeeds and writes work.
    std::fs::remove_file(&filler).expect("remove filler");
    let r = wait_ready(&http, &base, 200).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(create_user("after".into()).await.status, 201);

    drop(server);
}
