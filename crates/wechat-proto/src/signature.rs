//! Signatures WeChat uses: server URL verification, message envelopes (`msg_signature`),
//! JS-SDK `wx.config` and wx_card.
//!
//! All of them are a lowercase hex SHA-1 over a string built by fixed rules; the rules differ just
//! enough (sort then concatenate, or `key=value&…`, with or without empty values) that each gets
//! its own function, checked against the official worked examples in the tests.
//!
//! Verification compares in constant time: the value a caller must guess is derived from a secret
//! token, and a timing side channel would let it be found byte by byte.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// Lowercase hex SHA-1 of the concatenation of `parts` after sorting them by bytes, the rule
/// shared by the URL, message and card signatures.
fn sha1_of_sorted(parts: &mut [&str]) -> String {
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for part in parts.iter() {
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Signature WeChat puts in the `signature` query parameter when it calls the server URL (the
/// `GET` verification with `echostr`, and every push in plaintext mode).
pub fn url_signature(token: &str, timestamp: &str, nonce: &str) -> String {
    sha1_of_sorted(&mut [token, timestamp, nonce])
}

/// Whether `signature` is the URL signature for these values; constant time.
pub fn verify_url_signature(token: &str, timestamp: &str, nonce: &str, signature: &str) -> bool {
    ct_eq(url_signature(token, timestamp, nonce).as_bytes(), signature.as_bytes())
}

/// Signature of an encrypted envelope (`msg_signature` in the query string of a safe-mode push,
/// `MsgSignature` in a reply): it binds the ciphertext to the token, so it must be checked before
/// anything is decrypted.
pub fn msg_signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    sha1_of_sorted(&mut [token, timestamp, nonce, encrypt])
}

/// Whether `signature` is the message signature for these values; constant time.
pub fn verify_msg_signature(
    token: &str,
    timestamp: &str,
    nonce: &str,
    encrypt: &str,
    signature: &str,
) -> bool {
    ct_eq(msg_signature(token, timestamp, nonce, encrypt).as_bytes(), signature.as_bytes())
}

/// The part of a page URL that JS-SDK signs: WeChat drops the fragment, because browsers never
/// send it and the page cannot know which one WeChat saw.
fn url_without_fragment(url: &str) -> &str {
    url.split_once('#').map_or(url, |(before, _)| before)
}

/// Signature for `wx.config`: SHA-1 of `jsapi_ticket=…&noncestr=…&timestamp=…&url=…` with the raw
/// (not URL-escaped) values, as JS-SDK appendix 1 specifies.
///
/// The timestamp is a number because the page passes it to `wx.config` as a number and WeChat
/// signs its decimal form; a string such as `"01"` would sign something WeChat never checks.
pub fn jssdk_signature(ticket: &str, noncestr: &str, timestamp: u64, url: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(b"jsapi_ticket=");
    hasher.update(ticket.as_bytes());
    hasher.update(b"&noncestr=");
    hasher.update(noncestr.as_bytes());
    hasher.update(b"&timestamp=");
    hasher.update(timestamp.to_string().as_bytes());
    hasher.update(b"&url=");
    hasher.update(url_without_fragment(url).as_bytes());
    hex::encode(hasher.finalize())
}

/// What a page passes to `wx.config` (besides `debug` and `jsApiList`), in the JSON shape the
/// page script expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JssdkConfig {
    pub app_id: String,
    pub timestamp: u64,
    pub nonce_str: String,
    pub signature: String,
}

impl JssdkConfig {
    /// Signs `url` for `app_id` with the account's current `jsapi_ticket`. The ticket itself is
    /// not part of the result, so the config can go to a browser.
    pub fn sign(app_id: &str, ticket: &str, nonce_str: &str, timestamp: u64, url: &str) -> Self {
        Self {
            app_id: app_id.to_owned(),
            timestamp,
            nonce_str: nonce_str.to_owned(),
            signature: jssdk_signature(ticket, nonce_str, timestamp, url),
        }
    }
}

/// wx_card signature (JS-SDK appendix 4): SHA-1 over the concatenation of the values sorted by
/// bytes. Empty values are left out, because the optional card fields (`card_id`, `code`,
/// `openid`) are signed only when the page passes them.
pub fn card_signature(values: &[&str]) -> String {
    let mut parts: Vec<&str> = values.iter().copied().filter(|v| !v.is_empty()).collect();
    sha1_of_sorted(&mut parts)
}

/// The named inputs of a wx_card signature, so that a caller cannot forget the ticket or pass
/// the wrong value list; `None` and `Some("")` are the same to WeChat.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CardSign<'a> {
    /// `api_ticket` from `getticket?type=wx_card` (not the `jsapi_ticket`).
    pub api_ticket: &'a str,
    pub timestamp: &'a str,
    pub nonce_str: &'a str,
    pub card_id: Option<&'a str>,
    pub code: Option<&'a str>,
    pub openid: Option<&'a str>,
}

impl CardSign<'_> {
    pub fn signature(&self) -> String {
        let optional = [self.card_id, self.code, self.openid];
        let mut values = vec![self.api_ticket, self.timestamp, self.nonce_str];
        values.extend(optional.into_iter().flatten());
        card_signature(&values)
    }
}

/// The ticket is a credential: it is shown redacted.
impl fmt::Debug for CardSign<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardSign")
            .field("api_ticket", &"[redacted]")
            .field("timestamp", &self.timestamp)
            .field("nonce_str", &self.nonce_str)
            .field("card_id", &self.card_id)
            .field("code", &self.code)
            .field("openid", &self.openid)
            .finish()
    }
}

/// Constant-time equality, so that comparing a secret or a signature leaks nothing through
/// timing but the length.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> Value {
        serde_json::from_str(include_str!("../tests/vectors/signatures.json")).unwrap()
    }

    fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key].as_str().unwrap_or_else(|| panic!("vector field {key} missing"))
    }

    #[test]
    fn official_url_signature_vectors() {
        let all = vectors();
        let list = all["url_verification"]["vectors"].as_array().unwrap();
        assert_eq!(list.len(), 3);
        for v in list {
            let (token, ts, nonce) = (s(v, "token"), s(v, "timestamp"), s(v, "nonce"));
            let want = s(v, "expected_signature");
            assert_eq!(url_signature(token, ts, nonce), want, "{}", s(v, "id"));
            assert!(verify_url_signature(token, ts, nonce, want));
            if let Some(concat) = v["sorted_concat"].as_str() {
                let mut parts = [token, ts, nonce];
                parts.sort_unstable();
                assert_eq!(parts.concat(), concat);
            }
        }
    }

    #[test]
    fn url_signature_rejects_near_misses() {
        let good = "f464b24fc39322e44b38aa78f5edd27bd1441696";
        assert!(verify_url_signature("AAAAA", "1714036504", "1514711492", good));
        assert!(!verify_url_signature("AAAAB", "1714036504", "1514711492", good));
        assert!(!verify_url_signature("AAAAA", "1714036505", "1514711492", good));
        assert!(!verify_url_signature("AAAAA", "1714036504", "1514711492", &good.to_uppercase()));
        assert!(!verify_url_signature("AAAAA", "1714036504", "1514711492", &good[..39]));
        assert!(!verify_url_signature("AAAAA", "1714036504", "1514711492", ""));
    }

    #[test]
    fn official_msg_signature_vectors() {
        let all: Value = serde_json::from_str(include_str!("../tests/vectors/msg_crypt.json")).unwrap();
        let mut checked = 0;
        for v in all["vectors"].as_array().unwrap() {
            let (token, ts, nonce) = (s(v, "token"), s(v, "timestamp"), s(v, "nonce"));
            let (encrypt, want) = match s(v, "kind") {
                "decrypt" => (s(v, "encrypt"), s(v, "msg_signature")),
                _ => (s(v, "expected_encrypt"), s(v, "expected_msg_signature")),
            };
            assert_eq!(msg_signature(token, ts, nonce, encrypt), want, "{}", s(v, "id"));
            assert!(verify_msg_signature(token, ts, nonce, encrypt, want));
            assert!(!verify_msg_signature(token, ts, nonce, &encrypt[1..], want));
            // The URL signature in the same request covers only three values.
            let url_sig = v["url_signature"].as_str().or(v["url_signature_sha1_token_ts_nonce"].as_str());
            if let Some(url_sig) = url_sig {
                assert_eq!(url_signature(token, ts, nonce), url_sig);
            }
            checked += 1;
        }
        assert_eq!(checked, 3);
    }

    #[test]
    fn official_jssdk_vector() {
        let all = vectors();
        let list = all["jssdk_config"]["vectors"].as_array().unwrap();
        assert_eq!(list.len(), 1);
        for v in list {
            let ts = v["timestamp"].as_u64().unwrap();
            let (ticket, nonce, url) = (s(v, "jsapi_ticket"), s(v, "noncestr"), s(v, "url"));
            let string1 = format!("jsapi_ticket={ticket}&noncestr={nonce}&timestamp={ts}&url={url}");
            assert_eq!(string1, s(v, "string1"));
            let want = s(v, "expected_signature");
            assert_eq!(jssdk_signature(ticket, nonce, ts, url), want);
            // The fragment is not signed.
            assert_eq!(jssdk_signature(ticket, nonce, ts, &format!("{url}#wechat_redirect")), want);
            assert_eq!(jssdk_signature(ticket, nonce, ts, &format!("{url}#a#b")), want);
            assert_ne!(jssdk_signature(ticket, nonce, ts, &format!("{url}&x=1")), want);
            assert_ne!(jssdk_signature(ticket, nonce, ts + 1, url), want);
        }
    }

    #[test]
    fn jssdk_config_serializes_as_wx_config_expects() {
        let cfg = JssdkConfig::sign(
            "wx0123456789abcdef",
            "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg",
            "Wm3WZYTPz0wzccnW",
            1414587457,
            "http://mp.weixin.qq.com?params=value#frag",
        );
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(
            json,
            r#"{"appId":"wx0123456789abcdef","timestamp":1414587457,"nonceStr":"Wm3WZYTPz0wzccnW","signature":"0f9de62fce790f9a083d5c99e95740ceb90c27ed"}"#
        );
        assert_eq!(serde_json::from_str::<JssdkConfig>(&json).unwrap(), cfg);
        assert!(!json.contains("sM4AOV"), "the ticket must not leave with the config");
    }

    #[test]
    fn official_card_vector() {
        let all = vectors();
        let list = all["wx_card_ext"]["vectors"].as_array().unwrap();
        assert_eq!(list.len(), 1);
        for v in list {
            let sign = CardSign {
                api_ticket: s(v, "api_ticket"),
                timestamp: s(v, "timestamp"),
                nonce_str: s(v, "nonce_str"),
                card_id: Some(s(v, "card_id")),
                code: Some(s(v, "code")),
                openid: None,
            };
            let want = s(v, "expected_signature");
            assert_eq!(sign.signature(), want);
            // Order of the inputs does not matter, empty values are left out.
            let values = [
                sign.nonce_str,
                sign.code.unwrap(),
                "",
                sign.api_ticket,
                sign.card_id.unwrap(),
                sign.timestamp,
            ];
            assert_eq!(card_signature(&values), want);
            assert_eq!(CardSign { openid: Some(""), ..sign }.signature(), want);
            assert_ne!(CardSign { openid: Some("o1"), ..sign }.signature(), want);
            assert_ne!(CardSign { code: None, ..sign }.signature(), want);
            let mut sorted: Vec<&str> = values.iter().copied().filter(|v| !v.is_empty()).collect();
            sorted.sort_unstable();
            assert_eq!(sorted.concat(), s(v, "sorted_concat"));
        }
    }

    #[test]
    fn card_sign_debug_hides_the_ticket() {
        let sign = CardSign {
            api_ticket: "ojZ8YtyVyr30HheH3CM73y7h4jJE",
            timestamp: "1",
            nonce_str: "n",
            card_id: None,
            code: None,
            openid: None,
        };
        let shown = format!("{sign:?}");
        assert!(!shown.contains("ojZ8"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn sha1_matches_known_digest() {
        // FIPS 180 "abc", split so that sorting reorders the parts.
        assert_eq!(card_signature(&["c", "a", "b"]), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(card_signature(&[]), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }

    #[test]
    fn ct_eq_compares_whole_values() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }
}
