//! Reading partner JSON into typed records, leniently.
//!
//! Partner payloads are hostile in the small (a number inside a string, a list where a record
//! should be, a field of the wrong type) and every record must be mapped or skipped and counted,
//! never refused wholesale. So the record types in `dexcom/wire.rs` and `carelink/wire.rs` are
//! serde structs whose fields are read with the functions here: a field of the wrong type reads as
//! absent, and the mapper then decides (skip code, default) exactly as for a missing field. A value
//! that is not an object reads as the record's default (every field absent).
//!
//! [`Raw`] keeps a record verbatim beside its typed reading: the datum's `payload` copies named
//! fields from it as the partner sent them (provenance), and nothing is decided from it.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer};
use serde_json::{Map, Value};

/// `T` read from a JSON value; anything but an object reads as `T::default()`.
pub(crate) fn read<T: DeserializeOwned + Default>(v: &Value) -> T {
    if v.is_object() { T::deserialize(v).unwrap_or_default() } else { T::default() }
}

/// A string field (anything else reads as absent).
pub(crate) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

/// A number that may arrive as a JSON number or inside a string; never NaN or infinite.
pub(crate) fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(crate::fetch::json_number(&Value::deserialize(d)?))
}

/// A JSON number only (a number inside a string reads as absent).
pub(crate) fn json_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_f64().filter(|x| x.is_finite()),
        _ => None,
    })
}

/// A JSON boolean only.
pub(crate) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Value::deserialize(d)?.as_bool())
}

/// An identifier sent as a string or as a whole number (`i64`), as text.
pub(crate) fn id_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        v => v.as_i64().map(|n| n.to_string()),
    })
}

/// A nested record: present only when the field is an object.
pub(crate) fn object<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(d: D) -> Result<Option<T>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(v.is_object().then(|| read(&v)))
}

/// A record present unless missing or `null` (anything but an object reads as its default).
pub(crate) fn unless_null<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<Option<T>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok((!v.is_null()).then(|| read(&v)))
}

/// A list of records: present only when the field is an array; each element read with [`read`].
pub(crate) fn list<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(d: D) -> Result<Option<Vec<T>>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => Some(items.iter().map(read).collect()),
        _ => None,
    })
}

/// The list `parent.key`, each record kept as sent beside its typed reading: present only when
/// an array.
pub(crate) fn raw_list<'a, T: DeserializeOwned + Default>(parent: &'a Value, key: &str) -> Option<Vec<Raw<'a, T>>> {
    parent.get(key).and_then(Value::as_array).map(|items| items.iter().map(Raw::new).collect())
}

/// A value that may be a number, a text, or something else (Dexcom's event `value`: grams,
/// units, minutes or a note).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum Scalar {
    /// Missing or `null`.
    #[default]
    Absent,
    Number(f64),
    Text(String),
    /// Anything else, as its JSON text.
    Other(String),
}

impl Scalar {
    pub(crate) fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Null => Self::Absent,
            Value::Number(n) => n.as_f64().map_or_else(|| Self::Other(n.to_string()), Self::Number),
            Value::String(s) => Self::Text(s),
            other => Self::Other(other.to_string()),
        })
    }

    /// The number it says (a number, or a number inside a text); never NaN or infinite.
    pub(crate) fn number(&self) -> Option<f64> {
        match self {
            Self::Number(x) => Some(*x),
            Self::Text(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
        .filter(|x| x.is_finite())
    }

    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            Self::Text(s) => Some(s),
            _ => None,
        }
    }

    /// A short description for a skip (at most 40 characters).
    pub(crate) fn describe(&self) -> String {
        let s = match self {
            Self::Absent => "null".to_owned(),
            Self::Number(x) => x.to_string(),
            Self::Text(s) | Self::Other(s) => s.clone(),
        };
        s.chars().take(40).collect()
    }
}

/// A record as sent (borrowed from the document), and its typed reading.
#[derive(Debug, Clone)]
pub(crate) struct Raw<'a, T> {
    pub raw: &'a Value,
    pub rec: T,
}

impl<'a, T: DeserializeOwned + Default> Raw<'a, T> {
    pub(crate) fn new(raw: &'a Value) -> Self {
        Self { raw, rec: read(raw) }
    }
}

/// The named fields of a raw record, verbatim (absent and `null` ones left out): a datum's
/// `payload`.
pub(crate) fn pick(raw: &Value, keys: &[&str]) -> Map<String, Value> {
    keys.iter().filter_map(|k| raw.get(*k).filter(|v| !v.is_null()).map(|v| ((*k).to_owned(), v.clone()))).collect()
}

/// `pick` as a JSON object.
pub(crate) fn pick_value(raw: &Value, keys: &[&str]) -> Value {
    Value::Object(pick(raw, keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct Probe {
        #[serde(deserialize_with = "text")]
        name: Option<String>,
        #[serde(deserialize_with = "number")]
        amount: Option<f64>,
        #[serde(deserialize_with = "json_f64")]
        strict: Option<f64>,
        #[serde(deserialize_with = "flag")]
        on: Option<bool>,
        #[serde(deserialize_with = "id_text")]
        fault_id: Option<String>,
        #[serde(deserialize_with = "list")]
        items: Option<Vec<Probe>>,
        #[serde(deserialize_with = "Scalar::read")]
        value: Scalar,
    }

    #[test]
    fn a_field_of_the_wrong_type_reads_as_absent_and_never_refuses_the_record() {
        let p: Probe = read(&json!({
            "name": 7, "amount": "2.5", "strict": "2.5", "on": "true", "faultId": 812,
            "items": [{"name": "a"}, "not a record", [1, 2]], "value": {"x": 1}, "other": null
        }));
        assert_eq!(p.name, None);
        assert_eq!(p.amount, Some(2.5), "a number inside a string is a number");
        assert_eq!(p.strict, None, "json_f64 takes JSON numbers only");
        assert_eq!(p.on, None);
        assert_eq!(p.fault_id.as_deref(), Some("812"));
        let items = p.items.expect("a list");
        assert_eq!(items.len(), 3, "every element is kept: it is mapped or skipped, never dropped");
        assert_eq!(items[0].name.as_deref(), Some("a"));
        assert!(items[1].name.is_none() && items[2].name.is_none(), "a non-object element reads as the default");
        assert_eq!(p.value, Scalar::Other("{\"x\":1}".into()));
    }

    #[test]
    fn numbers_are_finite_and_scalars_describe_themselves_briefly() {
        let p: Probe = read(&json!({"amount": "NaN", "value": " 12 "}));
        assert_eq!(p.amount, None);
        assert_eq!(p.value.number(), Some(12.0));
        assert_eq!(p.value.text(), Some(" 12 "));
        assert_eq!(Scalar::Absent.describe(), "null");
        assert_eq!(Scalar::Text("x".repeat(60)).describe().len(), 40);
        let p: Probe = read(&json!(["positional", 1]));
        assert!(p.name.is_none() && p.amount.is_none(), "an array is not read positionally");
    }

    #[test]
    fn raw_records_keep_what_was_sent() {
        let doc = json!({"items": [{"name": "a", "extra": [1]}], "no": 3});
        let items: Vec<Raw<Probe>> = raw_list(&doc, "items").expect("a list");
        assert_eq!(items[0].rec.name.as_deref(), Some("a"));
        assert_eq!(pick_value(items[0].raw, &["extra", "missing"]), json!({"extra": [1]}));
        assert!(raw_list::<Probe>(&doc, "no").is_none());
    }
}
