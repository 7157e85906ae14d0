//! Secrets sealed at rest: AES-256-GCM under the key of `[store] encryption_key`.
//!
//! Every secret a store keeps (app secrets added at runtime, authorizer refresh tokens, verify
//! tickets) is written as `v1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`. The key id (the first
//! 8 hex digits of the key's SHA-256) says which key opens a value, so a new key can be
//! configured with the old ones kept as `previous_encryption_keys`: values sealed under them
//! still open, and are sealed again under the current key when next written. The name of the
//! secret (its row) is the associated data, so a sealed value copied into another row does not
//! open.

use crate::error::{Error, Result};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};
use wechat_proto::Secret;

const PREFIX: &str = "v1";
const NONCE_LEN: usize = 12;

struct Key {
    id: String,
    cipher: Aes256Gcm,
}

/// The current sealing key and the previous ones that still open old values.
pub struct Sealer {
    current: Key,
    previous: Vec<Key>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.current.id)
            .field("previous", &self.previous.iter().map(|k| k.id.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

/// Why `b64` is not a sealing key, if it is not: the reason alone, for the caller to prefix
/// with the config key it came from.
pub fn check_key(b64: &Secret) -> std::result::Result<(), String> {
    key_bytes(b64).map(drop)
}

fn key_bytes(b64: &Secret) -> std::result::Result<Vec<u8>, String> {
    let bytes = B64
        .decode(b64.expose().trim())
        .map_err(|_| "is not base64 (32 random bytes: `openssl rand -base64 32`)".to_owned())?;
    if bytes.len() != 32 {
        return Err(format!("must be 32 bytes, base64; it is {} bytes", bytes.len()));
    }
    Ok(bytes)
}

fn key(b64: &Secret, what: &str) -> Result<Key> {
    let bytes = key_bytes(b64).map_err(|reason| Error::Config(format!("{what} {reason}")))?;
    let id = hex_prefix(&Sha256::digest(&bytes));
    let cipher =
        Aes256Gcm::new_from_slice(&bytes).map_err(|_| Error::Config(format!("{what}: bad key length")))?;
    Ok(Key { id, cipher })
}

fn hex_prefix(digest: &[u8]) -> String {
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

impl Sealer {
    /// `current` and `previous` are base64 of 32 bytes each.
    pub fn new(current: &Secret, previous: &[Secret]) -> Result<Self> {
        Ok(Self {
            current: key(current, "store.encryption_key")?,
            previous: previous
                .iter()
                .enumerate()
                .map(|(i, k)| key(k, &format!("store.previous_encryption_keys[{i}]")))
                .collect::<Result<_>>()?,
        })
    }

    /// A fresh random key, base64, for the sandbox and tests.
    pub fn generate_key() -> Secret {
        Secret::new(B64.encode(rand::random::<[u8; 32]>()))
    }

    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `value` as the secret called `name`.
    pub fn seal(&self, name: &str, value: &Secret) -> Result<String> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = self
            .current
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload { msg: value.expose().as_bytes(), aad: name.as_bytes() },
            )
            .map_err(|_| Error::Store("sealing failed".into()))?;
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}:{}:{}", self.current.id, B64.encode(blob)))
    }

    /// Opens what [`Sealer::seal`] wrote for `name`. Errors say which key is missing or that
    /// the value does not open, never anything of the value.
    pub fn open(&self, name: &str, sealed: &str) -> Result<Secret> {
        let mut parts = sealed.splitn(3, ':');
        let (Some(PREFIX), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::Store(format!("secret {name} is not sealed (stored in clear, or damaged)")));
        };
        let key =
            std::iter::once(&self.current).chain(&self.previous).find(|k| k.id == id).ok_or_else(|| {
                Error::Store(format!("secret {name} is sealed under key {id}, which is not configured"))
            })?;
        let blob = B64.decode(body).map_err(|_| Error::Store(format!("secret {name} is damaged")))?;
        if blob.len() < NONCE_LEN {
            return Err(Error::Store(format!("secret {name} is damaged")));
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let plain = key
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: name.as_bytes() })
            .map_err(|_| Error::Store(format!("secret {name} does not open under key {id}")))?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| Error::Store(format!("secret {name} is damaged")))
    }

    /// Whether `sealed` was sealed under a key other than the current one.
    pub fn is_stale(&self, sealed: &str) -> bool {
        sealed.split(':').nth(1) != Some(self.current.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sealer() -> Sealer {
        Sealer::new(&Sealer::generate_key(), &[]).unwrap()
    }

    #[test]
    fn round_trip_bound_to_the_name_and_key() {
        let s = sealer();
        let v = Secret::from("app-secret-0123456789");
        let sealed = s.seal("app:wx1", &v).unwrap();
        assert!(!sealed.contains("app-secret"));
        assert_ne!(sealed, s.seal("app:wx1", &v).unwrap(), "a fresh nonce each time");
        assert_eq!(s.open("app:wx1", &sealed).unwrap(), v);
        assert!(s.open("app:wx2", &sealed).is_err(), "moved to another row, it does not open");
        let other = sealer();
        let e = other.open("app:wx1", &sealed).unwrap_err().to_string();
        assert!(e.contains("not configured") && !e.contains("app-secret"), "{e}");
        assert!(s.open("app:wx1", "app-secret-in-clear").is_err());
    }

    #[test]
    fn previous_keys_open_old_values_and_mark_them_stale() {
        let (old, new) = (Sealer::generate_key(), Sealer::generate_key());
        let before = Sealer::new(&old, &[]).unwrap();
        let sealed = before.seal("n", &Secret::from("v")).unwrap();
        let after = Sealer::new(&new, &[old]).unwrap();
        assert_eq!(after.open("n", &sealed).unwrap(), Secret::from("v"));
        assert!(after.is_stale(&sealed));
        assert!(!after.is_stale(&after.seal("n", &Secret::from("v")).unwrap()));
    }

    #[test]
    fn bad_keys_are_config_errors_without_the_key() {
        for bad in ["", "not base64!", "c2hvcnQ="] {
            let e = Sealer::new(&Secret::from(bad), &[]).unwrap_err().to_string();
            assert!(e.contains("store.encryption_key"), "{e}");
        }
        let e = format!("{:?}", sealer());
        assert!(e.contains("key_id"));
    }

    proptest! {
        #[test]
        fn opening_garbage_never_panics(name in "\\PC{0,20}", sealed in "\\PC{0,200}") {
            let _ = sealer().open(&name, &sealed);
        }

        #[test]
        fn tampering_is_detected(value in "\\PC{0,64}", at in 0usize..200, bit in 0u8..8) {
            let s = sealer();
            let sealed = s.seal("n", &Secret::from(value.as_str())).unwrap();
            let mut bytes = sealed.into_bytes();
            let i = at % bytes.len();
            bytes[i] ^= 1 << bit;
            if let Ok(t) = String::from_utf8(bytes)
                && let Ok(v) = s.open("n", &t)
            {
                // Only a flip that base64 decodes to the same bytes can still open.
                prop_assert_eq!(v.expose(), &value);
            }
        }
    }
}
