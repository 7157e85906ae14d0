//! The server URL of an official account, mini program or open-platform component, as an axum
//! route: WeChat's URL verification, plaintext, compatible and safe modes, routing of messages
//! and events to handlers, and passive replies encrypted back.
//!
//! WeChat waits five seconds for an answer and then retries, three times, so a slow handler
//! makes the same push arrive again. Each handler runs in its own task; when it has not answered
//! within the budget ([`DEFAULT_BUDGET`], under WeChat's five seconds) the push is acknowledged
//! with `success` and the handler goes on in the background. Work that takes long should be
//! handed off anyway, and answered through the customer-service API.
//!
//! Every request is checked before anything reaches a handler: the `signature` (plaintext mode)
//! or `msg_signature` (safe and compatible mode) against the token in constant time, the
//! receive id inside the ciphertext against the appid, and the body's size. A push encrypted with
//! the previous `EncodingAESKey` is still accepted after a rotation, when
//! [`Callback::previous_aes_key`] names it.
//!
//! ```no_run
//! use wxcentral_client::callback::{Callback, Reply};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let callback = Callback::new("wx0123456789abcdef", "MESSAGE_TOKEN")
//!     .aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")?
//!     .on_msg("text", |msg| async move { Reply::text(&msg, "got it") })
//!     .on_event("subscribe", |_msg| async move { Reply::Success })
//!     .default(|_msg| async move { Reply::Success });
//! let app = axum::Router::new().route("/wechat/callback", callback.method_router());
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

mod error;
mod message;
mod reply;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde::Deserialize;
use wechat_proto::Secret;
use wechat_proto::crypto::{CryptoError, EnvelopeFormat, MsgCrypt, fresh_random, parse_envelope};
use wechat_proto::signature::{verify_msg_signature, verify_url_signature};

pub use error::CallbackError;
pub use message::{Format, Message, ParseError};
pub use reply::Reply;

use crate::source::BoxFuture;

/// How long a handler may take before the push is acknowledged without it: half a second under
/// WeChat's five, for the network.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(4500);

/// WeChat's pushes are a few KiB; anything much larger did not come from WeChat.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// Something that answers a push. Implemented for every `Fn(Message) -> impl Future<Output =
/// Reply>`, so an async closure or function is a handler.
pub trait Handler: Send + Sync + 'static {
    fn call(&self, message: Message) -> BoxFuture<'static, Reply>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    fn call(&self, message: Message) -> BoxFuture<'static, Reply> {
        Box::pin(self(message))
    }
}

/// Routes a push to its handler: by `InfoType` (open-platform notifications), then by `Event`
/// (when `MsgType` is `event`), then by `MsgType`, then the default. Names are matched without
/// regard to case, because WeChat writes some events in capitals (`CLICK`, `SCAN`) and others not.
#[derive(Default, Clone)]
struct Mux {
    info: HashMap<String, Arc<dyn Handler>>,
    event: HashMap<String, Arc<dyn Handler>>,
    msg: HashMap<String, Arc<dyn Handler>>,
    default: Option<Arc<dyn Handler>>,
}

impl Mux {
    fn route(&self, message: &Message) -> Option<Arc<dyn Handler>> {
        let find = |table: &HashMap<String, Arc<dyn Handler>>, key: Option<&str>| {
            key.and_then(|k| table.get(&k.to_ascii_lowercase())).cloned()
        };
        let is_event = message.msg_type().is_some_and(|t| t.eq_ignore_ascii_case("event"));
        find(&self.info, message.info_type())
            .or_else(|| if is_event { find(&self.event, message.event()) } else { None })
            .or_else(|| find(&self.msg, message.msg_type()))
            .or_else(|| self.default.clone())
    }
}

/// The server URL of one account: its appid, message token and (for safe and compatible mode)
/// `EncodingAESKey`, and the handlers. Build it, then mount [`Callback::method_router`].
#[derive(Clone)]
pub struct Callback {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    token: Secret,
    appid: String,
    crypt: Option<MsgCrypt>,
    require_encryption: bool,
    budget: Duration,
    max_body: usize,
    mux: Mux,
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callback")
            .field("appid", &self.inner.appid)
            .field("token", &self.inner.token)
            .field("safe_mode", &self.inner.crypt.is_some())
            .field("budget", &self.inner.budget)
            .finish_non_exhaustive()
    }
}

impl Callback {
    /// `appid` is the account's (or the component's) appid, the receive id of its encrypted
    /// pushes; `token` is the message token set in the console next to the URL.
    pub fn new(appid: impl Into<String>, token: impl Into<Secret>) -> Self {
        Self {
            inner: Arc::new(Inner {
                token: token.into(),
                appid: appid.into(),
                crypt: None,
                require_encryption: false,
                budget: DEFAULT_BUDGET,
                max_body: DEFAULT_MAX_BODY,
                mux: Mux::default(),
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Inner)) -> Self {
        change(Arc::make_mut(&mut self.inner));
        self
    }

    /// The `EncodingAESKey` (43 characters) for safe and compatible mode.
    pub fn aes_key(self, encoding_aes_key: &str) -> Result<Self, CryptoError> {
        let crypt = MsgCrypt::new(self.inner.token.expose(), encoding_aes_key, &self.inner.appid)?;
        Ok(self.with(|inner| inner.crypt = Some(crypt)))
    }

    /// The key in use before the last rotation: pushes WeChat encrypted just before the change
    /// still decrypt. Set [`Callback::aes_key`] first.
    pub fn previous_aes_key(self, encoding_aes_key: &str) -> Result<Self, CryptoError> {
        let crypt = self
            .inner
            .crypt
            .clone()
            .ok_or(CryptoError::InvalidAesKey("set the current key before the previous one"))?
            .with_previous_key(encoding_aes_key)?;
        Ok(self.with(|inner| inner.crypt = Some(crypt)))
    }

    /// Refuses plaintext pushes (403), for an account configured in safe mode: a plaintext push
    /// to it can only be a replay or a forgery by someone holding the token.
    pub fn require_encryption(self) -> Self {
        self.with(|inner| inner.require_encryption = true)
    }

    /// How long a handler may take before the push is acknowledged with `success` while the
    /// handler goes on ([`DEFAULT_BUDGET`]).
    pub fn budget(self, budget: Duration) -> Self {
        self.with(|inner| inner.budget = budget)
    }

    /// The largest body accepted; larger ones get 413 ([`DEFAULT_MAX_BODY`]).
    pub fn max_body(self, bytes: usize) -> Self {
        self.with(|inner| inner.max_body = bytes)
    }

    /// Handles messages of this `MsgType` (`text`, `image`, `event`, …).
    pub fn on_msg(self, msg_type: &str, handler: impl Handler) -> Self {
        let key = msg_type.to_ascii_lowercase();
        self.with(|inner| {
            inner.mux.msg.insert(key, Arc::new(handler));
        })
    }

    /// Handles events of this `Event` (`subscribe`, `CLICK`, …), before [`Callback::on_msg`]
    /// with `event`.
    pub fn on_event(self, event: &str, handler: impl Handler) -> Self {
        let key = event.to_ascii_lowercase();
        self.with(|inner| {
            inner.mux.event.insert(key, Arc::new(handler));
        })
    }

    /// Handles open-platform notifications of this `InfoType` (`component_verify_ticket`,
    /// `authorized`, …).
    pub fn on_info(self, info_type: &str, handler: impl Handler) -> Self {
        let key = info_type.to_ascii_lowercase();
        self.with(|inner| {
            inner.mux.info.insert(key, Arc::new(handler));
        })
    }

    /// Handles what no other handler does. Without one such pushes are answered `success`.
    pub fn default(self, handler: impl Handler) -> Self {
        self.with(|inner| inner.mux.default = Some(Arc::new(handler)))
    }

    /// `GET` (verification) and `POST` (pushes) of the server URL, to mount at its path.
    pub fn method_router<S: Clone + Send + Sync + 'static>(self) -> MethodRouter<S> {
        let limit = self.inner.max_body;
        get(verify).post(push).with_state(self).layer(DefaultBodyLimit::max(limit))
    }
}

/// The query string WeChat puts on the server URL. Everything is optional here so that a missing
/// value is reported by name.
#[derive(Deserialize, Default)]
struct Params {
    signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
    echostr: Option<String>,
    openid: Option<String>,
    encrypt_type: Option<String>,
    msg_signature: Option<String>,
}

fn required<'a>(value: &'a Option<String>, name: &'static str) -> Result<&'a str, CallbackError> {
    value.as_deref().ok_or(CallbackError::MissingParam(name))
}

fn plain_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// The console's "submit" of the server URL: `echostr` back, verbatim, when the signature holds.
/// With `msg_signature` (open-platform and WeCom style) the `echostr` is encrypted, and its
/// plaintext is the answer.
async fn verify(
    State(callback): State<Callback>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Response, CallbackError> {
    let Query(q) = query.map_err(|_| CallbackError::InvalidQuery)?;
    let inner = &callback.inner;
    let timestamp = required(&q.timestamp, "timestamp")?;
    let nonce = required(&q.nonce, "nonce")?;
    let echostr = required(&q.echostr, "echostr")?;
    if let Some(msg_signature) = &q.msg_signature {
        let crypt = inner.crypt.as_ref().ok_or(CallbackError::NoAesKey)?;
        if !verify_msg_signature(inner.token.expose(), timestamp, nonce, echostr, msg_signature) {
            return Err(CallbackError::BadSignature);
        }
        let plain = crypt.decrypt_encrypt_field(echostr)?.into_string()?;
        return Ok(plain_text(plain));
    }
    let signature = required(&q.signature, "signature")?;
    if !verify_url_signature(inner.token.expose(), timestamp, nonce, signature) {
        return Err(CallbackError::BadSignature);
    }
    Ok(plain_text(echostr.to_owned()))
}

/// A push: checked, decrypted, parsed, handed to its handler, and answered.
async fn push(
    State(callback): State<Callback>,
    query: Result<Query<Params>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, CallbackError> {
    let Query(q) = query.map_err(|_| CallbackError::InvalidQuery)?;
    let inner = &callback.inner;
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => CallbackError::TooLarge { limit: inner.max_body },
        _ => CallbackError::BodyRead,
    })?;
    let timestamp = required(&q.timestamp, "timestamp")?;
    let nonce = required(&q.nonce, "nonce")?;

    // Compatible mode sends the plaintext fields beside `Encrypt`, and `encrypt_type=aes`: only
    // the signed ciphertext is trusted.
    let encrypted = q.encrypt_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("aes"));
    let (plaintext, envelope) = if encrypted {
        let crypt = inner.crypt.as_ref().ok_or(CallbackError::NoAesKey)?;
        let msg_signature = required(&q.msg_signature, "msg_signature")?;
        let envelope = parse_envelope(&body)?;
        if !verify_msg_signature(inner.token.expose(), timestamp, nonce, &envelope.encrypt, msg_signature) {
            return Err(CallbackError::BadSignature);
        }
        let plain = crypt.decrypt_encrypt_field(&envelope.encrypt)?.into_string()?;
        (plain, envelope.format)
    } else {
        if inner.require_encryption {
            return Err(CallbackError::PlaintextRefused);
        }
        let signature = required(&q.signature, "signature")?;
        if !verify_url_signature(inner.token.expose(), timestamp, nonce, signature) {
            return Err(CallbackError::BadSignature);
        }
        let plain = String::from_utf8(body.to_vec())
            .map_err(|_| CallbackError::Malformed("body is not UTF-8".into()))?;
        (plain, None)
    };
    let message = Message::parse(plaintext)?.received(encrypted, q.openid.clone());
    let format = message.format();

    let reply = match inner.mux.route(&message) {
        None => Reply::Success,
        Some(handler) => within_budget(handler, message, inner.budget).await?,
    };
    Ok(match reply {
        Reply::Success => plain_text("success".into()),
        Reply::Empty => plain_text(String::new()),
        Reply::Passive(doc) => {
            let reply_format = envelope.unwrap_or(match format {
                Format::Xml => EnvelopeFormat::Xml,
                Format::Json => EnvelopeFormat::Json,
            });
            let content_type = match reply_format {
                EnvelopeFormat::Xml => "application/xml; charset=utf-8",
                EnvelopeFormat::Json => "application/json",
            };
            let body = match &inner.crypt {
                Some(crypt) if encrypted => {
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                    let nonce: String = fresh_random()[..10].iter().map(|&b| char::from(b)).collect();
                    crypt.encrypt_reply(doc.as_bytes(), now, &nonce, reply_format, fresh_random())
                }
                _ => doc,
            };
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
    })
}

/// Runs the handler in its own task so that it survives the answer: past the budget the push is
/// acknowledged and the handler's eventual reply is dropped (WeChat no longer waits for it).
async fn within_budget(
    handler: Arc<dyn Handler>,
    message: Message,
    budget: Duration,
) -> Result<Reply, CallbackError> {
    let mut task = tokio::spawn(handler.call(message));
    match tokio::time::timeout(budget, &mut task).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(join_error)) => {
            tracing::error!(panicked = join_error.is_panic(), "callback handler did not finish");
            Err(CallbackError::HandlerFailed)
        }
        Err(_elapsed) => {
            tracing::warn!(
                budget_ms = budget.as_millis() as u64,
                "callback handler over budget: acknowledged, still running"
            );
            Ok(Reply::Success)
        }
    }
}
