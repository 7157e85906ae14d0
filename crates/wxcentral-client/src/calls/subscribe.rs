//! Subscribe messages (订阅消息): `POST /cgi-bin/message/subscribe/send`.

use crate::client::Client;
use crate::env::EnvVersion;
use crate::error::Result;
use crate::template::TemplateData;
use serde::{Deserialize, Serialize};
use wechat_proto::api::PATH_SUBSCRIBE_SEND;

/// One message to one user who subscribed to the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeMessage {
    pub touser: String,
    pub template_id: String,
    /// The mini-program page a tap opens, with its query (`index?foo=bar`).
    pub page: Option<String>,
    /// Which version the tap opens (default release).
    pub miniprogram_state: Option<EnvVersion>,
    /// `zh_CN` (default), `en_US`, `zh_HK` or `zh_TW`.
    pub lang: Option<String>,
    pub data: TemplateData,
}

impl SubscribeMessage {
    pub fn new(touser: impl Into<String>, template_id: impl Into<String>, data: TemplateData) -> Self {
        Self {
            touser: touser.into(),
            template_id: template_id.into(),
            page: None,
            miniprogram_state: None,
            lang: None,
            data,
        }
    }

    pub fn page(mut self, page: impl Into<String>) -> Self {
        self.page = Some(page.into());
        self
    }

    pub fn miniprogram_state(mut self, env: EnvVersion) -> Self {
        self.miniprogram_state = Some(env);
        self
    }
}

#[derive(Serialize)]
struct SendBody<'a> {
    touser: &'a str,
    template_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    miniprogram_state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lang: Option<&'a str>,
    data: serde_json::Value,
}

#[derive(Deserialize)]
struct SendAnswer {
    #[serde(default)]
    msgid: Option<u64>,
}

impl Client {
    /// Sends `message`, its values cut to their keyword limits first; a value no cut can fix
    /// is refused before anything is sent ([`crate::Error::InvalidTemplateValue`]). Returns
    /// WeChat's `msgid` when it gives one.
    ///
    /// A -1 answer is retried once by default; use `with_options(CallOptions::once())` where a
    /// possible duplicate message is worse than a lost one.
    pub async fn send_subscribe_message(
        &self,
        appid: &str,
        message: &SubscribeMessage,
    ) -> Result<Option<u64>> {
        let body = SendBody {
            touser: &message.touser,
            template_id: &message.template_id,
            page: message.page.as_deref(),
            miniprogram_state: message.miniprogram_state.map(EnvVersion::miniprogram_state),
            lang: message.lang.as_deref(),
            data: message.data.build()?,
        };
        let r: SendAnswer = self.post_json(appid, PATH_SUBSCRIBE_SEND, &body, self.options()).await?;
        Ok(r.msgid)
    }
}
