//! Where a proxied request may go, and what it is called in metrics.
//!
//! The target is always the configured upstream: the hub forwards origin-form requests whose
//! path starts with one of the configured prefixes and holds no dot segment, encoded or not,
//! and builds the upstream URL from its own base and that path. Absolute-form requests (the
//! way a client asks a forward proxy for another host) and CONNECT never get that far.

use crate::wx_error::WxError;
use axum::http::{Method, Uri};
use std::borrow::Cow;

/// A request path and query the proxy may forward, checked.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: String,
    pub query: Option<String>,
    /// The bounded metrics label of the path (see [`route_label`]).
    pub label: String,
}

/// Checks `uri` against the forwarding rules. `path` is the WeChat path (for the token-free
/// route, the part after `/v1/apps/{appid}/wechat`).
pub fn check(method: &Method, uri: &Uri, path: &str, prefixes: &[String]) -> Result<Target, WxError> {
    if method == Method::CONNECT {
        return Err(WxError::Refused("CONNECT is not forwarded"));
    }
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(WxError::Refused("absolute-form requests are not forwarded"));
    }
    let prefix = prefixes.iter().find(|p| path.starts_with(p.as_str())).ok_or(WxError::NotForwarded)?;
    if path.bytes().any(|b| b.is_ascii_control() || b == b'\\' || b == b' ') {
        return Err(WxError::Refused("the path holds characters WeChat's paths never do"));
    }
    if path.split('/').any(|segment| is_dot_segment(segment) || has_encoded_slash(segment)) {
        return Err(WxError::Refused("dot segments and encoded slashes are not forwarded"));
    }
    if let Some(q) = uri.query()
        && q.bytes().any(|b| b.is_ascii_control() || b == b' ')
    {
        return Err(WxError::Refused("the query holds control characters"));
    }
    Ok(Target {
        path: path.to_owned(),
        query: uri.query().map(str::to_owned),
        label: route_label(prefix, path),
    })
}

/// `.` or `..`, each dot plain or encoded (`%2e`, any case). Checked without allocating: it
/// runs on every proxied call.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', e, tail @ ..] if e.eq_ignore_ascii_case(&b'e') => tail,
            _ => return false,
        };
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// Whether `segment` holds `%2f` or `%5c` (an encoded `/` or `\`), any case.
fn has_encoded_slash(segment: &str) -> bool {
    segment
        .as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && matches!((w[1], w[2].to_ascii_lowercase()), (b'2', b'f') | (b'5', b'c')))
}

/// Second segments common enough to get a series of their own; everything else under a prefix
/// is `other`, so no request can mint a new metric series.
const KNOWN: &[&str] = &[
    "user",
    "message",
    "media",
    "menu",
    "qrcode",
    "material",
    "tags",
    "ticket",
    "component",
    "wxopen",
    "customservice",
    "template",
    "get_api_domain_ip",
    "getcallbackip",
    "shorturl",
    "freepublish",
    "draft",
    "openapi",
    "clear_quota",
    "token",
    "stable_token",
    "getwxacode",
    "getwxacodeunlimit",
    "business",
    "msg_sec_check",
    "img_sec_check",
    "media_check_async",
    "generatescheme",
    "generate_urllink",
    "sec",
    "jscode2session",
    "oauth2",
    "userinfo",
    "auth",
    "getweanalysisappiddailysummarytrend",
    "card",
    "kf",
    "ec",
    "order",
    "product",
    "delivery",
    "aftersale",
];

/// `"/cgi-bin/user"`, `"/wxa/getwxacodeunlimit"`, `"/cgi-bin/other"`: the prefix and the next
/// segment when it is a known one.
pub fn route_label(prefix: &str, path: &str) -> String {
    let second = path[prefix.len()..].split('/').next().unwrap_or("");
    match KNOWN.iter().find(|k| **k == second) {
        Some(k) => format!("{prefix}{k}"),
        None => format!("{prefix}other"),
    }
}

/// `query` with the parameter `name` set to `value` (added if absent; every other pair kept
/// byte for byte). One pass and one allocation: it runs on every proxied call.
pub fn set_param(query: Option<&str>, name: &str, value: &str) -> String {
    let q = query.unwrap_or("");
    let mut out = String::with_capacity(q.len() + name.len() + value.len() * 3 + 2);
    let mut replaced = false;
    let push_set = |out: &mut String| {
        if !out.is_empty() {
            out.push('&');
        }
        push_encoded(out, name);
        out.push('=');
        push_encoded(out, value);
    };
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split('=').next().unwrap_or("");
        if key_is(key, name) {
            if !replaced {
                push_set(&mut out);
                replaced = true;
            }
        } else {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(pair);
        }
    }
    if !replaced {
        push_set(&mut out);
    }
    out
}

/// `s` form-urlencoded onto `out`; tokens and secrets need no escaping, so they are copied.
fn push_encoded(out: &mut String, s: &str) {
    if s.bytes().all(|b| b.is_ascii_alphanumeric() || b"*-._".contains(&b)) {
        out.push_str(s);
    } else {
        out.extend(url::form_urlencoded::byte_serialize(s.as_bytes()));
    }
}

/// Whether the raw (possibly encoded) `key` decodes to `name`.
fn key_is(key: &str, name: &str) -> bool {
    if key.contains(['%', '+']) { decoded(key) == name } else { key == name }
}

/// The first value of `name` in `query`, decoded. A query without escapes decodes to itself,
/// so its value is borrowed (the proxy reads the token of every call this way).
pub fn param<'q>(query: Option<&'q str>, name: &str) -> Option<Cow<'q, str>> {
    let q = query.unwrap_or("");
    if q.contains(['%', '+']) {
        return url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| Cow::Owned(v.into_owned()));
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| Cow::Borrowed(v))
}

fn decoded(s: &str) -> String {
    url::form_urlencoded::parse(s.as_bytes()).next().map(|(k, _)| k.into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn prefixes() -> Vec<String> {
        vec!["/cgi-bin/".into(), "/wxa/".into()]
    }

    fn check_path(p: &str) -> Result<Target, WxError> {
        let uri: Uri = p.parse().unwrap();
        check(&Method::GET, &uri, uri.path(), &prefixes())
    }

    #[test]
    fn only_plain_paths_under_a_prefix_are_forwarded() {
        let t = check_path("/cgi-bin/user/info?access_token=x&openid=o").unwrap();
        assert_eq!(t.path, "/cgi-bin/user/info");
        assert_eq!(t.label, "/cgi-bin/user");
        assert!(matches!(check_path("/v1/apps/x"), Err(WxError::NotForwarded)));
        assert!(matches!(check_path("/cgi-bin-x/y"), Err(WxError::NotForwarded)));
        for bad in
            ["/cgi-bin/../v1/apps", "/cgi-bin/%2e%2E/x", "/cgi-bin/./x", "/cgi-bin/a%2fb", "/cgi-bin/.%2e"]
        {
            assert!(matches!(check_path(bad), Err(WxError::Refused(_))), "{bad}");
        }
        let abs: Uri = "http://evil.example/cgi-bin/token".parse().unwrap();
        assert!(matches!(check(&Method::GET, &abs, abs.path(), &prefixes()), Err(WxError::Refused(_))));
        let rel: Uri = "/cgi-bin/token".parse().unwrap();
        assert!(matches!(
            check(&Method::CONNECT, &rel, "/cgi-bin/token", &prefixes()),
            Err(WxError::Refused(_))
        ));
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(route_label("/wxa/", "/wxa/getwxacodeunlimit"), "/wxa/getwxacodeunlimit");
        assert_eq!(route_label("/cgi-bin/", "/cgi-bin/xyz123/abc"), "/cgi-bin/other");
        assert_eq!(route_label("/cgi-bin/", "/cgi-bin/"), "/cgi-bin/other");
    }

    #[test]
    fn the_token_parameter_is_replaced_and_nothing_else_moves() {
        assert_eq!(
            set_param(Some("access_token=OLD&openid=o%20x"), "access_token", "NEW"),
            "access_token=NEW&openid=o%20x"
        );
        assert_eq!(
            set_param(Some("a=1&access_token=x&access_token=y"), "access_token", "N"),
            "a=1&access_token=N"
        );
        assert_eq!(set_param(None, "access_token", "N+/"), "access_token=N%2B%2F");
        assert_eq!(param(Some("a=1&access_token=T%2B"), "access_token").as_deref(), Some("T+"));
        assert_eq!(set_param(Some("access%5Ftoken=x&b=2"), "access_token", "N"), "access_token=N&b=2");
        assert_eq!(set_param(Some("&&b=2&"), "access_token", "N"), "b=2&access_token=N");
    }

    /// The segment rules as first written (lowercase, decode dots, compare): the model the
    /// allocation-free checks must agree with.
    fn refused_by_model(segment: &str) -> bool {
        let lower = segment.to_ascii_lowercase();
        let decoded = lower.replace("%2e", ".");
        decoded == "." || decoded == ".." || lower.contains("%2f") || lower.contains("%5c")
    }

    proptest! {
        #[test]
        fn param_agrees_with_a_full_decode(q in "([a-c=&%+]|%2[0-9bB]|%[eE]4){0,16}", name in "[a-c]{1,2}") {
            let model = url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| *k == name).map(|(_, v)| v.into_owned());
            prop_assert_eq!(param(Some(&q), &name).map(Cow::into_owned), model);
        }

        #[test]
        fn set_param_encodes_as_form_urlencoded(value in "[ -~]{0,12}") {
            let set = set_param(Some("a=1"), "access_token", &value);
            let want: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
            prop_assert_eq!(set, format!("a=1&access_token={want}"));
        }

        #[test]
        fn segment_checks_agree_with_the_model(segment in "([.%2eEfFcC5/a]|%2[eEfF]|%5[cC]){0,8}") {
            prop_assert_eq!(is_dot_segment(&segment) || has_encoded_slash(&segment), refused_by_model(&segment));
        }

        #[test]
        fn checking_any_path_never_panics(path in "/[ -~]{0,60}") {
            if let Ok(uri) = path.parse::<Uri>() {
                let _ = check(&Method::POST, &uri, uri.path(), &prefixes());
                let _ = set_param(uri.query(), "access_token", "v");
            }
        }
    }
}
