//! [`HubSource`]: credentials from a wxcentral hub over its native HTTP API.
//!
//! The hub already guarantees one upstream fetch per credential and lifetime; this source keeps
//! the hub from being asked more than needed too. Each value is cached until near the expiry
//! the hub promised, concurrent callers of one credential share one request to the hub, and a
//! refresh is a compare-and-refresh on both sides: the local cache answers when the failed
//! value was already replaced, and the hub's `POST …/refresh` with `{"invalid": …}` answers
//! when another node replaced it.

use crate::error::{Error, Result};
use crate::source::{BoxFuture, CredentialKind, Token, TokenSource};
use futures::FutureExt;
use futures::future::Shared;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use wechat_proto::Secret;
use wxcentral_core::wire::{CredentialResponse, ErrorBody, RefreshRequest};

/// How long a request to the hub may take unless [`HubSourceBuilder::timeout`] says otherwise:
/// the hub answers from memory, or waits a bounded time for a refresh in flight.
pub const DEFAULT_HUB_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest hub answer read: a credential is a few hundred bytes.
const MAX_HUB_BODY: usize = 64 << 10;

/// Credentials from a wxcentral hub, authenticated with a client key.
///
/// Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct HubSource {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    key: Secret,
    slots: Mutex<HashMap<(String, CredentialKind), Slot>>,
}

type Flight = Shared<BoxFuture<'static, Result<Token>>>;

/// One credential: the cached value and the request to the hub in flight, if any.
#[derive(Default)]
struct Slot {
    cached: Option<Token>,
    flight: Option<Flight>,
}

/// Options of a [`HubSource`].
#[derive(Debug)]
pub struct HubSourceBuilder {
    base: String,
    key: Secret,
    timeout: Duration,
    http: Option<reqwest::Client>,
}

impl HubSourceBuilder {
    /// Budget of each request to the hub (default [`DEFAULT_HUB_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Shares an existing HTTP client (its connection pool, proxy and TLS settings); the
    /// timeout above still applies per request.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    pub fn build(self) -> Result<HubSource> {
        let http = crate::http::or_default(self.http, self.timeout)?;
        Ok(HubSource {
            inner: Arc::new(Inner {
                http,
                base: self.base.trim_end_matches('/').to_owned(),
                key: self.key,
                slots: Mutex::new(HashMap::new()),
            }),
        })
    }
}

impl HubSource {
    /// A source for the hub at `base_url` (e.g. `http://wxcentral:8080`) using `client_key`.
    pub fn new(base_url: impl Into<String>, client_key: impl Into<Secret>) -> Result<Self> {
        Self::builder(base_url, client_key).build()
    }

    pub fn builder(base_url: impl Into<String>, client_key: impl Into<Secret>) -> HubSourceBuilder {
        HubSourceBuilder {
            base: base_url.into(),
            key: client_key.into(),
            timeout: DEFAULT_HUB_TIMEOUT,
            http: None,
        }
    }

    /// The hub's base URL, which is also where its WeChat proxy listens.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    async fn get(&self, appid: &str, kind: CredentialKind) -> Result<Token> {
        check_appid(appid)?;
        let flight = {
            let mut slots = self.inner.lock();
            let slot = slots.entry((appid.to_owned(), kind)).or_default();
            if let Some(t) = slot.cached.as_ref().filter(|t| t.is_fresh()) {
                return Ok(t.clone());
            }
            match &slot.flight {
                Some(f) => f.clone(),
                None => self.inner.start(slot, appid, kind, None),
            }
        };
        flight.await
    }

    async fn compare_and_refresh(&self, appid: &str, kind: CredentialKind, failed: &str) -> Result<Token> {
        check_appid(appid)?;
        // A flight started by someone else may bring a value other than `failed`; if it brings
        // `failed` again, one more round starts our own refresh.
        for _ in 0..2 {
            let (flight, own) = {
                let mut slots = self.inner.lock();
                let slot = slots.entry((appid.to_owned(), kind)).or_default();
                match &slot.cached {
                    Some(t) if t.value.ct_eq(failed) => slot.cached = None,
                    Some(t) if t.is_fresh() => return Ok(t.clone()),
                    _ => {}
                }
                match &slot.flight {
                    Some(f) => (f.clone(), false),
                    None => (self.inner.start(slot, appid, kind, Some(failed)), true),
                }
            };
            let result = flight.await;
            match result {
                Ok(t) if own || !t.value.ct_eq(failed) => return Ok(t),
                Err(e) if own => return Err(e),
                _ => {}
            }
        }
        // Two foreign flights in a row returned the failed value (or failed): ask the hub
        // ourselves, without the cache.
        self.inner.fetch(appid, kind, Some(failed)).await
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, CredentialKind), Slot>> {
        // A panic elsewhere must not make every later call panic too.
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the one request for `slot`, which installs its answer and clears itself.
    fn start(
        self: &Arc<Self>,
        slot: &mut Slot,
        appid: &str,
        kind: CredentialKind,
        invalid: Option<&str>,
    ) -> Flight {
        let inner = Arc::clone(self);
        let (appid, invalid) = (appid.to_owned(), invalid.map(str::to_owned));
        let flight = async move {
            let result = inner.fetch(&appid, kind, invalid.as_deref()).await;
            let mut slots = inner.lock();
            let slot = slots.entry((appid, kind)).or_default();
            slot.flight = None;
            if let Ok(t) = &result
                && slot.cached.as_ref().is_none_or(|c| c.version <= t.version)
            {
                slot.cached = Some(t.clone());
            }
            result
        }
        .boxed()
        .shared();
        slot.flight = Some(flight.clone());
        flight
    }

    /// One request to the hub: a read, or with `invalid` a compare-and-refresh.
    async fn fetch(&self, appid: &str, kind: CredentialKind, invalid: Option<&str>) -> Result<Token> {
        let request = match (kind, invalid) {
            // The hub keeps component tokens valid itself and has no report route for them: a
            // refresh reads the current value again.
            (CredentialKind::ComponentAccessToken, _) => {
                self.http.get(format!("{}/v1/components/{appid}/component_access_token", self.base))
            }
            (_, None) => self.http.get(format!("{}/v1/apps/{appid}/{kind}", self.base)),
            (_, Some(invalid)) => self
                .http
                .post(format!("{}/v1/apps/{appid}/{kind}/refresh", self.base))
                .json(&RefreshRequest { invalid: invalid.to_owned() }),
        };
        let response = request.bearer_auth(self.key.expose()).send().await.map_err(Error::transport)?;
        let status = response.status().as_u16();
        let body = crate::client::read_limited(response, MAX_HUB_BODY, "hub").await?;
        if !(200..300).contains(&status) {
            return Err(hub_error(status, &body));
        }
        let cred: CredentialResponse = serde_json::from_slice(&body).map_err(|e| Error::Malformed {
            reason: format!("hub credential: {e}"),
            raw: Secret::new(String::from_utf8_lossy(&body).into_owned()),
        })?;
        tracing::debug!(appid, kind = %kind, version = cred.version, expires_in = cred.expires_in, "credential from hub");
        let expires_in = Duration::from_secs(u64::try_from(cred.expires_in).unwrap_or(0));
        Ok(Token::new(cred.value, expires_in, cred.version))
    }
}

fn hub_error(status: u16, body: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => {
            Error::Hub { status, code: b.error.code, message: b.error.message, errcode: b.error.errcode }
        }
        Err(_) => Error::Hub {
            status,
            code: "unexpected_answer".into(),
            message: format!("{} bytes that are not the hub's error JSON", body.len()),
            errcode: None,
        },
    }
}

/// Appids go into the hub's URL paths: only what the hub accepts.
fn check_appid(appid: &str) -> Result<()> {
    let ok = !appid.is_empty()
        && appid.len() <= 64
        && appid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(Error::InvalidArgument(format!("appid {appid:?} is not a WeChat appid"))) }
}

impl TokenSource for HubSource {
    fn token<'a>(&'a self, appid: &'a str, kind: CredentialKind) -> BoxFuture<'a, Result<Token>> {
        Box::pin(self.get(appid, kind))
    }

    fn refresh<'a>(
        &'a self,
        appid: &'a str,
        kind: CredentialKind,
        failed: &'a str,
    ) -> BoxFuture<'a, Result<Token>> {
        Box::pin(self.compare_and_refresh(appid, kind, failed))
    }
}

impl fmt::Debug for HubSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubSource").field("base", &self.inner.base).field("key", &self.inner.key).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_client_key() {
        let s = HubSource::new("http://hub:8080/", "CLIENT-KEY-abc123").unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("CLIENT-KEY-abc123"), "{shown}");
        assert_eq!(s.base_url(), "http://hub:8080");
    }

    #[test]
    fn appids_that_would_change_the_path_are_refused() {
        for bad in ["", "wx/../admin", "wx?x=1", "wx 1", &"a".repeat(65)] {
            assert!(matches!(check_appid(bad), Err(Error::InvalidArgument(_))), "{bad}");
        }
        assert!(check_appid("wx0123456789abcdef").is_ok());
    }

    #[test]
    fn hub_error_bodies_are_read() {
        let e = hub_error(503, br#"{"error":{"code":"credential_unavailable","message":"later"}}"#);
        assert!(
            matches!(&e, Error::Hub { status: 503, code, .. } if code == "credential_unavailable"),
            "{e:?}"
        );
        let e = hub_error(502, b"<html>bad gateway</html>");
        assert!(matches!(&e, Error::Hub { status: 502, code, .. } if code == "unexpected_answer"), "{e:?}");
    }
}
