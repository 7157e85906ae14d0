//! One bound on every upstream call the engine makes: at most `max_concurrency` at once and
//! `max_per_second` started per second, all credentials together. A cold start with thousands
//! of credentials, or a mass add, queues here instead of hammering WeChat (which answers a burst
//! with -1 busy or a frequency limit).

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(crate) struct Limiter {
    slots: Arc<Semaphore>,
    rate: DefaultDirectRateLimiter,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("available", &self.slots.available_permits()).finish_non_exhaustive()
    }
}

/// The right to make one upstream call; the concurrency slot is given back on drop.
#[derive(Debug)]
pub(crate) struct Permit(#[allow(dead_code)] OwnedSemaphorePermit);

impl Limiter {
    pub(crate) fn new(max_concurrency: usize, max_per_second: u32) -> Self {
        let per_second = NonZeroU32::new(max_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        // Bursts up to a tenth of a second's worth: the rate holds over any second.
        let burst = NonZeroU32::new((per_second.get() / 10).max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            slots: Arc::new(Semaphore::new(max_concurrency.max(1))),
            rate: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
        }
    }

    /// Waits for a concurrency slot, then for the rate.
    pub(crate) async fn acquire(&self) -> Permit {
        // The semaphore is never closed.
        let slot = Arc::clone(&self.slots).acquire_owned().await.expect("limiter semaphore open");
        self.rate.until_ready().await;
        Permit(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bounds_concurrency_and_rate() {
        let limiter = Arc::new(Limiter::new(3, 100));
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..60)
            .map(|_| {
                let (limiter, now, peak) = (Arc::clone(&limiter), Arc::clone(&now), Arc::clone(&peak));
                tokio::spawn(async move {
                    let _p = limiter.acquire().await;
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 3);
        // 60 calls at 100/s with a burst of 10: at least half a second.
        assert!(t0.elapsed() >= Duration::from_millis(450), "{:?}", t0.elapsed());
    }
}
