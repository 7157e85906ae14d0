//! The open platform (第三方平台): verify tickets feeding the component token, authorization
//! codes exchanged once, authorizers whose refresh tokens are never lost, and the authorizer
//! list WeChat keeps as the way back when one is.
//!
//! Authorizers are entries of the live set like apps (origin `authorization`): their token is a
//! slot whose source is the component's token plus the stored refresh token, refreshed and
//! fenced by the same engine, and their tickets are ordinary ticket slots. What is particular
//! to them lives here: the record (state, permissions, the event that set them) and the flows
//! that change it.

use super::*;
use crate::authorizer::{
    AuthorizerRecord, AuthorizerState, AuthorizerWrite, VerifyTicket, code_digest, code_name, pending_prefix,
    verify_ticket_name,
};
use crate::kind::Role;

/// Where the authorizer list goes on after `page` (read at `offset`), if it does.
fn next_offset(offset: u32, page: &api::AuthorizerListResponse) -> Option<u32> {
    let n = u32::try_from(page.list.len()).unwrap_or(u32::MAX);
    let next = offset.saturating_add(n);
    (n > 0 && u64::from(next) < page.total_count).then_some(next)
}

/// The store name of a pending authorization event.
fn pending_name(component: &str, authorizer: &str, digest: &str) -> String {
    format!("{}{authorizer}:{digest}", pending_prefix(component))
}
use std::sync::atomic::AtomicI64;

/// How often this node may ask WeChat to push a verify ticket.
const PUSH_REQUEST_EVERY_MS: i64 = 60_000;
/// A ticket older than this means pushes stopped: ask for one, and warn.
pub const TICKET_STALE_MS: i64 = 3_600_000;
/// How often a component's housekeeping runs (pending authorizations, ticket age, first import).
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(30);
/// How long (in 100 ms steps) a component fetch without a ticket waits for the push it asked for.
const TICKET_WAIT_STEPS: u32 = 30;
/// WeChat's largest page of `api_get_authorizer_list`.
const LIST_PAGE: u32 = 500;

/// How far back an authorization event the hub stamps with its own clock (a landing, an
/// import) is placed. Pushes carry WeChat's `CreateTime`, in seconds and on WeChat's clock;
/// an `unauthorized` pushed a moment after a landing must order after it even when that
/// second was cut off or our clock runs ahead of WeChat's, or the revocation would be refused
/// as older than the authorization it ends.
const HUB_CLOCK_ALLOWANCE_MS: i64 = 30_000;

/// The event time of an authorization the hub itself saw, comparable with pushes' stamps.
fn hub_event_ms() -> i64 {
    now_ms() - HUB_CLOCK_ALLOWANCE_MS
}

/// What a node keeps in memory of a component.
#[derive(Debug, Default)]
pub(super) struct ComponentState {
    /// Unix ms of the newest verify ticket this node knows of (0: none).
    ticket_pushed_at_ms: AtomicI64,
    /// When this node last asked WeChat to push a ticket.
    push_requested_at_ms: AtomicI64,
    /// One code exchange at a time per component on this node, so the landing page and the
    /// push bringing the same code exchange it once.
    exchanges: tokio::sync::Mutex<()>,
    /// Whether the first housekeeping (the import of an empty store) is done.
    imported: std::sync::atomic::AtomicBool,
}

/// What `/v1/components/{appid}/…` shows of a component.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentStatus {
    pub appid: String,
    pub credential: CredentialStatus,
    /// Unix ms of the push of the newest verify ticket known, if any.
    pub verify_ticket_pushed_at_ms: Option<i64>,
    /// Seconds since that push.
    pub verify_ticket_age_secs: Option<i64>,
    /// No ticket, or none pushed for an hour: WeChat's pushes stopped reaching the hub.
    pub verify_ticket_stale: bool,
    pub authorizers: usize,
}

/// An authorizer as `/v1/components/{appid}/authorizers` lists it: no secret inside.
#[derive(Clone, Debug, Serialize)]
pub struct AuthorizerStatus {
    pub authorizer_appid: String,
    pub state: AuthorizerState,
    pub func_info: Vec<i64>,
    pub authorized_at_ms: i64,
    pub credentials: Vec<CredentialStatus>,
}

/// The outcome of an import from `api_get_authorizer_list`, as the admin call answers it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportReport {
    /// Authorizers WeChat listed.
    pub listed: usize,
    /// Newly adopted, or whose refresh token changed.
    pub adopted: usize,
    /// Already held with the same refresh token.
    pub unchanged: usize,
    /// Listed without a refresh token and none held: only a new authorization helps.
    pub without_refresh_token: usize,
    /// Refused: unauthorized after the list was read, or the appid is an app here.
    pub skipped: usize,
}

/// An authorization event kept until its code is exchanged (durable before `success`).
#[derive(Serialize, serde::Deserialize)]
struct Pending {
    code: String,
    event_ms: i64,
}

impl ComponentState {
    pub(super) fn ticket_pushed_at(&self) -> Option<i64> {
        Some(self.ticket_pushed_at_ms.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }

    fn saw_ticket(&self, pushed_at_ms: i64) {
        self.ticket_pushed_at_ms.fetch_max(pushed_at_ms, Ordering::Relaxed);
    }
}

impl AppEntry {
    pub(super) fn component_state(&self) -> Option<&ComponentState> {
        match &self.platform {
            Platform::Component(c) => Some(c),
            _ => None,
        }
    }

    pub(super) fn record(&self) -> Option<AuthorizerRecord> {
        match &self.platform {
            Platform::Authorizer(r) => Some(lock(r).clone()),
            _ => None,
        }
    }
}

impl Engine {
    /// A verify ticket pushed by WeChat: durable in the store when this returns (the push may
    /// then be answered `success`). A retry of a push already kept, or a ticket older than the
    /// one kept, changes nothing. A component stuck without a valid ticket is woken.
    pub async fn verify_ticket_pushed(
        &self,
        component: &str,
        ticket: Secret,
        create_time: i64,
    ) -> Result<()> {
        let entry = self.inner.component(component)?;
        let pushed_at_ms = create_time.saturating_mul(1000);
        let stored = self.inner.stored_ticket(component).await?;
        let newer = stored.as_ref().is_none_or(|s| {
            s.pushed_at_ms < pushed_at_ms || (s.pushed_at_ms == pushed_at_ms && s.ticket != ticket)
        });
        if newer {
            let vt = VerifyTicket { ticket, pushed_at_ms };
            self.inner.store.put_secret(&verify_ticket_name(component), &vt.encode()).await?;
            tracing::info!(component, pushed_at_ms, "verify ticket kept");
        } else {
            tracing::debug!(component, "verify ticket push already kept");
        }
        if let Some(c) = entry.component_state() {
            c.saw_ticket(pushed_at_ms);
        }
        // A component that failed for want of a (valid) ticket tries again now.
        if let Some(slot) = entry.slots.first() {
            let stuck = slot.current.load().as_ref().is_none_or(|c| !self.inner.servable(slot, c, now_ms()));
            let mut st = lock(&slot.state);
            if stuck || st.last_class == Some(FaultClass::Config) {
                st.not_before_ms = None;
                drop(st);
                slot.wake.notify_one();
            }
        }
        Ok(())
    }

    /// An `authorized` or `updateauthorized` push: kept in the store before this returns, then
    /// its code exchanged in the background (the push answer must not wait for WeChat). A push
    /// older than an `unauthorized` already kept, or whose code was exchanged, changes nothing.
    pub async fn authorization_pushed(
        &self,
        component: &str,
        authorizer: &str,
        code: &Secret,
        create_time: i64,
    ) -> Result<()> {
        self.inner.pushed_for(component, authorizer)?;
        let event_ms = create_time.saturating_mul(1000);
        let store = &self.inner.store;
        if store.get_authorizer(authorizer).await?.is_some_and(|r| r.event_ms > event_ms) {
            tracing::info!(component, authorizer, "authorization push older than what is kept; ignored");
            return Ok(());
        }
        if store.get_secret(&code_name(component, &code_digest(code.expose()))).await?.is_some() {
            tracing::debug!(component, authorizer, "authorization code already exchanged");
            return Ok(());
        }
        let pending = serde_json::to_string(&Pending { code: code.expose().to_owned(), event_ms })
            .map_err(|e| Error::Store(format!("pending authorization: {e}")))?;
        // One event per code: a later push for the same authorizer never overwrites (or has
        // deleted) an earlier one still to exchange.
        let name = pending_name(component, authorizer, &code_digest(code.expose()));
        store.put_secret(&name, &Secret::new(pending)).await?;
        let inner = Arc::clone(&self.inner);
        let (component, authorizer) = (component.to_owned(), authorizer.to_owned());
        self.inner.spawn(async move {
            if let Err(e) = inner.process_pending(&component, &authorizer, &name).await {
                tracing::warn!(component, authorizer, error = %e, "authorization not exchanged yet; retried later");
            }
        });
        Ok(())
    }

    /// An `unauthorized` push: the authorizer's refreshes stop, it leaves the live set (reads
    /// 404) and the store keeps a tombstone, so a late push cannot bring it back.
    pub async fn unauthorized_pushed(
        &self,
        component: &str,
        authorizer: &str,
        create_time: i64,
    ) -> Result<()> {
        self.inner.pushed_for(component, authorizer)?;
        let _changing = self.inner.apps_lock.lock().await;
        if let Some(e) = self.inner.registry.get(authorizer)
            && e.spec.component_of() != Some(component)
        {
            tracing::warn!(
                component,
                authorizer,
                "unauthorized push for an appid that is not this component's authorizer"
            );
            return Ok(());
        }
        let event_ms = create_time.saturating_mul(1000);
        let applied = self.inner.store.unauthorize(component, authorizer, event_ms).await?;
        // Pending authorizations older than the revocation are void; a newer one stands.
        self.inner.forget_pending(component, authorizer, Some(event_ms)).await?;
        if applied {
            self.inner.remove_app(authorizer, false).await?;
            tracing::info!(component, authorizer, "authorizer unauthorized");
        }
        Ok(())
    }

    /// Exchanges an authorization code (from the landing page or the platform's own) for the
    /// authorizer's tokens, once: a code already exchanged answers the authorizer it gave.
    pub async fn exchange_code(&self, component: &str, code: &Secret) -> Result<AuthorizerRecord> {
        self.inner.exchange(component, code, None, hub_event_ms()).await
    }

    /// A pre-auth code for an authorization URL: `(code, expires_in)`.
    pub async fn pre_auth_code(&self, component: &str) -> Result<(Secret, u64)> {
        self.inner.component(component)?;
        let token = self.get(component, CredentialKind::ComponentAccessToken).await?;
        let up = &self.inner.upstream;
        self.inner
            .call_upstream(
                component,
                api::PATH_PREAUTHCODE,
                None,
                up.create_preauthcode(component, &token.value),
            )
            .await
            .map(|r| (r.pre_auth_code, r.expires_in))
            .map_err(UpstreamError::into_error)
    }

    /// Pages through `api_get_authorizer_list` and adopts every authorizer with its refresh
    /// token (the way back for a lost one, or from another SDK).
    pub async fn import_authorizers(&self, component: &str) -> Result<ImportReport> {
        self.inner.import(component).await
    }

    /// The authorizers of `component` in the live set (appid order), `offset`/`limit` paged,
    /// with the total.
    pub fn authorizers(
        &self,
        component: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(usize, Vec<AuthorizerStatus>)> {
        self.inner.component(component)?;
        let all: Vec<_> = self
            .inner
            .registry
            .entries()
            .into_iter()
            .filter(|e| e.spec.component_of() == Some(component))
            .collect();
        let page = all
            .iter()
            .skip(offset)
            .take(limit)
            .filter_map(|e| {
                let rec = e.record()?;
                Some(AuthorizerStatus {
                    authorizer_appid: rec.authorizer_appid,
                    state: rec.state,
                    func_info: rec.func_info,
                    authorized_at_ms: rec.event_ms,
                    credentials: e.slots.iter().map(|s| self.inner.credential_status(s)).collect(),
                })
            })
            .collect();
        Ok((all.len(), page))
    }

    /// The component's token state and verify ticket age.
    pub fn component_status(&self, component: &str) -> Result<ComponentStatus> {
        let entry = self.inner.component(component)?;
        let slot = entry.slots.first().ok_or_else(|| Error::UnknownApp(component.to_owned()))?;
        let pushed = entry.component_state().and_then(ComponentState::ticket_pushed_at);
        let now = now_ms();
        let authorizers =
            self.inner.registry.entries().iter().filter(|e| e.spec.component_of() == Some(component)).count();
        Ok(ComponentStatus {
            appid: component.to_owned(),
            credential: self.inner.credential_status(slot),
            verify_ticket_pushed_at_ms: pushed,
            verify_ticket_age_secs: pushed.map(|p| (now - p) / 1000),
            verify_ticket_stale: pushed.is_none_or(|p| now - p > TICKET_STALE_MS),
            authorizers,
        })
    }

    /// The component `appid` is an authorizer of, if it is one (client scopes ask).
    pub fn component_of(&self, appid: &str) -> Option<String> {
        self.inner.registry.get(appid)?.spec.component_of().map(str::to_owned)
    }
}

impl Inner {
    /// Checks a push's component (configured) and authorizer appid (well-formed: 400 otherwise).
    fn pushed_for(&self, component: &str, authorizer: &str) -> Result<()> {
        self.component(component)?;
        check_appid(authorizer).map_err(|e| Error::Invalid(format!("AuthorizerAppid: {e}")))
    }

    /// The live entry of a configured component.
    pub(super) fn component(&self, appid: &str) -> Result<Arc<AppEntry>> {
        self.registry
            .get(appid)
            .filter(|e| matches!(e.spec.role, Role::Component { .. }))
            .ok_or_else(|| Error::UnknownApp(appid.to_owned()))
    }

    async fn stored_ticket(&self, component: &str) -> Result<Option<VerifyTicket>> {
        let stored = self.store.get_secret(&verify_ticket_name(component)).await?;
        Ok(stored.and_then(|s| {
            let t = VerifyTicket::decode(&s);
            if t.is_none() {
                tracing::warn!(component, "stored verify ticket unreadable; waiting for the next push");
            }
            t
        }))
    }

    /// Asks WeChat to push a verify ticket now, at most once a minute per component.
    async fn ask_for_ticket(&self, component: &str, secret: &Secret) {
        let Ok(entry) = self.component(component) else { return };
        let Some(state) = entry.component_state() else { return };
        let now = now_ms();
        let last = state.push_requested_at_ms.load(Ordering::Relaxed);
        if now - last < PUSH_REQUEST_EVERY_MS
            || state
                .push_requested_at_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let up = &self.upstream;
        match self
            .call_upstream(
                component,
                api::PATH_START_PUSH_TICKET,
                None,
                up.start_push_ticket(component, secret),
            )
            .await
        {
            Ok(()) => tracing::info!(component, "asked WeChat to push a verify ticket"),
            Err(e) => tracing::warn!(component, error = %e, "api_start_push_ticket failed"),
        }
    }

    /// `component_access_token` from the secret and the newest valid verify ticket.
    pub(super) async fn fetch_component_token(
        self: &Arc<Self>,
        component: &str,
        secret: &Secret,
        permit: Option<Permit>,
    ) -> std::result::Result<Fetch, FlightError> {
        let mut permit = permit;
        let ticket = self
            .stored_ticket(component)
            .await
            .map_err(|e| FlightError::other(FaultClass::Transient, format!("verify ticket: {e}")))?;
        let now = now_ms();
        if let (Some(t), Ok(entry)) = (&ticket, self.component(component))
            && let Some(c) = entry.component_state()
        {
            c.saw_ticket(t.pushed_at_ms);
        }
        let ticket = match ticket.filter(|t| t.is_valid(now)) {
            Some(t) => t,
            None => {
                // WeChat pushes at once when asked; the push may reach another node, so look
                // in the store for a little while before giving up. The permit goes back
                // first: asking takes one of its own, and waiting must not hold one.
                drop(permit.take());
                self.ask_for_ticket(component, secret).await;
                let mut found = None;
                for _ in 0..TICKET_WAIT_STEPS {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Ok(Some(t)) = self.stored_ticket(component).await
                        && t.is_valid(now_ms())
                    {
                        found = Some(t);
                        break;
                    }
                }
                found.ok_or_else(|| {
                    FlightError::other(FaultClass::Config, "no valid component_verify_ticket yet")
                })?
            }
        };
        if now - ticket.pushed_at_ms > TICKET_STALE_MS {
            tracing::warn!(
                component,
                age_secs = (now - ticket.pushed_at_ms) / 1000,
                "no verify ticket pushed for over an hour; using the last valid one"
            );
            let (inner, c, s) = (Arc::clone(self), component.to_owned(), secret.clone());
            self.spawn(async move { inner.ask_for_ticket(&c, &s).await });
        }
        let up = &self.upstream;
        match self
            .call_upstream(
                component,
                api::PATH_COMPONENT_TOKEN,
                permit,
                up.component_token(component, secret, &ticket.ticket),
            )
            .await
        {
            Ok(r) => {
                Ok(Fetch { value: r.component_access_token, expires_in: r.expires_in, refresh_token: None })
            }
            Err(e) => {
                if matches!(e.errcode().map(|c| c.code()), Some(61005 | 61006)) {
                    self.ask_for_ticket(component, secret).await;
                }
                Err(FlightError::from_upstream(e))
            }
        }
    }

    /// An authorizer's token from the component's token and the stored refresh token. A
    /// component token WeChat rejects is reported and the call made once more; a refresh token
    /// it rejects (61023) is looked up in the authorizer list once before the authorizer is
    /// marked as needing a new authorization.
    pub(super) async fn fetch_authorizer_token(
        self: &Arc<Self>,
        component: &str,
        appid: &str,
        component_token: Arc<Credential>,
        permit: Option<Permit>,
    ) -> std::result::Result<Fetch, FlightError> {
        let transient = |e: Error| FlightError::other(FaultClass::Transient, format!("store: {e}"));
        let mut permit = permit;
        let mut rt = match self.store.get_refresh_token(appid).await.map_err(transient)? {
            Some(rt) => rt,
            None => {
                // The list call takes a permit of its own.
                drop(permit.take());
                match self.recover_refresh_token(component, appid, &component_token.value, None).await? {
                    Some(rt) => rt,
                    None => {
                        self.mark_needs_reauthorization(appid).await;
                        return Err(FlightError::other(
                            FaultClass::Config,
                            "no refresh token held or listed",
                        ));
                    }
                }
            }
        };
        let mut ct = component_token;
        let (mut reported, mut recovered) = (false, false);
        let up = &self.upstream;
        loop {
            let call = up.authorizer_token(component, &ct.value, appid, &rt);
            match self.call_upstream(appid, api::PATH_AUTHORIZER_TOKEN, permit.take(), call).await {
                Ok(r) => {
                    let refresh_token = if r.authorizer_refresh_token.expose().is_empty() {
                        rt
                    } else {
                        r.authorizer_refresh_token
                    };
                    return Ok(Fetch {
                        value: r.authorizer_access_token,
                        expires_in: r.expires_in,
                        refresh_token: Some(refresh_token),
                    });
                }
                Err(e) if e.class() == FaultClass::TokenInvalid && !reported => {
                    reported = true;
                    tracing::info!(
                        component,
                        authorizer = appid,
                        "api_authorizer_token rejected the component token; reporting it"
                    );
                    ct = self
                        .report_invalid(component, CredentialKind::ComponentAccessToken, ct.value.expose())
                        .await
                        .map_err(|e| dependency_error("component_access_token", e))?;
                }
                Err(e) if e.errcode() == Some(wechat_proto::ErrCode::REFRESH_TOKEN_INVALID) => {
                    if !recovered
                        && let Some(listed) =
                            self.recover_refresh_token(component, appid, &ct.value, Some(&rt)).await?
                    {
                        recovered = true;
                        rt = listed;
                        continue;
                    }
                    self.mark_needs_reauthorization(appid).await;
                    return Err(FlightError::from_upstream(e));
                }
                Err(e) => return Err(FlightError::from_upstream(e)),
            }
        }
    }

    /// Finds `appid` in the component's authorizer list and keeps the refresh token listed
    /// there (WeChat's current one), returning it.
    ///
    /// `Ok(None)`: WeChat lists no refresh token for it, or only `refused` (the one it just
    /// turned down: nothing to recover); an error: the list could not be read (then nothing is
    /// concluded).
    async fn recover_refresh_token(
        &self,
        component: &str,
        appid: &str,
        ct: &Secret,
        refused: Option<&Secret>,
    ) -> std::result::Result<Option<Secret>, FlightError> {
        let mut offset = 0u32;
        loop {
            let page = match self.list_page(component, ct, offset).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(component, authorizer = appid, error = %e, "authorizer list unavailable for recovery");
                    let mut fe = FlightError::from_upstream(e);
                    // Not the refresh token's fault: retry as a passing fault.
                    fe.class = FaultClass::Transient;
                    return Err(fe);
                }
            };
            if let Some(entry) = page.list.iter().find(|e| e.authorizer_appid == appid) {
                let Some(rt) = entry
                    .refresh_token
                    .clone()
                    .filter(|t| !t.expose().is_empty() && refused.is_none_or(|r| !r.ct_eq(t.expose())))
                else {
                    return Ok(None);
                };
                let rec = match self.store.get_authorizer(appid).await {
                    Ok(Some(r)) if r.state.is_live() => r,
                    Ok(_) => return Ok(None),
                    Err(e) => return Err(FlightError::other(FaultClass::Transient, format!("store: {e}"))),
                };
                let rec =
                    AuthorizerRecord { state: AuthorizerState::Authorized, updated_ms: now_ms(), ..rec };
                return match self.store.put_authorizer(&rec, Some(&rt)).await {
                    Ok(true) => {
                        metrics::counter!("wxcentral_refresh_tokens_recovered_total").increment(1);
                        tracing::warn!(
                            component,
                            authorizer = appid,
                            "refresh token recovered from the authorizer list"
                        );
                        self.set_record(rec);
                        Ok(Some(rt))
                    }
                    Ok(false) => Ok(None),
                    Err(e) => Err(FlightError::other(FaultClass::Transient, format!("store: {e}"))),
                };
            }
            match next_offset(offset, &page) {
                Some(next) => offset = next,
                None => return Ok(None),
            }
        }
    }

    /// One page of the component's authorizer list.
    async fn list_page(
        &self,
        component: &str,
        ct: &Secret,
        offset: u32,
    ) -> std::result::Result<api::AuthorizerListResponse, UpstreamError> {
        let call = self.upstream.authorizer_list(component, ct, offset, LIST_PAGE);
        self.call_upstream(component, api::PATH_GET_AUTHORIZER_LIST, None, call).await
    }

    async fn mark_needs_reauthorization(&self, appid: &str) {
        let rec = match self.store.get_authorizer(appid).await {
            Ok(Some(r)) if r.state == AuthorizerState::Authorized => r,
            _ => return,
        };
        let rec =
            AuthorizerRecord { state: AuthorizerState::NeedsReauthorization, updated_ms: now_ms(), ..rec };
        match self.store.put_authorizer(&rec, None).await {
            Ok(_) => {
                tracing::error!(
                    component = rec.component_appid,
                    authorizer = appid,
                    "refresh token refused and not listed: the merchant must authorize again"
                );
                self.set_record(rec);
            }
            Err(e) => tracing::warn!(authorizer = appid, error = %e, "needs_reauthorization not recorded"),
        }
    }

    /// Puts `rec` beside the live authorizer's slots; a re-authorized one refreshes at once.
    pub(super) fn set_record(&self, rec: AuthorizerRecord) {
        let Some(entry) = self.registry.get(&rec.authorizer_appid) else { return };
        let Platform::Authorizer(held) = &entry.platform else { return };
        let now = rec.state;
        let was = std::mem::replace(&mut *lock(held), rec).state;
        if was == AuthorizerState::NeedsReauthorization && now == AuthorizerState::Authorized {
            for slot in &entry.slots {
                lock(&slot.state).not_before_ms = None;
                slot.wake.notify_one();
            }
        }
    }

    /// The tickets a component keeps for each authorizer, if it is configured here.
    fn authorizer_tickets(&self, component: &str) -> Option<Vec<TicketType>> {
        match self.component(component).ok()?.spec.role.clone() {
            Role::Component { authorizer_tickets } => Some(authorizer_tickets),
            _ => None,
        }
    }

    /// The live-set entries for `records` (those of configured components that are not
    /// tombstones and whose appid is no app here), with their records set.
    pub(super) fn authorizer_specs(&self, records: &[AuthorizerRecord]) -> Vec<(AppSpec, Origin)> {
        records
            .iter()
            .filter(|r| r.state.is_live())
            .filter_map(|r| {
                let tickets = self.authorizer_tickets(&r.component_appid)?;
                if let Some(e) = self.registry.get(&r.authorizer_appid)
                    && e.origin != Origin::Authorization
                {
                    tracing::warn!(
                        authorizer = r.authorizer_appid,
                        "an authorizer has the appid of an app here; the app wins"
                    );
                    return None;
                }
                Some((
                    AppSpec::authorizer(&r.authorizer_appid, &r.component_appid, tickets),
                    Origin::Authorization,
                ))
            })
            .collect()
    }

    /// Adds (or updates) authorizers in the live set from their records.
    ///
    /// Boxed: adding a component starts its housekeeping, which adopts authorizers, which adds
    /// entries; the future type would otherwise contain itself.
    pub(super) fn adopt_authorizers<'a>(
        self: &'a Arc<Self>,
        records: Vec<AuthorizerRecord>,
        load: Stored,
    ) -> BoxFuture<'a, Result<()>> {
        async move {
            let specs = self.authorizer_specs(&records);
            self.add_apps(specs, load).await?;
            for rec in records.into_iter().filter(|r| r.state.is_live()) {
                self.set_record(rec);
            }
            Ok(())
        }
        .boxed()
    }

    /// Authorizer entries in line with the store (after a resync or a reload of components).
    pub(super) async fn sync_authorizers_held(self: &Arc<Self>) -> Result<()> {
        let records = self.store.load_authorizers().await?;
        let live: std::collections::HashSet<&str> = records
            .iter()
            .filter(|r| r.state.is_live() && self.authorizer_tickets(&r.component_appid).is_some())
            .map(|r| r.authorizer_appid.as_str())
            .collect();
        for entry in self.registry.entries() {
            if entry.origin == Origin::Authorization && !live.contains(entry.spec.appid.as_str()) {
                self.remove_app(&entry.spec.appid, false).await?;
            }
        }
        self.adopt_authorizers(records, Stored::Each).await
    }

    /// One authorizer in line with the store (the change feed told of it).
    pub(super) async fn sync_authorizer_held(self: &Arc<Self>, appid: &str) -> Result<()> {
        match self.store.get_authorizer(appid).await? {
            Some(rec) if rec.state.is_live() && self.authorizer_tickets(&rec.component_appid).is_some() => {
                self.adopt_authorizers(vec![rec], Stored::Each).await
            }
            _ => {
                if self.registry.get(appid).is_some_and(|e| e.origin == Origin::Authorization) {
                    self.remove_app(appid, false).await?;
                }
                Ok(())
            }
        }
    }

    /// Deletes the pending authorization events of `authorizer` (those not newer than
    /// `not_after_ms`, when given).
    async fn forget_pending(
        &self,
        component: &str,
        authorizer: &str,
        not_after_ms: Option<i64>,
    ) -> Result<()> {
        let prefix = format!("{}{authorizer}:", pending_prefix(component));
        for name in self.store.list_secrets(&prefix).await? {
            let newer = match (not_after_ms, self.store.get_secret(&name).await?) {
                (Some(limit), Some(raw)) => {
                    serde_json::from_str::<Pending>(raw.expose()).is_ok_and(|p| p.event_ms > limit)
                }
                _ => false,
            };
            if !newer {
                self.store.delete_secret(&name).await?;
            }
        }
        Ok(())
    }

    /// Exchanges a pending authorization event's code and forgets the event.
    async fn process_pending(self: &Arc<Self>, component: &str, authorizer: &str, name: &str) -> Result<()> {
        let Some(raw) = self.store.get_secret(name).await? else { return Ok(()) };
        let pending: Pending = serde_json::from_str(raw.expose())
            .map_err(|e| Error::Store(format!("pending authorization unreadable: {e}")))?;
        let result =
            self.exchange(component, &Secret::new(pending.code), Some(authorizer), pending.event_ms).await;
        match result {
            Ok(_) | Err(Error::AuthorizationRevoked(_)) => self.store.delete_secret(name).await,
            Err(e) => Err(e),
        }
    }

    /// Every pending authorization event of `component`.
    async fn process_all_pending(self: &Arc<Self>, component: &str) {
        let prefix = pending_prefix(component);
        let names = match self.store.list_secrets(&prefix).await {
            Ok(n) => n,
            Err(e) => return tracing::warn!(component, error = %e, "pending authorizations not listed"),
        };
        for name in names {
            let authorizer = name[prefix.len()..].split(':').next().unwrap_or_default().to_owned();
            if let Err(e) = self.process_pending(component, &authorizer, &name).await {
                tracing::warn!(component, authorizer, error = %e, "authorization not exchanged yet; retried later");
            }
        }
    }

    /// The exchange behind [`Engine::exchange_code`]; `known` is the authorizer a push named
    /// (then a code WeChat no longer takes, because a crash lost the first exchange's answer,
    /// is recovered through the authorizer list), `event_ms` orders it against tombstones.
    async fn exchange(
        self: &Arc<Self>,
        component: &str,
        code: &Secret,
        known: Option<&str>,
        event_ms: i64,
    ) -> Result<AuthorizerRecord> {
        let entry = self.component(component)?;
        let state = entry.component_state().ok_or_else(|| Error::UnknownApp(component.to_owned()))?;
        let digest = code_digest(code.expose());
        let marker = code_name(component, &digest);
        let _one = state.exchanges.lock().await;
        if let Some(done) = self.exchanged(&marker).await? {
            return Ok(done);
        }
        // Another node may be exchanging the same code: its lease keeps us from a second call.
        let lease_name = format!("exchange:{component}:{digest}");
        let ttl = self.upstream.timeout() * 3 + Duration::from_secs(5);
        let deadline = tokio::time::Instant::now() + ttl + Duration::from_secs(1);
        let exchange_lease = loop {
            if let Some(l) = self.store.try_lease(&lease_name, &self.config.node_id, ttl).await? {
                break l;
            }
            if let Some(done) = self.exchanged(&marker).await? {
                return Ok(done);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Upstream("the code is being exchanged elsewhere".into()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let result = match self.exchanged(&marker).await {
            Ok(None) => self.exchange_held(component, code, known, event_ms, &digest).await,
            Ok(Some(done)) => Ok(done),
            Err(e) => Err(e),
        };
        self.release(&exchange_lease).await;
        result
    }

    /// The authorizer a code was exchanged for, if it was; an error if it was revoked since
    /// (the code is spent, and answering with the authorizer would say it is live).
    async fn exchanged(&self, marker: &str) -> Result<Option<AuthorizerRecord>> {
        let Some(appid) = self.store.get_secret(marker).await? else { return Ok(None) };
        match self.store.get_authorizer(appid.expose()).await? {
            Some(r) if !r.state.is_live() => Err(Error::AuthorizationRevoked(r.authorizer_appid)),
            held => Ok(held),
        }
    }

    async fn exchange_held(
        self: &Arc<Self>,
        component: &str,
        code: &Secret,
        known: Option<&str>,
        event_ms: i64,
        digest: &str,
    ) -> Result<AuthorizerRecord> {
        let wait = self.config.read_wait + self.upstream.timeout();
        let mut ct = self.get(component, CredentialKind::ComponentAccessToken, wait).await?;
        let up = &self.upstream;
        let fetched_at = now_ms();
        let mut answer = self
            .call_upstream(component, api::PATH_QUERY_AUTH, None, up.query_auth(component, &ct.value, code))
            .await;
        if answer.as_ref().is_err_and(|e| e.class() == FaultClass::TokenInvalid) {
            ct = self
                .report_invalid(component, CredentialKind::ComponentAccessToken, ct.value.expose())
                .await?;
            answer = self
                .call_upstream(
                    component,
                    api::PATH_QUERY_AUTH,
                    None,
                    up.query_auth(component, &ct.value, code),
                )
                .await;
        }
        let info = match answer {
            Ok(r) => r.authorization_info,
            Err(e) => {
                // Only a code WeChat no longer takes (used, expired, invalid) says the first
                // exchange happened; anything else keeps the event for a later try.
                let code_gone = matches!(e.errcode().map(|c| c.code()), Some(61009 | 61010 | 40029));
                let Some(appid) = known.filter(|_| code_gone) else {
                    return Err(e.into_error());
                };
                // Most likely a first exchange whose answer a crash lost: WeChat's list has
                // the authorizer with its refresh token.
                tracing::warn!(component, authorizer = appid, error = %e, "authorization code refused; recovering the authorizer from the list");
                return self.recover_one(component, appid, &ct.value, event_ms, digest).await;
            }
        };
        let appid = info.authorizer_appid.clone();
        check_appid(&appid)
            .map_err(|e| Error::Upstream(format!("api_query_auth answered a bad appid: {e}")))?;
        if let Some(e) = self.registry.get(&appid)
            && (e.origin != Origin::Authorization || e.spec.component_of() != Some(component))
        {
            return Err(Error::AppConflict(format!(
                "authorizer {appid} is already an app or another component's authorizer here"
            )));
        }
        // Event stamps order an authorization against revocations; against a live record
        // (an earlier authorization, or this one's push) this one is simply the latest.
        let event_ms = match self.store.get_authorizer(&appid).await? {
            Some(held) if held.state.is_live() && held.component_appid == component => {
                event_ms.max(held.event_ms)
            }
            _ => event_ms,
        };
        let record = AuthorizerRecord {
            component_appid: component.to_owned(),
            authorizer_appid: appid.clone(),
            state: AuthorizerState::Authorized,
            func_info: info.func_info.iter().map(|f| f.funcscope_category.id).collect(),
            event_ms,
            updated_ms: now_ms(),
        };
        let key = CredentialKey::new(&appid, CredentialKind::AccessToken);
        let new = NewCredential {
            value: info.authorizer_access_token,
            expires_at_ms: fetched_at
                .saturating_add(i64::try_from(info.expires_in.min(86_399)).unwrap_or(0) * 1000),
            fetched_at_ms: fetched_at,
        };
        let write = AuthorizerWrite {
            refresh_token: &info.authorizer_refresh_token,
            record: Some(&record),
            code_digest: Some(digest),
        };
        // The token is written fenced under the authorizer's refresh lease, like any refresh.
        let lease_name = format!("{}{}", crate::store::lease_prefix(&appid), CredentialKind::AccessToken);
        let ttl = self.upstream.timeout() + Duration::from_secs(5);
        let mut written = None;
        for _ in 0..25 {
            if let Some(lease) = self.store.try_lease(&lease_name, &self.config.node_id, ttl).await? {
                written = self.store.put_authorizer_token(&key, &new, &lease, write).await?;
                if written.is_none() {
                    self.release(&lease).await;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if written.is_none() {
            // A newer record (a tombstone) refused it, or the lease stayed held: keep the
            // refresh token at least, unless unauthorized since.
            if !self.store.put_authorizer(&record, Some(&info.authorizer_refresh_token)).await? {
                return Err(Error::AuthorizationRevoked(appid));
            }
            self.store.put_secret(&code_name(component, digest), &Secret::new(appid.clone())).await?;
        }
        tracing::info!(component, authorizer = appid, func_info = ?record.func_info, "authorizer authorized");
        {
            // From the store, under the lock: an `unauthorized` that landed since stands.
            let _changing = self.apps_lock.lock().await;
            self.sync_authorizer_held(&appid).await?;
        }
        self.store.delete_secret(&pending_name(component, &appid, digest)).await?;
        Ok(record)
    }

    /// Adopts one authorizer from the list (its code, whose digest is `digest`, could not be
    /// exchanged again) and marks the code exchanged, so WeChat's retries of the push that
    /// brought it change nothing.
    async fn recover_one(
        self: &Arc<Self>,
        component: &str,
        appid: &str,
        ct: &Secret,
        event_ms: i64,
        digest: &str,
    ) -> Result<AuthorizerRecord> {
        let held = self.store.get_authorizer(appid).await?.filter(|r| r.component_appid == component);
        let rec = AuthorizerRecord {
            component_appid: component.to_owned(),
            authorizer_appid: appid.to_owned(),
            state: AuthorizerState::Authorized,
            func_info: held.map(|h| h.func_info).unwrap_or_default(),
            event_ms,
            updated_ms: now_ms(),
        };
        if !self.store.put_authorizer(&rec, None).await? {
            return Err(Error::AuthorizationRevoked(appid.to_owned()));
        }
        let rt = self
            .recover_refresh_token(component, appid, ct, None)
            .await
            .map_err(|e| Error::Upstream(format!("authorizer list: {}", e.short)))?;
        if rt.is_none() {
            self.mark_needs_reauthorization(appid).await;
        }
        self.store.put_secret(&code_name(component, digest), &Secret::new(appid.to_owned())).await?;
        let _changing = self.apps_lock.lock().await;
        self.sync_authorizer_held(appid).await?;
        Ok(self.store.get_authorizer(appid).await?.unwrap_or(rec))
    }

    async fn import(self: &Arc<Self>, component: &str) -> Result<ImportReport> {
        self.component(component)?;
        let wait = self.config.read_wait + self.upstream.timeout();
        let ct = self.get(component, CredentialKind::ComponentAccessToken, wait).await?;
        let mut report = ImportReport::default();
        let mut offset = 0u32;
        loop {
            let page =
                self.list_page(component, &ct.value, offset).await.map_err(UpstreamError::into_error)?;
            let mut writes = Vec::new();
            for entry in &page.list {
                report.listed += 1;
                let appid = entry.authorizer_appid.as_str();
                if check_appid(appid).is_err()
                    || self.registry.get(appid).is_some_and(|e| e.origin != Origin::Authorization)
                {
                    report.skipped += 1;
                    continue;
                }
                let held = self.store.get_authorizer(appid).await?;
                let held_rt = self.store.get_refresh_token(appid).await?;
                let listed_rt = entry.refresh_token.clone().filter(|t| !t.expose().is_empty());
                let (now, seen) = (now_ms(), hub_event_ms());
                let base = AuthorizerRecord {
                    component_appid: component.to_owned(),
                    authorizer_appid: appid.to_owned(),
                    state: AuthorizerState::Authorized,
                    func_info: held.as_ref().map(|h| h.func_info.clone()).unwrap_or_default(),
                    // Listed means authorized when the page was read; a revocation pushed
                    // since (a tombstone newer than the allowance) is newer than that and stands.
                    event_ms: held
                        .as_ref()
                        .map_or(seen, |h| if h.state.is_live() { h.event_ms.max(seen) } else { seen }),
                    updated_ms: now,
                };
                match (listed_rt, held_rt) {
                    (Some(l), Some(h))
                        if l.ct_eq(h.expose()) && held.as_ref().is_some_and(|r| r.state.is_live()) =>
                    {
                        report.unchanged += 1;
                    }
                    (Some(l), _) => writes.push((base, Some(l))),
                    (None, Some(_)) if held.as_ref().is_some_and(|r| r.state.is_live()) => {
                        report.unchanged += 1;
                    }
                    (None, _) => {
                        report.without_refresh_token += 1;
                        writes.push((
                            AuthorizerRecord { state: AuthorizerState::NeedsReauthorization, ..base },
                            None,
                        ));
                    }
                }
            }
            for (ok, (_, rt)) in self.store.put_authorizers(&writes).await?.into_iter().zip(&writes) {
                match (ok, rt) {
                    (true, Some(_)) => report.adopted += 1,
                    (true, None) => {}
                    (false, _) => report.skipped += 1,
                }
            }
            match next_offset(offset, &page) {
                Some(next) => offset = next,
                None => break,
            }
        }
        {
            // From the store, under the lock: what was unauthorized meanwhile stays out.
            let _changing = self.apps_lock.lock().await;
            self.sync_authorizers_held().await?;
        }
        tracing::info!(component, ?report, "authorizers imported from the authorizer list");
        Ok(report)
    }

    /// A component's housekeeping: pending authorizations, the import of an empty store once
    /// its token is there, and asking for a ticket when pushes stopped.
    pub(super) async fn run_component(self: Arc<Self>, component: String, cancel: CancellationToken) {
        if let (Ok(Some(t)), Ok(entry)) = (self.stored_ticket(&component).await, self.component(&component))
            && let Some(c) = entry.component_state()
        {
            c.saw_ticket(t.pushed_at_ms);
        }
        loop {
            if let (Ok(Some(t)), Ok(entry)) =
                (self.stored_ticket(&component).await, self.component(&component))
                && let Some(c) = entry.component_state()
            {
                // Another node may be the one WeChat pushes to.
                c.saw_ticket(t.pushed_at_ms);
            }
            self.process_all_pending(&component).await;
            if let Ok(entry) = self.component(&component)
                && let (Some(state), Role::Component { .. }) = (entry.component_state(), &entry.spec.role)
            {
                if !state.imported.load(Ordering::Relaxed) {
                    let empty = match self.store.load_authorizers().await {
                        Ok(all) => !all.iter().any(|r| r.component_appid == component),
                        Err(_) => false,
                    };
                    let done = if empty {
                        match self.import(&component).await {
                            Ok(_) => true,
                            Err(e) => {
                                tracing::info!(component, error = %e, "first import from the authorizer list not done yet");
                                false
                            }
                        }
                    } else {
                        true
                    };
                    state.imported.store(done, Ordering::Relaxed);
                }
                let stale = state.ticket_pushed_at().is_none_or(|p| now_ms() - p > TICKET_STALE_MS);
                if stale {
                    self.ask_for_ticket(&component, &entry.spec.secret).await;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(HOUSEKEEPING_EVERY) => {}
                () = cancel.cancelled() => return,
            }
        }
    }
}
