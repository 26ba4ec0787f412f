//! The admin commands: they work directly on the database file, also while
//! the server runs.

use serde::Serialize;
use serde_json::json;

use crate::app::link_sessions::{list_filter, Created};
use crate::app::{api_keys, connections, link_sessions, users};
use crate::config::Config;
use crate::db::link_sessions::{Minter, NewSession};
use crate::db::{self, Db};
use crate::domain::api_key::{CreateApiKey, Scope};
use crate::domain::ids::EntityRef;
use crate::domain::link_session::{Action, CreateRequest, LinkSession, Status};
use crate::domain::time;
use crate::domain::user::CreateUser;
use crate::error::ApiError;

use super::{
    Cli, Command, ConnectionsCommand, KeysCommand, LinkCreateArgs, LinksCommand, UsersCommand,
};

/// A failed admin command: the message and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// Shown on stderr.
    pub message: String,
    /// 1 runtime, 2 bad input.
    pub code: i32,
}

impl From<db::DbError> for Failure {
    fn from(e: db::DbError) -> Self {
        Failure {
            message: format!("database error: {e}"),
            code: 1,
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        let code = match e {
            ApiError::Internal(_) => 1,
            ApiError::NotFound(_) => 1,
            _ => 2,
        };
        let message = match &e {
            ApiError::Internal(detail) => detail.clone(),
            other => other.message(),
        };
        Failure { message, code }
    }
}

/// An operation's error as the CLI words it: the only internal errors of
/// the operations it calls are the database's.
fn op_failure(e: ApiError) -> Failure {
    match e {
        ApiError::Internal(detail) => Failure {
            message: format!("database error: {detail}"),
            code: 1,
        },
        other => other.into(),
    }
}

/// Run an operation of the operations layer to its end on this thread
/// (the database work runs on the database's own threads).
fn run<T>(op: impl std::future::Future<Output = Result<T, ApiError>>) -> Result<T, Failure> {
    runtime()?.block_on(op).map_err(op_failure)
}

/// A small single-thread runtime for the async operations.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| bad(format!("cannot start the async runtime: {e}")))
}

fn bad(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code: 2,
    }
}

fn not_found(what: &str) -> Failure {
    Failure {
        message: format!("{what} not found"),
        code: 1,
    }
}

pub(super) fn print_json<T: Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string(v).unwrap_or_else(|_| "null".into())
    );
}

fn entity(raw: &str, what: &str) -> Result<EntityRef, Failure> {
    EntityRef::parse(raw).ok_or_else(|| bad(format!("{what}: {raw:?} is not a UUID or short id")))
}

/// Run an admin command (everything but `serve`).
pub fn run_admin(cli: &Cli, config: &Config) -> Result<(), Failure> {
    if let Command::Restore { file } = &cli.command {
        return super::backup::restore(config, file, cli.json);
    }
    require_database(&config.database.path)?;
    if let Command::Mcp { api_key_file } = &cli.command {
        return mcp(config, api_key_file.as_deref());
    }
    let db = Db::open(
        &config.database.path,
        config.database.synchronous.as_pragma(),
    )?
    .with_webhooks(config.webhooks.url.is_some());
    let json = cli.json;
    match &cli.command {
        Command::Serve { .. } | Command::Restore { .. } | Command::Mcp { .. } => {
            Err(bad("serve, restore and mcp are not admin commands"))
        }
        Command::Backup { file } => super::backup::backup(&db, config, file, json),
        Command::Users(UsersCommand::Create { name, email }) => {
            let body = CreateUser {
                name: name.clone(),
                email: email.clone(),
            };
            let user = run(users::add(&db, body, None))?;
            if json {
                print_json(&user);
            } else {
                println!("created user {} ({})", user.name, user.short_id);
            }
            Ok(())
        }
        Command::Users(UsersCommand::List) => {
            let list = run(users::all(&db))?;
            if json {
                print_json(&json!({ "users": list }));
            } else {
                println!("{:<10} {:<24} EMAIL", "SHORT_ID", "NAME");
                for u in list {
                    println!(
                        "{:<10} {:<24} {}",
                        u.short_id,
                        u.name,
                        u.email.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(())
        }
        Command::Keys(KeysCommand::Create { name, scope }) => {
            let body = CreateApiKey {
                name: name.clone(),
                scope: scope.clone(),
            };
            let (key, plain) = run(api_keys::add(&db, &body, None))?;
            if json {
                print_json(&api_keys::CreatedKey {
                    key: &key,
                    plain: plain.expose(),
                });
            } else {
                println!("{}", plain.expose());
                eprintln!(
                    "API key {:?} ({}) created; it is shown only this once.",
                    key.name,
                    key.scope.as_str()
                );
            }
            Ok(())
        }
        Command::Keys(KeysCommand::List) => {
            let list = run(api_keys::all(&db))?;
            if json {
                print_json(&json!({ "api_keys": list }));
            } else {
                println!(
                    "{:<10} {:<10} {:<12} {:<20} REVOKED",
                    "SHORT_ID", "PREFIX", "SCOPE", "NAME"
                );
                for k in list {
                    println!(
                        "{:<10} {:<10} {:<12} {:<20} {}",
                        k.short_id,
                        k.prefix,
                        k.scope.as_str(),
                        k.name,
                        k.revoked_at.map_or("-".into(), time::rfc3339)
                    );
                }
            }
            Ok(())
        }
        Command::Keys(KeysCommand::Revoke { id }) => {
            let r = entity(id, "id")?;
            let key = run(api_keys::revoke_in(&db, r))?;
            if json {
                print_json(&key);
            } else {
                println!("revoked {} ({})", key.name, key.short_id);
            }
            Ok(())
        }
        Command::Links(LinksCommand::Create(args)) => create_link(&db, config, args, json),
        Command::Links(LinksCommand::Get { id }) => {
            let r = entity(id, "id")?;
            let s = run(link_sessions::get_in(&db, r))?;
            if json {
                print_json(&s);
            } else {
                print_session(&s);
            }
            Ok(())
        }
        Command::Links(LinksCommand::Cancel { id }) => {
            let r = entity(id, "id")?;
            let mut detail = serde_json::Map::new();
            detail.insert("by".into(), json!("cli"));
            let change =
                link_sessions::failure("CANCELED", "canceled from the command line".into(), detail);
            match run(link_sessions::cancel_in(&db, r, change))? {
                Err(refusal) => Err(Failure {
                    message: format!(
                        "cannot cancel: {}",
                        ApiError::from_refusal(refusal).message()
                    ),
                    code: 1,
                }),
                Ok(s) => {
                    if json {
                        print_json(&s);
                    } else {
                        println!("canceled {}", s.short_id);
                    }
                    Ok(())
                }
            }
        }
        Command::Links(LinksCommand::List {
            status,
            user,
            limit,
        }) => {
            let filter = list_filter(status.as_deref(), limit.as_deref(), None)?;
            let user = user.as_deref().map(|u| entity(u, "user")).transpose()?;
            let (list, next) = run(link_sessions::list_in(&db, filter, user))?;
            if json {
                print_json(
                    &json!({ "sessions": list, "next_cursor": next.map(|_| "use the API to page") }),
                );
            } else {
                println!(
                    "{:<10} {:<8} {:<7} {:<10} {:<5} EXPIRES_AT",
                    "SHORT_ID", "PROVIDER", "ACTION", "STATUS", "CONNS"
                );
                for s in list {
                    print_session_row(&s);
                }
            }
            Ok(())
        }
        Command::Connections(ConnectionsCommand::Get { id }) => {
            let r = entity(id, "connection")?;
            let conn = run(connections::get_in(&db, r))?;
            print_connection(&conn, json);
            Ok(())
        }
        Command::Connections(ConnectionsCommand::Check { id }) => {
            let r = entity(id, "connection")?;
            let bank =
                crate::app::bank::setup(config, &db, &crate::providers::ClientOptions::default())
                    .map_err(bad)?;
            let conn = runtime()?
                .block_on(crate::health_check::check_connection(&db, &bank, r))
                .map_err(|e| match e {
                    crate::health_check::CheckError::NotFound => not_found("connection"),
                    e => Failure {
                        message: format!("health check failed: {e}"),
                        code: 1,
                    },
                })?;
            print_connection(&conn, json);
            Ok(())
        }
        Command::Connections(ConnectionsCommand::List) => {
            let list = run(connections::list_in(&db, None, None))?;
            if json {
                print_json(&json!({ "connections": list }));
            } else {
                println!(
                    "{:<10} {:<7} {:<15} {:<24}",
                    "SHORT_ID", "PROVIDER", "STATUS", "INSTITUTION"
                );
                for c in list {
                    println!(
                        "{:<10} {:<7} {:<15} {:<24}",
                        c.short_id,
                        c.provider,
                        c.status.as_str(),
                        c.institution_name
                    );
                }
            }
            Ok(())
        }
    }
}

/// One connection: JSON, or its fields, health and accounts as text.
fn print_connection(c: &crate::domain::connection::Connection, json: bool) {
    if json {
        print_json(c);
        return;
    }
    let ts = |t: Option<i64>| t.map_or_else(|| "-".to_owned(), time::rfc3339);
    println!("id:                     {} ({})", c.id, c.short_id);
    println!("provider:               {}", c.provider);
    println!(
        "institution:            {} {}",
        c.institution_name, c.institution_id
    );
    println!("status:                 {}", c.status.as_str());
    println!(
        "error:                  {} {}",
        c.error_code.as_deref().unwrap_or("-"),
        c.error_message.as_deref().unwrap_or("")
    );
    println!("access_expires_at:      {}", ts(c.access_expires_at));
    println!("new_accounts_available: {}", c.new_accounts_available);
    println!("last_checked_at:        {}", ts(c.last_checked_at));
    println!("accounts:");
    for a in &c.accounts {
        println!(
            "  {} {} ••{} {}/{}",
            a.id,
            a.name,
            a.mask.as_deref().unwrap_or("----"),
            a.kind,
            a.subtype.as_deref().unwrap_or("-")
        );
    }
}

/// Only `serve` and `restore` create a database: any other command run
/// from the wrong directory (or with the wrong `--config`) stops here
/// instead of creating an empty database and a key the server refuses.
fn require_database(path: &std::path::Path) -> Result<(), Failure> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(bad(format!(
            "no database at {} (from --database, BREADBOX_DATABASE_PATH, [database] path in the \
             config file, or the default ./breadbox.db); pass the server's --config or --database \
             (only `breadbox serve` creates a database)",
            crate::files::absolute(path).display()
        ))),
        // It may well exist: say what is wrong (e.g. run as another user).
        Err(e) => Err(bad(format!(
            "cannot open the database {}: {e} (run the command as the user the server runs \
             as, e.g. `sudo -u breadbox breadbox …`)",
            crate::files::absolute(path).display()
        ))),
    }
}

fn create_link(db: &Db, config: &Config, args: &LinkCreateArgs, json: bool) -> Result<(), Failure> {
    let rules = crate::app::rules(config);
    let req = CreateRequest {
        user_id: args.user.clone(),
        provider: args.provider.clone(),
        single_use: Some(args.single_use),
        redirect_url: args.redirect_url.clone(),
        label: args.label.clone(),
        expires_in_seconds: args.expires_in,
    };
    let valid = rules.check_create(&req).map_err(ApiError::from)?;
    let user = entity(&args.user, "user")?;
    let minter = Minter {
        api_key_id: None,
        name: "cli".into(),
    };
    let new = NewSession {
        valid,
        user_id: String::new(),
        action: Action::Link,
        connection_id: None,
        token_hash: String::new(),
    };
    let (token, session) = run(link_sessions::mint_in(db, minter, new, user))?;
    let (base, warning) = config.server.link_base();
    if let Some(w) = &warning {
        eprintln!("{w}");
    }
    let url = format!("{base}/link/{token}");
    if json {
        print_json(&Created {
            token: &token,
            url: url.clone(),
            session: &session,
        });
    } else {
        println!("{url}");
        eprintln!(
            "link {} for user {} expires at {}",
            session.short_id,
            args.user,
            time::rfc3339(session.expires_at)
        );
    }
    if args.qr {
        if let Some(w) = &warning {
            eprintln!("{w}");
        }
        let code = qr_text(&url)?;
        if json {
            eprintln!("{code}");
        } else {
            println!("{code}");
        }
    }
    if args.wait {
        return follow(db, session, args.timeout, json);
    }
    Ok(())
}

/// A QR code of `text` drawn with Unicode half blocks.
fn qr_text(text: &str) -> Result<String, Failure> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| Failure {
        message: format!("cannot draw a QR code: {e}"),
        code: 1,
    })?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .build())
}

/// How often `--wait` reads the session.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Follow a session until it ends: print each change; exit 0 for
/// completed/consumed, 1 for failed/expired, 4 when `timeout` passes.
fn follow(db: &Db, first: LinkSession, timeout: Option<u64>, json: bool) -> Result<(), Failure> {
    let deadline = timeout.map(|t| std::time::Instant::now() + std::time::Duration::from_secs(t));
    let id = EntityRef::Uuid(first.id.clone());
    let mut last = (first.status, first.result_connection_ids.len());
    if !json {
        eprintln!(
            "waiting for {} (status {})…",
            first.short_id,
            first.status.as_str()
        );
    }
    let rt = runtime()?;
    loop {
        let s = rt
            .block_on(link_sessions::get_in(db, id.clone()))
            .map_err(op_failure)?;
        let now = (s.status, s.result_connection_ids.len());
        if now != last {
            last = now;
            if json {
                print_json(&s);
            } else {
                println!(
                    "{} {} connections={}",
                    time::rfc3339(time::now()),
                    s.status.as_str(),
                    s.result_connection_ids.len()
                );
            }
        }
        match s.status {
            Status::Completed | Status::Consumed => return Ok(()),
            Status::Failed | Status::Expired => {
                return Err(Failure {
                    message: format!("the link ended {}", s.status.as_str()),
                    code: 1,
                })
            }
            Status::Pending | Status::Active => {}
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Err(Failure {
                message: "gave up waiting (--timeout)".into(),
                code: 4,
            });
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}

fn print_session_row(s: &crate::domain::link_session::LinkSession) {
    println!(
        "{:<10} {:<8} {:<7} {:<10} {:<5} {}",
        s.short_id,
        crate::domain::link_session::provider_str(s.provider).to_owned()
            + if s.provider.is_none() { "-" } else { "" },
        s.action.as_str(),
        s.status.as_str(),
        s.result_connection_ids.len(),
        time::rfc3339(s.expires_at)
    );
}

fn print_session(s: &crate::domain::link_session::LinkSession) {
    println!(
        "{:<10} {:<8} {:<7} {:<10} {:<5} EXPIRES_AT",
        "SHORT_ID", "PROVIDER", "ACTION", "STATUS", "CONNS"
    );
    print_session_row(s);
    if let Some(code) = &s.error_code {
        println!(
            "error: {code}: {}",
            s.error_message.as_deref().unwrap_or("")
        );
    }
    for id in &s.result_connection_ids {
        println!("connection {id}");
    }
}

/// Create the `bootstrap` key on a database that has none; returns it once.
pub fn bootstrap_key(db: &Db) -> Result<Option<String>, db::DbError> {
    db.write(|tx| {
        if crate::db::api_keys::any(tx)? {
            return Ok(None);
        }
        let (_, plain) =
            crate::db::api_keys::insert(tx, "bootstrap", Scope::FullAccess, time::now())?;
        Ok(Some(plain.expose().to_owned()))
    })
}

/// `breadbox mcp`: MCP on stdio over an existing database, as one API key.
/// `breadbox mcp` (the database was found by [`require_database`]).
fn mcp(config: &Config, key_file: Option<&std::path::Path>) -> Result<(), Failure> {
    let path = &config.database.path;
    let key = match key_file {
        // The key is the file's first line that is not blank or a `#`
        // comment, so the server's own bootstrap-key.txt works as is.
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| bad(format!("--api-key-file {}: {e}", f.display())))?
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or_default()
            .to_owned(),
        None => std::env::var("BREADBOX_API_KEY").map_err(|_| {
            bad("set BREADBOX_API_KEY (or pass --api-key-file) to the API key the assistant acts as")
        })?,
    };
    let db = Db::open(path, config.database.synchronous.as_pragma())?
        .with_webhooks(config.webhooks.url.is_some());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            message: format!("cannot start the runtime: {e}"),
            code: 1,
        })?;
    runtime
        .block_on(crate::mcp::stdio::serve(config.clone(), db, key.trim()))
        .map_err(|message| Failure { message, code: 2 })
}
