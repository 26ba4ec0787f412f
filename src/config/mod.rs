//! Configuration: built-in defaults < TOML file < `BREADBOX_*` environment
//! variables < command-line flags, validated as a whole at the end.
//!
//! Every setting is listed once in `KEYS`. TOML keys and environment variable
//! names (`BREADBOX_<SECTION>_<KEY>`) both come from that list, so an unknown
//! key or variable is an error that names it instead of being ignored.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use url::Url;

/// Values from command-line flags; None = not given.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    /// `--config FILE`: the TOML file to read.
    pub config: Option<PathBuf>,
    /// `--database FILE`: overrides `database.path`.
    pub database: Option<PathBuf>,
    /// `--listen ADDR`: overrides `server.listen`.
    pub listen: Option<String>,
    /// `--public-url URL`: overrides `server.public_url`.
    pub public_url: Option<String>,
}

/// A configuration problem; the message names the key, variable or flag.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// A secret string whose Debug prints "[redacted]".
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The plaintext value; use only where the secret is actually needed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// `[server]`: listening address and public URL.
    pub server: ServerConfig,
    /// `[database]`: SQLite file and durability.
    pub database: DatabaseConfig,
    /// `[security]`: encryption key for provider credentials.
    pub security: SecurityConfig,
    /// `[link]`: link-session lifetimes and redirect origins.
    pub link: LinkConfig,
    /// `[plaid]`: Plaid credentials and Link options.
    pub plaid: PlaidConfig,
    /// `[teller]`: Teller application and mTLS certificate.
    pub teller: TellerConfig,
    /// `[webhooks]`: outbound webhook endpoint.
    pub webhooks: WebhooksConfig,
    /// `[connections]`: pulled health checks.
    pub connections: ConnectionsConfig,
    /// `[limits]`: rate limits (0 disables one).
    pub limits: LimitsConfig,
    /// `[log]`: log verbosity.
    pub log: LogConfig,
    /// `[retention]`: how long finished history is kept (CONTRACT §11 "Growth").
    pub retention: RetentionConfig,
    /// `[mcp]`: the MCP endpoint for AI assistants.
    pub mcp: McpConfig,
}

/// `[mcp]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McpConfig {
    /// Serve MCP over streamable HTTP at `/mcp` (default true).
    pub enabled: bool,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig { enabled: true }
    }
}

/// `[server]` section.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address the HTTP server binds (default 127.0.0.1:8080).
    pub listen: SocketAddr,
    /// Public base URL for link URLs: absolute http(s), no query or fragment.
    pub public_url: Option<Url>,
    /// Trust `X-Forwarded-Proto`/`X-Forwarded-Host` when building link URLs.
    pub trust_forwarded_headers: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            trust_forwarded_headers: false,
        }
    }
}

impl ServerConfig {
    /// `public_url` without trailing '/', ready for appending `/link/<token>`.
    pub fn public_base(&self) -> Option<String> {
        self.public_url.as_ref().map(without_trailing_slash)
    }

    /// The base URL links get when no request says where the server is
    /// reached (the admin CLI, `breadbox mcp` on stdio): `public_url`, else
    /// `listen` with a wildcard address replaced by loopback. The second
    /// value is the warning to show when that URL opens only on this machine
    /// (CONTRACT §8).
    pub fn link_base(&self) -> (String, Option<String>) {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        if let Some(base) = self.public_base() {
            return (base, None);
        }
        let listen = self.listen;
        let ip = match listen.ip() {
            // A wildcard listens everywhere but is no address to open: 0.0.0.0
            // in a phone's browser goes nowhere. Loopback is honest (and
            // warned about); a guessed host name may not resolve on the phone.
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let base = format!("http://{}", SocketAddr::new(ip, listen.port()));
        let warning = ip.is_loopback().then(|| {
            format!(
                "warning: this link opens only on this machine ({base} comes from server.listen \
                 = {listen}); to open it on a phone or another computer, set server.public_url in \
                 the config (e.g. http://<this machine's LAN address>:{} or your HTTPS address)",
                listen.port()
            )
        });
        (base, warning)
    }
}

/// `[database]` section.
#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// SQLite file path (default `breadbox.db` in the working directory).
    pub path: PathBuf,
    /// SQLite `PRAGMA synchronous` level (default full).
    pub synchronous: Synchronous,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            path: PathBuf::from("breadbox.db"),
            synchronous: Synchronous::Full,
        }
    }
}

/// SQLite durability level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synchronous {
    /// Every commit is on disk before it is acknowledged (survives power cuts).
    Full,
    /// Faster; the last commits may be lost on power cut, the file stays consistent.
    Normal,
}

impl Synchronous {
    /// The value for `PRAGMA synchronous`.
    pub fn as_pragma(&self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// `[security]` section.
#[derive(Clone, Debug, Default)]
pub struct SecurityConfig {
    /// 32-byte key as 64 hex chars or base64; None = use the key file.
    pub encryption_key: Option<Secret>,
}

impl SecurityConfig {
    /// The decoded 32-byte key, when one is configured.
    pub fn key_bytes(&self) -> Option<[u8; 32]> {
        self.encryption_key
            .as_ref()
            .and_then(|k| decode_key(k.expose()))
    }
}

/// `[link]` section.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// Session lifetime when a request gives none (default 900).
    pub default_ttl_seconds: u32,
    /// Longest lifetime a request may ask for (default and upper bound 3600).
    pub max_ttl_seconds: u32,
    /// Allowed `redirect_url` origins, normalised (`https://example.com`); empty = any.
    pub allowed_redirect_origins: Vec<String>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            default_ttl_seconds: 900,
            max_ttl_seconds: MAX_TTL_SECONDS,
            allowed_redirect_origins: Vec::new(),
        }
    }
}

/// The seed's upper bound for a session lifetime.
const MAX_TTL_SECONDS: u32 = 3600;

/// `[plaid]` section.
#[derive(Clone, Debug)]
pub struct PlaidConfig {
    /// Plaid client id.
    pub client_id: Option<String>,
    /// Plaid secret for `environment`.
    pub secret: Option<Secret>,
    /// Sandbox or production (default sandbox).
    pub environment: PlaidEnvironment,
    /// API base URL override (tests point it at a fake).
    pub base_url: Option<Url>,
    /// Name shown in Plaid Link, at most 30 characters (default "Breadbox").
    pub client_name: String,
    /// Products requested in `/link/token/create` (default `["transactions"]`).
    pub products: Vec<String>,
    /// ISO 3166-1 alpha-2 country codes (default `["US"]`).
    pub country_codes: Vec<String>,
    /// Link display language (default "en").
    pub language: String,
    /// URL Plaid sends Item webhooks to (default `<public_url>/webhooks/plaid`
    /// when `[server] public_url` is set).
    pub webhook_url: Option<Url>,
    /// OAuth return URL sent on every `/link/token/create` (https, or http on
    /// a loopback host for tests; same origin as `public_url` when that is
    /// set); the server serves the link page at its path.
    pub redirect_uri: Option<Url>,
}

impl Default for PlaidConfig {
    fn default() -> Self {
        PlaidConfig {
            client_id: None,
            secret: None,
            environment: PlaidEnvironment::Sandbox,
            base_url: None,
            client_name: "Breadbox".to_owned(),
            products: vec!["transactions".to_owned()],
            country_codes: vec!["US".to_owned()],
            language: "en".to_owned(),
            webhook_url: None,
            redirect_uri: None,
        }
    }
}

impl PlaidConfig {
    /// True when both client id and secret are set.
    pub fn is_configured(&self) -> bool {
        self.client_id.is_some() && self.secret.is_some()
    }

    /// API base URL without trailing '/': `base_url`, else the environment's host.
    pub fn api_base(&self) -> String {
        match &self.base_url {
            Some(u) => without_trailing_slash(u),
            None => match self.environment {
                PlaidEnvironment::Sandbox => "https://sandbox.plaid.com".to_owned(),
                PlaidEnvironment::Production => "https://production.plaid.com".to_owned(),
            },
        }
    }
}

/// Plaid environment ("development" was retired and maps to sandbox).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaidEnvironment {
    /// Test institutions and credentials.
    Sandbox,
    /// Real institutions and data.
    Production,
}

impl PlaidEnvironment {
    /// Lowercase name as written in the config.
    pub fn as_str(&self) -> &'static str {
        match self {
            PlaidEnvironment::Sandbox => "sandbox",
            PlaidEnvironment::Production => "production",
        }
    }
}

/// `[teller]` section.
#[derive(Clone, Debug)]
pub struct TellerConfig {
    /// Teller application id (`app_…`).
    pub application_id: Option<String>,
    /// Teller environment (default sandbox).
    pub environment: TellerEnvironment,
    /// PEM client certificate for mTLS (required in development/production).
    pub certificate_path: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub private_key_path: Option<PathBuf>,
    /// API base URL override (tests point it at a fake).
    pub base_url: Option<Url>,
    /// Secrets Teller signs webhooks with (`Teller-Signature`); several
    /// during a rotation. Empty: `POST /webhooks/teller` accepts nothing.
    pub webhook_signing_secrets: Vec<Secret>,
}

impl Default for TellerConfig {
    fn default() -> Self {
        TellerConfig {
            application_id: None,
            environment: TellerEnvironment::Sandbox,
            certificate_path: None,
            private_key_path: None,
            base_url: None,
            webhook_signing_secrets: Vec::new(),
        }
    }
}

impl TellerConfig {
    /// True when an application id is set.
    pub fn is_configured(&self) -> bool {
        self.application_id.is_some()
    }

    /// API base URL without trailing '/': `base_url`, else `https://api.teller.io`.
    pub fn api_base(&self) -> String {
        match &self.base_url {
            Some(u) => without_trailing_slash(u),
            None => "https://api.teller.io".to_owned(),
        }
    }
}

/// Teller environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TellerEnvironment {
    /// Test institutions; no client certificate needed.
    Sandbox,
    /// Real institutions, limited enrollments; client certificate required.
    Development,
    /// Real institutions; client certificate required.
    Production,
}

impl TellerEnvironment {
    /// Lowercase name as written in the config (and given to Teller Connect).
    pub fn as_str(&self) -> &'static str {
        match self {
            TellerEnvironment::Sandbox => "sandbox",
            TellerEnvironment::Development => "development",
            TellerEnvironment::Production => "production",
        }
    }
}

/// `[connections]` section.
#[derive(Clone, Debug)]
pub struct ConnectionsConfig {
    /// How often each connection's health is pulled from its provider
    /// (default 24 h); zero turns pulled checks off.
    pub health_check_interval: Duration,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        ConnectionsConfig {
            health_check_interval: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// `[webhooks]` section.
#[derive(Clone, Debug, Default)]
pub struct WebhooksConfig {
    /// Endpoint that receives signed session events; None = webhooks off.
    pub url: Option<Url>,
    /// Signing secret, `whsec_` + base64 of at least 16 bytes.
    pub secret: Option<Secret>,
}

impl WebhooksConfig {
    /// The decoded HMAC key (the base64 part after `whsec_`).
    pub fn secret_bytes(&self) -> Option<Vec<u8>> {
        self.secret
            .as_ref()
            .and_then(|s| decode_webhook_secret(s.expose()))
    }
}

/// `[limits]` section; 0 disables a limit.
#[derive(Clone, Debug)]
pub struct LimitsConfig {
    /// Unknown link tokens per client IP per minute (default 10).
    pub bad_token_per_minute: u32,
    /// Requests per API key per minute (default 1200).
    pub api_per_minute: u32,
    /// Invalid API keys per client IP per minute (default 30).
    pub bad_api_key_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            bad_token_per_minute: 10,
            api_per_minute: 1200,
            bad_api_key_per_minute: 30,
        }
    }
}

/// `[retention]` section (CONTRACT §11 "Growth"): finished history older than
/// these periods is pruned in small batches; connections are never pruned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Terminal link sessions and their events are deleted this long after
    /// they were created (default 400 days).
    pub link_sessions: Duration,
    /// Delivered or dead webhook messages are deleted this long after they
    /// finished (default 30 days), whether or not webhooks are configured.
    pub webhook_deliveries: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            link_sessions: Duration::from_secs(400 * DAY_SECS),
            webhook_deliveries: Duration::from_secs(30 * DAY_SECS),
        }
    }
}

const DAY_SECS: u64 = 24 * 60 * 60;

/// `[log]` section.
#[derive(Clone, Debug, Default)]
pub struct LogConfig {
    /// Log verbosity (default info).
    pub level: LogLevel,
}

/// Log verbosity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Normal operation.
    #[default]
    Info,
    /// Debugging detail.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// Lowercase name, usable as an `env_logger` filter.
    pub fn as_str(&self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// How a key's value is written in TOML; env strings are parsed to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
    UInt,
    List,
}

impl Kind {
    fn expected(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Bool => "true or false",
            Kind::UInt => "a whole number",
            Kind::List => "an array of strings",
        }
    }
}

/// One setting: `[section] name`, env `BREADBOX_<SECTION>_<NAME>`.
#[derive(Debug)]
struct Key {
    section: &'static str,
    name: &'static str,
    kind: Kind,
}

impl Key {
    fn env_var(&self) -> String {
        format!(
            "{ENV_PREFIX}{}_{}",
            self.section.to_ascii_uppercase(),
            self.name.to_ascii_uppercase()
        )
    }
}

const fn key(section: &'static str, name: &'static str, kind: Kind) -> Key {
    Key {
        section,
        name,
        kind,
    }
}

/// Every setting, in the order of `breadbox.toml.example`.
const KEYS: &[Key] = &[
    key("server", "listen", Kind::Str),
    key("server", "public_url", Kind::Str),
    key("server", "trust_forwarded_headers", Kind::Bool),
    key("database", "path", Kind::Str),
    key("database", "synchronous", Kind::Str),
    key("security", "encryption_key", Kind::Str),
    key("link", "default_ttl_seconds", Kind::UInt),
    key("link", "max_ttl_seconds", Kind::UInt),
    key("link", "allowed_redirect_origins", Kind::List),
    key("plaid", "client_id", Kind::Str),
    key("plaid", "secret", Kind::Str),
    key("plaid", "environment", Kind::Str),
    key("plaid", "base_url", Kind::Str),
    key("plaid", "client_name", Kind::Str),
    key("plaid", "products", Kind::List),
    key("plaid", "country_codes", Kind::List),
    key("plaid", "language", Kind::Str),
    key("plaid", "webhook_url", Kind::Str),
    key("plaid", "redirect_uri", Kind::Str),
    key("teller", "application_id", Kind::Str),
    key("teller", "environment", Kind::Str),
    key("teller", "certificate_path", Kind::Str),
    key("teller", "private_key_path", Kind::Str),
    key("teller", "base_url", Kind::Str),
    key("teller", "webhook_signing_secrets", Kind::List),
    key("webhooks", "url", Kind::Str),
    key("webhooks", "secret", Kind::Str),
    key("connections", "health_check_interval", Kind::Str),
    key("limits", "bad_token_per_minute", Kind::UInt),
    key("limits", "api_per_minute", Kind::UInt),
    key("limits", "bad_api_key_per_minute", Kind::UInt),
    key("log", "level", Kind::Str),
    key("retention", "link_sessions", Kind::Str),
    key("retention", "webhook_deliveries", Kind::Str),
    key("mcp", "enabled", Kind::Bool),
];

const ENV_PREFIX: &str = "BREADBOX_";
/// Names the config file; read by `load` before the other variables.
const ENV_CONFIG: &str = "BREADBOX_CONFIG";
/// `BREADBOX_CONFIG`, the log filter variable and the key `breadbox mcp`
/// acts as are not settings.
const ENV_IGNORED: [&str; 3] = [ENV_CONFIG, "BREADBOX_LOG", "BREADBOX_API_KEY"];

/// A value as read from TOML or the environment, before key-specific checks.
enum Raw {
    Str(String),
    Bool(bool),
    UInt(i64),
    List(Vec<String>),
}

/// Load config: file (flags.config, else env BREADBOX_CONFIG, else none), then env, then flags; then validate.
pub fn load<I: IntoIterator<Item = (String, String)>>(
    flags: &Flags,
    env: I,
) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    let file = flags.config.clone().or_else(|| {
        env.iter()
            .rev()
            .find(|(k, _)| k == ENV_CONFIG)
            .filter(|(_, v)| !v.is_empty())
            .map(|(_, v)| PathBuf::from(v))
    });
    let mut config = Config::default();
    if let Some(path) = file {
        let text = read_config_file(&path)?;
        let mut table = toml::from_str::<toml::Table>(&text)
            .map_err(|e| err(format!("config file {}: invalid TOML: {e}", path.display())))?;
        let abs = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
        if let Some(dir) = abs.parent() {
            resolve_relative_paths(&mut table, dir);
        }
        apply_table(&mut config, &table)?;
    }
    apply_env(&mut config, &env)?;
    apply_flags(&mut config, flags)?;
    config.validate()?;
    Ok(config)
}

/// Settings that name a file. A relative value in a config file means
/// "relative to that file's directory" (so `path = "breadbox.db"` in
/// `/etc/breadbox/breadbox.toml` is `/etc/breadbox/breadbox.db` whatever the
/// working directory); values from the environment or flags stay relative to
/// the working directory.
const PATH_KEYS: &[(&str, &str)] = &[
    ("database", "path"),
    ("teller", "certificate_path"),
    ("teller", "private_key_path"),
];

/// Rewrite the relative [`PATH_KEYS`] values in `table` against `dir`.
fn resolve_relative_paths(table: &mut toml::Table, dir: &Path) {
    for (section, name) in PATH_KEYS {
        let value = table
            .get_mut(*section)
            .and_then(toml::Value::as_table_mut)
            .and_then(|t| t.get_mut(*name));
        if let Some(toml::Value::String(s)) = value {
            if !s.is_empty() && Path::new(s.as_str()).is_relative() {
                *s = dir.join(s.as_str()).to_string_lossy().into_owned();
            }
        }
    }
}

/// Parse a TOML string only (no env, no flags), validated — used to test breadbox.toml.example.
pub fn from_toml_str(s: &str) -> Result<Config, ConfigError> {
    let table = toml::from_str::<toml::Table>(s).map_err(|e| err(format!("invalid TOML: {e}")))?;
    let mut config = Config::default();
    apply_table(&mut config, &table)?;
    config.validate()?;
    Ok(config)
}

impl Config {
    /// Cross-field checks that single values can't express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let link = &self.link;
        if link.max_ttl_seconds > MAX_TTL_SECONDS {
            return Err(err(format!(
                "link.max_ttl_seconds: must be at most {MAX_TTL_SECONDS} (got {})",
                link.max_ttl_seconds
            )));
        }
        if link.default_ttl_seconds == 0 {
            return Err(err("link.default_ttl_seconds: must be at least 1"));
        }
        if link.default_ttl_seconds > link.max_ttl_seconds {
            return Err(err(format!(
                "link.default_ttl_seconds ({}) must not exceed link.max_ttl_seconds ({})",
                link.default_ttl_seconds, link.max_ttl_seconds
            )));
        }

        match (&self.plaid.client_id, &self.plaid.secret) {
            (Some(_), None) => {
                return Err(err("plaid.secret is required when plaid.client_id is set"))
            }
            (None, Some(_)) => {
                return Err(err("plaid.client_id is required when plaid.secret is set"))
            }
            _ => {}
        }

        let teller = &self.teller;
        match (&teller.certificate_path, &teller.private_key_path) {
            (Some(_), None) => {
                return Err(err(
                    "teller.private_key_path is required when teller.certificate_path is set",
                ))
            }
            (None, Some(_)) => {
                return Err(err(
                    "teller.certificate_path is required when teller.private_key_path is set",
                ))
            }
            (None, None)
                if teller.is_configured() && teller.environment != TellerEnvironment::Sandbox =>
            {
                return Err(err(format!(
                    "teller.certificate_path and teller.private_key_path are required when \
                     teller.environment is \"{}\" (Teller authenticates with an mTLS client \
                     certificate outside sandbox)",
                    teller.environment.as_str()
                )));
            }
            _ => {}
        }

        if let (Some(uri), Some(public)) = (&self.plaid.redirect_uri, &self.server.public_url) {
            let base = without_trailing_slash(public);
            let under = uri.origin() == public.origin()
                && (uri.path() == public.path().trim_end_matches('/')
                    || uri.as_str().starts_with(&format!("{base}/")));
            if !under {
                return Err(err(format!(
                    "plaid.redirect_uri ({uri}) must be under server.public_url ({base})"
                )));
            }
        }
        if self.webhooks.url.is_some() && self.webhooks.secret.is_none() {
            return Err(err("webhooks.secret is required when webhooks.url is set"));
        }
        Ok(())
    }
}

fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            err(format!("config file {} not found", path.display()))
        } else {
            err(format!("cannot read config file {}: {e}", path.display()))
        }
    })
}

fn apply_table(config: &mut Config, table: &toml::Table) -> Result<(), ConfigError> {
    for (section, value) in table {
        let Some(entries) = value.as_table() else {
            return Err(err(format!(
                "unknown key {section} (settings belong in a section such as [server])"
            )));
        };
        if !KEYS.iter().any(|k| k.section == section) {
            let mut known: Vec<&str> = KEYS.iter().map(|k| k.section).collect();
            known.dedup();
            return Err(err(format!(
                "unknown section [{section}] (known sections: {})",
                known.join(", ")
            )));
        }
        for (name, value) in entries {
            let dotted = format!("{section}.{name}");
            let Some(key) = KEYS.iter().find(|k| k.section == section && k.name == name) else {
                let known: Vec<&str> = KEYS
                    .iter()
                    .filter(|k| k.section == section)
                    .map(|k| k.name)
                    .collect();
                return Err(err(format!(
                    "unknown key {dotted} (known keys in [{section}]: {})",
                    known.join(", ")
                )));
            };
            let raw = raw_from_toml(&dotted, key.kind, value)?;
            apply(config, key, raw, &dotted)?;
        }
    }
    Ok(())
}

fn raw_from_toml(name: &str, kind: Kind, value: &toml::Value) -> Result<Raw, ConfigError> {
    use toml::Value;
    let raw = match (kind, value) {
        (Kind::Str, Value::String(s)) => Some(Raw::Str(s.clone())),
        (Kind::Bool, Value::Boolean(b)) => Some(Raw::Bool(*b)),
        (Kind::UInt, Value::Integer(i)) => Some(Raw::UInt(*i)),
        (Kind::List, Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Raw::List),
        _ => None,
    };
    raw.ok_or_else(|| err(format!("{name}: expected {}", kind.expected())))
}

fn apply_env(config: &mut Config, env: &[(String, String)]) -> Result<(), ConfigError> {
    let mut vars: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !ENV_IGNORED.contains(&k.as_str()))
        .collect();
    // Stable sort: errors come out in a fixed order; a repeated name keeps last-wins.
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in vars {
        let Some(key) = KEYS.iter().find(|k| k.env_var() == *name) else {
            return Err(err(format!(
                "unknown environment variable {name} (no such setting; see breadbox.toml.example)"
            )));
        };
        let raw = raw_from_env(name, key.kind, value)?;
        apply(config, key, raw, name)?;
    }
    Ok(())
}

fn raw_from_env(name: &str, kind: Kind, value: &str) -> Result<Raw, ConfigError> {
    Ok(match kind {
        Kind::Str => Raw::Str(value.to_owned()),
        Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Raw::Bool(true),
            "false" | "0" => Raw::Bool(false),
            _ => return Err(err(format!("{name}: expected true, false, 1 or 0"))),
        },
        Kind::UInt => Raw::UInt(
            value
                .trim()
                .parse()
                .map_err(|_| err(format!("{name}: expected a whole number")))?,
        ),
        Kind::List => Raw::List(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
    })
}

fn apply_flags(config: &mut Config, flags: &Flags) -> Result<(), ConfigError> {
    if let Some(path) = &flags.database {
        if path.as_os_str().is_empty() {
            return Err(err("--database: must not be empty"));
        }
        config.database.path = path.clone();
    }
    if let Some(listen) = &flags.listen {
        config.server.listen = parse_listen(listen, "--listen")?;
    }
    if let Some(url) = &flags.public_url {
        config.server.public_url = parse_url(url, "--public-url", UrlRules::BASE)?;
    }
    Ok(())
}

/// Sets one key from a raw value; `name` is what errors call it.
fn apply(config: &mut Config, key: &Key, raw: Raw, name: &str) -> Result<(), ConfigError> {
    use Raw::{Bool, List, Str, UInt};
    let c = config;
    match (key.section, key.name, raw) {
        ("server", "listen", Str(s)) => c.server.listen = parse_listen(&s, name)?,
        ("server", "public_url", Str(s)) => {
            c.server.public_url = parse_url(&s, name, UrlRules::BASE)?
        }
        ("server", "trust_forwarded_headers", Bool(b)) => c.server.trust_forwarded_headers = b,
        ("database", "path", Str(s)) => {
            if s.is_empty() {
                return Err(err(format!("{name}: must not be empty")));
            }
            c.database.path = PathBuf::from(s);
        }
        ("database", "synchronous", Str(s)) => {
            c.database.synchronous = match one_of(&s, name, &["full", "normal"])? {
                "full" => Synchronous::Full,
                _ => Synchronous::Normal,
            }
        }
        ("security", "encryption_key", Str(s)) => {
            c.security.encryption_key = match non_empty(s) {
                Some(k) if decode_key(&k).is_none() => {
                    return Err(err(format!(
                        "{name}: must be 32 bytes written as 64 hex characters or as base64 \
                         (e.g. the output of `openssl rand -hex 32`)"
                    )))
                }
                k => k.map(Secret),
            }
        }
        ("link", "default_ttl_seconds", UInt(n)) => c.link.default_ttl_seconds = to_u32(n, name)?,
        ("link", "max_ttl_seconds", UInt(n)) => c.link.max_ttl_seconds = to_u32(n, name)?,
        ("link", "allowed_redirect_origins", List(v)) => {
            c.link.allowed_redirect_origins = v
                .iter()
                .map(|o| parse_origin(o, name))
                .collect::<Result<_, _>>()?
        }
        ("plaid", "client_id", Str(s)) => c.plaid.client_id = non_empty(s),
        ("plaid", "secret", Str(s)) => c.plaid.secret = non_empty(s).map(Secret),
        ("plaid", "environment", Str(s)) => {
            c.plaid.environment = match one_of(&s, name, &["sandbox", "production", "development"])?
            {
                "production" => PlaidEnvironment::Production,
                // Plaid retired Development; its free real-data tier is Production now.
                _ => PlaidEnvironment::Sandbox,
            }
        }
        ("plaid", "base_url", Str(s)) => c.plaid.base_url = parse_url(&s, name, UrlRules::BASE)?,
        ("plaid", "client_name", Str(s)) => {
            let len = s.chars().count();
            if s.trim().is_empty() || len > 30 {
                return Err(err(format!(
                    "{name}: must be 1 to 30 characters (got {len}; Plaid shows longer names \
                     as \"This Application\")"
                )));
            }
            c.plaid.client_name = s;
        }
        ("plaid", "products", List(v)) => {
            if v.is_empty() {
                return Err(err(format!("{name}: must list at least one product")));
            }
            for p in &v {
                let ok = !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !ok {
                    return Err(err(format!(
                        "{name}: invalid product \"{p}\" (expected a Plaid product such as \"transactions\")"
                    )));
                }
                if p == "balance" {
                    return Err(err(format!(
                        "{name}: \"balance\" cannot be requested in Plaid Link"
                    )));
                }
            }
            c.plaid.products = v;
        }
        ("plaid", "country_codes", List(v)) => {
            if v.is_empty() {
                return Err(err(format!("{name}: must list at least one country code")));
            }
            if let Some(bad) = v
                .iter()
                .find(|cc| cc.len() != 2 || !cc.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return Err(err(format!(
                    "{name}: invalid country code \"{bad}\" (expected two uppercase letters, e.g. \"US\")"
                )));
            }
            c.plaid.country_codes = v;
        }
        ("plaid", "language", Str(s)) => {
            if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_lowercase()) {
                return Err(err(format!(
                    "{name}: invalid language \"{s}\" (expected a two-letter code such as \"en\")"
                )));
            }
            c.plaid.language = s;
        }
        ("plaid", "webhook_url", Str(s)) => {
            c.plaid.webhook_url = parse_url(&s, name, UrlRules::ENDPOINT)?
        }
        ("plaid", "redirect_uri", Str(s)) => {
            c.plaid.redirect_uri = parse_url(&s, name, UrlRules::BASE)?;
            if let Some(u) = &c.plaid.redirect_uri {
                check_redirect_uri(u, name)?;
            }
        }
        ("teller", "application_id", Str(s)) => c.teller.application_id = non_empty(s),
        ("teller", "webhook_signing_secrets", List(v)) => {
            if v.iter().any(|s| s.trim().is_empty()) {
                return Err(err(format!("{name}: a secret must not be empty")));
            }
            c.teller.webhook_signing_secrets = v.into_iter().map(Secret).collect();
        }
        ("connections", "health_check_interval", Str(s)) => {
            c.connections.health_check_interval = parse_duration(&s, name, true)?
        }
        ("teller", "environment", Str(s)) => {
            c.teller.environment =
                match one_of(&s, name, &["sandbox", "development", "production"])? {
                    "development" => TellerEnvironment::Development,
                    "production" => TellerEnvironment::Production,
                    _ => TellerEnvironment::Sandbox,
                }
        }
        ("teller", "certificate_path", Str(s)) => {
            c.teller.certificate_path = non_empty(s).map(PathBuf::from)
        }
        ("teller", "private_key_path", Str(s)) => {
            c.teller.private_key_path = non_empty(s).map(PathBuf::from)
        }
        ("teller", "base_url", Str(s)) => c.teller.base_url = parse_url(&s, name, UrlRules::BASE)?,
        ("webhooks", "url", Str(s)) => c.webhooks.url = parse_url(&s, name, UrlRules::ENDPOINT)?,
        ("webhooks", "secret", Str(s)) => {
            c.webhooks.secret = match non_empty(s) {
                Some(k) if decode_webhook_secret(&k).is_none() => {
                    return Err(err(format!(
                        "{name}: must be \"whsec_\" followed by standard base64 of at least 16 \
                         random bytes (e.g. \"whsec_$(openssl rand -base64 32)\")"
                    )))
                }
                k => k.map(Secret),
            }
        }
        ("limits", "bad_token_per_minute", UInt(n)) => {
            c.limits.bad_token_per_minute = to_u32(n, name)?
        }
        ("limits", "api_per_minute", UInt(n)) => c.limits.api_per_minute = to_u32(n, name)?,
        ("limits", "bad_api_key_per_minute", UInt(n)) => {
            c.limits.bad_api_key_per_minute = to_u32(n, name)?
        }
        ("log", "level", Str(s)) => {
            c.log.level = match one_of(&s, name, &["error", "warn", "info", "debug", "trace"])? {
                "error" => LogLevel::Error,
                "warn" => LogLevel::Warn,
                "debug" => LogLevel::Debug,
                "trace" => LogLevel::Trace,
                _ => LogLevel::Info,
            }
        }
        ("retention", "link_sessions", Str(s)) => {
            c.retention.link_sessions = parse_duration(&s, name, false)?
        }
        ("retention", "webhook_deliveries", Str(s)) => {
            c.retention.webhook_deliveries = parse_duration(&s, name, false)?
        }
        ("mcp", "enabled", Bool(b)) => c.mcp.enabled = b,
        // Only reachable if KEYS and this match disagree; the tests cover every key.
        _ => return Err(err(format!("unknown key {}.{}", key.section, key.name))),
    }
    Ok(())
}

/// `plaid.redirect_uri`: https (http only on a loopback host), and a path
/// that no other route of the server owns.
fn check_redirect_uri(u: &Url, name: &str) -> Result<(), ConfigError> {
    let loopback = matches!(
        u.host(),
        Some(url::Host::Domain("localhost"))
            | Some(url::Host::Ipv4(std::net::Ipv4Addr::LOCALHOST))
            | Some(url::Host::Ipv6(std::net::Ipv6Addr::LOCALHOST))
    );
    if u.scheme() != "https" && !loopback {
        return Err(err(format!(
            "{name}: must be an https URL (Plaid requires it outside localhost)"
        )));
    }
    let path = u.path();
    let reserved = [
        "/api/",
        "/_link/",
        "/assets/",
        "/webhooks/",
        "/health/",
        "/mcp",
    ];
    if path == "/" || path == "/openapi.json" || reserved.iter().any(|r| path.starts_with(r)) {
        return Err(err(format!(
            "{name}: its path {path} is used by the server itself; pick e.g. /oauth-return"
        )));
    }
    Ok(())
}

/// Empty means "not set", so env vars and TOML can unset optional values.
fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Case-insensitive match against `allowed`; returns the canonical spelling.
fn one_of(value: &str, name: &str, allowed: &[&'static str]) -> Result<&'static str, ConfigError> {
    let v = value.trim().to_ascii_lowercase();
    allowed.iter().copied().find(|a| *a == v).ok_or_else(|| {
        let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        err(format!(
            "{name}: invalid value \"{value}\" (expected one of {})",
            list.join(", ")
        ))
    })
}

fn to_u32(n: i64, name: &str) -> Result<u32, ConfigError> {
    u32::try_from(n).map_err(|_| {
        err(format!(
            "{name}: must be a whole number from 0 to {} (got {n})",
            u32::MAX
        ))
    })
}

/// A duration setting (`[connections] health_check_interval`, `[retention]`
/// periods): jiff's friendly format, e.g. `"24h"`, `"400d"`, `"90m"`,
/// `"2d 3h"`, `"30 days"` (days are 24 hours). Where `zero_is_off`, `"0"`
/// (or any zero span) turns the feature off; elsewhere it must be at least
/// one second.
pub fn parse_duration(s: &str, name: &str, zero_is_off: bool) -> Result<Duration, ConfigError> {
    use jiff::{Span, SpanRelativeTo, Unit};
    let bad = || {
        err(format!(
            "{name}: invalid duration \"{s}\" (expected e.g. \"24h\", \"400d\", \"90m\" or \"30s\"; \
             units: d, h, m, s{})",
            if zero_is_off { "; \"0\" turns it off" } else { "" }
        ))
    };
    let text = s.trim();
    if zero_is_off && text == "0" {
        return Ok(Duration::ZERO);
    }
    let span: Span = text.parse().map_err(|_| bad())?;
    let secs = span
        .total((Unit::Second, SpanRelativeTo::days_are_24_hours()))
        .map_err(|_| bad())?;
    if secs == 0.0 && zero_is_off {
        return Ok(Duration::ZERO);
    }
    if !(1.0..=1e12).contains(&secs) {
        return Err(err(format!(
            "{name}: must be at least one second (got \"{s}\")"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_listen(s: &str, name: &str) -> Result<SocketAddr, ConfigError> {
    s.trim()
        .parse()
        .map_err(|_| err(format!("{name}: invalid socket address \"{s}\"")))
}

/// What a URL setting may contain beyond an absolute http(s) URL.
#[derive(Clone, Copy)]
struct UrlRules {
    allow_query: bool,
}

impl UrlRules {
    /// A base that paths are appended to: no query.
    const BASE: UrlRules = UrlRules { allow_query: false };
    /// A full endpoint URL: a query is fine.
    const ENDPOINT: UrlRules = UrlRules { allow_query: true };
}

/// Absolute http(s) URL without credentials or fragment; "" = unset.
fn parse_url(s: &str, name: &str, rules: UrlRules) -> Result<Option<Url>, ConfigError> {
    if s.is_empty() {
        return Ok(None);
    }
    let url = Url::parse(s).map_err(|e| err(format!("{name}: invalid URL \"{s}\": {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(err(format!(
            "{name}: must be an absolute http or https URL (got \"{s}\")"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(format!(
            "{name}: must not contain a user name or password"
        )));
    }
    if url.fragment().is_some() || (!rules.allow_query && url.query().is_some()) {
        return Err(err(format!(
            "{name}: must not have a {} (got \"{s}\")",
            if rules.allow_query {
                "fragment"
            } else {
                "query or fragment"
            }
        )));
    }
    Ok(Some(url))
}

/// `scheme://host[:port]` → its normalised ASCII serialization.
fn parse_origin(s: &str, name: &str) -> Result<String, ConfigError> {
    let not_origin = || {
        err(format!(
            "{name}: \"{s}\" is not an origin (expected scheme://host[:port], e.g. \
             \"https://example.com\" or \"http://localhost:3000\")"
        ))
    };
    let url = Url::parse(s).map_err(|_| not_origin())?;
    let is_origin = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    if !is_origin {
        return Err(not_origin());
    }
    Ok(url.origin().ascii_serialization())
}

fn without_trailing_slash(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

/// Standard or URL-safe base64, padding optional.
const BASE64_ENGINES: [GeneralPurpose; 2] = [
    GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    ),
    GeneralPurpose::new(
        &alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    ),
];

/// 64 hex characters or base64 of exactly 32 bytes.
fn decode_key(s: &str) -> Option<[u8; 32]> {
    let bytes = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        decode_hex(s)?
    } else {
        BASE64_ENGINES.iter().find_map(|e| e.decode(s).ok())?
    };
    bytes.try_into().ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s
        .chars()
        .map(|c| c.to_digit(16).and_then(|d| u8::try_from(d).ok()))
        .collect::<Option<_>>()?;
    let pairs = digits.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    Some(pairs.map(|p| (p[0] << 4) | p[1]).collect())
}

/// `whsec_` + standard base64 of at least 16 bytes (Standard Webhooks).
fn decode_webhook_secret(s: &str) -> Option<Vec<u8>> {
    let bytes = BASE64_ENGINES[0].decode(s.strip_prefix("whsec_")?).ok()?;
    (bytes.len() >= 16).then_some(bytes)
}

#[cfg(test)]
mod tests;
