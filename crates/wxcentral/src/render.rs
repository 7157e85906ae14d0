//! The JSON of credential reads, rendered once per value.
//!
//! A value is current for hours and read thousands of times a second; escaping and formatting
//! it anew for each read was the largest single cost of a read. Everything in the body but
//! `expires_in` is fixed for a value, so serde_json renders the part before it and the part
//! after it once, and a read splices in the seconds left. The output is byte for byte what
//! serializing [`CredentialResponse`] gives (tested below). The rendered parts live beside the
//! value in the engine's slot, so they follow the live set of apps and cost no second lookup.

use wxcentral_core::wire::{CredentialResponse, expires_in};
use wxcentral_core::{Credential, CredentialKind, Engine};

/// One value's body around its `expires_in`, kept beside the value in the engine
/// ([`Engine::read_with`](wxcentral_core::Engine::read_with)) until the value changes.
struct Rendered {
    head: Box<[u8]>,
    tail: Box<[u8]>,
}

/// The body of a read of the current value of `appid`'s `kind`, `expires_in` taken now: the
/// parts around it rendered once per value.
pub async fn read_body(
    engine: &Engine,
    appid: &str,
    kind: CredentialKind,
    now_ms: impl FnOnce() -> i64,
) -> wxcentral_core::Result<serde_json::Result<Vec<u8>>> {
    engine
        .read_with(
            appid,
            kind,
            |c| render(appid, kind, c).map_err(|e| e.to_string()),
            |c, r| match r {
                Ok(r) => Ok(splice(r, expires_in(c, now_ms()))),
                Err(e) => Err(serde::ser::Error::custom(e)),
            },
        )
        .await
}

/// The body of an answer with `cred` rendered for this one answer (refreshes, reports).
pub fn body(
    appid: &str,
    kind: CredentialKind,
    cred: &Credential,
    now_ms: i64,
) -> serde_json::Result<Vec<u8>> {
    render(appid, kind, cred).map(|r| splice(&r, expires_in(cred, now_ms)))
}

/// `expires_in` is rendered as a marker that no other field can contain, then cut out.
fn render(appid: &str, kind: CredentialKind, cred: &Credential) -> serde_json::Result<Rendered> {
    const MARK: i64 = i64::MIN;
    let mut response = CredentialResponse::new(appid, kind, cred, 0);
    response.expires_in = MARK;
    let text = serde_json::to_vec(&response)?;
    let mark = MARK.to_string();
    let at = text
        .windows(mark.len())
        .rposition(|w| w == mark.as_bytes())
        .ok_or_else(|| serde::ser::Error::custom("expires_in marker not rendered"))?;
    Ok(Rendered { head: text[..at].into(), tail: text[at + mark.len()..].into() })
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

    fn cred(value: &str, expires_at_ms: i64, version: u64) -> Credential {
        Credential::new(Secret::new(value.to_owned()), expires_at_ms, 0, version)
    }

    fn serde_body(appid: &str, kind: CredentialKind, c: &Credential, now: i64) -> Vec<u8> {
        serde_json::to_vec(&CredentialResponse::new(appid, kind, c, now)).unwrap()
    }

    #[test]
    fn one_rendering_serves_every_moment_of_a_value() {
        let a = cred("TOKEN_A", 7_200_000, 1);
        let r = render("wx1", CredentialKind::AccessToken, &a).unwrap();
        for now in [0, 999, 1000, 7_199_999, 7_200_000, 9_000_000] {
            let body = splice(&r, expires_in(&a, now));
            assert_eq!(body, serde_body("wx1", CredentialKind::AccessToken, &a, now), "at {now}");
        }
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
            let body = body(&appid, CredentialKind::WxCardTicket, &c, now).unwrap();
            prop_assert_eq!(body, serde_body(&appid, CredentialKind::WxCardTicket, &c, now));
        }
    }
}
