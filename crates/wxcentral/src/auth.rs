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
use wxcentral_core::Engine;

/// A client allowed to call the API.
#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    key_sha256: [u8; 32],
    all_apps: bool,
    apps: Vec<String>,
    /// `component:X` scopes: every authorizer of X (and X's own endpoints).
    components: Vec<String>,
    pub refresh: bool,
    pub admin: bool,
}

impl Client {
    /// Whether this client may use `appid`: named, `*`, or an authorizer of a component it
    /// names (`component:…`), which `engine` knows.
    pub fn may_see(&self, appid: &str, engine: &Engine) -> bool {
        self.all_apps
            || self.apps.iter().any(|a| a == appid)
            || (!self.components.is_empty()
                && (self.components.iter().any(|c| c == appid)
                    || engine.component_of(appid).is_some_and(|c| self.components.contains(&c))))
    }

    /// 403 unless this client may see `appid`.
    pub fn check_app(&self, appid: &str, engine: &Engine) -> Result<(), ApiError> {
        if self.may_see(appid, engine) {
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
                    apps: c.apps.iter().filter(|a| !a.starts_with("component:")).cloned().collect(),
                    components: c
                        .apps
                        .iter()
                        .filter_map(|a| a.strip_prefix("component:"))
                        .map(str::to_owned)
                        .collect(),
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

    /// The client whose key is `key` (a key shown in place of an AppSecret on the drop-in
    /// endpoints).
    pub fn by_key(&self, key: &str) -> Option<&Client> {
        self.find(key)
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
                name: "p".into(),
                key_sha256: hash_key("key-p"),
                apps: vec!["component:wxcomp".into()],
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

    async fn engine() -> std::sync::Arc<Engine> {
        use wxcentral_core::{AppSpec, EngineConfig, store::MemoryStore, upstream::Upstream};
        let up = Upstream::new("http://127.0.0.1:9", std::time::Duration::from_millis(100)).unwrap();
        let apps = vec![AppSpec::component("wxcomp", "s", vec![])];
        Engine::start(apps, std::sync::Arc::new(MemoryStore::new()), up, EngineConfig::default())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn keys_map_to_clients_and_scopes() {
        let engine = engine().await;
        let c = clients();
        let a = c.authenticate(&bearer("Bearer key-a")).unwrap();
        assert_eq!(a.name, "a");
        assert!(a.may_see("wx1", &engine) && !a.may_see("wx2", &engine));
        assert!(matches!(a.check_app("wx2", &engine), Err(ApiError::Forbidden(_))));
        let ops = c.authenticate(&bearer("Bearer key-ops")).unwrap();
        assert!(ops.may_see("anything", &engine) && ops.admin);
        // A component scope covers the component, not an unrelated appid.
        let p = c.authenticate(&bearer("Bearer key-p")).unwrap();
        assert!(p.may_see("wxcomp", &engine) && !p.may_see("wx1", &engine));
        engine.shutdown().await;
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
