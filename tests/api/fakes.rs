//! Fake Plaid and Teller HTTP servers for tests: small actix-web apps on
//! `127.0.0.1:0` that record every request and answer like the real APIs,
//! or with a chosen error, or not at all (hang) on a chosen path.
//!
//! Point a server or client at one with `plaid_config()`/`teller_config()`
//! (or `base_url()`), act, then assert on `requests_to(path)`.
// Shared by several test files; not every test uses every helper.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use breadbox::config::{PlaidConfig, Secret, TellerConfig, TellerEnvironment};
use serde_json::{json, Value};
use url::Url;

/// Client id the fake Plaid expects in `PLAID-CLIENT-ID`.
pub const PLAID_CLIENT_ID: &str = "fake-plaid-client-id";
/// Secret the fake Plaid expects in `PLAID-SECRET`.
pub const PLAID_SECRET: &str = "fake-plaid-secret-s3cr3t";
/// Institution id the fake Plaid reports for every Item.
pub const PLAID_INSTITUTION_ID: &str = "ins_109508";
/// Institution name the fake Plaid reports for every Item.
pub const PLAID_INSTITUTION_NAME: &str = "First Platypus Bank";
/// Display message of [`FakePlaid::fail_login_required`].
pub const LOGIN_REQUIRED_MESSAGE: &str = "Your bank needs you to sign in again";
/// `kid` of the fake Plaid's webhook signing key.
pub const PLAID_WEBHOOK_KID: &str = "fake-plaid-kid-1";
/// Access token the fake Teller accepts out of the box.
pub const TELLER_TOKEN: &str = "token_fake_teller_1";
/// Enrollment of [`TELLER_TOKEN`].
pub const TELLER_ENROLLMENT: &str = "enr_fake_1";
/// Application id in [`FakeTeller::teller_config`].
pub const TELLER_APP_ID: &str = "app_fake_teller";
/// How long a hanging endpoint waits by default (well past any client timeout).
pub const HANG: Duration = Duration::from_secs(60);

/// One request a fake received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path without the query, e.g. `/link/token/create`.
    pub path: String,
    /// Headers by lowercase name (the last value when repeated).
    pub headers: HashMap<String, String>,
    /// The body parsed as JSON; `Value::Null` when empty or not JSON.
    pub body: Value,
}

impl Recorded {
    /// A header value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// How a fake answers a path.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// This status and JSON body.
    Respond {
        /// HTTP status.
        status: u16,
        /// JSON body.
        body: Value,
    },
    /// Wait this long, then answer 504.
    Hang(Duration),
}

type Route = fn(&State, &Recorded) -> HttpResponse;

/// State shared by the server workers and the test.
#[derive(Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    behaviours: Mutex<HashMap<String, Behaviour>>,
    counter: AtomicUsize,
    /// Plaid: access token → item id, from exchanges.
    items: Mutex<HashMap<String, String>>,
    /// Plaid: institution reported by `/item/get`.
    institution: Mutex<(Option<String>, Option<String>)>,
    /// Teller: access token → enrollment id.
    tokens: Mutex<HashMap<String, String>>,
    /// Plaid: the accounts every new Item gets (None: two with masks unique to the Item).
    plaid_accounts: Mutex<Option<Vec<Value>>>,
    /// Plaid: item id → standing `item.error` object.
    item_errors: Mutex<HashMap<String, Value>>,
    /// Plaid: item id → `consent_expiration_time`.
    consents: Mutex<HashMap<String, String>>,
    /// Plaid: the webhook signing key (PKCS#8 DER) and its public JWK.
    signing: Mutex<Option<(Vec<u8>, Value)>>,
    /// Teller: enrollment id → account masks (default derived from the id).
    teller_masks: Mutex<HashMap<String, Vec<String>>>,
    /// Teller: enrollment id → the error `GET /accounts` answers (status, code).
    teller_health: Mutex<HashMap<String, (u16, String)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test must not poison the fake for its Drop or other asserts.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running fake server; stopped when dropped.
struct Running {
    addr: SocketAddr,
    handle: ServerHandle,
    state: Arc<State>,
}

impl Running {
    async fn start(state: State, route: Route) -> Running {
        let state = Arc::new(state);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake server");
        let addr = listener.local_addr().expect("fake server address");
        let data = web::Data::new((state.clone(), route));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .listen(listener)
        .expect("listen fake server")
        .run();
        let handle = server.handle();
        // The listener is already bound, so requests queue until it accepts.
        tokio::spawn(server);
        Running {
            addr,
            handle,
            state,
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    fn requests_to(&self, path: &str) -> Vec<Recorded> {
        lock(&self.state.requests)
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    fn set(&self, path: &str, behaviour: Option<Behaviour>) {
        let mut map = lock(&self.state.behaviours);
        match behaviour {
            Some(b) => map.insert(path.to_owned(), b),
            None => map.remove(path),
        };
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Sends the stop command now; the returned future only awaits completion.
        drop(self.handle.stop(false));
    }
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    data: web::Data<(Arc<State>, Route)>,
) -> HttpResponse {
    let (state, route) = (&data.0, data.1);
    let recorded = Recorded {
        method: req.method().to_string(),
        path: req.path().to_owned(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_ascii_lowercase(), value)
            })
            .collect(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    lock(&state.requests).push(recorded.clone());
    let behaviour = lock(&state.behaviours).get(&recorded.path).cloned();
    match behaviour {
        Some(Behaviour::Hang(d)) => {
            tokio::time::sleep(d).await;
            HttpResponse::GatewayTimeout().finish()
        }
        Some(Behaviour::Respond { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            HttpResponse::build(status).json(body)
        }
        None => route(state, &recorded),
    }
}

// ---------------------------------------------------------------- Plaid

/// A fake Plaid API.
pub struct FakePlaid(Running);

impl FakePlaid {
    /// Starts a fake Plaid on a free local port.
    pub async fn start() -> FakePlaid {
        let state = State {
            institution: Mutex::new((
                Some(PLAID_INSTITUTION_ID.to_owned()),
                Some(PLAID_INSTITUTION_NAME.to_owned()),
            )),
            signing: Mutex::new(Some(new_signing_key(PLAID_WEBHOOK_KID))),
            ..State::default()
        };
        FakePlaid(Running::start(state, plaid_route).await)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        self.0.base_url()
    }

    /// A configured `[plaid]` section pointing at this fake.
    pub fn plaid_config(&self) -> PlaidConfig {
        PlaidConfig {
            client_id: Some(PLAID_CLIENT_ID.to_owned()),
            secret: Some(Secret::new(PLAID_SECRET)),
            base_url: Some(Url::parse(&self.base_url()).expect("fake base URL")),
            ..PlaidConfig::default()
        }
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.0.requests()
    }

    /// The requests to `path`, oldest first.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.0.requests_to(path)
    }

    /// Answer `path` with a Plaid error object.
    pub fn fail_with(&self, path: &str, status: u16, error_code: &str, display: Option<&str>) {
        let error_type = if error_code.starts_with("ITEM_") {
            "ITEM_ERROR"
        } else {
            "API_ERROR"
        };
        let body = json!({
            "error_type": error_type,
            "error_code": error_code,
            "error_message": format!("fake Plaid error {error_code}"),
            "display_message": display,
            "request_id": "req-fake-error",
        });
        self.respond(path, status, body);
    }

    /// Answer `path` with 400 `ITEM_LOGIN_REQUIRED` and [`LOGIN_REQUIRED_MESSAGE`].
    pub fn fail_login_required(&self, path: &str) {
        self.fail_with(
            path,
            400,
            "ITEM_LOGIN_REQUIRED",
            Some(LOGIN_REQUIRED_MESSAGE),
        );
    }

    /// Answer `path` with this status and JSON body.
    pub fn respond(&self, path: &str, status: u16, body: Value) {
        self.0.set(path, Some(Behaviour::Respond { status, body }));
    }

    /// Never answer `path` in time (waits [`HANG`]).
    pub fn hang(&self, path: &str) {
        self.0.set(path, Some(Behaviour::Hang(HANG)));
    }

    /// Wait `delay` before answering `path` (with 504).
    pub fn hang_for(&self, path: &str, delay: Duration) {
        self.0.set(path, Some(Behaviour::Hang(delay)));
    }

    /// Answer `path` normally again.
    pub fn reset(&self, path: &str) {
        self.0.set(path, None);
    }

    /// The institution `/item/get` reports (both nullable in Plaid).
    pub fn set_institution(&self, id: Option<&str>, name: Option<&str>) {
        *lock(&self.0.state.institution) = (id.map(str::to_owned), name.map(str::to_owned));
    }

    /// The access tokens handed out by `/item/public_token/exchange`.
    pub fn issued_access_tokens(&self) -> Vec<String> {
        lock(&self.0.state.items).keys().cloned().collect()
    }

    /// The item ids handed out so far.
    pub fn item_ids(&self) -> Vec<String> {
        lock(&self.0.state.items).values().cloned().collect()
    }

    /// The accounts `/accounts/get` reports for every Item from now on
    /// (`(name, mask)` pairs); by default each Item has two accounts with masks of its own.
    pub fn set_accounts(&self, accounts: &[(&str, &str)]) {
        let list = accounts
            .iter()
            .enumerate()
            .map(|(i, (name, mask))| {
                json!({
                    "account_id": format!("acc-{i}"),
                    "name": name,
                    "official_name": null,
                    "mask": mask,
                    "type": "depository",
                    "subtype": if i == 0 { "checking" } else { "savings" },
                    "balances": {"available": 100, "current": 110, "iso_currency_code": "USD"},
                })
            })
            .collect();
        *lock(&self.0.state.plaid_accounts) = Some(list);
    }

    /// The Item's standing error as `/item/get` reports it (None: healthy).
    pub fn set_item_error(&self, item_id: &str, error_code: Option<&str>) {
        let mut map = lock(&self.0.state.item_errors);
        match error_code {
            Some(code) => map.insert(
                item_id.to_owned(),
                json!({
                    "error_type": "ITEM_ERROR",
                    "error_code": code,
                    "error_message": format!("fake item error {code}"),
                    "display_message": null,
                }),
            ),
            None => map.remove(item_id),
        };
    }

    /// The Item's `consent_expiration_time` (ISO 8601) as `/item/get` reports it.
    pub fn set_consent_expiration(&self, item_id: &str, at: Option<&str>) {
        let mut map = lock(&self.0.state.consents);
        match at {
            Some(t) => map.insert(item_id.to_owned(), t.to_owned()),
            None => map.remove(item_id),
        };
    }

    /// Retire the signing key: `/webhook_verification_key/get` reports `expired_at`.
    pub fn retire_signing_key(&self) {
        if let Some((_, jwk)) = lock(&self.0.state.signing).as_mut() {
            jwk["expired_at"] = json!(1_600_000_000);
        }
    }

    /// A `Plaid-Verification` JWT for `body`, issued now.
    pub fn sign_webhook(&self, body: &[u8]) -> String {
        self.sign_webhook_at(body, now())
    }

    /// A `Plaid-Verification` JWT for `body`, issued at `iat` (unix seconds).
    pub fn sign_webhook_at(&self, body: &[u8], iat: i64) -> String {
        let der = lock(&self.0.state.signing)
            .as_ref()
            .map(|(der, _)| der.clone())
            .expect("signing key");
        sign_es256(&der, PLAID_WEBHOOK_KID, body, iat)
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A fresh P-256 key: its PKCS#8 DER and its public JWK (as Plaid serves it).
pub fn new_signing_key(kid: &str) -> (Vec<u8>, Value) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let raw = key.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = json!({
        "alg": "ES256",
        "crv": "P-256",
        "kid": kid,
        "kty": "EC",
        "use": "sig",
        "x": b64(&raw[1..33]),
        "y": b64(&raw[33..65]),
        "created_at": 1_560_000_000,
        "expired_at": null,
    });
    (key.serialize_der(), jwk)
}

/// A Plaid-style webhook JWT: ES256 over `{iat, request_body_sha256}`.
pub fn sign_es256(pkcs8_der: &[u8], kid: &str, body: &[u8], iat: i64) -> String {
    use sha2::Digest as _;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    let claims = json!({
        "iat": iat,
        "request_body_sha256": hex::encode(sha2::Sha256::digest(body)),
    });
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(pkcs8_der),
    )
    .expect("sign JWT")
}

/// A `Teller-Signature` header: `t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>` per secret.
pub fn teller_signature(secrets: &[&str], t: i64, body: &[u8]) -> String {
    use hmac::Mac as _;
    let mut out = format!("t={t}");
    for secret in secrets {
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC key");
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        out.push_str(&format!(",v1={}", hex::encode(mac.finalize().into_bytes())));
    }
    out
}

fn plaid_error(status: StatusCode, error_type: &str, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "error_type": error_type,
        "error_code": code,
        "error_message": message,
        "display_message": null,
        "request_id": "req-fake",
    }))
}

fn plaid_route(state: &State, req: &Recorded) -> HttpResponse {
    if req.method != "POST" {
        return plaid_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "INVALID_REQUEST",
            "METHOD_NOT_ALLOWED",
            "use POST",
        );
    }
    if req.header("plaid-client-id") != Some(PLAID_CLIENT_ID)
        || req.header("plaid-secret") != Some(PLAID_SECRET)
    {
        return plaid_error(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            "INVALID_API_KEYS",
            "invalid client_id or secret provided",
        );
    }
    let field = |name: &str| req.body.get(name).and_then(Value::as_str);
    let n = state.counter.fetch_add(1, Ordering::SeqCst) + 1;
    let request_id = format!("req-fake-{n}");
    match req.path.as_str() {
        "/link/token/create" => HttpResponse::Ok().json(json!({
            "link_token": format!("link-sandbox-{n}"),
            "expiration": "2026-12-31T23:59:59Z",
            "request_id": request_id,
        })),
        "/item/public_token/exchange" => {
            if field("public_token").is_none_or(str::is_empty) {
                return missing_field("public_token");
            }
            let (access_token, item_id) = (format!("access-sandbox-{n}"), format!("item-{n}"));
            lock(&state.items).insert(access_token.clone(), item_id.clone());
            HttpResponse::Ok().json(json!({
                "access_token": access_token,
                "item_id": item_id,
                "request_id": request_id,
            }))
        }
        "/item/get" => {
            let Some(token) = field("access_token") else {
                return missing_field("access_token");
            };
            let item_id = lock(&state.items)
                .get(token)
                .cloned()
                .unwrap_or_else(|| "item-unknown".to_owned());
            let (institution_id, institution_name) = lock(&state.institution).clone();
            let error = lock(&state.item_errors).get(&item_id).cloned();
            let consent = lock(&state.consents).get(&item_id).cloned();
            HttpResponse::Ok().json(json!({
                "item": {
                    "item_id": item_id,
                    "institution_id": institution_id,
                    "institution_name": institution_name,
                    "webhook": null,
                    "error": error,
                    "consent_expiration_time": consent,
                    "products": ["transactions"],
                    "available_products": [],
                    "billed_products": ["transactions"],
                    "update_type": "background",
                },
                "status": null,
                "request_id": request_id,
            }))
        }
        "/accounts/get" => {
            let Some(token) = field("access_token") else {
                return missing_field("access_token");
            };
            let Some(item_id) = lock(&state.items).get(token).cloned() else {
                return plaid_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_INPUT",
                    "INVALID_ACCESS_TOKEN",
                    "provided access token is invalid",
                );
            };
            if let Some(error) = lock(&state.item_errors).get(&item_id).cloned() {
                return HttpResponse::BadRequest().json(error);
            }
            let accounts = lock(&state.plaid_accounts).clone().unwrap_or_else(|| {
                let n: u32 = item_id.trim_start_matches("item-").parse().unwrap_or(0);
                vec![
                    json!({"account_id": format!("{item_id}-chk"), "name": "Plaid Checking",
                        "official_name": "Plaid Gold Standard 0% Interest Checking",
                        "mask": format!("{:04}", (n * 2) % 10000), "type": "depository",
                        "subtype": "checking", "balances": {"current": 110}}),
                    json!({"account_id": format!("{item_id}-sav"), "name": "Plaid Saving",
                        "official_name": null, "mask": format!("{:04}", (n * 2 + 1) % 10000),
                        "type": "depository", "subtype": "savings", "balances": {"current": 210}}),
                ]
            });
            HttpResponse::Ok().json(json!({
                "accounts": accounts,
                "item": {"item_id": item_id},
                "request_id": request_id,
            }))
        }
        "/webhook_verification_key/get" => {
            let Some(kid) = field("key_id") else {
                return missing_field("key_id");
            };
            match lock(&state.signing).as_ref() {
                Some((_, jwk)) if jwk["kid"] == kid => {
                    HttpResponse::Ok().json(json!({"key": jwk, "request_id": request_id}))
                }
                _ => plaid_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_INPUT",
                    "INVALID_WEBHOOK_VERIFICATION_KEY_ID",
                    "invalid key_id provided",
                ),
            }
        }
        "/item/remove" => {
            if field("access_token").is_none() {
                return missing_field("access_token");
            }
            HttpResponse::Ok().json(json!({ "request_id": request_id }))
        }
        _ => plaid_error(
            StatusCode::NOT_FOUND,
            "INVALID_REQUEST",
            "NOT_FOUND",
            "unknown endpoint",
        ),
    }
}

fn missing_field(name: &str) -> HttpResponse {
    plaid_error(
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        "MISSING_FIELDS",
        &format!("the following required fields are missing: {name}"),
    )
}

// ---------------------------------------------------------------- Teller

/// A fake Teller API.
pub struct FakeTeller(Running);

impl FakeTeller {
    /// Starts a fake Teller on a free local port that accepts [`TELLER_TOKEN`].
    pub async fn start() -> FakeTeller {
        let state = State::default();
        lock(&state.tokens).insert(TELLER_TOKEN.to_owned(), TELLER_ENROLLMENT.to_owned());
        FakeTeller(Running::start(state, teller_route).await)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        self.0.base_url()
    }

    /// A configured sandbox `[teller]` section pointing at this fake.
    pub fn teller_config(&self) -> TellerConfig {
        TellerConfig {
            application_id: Some(TELLER_APP_ID.to_owned()),
            environment: TellerEnvironment::Sandbox,
            base_url: Some(Url::parse(&self.base_url()).expect("fake base URL")),
            ..TellerConfig::default()
        }
    }

    /// Accept `token` as the access token of `enrollment_id`.
    pub fn add_token(&self, token: &str, enrollment_id: &str) {
        lock(&self.0.state.tokens).insert(token.to_owned(), enrollment_id.to_owned());
    }

    /// The last four digits of the enrollment's two accounts.
    pub fn set_masks(&self, enrollment_id: &str, masks: [&str; 2]) {
        lock(&self.0.state.teller_masks).insert(
            enrollment_id.to_owned(),
            masks.iter().map(|m| (*m).to_owned()).collect(),
        );
    }

    /// Make `GET /accounts` of this enrollment fail with `status` and `code`
    /// (e.g. 404 `enrollment.disconnected.credentials_invalid`); None: healthy.
    pub fn set_enrollment_error(&self, enrollment_id: &str, error: Option<(u16, &str)>) {
        let mut map = lock(&self.0.state.teller_health);
        match error {
            Some((status, code)) => map.insert(enrollment_id.to_owned(), (status, code.to_owned())),
            None => map.remove(enrollment_id),
        };
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.0.requests()
    }

    /// The requests to `path`, oldest first.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.0.requests_to(path)
    }

    /// Answer `path` with a Teller error `{"error":{"code","message"}}`.
    pub fn fail_with(&self, path: &str, status: u16, code: &str, message: &str) {
        let body = json!({ "error": { "code": code, "message": message } });
        self.respond(path, status, body);
    }

    /// Answer `path` with this status and JSON body.
    pub fn respond(&self, path: &str, status: u16, body: Value) {
        self.0.set(path, Some(Behaviour::Respond { status, body }));
    }

    /// Never answer `path` in time (waits [`HANG`]).
    pub fn hang(&self, path: &str) {
        self.0.set(path, Some(Behaviour::Hang(HANG)));
    }

    /// Answer `path` normally again.
    pub fn reset(&self, path: &str) {
        self.0.set(path, None);
    }
}

/// `Authorization: Basic base64("<token>:")` → token.
fn basic_token(req: &Recorded) -> Option<String> {
    let encoded = req.header("authorization")?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    (password.is_empty() && !user.is_empty()).then(|| user.to_owned())
}

fn teller_error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": { "code": code, "message": message } }))
}

fn teller_route(state: &State, req: &Recorded) -> HttpResponse {
    let enrollment = basic_token(req).and_then(|t| lock(&state.tokens).get(&t).cloned());
    let Some(enrollment) = enrollment else {
        return teller_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid access token",
        );
    };
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/accounts") => {
            if let Some((status, code)) = lock(&state.teller_health).get(&enrollment).cloned() {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
                return teller_error(status, &code, "The enrollment is disconnected");
            }
            let masks = lock(&state.teller_masks).get(&enrollment).cloned();
            HttpResponse::Ok().json(teller_accounts(&enrollment, masks))
        }
        ("DELETE", path) if path.starts_with("/enrollments/") => HttpResponse::NoContent().finish(),
        _ => teller_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "The resource was not found",
        ),
    }
}

fn teller_accounts(enrollment: &str, masks: Option<Vec<String>>) -> Value {
    let masks = masks.unwrap_or_else(|| {
        if enrollment == TELLER_ENROLLMENT {
            vec!["1234".to_owned(), "5678".to_owned()]
        } else {
            // Other enrollments get masks of their own, so they are not duplicates.
            let h = enrollment
                .bytes()
                .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
            vec![
                format!("{:04}", h % 10000),
                format!("{:04}", (h / 10000) % 10000),
            ]
        }
    });
    let account = |n: u32, name: &str, subtype: &str, last_four: &str| {
        let id = format!("acc_{enrollment}_{n}");
        json!({
            "id": id,
            "enrollment_id": enrollment,
            "name": name,
            "last_four": last_four,
            "type": "depository",
            "subtype": subtype,
            "status": "open",
            "currency": "USD",
            "institution": { "id": "chase", "name": "Chase" },
            "links": {
                "self": format!("https://api.teller.io/accounts/{id}"),
                "balances": format!("https://api.teller.io/accounts/{id}/balances"),
                "transactions": format!("https://api.teller.io/accounts/{id}/transactions"),
            },
        })
    };
    json!([
        account(1, "Everyday Checking", "checking", &masks[0]),
        account(2, "Savings", "savings", &masks[1]),
    ])
}
