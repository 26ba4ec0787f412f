//! The `breadbox` binary: parse the command line, load the configuration,
//! start logging, run the command.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;

use breadbox::cli::{self, Cli, Command};
use breadbox::config;

fn main() -> ExitCode {
    // Before any file is created: database, -wal, -shm, key file, backups,
    // bootstrap-key.txt and new directories are private whatever the umask.
    breadbox::files::restrict_umask();
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
        return match breadbox::start::serve(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("breadbox: {}", e.message);
                ExitCode::from(e.code)
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
