//! What the engine keeps: credential kinds, keys, values and the apps they belong to.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use wechat_proto::Secret;
use wechat_proto::api::TicketType;

/// A kind of credential. The string forms are the ones of the HTTP API and the store keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    AccessToken,
    JsapiTicket,
    WxCardTicket,
    ComponentAccessToken,
}

impl CredentialKind {
    pub const ALL: [Self; 4] =
        [Self::AccessToken, Self::JsapiTicket, Self::WxCardTicket, Self::ComponentAccessToken];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessToken => "access_token",
            Self::JsapiTicket => "jsapi_ticket",
            Self::WxCardTicket => "wx_card_ticket",
            Self::ComponentAccessToken => "component_access_token",
        }
    }

    /// The getticket `type` for ticket kinds.
    pub fn ticket_type(self) -> Option<TicketType> {
        match self {
            Self::JsapiTicket => Some(TicketType::Jsapi),
            Self::WxCardTicket => Some(TicketType::WxCard),
            _ => None,
        }
    }

    pub fn from_ticket_type(t: TicketType) -> Self {
        match t {
            TicketType::Jsapi => Self::JsapiTicket,
            TicketType::WxCard => Self::WxCardTicket,
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CredentialKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or(())
    }
}

/// Identifies one credential: whose it is and what it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialKey {
    pub appid: String,
    pub kind: CredentialKind,
}

impl CredentialKey {
    pub fn new(appid: impl Into<String>, kind: CredentialKind) -> Self {
        Self { appid: appid.into(), kind }
    }
}

impl fmt::Display for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.appid, self.kind)
    }
}

/// One fetched value. `version` only grows per key, across restarts and nodes, so a late writer
/// never replaces a newer value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub value: Secret,
    /// Unix milliseconds at which WeChat stops accepting the value.
    pub expires_at_ms: i64,
    /// Unix milliseconds of the fetch; with `expires_at_ms` it gives the lifetime the margins
    /// scale with.
    pub fetched_at_ms: i64,
    pub version: u64,
    /// Until when the value is promised to keep working, for answers to clients that cache it
    /// (DESIGN.md §8 "Expiry in answers"): `expires_at_ms`, or earlier for values whose refresh
    /// kills them (the earliest planned refresh plus WeChat's overlap). Not stored: the engine
    /// derives it from its settings when it installs the value, the same on every node.
    pub valid_until_ms: i64,
}

impl Credential {
    /// A value as WeChat gave it, promised until it expires.
    pub fn new(value: Secret, expires_at_ms: i64, fetched_at_ms: i64, version: u64) -> Self {
        Self { value, expires_at_ms, fetched_at_ms, version, valid_until_ms: expires_at_ms }
    }

    pub fn lifetime_ms(&self) -> i64 {
        self.expires_at_ms - self.fetched_at_ms
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AppKind {
    #[default]
    OfficialAccount,
    MiniProgram,
}

/// Which WeChat endpoint issues the app's access_token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TokenApi {
    /// `POST /cgi-bin/stable_token`: does not invalidate tokens other callers hold.
    #[default]
    Stable,
    /// `GET /cgi-bin/token`: every call kills the previous token after ~5 minutes.
    Classic,
}

/// What an entry of the live set is, which decides where its token comes from.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Role {
    /// An official account or mini program with its own AppSecret.
    #[default]
    App,
    /// A third-party platform: its `component_access_token` comes from its secret and the
    /// verify ticket WeChat pushes. `authorizer_tickets` are kept for every authorizer.
    Component { authorizer_tickets: Vec<TicketType> },
    /// An account that authorized `component`: its token comes from the component's token and
    /// the refresh token the store keeps (there is no AppSecret; `secret` is empty).
    Authorizer { component: String },
}

/// A configured official account or mini program, a component, or an authorizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSpec {
    pub appid: String,
    pub secret: Secret,
    pub kind: AppKind,
    pub token_api: TokenApi,
    pub tickets: Vec<TicketType>,
    pub role: Role,
}

impl AppSpec {
    /// An official account on the stable token API with no tickets.
    pub fn official_account(appid: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            appid: appid.into(),
            secret: Secret::new(secret.into()),
            kind: AppKind::OfficialAccount,
            token_api: TokenApi::Stable,
            tickets: Vec::new(),
            role: Role::App,
        }
    }

    /// A third-party platform keeping `authorizer_tickets` for each of its authorizers.
    pub fn component(
        appid: impl Into<String>,
        secret: impl Into<String>,
        authorizer_tickets: Vec<TicketType>,
    ) -> Self {
        Self {
            role: Role::Component { authorizer_tickets },
            token_api: TokenApi::Classic,
            ..Self::official_account(appid, secret)
        }
    }

    /// An authorizer of `component` with the tickets the component keeps for each.
    pub fn authorizer(
        appid: impl Into<String>,
        component: impl Into<String>,
        tickets: Vec<TicketType>,
    ) -> Self {
        Self {
            role: Role::Authorizer { component: component.into() },
            token_api: TokenApi::Classic,
            tickets,
            ..Self::official_account(appid, String::new())
        }
    }

    /// The component an authorizer belongs to.
    pub fn component_of(&self) -> Option<&str> {
        match &self.role {
            Role::Authorizer { component } => Some(component),
            _ => None,
        }
    }

    /// The credentials the engine keeps for this app.
    pub fn kinds(&self) -> Box<dyn Iterator<Item = CredentialKind> + '_> {
        match self.role {
            Role::Component { .. } => Box::new(std::iter::once(CredentialKind::ComponentAccessToken)),
            Role::App | Role::Authorizer { .. } => Box::new(
                std::iter::once(CredentialKind::AccessToken)
                    .chain(self.tickets.iter().map(|t| CredentialKind::from_ticket_type(*t))),
            ),
        }
    }
}
