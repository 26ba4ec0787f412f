//! The `breadbox` binary: parse the command line, load the configuration,
//! start logging, run the command.
#![forbid(unsafe_code)]

use std::net::TcpListener;
use std::process::ExitCode;

use clap::Parser as _;

use breadbox::cli::{self, Cli, Command};
use breadbox::config::{self, Config};
use breadbox::db::Db;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match config::load(&cli.flags(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("breadbox: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::new()
        .parse_filters(config.log.level.as_str())
        .parse_env("BREADBOX_LOG")
        // The MCP SDK logs whole messages at debug level, and tool results
        // carry link tokens: keep it to warnings whatever the filter says.
        .filter_module("rmcp", log::LevelFilter::Warn)
        .filter_module("rmcp_actix_web", log::LevelFilter::Warn)
        .filter_module("tracing", log::LevelFilter::Warn)
        .init();
    if let Command::Serve { .. } = cli.command {
        return match serve(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("breadbox: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    match cli::run_admin(&cli, &config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("breadbox: {}", f.message);
            ExitCode::from(u8::try_from(f.code).unwrap_or(1))
        }
    }
}

#[actix_web::main]
async fn serve(config: Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let db = Db::open(
        &config.database.path,
        config.database.synchronous.as_pragma(),
    )
    .with_context(|| format!("opening database {}", config.database.path.display()))?;
    let listener = TcpListener::bind(config.server.listen)
        .with_context(|| format!("listening on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    if let Some(key) = cli::bootstrap_key(&db)? {
        println!("Created the first API key, named \"bootstrap\" (full_access). It is shown only this once:");
        println!("{key}");
        println!("Use it like this: curl -H 'X-API-Key: {key}' http://{addr}/api/v1/users");
    }
    println!("breadbox listening on http://{addr}");
    log::info!("database {}", config.database.path.display());
    breadbox::build(config, db, listener)?.await?;
    Ok(())
}
