//! Plaid API client: link tokens (new Item and update mode), public-token
//! exchange, Item lookup and removal.
//!
//! Every call is a JSON `POST` authenticated with the `PLAID-CLIENT-ID` and
//! `PLAID-SECRET` headers; a non-2xx answer carries Plaid's error object.

use std::fmt;

use reqwest::header::HeaderValue;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{http_client, redact, transport_error, ClientOptions, ProviderError, SetupError};
use crate::config::PlaidConfig;
use crate::domain::connection::Account;

/// The Plaid API version this client speaks.
const PLAID_VERSION: &str = "2020-09-14";

/// Transactions history asked for when an Item is created (Plaid's maximum).
const TRANSACTIONS_DAYS_REQUESTED: u32 = 730;

/// A Plaid API client for one configured environment.
#[derive(Clone)]
pub struct PlaidClient {
    http: reqwest::Client,
    base: String,
    client_id: String,
    secret: HeaderValue,
    client_name: String,
    language: String,
    country_codes: Vec<String>,
    products: Vec<String>,
    webhook: Option<String>,
    redirect_uri: Option<String>,
}

/// A Link token for the Plaid widget.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct LinkToken {
    /// The token given to `Plaid.create`.
    pub link_token: String,
    /// When the token expires (ISO 8601).
    pub expiration: String,
}

/// The result of exchanging a public token: the Item's credential and id.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct Exchanged {
    /// The Item's long-lived access token (store it encrypted only).
    pub access_token: String,
    /// The Item's id.
    pub item_id: String,
}

impl fmt::Debug for Exchanged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchanged")
            .field("access_token", &"[redacted]")
            .field("item_id", &self.item_id)
            .finish()
    }
}

/// What `/item/get` says about an Item: its institution and health.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ItemInfo {
    /// Plaid institution id, e.g. `ins_109508`.
    pub institution_id: Option<String>,
    /// Institution display name.
    pub institution_name: Option<String>,
    /// The Item's standing error (`item.error`), if any.
    pub error: Option<ItemError>,
    /// When the Item's consent ends (`item.consent_expiration_time`, ISO 8601).
    pub consent_expiration_time: Option<String>,
}

/// A Plaid error object as it appears on an Item or in a webhook.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ItemError {
    /// e.g. `ITEM_LOGIN_REQUIRED`.
    pub error_code: String,
    /// Developer-facing message.
    #[serde(default)]
    pub error_message: Option<String>,
}

#[derive(Deserialize)]
struct ItemGetResponse {
    item: ItemFields,
}

#[derive(Deserialize)]
struct ItemFields {
    #[serde(default)]
    institution_id: Option<String>,
    #[serde(default)]
    institution_name: Option<String>,
    #[serde(default)]
    error: Option<ItemError>,
    #[serde(default)]
    consent_expiration_time: Option<String>,
}

#[derive(Deserialize)]
struct AccountsGetResponse {
    accounts: Vec<PlaidAccount>,
}

#[derive(Deserialize)]
struct PlaidAccount {
    account_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    official_name: Option<String>,
    #[serde(default)]
    mask: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    subtype: Option<String>,
}

/// A webhook verification key (`/webhook_verification_key/get`): a P-256 JWK.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct VerificationKey {
    /// Key id, matching the JWT header's `kid`.
    #[serde(default)]
    pub kid: String,
    /// Curve, `P-256`.
    #[serde(default)]
    pub crv: String,
    /// Base64url x coordinate.
    pub x: String,
    /// Base64url y coordinate.
    pub y: String,
    /// When the key was retired (unix seconds); a retired key verifies nothing.
    #[serde(default)]
    pub expired_at: Option<i64>,
}

#[derive(Deserialize)]
struct VerificationKeyResponse {
    key: VerificationKey,
}

/// Plaid error codes that retrying cannot fix: our own credentials, our
/// account's access, products or institutions not available to us.
const FINAL_CODES: &[&str] = &[
    "INVALID_API_KEYS",
    "UNAUTHORIZED_ENVIRONMENT",
    "UNAUTHORIZED_ROUTE_ACCESS",
    "INVALID_PRODUCT",
    "PRODUCTS_NOT_SUPPORTED",
    "PRODUCT_NOT_ENABLED",
    "INSTITUTION_NOT_SUPPORTED",
    "INSTITUTION_NO_LONGER_SUPPORTED",
    "INSTITUTION_NOT_ENABLED_IN_ENVIRONMENT",
    "INVALID_ACCESS_TOKEN",
    "ITEM_NOT_FOUND",
    "ADDITION_LIMIT",
    "INVALID_CONFIGURATION",
    "INVALID_LINK_CUSTOMIZATION",
    "INVALID_FIELD",
    "TOO_MANY_VERIFICATION_ATTEMPTS",
];

/// Whether a failed Plaid call may succeed when the person tries again.
/// Not when our credentials or account are refused (`INVALID_API_KEYS` and
/// other `INVALID_*` request errors), the institution or product is not
/// available, or the request itself is malformed (`INVALID_REQUEST`/`INVALID_INPUT`).
pub fn is_retryable(e: &ProviderError) -> bool {
    match e {
        ProviderError::Api { status, code, .. } => {
            if FINAL_CODES.contains(&code.as_str()) {
                return false;
            }
            // A public token that expired is fixed by running Link again.
            if code == "INVALID_PUBLIC_TOKEN" {
                return true;
            }
            !(code.starts_with("INVALID_") || *status == 401 || *status == 403)
        }
        _ => true,
    }
}

/// Plaid error codes that mean the person must sign in again (Breadbox's
/// list plus `ITEM_LOCKED`).
pub const REAUTH_CODES: &[&str] = &[
    "ITEM_LOGIN_REQUIRED",
    "INSUFFICIENT_CREDENTIALS",
    "INVALID_CREDENTIALS",
    "INVALID_MFA",
    "MFA_NOT_SUPPORTED",
    "NO_ACCOUNTS",
    "USER_SETUP_REQUIRED",
    "ITEM_LOCKED",
];

/// What an Item error code (from `/item/get` or an `ITEM`/`ERROR` webhook)
/// means for the connection.
pub fn error_signal(code: &str, message: &str) -> crate::domain::connection::Signal {
    use crate::domain::connection::Signal;
    if REVOKED_CODES.contains(&code) {
        Signal::Revoked { code: code.into() }
    } else if REAUTH_CODES.contains(&code) {
        Signal::ReauthRequired {
            code: code.into(),
            message: message.into(),
        }
    } else {
        Signal::Failing {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Plaid error codes that mean access is gone for good.
pub const REVOKED_CODES: &[&str] = &[
    "USER_PERMISSION_REVOKED",
    "ACCESS_NOT_GRANTED",
    "ITEM_NOT_FOUND",
];

/// Plaid's error object (non-2xx bodies).
#[derive(Deserialize)]
struct PlaidErrorBody {
    error_code: String,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    display_message: Option<String>,
}

impl PlaidClient {
    /// Builds a client from `[plaid]`; needs a client id and secret.
    pub fn new(cfg: &PlaidConfig, opts: ClientOptions) -> Result<Self, SetupError> {
        let (Some(client_id), Some(secret)) = (&cfg.client_id, &cfg.secret) else {
            return Err(SetupError::new(
                "plaid.client_id and plaid.secret are both required to use Plaid",
            ));
        };
        let mut secret = HeaderValue::from_str(secret.expose()).map_err(|_| {
            SetupError::new("plaid.secret contains characters not allowed in an HTTP header")
        })?;
        secret.set_sensitive(true);
        if HeaderValue::from_str(client_id).is_err() {
            return Err(SetupError::new(
                "plaid.client_id contains characters not allowed in an HTTP header",
            ));
        }
        let http = http_client(&opts, None)
            .map_err(|e| SetupError::new(format!("cannot set up the Plaid HTTP client: {e}")))?;
        Ok(PlaidClient {
            http,
            base: cfg.api_base(),
            client_id: client_id.clone(),
            secret,
            client_name: cfg.client_name.clone(),
            language: cfg.language.clone(),
            country_codes: cfg.country_codes.clone(),
            products: cfg.products.clone(),
            webhook: cfg.webhook_url.as_ref().map(|u| u.to_string()),
            redirect_uri: cfg.redirect_uri.as_ref().map(|u| u.to_string()),
        })
    }

    /// `/link/token/create`: a new-Item token, or an update-mode (re-auth)
    /// token when `access_token` is given.
    pub async fn create_link_token(
        &self,
        client_user_id: &str,
        access_token: Option<&str>,
    ) -> Result<LinkToken, ProviderError> {
        let mut body = Map::new();
        body.insert("client_name".into(), json!(self.client_name));
        body.insert("language".into(), json!(self.language));
        body.insert("country_codes".into(), json!(self.country_codes));
        body.insert("user".into(), json!({ "client_user_id": client_user_id }));
        // OAuth banks return the person here; needed in update mode too.
        if let Some(uri) = &self.redirect_uri {
            body.insert("redirect_uri".into(), json!(uri));
        }
        match access_token {
            // Update mode: no products, and Plaid ignores `webhook` there.
            Some(token) => {
                body.insert("access_token".into(), json!(token));
            }
            None => {
                body.insert("products".into(), json!(self.products));
                if self.products.iter().any(|p| p == "transactions") {
                    body.insert(
                        "transactions".into(),
                        json!({ "days_requested": TRANSACTIONS_DAYS_REQUESTED }),
                    );
                }
                if let Some(webhook) = &self.webhook {
                    body.insert("webhook".into(), json!(webhook));
                }
            }
        }
        let secrets: Vec<&str> = access_token.into_iter().collect();
        self.call("/link/token/create", Value::Object(body), &secrets)
            .await
    }

    /// `/item/public_token/exchange`: trades the widget's public token for
    /// the Item's access token.
    pub async fn exchange_public_token(
        &self,
        public_token: &str,
    ) -> Result<Exchanged, ProviderError> {
        let body = json!({ "public_token": public_token });
        self.call("/item/public_token/exchange", body, &[public_token])
            .await
    }

    /// `/item/get`: the Item's institution id and name (both may be null).
    pub async fn get_item(&self, access_token: &str) -> Result<ItemInfo, ProviderError> {
        let body = json!({ "access_token": access_token });
        let resp: ItemGetResponse = self.call("/item/get", body, &[access_token]).await?;
        Ok(ItemInfo {
            institution_id: resp.item.institution_id,
            institution_name: resp.item.institution_name,
            error: resp.item.error,
            consent_expiration_time: resp.item.consent_expiration_time,
        })
    }

    /// `/accounts/get`: the Item's accounts (id, name, mask, type, subtype;
    /// balances are dropped).
    pub async fn get_accounts(&self, access_token: &str) -> Result<Vec<Account>, ProviderError> {
        let body = json!({ "access_token": access_token });
        let resp: AccountsGetResponse = self.call("/accounts/get", body, &[access_token]).await?;
        Ok(resp
            .accounts
            .into_iter()
            .map(|a| Account {
                name: a.name.or(a.official_name).unwrap_or_default(),
                id: a.account_id,
                mask: a.mask,
                kind: a.kind.unwrap_or_else(|| "other".to_owned()),
                subtype: a.subtype,
            })
            .collect())
    }

    /// `/webhook_verification_key/get`: the public key a webhook JWT names by `kid`.
    pub async fn webhook_verification_key(
        &self,
        key_id: &str,
    ) -> Result<VerificationKey, ProviderError> {
        let body = json!({ "key_id": key_id });
        let resp: VerificationKeyResponse = self
            .call("/webhook_verification_key/get", body, &[])
            .await?;
        Ok(resp.key)
    }

    /// `/item/remove`: revokes the access token and ends billing for the Item.
    pub async fn remove_item(&self, access_token: &str) -> Result<(), ProviderError> {
        let body = json!({ "access_token": access_token });
        let _: IgnoredAny = self.call("/item/remove", body, &[access_token]).await?;
        Ok(())
    }

    /// POSTs `body` to `path`; `secrets` are scrubbed from any error text.
    async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Value,
        secrets: &[&str],
    ) -> Result<T, ProviderError> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("PLAID-CLIENT-ID", &self.client_id)
            .header("PLAID-SECRET", self.secret.clone())
            .header("Plaid-Version", PLAID_VERSION)
            .json(&body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport_error)?;
        log::debug!("plaid POST {path} -> {}", status.as_u16());
        if !status.is_success() {
            let mut all_secrets = secrets.to_vec();
            all_secrets.push(self.secret_str());
            return Err(api_error(status.as_u16(), &bytes, &all_secrets));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            // serde_json can quote values from the body; report the position only.
            ProviderError::InvalidResponse(format!(
                "Plaid {path}: body is not the expected JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })
    }

    fn secret_str(&self) -> &str {
        self.secret.to_str().unwrap_or_default()
    }
}

impl fmt::Debug for PlaidClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlaidClient")
            .field("base", &self.base)
            .field("client_id", &self.client_id)
            .field("secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// Turns a non-2xx Plaid answer into [`ProviderError::Api`].
fn api_error(status: u16, body: &[u8], secrets: &[&str]) -> ProviderError {
    match serde_json::from_slice::<PlaidErrorBody>(body) {
        Ok(e) => ProviderError::Api {
            status,
            code: e.error_code,
            message: redact(&e.error_message.unwrap_or_default(), secrets),
            display_message: e
                .display_message
                .filter(|m| !m.trim().is_empty())
                .map(|m| redact(&m, secrets)),
        },
        Err(_) => ProviderError::Api {
            status,
            code: format!("HTTP_{status}"),
            message: format!("Plaid answered HTTP {status} without an error object"),
            display_message: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_parses_plaid_error_and_redacts() {
        let body = br#"{"error_type":"ITEM_ERROR","error_code":"ITEM_LOGIN_REQUIRED",
            "error_message":"token access-x1 needs login","display_message":null}"#;
        let e = api_error(400, body, &["access-x1"]);
        assert_eq!(
            e,
            ProviderError::Api {
                status: 400,
                code: "ITEM_LOGIN_REQUIRED".into(),
                message: "token [redacted] needs login".into(),
                display_message: None,
            }
        );
    }

    #[test]
    fn retryable_or_final() {
        let e = |status: u16, code: &str| ProviderError::Api {
            status,
            code: code.into(),
            message: String::new(),
            display_message: None,
        };
        for code in [
            "INVALID_API_KEYS",
            "INSTITUTION_NOT_SUPPORTED",
            "PRODUCTS_NOT_SUPPORTED",
            "INVALID_FIELD",
        ] {
            assert!(!is_retryable(&e(400, code)), "{code}");
        }
        for code in [
            "INTERNAL_SERVER_ERROR",
            "INVALID_PUBLIC_TOKEN",
            "RATE_LIMIT",
        ] {
            assert!(is_retryable(&e(500, code)), "{code}");
        }
        assert!(is_retryable(&ProviderError::Timeout));
        assert!(matches!(
            error_signal("ITEM_LOGIN_REQUIRED", ""),
            crate::domain::connection::Signal::ReauthRequired { .. }
        ));
        assert!(matches!(
            error_signal("USER_PERMISSION_REVOKED", ""),
            crate::domain::connection::Signal::Revoked { .. }
        ));
    }

    #[test]
    fn api_error_without_body() {
        let e = api_error(502, b"<html>bad gateway</html>", &[]);
        assert!(
            matches!(e, ProviderError::Api { status: 502, ref code, .. } if code == "HTTP_502")
        );
    }

    #[test]
    fn exchanged_debug_hides_access_token() {
        let x = Exchanged {
            access_token: "access-sandbox-secret".into(),
            item_id: "item-1".into(),
        };
        let text = format!("{x:?}");
        assert!(!text.contains("access-sandbox-secret"));
        assert!(text.contains("item-1"));
    }
}
