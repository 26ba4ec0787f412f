//! `breadbox backup FILE` and `breadbox restore FILE`.
//!
//! Backup: `VACUUM INTO` a new file (0600) and copy the key file beside it.
//! Restore puts a backup in place of the database:
//! Refuses while a server holds the database lock; checks a private copy of
//! the backup (`integrity_check`, schema version, that its key opens it);
//! swaps it in with one rename; moves the old `-wal` along with the replaced
//! database (kept as `<db>.replaced-<timestamp>`) and removes the `-shm`.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::config::Config;
use crate::crypto;
use crate::db::check::{self, FileProblem};
use crate::db::Db;
use crate::files::{self, DatabaseLock, FILE_MODE};

use super::admin::print_json;
use super::Failure;

fn fail(code: i32, message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code,
    }
}

fn io_fail(what: &str, path: &Path, e: &std::io::Error) -> Failure {
    fail(1, format!("{what} {}: {e}", path.display()))
}

/// A key that may open the backup, and where it came from.
struct Candidate {
    key: [u8; 32],
    /// The key file it was read from (None: the configuration).
    file: Option<PathBuf>,
}

/// Run `breadbox restore FILE`.
pub fn restore(config: &Config, file: &Path, json: bool) -> Result<(), Failure> {
    let target = files::absolute(&config.database.path);
    let source = files::absolute(file);
    match fs::metadata(&source) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(fail(2, format!("{} is not a file", source.display()))),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(fail(2, format!("backup {} not found", source.display())))
        }
        Err(e) => return Err(io_fail("cannot read", &source, &e)),
    }
    if source == target {
        return Err(fail(
            2,
            format!("{} is the database itself; name a backup", source.display()),
        ));
    }
    let source_wal = files::with_suffix(&source, "-wal");
    if fs::metadata(&source_wal).is_ok_and(|m| m.len() > 0) {
        return Err(fail(
            2,
            format!(
                "{} has changes waiting in {} (it is a live database, not a backup); \
                 make backups with `breadbox backup FILE`",
                source.display(),
                source_wal.display()
            ),
        ));
    }
    let dir = files::parent_dir(&target).to_owned();
    files::create_private_dir(&dir).map_err(|e| io_fail("cannot create", &dir, &e))?;
    let _lock = DatabaseLock::try_acquire(&target).map_err(|e| match e {
        files::LockError::Busy(lock) => fail(
            1,
            format!(
                "a breadbox server is running on {} (it holds {}); stop it first \
                 (e.g. `sudo systemctl stop breadbox`), then run restore again",
                target.display(),
                lock.display()
            ),
        ),
        other => fail(1, other.to_string()),
    })?;

    let candidates = key_candidates(config, &source, &target)?;
    let tmp = dir.join(format!(
        ".{}.restore-{}.tmp",
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let checked = copy_and_check(&source, &tmp, &candidates);
    let key = match checked {
        Ok(key) => key,
        Err(f) => {
            remove_with_sidecars(&tmp);
            return Err(f);
        }
    };
    let swapped = swap_in(&tmp, &target, key, config.security.encryption_key.is_none());
    if swapped.is_err() {
        remove_with_sidecars(&tmp);
    }
    let replaced = swapped?;
    if json {
        print_json(&json!({
            "restored": source,
            "database": target,
            "replaced": replaced,
        }));
    } else {
        println!("restored {} into {}", source.display(), target.display());
        if let Some(r) = &replaced {
            println!(
                "the database it replaced is kept as {} (delete it once the restored one \
                 looks right)",
                r.display()
            );
        }
        println!("start the server again (e.g. `sudo systemctl start breadbox`)");
    }
    Ok(())
}

/// Keys that may open the backup: the configured key, else the key file
/// beside the backup, then the current database's key file.
fn key_candidates(
    config: &Config,
    source: &Path,
    target: &Path,
) -> Result<Vec<Candidate>, Failure> {
    if let Some(key) = config.security.key_bytes() {
        return Ok(vec![Candidate { key, file: None }]);
    }
    let mut out = Vec::new();
    for db in [source, target] {
        let path = crypto::key_file_path(db).map_err(|m| fail(2, m))?;
        if let Some(key) = crypto::read_key_at(&path).map_err(|m| fail(2, m))? {
            out.push(Candidate {
                key,
                file: Some(path),
            });
        }
    }
    Ok(out)
}

/// Copy `source` to `tmp` (0600) and check the copy; returns the key file to
/// install with it (None: keep the current key).
fn copy_and_check(
    source: &Path,
    tmp: &Path,
    candidates: &[Candidate],
) -> Result<Option<PathBuf>, Failure> {
    {
        let mut from = File::open(source).map_err(|e| io_fail("cannot read", source, &e))?;
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(tmp)
            .map_err(|e| io_fail("cannot create", tmp, &e))?;
        std::io::copy(&mut from, &mut to).map_err(|e| io_fail("cannot copy to", tmp, &e))?;
        to.sync_all().map_err(|e| io_fail("cannot sync", tmp, &e))?;
    }
    let damaged = |e: FileProblem| match e {
        FileProblem::Corrupt(d) => fail(
            1,
            format!(
                "the backup {} is damaged ({d}); choose another backup",
                source.display()
            ),
        ),
        FileProblem::TooNew(m) => fail(1, format!("the backup {}: {m}", source.display())),
        FileProblem::Unreadable(m) => fail(
            1,
            format!("cannot read the backup {}: {m}", source.display()),
        ),
    };
    let conn = check::open_existing(tmp).map_err(damaged)?;
    check::check(&conn, true).map_err(damaged)?;
    if check::schema_version(&conn).map_err(damaged)? == 0 {
        return Err(fail(
            2,
            format!("{} is not a breadbox database", source.display()),
        ));
    }
    let stored = crate::app::bank::stored_key_check(&conn).map_err(|m| fail(1, m))?;
    let key_file = match stored {
        None => None,
        Some(sealed) => {
            let Some(c) = candidates
                .iter()
                .find(|c| crate::app::bank::key_opens(&c.key, &sealed))
            else {
                let tried = if candidates.is_empty() {
                    format!(
                        "no key file {} beside it",
                        crypto::key_file_path(source)
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    )
                } else {
                    "neither the configured key nor the key files beside it and beside the \
                     database open it"
                        .to_owned()
                };
                return Err(fail(
                    2,
                    format!(
                        "the backup {} cannot be opened with any key at hand ({tried}); \
                         put the key file that `breadbox backup` wrote beside it",
                        source.display()
                    ),
                ));
            };
            c.file.clone()
        }
    };
    check::leave_wal(&conn).map_err(damaged)?;
    drop(conn);
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_fail("cannot sync", tmp, &e))?;
    Ok(key_file)
}

/// The current UTC time as `20261130T112941Z`.
fn replaced_stamp() -> String {
    crate::domain::time::rfc3339(crate::domain::time::now())
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect()
}

/// `<target>.replaced-<UTC timestamp>` that does not exist yet.
fn replaced_name(target: &Path) -> PathBuf {
    let base = files::with_suffix(target, &format!(".replaced-{}", replaced_stamp()));
    let mut candidate = base.clone();
    let mut n = 2;
    while candidate.exists() {
        candidate = files::with_suffix(&base, &format!("-{n}"));
        n += 1;
    }
    candidate
}

/// Swap the checked copy in; returns where the replaced database went.
fn swap_in(
    tmp: &Path,
    target: &Path,
    key_file: Option<PathBuf>,
    uses_key_file: bool,
) -> Result<Option<PathBuf>, Failure> {
    let dir = files::parent_dir(target).to_owned();
    // The restored files belong to whoever owns the database they replace
    // (or its directory): `sudo breadbox restore` run as root must not leave
    // files the service user cannot open.
    let owner = fs::metadata(target)
        .or_else(|_| fs::metadata(&dir))
        .map(|m| {
            (
                std::os::unix::fs::MetadataExt::uid(&m),
                std::os::unix::fs::MetadataExt::gid(&m),
            )
        })
        .map_err(|e| io_fail("cannot read the owner of", &dir, &e))?;
    let give = |path: &Path| {
        std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1))
            .map_err(|e| io_fail("cannot hand over to the database's owner", path, &e))
    };
    give(tmp)?;
    let wal = files::with_suffix(target, "-wal");
    let shm = files::with_suffix(target, "-shm");
    let target_key = crypto::key_file_path(target).map_err(|m| fail(1, m))?;
    let mut replaced = None;
    if target.exists() {
        // Fold the old WAL in first (best effort: a damaged file may refuse),
        // so the replaced file alone holds its last state.
        let _ = check::checkpoint_file(target);
        let keep = replaced_name(target);
        fs::hard_link(target, &keep)
            .or_else(|_| fs::copy(target, &keep).map(drop))
            .map_err(|e| io_fail("cannot keep the replaced database as", &keep, &e))?;
        // Whatever is still in the old -wal belongs to the replaced database:
        // SQLite reads `<file>-wal` beside it, so it moves along.
        if fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            fs::rename(&wal, files::with_suffix(&keep, "-wal"))
                .map_err(|e| io_fail("cannot move", &wal, &e))?;
        }
        if target_key.exists() {
            let keep_key = crypto::key_file_path(&keep).map_err(|m| fail(1, m))?;
            fs::hard_link(&target_key, &keep_key)
                .or_else(|_| fs::copy(&target_key, &keep_key).map(drop))
                .map_err(|e| io_fail("cannot keep the key file as", &keep_key, &e))?;
        }
        replaced = Some(keep);
    }
    // A stale -wal or -shm would be replayed onto the restored file.
    for stale in [&wal, &shm] {
        match fs::remove_file(stale) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_fail("cannot remove", stale, &e)),
        }
    }
    if uses_key_file {
        if let Some(from) = key_file.filter(|k| *k != target_key) {
            if replaced.is_none() && target_key.exists() {
                // A key file without its database: keep it all the same.
                let keep_key =
                    files::with_suffix(&target_key, &format!(".replaced-{}", replaced_stamp()));
                fs::rename(&target_key, &keep_key)
                    .map_err(|e| io_fail("cannot keep the key file as", &keep_key, &e))?;
            }
            let bytes = fs::read(&from).map_err(|e| io_fail("cannot read", &from, &e))?;
            let tmp_key = files::with_suffix(tmp, ".key");
            files::write_private(&tmp_key, &bytes)
                .map_err(|e| io_fail("cannot write", &tmp_key, &e))?;
            give(&tmp_key)?;
            fs::rename(&tmp_key, &target_key)
                .map_err(|e| io_fail("cannot install the key file", &target_key, &e))?;
        }
    }
    fs::rename(tmp, target).map_err(|e| io_fail("cannot move the copy to", target, &e))?;
    files::sync_dir(&dir).map_err(|e| io_fail("cannot sync", &dir, &e))?;
    Ok(replaced)
}

fn remove_with_sidecars(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal", ".key"] {
        let _ = fs::remove_file(files::with_suffix(path, suffix));
    }
}

/// `breadbox backup FILE`: `VACUUM INTO` a new file, and copy the key file
/// (unless the key comes from the configuration) so the copy is usable alone.
pub(super) fn backup(
    db: &Db,
    config: &Config,
    file: &std::path::Path,
    json: bool,
) -> Result<(), Failure> {
    // Both destinations are checked before anything is written.
    let key_dest = crate::crypto::key_file_path(file).map_err(|m| fail(2, m))?;
    for taken in [file, key_dest.as_path()] {
        if taken.exists() {
            return Err(fail(
                2,
                format!("{} already exists; choose a new file", taken.display()),
            ));
        }
    }
    let dest = file
        .to_str()
        .ok_or_else(|| fail(2, "the backup path must be valid UTF-8"))?
        .to_owned();
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::files::create_private_dir(dir).map_err(|e| Failure {
            message: format!("cannot create directory {}: {e}", dir.display()),
            code: 1,
        })?;
    }
    db.read(|c| crate::db::meta::vacuum_into(c, &dest))?;
    // The umask already makes it 0600; say so explicitly all the same.
    std::fs::set_permissions(
        file,
        std::os::unix::fs::PermissionsExt::from_mode(crate::files::FILE_MODE),
    )
    .map_err(|e| Failure {
        message: format!("cannot make {} private: {e}", file.display()),
        code: 1,
    })?;
    let mut key_copy = None;
    if config.security.encryption_key.is_none() {
        let from = crate::crypto::key_file_path(&config.database.path).map_err(|m| Failure {
            message: m,
            code: 1,
        })?;
        if from.exists() {
            let to = crate::crypto::key_file_path(file).map_err(|m| Failure {
                message: m,
                code: 1,
            })?;
            copy_private(&from, &to)?;
            key_copy = Some(to);
        }
    }
    if json {
        print_json(&json!({"path": file, "key_file": key_copy}));
    } else {
        println!("backed up to {}", file.display());
        match &key_copy {
            Some(k) => println!(
                "key file copied to {} — keep it as safe as the backup",
                k.display()
            ),
            None => {
                println!("the encryption key comes from your configuration; back it up separately")
            }
        }
    }
    Ok(())
}

/// Copy a secret file to a new file readable only by its owner.
fn copy_private(from: &std::path::Path, to: &std::path::Path) -> Result<(), Failure> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let fail = |e: std::io::Error| Failure {
        message: format!("copying the key file to {}: {e}", to.display()),
        code: 1,
    };
    let bytes = std::fs::read(from).map_err(fail)?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(fail)?;
    out.write_all(&bytes)
        .and_then(|()| out.sync_all())
        .map_err(fail)
}
