//! `wxcentral.toml`: parsing, `${VAR}` secrets, `WXCENTRAL_…` overrides and validation.
//!
//! A bad config must fail at start with one line that names the key and the reason, because the
//! person reading it is an operator at a terminal or in a deploy log. Every error therefore
//! carries the dotted key path (`app[1].secret`, `store.kind`).

use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wechat_proto::Secret;
use wechat_proto::api::TicketType;
use wxcentral_core::{AppKind, AppSpec, EngineConfig, TokenApi, store::StoreConfig};

/// A config error: the key it is about and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    /// Keys and reasons quote TOML keys, environment names and values, any of which can hold a
    /// line break or a terminal escape; those are escaped so that the error stays one line.
    pub(crate) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        let key = one_line(&key.into());
        // A TOML key may be `""`; the error must still name something.
        let key = if key.is_empty() { "config".to_owned() } else { key };
        Self { key, reason: one_line(&reason.into()) }
    }
}

fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub refresh: RefreshConfig,
    #[serde(default)]
    pub proxy: ProxyConfig,
    #[serde(default, rename = "app")]
    pub apps: Vec<AppConfig>,
    #[serde(default, rename = "component")]
    pub components: Vec<ComponentConfig>,
    #[serde(default, rename = "client")]
    pub clients: Vec<ClientConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Largest request body accepted; larger ones get 413 `payload_too_large`.
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// This process's name in the store's refresh leases; every process sharing a store needs
    /// its own (default: hostname-pid-random).
    #[serde(default)]
    pub node_id: Option<String>,
    /// Per-app labels on the engine's metric series; `false` sums them over apps, for
    /// deployments with thousands of apps (see docs/design.md for what each costs).
    #[serde(default = "default_true")]
    pub metrics_per_app: bool,
}

fn default_true() -> bool {
    true
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            public_url: None,
            log_format: LogFormat::default(),
            body_limit_bytes: default_body_limit(),
            node_id: None,
            metrics_per_app: true,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_body_limit() -> usize {
    64 * 1024
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    #[default]
    Sqlite,
    Redis,
    Memory,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    #[serde(default)]
    pub kind: StoreKind,
    #[serde(default = "default_db_path")]
    pub path: PathBuf,
    #[serde(default)]
    pub url: Option<Secret>,
    #[serde(default)]
    pub namespace: Option<String>,
    /// Redis: a command slower than this fails, and the node serves what it holds.
    #[serde(default = "default_redis_timeout_ms")]
    pub timeout_ms: u64,
    /// Redis: refresh tokens and verify tickets are acknowledged once this many replicas have
    /// them (`WAIT`); 0 relies on the primary's own persistence (`appendfsync always`).
    #[serde(default)]
    pub wait_replicas: u32,
    /// 32 random bytes, base64: seals every secret the store keeps (runtime app secrets,
    /// refresh tokens, verify tickets). Without it, such secrets are refused.
    #[serde(default)]
    pub encryption_key: Option<Secret>,
    /// Keys sealed with before: values under them still open and are sealed again under the
    /// current key when next written.
    #[serde(default)]
    pub previous_encryption_keys: Vec<Secret>,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            kind: StoreKind::default(),
            path: default_db_path(),
            url: None,
            namespace: None,
            timeout_ms: default_redis_timeout_ms(),
            wait_replicas: 0,
            encryption_key: None,
            previous_encryption_keys: Vec::new(),
        }
    }
}

fn default_redis_timeout_ms() -> u64 {
    1000
}

/// The namespace when none is configured.
const DEFAULT_REDIS_NAMESPACE: &str = "wxcentral";

fn default_db_path() -> PathBuf {
    "wxcentral.db".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Upstream calls in flight at once, every credential together.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Upstream calls started per second, every credential together.
    #[serde(default = "default_max_per_second")]
    pub max_per_second: u32,
    /// How long a proxied attempt may wait for WeChat's answer head and, when it is read whole, its
    /// body (longer than the token calls' budget: uploads are sent before WeChat answers).
    #[serde(default = "default_proxy_timeout_ms")]
    pub proxy_timeout_ms: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            base_url: default_base_url(),
            timeout_ms: default_timeout_ms(),
            max_concurrency: default_max_concurrency(),
            max_per_second: default_max_per_second(),
            proxy_timeout_ms: default_proxy_timeout_ms(),
        }
    }
}

fn default_proxy_timeout_ms() -> u64 {
    30_000
}

/// The token-injecting proxy in front of WeChat's API (DESIGN.md §5).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Path prefixes forwarded to the upstream; anything else is not WeChat's and gets 404.
    #[serde(default = "default_proxy_prefixes")]
    pub prefixes: Vec<String>,
    /// The largest request body forwarded (uploads).
    #[serde(default = "default_proxy_request_bytes")]
    pub max_request_bytes: u64,
    /// The largest response body forwarded (downloads).
    #[serde(default = "default_proxy_response_bytes")]
    pub max_response_bytes: u64,
    /// Request bodies up to this size are kept for the one retry after a token error; larger
    /// ones stream through and are not retried.
    #[serde(default = "default_proxy_retry_bytes")]
    pub retry_body_bytes: u64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            prefixes: default_proxy_prefixes(),
            max_request_bytes: default_proxy_request_bytes(),
            max_response_bytes: default_proxy_response_bytes(),
            retry_body_bytes: default_proxy_retry_bytes(),
        }
    }
}

fn default_proxy_prefixes() -> Vec<String> {
    [
        "/cgi-bin/",
        "/wxa/",
        "/sns/",
        "/datacube/",
        "/card/",
        "/customservice/",
        "/merchant/",
        "/channels/",
        "/shop/",
        "/product/",
        "/wxaapi/",
        "/semantic/",
        "/tcb/",
        "/intp/",
        "/union/",
        "/mall/",
        "/scan/",
        "/wxopen/",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

fn default_proxy_request_bytes() -> u64 {
    64 << 20
}

fn default_proxy_response_bytes() -> u64 {
    256 << 20
}

fn default_proxy_retry_bytes() -> u64 {
    1 << 20
}

fn default_max_concurrency() -> usize {
    16
}

fn default_max_per_second() -> u32 {
    50
}

fn default_base_url() -> String {
    "https://api.weixin.qq.com".into()
}

fn default_timeout_ms() -> u64 {
    5000
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshConfig {
    pub refresh_before_secs: Option<u64>,
    pub serve_margin_secs: Option<u64>,
    /// How long a read with nothing valid waits for the refresh in flight.
    pub read_wait_ms: Option<u64>,
    /// WeChat's stable_token rotation window (300 s on the real service).
    pub stable_rotate_secs: Option<u64>,
    /// How long WeChat keeps a classic token working after its successor was fetched (300 s
    /// on the real service); bounds the `expires_in` promised to clients.
    pub token_overlap_secs: Option<u64>,
    /// The youngest a value may be for a guarded report (a drop-in `force_refresh`, an SDK
    /// asking for its token again) to refresh it (30 s, WeChat's spacing of force_refresh).
    pub report_guard_secs: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub appid: String,
    pub secret: Secret,
    #[serde(default)]
    pub kind: AppKind,
    #[serde(default)]
    pub token_api: TokenApi,
    #[serde(default)]
    pub tickets: Vec<TicketType>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    pub appid: String,
    pub secret: Secret,
    pub token: Secret,
    pub encoding_aes_key: Secret,
    #[serde(default)]
    pub tickets: Vec<TicketType>,
    #[serde(default)]
    pub after_authorize_url: Option<String>,
    /// The EncodingAESKey before the last rotation: pushes are opened with the current key,
    /// then this one.
    #[serde(default)]
    pub previous_encoding_aes_key: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub name: String,
    /// Lowercase hex sha256 of the client key (`wxcentral hash-key`); the key itself is never
    /// stored.
    pub key_sha256: String,
    #[serde(default)]
    pub apps: Vec<String>,
    #[serde(default)]
    pub refresh: bool,
    #[serde(default)]
    pub admin: bool,
}

/// Sections whose scalar keys `WXCENTRAL_<SECTION>_<KEY>` overrides.
const SECTIONS: [&str; 5] = ["server", "store", "upstream", "refresh", "proxy"];
/// Array sections, overridden as `WXCENTRAL_<SECTION>_<INDEX>_<KEY>`.
const ARRAYS: [&str; 3] = ["app", "component", "client"];

impl Config {
    /// Reads `path`, applies the process environment and validates.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("config", format!("cannot read {}: {e}", path.display())))?;
        let env = utf8_env(std::env::vars_os(), &text)?;
        Self::from_toml(&text, env)
    }

    /// Parses `text` with the given environment (`${VAR}` values and `WXCENTRAL_…` overrides).
    pub fn from_toml(text: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut root: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let before = e.span().and_then(|span| text.as_bytes().get(..span.start)).unwrap_or_default();
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            // Some messages go on to a second line with what was expected.
            let message: Vec<&str> = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            ConfigError::new("config", format!("not valid TOML (line {line}): {}", message.join("; ")))
        })?;
        apply_overrides(&mut root, &env)?;
        let mut value = toml::Value::Table(root);
        expand_vars(&mut value, &mut String::new(), &env)?;
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { "config".to_owned() } else { key };
            // `message()`, not `to_string()`: the latter appends the key on a second line, and the
            // path already names it.
            ConfigError::new(key, e.into_inner().message())
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        self.listen_addr()?;
        if let Some(url) = &self.server.public_url {
            check_http_url("server.public_url", url)?;
        }
        check_http_url("upstream.base_url", &self.upstream.base_url)?;
        if self.upstream.timeout_ms == 0 {
            return Err(ConfigError::new("upstream.timeout_ms", "must be greater than 0"));
        }
        if self.upstream.proxy_timeout_ms == 0 {
            return Err(ConfigError::new("upstream.proxy_timeout_ms", "must be greater than 0"));
        }
        for p in &self.proxy.prefixes {
            let segment = p.strip_prefix('/').and_then(|r| r.strip_suffix('/'));
            if !segment.is_some_and(|s| {
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            }) {
                return Err(ConfigError::new(
                    "proxy.prefixes",
                    format!("{p:?} is not one path segment like \"/cgi-bin/\""),
                ));
            }
            if p == "/v1/" || p == "/callback/" {
                return Err(ConfigError::new("proxy.prefixes", format!("{p:?} is the hub's own")));
            }
        }
        if self.proxy.retry_body_bytes > self.proxy.max_request_bytes {
            return Err(ConfigError::new(
                "proxy.retry_body_bytes",
                "must not exceed proxy.max_request_bytes",
            ));
        }
        if let Some(id) = &self.server.node_id
            && (id.is_empty() || id.len() > 128 || id.chars().any(char::is_control))
        {
            return Err(ConfigError::new(
                "server.node_id",
                "must be 1 to 128 characters with no control characters",
            ));
        }
        self.sealer()?;
        if !(1..=1024).contains(&self.upstream.max_concurrency) {
            return Err(ConfigError::new("upstream.max_concurrency", "must be 1 to 1024"));
        }
        if !(1..=100_000).contains(&self.upstream.max_per_second) {
            return Err(ConfigError::new("upstream.max_per_second", "must be 1 to 100000"));
        }
        if self.server.body_limit_bytes < 1024 {
            return Err(ConfigError::new("server.body_limit_bytes", "must be at least 1024"));
        }
        match self.store.kind {
            StoreKind::Redis => {
                let url = self.store.url.as_ref().map(|u| u.expose().as_str()).unwrap_or_default();
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    return Err(ConfigError::new(
                        "store.url",
                        "kind = \"redis\" needs url = \"redis://[user:password@]host:port[/db]\" (rediss:// for TLS)",
                    ));
                }
                if !wxcentral_core::store::valid_redis_url(url) {
                    return Err(ConfigError::new("store.url", "is not a valid redis:// or rediss:// URL"));
                }
                if let Some(ns) = &self.store.namespace
                    && !wxcentral_core::store::valid_namespace(ns)
                {
                    return Err(ConfigError::new(
                        "store.namespace",
                        "letters, digits, '_', '-' and '.', at most 64 (it becomes a Redis hash tag)",
                    ));
                }
                if !(10..=60_000).contains(&self.store.timeout_ms) {
                    return Err(ConfigError::new("store.timeout_ms", "must be 10 to 60000"));
                }
                if self.store.encryption_key.is_none() {
                    return Err(ConfigError::new(
                        "store.encryption_key",
                        "is required with kind = \"redis\": every value kept in Redis is sealed",
                    ));
                }
            }
            StoreKind::Sqlite if self.store.path.as_os_str().is_empty() => {
                return Err(ConfigError::new("store.path", "must not be empty"));
            }
            _ => {}
        }
        let mut seen = HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            check_appid(&format!("app[{i}].appid"), &app.appid)?;
            if app.secret.expose().is_empty() {
                return Err(ConfigError::new(format!("app[{i}].secret"), "must not be empty"));
            }
            if !seen.insert(app.appid.as_str()) {
                return Err(ConfigError::new(
                    format!("app[{i}].appid"),
                    format!("duplicate appid {}", app.appid),
                ));
            }
        }
        for (i, c) in self.components.iter().enumerate() {
            check_appid(&format!("component[{i}].appid"), &c.appid)?;
            if !seen.insert(c.appid.as_str()) {
                return Err(ConfigError::new(
                    format!("component[{i}].appid"),
                    format!("duplicate appid {}", c.appid),
                ));
            }
            for (key, value) in [("secret", &c.secret), ("token", &c.token)] {
                if value.expose().is_empty() {
                    return Err(ConfigError::new(format!("component[{i}].{key}"), "must not be empty"));
                }
            }
            let keys = [
                ("encoding_aes_key", Some(&c.encoding_aes_key)),
                ("previous_encoding_aes_key", c.previous_encoding_aes_key.as_ref()),
            ];
            for (key, value) in keys {
                if let Some(v) = value
                    && (v.expose().len() != 43
                        || wechat_proto::crypto::AesKey::from_encoding_aes_key(v.expose()).is_err())
                {
                    return Err(ConfigError::new(
                        format!("component[{i}].{key}"),
                        "must be the 43-character EncodingAESKey",
                    ));
                }
            }
            if let Some(url) = &c.after_authorize_url {
                check_http_url(&format!("component[{i}].after_authorize_url"), url)?;
            }
        }
        // A component's verify tickets and refresh tokens are kept sealed: without a key every
        // push would be refused and WeChat would retry forever.
        if !self.components.is_empty()
            && self.store.kind != StoreKind::Memory
            && self.store.encryption_key.is_none()
        {
            return Err(ConfigError::new(
                "store.encryption_key",
                "is required with [[component]]: verify tickets and refresh tokens are kept sealed",
            ));
        }
        let components: HashSet<&str> = self.components.iter().map(|c| c.appid.as_str()).collect();
        let mut names = HashSet::new();
        for (i, client) in self.clients.iter().enumerate() {
            if client.name.is_empty() {
                return Err(ConfigError::new(format!("client[{i}].name"), "must not be empty"));
            }
            if !names.insert(client.name.as_str()) {
                return Err(ConfigError::new(
                    format!("client[{i}].name"),
                    format!("duplicate name {}", client.name),
                ));
            }
            let h = &client.key_sha256;
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(ConfigError::new(
                    format!("client[{i}].key_sha256"),
                    "must be 64 lowercase hex characters (use `wxcentral hash-key KEY`)",
                ));
            }
            for (j, appid) in client.apps.iter().enumerate() {
                let key = format!("client[{i}].apps[{j}]");
                match appid.strip_prefix("component:") {
                    _ if appid == "*" => {}
                    Some(c) if components.contains(c) => {}
                    Some(c) => {
                        return Err(ConfigError::new(key, format!("{c} is not a configured component")));
                    }
                    // Runtime apps and authorizers are not in the file: any well-formed appid.
                    None => check_appid(&key, appid)?,
                }
            }
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr> {
        self.server.listen.parse().map_err(|_| {
            ConfigError::new(
                "server.listen",
                format!("{:?} is not an address like 127.0.0.1:8080", self.server.listen),
            )
        })
    }

    pub fn store_config(&self) -> StoreConfig {
        match self.store.kind {
            StoreKind::Memory => StoreConfig::Memory,
            StoreKind::Sqlite => StoreConfig::Sqlite { path: self.store.path.clone() },
            StoreKind::Redis => StoreConfig::Redis(wxcentral_core::store::RedisConfig {
                url: self.store.url.clone().unwrap_or_else(|| Secret::new(String::new())),
                namespace: self.store.namespace.clone().unwrap_or_else(|| DEFAULT_REDIS_NAMESPACE.into()),
                timeout: std::time::Duration::from_millis(self.store.timeout_ms),
                wait_replicas: self.store.wait_replicas,
            }),
        }
    }

    /// The store's sealer, if an encryption key is configured.
    pub fn sealer(&self) -> Result<Option<std::sync::Arc<wxcentral_core::seal::Sealer>>> {
        let Some(key) = &self.store.encryption_key else {
            if !self.store.previous_encryption_keys.is_empty() {
                return Err(ConfigError::new(
                    "store.previous_encryption_keys",
                    "set only with store.encryption_key",
                ));
            }
            return Ok(None);
        };
        use wxcentral_core::seal::{Sealer, check_key};
        check_key(key).map_err(|r| ConfigError::new("store.encryption_key", r))?;
        for (i, k) in self.store.previous_encryption_keys.iter().enumerate() {
            check_key(k).map_err(|r| ConfigError::new(format!("store.previous_encryption_keys[{i}]"), r))?;
        }
        Sealer::new(key, &self.store.previous_encryption_keys)
            .map(|s| Some(std::sync::Arc::new(s)))
            .map_err(|e| ConfigError::new("store.encryption_key", e.to_string()))
    }

    pub fn engine_config(&self) -> EngineConfig {
        let defaults = EngineConfig::default();
        EngineConfig {
            refresh_before_secs: self.refresh.refresh_before_secs,
            serve_margin_secs: self.refresh.serve_margin_secs,
            read_wait: self.refresh.read_wait_ms.map(Duration::from_millis).unwrap_or(defaults.read_wait),
            stable_rotate_secs: self.refresh.stable_rotate_secs.unwrap_or(defaults.stable_rotate_secs),
            node_id: self.server.node_id.clone().unwrap_or(defaults.node_id),
            token_overlap_secs: self.refresh.token_overlap_secs.unwrap_or(defaults.token_overlap_secs),
            max_concurrency: self.upstream.max_concurrency,
            max_per_second: self.upstream.max_per_second,
            report_guard: self.refresh.report_guard_secs.map_or(defaults.report_guard, Duration::from_secs),
        }
    }

    pub fn app_specs(&self) -> Vec<AppSpec> {
        self.apps
            .iter()
            .map(|a| AppSpec {
                appid: a.appid.clone(),
                secret: a.secret.clone(),
                kind: a.kind,
                token_api: a.token_api,
                tickets: a.tickets.clone(),
                role: wxcentral_core::kind::Role::App,
            })
            .chain(
                self.components
                    .iter()
                    .map(|c| AppSpec::component(c.appid.clone(), c.secret.expose(), c.tickets.clone())),
            )
            .collect()
    }

    /// The config as `check-config` prints it: every secret redacted, hashes shortened.
    pub fn redacted_summary(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "listen      {}", self.server.listen);
        let _ = writeln!(
            out,
            "store       {:?} {}",
            self.store.kind,
            match self.store.kind {
                StoreKind::Sqlite => self.store.path.display().to_string(),
                StoreKind::Redis => format!(
                    "[redacted url] namespace {}",
                    self.store.namespace.as_deref().unwrap_or(DEFAULT_REDIS_NAMESPACE)
                ),
                StoreKind::Memory => String::new(),
            }
        );
        let sealing = match self.sealer() {
            Ok(Some(s)) => format!(
                "key {} (+{} previous): runtime apps and secrets sealed",
                s.key_id(),
                self.store.previous_encryption_keys.len()
            ),
            _ => "no encryption_key: runtime apps and secrets are refused".into(),
        };
        let _ = writeln!(out, "sealing     {sealing}");
        let _ = writeln!(
            out,
            "upstream    {} (timeout {} ms, at most {} in flight and {}/s)",
            self.upstream.base_url,
            self.upstream.timeout_ms,
            self.upstream.max_concurrency,
            self.upstream.max_per_second
        );
        for a in &self.apps {
            let tickets: Vec<_> = a.tickets.iter().map(|t| t.as_str()).collect();
            let _ = writeln!(
                out,
                "app         {} {:?} token_api={:?} tickets=[{}] secret=[redacted]",
                a.appid,
                a.kind,
                a.token_api,
                tickets.join(",")
            );
        }
        for c in &self.components {
            let _ = writeln!(
                out,
                "component   {} secret=[redacted] token=[redacted] encoding_aes_key=[redacted]",
                c.appid
            );
        }
        for c in &self.clients {
            let _ = writeln!(
                out,
                "client      {} apps=[{}] refresh={} admin={} key_sha256={}…",
                c.name,
                c.apps.join(","),
                c.refresh,
                c.admin,
                &c.key_sha256[..8]
            );
        }
        out
    }
}

fn check_appid(key: &str, appid: &str) -> Result<()> {
    if appid.is_empty() || appid.len() > 64 || !appid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(ConfigError::new(key, format!("{appid:?} is not an appid (letters, digits, _)")));
    }
    Ok(())
}

fn check_http_url(key: &str, url: &str) -> Result<()> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(ConfigError::new(key, format!("{url:?} is not an http(s) URL"))),
    }
}

/// Applies `WXCENTRAL_<SECTION>_<KEY>` and `WXCENTRAL_<ARRAY>_<INDEX>_<KEY>` variables. Values
/// that parse as TOML scalars (numbers, booleans, arrays) keep that type; anything else is a
/// string.
fn apply_overrides(root: &mut toml::Table, env: &[(String, String)]) -> Result<()> {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("WXCENTRAL_") else { continue };
        let rest = rest.to_ascii_lowercase();
        let value = parse_env_value(raw);
        if let Some((section, key)) =
            SECTIONS.iter().find_map(|s| Some((*s, rest.strip_prefix(s)?.strip_prefix('_')?)))
        {
            let table = root
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| ConfigError::new(section, "must be a table"))?;
            table.insert(key.to_owned(), value);
        } else if let Some((array, rest)) =
            ARRAYS.iter().find_map(|s| Some((*s, rest.strip_prefix(s)?.strip_prefix('_')?)))
        {
            let (digits, key) = rest
                .split_once('_')
                .filter(|(i, _)| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    ConfigError::new(
                        name.clone(),
                        format!("expected WXCENTRAL_{}_<INDEX>_<KEY>", array.to_uppercase()),
                    )
                })?;
            let entries = root.get_mut(array).and_then(|v| v.as_array_mut()).ok_or_else(|| {
                ConfigError::new(name.clone(), format!("the config has no [[{array}]] entries"))
            })?;
            // An index too large for usize is still an index, just of no entry.
            let entry =
                digits.parse::<usize>().ok().and_then(|i| entries.get_mut(i)?.as_table_mut()).ok_or_else(
                    || {
                        let index = digits.trim_start_matches('0');
                        let index = if index.is_empty() { "0" } else { index };
                        ConfigError::new(name.clone(), format!("there is no {array}[{index}]"))
                    },
                )?;
            entry.insert(key.to_owned(), value);
        }
    }
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        // `1\nw = 2` parses too, but it is not one scalar, and taking the `1` would drop the rest.
        .filter(|t| t.len() == 1)
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !matches!(v, toml::Value::Table(_) | toml::Value::Datetime(_)))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// Replaces `${VAR}` in every string with the environment's value; a missing variable is an
/// error naming the key, so a typo cannot start the server with a literal `${…}` secret.
fn expand_vars(value: &mut toml::Value, path: &mut String, env: &[(String, String)]) -> Result<()> {
    match value {
        toml::Value::String(s) if s.contains("${") => {
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let end = after
                    .find('}')
                    .ok_or_else(|| ConfigError::new(path.clone(), "unterminated ${ in value"))?;
                let var = &after[..end];
                let found = env.iter().find(|(k, _)| k == var).map(|(_, v)| v.as_str());
                match found {
                    Some(v) => out.push_str(v),
                    None => {
                        return Err(ConfigError::new(
                            path.clone(),
                            format!("environment variable {var} is not set"),
                        ));
                    }
                }
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                expand_vars(v, path, env)?;
                path.truncate(len);
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                expand_vars(v, path, env)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The process environment as `from_toml` takes it. `std::env::vars` panics on the first entry
/// that is not UTF-8, even one wxcentral never reads, so such entries are skipped, unless the
/// config could use one (a `WXCENTRAL_` name, or a name the text refers to as `${NAME}`): that
/// is an error rather than a value with replacement characters in it.
fn utf8_env(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    text: &str,
) -> Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    for (name, value) in vars {
        match (name.into_string(), value.into_string()) {
            (Ok(name), Ok(value)) => env.push((name, value)),
            (name, _) => {
                let name = match name {
                    Ok(name) => name,
                    Err(name) => name.to_string_lossy().into_owned(),
                };
                if name.starts_with("WXCENTRAL_") || text.contains(&format!("${{{name}}}")) {
                    return Err(ConfigError::new(name, "environment variable is not valid UTF-8"));
                }
            }
        }
    }
    Ok(env)
}

/// Lowercase hex sha256 of a client key, as `[[client]] key_sha256` wants it.
pub fn hash_key(key: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn sample() -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:9000"

[store]
kind = "memory"

[[app]]
appid = "wx0123456789abcdef"
secret = "${{SHOP_SECRET}}"
token_api = "classic"
tickets = ["jsapi", "wx_card"]

[[client]]
name = "shop"
key_sha256 = "{HASH}"
apps = ["wx0123456789abcdef"]
refresh = true
"#
        )
    }

    #[test]
    fn parses_sample_with_env_secret() {
        let c = Config::from_toml(&sample(), env(&[("SHOP_SECRET", "s3cr3t")])).unwrap();
        assert_eq!(c.apps[0].secret.expose(), "s3cr3t");
        assert_eq!(c.apps[0].token_api, TokenApi::Classic);
        assert_eq!(c.apps[0].tickets, vec![TicketType::Jsapi, TicketType::WxCard]);
        assert_eq!(c.listen_addr().unwrap().port(), 9000);
        assert!(c.clients[0].refresh);
        assert!(!c.clients[0].admin);
        let shown = format!("{c:?}{}", c.redacted_summary());
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn missing_env_var_names_the_key() {
        let e = Config::from_toml(&sample(), env(&[])).unwrap_err();
        assert_eq!(e.key, "app[0].secret");
        assert!(e.reason.contains("SHOP_SECRET"), "{e}");
    }

    #[test]
    fn env_overrides_scalars_and_array_entries() {
        let c = Config::from_toml(
            &sample(),
            env(&[
                ("SHOP_SECRET", "x"),
                ("WXCENTRAL_SERVER_LISTEN", "0.0.0.0:7000"),
                ("WXCENTRAL_UPSTREAM_TIMEOUT_MS", "1234"),
                ("WXCENTRAL_REFRESH_SERVE_MARGIN_SECS", "5"),
                ("WXCENTRAL_APP_0_SECRET", "from-env"),
                ("WXCENTRAL_CLIENT_0_ADMIN", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:7000");
        assert_eq!(c.upstream.timeout_ms, 1234);
        assert_eq!(c.refresh.serve_margin_secs, Some(5));
        assert_eq!(c.apps[0].secret.expose(), "from-env");
        assert!(c.clients[0].admin);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("[server]\nlisten = \"nope\"", "server.listen"),
            ("[store]\nkind = \"mongo\"", "store.kind"),
            ("[store]\nkind = \"redis\"", "store.url"),
            ("[store]\nkind = \"redis\"\nurl = \"http://x\"", "store.url"),
            ("[store]\nkind = \"redis\"\nurl = \"redis://h:1\"", "store.encryption_key"),
            ("[upstream]\nbase_url = \"ftp://x\"", "upstream.base_url"),
            ("[upstream]\ntimeout_ms = \"soon\"", "upstream.timeout_ms"),
            ("[[app]]\nappid = \"wx1\"\nsecret = \"s\"\ntoken_api = \"magic\"", "app[0].token_api"),
            ("[[app]]\nappid = \"wx1\"\nsecret = \"\"", "app[0].secret"),
            (
                "[[app]]\nappid = \"wx1\"\nsecret = \"s\"\n[[app]]\nappid = \"wx1\"\nsecret = \"s\"",
                "app[1].appid",
            ),
            ("[[app]]\nappid = \"wx1\"\nsecret = \"s\"\ntickets = [\"nope\"]", "app[0].tickets[0]"),
            ("[[client]]\nname = \"a\"\nkey_sha256 = \"abc\"", "client[0].key_sha256"),
            ("[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1", "server.bogus"),
            ("this is not toml", "config"),
        ];
        for (text, key) in cases {
            let e = Config::from_toml(text, env(&[])).unwrap_err();
            assert_eq!(&e.key, key, "{text:?} gave {e}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
        // A scope may name an app added later at runtime, not a component the file lacks nor
        // a malformed appid.
        let client =
            |apps: &str| format!("[[client]]\nname = \"a\"\nkey_sha256 = \"{HASH}\"\napps = [{apps}]");
        Config::from_toml(&client("\"wxruntime\""), env(&[])).expect("a runtime app may be named");
        for apps in ["\"component:wxunknown\"", "\"wx bad\""] {
            let e = Config::from_toml(&client(apps), env(&[])).unwrap_err();
            assert_eq!(e.key, "client[0].apps[0]", "{apps}: {e}");
        }
    }

    #[test]
    fn hash_key_is_sha256_hex() {
        assert_eq!(hash_key("test"), HASH);
    }

    /// Each of these used to print more than one line, a raw terminal escape or an empty key
    /// (`props` found the first of them).
    #[test]
    fn odd_keys_names_and_values_stay_one_line() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            // toml's message for a bad escape has a second line of what was expected.
            ("a = \"\\q\"", &[], "config"),
            ("\"a\\nb\" = \"${X}\"", &[], "a\\nb"),
            ("\"\" = \"${X}\"", &[], "config"),
            ("[server]\nlisten = \"${X\\u001b[2J}\"", &[], "server.listen"),
            (
                "[[app]]\nappid = \"wx1\"\nsecret = \"s\"",
                &[("WXCENTRAL_APP_0_\u{1b}[2J", "1")],
                "app[0].\\u{1b}[2j",
            ),
            (
                "[[app]]\nappid = \"wx1\"\nsecret = \"s\"",
                &[("WXCENTRAL_APP_x\n_SECRET", "1")],
                "WXCENTRAL_APP_x\\n_SECRET",
            ),
            (
                "[[client]]\nname = \"a\\nb\"\nkey_sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n\
                 [[client]]\nname = \"a\\nb\"\nkey_sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"",
                &[],
                "client[1].name",
            ),
        ];
        for (text, vars, key) in cases {
            let e = Config::from_toml(text, env(vars)).unwrap_err();
            assert_eq!(&e.key, key, "{text:?} gave {e}");
            assert!(!e.to_string().chars().any(char::is_control), "{e}");
        }
        let e = Config::from_toml("[server]\nlisten = \"x\"\n\na = \"\\q\"", env(&[])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config: not valid TOML (line 4): invalid escape sequence; \
             expected `b`, `f`, `n`, `r`, `t`, `u`, `U`, `\\`, `\"`"
        );
    }

    #[test]
    fn override_indexes_must_be_digits_and_large_ones_name_no_entry() {
        let base = "[[app]]\nappid = \"wx1\"\nsecret = \"s\"";
        let e =
            Config::from_toml(base, env(&[("WXCENTRAL_APP_99999999999999999999_SECRET", "x")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "WXCENTRAL_APP_99999999999999999999_SECRET: there is no app[99999999999999999999]"
        );
        let e = Config::from_toml(base, env(&[("WXCENTRAL_APP_001_SECRET", "x")])).unwrap_err();
        assert_eq!(e.reason, "there is no app[1]");
        for name in ["WXCENTRAL_APP_+0_SECRET", "WXCENTRAL_APP__SECRET", "WXCENTRAL_APP_0"] {
            let e = Config::from_toml(base, env(&[(name, "x")])).unwrap_err();
            assert_eq!(e.to_string(), format!("{name}: expected WXCENTRAL_APP_<INDEX>_<KEY>"));
        }
        let c = Config::from_toml(base, env(&[("WXCENTRAL_APP_000_SECRET", "x")])).unwrap();
        assert_eq!(c.apps[0].secret.expose(), "x");
    }

    /// `1\nw = 2` used to become the integer 1, silently dropping the rest of the value.
    #[test]
    fn override_values_are_one_scalar_or_a_string() {
        let e = Config::from_toml("", env(&[("WXCENTRAL_UPSTREAM_TIMEOUT_MS", "1\nw = 2")])).unwrap_err();
        assert_eq!(e.key, "upstream.timeout_ms");
        let c = Config::from_toml(
            "[[app]]\nappid = \"wx1\"\nsecret = \"s\"",
            env(&[("WXCENTRAL_APP_0_SECRET", "1\nw = 2"), ("WXCENTRAL_UPSTREAM_TIMEOUT_MS", "7 # ms")]),
        )
        .unwrap();
        assert_eq!(c.apps[0].secret.expose(), "1\nw = 2");
        assert_eq!(c.upstream.timeout_ms, 7);
    }

    /// `std::env::vars` panicked at start on any non-UTF-8 variable, even an unrelated one.
    #[test]
    #[cfg(unix)]
    fn non_utf8_environment_is_skipped_unless_the_config_uses_it() {
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let bad = || OsString::from_vec(vec![b'a', 0xff]);
        let text = "[[app]]\nappid = \"wx1\"\nsecret = \"${SECRET}\"";
        let vars = vec![
            (OsString::from("SECRET"), OsString::from("s")),
            (OsString::from("LANG_JUNK"), bad()),
            (bad(), OsString::from("x")),
        ];
        assert_eq!(utf8_env(vars, text).unwrap(), env(&[("SECRET", "s")]));
        let e = utf8_env(vec![(OsString::from("SECRET"), bad())], text).unwrap_err();
        assert_eq!(e.to_string(), "SECRET: environment variable is not valid UTF-8");
        let e = utf8_env(vec![(OsString::from("WXCENTRAL_APP_0_SECRET"), bad())], "").unwrap_err();
        assert_eq!(e.key, "WXCENTRAL_APP_0_SECRET");
        let mut name = b"WXCENTRAL_".to_vec();
        name.push(0xff);
        let e = utf8_env(vec![(OsString::from_vec(name), OsString::from("x"))], "").unwrap_err();
        assert_eq!(e.key, "WXCENTRAL_\u{fffd}");
    }

    /// Config text and environments no example list covers. Whatever is wrong must come back as
    /// one `key: reason` line naming a key, because that line is all an operator sees of a
    /// failed start; a panic there shows a backtrace instead.
    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Control characters (a newline above all) would break the one line, and escape
        /// sequences could rewrite the operator's terminal.
        fn is_one_line(s: &str) -> bool {
            !s.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
        }

        fn check(text: &str, env: Vec<(String, String)>) -> Result<Option<Config>, TestCaseError> {
            match Config::from_toml(text, env) {
                Ok(c) => Ok(Some(c)),
                Err(e) => {
                    let line = e.to_string();
                    prop_assert!(!e.key.is_empty(), "no key: {line:?}");
                    prop_assert!(!e.reason.is_empty(), "no reason: {line:?}");
                    prop_assert!(is_one_line(&line), "not one line: {line:?}");
                    Ok(None)
                }
            }
        }

        fn full() -> String {
            format!(
                r#"
[server]
listen = "127.0.0.1:9000"
public_url = "https://wx.example.com"

[store]
kind = "memory"

[refresh]
serve_margin_secs = 30

[[app]]
appid = "wx0123456789abcdef"
secret = "${{SHOP_SECRET}}"
tickets = ["jsapi"]

[[component]]
appid = "wxc0mp0nent0000000"
secret = "c"
token = "t"
encoding_aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

[[client]]
name = "shop"
key_sha256 = "{HASH}"
apps = ["*"]
"#
            )
        }

        const KEYS: &[&str] = &[
            "listen",
            "public_url",
            "log_format",
            "body_limit_bytes",
            "kind",
            "path",
            "url",
            "namespace",
            "encryption_key",
            "node_id",
            "metrics_per_app",
            "max_concurrency",
            "base_url",
            "timeout_ms",
            "serve_margin_secs",
            "read_wait_ms",
            "appid",
            "secret",
            "token",
            "token_api",
            "tickets",
            "encoding_aes_key",
            "name",
            "key_sha256",
            "apps",
            "refresh",
            "admin",
            "bogus",
            "\"\"",
            "\"a\\nb\"",
            "\"\\u001b[31m\"",
            "'x.y'",
        ];

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(
                    &[
                        "\"${X}\"",
                        "\"${\"",
                        "\"${${X}}\"",
                        "\"${X\"",
                        "\"}${\"",
                        "\"${}\"",
                        "\"${\\n}\"",
                        "\"${SHOP_SECRET}${SHOP_SECRET}\"",
                        "\"a\\nb\"",
                        "\"\\u2028\"",
                        "\"\\u0000\"",
                        "\"127.0.0.1:1\"",
                        "\"http://h\"",
                        "\"memory\"",
                        "\"redis\"",
                        "\"stable\"",
                        "\"*\"",
                        "1",
                        "0",
                        "-1",
                        "99999999999999999999",
                        "1e400",
                        "nan",
                        "true",
                        "1979-05-27T00:00:00Z",
                        "[]",
                        "[\"jsapi\", \"nope\"]",
                        "[[1], {a = 1}]",
                        "{a = 1}",
                        "'''\nx'''",
                    ][..]
                )
                .prop_map(str::to_owned),
                "\"[ -~]{0,12}\"".prop_map(|s: String| s),
            ]
        }

        /// TOML-looking text around the config's own sections and keys.
        fn tomlish() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                4 => (prop::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k} = {v}\n")),
                2 => prop::sample::select(
                    &[
                        "[server]\n",
                        "[store]\n",
                        "[upstream]\n",
                        "[refresh]\n",
                        "[[app]]\n",
                        "[[component]]\n",
                        "[[client]]\n",
                        "[app]\n",
                        "[server.inner]\n",
                        "[[server]]\n",
                        "[\"\"]\n",
                        "server = 1\n",
                        "app = [1, \"x\"]\n",
                    ][..]
                )
                .prop_map(str::to_owned),
                1 => "[\\[\\]{}=\"'.,#\n a-z0-9_$]{0,16}".prop_map(|s: String| s),
                1 => any::<String>(),
            ];
            prop::collection::vec(piece, 0..16).prop_map(|v| v.concat())
        }

        /// Environment names: real overrides, odd suffixes and indexes, and `${…}` targets.
        fn env_name() -> impl Strategy<Value = String> {
            let index = prop_oneof![
                prop::sample::select(
                    &[
                        "0",
                        "1",
                        "00",
                        "99999999999999999999",
                        "18446744073709551616",
                        "-1",
                        "+0",
                        "",
                        "x",
                        " 0",
                        "\u{0663}"
                    ][..]
                )
                .prop_map(str::to_owned),
                any::<u128>().prop_map(|n| n.to_string()),
            ];
            let key = prop_oneof![
                prop::sample::select(KEYS).prop_map(str::to_uppercase),
                prop::sample::select(&["", "_", "__", "SECRET\n", "a.b", "\u{1b}[2J"][..])
                    .prop_map(str::to_owned),
                any::<String>(),
            ];
            prop_oneof![
                (
                    prop::sample::select(
                        &["SERVER", "STORE", "UPSTREAM", "REFRESH", "server", "SERVERX"][..]
                    ),
                    key.clone()
                )
                    .prop_map(|(s, k)| format!("WXCENTRAL_{s}_{k}")),
                (prop::sample::select(&["APP", "COMPONENT", "CLIENT", "app", "APPS"][..]), index, key)
                    .prop_map(|(a, i, k)| format!("WXCENTRAL_{a}_{i}_{k}")),
                any::<String>().prop_map(|s| format!("WXCENTRAL_{s}")),
                prop::sample::select(&["X", "SHOP_SECRET", "${X", "", "WXCENTRAL", "WXCENTRAL_"][..])
                    .prop_map(str::to_owned),
            ]
        }

        fn env_value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                prop::sample::select(
                    &[
                        "",
                        "1",
                        "true",
                        "0.0.0.0:1",
                        "[\"jsapi\"]",
                        "{a = 1}",
                        "1979-05-27",
                        "\"quoted\"",
                        "1\nw = 2",
                        "${X}",
                        "${",
                        "${${X}}",
                        "${SHOP_SECRET}",
                        "x\ny",
                    ][..]
                )
                .prop_map(str::to_owned),
            ]
        }

        fn envs() -> impl Strategy<Value = Vec<(String, String)>> {
            prop::collection::vec((env_name(), env_value()), 0..6)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn any_text_is_a_config_or_one_line(text in any::<String>()) {
                check(&text, Vec::new())?;
            }

            #[test]
            fn tomlish_text_and_env_are_a_config_or_one_line(text in tomlish(), env in envs()) {
                check(&text, env)?;
            }

            #[test]
            fn odd_env_on_a_valid_config_is_a_config_or_one_line(env in envs()) {
                let mut all = vec![("SHOP_SECRET".to_owned(), "s".to_owned())];
                all.extend(env);
                check(&full(), all)?;
            }

            /// A secret from the environment arrives as it is: not trimmed, not expanded again.
            #[test]
            fn env_secrets_arrive_verbatim(secret in any::<String>().prop_filter("non-empty", |s| !s.is_empty())) {
                let c = check(&full(), env(&[("SHOP_SECRET", &secret)]))?.unwrap();
                prop_assert_eq!(c.apps[0].secret.expose(), &secret);
            }

            /// An override for a string key is that string, or (when it is TOML, e.g. quoted)
            /// the string TOML reads from it; when it cannot be one, the error names the key.
            #[test]
            fn string_overrides_lose_nothing(raw in any::<String>().prop_filter("no ${", |s| !s.contains("${"))) {
                let all = env(&[("SHOP_SECRET", "s"), ("WXCENTRAL_APP_0_SECRET", &raw)]);
                match Config::from_toml(&full(), all) {
                    Ok(c) => {
                        let got = c.apps[0].secret.expose();
                        let as_toml = format!("v = {raw}").parse::<toml::Table>().ok();
                        let read = as_toml.as_ref().and_then(|t| t.get("v")).and_then(|v| v.as_str());
                        prop_assert!(got == &raw || read == Some(got.as_str()), "{raw:?} became {got:?}");
                    }
                    Err(e) => prop_assert_eq!(&e.key, "app[0].secret", "{}", e),
                }
            }

            #[test]
            fn override_indexes_past_the_entries_name_the_variable(index in "[0-9]{1,40}") {
                let name = format!("WXCENTRAL_APP_{index}_SECRET");
                let all = env(&[("SHOP_SECRET", "s"), (&name, "x")]);
                match Config::from_toml(&full(), all) {
                    Ok(c) => {
                        prop_assert_eq!(index.trim_start_matches('0'), "");
                        prop_assert_eq!(c.apps[0].secret.expose(), "x");
                    }
                    Err(e) => {
                        let shown = index.trim_start_matches('0');
                        prop_assert_eq!(&e.key, &name);
                        prop_assert_eq!(e.reason, format!("there is no app[{shown}]"));
                    }
                }
            }

            /// `${` with no `}` after it, anywhere in a value, is an error about that value.
            #[test]
            fn unterminated_vars_name_the_key(before in "[^$]{0,8}", after in "[^}]{0,8}") {
                let value = toml::Value::String(format!("{before}${{{after}")).to_string();
                let text = full().replace("\"${SHOP_SECRET}\"", &value);
                let e = Config::from_toml(&text, env(&[("SHOP_SECRET", "s")])).unwrap_err();
                prop_assert_eq!(&e.key, "app[0].secret", "{}", e);
            }
        }
    }
}
