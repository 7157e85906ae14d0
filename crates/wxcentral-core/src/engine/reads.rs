//! Reads, reports of rejected values and forced refreshes, as callers see them.

use super::*;

/// Guarded reports per credential and WeChat day that may reach the engine, as many as
/// WeChat allows `force_refresh` calls on stable tokens.
pub(super) const SUSPECT_DAILY: u32 = 20;

impl Inner {
    pub(super) async fn get(
        self: &Arc<Self>,
        appid: &str,
        kind: CredentialKind,
        wait: Duration,
    ) -> Result<Arc<Credential>> {
        let slot = self.slot(appid, kind)?;
        self.get_from(&slot, wait).await
    }

    pub(super) async fn get_from(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        wait: Duration,
    ) -> Result<Arc<Credential>> {
        if let Some(c) = slot.current.load_full()
            && self.servable(slot, &c, now_ms())
        {
            return Ok(c);
        }
        self.wait_for_value(slot, wait).await
    }

    /// The slow path of a read: join or start the refresh, and if refreshes are held back,
    /// wait for a value to land, all within `wait`.
    pub(super) async fn wait_for_value(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        wait: Duration,
    ) -> Result<Arc<Credential>> {
        let deadline = tokio::time::Instant::now() + wait;
        let deadline_ms = now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
        let mut published = slot.published.subscribe();
        let mut last_reason: Option<String> = None;
        loop {
            match self.begin(slot, Reason::Expired, None) {
                Begin::Ready(c) => return Ok(c),
                Begin::Join { flight, .. } => match tokio::time::timeout_at(deadline, flight).await {
                    Err(_) => {
                        let reason = last_reason.or_else(|| lock(&slot.state).last_error.clone());
                        return Err(self.unavailable(
                            slot,
                            1000,
                            reason.or_else(|| Some("refresh in flight".into())),
                        ));
                    }
                    Ok(Ok(f)) if self.servable(slot, &f.cred, now_ms()) => return Ok(f.cred),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => last_reason = Some(e.short),
                },
                Begin::Gated { until_ms, reason, .. } => {
                    let now = now_ms();
                    if until_ms >= deadline_ms {
                        return Err(self.unavailable(slot, until_ms - now, reason.or(last_reason)));
                    }
                    last_reason = reason.or(last_reason);
                    tokio::select! {
                        _ = published.changed() => {}
                        () = tokio::time::sleep(ms(until_ms - now)) => {}
                    }
                }
            }
        }
    }

    pub(super) async fn report_invalid(
        self: &Arc<Self>,
        appid: &str,
        kind: CredentialKind,
        value: &str,
    ) -> Result<Arc<Credential>> {
        let slot = self.slot(appid, kind)?;
        let wait = self.config.read_wait;
        let Some(cur) = slot.current.load_full() else {
            return self.wait_for_value(&slot, wait).await;
        };
        if !cur.value.ct_eq(value) {
            // Someone already replaced the reported value: no upstream call.
            if self.servable(&slot, &cur, now_ms()) {
                return Ok(cur);
            }
            return self.wait_for_value(&slot, wait).await;
        }
        let seen = Some(cur.version);
        let deadline = tokio::time::Instant::now() + wait;
        match self.begin(&slot, Reason::InvalidReport, seen) {
            Begin::Ready(c) => Ok(c),
            Begin::Join { flight, .. } => match tokio::time::timeout_at(deadline, flight).await {
                Ok(Ok(f)) if self.servable(&slot, &f.cred, now_ms()) => Ok(f.cred),
                Ok(Ok(_)) => {
                    Err(self.unavailable(&slot, 1000, Some("refreshed value not yet servable".into())))
                }
                Ok(Err(e)) => Err(self.unavailable(&slot, e.retry_at_ms - now_ms(), Some(e.short))),
                Err(_) => Err(self.unavailable(&slot, 1000, Some("refresh in flight".into()))),
            },
            // WeChat confirmed this value moments ago: hand it back rather than ask again.
            Begin::Gated { gate: Gate::Unchanged, .. } if self.servable(&slot, &cur, now_ms()) => Ok(cur),
            // ... and said its successor comes only after it expires: wait for that fetch as
            // a read does.
            Begin::Gated { gate: Gate::Unchanged, .. } => self.wait_for_value(&slot, wait).await,
            Begin::Gated { until_ms, reason, .. } => {
                Err(self.unavailable(&slot, until_ms - now_ms(), reason))
            }
        }
    }

    pub(super) async fn report_suspect(
        self: &Arc<Self>,
        appid: &str,
        kind: CredentialKind,
    ) -> Result<Arc<Credential>> {
        let slot = self.slot(appid, kind)?;
        let wait = self.config.read_wait;
        let now = now_ms();
        let Some(cur) = slot.current.load_full().filter(|c| self.servable(&slot, c, now)) else {
            return self.wait_for_value(&slot, wait).await;
        };
        // Fetched moments ago (by any node: the time travels with the value): a suspicion about
        // it is more likely a caller's reflex than a dead value.
        let guard_ms = i64::try_from(self.config.report_guard.as_millis()).unwrap_or(i64::MAX);
        if now - cur.fetched_at_ms < guard_ms {
            return Ok(cur);
        }
        let allowed = {
            let mut st = lock(&slot.state);
            let day = wechat_day(now);
            match &mut st.suspects {
                Some((d, _, v)) if *d == day && *v == cur.version => true,
                Some((d, n, v)) if *d == day => {
                    if *n >= SUSPECT_DAILY {
                        false
                    } else {
                        *n += 1;
                        *v = cur.version;
                        true
                    }
                }
                other => {
                    *other = Some((day, 1, cur.version));
                    true
                }
            }
        };
        if !allowed {
            tracing::debug!(appid, %kind, "suspicion over today's budget: current value answered");
            return Ok(cur);
        }
        self.report_invalid(appid, kind, cur.value.expose()).await
    }

    pub(super) async fn force_refresh(
        self: &Arc<Self>,
        appid: &str,
        kind: CredentialKind,
    ) -> Result<ForcedRefresh> {
        let slot = self.slot(appid, kind)?;
        loop {
            match self.begin(&slot, Reason::Forced, None) {
                // Someone else's refresh: let it land, then force our own.
                Begin::Join { flight, created: false } => {
                    let _ = flight.await;
                }
                Begin::Join { flight, created: true } => {
                    return match flight.await {
                        Ok(f) => Ok(ForcedRefresh { credential: f.cred, rotated: f.rotated }),
                        Err(e) => Err(match e.upstream {
                            Some(u) => u.into_error(),
                            None => self.unavailable(&slot, e.retry_at_ms - now_ms(), Some(e.short)),
                        }),
                    };
                }
                Begin::Ready(c) => return Ok(ForcedRefresh { credential: c, rotated: false }),
                Begin::Gated { until_ms, reason, .. } => {
                    return Err(self.unavailable(&slot, until_ms - now_ms(), reason));
                }
            }
        }
    }
}
