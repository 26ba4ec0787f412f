//! Plaid and Teller HTTPS clients: the shared HTTP client setup and the
//! error type every provider call returns.
//!
//! Error messages, `Display` and `Debug` output never contain access tokens,
//! secrets or request bodies, so they are safe to log.

pub mod plaid;
pub mod teller;

use std::fmt;
use std::time::Duration;

use crate::config::{PlaidConfig, TellerConfig};

/// Total time one provider call may take (connect, send, read the answer).
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest time spent establishing a connection (TCP + TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The clients of the providers configured on this server.
#[derive(Debug, Default)]
pub struct Providers {
    /// Plaid client, when `[plaid]` has a client id and secret.
    pub plaid: Option<plaid::PlaidClient>,
    /// Teller client, when `[teller]` has an application id.
    pub teller: Option<teller::TellerClient>,
}

impl Providers {
    /// Builds a client for each configured provider with default options.
    pub fn from_config(plaid: &PlaidConfig, teller: &TellerConfig) -> Result<Self, SetupError> {
        Self::with_options(plaid, teller, &ClientOptions::default())
    }

    /// Like [`Providers::from_config`] with explicit options (tests shorten
    /// the timeout or trust a test CA).
    pub fn with_options(
        plaid: &PlaidConfig,
        teller: &TellerConfig,
        opts: &ClientOptions,
    ) -> Result<Self, SetupError> {
        let plaid = if plaid.is_configured() {
            Some(plaid::PlaidClient::new(plaid, opts.clone())?)
        } else {
            None
        };
        let teller = if teller.is_configured() {
            Some(teller::TellerClient::new(teller, opts.clone())?)
        } else {
            None
        };
        Ok(Providers { plaid, teller })
    }
}

/// Options for the HTTP client behind a provider client.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Total time a call may take (default [`PROVIDER_TIMEOUT`]).
    pub timeout: Duration,
    /// Extra PEM CA certificate(s) to trust besides the built-in roots.
    pub extra_root_pem: Option<Vec<u8>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: PROVIDER_TIMEOUT,
            extra_root_pem: None,
        }
    }
}

/// A provider client could not be set up; the server must not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupError(String);

impl SetupError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        SetupError(message.into())
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

/// A provider call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderError {
    /// The provider answered with an error status.
    Api {
        /// HTTP status code.
        status: u16,
        /// The provider's error code, e.g. `ITEM_LOGIN_REQUIRED`.
        code: String,
        /// The provider's developer-facing message.
        message: String,
        /// A message the provider meant to be shown to the person.
        display_message: Option<String>,
    },
    /// No complete answer within the timeout.
    Timeout,
    /// The provider could not be reached (DNS, TCP, TLS, HTTP).
    Transport(String),
    /// The provider answered 2xx with a body we could not understand.
    InvalidResponse(String),
}

impl ProviderError {
    /// A short code for timelines: the provider's error code, or
    /// `TIMEOUT`, `UNREACHABLE`, `INVALID_RESPONSE`.
    pub fn code(&self) -> &str {
        match self {
            ProviderError::Api { code, .. } => code,
            ProviderError::Timeout => "TIMEOUT",
            ProviderError::Transport(_) => "UNREACHABLE",
            ProviderError::InvalidResponse(_) => "INVALID_RESPONSE",
        }
    }

    /// The provider asked us to slow down (HTTP 429, Plaid `RATE_LIMIT_EXCEEDED` codes).
    pub fn is_rate_limited(&self) -> bool {
        match self {
            ProviderError::Api { status, code, .. } => {
                *status == 429 || code.ends_with("_LIMIT") || code == "RATE_LIMIT_EXCEEDED"
            }
            _ => false,
        }
    }

    /// A sentence for the person when retrying cannot help: the provider's
    /// display message when it has one, else a plain generic one.
    pub fn public_message_final(&self) -> String {
        match self {
            ProviderError::Api {
                display_message: Some(m),
                ..
            } if !m.trim().is_empty() => m.clone(),
            _ => "The bank connection service refused this request. Trying again won't help; \
                  the person who sent you this link has been told."
                .to_owned(),
        }
    }

    /// A sentence that may be shown to the person: the provider's display
    /// message when it has one, else a short generic one.
    pub fn public_message(&self) -> String {
        let generic = match self {
            ProviderError::Api {
                display_message: Some(m),
                ..
            } if !m.trim().is_empty() => return m.clone(),
            ProviderError::Api { .. } => "The bank connection service returned an error, try again",
            ProviderError::Timeout => {
                "The bank connection service took too long to answer, try again"
            }
            ProviderError::Transport(_) => {
                "The bank connection service could not be reached, try again"
            }
            ProviderError::InvalidResponse(_) => {
                "The bank connection service sent an unexpected answer, try again"
            }
        };
        generic.to_owned()
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProviderError::Api {
                status,
                code,
                message,
                ..
            } => write!(f, "provider error (HTTP {status}, {code}): {message}"),
            ProviderError::Timeout => write!(f, "provider did not answer in time"),
            ProviderError::Transport(m) => write!(f, "provider unreachable: {m}"),
            ProviderError::InvalidResponse(m) => write!(f, "unexpected provider response: {m}"),
        }
    }
}

impl std::error::Error for ProviderError {}

/// Builds the HTTP client every provider uses: rustls, no redirects, the
/// timeouts from `opts`, and the optional mTLS identity.
pub(crate) fn http_client(
    opts: &ClientOptions,
    identity: Option<reqwest::Identity>,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(opts.timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(opts.timeout))
        .user_agent(concat!("breadbox/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &opts.extra_root_pem {
        let roots = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("invalid extra root certificate: {}", error_chain(&e)))?;
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
    }
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder.build().map_err(|e| error_chain(&e))
}

/// Maps a reqwest failure (no answer, or an unreadable body) to a
/// [`ProviderError`] without the request URL or body.
pub(crate) fn transport_error(e: reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout
    } else {
        ProviderError::Transport(error_chain(&e.without_url()))
    }
}

/// "outer: cause: root cause", for errors whose `Display` hides the cause.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Replaces every occurrence of the given secrets in provider-supplied text.
pub(crate) fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, "[redacted]");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_message_prefers_display_message() {
        let e = ProviderError::Api {
            status: 400,
            code: "ITEM_LOGIN_REQUIRED".into(),
            message: "the login details of this item have changed".into(),
            display_message: Some("Sign in again".into()),
        };
        assert_eq!(e.public_message(), "Sign in again");
        assert!(ProviderError::Timeout.public_message().contains("too long"));
    }

    #[test]
    fn redact_hides_secrets() {
        assert_eq!(
            redact("bad token access-123 here", &["access-123", ""]),
            "bad token [redacted] here"
        );
    }
}
