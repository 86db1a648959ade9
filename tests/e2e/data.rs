//! The data read API (keyset pages over what polls stored) and erasure.

use std::collections::BTreeSet;

use model::{DataSourceState, UserId};
use reqwest::StatusCode;
use serde_json::Value;
use tidegate_e2e::World;

use crate::connect::{ALICE, BOB, connect_dexcom, source_state};

async fn connected_and_polled(w: &World, user: &str, login: &str) -> model::DataSourceId {
    assert_eq!(connect_dexcom(w, user, login).await.status(), StatusCode::OK);
    let id = w.app.store.list_data_sources(&UserId::parse(user).unwrap()).await.unwrap()[0].id.clone();
    w.app.poller().poll(&id, None, None).await.unwrap();
    id
}

async fn count(w: &World, sql: &str, user: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).bind(user).fetch_one(&w.app.sql).await.unwrap()
}

/// Follow `Link: <…>; rel="next"` until the end; returns every datum and the number of pages.
async fn read_all(w: &World, token: &str, first: &str) -> (Vec<Value>, usize) {
    let (mut out, mut pages, mut next) = (Vec::new(), 0, Some(first.to_owned()));
    while let Some(path) = next.take() {
        let r = w.app.http.get(w.app.url(&path)).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        next = r.headers().get("link").map(|l| {
            let l = l.to_str().unwrap();
            assert!(l.ends_with("; rel=\"next\""), "{l}");
            l[1..l.find('>').unwrap()].to_owned()
        });
        let page: Vec<Value> = r.json().await.unwrap();
        pages += 1;
        out.extend(page);
        assert!(pages < 100, "pagination does not end");
    }
    (out, pages)
}

#[tokio::test]
async fn pages_cover_the_range_exactly_once_in_order() {
    let w = tidegate_e2e::spawn_world(&[]).await;
    let id = connected_and_polled(&w, ALICE, "dexcom-001").await;
    let token = w.app.patient_token(ALICE);
    let start = "2026-03-01T00:00:00Z";
    let end = "2026-03-03T00:00:00Z";
    let (cbg, pages) =
        read_all(&w, &token, &format!("/v1/users/{ALICE}/data?type=cbg&startDate={start}&endDate={end}&limit=100"))
            .await;
    assert!(pages > 5, "{pages} pages");
    assert!(cbg.iter().all(|d| d["type"] == "cbg"));
    let times: Vec<&str> = cbg.iter().map(|d| d["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "ordered by time");
    assert!(times.iter().all(|t| *t >= "2026-03-01T00:00:00.000Z" && *t < "2026-03-03T00:00:00.000Z"));
    let ids: BTreeSet<&str> = cbg.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), cbg.len(), "no datum twice");
    let stored = w
        .app
        .store
        .datums_of_source(&id)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| {
            d.body["type"] == "cbg"
                && d.body["time"].as_str().unwrap() >= "2026-03-01"
                && d.body["time"].as_str().unwrap() < "2026-03-03"
        })
        .count();
    assert_eq!(cbg.len(), stored);
    // Several types, and everything (no filter) includes more than cbg.
    let (two, _) = read_all(&w, &token, &format!("/v1/users/{ALICE}/data?type=food,insulin&limit=5000")).await;
    let kinds: BTreeSet<&str> = two.iter().map(|d| d["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, BTreeSet::from(["food", "insulin"]));
    // Bad parameters name themselves.
    let r = w
        .app
        .http
        .get(w.app.url(&format!("/v1/users/{ALICE}/data?type=cbg,blood&startDate=soon&cursor=zz&limit=0")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body = r.text().await.unwrap();
    for name in ["\"type\"", "\"startDate\"", "\"cursor\"", "\"limit\""] {
        assert!(body.contains(name), "{body}");
    }
    // The records the import skipped (null EGVs in the simulator) are told, with why.
    let sources: Value = w
        .app
        .http
        .get(w.app.url(&format!("/v1/users/{ALICE}/data_sources")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let skipped = &sources[0]["lastImportSkipped"];
    assert!(skipped["total"].as_u64().unwrap() > 0, "{sources}");
    assert!(skipped["reasons"]["no_value"]["count"].as_u64().unwrap() > 0, "{sources}");
    // Bob has no data and may not read Alice's.
    let (bobs, _) = read_all(&w, &w.app.patient_token(BOB), &format!("/v1/users/{BOB}/data")).await;
    assert!(bobs.is_empty());
}

#[tokio::test]
async fn erasure_and_disconnect_with_data_deletion() {
    let w = tidegate_e2e::spawn_world(&[]).await;
    let service = w.app.service_token();
    connected_and_polled(&w, ALICE, "dexcom-001").await;
    connected_and_polled(&w, BOB, "dexcom-002").await;
    assert!(count(&w, "SELECT count(*) FROM datums WHERE user_id = $1", ALICE).await > 1000);

    // Imported data only: Alice's datums go, her source stays connected; Bob's data stays.
    let r =
        w.app.http.delete(w.app.url(&format!("/v1/users/{ALICE}/data"))).bearer_auth(&service).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let erased: Value = r.json().await.unwrap();
    assert!(erased["datums"].as_u64().unwrap() > 1000, "{erased}");
    assert_eq!(erased["dataSources"], 0);
    assert_eq!(count(&w, "SELECT count(*) FROM datums WHERE user_id = $1", ALICE).await, 0);
    assert!(count(&w, "SELECT count(*) FROM datums WHERE user_id = $1", BOB).await > 1000);
    assert_eq!(source_state(&w, ALICE, "dexcom").await, Some(DataSourceState::Connected));
    let source = &w.app.store.list_data_sources(&UserId::parse(ALICE).unwrap()).await.unwrap()[0];
    assert_eq!((source.earliest_data_time, source.latest_data_time), (None, None));

    // Disconnect with deleteData: Bob's datums go with his tokens.
    let r = w
        .app
        .http
        .delete(w.app.url("/v1/oauth/dexcom/authorize?deleteData=true"))
        .bearer_auth(w.app.patient_token(BOB))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(count(&w, "SELECT count(*) FROM datums WHERE user_id = $1", BOB).await, 0);
    assert_eq!(source_state(&w, BOB, "dexcom").await, Some(DataSourceState::Disconnected));
    let r = w
        .app
        .http
        .delete(w.app.url("/v1/oauth/dexcom/authorize?deleteData=maybe"))
        .bearer_auth(w.app.patient_token(BOB))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Everything: Alice's source, tokens and schedule go; the audit trail stays and says so.
    let r = w
        .app
        .http
        .delete(w.app.url(&format!("/v1/users/{ALICE}/data?scope=all")))
        .bearer_auth(&service)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let erased: Value = r.json().await.unwrap();
    assert_eq!((erased["dataSources"].as_u64(), erased["providerSessions"].as_u64()), (Some(1), Some(1)), "{erased}");
    for table in ["data_sources", "provider_sessions", "poll_schedule", "link_tokens", "oauth_authorizations"] {
        assert_eq!(count(&w, &format!("SELECT count(*) FROM {table} WHERE user_id = $1"), ALICE).await, 0, "{table}");
    }
    assert_eq!(
        count(&w, "SELECT count(*) FROM audit_log WHERE user_id = $1 AND action = 'erase_user'", ALICE).await,
        1
    );
    assert!(count(&w, "SELECT count(*) FROM audit_log WHERE user_id = $1", ALICE).await > 2);
    let violations = store::lifecycle::check_invariants(&w.app.store).await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    let bad = w
        .app
        .http
        .delete(w.app.url(&format!("/v1/users/{ALICE}/data?scope=some")))
        .bearer_auth(&service)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

/// An edited record whose time changed moves: the old row goes, one row remains at the new
/// time, counted as an update; writing the same batch again changes nothing.
#[tokio::test]
async fn an_edited_record_that_changed_time_moves() {
    let w = tidegate_e2e::spawn_world(&[]).await;
    let id = connected_and_polled(&w, ALICE, "dexcom-001").await;
    let user = UserId::parse(ALICE).unwrap();
    let t0 = tidegate_e2e::test_epoch() - chrono::Duration::days(2);
    let datum = |t: chrono::DateTime<chrono::Utc>, v: i64| store::datums::NewDatum {
        id: "0123456789abcdef0123456789abcdef".into(),
        time: t,
        kind: "food".into(),
        body: serde_json::json!({"type": "food", "time": t.to_rfc3339(), "v": v}),
    };
    let write = |batch: Vec<store::datums::NewDatum>| {
        let (store, user, id) = (w.app.store.clone(), user.clone(), id.clone());
        async move {
            let mut tx = store.begin().await.unwrap();
            let (written, _) =
                store::datums::write_batch(&mut tx, &user, &id, &batch, &[], tidegate_e2e::test_epoch()).await.unwrap();
            tx.commit().await.unwrap();
            written
        }
    };
    assert_eq!(write(vec![datum(t0, 1)]).await.inserted, 1);
    let moved = write(vec![datum(t0 + chrono::Duration::minutes(30), 2)]).await;
    assert_eq!((moved.inserted, moved.updated), (0, 1), "{moved:?}");
    let rows: Vec<(chrono::DateTime<chrono::Utc>,)> =
        sqlx::query_as("SELECT time FROM datums WHERE user_id = $1 AND id = '0123456789abcdef0123456789abcdef'")
            .bind(ALICE)
            .fetch_all(&w.app.sql)
            .await
            .unwrap();
    assert_eq!(rows, vec![(t0 + chrono::Duration::minutes(30),)]);
    let again = write(vec![datum(t0 + chrono::Duration::minutes(30), 2)]).await;
    assert_eq!((again.inserted, again.updated, again.unchanged), (0, 0, 1));
}
