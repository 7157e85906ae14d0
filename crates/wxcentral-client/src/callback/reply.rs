//! What a handler answers to a push.

use std::time::{SystemTime, UNIX_EPOCH};

use wechat_proto::crypto::cdata;

use super::message::{Format, Message};

/// The answer to one push. WeChat wants an answer within five seconds; `success` (or an empty
/// body) tells it the push was taken and no passive reply follows.
#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    /// The body `success`.
    Success,
    /// An empty body, which WeChat treats like `success`.
    Empty,
    /// A passive reply: the plaintext document (XML or JSON, as the push came). It is encrypted
    /// back when the push came encrypted.
    Passive(String),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Success => f.write_str("Success"),
            Self::Empty => f.write_str("Empty"),
            Self::Passive(doc) => write!(f, "Passive([{} bytes])", doc.len()),
        }
    }
}

impl Reply {
    /// A text reply to the user who sent `to`: sender and receiver swapped, as WeChat requires.
    pub fn text(to: &Message, content: &str) -> Self {
        Self::passive(to, "text", Some(("Content", content)))
    }

    /// Hands the conversation to the customer-service system (`transfer_customer_service`).
    pub fn transfer_customer_service(to: &Message) -> Self {
        Self::passive(to, "transfer_customer_service", None)
    }

    fn passive(to: &Message, msg_type: &str, field: Option<(&str, &str)>) -> Self {
        let user = to.from_user().unwrap_or_default();
        let account = to.to_user().unwrap_or_default();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self::Passive(match to.format() {
            Format::Xml => {
                let extra = field
                    .map_or_else(String::new, |(name, value)| format!("<{name}>{}</{name}>", cdata(value)));
                format!(
                    "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{now}</CreateTime><MsgType>{}</MsgType>{extra}</xml>",
                    cdata(user),
                    cdata(account),
                    cdata(msg_type),
                )
            }
            Format::Json => {
                let mut doc = serde_json::json!({
                    "ToUserName": user,
                    "FromUserName": account,
                    "CreateTime": now,
                    "MsgType": msg_type,
                });
                if let Some((name, value)) = field {
                    doc[name] = value.into();
                }
                doc.to_string()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_reply_swaps_the_parties_and_survives_cdata_breakers() {
        let m = Message::parse(
            "<xml><ToUserName>gh_acct</ToUserName><FromUserName>oUser</FromUserName><MsgType>text</MsgType><Content>hi</Content></xml>".into(),
        )
        .unwrap();
        let Reply::Passive(doc) = Reply::text(&m, "a ]]> b") else { panic!("passive") };
        let back = Message::parse(doc).unwrap();
        assert_eq!(back.to_user(), Some("oUser"));
        assert_eq!(back.from_user(), Some("gh_acct"));
        assert_eq!(back.msg_type(), Some("text"));
        assert_eq!(back.get("Content"), Some("a ]]> b"));
        assert!(back.create_time().unwrap() > 1_700_000_000);
    }

    #[test]
    fn json_pushes_get_json_replies() {
        let m =
            Message::parse(r#"{"ToUserName":"gh_a","FromUserName":"oU","MsgType":"text"}"#.into()).unwrap();
        let Reply::Passive(doc) = Reply::transfer_customer_service(&m) else { panic!("passive") };
        let back = Message::parse(doc).unwrap();
        assert_eq!(back.format(), Format::Json);
        assert_eq!(back.msg_type(), Some("transfer_customer_service"));
        assert_eq!(back.to_user(), Some("oU"));
    }
}
