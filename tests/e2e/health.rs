//! `/healthz`, `/readyz` and recovery from a lost database.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use tidegate_e2e::db::with_database;
use tidegate_e2e::proxy::Proxy;
use tidegate_e2e::{TestDb, logs, spawn_app, spawn_with_store, test_settings};

#[tokio::test]
async fn ready_when_migrated() {
    let app = spawn_app().await;
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("x-request-id"));
    let spec = app.http.get(app.url("/openapi.yaml")).send().await.unwrap();
    assert_eq!(spec.status(), StatusCode::OK);
    assert!(spec.text().await.unwrap().starts_with("openapi: 3.1"));
    app.stop().await;
}

pub(crate) fn pg_addr(url: &str) -> SocketAddr {
    let u = reqwest::Url::parse(url).unwrap();
    let host = u.host_str().unwrap();
    let host = if host == "localhost" { "127.0.0.1" } else { host };
    format!("{host}:{}", u.port().unwrap_or(5432)).parse().unwrap()
}

async fn wait_for_status(app: &tidegate_e2e::TestApp, want: StatusCode) {
    for _ in 0..100 {
        if app.http.get(app.url("/readyz")).send().await.unwrap().status() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz never answered {want}");
}

/// The database goes away behind a proxy: /readyz turns 503 with a clear log line, /healthz
/// stays 200, and everything recovers by itself when the database returns. The app also starts
/// while the database is down, migrating once it is back.
#[tokio::test]
async fn readiness_follows_the_database_and_recovers() {
    let db = TestDb::create().await;
    let proxy = Proxy::start(pg_addr(&db.url)).await;
    let proxied = with_database(&format!("postgres://postgres@{}/postgres", proxy.addr), &db.name);
    // Start with the database unreachable and unmigrated.
    proxy.cut();
    let settings = test_settings(&proxied, &[("TIDEGATE_DATABASE__ACQUIRE_TIMEOUT_SECS", "1")]);
    let store = tidegate::startup::store(&settings).unwrap();
    let app = spawn_with_store(db, settings, store).await;
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    let r = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // It comes back: the background migration applies and the app becomes ready.
    proxy.restore();
    wait_for_status(&app, StatusCode::OK).await;
    // Lost again while serving.
    proxy.cut();
    wait_for_status(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(logs::captured().contains("database unreachable"), "a clear log line says the database is unreachable");
    proxy.restore();
    wait_for_status(&app, StatusCode::OK).await;
    let service = app.service_token();
    let r = app.http.get(app.url("/v1/users/0123456789/data_sources")).bearer_auth(service).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "requests work again after recovery");
    app.stop().await;
}
