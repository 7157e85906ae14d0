//! Request and response bodies of the WeChat endpoints wxcentral calls, serves or simulates.
//!
//! WeChat answers errors with HTTP 200 and `{"errcode":…,"errmsg":…}`, sometimes on endpoints
//! whose success body has no `errcode` at all, so every response goes through
//! [`parse_response`], which turns a non-zero errcode into an [`ApiError`] and keeps the raw body.

use crate::errcode::ErrCode;
use crate::secret::Secret;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub const PATH_TOKEN: &str = "/cgi-bin/token";
pub const PATH_STABLE_TOKEN: &str = "/cgi-bin/stable_token";
pub const PATH_GETTICKET: &str = "/cgi-bin/ticket/getticket";
pub const PATH_COMPONENT_TOKEN: &str = "/cgi-bin/component/api_component_token";
pub const PATH_PREAUTHCODE: &str = "/cgi-bin/component/api_create_preauthcode";
pub const PATH_QUERY_AUTH: &str = "/cgi-bin/component/api_query_auth";
pub const PATH_AUTHORIZER_TOKEN: &str = "/cgi-bin/component/api_authorizer_token";
pub const PATH_GET_AUTHORIZER_LIST: &str = "/cgi-bin/component/api_get_authorizer_list";
pub const PATH_START_PUSH_TICKET: &str = "/cgi-bin/component/api_start_push_ticket";
pub const PATH_GET_AUTHORIZER_INFO: &str = "/cgi-bin/component/api_get_authorizer_info";
pub const PATH_GET_API_DOMAIN_IP: &str = "/cgi-bin/get_api_domain_ip";
pub const PATH_USER_INFO: &str = "/cgi-bin/user/info";
pub const PATH_GETWXACODEUNLIMIT: &str = "/wxa/getwxacodeunlimit";
pub const PATH_JSCODE2SESSION: &str = "/sns/jscode2session";
pub const PATH_GETUSERPHONENUMBER: &str = "/wxa/business/getuserphonenumber";
pub const PATH_SUBSCRIBE_SEND: &str = "/cgi-bin/message/subscribe/send";
pub const PATH_OAUTH2_ACCESS_TOKEN: &str = "/sns/oauth2/access_token";
pub const PATH_OAUTH2_REFRESH_TOKEN: &str = "/sns/oauth2/refresh_token";
pub const PATH_SNS_USERINFO: &str = "/sns/userinfo";
pub const PATH_SNS_AUTH: &str = "/sns/auth";

/// A failed WeChat call, as WeChat reported it or as it arrived malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// WeChat answered with a non-zero errcode.
    #[error("wechat errcode {errcode}: {errmsg}")]
    WeChat {
        errcode: ErrCode,
        errmsg: String,
        /// The body as received, for operators (it never carries a credential: WeChat does not
        /// echo tokens in error bodies).
        raw: String,
    },
    /// The body was neither the expected shape nor an errcode body.
    #[error("malformed wechat response: {reason}")]
    Malformed { reason: String, raw: String },
}

impl ApiError {
    pub fn errcode(&self) -> Option<ErrCode> {
        match self {
            Self::WeChat { errcode, .. } => Some(*errcode),
            Self::Malformed { .. } => None,
        }
    }
}

/// The `{errcode, errmsg}` part every WeChat JSON body may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrBody {
    #[serde(default)]
    pub errcode: i64,
    #[serde(default)]
    pub errmsg: String,
}

impl ErrBody {
    pub fn new(errcode: ErrCode, errmsg: impl Into<String>) -> Self {
        Self { errcode: errcode.code(), errmsg: errmsg.into() }
    }
}

/// Parses a WeChat JSON body: a non-zero `errcode` is an error whatever else the body holds.
pub fn parse_response<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let raw = || String::from_utf8_lossy(body).into_owned();
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::Malformed { reason: e.to_string(), raw: raw() })?;
    if let Some(code) = value.get("errcode") {
        let code = code
            .as_i64()
            .ok_or_else(|| ApiError::Malformed { reason: "errcode is not an integer".into(), raw: raw() })?;
        if code != 0 {
            let errmsg = value.get("errmsg").and_then(|m| m.as_str()).unwrap_or_default();
            return Err(ApiError::WeChat { errcode: ErrCode(code), errmsg: errmsg.to_owned(), raw: raw() });
        }
    }
    serde_json::from_value(value).map_err(|e| ApiError::Malformed { reason: e.to_string(), raw: raw() })
}

/// `GET /cgi-bin/token` query.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenQuery {
    pub grant_type: String,
    pub appid: String,
    pub secret: Secret,
}

/// `POST /cgi-bin/stable_token` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StableTokenRequest {
    pub grant_type: String,
    pub appid: String,
    pub secret: Secret,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_refresh: bool,
}

/// Success body of `/cgi-bin/token` and `/cgi-bin/stable_token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessTokenResponse {
    pub access_token: Secret,
    pub expires_in: u64,
}

/// `type` of `/cgi-bin/ticket/getticket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketType {
    Jsapi,
    WxCard,
}

impl TicketType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jsapi => "jsapi",
            Self::WxCard => "wx_card",
        }
    }
}

/// `GET /cgi-bin/ticket/getticket` query.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TicketQuery {
    pub access_token: Secret,
    #[serde(rename = "type")]
    pub ticket_type: TicketType,
}

/// Success body of `getticket` (WeChat includes `errcode: 0, errmsg: "ok"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TicketResponse {
    #[serde(default)]
    pub errcode: i64,
    #[serde(default)]
    pub errmsg: String,
    pub ticket: Secret,
    pub expires_in: u64,
}

/// `POST /cgi-bin/component/api_component_token` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentTokenRequest {
    pub component_appid: String,
    pub component_appsecret: Secret,
    pub component_verify_ticket: Secret,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentTokenResponse {
    pub component_access_token: Secret,
    pub expires_in: u64,
}

/// Query string of component endpoints that take the component token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentTokenQuery {
    pub component_access_token: Secret,
}

/// `POST /cgi-bin/component/api_create_preauthcode` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreAuthCodeRequest {
    pub component_appid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreAuthCodeResponse {
    pub pre_auth_code: Secret,
    pub expires_in: u64,
}

/// `POST /cgi-bin/component/api_query_auth` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryAuthRequest {
    pub component_appid: String,
    pub authorization_code: Secret,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryAuthResponse {
    pub authorization_info: AuthorizationInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizationInfo {
    pub authorizer_appid: String,
    pub authorizer_access_token: Secret,
    pub expires_in: u64,
    pub authorizer_refresh_token: Secret,
    #[serde(default)]
    pub func_info: Vec<FuncInfo>,
}

/// One permission set granted to the component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FuncInfo {
    pub funcscope_category: FuncScope,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FuncScope {
    pub id: i64,
}

/// `POST /cgi-bin/component/api_authorizer_token` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizerTokenRequest {
    pub component_appid: String,
    pub authorizer_appid: String,
    pub authorizer_refresh_token: Secret,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizerTokenResponse {
    pub authorizer_access_token: Secret,
    pub expires_in: u64,
    pub authorizer_refresh_token: Secret,
}

/// `POST /cgi-bin/component/api_get_authorizer_list?component_access_token=…` body: one page of
/// the component's authorizers, the documented way to recover lost refresh tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizerListRequest {
    pub component_appid: String,
    pub offset: u32,
    /// 1 to [`AUTHORIZER_LIST_MAX_COUNT`].
    pub count: u32,
}

/// The largest page `api_get_authorizer_list` serves.
pub const AUTHORIZER_LIST_MAX_COUNT: u32 = 500;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizerListResponse {
    /// Authorizers of the component in all, not on this page.
    pub total_count: u64,
    #[serde(default)]
    pub list: Vec<AuthorizerListEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizerListEntry {
    pub authorizer_appid: String,
    /// Community reports say WeChat sometimes leaves it out (or empty); both read as `None`, and
    /// then only a new authorization gives one back.
    #[serde(default, deserialize_with = "empty_secret_as_none", skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    /// Unix seconds of the authorization.
    #[serde(default)]
    pub auth_time: i64,
}

/// `null`, `""` and a missing field are all "no refresh token".
fn empty_secret_as_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    let v: Option<String> = Option::deserialize(d)?;
    Ok(v.filter(|s| !s.is_empty()).map(Secret::new))
}

/// `POST /cgi-bin/component/api_start_push_ticket` body: asks WeChat to push a verify ticket now.
/// It takes the component secret, not a token; success is `{errcode: 0}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartPushTicketRequest {
    pub component_appid: String,
    pub component_secret: Secret,
}

/// `POST /cgi-bin/component/api_get_authorizer_info?component_access_token=…` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizerInfoRequest {
    pub component_appid: String,
    pub authorizer_appid: String,
}

/// The part of `api_get_authorizer_info`'s answer the hub reads; `authorizer_info` (nickname,
/// account type, …) is left to whoever needs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizerInfoResponse {
    pub authorization_info: AuthorizerInfoAuthorization,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizerInfoAuthorization {
    pub authorizer_appid: String,
    #[serde(default)]
    pub func_info: Vec<FuncInfo>,
}

/// `?access_token=…`: the query of every business API that takes the account's token
/// (`get_api_domain_ip`, `getwxacodeunlimit`, `getuserphonenumber`, `subscribe/send`, …).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessTokenQuery {
    pub access_token: Secret,
}

/// `GET /cgi-bin/get_api_domain_ip` takes an [`AccessTokenQuery`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiDomainIpResponse {
    pub ip_list: Vec<String>,
}

/// `GET /cgi-bin/user/info` query.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserInfoQuery {
    pub access_token: Secret,
    pub openid: String,
    /// `zh_CN` (WeChat's default), `zh_TW` or `en`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
}

/// `GET /cgi-bin/user/info?access_token=…&openid=…&lang=…`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserInfoResponse {
    pub subscribe: i64,
    pub openid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
}

/// The grant of the code exchanges (`jscode2session`, web OAuth).
pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";

/// `GET /sns/jscode2session` query: a mini program's login code for a session. It takes the
/// app secret, not a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JsCode2SessionQuery {
    pub appid: String,
    pub secret: Secret,
    pub js_code: String,
    /// Always [`GRANT_AUTHORIZATION_CODE`].
    pub grant_type: String,
}

/// `GET /sns/jscode2session?appid&secret&js_code&grant_type=authorization_code`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JsCode2SessionResponse {
    pub openid: String,
    pub session_key: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
}

/// `POST /wxa/business/getuserphonenumber?access_token=…` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhoneNumberRequest {
    pub code: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhoneNumberResponse {
    pub phone_info: PhoneInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhoneInfo {
    pub phone_number: String,
    pub pure_phone_number: String,
    pub country_code: String,
    pub watermark: Watermark,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Watermark {
    pub timestamp: i64,
    pub appid: String,
}

/// `POST /cgi-bin/message/subscribe/send?access_token=…` body; success is `{errcode:0}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscribeSendRequest {
    pub touser: String,
    pub template_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

/// `GET /sns/oauth2/access_token` query (web OAuth): a user's consent code for a user token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OAuth2AccessTokenQuery {
    pub appid: String,
    pub secret: Secret,
    pub code: String,
    /// Always [`GRANT_AUTHORIZATION_CODE`].
    pub grant_type: String,
}

/// `GET /sns/oauth2/access_token?appid&secret&code&grant_type=authorization_code` (web OAuth).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OAuth2AccessTokenResponse {
    pub access_token: Secret,
    pub expires_in: u64,
    pub refresh_token: Secret,
    pub openid: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
}

/// A decrypted open-platform push to the component callback (`InfoType` decides the variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentNotification {
    VerifyTicket {
        component_appid: String,
        create_time: i64,
        ticket: Secret,
    },
    Authorized(AuthorizationNotice),
    UpdateAuthorized(AuthorizationNotice),
    Unauthorized {
        component_appid: String,
        create_time: i64,
        authorizer_appid: String,
    },
    /// Another `InfoType` (e.g. `notify_third_fasteregister`): kept by name, acknowledged.
    Other {
        component_appid: String,
        info_type: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationNotice {
    pub component_appid: String,
    pub create_time: i64,
    pub authorizer_appid: String,
    pub authorization_code: Secret,
    pub authorization_code_expired_time: i64,
    pub pre_auth_code: Option<Secret>,
}

/// Error parsing a decrypted push.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("malformed notification XML: {0}")]
    Xml(String),
    #[error("notification {info_type} lacks field {field}")]
    MissingField { info_type: String, field: &'static str },
}

impl ComponentNotification {
    /// Parses the decrypted XML of a component push.
    pub fn from_xml(xml: &str) -> Result<Self, NotificationError> {
        let [
            app_id,
            create_time,
            info_type,
            ticket,
            authorizer_appid,
            code,
            code_expired_time,
            pre_auth_code,
        ] = read_push_fields(xml)?;
        let app_id = app_id.ok_or_else(|| NotificationError::Xml("missing <AppId>".into()))?;
        let info_type = info_type.ok_or_else(|| NotificationError::Xml("missing <InfoType>".into()))?;
        let create_time = push_integer(create_time, "CreateTime")?;
        let missing = |field| NotificationError::MissingField { info_type: info_type.clone(), field };
        Ok(match info_type.as_str() {
            "component_verify_ticket" => Self::VerifyTicket {
                component_appid: app_id,
                create_time,
                ticket: ticket.map(Secret::new).ok_or_else(|| missing("ComponentVerifyTicket"))?,
            },
            "authorized" | "updateauthorized" => {
                let notice = AuthorizationNotice {
                    component_appid: app_id,
                    create_time,
                    authorizer_appid: authorizer_appid.ok_or_else(|| missing("AuthorizerAppid"))?,
                    authorization_code: code.map(Secret::new).ok_or_else(|| missing("AuthorizationCode"))?,
                    authorization_code_expired_time: push_integer(
                        code_expired_time,
                        "AuthorizationCodeExpiredTime",
                    )?,
                    pre_auth_code: pre_auth_code.map(Secret::new),
                };
                if info_type == "authorized" {
                    Self::Authorized(notice)
                } else {
                    Self::UpdateAuthorized(notice)
                }
            }
            "unauthorized" => Self::Unauthorized {
                component_appid: app_id,
                create_time,
                authorizer_appid: authorizer_appid.ok_or_else(|| missing("AuthorizerAppid"))?,
            },
            _ => Self::Other { component_appid: app_id, info_type },
        })
    }

    /// Renders the XML WeChat sends (before encryption); the simulator uses it.
    pub fn to_xml(&self) -> String {
        /// A CDATA section cannot hold `]]>`, so the value is split there into two sections that
        /// the reader joins again; otherwise a ticket containing it would end the section early.
        fn cdata(name: &str, value: &str) -> String {
            let value = value.replace("]]>", "]]]]><![CDATA[>");
            format!("<{name}><![CDATA[{value}]]></{name}>")
        }
        let mut out = String::from("<xml>");
        match self {
            Self::VerifyTicket { component_appid, create_time, ticket } => {
                out += &cdata("AppId", component_appid);
                out += &format!("<CreateTime>{create_time}</CreateTime>");
                out += &cdata("InfoType", "component_verify_ticket");
                out += &cdata("ComponentVerifyTicket", ticket.expose());
            }
            Self::Authorized(n) | Self::UpdateAuthorized(n) => {
                let info =
                    if matches!(self, Self::Authorized(_)) { "authorized" } else { "updateauthorized" };
                out += &cdata("AppId", &n.component_appid);
                out += &format!("<CreateTime>{}</CreateTime>", n.create_time);
                out += &cdata("InfoType", info);
                out += &cdata("AuthorizerAppid", &n.authorizer_appid);
                out += &cdata("AuthorizationCode", n.authorization_code.expose());
                out += &format!(
                    "<AuthorizationCodeExpiredTime>{}</AuthorizationCodeExpiredTime>",
                    n.authorization_code_expired_time
                );
                if let Some(p) = &n.pre_auth_code {
                    out += &cdata("PreAuthCode", p.expose());
                }
            }
            Self::Unauthorized { component_appid, create_time, authorizer_appid } => {
                out += &cdata("AppId", component_appid);
                out += &format!("<CreateTime>{create_time}</CreateTime>");
                out += &cdata("InfoType", "unauthorized");
                out += &cdata("AuthorizerAppid", authorizer_appid);
            }
            Self::Other { component_appid, info_type } => {
                out += &cdata("AppId", component_appid);
                out += &cdata("InfoType", info_type);
            }
        }
        out += "</xml>";
        out
    }
}

/// The elements of a push that [`ComponentNotification::from_xml`] reads, in the order
/// [`read_push_fields`] returns them; any other element is skipped.
const PUSH_FIELDS: [&str; 8] = [
    "AppId",
    "CreateTime",
    "InfoType",
    "ComponentVerifyTicket",
    "AuthorizerAppid",
    "AuthorizationCode",
    "AuthorizationCodeExpiredTime",
    "PreAuthCode",
];

/// Reads the [`PUSH_FIELDS`] under the root element by walking the XML events. quick-xml's serde
/// deserializer is not used: it panics on some input (`unreachable!` when a DOCTYPE splits the
/// text of an element, quick-xml PR #964), and its errors quote the body, which here carries
/// tickets and authorization codes. Errors therefore name an element or a byte offset, never text.
///
/// Text outside CDATA is trimmed at the element's edges (as the deserializer did, so that
/// `<CreateTime> 1 </CreateTime>` still reads); CDATA is kept exactly, and consecutive sections
/// are joined, which is how [`ComponentNotification::to_xml`] writes a value holding `]]>`.
fn read_push_fields(xml: &str) -> Result<[Option<String>; 8], NotificationError> {
    use quick_xml::events::Event;

    let mut reader = quick_xml::Reader::from_str(xml);
    let xml_error = |reader: &quick_xml::Reader<&[u8]>| {
        NotificationError::Xml(format!("invalid XML near byte {}", reader.error_position()))
    };
    // An unknown entity or a bad character reference: the reader has already moved past the text.
    let text_error = |reader: &quick_xml::Reader<&[u8]>| {
        NotificationError::Xml(format!("invalid text before byte {}", reader.buffer_position()))
    };
    let field_of = |name: &[u8]| PUSH_FIELDS.iter().position(|f| f.as_bytes() == name);
    let mut fields: [Option<String>; 8] = Default::default();
    let mut depth = 0usize;
    // The field being read and its text runs so far.
    let mut current: Option<(usize, Vec<TextRun<'_>>)> = None;
    loop {
        match reader.read_event().map_err(|_| xml_error(&reader))? {
            Event::Start(start) => {
                if let Some((i, _)) = current {
                    return Err(NotificationError::Xml(format!("<{}> holds an element", PUSH_FIELDS[i])));
                }
                if depth == 1
                    && let Some(i) = field_of(start.name().as_ref())
                {
                    if fields[i].is_some() {
                        return Err(NotificationError::Xml(format!("duplicate <{}>", PUSH_FIELDS[i])));
                    }
                    current = Some((i, Vec::new()));
                }
                depth += 1;
            }
            Event::Empty(empty) => {
                if let Some((i, _)) = current {
                    return Err(NotificationError::Xml(format!("<{}> holds an element", PUSH_FIELDS[i])));
                }
                if depth == 0 {
                    // `<xml/>`: a root without fields.
                    return Ok(fields);
                }
                if depth == 1
                    && let Some(i) = field_of(empty.name().as_ref())
                {
                    if fields[i].is_some() {
                        return Err(NotificationError::Xml(format!("duplicate <{}>", PUSH_FIELDS[i])));
                    }
                    fields[i] = Some(String::new());
                }
            }
            Event::End(_) => {
                depth = depth.checked_sub(1).ok_or_else(|| xml_error(&reader))?;
                if let Some((i, runs)) = current.take() {
                    fields[i] = Some(join_runs(&runs));
                }
                if depth == 0 {
                    // Whatever follows the root was never read, by the deserializer either.
                    return Ok(fields);
                }
            }
            Event::Text(text) => {
                if let Some((_, runs)) = current.as_mut() {
                    runs.push(TextRun {
                        cdata: false,
                        text: text.unescape().map_err(|_| text_error(&reader))?,
                    });
                }
            }
            Event::CData(cdata) => {
                if let Some((_, runs)) = current.as_mut() {
                    runs.push(TextRun {
                        cdata: true,
                        text: cdata.decode().map_err(|_| text_error(&reader))?,
                    });
                }
            }
            // WeChat never sends one, and a DTD is where entity tricks live.
            Event::DocType(_) => {
                return Err(NotificationError::Xml("a push must not carry a DOCTYPE".into()));
            }
            Event::Eof => {
                return Err(NotificationError::Xml(
                    if depth == 0 { "no root element" } else { "unexpected end of input" }.into(),
                ));
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
    }
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// A piece of an element's content: text (unescaped) or one CDATA section.
struct TextRun<'a> {
    cdata: bool,
    text: std::borrow::Cow<'a, str>,
}

fn join_runs(runs: &[TextRun<'_>]) -> String {
    let last = runs.len().saturating_sub(1);
    let mut out = String::new();
    for (i, TextRun { cdata, text }) in runs.iter().enumerate() {
        let mut run: &str = text;
        if !cdata && i == 0 {
            run = run.trim_start_matches(is_xml_space);
        }
        if !cdata && i == last {
            run = run.trim_end_matches(is_xml_space);
        }
        out.push_str(run);
    }
    out
}

/// A numeric push field. Nothing decides on these times, so a push without one is still taken
/// (as 0) rather than lost.
fn push_integer(value: Option<String>, field: &str) -> Result<i64, NotificationError> {
    value.map_or(Ok(0), |v| {
        v.trim_matches(is_xml_space)
            .parse()
            .map_err(|_| NotificationError::Xml(format!("<{field}> is not an integer")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errcode_bodies_become_errors_with_raw_body() {
        let body = br#"{"errcode":40013,"errmsg":"invalid appid rid: 6543-21"}"#;
        let err = parse_response::<AccessTokenResponse>(body).unwrap_err();
        assert_eq!(err.errcode(), Some(ErrCode::INVALID_APPID));
        match err {
            ApiError::WeChat { errmsg, raw, .. } => {
                assert_eq!(errmsg, "invalid appid rid: 6543-21");
                assert_eq!(raw.as_bytes(), body);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn ticket_success_with_zero_errcode_parses() {
        let body = br#"{"errcode":0,"errmsg":"ok","ticket":"T1","expires_in":7200}"#;
        let t: TicketResponse = parse_response(body).unwrap();
        assert_eq!(t.ticket.expose(), "T1");
        assert_eq!(t.expires_in, 7200);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for body in [&b"not json"[..], b"{}", br#"{"errcode":"x"}"#, br#"{"access_token":1}"#] {
            let err = parse_response::<AccessTokenResponse>(body).unwrap_err();
            assert!(matches!(err, ApiError::Malformed { .. }), "{err:?}");
        }
    }

    #[test]
    fn query_auth_parses_official_shape() {
        let body = br#"{"authorization_info":{"authorizer_appid":"wxf8b4f85f3a794e77","authorizer_access_token":"QXjUqNqf","expires_in":7200,"authorizer_refresh_token":"dTo-YCXPL4","func_info":[{"funcscope_category":{"id":1}},{"funcscope_category":{"id":2}}]}}"#;
        let r: QueryAuthResponse = parse_response(body).unwrap();
        assert_eq!(r.authorization_info.authorizer_appid, "wxf8b4f85f3a794e77");
        assert_eq!(r.authorization_info.func_info.len(), 2);
        assert_eq!(r.authorization_info.authorizer_refresh_token.expose(), "dTo-YCXPL4");
    }

    #[test]
    fn authorizer_list_reads_missing_and_empty_refresh_tokens_as_none() {
        let body = br#"{"total_count":3,"list":[{"authorizer_appid":"wxa","refresh_token":"r1","auth_time":1558000607},{"authorizer_appid":"wxb","refresh_token":""},{"authorizer_appid":"wxc","refresh_token":null,"auth_time":5}]}"#;
        let r: AuthorizerListResponse = parse_response(body).unwrap();
        assert_eq!(r.total_count, 3);
        let tokens: Vec<_> =
            r.list.iter().map(|e| e.refresh_token.as_ref().map(|t| t.expose().as_str())).collect();
        assert_eq!(tokens, [Some("r1"), None, None]);
        assert_eq!((r.list[0].auth_time, r.list[1].auth_time), (1558000607, 0));
        let shown = format!("{r:?}");
        assert!(!shown.contains("r1"), "{shown}");
        let r: AuthorizerListResponse = parse_response(br#"{"total_count":0}"#).unwrap();
        assert!(r.list.is_empty());
        let json = serde_json::to_value(AuthorizerListEntry {
            authorizer_appid: "wxa".into(),
            refresh_token: None,
            auth_time: 1,
        })
        .unwrap();
        assert_eq!(json, serde_json::json!({ "authorizer_appid": "wxa", "auth_time": 1 }));
    }

    #[test]
    fn authorizer_info_reads_func_info_and_ignores_account_details() {
        let body = br#"{"authorizer_info":{"nick_name":"x","service_type_info":{"id":2}},"authorization_info":{"authorizer_appid":"wxa","authorizer_refresh_token":"r","func_info":[{"funcscope_category":{"id":1}}]}}"#;
        let r: AuthorizerInfoResponse = parse_response(body).unwrap();
        assert_eq!(r.authorization_info.authorizer_appid, "wxa");
        assert_eq!(r.authorization_info.func_info, [FuncInfo { funcscope_category: FuncScope { id: 1 } }]);
        let err = parse_response::<AuthorizerInfoResponse>(
            br#"{"errcode":61003,"errmsg":"component is not authorized by this account"}"#,
        )
        .unwrap_err();
        assert_eq!(err.errcode(), Some(ErrCode::COMPONENT_NOT_AUTHORIZED));
    }

    #[test]
    fn start_push_ticket_request_hides_the_secret() {
        let r = StartPushTicketRequest { component_appid: "wxc".into(), component_secret: "s3cr3t".into() };
        assert!(!format!("{r:?}").contains("s3cr3t"));
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({ "component_appid": "wxc", "component_secret": "s3cr3t" })
        );
    }

    #[test]
    fn notifications_round_trip_through_xml() {
        let cases = [
            ComponentNotification::VerifyTicket {
                component_appid: "wxc".into(),
                create_time: 1413192605,
                ticket: Secret::from("ticket@@@abc"),
            },
            ComponentNotification::Authorized(AuthorizationNotice {
                component_appid: "wxc".into(),
                create_time: 1413192760,
                authorizer_appid: "wxa".into(),
                authorization_code: Secret::from("code"),
                authorization_code_expired_time: 1413196360,
                pre_auth_code: Some(Secret::from("preauth")),
            }),
            ComponentNotification::Unauthorized {
                component_appid: "wxc".into(),
                create_time: 1413192760,
                authorizer_appid: "wxa".into(),
            },
        ];
        for n in cases {
            assert_eq!(ComponentNotification::from_xml(&n.to_xml()).unwrap(), n);
        }
    }

    /// quick-xml's deserializer hit `unreachable!` here (found by `tests/api_props.rs`).
    #[test]
    fn doctype_inside_a_field_is_an_error_not_a_panic() {
        let xml = "<xml><AppId>wxc</AppId><CreateTime>1<!DOCTYPE x>2</CreateTime>\
                   <InfoType>unauthorized</InfoType><AuthorizerAppid>wxa</AuthorizerAppid></xml>";
        assert_eq!(
            ComponentNotification::from_xml(xml),
            Err(NotificationError::Xml("a push must not carry a DOCTYPE".into()))
        );
    }

    /// `]]>` used to end the CDATA section early, so the push no longer parsed.
    #[test]
    fn values_holding_cdata_end_round_trip() {
        for ticket in ["]]>", "a]]>b", "]]]]>>", "]]>]]>", "]", "]]", "x]]"] {
            let n = ComponentNotification::VerifyTicket {
                component_appid: "wx]]>c".into(),
                create_time: 1,
                ticket: Secret::from(ticket),
            };
            assert_eq!(ComponentNotification::from_xml(&n.to_xml()), Ok(n), "{ticket}");
        }
    }

    /// A push holds tickets and codes; an error must not repeat them into a log line.
    #[test]
    fn errors_do_not_quote_the_push() {
        for xml in [
            "<xml><AppId>a</AppId><InfoType>x</InfoType><ComponentVerifyTicket>t1&secret;</ComponentVerifyTicket></xml>",
            "<xml><AppId>a</AppId><CreateTime>secret</CreateTime><InfoType>x</InfoType></xml>",
            "<xml><AppId>secret</AppId></secret>",
        ] {
            let e = ComponentNotification::from_xml(xml).unwrap_err().to_string();
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn lenient_where_the_old_deserializer_was() {
        let parse = |xml: &str| ComponentNotification::from_xml(xml).unwrap();
        let other = |appid: &str| ComponentNotification::Other {
            component_appid: appid.into(),
            info_type: "x".into(),
        };
        // Text is trimmed and unescaped, CDATA kept as is; comments, unknown elements, stray
        // text and anything after the root are skipped; the root may have any name.
        assert_eq!(parse("<xml><AppId> a&amp;b&#x41; </AppId><InfoType>x</InfoType></xml>"), other("a&bA"));
        assert_eq!(parse("<xml><AppId> <![CDATA[ a ]]> </AppId><InfoType>x</InfoType></xml>"), other(" a "));
        assert_eq!(parse("<xml><AppId>a<!-- c -->b</AppId><InfoType>x</InfoType></xml>"), other("ab"));
        assert_eq!(
            parse("<root>junk<AppId/><Extra><b>1</b></Extra><InfoType>x</InfoType></root><z/>"),
            other("")
        );
        assert_eq!(
            parse(
                "<xml><AppId>a</AppId><CreateTime> 12 </CreateTime><InfoType>unauthorized</InfoType><AuthorizerAppid></AuthorizerAppid></xml>"
            ),
            ComponentNotification::Unauthorized {
                component_appid: "a".into(),
                create_time: 12,
                authorizer_appid: String::new()
            }
        );
        for bad in [
            "",
            "<xml/>",
            "<xml><AppId>a</AppId><InfoType>x</InfoType>",
            "<xml><AppId>a</AppId><InfoType>x</InfoType></xm>",
            "<xml><AppId>a<b/></AppId><InfoType>x</InfoType></xml>",
            "<xml><AppId>a</AppId><AppId>b</AppId><InfoType>x</InfoType></xml>",
            "<xml><AppId>a</AppId><CreateTime></CreateTime><InfoType>x</InfoType></xml>",
        ] {
            assert!(matches!(ComponentNotification::from_xml(bad), Err(NotificationError::Xml(_))), "{bad}");
        }
    }

    #[test]
    fn official_verify_ticket_sample_parses() {
        let xml = "<xml><AppId>some_appid</AppId><CreateTime>1413192605</CreateTime><InfoType>component_verify_ticket</InfoType><ComponentVerifyTicket>some_verify_ticket</ComponentVerifyTicket></xml>";
        match ComponentNotification::from_xml(xml).unwrap() {
            ComponentNotification::VerifyTicket { component_appid, ticket, .. } => {
                assert_eq!(component_appid, "some_appid");
                assert_eq!(ticket.expose(), "some_verify_ticket");
            }
            other => panic!("{other:?}"),
        }
        assert!(ComponentNotification::from_xml("<xml><AppId>a</AppId>").is_err());
        assert!(matches!(
            ComponentNotification::from_xml("<xml><AppId>a</AppId><InfoType>authorized</InfoType></xml>"),
            Err(NotificationError::MissingField { .. })
        ));
    }
}
