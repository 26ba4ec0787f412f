//! Bank-linking flows that span the providers and the database: starting a
//! widget, exchanging its result for a stored connection, re-authentication,
//! and telling a provider that a connection is gone.

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::config::Config;
use crate::crypto::{self, Cipher};
use crate::db::connections::{self, Credential, NewConnection};
use crate::db::link_sessions::{self as store, Change};
use crate::db::{events, meta, outbox, Db};
use crate::domain::connection::{Account, Connection};
use crate::domain::ids::new_uuid;
use crate::domain::ids::EntityRef;
use crate::domain::link_session::{Action, LinkSession, Provider, Transition};
use crate::domain::time;
use crate::error::ApiError;
use crate::providers::{ClientOptions, ProviderError, Providers};

/// Provider clients plus the key that seals their credentials.
#[derive(Debug)]
pub struct Bank {
    /// Clients for the configured providers.
    pub providers: Providers,
    /// Seals access tokens at rest.
    pub cipher: Cipher,
    /// Plaid webhook verification keys by `kid`, with when they were fetched.
    pub plaid_keys: std::sync::Mutex<
        std::collections::HashMap<String, (crate::providers::plaid::VerificationKey, i64)>,
    >,
    /// Key look-ups at Plaid in the current minute: (minute start, count), so
    /// webhooks naming made-up `kid`s cannot make us call Plaid without end.
    pub plaid_key_fetches: std::sync::Mutex<(i64, u32)>,
}

impl Bank {
    /// The Plaid client, or 400 when Plaid is not configured.
    pub fn plaid(&self) -> Result<&crate::providers::plaid::PlaidClient, ApiError> {
        self.providers
            .plaid
            .as_ref()
            .ok_or_else(|| not_configured(Provider::Plaid))
    }

    /// The Teller client, or 400 when Teller is not configured.
    pub fn teller(&self) -> Result<&crate::providers::teller::TellerClient, ApiError> {
        self.providers
            .teller
            .as_ref()
            .ok_or_else(|| not_configured(Provider::Teller))
    }
}

const KEY_CHECK: &str = "encryption_key_check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"breadbox encryption key check";

/// Build the provider clients (reading Teller's certificate files) and
/// unlock the credential cipher (see [`unlock`]). Any problem stops the
/// server with a message that says what to fix; the certificate check comes
/// first, before any file is created.
pub fn setup(config: &Config, db: &Db, opts: &ClientOptions) -> Result<Bank, String> {
    let providers = Providers::with_options(&plaid_effective(config), &config.teller, opts)
        .map_err(|e| e.to_string())?;
    let cipher = unlock(config, db)?;
    Ok(Bank {
        providers,
        cipher,
        plaid_keys: std::sync::Mutex::default(),
        plaid_key_fetches: std::sync::Mutex::default(),
    })
}

/// Whether `key` opens a database whose stored key check is `sealed`.
pub fn key_opens(key: &[u8; 32], sealed: &[u8]) -> bool {
    Cipher::new(key)
        .decrypt(sealed, KEY_CHECK.as_bytes())
        .is_ok()
}

/// The stored key check of the database behind `conn`, if it has one.
pub fn stored_key_check(conn: &rusqlite::Connection) -> Result<Option<Vec<u8>>, String> {
    meta::get_if_present(conn, KEY_CHECK)
        .map_err(|e| format!("reading the encryption key check: {e}"))
}

/// Refuse a key that cannot open a database whose stored key check is
/// `stored`: a missing key file, or a different key.
pub fn check_key(
    key: Option<&[u8; 32]>,
    stored: Option<&[u8]>,
    db_path: &Path,
) -> Result<(), String> {
    match (key, stored) {
        (Some(key), Some(sealed)) if !key_opens(key, sealed) => Err(
            "the encryption key does not match the one this database was written with \
             ([security] encryption_key or the key file next to the database); \
             refusing to start rather than lose the stored bank credentials"
                .to_owned(),
        ),
        (None, Some(_)) => Err(format!(
            "this database was written with an encryption key, but its key file {} is \
             missing; put the key file back (from the backup it came with) or set \
             [security] encryption_key",
            crypto::key_file_path(db_path)?.display()
        )),
        _ => Ok(()),
    }
}

/// Load the encryption key and check it against the database. The key file
/// is created (0600) only for a database that has never stored a key check;
/// a database written with a key that is now missing or different is
/// refused rather than losing the stored bank credentials.
pub fn unlock(config: &Config, db: &Db) -> Result<Cipher, String> {
    let db_path = Path::new(&config.database.path);
    let key = crypto::load_key(config.security.key_bytes(), db_path)?;
    let stored = db
        .read(|c| meta::get(c, KEY_CHECK))
        .map_err(|e| format!("checking the encryption key: {e}"))?;
    check_key(key.as_ref(), stored.as_deref(), db_path)?;
    let key = match key {
        Some(key) => key,
        None => crypto::create_key(db_path)?,
    };
    let cipher = Cipher::new(&key);
    if stored.is_some() {
        return Ok(cipher);
    }
    let sealed = cipher.encrypt(KEY_CHECK_PLAINTEXT, KEY_CHECK.as_bytes());
    let existing = db
        .write(|tx| match meta::get(tx, KEY_CHECK)? {
            // Another process stored its check first.
            Some(existing) => Ok(Some(existing)),
            None => meta::put(tx, KEY_CHECK, &sealed).map(|()| None),
        })
        .map_err(|e| format!("storing the encryption key check: {e}"))?;
    check_key(Some(&key), existing.as_deref(), db_path)?;
    Ok(cipher)
}

/// Whether trying again may fix a failed call to `p`.
pub fn retryable(p: Provider, e: &ProviderError) -> bool {
    match p {
        Provider::Plaid => crate::providers::plaid::is_retryable(e),
        Provider::Teller => crate::providers::teller::is_retryable(e),
    }
}

/// A provider call failed during a session: record `provider.error` on its
/// timeline (detail: provider, code, retryable), queue the
/// `link_session.provider_error` webhook when retrying cannot help, and
/// answer the 502 the page shows. The session itself is not failed.
pub async fn provider_error(
    state: &AppState,
    session_id: &str,
    p: Provider,
    e: &ProviderError,
) -> ApiError {
    let retry = retryable(p, e);
    log::warn!(
        "{} call failed ({}): {e}",
        p.as_str(),
        if retry { "retryable" } else { "final" }
    );
    let detail = json!({"provider": p.as_str(), "code": e.code(), "retryable": retry});
    let id = session_id.to_owned();
    let emit = state.db.emit();
    let recorded = state
        .db
        .write_async(move |tx| {
            let now = time::now();
            events::insert(tx, &id, "provider.error", now, &detail)?;
            if !retry && emit.webhooks {
                if let Some(s) = store::get(tx, &EntityRef::Uuid(id.clone()))? {
                    let mut data = serde_json::to_value(s.at(now))
                        .map_err(|e| crate::db::DbError::Corrupt(e.to_string()))?;
                    data["provider_error"] = detail;
                    outbox::enqueue(tx, "link_session.provider_error", &data, now)?;
                }
            }
            Ok(())
        })
        .await;
    if let Err(db) = recorded {
        log::error!("could not record a provider error: {db}");
    }
    if let Some(w) = &state.webhooks {
        w.wake();
    }
    if retry {
        ApiError::Provider(e.public_message())
    } else {
        ApiError::ProviderFinal(e.public_message_final())
    }
}

/// `[plaid]` as the client uses it: without a `webhook_url`, link tokens
/// carry `<public_url>/webhooks/plaid` when `public_url` is set.
pub fn plaid_effective(config: &Config) -> crate::config::PlaidConfig {
    let mut plaid = config.plaid.clone();
    if plaid.webhook_url.is_none() {
        plaid.webhook_url = config
            .server
            .public_base()
            .and_then(|base| url::Url::parse(&format!("{base}/webhooks/plaid")).ok());
    }
    plaid
}

fn not_configured(p: Provider) -> ApiError {
    ApiError::ProviderNotConfigured(p.as_str().into())
}

/// The session may use `p`: pinned sessions only their provider (403), and
/// only providers configured here (400).
pub fn check_provider(
    state: &AppState,
    session: &LinkSession,
    p: Provider,
) -> Result<(), ApiError> {
    if session.provider.is_some_and(|pinned| pinned != p) {
        return Err(ApiError::Forbidden(format!(
            "this link is for {} only",
            session.provider.map_or("", Provider::display_name)
        )));
    }
    if !state.rules.configured.contains(&p) {
        return Err(not_configured(p));
    }
    Ok(())
}

/// The plaintext access token of a connection.
pub(crate) fn open_credential(
    state: &AppState,
    connection_id: &str,
    c: &Credential,
) -> Result<String, ApiError> {
    let plain = state
        .bank
        .cipher
        .decrypt(&c.sealed, connection_id.as_bytes())
        .map_err(|e| {
            ApiError::Internal(format!(
                "cannot decrypt the credential of {connection_id}: {e:?}"
            ))
        })?;
    String::from_utf8(plain)
        .map_err(|_| ApiError::Internal(format!("credential of {connection_id} is not text")))
}

async fn relink_credential(
    state: &AppState,
    session: &LinkSession,
) -> Result<(String, Credential), ApiError> {
    let id = session
        .connection_id
        .clone()
        .ok_or_else(|| ApiError::InvalidState("this link has no connection to reconnect".into()))?;
    let lookup = id.clone();
    let cred = state
        .db
        .read_async(move |c| connections::credential(c, &lookup))
        .await?
        .ok_or(ApiError::ConnectionDisconnected)?;
    let token = open_credential(state, &id, &cred)?;
    Ok((token, cred))
}

/// `POST /_link/{token}/providers/{name}/start`: what the widget needs.
pub async fn start(
    state: &AppState,
    session: &LinkSession,
    p: Provider,
) -> Result<Value, ApiError> {
    check_provider(state, session, p)?;
    let relink = session.action == Action::Relink;
    let out = match p {
        Provider::Plaid => {
            let client = state.bank.plaid()?;
            let access = if relink {
                Some(relink_credential(state, session).await?.0)
            } else {
                None
            };
            let token = match client
                .create_link_token(&session.user_id, access.as_deref())
                .await
            {
                Ok(t) => t,
                Err(e) => return Err(provider_error(state, &session.id, p, &e).await),
            };
            json!({"link_token": token.link_token, "expiration": token.expiration})
        }
        Provider::Teller => {
            let client = state.bank.teller()?;
            let enrollment = if relink {
                Some(relink_credential(state, session).await?.1.external_id)
            } else {
                None
            };
            json!({
                "application_id": client.application_id(),
                "environment": client.environment(),
                "enrollment_id": enrollment,
            })
        }
    };
    let id = session.id.clone();
    let detail = json!({"provider": p.as_str()});
    state
        .db
        .write_async(move |tx| events::insert(tx, &id, "provider.started", time::now(), &detail))
        .await?;
    Ok(out)
}

/// `POST /_link/{token}/connections` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddConnection {
    /// `plaid` or `teller`.
    pub provider: String,
    /// The widget's result; its shape depends on the provider.
    pub credentials: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaidResult {
    public_token: String,
    #[serde(default)]
    institution_id: Option<String>,
    #[serde(default)]
    institution_name: Option<String>,
    /// The widget's account list: only used to spot a duplicate before
    /// exchanging; the stored accounts are the provider's word.
    #[serde(default)]
    accounts: Option<Vec<WidgetAccount>>,
}

/// An account as Plaid Link's `onSuccess` metadata lists it.
#[derive(Deserialize)]
struct WidgetAccount {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    mask: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    subtype: Option<String>,
}

impl WidgetAccount {
    fn into_account(self) -> Account {
        Account {
            id: self.id.unwrap_or_default(),
            name: self.name.unwrap_or_default(),
            mask: self.mask,
            kind: self.kind.unwrap_or_default(),
            subtype: self.subtype,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TellerResult {
    access_token: String,
    enrollment_id: String,
    #[serde(default)]
    institution_id: Option<String>,
    #[serde(default)]
    institution_name: Option<String>,
    /// Informational only: accounts are the provider's word, not the browser's.
    #[serde(default, rename = "accounts")]
    _accounts: Option<serde::de::IgnoredAny>,
}

fn parse_credentials<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    if !v.is_object() {
        return Err(ApiError::Validation(
            "credentials: must be an object".into(),
        ));
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        ApiError::Validation(format!("credentials.{path}: {}", e.into_inner()))
    })
}

fn check_credential_len(field: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > 512 {
        return Err(ApiError::Validation(format!(
            "credentials.{field}: must be 1 to 512 characters"
        )));
    }
    Ok(())
}

/// A connection exchanged at the provider but not stored yet.
struct Exchanged {
    provider: Provider,
    access_token: String,
    external_id: String,
    institution_id: String,
    institution_name: String,
    accounts: Vec<Account>,
}

/// What the exchange step found.
enum Exchange {
    /// A new connection to record.
    New(Exchanged),
    /// The member already has this bank (Plaid: seen before exchanging).
    Duplicate(Connection),
}

/// Plaid: the exchange, then the Item's institution and accounts. Anything
/// exchanged whose follow-up calls fail is removed at Plaid again.
async fn exchange_plaid(
    state: &AppState,
    session: &LinkSession,
    credentials: Value,
) -> Result<Exchange, ApiError> {
    let p = Provider::Plaid;
    let r: PlaidResult = parse_credentials(credentials)?;
    check_credential_len("public_token", &r.public_token)?;
    let client = state.bank.plaid()?;
    // A duplicate is spotted from the widget's metadata before anything is
    // exchanged (§10): the public token is then simply never used.
    let widget_accounts: Vec<Account> = r
        .accounts
        .unwrap_or_default()
        .into_iter()
        .map(WidgetAccount::into_account)
        .collect();
    let (user, inst_id, inst_name) = (
        session.user_id.clone(),
        r.institution_id.clone().unwrap_or_default(),
        r.institution_name.clone().unwrap_or_default(),
    );
    let existing = state
        .db
        .read_async(move |c| {
            connections::find_duplicate(
                c,
                &user,
                "plaid",
                &inst_id,
                &inst_name,
                &widget_accounts,
                None,
            )
        })
        .await?;
    if let Some(existing) = existing {
        return Ok(Exchange::Duplicate(existing));
    }
    let ex = match client.exchange_public_token(&r.public_token).await {
        Ok(ex) => ex,
        Err(e) => return Err(provider_error(state, &session.id, p, &e).await),
    };
    let accounts = match client.get_accounts(&ex.access_token).await {
        Ok(a) => a,
        Err(e) => {
            remove_at_provider(state, p, &ex.access_token, &ex.item_id).await;
            return Err(provider_error(state, &session.id, p, &e).await);
        }
    };
    // The browser's metadata may lack the institution; ask Plaid, and
    // fall back to what the widget said if that fails.
    let item = client.get_item(&ex.access_token).await.ok();
    let pick = |server: Option<String>, browser: Option<String>| {
        server
            .filter(|s| !s.is_empty())
            .or(browser)
            .unwrap_or_default()
    };
    Ok(Exchange::New(Exchanged {
        provider: p,
        institution_id: pick(
            item.as_ref().and_then(|i| i.institution_id.clone()),
            r.institution_id,
        ),
        institution_name: pick(item.and_then(|i| i.institution_name), r.institution_name),
        access_token: ex.access_token,
        external_id: ex.item_id,
        accounts,
    }))
}

/// Teller: the browser's token must list accounts of its enrollment.
async fn exchange_teller(
    state: &AppState,
    session: &LinkSession,
    credentials: Value,
) -> Result<Exchange, ApiError> {
    let p = Provider::Teller;
    let r: TellerResult = parse_credentials(credentials)?;
    check_credential_len("access_token", &r.access_token)?;
    check_credential_len("enrollment_id", &r.enrollment_id)?;
    let client = state.bank.teller()?;
    // Never trust the browser: the token must list accounts of this enrollment.
    let listed = match client.list_accounts(&r.access_token).await {
        Ok(a) => a,
        Err(e) => return Err(provider_error(state, &session.id, p, &e).await),
    };
    let mine: Vec<_> = listed
        .iter()
        .filter(|a| a.enrollment_id == r.enrollment_id)
        .collect();
    let Some(first) = mine.first() else {
        return Err(ApiError::Provider(
            "Teller did not confirm this bank connection; please try again".into(),
        ));
    };
    Ok(Exchange::New(Exchanged {
        provider: p,
        institution_id: Some(first.institution.id.clone())
            .filter(|i| !i.is_empty())
            .or(r.institution_id)
            .unwrap_or_default(),
        institution_name: Some(first.institution.name.clone())
            .filter(|n| !n.is_empty())
            .or(r.institution_name)
            .unwrap_or_default(),
        accounts: mine.iter().map(|a| a.to_domain()).collect(),
        access_token: r.access_token,
        external_id: r.enrollment_id,
    }))
}

/// Remove an item/enrollment at the provider again (orphan or disconnect).
async fn remove_at_provider(state: &AppState, p: Provider, access_token: &str, external_id: &str) {
    remove_with(&state.bank, p, access_token, external_id).await;
}

/// Tell the provider that a connection whose access was revoked (and whose
/// credential was just wiped) is gone, so it stops billing for it; best-effort.
pub async fn forget_revoked(bank: &Bank, conn: &Connection, credential: &Credential) {
    let Some(p) = Provider::parse(&conn.provider) else {
        return;
    };
    let token = bank
        .cipher
        .decrypt(&credential.sealed, conn.id.as_bytes())
        .ok()
        .and_then(|t| String::from_utf8(t).ok());
    match token {
        Some(token) => remove_with(bank, p, &token, &credential.external_id).await,
        None => log::warn!("cannot open the credential of revoked {}", conn.id),
    }
}

async fn remove_with(bank: &Bank, p: Provider, access_token: &str, external_id: &str) {
    let result = match p {
        Provider::Plaid => match &bank.providers.plaid {
            Some(c) => c.remove_item(access_token).await,
            None => return,
        },
        Provider::Teller => match &bank.providers.teller {
            Some(c) => c.delete_enrollment(access_token, external_id).await,
            None => return,
        },
    };
    match result {
        Ok(()) => log::info!("removed {} {external_id} at the provider", p.as_str()),
        Err(e) => log::warn!(
            "could not remove {} {external_id} at the provider: {e}",
            p.as_str()
        ),
    }
}

/// A connection recorded on the session.
#[derive(Debug)]
pub struct Added {
    /// The stored connection.
    pub connection: Connection,
    /// The session after recording it.
    pub session: LinkSession,
}

/// The member already has this bank: nothing new was stored.
#[derive(Debug)]
pub struct Duplicate {
    /// The existing connection.
    pub connection: Connection,
    /// The session's status now.
    pub session_status: crate::domain::link_session::Status,
}

/// What `POST /_link/{token}/connections` answers.
#[derive(Debug)]
pub enum AddOutcome {
    /// 201: stored and recorded on the session.
    Added(Box<Added>),
    /// 200 `{"duplicate": true, …}` (§10).
    Duplicate(Box<Duplicate>),
}

/// Why the recording transaction refused.
enum NotRecorded {
    Refused(ApiError),
    Duplicate(Box<Connection>),
}

/// Exchange the widget's result and record the connection on the session,
/// atomically; anything exchanged but not recorded is removed at the provider.
/// A bank the member already has is not stored again (§10).
pub async fn add_connection(
    state: &AppState,
    session: &LinkSession,
    body: AddConnection,
) -> Result<AddOutcome, ApiError> {
    let p = Provider::parse(&body.provider).ok_or_else(|| {
        ApiError::Validation(format!(
            "provider: must be \"plaid\" or \"teller\", got {:?}",
            body.provider
        ))
    })?;
    if session.action != Action::Link {
        return Err(ApiError::Forbidden(
            "this link re-connects an existing bank; it cannot add a new one".into(),
        ));
    }
    check_provider(state, session, p)?;
    if session.status != crate::domain::link_session::Status::Active {
        return Err(ApiError::InvalidState(format!(
            "the session is {}",
            session.status.as_str()
        )));
    }
    let ex = match p {
        Provider::Plaid => exchange_plaid(state, session, body.credentials).await?,
        Provider::Teller => exchange_teller(state, session, body.credentials).await?,
    };
    let ex = match ex {
        Exchange::New(ex) => ex,
        Exchange::Duplicate(existing) => return record_duplicate(state, session, existing).await,
    };
    let id = new_uuid();
    let new = NewConnection {
        credential: Credential {
            sealed: state
                .bank
                .cipher
                .encrypt(ex.access_token.as_bytes(), id.as_bytes()),
            external_id: ex.external_id.clone(),
        },
        id: id.clone(),
        user_id: session.user_id.clone(),
        provider: p.as_str(),
        institution_id: ex.institution_id.clone(),
        institution_name: ex.institution_name.clone(),
        accounts: ex.accounts.clone(),
    };
    let session_id = session.id.clone();
    let single_use = session.single_use;
    let emit = state.db.emit();
    let recorded = state
        .db
        .write_checked_async(move |tx| {
            let now = time::now();
            let conn = connections::insert(tx, &new, now)?;
            let mut detail = serde_json::Map::new();
            detail.insert("connection_id".into(), json!(conn.id));
            detail.insert("institution_name".into(), json!(conn.institution_name));
            let change = Change {
                connection_id: Some(conn.id.clone()),
                detail,
                ..Change::default()
            };
            // A refusal (e.g. a racing request consumed the session) rolls the insert back.
            let session = match store::transition(
                tx,
                &session_id,
                Transition::AddConnection { single_use },
                change,
                now,
                emit,
            )? {
                Ok(s) => s,
                Err(refusal) => {
                    return Ok(Err(NotRecorded::Refused(ApiError::from_refusal(refusal))))
                }
            };
            // Compare-and-set against racing duplicates: the same enrollment
            // posted twice, or the same bank linked twice at once. The first
            // committed wins; this one rolls back.
            let same = connections::live_with_external_id(
                tx,
                conn.provider.as_str(),
                &new.credential.external_id,
                Some(&conn.id),
            )?;
            let existing = match same {
                Some(other) => connections::get(tx, &EntityRef::Uuid(other))?,
                None => connections::find_duplicate(
                    tx,
                    &new.user_id,
                    new.provider,
                    &new.institution_id,
                    &new.institution_name,
                    &new.accounts,
                    Some(&conn.id),
                )?,
            };
            if let Some(existing) = existing {
                return Ok(Err(NotRecorded::Duplicate(Box::new(existing))));
            }
            Ok(Ok(Added {
                connection: conn,
                session,
            }))
        })
        .await;
    let failure = match recorded {
        Ok(Ok(added)) => {
            state.changed(&added.session.id);
            return Ok(AddOutcome::Added(Box::new(added)));
        }
        Ok(Err(e)) => e,
        Err(e) => NotRecorded::Refused(e.into()),
    };
    // Not recorded: remove what was exchanged at the provider, unless a stored
    // connection holds it (a Teller enrollment posted twice).
    let (provider, external_id) = (ex.provider.as_str(), ex.external_id.clone());
    let held = state
        .db
        .read_async(move |c| connections::live_with_external_id(c, provider, &external_id, None))
        .await
        .map_or(true, |found| found.is_some());
    if !held {
        remove_at_provider(state, ex.provider, &ex.access_token, &ex.external_id).await;
    }
    match failure {
        NotRecorded::Refused(e) => Err(e),
        NotRecorded::Duplicate(existing) => record_duplicate(state, session, *existing).await,
    }
}

/// Record `connection.duplicate` on the session's timeline and answer with
/// the existing connection.
async fn record_duplicate(
    state: &AppState,
    session: &LinkSession,
    existing: Connection,
) -> Result<AddOutcome, ApiError> {
    let id = session.id.clone();
    let detail =
        json!({"connection_id": existing.id, "institution_name": existing.institution_name});
    let current = state
        .db
        .write_async(move |tx| {
            let now = time::now();
            events::insert(tx, &id, "connection.duplicate", now, &detail)?;
            store::get(tx, &EntityRef::Uuid(id.clone())).map(|s| s.map(|s| s.status_at(now)))
        })
        .await?;
    Ok(AddOutcome::Duplicate(Box::new(Duplicate {
        connection: existing,
        session_status: current.unwrap_or(session.status),
    })))
}

/// `POST /_link/{token}/reauth-complete`: the relinked connection works again.
pub async fn reauth_complete(state: &AppState, session: &LinkSession) -> Result<(), ApiError> {
    if session.action != Action::Relink {
        return Err(ApiError::Forbidden(
            "this link adds new banks; there is nothing to re-authenticate".into(),
        ));
    }
    let conn_id = session
        .connection_id
        .clone()
        .ok_or_else(|| ApiError::InvalidState("this link has no connection to reconnect".into()))?;
    let accounts = refresh_accounts(state, session, &conn_id).await;
    let session_id = session.id.clone();
    let emit = state.db.emit();
    let s = state
        .db
        .write_checked_async(move |tx| {
            let now = time::now();
            if !connections::relinked(tx, &conn_id, accounts.as_deref(), now, emit)? {
                return Ok(Err(ApiError::ConnectionDisconnected));
            }
            let mut detail = serde_json::Map::new();
            detail.insert("connection_id".into(), json!(conn_id));
            let change = Change {
                connection_id: Some(conn_id.clone()),
                detail,
                ..Change::default()
            };
            // A refusal rolls the reactivation back with the transaction.
            Ok(store::transition(
                tx,
                &session_id,
                Transition::Reauthenticate,
                change,
                now,
                emit,
            )?
            .map_err(ApiError::from_refusal))
        })
        .await??;
    state.changed(&s.id);
    Ok(())
}

/// The relinked connection's accounts, fresh from the provider; `None`
/// (keep the stored ones) when that fails, recorded as `provider.error`.
async fn refresh_accounts(
    state: &AppState,
    session: &LinkSession,
    conn_id: &str,
) -> Option<Vec<Account>> {
    let lookup = conn_id.to_owned();
    let cred = state
        .db
        .read_async(move |c| connections::credential(c, &lookup))
        .await
        .ok()??;
    let token = open_credential(state, conn_id, &cred).ok()?;
    let p = session.provider?;
    let result = match p {
        Provider::Plaid => {
            state
                .bank
                .providers
                .plaid
                .as_ref()?
                .get_accounts(&token)
                .await
        }
        Provider::Teller => state
            .bank
            .providers
            .teller
            .as_ref()?
            .list_accounts(&token)
            .await
            .map(|all| {
                all.iter()
                    .filter(|a| a.enrollment_id == cred.external_id)
                    .map(|a| a.to_domain())
                    .collect()
            }),
    };
    match result {
        Ok(a) => Some(a),
        Err(e) => {
            // The relink itself succeeded in the widget; only the refresh failed.
            let _ = provider_error(state, &session.id, p, &e).await;
            None
        }
    }
}

/// Tell the provider, best-effort and in the background, that a connection
/// is gone (Plaid `/item/remove`, Teller enrollment delete).
pub fn forget_at_provider(
    state: std::sync::Arc<AppState>,
    conn: &Connection,
    credential: Credential,
) {
    let Some(p) = Provider::parse(&conn.provider) else {
        return;
    };
    let token = match open_credential(&state, &conn.id, &credential) {
        Ok(t) => t,
        Err(e) => {
            log::warn!(
                "cannot tell {} about disconnected {}: {e}",
                p.as_str(),
                conn.id
            );
            return;
        }
    };
    tokio::spawn(async move {
        remove_at_provider(&state, p, &token, &credential.external_id).await;
    });
}
