//! The Plaid and Teller clients against the local fakes, plus a real mTLS
//! handshake for Teller's client certificate.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use breadbox::config::{PlaidConfig, TellerConfig, TellerEnvironment};
use breadbox::providers::plaid::PlaidClient;
use breadbox::providers::teller::TellerClient;
use breadbox::providers::{ClientOptions, ProviderError, Providers};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

use crate::fakes::{self, FakePlaid, FakeTeller};

fn plaid(fake: &FakePlaid) -> PlaidClient {
    PlaidClient::new(&fake.plaid_config(), ClientOptions::default()).expect("plaid client")
}

fn teller(fake: &FakeTeller) -> TellerClient {
    TellerClient::new(&fake.teller_config(), ClientOptions::default()).expect("teller client")
}

/// Asserts that neither Display nor Debug of `err` shows any of `secrets`.
fn assert_no_leak(err: &ProviderError, secrets: &[&str]) {
    let shown = format!("{err} | {err:?} | {}", err.public_message());
    for secret in secrets {
        assert!(!shown.contains(secret), "{secret:?} leaked in {shown}");
    }
}

#[actix_web::test]
async fn plaid_create_link_token_sends_credentials_user_and_products() {
    let fake = FakePlaid::start().await;
    let mut cfg = fake.plaid_config();
    cfg.webhook_url = Some(Url::parse("https://bb.example/webhooks/plaid").expect("url"));
    let client = PlaidClient::new(&cfg, ClientOptions::default()).expect("client");

    let token = client
        .create_link_token("user-7f3c", None)
        .await
        .expect("link token");
    assert!(token.link_token.starts_with("link-sandbox-"), "{token:?}");
    assert!(token.expiration.ends_with('Z'));

    let reqs = fake.requests_to("/link/token/create");
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.header("plaid-client-id"), Some(fakes::PLAID_CLIENT_ID));
    assert_eq!(req.header("plaid-secret"), Some(fakes::PLAID_SECRET));
    assert_eq!(req.header("plaid-version"), Some("2020-09-14"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert!(req
        .header("user-agent")
        .is_some_and(|ua| ua.starts_with("breadbox/")));
    let body = &req.body;
    assert_eq!(body["user"], json!({ "client_user_id": "user-7f3c" }));
    assert_eq!(body["client_name"], "Breadbox");
    assert_eq!(body["language"], "en");
    assert_eq!(body["country_codes"], json!(["US"]));
    assert_eq!(body["products"], json!(["transactions"]));
    assert_eq!(body["webhook"], "https://bb.example/webhooks/plaid");
    assert!(body.get("access_token").is_none());
    // Credentials travel in headers only.
    assert!(body.get("secret").is_none() && body.get("client_id").is_none());
}

#[actix_web::test]
async fn plaid_update_mode_sends_access_token_and_no_products() {
    let fake = FakePlaid::start().await;
    let mut cfg = fake.plaid_config();
    cfg.webhook_url = Some(Url::parse("https://bb.example/webhooks/plaid").expect("url"));
    let client = PlaidClient::new(&cfg, ClientOptions::default()).expect("client");

    client
        .create_link_token("user-1", Some("access-sandbox-existing"))
        .await
        .expect("update-mode token");

    let body = &fake.requests_to("/link/token/create")[0].body;
    assert_eq!(body["access_token"], "access-sandbox-existing");
    assert!(body.get("products").is_none(), "{body}");
    assert!(body.get("webhook").is_none(), "{body}");
    assert_eq!(body["user"]["client_user_id"], "user-1");
}

#[actix_web::test]
async fn plaid_exchange_and_get_item_parse() {
    let fake = FakePlaid::start().await;
    let client = plaid(&fake);

    let first = client
        .exchange_public_token("public-sandbox-1")
        .await
        .expect("exchange");
    let second = client
        .exchange_public_token("public-sandbox-2")
        .await
        .expect("exchange");
    assert!(first.access_token.starts_with("access-sandbox-"));
    assert!(first.item_id.starts_with("item-"));
    assert_ne!(first.access_token, second.access_token);
    assert_ne!(first.item_id, second.item_id);
    assert!(!format!("{first:?}").contains(&first.access_token));
    assert_eq!(
        fake.requests_to("/item/public_token/exchange")[0].body["public_token"],
        "public-sandbox-1"
    );

    let item = client.get_item(&first.access_token).await.expect("item");
    assert_eq!(
        item.institution_id.as_deref(),
        Some(fakes::PLAID_INSTITUTION_ID)
    );
    assert_eq!(
        item.institution_name.as_deref(),
        Some(fakes::PLAID_INSTITUTION_NAME)
    );
    assert_eq!(
        fake.requests_to("/item/get")[0].body["access_token"],
        Value::from(first.access_token.clone())
    );

    fake.set_institution(None, None);
    let item = client.get_item(&first.access_token).await.expect("item");
    assert_eq!(item.institution_id, None);
    assert_eq!(item.institution_name, None);
}

#[actix_web::test]
async fn plaid_remove_item_sends_access_token() {
    let fake = FakePlaid::start().await;
    plaid(&fake)
        .remove_item("access-sandbox-9")
        .await
        .expect("remove");
    let reqs = fake.requests_to("/item/remove");
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].body["access_token"], "access-sandbox-9");
}

#[actix_web::test]
async fn plaid_error_carries_display_message() {
    let fake = FakePlaid::start().await;
    fake.fail_login_required("/item/get");

    let err = plaid(&fake)
        .get_item("access-sandbox-42")
        .await
        .expect_err("login required");
    match &err {
        ProviderError::Api {
            status,
            code,
            display_message,
            ..
        } => {
            assert_eq!(*status, 400);
            assert_eq!(code, "ITEM_LOGIN_REQUIRED");
            assert_eq!(
                display_message.as_deref(),
                Some(fakes::LOGIN_REQUIRED_MESSAGE)
            );
        }
        other => panic!("expected Api error, got {other:?}"),
    }
    assert_eq!(err.public_message(), fakes::LOGIN_REQUIRED_MESSAGE);
    assert_no_leak(&err, &["access-sandbox-42", fakes::PLAID_SECRET]);

    // Without a display message the public message is generic.
    fake.fail_with("/link/token/create", 500, "INTERNAL_SERVER_ERROR", None);
    let err = plaid(&fake)
        .create_link_token("user-1", None)
        .await
        .expect_err("500");
    assert!(matches!(err, ProviderError::Api { status: 500, .. }));
    assert!(err.public_message().contains("try again"));
    assert!(!err.public_message().contains("INTERNAL_SERVER_ERROR"));
}

#[actix_web::test]
async fn plaid_error_text_echoing_credentials_is_redacted() {
    let fake = FakePlaid::start().await;
    fake.respond(
        "/item/remove",
        400,
        json!({
            "error_type": "INVALID_INPUT",
            "error_code": "INVALID_ACCESS_TOKEN",
            "error_message": format!("bad token access-sandbox-77 for secret {}", fakes::PLAID_SECRET),
            "display_message": "access-sandbox-77 is not valid",
            "request_id": "req-1",
        }),
    );
    let err = plaid(&fake)
        .remove_item("access-sandbox-77")
        .await
        .expect_err("error");
    assert!(matches!(&err, ProviderError::Api { code, .. } if code == "INVALID_ACCESS_TOKEN"));
    assert_no_leak(&err, &["access-sandbox-77", fakes::PLAID_SECRET]);
}

#[actix_web::test]
async fn plaid_hanging_endpoint_times_out() {
    let fake = FakePlaid::start().await;
    fake.hang("/link/token/create");
    let opts = ClientOptions {
        timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    };
    let client = PlaidClient::new(&fake.plaid_config(), opts).expect("client");

    let started = Instant::now();
    let err = client
        .create_link_token("user-1", None)
        .await
        .expect_err("timeout");
    assert_eq!(err, ProviderError::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(err.public_message().contains("try again"));
}

#[actix_web::test]
async fn plaid_unreachable_is_a_transport_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let cfg = PlaidConfig {
        base_url: Some(Url::parse(&format!("http://127.0.0.1:{port}")).expect("url")),
        ..FakePlaid::start().await.plaid_config()
    };
    let client = PlaidClient::new(&cfg, ClientOptions::default()).expect("client");
    let err = client
        .exchange_public_token("public-sandbox-secretish")
        .await
        .expect_err("unreachable");
    assert!(matches!(err, ProviderError::Transport(_)), "{err:?}");
    assert_no_leak(&err, &["public-sandbox-secretish", fakes::PLAID_SECRET]);
}

#[actix_web::test]
async fn teller_list_accounts_uses_basic_auth() {
    let fake = FakeTeller::start().await;
    let client = teller(&fake);
    assert_eq!(client.application_id(), fakes::TELLER_APP_ID);
    assert_eq!(client.environment(), "sandbox");

    let accounts = client
        .list_accounts(fakes::TELLER_TOKEN)
        .await
        .expect("accounts");
    assert_eq!(accounts.len(), 2);
    for account in &accounts {
        assert_eq!(account.enrollment_id, fakes::TELLER_ENROLLMENT);
        assert_eq!(account.institution.id, "chase");
        assert_eq!(account.institution.name, "Chase");
    }
    assert_eq!(accounts[0].last_four.as_deref(), Some("1234"));

    let req = &fake.requests_to("/accounts")[0];
    assert_eq!(req.method, "GET");
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", fakes::TELLER_TOKEN))
    );
    assert_eq!(req.header("authorization"), Some(expected.as_str()));
}

#[actix_web::test]
async fn teller_bad_token_is_an_api_error_without_the_token() {
    let fake = FakeTeller::start().await;
    let err = teller(&fake)
        .list_accounts("token_not_known_123")
        .await
        .expect_err("401");
    match &err {
        ProviderError::Api {
            status,
            code,
            display_message,
            ..
        } => {
            assert_eq!(*status, 401);
            assert_eq!(code, "unauthorized");
            assert_eq!(*display_message, None);
        }
        other => panic!("expected Api error, got {other:?}"),
    }
    assert_no_leak(&err, &["token_not_known_123"]);
}

#[actix_web::test]
async fn teller_delete_enrollment() {
    let fake = FakeTeller::start().await;
    let client = teller(&fake);
    client
        .delete_enrollment(fakes::TELLER_TOKEN, fakes::TELLER_ENROLLMENT)
        .await
        .expect("delete");
    let path = format!("/enrollments/{}", fakes::TELLER_ENROLLMENT);
    let reqs = fake.requests_to(&path);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "DELETE");
    assert!(reqs[0]
        .header("authorization")
        .is_some_and(|h| h.starts_with("Basic ")));

    // Already gone counts as deleted; other errors do not.
    fake.fail_with(&path, 404, "not_found", "The enrollment was not found");
    client
        .delete_enrollment(fakes::TELLER_TOKEN, fakes::TELLER_ENROLLMENT)
        .await
        .expect("404 is ok");
    fake.fail_with(&path, 502, "bank_error", "The bank is down");
    let err = client
        .delete_enrollment(fakes::TELLER_TOKEN, fakes::TELLER_ENROLLMENT)
        .await
        .expect_err("502");
    assert!(matches!(err, ProviderError::Api { status: 502, .. }));
    assert_no_leak(&err, &[fakes::TELLER_TOKEN]);
}

#[actix_web::test]
async fn providers_from_config_builds_only_configured_clients() {
    let none = Providers::from_config(&PlaidConfig::default(), &TellerConfig::default())
        .expect("nothing configured");
    assert!(none.plaid.is_none() && none.teller.is_none());

    let plaid = FakePlaid::start().await;
    let teller = FakeTeller::start().await;
    let both = Providers::from_config(&plaid.plaid_config(), &teller.teller_config())
        .expect("both configured");
    assert!(both.plaid.is_some() && both.teller.is_some());
    let shown = format!("{both:?}");
    assert!(!shown.contains(fakes::PLAID_SECRET), "{shown}");
}

#[actix_web::test]
async fn teller_development_without_certificate_files_fails_setup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_path = dir.path().join("missing-certificate.pem");
    let key_path = dir.path().join("missing-private-key.pem");
    let cfg = TellerConfig {
        application_id: Some("app_x".into()),
        environment: TellerEnvironment::Development,
        certificate_path: Some(cert_path.clone()),
        private_key_path: Some(key_path.clone()),
        ..TellerConfig::default()
    };
    let err = Providers::from_config(&PlaidConfig::default(), &cfg).expect_err("missing files");
    assert!(
        err.to_string().contains(&cert_path.display().to_string()),
        "{err}"
    );

    // Files that exist but are not PEM are named too.
    std::fs::write(&cert_path, "not a certificate").expect("write");
    std::fs::write(&key_path, "not a key").expect("write");
    let err = Providers::from_config(&PlaidConfig::default(), &cfg).expect_err("bad pem");
    assert!(
        err.to_string().contains(&cert_path.display().to_string()),
        "{err}"
    );

    // No paths at all in development is refused as well.
    let cfg = TellerConfig {
        certificate_path: None,
        private_key_path: None,
        ..cfg
    };
    let err = Providers::from_config(&PlaidConfig::default(), &cfg).expect_err("no paths");
    assert!(err.to_string().contains("certificate_path"), "{err}");
}

// ---------------------------------------------------------------- mTLS

/// A test CA with a server certificate for 127.0.0.1/localhost and a client
/// certificate, all PEM.
struct Pki {
    ca_pem: String,
    server_cert_der: rustls::pki_types::CertificateDer<'static>,
    server_key_der: Vec<u8>,
    client_cert_pem: String,
    client_key_pem: String,
    other_cert_pem: String,
}

fn make_pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Breadbox Test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");

    let server_key = KeyPair::generate().expect("server key");
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server
        .signed_by(&server_key, &ca_cert, &ca_key)
        .expect("server cert");

    let client_key = KeyPair::generate().expect("client key");
    let mut client = CertificateParams::new(Vec::<String>::new()).expect("client params");
    client
        .distinguished_name
        .push(DnType::CommonName, "breadbox test client");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client
        .signed_by(&client_key, &ca_cert, &ca_key)
        .expect("client cert");

    // A certificate whose key is not `client_key`, for the mismatch case.
    let other_key = KeyPair::generate().expect("other key");
    let other_cert = CertificateParams::new(Vec::<String>::new())
        .expect("other params")
        .signed_by(&other_key, &ca_cert, &ca_key)
        .expect("other cert");

    Pki {
        ca_pem: ca_cert.pem(),
        server_cert_der: server_cert.der().clone(),
        server_key_der: server_key.serialize_der(),
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
        other_cert_pem: other_cert.pem(),
    }
}

/// Starts a TLS server that requires a client certificate signed by the CA
/// and answers `[]` to any request. Returns its port and a counter of
/// requests answered.
async fn start_mtls_server(pki: &Pki) -> (u16, Arc<AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(cert.expect("ca pem")).expect("add root");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .expect("client verifier");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(pki.server_key_der.clone().into());
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server_cert_der.clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = answered.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if !request.starts_with(b"GET /accounts ") {
                    return;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let response = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                                Content-Length: 2\r\nConnection: close\r\n\r\n[]";
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, answered)
}

fn write_pem(dir: &Path, name: &str, pem: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write pem");
    path
}

#[actix_web::test]
async fn teller_mtls_client_certificate() {
    let pki = make_pki();
    let (port, answered) = start_mtls_server(&pki).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_path = write_pem(dir.path(), "certificate.pem", &pki.client_cert_pem);
    let key_path = write_pem(dir.path(), "private_key.pem", &pki.client_key_pem);
    let base_url = Url::parse(&format!("https://127.0.0.1:{port}")).expect("url");
    let opts = ClientOptions {
        timeout: Duration::from_secs(5),
        extra_root_pem: Some(pki.ca_pem.clone().into_bytes()),
    };
    let with_cert = TellerConfig {
        application_id: Some("app_mtls".into()),
        environment: TellerEnvironment::Development,
        certificate_path: Some(cert_path.clone()),
        private_key_path: Some(key_path.clone()),
        base_url: Some(base_url.clone()),
        ..TellerConfig::default()
    };

    let client = TellerClient::new(&with_cert, opts.clone()).expect("mtls client");
    assert_eq!(client.environment(), "development");
    let accounts = client.list_accounts("token_mtls").await.expect("accounts");
    assert!(accounts.is_empty());
    assert_eq!(answered.load(Ordering::SeqCst), 1);

    // Without a client certificate the server refuses the handshake.
    let without_cert = TellerConfig {
        environment: TellerEnvironment::Sandbox,
        certificate_path: None,
        private_key_path: None,
        ..with_cert.clone()
    };
    let client = TellerClient::new(&without_cert, opts.clone()).expect("plain client");
    let err = client
        .list_accounts("token_mtls")
        .await
        .expect_err("handshake refused");
    assert!(matches!(err, ProviderError::Transport(_)), "{err:?}");
    assert_no_leak(&err, &["token_mtls"]);
    assert_eq!(answered.load(Ordering::SeqCst), 1);

    // A certificate and key that do not belong together are refused at setup.
    let other_path = write_pem(dir.path(), "other.pem", &pki.other_cert_pem);
    let mismatched = TellerConfig {
        certificate_path: Some(other_path.clone()),
        ..with_cert
    };
    let err = TellerClient::new(&mismatched, opts).expect_err("mismatched pair");
    assert!(
        err.to_string().contains(&other_path.display().to_string()),
        "{err}"
    );
}
