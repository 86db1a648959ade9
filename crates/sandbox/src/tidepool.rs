//! Validate datums against Tidepool's published OpenAPI data models in
//! `testdata/reference/tidepool/` — each datum against its own type's schema — applying only
//! the patches listed in that folder's `ERRATA.md`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use jsonschema::{Retrieve, Uri, Validator};
use serde_json::Value;

/// The repository's `testdata/`: real partner payloads (`fixtures/`) and the published contracts
/// we validate against (`reference/`), each folder with its provenance file.
pub fn testdata_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// The `TidepoolApi/reference` folder.
pub fn reference_dir() -> PathBuf {
    testdata_dir().join("reference/tidepool/TidepoolApi/reference")
}

/// The ERRATA.md patches, applied to a schema document by its path below `reference/`.
fn patch(rel: &str, mut doc: Value) -> Value {
    fn only_type_required(v: &mut Value) {
        match v {
            Value::Object(o) => {
                if let Some(Value::Array(req)) = o.get_mut("required") {
                    req.retain(|r| r == "type");
                }
                o.values_mut().for_each(only_type_required);
            }
            Value::Array(a) => a.iter_mut().for_each(only_type_required),
            _ => {}
        }
    }
    match rel {
        // food: brand, code, meal, name are optional in the platform.
        "data/models/food/food.v1.yaml" | "data/models/activity/physical/physical.v1.yaml" => {
            only_type_required(&mut doc)
        }
        // A bg out-of-range annotation matches both branches of the (nested) oneOf.
        "common/models/annotation.v1.yaml" => one_of_as_any_of(&mut doc),
        // What the platform's partner runners send (`deviceTgs` is a typo in the list).
        "data/models/newdataset.v1.yaml" => {
            doc["required"] = serde_json::json!([
                "dataSetType",
                "client",
                "deduplicator",
                "deviceManufacturers",
                "deviceTags",
                "time",
                "timeProcessing"
            ])
        }
        // A partial update: every field optional.
        "data/models/updatedataset.v1.yaml" => {
            if let Some(o) = doc.as_object_mut() {
                o.remove("required");
            }
        }
        _ => {}
    }
    doc
}

fn one_of_as_any_of(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(one_of) = o.remove("oneOf") {
                o.insert("anyOf".into(), one_of);
            }
            o.values_mut().for_each(one_of_as_any_of);
        }
        Value::Array(a) => a.iter_mut().for_each(one_of_as_any_of),
        _ => {}
    }
}

/// Which file actually describes a path (ERRATA: `deviceEvent/status` → `deliverystatus`).
fn substitute(rel: &str) -> &str {
    match rel {
        "data/models/deviceevent/status.v1.yaml" => "data/models/deviceevent/deliverystatus.v1.yaml",
        other => other,
    }
}

struct YamlFiles {
    root: PathBuf,
}

impl YamlFiles {
    fn load(&self, path: &Path) -> Result<Value, String> {
        let rel =
            path.strip_prefix(&self.root).map_err(|_| format!("{} is outside the reference folder", path.display()))?;
        let rel = rel.to_string_lossy().replace('\\', "/");
        let real = self.root.join(substitute(&rel));
        let text = std::fs::read_to_string(&real).map_err(|e| format!("{}: {e}", real.display()))?;
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", real.display()))?;
        let json = serde_json::to_value(yaml).map_err(|e| format!("{}: {e}", real.display()))?;
        Ok(patch(&rel, json))
    }
}

impl Retrieve for YamlFiles {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        if uri.scheme().as_str() != "file" {
            return Err(format!("only file references are resolved: {uri}").into());
        }
        let path = PathBuf::from(uri.path().as_str());
        Ok(self.load(&path)?)
    }
}

/// A validator for one schema file (path below `reference/`, e.g.
/// `data/models/blood/continuousglucose.v1.yaml`).
pub fn validator(rel: &str) -> Result<Validator, String> {
    let root = reference_dir()
        .canonicalize()
        .map_err(|e| format!("{}: {e} (testdata/ is part of the repository)", reference_dir().display()))?;
    let target = root.join(rel);
    let schema = serde_json::json!({ "$ref": format!("file://{}", target.display()) });
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .should_ignore_unknown_formats(true)
        .with_retriever(YamlFiles { root })
        .build(&schema)
        .map_err(|e| format!("{rel}: {e}"))
}

/// The problems of a body against a schema: (JSON pointer below the body, message).
pub fn problems(rel: &str, body: &Value) -> Vec<(String, String)> {
    match cached(rel) {
        Ok(v) => v.iter_errors(body).map(|e| (e.instance_path().to_string(), e.to_string())).collect(),
        Err(e) => vec![(String::new(), e)],
    }
}

/// The fields a model file defines at its top level (`properties`).
pub fn properties(rel: &str) -> Result<std::collections::BTreeSet<String>, String> {
    let root = reference_dir().canonicalize().map_err(|e| format!("{}: {e}", reference_dir().display()))?;
    let doc = YamlFiles { root: root.clone() }.load(&root.join(rel))?;
    Ok(doc["properties"].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default())
}

/// Validate a datum as a mapper made it: `origin.time` (which the schema requires) is set by the
/// store when it first stores a version, so a mapped datum without one is checked with its
/// `time` there.
pub fn validate_mapped(rel: &str, datum: &Value) -> Result<(), Vec<String>> {
    if datum["origin"].is_object() && datum["origin"].get("time").is_none() {
        let mut v = datum.clone();
        v["origin"]["time"] = datum["time"].clone();
        return validate(rel, &v);
    }
    validate(rel, datum)
}

/// Validate a datum; the errors name the JSON pointer of each problem. Validators are built
/// once per schema file and process.
pub fn validate(rel: &str, datum: &Value) -> Result<(), Vec<String>> {
    let v = cached(rel).map_err(|e| vec![e])?;
    let errors: Vec<String> = v.iter_errors(datum).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// The validator for a schema file, built once per process.
fn cached(rel: &str) -> Result<Arc<Validator>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Validator>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(rel).cloned() {
        return Ok(v);
    }
    let v = Arc::new(validator(rel)?);
    cache.lock().unwrap_or_else(|p| p.into_inner()).insert(rel.to_owned(), v.clone());
    Ok(v)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::validate;

    const CBG: &str = "data/models/blood/continuousglucose.v1.yaml";

    fn cbg() -> serde_json::Value {
        json!({
            "type": "cbg",
            "units": "mg/dL",
            "value": 120,
            "trend": "constant",
            "trendRate": 0.4,
            "trendRateUnits": "mg/dL/minute",
            "time": "2026-03-08T09:00:00.000Z",
            "deviceTime": "2026-03-08T04:00:00",
            "timezoneOffset": -300,
            "deviceId": "DexcomG7_0123456789abcdef",
            "id": "0123456789abcdef0123456789abcdef",
            "origin": {"id": "2e5a1d3c-0d2f-4a55-9e58-6a0e5e2b1c77", "name": "com.dexcom.api", "type": "service", "version": "3.0", "time": "2026-03-08T09:05:00.000Z"},
        })
    }

    #[test]
    fn a_valid_cbg_passes_and_broken_ones_fail() {
        validate(CBG, &cbg()).unwrap_or_else(|e| panic!("{e:#?}"));
        for (field, bad) in
            [("units", json!("mg/DL")), ("value", json!(1200)), ("trend", json!("flat")), ("type", json!("smbg"))]
        {
            let mut d = cbg();
            d[field] = bad;
            assert!(validate(CBG, &d).is_err(), "{field} should be refused");
        }
    }

    #[test]
    fn the_errata_patches_apply() {
        // A carbs-only food (Dexcom events): valid only with the food patch.
        let food = json!({
            "type": "food",
            "nutrition": {"carbohydrate": {"net": 45, "units": "grams"}},
            "time": "2026-03-08T12:00:00.000Z",
            "deviceId": "Dexcom_abc",
            "id": "abcdef0123456789abcdef0123456789",
        });
        validate("data/models/food/food.v1.yaml", &food).unwrap_or_else(|e| panic!("{e:#?}"));
    }
}
