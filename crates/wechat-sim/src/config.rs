//! `sim.toml`: the accounts the simulator knows and the lifetimes it gives them.
//!
//! Every lifetime is a config value so that a test can run many lifetimes in a minute; the
//! defaults are WeChat's own.

use serde::Deserialize;
use std::collections::HashSet;

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The config is unusable; the message names the key and the reason.
    #[error("config: {0}")]
    Config(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// The whole simulator config: `[[app]]` and `[[component]]` tables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    #[serde(default, rename = "app")]
    pub apps: Vec<SimApp>,
    /// Off by default. On, a token request for an unknown appid registers it with the secret
    /// presented (WeChat's defaults otherwise), so a sandbox can try apps added at runtime.
    #[serde(default)]
    pub auto_register: bool,
    #[serde(default, rename = "component")]
    pub components: Vec<SimComponent>,
}

/// An official account or mini program.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimApp {
    pub appid: String,
    pub secret: String,
    #[serde(default = "d_ttl")]
    pub token_ttl_secs: u64,
    /// How long the previous classic token keeps working after a new one is issued.
    #[serde(default = "d_overlap")]
    pub overlap_secs: u64,
    /// A stable token with this little left is rotated by the next normal-mode call.
    #[serde(default = "d_overlap")]
    pub stable_rotate_secs: u64,
    /// Calls per Asia/Shanghai day, counted per endpoint.
    #[serde(default = "d_quota")]
    pub daily_quota: u64,
    /// Lifetime of jsapi / wx_card tickets; `None` means `token_ttl_secs`.
    #[serde(default)]
    pub ticket_ttl_secs: Option<u64>,
    /// `force_refresh` calls honoured per Asia/Shanghai day (WeChat: 20).
    #[serde(default = "d_force_limit")]
    pub force_refresh_daily_limit: u64,
    /// Minimum seconds between two honoured `force_refresh` calls (WeChat: 30).
    #[serde(default = "d_force_interval")]
    pub force_refresh_interval_secs: u64,
}

/// A third-party platform (open-platform component).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimComponent {
    pub appid: String,
    pub secret: String,
    /// Message token used for push signatures.
    pub token: String,
    /// 43-char base64 key used to encrypt pushes.
    pub encoding_aes_key: String,
    /// Where pushes are POSTed; without it no push is sent.
    #[serde(default)]
    pub push_url: Option<String>,
    #[serde(default = "d_push_interval")]
    pub push_interval_secs: u64,
    #[serde(default = "d_ttl")]
    pub token_ttl_secs: u64,
    #[serde(default = "d_ttl")]
    pub authorizer_token_ttl_secs: u64,
    /// Overlap of the previous component / authorizer token after a new one is issued.
    #[serde(default = "d_overlap")]
    pub overlap_secs: u64,
    /// How long a pushed verify ticket is accepted by `api_component_token` (WeChat: 12 h).
    #[serde(default = "d_verify_ticket_ttl")]
    pub verify_ticket_ttl_secs: u64,
    /// Calls per Asia/Shanghai day to each component endpoint (and authorizers' getticket).
    #[serde(default = "d_quota")]
    pub daily_quota: u64,
    /// Off (WeChat's usual behaviour): an authorizer keeps one refresh token until it
    /// unauthorizes. On: every `api_authorizer_token` call hands out a new one, so a hub that
    /// keeps using the old one (or loses the new one) is caught. `POST /__sim/rotation` switches
    /// it at runtime.
    #[serde(default)]
    pub rotate_refresh_token: bool,
    /// How long a superseded refresh token keeps working (WeChat staff: a 5-minute transition).
    #[serde(default = "d_overlap")]
    pub refresh_token_grace_secs: u64,
    /// `api_get_authorizer_list` entries without `refresh_token`, as community reports say
    /// WeChat sometimes answers.
    #[serde(default)]
    pub list_omits_refresh_token: bool,
    /// Further attempts at a push not answered `success` (WeChat retries too).
    #[serde(default = "d_push_retries")]
    pub push_retries: u32,
    #[serde(default = "d_push_retry_interval_ms")]
    pub push_retry_interval_ms: u64,
}

fn d_ttl() -> u64 {
    7200
}
fn d_overlap() -> u64 {
    300
}
fn d_quota() -> u64 {
    2000
}
fn d_force_limit() -> u64 {
    20
}
fn d_force_interval() -> u64 {
    30
}
fn d_push_interval() -> u64 {
    600
}
fn d_verify_ticket_ttl() -> u64 {
    12 * 3600
}
fn d_push_retries() -> u32 {
    3
}
fn d_push_retry_interval_ms() -> u64 {
    500
}

/// More retries than this would only keep a dead receiver's log busy.
const MAX_PUSH_RETRIES: u32 = 20;

// Secrets stay out of Debug output: the simulator's logs are grepped by other tests for leaks.
impl std::fmt::Debug for SimApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimApp")
            .field("appid", &self.appid)
            .field("secret", &"[redacted]")
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("overlap_secs", &self.overlap_secs)
            .field("stable_rotate_secs", &self.stable_rotate_secs)
            .field("daily_quota", &self.daily_quota)
            .field("ticket_ttl_secs", &self.ticket_ttl_secs)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SimComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimComponent")
            .field("appid", &self.appid)
            .field("secret", &"[redacted]")
            .field("push_url", &self.push_url)
            .field("push_interval_secs", &self.push_interval_secs)
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("authorizer_token_ttl_secs", &self.authorizer_token_ttl_secs)
            .field("rotate_refresh_token", &self.rotate_refresh_token)
            .field("refresh_token_grace_secs", &self.refresh_token_grace_secs)
            .field("push_retries", &self.push_retries)
            .field("push_retry_interval_ms", &self.push_retry_interval_ms)
            .finish_non_exhaustive()
    }
}

impl SimApp {
    /// An app with WeChat's default lifetimes and quota.
    pub fn new(appid: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            appid: appid.into(),
            secret: secret.into(),
            token_ttl_secs: d_ttl(),
            overlap_secs: d_overlap(),
            stable_rotate_secs: d_overlap(),
            daily_quota: d_quota(),
            ticket_ttl_secs: None,
            force_refresh_daily_limit: d_force_limit(),
            force_refresh_interval_secs: d_force_interval(),
        }
    }

    /// Token lifetime (tickets follow unless set apart with [`SimApp::ticket_ttl`]).
    pub fn ttl(mut self, secs: u64) -> Self {
        self.token_ttl_secs = secs;
        self
    }

    pub fn overlap(mut self, secs: u64) -> Self {
        self.overlap_secs = secs;
        self
    }

    pub fn stable_rotate(mut self, secs: u64) -> Self {
        self.stable_rotate_secs = secs;
        self
    }

    pub fn quota(mut self, calls: u64) -> Self {
        self.daily_quota = calls;
        self
    }

    pub fn ticket_ttl(mut self, secs: u64) -> Self {
        self.ticket_ttl_secs = Some(secs);
        self
    }

    pub(crate) fn ticket_ttl_or_default(&self) -> u64 {
        self.ticket_ttl_secs.unwrap_or(self.token_ttl_secs)
    }
}

impl SimComponent {
    /// A component with WeChat's default lifetimes and no push URL.
    pub fn new(
        appid: impl Into<String>,
        secret: impl Into<String>,
        token: impl Into<String>,
        encoding_aes_key: impl Into<String>,
    ) -> Self {
        Self {
            appid: appid.into(),
            secret: secret.into(),
            token: token.into(),
            encoding_aes_key: encoding_aes_key.into(),
            push_url: None,
            push_interval_secs: d_push_interval(),
            token_ttl_secs: d_ttl(),
            authorizer_token_ttl_secs: d_ttl(),
            overlap_secs: d_overlap(),
            verify_ticket_ttl_secs: d_verify_ticket_ttl(),
            daily_quota: d_quota(),
            rotate_refresh_token: false,
            refresh_token_grace_secs: d_overlap(),
            list_omits_refresh_token: false,
            push_retries: d_push_retries(),
            push_retry_interval_ms: d_push_retry_interval_ms(),
        }
    }

    pub fn push_url(mut self, url: impl Into<String>) -> Self {
        self.push_url = Some(url.into());
        self
    }

    pub fn push_interval(mut self, secs: u64) -> Self {
        self.push_interval_secs = secs;
        self
    }

    pub fn ttl(mut self, secs: u64) -> Self {
        self.token_ttl_secs = secs;
        self
    }

    pub fn authorizer_ttl(mut self, secs: u64) -> Self {
        self.authorizer_token_ttl_secs = secs;
        self
    }

    /// See [`SimComponent::rotate_refresh_token`]; `grace_secs` is `refresh_token_grace_secs`.
    pub fn rotate_refresh_token(mut self, on: bool, grace_secs: u64) -> Self {
        self.rotate_refresh_token = on;
        self.refresh_token_grace_secs = grace_secs;
        self
    }

    /// `retries` further attempts `interval_ms` apart for a push not answered `success`.
    pub fn push_retries(mut self, retries: u32, interval_ms: u64) -> Self {
        self.push_retries = retries;
        self.push_retry_interval_ms = interval_ms;
        self
    }

    pub fn list_omits_refresh_token(mut self, on: bool) -> Self {
        self.list_omits_refresh_token = on;
        self
    }
}

impl SimConfig {
    pub fn from_toml(s: &str) -> Result<Self, SimError> {
        let config: Self = toml::from_str(s).map_err(|e| SimError::Config(one_line(&e.to_string())))?;
        config.validate()?;
        Ok(config)
    }

    pub fn new() -> Self {
        Self::default()
    }

    pub fn app(mut self, app: SimApp) -> Self {
        self.apps.push(app);
        self
    }

    /// See [`SimConfig::auto_register`].
    pub fn auto_register(mut self, on: bool) -> Self {
        self.auto_register = on;
        self
    }

    pub fn component(mut self, component: SimComponent) -> Self {
        self.components.push(component);
        self
    }

    /// The config the binary runs without `--config`: one app whose id and secret it prints.
    pub fn demo() -> Self {
        Self::new().app(SimApp::new(DEMO_APPID, DEMO_SECRET))
    }

    /// Rejects what would make the simulator ambiguous or unable to encrypt, naming the key.
    pub fn validate(&self) -> Result<(), SimError> {
        let mut seen = HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            let at = |key: &str| format!("app[{i}].{key}");
            if app.appid.is_empty() {
                return Err(SimError::Config(format!("{}: must not be empty", at("appid"))));
            }
            if app.secret.is_empty() {
                return Err(SimError::Config(format!("{}: must not be empty", at("secret"))));
            }
            if app.token_ttl_secs == 0 {
                return Err(SimError::Config(format!("{}: must be at least 1", at("token_ttl_secs"))));
            }
            if app.ticket_ttl_secs == Some(0) {
                return Err(SimError::Config(format!("{}: must be at least 1", at("ticket_ttl_secs"))));
            }
            if !seen.insert(app.appid.clone()) {
                return Err(SimError::Config(format!("{}: duplicate appid {}", at("appid"), app.appid)));
            }
        }
        for (i, c) in self.components.iter().enumerate() {
            let at = |key: &str| format!("component[{i}].{key}");
            for (key, value) in [("appid", &c.appid), ("secret", &c.secret), ("token", &c.token)] {
                if value.is_empty() {
                    return Err(SimError::Config(format!("{}: must not be empty", at(key))));
                }
            }
            if !crate::push::valid_aes_key(&c.encoding_aes_key) {
                return Err(SimError::Config(format!(
                    "{}: must be 43 characters of base64 (WeChat's EncodingAESKey)",
                    at("encoding_aes_key")
                )));
            }
            for (key, value) in [
                ("token_ttl_secs", c.token_ttl_secs),
                ("authorizer_token_ttl_secs", c.authorizer_token_ttl_secs),
                ("push_interval_secs", c.push_interval_secs),
                ("verify_ticket_ttl_secs", c.verify_ticket_ttl_secs),
            ] {
                if value == 0 {
                    return Err(SimError::Config(format!("{}: must be at least 1", at(key))));
                }
            }
            if c.push_retries > MAX_PUSH_RETRIES {
                return Err(SimError::Config(format!(
                    "{}: must be at most {MAX_PUSH_RETRIES}",
                    at("push_retries")
                )));
            }
            if c.push_retry_interval_ms > 60_000 {
                return Err(SimError::Config(format!(
                    "{}: must be at most 60000",
                    at("push_retry_interval_ms")
                )));
            }
            if let Some(url) = &c.push_url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(SimError::Config(format!("{}: must be an http(s) URL", at("push_url"))));
            }
            if !seen.insert(c.appid.clone()) {
                return Err(SimError::Config(format!("{}: duplicate appid {}", at("appid"), c.appid)));
            }
        }
        Ok(())
    }
}

/// The demo app of `wechat-sim` without `--config`.
pub const DEMO_APPID: &str = "wx5133d3m0a990e0a1";
/// Its secret; printed on start, so it is no secret.
pub const DEMO_SECRET: &str = "demo0secret0for0the0wechat0simulator";

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_wechats() {
        let c = SimConfig::from_toml(
            r#"
            [[app]]
            appid = "wxa"
            secret = "s"
            [[component]]
            appid = "wxc"
            secret = "cs"
            token = "t"
            encoding_aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
            "#,
        )
        .unwrap();
        let a = &c.apps[0];
        assert_eq!(
            (a.token_ttl_secs, a.overlap_secs, a.stable_rotate_secs, a.daily_quota),
            (7200, 300, 300, 2000)
        );
        assert_eq!(a.ticket_ttl_or_default(), 7200);
        let comp = &c.components[0];
        assert_eq!(
            (comp.push_interval_secs, comp.token_ttl_secs, comp.authorizer_token_ttl_secs),
            (600, 7200, 7200)
        );
        assert_eq!(comp.verify_ticket_ttl_secs, 43200);
        assert!(comp.push_url.is_none());
        assert_eq!(
            (comp.rotate_refresh_token, comp.refresh_token_grace_secs, comp.list_omits_refresh_token),
            (false, 300, false)
        );
        assert_eq!((comp.push_retries, comp.push_retry_interval_ms), (3, 500));
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            ("[[app]]\nappid = \"a\"\nsecret = \"\"", "app[0].secret"),
            (
                "[[app]]\nappid = \"a\"\nsecret = \"s\"\n[[app]]\nappid = \"a\"\nsecret = \"s\"",
                "app[1].appid",
            ),
            ("[[app]]\nappid = \"a\"\nsecret = \"s\"\ntoken_ttl_secs = 0", "app[0].token_ttl_secs"),
            (
                "[[component]]\nappid = \"c\"\nsecret = \"s\"\ntoken = \"t\"\nencoding_aes_key = \"short\"",
                "component[0].encoding_aes_key",
            ),
            ("[[app]]\nappid = \"a\"\nsecret = \"s\"\nbogus = 1", "bogus"),
            (
                "[[component]]\nappid = \"c\"\nsecret = \"s\"\ntoken = \"t\"\nencoding_aes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\npush_retries = 99",
                "component[0].push_retries",
            ),
        ];
        for (toml, key) in cases {
            let err = SimConfig::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{err} should name {key}");
            assert!(!err.contains('\n'), "{err:?} should be one line");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let shown = format!("{:?}", SimConfig::demo());
        assert!(!shown.contains(DEMO_SECRET), "{shown}");
    }
}
