//! Properties of the response and push parsers over inputs no example list covers.
//!
//! Every WeChat response body and every decrypted component push passes through
//! `parse_response` or `ComponentNotification::from_xml`; a panic there takes down a request (or
//! the callback handler) on input the server does not control, and a push that does not survive
//! `to_xml` → `from_xml` means the simulator tells clients something WeChat never would.

use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use wechat_proto::api::*;
use wechat_proto::{ErrCode, Secret};

/// Parses `body` as `T` and, on success, serializes the result again so that types without
/// `PartialEq` can still be compared.
fn parse_as<T: DeserializeOwned + Serialize>(body: &[u8]) -> Result<Value, ApiError> {
    parse_response::<T>(body).map(|t| serde_json::to_value(t).unwrap())
}

/// Every response type in `api.rs`, each as a parser to the re-serialized value.
type Parser = fn(&[u8]) -> Result<Value, ApiError>;
const PARSERS: &[(&str, Parser)] = &[
    ("ErrBody", parse_as::<ErrBody>),
    ("AccessTokenResponse", parse_as::<AccessTokenResponse>),
    ("TicketResponse", parse_as::<TicketResponse>),
    ("ComponentTokenResponse", parse_as::<ComponentTokenResponse>),
    ("PreAuthCodeResponse", parse_as::<PreAuthCodeResponse>),
    ("QueryAuthResponse", parse_as::<QueryAuthResponse>),
    ("AuthorizerTokenResponse", parse_as::<AuthorizerTokenResponse>),
    ("ApiDomainIpResponse", parse_as::<ApiDomainIpResponse>),
    ("UserInfoResponse", parse_as::<UserInfoResponse>),
    ("JsCode2SessionResponse", parse_as::<JsCode2SessionResponse>),
    ("PhoneNumberResponse", parse_as::<PhoneNumberResponse>),
    ("OAuth2AccessTokenResponse", parse_as::<OAuth2AccessTokenResponse>),
    ("Value", parse_as::<Value>),
];

/// Any error must carry the body it was given, byte for byte when the body is UTF-8.
fn check_raw(name: &str, body: &[u8], err: &ApiError) -> Result<(), TestCaseError> {
    let raw = match err {
        ApiError::WeChat { raw, .. } | ApiError::Malformed { raw, .. } => raw,
    };
    prop_assert_eq!(raw, &String::from_utf8_lossy(body), "{}", name);
    Ok(())
}

/// Field names of the response types, so that generated objects hit real fields and not only
/// unknown ones.
const FIELDS: &[&str] = &[
    "errcode",
    "errmsg",
    "access_token",
    "expires_in",
    "ticket",
    "component_access_token",
    "pre_auth_code",
    "authorization_info",
    "authorizer_appid",
    "authorizer_access_token",
    "authorizer_refresh_token",
    "func_info",
    "funcscope_category",
    "id",
    "ip_list",
    "subscribe",
    "openid",
    "language",
    "subscribe_time",
    "unionid",
    "session_key",
    "phone_info",
    "phoneNumber",
    "purePhoneNumber",
    "countryCode",
    "watermark",
    "timestamp",
    "appid",
    "refresh_token",
    "scope",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => prop::sample::select(FIELDS).prop_map(str::to_owned), 1 => any::<String>()]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (0i64..10_000).prop_map(Value::from),
    ]
}

/// Any JSON value, biased towards objects with the response types' field names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(key(), json_value(), 0..10).prop_map(|m| m.into_iter().collect())
}

/// JSON-looking fragments glued together: mostly almost-valid bodies.
fn jsonish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(":".to_owned()),
        Just(",".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("\"\\u00".to_owned()),
        Just("\"\\ud800\"".to_owned()),
        prop::sample::select(FIELDS).prop_map(|f| format!("\"{f}\"")),
        "-?[0-9]{1,25}(\\.[0-9]+)?([eE][-+]?[0-9]{1,4})?".prop_map(|s: String| s),
        "\"[A-Za-z0-9_@-]{0,12}\"".prop_map(|s: String| s),
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..32).prop_map(|v| v.concat())
}

/// An errcode value that is not a JSON integer.
fn non_integer() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<String>().prop_map(Value::String),
        "-?[0-9]{1,6}".prop_map(Value::String),
        any::<f64>().prop_filter_map("finite", serde_json::Number::from_f64).prop_map(Value::Number),
        Just(json!(40001.0)),
        Just(json!(0.0)),
        Just(json!([40001])),
        Just(json!({"code": 40001})),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        // The characters XML and CDATA give meaning to, in runs long enough to form `]]>`.
        "[\\]>\\[<&;!\"' \t\r\nA-Za-z0-9]{0,40}".prop_map(|s: String| s),
        Just("]]>".to_owned()),
        Just("]]]]>>".to_owned()),
        Just(String::new()),
    ]
}

fn notice() -> impl Strategy<Value = AuthorizationNotice> {
    (text(), any::<i64>(), text(), text(), any::<i64>(), prop::option::of(text())).prop_map(
        |(component_appid, create_time, authorizer_appid, code, expired, pre)| AuthorizationNotice {
            component_appid,
            create_time,
            authorizer_appid,
            authorization_code: Secret::new(code),
            authorization_code_expired_time: expired,
            pre_auth_code: pre.map(Secret::new),
        },
    )
}

const KNOWN_INFO_TYPES: &[&str] =
    &["component_verify_ticket", "authorized", "updateauthorized", "unauthorized"];

fn notification() -> impl Strategy<Value = ComponentNotification> {
    prop_oneof![
        (text(), any::<i64>(), text()).prop_map(|(component_appid, create_time, ticket)| {
            ComponentNotification::VerifyTicket { component_appid, create_time, ticket: Secret::new(ticket) }
        }),
        notice().prop_map(ComponentNotification::Authorized),
        notice().prop_map(ComponentNotification::UpdateAuthorized),
        (text(), any::<i64>(), text()).prop_map(|(component_appid, create_time, authorizer_appid)| {
            ComponentNotification::Unauthorized { component_appid, create_time, authorizer_appid }
        }),
        // `Other` stands for an InfoType the parser does not know; a known one is another variant.
        (text(), text().prop_filter("unknown InfoType", |t| !KNOWN_INFO_TYPES.contains(&t.as_str())))
            .prop_map(|(component_appid, info_type)| ComponentNotification::Other {
                component_appid,
                info_type
            }),
    ]
}

/// XML-looking fragments around the push's element names: mostly almost-valid pushes.
fn xmlish() -> impl Strategy<Value = String> {
    let name = prop::sample::select(
        &[
            "xml",
            "AppId",
            "CreateTime",
            "InfoType",
            "ComponentVerifyTicket",
            "AuthorizerAppid",
            "AuthorizationCode",
            "AuthorizationCodeExpiredTime",
            "PreAuthCode",
            "Other",
            "$value",
            "$text",
            "@AppId",
        ][..],
    );
    let piece = prop_oneof![
        name.clone().prop_map(|n| format!("<{n}>")),
        name.clone().prop_map(|n| format!("</{n}>")),
        name.clone().prop_map(|n| format!("<{n}/>")),
        name.prop_map(|n| format!("<x {n}=\"1\">")),
        prop::sample::select(KNOWN_INFO_TYPES).prop_map(str::to_owned),
        Just("<![CDATA[".to_owned()),
        Just("]]>".to_owned()),
        Just("<?xml version=\"1.0\" encoding=\"UTF-8\"?>".to_owned()),
        Just("<!DOCTYPE xml [<!ENTITY a \"&b;\"><!ENTITY b \"&a;\">]>".to_owned()),
        Just("<!--".to_owned()),
        Just("-->".to_owned()),
        Just("&amp;".to_owned()),
        Just("&a;".to_owned()),
        Just("&#x10FFFF;".to_owned()),
        Just("&#xD800;".to_owned()),
        Just("&#0;".to_owned()),
        Just("&#".to_owned()),
        "-?[0-9]{1,22}".prop_map(|s: String| s),
        "[<>/=\"'&;#!?\\[\\] \t\r\n]".prop_map(|s: String| s),
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..32).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn parse_response_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        for (name, parse) in PARSERS {
            if let Err(e) = parse(&body) {
                check_raw(name, &body, &e)?;
            }
        }
    }

    #[test]
    fn parse_response_never_panics_on_jsonish(body in jsonish()) {
        for (name, parse) in PARSERS {
            if let Err(e) = parse(body.as_bytes()) {
                check_raw(name, body.as_bytes(), &e)?;
            }
        }
    }

    /// Whatever else a body holds, a non-zero integer errcode makes it WeChat's error, with the
    /// errmsg (when it is a string) and the raw body kept for the operator.
    #[test]
    fn nonzero_errcode_is_always_a_wechat_error(
        mut object in json_object(),
        code in any::<i64>().prop_filter("non-zero", |c| *c != 0),
    ) {
        object.insert("errcode".into(), Value::from(code));
        let expected_msg = object.get("errmsg").and_then(Value::as_str).unwrap_or_default().to_owned();
        let body = serde_json::to_vec(&object).unwrap();
        for (name, parse) in PARSERS {
            match parse(&body) {
                Err(ApiError::WeChat { errcode, errmsg, raw }) => {
                    prop_assert_eq!(errcode, ErrCode(code), "{}", name);
                    prop_assert_eq!(&errmsg, &expected_msg, "{}", name);
                    prop_assert_eq!(raw.as_bytes(), &body[..], "{}", name);
                }
                other => prop_assert!(false, "{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn non_integer_errcode_is_malformed(mut object in json_object(), code in non_integer()) {
        object.insert("errcode".into(), code);
        let body = serde_json::to_vec(&object).unwrap();
        for (name, parse) in PARSERS {
            match parse(&body) {
                Err(ApiError::Malformed { raw, .. }) => prop_assert_eq!(raw.as_bytes(), &body[..], "{}", name),
                other => prop_assert!(false, "{name}: {other:?}"),
            }
        }
    }

    /// `errcode: 0` is WeChat's "ok" and must not change the outcome for any type.
    #[test]
    fn zero_errcode_is_the_same_as_none(mut object in json_object()) {
        object.remove("errcode");
        let without = serde_json::to_vec(&object).unwrap();
        object.insert("errcode".into(), json!(0));
        let with = serde_json::to_vec(&object).unwrap();
        for (name, parse) in PARSERS {
            if *name == "Value" || *name == "ErrBody" || *name == "TicketResponse" {
                // These keep the errcode they were given.
                continue;
            }
            let (a, b) = (parse(&without), parse(&with));
            prop_assert_eq!(a.is_ok(), b.is_ok(), "{}: {:?} vs {:?}", name, a, b);
            if let (Ok(a), Ok(b)) = (a, b) {
                prop_assert_eq!(a, b, "{}", name);
            }
        }
    }

    /// Any JSON value at all (not only objects) is a result, never a panic; an error keeps the body.
    #[test]
    fn parse_response_never_panics_on_json(value in json_value()) {
        let body = serde_json::to_vec(&value).unwrap();
        for (name, parse) in PARSERS {
            if let Err(e) = parse(&body) {
                check_raw(name, &body, &e)?;
            }
        }
    }

    /// Success bodies of the shape WeChat documents parse back to what they said.
    #[test]
    fn success_bodies_round_trip(
        token in any::<String>(),
        expires_in in any::<u64>(),
        appid in any::<String>(),
        refresh in any::<String>(),
        ids in prop::collection::vec(any::<i64>(), 0..4),
        unionid in prop::option::of(any::<String>()),
        ips in prop::collection::vec(any::<String>(), 0..4),
    ) {
        let func_info: Vec<Value> = ids.iter().map(|id| json!({"funcscope_category": {"id": id}})).collect();
        let mut oauth = json!({
            "access_token": token, "expires_in": expires_in, "refresh_token": refresh,
            "openid": appid, "scope": "snsapi_base",
        });
        if let Some(u) = &unionid {
            oauth["unionid"] = json!(u);
        }
        let cases: Vec<(Parser, Value)> = vec![
            (parse_as::<AccessTokenResponse>, json!({"access_token": token, "expires_in": expires_in})),
            (
                parse_as::<TicketResponse>,
                json!({"errcode": 0, "errmsg": "ok", "ticket": token, "expires_in": expires_in}),
            ),
            (
                parse_as::<QueryAuthResponse>,
                json!({"authorization_info": {
                    "authorizer_appid": appid, "authorizer_access_token": token, "expires_in": expires_in,
                    "authorizer_refresh_token": refresh, "func_info": func_info,
                }}),
            ),
            (
                parse_as::<AuthorizerTokenResponse>,
                json!({
                    "authorizer_access_token": token, "expires_in": expires_in,
                    "authorizer_refresh_token": refresh,
                }),
            ),
            (parse_as::<ApiDomainIpResponse>, json!({"ip_list": ips})),
            (
                parse_as::<PhoneNumberResponse>,
                json!({"phone_info": {
                    "phoneNumber": token, "purePhoneNumber": refresh, "countryCode": "86",
                    "watermark": {"timestamp": ids.first().copied().unwrap_or(0), "appid": appid},
                }}),
            ),
            (parse_as::<OAuth2AccessTokenResponse>, oauth),
        ];
        for (parse, value) in cases {
            let body = serde_json::to_vec(&value).unwrap();
            prop_assert_eq!(parse(&body).unwrap(), value);
        }
    }

    #[test]
    fn from_xml_never_panics_on_strings(xml in any::<String>()) {
        let _ = ComponentNotification::from_xml(&xml);
    }

    #[test]
    fn from_xml_never_panics_on_xmlish(xml in xmlish()) {
        let _ = ComponentNotification::from_xml(&xml);
    }

    #[test]
    fn notifications_round_trip_through_xml(n in notification()) {
        let xml = n.to_xml();
        prop_assert_eq!(ComponentNotification::from_xml(&xml), Ok(n), "{}", xml);
    }

    /// A push cut short or spliced with junk (what a broken sender or an attacker who got past
    /// the signature produces) is an error or a push, never a panic.
    #[test]
    fn damaged_pushes_never_panic(n in notification(), cut in any::<prop::sample::Index>(), junk in xmlish()) {
        let xml = n.to_xml();
        let mut at = cut.index(xml.len() + 1);
        while !xml.is_char_boundary(at) {
            at -= 1;
        }
        let _ = ComponentNotification::from_xml(&xml[..at]);
        let _ = ComponentNotification::from_xml(&format!("{}{junk}{}", &xml[..at], &xml[at..]));
    }
}
