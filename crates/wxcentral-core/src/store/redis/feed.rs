//! The change feed over pub/sub: what other nodes wrote, within milliseconds.
//!
//! Pub/sub delivers at most once and forgets everything published while a node is not
//! subscribed, so the feed never trusts it to be complete. Every message carries the
//! namespace's sequence number (incremented by the same script that wrote); the feed resyncs
//! (tells the engine to look at everything) when
//! - it subscribes again after losing the connection,
//! - a message skips numbers, or the counter stays ahead of the messages for a check interval
//!   (a message was lost without the connection dropping),
//! - the counter went backwards (Redis restarted without the data: what nodes hold may be all
//!   that is left).
//!
//! A subscription that stops answering PING is dropped and made again.

use super::{Keys, redis_err};
use crate::error::{Error, Result};
use crate::kind::{CredentialKey, CredentialKind};
use crate::store::Change;
use futures::StreamExt;
use redis::aio::{ConnectionManager, PubSubSink, PubSubStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How often the subscription is pinged and the counter compared with the messages seen.
const CHECK_EVERY: Duration = Duration::from_millis(1000);

/// What `/readyz` needs to know of the feed.
#[derive(Debug, Default)]
pub(super) struct FeedState {
    connected: AtomicBool,
}

impl FeedState {
    pub(super) fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

struct Subscription {
    sink: PubSubSink,
    stream: PubSubStream,
    /// The counter right after subscribing: every later write arrives as a message.
    seq: u64,
}

struct Feed {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Arc<Keys>,
    tx: broadcast::Sender<Change>,
    state: Arc<FeedState>,
    timeout: Duration,
}

/// Subscribes (failing if Redis cannot be reached now) and follows the channel in the
/// background until the returned token is cancelled.
pub(super) async fn start(
    client: redis::Client,
    conn: ConnectionManager,
    keys: Arc<Keys>,
    tx: broadcast::Sender<Change>,
    timeout: Duration,
) -> Result<(Arc<FeedState>, CancellationToken)> {
    let state = Arc::new(FeedState::default());
    let feed = Feed { client, conn, keys, tx, state: Arc::clone(&state), timeout };
    let first = feed.subscribe().await?;
    state.connected.store(true, Ordering::Relaxed);
    let stop = CancellationToken::new();
    tokio::spawn(feed.run(first, stop.clone()));
    Ok((state, stop))
}

impl Feed {
    async fn subscribe(&self) -> Result<Subscription> {
        let attempt = async {
            let mut pubsub = self.client.get_async_pubsub().await.map_err(|e| redis_err("subscribe", &e))?;
            pubsub.subscribe(&self.keys.channel).await.map_err(|e| redis_err("subscribe", &e))?;
            let seq = self.counter().await?;
            let (sink, stream) = pubsub.split();
            Ok(Subscription { sink, stream, seq })
        };
        tokio::time::timeout(self.timeout * 3, attempt)
            .await
            .map_err(|_| Error::Store("redis subscribe: timed out".into()))?
    }

    async fn counter(&self) -> Result<u64> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("GET");
        let get = cmd.arg(&self.keys.seq).query_async::<Option<u64>>(&mut conn);
        match tokio::time::timeout(self.timeout * 2, get).await {
            Ok(r) => Ok(r.map_err(|e| redis_err("feed counter", &e))?.unwrap_or(0)),
            Err(_) => Err(Error::Store("redis feed counter: timed out".into())),
        }
    }

    fn send(&self, change: Change) {
        // No subscriber yet (or any more) is fine.
        let _ = self.tx.send(change);
    }

    async fn run(self, first: Subscription, stop: CancellationToken) {
        let mut sub = Some(first);
        let mut pause = Duration::from_millis(100);
        loop {
            let current = match sub.take() {
                Some(s) => s,
                None => match self.subscribe().await {
                    Ok(s) => {
                        tracing::info!("redis change feed subscribed again; resyncing");
                        self.send(Change::Resync);
                        pause = Duration::from_millis(100);
                        s
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "redis change feed cannot subscribe yet");
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(pause) => {}
                        }
                        pause = (pause * 2).min(Duration::from_secs(2));
                        continue;
                    }
                },
            };
            self.state.connected.store(true, Ordering::Relaxed);
            if self.follow(current, &stop).await.is_break() {
                return;
            }
            self.state.connected.store(false, Ordering::Relaxed);
        }
    }

    /// Follows one subscription until it fails (`Continue`: subscribe again) or the store is
    /// dropped (`Break`).
    async fn follow(&self, sub: Subscription, stop: &CancellationToken) -> std::ops::ControlFlow<()> {
        let Subscription { mut sink, mut stream, seq } = sub;
        let mut last = seq;
        // The counter seen at the previous check when it was ahead of the messages.
        let mut ahead: Option<u64> = None;
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return std::ops::ControlFlow::Break(()),
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        tracing::warn!("redis change feed lost its connection; nodes' writes are not seen until it is back");
                        return std::ops::ControlFlow::Continue(());
                    };
                    let Some((n, change)) = parse(msg.get_payload_bytes()) else {
                        tracing::warn!("redis change feed: unreadable message ignored");
                        continue;
                    };
                    if n > last + 1 {
                        tracing::info!(missed = n - last - 1, "redis change feed skipped messages; resyncing");
                        self.send(Change::Resync);
                    }
                    last = last.max(n);
                    self.send(change);
                }
                _ = check.tick() => {
                    let alive = tokio::time::timeout(self.timeout * 2, sink.ping::<redis::Value>()).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        tracing::warn!("redis change feed does not answer; subscribing again");
                        return std::ops::ControlFlow::Continue(());
                    }
                    let Ok(now) = self.counter().await else { continue };
                    if now < last {
                        tracing::warn!(was = last, now, "redis change counter went backwards (Redis lost data?); resyncing");
                        self.send(Change::Resync);
                        last = now;
                        ahead = None;
                    } else if now > last {
                        if ahead.is_some_and(|a| last < a) {
                            tracing::info!("redis change feed missed messages; resyncing");
                            self.send(Change::Resync);
                            last = now;
                            ahead = None;
                        } else {
                            ahead = Some(now);
                        }
                    } else {
                        ahead = None;
                    }
                }
            }
        }
    }
}

/// `"<seq> <kind> <appid>"` as the scripts publish it.
fn parse(payload: &[u8]) -> Option<(u64, Change)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(3, ' ');
    let (n, kind, appid) = (parts.next()?.parse().ok()?, parts.next()?, parts.next()?);
    let change = if kind == "app" {
        Change::App(appid.to_owned())
    } else {
        Change::Credential(CredentialKey::new(appid, kind.parse::<CredentialKind>().ok()?))
    };
    Some((n, change))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_or_are_ignored() {
        assert_eq!(
            parse(b"7 access_token wxa"),
            Some((7, Change::Credential(CredentialKey::new("wxa", CredentialKind::AccessToken))))
        );
        assert_eq!(parse(b"8 app wxb"), Some((8, Change::App("wxb".into()))));
        for bad in [&b""[..], b"x app wxa", b"9 nonsense wxa", b"9 app", b"\xff\xfe"] {
            assert_eq!(parse(bad), None);
        }
    }
}
