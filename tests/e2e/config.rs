//! Configuration layering and the production guard rails.

use std::path::PathBuf;

use secrecy::ExposeSecret;
use tidegate::Settings;
use tidegate::configuration::ConfigError;
use tidegate_e2e::config_dir;

fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

const KEYS: &str = "prod1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const SECRET: &str = "a-test-secret-that-is-long-enough-0123456789";

#[test]
fn files_then_env_then_database_url() {
    // dev.toml supplies dev secrets; env wins over files; DATABASE_URL sets database.url.
    let s = Settings::load_from(
        &config_dir(),
        "dev",
        vars(&[("TIDEGATE_LISTEN", "127.0.0.1:18080"), ("DATABASE_URL", "postgres://u@db:5432/x")]),
    )
    .unwrap();
    assert_eq!(s.env, "dev");
    assert_eq!(s.listen.to_string(), "127.0.0.1:18080");
    assert_eq!(s.ops_listen.to_string(), "127.0.0.1:9090");
    assert_eq!(s.database.url.expose_secret(), "postgres://u@db:5432/x");
    assert!(s.auth.jwt_secret.is_some(), "dev.toml supplies the dev JWT secret");
    assert!(s.key_ring().is_ok());
    // TIDEGATE_DATABASE__URL beats DATABASE_URL; nested keys use "__".
    let s = Settings::load_from(
        &config_dir(),
        "dev",
        vars(&[
            ("DATABASE_URL", "postgres://a@x/y"),
            ("TIDEGATE_DATABASE__URL", "postgres://b@x/y"),
            ("TIDEGATE_DATABASE__MAX_CONNECTIONS", "3"),
        ]),
    )
    .unwrap();
    assert_eq!(s.database.url.expose_secret(), "postgres://b@x/y");
    assert_eq!(s.database.max_connections, 3);
    // Debug output never shows secrets.
    let debug = format!("{s:?}");
    assert!(!debug.contains("dev-only-jwt-secret") && !debug.contains("ZGV2LW9ub"), "{debug}");
}

#[test]
fn a_bad_or_missing_setting_is_one_clear_error_naming_it() {
    let dir = config_dir();
    let err = |list: &[(&str, &str)], env: &str| Settings::load_from(&dir, env, vars(list)).unwrap_err().to_string();
    assert!(err(&[("TIDEGATE_LISTEN", "not-an-address")], "dev").contains("listen"));
    assert!(err(&[], "test").contains("auth.jwt_secret"), "test.toml has no secrets");
    assert!(err(&[("TIDEGATE_AUTH__JWT_SECRET", "short")], "test").contains("auth.jwt_secret"));
    assert!(err(&[("TIDEGATE_AUTH__ALGORITHM", "RS512")], "dev").contains("auth.algorithm"));
    assert!(err(&[("TIDEGATE_CLOCK__SOURCE", "external")], "dev").contains("clock.external_url"));
    assert!(
        err(&[("TIDEGATE_CLINIC__URL", "http://clinic"), ("TIDEGATE_AUTH__JWT_SECRET", SECRET)], "test")
            .contains("clinic.server_token")
    );
    assert!(err(&[("TIDEGATE_LISTNE", "127.0.0.1:1")], "dev").contains("listne"), "typos are caught");
    assert!(err(&[], "../etc").contains("TIDEGATE_ENV"));
    let ring =
        Settings::load_from(&dir, "dev", vars(&[("TIDEGATE_TOKEN_KEYS", "k1:short")])).unwrap().key_ring().unwrap_err();
    assert!(ring.to_string().contains("token_keys"));
}

fn prod_dir() -> PathBuf {
    // A production deployment: the repository's default.toml and dev.toml (to recognise dev
    // secrets), plus a production.toml without secrets.
    let dir = std::env::temp_dir().join(format!("tidegate-prod-config-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["default.toml", "dev.toml"] {
        std::fs::copy(config_dir().join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("production.toml"), "[log]\nformat = \"json\"\n").unwrap();
    dir
}

#[test]
fn production_refuses_dev_secrets_hs256_and_secrets_in_files() {
    let dir = prod_dir();
    let load = |list: &[(&str, &str)]| Settings::load_from(&dir, "production", vars(list));
    let good = [
        ("TIDEGATE_TOKEN_KEYS", KEYS),
        ("TIDEGATE_AUTH__ALGORITHM", "ES256"),
        ("TIDEGATE_AUTH__JWKS_URL", "https://auth.example/jwks.json"),
        ("TIDEGATE_PUBLIC_URL", "https://tidegate.example"),
    ];
    assert!(load(&good).is_ok(), "{:?}", load(&good).err());
    let http = load(&good[..3]).unwrap_err();
    assert!(http.to_string().contains("public_url"), "{http}");

    let hs = load(&[("TIDEGATE_TOKEN_KEYS", KEYS), ("TIDEGATE_AUTH__JWT_SECRET", SECRET), good[3]]).unwrap_err();
    assert!(hs.to_string().contains("auth.algorithm"), "{hs}");

    let dev_keys = load(&[
        good[1],
        good[2],
        good[3],
        ("TIDEGATE_TOKEN_KEYS", "dev-2026:ZGV2LW9ubHktdG9rZW4ta2V5LW5vdC1hLXNlY3JldCE="),
    ])
    .unwrap_err();
    assert!(dev_keys.to_string().contains("token_keys"), "{dev_keys}");

    let missing = load(&good[1..]).unwrap_err();
    assert!(missing.to_string().contains("token_keys"), "{missing}");

    std::fs::write(dir.join("production.toml"), format!("token_keys = \"{KEYS}\"\n")).unwrap();
    let in_file = load(&good).unwrap_err();
    match in_file {
        ConfigError::Invalid { key, .. } => assert_eq!(key, "token_keys"),
        other => panic!("{other}"),
    }
    // Any partner's client secret, not only the ones we ship drivers for.
    std::fs::write(
        dir.join("production.toml"),
        "[partners.abbott]\ndisplay_name = \"Abbott\"\nclient_secret = \"from-a-file\"\n",
    )
    .unwrap();
    let in_file = load(&good).unwrap_err();
    match &in_file {
        ConfigError::InvalidPartner { partner, key, .. } => {
            assert_eq!((partner.as_str(), *key), ("abbott", "client_secret"));
        }
        other => panic!("{other}"),
    }
    assert!(tidegate::configuration::is_secret("partners.abbott.client_secret"));
    assert!(!tidegate::configuration::is_secret("partners.abbott.client_id"));
    std::fs::remove_dir_all(&dir).ok();
}

/// The connect-page rate limit and the trusted proxies: defaults, the environment (a
/// comma-separated list), and one clear error naming a bad value.
#[test]
fn http_limits_layer_and_are_checked() {
    let s = Settings::load_from(&config_dir(), "dev", vars(&[])).unwrap();
    assert_eq!((s.http.connect_rate_per_minute, s.http.connect_burst), (30, 20));
    assert!(s.http.trusted_proxies.is_empty() && s.http_settings().trusted_proxies.is_empty());
    let s = Settings::load_from(
        &config_dir(),
        "dev",
        vars(&[
            ("TIDEGATE_HTTP__CONNECT_RATE_PER_MINUTE", "90"),
            ("TIDEGATE_HTTP__TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.2,"),
        ]),
    )
    .unwrap();
    assert_eq!(s.http.connect_rate_per_minute, 90);
    assert_eq!(s.http.trusted_proxies, ["10.0.0.0/8", "192.168.1.2"]);
    let http = s.http_settings();
    assert_eq!(http.connect_limit, api::RateLimit { per_minute: 90, burst: 20 });
    assert!(http.trusted_proxies.contains("10.200.0.1".parse().unwrap()));
    assert!(!http.trusted_proxies.contains("192.168.1.3".parse().unwrap()));
    let key = |list: &[(&str, &str)]| match Settings::load_from(&config_dir(), "dev", vars(list)).unwrap_err() {
        ConfigError::Invalid { key, .. } => key,
        other => panic!("{other}"),
    };
    assert_eq!(key(&[("TIDEGATE_HTTP__TRUSTED_PROXIES", "10.0.0.0/33")]), "http.trusted_proxies");
    assert_eq!(key(&[("TIDEGATE_HTTP__TRUSTED_PROXIES", "proxy.internal")]), "http.trusted_proxies");
    assert_eq!(key(&[("TIDEGATE_HTTP__CONNECT_RATE_PER_MINUTE", "0")]), "http.connect_rate_per_minute");
    assert_eq!(key(&[("TIDEGATE_HTTP__CONNECT_BURST", "0")]), "http.connect_burst");
}

/// `TIDEGATE_CONFIG_FILE` layers after the env file and before the environment; a missing one
/// is an error; in production it may not hold a secret either.
#[test]
fn an_extra_config_file_layers_between_files_and_environment() {
    let overlay = std::env::temp_dir().join(format!("tidegate-overlay-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&overlay, "[poll]\nlook_back_minutes = 7\n\n[database]\nmax_connections = 5\n").unwrap();
    let file = overlay.to_str().unwrap();
    let s = Settings::load_from(
        &config_dir(),
        "dev",
        vars(&[("TIDEGATE_CONFIG_FILE", file), ("TIDEGATE_DATABASE__MAX_CONNECTIONS", "9")]),
    )
    .unwrap();
    assert_eq!(s.poll.look_back_minutes, 7, "the file overrides default.toml");
    assert_eq!(s.database.max_connections, 9, "the environment overrides the file");
    let missing = Settings::load_from(&config_dir(), "dev", vars(&[("TIDEGATE_CONFIG_FILE", "/nonexistent/x.toml")]))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("/nonexistent/x.toml"), "{missing}");

    let dir = prod_dir();
    std::fs::write(&overlay, format!("token_keys = \"{KEYS}\"\n")).unwrap();
    let refused = Settings::load_from(
        &dir,
        "production",
        vars(&[
            ("TIDEGATE_CONFIG_FILE", file),
            ("TIDEGATE_TOKEN_KEYS", KEYS),
            ("TIDEGATE_AUTH__ALGORITHM", "ES256"),
            ("TIDEGATE_AUTH__JWKS_URL", "https://auth.example/jwks.json"),
            ("TIDEGATE_PUBLIC_URL", "https://tidegate.example"),
        ]),
    )
    .unwrap_err();
    match refused {
        ConfigError::Invalid { key, .. } => assert_eq!(key, "token_keys"),
        other => panic!("{other}"),
    }
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_file(&overlay).ok();
}

/// No file except config/dev.toml holds a secret value.
#[test]
fn only_dev_toml_holds_secrets() {
    for entry in std::fs::read_dir(config_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name == "dev.toml" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml_like::Table = toml_like::parse(&text);
        let secrets: Vec<&str> =
            table.keys().filter(|k| tidegate::configuration::is_secret(k) && *k != "database.url").collect();
        assert!(secrets.is_empty(), "{name} sets secrets {secrets:?}");
    }
}

/// Minimal reader for the keys a TOML file sets (sections + `key =` lines).
mod toml_like {
    pub struct Table(Vec<String>);
    impl Table {
        pub fn keys(&self) -> impl Iterator<Item = &str> {
            self.0.iter().map(String::as_str)
        }
    }
    pub fn parse(text: &str) -> Table {
        let mut section = String::new();
        let mut keys = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()) {
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s.to_owned();
            } else if let Some((k, _)) = line.split_once('=') {
                let k = k.trim();
                keys.push(if section.is_empty() { k.to_owned() } else { format!("{section}.{k}") });
            }
        }
        Table(keys)
    }
}

#[test]
fn the_polls_connections_must_fit_the_pool_and_the_defaults_are_consistent() {
    let load = |list: &[(&str, &str)]| Settings::load_from(&config_dir(), "dev", vars(list));
    // Defaults: 16 connections, 12 for polls (4 kept for claims, upkeep, the API and the outbox),
    // 32 polls in flight: no warning.
    let s = load(&[]).unwrap();
    assert_eq!((s.database.max_connections, s.poll_connections(), s.worker.max_in_flight), (16, 12, 32));
    assert_eq!(s.pool_warning(), None);
    assert_eq!(s.worker_settings().connection_wait, std::time::Duration::from_secs(150), "a quarter of the lease");
    // The shipped test profile is consistent too.
    let t = Settings::load_from(&config_dir(), "test", vars(&[("TIDEGATE_AUTH__JWT_SECRET", SECRET)])).unwrap();
    assert_eq!((t.poll_connections(), t.pool_warning()), (6, None));
    // More poll connections than the pool can spare, a pool too small for any poll, a wait past
    // half the lease: refused, naming the setting.
    let err = |list: &[(&str, &str)]| load(list).unwrap_err().to_string();
    let e = err(&[("TIDEGATE_DATABASE__MAX_CONNECTIONS", "8"), ("TIDEGATE_WORKER__POLL_CONNECTIONS", "7")]);
    assert!(e.contains("worker.poll_connections") && e.contains("1–6"), "{e}");
    assert!(err(&[("TIDEGATE_DATABASE__MAX_CONNECTIONS", "2")]).contains("database.max_connections"));
    assert!(err(&[("TIDEGATE_WORKER__CONNECTION_WAIT_SECS", "301")]).contains("worker.connection_wait_secs"));
    // Far more polls in flight than connections: served (they queue), but said loudly.
    let s = load(&[("TIDEGATE_DATABASE__MAX_CONNECTIONS", "8"), ("TIDEGATE_WORKER__MAX_IN_FLIGHT", "32")]).unwrap();
    let w = s.pool_warning().expect("warns");
    assert!(w.contains("polls will queue for connections") && w.contains("max_in_flight = 32"), "{w}");
}
