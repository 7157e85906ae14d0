//! What `/v1/apps` shows of a credential.

use super::*;

impl Inner {
    pub(super) fn app_status(&self, e: &AppEntry, today: &str) -> AppStatus {
        AppStatus {
            appid: e.spec.appid.clone(),
            kind: e.spec.kind,
            origin: e.origin,
            credentials: e.slots.iter().map(|s| self.credential_status(s)).collect(),
            quota_today: e.quota_of(today),
        }
    }

    pub(super) fn credential_status(&self, slot: &Slot) -> CredentialStatus {
        let now = now_ms();
        let cur = slot.current.load_full();
        let serving = cur.as_ref().is_some_and(|c| self.servable(slot, c, now));
        let st = lock(&slot.state);
        let state = match (st.failures, st.last_class) {
            (n, Some(class)) if n > 0 && class.stops_retries() => "stopped",
            (n, _) if n > 0 => "failing",
            _ if serving => "valid",
            _ => "absent",
        };
        let next_refresh_ms = match (st.not_before_ms, st.planned_refresh_ms) {
            (Some((nb, _)), Some(p)) => Some(nb.max(p)),
            (Some((nb, _)), None) => Some(nb),
            (None, p) if serving => p,
            (None, _) => None,
        };
        CredentialStatus {
            kind: slot.key.kind,
            state,
            expires_at_ms: cur.as_ref().map(|c| c.valid_until_ms),
            version: cur.as_ref().map(|c| c.version),
            last_error: st.last_error.clone(),
            next_refresh_ms,
            consecutive_failures: st.failures,
            serving,
        }
    }
}
