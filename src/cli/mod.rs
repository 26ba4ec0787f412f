//! The command line: clap types; the admin commands are in [`admin`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Flags;

/// Breadbox: short-lived links for connecting a bank through Plaid or Teller.
#[derive(Debug, Parser)]
#[command(name = "breadbox", version, about)]
pub struct Cli {
    /// Configuration file (TOML). Default: none, or $BREADBOX_CONFIG.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// SQLite database file (overrides [database] path).
    #[arg(long, global = true, value_name = "FILE")]
    pub database: Option<PathBuf>,
    /// Print machine-readable JSON (one document) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on, e.g. 0.0.0.0:8080 (port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Public base URL that links are built on, e.g. https://bank.example.com.
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
    },
    /// Household members.
    #[command(subcommand)]
    Users(UsersCommand),
    /// API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Hosted-link sessions.
    #[command(subcommand)]
    Links(LinksCommand),
    /// Bank connections.
    #[command(subcommand)]
    Connections(ConnectionsCommand),
    /// Write a consistent copy of the database (safe while the server runs),
    /// plus its key file next to it.
    Backup {
        /// Where to write the copy (must not exist yet).
        file: PathBuf,
    },
    /// Put a backup in place of the database (the server must be stopped):
    /// checks the copy and its key file, swaps it in atomically, and keeps
    /// the replaced database beside it.
    Restore {
        /// The backup to restore (made by `breadbox backup`).
        file: PathBuf,
    },
    /// Serve the Model Context Protocol on stdin/stdout for an AI assistant,
    /// acting as the API key in $BREADBOX_API_KEY (or --api-key-file).
    Mcp {
        /// Read the API key from this file instead of $BREADBOX_API_KEY.
        #[arg(long, value_name = "FILE")]
        api_key_file: Option<PathBuf>,
    },
}

/// `breadbox users …`
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a household member.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Email address.
        #[arg(long)]
        email: Option<String>,
    },
    /// List household members.
    List,
}

/// `breadbox keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key (shown once).
    Create {
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// read_only or full_access.
        #[arg(long)]
        scope: String,
    },
    /// List API keys (never the keys themselves).
    List,
    /// Revoke a key at once.
    Revoke {
        /// The key's UUID or short id.
        id: String,
    },
}

/// `breadbox links …`
#[derive(Debug, Subcommand)]
pub enum LinksCommand {
    /// Mint a link for a household member.
    Create(LinkCreateArgs),
    /// Show one session.
    Get {
        /// The session's UUID or short id.
        id: String,
    },
    /// Cancel a live session (it becomes failed / CANCELED).
    Cancel {
        /// The session's UUID or short id.
        id: String,
    },
    /// List sessions, newest first.
    List {
        /// Only this status.
        #[arg(long)]
        status: Option<String>,
        /// Only this user (UUID or short id).
        #[arg(long)]
        user: Option<String>,
        /// At most this many (1–200).
        #[arg(long)]
        limit: Option<String>,
    },
}

/// `breadbox links create` flags.
#[derive(Debug, Args)]
pub struct LinkCreateArgs {
    /// The household member (UUID or short id).
    #[arg(long)]
    pub user: String,
    /// plaid or teller (default: the person picks).
    #[arg(long)]
    pub provider: Option<String>,
    /// Burn the link after the first connection.
    #[arg(long)]
    pub single_use: bool,
    /// Where the page sends the person afterwards.
    #[arg(long)]
    pub redirect_url: Option<String>,
    /// A label for the audit timeline and the page.
    #[arg(long)]
    pub label: Option<String>,
    /// Seconds until the link expires (default 900, at most 3600).
    #[arg(long, value_name = "SECS")]
    pub expires_in: Option<i64>,
    /// Follow the session until it ends, printing each change (exit 0 on
    /// completed/consumed, 1 on failed/expired, 4 on --timeout).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (default: until the link expires).
    #[arg(long, value_name = "SECS", requires = "wait")]
    pub timeout: Option<u64>,
    /// Also print the URL as a QR code, for opening it on a phone.
    #[arg(long)]
    pub qr: bool,
}

/// `breadbox connections …`
#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// List bank connections.
    List,
    /// Show one connection with its accounts and health.
    Get {
        /// The connection's UUID or short id.
        id: String,
    },
    /// Ask the provider about a connection's health now (Plaid /item/get,
    /// Teller GET /accounts) and record what changed.
    Check {
        /// The connection's UUID or short id.
        id: String,
    },
}

impl Cli {
    /// The configuration flags this command line carries.
    pub fn flags(&self) -> Flags {
        let (listen, public_url) = match &self.command {
            Command::Serve { listen, public_url } => (listen.clone(), public_url.clone()),
            _ => (None, None),
        };
        Flags {
            config: self.config.clone(),
            database: self.database.clone(),
            listen,
            public_url,
        }
    }
}

mod admin;
mod backup;

pub use admin::{bootstrap_key, run_admin, Failure};
