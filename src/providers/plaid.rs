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

/// What `/item/get` says about an Item's institution.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ItemInfo {
    /// Plaid institution id, e.g. `ins_109508`.
    pub institution_id: Option<String>,
    /// Institution display name.
    pub institution_name: Option<String>,
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
}

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
        })
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
