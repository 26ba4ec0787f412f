//! Teller API client: list an enrollment's accounts and delete an
//! enrollment.
//!
//! Calls authenticate with HTTP Basic (username = access token, empty
//! password) and, in development and production, an mTLS client certificate.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use url::Url;

use super::{http_client, redact, transport_error, ClientOptions, ProviderError, SetupError};
use crate::config::{TellerConfig, TellerEnvironment};

/// A Teller API client for one application.
#[derive(Clone)]
pub struct TellerClient {
    http: reqwest::Client,
    base: Url,
    application_id: String,
    environment: TellerEnvironment,
    has_certificate: bool,
}

/// A bank account of an enrollment, as `GET /accounts` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Account {
    /// Account id (`acc_…`).
    pub id: String,
    /// The enrollment (bank login) the account belongs to (`enr_…`).
    pub enrollment_id: String,
    /// Account name as the bank shows it.
    pub name: String,
    /// Last four digits of the account number.
    #[serde(default)]
    pub last_four: Option<String>,
    /// `depository` or `credit`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// e.g. `checking`, `credit_card`.
    #[serde(default)]
    pub subtype: Option<String>,
    /// The account's institution.
    pub institution: Institution,
}

/// A Teller institution.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Institution {
    /// Institution id, e.g. `chase`.
    pub id: String,
    /// Institution display name.
    pub name: String,
}

impl Account {
    /// The account as a connection stores it.
    pub fn to_domain(&self) -> crate::domain::connection::Account {
        crate::domain::connection::Account {
            id: self.id.clone(),
            name: self.name.clone(),
            mask: self.last_four.clone(),
            kind: self.kind.clone().unwrap_or_else(|| "other".to_owned()),
            subtype: self.subtype.clone(),
        }
    }
}

/// Whether a failed Teller call may succeed when the person tries again.
/// Not when Teller refuses our application or certificate (401, a 400
/// about the certificate, a 403 that is not about the enrollment).
pub fn is_retryable(e: &ProviderError) -> bool {
    match e {
        ProviderError::Api {
            status,
            code,
            message,
            ..
        } => match status {
            401 => false,
            403 => code.starts_with("enrollment."),
            400 => {
                !(message.to_ascii_lowercase().contains("certificate")
                    || code.contains("certificate"))
            }
            _ => true,
        },
        _ => true,
    }
}

/// Whether a Teller error means the enrollment needs the person to sign in
/// again (403, or 404 `enrollment.disconnected…`).
pub fn needs_reauth(e: &ProviderError) -> bool {
    matches!(e, ProviderError::Api { status: 403, .. })
        || matches!(e, ProviderError::Api { status: 404, code, .. } if code.starts_with("enrollment.disconnected"))
}

/// Teller's error envelope `{"error":{"code","message"}}`.
#[derive(Deserialize)]
struct TellerErrorBody {
    error: TellerErrorFields,
}

#[derive(Deserialize)]
struct TellerErrorFields {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl TellerClient {
    /// Builds a client from `[teller]`; loads the mTLS certificate and key
    /// when configured (required outside sandbox).
    pub fn new(cfg: &TellerConfig, opts: ClientOptions) -> Result<Self, SetupError> {
        let application_id = cfg
            .application_id
            .clone()
            .ok_or_else(|| SetupError::new("teller.application_id is required to use Teller"))?;
        let env = cfg.environment.as_str();
        let paths = match (&cfg.certificate_path, &cfg.private_key_path) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) if cfg.environment == TellerEnvironment::Sandbox => None,
            (None, None) => {
                return Err(SetupError::new(format!(
                    "teller.certificate_path and teller.private_key_path are required \
                     when teller.environment = \"{env}\""
                )))
            }
            (Some(_), None) => {
                return Err(SetupError::new(
                    "teller.private_key_path is required when teller.certificate_path is set",
                ))
            }
            (None, Some(_)) => {
                return Err(SetupError::new(
                    "teller.certificate_path is required when teller.private_key_path is set",
                ))
            }
        };
        let identity = paths.map(|(c, k)| load_identity(c, k)).transpose()?;
        let http = http_client(&opts, identity).map_err(|e| match paths {
            Some((c, k)) => SetupError::new(format!(
                "teller client certificate {} and private key {} do not form a usable pair: {e}",
                c.display(),
                k.display()
            )),
            None => SetupError::new(format!("cannot set up the Teller HTTP client: {e}")),
        })?;
        let base = Url::parse(&cfg.api_base())
            .ok()
            .filter(|u| !u.cannot_be_a_base())
            .ok_or_else(|| SetupError::new("teller.base_url is not a usable base URL"))?;
        Ok(TellerClient {
            http,
            base,
            application_id,
            environment: cfg.environment,
            has_certificate: paths.is_some(),
        })
    }

    /// The Teller application id (`app_…`) for Teller Connect.
    pub fn application_id(&self) -> &str {
        &self.application_id
    }

    /// The Teller environment name for Teller Connect.
    pub fn environment(&self) -> &'static str {
        self.environment.as_str()
    }

    /// `GET /accounts`: the accounts the access token can see.
    pub async fn list_accounts(&self, access_token: &str) -> Result<Vec<Account>, ProviderError> {
        let resp = self
            .http
            .get(self.url(&["accounts"])?)
            .basic_auth(access_token, None::<&str>)
            .send()
            .await
            .map_err(transport_error)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(transport_error)?;
        log::debug!("teller GET /accounts -> {status}");
        if !(200..300).contains(&status) {
            return Err(api_error(status, &bytes, &[access_token]));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            // serde_json can quote values from the body; report the position only.
            ProviderError::InvalidResponse(format!(
                "Teller /accounts: body is not the expected JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })
    }

    /// `DELETE /enrollments/{id}`: revokes the enrollment; an enrollment that
    /// is already gone (404) counts as deleted.
    pub async fn delete_enrollment(
        &self,
        access_token: &str,
        enrollment_id: &str,
    ) -> Result<(), ProviderError> {
        let resp = self
            .http
            .delete(self.url(&["enrollments", enrollment_id])?)
            .basic_auth(access_token, None::<&str>)
            .send()
            .await
            .map_err(transport_error)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(transport_error)?;
        log::debug!("teller DELETE /enrollments/{{id}} -> {status}");
        match status {
            200..=299 | 404 => Ok(()),
            _ => Err(api_error(status, &bytes, &[access_token])),
        }
    }

    /// The base URL with `segments` appended (each percent-encoded).
    fn url(&self, segments: &[&str]) -> Result<Url, ProviderError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ProviderError::Transport("Teller base URL cannot take a path".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }
}

impl fmt::Debug for TellerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TellerClient")
            .field("base", &self.base.as_str())
            .field("application_id", &self.application_id)
            .field("environment", &self.environment())
            .field("has_certificate", &self.has_certificate)
            .finish_non_exhaustive()
    }
}

/// Reads the PEM certificate and key files into one mTLS identity.
fn load_identity(cert_path: &Path, key_path: &Path) -> Result<reqwest::Identity, SetupError> {
    let read = |key: &str, path: &Path| {
        std::fs::read(path).map_err(|e| {
            SetupError::new(format!("cannot read teller.{key} {}: {e}", path.display()))
        })
    };
    let cert = read("certificate_path", cert_path)?;
    let key = read("private_key_path", key_path)?;
    if !contains(&cert, b"-----BEGIN CERTIFICATE-----") {
        return Err(SetupError::new(format!(
            "teller.certificate_path {} is not a PEM certificate",
            cert_path.display()
        )));
    }
    if !contains(&key, b"PRIVATE KEY-----") {
        return Err(SetupError::new(format!(
            "teller.private_key_path {} is not a PEM private key",
            key_path.display()
        )));
    }
    let mut pem = cert;
    pem.push(b'\n');
    pem.extend_from_slice(&key);
    reqwest::Identity::from_pem(&pem).map_err(|e| {
        SetupError::new(format!(
            "teller client certificate {} and private key {} are not a valid PEM pair: {e}",
            cert_path.display(),
            key_path.display()
        ))
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Turns a non-2xx Teller answer into [`ProviderError::Api`]. Teller's
/// messages are meant for developers, so no display message is passed on.
fn api_error(status: u16, body: &[u8], secrets: &[&str]) -> ProviderError {
    let fields = serde_json::from_slice::<TellerErrorBody>(body).ok();
    let (code, message) = match fields {
        Some(TellerErrorBody { error }) => (error.code, error.message),
        None => (None, None),
    };
    ProviderError::Api {
        status,
        code: code.unwrap_or_else(|| format!("HTTP_{status}")),
        message: message
            .map(|m| redact(&m, secrets))
            .unwrap_or_else(|| format!("Teller answered HTTP {status} without an error object")),
        display_message: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_parses_teller_error() {
        let body = br#"{"error":{"code":"enrollment.disconnected","message":"token_abc is gone"}}"#;
        let e = api_error(404, body, &["token_abc"]);
        assert_eq!(
            e,
            ProviderError::Api {
                status: 404,
                code: "enrollment.disconnected".into(),
                message: "[redacted] is gone".into(),
                display_message: None,
            }
        );
        let e = api_error(502, b"", &[]);
        assert!(matches!(e, ProviderError::Api { ref code, .. } if code == "HTTP_502"));
    }

    #[test]
    fn retryable_or_final() {
        let e = |status: u16, code: &str, message: &str| ProviderError::Api {
            status,
            code: code.into(),
            message: message.into(),
            display_message: None,
        };
        assert!(!is_retryable(&e(401, "unauthorized", "")));
        assert!(!is_retryable(&e(400, "bad_request", "Missing certificate")));
        assert!(!is_retryable(&e(
            403,
            "forbidden",
            "application not allowed"
        )));
        assert!(is_retryable(&e(403, "enrollment.disconnected", "")));
        assert!(is_retryable(&e(502, "bank_error", "")));
        assert!(needs_reauth(&e(
            404,
            "enrollment.disconnected.account_locked",
            ""
        )));
        assert!(!needs_reauth(&e(404, "not_found", "")));
    }

    #[test]
    fn development_without_certificate_is_an_error() {
        let cfg = TellerConfig {
            application_id: Some("app_x".into()),
            environment: TellerEnvironment::Development,
            ..TellerConfig::default()
        };
        let e = TellerClient::new(&cfg, ClientOptions::default()).err();
        assert!(e.is_some_and(|e| e.to_string().contains("certificate_path")));
    }
}
