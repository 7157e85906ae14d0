//! Client keys: who may read which app's credentials, and who may refresh.
//!
//! Only the sha256 of a key is configured. A presented key is hashed and compared with every
//! configured hash in constant time, so neither the key nor which client matched leaks through
//! response timing.

use crate::config::ClientConfig;
use crate::error::ApiError;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A client allowed to call the API.
#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    key_sha256: [u8; 32],
    all_apps: bool,
    apps: Vec<String>,
    pub refresh: bool,
    pub admin: bool,
}

impl Client {
    pub fn may_see(&self, appid: &str) -> bool {
        self.all_apps || self.apps.iter().any(|a| a == appid)
    }

    /// 403 unless this client may see `appid`.
    pub fn check_app(&self, appid: &str) -> Result<(), ApiError> {
        if self.may_see(appid) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("client {} may not use app {appid}", self.name)))
        }
    }
}

#[derive(Debug, Default)]
pub struct Clients {
    clients: Vec<Client>,
}

impl Clients {
    pub fn from_config(configs: &[ClientConfig]) -> Self {
        let clients = configs
            .iter()
            .map(|c| {
                let mut key_sha256 = [0u8; 32];
                // The config validated the hex; a bad one would simply never match.
                let _ = hex::decode_to_slice(&c.key_sha256, &mut key_sha256);
                Client {
                    name: c.name.clone(),
                    key_sha256,
                    all_apps: c.apps.iter().any(|a| a == "*"),
                    apps: c.apps.clone(),
                    refresh: c.refresh,
                    admin: c.admin,
                }
            })
            .collect();
        Self { clients }
    }

    /// The client whose key is `Authorization: Bearer <key>`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<&Client, ApiError> {
        let key = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        self.find(key).ok_or(ApiError::Unauthorized)
    }

    fn find(&self, key: &str) -> Option<&Client> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        // Visit every client whatever matches, so timing does not tell which one did.
        for client in &self.clients {
            if bool::from(client.key_sha256.ct_eq(&digest)) {
                found = Some(client);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::hash_key;

    fn clients() -> Clients {
        Clients::from_config(&[
            ClientConfig {
                name: "a".into(),
                key_sha256: hash_key("key-a"),
                apps: vec!["wx1".into()],
                refresh: false,
                admin: false,
            },
            ClientConfig {
                name: "ops".into(),
                key_sha256: hash_key("key-ops"),
                apps: vec!["*".into()],
                refresh: true,
                admin: true,
            },
        ])
    }

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn keys_map_to_clients_and_scopes() {
        let c = clients();
        let a = c.authenticate(&bearer("Bearer key-a")).unwrap();
        assert_eq!(a.name, "a");
        assert!(a.may_see("wx1") && !a.may_see("wx2"));
        assert!(matches!(a.check_app("wx2"), Err(ApiError::Forbidden(_))));
        let ops = c.authenticate(&bearer("Bearer key-ops")).unwrap();
        assert!(ops.may_see("anything") && ops.admin);
    }

    #[test]
    fn wrong_or_missing_keys_are_unauthorized() {
        let c = clients();
        for h in ["Bearer nope", "Bearer ", "Basic key-a", "key-a"] {
            assert!(matches!(c.authenticate(&bearer(h)), Err(ApiError::Unauthorized)), "{h}");
        }
        assert!(matches!(c.authenticate(&HeaderMap::new()), Err(ApiError::Unauthorized)));
    }
}
