//! WeChat's error bodies, word for word.
//!
//! Callers match on errcodes, but operators and some SDKs read `errmsg`, so the texts are the ones
//! api.weixin.qq.com sends, each followed by ` rid: <hex>-<hex>-<hex>` as real responses are.

use rand::Rng;
use serde_json::{Value, json};

/// The text WeChat sends with `code` (without the rid). `ip` fills the 40164 text, which names the
/// caller's address.
pub fn text(code: i64, ip: &str) -> String {
    let s = match code {
        -1 => "system error",
        0 => "ok",
        40001 => "invalid credential, access_token is invalid or not latest",
        40002 => "invalid grant_type",
        40003 => "invalid openid",
        40004 => "invalid media type",
        40006 => "invalid meida size",
        40007 => "invalid media_id",
        40013 => "invalid appid",
        40014 => "invalid access_token",
        40029 => "invalid code",
        40037 => "invalid template_id",
        40097 => "invalid args",
        40125 => "invalid appsecret",
        40163 => "code been used",
        40164 => return format!("invalid ip {ip} ipv6 ::ffff:{ip}, not in whitelist"),
        40169 => "invalid length for scene, or the data is not json string",
        41001 => "access_token missing",
        41002 => "appid missing",
        41004 => "appsecret missing",
        41008 => "missing code",
        41005 => "media data missing",
        41009 => "missing openid",
        42001 => "access_token expired",
        43004 => "require subscribe",
        44002 => "empty post data",
        45009 => "reach max api daily quota limit",
        45011 => "api minute-quota reach limit  mustslower  retry next minute",
        47001 => "data format error",
        47003 => "argument invalid! data.value invalid",
        48001 => "api unauthorized",
        61003 => "component is not authorized by this account",
        61004 => "access clientip is not registered",
        61005 => "component ticket is expired",
        61006 => "component ticket is invalid",
        61009 => "code is invalid",
        61010 => "code is expired",
        61011 => "invalid component",
        61023 => "refresh_token is invalid",
        _ => "system error",
    };
    s.to_owned()
}

/// A fresh request id shaped like WeChat's: the first part is the Unix time in hex.
pub fn rid(now_secs: u64) -> String {
    let mut rng = rand::thread_rng();
    format!("{:08x}-{:08x}-{:08x}", now_secs as u32, rng.r#gen::<u32>(), rng.r#gen::<u32>())
}

/// `{"errcode":code,"errmsg":"<text> rid: …"}`.
pub fn body(code: i64, now_secs: u64, ip: &str) -> Value {
    json!({ "errcode": code, "errmsg": format!("{} rid: {}", text(code, ip), rid(now_secs)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_a_rid() {
        let b = body(45009, 0x6543_21ab, "1.2.3.4");
        let msg = b["errmsg"].as_str().unwrap();
        assert!(msg.starts_with("reach max api daily quota limit rid: 654321ab-"), "{msg}");
        let rid = msg.rsplit(' ').next().unwrap();
        let parts: Vec<_> = rid.split('-').collect();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.len() == 8 && p.chars().all(|c| c.is_ascii_hexdigit())));
        assert_eq!(b["errcode"], 45009);
    }

    #[test]
    fn whitelist_text_names_the_ip() {
        assert_eq!(text(40164, "10.0.0.9"), "invalid ip 10.0.0.9 ipv6 ::ffff:10.0.0.9, not in whitelist");
    }
}
