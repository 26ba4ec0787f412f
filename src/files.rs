//! Files on disk: private modes whatever the umask, the lock a server holds
//! on its database, the checks a database path must pass before anything is
//! created, and the open-files limit.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Access, FlockOperation, Mode};

/// Mode of every file Breadbox creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory Breadbox creates.
pub const DIR_MODE: u32 = 0o700;

/// Make every file and directory this process creates from now on private
/// to its user (0600 / 0700), including the ones SQLite creates (`-wal`,
/// `-shm`, `VACUUM INTO` copies). Call first thing in `main`.
pub fn restrict_umask() {
    rustix::process::umask(Mode::from_raw_mode(0o077));
}

/// Raise the soft open-files limit to the hard limit (each client connection
/// is a file descriptor; 1024 runs out around a thousand idle clients).
/// Returns the limit now in force, when known.
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        let raised = rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            log::warn!("cannot raise the open-files limit to the hard limit: {e}");
            return lim.current;
        }
    }
    getrlimit(Resource::Nofile).current
}

/// `path` made absolute against the working directory (for messages).
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `<path><suffix>`, e.g. `breadbox.db` + `-wal`.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Create `dir` and its missing parents with mode 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Write `bytes` to `path` (replacing it) with mode 0600, and sync it.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    // An existing file keeps its mode through open(); make it private too.
    f.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Set `path` to mode 0600 if it exists and others may read it. Returns true
/// when the mode was changed.
pub fn make_private(path: &Path) -> std::io::Result<bool> {
    match fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            fs::set_permissions(path, fs::Permissions::from_mode(FILE_MODE))?;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sync a directory, so renames and new entries in it survive a power cut.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Why a path cannot hold a writable database.
fn not_writable(path: &Path) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o777;
    // root passes access(W_OK) whatever the mode, so a mode with no write bit
    // at all is read as "the admin made this read-only" too.
    if mode & 0o222 == 0 {
        return Some(format!("mode {mode:04o}, no write permission"));
    }
    match rustix::fs::access(path, Access::WRITE_OK) {
        Ok(()) => None,
        Err(e) => Some(format!("{e}")),
    }
}

/// Check, before anything is created, that a server can keep a database at
/// `db`: the file (when present) and its directory are writable, since SQLite
/// creates `-wal` and `-shm` files beside it. The message names the problem.
pub fn check_database_writable(db: &Path) -> Result<(), String> {
    let abs = absolute(db);
    let dir = parent_dir(&abs);
    if let Ok(m) = fs::metadata(&abs) {
        if !m.is_file() {
            return Err(format!("database path {} is not a file", abs.display()));
        }
        if let Some(why) = not_writable(&abs) {
            return Err(format!(
                "database file {} is read-only ({why}); the server must be able to write it \
                 (as its user: chmod 600 {0})",
                abs.display()
            ));
        }
    }
    // A missing directory is created (0700) when the database is; check the
    // nearest existing one.
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) => existing = p,
            None => break,
        }
    }
    if let Some(why) = not_writable(existing) {
        return Err(format!(
            "directory {} is read-only ({why}); the server needs to create {} and its -wal and \
             -shm files there",
            existing.display(),
            abs.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
    }
    Ok(())
}

/// The lock a server holds on its database for its whole life, and that
/// `breadbox restore` needs to swap the file: an exclusive `flock` on
/// `<db>.lock`. Released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DatabaseLock {
    _file: File,
    path: PathBuf,
}

/// Taking the database lock failed.
#[derive(Debug)]
pub enum LockError {
    /// Another process (a running server, a restore) holds it.
    Busy(PathBuf),
    /// The lock file could not be opened.
    Io(PathBuf, std::io::Error),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Busy(p) => write!(
                f,
                "another breadbox process (a running server or a restore) holds {}",
                p.display()
            ),
            LockError::Io(p, e) => write!(f, "cannot open lock file {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for LockError {}

impl DatabaseLock {
    /// The lock file path for database `db`.
    pub fn path_for(db: &Path) -> PathBuf {
        with_suffix(&absolute(db), ".lock")
    }

    /// Take the lock without waiting.
    pub fn try_acquire(db: &Path) -> Result<DatabaseLock, LockError> {
        let path = Self::path_for(db);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|e| LockError::Io(path.clone(), e))?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(DatabaseLock { _file: file, path }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(LockError::Busy(path)),
            Err(e) => Err(LockError::Io(path, e.into())),
        }
    }

    /// Where the lock file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("x.db");
        let held = DatabaseLock::try_acquire(&db).expect("first");
        assert!(matches!(
            DatabaseLock::try_acquire(&db),
            Err(LockError::Busy(_))
        ));
        drop(held);
        DatabaseLock::try_acquire(&db).expect("free again");
    }

    #[test]
    fn open_files_soft_limit_reaches_the_hard_limit() {
        use rustix::process::{getrlimit, Resource};
        let now = raise_open_files_limit();
        let lim = getrlimit(Resource::Nofile);
        assert_eq!(lim.current, lim.maximum);
        assert_eq!(now, lim.current);
    }

    #[test]
    fn write_private_fixes_an_existing_mode() {
        let dir = tempfile::tempdir().expect("dir");
        let f = dir.path().join("k");
        fs::write(&f, "x").expect("write");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private(&f, b"y").expect("write");
        let mode = fs::metadata(&f).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn read_only_file_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let f = dir.path().join("x.db");
        fs::write(&f, "").expect("write");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o444)).expect("chmod");
        let e = check_database_writable(&f).expect_err("read-only");
        assert!(e.contains("read-only"), "{e}");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).expect("chmod");
        check_database_writable(&f).expect("writable");
    }
}
