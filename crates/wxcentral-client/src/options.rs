//! Per-call switches for the client's two retries and its time budget.
//!
//! Both retries are on by default because they are what makes token errors invisible to the
//! business code. A caller turns them off where repeating is worse than failing: a call that
//! must not run twice even when WeChat said "busy" (-1 does not say whether the work was done),
//! or a caller that wants to see the token error itself. These are the reference SDK's
//! `WithRetryable` and `WithReloadAccessToken`.

use std::time::Duration;

/// How one call may be retried and how long it may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOptions {
    /// On 40001, 40014 or 42001: get a new token by compare-and-refresh with the token that was
    /// sent, and send the call once more. Never more than once.
    pub reload_access_token: bool,
    /// On -1 (system busy): wait the client's busy backoff and send the call once more.
    pub retryable: bool,
    /// Budget of each attempt; `None` keeps the client's.
    pub timeout: Option<Duration>,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self { reload_access_token: true, retryable: true, timeout: None }
    }
}

impl CallOptions {
    /// Whether to retry once after a token error.
    pub fn reload_access_token(mut self, on: bool) -> Self {
        self.reload_access_token = on;
        self
    }

    /// Whether to retry once after -1.
    pub fn retryable(mut self, on: bool) -> Self {
        self.retryable = on;
        self
    }

    /// No retry of any kind: exactly one request reaches WeChat.
    pub fn once() -> Self {
        Self { reload_access_token: false, retryable: false, timeout: None }
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}
