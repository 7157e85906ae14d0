//! Encrypted pushes to a component's callback, as WeChat's open platform sends them.
//!
//! The envelope is WeChat's: an XML body with `AppId` and `Encrypt`, and `signature`, `timestamp`,
//! `nonce`, `encrypt_type=aes`, `msg_signature` in the query. The plaintext is encrypted with the
//! component's EncodingAESKey and the component appid as receive id, so a receiver that gets any
//! of it wrong fails here exactly as it would against WeChat.

use crate::config::SimComponent;
use crate::state::{PushRecord, State};
use std::time::Duration;
use wechat_proto::api::ComponentNotification;
use wechat_proto::crypto::MsgCrypt;

/// How many recent delivery attempts per component `GET /__sim/pushes` shows.
const RECENT: usize = 100;
/// WeChat gives a callback a few seconds; a receiver slower than this counts as failed.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

pub fn valid_aes_key(key: &str) -> bool {
    wechat_proto::crypto::AesKey::from_encoding_aes_key(key).is_ok()
}

/// How one push went.
#[derive(Debug, Clone)]
pub struct PushOutcome {
    /// The receiver answered `success` (WeChat's only acknowledgement).
    pub ok: bool,
    pub status: Option<u16>,
    pub body: Option<String>,
    pub error: Option<String>,
    /// Not acknowledged, and further attempts will follow (`push_retries`).
    pub will_retry: bool,
}

/// The URL (with query) and body of a push of `plaintext_xml`.
pub fn envelope(comp: &SimComponent, push_url: &str, plaintext_xml: &str, now_secs: u64) -> (String, String) {
    // Config validation already proved the key decodes.
    let crypt = MsgCrypt::new(&comp.token, &comp.encoding_aes_key, &comp.appid)
        .unwrap_or_else(|e| unreachable!("validated EncodingAESKey rejected: {e}"));
    let encrypt = crypt.encrypt_random(plaintext_xml.as_bytes());
    let timestamp = now_secs.to_string();
    let nonce = rand::random::<u32>().to_string();
    let signature = wechat_proto::signature::url_signature(&comp.token, &timestamp, &nonce);
    let msg_signature = crypt.signature(&timestamp, &nonce, &encrypt);
    let sep = if push_url.contains('?') { '&' } else { '?' };
    let url = format!(
        "{push_url}{sep}signature={signature}&timestamp={timestamp}&nonce={nonce}&encrypt_type=aes&msg_signature={msg_signature}"
    );
    let body = format!(
        "<xml><AppId><![CDATA[{}]]></AppId><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>",
        comp.appid
    );
    (url, body)
}

/// POSTs one attempt of the plaintext push `xml` to the component's `push_url`; `None` when it
/// has none. Each attempt is a new envelope (timestamp, nonce, IV), the plaintext unchanged.
pub async fn send(
    client: &reqwest::Client,
    comp: &SimComponent,
    xml: &str,
    now_secs: u64,
) -> Option<PushOutcome> {
    let push_url = comp.push_url.as_deref()?;
    let (url, body) = envelope(comp, push_url, xml, now_secs);
    let result =
        client.post(url).header("content-type", "text/xml").timeout(PUSH_TIMEOUT).body(body).send().await;
    Some(match result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            match resp.text().await {
                Ok(text) => PushOutcome {
                    ok: (200..300).contains(&status) && text.trim() == "success",
                    status: Some(status),
                    body: Some(text.chars().take(200).collect()),
                    error: None,
                    will_retry: false,
                },
                Err(e) => PushOutcome {
                    ok: false,
                    status: Some(status),
                    body: None,
                    error: Some(e.to_string()),
                    will_retry: false,
                },
            }
        }
        // The URL would repeat the whole query; the receiver is known from the config anyway.
        Err(e) => PushOutcome {
            ok: false,
            status: None,
            body: None,
            error: Some(describe(&e.without_url())),
            will_retry: false,
        },
    })
}

/// reqwest's message with its cause chain ("error sending request: connection refused"), since the
/// top-level text alone does not say what went wrong.
fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `InfoType` of a notification, for the push log.
pub fn info_type(n: &ComponentNotification) -> &str {
    match n {
        ComponentNotification::VerifyTicket { .. } => "component_verify_ticket",
        ComponentNotification::Authorized(_) => "authorized",
        ComponentNotification::UpdateAuthorized(_) => "updateauthorized",
        ComponentNotification::Unauthorized { .. } => "unauthorized",
        ComponentNotification::Other { info_type, .. } => info_type,
    }
}

/// Which delivery attempt of which push an outcome is.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub info: &'a str,
    pub push_id: u64,
    /// 1 for the first delivery.
    pub number: u32,
    /// No attempt follows this one if it failed.
    pub last: bool,
}

/// Counts and logs one delivery attempt.
pub fn record(
    state: &mut State,
    component_appid: &str,
    at: Attempt<'_>,
    outcome: &PushOutcome,
    now_secs: u64,
) {
    let Attempt { info, push_id, number, last } = at;
    if outcome.ok {
        tracing::debug!(component = component_appid, info, attempt = number, "push acknowledged");
    } else {
        tracing::warn!(
            component = component_appid,
            info,
            attempt = number,
            last,
            status = outcome.status,
            error = outcome.error.as_deref().unwrap_or(""),
            "push not acknowledged with `success`"
        );
    }
    let cs = state.components.entry(component_appid.to_owned()).or_default();
    if outcome.ok {
        cs.pushes_ok += 1;
    } else {
        cs.pushes_failed += 1;
        if last {
            cs.pushes_given_up += 1;
        }
    }
    if number > 1 {
        cs.pushes_retried += 1;
    }
    while cs.recent_pushes.len() >= RECENT {
        cs.recent_pushes.pop_front();
    }
    cs.recent_pushes.push_back(PushRecord {
        push_id,
        attempt: number,
        info_type: info.to_owned(),
        at: now_secs,
        ok: outcome.ok,
        status: outcome.status,
        error: outcome.error.clone(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_decrypts_with_wechat_proto() {
        let comp =
            SimComponent::new("wxcomp", "sec", "msgtoken", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG");
        let n = ComponentNotification::VerifyTicket {
            component_appid: "wxcomp".into(),
            create_time: 1,
            ticket: "ticket@@@x".into(),
        };
        let (url, body) = envelope(&comp, "http://h/cb?x=1", &n.to_xml(), 1_700_000_000);
        let query: std::collections::HashMap<_, _> =
            url.split_once('?').unwrap().1.split('&').filter_map(|kv| kv.split_once('=')).collect();
        assert_eq!(query["x"], "1");
        assert_eq!(query["encrypt_type"], "aes");
        assert!(wechat_proto::signature::verify_url_signature(
            "msgtoken",
            query["timestamp"],
            query["nonce"],
            query["signature"]
        ));
        let crypt = MsgCrypt::new("msgtoken", &comp.encoding_aes_key, "wxcomp").unwrap();
        let xml = crypt
            .decrypt_message(query["msg_signature"], query["timestamp"], query["nonce"], body.as_bytes())
            .unwrap();
        assert_eq!(ComponentNotification::from_xml(&xml).unwrap(), n);
        assert!(body.starts_with("<xml><AppId><![CDATA[wxcomp]]></AppId><Encrypt><![CDATA["));
    }
}
