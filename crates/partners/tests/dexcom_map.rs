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
    let p = testkit::tidepool::shared_dir().join("fixtures/dexcom/v3_egvs_g7_ios_record.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn valid(datum: &impl serde::Serialize) -> Value {
    let v = serde_json::to_value(datum).unwrap();
    testkit::tidepool::validate(CBG_SCHEMA, &v).unwrap_or_else(|e| panic!("{e:#?}\n{v:#}"));
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
