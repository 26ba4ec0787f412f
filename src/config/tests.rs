use super::*;

const HEX_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const WH_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const EXAMPLE: &str = include_str!("../../breadbox.toml.example");

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    load(&Flags::default(), env(pairs))
}

fn env_err(pairs: &[(&str, &str)]) -> String {
    load_env(pairs).expect_err("config should be rejected").0
}

fn toml_err(text: &str) -> String {
    from_toml_str(text)
        .expect_err("config should be rejected")
        .0
}

fn dbg(c: &Config) -> String {
    format!("{c:?}")
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "breadbox-config-{}-{name}.toml",
        std::process::id()
    ));
    std::fs::write(&path, contents).expect("write temp config");
    path
}

/// A valid, non-default value for every key, as an env string.
fn sample(key: &Key) -> &'static str {
    match (key.section, key.name) {
        ("server", "listen") => "0.0.0.0:9000",
        ("server", "public_url") => "https://bank.example.com/bb/",
        ("server", "trust_forwarded_headers") => "true",
        ("database", "path") => "/var/lib/breadbox/db.sqlite",
        ("database", "synchronous") => "normal",
        ("security", "encryption_key") => HEX_KEY,
        ("link", "default_ttl_seconds") => "60",
        ("link", "max_ttl_seconds") => "120",
        ("link", "allowed_redirect_origins") => "https://app.example.com, http://localhost:3000",
        ("plaid", "client_id") => "client-123",
        ("plaid", "secret") => "plaid-secret-value",
        ("plaid", "environment") => "production",
        ("plaid", "base_url") => "http://127.0.0.1:9100/",
        ("plaid", "client_name") => "Household",
        ("plaid", "products") => "transactions,auth",
        ("plaid", "country_codes") => "US,CA",
        ("plaid", "language") => "fr",
        ("plaid", "webhook_url") => "https://bank.example.com/webhooks/plaid",
        ("plaid", "redirect_uri") => "https://bank.example.com/bb/oauth-return",
        ("teller", "application_id") => "app_123",
        ("teller", "environment") => "production",
        ("teller", "certificate_path") => "/etc/teller/cert.pem",
        ("teller", "private_key_path") => "/etc/teller/key.pem",
        ("teller", "base_url") => "http://127.0.0.1:9200",
        ("teller", "webhook_signing_secrets") => "whs-one,whs-two",
        ("connections", "health_check_interval") => "12h",
        ("webhooks", "url") => "https://agent.example.com/hook",
        ("webhooks", "secret") => WH_SECRET,
        ("limits", "bad_token_per_minute") => "0",
        ("limits", "api_per_minute") => "5",
        ("limits", "bad_api_key_per_minute") => "7",
        ("log", "level") => "debug",
        ("mcp", "enabled") => "false",
        ("retention", "link_sessions") => "90d",
        ("retention", "webhook_deliveries") => "12h",
        _ => panic!("no sample for {}.{}", key.section, key.name),
    }
}

fn all_samples_env() -> Vec<(String, String)> {
    KEYS.iter()
        .map(|k| (k.env_var(), sample(k).to_owned()))
        .collect()
}

fn all_samples_toml() -> String {
    let mut out = String::new();
    let mut section = "";
    for key in KEYS {
        if key.section != section {
            section = key.section;
            out.push_str(&format!("[{section}]\n"));
        }
        let v = sample(key);
        let value = match key.kind {
            Kind::Str => toml::Value::String(v.to_owned()),
            Kind::Bool => toml::Value::Boolean(v == "true"),
            Kind::UInt => toml::Value::Integer(v.parse().expect("integer sample")),
            Kind::List => toml::Value::Array(
                v.split(',')
                    .map(|s| toml::Value::String(s.trim().to_owned()))
                    .collect(),
            ),
        };
        out.push_str(&format!("{} = {value}\n", key.name));
    }
    out
}

/// The lines of `[name]` in the example file, up to the next section.
fn example_section(name: &str) -> Option<String> {
    let header = format!("[{name}]");
    let mut lines = EXAMPLE.lines().skip_while(|l| l.trim() != header);
    lines.next()?;
    Some(
        lines
            .take_while(|l| !l.starts_with('['))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

#[test]
fn defaults() {
    let c = Config::default();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.public_base(), None);
    assert!(!c.server.trust_forwarded_headers);
    assert_eq!(c.database.path, PathBuf::from("breadbox.db"));
    assert_eq!(c.database.synchronous, Synchronous::Full);
    assert_eq!(c.database.synchronous.as_pragma(), "FULL");
    assert!(c.security.encryption_key.is_none());
    assert_eq!(c.security.key_bytes(), None);
    assert_eq!(c.link.default_ttl_seconds, 900);
    assert_eq!(c.link.max_ttl_seconds, 3600);
    assert!(c.link.allowed_redirect_origins.is_empty());
    assert!(!c.plaid.is_configured());
    assert_eq!(c.plaid.environment, PlaidEnvironment::Sandbox);
    assert_eq!(c.plaid.api_base(), "https://sandbox.plaid.com");
    assert_eq!(c.plaid.client_name, "Breadbox");
    assert_eq!(c.plaid.products, ["transactions"]);
    assert_eq!(c.plaid.country_codes, ["US"]);
    assert_eq!(c.plaid.language, "en");
    assert!(c.plaid.webhook_url.is_none());
    assert!(!c.teller.is_configured());
    assert_eq!(c.teller.environment, TellerEnvironment::Sandbox);
    assert_eq!(c.teller.api_base(), "https://api.teller.io");
    assert!(c.webhooks.url.is_none() && c.webhooks.secret.is_none());
    assert_eq!(c.limits.bad_token_per_minute, 10);
    assert_eq!(c.limits.api_per_minute, 1200);
    assert_eq!(c.limits.bad_api_key_per_minute, 30);
    assert_eq!(c.log.level, LogLevel::Info);
    assert!(c.mcp.enabled);
    c.validate().expect("defaults are valid");
}

#[test]
fn no_file_and_no_breadbox_env_gives_defaults() {
    let c = load_env(&[("PATH", "/usr/bin"), ("HOME", "/root")]).expect("load");
    assert_eq!(dbg(&c), dbg(&Config::default()));
    assert_eq!(
        dbg(&from_toml_str("").expect("empty TOML")),
        dbg(&Config::default())
    );
}

#[test]
fn precedence_is_file_then_env_then_flags() {
    let path = temp_file(
        "precedence",
        "[server]\nlisten = \"127.0.0.1:1111\"\npublic_url = \"https://file.example\"\n\
             [database]\npath = \"file.db\"\n[limits]\napi_per_minute = 5\n",
    );
    let file_only = Flags {
        config: Some(path.clone()),
        ..Flags::default()
    };
    let c = load(&file_only, env(&[])).expect("file");
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:1111");
    assert_eq!(
        c.server.public_base().as_deref(),
        Some("https://file.example")
    );
    assert_eq!(
        c.database.path,
        path.parent().expect("dir").join("file.db"),
        "relative to the config file's directory"
    );
    assert_eq!(c.limits.api_per_minute, 5);
    assert_eq!(c.limits.bad_api_key_per_minute, 30, "default kept");

    let vars = env(&[
        ("BREADBOX_SERVER_LISTEN", "127.0.0.1:2222"),
        ("BREADBOX_SERVER_PUBLIC_URL", "https://env.example"),
        ("BREADBOX_DATABASE_PATH", "env.db"),
    ]);
    let c = load(&file_only, vars.clone()).expect("file + env");
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:2222");
    assert_eq!(
        c.server.public_base().as_deref(),
        Some("https://env.example")
    );
    assert_eq!(c.database.path, PathBuf::from("env.db"));
    assert_eq!(c.limits.api_per_minute, 5, "file value kept");

    let all = Flags {
        config: Some(path.clone()),
        database: Some(PathBuf::from("flag.db")),
        listen: Some("127.0.0.1:3333".to_owned()),
        public_url: Some("https://flag.example/".to_owned()),
    };
    let c = load(&all, vars).expect("file + env + flags");
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:3333");
    assert_eq!(
        c.server.public_base().as_deref(),
        Some("https://flag.example")
    );
    assert_eq!(c.database.path, PathBuf::from("flag.db"));
    assert_eq!(c.limits.api_per_minute, 5);
    let _ = std::fs::remove_file(path);
}

#[test]
fn config_file_named_by_env_or_flag() {
    let a = temp_file("named-a", "[limits]\napi_per_minute = 1\n");
    let b = temp_file("named-b", "[limits]\napi_per_minute = 2\n");
    let a_str = a.to_str().expect("utf-8 temp path");
    let vars = [("BREADBOX_CONFIG", a_str)];
    assert_eq!(load_env(&vars).expect("env file").limits.api_per_minute, 1);
    let flags = Flags {
        config: Some(b.clone()),
        ..Flags::default()
    };
    let c = load(&flags, env(&vars)).expect("flag file");
    assert_eq!(c.limits.api_per_minute, 2, "--config beats BREADBOX_CONFIG");
    let c = load_env(&[("BREADBOX_CONFIG", "")]).expect("empty = no file");
    assert_eq!(c.limits.api_per_minute, 1200);
    let _ = std::fs::remove_file(a);
    let _ = std::fs::remove_file(b);
}

#[test]
fn missing_or_broken_named_file_is_an_error() {
    let missing = std::env::temp_dir().join("breadbox-config-no-such-file.toml");
    let flags = Flags {
        config: Some(missing.clone()),
        ..Flags::default()
    };
    let e = load(&flags, env(&[])).expect_err("missing file").0;
    assert!(
        e.contains(&missing.display().to_string()) && e.contains("not found"),
        "{e}"
    );
    let missing_str = missing.to_str().expect("utf-8 temp path");
    let e = env_err(&[("BREADBOX_CONFIG", missing_str)]);
    assert!(e.contains("not found"), "{e}");

    let broken = temp_file("broken", "[server\nlisten = 1\n");
    let flags = Flags {
        config: Some(broken.clone()),
        ..Flags::default()
    };
    let e = load(&flags, env(&[])).expect_err("broken file").0;
    assert!(
        e.starts_with("config file ") && e.contains("invalid TOML"),
        "{e}"
    );
    let _ = std::fs::remove_file(broken);
}

#[test]
fn env_names_are_generated_for_every_key() {
    let mut names: Vec<String> = KEYS.iter().map(Key::env_var).collect();
    for expected in [
        "BREADBOX_SERVER_LISTEN",
        "BREADBOX_SERVER_TRUST_FORWARDED_HEADERS",
        "BREADBOX_PLAID_SECRET",
        "BREADBOX_LINK_DEFAULT_TTL_SECONDS",
        "BREADBOX_LINK_ALLOWED_REDIRECT_ORIGINS",
        "BREADBOX_TELLER_PRIVATE_KEY_PATH",
        "BREADBOX_LIMITS_BAD_API_KEY_PER_MINUTE",
        "BREADBOX_LOG_LEVEL",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing");
    }
    assert!(names.iter().all(|n| !ENV_IGNORED.contains(&n.as_str())));
    names.sort();
    names.dedup();
    assert_eq!(names.len(), KEYS.len(), "env names must be unique");

    // Each generated name is accepted and lands in the config.
    for key in KEYS {
        let name = key.env_var();
        let mut c = Config::default();
        let raw = raw_from_env(&name, key.kind, sample(key)).expect("sample parses");
        apply(&mut c, key, raw, &name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_ne!(dbg(&c), dbg(&Config::default()), "{name} had no effect");
    }
    let c = load(&Flags::default(), all_samples_env()).expect("every key from env");
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(
        c.server.public_base().as_deref(),
        Some("https://bank.example.com/bb")
    );
    assert!(c.plaid.is_configured() && c.teller.is_configured());
    assert_eq!(c.plaid.api_base(), "http://127.0.0.1:9100");
    assert_eq!(c.teller.environment, TellerEnvironment::Production);
    assert_eq!(
        c.security.key_bytes(),
        Some(std::array::from_fn(|i| i as u8))
    );
    assert_eq!(c.webhooks.secret_bytes().map(|b| b.len()), Some(24));
    assert_eq!(c.limits.bad_token_per_minute, 0);
    assert_eq!(c.log.level.as_str(), "debug");
}

#[test]
fn every_key_can_be_set_in_toml() {
    let c = from_toml_str(&all_samples_toml()).expect("every key from TOML");
    let via_env = load(&Flags::default(), all_samples_env()).expect("every key from env");
    assert_eq!(dbg(&c), dbg(&via_env));
}

#[test]
fn unknown_toml_keys_and_sections_are_named() {
    let e = toml_err("[plaid]\nsecrett = \"x\"\n");
    assert!(e.starts_with("unknown key plaid.secrett"), "{e}");
    let e = toml_err("[plaidd]\nsecret = \"x\"\n");
    assert!(e.starts_with("unknown section [plaidd]"), "{e}");
    let e = toml_err("listen = \"127.0.0.1:1\"\n");
    assert!(e.starts_with("unknown key listen"), "{e}");
    let e = toml_err("[server.tls]\ncert = \"x\"\n");
    assert!(e.starts_with("unknown key server.tls"), "{e}");
}

#[test]
fn bad_values_name_the_key() {
    assert_eq!(
        toml_err("[server]\nlisten = \"foo\"\n"),
        "server.listen: invalid socket address \"foo\""
    );
    assert_eq!(
        env_err(&[("BREADBOX_LIMITS_API_PER_MINUTE", "lots")]),
        "BREADBOX_LIMITS_API_PER_MINUTE: expected a whole number"
    );
    assert_eq!(
        toml_err("[limits]\napi_per_minute = \"1200\"\n"),
        "limits.api_per_minute: expected a whole number"
    );
    for (text, prefix) in [
        (
            "[limits]\napi_per_minute = -1\n",
            "limits.api_per_minute: must be a whole number",
        ),
        (
            "[limits]\napi_per_minute = 1.5\n",
            "limits.api_per_minute: expected a whole number",
        ),
        (
            "[server]\ntrust_forwarded_headers = \"yes\"\n",
            "server.trust_forwarded_headers:",
        ),
        (
            "[database]\nsynchronous = \"off\"\n",
            "database.synchronous: invalid value \"off\"",
        ),
        (
            "[database]\npath = \"\"\n",
            "database.path: must not be empty",
        ),
        (
            "[log]\nlevel = \"loud\"\n",
            "log.level: invalid value \"loud\"",
        ),
        (
            "[plaid]\nproducts = \"transactions\"\n",
            "plaid.products: expected an array of strings",
        ),
        (
            "[plaid]\nproducts = [1]\n",
            "plaid.products: expected an array of strings",
        ),
        (
            "[teller]\nenvironment = \"staging\"\n",
            "teller.environment: invalid value",
        ),
    ] {
        let e = toml_err(text);
        assert!(e.starts_with(prefix), "{text:?} gave {e}");
    }
    let e = env_err(&[("BREADBOX_SERVER_TRUST_FORWARDED_HEADERS", "yes")]);
    assert!(
        e.starts_with("BREADBOX_SERVER_TRUST_FORWARDED_HEADERS: expected"),
        "{e}"
    );
    let e = env_err(&[("BREADBOX_LINK_MAX_TTL_SECONDS", "-5")]);
    assert!(
        e.starts_with("BREADBOX_LINK_MAX_TTL_SECONDS: must be a whole number"),
        "{e}"
    );

    let listen = Flags {
        listen: Some("nope".to_owned()),
        ..Flags::default()
    };
    assert_eq!(
        load(&listen, env(&[])).expect_err("bad flag").0,
        "--listen: invalid socket address \"nope\""
    );
    let url = Flags {
        public_url: Some("ftp://example.com".to_owned()),
        ..Flags::default()
    };
    let e = load(&url, env(&[])).expect_err("bad flag").0;
    assert!(e.starts_with("--public-url:"), "{e}");
}

#[test]
fn env_bools_and_empty_values() {
    for (value, want) in [("true", true), ("1", true), ("FALSE", false), ("0", false)] {
        let c = load_env(&[("BREADBOX_SERVER_TRUST_FORWARDED_HEADERS", value)]).expect(value);
        assert_eq!(c.server.trust_forwarded_headers, want, "{value}");
    }
    // An empty value unsets an optional setting.
    let path = temp_file("unset", "[server]\npublic_url = \"https://file.example\"\n");
    let flags = Flags {
        config: Some(path.clone()),
        ..Flags::default()
    };
    let c = load(&flags, env(&[("BREADBOX_SERVER_PUBLIC_URL", "")])).expect("unset");
    assert_eq!(c.server.public_url, None);
    let _ = std::fs::remove_file(path);
}

#[test]
fn unknown_breadbox_env_vars_are_rejected() {
    for name in [
        "BREADBOX_PLAID_SECRETT",
        "BREADBOX_SERVER",
        "BREADBOX_",
        "BREADBOX_DATABASE",
    ] {
        let e = env_err(&[(name, "x")]);
        assert!(
            e.starts_with(&format!("unknown environment variable {name} ")),
            "{e}"
        );
    }
    let c = load_env(&[
        ("BREADBOX_LOG", "breadbox=trace"),
        ("BREADBOX_CONFIG", ""),
        ("breadbox_plaid_secret", "lowercase is not ours"),
        ("PLAID_SECRET", "not ours either"),
    ])
    .expect("ignored variables");
    assert_eq!(dbg(&c), dbg(&Config::default()));
}

#[test]
fn arrays_from_env() {
    let c = load_env(&[
        ("BREADBOX_PLAID_COUNTRY_CODES", " US , CA,GB "),
        ("BREADBOX_PLAID_PRODUCTS", "transactions,auth"),
        (
            "BREADBOX_LINK_ALLOWED_REDIRECT_ORIGINS",
            "HTTPS://App.Example.com:443, http://localhost:3000/",
        ),
    ])
    .expect("arrays");
    assert_eq!(c.plaid.country_codes, ["US", "CA", "GB"]);
    assert_eq!(c.plaid.products, ["transactions", "auth"]);
    assert_eq!(
        c.link.allowed_redirect_origins,
        ["https://app.example.com", "http://localhost:3000"]
    );
    let c = load_env(&[("BREADBOX_LINK_ALLOWED_REDIRECT_ORIGINS", "")]).expect("empty");
    assert!(c.link.allowed_redirect_origins.is_empty());
    assert_eq!(
        env_err(&[("BREADBOX_PLAID_PRODUCTS", "")]),
        "BREADBOX_PLAID_PRODUCTS: must list at least one product"
    );
}

#[test]
fn redirect_origins_must_be_origins() {
    for bad in [
        "https://example.com/path",
        "https://example.com?x=1",
        "https://example.com/#f",
        "https://user@example.com",
        "ftp://example.com",
        "example.com",
        "",
    ] {
        let e = toml_err(&format!("[link]\nallowed_redirect_origins = [\"{bad}\"]\n"));
        assert!(
            e.starts_with("link.allowed_redirect_origins: "),
            "{bad:?} gave {e}"
        );
    }
    let c = from_toml_str("[link]\nallowed_redirect_origins = [\"http://[::1]:8000\"]\n")
        .expect("ipv6 origin");
    assert_eq!(c.link.allowed_redirect_origins, ["http://[::1]:8000"]);
}

#[test]
fn example_file_parses_to_the_defaults() {
    let c = from_toml_str(EXAMPLE).unwrap_or_else(|e| panic!("example: {e}"));
    assert_eq!(dbg(&c), dbg(&Config::default()));
}

#[test]
fn example_file_documents_every_key() {
    for key in KEYS {
        let section = example_section(key.section)
            .unwrap_or_else(|| panic!("[{}] missing from the example", key.section));
        let assignment = format!("{} = ", key.name);
        let present = section.lines().any(|l| {
            l.trim_start_matches('#')
                .trim_start()
                .starts_with(&assignment)
        });
        assert!(
            present,
            "{}.{} missing from the example",
            key.section, key.name
        );
        assert!(
            section.contains(&key.env_var()),
            "{} not mentioned in the example",
            key.env_var()
        );
    }
}

#[test]
fn ttl_bounds() {
    let ttl = |d: u32, m: u32| {
        from_toml_str(&format!(
            "[link]\ndefault_ttl_seconds = {d}\nmax_ttl_seconds = {m}\n"
        ))
    };
    assert!(ttl(1, 1).is_ok());
    assert!(ttl(3600, 3600).is_ok());
    assert!(ttl(60, 600).is_ok());
    let e = ttl(0, 600).expect_err("zero").0;
    assert_eq!(e, "link.default_ttl_seconds: must be at least 1");
    let e = ttl(900, 3601).expect_err("above 3600").0;
    assert!(
        e.starts_with("link.max_ttl_seconds: must be at most 3600"),
        "{e}"
    );
    let e = ttl(1000, 600).expect_err("default above max").0;
    assert!(
        e.contains("link.default_ttl_seconds") && e.contains("link.max_ttl_seconds"),
        "{e}"
    );
    let e = env_err(&[("BREADBOX_LINK_DEFAULT_TTL_SECONDS", "4000")]);
    assert!(e.starts_with("link.default_ttl_seconds (4000)"), "{e}");
}

#[test]
fn plaid_half_configured_is_an_error() {
    assert_eq!(
        toml_err("[plaid]\nclient_id = \"abc\"\n"),
        "plaid.secret is required when plaid.client_id is set"
    );
    assert_eq!(
        env_err(&[("BREADBOX_PLAID_SECRET", "s")]),
        "plaid.client_id is required when plaid.secret is set"
    );
    let c = load_env(&[
        ("BREADBOX_PLAID_CLIENT_ID", "abc"),
        ("BREADBOX_PLAID_SECRET", "s"),
    ])
    .expect("both set");
    assert!(c.plaid.is_configured());
    assert_eq!(c.plaid.secret.as_ref().map(Secret::expose), Some("s"));
    let c = from_toml_str("[plaid]\nclient_id = \"\"\n").expect("empty = unset");
    assert!(!c.plaid.is_configured());
}

#[test]
fn plaid_environment_and_values() {
    let env_of = |s: &str| {
        from_toml_str(&format!("[plaid]\nenvironment = \"{s}\"\n"))
            .map(|c| (c.plaid.environment, c.plaid.api_base()))
    };
    let sandbox = (
        PlaidEnvironment::Sandbox,
        "https://sandbox.plaid.com".to_owned(),
    );
    let production = (
        PlaidEnvironment::Production,
        "https://production.plaid.com".to_owned(),
    );
    assert_eq!(env_of("sandbox").expect("sandbox"), sandbox);
    assert_eq!(env_of("development").expect("development"), sandbox);
    assert_eq!(env_of("production").expect("production"), production);
    assert_eq!(PlaidEnvironment::Production.as_str(), "production");

    let name30 = "x".repeat(30);
    assert!(from_toml_str(&format!("[plaid]\nclient_name = \"{name30}\"\n")).is_ok());
    for (text, prefix) in [
        (
            format!("client_name = \"{name30}y\""),
            "plaid.client_name: must be 1 to 30",
        ),
        (
            "client_name = \"\"".to_owned(),
            "plaid.client_name: must be 1 to 30",
        ),
        (
            "country_codes = [\"us\"]".to_owned(),
            "plaid.country_codes: invalid country code \"us\"",
        ),
        (
            "country_codes = []".to_owned(),
            "plaid.country_codes: must list at least one",
        ),
        (
            "products = [\"balance\"]".to_owned(),
            "plaid.products: \"balance\"",
        ),
        (
            "products = [\"Auth\"]".to_owned(),
            "plaid.products: invalid product \"Auth\"",
        ),
        (
            "products = [\"\"]".to_owned(),
            "plaid.products: invalid product \"\"",
        ),
        (
            "language = \"EN\"".to_owned(),
            "plaid.language: invalid language \"EN\"",
        ),
        (
            "base_url = \"sandbox.plaid.com\"".to_owned(),
            "plaid.base_url: invalid URL",
        ),
        (
            "webhook_url = \"https://x.example/#a\"".to_owned(),
            "plaid.webhook_url: must not have",
        ),
    ] {
        let e = toml_err(&format!("[plaid]\n{text}\n"));
        assert!(e.starts_with(prefix), "{text} gave {e}");
    }
}

#[test]
fn teller_certificate_requirement() {
    let teller = |extra: &str| from_toml_str(&format!("[teller]\n{extra}\n"));
    assert!(
        teller("application_id = \"app_1\"").is_ok(),
        "sandbox needs no certificate"
    );
    for env in ["development", "production"] {
        let e = teller(&format!(
            "application_id = \"app_1\"\nenvironment = \"{env}\""
        ))
        .expect_err("certificate required")
        .0;
        assert!(e.starts_with("teller.certificate_path"), "{e}");
        assert!(e.contains(env), "{e}");
        let c = teller(&format!(
            "application_id = \"app_1\"\nenvironment = \"{env}\"\n\
                 certificate_path = \"cert.pem\"\nprivate_key_path = \"key.pem\""
        ))
        .expect("with certificate");
        assert_eq!(c.teller.environment.as_str(), env);
        assert_eq!(c.teller.certificate_path, Some(PathBuf::from("cert.pem")));
    }
    assert!(
        teller("environment = \"production\"").is_ok(),
        "not configured: no check"
    );
    let e = teller("certificate_path = \"cert.pem\"")
        .expect_err("half")
        .0;
    assert!(e.starts_with("teller.private_key_path is required"), "{e}");
    let e = teller("private_key_path = \"key.pem\"")
        .expect_err("half")
        .0;
    assert!(e.starts_with("teller.certificate_path is required"), "{e}");
    let c = teller("base_url = \"http://127.0.0.1:9200/\"").expect("base url");
    assert_eq!(c.teller.api_base(), "http://127.0.0.1:9200");
}

#[test]
fn webhooks_secret_rules() {
    assert_eq!(
        toml_err("[webhooks]\nurl = \"https://agent.example.com/hook\"\n"),
        "webhooks.secret is required when webhooks.url is set"
    );
    let fifteen_bytes = "whsec_AAAAAAAAAAAAAAAAAAAA";
    for bad in [
        "abc",
        "whsec_",
        "whsec_!!!!",
        fifteen_bytes,
        &WH_SECRET[6..],
    ] {
        let e = toml_err(&format!("[webhooks]\nsecret = \"{bad}\"\n"));
        assert!(
            e.starts_with("webhooks.secret: must be \"whsec_\""),
            "{bad}: {e}"
        );
        assert!(
            bad.len() < 8 || !e.contains(bad),
            "error leaks the secret: {e}"
        );
    }
    let c = from_toml_str(&format!(
        "[webhooks]\nurl = \"https://agent.example.com/hook?x=1\"\nsecret = \"{WH_SECRET}\"\n"
    ))
    .expect("valid webhooks");
    assert_eq!(c.webhooks.secret_bytes().map(|b| b.len()), Some(24));
    let e = toml_err("[webhooks]\nurl = \"ftp://agent.example.com\"\n");
    assert!(
        e.starts_with("webhooks.url: must be an absolute http or https URL"),
        "{e}"
    );
}

#[test]
fn encryption_key_formats() {
    let want: [u8; 32] = std::array::from_fn(|i| i as u8);
    let b64 = BASE64_ENGINES[0].encode(want);
    for key in [
        HEX_KEY.to_owned(),
        HEX_KEY.to_ascii_uppercase(),
        b64.clone(),
    ] {
        let c = from_toml_str(&format!("[security]\nencryption_key = \"{key}\"\n"))
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(c.security.key_bytes(), Some(want));
    }
    let short_b64 = BASE64_ENGINES[0].encode([7u8; 31]);
    for bad in [&HEX_KEY[2..], "zz", short_b64.as_str()] {
        let e = toml_err(&format!("[security]\nencryption_key = \"{bad}\"\n"));
        assert!(
            e.starts_with("security.encryption_key: must be 32 bytes"),
            "{e}"
        );
        assert!(!e.contains(bad), "error leaks the key: {e}");
    }
}

#[test]
fn public_url_rules() {
    let base = |u: &str| {
        from_toml_str(&format!("[server]\npublic_url = \"{u}\"\n")).map(|c| c.server.public_base())
    };
    assert_eq!(
        base("https://bank.example.com/").expect("root"),
        Some("https://bank.example.com".to_owned())
    );
    assert_eq!(
        base("http://example.com:8443/breadbox/").expect("path"),
        Some("http://example.com:8443/breadbox".to_owned())
    );
    assert_eq!(base("").expect("empty"), None);
    for bad in [
        "bank.example.com",
        "ftp://bank.example.com",
        "https://bank.example.com/?a=1",
        "https://bank.example.com/#a",
        "https://u:p@bank.example.com/",
    ] {
        let e = base(bad).expect_err(bad).0;
        assert!(e.starts_with("server.public_url: "), "{bad}: {e}");
    }
}

#[test]
fn secrets_are_redacted_in_debug() {
    let c = load(&Flags::default(), all_samples_env()).expect("all samples");
    let text = dbg(&c);
    assert!(text.contains("[redacted]"));
    for secret in ["plaid-secret-value", HEX_KEY, WH_SECRET] {
        assert!(!text.contains(secret), "Debug leaks {secret}");
    }
    assert_eq!(format!("{:?}", Secret::new("hunter2")), "[redacted]");
    assert_eq!(Secret::new("hunter2").expose(), "hunter2");
    let e: Box<dyn std::error::Error> = Box::new(ConfigError("boom".to_owned()));
    assert_eq!(e.to_string(), "boom");
}

#[test]
fn enum_spellings() {
    let level = |s: &str| from_toml_str(&format!("[log]\nlevel = \"{s}\"\n")).map(|c| c.log.level);
    for l in [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ] {
        assert_eq!(level(l.as_str()).expect("level"), l);
    }
    let c = from_toml_str("[database]\nsynchronous = \"normal\"\n").expect("normal");
    assert_eq!(c.database.synchronous.as_pragma(), "NORMAL");
    assert_eq!(TellerEnvironment::Development.as_str(), "development");
}

#[test]
fn connection_lifecycle_settings() {
    let c = Config::default();
    assert_eq!(
        c.connections.health_check_interval,
        std::time::Duration::from_secs(86_400)
    );
    assert!(c.plaid.redirect_uri.is_none() && c.teller.webhook_signing_secrets.is_empty());
    let hc = |s: &str| parse_duration(s, "connections.health_check_interval", true).ok();
    assert_eq!(hc("0"), Some(std::time::Duration::ZERO));
    assert_eq!(hc("90m"), Some(std::time::Duration::from_secs(5400)));
    assert_eq!(hc("7d"), Some(std::time::Duration::from_secs(604_800)));
    assert_eq!(hc("1.5h"), Some(std::time::Duration::from_secs(5400)));
    for bad in ["", "h", "24", "-1h", "24x"] {
        assert_eq!(hc(bad), None, "{bad}");
    }
    let e = from_toml_str("[connections]\nhealth_check_interval = \"soon\"\n")
        .expect_err("bad duration")
        .0;
    assert!(e.contains("connections.health_check_interval"), "{e}");
    let e = from_toml_str("[plaid]\nredirect_uri = \"http://bank.example.com/oauth\"\n")
        .expect_err("http")
        .0;
    assert!(e.contains("https"), "{e}");
    from_toml_str("[plaid]\nredirect_uri = \"http://127.0.0.1:8080/oauth\"\n").expect("loopback");
    let e = from_toml_str(
        "[server]\npublic_url = \"https://a.example/bb\"\n[plaid]\nredirect_uri = \"https://b.example/bb/oauth\"\n",
    )
    .expect_err("other origin")
    .0;
    assert!(e.contains("under server.public_url"), "{e}");
    let e = from_toml_str("[plaid]\nredirect_uri = \"https://a.example/api/v1/x\"\n")
        .expect_err("reserved")
        .0;
    assert!(e.contains("used by the server"), "{e}");
}

#[test]
fn relative_paths_in_a_file_follow_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("etc").join("breadbox.toml");
    std::fs::create_dir_all(cfg.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        &cfg,
        "[database]\npath = \"data/bb.db\"\n[teller]\napplication_id = \"app_1\"\n\
         certificate_path = \"certs/c.pem\"\nprivate_key_path = \"/abs/k.pem\"\n",
    )
    .expect("write");
    let flags = Flags {
        config: Some(cfg.clone()),
        ..Flags::default()
    };
    let c = load(&flags, env(&[])).expect("load");
    let etc = dir.path().join("etc");
    assert_eq!(c.database.path, etc.join("data/bb.db"));
    assert_eq!(
        c.teller.certificate_path.as_deref(),
        Some(etc.join("certs/c.pem").as_path())
    );
    assert_eq!(
        c.teller.private_key_path.as_deref(),
        Some(Path::new("/abs/k.pem")),
        "absolute paths stay"
    );
    // The environment's relative value stays relative to the working directory.
    let c = load(&flags, env(&[("BREADBOX_DATABASE_PATH", "here.db")])).expect("env");
    assert_eq!(c.database.path, PathBuf::from("here.db"));
}

#[test]
fn retention_durations() {
    let c = Config::default();
    assert_eq!(c.retention.link_sessions, Duration::from_secs(400 * 86_400));
    assert_eq!(
        c.retention.webhook_deliveries,
        Duration::from_secs(30 * 86_400)
    );
    let c = from_toml_str("[retention]\nlink_sessions = \"2d 3h\"\nwebhook_deliveries = \"90s\"\n")
        .expect("retention");
    assert_eq!(
        c.retention.link_sessions,
        Duration::from_secs(2 * 86_400 + 3 * 3600)
    );
    assert_eq!(c.retention.webhook_deliveries, Duration::from_secs(90));
    let c = load(
        &Flags::default(),
        env(&[("BREADBOX_RETENTION_LINK_SESSIONS", "30 days")]),
    )
    .expect("env");
    assert_eq!(c.retention.link_sessions, Duration::from_secs(30 * 86_400));
    for bad in ["", "0s", "forever", "1y", "-5d", "12"] {
        let e = toml_err(&format!("[retention]\nlink_sessions = \"{bad}\"\n"));
        assert!(e.starts_with("retention.link_sessions: "), "{bad}: {e}");
    }
}
