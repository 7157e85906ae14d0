//! [`EngineSource`]: credentials from a `wxcentral_core::Engine` in the same process.
//!
//! For a business server that runs alone (or shares a SQLite file or Redis with a hub), the
//! engine gives the same guarantees as the hub without a network hop: one upstream fetch per
//! credential and lifetime whatever the number of callers, and compare-and-refresh on reports.

use crate::error::Result;
use crate::source::{BoxFuture, CredentialKind, Token, TokenSource};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wxcentral_core::{Credential, Engine};

/// Credentials from an in-process [`Engine`], whatever its store.
#[derive(Debug, Clone)]
pub struct EngineSource {
    engine: Arc<Engine>,
}

impl EngineSource {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

/// The engine's value as a [`Token`], promised until `valid_until_ms` (DESIGN.md §8).
fn token_of(cred: &Credential) -> Token {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let left = u64::try_from(cred.valid_until_ms.saturating_sub(now_ms)).unwrap_or(0);
    Token::new(cred.value.clone(), Duration::from_millis(left), cred.version)
}

impl TokenSource for EngineSource {
    fn token<'a>(&'a self, appid: &'a str, kind: CredentialKind) -> BoxFuture<'a, Result<Token>> {
        Box::pin(async move { Ok(token_of(&*self.engine.get(appid, kind).await?)) })
    }

    fn refresh<'a>(
        &'a self,
        appid: &'a str,
        kind: CredentialKind,
        failed: &'a str,
    ) -> BoxFuture<'a, Result<Token>> {
        Box::pin(async move { Ok(token_of(&*self.engine.report_invalid(appid, kind, failed).await?)) })
    }
}
