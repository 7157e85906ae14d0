//! Where the client gets its credentials: the [`TokenSource`] trait and the [`Token`] it hands out.
//!
//! A business server should never fetch tokens from WeChat itself (each fetch can invalidate
//! the token every other server holds), so the client only ever asks a source. The source is a
//! trait object so one client type works against the hub ([`crate::HubSource`]), an in-process
//! engine ([`crate::EngineSource`]) or a test double.

use crate::error::Result;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};
use wechat_proto::Secret;
pub use wxcentral_core::CredentialKind;

/// A boxed, sendable future: what keeps [`TokenSource`] usable as `dyn TokenSource`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One credential value with its lifetime. Compare tokens by `value` or `version`: two reads of
/// the same value at different times have different deadlines.
#[derive(Clone)]
pub struct Token {
    /// The value to send to WeChat.
    pub value: Secret,
    /// Until when the source promises the value keeps working (the hub's `expires_at`).
    pub expires_at: SystemTime,
    /// Grows with every new value of this credential.
    pub version: u64,
    /// `expires_at` on this machine's monotonic clock, measured from `expires_in` when the
    /// value arrived, so a wall clock that differs from the hub's cannot stretch a cache.
    pub(crate) deadline: Instant,
    /// The lifetime left when the value arrived; cache margins scale with it.
    pub(crate) lifetime: Duration,
}

impl Token {
    /// A value valid for `expires_in` from now.
    pub fn new(value: Secret, expires_in: Duration, version: u64) -> Self {
        Self {
            value,
            expires_at: SystemTime::now() + expires_in,
            version,
            deadline: Instant::now() + expires_in,
            lifetime: expires_in,
        }
    }

    /// Time left until [`Token::expires_at`].
    pub fn expires_in(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Whether the value still has more than a tenth of its lifetime (at most a minute) left:
    /// closer to its end, a call could reach WeChat just after it expired.
    pub fn is_fresh(&self) -> bool {
        let margin = (self.lifetime / 10).min(Duration::from_secs(60));
        self.expires_in() > margin
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &self.value)
            .field("expires_in", &self.expires_in())
            .field("version", &self.version)
            .finish()
    }
}

/// A provider of credential values with compare-and-refresh.
///
/// `refresh` takes the value WeChat rejected so that a thousand callers that all saw the same
/// value fail cause one refresh, and a caller whose failed value was already replaced simply
/// gets the new one.
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// The current value of `kind` for `appid`.
    fn token<'a>(&'a self, appid: &'a str, kind: CredentialKind) -> BoxFuture<'a, Result<Token>>;

    /// A value other than `failed`: refreshed if `failed` is still the current one, otherwise
    /// the current one without any refresh.
    fn refresh<'a>(
        &'a self,
        appid: &'a str,
        kind: CredentialKind,
        failed: &'a str,
    ) -> BoxFuture<'a, Result<Token>>;
}

impl<S: TokenSource + ?Sized> TokenSource for std::sync::Arc<S> {
    fn token<'a>(&'a self, appid: &'a str, kind: CredentialKind) -> BoxFuture<'a, Result<Token>> {
        (**self).token(appid, kind)
    }

    fn refresh<'a>(
        &'a self,
        appid: &'a str,
        kind: CredentialKind,
        failed: &'a str,
    ) -> BoxFuture<'a, Result<Token>> {
        (**self).refresh(appid, kind, failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        let t = Token::new(Secret::from("ACCESS-TOKEN-VALUE"), Duration::from_secs(7200), 3);
        let shown = format!("{t:?}");
        assert!(!shown.contains("ACCESS-TOKEN-VALUE"), "{shown}");
        assert!(shown.contains("version: 3"), "{shown}");
    }

    #[test]
    fn freshness_keeps_a_margin_that_scales_with_the_lifetime() {
        assert!(Token::new(Secret::from("a"), Duration::from_secs(7200), 1).is_fresh());
        // 7200 s: the margin is one minute.
        let mut t = Token::new(Secret::from("a"), Duration::from_secs(7200), 1);
        t.deadline = Instant::now() + Duration::from_secs(59);
        assert!(!t.is_fresh());
        t.deadline = Instant::now() + Duration::from_secs(61);
        assert!(t.is_fresh());
        // 10 s: the margin is one second.
        let mut t = Token::new(Secret::from("a"), Duration::from_secs(10), 1);
        t.deadline = Instant::now() + Duration::from_millis(1500);
        assert!(t.is_fresh());
        t.deadline = Instant::now() + Duration::from_millis(900);
        assert!(!t.is_fresh());
        assert!(!Token::new(Secret::from("a"), Duration::ZERO, 1).is_fresh());
    }
}
