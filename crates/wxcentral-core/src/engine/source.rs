//! Where values come from: the WeChat endpoints of each kind, every call through the limiter
//! and the quota book.

use super::*;

/// Where a slot's values come from.
pub(super) enum Source {
    Token {
        secret: Secret,
        api: TokenApi,
    },
    Ticket(TicketType),
    /// `component_access_token`, from the component's secret and its last verify ticket.
    Component {
        secret: Secret,
    },
    /// An authorizer's access token, from the component's token and the stored refresh token.
    Authorizer {
        component: String,
    },
}

/// What a fetch brought back.
pub(super) struct Fetch {
    pub(super) value: Secret,
    pub(super) expires_in: u64,
    /// An authorizer's refresh token as WeChat answered it (rotated or not): written with the
    /// token in the same transaction.
    pub(super) refresh_token: Option<Secret>,
}

impl Fetch {
    fn plain((value, expires_in): (Secret, u64)) -> Self {
        Self { value, expires_in, refresh_token: None }
    }
}

/// What a fetch needs from other credentials, got before it queues for its permit (a permit
/// held while waiting for another credential's refresh, which needs one too, could starve the
/// limiter).
pub(super) enum Prepared {
    Nothing,
    ComponentToken(Arc<Credential>),
}

impl Source {
    /// Whether WeChat hands out the same value until it expires, whoever asks: then no
    /// successor exists before expiry, and once WeChat confirms the value in its refresh window
    /// it is served up to a small guard before expiry and its successor is fetched just after
    /// (DESIGN.md §2 rule 2). Tickets are like that. Stable tokens are not: WeChat rotates them
    /// inside their last window, where the proactive refresh goes. Classic, component and
    /// authorizer tokens are new at every call, with the predecessor kept alive for a while.
    pub(super) fn same_until_expiry(&self) -> bool {
        matches!(self, Self::Ticket(_))
    }

    /// Whether a fetch kills the value others hold (after WeChat's overlap): such a credential
    /// is never fetched without the store's lease, even when the store is unreachable, since
    /// two nodes fetching in turn would each kill the other's value. Stable tokens and tickets
    /// are handed out the same to every caller, so a node that cannot reach the store may
    /// fetch them alone and keep the answer in memory.
    pub(super) fn kills_predecessor(&self) -> bool {
        matches!(
            self,
            Self::Token { api: TokenApi::Classic, .. } | Self::Component { .. } | Self::Authorizer { .. }
        )
    }

    /// A token of any kind (not a ticket). A token refresh takes its limiter permit before the
    /// lease (one call), rather than inside the fetch (a ticket first needs the token).
    pub(super) fn is_token(&self) -> bool {
        !matches!(self, Self::Ticket(_))
    }
}

/// How long an upstream answer waits for its quota book entry (see [`Inner::call_upstream`]).
const QUOTA_BOOK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(50);

impl Inner {
    /// Counts the call in the quota book (alongside the call, so the store's fsync does not
    /// delay it) and makes it. A slow store delays the answer by [`QUOTA_BOOK_PATIENCE`] at
    /// most: the book is finished in the background, because the time until the answer is
    /// how precisely the value's expiry is known.
    pub(super) async fn call_upstream<T>(
        &self,
        appid: &str,
        endpoint: &'static str,
        permit: Option<Permit>,
        call: impl Future<Output = std::result::Result<T, UpstreamError>>,
    ) -> std::result::Result<T, UpstreamError> {
        let _permit = match permit {
            Some(p) => p,
            None => self.limiter.acquire().await,
        };
        let day = wechat_day(now_ms());
        let entry = self.registry.get(appid);
        let book = {
            let (store, entry, appid) = (Arc::clone(&self.store), entry.clone(), appid.to_owned());
            self.spawn(async move {
                match store.incr_quota(&appid, endpoint, &day).await {
                    Ok(n) => {
                        if let Some(e) = &entry {
                            e.record_quota(endpoint, &day, n);
                        }
                    }
                    Err(e) => tracing::warn!(appid, endpoint, error = %e, "quota book not updated"),
                }
            })
        };
        let result = call.await;
        let _ = tokio::time::timeout(QUOTA_BOOK_PATIENCE, book).await;
        if let Some(e) = &entry {
            let outcome = match &result {
                Ok(_) => "ok".to_owned(),
                Err(err) => err.outcome(),
            };
            e.calls.record(endpoint, outcome);
        }
        result
    }

    /// Fetches a new value: `(value, expires_in seconds)`.
    pub(super) async fn fetch(
        self: &Arc<Self>,
        slot: &Slot,
        reason: Reason,
        permit: Option<Permit>,
        prepared: Prepared,
    ) -> std::result::Result<Fetch, FlightError> {
        let appid = slot.key.appid.as_str();
        let up = &self.upstream;
        match (&slot.source, prepared) {
            (Source::Token { secret, api: TokenApi::Stable }, _) => {
                let force = reason == Reason::Forced;
                self.call_upstream(
                    appid,
                    api::PATH_STABLE_TOKEN,
                    permit,
                    up.stable_token(appid, secret, force),
                )
                .await
                .map(|r| Fetch::plain((r.access_token, r.expires_in)))
                .map_err(FlightError::from_upstream)
            }
            (Source::Token { secret, api: TokenApi::Classic }, _) => self
                .call_upstream(appid, api::PATH_TOKEN, permit, up.classic_token(appid, secret))
                .await
                .map(|r| Fetch::plain((r.access_token, r.expires_in)))
                .map_err(FlightError::from_upstream),
            (Source::Ticket(tt), _) => self.fetch_ticket(appid, *tt).await.map(Fetch::plain),
            (Source::Component { secret }, _) => self.fetch_component_token(appid, secret, permit).await,
            (Source::Authorizer { component }, Prepared::ComponentToken(ct)) => {
                self.fetch_authorizer_token(component, appid, ct, permit).await
            }
            (Source::Authorizer { .. }, Prepared::Nothing) => {
                Err(FlightError::other(FaultClass::Transient, "component_access_token unavailable"))
            }
        }
    }

    /// What the fetch of `slot` needs first (see [`Prepared`]).
    pub(super) async fn prepare(self: &Arc<Self>, slot: &Slot) -> std::result::Result<Prepared, FlightError> {
        match &slot.source {
            Source::Authorizer { component } => {
                let wait = self.config.read_wait + self.upstream.timeout();
                self.get(component, CredentialKind::ComponentAccessToken, wait)
                    .await
                    .map(Prepared::ComponentToken)
                    .map_err(|e| dependency_error("component_access_token", e))
            }
            _ => Ok(Prepared::Nothing),
        }
    }

    /// Tickets are fetched with the app's current access token. A token WeChat rejects is
    /// reported (compare-and-refresh, shared with every other caller) and the fetch retried once.
    pub(super) async fn fetch_ticket(
        self: &Arc<Self>,
        appid: &str,
        tt: TicketType,
    ) -> std::result::Result<(Secret, u64), FlightError> {
        let wait = self.config.read_wait + self.upstream.timeout();
        let dependency = |e: Error| dependency_error("access_token", e);
        let token = self.get(appid, CredentialKind::AccessToken, wait).await.map_err(dependency)?;
        let up = &self.upstream;
        match self.call_upstream(appid, api::PATH_GETTICKET, None, up.ticket(appid, &token.value, tt)).await {
            Ok(r) => Ok((r.ticket, r.expires_in)),
            Err(e) if e.class() == FaultClass::TokenInvalid => {
                tracing::info!(appid, ticket = tt.as_str(), errcode = ?e.errcode(), "getticket rejected the token; reporting it");
                let fresh = self
                    .report_invalid(appid, CredentialKind::AccessToken, token.value.expose())
                    .await
                    .map_err(dependency)?;
                self.call_upstream(appid, api::PATH_GETTICKET, None, up.ticket(appid, &fresh.value, tt))
                    .await
                    .map(|r| (r.ticket, r.expires_in))
                    .map_err(|e| {
                        // Rejected twice: not something a quick compare-and-refresh fixes.
                        let mut fe = FlightError::from_upstream(e);
                        if fe.class == FaultClass::TokenInvalid {
                            fe.class = FaultClass::Transient;
                        }
                        fe
                    })
            }
            Err(e) => Err(FlightError::from_upstream(e)),
        }
    }
}

/// A fetch that needs another credential which is not to be had.
pub(super) fn dependency_error(what: &str, e: Error) -> FlightError {
    match e {
        Error::Unavailable { reason, .. } => FlightError::other(
            FaultClass::Transient,
            format!("{what} unavailable{}", reason.map(|r| format!(": {r}")).unwrap_or_default()),
        ),
        other => FlightError::other(FaultClass::Config, format!("{what}: {other}")),
    }
}
