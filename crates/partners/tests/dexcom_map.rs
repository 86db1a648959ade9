//! Dexcom EGV → Tidepool `cbg`: the real fixture and simulated records, validated against
//! Tidepool's published `cbg` schema; time zones (+05:30, DST), receiver and drifted clocks.

use chrono::{DateTime, Offset, TimeZone, Utc};
use model::UserId;
use serde_json::{Value, json};
use tidegate_partners::dexcom::map::{Skip, egv};

const CBG_SCHEMA: &str = "data/models/blood/continuousglucose.v1.yaml";

fn user() -> UserId {
    UserId::parse("0123456789").unwrap()
}

fn fixture() -> Value {
    let p = sandbox::tidepool::testdata_dir().join("fixtures/dexcom/v3_egvs_g7_ios_record.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn valid(datum: &impl serde::Serialize) -> Value {
    let v = serde_json::to_value(datum).unwrap();
    sandbox::tidepool::validate_mapped(CBG_SCHEMA, &v).unwrap_or_else(|e| panic!("{e:#?}\n{v:#}"));
    v
}

#[test]
fn the_fixture_record_maps_to_a_valid_cbg() {
    let f = fixture();
    let d = valid(&egv(&user(), &f["records"][0]).unwrap());
    assert_eq!(d["type"], "cbg");
    assert_eq!(d["value"], 101);
    assert_eq!(d["units"], "mg/dL");
    assert_eq!(d["trend"], "constant");
    assert_eq!(d["time"], "2025-01-30T23:49:55.000Z");
    assert_eq!(d["deviceTime"], "2025-01-30T15:49:55");
    assert_eq!(d["timezoneOffset"], -480);
    assert!(d.get("clockDriftOffset").is_none());
    assert_eq!(d["deviceId"], "DexcomG7_transmitter-id");
    assert_eq!(d["origin"]["id"], "record-id");
    assert_eq!(d["payload"]["displayTime"], "2025-01-30T15:49:55-08:00");
    assert_eq!(d["id"].as_str().unwrap().len(), 32);
    // Deterministic: the same record gives the same datum id.
    assert_eq!(d["id"], serde_json::to_value(egv(&user(), &f["records"][0]).unwrap()).unwrap()["id"]);
}

#[test]
fn out_of_range_null_and_broken_records() {
    let base = fixture()["records"][0].clone();
    let with = |k: &str, v: Value| {
        let mut r = base.clone();
        r[k] = v;
        r
    };
    let mut low = with("value", json!(39));
    low["status"] = json!("low");
    let low = valid(&egv(&user(), &low).unwrap());
    assert_eq!(low["value"], 39);
    assert_eq!(low["annotations"][0], json!({"code": "bg/out-of-range", "value": "low", "threshold": 40}));
    let high = valid(&egv(&user(), &with("value", json!(401))).unwrap());
    assert_eq!(high["annotations"][0]["value"], "high");
    assert_eq!(egv(&user(), &with("value", Value::Null)).unwrap_err(), Skip::NoValue);
    assert_eq!(egv(&user(), &with("recordId", Value::Null)).unwrap_err(), Skip::NoRecordId);
    assert_eq!(egv(&user(), &with("systemTime", json!("yesterday"))).unwrap_err(), Skip::BadTime("systemTime"));
    assert!(matches!(egv(&user(), &with("unit", json!("mmol/L"))).unwrap_err(), Skip::Unit(_)));
    // Drifted enums are open strings: an unknown trend gives no trend, the record still maps.
    let odd = valid(&egv(&user(), &with("trend", json!("sidewaysUp"))).unwrap());
    assert!(odd.get("trend").is_none());
}

/// Simulated people: every record maps and validates; local times come out right.
#[test]
fn simulated_people_map_with_correct_local_times() {
    let people = sandbox::people::population(42, 6, 0);
    let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    let (start, end) = (t("2026-03-07T00:00:00Z"), t("2026-03-10T00:00:00Z"));
    let now: DateTime<Utc> = t("2026-03-11T00:00:00Z");
    let mut checked = 0;
    for p in &people {
        let records = sandbox::dexcom::records::egvs(p, start, end, now, false);
        assert!(records.len() > 700, "{}: {}", p.login, records.len());
        for r in &records {
            let d = match egv(&user(), r) {
                Ok(d) => serde_json::to_value(d).unwrap(),
                Err(Skip::NoValue) => continue,
                Err(e) => panic!("{}: {e}: {r}", p.login),
            };
            if checked % 50 == 0 {
                valid(&d);
            }
            checked += 1;
            let time = DateTime::parse_from_rfc3339(d["time"].as_str().unwrap()).unwrap().to_utc();
            let expected_offset = p.tz.offset_from_utc_datetime(&time.naive_utc()).fix().local_minus_utc() / 60;
            assert_eq!(d["timezoneOffset"].as_i64().unwrap(), expected_offset as i64, "{} at {time}", p.login);
            match p.time_style {
                // A drifted display clock without seconds: the drift (2 s) plus the dropped seconds.
                sandbox::people::TimeStyle::Drifted => {
                    let drift = d["clockDriftOffset"].as_i64().unwrap_or(0);
                    assert!((-58_000..=2_000).contains(&drift), "{}: {drift}", p.login);
                }
                _ => assert!(d.get("clockDriftOffset").is_none(), "{}", p.login),
            }
        }
    }
    assert!(checked > 4000);
    // New York crosses the spring-forward change on 2026-03-08; Kolkata is +05:30.
    assert_eq!(people[0].tz, chrono_tz::America::New_York);
    assert_eq!(people[1].tz, chrono_tz::Asia::Kolkata);
}

fn valid_datum(d: &model::datum::Datum) -> Value {
    d.validate().unwrap_or_else(|e| panic!("our rules: {e}"));
    let v = d.to_json();
    sandbox::tidepool::validate_mapped(&format!("data/models/{}", d.schema()), &v)
        .unwrap_or_else(|e| panic!("{e:#?}\n{v:#}"));
    v
}

fn shared_json(rel: &str) -> Value {
    let p = sandbox::tidepool::testdata_dir().join(rel);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Events, calibrations, alerts and devices of simulated people over a week: every record maps
/// to its Tidepool type and validates against that type's published schema; edits replace,
/// deletions remove.
#[test]
fn every_simulated_record_type_maps_and_validates() {
    use std::collections::BTreeMap;
    use tidegate_partners::dexcom::map::{self, EventChange};
    let people = sandbox::people::population(7, 6, 0);
    let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    let (start, end) = (t("2026-03-03T00:00:00Z"), t("2026-03-10T00:00:00Z"));
    let late = t("2026-03-12T00:00:00Z");
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    let (mut updated, mut removed) = (0, 0);
    for p in &people {
        for r in sandbox::dexcom::records::events(p, start, end, late, false) {
            match map::event(&user(), &r).unwrap_or_else(|e| panic!("{e}: {r}")) {
                EventChange::Upsert(d) => {
                    let v = valid_datum(&d);
                    *types.entry(v["type"].as_str().unwrap().to_string()).or_default() += 1;
                    if r["eventStatus"] == "updated" {
                        updated += 1;
                        assert_eq!(v["payload"]["value"], r["value"]);
                    }
                    if r["eventType"] == "notes" {
                        assert_eq!(v["notes"][0], r["value"]);
                        assert_eq!(v["states"][0]["state"], "other");
                    }
                    if r["eventType"] == "health" && r["eventSubType"] == "highSymptoms" {
                        assert_eq!(v["states"][0]["state"], "hyperglycemiaSymptoms");
                    }
                    if r["eventType"] == "insulin" {
                        assert!(v.get("formulation").is_none());
                        assert_eq!(v["payload"]["eventSubType"], r["eventSubType"]);
                        assert_eq!(v["dose"]["total"].as_f64(), r["value"].as_str().unwrap().parse::<f64>().ok());
                    }
                }
                EventChange::Remove(id) => {
                    removed += 1;
                    // The id a deletion removes is the id the created event was stored under.
                    let mut created = r.clone();
                    created["eventStatus"] = json!("created");
                    if let Ok(EventChange::Upsert(d)) = map::event(&user(), &created) {
                        assert_eq!(d.base().id, id);
                    }
                }
            }
        }
        for r in sandbox::dexcom::records::calibrations(p, start, end, late) {
            let v = valid_datum(&map::calibration(&user(), &r).unwrap());
            assert_eq!((v["type"].as_str(), v["subType"].as_str()), (Some("deviceEvent"), Some("calibration")));
            *types.entry("deviceEvent/calibration".into()).or_default() += 1;
        }
        for r in sandbox::dexcom::records::alerts(p, start, end, late) {
            let v = valid_datum(&map::alert(&user(), &r).unwrap());
            assert_eq!(v["name"], r["alertName"]);
            assert_eq!(v["issuedTime"], v["time"]);
            *types.entry("alert".into()).or_default() += 1;
        }
        let device = sandbox::dexcom::records::device(p, late);
        let v = valid_datum(&map::device(&user(), &device).unwrap());
        assert_eq!(v["highAlerts"]["enabled"], true);
        assert_eq!(v["units"], "mmol/L");
        let mgdl = |x: &Value| x.as_f64().map(|m| (m * model::datum::MGDL_PER_MMOLL * 1e6).round() / 1e6);
        assert_eq!(mgdl(&v["lowAlerts"]["level"]), Some(70.0));
        assert_eq!(v["payload"]["alertSchedules"][0]["alertSettings"].as_array().map(|a| a.is_empty()), Some(false));
        assert_eq!(v["highAlerts"]["snooze"], 30 * 60_000);
        assert_eq!(mgdl(&v["rateOfChangeAlert"]["fallRate"]["rate"]), Some(-3.0));
        // The same settings read later are the same datum; changed settings are a new one.
        let again =
            map::device(&user(), &sandbox::dexcom::records::device(p, late + chrono::Duration::hours(5))).unwrap();
        assert_eq!(again.base().id.as_str(), v["id"].as_str().unwrap());
        let changed =
            map::device(&user(), &sandbox::dexcom::records::device(p, late + chrono::Duration::days(21))).unwrap();
        assert_ne!(changed.base().id.as_str(), v["id"].as_str().unwrap());
    }
    for kind in ["food", "insulin", "smbg", "physicalActivity", "reportedState", "deviceEvent/calibration", "alert"] {
        assert!(types.get(kind).copied().unwrap_or(0) > 0, "no {kind} in {types:?}");
    }
    assert!(updated > 0 && removed > 0, "updated {updated}, removed {removed}");
}

/// The real device record from Tidepool's platform tests: mmol/L alert values that have no
/// mg/dL field are kept only in the payload; the datum is valid.
#[test]
fn the_platform_device_fixture_maps_to_valid_cgm_settings() {
    let record = shared_json("fixtures/dexcom/v3_device_record_tidepool_platform_fixture.json");
    let d = tidegate_partners::dexcom::map::device(&user(), &record).unwrap();
    let v = valid_datum(&d);
    assert_eq!(v["type"], "cgmSettings");
    assert_eq!(v["manufacturers"], json!(["Dexcom"]));
    assert_eq!(v["time"], "2017-12-14T20:08:32.000Z");
    assert!(v.get("highAlerts").is_none());
    assert_eq!(v["payload"]["alertSchedules"][0]["alertSettings"][0]["alertName"], "urgentLowSoon");
    assert!(v["deviceId"].as_str().unwrap().starts_with("DexcomPro_"));
}

/// Dexcom's own v2 events sample: its dates include 2018-02-29, which does not exist — those
/// records are skipped and counted, the others map.
#[test]
fn the_v2_events_sample_skips_impossible_dates() {
    use tidegate_partners::fetch::Batch;
    let doc = shared_json("fixtures/dexcom/v2_events_docs_sample.json");
    let envelope = json!({"records": doc["events"]});
    let mut batch = Batch::default();
    let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    tidegate_partners::dexcom::fetch::map_records(
        &user(),
        "events",
        &envelope,
        t("2018-01-01T00:00:00Z"),
        t("2019-01-01T00:00:00Z"),
        &mut batch,
    );
    let n = doc["events"].as_array().unwrap().len() as u64;
    // The deleted event removes by its id alone, impossible date or not.
    assert_eq!(batch.removed.len(), 1);
    assert_eq!(batch.skipped_total() + batch.datums.len() as u64 + batch.removed.len() as u64, n);
    assert!(batch.skipped.get("bad_time").is_some_and(|s| s.count > 0), "{:?}", batch.skipped);
    for d in &batch.datums {
        valid_datum(d);
    }
}
