//! Token encryption at rest (DESIGN §4 "Tokens").
//!
//! AES-256-GCM with a random 96-bit nonce per ciphertext. The stored value is `nonce ‖ ciphertext
//! ‖ tag`; the key id is stored beside it, and the associated data binds the ciphertext to its row
//! and column, so a ciphertext copied to another row (or another column) does not decrypt.
//!
//! The key ring comes from `TIDEGATE_TOKEN_KEYS` = `kid:base64(32 bytes)[,kid:base64…]`: the first
//! key encrypts, every key decrypts. `tidegate keys rotate` re-encrypts under the first key so an
//! old key can then be removed.

use std::fmt;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why a key ring could not be built. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    #[error("token keys are empty: set TIDEGATE_TOKEN_KEYS to kid:base64(32 bytes)[,kid:base64…]")]
    Empty,
    #[error("token key #{0} is not of the form kid:base64")]
    Malformed(usize),
    #[error("token key id {0:?} must be 1–32 characters of [A-Za-z0-9_-]")]
    BadKeyId(String),
    #[error("token key {0:?} is not valid base64")]
    BadBase64(String),
    #[error("token key {0:?} must be exactly 32 bytes (AES-256), got {1}")]
    BadLength(String, usize),
    #[error("token key id {0:?} appears twice")]
    Duplicate(String),
}

/// Why a ciphertext could not be opened. Deliberately vague: it never says more than which key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("no token key with id {0:?} in the key ring")]
    UnknownKey(String),
    #[error("ciphertext does not authenticate (tampered, wrong row, or wrong key)")]
    Unauthentic,
    #[error("ciphertext too short")]
    Truncated,
    #[error("decrypted token is not UTF-8")]
    NotText,
}

struct TokenKey {
    id: String,
    cipher: Aes256Gcm,
}

/// The configured token keys. Its `Debug` shows key ids only.
pub struct KeyRing {
    keys: Vec<TokenKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing").field("key_ids", &self.key_ids()).finish()
    }
}

/// A sealed value and the id of the key that sealed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

fn valid_key_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl KeyRing {
    /// Parse `kid:base64[,kid:base64…]` (whitespace around entries is ignored).
    pub fn parse(spec: &SecretString) -> Result<Self, KeyRingError> {
        let mut keys: Vec<TokenKey> = Vec::new();
        for (i, entry) in spec.expose_secret().split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                continue;
            }
            let (id, b64) = entry.split_once(':').ok_or(KeyRingError::Malformed(i + 1))?;
            let id = id.trim();
            if !valid_key_id(id) {
                return Err(KeyRingError::BadKeyId(id.to_owned()));
            }
            let raw = [&STANDARD, &URL_SAFE, &URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(b64.trim()).ok())
                .ok_or_else(|| KeyRingError::BadBase64(id.to_owned()))?;
            if raw.len() != 32 {
                return Err(KeyRingError::BadLength(id.to_owned(), raw.len()));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyRingError::Duplicate(id.to_owned()));
            }
            let cipher =
                Aes256Gcm::new_from_slice(&raw).map_err(|_| KeyRingError::BadLength(id.to_owned(), raw.len()))?;
            keys.push(TokenKey { id: id.to_owned(), cipher });
        }
        if keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        Ok(Self { keys })
    }

    /// A fresh random key in the ring's syntax (`kid:base64`), from the OS CSPRNG.
    pub fn generate_entry(key_id: &str) -> SecretString {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        SecretString::from(format!("{key_id}:{}", STANDARD.encode(raw)))
    }

    /// The id of the key that encrypts.
    pub fn primary_id(&self) -> &str {
        &self.keys[0].id
    }

    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// Encrypt under the primary key, bound to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Sealed {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = key
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad })
            .expect("AES-GCM encryption cannot fail for in-memory buffers under 64 GiB");
        let mut bytes = Vec::with_capacity(NONCE_LEN + ct.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ct);
        Sealed { key_id: key.id.clone(), bytes }
    }

    /// Decrypt a value sealed by any key of the ring, checking it is bound to `aad`.
    pub fn open(&self, key_id: &str, bytes: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key =
            self.keys.iter().find(|k| k.id == key_id).ok_or_else(|| CryptoError::UnknownKey(key_id.to_owned()))?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Truncated);
        }
        let (nonce, ct) = bytes.split_first_chunk::<NONCE_LEN>().ok_or(CryptoError::Truncated)?;
        key.cipher.decrypt(&Nonce::from(*nonce), Payload { msg: ct, aad }).map_err(|_| CryptoError::Unauthentic)
    }

    /// Seal a secret string (a token or PKCE verifier).
    pub fn seal_secret(&self, secret: &SecretString, aad: &[u8]) -> Sealed {
        self.seal(secret.expose_secret().as_bytes(), aad)
    }

    /// Open a sealed secret string.
    pub fn open_secret(&self, key_id: &str, bytes: &[u8], aad: &[u8]) -> Result<SecretString, CryptoError> {
        let plain = self.open(key_id, bytes, aad)?;
        String::from_utf8(plain).map(SecretString::from).map_err(|_| CryptoError::NotText)
    }

    /// Re-encrypt a value under the primary key (rotation). Values already under it are returned
    /// as they are.
    pub fn reseal(&self, key_id: &str, bytes: &[u8], aad: &[u8]) -> Result<Sealed, CryptoError> {
        if key_id == self.primary_id() {
            // Still authenticate, so rotation never blesses a corrupt value.
            self.open(key_id, bytes, aad)?;
            return Ok(Sealed { key_id: key_id.to_owned(), bytes: bytes.to_vec() });
        }
        let plain = self.open(key_id, bytes, aad)?;
        Ok(self.seal(&plain, aad))
    }
}

/// Associated data for a column of a row: `tidegate:{table}:{row id}:{column}`.
pub fn aad(table: &str, row_id: &str, column: &str) -> Vec<u8> {
    format!("tidegate:{table}:{row_id}:{column}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str) -> KeyRing {
        KeyRing::parse(&SecretString::from(spec.to_owned())).unwrap()
    }

    fn two_keys() -> (String, String) {
        let a = KeyRing::generate_entry("k1").expose_secret().to_owned();
        let b = KeyRing::generate_entry("k2").expose_secret().to_owned();
        (a, b)
    }

    #[test]
    fn round_trip_bound_to_row() {
        let (a, _) = two_keys();
        let r = ring(&a);
        let aad1 = aad("provider_sessions", "aaaaaaaaaaaaaaaaaaaaaaaa", "access_token");
        let sealed = r.seal(b"access-token-value", &aad1);
        assert_eq!(sealed.key_id, "k1");
        assert!(!sealed.bytes.windows(6).any(|w| w == b"access"), "plaintext visible");
        assert_eq!(r.open("k1", &sealed.bytes, &aad1).unwrap(), b"access-token-value");
        // Same plaintext twice gives different ciphertexts (random nonce).
        assert_ne!(r.seal(b"access-token-value", &aad1).bytes, sealed.bytes);
    }

    #[test]
    fn tampering_is_detected() {
        let (a, _) = two_keys();
        let r = ring(&a);
        let aad1 = aad("t", "row", "c");
        let sealed = r.seal(b"secret", &aad1);
        for i in 0..sealed.bytes.len() {
            let mut bytes = sealed.bytes.clone();
            bytes[i] ^= 0x01;
            assert_eq!(r.open("k1", &bytes, &aad1), Err(CryptoError::Unauthentic), "byte {i}");
        }
        assert_eq!(r.open("k1", &sealed.bytes[..20], &aad1), Err(CryptoError::Truncated));
    }

    #[test]
    fn wrong_row_or_column_is_refused() {
        let (a, _) = two_keys();
        let r = ring(&a);
        let sealed = r.seal(b"secret", &aad("provider_sessions", "row-a", "access_token"));
        assert_eq!(
            r.open("k1", &sealed.bytes, &aad("provider_sessions", "row-b", "access_token")),
            Err(CryptoError::Unauthentic)
        );
        assert_eq!(
            r.open("k1", &sealed.bytes, &aad("provider_sessions", "row-a", "refresh_token")),
            Err(CryptoError::Unauthentic)
        );
    }

    #[test]
    fn rotation_reencrypts_under_the_first_key() {
        let (a, b) = two_keys();
        let old = ring(&a);
        let aad1 = aad("t", "row", "c");
        let sealed = old.seal(b"secret", &aad1);
        // New ring: k2 first (encrypts), k1 still present (decrypts).
        let new = ring(&format!("{b},{a}"));
        let resealed = new.reseal(&sealed.key_id, &sealed.bytes, &aad1).unwrap();
        assert_eq!(resealed.key_id, "k2");
        // After rotation the old key can be retired.
        let only_new = ring(&b);
        assert_eq!(only_new.open("k2", &resealed.bytes, &aad1).unwrap(), b"secret");
        assert_eq!(only_new.open("k1", &sealed.bytes, &aad1), Err(CryptoError::UnknownKey("k1".into())));
        // Resealing what is already under the primary key keeps it.
        let again = new.reseal("k2", &resealed.bytes, &aad1).unwrap();
        assert_eq!(again, resealed);
    }

    #[test]
    fn bad_specs_are_rejected_without_echoing_key_material() {
        let cases = [
            ("", KeyRingError::Empty),
            ("nocolon", KeyRingError::Malformed(1)),
            ("bad id:AAAA", KeyRingError::BadKeyId("bad id".into())),
            ("k1:!!!!", KeyRingError::BadBase64("k1".into())),
            ("k1:AAAA", KeyRingError::BadLength("k1".into(), 3)),
        ];
        for (spec, want) in cases {
            let err = KeyRing::parse(&SecretString::from(spec.to_owned())).unwrap_err();
            assert_eq!(err, want, "{spec}");
        }
        let (a, _) = two_keys();
        let dup = format!("{a},{a}");
        assert_eq!(KeyRing::parse(&SecretString::from(dup)).unwrap_err(), KeyRingError::Duplicate("k1".into()));
        let secret_part = a.split_once(':').unwrap().1;
        assert!(!format!("{:?}", ring(&a)).contains(secret_part));
    }
}
