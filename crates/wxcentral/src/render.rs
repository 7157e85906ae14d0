//! The JSON of credential reads, rendered once per value.
//!
//! A value is current for hours and read thousands of times a second; escaping and formatting
//! it anew for each read was the largest single cost of a read. Everything in the body but
//! `expires_in` is fixed for a value, so serde_json renders the part before it and the part
//! after it once, and a read splices in the seconds left. The output is byte for byte what
//! serializing [`CredentialResponse`] gives (tested below).

use crate::api::CredentialResponse;
use arc_swap::ArcSwapOption;
use std::collections::HashMap;
use std::sync::Arc;
use wxcentral_core::{Credential, CredentialKind};

/// One value's body around its `expires_in`.
struct Rendered {
    cred: Arc<Credential>,
    head: Box<[u8]>,
    tail: Box<[u8]>,
}

/// Rendered bodies by appid and kind, for the apps known at start. Apps added later are
/// rendered on every read, which is only slower.
#[derive(Default)]
pub struct RenderCache {
    apps: HashMap<String, [ArcSwapOption<Rendered>; CredentialKind::ALL.len()], foldhash::fast::RandomState>,
}

impl std::fmt::Debug for RenderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderCache").field("apps", &self.apps.len()).finish()
    }
}

fn index(kind: CredentialKind) -> usize {
    CredentialKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

impl RenderCache {
    pub fn new<'a>(appids: impl IntoIterator<Item = &'a str>) -> Self {
        let apps = appids.into_iter().map(|a| (a.to_owned(), Default::default())).collect();
        Self { apps }
    }

    /// The body of a read of `cred`, `expires_in` taken at `now_ms`.
    pub fn body(
        &self,
        appid: &str,
        kind: CredentialKind,
        cred: &Arc<Credential>,
        now_ms: i64,
    ) -> serde_json::Result<Vec<u8>> {
        let expires_in = expires_in(cred, now_ms);
        let Some(slot) = self.apps.get(appid).map(|kinds| &kinds[index(kind)]) else {
            return render(appid, kind, cred).map(|r| splice(&r, expires_in));
        };
        let held = slot.load();
        if let Some(r) = held.as_deref().filter(|r| Arc::ptr_eq(&r.cred, cred)) {
            return Ok(splice(r, expires_in));
        }
        let r = Arc::new(render(appid, kind, cred)?);
        let body = splice(&r, expires_in);
        slot.store(Some(r));
        Ok(body)
    }
}

pub(crate) fn expires_in(cred: &Credential, now_ms: i64) -> i64 {
    (cred.valid_until_ms - now_ms).div_euclid(1000).max(0)
}

/// `expires_in` is rendered as a marker that no other field can contain, then cut out.
fn render(appid: &str, kind: CredentialKind, cred: &Arc<Credential>) -> serde_json::Result<Rendered> {
    const MARK: i64 = i64::MIN;
    let mut response = CredentialResponse::new(appid, kind, cred, 0);
    response.expires_in = MARK;
    let text = serde_json::to_vec(&response)?;
    let mark = MARK.to_string();
    let at = text
        .windows(mark.len())
        .rposition(|w| w == mark.as_bytes())
        .ok_or_else(|| serde::ser::Error::custom("expires_in marker not rendered"))?;
    Ok(Rendered { cred: Arc::clone(cred), head: text[..at].into(), tail: text[at + mark.len()..].into() })
}

fn splice(r: &Rendered, expires_in: i64) -> Vec<u8> {
    let mut n = itoa::Buffer::new();
    let n = n.format(expires_in);
    let mut body = Vec::with_capacity(r.head.len() + n.len() + r.tail.len());
    body.extend_from_slice(&r.head);
    body.extend_from_slice(n.as_bytes());
    body.extend_from_slice(&r.tail);
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use wechat_proto::Secret;

    fn cred(value: &str, expires_at_ms: i64, version: u64) -> Arc<Credential> {
        Arc::new(Credential::new(Secret::new(value.to_owned()), expires_at_ms, 0, version))
    }

    fn serde_body(appid: &str, kind: CredentialKind, c: &Credential, now: i64) -> Vec<u8> {
        serde_json::to_vec(&CredentialResponse::new(appid, kind, c, now)).unwrap()
    }

    #[test]
    fn cached_bodies_follow_the_clock_and_the_value() {
        let cache = RenderCache::new(["wx1"]);
        let a = cred("TOKEN_A", 7_200_000, 1);
        for now in [0, 999, 1000, 7_199_999, 7_200_000, 9_000_000] {
            let body = cache.body("wx1", CredentialKind::AccessToken, &a, now).unwrap();
            assert_eq!(body, serde_body("wx1", CredentialKind::AccessToken, &a, now), "at {now}");
        }
        let b = cred("TOKEN_B", 14_400_000, 2);
        let body = cache.body("wx1", CredentialKind::AccessToken, &b, 10).unwrap();
        assert_eq!(
            body,
            serde_body("wx1", CredentialKind::AccessToken, &b, 10),
            "a new value is rendered anew"
        );
        let t = cred("TICKET", 7_200_000, 3);
        let body = cache.body("wx1", CredentialKind::JsapiTicket, &t, 10).unwrap();
        assert_eq!(body, serde_body("wx1", CredentialKind::JsapiTicket, &t, 10), "kinds are apart");
        let body = cache.body("wxother", CredentialKind::AccessToken, &a, 10).unwrap();
        assert_eq!(body, serde_body("wxother", CredentialKind::AccessToken, &a, 10), "unknown apps too");
    }

    proptest! {
        #[test]
        fn rendering_is_what_serde_gives(
            appid in "\\PC{0,24}", value in "\\PC{0,160}", expires_at in any::<i64>(),
            now in any::<i64>(), version in any::<u64>(),
        ) {
            let now = now / 2;
            let expires_at = expires_at / 2;
            let c = cred(&value, expires_at, version);
            let cache = RenderCache::new([appid.as_str()]);
            for _ in 0..2 {
                let body = cache.body(&appid, CredentialKind::WxCardTicket, &c, now).unwrap();
                prop_assert_eq!(body, serde_body(&appid, CredentialKind::WxCardTicket, &c, now));
            }
        }
    }
}
