//! Adopting what other nodes write, as the store's change feed tells of it.

use super::*;

impl Inner {
    /// Adopts what other nodes (and other engines on the same store) write, as the store tells
    /// of it: new values, and runtime apps added, changed or removed.
    pub(super) async fn follow_changes(self: Arc<Self>, mut changes: broadcast::Receiver<Change>) {
        loop {
            let change = tokio::select! {
                c = changes.recv() => c,
                () = self.cancel.cancelled() => return,
            };
            match change {
                Ok(Change::Credential(key)) => {
                    let Ok(slot) = self.slot(&key.appid, key.kind) else { continue };
                    match self.store.get_credential(&key).await {
                        Ok(stored) => {
                            self.adopt_if_newer(&slot, stored);
                        }
                        Err(e) => {
                            tracing::warn!(appid = key.appid, kind = %key.kind, error = %e, "store read after a change failed");
                        }
                    }
                }
                Ok(Change::App(appid)) => {
                    if let Err(e) = self.sync_app(&appid).await {
                        tracing::warn!(appid, error = %e, "runtime app not brought in line with the store");
                    }
                }
                Ok(Change::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    if let Err(e) = self.sync_apps().await {
                        tracing::warn!(error = %e, "runtime apps not brought in line with the store");
                    }
                    self.resync().await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Looks at every stored credential and adopts the newer ones.
    pub(super) async fn resync(&self) {
        match self.store.load_credentials().await {
            Ok(all) => {
                for (key, cred) in all {
                    if let Ok(slot) = self.slot(&key.appid, key.kind) {
                        self.adopt_if_newer(&slot, Some(cred));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "store resync failed"),
        }
    }
}
