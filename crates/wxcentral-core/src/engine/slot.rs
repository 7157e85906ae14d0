//! A credential's slot: the value served (read without a lock), its bookkeeping, and the one
//! place a value becomes current ([`Inner::install_observed`]).

use super::*;

/// Why non-forced refreshes are held back for a while.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Gate {
    /// A refresh failed; retry after the backoff.
    Backoff,
    /// WeChat just returned the value already held (stable token outside its rotation window,
    /// a ticket before its expiry): asking again at once would get the same answer.
    Unchanged,
}

#[derive(Default)]
pub(super) struct SlotState {
    /// When the loop refreshes the current value (expiry − margin − jitter).
    pub(super) planned_refresh_ms: Option<i64>,
    /// Non-forced refreshes wait until then.
    pub(super) not_before_ms: Option<(i64, Gate)>,
    pub(super) failures: u32,
    pub(super) last_error: Option<String>,
    pub(super) last_class: Option<FaultClass>,
    /// A refresh was attempted since start (`startup` vs `expired` reasons).
    pub(super) attempted: bool,
    /// Where WeChat's real expiry of the value with that version lies, from the answers that
    /// carried it (only kept for values that stay the same until they expire).
    pub(super) window: Option<(u64, ExpiryWindow)>,
    /// Guarded reports ([`Engine::report_suspect`]) that reached the engine: the WeChat day,
    /// how many that day, and the version the last one was about (a burst about one value
    /// counts once).
    pub(super) suspects: Option<(String, u32, u64)>,
}

pub(super) struct Slot {
    pub(super) key: CredentialKey,
    pub(super) source: Source,
    pub(super) current: ArcSwapOption<Credential>,
    /// Version of the last installed value, for waiters and subscribers.
    pub(super) published: watch::Sender<u64>,
    pub(super) inflight: Mutex<Option<(u64, Flight)>>,
    pub(super) state: Mutex<SlotState>,
    /// Version + 1 of the value WeChat confirmed in its refresh window to have no successor
    /// before it expires (0: none). Atomic because every read checks it and reads take no lock.
    pub(super) confirmed: AtomicU64,
    /// Wakes the refresh loop to recompute its schedule.
    pub(super) wake: Notify,
    /// Cancelled when the app leaves the live set (or the engine stops): the loop ends, a
    /// refresh in flight is dropped and nothing it fetched is written or installed.
    pub(super) cancel: CancellationToken,
    /// What the caller derived from the current value (the HTTP layer's rendered body), kept
    /// until the value changes: see [`Engine::get_memo`].
    pub(super) memo: ArcSwapOption<Memo>,
    pub(super) counters: SlotCounters,
    /// Digests of this slot's values in the token index, oldest first.
    pub(super) indexed: Mutex<Vec<index::TokenDigest>>,
}

/// A value derived from one credential value.
pub(super) struct Memo {
    pub(super) cred: Arc<Credential>,
    pub(super) value: Box<dyn std::any::Any + Send + Sync>,
}

impl Slot {
    pub(super) fn new(key: CredentialKey, source: Source, cancel: CancellationToken) -> Self {
        Self {
            key,
            source,
            current: ArcSwapOption::empty(),
            published: watch::Sender::new(0),
            inflight: Mutex::new(None),
            state: Mutex::new(SlotState::default()),
            confirmed: AtomicU64::new(0),
            wake: Notify::new(),
            cancel,
            memo: ArcSwapOption::empty(),
            counters: SlotCounters::default(),
            indexed: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn version(&self) -> Option<u64> {
        self.current.load().as_ref().map(|c| c.version)
    }

    pub(super) fn is_confirmed(&self, version: u64) -> bool {
        self.source.same_until_expiry() && self.confirmed.load(Ordering::Acquire) == version.wrapping_add(1)
    }

    pub(super) fn confirm(&self, version: u64) {
        self.confirmed.store(version.wrapping_add(1), Ordering::Release);
    }
}

impl Inner {
    pub(super) fn margins(&self, slot: &Slot, cred: &Credential) -> Margins {
        let rotate = match slot.source {
            Source::Token { api: TokenApi::Stable, .. } => Some(
                i64::try_from(self.config.stable_rotate_secs).unwrap_or(i64::MAX / 1000).saturating_mul(1000),
            ),
            _ => None,
        };
        policy::margins(
            lifetime_of(cred),
            self.config.refresh_before_secs,
            self.config.serve_margin_secs,
            rotate,
        )
    }

    /// `cred` with the expiry promised to clients set (see [`Credential::valid_until_ms`]).
    pub(super) fn with_promise(&self, slot: &Slot, mut cred: Credential) -> Arc<Credential> {
        cred.valid_until_ms = if slot.source.kills_predecessor() {
            let overlap_ms =
                i64::try_from(self.config.token_overlap_secs).unwrap_or(i64::MAX / 1000).saturating_mul(1000);
            policy::promised_until(cred.expires_at_ms, self.margins(slot, &cred), overlap_ms)
        } else {
            cred.expires_at_ms
        };
        Arc::new(cred)
    }

    /// The last moment `cred` is handed out (rule 2, with the confirmed-value guard).
    pub(super) fn serve_end(&self, slot: &Slot, cred: &Credential) -> i64 {
        let m = self.margins(slot, cred);
        policy::serve_end(cred.expires_at_ms, m, lifetime_of(cred), slot.is_confirmed(cred.version))
    }

    pub(super) fn servable(&self, slot: &Slot, cred: &Credential, now: i64) -> bool {
        now < self.serve_end(slot, cred)
    }

    /// Whether `cred` already answers a caller who wants a refresh for `reason` and saw `seen`.
    pub(super) fn satisfies(
        &self,
        slot: &Slot,
        reason: Reason,
        seen: Option<u64>,
        cred: &Credential,
        now: i64,
    ) -> bool {
        self.servable(slot, cred, now)
            && match reason {
                Reason::Startup | Reason::Expired => true,
                Reason::Proactive | Reason::InvalidReport => Some(cred.version) != seen,
                Reason::Forced => false,
            }
    }

    pub(super) fn unavailable(&self, slot: &Slot, retry_after_ms: i64, reason: Option<String>) -> Error {
        Error::Unavailable {
            appid: slot.key.appid.clone(),
            kind: slot.key.kind,
            retry_after: ms(retry_after_ms.max(1000)),
            reason,
        }
    }

    /// [`Inner::install_observed`] for a value whose fetch we did not see (loaded, adopted).
    pub(super) fn install(&self, slot: &Arc<Slot>, cred: Arc<Credential>) -> Arc<Credential> {
        self.install_observed(slot, cred, None)
    }

    /// Makes `cred` current unless a newer version is held, resets the failure state, plans the
    /// next proactive refresh and tells waiters. Returns what is current afterwards. `fetched`
    /// is what the fetch that produced `cred` said about its expiry; for values that stay the
    /// same until they expire it times the check in the refresh window
    /// ([`policy::aligned_check_at`]).
    pub(super) fn install_observed(
        &self,
        slot: &Arc<Slot>,
        cred: Arc<Credential>,
        fetched: Option<ExpiryWindow>,
    ) -> Arc<Credential> {
        // The one place a value becomes current. The compare and the swap happen under the
        // slot's state lock, so of any installs racing (own fetch, change feed, adoption before
        // a refresh) the newest version wins whatever their order.
        let mut st = lock(&slot.state);
        if let Some(cur) = slot.current.load_full()
            && cur.version >= cred.version
        {
            return cur;
        }
        let cred = self.with_promise(slot, Arc::unwrap_or_clone(cred));
        let m = self.margins(slot, &cred);
        let jitter = policy::jitter_ms(m, &mut rand::thread_rng());
        let window = fetched.filter(|_| slot.source.same_until_expiry());
        let planned = policy::refresh_at(cred.expires_at_ms, m, jitter);
        let planned = window.map_or(planned, |w| policy::aligned_check_at(planned, w));
        slot.current.store(Some(Arc::clone(&cred)));
        self.index.record(slot, &cred);
        st.planned_refresh_ms = Some(planned);
        st.not_before_ms = None;
        st.failures = 0;
        st.last_error = None;
        st.last_class = None;
        st.window = window.map(|w| (cred.version, w));
        drop(st);
        slot.published.send_replace(cred.version);
        slot.wake.notify_one();
        cred
    }

    /// Installs a stored value newer than the one held (another node refreshed, or a late
    /// write of ours lost), returning it.
    pub(super) fn adopt_if_newer(
        &self,
        slot: &Arc<Slot>,
        stored: Option<Credential>,
    ) -> Option<Arc<Credential>> {
        let s = stored?;
        if slot.version().is_some_and(|v| v >= s.version) {
            return None;
        }
        tracing::info!(
            appid = slot.key.appid,
            kind = %slot.key.kind,
            version = s.version,
            expires_in = (s.expires_at_ms - now_ms()) / 1000,
            "adopted a newer value from the store"
        );
        Some(self.install(slot, Arc::new(s)))
    }

    /// Books a failed refresh: backoff, status and metrics.
    pub(super) fn record_failure(&self, slot: &Slot, mut e: FlightError) -> FlightError {
        let now = now_ms();
        let cur = slot.current.load_full();
        let lifetime_ms = cur.as_ref().map_or(7_200_000, |c| lifetime_of(c));
        let servable_left_ms = cur.as_ref().and_then(|c| {
            let end = self.serve_end(slot, c);
            (end > now).then_some(end - now)
        });
        let mut st = lock(&slot.state);
        st.failures = st.failures.saturating_add(1);
        let failure = Failure {
            class: e.class,
            attempt: st.failures,
            lifetime_ms,
            servable_left_ms,
            until_next_day_ms: ms_until_next_day(now),
        };
        let delay = policy::jittered_backoff_ms(failure, &mut rand::thread_rng());
        e.retry_at_ms = now + delay;
        st.not_before_ms = Some((e.retry_at_ms, Gate::Backoff));
        st.last_error = Some(e.short.clone());
        st.last_class = Some(e.class);
        let failures = st.failures;
        drop(st);
        slot.counters.failed(e.class);
        let stopped = e.class.stops_retries();
        tracing::warn!(
            appid = slot.key.appid,
            kind = %slot.key.kind,
            class = e.class.as_str(),
            error = e.short,
            failures,
            retry_in_ms = delay,
            serving = servable_left_ms.is_some(),
            stopped,
            "credential refresh failed"
        );
        e
    }
}
