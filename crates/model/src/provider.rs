//! Partner (provider) names: one name per partner, used as the path segment, the reported
//! `providerName` and the configuration key.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::InvalidId;

/// A partner's name: 1–32 characters of `[a-z0-9-]`, starting with a letter (e.g. `dexcom`).
///
/// Whether a name refers to a *configured* partner is the partner registry's question; this type
/// only guarantees the name is well formed (and therefore safe in paths, logs and SQL).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderName(String);

impl ProviderName {
    pub const FIELD: &'static str = "provider";
    pub const PATTERN: &'static str = "^[a-z][a-z0-9-]{0,31}$";

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.as_bytes()[0].is_ascii_lowercase()
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok { Ok(Self(s.to_owned())) } else { Err(InvalidId { field: Self::FIELD, pattern: Self::PATTERN }) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProviderName({})", self.0)
    }
}

impl Serialize for ProviderName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ProviderName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_slugs() {
        assert!(ProviderName::parse("dexcom").is_ok());
        assert!(ProviderName::parse("carelink").is_ok());
        assert!(ProviderName::parse("abbott-libre2").is_ok());
        for bad in ["", "Dexcom", "1dexcom", "dex com", "dexcom/../x", &"a".repeat(33)] {
            assert!(ProviderName::parse(bad).is_err(), "{bad}");
        }
    }
}

/// One partner account a person may choose after signing in (a care partner who follows several
/// patients): what to show them, and the partner account id the data source then follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountChoice {
    pub label: String,
    pub account_id: String,
}
