//! What the store keeps of the open platform beside credentials: each authorizer's record (its
//! refresh token is sealed next to it) and each component's last verify ticket.

use serde::{Deserialize, Serialize};
use wechat_proto::Secret;

/// Where an authorizer stands with its component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AuthorizerState {
    /// Authorized, with a refresh token the hub keeps.
    Authorized,
    /// WeChat refused the refresh token (61023) and the authorizer list had no other: only a
    /// new authorization (or `updateauthorized`) brings one back.
    NeedsReauthorization,
    /// The merchant revoked the authorization: a tombstone, so a push older than it cannot
    /// bring the authorizer back.
    Unauthorized,
}

impl AuthorizerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorized => "authorized",
            Self::NeedsReauthorization => "needs_reauthorization",
            Self::Unauthorized => "unauthorized",
        }
    }

    /// Whether the authorizer is in the live set (its token kept, its appid served).
    pub fn is_live(self) -> bool {
        !matches!(self, Self::Unauthorized)
    }
}

/// One authorizer of one component, as the store keeps it (no secret inside).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizerRecord {
    pub component_appid: String,
    pub authorizer_appid: String,
    pub state: AuthorizerState,
    /// The permission set ids WeChat granted (`func_info[].funcscope_category.id`).
    #[serde(default)]
    pub func_info: Vec<i64>,
    /// Unix ms of the event that put the authorizer in this state (a push's CreateTime, an
    /// import's time): a write whose event is older than the stored one is refused, so a late
    /// push never undoes an `unauthorized`.
    pub event_ms: i64,
    /// Unix ms of the last write.
    pub updated_ms: i64,
}

/// The tombstone an `unauthorized` event at `event_ms` leaves (keeping what was known).
pub(crate) fn tombstone(
    component: &str,
    appid: &str,
    event_ms: i64,
    old: Option<&AuthorizerRecord>,
) -> AuthorizerRecord {
    AuthorizerRecord {
        component_appid: component.to_owned(),
        authorizer_appid: appid.to_owned(),
        state: AuthorizerState::Unauthorized,
        func_info: old.map(|o| o.func_info.clone()).unwrap_or_default(),
        event_ms,
        updated_ms: crate::clock::now_ms(),
    }
}

/// What goes into the store together with an authorizer's new access token, in the same
/// transaction as the fenced write (so a rotated refresh token is never lost while the token
/// that came with it is kept, nor the other way round).
#[derive(Clone, Copy, Debug)]
pub struct AuthorizerWrite<'a> {
    pub refresh_token: &'a Secret,
    /// A new or changed record (an authorization, an update); `None` keeps the stored one.
    pub record: Option<&'a AuthorizerRecord>,
    /// The digest of the authorization code exchanged for this token, kept so the code is
    /// exchanged once whoever brings it again (the landing page and the push both do).
    pub code_digest: Option<&'a str>,
}

/// A component's verify ticket with when WeChat pushed it (valid 12 hours from then).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyTicket {
    pub ticket: Secret,
    /// Unix ms of the push (its CreateTime).
    pub pushed_at_ms: i64,
}

/// WeChat's validity of a verify ticket.
pub const VERIFY_TICKET_TTL_MS: i64 = 12 * 3_600_000;

impl VerifyTicket {
    /// The secret the store keeps: `pushed_at_ms:ticket`, sealed whole like every secret.
    pub(crate) fn encode(&self) -> Secret {
        Secret::new(format!("{}:{}", self.pushed_at_ms, self.ticket.expose()))
    }

    pub(crate) fn decode(s: &Secret) -> Option<Self> {
        let (at, ticket) = s.expose().split_once(':')?;
        Some(Self { ticket: Secret::new(ticket.to_owned()), pushed_at_ms: at.parse().ok()? })
    }

    pub fn is_valid(&self, now_ms: i64) -> bool {
        now_ms < self.pushed_at_ms.saturating_add(VERIFY_TICKET_TTL_MS)
    }
}

/// Store names of the open platform's secrets.
pub(crate) fn verify_ticket_name(component: &str) -> String {
    format!("verify_ticket:{component}")
}

pub(crate) fn refresh_token_name(authorizer: &str) -> String {
    format!("refresh_token:{authorizer}")
}

pub(crate) fn code_name(component: &str, digest: &str) -> String {
    format!("auth_code:{component}:{digest}")
}

/// Pending authorization events (durable before the push is acknowledged).
pub(crate) fn pending_prefix(component: &str) -> String {
    format!("pending_auth:{component}:")
}

/// A short digest that names an authorization code without keeping it.
pub fn code_digest(code: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(code.as_bytes())[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_tickets_round_trip_and_expire() {
        let t = VerifyTicket { ticket: Secret::from("ticket@@@x:y"), pushed_at_ms: 1_000 };
        assert_eq!(VerifyTicket::decode(&t.encode()), Some(t.clone()));
        assert!(t.is_valid(1_000 + VERIFY_TICKET_TTL_MS - 1));
        assert!(!t.is_valid(1_000 + VERIFY_TICKET_TTL_MS));
        assert_eq!(VerifyTicket::decode(&Secret::from("garbage")), None);
    }

    #[test]
    fn code_digests_are_stable_and_hide_the_code() {
        let d = code_digest("queryauthcode@@@abc");
        assert_eq!(d, code_digest("queryauthcode@@@abc"));
        assert_eq!(d.len(), 32);
        assert!(!d.contains("abc"));
    }
}
