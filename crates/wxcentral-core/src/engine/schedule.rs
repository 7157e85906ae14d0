//! The refresh loop of each credential: sleep until the planned refresh or the end of a
//! backoff, then refresh.

use super::*;

impl Inner {
    /// What the loop does next, and when.
    pub(super) fn next_action(&self, slot: &Slot, now: i64) -> (i64, Reason) {
        let cur = slot.current.load_full();
        let st = lock(&slot.state);
        let (at, reason) = match cur {
            Some(c) if self.servable(slot, &c, now) => {
                (st.planned_refresh_ms.unwrap_or(now), Reason::Proactive)
            }
            _ => (now, if st.attempted { Reason::Expired } else { Reason::Startup }),
        };
        let at = match st.not_before_ms {
            Some((nb, _)) => at.max(nb),
            None => at,
        };
        (at, reason)
    }

    pub(super) async fn run_loop(self: Arc<Self>, slot: Arc<Slot>) {
        loop {
            let now = now_ms();
            let (at, reason) = self.next_action(&slot, now);
            if at > now {
                tokio::select! {
                    () = tokio::time::sleep(ms(at - now)) => {}
                    () = slot.wake.notified() => continue,
                    () = slot.cancel.cancelled() => return,
                }
                // The sleep may have overshot into another state (e.g. the value expired).
                if self.next_action(&slot, now_ms()).0 > now_ms() {
                    continue;
                }
            }
            if slot.cancel.is_cancelled() {
                return;
            }
            let (_, reason_now) = self.next_action(&slot, now_ms());
            let reason = if reason == Reason::Proactive { reason_now } else { reason };
            match self.begin(&slot, reason, slot.version()) {
                Begin::Ready(_) => {}
                Begin::Join { flight, .. } => {
                    tokio::select! {
                        _ = flight => {}
                        () = slot.cancel.cancelled() => return,
                    }
                }
                Begin::Gated { until_ms, .. } => {
                    tokio::select! {
                        () = tokio::time::sleep(ms(until_ms - now_ms())) => {}
                        () = slot.wake.notified() => {}
                        () = slot.cancel.cancelled() => return,
                    }
                }
            }
        }
    }
}
