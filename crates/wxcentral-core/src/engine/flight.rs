//! Single flight: one refresh per credential at a time, in this process (a shared future) and
//! across processes (the store's fenced lease), and how a fetched value lands.

use super::*;

/// Why a refresh ran; the `reason` label of `wxcentral_refreshes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reason {
    /// The first fetch of a credential nothing valid was loaded for.
    Startup,
    /// The value nears expiry.
    Proactive,
    /// A caller reported the current value rejected.
    InvalidReport,
    /// An admin asked.
    Forced,
    /// A read found nothing valid (or the loop did, after startup).
    Expired,
}

impl Reason {
    pub(super) const ALL: [Self; 5] =
        [Self::Startup, Self::Proactive, Self::InvalidReport, Self::Forced, Self::Expired];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Startup => "startup",
            Self::Proactive => "proactive",
            Self::InvalidReport => "invalid_report",
            Self::Forced => "forced",
            Self::Expired => "expired",
        }
    }
}

#[derive(Clone)]
pub(super) struct Fetched {
    pub(super) cred: Arc<Credential>,
    pub(super) rotated: bool,
}

/// A failed refresh as every caller sharing it sees it. No secret inside.
#[derive(Clone, Debug)]
pub(super) struct FlightError {
    pub(super) class: FaultClass,
    /// Short reason for `Unavailable` and status (`errcode 45009`, `timeout`, ...).
    pub(super) short: String,
    /// The upstream error when WeChat (or the way to it) failed, for explicit refreshes.
    pub(super) upstream: Option<UpstreamError>,
    /// When the next attempt is allowed.
    pub(super) retry_at_ms: i64,
}

impl FlightError {
    pub(super) fn from_upstream(e: UpstreamError) -> Self {
        Self { class: e.class(), short: e.short(), upstream: Some(e), retry_at_ms: 0 }
    }

    pub(super) fn other(class: FaultClass, short: impl Into<String>) -> Self {
        Self { class, short: short.into(), upstream: None, retry_at_ms: 0 }
    }
}

pub(super) type FlightResult = std::result::Result<Fetched, FlightError>;

pub(super) type Flight = Shared<BoxFuture<'static, FlightResult>>;

pub(super) enum Begin {
    /// A value that satisfies the caller is already there.
    Ready(Arc<Credential>),
    /// A refresh is in flight; `created` if this call started it.
    Join { flight: Flight, created: bool },
    /// Refreshes are held back until then.
    Gated { until_ms: i64, gate: Gate, reason: Option<String> },
}

/// The longest lifetime believed from an answer (exclusive).
pub(super) const MAX_EXPIRES_IN_SECS: u64 = 86_400;

/// How much earlier than the held expiry WeChat may report the same value's expiry before we
/// believe it: its whole-second rounding plus a generous round trip.
pub(super) const UNCHANGED_EXPIRY_SLACK_MS: i64 = 2_000;

pub(super) enum LeaseOutcome {
    Held(Lease),
    /// No lease to be had (store trouble, or a holder that never finished).
    Unavailable(String),
    /// The holder's value arrived while waiting.
    Adopted(Arc<Credential>),
}

impl Inner {
    /// Joins the refresh in flight or starts one, unless a value already satisfies the caller
    /// or refreshes are held back. The check and the start happen under the slot's `inflight`
    /// lock, and a flight installs its value before it leaves that slot, so a caller either
    /// sees the new value or joins the flight producing it: never a second fetch.
    pub(super) fn begin(self: &Arc<Self>, slot: &Arc<Slot>, reason: Reason, seen: Option<u64>) -> Begin {
        let now = now_ms();
        let mut inflight = lock(&slot.inflight);
        if let Some(c) = slot.current.load_full()
            && self.satisfies(slot, reason, seen, &c, now)
        {
            return Begin::Ready(c);
        }
        if let Some((_, flight)) = inflight.as_ref() {
            return Begin::Join { flight: flight.clone(), created: false };
        }
        let mut reason = reason;
        if reason != Reason::Forced {
            let st = lock(&slot.state);
            if reason == Reason::Expired && !st.attempted {
                reason = Reason::Startup;
            }
            if let Some((until_ms, gate)) = st.not_before_ms
                && until_ms > now
            {
                return Begin::Gated { until_ms, gate, reason: st.last_error.clone() };
            }
        }
        lock(&slot.state).attempted = true;
        let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
        let task = self.runtime.spawn(Arc::clone(self).run_flight(Arc::clone(slot), reason, seen, id));
        let (inner, owner) = (Arc::clone(self), Arc::clone(slot));
        let flight: Flight = async move {
            match task.await {
                Ok(result) => result,
                // A panic skipped run_flight's own cleanup: clear the flight and back off, or
                // every caller would join this finished flight forever.
                Err(e) => {
                    let err = FlightError::other(FaultClass::Transient, format!("refresh task: {e}"));
                    let err = inner.record_failure(&owner, err);
                    let mut inflight = lock(&owner.inflight);
                    if inflight.as_ref().is_some_and(|(i, _)| *i == id) {
                        *inflight = None;
                    }
                    drop(inflight);
                    owner.wake.notify_one();
                    Err(err)
                }
            }
        }
        .boxed()
        .shared();
        *inflight = Some((id, flight.clone()));
        Begin::Join { flight, created: true }
    }

    pub(super) async fn run_flight(
        self: Arc<Self>,
        slot: Arc<Slot>,
        reason: Reason,
        seen: Option<u64>,
        id: u64,
    ) -> FlightResult {
        let result = tokio::select! {
            r = self.refresh(&slot, reason, seen) => r.map_err(|e| self.record_failure(&slot, e)),
            // Not a failure of the credential: nothing to book or back off from.
            () = slot.cancel.cancelled() => Err(FlightError {
                retry_at_ms: now_ms() + 1000,
                ..FlightError::other(FaultClass::Transient, "shutting down")
            }),
        };
        {
            let mut inflight = lock(&slot.inflight);
            if inflight.as_ref().is_some_and(|(i, _)| *i == id) {
                *inflight = None;
            }
        }
        slot.wake.notify_one();
        result
    }

    /// One refresh: adopt a newer stored value if there is one, else take the lease, fetch,
    /// write under the lease and install.
    pub(super) async fn refresh(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        reason: Reason,
        seen: Option<u64>,
    ) -> FlightResult {
        let key = &slot.key;
        if self.store.unreachable() {
            return self.refresh_alone(slot, reason).await;
        }
        let stored = match self.store.get_credential(key).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(appid = key.appid, kind = %key.kind, error = %e, "store read failed before refresh");
                None
            }
        };
        if let Some(s) = self.adopt_if_newer(slot, stored.clone())
            && self.satisfies(slot, reason, seen, &s, now_ms())
        {
            return Ok(Fetched { cred: s, rotated: true });
        }
        // A token fetch is one call: its place in the limiter's queue comes before the lease, so
        // the lease is not spent waiting. A ticket first needs the token (its own refresh, with
        // its own permit), so it queues inside the fetch.
        let prepared = self.prepare(slot).await?;
        let permit = if slot.source.is_token() { Some(self.limiter.acquire().await) } else { None };
        let lease = match self.take_lease(slot, reason, seen).await {
            LeaseOutcome::Adopted(c) => return Ok(Fetched { cred: c, rotated: true }),
            LeaseOutcome::Held(grant) => Some(grant),
            LeaseOutcome::Unavailable(why) if slot.source.kills_predecessor() => {
                return Err(FlightError::other(FaultClass::Transient, why));
            }
            LeaseOutcome::Unavailable(why) => {
                tracing::warn!(appid = key.appid, kind = %key.kind, reason = why, "refreshing without the lease; the value stays in this node's memory");
                None
            }
        };
        let highest = [slot.version(), stored.map(|s| s.version)].into_iter().flatten().max();
        let fetched_at = now_ms();
        let mut lease = lease;
        let result = match self.fetch(slot, reason, permit, prepared).await {
            Ok(fetch) => self.land(slot, reason, fetch, fetched_at, highest, &mut lease).await,
            Err(e) => {
                // A fetch that failed may have outlived its lease (this node stalled, or the
                // call was slow) while another node refreshed: what this node holds may be the
                // value that refresh replaced. Look before answering, instead of waiting for
                // the change feed to say so.
                if lease.is_some()
                    && let Ok(stored) = self.store.get_credential(key).await
                {
                    self.adopt_if_newer(slot, stored);
                }
                Err(e)
            }
        };
        // A write under the lease ended it (`land` took it); otherwise let go now.
        if let Some(grant) = lease {
            self.release(&grant).await;
        }
        result
    }

    /// A refresh while the store is known to be unreachable: what may be fetched without the
    /// lease (stable tokens, tickets: WeChat hands every caller the same) is, and kept in this
    /// node's memory; a token whose fetch kills the value other nodes hold is not, and the
    /// node keeps serving what it has.
    async fn refresh_alone(self: &Arc<Self>, slot: &Arc<Slot>, reason: Reason) -> FlightResult {
        if slot.source.kills_predecessor() {
            return Err(FlightError::other(FaultClass::Transient, "store unreachable: no refresh lease"));
        }
        tracing::warn!(appid = slot.key.appid, kind = %slot.key.kind, "store unreachable; refreshing without the lease, the value stays in this node's memory");
        let prepared = self.prepare(slot).await?;
        let permit = if slot.source.is_token() { Some(self.limiter.acquire().await) } else { None };
        let fetched_at = now_ms();
        let fetch = self.fetch(slot, reason, permit, prepared).await?;
        self.land(slot, reason, fetch, fetched_at, None, &mut None).await
    }

    pub(super) async fn release(&self, lease: &Lease) {
        if let Err(e) = self.store.release_lease(lease).await {
            tracing::warn!(lease = lease.name, error = %e, "lease release failed; it expires by itself");
        }
    }

    /// Our write came after a newer grant of the lease: the value we fetched is not the one
    /// the cluster keeps. Adopt what the store holds and count the refusal.
    pub(super) async fn late_write(&self, slot: &Arc<Slot>) -> FlightError {
        let key = &slot.key;
        metrics::counter!("wxcentral_late_writes_refused_total", "kind" => key.kind.as_str()).increment(1);
        tracing::warn!(appid = key.appid, kind = %key.kind, "refresh lease lost before the write; the fetched value is dropped");
        if let Ok(stored) = self.store.get_credential(key).await {
            self.adopt_if_newer(slot, stored);
        }
        FlightError::other(FaultClass::Transient, "refresh lease lost before the write")
    }

    /// Long enough for one refresh to finish: the upstream call (a ticket first waits for
    /// the access token, then may retry once after a rejected token) and the store write.
    pub(super) fn lease_ttl(&self, slot: &Slot) -> Duration {
        let call = self.upstream.timeout();
        let slack = Duration::from_secs(5);
        match slot.source {
            Source::Token { .. } => call + slack,
            // A missing verify ticket asks WeChat to push one and waits a moment for it.
            Source::Component { .. } => call * 2 + Duration::from_secs(3) + slack,
            // A refresh token WeChat refuses is looked up in the authorizer list (a page or
            // a few) before the one retry.
            Source::Authorizer { .. } => call * 6 + slack,
            Source::Ticket(_) => self.config.read_wait + call * 3 + slack,
        }
    }

    /// Takes the slot's refresh lease, waiting while another node holds it: that node's value
    /// usually arrives meanwhile (through the change feed) and is adopted instead of fetching.
    pub(super) async fn take_lease(
        &self,
        slot: &Arc<Slot>,
        reason: Reason,
        seen: Option<u64>,
    ) -> LeaseOutcome {
        let name = format!("{}{}", crate::store::lease_prefix(&slot.key.appid), slot.key.kind);
        let ttl = self.lease_ttl(slot);
        let poll = Duration::from_millis(200);
        let deadline = tokio::time::Instant::now() + ttl + Duration::from_secs(1);
        let mut published = slot.published.subscribe();
        let adopted = |stored: Option<Credential>| {
            self.adopt_if_newer(slot, stored);
            slot.current.load_full().filter(|c| self.satisfies(slot, reason, seen, c, now_ms()))
        };
        loop {
            match self.store.try_lease(&name, &self.config.node_id, ttl).await {
                Ok(Some(lease)) => {
                    // The look at the store must come under the lease: a holder that wrote
                    // its value and let go between our last look and this lease would
                    // otherwise be followed by a second fetch of what it just fetched.
                    if let Ok(stored) = self.store.get_credential(&slot.key).await
                        && let Some(c) = adopted(stored)
                    {
                        self.release(&lease).await;
                        return LeaseOutcome::Adopted(c);
                    }
                    return LeaseOutcome::Held(lease);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(lease = name, error = %e, "refresh lease unavailable");
                    return LeaseOutcome::Unavailable(format!(
                        "store unavailable for the refresh lease: {e}"
                    ));
                }
            }
            if let Some(c) =
                slot.current.load_full().filter(|c| self.satisfies(slot, reason, seen, c, now_ms()))
            {
                return LeaseOutcome::Adopted(c);
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(lease = name, "refresh lease still held elsewhere past its lifetime");
                return LeaseOutcome::Unavailable("refresh lease held elsewhere".into());
            }
            tokio::select! {
                _ = published.changed() => {}
                () = tokio::time::sleep(poll) => {
                    if let Ok(stored) = self.store.get_credential(&slot.key).await
                        && let Some(c) = adopted(stored)
                    {
                        return LeaseOutcome::Adopted(c);
                    }
                }
            }
        }
    }

    /// Turns a fetched value into the current one: written to the store under the lease (which
    /// versions it, and ends the lease: `lease` is taken then), installed. Without a lease (an
    /// idempotent credential while the store is unreachable) it is versioned above everything
    /// seen and kept in memory.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn land(
        &self,
        slot: &Arc<Slot>,
        reason: Reason,
        fetch: Fetch,
        fetched_at: i64,
        highest: Option<u64>,
        lease: &mut Option<Lease>,
    ) -> FlightResult {
        let Fetch { value, expires_in, refresh_token } = fetch;
        let key = &slot.key;
        if expires_in == 0 && slot.current.load().as_ref().is_none_or(|c| !c.value.ct_eq(value.expose())) {
            return Err(FlightError::other(FaultClass::Transient, "malformed response: expires_in is 0"));
        }
        // WeChat's lifetimes are two hours; a day or more is a broken answer, not a value to
        // keep (and it must not overflow the arithmetic below).
        if expires_in >= MAX_EXPIRES_IN_SECS {
            return Err(FlightError::other(
                FaultClass::Transient,
                format!("malformed response: expires_in {expires_in} is beyond a day"),
            ));
        }
        let expires_at_ms =
            fetched_at.saturating_add(i64::try_from(expires_in).unwrap_or(i64::MAX / 2000) * 1000);
        let observed = policy::observe_expiry(fetched_at, now_ms(), expires_in);
        // A refresh token that came with the answer must reach the store even if the token
        // did not change, so such an answer always goes through the write.
        if refresh_token.is_none()
            && let Some(cur) = slot.current.load_full()
            && cur.value.ct_eq(value.expose())
        {
            return Ok(self.land_unchanged(slot, reason, &cur, expires_at_ms, observed));
        }
        let highest = [highest, slot.version()].into_iter().flatten().max();
        let new = NewCredential { value, expires_at_ms, fetched_at_ms: fetched_at };
        let local_version = |fence: u64| highest.map_or(fence, |h| fence.max(h.saturating_add(1)));
        if slot.cancel.is_cancelled() {
            return Err(FlightError::other(FaultClass::Transient, "removed while refreshing"));
        }
        // Whether our lease still stands is the store's call: it refuses the write once a newer
        // grant exists (we stalled, or the fetch was slow, and another node took over).
        let cred = match lease.clone() {
            Some(ref grant) => match self.write_under(key, &new, grant, refresh_token.as_ref()).await {
                Ok(Some(written)) => {
                    lease.take();
                    written
                }
                Ok(None) => {
                    let e = self.late_write(slot).await;
                    // The node that took the lease over usually wrote already: its value is the
                    // answer to this refresh too.
                    return match slot.current.load_full() {
                        Some(c)
                            if highest.is_none_or(|h| c.version > h) && self.servable(slot, &c, now_ms()) =>
                        {
                            Ok(Fetched { cred: c, rotated: true })
                        }
                        _ => Err(e),
                    };
                }
                Err(e) => {
                    tracing::warn!(appid = key.appid, kind = %key.kind, error = %e, "store write failed; serving the new value from memory");
                    if let Some(rt) = &refresh_token {
                        // WeChat may have rotated the refresh token: it exists only here now.
                        self.write_later(key, &new, grant, rt);
                        lease.take();
                    }
                    new.with_version(local_version(grant.fence))
                }
            },
            None => new.with_version(local_version(u64::try_from(now_ms()).unwrap_or(0))),
        };
        let version = cred.version;
        let installed = self.install_observed(slot, Arc::new(cred), Some(observed));
        slot.counters.refreshed(reason);
        tracing::info!(
            appid = key.appid,
            kind = %key.kind,
            version,
            expires_in,
            reason = reason.as_str(),
            "credential refreshed"
        );
        Ok(Fetched { cred: installed, rotated: true })
    }

    /// Keeps writing a fetched authorizer token and its (possibly rotated) refresh token until
    /// the store takes it, or refuses it because a newer grant of the lease exists (then
    /// another node refreshed after us, with the refresh token the store had, and its own
    /// rotation stands). A store that was unreachable for the write may well have applied it
    /// (Redis runs what it received once it answers again); writing again under the same
    /// fence is then refused or rewrites the same values.
    fn write_later(&self, key: &CredentialKey, new: &NewCredential, lease: &Lease, refresh_token: &Secret) {
        let (store, cancel) = (Arc::clone(&self.store), self.cancel.clone());
        let (key, new, lease, rt) = (key.clone(), new.clone(), lease.clone(), refresh_token.clone());
        self.spawn(async move {
            let mut pause = Duration::from_millis(500);
            // WeChat keeps the previous refresh token working for a while after a rotation;
            // past that, the authorizer list is what recovers it.
            let until = tokio::time::Instant::now() + Duration::from_secs(600);
            while tokio::time::Instant::now() < until {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
                let write =
                    crate::authorizer::AuthorizerWrite { refresh_token: &rt, record: None, code_digest: None };
                match store.put_authorizer_token(&key, &new, &lease, write).await {
                    Ok(Some(_)) => {
                        tracing::info!(appid = key.appid, "refresh token written after the store came back");
                        return;
                    }
                    Ok(None) => {
                        tracing::info!(appid = key.appid, "refresh token superseded by a later refresh before it could be written");
                        return;
                    }
                    Err(e) => tracing::debug!(appid = key.appid, error = %e, "refresh token still not written"),
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            tracing::error!(
                appid = key.appid,
                "a refresh token WeChat returned was never written to the store; it is recovered from the authorizer list when needed"
            );
        });
    }

    /// The fenced write of a fetched value; an authorizer's refresh token goes with it.
    async fn write_under(
        &self,
        key: &CredentialKey,
        new: &NewCredential,
        lease: &Lease,
        refresh_token: Option<&Secret>,
    ) -> Result<Option<Credential>> {
        match refresh_token {
            Some(rt) => {
                let write =
                    crate::authorizer::AuthorizerWrite { refresh_token: rt, record: None, code_digest: None };
                self.store.put_authorizer_token(key, new, lease, write).await
            }
            None => self.store.put_credential(key, new, lease).await,
        }
    }

    /// WeChat answered with the value already held (a stable token outside its rotation window,
    /// a ticket before its expiry, a refused `force_refresh`, a report WeChat disagrees with).
    /// Keep it with WeChat's expiry and ask again later instead of hammering.
    ///
    /// For a value that stays the same until it expires, an answer in the refresh window is
    /// WeChat's confirmation that no successor comes before expiry: the value is then served up
    /// to the confirmed guard before expiry, and the one next fetch goes just after its latest
    /// possible expiry. Until then refreshes other than forced ones are held back: a read that
    /// finds nothing servable in the short gap waits for that fetch (within `read_wait`), and a
    /// report gets the confirmed value back.
    pub(super) fn land_unchanged(
        &self,
        slot: &Slot,
        reason: Reason,
        cur: &Arc<Credential>,
        expires_at_ms: i64,
        observed: ExpiryWindow,
    ) -> Fetched {
        let now = now_ms();
        // WeChat reports whole seconds left, rounded down, so its answer for the same value
        // lands up to a second (plus latency) before the expiry already held. Taking that would
        // shrink the lifetime the margins scale with at every unchanged answer; only an expiry
        // clearly earlier than rounding explains (a clock step, a revocation) is adopted, and a
        // later one never is.
        let mut st = lock(&slot.state);
        let cred = if expires_at_ms < cur.expires_at_ms - UNCHANGED_EXPIRY_SLACK_MS {
            let updated = self.with_promise(slot, Credential { expires_at_ms, ..(**cur).clone() });
            // Same version, so only if nothing newer was installed meanwhile.
            if slot.version() == Some(cur.version) {
                slot.current.store(Some(Arc::clone(&updated)));
            }
            updated
        } else {
            Arc::clone(cur)
        };
        let m = self.margins(slot, &cred);
        let lifetime = lifetime_of(&cred);
        let step = (lifetime / 100).max(200);
        let keeps_until_expiry = slot.source.same_until_expiry();
        let confirmed = keeps_until_expiry && policy::confirmed_in_window(cred.expires_at_ms, m, now);
        let window = keeps_until_expiry.then(|| match st.window {
            Some((v, w)) if v == cred.version => w.narrow(observed),
            _ => observed,
        });
        st.window = window.map(|w| (cred.version, w));
        if confirmed {
            slot.confirm(cred.version);
        }
        let serve_end = self.serve_end(slot, &cred);
        let servable = serve_end > now;
        let after_expiry = cred.expires_at_ms.max(now) + 500;
        // The proactive plan, for answers that came before it (a report, a refused
        // force_refresh).
        let planned = st
            .planned_refresh_ms
            .filter(|p| *p > now)
            .unwrap_or_else(|| policy::refresh_at(cred.expires_at_ms, m, 0))
            .max(now + step);
        let retry_at = match (&slot.source, window) {
            (_, Some(w)) if confirmed => policy::successor_fetch_at(w, now),
            // Too early to tell: the check in the refresh window is still to come.
            (_, Some(_)) => planned,
            (s, _) if s.is_token() && !servable => after_expiry,
            // The proactive refresh came too early for WeChat's rotation window: close in on
            // it at half the remaining serving time.
            (s, _) if s.is_token() && reason == Reason::Proactive => now + ((serve_end - now) / 2).max(step),
            // A report or a refused force_refresh: the proactive plan still stands.
            (s, _) if s.is_token() => planned,
            (_, _) => after_expiry,
        };
        // Reads only ask upstream when nothing is servable, so the gate matters for them only
        // then; for reports it is a short hold (WeChat just vouched for this value), or all the
        // way to the successor's fetch once WeChat confirmed there is none before.
        let hold = (lifetime / 100).clamp(1000, 30_000);
        let gate_until = if servable && !confirmed { retry_at.min(now + hold) } else { retry_at };
        st.planned_refresh_ms = Some(retry_at);
        st.not_before_ms = Some((gate_until, Gate::Unchanged));
        st.failures = 0;
        st.last_error = None;
        st.last_class = None;
        drop(st);
        tracing::info!(
            appid = slot.key.appid,
            kind = %slot.key.kind,
            version = cred.version,
            expires_in = (cred.expires_at_ms - now) / 1000,
            reason = reason.as_str(),
            confirmed,
            serve_left_ms = serve_end - now,
            retry_in_ms = retry_at - now,
            "upstream returned the value already held"
        );
        Fetched { cred, rotated: false }
    }
}
