//! Parser fuzzing (issue 10): property tests of the Dexcom and CareLink mappers, seeded with the
//! real partner payloads in `testdata/fixtures` (provenance in `SOURCES.json` there).
//!
//! Each case starts from a fixture and damages it at random: a value anywhere replaced by a JSON
//! value of any type (null, booleans, huge, negative and fractional numbers, empty, long and
//! unicode strings, time-like strings, partner enum words, small arrays and objects), object keys
//! deleted, records duplicated, arrays shuffled, a CareLink clock field set to an extreme. The
//! damage lands inside the records only, in the envelope only, or anywhere. Other cases work on
//! bytes: the fixture's text cut at a random point, random bytes of it overwritten, or random
//! bytes alone, read the way the drivers read a response (`serde_json` first). What must hold:
//!
//! * nothing panics: a payload maps into a `Batch` or is refused with an error, and a refused
//!   CareLink payload leaves the batch untouched;
//! * every record offered is mapped or counted in `Batch::skipped`, exactly: the number offered
//!   is computed from the input alone (see [`dexcom_offered`] and [`carelink_offered`]), never
//!   from what the mapper returned;
//! * a Dexcom record maps the same alone as in its batch (records are independent), and records
//!   the damage did not touch map exactly as they do in the undamaged fixture;
//! * every datum produced passes our own rules and Tidepool's published schema for its type (the
//!   checks of `dexcom_map.rs` and `carelink_map.rs`), and a `cbg` is a whole mg/dL value in range.
//!
//! Default case counts (1024 per Dexcom property, 768 per CareLink one, 1024 random inputs) run in
//! about 13 s on a 2-core machine, debug build, once compiled. For a soak, set `PROPTEST_CASES`
//! (it replaces every default here), e.g. 15000 cases in about 7 minutes:
//! `PROPTEST_CASES=15000 SQLX_OFFLINE=true cargo test -p tidegate-partners --test fuzz_parsers`.
//! A failing case is shrunk and its seed saved in `tests/fuzz_parsers.proptest-regressions`, which
//! is replayed first on every later run: commit that file with the fix. What the fuzzing found is
//! also pinned by the plain tests at the end of this file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use chrono::{DateTime, Utc};
use model::UserId;
use model::datum::Datum;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::FileFailurePersistence;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Map, Value, json};
use tidegate_partners::carelink::map::{map_payload, patient_data};
use tidegate_partners::dexcom::fetch::map_records;
use tidegate_partners::fetch::Batch;

fn user() -> UserId {
    UserId::parse("0123456789").unwrap()
}

fn fixture_text(rel: &str) -> String {
    let p = sandbox::tidepool::testdata_dir().join("fixtures").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn fixture(rel: &str) -> Value {
    serde_json::from_str(&fixture_text(rel)).unwrap()
}

/// `PROPTEST_CASES` when set, else `cases`; failures saved beside this file.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c.failure_persistence = Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions")));
    c
}

/// serde_json's maps are ordered, so this is a canonical form (equal values, equal strings).
fn canon(v: &Value) -> String {
    v.to_string()
}

fn multiset<I: IntoIterator<Item = String>>(items: I) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for i in items {
        *m.entry(i).or_default() += 1;
    }
    m
}

/// A datum's JSON without what legitimately depends on its neighbours: an automated basal
/// segment ends at the next dose, so its duration changes when the records around it do.
fn normalized(d: &Datum) -> String {
    let mut v = d.to_json();
    if v["type"] == "basal"
        && let Some(o) = v.as_object_mut()
    {
        o.remove("duration");
        o.remove("expectedDuration");
    }
    canon(&v)
}

// ---------------------------------------------------------------------------------------------
// Every datum: our rules, Tidepool's schema, base fields, cbg range.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Partner {
    Dexcom,
    Carelink,
}

/// Datums (by JSON) already validated against Tidepool's schema: a datum the damage did not
/// change is not validated again in every case. Bounded, so a soak's memory stays flat.
const SCHEMA_CHECKED_MAX: usize = 20_000;

fn schema_checked() -> &'static Mutex<HashSet<String>> {
    static S: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    S.get_or_init(Default::default)
}

fn check_datum(d: &Datum, partner: Partner) -> Result<(), TestCaseError> {
    let v = d.to_json();
    if let Err(e) = d.validate() {
        return Err(TestCaseError::fail(format!("our rules: {e}\n{v:#}")));
    }
    prop_assert_eq!(v["type"].as_str(), Some(d.base().kind));
    let id = v["id"].as_str().unwrap_or_default();
    prop_assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "id {id:?}");
    let time = v["time"].as_str().unwrap_or_default();
    prop_assert!(DateTime::parse_from_rfc3339(time).is_ok(), "time {time:?}");
    prop_assert!(v["origin"]["id"].as_str().is_some_and(|o| !o.is_empty()), "origin.id");
    if d.base().kind == "cbg" {
        prop_assert_eq!(v["units"].as_str(), Some("mg/dL"));
        let value = v["value"].as_i64();
        // Dexcom writes out-of-range readings as 39 and 401; CareLink only promises the schema's
        // 0–1000 (it does not clamp what its pump reports).
        let range = match partner {
            Partner::Dexcom => 39..=401,
            Partner::Carelink => 0..=1000,
        };
        prop_assert!(value.is_some_and(|x| range.contains(&x)), "cbg value {:?}", v["value"]);
    }
    let key = canon(&v);
    if !schema_checked().lock().unwrap_or_else(|p| p.into_inner()).contains(&key) {
        if let Err(e) = sandbox::tidepool::validate_mapped(&format!("data/models/{}", d.schema()), &v) {
            return Err(TestCaseError::fail(format!("Tidepool schema: {e:#?}\n{v:#}")));
        }
        let mut checked = schema_checked().lock().unwrap_or_else(|p| p.into_inner());
        if checked.len() < SCHEMA_CHECKED_MAX {
            checked.insert(key);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Damage: random JSON values and edits of a document tree.

/// Numbers at the edges of what the mappers read: sentinels (0, −1, 255), glucose limits,
/// integer and float extremes, epoch milliseconds around chrono's range and year 9999.
fn edge_numbers() -> Vec<Value> {
    let max_ms = DateTime::<Utc>::MAX_UTC.timestamp_millis();
    vec![
        json!(0),
        json!(-1),
        json!(1),
        json!(-0.0),
        json!(0.4),
        json!(0.5),
        json!(2.5),
        json!(39),
        json!(40),
        json!(400),
        json!(401),
        json!(255),
        json!(1000),
        json!(1001),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(f64::MAX),
        json!(-f64::MAX),
        json!(f64::MIN_POSITIVE),
        json!(1e300),
        json!(9_007_199_254_740_993_u64),
        json!(253_402_300_799_999_i64),
        json!(max_ms),
        json!(max_ms + 1),
        json!(max_ms - 3_600_000),
        json!(1_762_824_000_000_i64),
        json!(86_400_000),
    ]
}

/// Strings the mappers look for, and strings at the edges of what they parse.
const EDGE_STRINGS: &[&str] = &[
    "",
    " ",
    "NaN",
    "inf",
    "-inf",
    "1e400",
    "-1",
    "0",
    " 12.5 ",
    "0x10",
    "null",
    "true",
    "2025-11-10T21:21:00",
    "2025-11-10T21:21:00Z",
    "2025-11-10T21:21:00.000-05:00",
    "2025-01-30T16:49-06:59:58",
    "2018-02-29T20:59:33",
    "2025-13-01T00:00:00",
    "9999-12-31T23:59:59",
    "9999-12-31T23:59:59-18:00",
    "0000-01-01T00:00:00",
    "0000-01-01T00:00:00+18:00",
    "+9999-12-31T23:59:59",
    "-9999-01-01T00:00:00",
    "262143-12-31T23:59:59",
    "+262143-9-30T23:59:59",
    "+199999-1-1T00:00:00-18:00",
    "+10000-01-01T00:00:00",
    "-262143-1-1T00:00:00+18:00",
    "-262144-1-1T00:00:00",
    "Oct 20, 2015 13:21:00",
    "Dec 31, 9999 23:59:59",
    "Dec 31, +262143 23:59:59",
    "Jan 01, -262144 00:00:00",
    "Jan 01, 0000 00:00:00",
    "é🩸\u{0}\u{202e}Ω",
    "mg/dL",
    "mmol/L",
    "mg/dL/min",
    "mmol/L/min",
    "grams",
    "units",
    "minutes",
    "created",
    "updated",
    "deleted",
    "carbs",
    "insulin",
    "bloodGlucose",
    "exercise",
    "health",
    "notes",
    "note",
    "illness",
    "light",
    "g7",
    "g6 pro",
    "dexcomPro",
    "low",
    "high",
    "flat",
    "doubleUp",
    "rise",
    "fall",
    "outOfRange",
    "TIME_CHANGE",
    "INSULIN",
    "AUTO_BASAL_DELIVERY",
    "MEAL",
    "BG_READING",
    "BG",
    "CALIBRATION",
    "LOW_GLUCOSE_SUSPENDED",
    "AUTO_MODE_STATUS",
    "ALARM",
    "ALERT",
    "NO_ERROR_MESSAGE",
    "NORMAL",
    "SG_BELOW_40_MG_DL",
    "SG_ABOVE_400_MG_DL",
    "WARM_UP",
    "AUTOCORRECTION",
    "RECOMMENDED",
    "BG_LINK",
];

/// Keys the mappers read, for generated objects (so a replaced record sometimes half-parses).
const KEYS: &[&str] = &[
    "recordId",
    "eventId",
    "systemTime",
    "displayTime",
    "value",
    "unit",
    "status",
    "trend",
    "trendRate",
    "eventType",
    "eventStatus",
    "eventSubType",
    "alertName",
    "alertSchedules",
    "alertSettings",
    "lastUploadDate",
    "transmitterId",
    "sg",
    "sensorState",
    "timestamp",
    "datetime",
    "dateTime",
    "type",
    "data",
    "dataValues",
    "amount",
    "bolusAmount",
    "deliveredFastAmount",
    "programmedExtendedAmount",
    "effectiveDuration",
    "previousDateTime",
    "newDateTime",
    "faultId",
    "triggeredDateTime",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(Value::from),
        // NaN and infinities are not JSON: json! makes them null.
        1 => any::<f64>().prop_map(|f| json!(f)),
        1 => (-1000.0..1000.0f64).prop_map(|f| json!(f)),
        3 => select(edge_numbers()),
        1 => "\\PC{0,24}".prop_map(Value::String),
        3 => select(EDGE_STRINGS).prop_map(Value::from),
        1 => (any::<char>(), 0..3000usize).prop_map(|(c, n)| Value::String(std::iter::repeat_n(c, n).collect())),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![select(KEYS).prop_map(str::to_owned), "[a-zA-Z]{1,8}"]
}

/// Any JSON value: a leaf, or arrays and objects of them nested up to three deep.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    At(usize),
}

type Path = Vec<Seg>;

fn node<'a>(v: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, s| match s {
        Seg::Key(k) => v.as_object()?.get(k),
        Seg::At(i) => v.as_array()?.get(*i),
    })
}

fn node_mut<'a>(v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, s| match s {
        Seg::Key(k) => v.as_object_mut()?.get_mut(k),
        Seg::At(i) => v.as_array_mut()?.get_mut(*i),
    })
}

/// Every node of `v` (pre-order), as paths from the document root.
fn walk(v: &Value, path: &mut Path, out: &mut Vec<Path>) {
    out.push(path.clone());
    match v {
        Value::Object(o) => {
            for (k, c) in o {
                path.push(Seg::Key(k.clone()));
                walk(c, path, out);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                path.push(Seg::At(i));
                walk(c, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Where damage may land.
#[derive(Debug, Clone, Copy)]
enum Scope {
    /// Inside the records of these lists (paths of keys); the lists themselves and the envelope
    /// around them stay as they were.
    Records(&'static [&'static [&'static str]]),
    /// Anywhere but inside the records of these lists: the envelope (clocks, serial, status)
    /// and the lists themselves.
    Envelope(&'static [&'static [&'static str]]),
    /// Anywhere in the document, the document itself included.
    Anywhere,
}

const DEXCOM_LISTS: &[&[&str]] = &[&["records"]];
const CARELINK_LISTS: &[&[&str]] = &[
    &["sgs"],
    &["markers"],
    &["notificationHistory", "clearedNotifications"],
    &["notificationHistory", "activeNotifications"],
];

fn list_path(keys: &[&str]) -> Path {
    keys.iter().map(|k| Seg::Key((*k).to_owned())).collect()
}

/// The nodes damage may land on, and the arrays a shuffle may reorder.
fn targets(doc: &Value, scope: Scope) -> (Vec<Path>, Vec<Path>) {
    let mut nodes = Vec::new();
    let mut lists = Vec::new();
    match scope {
        Scope::Anywhere => walk(doc, &mut Vec::new(), &mut nodes),
        Scope::Envelope(keys) => {
            walk(doc, &mut Vec::new(), &mut nodes);
            let lists: Vec<Path> = keys.iter().map(|k| list_path(k)).collect();
            nodes.retain(|p| !lists.iter().any(|l| p.len() > l.len() && p.starts_with(l)));
        }
        Scope::Records(keys) => {
            for k in keys {
                let mut path = list_path(k);
                if let Some(Value::Array(records)) = node(doc, &path) {
                    lists.push(path.clone());
                    for (i, r) in records.iter().enumerate() {
                        path.push(Seg::At(i));
                        walk(r, &mut path, &mut nodes);
                        path.pop();
                    }
                }
            }
        }
    }
    lists.extend(nodes.iter().filter(|p| node(doc, p).is_some_and(Value::is_array)).cloned());
    (nodes, lists)
}

#[derive(Debug, Clone)]
enum Op {
    /// Replace the chosen node with this value.
    Replace(Index, Value),
    /// Remove the chosen object member.
    Delete(Index),
    /// Copy the chosen array element (a record, mostly) to another place in its array.
    Duplicate(Index, Index),
    /// Shuffle the chosen array.
    Shuffle(Index, u64),
    /// Set one of the CareLink payload's clock fields (outside the records only).
    Clock(Index, Value),
}

/// The CareLink payload fields that place its records in time (and date its pump status).
const CARELINK_CLOCKS: &[&str] = &[
    "lastConduitDateTime",
    "lastConduitUpdateServerDateTime",
    "lastConduitUpdateServerTime",
    "currentServerTime",
    "sMedicalDeviceTime",
    "medicalDeviceTime",
    "lastMedicalDeviceDataUpdateServerTime",
];

/// What a clock field may be set to: epoch milliseconds anywhere in (and just past) chrono's
/// range, time strings at the edges, or any value at all.
fn clock_value() -> impl Strategy<Value = Value> {
    let max_ms = DateTime::<Utc>::MAX_UTC.timestamp_millis();
    prop_oneof![
        select(vec![
            json!(1),
            json!(0),
            json!(-1),
            json!(max_ms),
            json!(max_ms + 1),
            json!(max_ms - 86_400_000),
            json!(253_402_300_799_999_i64),
            json!(i64::MAX),
            json!(1e300),
        ]),
        (1..max_ms).prop_map(Value::from),
        (1..max_ms).prop_map(|ms| Value::from(ms.to_string())),
        select(EDGE_STRINGS).prop_map(Value::from),
        leaf(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (any::<Index>(), json_value()).prop_map(|(i, v)| Op::Replace(i, v)),
        3 => any::<Index>().prop_map(Op::Delete),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Op::Duplicate(a, b)),
        1 => (any::<Index>(), any::<u64>()).prop_map(|(a, s)| Op::Shuffle(a, s)),
        2 => (any::<Index>(), clock_value()).prop_map(|(k, v)| Op::Clock(k, v)),
    ]
}

fn pick<'a>(paths: &[&'a Path], at: &Index) -> Option<&'a Path> {
    (!paths.is_empty()).then(|| paths[at.index(paths.len())])
}

fn apply(doc: &mut Value, op: &Op, scope: Scope) {
    let (nodes, lists) = targets(doc, scope);
    let all: Vec<&Path> = nodes.iter().collect();
    match op {
        Op::Replace(at, with) => {
            if let Some(n) = pick(&all, at).cloned().and_then(|p| node_mut(doc, &p)) {
                *n = with.clone();
            }
        }
        Op::Delete(at) => {
            let members: Vec<&Path> = nodes.iter().filter(|p| matches!(p.last(), Some(Seg::Key(_)))).collect();
            if let Some((Seg::Key(k), parent)) = pick(&members, at).and_then(|p| p.split_last())
                && let Some(Value::Object(o)) = node_mut(doc, parent)
            {
                o.remove(k);
            }
        }
        Op::Duplicate(at, to) => {
            let elements: Vec<&Path> = nodes.iter().filter(|p| matches!(p.last(), Some(Seg::At(_)))).collect();
            if let Some((Seg::At(i), parent)) = pick(&elements, at).and_then(|p| p.split_last())
                && let Some(Value::Array(a)) = node_mut(doc, parent)
            {
                let copy = a[*i].clone();
                let pos = to.index(a.len() + 1);
                a.insert(pos, copy);
            }
        }
        Op::Shuffle(at, seed) => {
            let lists: Vec<&Path> = lists.iter().collect();
            if let Some(Value::Array(a)) = pick(&lists, at).cloned().and_then(|p| node_mut(doc, &p)) {
                a.shuffle(&mut rand::rngs::StdRng::seed_from_u64(*seed));
            }
        }
        Op::Clock(key, value) => {
            if !matches!(scope, Scope::Records(_))
                && let Some(o) = doc.as_object_mut()
            {
                o.insert(CARELINK_CLOCKS[key.index(CARELINK_CLOCKS.len())].to_owned(), value.clone());
            }
        }
    }
}

fn damaged(mut doc: Value, ops: &[Op], scope: Scope) -> Value {
    for op in ops {
        apply(&mut doc, op, scope);
    }
    doc
}

/// The bytes of a fixture's text with `edits` (position, byte) written over it.
fn overwritten(text: &str, edits: &[(Index, u8)]) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    for (at, b) in edits {
        let i = at.index(bytes.len());
        bytes[i] = *b;
    }
    bytes
}

// ---------------------------------------------------------------------------------------------
// Dexcom

const DEXCOM_KINDS: [&str; 5] = ["egvs", "events", "calibrations", "alerts", "devices"];

/// What one record became.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Outcome {
    Datum(String),
    Removed(String),
    Skipped(&'static str),
}

fn outcomes(batch: &Batch) -> HashMap<Outcome, usize> {
    let mut m = HashMap::new();
    for d in &batch.datums {
        *m.entry(Outcome::Datum(canon(&d.to_json()))).or_default() += 1;
    }
    for r in &batch.removed {
        *m.entry(Outcome::Removed(r.as_str().to_owned())).or_default() += 1;
    }
    for (code, s) in &batch.skipped {
        *m.entry(Outcome::Skipped(code)).or_default() += s.count as usize;
    }
    m
}

/// The whole time line: nothing is outside the window, so nothing may be dropped for it
/// (what `tidegate map` does with a saved response).
fn dexcom_map(kind: &str, body: &Value) -> Batch {
    let mut batch = Batch::default();
    map_records(&user(), kind, body, DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC, &mut batch);
    batch
}

/// How many records a Dexcom envelope offers: the length of its `records` list (none when it is
/// not a list; the poll refuses such an envelope before mapping).
fn dexcom_offered(body: &Value) -> usize {
    body["records"].as_array().map_or(0, Vec::len)
}

struct DexcomSeed {
    body: Value,
    /// (kind, record JSON) → what the record maps to in the undamaged fixture.
    baseline: HashMap<(&'static str, String), Outcome>,
}

fn dexcom_seeds() -> &'static [DexcomSeed] {
    static SEEDS: OnceLock<Vec<DexcomSeed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let egvs = fixture("dexcom/v3_egvs_g7_ios_record.json");
        let events = fixture("dexcom/v2_events_docs_sample.json")["events"].clone();
        let device = fixture("dexcom/v3_device_record_tidepool_platform_fixture.json");
        let mut all: Vec<Value> = egvs["records"].as_array().unwrap().clone();
        all.extend(events.as_array().unwrap().iter().cloned());
        all.push(device.clone());
        let bodies = [egvs, json!({"records": events}), json!({"records": [device]}), json!({"records": all})];
        bodies
            .into_iter()
            .map(|body| {
                let mut baseline = HashMap::new();
                for kind in DEXCOM_KINDS {
                    for r in body["records"].as_array().unwrap() {
                        let batch = dexcom_map(kind, &json!({ "records": [r] }));
                        let one: Vec<Outcome> = outcomes(&batch).into_keys().collect();
                        assert_eq!(one.len(), 1, "{kind}: {r}");
                        for d in &batch.datums {
                            check_datum(d, Partner::Dexcom).unwrap();
                        }
                        baseline.insert((kind, canon(r)), one[0].clone());
                    }
                }
                DexcomSeed { body, baseline }
            })
            .collect()
    })
}

/// The Dexcom properties for one envelope mapped as `kind`.
fn check_dexcom(seed: Option<&DexcomSeed>, kind: &'static str, body: &Value) -> Result<(), TestCaseError> {
    let batch = dexcom_map(kind, body);
    let offered = dexcom_offered(body) as u64;
    let accounted = batch.datums.len() as u64 + batch.removed.len() as u64 + batch.skipped_total();
    prop_assert_eq!(accounted, offered, "mapped + removed + skipped vs records offered: {:?}", batch.skipped);
    for d in &batch.datums {
        check_datum(d, Partner::Dexcom)?;
    }
    for r in &batch.removed {
        prop_assert!(r.as_str().len() == 32, "removed id {}", r.as_str());
    }
    // Records are independent: each alone has exactly one outcome, and the batch is exactly the
    // sum of them.
    let mut alone: HashMap<Outcome, usize> = HashMap::new();
    for r in body["records"].as_array().into_iter().flatten() {
        let one = outcomes(&dexcom_map(kind, &json!({ "records": [r] })));
        prop_assert_eq!(one.values().sum::<usize>(), 1, "one record, one outcome: {}", r);
        for (o, n) in one {
            *alone.entry(o).or_default() += n;
        }
    }
    prop_assert_eq!(&outcomes(&batch), &alone);
    // Undamaged records: as in the fixture.
    if let Some(seed) = seed {
        let mut expected: HashMap<&Outcome, usize> = HashMap::new();
        for r in body["records"].as_array().into_iter().flatten() {
            if let Some(o) = seed.baseline.get(&(kind, canon(r))) {
                *expected.entry(o).or_default() += 1;
            }
        }
        let got = outcomes(&batch);
        for (o, n) in expected {
            prop_assert!(got.get(o).copied().unwrap_or(0) >= n, "undamaged record lost: {o:?}");
        }
    }
    Ok(())
}

fn check_dexcom_all_kinds(seed: Option<&DexcomSeed>, body: &Value) -> Result<(), TestCaseError> {
    for kind in DEXCOM_KINDS {
        check_dexcom(seed, kind, body)?;
    }
    Ok(())
}

/// The fixtures' text, as envelopes, in the order of the first three [`dexcom_seeds`].
fn dexcom_texts() -> &'static [String; 3] {
    static TEXTS: OnceLock<[String; 3]> = OnceLock::new();
    TEXTS.get_or_init(|| {
        [
            fixture_text("dexcom/v3_egvs_g7_ios_record.json"),
            fixture_text("dexcom/v2_events_docs_sample.json").replacen("\"events\"", "\"records\"", 1),
            format!("{{\"records\": [{}]}}", fixture_text("dexcom/v3_device_record_tidepool_platform_fixture.json")),
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// CareLink

/// Sensor states a reading may carry (map.rs `reading_ok`); any other means "no reading".
const READING_STATES: [&str; 4] = ["NO_ERROR_MESSAGE", "NORMAL", "SG_BELOW_40_MG_DL", "SG_ABOVE_400_MG_DL"];

/// A number as CareLink sends it: a JSON number or a numeric string, finite.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|x| x.is_finite())
}

/// How many records a CareLink payload offers: every element of `sgs`, `markers` and the two
/// notification lists (each counted only when its list is a list), less what the mapping's
/// contract (crates/partners/src/carelink/map.rs) says is not a record:
///
/// * an `sgs` slot without a reading: a `sensorState` other than the four reading states, or a
///   `sg` that is a number (or numeric string) ≤ 0 — CareLink's "no value" — beside a normal or
///   absent state (the two out-of-range states are readings whatever `sg` says);
/// * an `AUTO_MODE_STATUS` marker (no Tidepool type);
/// * a notification whose `type` is not `ALARM` (alerts, reminders and messages).
///
/// Computed from the input alone, whatever the time fields say; never from the mapper's output.
fn carelink_offered(data: &Value) -> u64 {
    let list = |v: &Value| v.as_array().map(Vec::as_slice).unwrap_or_default().to_vec();
    let empty_slot = |sg: &Value| match sg["sensorState"].as_str() {
        Some(s) if !READING_STATES.contains(&s) => true,
        Some("SG_BELOW_40_MG_DL" | "SG_ABOVE_400_MG_DL") => false,
        _ => number(&sg["sg"]).is_some_and(|x| x <= 0.0),
    };
    let sgs = list(&data["sgs"]).iter().filter(|s| !empty_slot(s)).count();
    let markers = list(&data["markers"]).iter().filter(|m| m["type"] != "AUTO_MODE_STATUS").count();
    let history = &data["notificationHistory"];
    let alarms = list(&history["clearedNotifications"])
        .iter()
        .chain(list(&history["activeNotifications"]).iter())
        .filter(|n| n["type"] == "ALARM")
        .count();
    (sgs + markers + alarms) as u64
}

const RECORD_KEYS: [&str; 3] = ["sgs", "markers", "notificationHistory"];

/// A payload without its records (`sgs` and `markers` empty, no notifications). What it maps to
/// is the envelope's own part of a batch: the `pumpStatus` datum, or its skip.
fn carelink_envelope(data: &Value) -> Value {
    let mut m: Map<String, Value> = data
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !RECORD_KEYS.contains(&k.as_str()) && k.as_str() != "patientData")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    m.insert("sgs".into(), json!([]));
    m.insert("markers".into(), json!([]));
    Value::Object(m)
}

/// The envelope with `record` as the only element of list `list` (an index into CARELINK_LISTS).
fn carelink_with_one(envelope: &Value, list: usize, record: &Value) -> Value {
    let mut doc = envelope.clone();
    let keys = CARELINK_LISTS[list];
    let (last, parents) = keys.split_last().unwrap();
    let mut at = &mut doc;
    for k in parents {
        at = at.as_object_mut().unwrap().entry(*k).or_insert_with(|| json!({}));
    }
    at[*last] = json!([record]);
    doc
}

/// What a record became: its datums (normalized) and skips.
#[derive(Debug, Default)]
struct Became {
    datums: Vec<String>,
    skipped: BTreeMap<&'static str, u64>,
}

struct CarelinkSeed {
    text: String,
    doc: Value,
    envelope: Value,
    /// (list, record JSON) → what the record maps to alone in the undamaged fixture's envelope.
    baseline: HashMap<(usize, String), Became>,
}

fn carelink_seeds() -> &'static [CarelinkSeed] {
    static SEEDS: OnceLock<Vec<CarelinkSeed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        [
            "carelink/CareLink_SampleUserV2Data.json",
            "carelink/CareLink_SampleUserData.json",
            "carelink/minimed-connect-to-nightscout__samples.withTrend.json",
        ]
        .into_iter()
        .map(|rel| {
            let text = fixture_text(rel);
            let doc: Value = serde_json::from_str(&text).unwrap();
            let envelope = carelink_envelope(&doc);
            let mut env_batch = Batch::default();
            map_payload(&user(), &envelope, &mut env_batch).unwrap();
            let mut baseline = HashMap::new();
            for (list, keys) in CARELINK_LISTS.iter().enumerate() {
                for r in node(&doc, &list_path(keys)).and_then(Value::as_array).into_iter().flatten() {
                    let mut batch = Batch::default();
                    map_payload(&user(), &carelink_with_one(&envelope, list, r), &mut batch).unwrap();
                    let mut became = Became::default();
                    for d in batch.datums.iter().filter(|d| d.base().kind != "pumpStatus") {
                        check_datum(d, Partner::Carelink).unwrap();
                        became.datums.push(normalized(d));
                    }
                    for (code, s) in &batch.skipped {
                        let n = s.count - env_batch.skipped.get(code).map_or(0, |e| e.count);
                        if n > 0 {
                            became.skipped.insert(code, n);
                        }
                    }
                    baseline.insert((list, canon(r)), became);
                }
            }
            // The whole fixture maps, and validates, as its golden test says.
            let mut batch = Batch::default();
            map_payload(&user(), &doc, &mut batch).unwrap();
            for d in &batch.datums {
                check_datum(d, Partner::Carelink).unwrap();
            }
            CarelinkSeed { text, doc, envelope, baseline }
        })
        .collect()
    })
}

/// The CareLink properties for one document (wrapped in `{metadata, patientData}` or not).
fn check_carelink(seed: Option<&CarelinkSeed>, doc: &Value) -> Result<(), TestCaseError> {
    let mut batch = Batch::default();
    let result = map_payload(&user(), doc, &mut batch);
    let data = patient_data(doc);
    let envelope = carelink_envelope(data);
    let intact = seed.is_some_and(|s| s.envelope == envelope);
    let has_lists = data["sgs"].is_array() || data["markers"].is_array();
    if let Err(e) = result {
        // Refused whole, before anything was written.
        prop_assert!(batch.datums.is_empty() && batch.removed.is_empty() && batch.skipped.is_empty(), "{e}");
        prop_assert!(!(intact && has_lists), "an intact envelope with records was refused: {e}");
        return Ok(());
    }
    let mut env = Batch::default();
    let env_result = map_payload(&user(), &envelope, &mut env);
    prop_assert!(env_result.is_ok(), "the payload mapped but its envelope alone did not: {env_result:?}");
    let status = |b: &Batch| b.datums.iter().filter(|d| d.base().kind == "pumpStatus").count();
    prop_assert_eq!(status(&batch), status(&env));
    prop_assert_eq!(status(&env), env.datums.len());

    // The envelope's own part (pumpStatus, or its skip) is what the envelope alone maps to; every
    // other datum or skip must answer for one record offered.
    let offered = carelink_offered(data) as i64;
    let accounted = (batch.datums.len() as i64 - env.datums.len() as i64)
        + (batch.skipped_total() as i64 - env.skipped_total() as i64);
    prop_assert_eq!(accounted, offered, "mapped + skipped vs records offered: {:?}", batch.skipped);
    for d in &batch.datums {
        check_datum(d, Partner::Carelink)?;
    }

    // Undamaged records map as in the fixture, when the envelope (offset, serial, device) is the
    // fixture's and no TIME_CHANGE marker moves earlier records to another offset.
    let Some(seed) = seed.filter(|_| intact) else { return Ok(()) };
    let time_change = data["markers"].as_array().into_iter().flatten().any(|m| m["type"] == "TIME_CHANGE");
    if time_change {
        return Ok(());
    }
    let mut want_datums: HashMap<&str, usize> = HashMap::new();
    let mut want_skipped: BTreeMap<&str, u64> = BTreeMap::new();
    for (list, keys) in CARELINK_LISTS.iter().enumerate() {
        for r in node(data, &list_path(keys)).and_then(Value::as_array).into_iter().flatten() {
            if let Some(b) = seed.baseline.get(&(list, canon(r))) {
                for d in &b.datums {
                    *want_datums.entry(d).or_default() += 1;
                }
                for (code, n) in &b.skipped {
                    *want_skipped.entry(code).or_default() += n;
                }
            }
        }
    }
    let got = multiset(batch.datums.iter().map(normalized));
    for (d, n) in want_datums {
        prop_assert!(got.get(d).copied().unwrap_or(0) >= n, "undamaged record lost or changed: {d}");
    }
    for (code, n) in want_skipped {
        prop_assert!(batch.skipped.get(code).map_or(0, |s| s.count) >= n, "skip {code} of an undamaged record");
    }
    Ok(())
}

fn wrap(doc: Value, wrapped: bool) -> Value {
    if wrapped { json!({"metadata": {"lastUpdated": 1}, "patientData": doc}) } else { doc }
}

// ---------------------------------------------------------------------------------------------
// The properties

proptest! {
    #![proptest_config(config(8192))]

    /// Dexcom envelopes with damaged records (or a damaged envelope), mapped as every kind.
    #[test]
    fn dexcom_damaged_records(
        seed in 0..4usize,
        anywhere in any::<bool>(),
        ops in prop::collection::vec(op(), 1..8),
    ) {
        let seed = &dexcom_seeds()[seed];
        let scope = if anywhere { Scope::Anywhere } else { Scope::Records(DEXCOM_LISTS) };
        check_dexcom_all_kinds(Some(seed), &damaged(seed.body.clone(), &ops, scope))?;
    }

    /// Dexcom responses as bytes: cut short, overwritten in places.
    #[test]
    fn dexcom_damaged_bytes(
        seed in 0..3usize,
        cut in any::<Index>(),
        edits in prop::collection::vec((any::<Index>(), any::<u8>()), 0..4),
    ) {
        let text = &dexcom_texts()[seed];
        let mut bytes = overwritten(text, &edits);
        if edits.is_empty() {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(body) = serde_json::from_slice::<Value>(&bytes) {
            let seed = &dexcom_seeds()[seed];
            check_dexcom_all_kinds(Some(seed), &body)?;
        }
    }
}

proptest! {
    #![proptest_config(config(768))]

    /// CareLink payloads with damaged records: the envelope (clocks, serial) intact.
    #[test]
    fn carelink_damaged_records(
        seed in 0..3usize,
        wrapped in any::<bool>(),
        ops in prop::collection::vec(op(), 1..10),
    ) {
        let seed = &carelink_seeds()[seed];
        let doc = damaged(seed.doc.clone(), &ops, Scope::Records(CARELINK_LISTS));
        check_carelink(Some(seed), &wrap(doc, wrapped))?;
    }

    /// CareLink payloads with a damaged envelope (clocks, serial, pump status), records intact.
    #[test]
    fn carelink_damaged_envelope(
        seed in 0..3usize,
        wrapped in any::<bool>(),
        ops in prop::collection::vec(op(), 1..6),
    ) {
        let seed = &carelink_seeds()[seed];
        let doc = damaged(seed.doc.clone(), &ops, Scope::Envelope(CARELINK_LISTS));
        check_carelink(Some(seed), &wrap(doc, wrapped))?;
    }

    /// CareLink payloads damaged anywhere, the envelope included.
    #[test]
    fn carelink_damaged_anywhere(
        seed in 0..3usize,
        wrapped in any::<bool>(),
        ops in prop::collection::vec(op(), 1..6),
    ) {
        let seed = &carelink_seeds()[seed];
        let doc = damaged(seed.doc.clone(), &ops, Scope::Anywhere);
        check_carelink(Some(seed), &wrap(doc, wrapped))?;
    }

    /// CareLink responses as bytes: cut short, overwritten in places.
    #[test]
    fn carelink_damaged_bytes(
        seed in 0..3usize,
        cut in any::<Index>(),
        edits in prop::collection::vec((any::<Index>(), any::<u8>()), 0..4),
    ) {
        let seed = &carelink_seeds()[seed];
        let mut bytes = overwritten(&seed.text, &edits);
        if edits.is_empty() {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(doc) = serde_json::from_slice::<Value>(&bytes) {
            check_carelink(Some(seed), &doc)?;
        }
    }
}

proptest! {
    #![proptest_config(config(2048))]

    /// Random bytes, and random JSON documents, for both partners.
    #[test]
    fn random_input(bytes in prop::collection::vec(any::<u8>(), 0..512), doc in json_value()) {
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            check_dexcom_all_kinds(None, &v)?;
            check_carelink(None, &v)?;
        }
        check_dexcom_all_kinds(None, &doc)?;
        check_dexcom_all_kinds(None, &json!({ "records": doc }))?;
        check_carelink(None, &doc)?;
        check_carelink(None, &json!({ "sgs": doc, "markers": doc, "currentServerTime": 1, "medicalDeviceTime": 1 }))?;
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions: what the fuzzing found, pinned.

fn carelink_mapped(doc: &Value) -> Batch {
    let mut batch = Batch::default();
    map_payload(&user(), doc, &mut batch).unwrap();
    batch
}

fn count(batch: &Batch, kind: &str) -> usize {
    batch.datums.iter().filter(|d| d.base().kind == kind).count()
}

/// A CareLink reading with no time field, or whose `sg` is missing or not a number, used to
/// vanish: neither mapped nor counted.
#[test]
fn carelink_readings_without_time_or_value_are_counted() {
    let mut doc = carelink_seeds()[0].doc.clone();
    doc["sgs"][0].as_object_mut().unwrap().remove("timestamp");
    doc["sgs"][1]["sg"] = json!("");
    doc["sgs"][2].as_object_mut().unwrap().remove("sg");
    doc["sgs"][3] = json!(null);
    let batch = carelink_mapped(&doc);
    assert_eq!(count(&batch, "cbg"), 284);
    assert_eq!(batch.skipped["bad_time"].count, 2, "{:?}", batch.skipped);
    assert_eq!(batch.skipped["bad_value"].count, 1);
    assert_eq!(batch.skipped["no_value"].count, 1);
    assert_eq!(batch.skipped_total(), 4);
}

/// Slots without a reading and auto-mode markers are not records: not counted, whatever their
/// time says (so what a payload offers can be told from the payload alone).
#[test]
fn carelink_non_records_are_not_counted_even_with_a_bad_time() {
    let seed = &carelink_seeds()[1];
    let mut doc = seed.doc.clone();
    let first = |list: &str, field: &str, value: &str| {
        doc[list].as_array().unwrap().iter().position(|r| r[field] == value).unwrap()
    };
    let (slot, auto) = (first("sgs", "sensorState", "WARM_UP"), first("markers", "type", "AUTO_MODE_STATUS"));
    doc["sgs"][slot]["datetime"] = json!("not a time");
    doc["markers"][auto].as_object_mut().unwrap().remove("dateTime");
    let batch = carelink_mapped(&doc);
    assert!(batch.skipped.is_empty(), "{:?}", batch.skipped);
    assert_eq!(batch.datums, carelink_mapped(&seed.doc).datums);
}

/// A wall clock at the end of year 9999 west of UTC is a time in year 10000, which Tidepool's
/// RFC 3339 `time` cannot say: skipped as invalid, never written (our rules used to pass it).
#[test]
fn times_past_year_9999_are_skipped_as_invalid() {
    let mut doc = carelink_seeds()[2].doc.clone();
    doc["sgs"][0]["datetime"] = json!("9999-12-31T23:59:59");
    doc["sgs"][1]["datetime"] = json!("Dec 31, 9999 23:30:00");
    let batch = carelink_mapped(&doc);
    assert_eq!(count(&batch, "cbg"), 4);
    assert_eq!(batch.skipped["invalid"].count, 2, "{:?}", batch.skipped);

    let mut egv = fixture("dexcom/v3_egvs_g7_ios_record.json")["records"][0].clone();
    egv["systemTime"] = json!("9999-12-31T23:30:00-01:00");
    egv["displayTime"] = json!("9999-12-31T23:30:00-01:00");
    let skip = tidegate_partners::dexcom::map::egv(&user(), &egv).unwrap_err();
    assert!(matches!(&skip, tidegate_partners::dexcom::map::Skip::Invalid(m) if m.contains("four digits")), "{skip}");
    let batch = dexcom_map("calibrations", &json!({ "records": [egv] }));
    assert_eq!(batch.skipped["invalid"].count, 1);
}

/// Legacy CareLink times with years chrono can barely hold: skipped, no arithmetic overflow.
#[test]
fn carelink_extreme_legacy_years_do_not_panic() {
    for t in ["Dec 31, +262143 23:59:59", "Jan 01, -262144 00:00:00"] {
        let mut doc = carelink_seeds()[2].doc.clone();
        doc["sgs"][0]["datetime"] = json!(t);
        let batch = carelink_mapped(&doc);
        assert_eq!(count(&batch, "cbg"), 5, "{t}");
        assert_eq!(batch.skipped_total(), 1, "{t}: {:?}", batch.skipped);
    }
    // Year 0 east of it is still a four-digit year: implausible, but writable and valid.
    let mut doc = carelink_seeds()[2].doc.clone();
    doc["sgs"][0]["datetime"] = json!("Jan 01, 0000 00:00:00");
    let batch = carelink_mapped(&doc);
    assert_eq!(count(&batch, "cbg"), 6);
    for d in &batch.datums {
        check_datum(d, Partner::Carelink).unwrap();
    }
}

/// CareLink clocks at the end of chrono's range used to panic (`NaiveDateTime - TimeDelta`
/// overflowed) when a record or the pump status was placed with them. Readings outside years
/// 0–9999 are unreadable now, so placing never leaves chrono's range.
#[test]
fn carelink_clocks_at_the_end_of_time_do_not_panic() {
    use tidegate_partners::carelink::map::payload_offset;
    let max_ms = DateTime::<Utc>::MAX_UTC.timestamp_millis();
    // The server's receipt at chrono's last millisecond: unreadable, so the pump/server pair
    // places the payload instead, as it would have without the field.
    let mut doc = carelink_seeds()[0].doc.clone();
    doc["lastConduitUpdateServerDateTime"] = json!(max_ms);
    assert_eq!(payload_offset(&doc).unwrap(), -5 * 3600);
    assert_eq!(count(&carelink_mapped(&doc), "cbg"), 288);
    // A phone clock 55 years ahead of the server and a status dated 9999-12-31: every record and
    // the status are invalid (no time zone is 55 years wide), and counted.
    let mut doc = carelink_seeds()[0].doc.clone();
    doc["lastConduitUpdateServerDateTime"] = json!(1);
    doc["lastMedicalDeviceDataUpdateServerTime"] = json!(253_402_300_799_999_i64);
    let batch = carelink_mapped(&doc);
    assert!(batch.datums.is_empty());
    assert_eq!(batch.skipped_total(), carelink_offered(&doc) + 1, "{:?}", batch.skipped);
    // A phone clock in year 262143 (which the lenient ISO reader accepts): unreadable.
    let mut doc = carelink_seeds()[0].doc.clone();
    doc["lastConduitDateTime"] = json!("+262143-9-30T23:59:59");
    doc["lastConduitUpdateServerDateTime"] = json!(1);
    doc["lastMedicalDeviceDataUpdateServerTime"] = json!(253_402_300_799_999_i64);
    assert_eq!(payload_offset(&doc).unwrap(), -5 * 3600);
    let mut batch = Batch::default();
    map_payload(&user(), &doc, &mut batch).unwrap();
}

/// Dexcom times at chrono's edge (a signed six-digit year, which the lenient reader takes) used to
/// panic in `PartnerTime::instant` (`NaiveDateTime - TimeDelta` overflowed). Unreadable now: the
/// record is skipped and counted.
#[test]
fn dexcom_times_at_the_edge_of_chrono_do_not_panic() {
    use tidegate_partners::dexcom::map::{Skip, device, egv};
    let edge = json!("-262143-1-1T00:00:00+18:00");
    let record = fixture("dexcom/v3_egvs_g7_ios_record.json")["records"][0].clone();
    let mut r = record.clone();
    r["systemTime"] = edge.clone();
    assert_eq!(egv(&user(), &r).unwrap_err(), Skip::BadTime("systemTime"));
    let mut r = record.clone();
    r["displayTime"] = edge.clone();
    assert_eq!(egv(&user(), &r).unwrap_err(), Skip::BadTime("displayTime"));
    let mut d = fixture("dexcom/v3_device_record_tidepool_platform_fixture.json");
    d["lastUploadDate"] = edge.clone();
    for s in d["alertSchedules"][0]["alertSettings"].as_array_mut().unwrap() {
        s["systemTime"] = edge.clone();
    }
    assert_eq!(device(&user(), &d).unwrap_err(), Skip::BadTime("lastUploadDate"));
    let batch = dexcom_map(
        "events",
        &json!({ "records": [{"recordId": "x", "eventType": "carbs", "value": "1", "systemTime": edge}] }),
    );
    assert_eq!(batch.skipped["bad_time"].count, 1);
}
