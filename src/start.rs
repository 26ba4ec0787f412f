//! `breadbox serve` from start to stop: every check that can fail runs
//! before anything is created or printed; the stop checkpoints the WAL so
//! the database file alone is the whole state.

use std::io::IsTerminal as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::db::{check, Db};
use crate::files::{self, DatabaseLock};
use crate::providers::{ClientOptions, Providers};

/// Why the server did not start (or stopped badly), with the exit code:
/// 2 for a configuration or credential-file problem, 1 otherwise.
#[derive(Debug)]
pub struct StartError {
    /// Shown on stderr.
    pub message: String,
    /// Process exit code.
    pub code: u8,
}

fn config_problem(message: impl Into<String>) -> StartError {
    StartError {
        message: message.into(),
        code: 2,
    }
}

fn runtime_problem(message: impl Into<String>) -> StartError {
    StartError {
        message: message.into(),
        code: 1,
    }
}

/// The name of the file the bootstrap key goes to when stdout is not a terminal.
pub const BOOTSTRAP_KEY_FILE: &str = "bootstrap-key.txt";

/// Run the server until SIGTERM/SIGINT, then checkpoint the database.
pub fn serve(config: Config) -> Result<(), StartError> {
    let db_path = files::absolute(&config.database.path);

    // 1. Credential files: Teller's certificate and key, the encryption key file.
    Providers::with_options(&config.plaid, &config.teller, &ClientOptions::default())
        .map_err(|e| config_problem(e.to_string()))?;
    let key =
        crate::crypto::load_key(config.security.key_bytes(), &db_path).map_err(config_problem)?;

    // 2. The database location can be written (SQLite creates -wal/-shm beside it).
    files::check_database_writable(&db_path).map_err(runtime_problem)?;

    // 3. The listen address is free.
    let listener = TcpListener::bind(config.server.listen).map_err(|e| {
        runtime_problem(format!(
            "cannot listen on {} (server.listen): {e}",
            config.server.listen
        ))
    })?;

    // 4. An existing database is sound, of a version we know, and opens with our key.
    if db_path.exists() {
        let conn = check::open_existing(&db_path).map_err(|e| bad_database(&db_path, &e))?;
        check::check(&conn, false).map_err(|e| bad_database(&db_path, &e))?;
        let stored = crate::app::bank::stored_key_check(&conn).map_err(runtime_problem)?;
        crate::app::bank::check_key(key.as_ref(), stored.as_deref(), &db_path)
            .map_err(config_problem)?;
    }

    // 5. No other server (or restore) is using this database.
    let dir = files::parent_dir(&db_path).to_owned();
    if !dir.exists() {
        files::create_private_dir(&dir).map_err(|e| {
            runtime_problem(format!("cannot create directory {}: {e}", dir.display()))
        })?;
    }
    let lock = DatabaseLock::try_acquire(&db_path).map_err(|e| {
        runtime_problem(format!(
            "{e}; is breadbox already running on {}?",
            db_path.display()
        ))
    })?;

    // Everything that can fail has been checked: now create what is missing.
    let db = Db::open(&db_path, config.database.synchronous.as_pragma())
        .map_err(|e| runtime_problem(format!("opening database {}: {e}", db_path.display())))?;
    crate::app::bank::unlock(&config, &db).map_err(config_problem)?;
    tighten_existing_modes(&db_path);
    if let Some(limit) = files::raise_open_files_limit() {
        log::debug!("open files limit: {limit}");
    }
    let addr = listener
        .local_addr()
        .map_err(|e| runtime_problem(e.to_string()))?;
    hand_out_bootstrap_key(&db, &db_path, &addr.to_string())?;
    log::info!("database {}", db_path.display());
    log_providers(&config);

    let served = actix_web::rt::System::new().block_on({
        let db = db.clone();
        async move {
            let server = crate::build(config, db, listener)?;
            // Printed once SIGTERM is handled: whoever waits for this line
            // may stop the server right away.
            println!("breadbox listening on http://{addr}");
            server.await
        }
    });
    // The server has stopped: no request runs any more. Fold the WAL into the
    // database file so a copy of that file alone is complete.
    match db.checkpoint() {
        Ok(true) => log::info!("database checkpointed; stopped"),
        Ok(false) => log::warn!("the database checkpoint was incomplete (a reader was busy)"),
        Err(e) => log::error!("database checkpoint failed: {e}"),
    }
    drop(lock);
    served.map_err(|e| runtime_problem(format!("server error: {e}")))
}

fn bad_database(path: &Path, e: &check::FileProblem) -> StartError {
    runtime_problem(match e {
        check::FileProblem::Corrupt(detail) => format!(
            "database {} is damaged ({detail}); stop here and restore your latest backup with \
             `breadbox restore FILE` (the damaged file is kept beside it)",
            path.display()
        ),
        check::FileProblem::TooNew(m) => format!("database {}: {m}", path.display()),
        check::FileProblem::Unreadable(m) => {
            format!("cannot read database {}: {m}", path.display())
        }
    })
}

/// Files an older breadbox (or a loose umask) left readable by others.
fn tighten_existing_modes(db_path: &Path) {
    let mut paths: Vec<PathBuf> = ["", "-wal", "-shm"]
        .iter()
        .map(|s| files::with_suffix(db_path, s))
        .collect();
    if let Ok(k) = crate::crypto::key_file_path(db_path) {
        paths.push(k);
    }
    for p in paths {
        match files::make_private(&p) {
            Ok(true) => log::warn!(
                "{} was readable by other users; its mode is now 0600",
                p.display()
            ),
            Ok(false) => {}
            Err(e) => log::warn!("cannot make {} private: {e}", p.display()),
        }
    }
}

/// On a database without API keys, create the `bootstrap` key: printed on a
/// terminal, otherwise written to `bootstrap-key.txt` (0600) beside the
/// database so it never lands in a log or the journal.
fn hand_out_bootstrap_key(db: &Db, db_path: &Path, addr: &str) -> Result<(), StartError> {
    let Some(key) = crate::cli::bootstrap_key(db)
        .map_err(|e| runtime_problem(format!("creating the first API key: {e}")))?
    else {
        return Ok(());
    };
    let usage = format!("curl -H 'X-API-Key: {key}' http://{addr}/api/v1/users");
    if std::io::stdout().is_terminal() {
        println!("Created the first API key, named \"bootstrap\" (full_access). It is shown only this once:");
        println!("{key}");
        println!("Use it like this: {usage}");
        return Ok(());
    }
    let file = files::parent_dir(db_path).join(BOOTSTRAP_KEY_FILE);
    let text = format!(
        "{key}\n# The first API key, named \"bootstrap\" (full_access).\n\
         # Use it like this: {usage}\n\
         # Store it somewhere safe, then delete this file.\n"
    );
    files::write_private(&file, text.as_bytes()).map_err(|e| {
        runtime_problem(format!(
            "cannot write the first API key to {}: {e}",
            file.display()
        ))
    })?;
    log::warn!(
        "created the first API key (\"bootstrap\", full_access); it is in {} (mode 0600): \
         store it somewhere safe, then delete that file",
        file.display()
    );
    Ok(())
}

fn log_providers(config: &Config) {
    let mut on = Vec::new();
    if config.plaid.is_configured() {
        on.push(format!("plaid ({})", config.plaid.environment.as_str()));
    }
    if config.teller.is_configured() {
        on.push(format!("teller ({})", config.teller.environment.as_str()));
    }
    if on.is_empty() {
        log::warn!(
            "no provider is configured: links can be minted but nobody can connect a bank \
             through them; set [plaid] client_id and secret, or [teller] application_id"
        );
    } else {
        log::info!("providers: {}", on.join(", "));
    }
}
