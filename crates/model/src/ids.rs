//! Identifiers with the patterns of Tidepool's contracts (DESIGN §4 "Identifiers").
//!
//! Each type can only be built through `parse` (input from the edge) or a generator, so a value
//! in hand is always valid. Errors name the field, so the API can answer a 400 that says which.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// An identifier that did not match its pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must match {pattern}")]
pub struct InvalidId {
    /// The field's name as the API spells it (`userId`, `clinicId`, …).
    pub field: &'static str,
    /// The pattern it must match, for the error message.
    pub pattern: &'static str,
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_lower_alnum(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

fn is_uuid_shape(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5 && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, len)| p.len() == len && is_lower_hex(p))
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, field = $field:literal, pattern = $pattern:literal, valid = $valid:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const FIELD: &'static str = $field;
            pub const PATTERN: &'static str = $pattern;

            /// Parse untrusted input.
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                let valid: fn(&str) -> bool = $valid;
                if valid(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(InvalidId { field: $field, pattern: $pattern })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A platform user id: 10 lowercase hex digits (legacy) or a lowercase UUID.
    UserId,
    field = "userId",
    pattern = "^([0-9a-f]{10}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$",
    valid = |s| (s.len() == 10 && is_lower_hex(s)) || is_uuid_shape(s)
);

string_id!(
    /// A clinic id: a 24-hex-digit object id.
    ClinicId,
    field = "clinicId",
    pattern = "^[a-f0-9]{24}$",
    valid = |s| s.len() == 24 && is_lower_hex(s)
);

string_id!(
    /// A data-source id: 24 lowercase hex digits, the same id everywhere (also the clinic
    /// report's `dataSourceId`).
    DataSourceId,
    field = "dataSourceId",
    pattern = "^[a-f0-9]{24}$",
    valid = |s| s.len() == 24 && is_lower_hex(s)
);

string_id!(
    /// A datum id: 32 characters `[0-9a-z]`, derived deterministically from what the datum is.
    DatumId,
    field = "id",
    pattern = "^[0-9a-z]{32}$",
    valid = |s| s.len() == 32 && is_lower_alnum(s)
);

string_id!(
    /// A restricted (link) token id: 32 random characters `[0-9a-z]`.
    LinkTokenId,
    field = "restricted_token",
    pattern = "^[0-9a-z]{32}$",
    valid = |s| s.len() == 32 && is_lower_alnum(s)
);

impl DataSourceId {
    /// A new random id (96 bits from the OS CSPRNG).
    pub fn generate() -> Self {
        let bytes: [u8; 12] = rand::rng().random();
        Self(hex::encode(bytes))
    }
}

impl LinkTokenId {
    /// A new random link token id: 32 characters of `[0-9a-z]` (≈165 bits).
    pub fn generate() -> Self {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut rng = rand::rng();
        let s = (0..32).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
        Self(s)
    }
}

impl DatumId {
    /// The deterministic id of a datum: the same inputs always give the same id, so re-importing
    /// a record writes nothing new. `parts` identify the record within (user, provider, type):
    /// the partner's record id, or device and time when the partner has none.
    pub fn derive(user: &UserId, provider: &str, datum_type: &str, parts: &[&str]) -> Self {
        let mut h = Sha256::new();
        // Length-prefix every part so ("ab","c") and ("a","bc") differ.
        for part in [user.as_str(), provider, datum_type].into_iter().chain(parts.iter().copied()) {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let digest = h.finalize();
        Self(hex::encode(&digest[..16]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_follow_the_contract() {
        assert!(UserId::parse("0123456789").is_ok());
        assert!(UserId::parse("abcdef0123").is_ok());
        assert!(UserId::parse("1f0b6c2e-6c2a-4a57-9d2b-3f4e5a6b7c8d").is_ok());
        for bad in ["", "012345678", "ABCDEF0123", "0123456789a", "1f0b6c2e6c2a4a579d2b3f4e5a6b7c8d", "../../etc"] {
            let err = UserId::parse(bad).unwrap_err();
            assert_eq!(err.field, "userId", "{bad}");
        }
    }

    #[test]
    fn object_ids_are_24_lowercase_hex() {
        assert!(ClinicId::parse("5f1e8a0b9c7d6e5f4a3b2c1d").is_ok());
        assert!(ClinicId::parse("5F1E8A0B9C7D6E5F4A3B2C1D").is_err());
        assert!(DataSourceId::parse("5f1e8a0b9c7d6e5f4a3b2c1").is_err());
        for _ in 0..100 {
            let id = DataSourceId::generate();
            assert_eq!(DataSourceId::parse(id.as_str()), Ok(id));
        }
    }

    #[test]
    fn link_token_ids_are_random_and_valid() {
        let a = LinkTokenId::generate();
        let b = LinkTokenId::generate();
        assert_ne!(a, b);
        assert_eq!(LinkTokenId::parse(a.as_str()), Ok(a));
    }

    #[test]
    fn datum_ids_are_deterministic_and_distinct() {
        let user = UserId::parse("0123456789").unwrap();
        let a = DatumId::derive(&user, "dexcom", "cbg", &["rec-1"]);
        assert_eq!(a, DatumId::derive(&user, "dexcom", "cbg", &["rec-1"]));
        assert_ne!(a, DatumId::derive(&user, "dexcom", "cbg", &["rec-2"]));
        assert_ne!(a, DatumId::derive(&user, "carelink", "cbg", &["rec-1"]));
        assert_ne!(
            DatumId::derive(&user, "dexcom", "cbg", &["ab", "c"]),
            DatumId::derive(&user, "dexcom", "cbg", &["a", "bc"])
        );
        assert!(DatumId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn ids_deserialize_only_when_valid() {
        let ok: Result<UserId, _> = serde_json::from_str("\"0123456789\"");
        assert!(ok.is_ok());
        let bad: Result<UserId, _> = serde_json::from_str("\"nope\"");
        assert!(bad.is_err());
    }
}
