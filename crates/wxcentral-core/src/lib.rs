//! wxcentral's credential engine: it keeps every WeChat credential valid before it expires, with
//! exactly one upstream fetch per credential and lifetime, and hands values to the HTTP layer.
//!
//! The engine owns refresh scheduling, single flight, compare-and-refresh, backoff and the quota
//! books; stores ([`store`]) make values survive restarts and coordinate nodes; the
//! [`upstream::Upstream`] client talks to WeChat (or `wechat-sim` in tests).
//!
//! ```no_run
//! # async fn demo() -> wxcentral_core::Result<()> {
//! use std::sync::Arc;
//! use wxcentral_core::{AppSpec, CredentialKind, Engine, EngineConfig, store::MemoryStore, upstream::Upstream};
//! let upstream = Upstream::new("https://api.weixin.qq.com", std::time::Duration::from_secs(5))?;
//! let apps = vec![AppSpec::official_account("wx0123456789abcdef", "app-secret")];
//! let engine = Engine::start(apps, Arc::new(MemoryStore::new()), upstream, EngineConfig::default()).await?;
//! let token = engine.get("wx0123456789abcdef", CredentialKind::AccessToken).await?;
//! println!("expires at {}", token.expires_at_ms);
//! # Ok(()) }
//! ```

pub mod authorizer;
mod clock;
pub mod engine;
pub mod error;
pub mod kind;
mod limiter;
mod policy;
pub mod quota;
pub mod seal;
pub mod store;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod upstream;
pub mod wire;

pub use engine::{
    AppStatus, AuthorizerStatus, ComponentStatus, CredentialStatus, Engine, EngineConfig, ForcedRefresh,
    ImportReport, Origin, TokenOwner,
};
pub use error::{Error, Result};
pub use kind::{AppKind, AppSpec, Credential, CredentialKey, CredentialKind, TokenApi};
