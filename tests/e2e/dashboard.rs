//! The operator dashboard on the ops listener.

use model::UserId;
use reqwest::StatusCode;

use crate::connect::{ALICE, connect_dexcom};

#[tokio::test]
async fn the_dashboard_shows_sources_schedule_and_a_users_glucose_chart() {
    let w = tidegate_e2e::spawn_world(&[("TIDEGATE_DASHBOARD_TOKEN", "ops-secret-for-the-test")]).await;
    assert_eq!(connect_dexcom(&w, ALICE, "dexcom-001").await.status(), StatusCode::OK);
    let id = w.app.store.list_data_sources(&UserId::parse(ALICE).unwrap()).await.unwrap()[0].id.clone();
    w.app.poller().poll(&id, None, None).await.unwrap();
    let http = reqwest::Client::new();

    let r = http.get(w.app.ops_url("/admin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "the token is required when configured");
    let r = http.get(w.app.ops_url("/admin")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = http.get(w.app.ops_url("/admin")).bearer_auth("ops-secret-for-the-test").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let page = r.text().await.unwrap();
    for needle in ["Data sources", "dexcom", "connected", "Next polls", "Partner budgets", "Outbox", ALICE] {
        assert!(page.contains(needle), "{needle} missing from the overview");
    }

    let r = http
        .get(w.app.ops_url(&format!("/admin/users/{ALICE}")))
        .bearer_auth("ops-secret-for-the-test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains("<svg") && page.contains("<polyline"), "a glucose line");
    assert!(page.contains("<circle"), "meal markers");
    let r =
        http.get(w.app.ops_url("/admin/users/not-a-user")).bearer_auth("ops-secret-for-the-test").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}
