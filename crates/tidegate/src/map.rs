//! `tidegate map`: a saved partner response → Tidepool datums, for support cases and for checking
//! a payload by hand. Pure: no configuration, no database, no network.

use std::process::ExitCode;

use model::UserId;
use partners::Saved;
use partners::fetch::Batch;
use serde_json::Value;

/// A partner `tidegate map` can read (one with a data driver): for `--partner`.
pub fn partner_name(s: &str) -> Result<String, String> {
    match partners::registry::data_driver(s) {
        Some(_) => Ok(s.to_owned()),
        None => {
            let known: Vec<&str> = partners::registry::data_drivers().collect();
            Err(format!("no data driver for {s:?} (known: {})", known.join(", ")))
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    #[error("the input is not JSON: {0}")]
    NotJson(String),
    #[error("no data driver for {0:?}")]
    UnknownPartner(String),
    /// The partner's driver cannot read it (what, in its words).
    #[error("{0}")]
    Unreadable(String),
}

/// What mapping produced: datums as Tidepool JSON, the ids of datums a deletion removes, and
/// the skipped records.
#[derive(Debug)]
pub struct Mapped {
    pub datums: Vec<Value>,
    pub removed: Vec<String>,
    pub batch: Batch,
    /// What the input was understood as (e.g. `dexcom egvs`, `carelink generation C`).
    pub understood_as: String,
}

/// Map one saved response of `partner` (from `endpoint`, when the document does not say).
/// `user` only seeds the datum ids.
pub fn map(partner: &str, endpoint: Option<&str>, input: &str, user: &UserId) -> Result<Mapped, MapError> {
    let driver = partners::registry::data_driver(partner).ok_or_else(|| MapError::UnknownPartner(partner.into()))?;
    let doc: Value = serde_json::from_str(input).map_err(|e| MapError::NotJson(e.to_string()))?;
    let mut batch = Batch::default();
    let saved = Saved { document: &doc, endpoint, window: None };
    let understood_as = driver.map_saved(user, saved, &mut batch).map_err(|e| MapError::Unreadable(e.to_string()))?;
    Ok(Mapped {
        datums: batch.datums.iter().map(|d| d.to_json()).collect(),
        removed: batch.removed.iter().map(|r| r.as_str().to_owned()).collect(),
        understood_as,
        batch,
    })
}

/// The stderr summary: what was read, produced, removed and skipped (with why).
pub fn summary(m: &Mapped) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for d in &m.datums {
        let t = d["type"].as_str().unwrap_or("?");
        let key = match d["subType"].as_str() {
            Some(s) => format!("{t}/{s}"),
            None => t.to_owned(),
        };
        *counts.entry(key).or_default() += 1;
    }
    let mut out = format!("read as {}: {} datums", m.understood_as, m.datums.len());
    if !counts.is_empty() {
        let by: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
        out.push_str(&format!(" ({})", by.join(", ")));
    }
    out.push('\n');
    if !m.removed.is_empty() {
        out.push_str(&format!("{} deleted at the partner (datum ids {})\n", m.removed.len(), m.removed.join(", ")));
    }
    if m.batch.skipped.is_empty() {
        out.push_str("skipped: none\n");
    } else {
        out.push_str(&format!("skipped: {}\n", m.batch.skipped_total()));
        for (code, s) in &m.batch.skipped {
            out.push_str(&format!("  {code}: {} (last: {})\n", s.count, s.example));
        }
    }
    out
}

/// `tidegate map`: exit 0 when the input was read (skipped records included), 2 when it could
/// not be read at all.
pub fn command(partner: &str, endpoint: Option<&str>, user: &str, file: &std::path::Path) -> ExitCode {
    use std::io::{Read, Write};
    let user = match model::UserId::parse(user) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("tidegate map: --user: {e}");
            return ExitCode::from(2);
        }
    };
    let mut input = String::new();
    let read = if file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut input).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|s| input = s)
    };
    if let Err(e) = read {
        eprintln!("tidegate map: {}: {e}", file.display());
        return ExitCode::from(2);
    }
    match map(partner, endpoint, &input, &user) {
        Ok(m) => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for d in &m.datums {
                if writeln!(out, "{d}").is_err() {
                    return ExitCode::FAILURE;
                }
            }
            if out.flush().is_err() {
                return ExitCode::FAILURE;
            }
            eprint!("{}", summary(&m));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tidegate map: {}: {e}", file.display());
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        UserId::parse("0123456789").unwrap()
    }

    #[test]
    fn a_dexcom_envelope_is_recognised_by_its_record_type() {
        let body = r#"{"recordType":"egv","recordVersion":"3.0","userId":"x","records":[
            {"recordId":"a1","systemTime":"2026-03-07T12:00:00","displayTime":"2026-03-07T07:00:00","value":120,"unit":"mg/dL","trend":"flat","status":null},
            {"recordId":"a2","systemTime":"2026-02-30T12:05:00","displayTime":"2026-03-07T07:05:00","value":121,"unit":"mg/dL"}]}"#;
        let m = map("dexcom", None, body, &user()).unwrap();
        assert_eq!(m.datums.len(), 1);
        assert_eq!(m.datums[0]["type"], "cbg");
        assert_eq!(m.datums[0]["trend"], "constant");
        let s = summary(&m);
        assert!(s.contains("read as dexcom egvs: 1 datums (cbg 1)"), "{s}");
        assert!(s.contains("bad_time: 1"), "{s}");
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert!(matches!(map("dexcom", None, "not json", &user()), Err(MapError::NotJson(_))));
        let e = map("dexcom", None, r#"{"records":[]}"#, &user()).unwrap_err();
        assert!(matches!(&e, MapError::Unreadable(m) if m.contains("say which Dexcom endpoint")), "{e}");
        let e = map("dexcom", Some("egvz"), r#"{"records":[]}"#, &user()).unwrap_err();
        assert!(matches!(&e, MapError::Unreadable(m) if m.contains("not a Dexcom v3 data endpoint")), "{e}");
        assert!(matches!(map("carelink", None, r#"{"hello":1}"#, &user()), Err(MapError::Unreadable(_))));
        let e = map("carelink", Some("egvs"), "{}", &user()).unwrap_err();
        assert!(matches!(&e, MapError::Unreadable(m) if m.contains("one data endpoint")), "{e}");
        assert_eq!(map("nightscout", None, "{}", &user()).unwrap_err(), MapError::UnknownPartner("nightscout".into()));
        assert!(partner_name("dexcom").is_ok() && partner_name("nightscout").is_err());
    }
}
