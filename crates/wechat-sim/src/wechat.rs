//! The WeChat endpoints: the rules of api.weixin.qq.com applied to [`State`].
//!
//! Each function decides the whole answer under the state lock and returns a [`Reply`]; nothing
//! here does I/O, so the rules can be read (and unit-tested) apart from HTTP.

use crate::clock::Millis;
use crate::config::SimApp;
use crate::state::{Family, State, TOKEN_ALPHABET, derived_id, derived_openid, random_string};
use serde_json::{Value, json};
use std::collections::HashMap;
/// `POST /cgi-bin/qrcode/create`.
pub const PATH_QRCODE_CREATE: &str = "/cgi-bin/qrcode/create";

use wechat_proto::api::{
    AUTHORIZER_LIST_MAX_COUNT, PATH_AUTHORIZER_TOKEN, PATH_COMPONENT_TOKEN, PATH_GET_API_DOMAIN_IP,
    PATH_GET_AUTHORIZER_INFO, PATH_GET_AUTHORIZER_LIST, PATH_GETTICKET, PATH_GETUSERPHONENUMBER,
    PATH_GETWXACODEUNLIMIT, PATH_JSCODE2SESSION, PATH_OAUTH2_ACCESS_TOKEN, PATH_OAUTH2_REFRESH_TOKEN,
    PATH_PREAUTHCODE, PATH_QUERY_AUTH, PATH_SNS_AUTH, PATH_SNS_USERINFO, PATH_STABLE_TOKEN,
    PATH_START_PUSH_TICKET, PATH_SUBSCRIBE_SEND, PATH_TOKEN, PATH_USER_INFO,
};

/// A WeChat-path request, already read.
#[derive(Debug)]
pub struct Req<'a> {
    pub path: &'a str,
    pub query: &'a HashMap<String, String>,
    pub body: &'a [u8],
    pub now: Millis,
}

impl Req<'_> {
    fn q(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    /// The body as a JSON object: 44002 when empty, 47001 when not an object.
    fn json(&self) -> Result<serde_json::Map<String, Value>, i64> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Err(44002);
        }
        match serde_json::from_slice::<Value>(self.body) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(47001),
        }
    }
}

/// What a WeChat endpoint answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// HTTP 200 JSON.
    Ok(Value),
    /// HTTP 200 `{"errcode","errmsg":"… rid: …"}`.
    Err(i64),
    /// HTTP 200 `image/png`.
    Png(Vec<u8>),
    /// HTTP 404 for a path WeChat does not have.
    NotFound,
    /// HTTP 200 JSON, then something the server does once the answer is decided (outside the
    /// state lock).
    OkThen(Value, Effect),
}

/// Work a WeChat call leaves for after its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `api_start_push_ticket`: push a new verify ticket to this component, as WeChat does right
    /// after answering.
    PushTicket(String),
}

type R<T> = Result<T, i64>;

/// `func_info` as WeChat writes it.
pub fn func_info_json(ids: &[i64]) -> Vec<Value> {
    ids.iter().map(|id| json!({ "funcscope_category": { "id": id } })).collect()
}

fn str_field<'m>(m: &'m serde_json::Map<String, Value>, key: &str) -> Option<&'m str> {
    m.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn secs_left(expires_at: Millis, now: Millis) -> u64 {
    expires_at.saturating_sub(now) / 1000
}

impl State {
    /// Which app a call is about, for counters and fault matching: the `appid` parameter, else
    /// (on `api_authorizer_token`, which is about one authorizer) the body's `authorizer_appid`,
    /// else the token's owner, else the body's `component_appid`; "" when none says.
    pub fn resolve_appid(&self, path: &str, query: &HashMap<String, String>, body: &[u8]) -> String {
        if let Some(a) = query.get("appid").filter(|a| !a.is_empty()) {
            return a.clone();
        }
        let json: Option<Value> =
            if body.first().is_some_and(|b| *b == b'{') { serde_json::from_slice(body).ok() } else { None };
        if path == PATH_AUTHORIZER_TOKEN
            && let Some(a) = json.as_ref().and_then(|j| j.get("authorizer_appid")).and_then(Value::as_str)
        {
            return a.to_owned();
        }
        if let Some(a) = json.as_ref().and_then(|j| j.get("appid")).and_then(Value::as_str) {
            return a.to_owned();
        }
        for key in ["access_token", "component_access_token"] {
            if let Some(rec) = query.get(key).and_then(|t| self.tokens.get(t)) {
                return rec.appid.clone();
            }
        }
        json.as_ref()
            .and_then(|j| j.get("component_appid"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_default()
    }

    pub fn handle(&mut self, req: &Req<'_>) -> Reply {
        let result = match req.path {
            PATH_TOKEN => self.classic_token(req),
            PATH_STABLE_TOKEN => self.stable_token(req),
            PATH_GETTICKET => self.getticket(req),
            PATH_COMPONENT_TOKEN => self.component_token(req),
            PATH_PREAUTHCODE => self.preauthcode(req),
            PATH_QUERY_AUTH => self.query_auth(req),
            PATH_AUTHORIZER_TOKEN => self.authorizer_token(req),
            PATH_GET_AUTHORIZER_LIST => self.authorizer_list(req),
            PATH_GET_AUTHORIZER_INFO => self.authorizer_info(req),
            PATH_START_PUSH_TICKET => return self.start_push_ticket(req).unwrap_or_else(Reply::Err),
            PATH_GET_API_DOMAIN_IP => self.api_domain_ip(req),
            PATH_USER_INFO => self.user_info(req),
            PATH_GETWXACODEUNLIMIT => return self.wxacode(req).unwrap_or_else(Reply::Err),
            PATH_JSCODE2SESSION => self.jscode2session(req),
            PATH_GETUSERPHONENUMBER => self.phone_number(req),
            PATH_SUBSCRIBE_SEND => self.subscribe_send(req),
            PATH_OAUTH2_ACCESS_TOKEN => self.oauth2_access_token(req),
            PATH_OAUTH2_REFRESH_TOKEN => self.oauth2_refresh_token(req),
            PATH_SNS_USERINFO => self.sns_userinfo(req),
            PATH_SNS_AUTH => self.sns_auth(req).map(|()| json!({ "errcode": 0, "errmsg": "ok" })),
            PATH_QRCODE_CREATE => self.qrcode_create(req),
            _ => return Reply::NotFound,
        };
        result.map_or_else(Reply::Err, Reply::Ok)
    }

    /// With `auto_register`, an unknown appid asking for a token becomes an app with the secret
    /// it presented, and an app made that way takes whatever secret it presents next (a sandbox
    /// user changing a runtime app's secret gets tokens, not 40125).
    fn register_unknown(&mut self, appid: Option<&str>, secret: Option<&str>) {
        let (true, Some(appid), Some(secret)) = (self.config.auto_register, appid, secret) else { return };
        if appid.is_empty() || secret.is_empty() {
            return;
        }
        if self.app(appid).is_none() {
            self.config.apps.push(SimApp::new(appid, secret));
            self.auto_registered.insert(appid.to_owned());
        } else if self.auto_registered.contains(appid)
            && let Some(app) = self.config.apps.iter_mut().find(|a| a.appid == appid)
        {
            secret.clone_into(&mut app.secret);
        }
    }

    /// appid and secret of a configured app: 41002 / 40013 / 41004 / 40125.
    fn app_credentials(&self, appid: Option<&str>, secret: Option<&str>) -> R<()> {
        let appid = appid.filter(|a| !a.is_empty()).ok_or(41002)?;
        let app = self.app(appid).ok_or(40013)?;
        let secret = secret.filter(|s| !s.is_empty()).ok_or(41004)?;
        if !wechat_proto::signature::ct_eq(app.secret.as_bytes(), secret.as_bytes()) {
            return Err(40125);
        }
        Ok(())
    }

    fn quota(&mut self, appid: &str, endpoint: &str, now: Millis) -> R<()> {
        let limit = self.quota_limit(appid);
        if self.take_quota(appid, endpoint, limit, now) { Ok(()) } else { Err(45009) }
    }

    /// A token an official-account API accepts: classic, stable or authorizer (not component).
    fn api_token(&self, req: &Req<'_>) -> R<String> {
        let rec = self.check_token(req.q("access_token"), req.now)?;
        if rec.family == Family::Component {
            return Err(40001);
        }
        Ok(rec.appid.clone())
    }

    /// The component token in the query, which must belong to `component_appid`. Older docs name
    /// the parameter `component_access_token`, newer ones `access_token`; WeChat takes both.
    fn component_access(&self, req: &Req<'_>, component_appid: &str) -> R<()> {
        let token =
            req.q("component_access_token").filter(|t| !t.is_empty()).or_else(|| req.q("access_token"));
        let rec = self.check_token(token, req.now)?;
        if rec.family != Family::Component || rec.appid != component_appid {
            return Err(40001);
        }
        Ok(())
    }

    // ---- access tokens -----------------------------------------------------------------------

    fn classic_token(&mut self, req: &Req<'_>) -> R<Value> {
        if req.q("grant_type") != Some("client_credential") {
            return Err(40002);
        }
        self.register_unknown(req.q("appid"), req.q("secret"));
        self.app_credentials(req.q("appid"), req.q("secret"))?;
        let appid = req.q("appid").unwrap_or_default().to_owned();
        self.quota(&appid, PATH_TOKEN, req.now)?;
        let (ttl, overlap) = self.app(&appid).map(|a| (a.token_ttl_secs, a.overlap_secs)).ok_or(40013)?;
        let st = self.apps.entry(appid.clone()).or_default();
        let (cur, prev) = (st.classic_current.take(), st.classic_prev.take());
        let prev = self.rotate(cur, prev, req.now, overlap);
        let token = self.issue(&appid, Family::Classic, req.now, ttl);
        let st = self.apps.entry(appid).or_default();
        st.classic_prev = prev;
        st.classic_current = Some(token.clone());
        Ok(json!({ "access_token": token, "expires_in": ttl }))
    }

    fn stable_token(&mut self, req: &Req<'_>) -> R<Value> {
        let body = req.json()?;
        if str_field(&body, "grant_type") != Some("client_credential") {
            return Err(40002);
        }
        let force = match body.get("force_refresh") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(47001),
        };
        let appid = str_field(&body, "appid");
        self.register_unknown(appid, str_field(&body, "secret"));
        self.app_credentials(appid, str_field(&body, "secret"))?;
        let appid = appid.unwrap_or_default().to_owned();
        let app = self.app(&appid).ok_or(40013)?.clone();
        self.quota(&appid, PATH_STABLE_TOKEN, req.now)?;
        let now = req.now;
        let st = self.apps.entry(appid.clone()).or_default();
        let current = st.stable_current.clone();
        let day = crate::clock::shanghai_day(now);
        if st.force_day != day {
            st.force_day = day;
            st.force_count = 0;
        }
        let force_allowed = force
            && st.force_count < app.force_refresh_daily_limit
            && st.last_forced.is_none_or(|t| now.saturating_sub(t) >= app.force_refresh_interval_secs * 1000);
        let live = current.as_ref().filter(|t| self.is_valid(t, now)).cloned();
        let reuse = match &live {
            // Force refresh refused: nothing is refreshed, the current token comes back as is.
            Some(t) if force && !force_allowed => Some(t.clone()),
            Some(t) if !force => {
                let left = self.tokens.get(t).map_or(0, |r| r.expires_at.saturating_sub(now));
                (left > app.stable_rotate_secs * 1000).then(|| t.clone())
            }
            _ => None,
        };
        let token = match reuse {
            Some(t) => t,
            None => {
                if force_allowed {
                    // Revocation is the point of force_refresh (a leaked token), so every live
                    // stable token of the app stops, including one rotated out in normal mode.
                    let live_stable: Vec<String> = self
                        .tokens
                        .iter()
                        .filter(|(_, r)| r.family == Family::Stable && r.appid == appid && r.expires_at > now)
                        .map(|(t, _)| t.clone())
                        .collect();
                    for t in live_stable {
                        self.invalidate(&t, now);
                    }
                    let st = self.apps.entry(appid.clone()).or_default();
                    st.force_count += 1;
                    st.last_forced = Some(now);
                }
                // A normal-mode rotation leaves the old token valid until its own expiry.
                let t = self.issue(&appid, Family::Stable, now, app.token_ttl_secs);
                self.apps.entry(appid.clone()).or_default().stable_current = Some(t.clone());
                t
            }
        };
        let expires_in = self.tokens.get(&token).map_or(0, |r| secs_left(r.expires_at, now));
        Ok(json!({ "access_token": token, "expires_in": expires_in }))
    }

    // ---- tickets -----------------------------------------------------------------------------

    fn getticket(&mut self, req: &Req<'_>) -> R<Value> {
        let appid = self.api_token(req)?;
        let kind = match req.q("type") {
            Some(k @ ("jsapi" | "wx_card")) => k.to_owned(),
            _ => return Err(40097),
        };
        self.quota(&appid, PATH_GETTICKET, req.now)?;
        let ttl = self.ticket_ttl(&appid);
        let key = (appid, kind);
        let ticket = match self.tickets.get(&key) {
            Some((t, exp)) if *exp > req.now => (t.clone(), *exp),
            _ => {
                let t = (random_string(86), req.now + ttl * 1000);
                self.tickets.insert(key, t.clone());
                t
            }
        };
        Ok(json!({
            "errcode": 0, "errmsg": "ok", "ticket": ticket.0, "expires_in": secs_left(ticket.1, req.now)
        }))
    }

    fn ticket_ttl(&self, appid: &str) -> u64 {
        if let Some(a) = self.app(appid) {
            return a.ticket_ttl_or_default();
        }
        self.authorizer_component
            .get(appid)
            .and_then(|c| self.component(c))
            .map_or(7200, |c| c.authorizer_token_ttl_secs)
    }

    // ---- components --------------------------------------------------------------------------

    fn component_token(&mut self, req: &Req<'_>) -> R<Value> {
        let body = req.json()?;
        let appid = str_field(&body, "component_appid").ok_or(41002)?.to_owned();
        let comp = self.component(&appid).ok_or(40013)?.clone();
        let secret = str_field(&body, "component_appsecret").ok_or(41004)?;
        if !wechat_proto::signature::ct_eq(comp.secret.as_bytes(), secret.as_bytes()) {
            return Err(40125);
        }
        let ticket = str_field(&body, "component_verify_ticket").ok_or(61006)?;
        let pushed_at =
            self.components.get(&appid).and_then(|c| c.verify_tickets.get(ticket)).copied().ok_or(61006)?;
        if req.now.saturating_sub(pushed_at) >= comp.verify_ticket_ttl_secs * 1000 {
            return Err(61005);
        }
        self.quota(&appid, PATH_COMPONENT_TOKEN, req.now)?;
        let cs = self.components.entry(appid.clone()).or_default();
        let (cur, prev) = (cs.token_current.take(), cs.token_prev.take());
        let prev = self.rotate(cur, prev, req.now, comp.overlap_secs);
        let token = self.issue(&appid, Family::Component, req.now, comp.token_ttl_secs);
        let cs = self.components.entry(appid).or_default();
        cs.token_prev = prev;
        cs.token_current = Some(token.clone());
        Ok(json!({ "component_access_token": token, "expires_in": comp.token_ttl_secs }))
    }

    fn preauthcode(&mut self, req: &Req<'_>) -> R<Value> {
        let body = req.json()?;
        let appid = str_field(&body, "component_appid").ok_or(41002)?.to_owned();
        self.component(&appid).ok_or(40013)?;
        self.component_access(req, &appid)?;
        self.quota(&appid, PATH_PREAUTHCODE, req.now)?;
        let code = format!("preauthcode@@@{}", random_string(64));
        self.pre_auth_codes.insert(
            code.clone(),
            crate::state::PreAuthCode { component_appid: appid, expires_at: req.now + 600_000, used: false },
        );
        Ok(json!({ "pre_auth_code": code, "expires_in": 600 }))
    }

    fn query_auth(&mut self, req: &Req<'_>) -> R<Value> {
        let body = req.json()?;
        let appid = str_field(&body, "component_appid").ok_or(41002)?.to_owned();
        let comp = self.component(&appid).ok_or(40013)?.clone();
        self.component_access(req, &appid)?;
        let code = str_field(&body, "authorization_code").ok_or(47001)?;
        let auth = self.auth_codes.get_mut(code).filter(|c| c.component_appid == appid).ok_or(61009)?;
        if auth.used || auth.expires_at <= req.now {
            return Err(61010);
        }
        let authorizer_appid = auth.authorizer_appid.clone();
        let key = (appid.clone(), authorizer_appid.clone());
        match self.authorizers.get(&key) {
            Some(a) if !a.revoked => {}
            // Unauthorized after the code was issued: the code died with the authorization.
            _ => return Err(61010),
        }
        self.quota(&appid, PATH_QUERY_AUTH, req.now)?;
        if let Some(a) = self.auth_codes.get_mut(code) {
            a.used = true;
        }
        let token = self.rotate_authorizer(&key, &comp, req.now);
        let (refresh, func_info) = self
            .authorizers
            .get(&key)
            .map(|a| (a.refresh_token.clone(), func_info_json(&a.func_info)))
            .unwrap_or_default();
        Ok(json!({
            "authorization_info": {
                "authorizer_appid": authorizer_appid,
                "authorizer_access_token": token,
                "expires_in": comp.authorizer_token_ttl_secs,
                "authorizer_refresh_token": refresh,
                "func_info": func_info,
            }
        }))
    }

    fn authorizer_token(&mut self, req: &Req<'_>) -> R<Value> {
        let body = req.json()?;
        let appid = str_field(&body, "component_appid").ok_or(41002)?.to_owned();
        let comp = self.component(&appid).ok_or(40013)?.clone();
        self.component_access(req, &appid)?;
        let authorizer_appid = str_field(&body, "authorizer_appid").ok_or(41002)?.to_owned();
        let refresh = str_field(&body, "authorizer_refresh_token").ok_or(61023)?;
        let key = (appid.clone(), authorizer_appid);
        if !self.refresh_ok(&key, refresh, req.now) {
            return Err(61023);
        }
        self.quota(&appid, PATH_AUTHORIZER_TOKEN, req.now)?;
        let token = self.rotate_authorizer(&key, &comp, req.now);
        let refresh = match self.rotation(&appid) {
            (true, grace) => self.rotate_refresh(&key, req.now, grace).unwrap_or_default(),
            // Without rotation the current one comes back, even when the caller sent the
            // predecessor still in its grace after a re-authorization.
            (false, _) => self.authorizers.get(&key).map(|a| a.refresh_token.clone()).unwrap_or_default(),
        };
        Ok(json!({
            "authorizer_access_token": token,
            "expires_in": comp.authorizer_token_ttl_secs,
            "authorizer_refresh_token": refresh,
        }))
    }

    fn authorizer_list(&mut self, req: &Req<'_>) -> R<Value> {
        let body = req.json()?;
        let appid = str_field(&body, "component_appid").ok_or(41002)?.to_owned();
        let comp = self.component(&appid).ok_or(40013)?.clone();
        self.component_access(req, &appid)?;
        let number = |key: &str| match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or(47001),
        };
        let offset = number("offset")?.unwrap_or(0);
        // WeChat documents count as at most 500 and answers a count outside 1..=500 with
        // 40097 invalid args.
        let count = number("count")?.ok_or(40097)?;
        if count == 0 || count > u64::from(AUTHORIZER_LIST_MAX_COUNT) {
            return Err(40097);
        }
        self.quota(&appid, PATH_GET_AUTHORIZER_LIST, req.now)?;
        let Some(cs) = self.components.get(&appid) else {
            return Ok(json!({ "total_count": 0, "list": [] }));
        };
        let list: Vec<Value> = cs
            .authorized
            .iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(count as usize)
            .map(|(auth_time, authorizer)| {
                let mut entry = json!({ "authorizer_appid": authorizer, "auth_time": auth_time / 1000 });
                if !comp.list_omits_refresh_token
                    && let Some(a) = self.authorizers.get(&(appid.clone(), authorizer.clone()))
                {
                    entry["refresh_token"] = Value::String(a.refresh_token.clone());
                }
                entry
            })
            .collect();
        Ok(json!({ "total_count": cs.authorized.len(), "list": list }))
    }

    fn authorizer_info(&mut self, req: &Req<'_>) -> R<Value> {
        let body = req.json()?;
        let appid = str_field(&body, "component_appid").ok_or(41002)?.to_owned();
        self.component(&appid).ok_or(40013)?;
        self.component_access(req, &appid)?;
        let authorizer_appid = str_field(&body, "authorizer_appid").ok_or(41002)?.to_owned();
        let key = (appid.clone(), authorizer_appid.clone());
        let (refresh, func_info) = match self.authorizers.get(&key) {
            Some(a) if !a.revoked => (a.refresh_token.clone(), func_info_json(&a.func_info)),
            _ => return Err(61003),
        };
        self.quota(&appid, PATH_GET_AUTHORIZER_INFO, req.now)?;
        let tag = derived_id(&authorizer_appid, 12, b"0123456789abcdef");
        Ok(json!({
            "authorizer_info": {
                "nick_name": format!("模拟公众号 {}", &tag[..4]),
                "head_img": format!("http://wx.qlogo.cn/mmopen/{tag}/0"),
                "service_type_info": { "id": 2 },
                "verify_type_info": { "id": 0 },
                "user_name": format!("gh_{tag}"),
                "principal_name": "模拟科技有限公司",
                "alias": "",
                "business_info": { "open_store": 0, "open_scan": 0, "open_pay": 0, "open_card": 0, "open_shake": 0 },
                "qrcode_url": format!("http://mmbiz.qpic.cn/mmbiz_jpg/{tag}/0"),
                "account_status": 1,
                "idc": 1,
                "signature": "",
            },
            "authorization_info": {
                "authorizer_appid": authorizer_appid,
                "authorizer_refresh_token": refresh,
                "func_info": func_info,
            }
        }))
    }

    /// Takes the component secret, not a token: it is how a component that lost its ticket
    /// gets one without waiting ten minutes.
    fn start_push_ticket(&mut self, req: &Req<'_>) -> R<Reply> {
        let body = req.json()?;
        let appid = str_field(&body, "component_appid").ok_or(41002)?.to_owned();
        let comp = self.component(&appid).ok_or(40013)?;
        let secret = str_field(&body, "component_secret").ok_or(41004)?;
        if !wechat_proto::signature::ct_eq(comp.secret.as_bytes(), secret.as_bytes()) {
            return Err(40125);
        }
        self.quota(&appid, PATH_START_PUSH_TICKET, req.now)?;
        Ok(Reply::OkThen(json!({ "errcode": 0, "errmsg": "ok" }), Effect::PushTicket(appid)))
    }

    fn rotate_authorizer(
        &mut self,
        key: &(String, String),
        comp: &crate::SimComponent,
        now: Millis,
    ) -> String {
        let (cur, prev) = match self.authorizers.get_mut(key) {
            Some(a) => (a.token_current.take(), a.token_prev.take()),
            None => (None, None),
        };
        let prev = self.rotate(cur, prev, now, comp.overlap_secs);
        let token = self.issue(&key.1, Family::Authorizer, now, comp.authorizer_token_ttl_secs);
        if let Some(a) = self.authorizers.get_mut(key) {
            a.token_prev = prev;
            a.token_current = Some(token.clone());
        }
        token
    }

    // ---- business APIs -----------------------------------------------------------------------

    fn api_domain_ip(&mut self, req: &Req<'_>) -> R<Value> {
        self.api_token(req)?;
        Ok(
            json!({ "ip_list": ["101.89.47.18", "101.91.34.103", "101.91.37.19", "101.226.212.27", "109.244.145.218", "183.3.234.107"] }),
        )
    }

    fn user_info(&mut self, req: &Req<'_>) -> R<Value> {
        self.api_token(req)?;
        let openid = req.q("openid").filter(|o| !o.is_empty()).ok_or(41009)?;
        let since =
            1_600_000_000 + derived_id(openid, 8, b"0123456789").parse::<u64>().unwrap_or(0) % 100_000_000;
        let unionid = format!("o6_b{}", derived_id(&format!("union:{openid}"), 24, TOKEN_ALPHABET));
        Ok(json!({
            "subscribe": 1,
            "openid": openid,
            "language": req.q("lang").unwrap_or("zh_CN"),
            "subscribe_time": since,
            "unionid": unionid,
            "remark": "",
            "groupid": 0,
            "tagid_list": [],
            "subscribe_scene": "ADD_SCENE_QR_CODE",
            "qr_scene": 98765,
            "qr_scene_str": "",
        }))
    }

    /// `POST /cgi-bin/qrcode/create`: a parametric QR code ticket for an official account.
    fn qrcode_create(&mut self, req: &Req<'_>) -> R<Value> {
        self.api_token(req)?;
        let body = req.json()?;
        let action = body.get("action_name").and_then(Value::as_str).ok_or(40097)?;
        let expire = match action {
            "QR_SCENE" | "QR_STR_SCENE" => {
                body.get("expire_seconds").and_then(Value::as_u64).unwrap_or(60).clamp(60, 2_592_000)
            }
            "QR_LIMIT_SCENE" | "QR_LIMIT_STR_SCENE" => 0,
            _ => return Err(40097),
        };
        let ticket = format!("gQ{}", random_string(62));
        let mut v =
            json!({ "ticket": ticket, "url": format!("http://weixin.qq.com/q/{}", random_string(22)) });
        if expire > 0 {
            v["expire_seconds"] = json!(expire);
        }
        Ok(v)
    }

    fn wxacode(&mut self, req: &Req<'_>) -> R<Reply> {
        let appid = self.api_token(req)?;
        let body = req.json()?;
        let scene = match body.get("scene") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            None => return Err(40097),
            _ => return Err(40169),
        };
        if scene.chars().count() > 32 {
            return Err(40169);
        }
        let width = match body.get("width") {
            None | Some(Value::Null) => 430,
            Some(w) => w.as_u64().ok_or(47001)?.clamp(280, 1280) as u32,
        };
        let page = body.get("page").and_then(Value::as_str).unwrap_or("");
        // The version a scan opens; it is drawn into the code, so a test can tell it arrived.
        let env = match body.get("env_version") {
            None | Some(Value::Null) => "release",
            Some(Value::String(v)) if matches!(v.as_str(), "release" | "trial" | "develop") => v.as_str(),
            Some(_) => return Err(40097),
        };
        Ok(Reply::Png(crate::png::wxacode(&format!("{appid}\n{page}\n{scene}\n{env}"), width)))
    }

    fn jscode2session(&mut self, req: &Req<'_>) -> R<Value> {
        self.app_credentials(req.q("appid"), req.q("secret"))?;
        let appid = req.q("appid").unwrap_or_default().to_owned();
        let code = req.q("js_code").filter(|c| !c.is_empty()).ok_or(41008)?;
        if req.q("grant_type") != Some("authorization_code") {
            return Err(40002);
        }
        if !self.used_codes.insert((appid.clone(), format!("js:{code}"))) {
            return Err(40163);
        }
        Ok(json!({
            "session_key": base64_like(24),
            "openid": derived_openid(&format!("{appid}:{code}")),
        }))
    }

    fn phone_number(&mut self, req: &Req<'_>) -> R<Value> {
        let appid = self.api_token(req)?;
        let body = req.json()?;
        let code = str_field(&body, "code").ok_or(47001)?;
        if !self.used_codes.insert((appid.clone(), format!("phone:{code}"))) {
            return Err(40029);
        }
        let digits = format!("13{}", derived_id(code, 9, b"0123456789"));
        Ok(json!({
            "errcode": 0,
            "errmsg": "ok",
            "phone_info": {
                "phoneNumber": digits,
                "purePhoneNumber": digits,
                "countryCode": "86",
                "watermark": { "timestamp": req.now / 1000, "appid": appid },
            }
        }))
    }

    fn subscribe_send(&mut self, req: &Req<'_>) -> R<Value> {
        self.api_token(req)?;
        let body = req.json()?;
        str_field(&body, "touser").ok_or(40003)?;
        str_field(&body, "template_id").ok_or(40037)?;
        let data = body.get("data").and_then(Value::as_object).ok_or(47003)?;
        for (key, field) in data {
            let value = field.get("value").and_then(Value::as_str).ok_or(47003)?;
            if !template_value_ok(key, value) {
                return Err(47003);
            }
        }
        Ok(json!({ "errcode": 0, "errmsg": "ok", "msgid": rand::random::<u32>() }))
    }

    fn oauth2_access_token(&mut self, req: &Req<'_>) -> R<Value> {
        self.app_credentials(req.q("appid"), req.q("secret"))?;
        let appid = req.q("appid").unwrap_or_default().to_owned();
        let code = req.q("code").filter(|c| !c.is_empty()).ok_or(41008)?;
        if req.q("grant_type") != Some("authorization_code") {
            return Err(40002);
        }
        if !self.used_codes.insert((appid.clone(), format!("oauth:{code}"))) {
            return Err(40163);
        }
        let openid = derived_openid(&format!("{appid}:{code}"));
        let refresh_token = crate::state::random_token();
        self.sns_refresh_tokens.insert(refresh_token.clone(), (appid.clone(), openid.clone()));
        Ok(self.sns_user_token(&appid, &openid, &refresh_token, req.now))
    }

    /// A new web-login user token for `openid`, answered in WeChat's shape.
    fn sns_user_token(&mut self, appid: &str, openid: &str, refresh_token: &str, now: Millis) -> Value {
        let token = crate::state::random_token();
        self.sns_tokens.insert(token.clone(), (appid.to_owned(), openid.to_owned(), now + SNS_TOKEN_TTL_MS));
        json!({
            "access_token": token,
            "expires_in": SNS_TOKEN_TTL_MS / 1000,
            "refresh_token": refresh_token,
            "openid": openid,
            "scope": "snsapi_userinfo",
            "is_snapshotuser": 0,
        })
    }

    /// `GET /sns/oauth2/refresh_token?appid&grant_type=refresh_token&refresh_token`: no secret
    /// (WeChat's own rule); 40030 for a refresh token this app was never given.
    fn oauth2_refresh_token(&mut self, req: &Req<'_>) -> R<Value> {
        let appid = req.q("appid").filter(|a| !a.is_empty()).ok_or(41002)?.to_owned();
        if req.q("grant_type") != Some("refresh_token") {
            return Err(40002);
        }
        let rt = req.q("refresh_token").filter(|t| !t.is_empty()).ok_or(40030)?.to_owned();
        let openid = match self.sns_refresh_tokens.get(&rt) {
            Some((a, openid)) if *a == appid => openid.clone(),
            _ => return Err(40030),
        };
        Ok(self.sns_user_token(&appid, &openid, &rt, req.now))
    }

    /// The user token and openid of a web-login call: 41001 without a token, 40001 for one
    /// never issued, 42001 once expired, 40003 for an openid it was not issued for.
    fn sns_auth(&self, req: &Req<'_>) -> R<()> {
        let token = req.q("access_token").filter(|t| !t.is_empty()).ok_or(41001)?;
        let (_, openid, expires) = self.sns_tokens.get(token).ok_or(40001)?;
        if req.now >= *expires {
            return Err(42001);
        }
        if req.q("openid") != Some(openid.as_str()) {
            return Err(40003);
        }
        Ok(())
    }

    fn sns_userinfo(&self, req: &Req<'_>) -> R<Value> {
        self.sns_auth(req)?;
        let openid = req.q("openid").unwrap_or_default();
        let appid =
            self.sns_tokens.get(req.q("access_token").unwrap_or_default()).map_or("", |t| t.0.as_str());
        Ok(json!({
            "openid": openid,
            "nickname": format!("user-{}", &openid[openid.len().saturating_sub(6)..]),
            "sex": 0,
            "province": "",
            "city": "",
            "country": "",
            "headimgurl": "",
            "privilege": [],
            "unionid": derived_openid(&format!("union:{appid}:{openid}")),
        }))
    }
}

/// WeChat's web-login user tokens last two hours.
const SNS_TOKEN_TTL_MS: Millis = 7_200_000;

fn base64_like(len: usize) -> String {
    let s = random_string(len);
    s.replace('-', "+").replace('_', "/")
}

/// WeChat's table "订阅消息参数值内容限制": a value's keyword type is its key without the
/// number (`thing1` is a `thing`), and each type has a length in characters and a character
/// set; one value outside them fails the whole message with 47003. Types the table leaves free
/// (time, date, amount, enum) are only checked for being present.
fn template_value_ok(key: &str, value: &str) -> bool {
    let kind = key.trim_end_matches(|c: char| c.is_ascii_digit());
    let chars = value.chars().count();
    let han =
        |c: char| matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}');
    if value.trim().is_empty() || value.chars().any(char::is_control) {
        return false;
    }
    match kind {
        "thing" => chars <= 20,
        "number" => {
            let (int, frac) = value.split_once('.').unwrap_or((value, "0"));
            chars <= 32 && [int, frac].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        }
        "letter" => chars <= 32 && value.chars().all(|c| c.is_ascii_alphabetic()),
        "character_string" => chars <= 32,
        "phrase" => chars <= 5 && value.chars().all(han),
        "symbol" => chars <= 5,
        "phone_number" => chars <= 17,
        "car_number" => chars <= 8,
        "name" => chars <= if value.is_ascii() { 20 } else { 10 },
        "time" | "date" | "amount" | "enum" => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;

    fn req<'a>(path: &'a str, query: &'a HashMap<String, String>, body: &'a [u8], now: Millis) -> Req<'a> {
        Req { path, query, body, now }
    }

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn stable_normal_mode_reuses_then_rotates_in_the_last_window() {
        let mut s = State::new(SimConfig::new().app(SimApp::new("wxa", "s").ttl(100).stable_rotate(10)));
        let body = br#"{"grant_type":"client_credential","appid":"wxa","secret":"s"}"#;
        let none = q(&[]);
        let get = |s: &mut State, now| match s.handle(&req(PATH_STABLE_TOKEN, &none, body, now)) {
            Reply::Ok(v) => {
                (v["access_token"].as_str().unwrap().to_owned(), v["expires_in"].as_u64().unwrap())
            }
            other => panic!("{other:?}"),
        };
        let (t1, e1) = get(&mut s, 0);
        assert_eq!(e1, 100);
        let (t, e) = get(&mut s, 50_000);
        assert_eq!((t.as_str(), e), (t1.as_str(), 50));
        let (t2, e2) = get(&mut s, 91_000);
        assert_ne!(t2, t1);
        assert_eq!(e2, 100);
        assert!(s.is_valid(&t1, 99_999), "the rotated-out token lives to its own expiry");
    }

    #[test]
    fn unknown_paths_are_not_found() {
        let mut s = State::new(SimConfig::new());
        let none = q(&[]);
        assert_eq!(s.handle(&req("/cgi-bin/nope", &none, b"", 0)), Reply::NotFound);
    }

    #[test]
    fn appid_resolution_prefers_the_parameter_then_the_token() {
        let mut s = State::new(SimConfig::new().app(SimApp::new("wxa", "s")));
        let t = s.issue("wxa", Family::Classic, 0, 100);
        let r = |query: &HashMap<String, String>, body: &[u8]| s.resolve_appid("/x", query, body);
        assert_eq!(r(&q(&[("appid", "wxz")]), b""), "wxz");
        assert_eq!(r(&q(&[("access_token", &t)]), b""), "wxa");
        assert_eq!(r(&q(&[]), br#"{"appid":"wxb"}"#), "wxb");
        assert_eq!(r(&q(&[]), br#"{"component_appid":"wxc"}"#), "wxc");
        assert_eq!(r(&q(&[]), b"garbage"), "");
        let body = br#"{"component_appid":"wxc","authorizer_appid":"wxauth"}"#;
        assert_eq!(s.resolve_appid(PATH_AUTHORIZER_TOKEN, &q(&[]), body), "wxauth");
        assert_eq!(s.resolve_appid(PATH_QUERY_AUTH, &q(&[]), body), "wxc");
    }
}
