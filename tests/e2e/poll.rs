//! Polling against the simulator over real HTTP into the real database: backfill, idempotent
//! re-polls, late records, token refresh, and ground truth for a simulated week.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use model::{DataSourceId, UserId};
use partners::Saved;
use partners::fetch::Batch;
use reqwest::StatusCode;
use serde_json::Value;
use tidegate_e2e::World;

use crate::connect::{ALICE, Browser, at_carelink, connect_dexcom, link, paste, start_carelink};

/// Move the app's clock and the simulator's clock to the same instant.
pub(crate) fn set_time(w: &World, t: DateTime<Utc>) {
    w.app.clock.set(t);
    w.sandbox.sim.clock.set(t);
}

pub(crate) async fn source_of(w: &World, user: &str) -> DataSourceId {
    let sources = w.app.store.list_data_sources(&UserId::parse(user).unwrap()).await.unwrap();
    assert_eq!(sources.len(), 1);
    sources[0].id.clone()
}

/// Every stored datum of a source: id → body.
async fn stored(w: &World, id: &DataSourceId) -> BTreeMap<String, Value> {
    w.app
        .store
        .datums_of_source(id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.id, tidegate_e2e::as_mapped(d.body)))
        .collect()
}

/// Dexcom data requests the simulator has answered.
fn sim_requests(w: &World) -> u64 {
    w.sandbox.sim.obs.counts().iter().filter(|(k, _)| k.contains("/users/self")).map(|(_, n)| n).sum()
}

/// The datums the simulator's ground truth from `start` to `now` maps to (what we must have
/// stored), cgmSettings aside (devices are not part of the truth endpoint).
async fn truth(
    w: &World,
    login: &str,
    user: &UserId,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> BTreeMap<String, Value> {
    truth_as_of(w, login, user, start, now, None).await
}

/// [`truth`] counting only what had arrived at the partner by `as_of` (default: the
/// simulator's now).
pub(crate) async fn truth_as_of(
    w: &World,
    login: &str,
    user: &UserId,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
    as_of: Option<DateTime<Utc>>,
) -> BTreeMap<String, Value> {
    let mut url = w.sandbox.url(&format!(
        "/admin/truth/{login}?start={}&end={}",
        model::time::format(&start),
        model::time::format(&(now + Duration::minutes(1)))
    ));
    if let Some(t) = as_of {
        url.push_str(&format!("&asOf={}", model::time::format(&t)));
    }
    let t: Value = w.app.http.get(url).send().await.unwrap().json().await.unwrap();
    let mut batch = Batch::default();
    let dexcom = partners::registry::data_driver("dexcom").expect("Dexcom has a data driver");
    for kind in ["egvs", "events", "calibrations", "alerts"] {
        let envelope = serde_json::json!({ "records": t[kind] });
        let saved =
            Saved { document: &envelope, endpoint: Some(kind), window: Some((start, now + Duration::minutes(1))) };
        dexcom.map_saved(user, saved, &mut batch).expect("the simulator's records map");
    }
    let removed: Vec<&str> = batch.removed.iter().map(|r| r.as_str()).collect();
    batch
        .datums
        .iter()
        .filter(|d| !removed.contains(&d.base().id.as_str()))
        .map(|d| (d.base().id.as_str().to_owned(), d.to_json()))
        .collect()
}

#[tokio::test]
async fn a_simulated_week_of_dexcom_polls_equals_the_ground_truth() {
    let w = tidegate_e2e::spawn_world(&[]).await;
    let start = tidegate_e2e::test_epoch();
    set_time(&w, start);
    assert_eq!(connect_dexcom(&w, ALICE, "dexcom-001").await.status(), StatusCode::OK);
    let id = source_of(&w, ALICE).await;
    let user = UserId::parse(ALICE).unwrap();
    let poller = w.app.poller();

    // First poll: the backfill.
    set_time(&w, start);
    let first = poller.poll(&id, None, None).await.unwrap();
    assert!(first.written.inserted > 1_000, "{first:?}");
    let source = w.app.store.get_data_source(&id).await.unwrap().unwrap();
    assert!(source.earliest_data_time.is_some() && source.latest_data_time.is_some());
    assert_eq!(source.last_import_time, Some(start));
    assert!(first.reported, "a first import is worth a clinic report");

    // The same window again: nothing new, one partner call (dataRange says nothing changed).
    set_time(&w, start);
    let before = sim_requests(&w);
    let again = poller.poll(&id, None, None).await.unwrap();
    assert_eq!((again.written.inserted, again.written.updated, again.written.deleted), (0, 0, 0), "{again:?}");
    assert_eq!(again.calls, 1, "{again:?}");
    assert_eq!(sim_requests(&w) - before, 1);

    // A week of hourly polls (45–75 min apart), with late records, edits, deletions and
    // token expiry along the way.
    let mut now = start;
    let mut late = 0u64;
    let mut refreshed = 0;
    let mut step = 0i64;
    while now < start + Duration::days(7) {
        step += 1;
        now += Duration::minutes(45 + (step * 17) % 31);
        set_time(&w, now);
        let o = poller.poll(&id, None, None).await.unwrap_or_else(|e| panic!("poll at {now}: {e}"));
        refreshed += u64::from(o.refreshed);
        // Late readings: first stored by this poll, yet older than two hours.
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM datums WHERE data_source_id = $1 AND created_time = $2 AND type = 'cbg' AND time < $3",
        )
        .bind(id.as_str())
        .bind(now)
        .bind(now - Duration::hours(2))
        .fetch_one(&w.app.sql)
        .await
        .unwrap();
        late += n as u64;
    }
    assert!(late > 0, "late records appear after a later poll");
    assert!(refreshed > 0, "tokens expired and were refreshed during the week");

    set_time(&w, now);
    // The first poll imported the default 30-day backfill.
    let expected = truth(&w, "dexcom-001", &user, start - Duration::days(30), now).await;
    let got: BTreeMap<String, Value> =
        stored(&w, &id).await.into_iter().filter(|(_, v)| v["type"] != "cgmSettings").collect();
    let missing_all: Vec<&Value> = expected.iter().filter(|(k, _)| !got.contains_key(*k)).map(|(_, v)| v).collect();
    if !missing_all.is_empty() {
        let mut by: BTreeMap<String, (usize, String, String)> = BTreeMap::new();
        for v in &missing_all {
            let e = by.entry(v["type"].as_str().unwrap().to_owned()).or_insert((0, "9999".into(), "0000".into()));
            e.0 += 1;
            let t = v["time"].as_str().unwrap().to_owned();
            if t < e.1 {
                e.1 = t.clone();
            }
            if t > e.2 {
                e.2 = t;
            }
        }
        eprintln!("missing by type: {by:?}; stored {} expected {}", got.len(), expected.len());
    }
    let missing: Vec<&String> = expected.keys().filter(|k| !got.contains_key(*k)).take(5).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !expected.contains_key(*k)).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?} extra {extra:?}");
    for (k, v) in &expected {
        assert_eq!(&got[k], v, "datum {k} differs from the ground truth");
    }
    let types: BTreeMap<&str, usize> = got.values().fold(BTreeMap::new(), |mut m, v| {
        *m.entry(v["type"].as_str().unwrap()).or_default() += 1;
        m
    });
    for t in ["cbg", "food", "insulin", "smbg", "alert"] {
        assert!(types.get(t).copied().unwrap_or(0) > 0, "no {t} in {types:?}");
    }
    assert!(w.app.store.datums_of_source(&id).await.unwrap().iter().any(|d| d.body["type"] == "cgmSettings"));
    let violations = store::lifecycle::check_invariants(&w.app.store).await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
}

#[tokio::test]
async fn carelink_polls_store_the_last_day_once() {
    let w = tidegate_e2e::spawn_world(&[]).await;
    let start = tidegate_e2e::test_epoch();
    set_time(&w, start);
    let token = link(&w, ALICE, "carelink").await;
    let mut b = Browser::new();
    let signin = start_carelink(&w, &mut b, &token).await;
    let pasted = at_carelink(&mut b, &signin, "carelink-001").await;
    assert_eq!(paste(&w, &mut b, &pasted).await.status(), StatusCode::OK);
    let id = source_of(&w, ALICE).await;
    let poller = w.app.poller();
    set_time(&w, start + Duration::seconds(150));
    let first = poller.poll(&id, None, None).await.unwrap();
    assert!(first.written.inserted > 200, "{first:?}");
    let first_ids = stored(&w, &id).await;
    set_time(&w, start + Duration::seconds(150));
    let again = poller.poll(&id, None, None).await.unwrap();
    let new: Vec<Value> =
        stored(&w, &id).await.into_iter().filter(|(k, _)| !first_ids.contains_key(k)).map(|(_, v)| v).collect();
    assert!(new.is_empty(), "a re-poll stored {new:?}");
    assert_eq!(again.written.inserted + again.written.updated, 0, "{again:?}");
    // Two hours on: only what is new — 24 readings, 24 auto-basal doses, a pump status, the
    // odd bolus or meal.
    set_time(&w, start + Duration::hours(2) + Duration::seconds(150));
    let later = poller.poll(&id, None, None).await.unwrap();
    assert!((45..=70).contains(&later.written.inserted), "{later:?}");
    assert_eq!(later.written.updated, 0, "{later:?}");
    let got = stored(&w, &id).await;
    let truth: Value = w
        .app
        .http
        .get(w.sandbox.url(&format!(
            "/admin/truth/carelink-001?at={}",
            model::time::format(&(start + Duration::hours(2) + Duration::seconds(150)))
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sgs = truth["sgs"].as_array().unwrap().len();
    let cbg = got.values().filter(|v| v["type"] == "cbg").count();
    // The last 24 h plus the two hours before them that the first poll saw.
    assert!(cbg >= sgs && cbg <= sgs + 26, "{cbg} stored vs {sgs} in the last 24 h");
}
