//! The engine's per-app metric series, rendered from the live set at each scrape.
//!
//! The `metrics` facade keeps every series it ever saw, so an app removed at runtime would keep
//! its series forever (and 10,000 authorizers coming and going would grow `/metrics` without
//! bound). These series are therefore counted in the slots and apps themselves and written out
//! here: a removed app takes its series with it.

use super::*;
use std::fmt::Write as _;

/// Counters of one slot, by refresh reason and failure class.
#[derive(Default)]
pub(super) struct SlotCounters {
    refreshes: [AtomicU64; Reason::ALL.len()],
    failures: Mutex<Vec<(&'static str, u64)>>,
}

impl SlotCounters {
    pub(super) fn refreshed(&self, reason: Reason) {
        self.refreshes[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn failed(&self, class: FaultClass) {
        let mut f = lock(&self.failures);
        match f.iter_mut().find(|(c, _)| *c == class.as_str()) {
            Some((_, n)) => *n += 1,
            None => f.push((class.as_str(), 1)),
        }
    }
}

/// Upstream calls of one app by endpoint and outcome.
#[derive(Default)]
pub(super) struct AppCalls(Mutex<Vec<(&'static str, String, u64)>>);

impl AppCalls {
    pub(super) fn record(&self, endpoint: &'static str, outcome: String) {
        let mut calls = lock(&self.0);
        match calls.iter_mut().find(|(e, o, _)| *e == endpoint && *o == outcome) {
            Some((_, _, n)) => *n += 1,
            None => calls.push((endpoint, outcome, 1)),
        }
    }
}

/// One series: labels (without `app`), value. Samples of the same labels are summed, or for
/// gauges, the one nearest its limit is kept when apps are aggregated.
type Samples = BTreeMap<Vec<(&'static str, String)>, f64>;

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Samples,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub(super) fn render(inner: &Inner, per_app: bool, out: &mut String) {
    let now = now_ms();
    let today = wechat_day(now);
    let fam = |name, kind, help| Family { name, kind, help, samples: Samples::new() };
    let mut calls =
        fam("wxcentral_upstream_calls_total", "counter", "Upstream calls by endpoint, app and outcome");
    let mut refreshes = fam("wxcentral_refreshes_total", "counter", "Credentials refreshed, by reason");
    let mut failures = fam("wxcentral_refresh_failures_total", "counter", "Failed refreshes, by fault class");
    let mut quota =
        fam("wxcentral_quota_used_today", "gauge", "Upstream calls today (Asia/Shanghai) per endpoint");
    let mut expiry = fam(
        "wxcentral_credential_seconds_to_expiry",
        "gauge",
        "Seconds until the value served expires at WeChat",
    );
    let mut apps = fam("wxcentral_apps", "gauge", "Apps in the live set, by origin");
    // Per component, whatever `per_app` says: components are few.
    let mut authorizers =
        fam("wxcentral_authorizers", "gauge", "Authorizers in the live set, by component and state");
    let mut ticket_age = fam(
        "wxcentral_component_verify_ticket_age_seconds",
        "gauge",
        "Seconds since the newest verify ticket known was pushed (absent: none yet)",
    );
    let add = |f: &mut Family, app: &str, labels: Vec<(&'static str, String)>, v: f64, min: bool| {
        let mut labels = labels;
        if per_app {
            labels.insert(0, ("app", app.to_owned()));
        }
        let e = f.samples.entry(labels).or_insert(if min { f64::INFINITY } else { 0.0 });
        *e = if min {
            e.min(v)
        } else if f.kind == "gauge" {
            e.max(v)
        } else {
            *e + v
        };
    };
    for entry in inner.registry.entries() {
        let app = entry.spec.appid.as_str();
        let origin = match entry.origin {
            Origin::Config => "config",
            Origin::Runtime => "runtime",
            Origin::Authorization => "authorization",
        };
        *apps.samples.entry(vec![("origin", origin.to_owned())]).or_insert(0.0) += 1.0;
        if let Some(rec) = entry.record() {
            let labels = vec![("component", rec.component_appid), ("state", rec.state.as_str().to_owned())];
            *authorizers.samples.entry(labels).or_insert(0.0) += 1.0;
        }
        if let Some(pushed) = entry.component_state().and_then(|c| c.ticket_pushed_at()) {
            ticket_age.samples.insert(vec![("component", app.to_owned())], (now - pushed) as f64 / 1000.0);
        }
        for (ep, outcome, n) in lock(&entry.calls.0).iter() {
            add(
                &mut calls,
                app,
                vec![("endpoint", (*ep).to_owned()), ("outcome", outcome.clone())],
                *n as f64,
                false,
            );
        }
        for (ep, n) in entry.quota_of(&today) {
            add(&mut quota, app, vec![("endpoint", ep)], n as f64, false);
        }
        for slot in &entry.slots {
            let kind = slot.key.kind.as_str().to_owned();
            for reason in Reason::ALL {
                let n = slot.counters.refreshes[reason as usize].load(Ordering::Relaxed);
                if n > 0 {
                    let labels = vec![("kind", kind.clone()), ("reason", reason.as_str().to_owned())];
                    add(&mut refreshes, app, labels, n as f64, false);
                }
            }
            for (class, n) in lock(&slot.counters.failures).iter() {
                let labels = vec![("class", (*class).to_owned()), ("kind", kind.clone())];
                add(&mut failures, app, labels, *n as f64, false);
            }
            if let Some(c) = slot.current.load_full() {
                add(&mut expiry, app, vec![("kind", kind)], (c.expires_at_ms - now) as f64 / 1000.0, true);
            }
        }
    }
    for f in [&calls, &refreshes, &failures, &quota, &expiry, &apps, &authorizers, &ticket_age] {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", f.name, f.help, f.name, f.kind);
        for (labels, v) in &f.samples {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = writeln!(out, "{}{{{}}} {v}", f.name, labels.join(","));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_as_prometheus_wants() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
        assert_eq!(escape("wx0123_-ok"), "wx0123_-ok");
    }

    #[test]
    fn counters_count_per_reason_and_class() {
        let c = SlotCounters::default();
        c.refreshed(Reason::Proactive);
        c.refreshed(Reason::Proactive);
        c.failed(FaultClass::Quota);
        assert_eq!(c.refreshes[Reason::Proactive as usize].load(Ordering::Relaxed), 2);
        assert_eq!(c.refreshes[Reason::Startup as usize].load(Ordering::Relaxed), 0);
        assert_eq!(*lock(&c.failures), vec![("quota", 1)]);
        let calls = AppCalls::default();
        calls.record("/cgi-bin/token", "ok".into());
        calls.record("/cgi-bin/token", "ok".into());
        calls.record("/cgi-bin/token", "45009".into());
        assert_eq!(lock(&calls.0).len(), 2);
    }
}
