//! The live set of credentials: apps from the config file and apps added at runtime, each with
//! its slots. Every read looks a slot up here, so the map is papaya's (lock-free reads that
//! share no counter between cores), and adding or removing thousands of apps copies nothing.

use super::*;

/// Where an app comes from. Config-file apps change only with the file (SIGHUP); runtime apps
/// live in the store, added and removed through the admin API, and every node follows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Config,
    Runtime,
    /// An authorizer of a configured component, known from an authorization or an import.
    Authorization,
}

/// Where the values of apps being added may already be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stored {
    /// Most of the store is wanted (the start): read every row once.
    Scan,
    /// Read each credential of the apps added.
    Each,
    /// Apps the store had no row of until now: nothing to read.
    Nothing,
}

pub(super) struct AppEntry {
    pub(super) spec: AppSpec,
    pub(super) origin: Origin,
    pub(super) slots: Vec<Arc<Slot>>,
    /// Today's upstream calls per endpoint as the store last counted them, so `/v1/apps`
    /// answers from memory: `(endpoint, WeChat day, calls)`.
    quota: Mutex<Vec<(&'static str, String, u64)>>,
    pub(super) calls: AppCalls,
    /// The open platform's state of a component or an authorizer.
    pub(super) platform: Platform,
}

/// What the open platform keeps in memory beside a component's or an authorizer's slots.
pub(super) enum Platform {
    None,
    Component(super::platform::ComponentState),
    Authorizer(Mutex<crate::authorizer::AuthorizerRecord>),
}

impl AppEntry {
    pub(super) fn record_quota(&self, endpoint: &'static str, day: &str, calls: u64) {
        let mut q = lock(&self.quota);
        match q.iter_mut().find(|(e, _, _)| *e == endpoint) {
            Some(row) if row.1 == day => row.2 = row.2.max(calls),
            Some(row) => *row = (endpoint, day.to_owned(), calls),
            None => q.push((endpoint, day.to_owned(), calls)),
        }
    }

    /// Calls of `day` per endpoint the app uses (0 for those not called yet).
    pub(super) fn quota_of(&self, day: &str) -> Vec<(String, u64)> {
        let q = lock(&self.quota);
        self.endpoints()
            .map(|ep| {
                let n = q.iter().find(|(e, d, _)| *e == ep && d == day).map_or(0, |(_, _, n)| *n);
                (ep.to_owned(), n)
            })
            .collect()
    }

    pub(super) fn endpoints(&self) -> impl Iterator<Item = &'static str> {
        let token = match (&self.spec.role, self.spec.token_api) {
            (Role::Component { .. }, _) => api::PATH_COMPONENT_TOKEN,
            (Role::Authorizer { .. }, _) => api::PATH_AUTHORIZER_TOKEN,
            (Role::App, TokenApi::Stable) => api::PATH_STABLE_TOKEN,
            (Role::App, TokenApi::Classic) => api::PATH_TOKEN,
        };
        std::iter::once(token).chain((!self.spec.tickets.is_empty()).then_some(api::PATH_GETTICKET))
    }

    fn retire(&self, index: &index::TokenIndex) {
        for slot in &self.slots {
            slot.cancel.cancel();
            index.forget(slot);
        }
    }
}

#[derive(Default)]
pub(super) struct Registry {
    apps: papaya::HashMap<String, Arc<AppEntry>, foldhash::fast::RandomState>,
}

impl Registry {
    pub(super) fn slot(&self, appid: &str, kind: CredentialKind) -> Result<Arc<Slot>> {
        let apps = self.apps.pin();
        let app = apps.get(appid).ok_or_else(|| Error::UnknownApp(appid.to_owned()))?;
        app.slots
            .iter()
            .find(|s| s.key.kind == kind)
            .cloned()
            .ok_or_else(|| Error::UnknownCredential { appid: appid.to_owned(), kind })
    }

    pub(super) fn get(&self, appid: &str) -> Option<Arc<AppEntry>> {
        self.apps.pin().get(appid).cloned()
    }

    /// Every app, by appid.
    pub(super) fn entries(&self) -> Vec<Arc<AppEntry>> {
        let mut all: Vec<_> = self.apps.pin().values().cloned().collect();
        all.sort_by(|a, b| a.spec.appid.cmp(&b.spec.appid));
        all
    }

    pub(super) fn len(&self) -> usize {
        self.apps.len()
    }
}

impl Inner {
    fn build_entry(&self, spec: AppSpec, origin: Origin, platform: Platform) -> Arc<AppEntry> {
        let mut slots: Vec<Arc<Slot>> = Vec::new();
        for kind in spec.kinds() {
            if slots.iter().any(|s| s.key.kind == kind) {
                continue;
            }
            let source = match (kind.ticket_type(), &spec.role) {
                (Some(t), _) => Source::Ticket(t),
                (None, Role::App) => Source::Token { secret: spec.secret.clone(), api: spec.token_api },
                (None, Role::Component { .. }) => Source::Component { secret: spec.secret.clone() },
                (None, Role::Authorizer { component }) => Source::Authorizer { component: component.clone() },
            };
            slots.push(Arc::new(Slot::new(
                CredentialKey::new(&spec.appid, kind),
                source,
                self.cancel.child_token(),
            )));
        }
        Arc::new(AppEntry {
            spec,
            origin,
            slots,
            quota: Mutex::new(Vec::new()),
            calls: AppCalls::default(),
            platform,
        })
    }

    /// Adds apps, or replaces those whose definition changed (an unchanged one is left alone,
    /// values and loops included). Stored values are installed before the refresh loops start,
    /// so an app whose credentials another node (or an earlier run) fetched makes no call.
    pub(super) async fn add_apps(
        self: &Arc<Self>,
        specs: Vec<(AppSpec, Origin)>,
        load: Stored,
    ) -> Result<()> {
        let mut added = Vec::new();
        for (spec, origin) in specs {
            if let Some(old) = self.registry.get(&spec.appid)
                && old.spec == spec
                && old.origin == origin
            {
                continue;
            }
            let platform = match &spec.role {
                Role::App => Platform::None,
                Role::Component { .. } => Platform::Component(super::platform::ComponentState::default()),
                // The record is set by whoever adds the authorizer (`adopt_authorizers`).
                Role::Authorizer { component } => {
                    Platform::Authorizer(Mutex::new(crate::authorizer::AuthorizerRecord {
                        state: crate::authorizer::AuthorizerState::Authorized,
                        ..crate::authorizer::tombstone(component, &spec.appid, 0, None)
                    }))
                }
            };
            let entry = self.build_entry(spec, origin, platform);
            // Whatever the insert displaces is retired, also an entry a concurrent add (the
            // change feed echoing this node's own write) put there a moment ago: no slot is
            // ever left running outside the map.
            if let Some(old) = self.registry.apps.pin().insert(entry.spec.appid.clone(), Arc::clone(&entry)) {
                old.retire(&self.index);
            }
            added.push(entry);
        }
        if added.is_empty() {
            return Ok(());
        }
        let stored: Vec<(CredentialKey, Credential)> = match load {
            Stored::Scan => {
                let wanted: std::collections::HashSet<&str> =
                    added.iter().map(|e| e.spec.appid.as_str()).collect();
                self.store
                    .load_credentials()
                    .await?
                    .into_iter()
                    .filter(|(k, _)| wanted.contains(k.appid.as_str()))
                    .collect()
            }
            Stored::Each => {
                let mut v = Vec::new();
                for slot in added.iter().flat_map(|e| &e.slots) {
                    if let Some(c) = self.store.get_credential(&slot.key).await? {
                        v.push((slot.key.clone(), c));
                    }
                }
                v
            }
            Stored::Nothing => Vec::new(),
        };
        let now = now_ms();
        for (key, cred) in stored {
            if let Ok(slot) = self.registry.slot(&key.appid, key.kind) {
                let m = self.margins(&slot, &cred);
                tracing::debug!(
                    appid = key.appid,
                    kind = %key.kind,
                    version = cred.version,
                    expires_in = (cred.expires_at_ms - now) / 1000,
                    servable = policy::servable(cred.expires_at_ms, m, now),
                    "credential loaded from store"
                );
                self.install(&slot, Arc::new(cred));
            }
        }
        for entry in &added {
            if entry.origin == Origin::Authorization {
                tracing::debug!(appid = entry.spec.appid, "authorizer added");
            } else {
                tracing::info!(appid = entry.spec.appid, origin = ?entry.origin, "app added");
            }
            for slot in &entry.slots {
                self.spawn(Arc::clone(self).run_loop(Arc::clone(slot)));
            }
            if let (Role::Component { .. }, Some(slot)) = (&entry.spec.role, entry.slots.first()) {
                let housekeeping =
                    Arc::clone(self).run_component(entry.spec.appid.clone(), slot.cancel.clone());
                self.spawn(housekeeping);
            }
        }
        Ok(())
    }

    /// Takes an app out of the live set: its loops and any refresh in flight stop, reads answer
    /// 404, its metric series go (they are rendered from the live set). With `forget`, its stored values and leases go too.
    pub(super) async fn remove_app(&self, appid: &str, forget: bool) -> Result<bool> {
        let Some(entry) = self.registry.apps.pin().remove(appid).cloned() else {
            return Ok(false);
        };
        entry.retire(&self.index);
        if forget {
            self.store.delete_credentials(appid).await?;
        }
        tracing::info!(appid, origin = ?entry.origin, "app removed");
        Ok(true)
    }

    /// Brings one runtime app in line with the store (another node added, changed or removed it).
    pub(super) async fn sync_app(self: &Arc<Self>, appid: &str) -> Result<()> {
        let _changing = self.apps_lock.lock().await;
        let local = self.registry.get(appid);
        match local.as_ref().map(|e| e.origin) {
            Some(Origin::Config) => return Ok(()),
            Some(Origin::Authorization) => return self.sync_authorizer_held(appid).await,
            Some(Origin::Runtime) | None => {}
        }
        match self.store.get_app(appid).await? {
            Some(spec) => self.add_apps(vec![(spec, Origin::Runtime)], Stored::Each).await,
            None if local.is_some() => self.remove_app(appid, false).await.map(drop),
            // Not an app: maybe an authorizer another node adopted.
            None => self.sync_authorizer_held(appid).await,
        }
    }

    /// Every runtime app in line with the store.
    pub(super) async fn sync_apps(self: &Arc<Self>) -> Result<()> {
        let _changing = self.apps_lock.lock().await;
        self.sync_apps_held().await
    }

    /// [`Inner::sync_apps`] with `apps_lock` already held.
    pub(super) async fn sync_apps_held(self: &Arc<Self>) -> Result<()> {
        let stored = self.store.load_apps().await?;
        let names: std::collections::HashSet<&str> = stored.iter().map(|a| a.appid.as_str()).collect();
        for entry in self.registry.entries() {
            // Absent from the list, or added after it was read: only the store's word on
            // this one app decides.
            if entry.origin == Origin::Runtime
                && !names.contains(entry.spec.appid.as_str())
                && self.store.get_app(&entry.spec.appid).await?.is_none()
            {
                self.remove_app(&entry.spec.appid, false).await?;
            }
        }
        let runtime: Vec<_> = stored
            .into_iter()
            .filter(|a| self.registry.get(&a.appid).is_none_or(|e| e.origin == Origin::Runtime))
            .map(|a| (a, Origin::Runtime))
            .collect();
        self.add_apps(runtime, Stored::Each).await?;
        self.sync_authorizers_held().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(api: TokenApi, tickets: &[TicketType]) -> AppEntry {
        let mut spec = AppSpec::official_account("wxq", "s");
        spec.token_api = api;
        spec.tickets = tickets.to_vec();
        AppEntry {
            spec,
            origin: Origin::Runtime,
            slots: Vec::new(),
            quota: Mutex::new(Vec::new()),
            calls: AppCalls::default(),
            platform: Platform::None,
        }
    }

    #[test]
    fn quota_books_keep_the_day_and_the_highest_count() {
        let e = entry(TokenApi::Classic, &[TicketType::Jsapi]);
        assert_eq!(
            e.quota_of("2026-12-02"),
            vec![(api::PATH_TOKEN.to_owned(), 0), (api::PATH_GETTICKET.to_owned(), 0)]
        );
        e.record_quota(api::PATH_TOKEN, "2026-12-02", 5);
        // Counts from the store may arrive out of order: the highest of the day stands.
        e.record_quota(api::PATH_TOKEN, "2026-12-02", 4);
        assert_eq!(e.quota_of("2026-12-02")[0].1, 5);
        // A new day starts from its own count; yesterday's is not today's.
        e.record_quota(api::PATH_TOKEN, "2026-12-03", 1);
        assert_eq!(e.quota_of("2026-12-03")[0].1, 1);
        assert_eq!(e.quota_of("2026-12-02")[0].1, 0);
        let stable = entry(TokenApi::Stable, &[]);
        assert_eq!(stable.endpoints().collect::<Vec<_>>(), vec![api::PATH_STABLE_TOKEN]);
    }
}
