//! The business endpoints of DESIGN.md §7: each checks its token, and answers WeChat's shapes.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::json;
use wechat_sim::{SimApp, SimConfig};

async fn sim_and_token() -> (Sim, String) {
    let sim = start(SimConfig::new().app(SimApp::new(APPID, SECRET))).await;
    let t = sim.classic_ok(APPID, SECRET).await;
    (sim, t)
}

#[tokio::test]
async fn get_api_domain_ip_and_user_info() {
    let (sim, t) = sim_and_token().await;
    let (s, v) = sim.get(&format!("/cgi-bin/get_api_domain_ip?access_token={t}")).await;
    assert_eq!(s, StatusCode::OK);
    let ips = v["ip_list"].as_array().unwrap();
    assert!(
        !ips.is_empty() && ips.iter().all(|ip| ip.as_str().unwrap().parse::<std::net::Ipv4Addr>().is_ok())
    );

    // The typed query of wechat-proto is what the endpoint reads.
    let query = wechat_proto::api::UserInfoQuery {
        access_token: t.as_str().into(),
        openid: "oUser1".into(),
        lang: Some("en".into()),
    };
    let r = sim.c.get(sim.url("/cgi-bin/user/info")).query(&query).send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["openid"], "oUser1");
    assert_eq!(v["language"], "en");
    let ip_query = wechat_proto::api::AccessTokenQuery { access_token: t.as_str().into() };
    let r = sim.c.get(sim.url("/cgi-bin/get_api_domain_ip")).query(&ip_query).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, v) = sim.get(&format!("/cgi-bin/user/info?access_token={t}&openid=oUser1&lang=zh_CN")).await;
    assert_eq!(v["openid"], "oUser1");
    assert_eq!(v["subscribe"], 1);
    let typed: wechat_proto::api::UserInfoResponse = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(typed.openid, "oUser1");
    let (_, v) = sim.get(&format!("/cgi-bin/user/info?access_token={t}")).await;
    assert_wx_err(&v, 41009, "missing openid");
    let (_, v) = sim.get("/cgi-bin/user/info?openid=oUser1").await;
    assert_wx_err(&v, 41001, "access_token missing");
}

#[tokio::test]
async fn getwxacodeunlimit_returns_a_real_png() {
    let (sim, t) = sim_and_token().await;
    let url = sim.url(&format!("/wxa/getwxacodeunlimit?access_token={t}"));
    let r = sim
        .c
        .post(&url)
        .json(&json!({ "scene": "a=1&b=2", "page": "pages/index/index", "width": 280 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/png");
    let bytes = r.bytes().await.unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    let mut kinds = Vec::new();
    let mut at = 8;
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        kinds.push(String::from_utf8_lossy(&bytes[at + 4..at + 8]).into_owned());
        at += 12 + len;
    }
    assert_eq!(at, bytes.len(), "chunks fill the file exactly");
    assert_eq!(kinds.first().map(String::as_str), Some("IHDR"));
    assert!(kinds.iter().any(|k| k == "IDAT"));
    assert_eq!(kinds.last().map(String::as_str), Some("IEND"));

    // An independent decoder (CRCs, zlib, filters) reads it.
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()));
    let mut reader = decoder.read_info().expect("valid PNG header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("valid PNG data");
    assert_eq!((info.width, info.height), (280, 280));
    let pixels = &buf[..info.buffer_size()];
    assert!(pixels.iter().any(|b| *b != 0xff) && pixels.iter().any(|b| *b != 0), "black and white modules");

    // Default width, and errors stay JSON.
    let r = sim.c.post(&url).json(&json!({ "scene": "x" })).send().await.unwrap();
    let mut reader =
        png::Decoder::new(std::io::Cursor::new(r.bytes().await.unwrap().to_vec())).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    assert_eq!(reader.next_frame(&mut buf).unwrap().width, 430);
    let (_, v) = sim.post(&format!("/wxa/getwxacodeunlimit?access_token={t}"), json!({ "page": "p" })).await;
    assert_wx_err(&v, 40097, "invalid args");
    let (_, v) = sim
        .post(&format!("/wxa/getwxacodeunlimit?access_token={t}"), json!({ "scene": "x".repeat(33) }))
        .await;
    assert_wx_err(&v, 40169, "invalid length for scene, or the data is not json string");
    let (_, v) = sim.post("/wxa/getwxacodeunlimit?access_token=nope", json!({ "scene": "x" })).await;
    assert_wx_err(&v, 40001, "invalid credential, access_token is invalid or not latest");
}

#[tokio::test]
async fn jscode2session_checks_the_secret_and_spends_the_code() {
    let (sim, _) = sim_and_token().await;
    let q = |secret: &str, code: &str| {
        format!(
            "/sns/jscode2session?appid={APPID}&secret={secret}&js_code={code}&grant_type=authorization_code"
        )
    };
    let query = wechat_proto::api::JsCode2SessionQuery {
        appid: APPID.into(),
        secret: SECRET.into(),
        js_code: "code-1".into(),
        grant_type: wechat_proto::api::GRANT_AUTHORIZATION_CODE.into(),
    };
    let r = sim.c.get(sim.url("/sns/jscode2session")).query(&query).send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let typed: wechat_proto::api::JsCode2SessionResponse = serde_json::from_value(v.clone()).unwrap();
    assert!(typed.openid.starts_with('o') && typed.openid.len() == 28, "{v}");
    assert_eq!(typed.session_key.expose().len(), 24);
    assert_wx_err(&sim.get(&q(SECRET, "code-1")).await.1, 40163, "code been used");
    assert_wx_err(&sim.get(&q("wrong", "code-2")).await.1, 40125, "invalid appsecret");
    let (_, v) = sim
        .get(&format!("/sns/jscode2session?appid={APPID}&secret={SECRET}&grant_type=authorization_code"))
        .await;
    assert_wx_err(&v, 41008, "missing code");
    let (_, v) =
        sim.get("/sns/jscode2session?appid=wx0&secret=x&js_code=c&grant_type=authorization_code").await;
    assert_wx_err(&v, 40013, "invalid appid");
}

#[tokio::test]
async fn phone_number_subscribe_send_and_oauth() {
    let (sim, t) = sim_and_token().await;
    let (_, v) = sim
        .post(&format!("/wxa/business/getuserphonenumber?access_token={t}"), json!({ "code": "pc1" }))
        .await;
    assert_eq!(v["errcode"], 0, "{v}");
    let typed: wechat_proto::api::PhoneNumberResponse = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(typed.phone_info.pure_phone_number.len(), 11);
    assert_eq!(typed.phone_info.watermark.appid, APPID);
    let (_, v) = sim
        .post(&format!("/wxa/business/getuserphonenumber?access_token={t}"), json!({ "code": "pc1" }))
        .await;
    assert_wx_err(&v, 40029, "invalid code");
    let (_, v) = sim.post_raw(&format!("/wxa/business/getuserphonenumber?access_token={t}"), "{oops").await;
    assert_wx_err(&v, 47001, "data format error");

    let send = json!({ "touser": "oUser", "template_id": "tpl", "data": { "thing1": { "value": "hi" } } });
    let (_, v) = sim.post(&format!("/cgi-bin/message/subscribe/send?access_token={t}"), send.clone()).await;
    assert_eq!((v["errcode"].as_i64(), v["errmsg"].as_str()), (Some(0), Some("ok")), "{v}");
    let (_, v) = sim
        .post(&format!("/cgi-bin/message/subscribe/send?access_token={t}"), json!({ "template_id": "tpl" }))
        .await;
    assert_wx_err(&v, 40003, "invalid openid");
    let (_, v) = sim.post("/cgi-bin/message/subscribe/send?access_token=stale", send).await;
    assert_eq!(errcode(&v), 40001);

    let q = format!(
        "/sns/oauth2/access_token?appid={APPID}&secret={SECRET}&code=oc1&grant_type=authorization_code"
    );
    let query = wechat_proto::api::OAuth2AccessTokenQuery {
        appid: APPID.into(),
        secret: SECRET.into(),
        code: "oc1".into(),
        grant_type: wechat_proto::api::GRANT_AUTHORIZATION_CODE.into(),
    };
    let r = sim.c.get(sim.url("/sns/oauth2/access_token")).query(&query).send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let typed: wechat_proto::api::OAuth2AccessTokenResponse = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(typed.expires_in, 7200);
    assert!(typed.openid.starts_with('o'));
    assert_wx_err(&sim.get(&q).await.1, 40163, "code been used");
    // A web OAuth token is a user's token, not an API credential.
    assert_eq!(sim.use_token(typed.access_token.expose()).await, 40001);
}

#[tokio::test]
async fn unknown_paths_are_404_with_a_wechat_body() {
    let (sim, _) = sim_and_token().await;
    let (s, v) = sim.get("/cgi-bin/does/not/exist").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_wx_err(&v, 48001, "api unauthorized");
    let (s, v) = sim.get("/__sim/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["ok"], false);
}
