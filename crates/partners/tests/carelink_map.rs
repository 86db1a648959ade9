//! CareLink payloads of all three generations → Tidepool datums: golden counts, first/last times,
//! exact datums, and every datum valid against its own type's published schema.

use std::collections::BTreeMap;

use chrono::{DateTime, Offset, TimeZone, Utc};
use model::UserId;
use model::datum::Datum;
use serde_json::{Value, json};
use tidegate_partners::carelink::map::{Generation, map_payload, payload_offset};
use tidegate_partners::fetch::Batch;

fn user() -> UserId {
    UserId::parse("0123456789").unwrap()
}

fn fixture(name: &str) -> Value {
    let p = sandbox::tidepool::testdata_dir().join("fixtures/carelink").join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn valid(d: &Datum) -> Value {
    d.validate().unwrap_or_else(|e| panic!("our rules: {e}"));
    let v = d.to_json();
    sandbox::tidepool::validate_mapped(&format!("data/models/{}", d.schema()), &v)
        .unwrap_or_else(|e| panic!("{e:#?}\n{v:#}"));
    v
}

struct Mapped {
    generation: Generation,
    batch: Batch,
    json: Vec<Value>,
}

impl Mapped {
    fn of(doc: &Value) -> Self {
        let mut batch = Batch::default();
        let generation = map_payload(&user(), doc, &mut batch).unwrap();
        let json = batch.datums.iter().map(valid).collect();
        Self { generation, batch, json }
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for v in &self.json {
            let key = match v["subType"].as_str().or(v["deliveryType"].as_str()) {
                Some(s) => format!("{}/{s}", v["type"].as_str().unwrap()),
                None => v["type"].as_str().unwrap().to_owned(),
            };
            *m.entry(key).or_default() += 1;
        }
        m
    }

    fn of_type(&self, t: &str) -> Vec<&Value> {
        let mut v: Vec<&Value> = self.json.iter().filter(|d| d["type"] == t).collect();
        v.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
        v
    }
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
}

#[test]
fn generation_c_v13_payload() {
    let doc = fixture("CareLink_SampleUserV2Data.json");
    assert_eq!(payload_offset(&doc).unwrap(), -5 * 3600);
    // With or without the live API's envelope.
    let wrapped = Mapped::of(&json!({"metadata": {"lastUpdated": 1}, "patientData": doc}));
    let m = Mapped::of(&doc);
    assert_eq!(wrapped.json, m.json);
    assert_eq!(m.generation, Generation::C);
    assert_eq!(
        m.counts(),
        counts(&[
            ("cbg", 288),
            ("basal/automated", 162),
            ("bolus/automated", 5),
            ("bolus/normal", 6),
            ("food", 6),
            ("deviceEvent/status", 1),
            ("deviceEvent/alarm", 3),
            ("pumpStatus", 1),
        ])
    );
    assert_eq!(m.batch.skipped_total(), 0, "{:?}", m.batch.skipped);
    let cbg = m.of_type("cbg");
    // The EST payload's last SG, 21:21 on the pump, is 02:21 UTC the next day.
    assert_eq!(cbg.last().unwrap()["time"], "2025-11-11T02:21:00.000Z");
    assert_eq!(cbg.last().unwrap()["deviceTime"], "2025-11-10T21:21:00");
    assert_eq!(cbg.last().unwrap()["value"], 122);
    assert_eq!(cbg.last().unwrap()["timezoneOffset"], -300);
    assert_eq!(cbg.last().unwrap()["payload"]["timestamp"], "2025-11-10T21:21:00");
    assert_eq!(cbg[0]["time"], "2025-11-10T02:26:00.000Z");
    assert_eq!(cbg[0]["value"], 85);
    assert_eq!(cbg[0]["deviceId"], "MMT-1884_NG1234567H");
    // Float32 artefacts are gone; a 5-minute dose of 0.075 U is 0.9 U/h.
    let basal = m.of_type("basal");
    assert!(basal.iter().all(|b| b["duration"].as_i64().unwrap() <= 300_000));
    let odd = basal.iter().find(|b| b["payload"]["bolusAmount"] == "0.075000002980232239").unwrap();
    assert_eq!(odd["rate"].as_f64(), Some(0.9));
    let boluses = m.of_type("bolus");
    assert!(boluses.iter().any(|b| b["normal"].as_f64() == Some(2.425)));
    assert!(boluses.iter().all(|b| b.get("expectedNormal").is_none()));
    let food = m.of_type("food");
    assert_eq!(food[0]["nutrition"]["carbohydrate"], json!({"net": 54, "units": "grams"}));
    let status = m.of_type("pumpStatus");
    assert_eq!(status[0]["battery"], json!({"remaining": 0.75, "units": "percent"}));
    assert_eq!(status[0]["reservoir"], json!({"remaining": 126.5, "units": "Units"}));
    assert_eq!(status[0]["payload"]["activeInsulin"]["amount"].as_f64(), Some(1.275));
    assert!(status[0]["payload"].get("timeToNextCalibHours").is_none(), "255 is CareLink's unknown");
}

#[test]
fn generation_b_ble_payload() {
    let doc = fixture("CareLink_SampleUserData.json");
    assert_eq!(payload_offset(&doc).unwrap(), -7 * 3600);
    let m = Mapped::of(&doc);
    assert_eq!(m.generation, Generation::B);
    assert_eq!(
        m.counts(),
        counts(&[
            ("cbg", 231),
            ("basal/automated", 127),
            ("bolus/normal", 9),
            ("food", 7),
            ("smbg", 5),
            ("deviceEvent/calibration", 6),
            ("pumpStatus", 1),
        ])
    );
    let cbg = m.of_type("cbg");
    // Local time with a fake Z: 01:06 on the pump in PDT is 08:06 UTC.
    assert_eq!(cbg.last().unwrap()["time"], "2021-05-22T08:06:00.000Z");
    assert_eq!(cbg.last().unwrap()["payload"]["datetime"], "2021-05-22T01:06:00.000Z");
    assert_eq!(cbg[0]["time"], "2021-05-21T08:08:00.000Z");
    let smbg = m.of_type("smbg");
    assert_eq!(smbg.iter().map(|s| s["value"].as_f64().unwrap() as i64).collect::<Vec<_>>().len(), 5);
    let status = m.of_type("pumpStatus");
    assert_eq!(status[0]["reservoir"]["remaining"].as_f64(), Some(213.275));
    assert_eq!(status[0]["battery"]["remaining"].as_f64(), Some(1.0));
}

#[test]
fn generation_a_legacy_payload() {
    let doc = fixture("minimed-connect-to-nightscout__samples.withTrend.json");
    assert_eq!(payload_offset(&doc).unwrap(), -5 * 3600);
    let m = Mapped::of(&doc);
    assert_eq!(m.generation, Generation::A);
    assert_eq!(m.counts(), counts(&[("cbg", 6), ("pumpStatus", 1)]));
    let cbg = m.of_type("cbg");
    assert_eq!(cbg[0]["time"], "2015-10-20T18:21:00.000Z");
    assert_eq!(cbg[0]["deviceTime"], "2015-10-20T13:21:00");
    assert_eq!(cbg[5]["value"], 163);
}

#[test]
fn broken_payloads_and_records() {
    let mut batch = Batch::default();
    assert!(map_payload(&user(), &json!({"hello": 1}), &mut batch).is_err());
    assert!(map_payload(&user(), &json!([1, 2]), &mut batch).is_err());
    let mut doc = fixture("CareLink_SampleUserV2Data.json");
    for k in ["lastConduitDateTime", "lastConduitUpdateServerDateTime", "medicalDeviceTime", "currentServerTime"] {
        doc.as_object_mut().unwrap().remove(k);
    }
    assert!(map_payload(&user(), &doc, &mut batch).is_err(), "no clock, no placement in time");
    let mut doc = fixture("CareLink_SampleUserV2Data.json");
    doc["sgs"][3]["timestamp"] = json!("not a time");
    doc["sgs"][4]["sg"] = json!("abc");
    doc["markers"][5]["data"]["dataValues"]["bolusAmount"] = json!(null);
    doc["markers"].as_array_mut().unwrap().push(json!({"type": "NEW_MARKER_KIND", "timestamp": "2025-11-10T10:00:00"}));
    let m = Mapped::of(&doc);
    assert_eq!(m.of_type("cbg").len(), 286);
    assert_eq!(m.batch.skipped["bad_time"].count, 1);
    assert_eq!(m.batch.skipped["no_value"].count, 1);
    assert_eq!(m.batch.skipped["unknown_marker"].count, 1);
}

/// Simulated CareLink people (New York across DST, Kolkata +05:30, …): every datum validates and
/// every SG lands at the UTC instant the simulator generated it for, also on the day the clocks
/// change (the payload's TIME_CHANGE marker gives earlier records the old offset).
#[test]
fn simulated_payloads_land_at_the_right_instants() {
    let people = sandbox::people::population(11, 0, 6);
    let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    let mut checked = 0;
    for p in people.iter().filter(|p| p.partner == sandbox::people::Partner::Carelink) {
        for at in
            [t("2026-03-08T06:00:00Z"), t("2026-03-08T20:00:00Z"), t("2026-03-10T12:00:00Z"), t("2026-11-01T09:00:00Z")]
        {
            let doc = sandbox::carelink::display::patient_data(p, at);
            let m = Mapped::of(&doc);
            for v in m.of_type("cbg") {
                let time: DateTime<Utc> = DateTime::parse_from_rfc3339(v["time"].as_str().unwrap()).unwrap().to_utc();
                let local =
                    chrono::NaiveDateTime::parse_from_str(v["deviceTime"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S")
                        .unwrap();
                let expected = p.tz.offset_from_utc_datetime(&time.naive_utc()).fix();
                assert_eq!(
                    local - time.naive_utc(),
                    chrono::Duration::seconds(expected.local_minus_utc() as i64),
                    "{} {at}: {v}",
                    p.login
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 3000, "{checked}");
}

/// A payload served just over 24 h after a DST change can still hold the last readings from
/// before it (the SG window's oldest slot is up to a slot older than 24 h): the TIME_CHANGE
/// marker must come with them, or they are placed an hour off and overwrite the reading an hour
/// earlier (found by the fault matrix: a Chicago pump's 01:59 CST reading stored at 06:59Z).
#[test]
fn the_day_after_a_dst_change_its_earlier_readings_keep_their_offset() {
    let people = sandbox::people::population(1, 0, 12);
    let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    let user = UserId::parse("0123456789").unwrap();
    let mut checked = 0;
    for p in people.iter().filter(|p| p.tz == chrono_tz::America::Chicago || p.tz == chrono_tz::America::New_York) {
        // Chicago changes at 08:00Z, New York at 07:00Z: 24 h later, every 5 s for ten minutes.
        let change =
            if p.tz == chrono_tz::America::Chicago { t("2026-03-09T08:00:00Z") } else { t("2026-03-09T07:00:00Z") };
        let mut at = change - chrono::Duration::minutes(5);
        while at < change + chrono::Duration::minutes(5) {
            let body = json!({ "patientData": sandbox::carelink::display::patient_data(p, at) });
            let mut batch = Batch::default();
            map_payload(&user, &body, &mut batch).expect("maps");
            for d in &batch.datums {
                let v = d.to_json();
                if v["type"] != "cbg" {
                    continue;
                }
                let time: DateTime<Utc> = DateTime::parse_from_rfc3339(v["time"].as_str().unwrap()).unwrap().to_utc();
                let local =
                    chrono::NaiveDateTime::parse_from_str(v["deviceTime"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S")
                        .unwrap();
                let expected = p.tz.offset_from_utc_datetime(&time.naive_utc()).fix();
                assert_eq!(
                    (local - time.naive_utc()).num_seconds(),
                    i64::from(expected.local_minus_utc()),
                    "{} at {at}: {v}",
                    p.login
                );
                checked += 1;
            }
            at += chrono::Duration::seconds(5);
        }
    }
    assert!(checked > 10_000, "{checked}");
}
