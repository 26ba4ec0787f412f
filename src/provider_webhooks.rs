//! Inbound provider webhooks (CONTRACT §10, "health, pushed"):
//! `POST /webhooks/plaid` verifies the `Plaid-Verification` JWT (ES256, key
//! by `kid` from `/webhook_verification_key/get`, cached; `iat` at most 5
//! minutes old; `request_body_sha256` equal to the raw body's SHA-256) and
//! `POST /webhooks/teller` verifies `Teller-Signature` (`t=…,v1=…`,
//! HMAC-SHA256 with any configured secret, 3-minute tolerance).
//!
//! Unverified → 401 and nothing changes; verified but unknown types → 200
//! and ignored; each verified delivery is recorded once (Plaid: SHA-256 of
//! its JWT, Teller: its `id`), so a replay or redelivery changes nothing twice.

use actix_web::{web, HttpRequest, HttpResponse};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::db::{connection_events, connections};
use crate::domain::connection::Signal;
use crate::domain::time::{self, Timestamp};
use crate::providers::plaid::{self, ItemError};

/// Oldest accepted Plaid JWT `iat`, in seconds before now.
pub const PLAID_MAX_AGE_SECS: i64 = 5 * 60;

/// Accepted distance of Teller's `t` from now, in seconds (either way).
pub const TELLER_TOLERANCE_SECS: i64 = 3 * 60;

/// A cached Plaid verification key is asked for again after this many
/// seconds, so a key Plaid retired stops verifying within a day.
const KEY_CACHE_SECS: i64 = 24 * 60 * 60;

/// Verification-key look-ups at Plaid allowed per minute (Plaid rotates
/// keys rarely; more than this means someone is naming made-up keys).
const KEY_FETCHES_PER_MINUTE: u32 = 10;

/// Largest accepted webhook body.
const MAX_BODY: usize = 256 * 1024;

/// The notice Plaid gives before consent ends (`PENDING_EXPIRATION`,
/// `PENDING_DISCONNECT`): 7 days, in seconds. Used when a notice has no date,
/// and by health checks to decide that a consent end is near enough to report.
pub const EXPIRY_NOTICE_SECS: i64 = 7 * 24 * 60 * 60;

/// Register `POST /webhooks/plaid` and `POST /webhooks/teller`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/webhooks")
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .route("/plaid", web::post().to(post_plaid))
            .route("/teller", web::post().to(post_teller)),
    );
}

fn unverified(provider: &str, why: &str) -> HttpResponse {
    log::warn!("refused a {provider} webhook: {why}");
    HttpResponse::Unauthorized().json(json!({"error": {
        "code": "INVALID_SIGNATURE",
        "message": "the webhook signature could not be verified",
    }}))
}

fn ok() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

// ------------------------------------------------------------------ Plaid

#[derive(Deserialize)]
struct PlaidClaims {
    iat: i64,
    request_body_sha256: String,
}

/// An Item webhook body (the fields §10 needs).
#[derive(Debug, Default, Deserialize)]
pub struct PlaidHook {
    /// e.g. `ITEM`.
    #[serde(default)]
    pub webhook_type: String,
    /// e.g. `ERROR`, `LOGIN_REPAIRED`.
    #[serde(default)]
    pub webhook_code: String,
    /// The Item.
    #[serde(default)]
    pub item_id: Option<String>,
    /// `ERROR`, `USER_PERMISSION_REVOKED`: the Plaid error.
    #[serde(default)]
    pub error: Option<ItemError>,
    /// `PENDING_EXPIRATION`: when consent ends (ISO 8601).
    #[serde(default)]
    pub consent_expiration_time: Option<String>,
    /// `PENDING_DISCONNECT`: when the Item disconnects (ISO 8601).
    #[serde(default)]
    pub disconnect_time: Option<String>,
}

/// ISO 8601 / RFC 3339 → unix seconds.
pub fn parse_time(s: &str) -> Option<Timestamp> {
    ::time::OffsetDateTime::parse(s, &::time::format_description::well_known::Rfc3339)
        .ok()
        .map(::time::OffsetDateTime::unix_timestamp)
}

/// What a Plaid webhook means for its Item's connection; `None`: nothing
/// (a type this server does not act on).
pub fn plaid_signal(hook: &PlaidHook, now: Timestamp) -> Option<Signal> {
    if hook.webhook_type != "ITEM" {
        return None;
    }
    let when = |t: &Option<String>| {
        t.as_deref()
            .and_then(parse_time)
            .unwrap_or(now + EXPIRY_NOTICE_SECS)
    };
    Some(match hook.webhook_code.as_str() {
        "ERROR" => {
            let e = hook.error.clone().unwrap_or_default();
            plaid::error_signal(&e.error_code, &e.error_message.unwrap_or_default())
        }
        "PENDING_EXPIRATION" => Signal::Expiring {
            at: when(&hook.consent_expiration_time),
        },
        "PENDING_DISCONNECT" => Signal::Expiring {
            at: when(&hook.disconnect_time),
        },
        "LOGIN_REPAIRED" => Signal::Repaired,
        "USER_PERMISSION_REVOKED" => Signal::Revoked {
            code: hook
                .error
                .as_ref()
                .map(|e| e.error_code.clone())
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "USER_PERMISSION_REVOKED".into()),
        },
        "NEW_ACCOUNTS_AVAILABLE" => Signal::NewAccounts,
        _ => return None,
    })
}

/// The key named `kid`: from the cache, else from Plaid (then cached).
async fn plaid_key(
    state: &AppState,
    kid: &str,
    now: Timestamp,
) -> Result<plaid::VerificationKey, String> {
    let cached = state
        .bank
        .plaid_keys
        .lock()
        .map_err(|_| "key cache poisoned".to_owned())?
        .get(kid)
        .filter(|(_, fetched)| now - fetched < KEY_CACHE_SECS)
        .map(|(k, _)| k.clone());
    if let Some(k) = cached {
        return Ok(k);
    }
    let client = state
        .bank
        .providers
        .plaid
        .as_ref()
        .ok_or("Plaid is not configured")?;
    {
        let mut fetches = state
            .bank
            .plaid_key_fetches
            .lock()
            .map_err(|_| "key fetch counter poisoned".to_owned())?;
        if now - fetches.0 >= 60 {
            *fetches = (now, 0);
        }
        if fetches.1 >= KEY_FETCHES_PER_MINUTE {
            return Err(format!("too many unknown key ids this minute ({kid:?})"));
        }
        fetches.1 += 1;
    }
    let key = client
        .webhook_verification_key(kid)
        .await
        .map_err(|e| format!("no verification key {kid:?}: {e}"))?;
    if let Ok(mut cache) = state.bank.plaid_keys.lock() {
        cache.insert(kid.to_owned(), (key.clone(), now));
    }
    Ok(key)
}

/// Verify a Plaid webhook; the receipt (SHA-256 of the JWT) when it holds.
async fn verify_plaid(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
    now: Timestamp,
) -> Result<String, String> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let jwt = req
        .headers()
        .get("plaid-verification")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Plaid-Verification header")?;
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| format!("bad JWT header: {e}"))?;
    if header.alg != Algorithm::ES256 {
        return Err(format!("JWT alg {:?} is not ES256", header.alg));
    }
    let kid = header.kid.ok_or("JWT has no kid")?;
    let key = plaid_key(state, &kid, now).await?;
    if key.expired_at.is_some() {
        return Err(format!("key {kid:?} is retired"));
    }
    let decoding = DecodingKey::from_ec_components(&key.x, &key.y)
        .map_err(|e| format!("unusable key {kid:?}: {e}"))?;
    let mut v = Validation::new(Algorithm::ES256);
    v.validate_exp = false;
    v.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<PlaidClaims>(jwt, &decoding, &v)
        .map_err(|e| format!("signature: {e}"))?
        .claims;
    if now - claims.iat > PLAID_MAX_AGE_SECS || claims.iat - now > PLAID_MAX_AGE_SECS {
        return Err(format!("iat is {}s from now", now - claims.iat));
    }
    let digest = hex::encode(Sha256::digest(body));
    if !constant_time_eq(
        digest.as_bytes(),
        claims.request_body_sha256.to_ascii_lowercase().as_bytes(),
    ) {
        return Err("request_body_sha256 does not match the body".into());
    }
    Ok(hex::encode(Sha256::digest(jwt.as_bytes())))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn post_plaid(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let now = time::now();
    let receipt = match verify_plaid(&state, &req, &body, now).await {
        Ok(r) => r,
        Err(why) => return unverified("Plaid", &why),
    };
    let Ok(hook) = serde_json::from_slice::<PlaidHook>(&body) else {
        log::info!("ignored a Plaid webhook that is not a JSON object");
        return ok();
    };
    let (Some(signal), Some(item_id)) = (plaid_signal(&hook, now), hook.item_id.clone()) else {
        log::debug!(
            "ignored Plaid webhook {}/{}",
            hook.webhook_type,
            hook.webhook_code
        );
        return ok();
    };
    apply(&state, "plaid", receipt, item_id, signal, now).await
}

/// Record the receipt and apply the signal to the connection holding
/// `external_id`, in one transaction.
async fn apply(
    state: &web::Data<AppState>,
    provider: &'static str,
    receipt: String,
    external_id: String,
    signal: Signal,
    now: Timestamp,
) -> HttpResponse {
    let emit = state.db.emit();
    let source = format!("{provider}_webhook");
    let done = state
        .db
        .write_async(move |tx| {
            if !connection_events::first_receipt(tx, provider, &receipt, now)? {
                return Ok(None);
            }
            let Some(id) = connections::by_external_id(tx, provider, &external_id)? else {
                return Ok(None);
            };
            connections::apply_health(tx, &id, &signal, &source, now, emit)
        })
        .await;
    match done {
        Ok(Some(changed)) => {
            let conn = changed.connection;
            log::info!(
                "connection {} is now {} ({provider} webhook)",
                conn.id,
                conn.status.as_str()
            );
            if let Some(w) = &state.webhooks {
                w.wake();
            }
            if let Some(cred) = changed.wiped {
                let state = state.clone();
                tokio::spawn(async move {
                    crate::app::bank::forget_revoked(&state.bank, &conn, &cred).await;
                });
            }
            ok()
        }
        Ok(None) => ok(),
        Err(e) => {
            log::error!("could not apply a {provider} webhook: {e}");
            // Not 200: the provider retries later.
            HttpResponse::InternalServerError().json(json!({"error": {
                "code": "INTERNAL_ERROR", "message": "internal error"}}))
        }
    }
}

// ------------------------------------------------------------------ Teller

/// A Teller webhook body.
#[derive(Debug, Default, Deserialize)]
pub struct TellerHook {
    /// `wh_…`, the same on every delivery attempt.
    #[serde(default)]
    pub id: Option<String>,
    /// e.g. `enrollment.disconnected`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Type-specific data.
    #[serde(default)]
    pub payload: TellerPayload,
}

/// `payload` of a Teller webhook.
#[derive(Debug, Default, Deserialize)]
pub struct TellerPayload {
    /// The enrollment concerned.
    #[serde(default)]
    pub enrollment_id: Option<String>,
    /// e.g. `disconnected.credentials_invalid`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// What a Teller webhook means for its enrollment's connection.
pub fn teller_signal(hook: &TellerHook) -> Option<Signal> {
    if hook.kind != "enrollment.disconnected" {
        return None;
    }
    let reason = hook
        .payload
        .reason
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "disconnected".into());
    Some(if reason.contains("revoked") {
        Signal::Revoked { code: reason }
    } else {
        Signal::ReauthRequired {
            message: format!("Teller reports the enrollment disconnected ({reason})"),
            code: reason,
        }
    })
}

/// Verify `Teller-Signature` against every configured secret.
fn verify_teller(
    secrets: &[crate::config::Secret],
    header: Option<&str>,
    body: &[u8],
    now: Timestamp,
) -> Result<(), String> {
    let header = header.ok_or("no Teller-Signature header")?;
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let t = t.ok_or("no timestamp")?;
    if (now - t).abs() > TELLER_TOLERANCE_SECS {
        return Err(format!("timestamp is {}s from now", now - t));
    }
    if secrets.is_empty() {
        return Err("no [teller] webhook_signing_secrets configured".into());
    }
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
            continue;
        };
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        if sigs.iter().any(|s| mac.clone().verify_slice(s).is_ok()) {
            return Ok(());
        }
    }
    Err("no signature matches".into())
}

async fn post_teller(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let now = time::now();
    let header = req
        .headers()
        .get("teller-signature")
        .and_then(|v| v.to_str().ok());
    if let Err(why) = verify_teller(
        &state.config.teller.webhook_signing_secrets,
        header,
        &body,
        now,
    ) {
        return unverified("Teller", &why);
    }
    let Ok(hook) = serde_json::from_slice::<TellerHook>(&body) else {
        log::info!("ignored a Teller webhook that is not a JSON object");
        return ok();
    };
    let (Some(signal), Some(enrollment)) =
        (teller_signal(&hook), hook.payload.enrollment_id.clone())
    else {
        log::debug!("ignored Teller webhook {}", hook.kind);
        return ok();
    };
    let receipt = hook
        .id
        .clone()
        .unwrap_or_else(|| hex::encode(Sha256::digest(&body)));
    apply(&state, "teller", receipt, enrollment, signal, now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaid_codes_map_to_signals() {
        let hook = |code: &str, err: Option<&str>| PlaidHook {
            webhook_type: "ITEM".into(),
            webhook_code: code.into(),
            item_id: Some("i".into()),
            error: err.map(|c| ItemError {
                error_code: c.into(),
                error_message: Some("m".into()),
            }),
            ..PlaidHook::default()
        };
        assert!(matches!(
            plaid_signal(&hook("ERROR", Some("ITEM_LOGIN_REQUIRED")), 0),
            Some(Signal::ReauthRequired { .. })
        ));
        assert!(matches!(
            plaid_signal(&hook("ERROR", Some("INSTITUTION_DOWN")), 0),
            Some(Signal::Failing { .. })
        ));
        assert_eq!(
            plaid_signal(&hook("PENDING_DISCONNECT", None), 10),
            Some(Signal::Expiring {
                at: 10 + EXPIRY_NOTICE_SECS
            })
        );
        assert_eq!(
            plaid_signal(&hook("LOGIN_REPAIRED", None), 0),
            Some(Signal::Repaired)
        );
        assert!(matches!(
            plaid_signal(&hook("USER_PERMISSION_REVOKED", None), 0),
            Some(Signal::Revoked { .. })
        ));
        assert_eq!(
            plaid_signal(&hook("WEBHOOK_UPDATE_ACKNOWLEDGED", None), 0),
            None
        );
    }

    #[test]
    fn teller_signature_rules() {
        let secrets = [
            crate::config::Secret::new("old"),
            crate::config::Secret::new("new"),
        ];
        let sign = |secret: &str, t: i64, body: &[u8]| {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
            mac.update(format!("{t}.").as_bytes());
            mac.update(body);
            format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
        };
        let body = br#"{"id":"wh_1"}"#;
        assert!(verify_teller(&secrets, Some(&sign("new", 1000, body)), body, 1000).is_ok());
        assert!(verify_teller(&secrets, Some(&sign("old", 1000, body)), body, 1100).is_ok());
        assert!(verify_teller(&secrets, Some(&sign("other", 1000, body)), body, 1000).is_err());
        assert!(verify_teller(&secrets, Some(&sign("new", 1000, body)), body, 1181).is_err());
        assert!(verify_teller(&secrets, Some(&sign("new", 1000, body)), b"{}", 1000).is_err());
        assert!(verify_teller(&[], Some(&sign("new", 1000, body)), body, 1000).is_err());
        assert!(verify_teller(&secrets, None, body, 1000).is_err());
    }
}
