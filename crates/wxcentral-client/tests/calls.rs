//! Every typed call against the simulator, with its error paths.

mod common;

use common::*;
use std::time::{SystemTime, UNIX_EPOCH};
use wechat_proto::Secret;
use wechat_proto::api::{
    PATH_GETUSERPHONENUMBER, PATH_GETWXACODEUNLIMIT, PATH_JSCODE2SESSION, PATH_OAUTH2_ACCESS_TOKEN,
    PATH_OAUTH2_REFRESH_TOKEN, PATH_SUBSCRIBE_SEND,
};
use wxcentral_client::{
    Client, CredentialKind, EnvVersion, Error, SubscribeMessage, TemplateData, WxaCodeRequest,
};

async fn setup() -> (wechat_sim::SimHandle, String, Client) {
    let app = appid();
    let sim = sim(&[&app]).await;
    let engine = engine(&sim, &[&app]).await;
    let client = engine_client(&sim, &engine);
    (sim, app, client)
}

fn errcode(e: &Error) -> Option<i64> {
    e.errcode().map(|c| c.code())
}

#[tokio::test]
async fn jscode2session_exchanges_a_code_once() {
    let (sim, app, client) = setup().await;
    let secret = Secret::new(secret_of(&app));
    let session = client.jscode2session(&app, &secret, "code-1").await.unwrap();
    assert!(session.openid.starts_with('o'), "{}", session.openid);
    assert!(!session.session_key.expose().is_empty());
    assert!(!format!("{session:?}").contains(session.session_key.expose().as_str()));
    // Another code is another user session; the same code again is refused.
    let other = client.jscode2session(&app, &secret, "code-2").await.unwrap();
    assert_ne!(other.session_key, session.session_key);
    let used = client.jscode2session(&app, &secret, "code-1").await.unwrap_err();
    assert_eq!(errcode(&used), Some(40163), "{used:?}");
    let wrong = client.jscode2session(&app, &Secret::from("not-the-secret"), "code-3").await.unwrap_err();
    assert_eq!(errcode(&wrong), Some(40125));
    assert!(
        !wrong.to_string().contains("not-the-secret") && !format!("{wrong:?}").contains("not-the-secret")
    );
    assert!(matches!(client.jscode2session(&app, &secret, "").await, Err(Error::InvalidArgument(_))));
    assert_eq!(sim_calls(&sim, &app, PATH_JSCODE2SESSION).await, 4);
}

#[tokio::test]
async fn phone_numbers_come_with_their_watermark_and_a_code_works_once() {
    let (sim, app, client) = setup().await;
    let info = client.get_user_phone_number(&app, "phone-code-1").await.unwrap();
    assert_eq!(info.country_code, "86");
    assert_eq!(info.phone_number, info.pure_phone_number);
    assert_eq!(info.phone_number.len(), 11);
    assert_eq!(info.watermark.appid, app);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((info.watermark.timestamp - now).abs() < 60);
    let used = client.get_user_phone_number(&app, "phone-code-1").await.unwrap_err();
    assert_eq!(errcode(&used), Some(40029), "{used:?}");
    assert_eq!(sim_calls(&sim, &app, PATH_GETUSERPHONENUMBER).await, 2);
}

#[tokio::test]
async fn wxacode_unlimit_returns_the_image_or_the_json_error_as_a_typed_error() {
    let (sim, app, client) = setup().await;
    let request = WxaCodeRequest::new("item=42").page("pages/item/index").env_version(EnvVersion::Develop);
    let image = client.get_wxacode_unlimit(&app, &request.clone().check_path(false)).await.unwrap();
    assert_eq!(image.content_type.as_deref(), Some("image/png"));
    assert!(image.bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{image:?}");
    let other = client.get_wxacode_unlimit(&app, &WxaCodeRequest::new("item=43")).await.unwrap();
    assert_ne!(other.bytes, image.bytes, "the scene reached WeChat");
    // The environment reaches WeChat too: the same code for the trial version is another image,
    // and one WeChat does not know is refused.
    let trial = client
        .get_wxacode_unlimit(&app, &request.clone().check_path(false).env_version(EnvVersion::Trial))
        .await
        .unwrap();
    assert_ne!(trial.bytes, image.bytes, "env_version reached WeChat");
    let unknown_env = serde_json::json!({ "scene": "item=42", "env_version": "beta" });
    let err = client
        .post_binary(&app, PATH_GETWXACODEUNLIMIT, &unknown_env, wxcentral_client::CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(errcode(&err), Some(40097), "{err:?}");

    // WeChat answers JSON in place of the image.
    let too_long = WxaCodeRequest::new("x".repeat(33));
    let err = client.get_wxacode_unlimit(&app, &too_long).await.unwrap_err();
    match &err {
        Error::WeChat { errcode, raw, .. } => {
            assert_eq!(errcode.code(), 40169);
            assert!(raw.starts_with('{'), "{raw}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim_calls(&sim, &app, PATH_GETWXACODEUNLIMIT).await, 5);
}

#[tokio::test]
async fn subscribe_messages_are_sent_and_bad_values_refused_before_sending() {
    let (sim, app, client) = setup().await;
    let long_thing = "一份名字特别特别特别特别特别长的商品已经发货了请注意查收";
    assert!(long_thing.chars().count() > 20);
    let data = TemplateData::new()
        .value("thing1", long_thing)
        .value("phrase2", "已发货了吗")
        .value("time3", "2024年5月1日 15:01")
        .value("character_string4", "SF1234567890");
    let message = SubscribeMessage::new("oUserOpenid0001", "tmpl-ship-1", data)
        .page("pages/order/index?id=1")
        .miniprogram_state(EnvVersion::Trial);
    let msgid = client.send_subscribe_message(&app, &message).await.unwrap();
    assert!(msgid.is_some());
    assert_eq!(sim_calls(&sim, &app, PATH_SUBSCRIBE_SEND).await, 1);

    // No cut can make a phrase of digits acceptable: refused here, nothing sent.
    let bad =
        SubscribeMessage::new("oUserOpenid0001", "tmpl-ship-1", TemplateData::new().value("phrase1", "12"));
    match client.send_subscribe_message(&app, &bad).await.unwrap_err() {
        Error::InvalidTemplateValue { key, .. } => assert_eq!(key, "phrase1"),
        other => panic!("{other:?}"),
    }
    assert_eq!(sim_calls(&sim, &app, PATH_SUBSCRIBE_SEND).await, 1);

    // What WeChat itself refuses comes back typed.
    let nobody = SubscribeMessage::new("", "tmpl-ship-1", TemplateData::new().value("thing1", "x"));
    let err = client.send_subscribe_message(&app, &nobody).await.unwrap_err();
    assert_eq!(errcode(&err), Some(40003), "{err:?}");
    let no_template = SubscribeMessage::new("oUser", "", TemplateData::new().value("thing1", "x"));
    assert_eq!(errcode(&client.send_subscribe_message(&app, &no_template).await.unwrap_err()), Some(40037));
    assert_eq!(sim_calls(&sim, &app, PATH_SUBSCRIBE_SEND).await, 3);
}

/// The simulator applies WeChat's value table on its own: what the SDK sends after cutting is
/// accepted for every keyword type, and the same values sent uncut get WeChat's 47003.
#[tokio::test]
async fn over_long_values_get_47003_from_wechat_and_fitted_ones_pass() {
    let (sim, app, client) = setup().await;
    let long = [
        ("thing1", "一".repeat(21) + "x"),
        ("number2", "1".repeat(40)),
        ("letter3", "a".repeat(40)),
        ("symbol4", "%".repeat(9)),
        ("character_string5", "A1-".repeat(15)),
        ("phone_number6", "+86-".repeat(6)),
        ("car_number7", "粤A8Z888挂挂挂".to_owned()),
        ("name8", "欧阳".repeat(6)),
        ("name9", "Alexander".repeat(3)),
        ("phrase10", "已经发货啦啦啦".to_owned()),
    ];
    let data = long.iter().fold(TemplateData::new(), |d, (k, v)| d.value(*k, v.as_str()));
    let fitted = SubscribeMessage::new("oUserOpenid0001", "tmpl-all-types", data);
    assert!(client.send_subscribe_message(&app, &fitted).await.unwrap().is_some());

    for (key, value) in &long {
        let raw = serde_json::json!({
            "touser": "oUserOpenid0001",
            "template_id": "tmpl-all-types",
            "data": { *key: { "value": value } },
        });
        let err = client
            .post_json::<_, serde_json::Value>(
                &app,
                PATH_SUBSCRIBE_SEND,
                &raw,
                wxcentral_client::CallOptions::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(errcode(&err), Some(47003), "{key}: {err:?}");
    }
    assert_eq!(sim_calls(&sim, &app, PATH_SUBSCRIBE_SEND).await, 1 + long.len() as u64);
}

#[tokio::test]
async fn oauth2_access_token_exchanges_a_consent_code_once() {
    let (sim, app, client) = setup().await;
    let secret = Secret::new(secret_of(&app));
    let t = client.oauth2_access_token(&app, &secret, "consent-1").await.unwrap();
    assert!(!t.openid.is_empty());
    assert_eq!(t.expires_in, 7200);
    assert_eq!(t.scope, "snsapi_userinfo");
    let shown = format!("{t:?}");
    assert!(
        !shown.contains(t.access_token.expose().as_str())
            && !shown.contains(t.refresh_token.expose().as_str())
    );
    let used = client.oauth2_access_token(&app, &secret, "consent-1").await.unwrap_err();
    assert_eq!(errcode(&used), Some(40163));
    let wrong = client.oauth2_access_token(&app, &Secret::from("nope"), "consent-2").await.unwrap_err();
    assert_eq!(errcode(&wrong), Some(40125));
    assert_eq!(sim_calls(&sim, &app, PATH_OAUTH2_ACCESS_TOKEN).await, 3);
}

/// The rest of web login against the simulator: a refresh gives a new user token for the same
/// user, userinfo and the auth check accept it for its own openid only, and neither an unknown
/// refresh token nor an unknown user token is taken.
#[tokio::test]
async fn oauth2_refresh_userinfo_and_auth_check_against_the_simulator() {
    let (sim, app, client) = setup().await;
    let secret = Secret::new(secret_of(&app));
    let first = client.oauth2_access_token(&app, &secret, "consent-r").await.unwrap();
    let renewed = client.oauth2_refresh_token(&app, &first.refresh_token).await.unwrap();
    assert_eq!(renewed.openid, first.openid);
    assert_ne!(renewed.access_token.expose(), first.access_token.expose());
    for token in [&first.access_token, &renewed.access_token] {
        client.oauth2_check(token, &first.openid).await.unwrap();
        let me = client.oauth2_userinfo(token, &first.openid, Some("en")).await.unwrap();
        assert_eq!(me.openid, first.openid);
    }
    let other = client.oauth2_check(&renewed.access_token, "o-someone-else").await.unwrap_err();
    assert_eq!(errcode(&other), Some(40003));
    let forged = Secret::from("not-a-user-token");
    assert_eq!(errcode(&client.oauth2_check(&forged, &first.openid).await.unwrap_err()), Some(40001));
    assert_eq!(
        errcode(&client.oauth2_userinfo(&forged, &first.openid, None).await.unwrap_err()),
        Some(40001)
    );
    let bad_rt = client.oauth2_refresh_token(&app, &Secret::from("not-a-refresh-token")).await.unwrap_err();
    assert_eq!(errcode(&bad_rt), Some(40030));
    // A user token's refusal is the user's, not the app's: nothing was refreshed for it.
    assert_eq!(sim_calls(&sim, &app, PATH_OAUTH2_REFRESH_TOKEN).await, 2);
}

#[tokio::test]
async fn get_api_domain_ip_lists_addresses() {
    let (_sim, app, client) = setup().await;
    let ips = client.get_api_domain_ip(&app).await.unwrap();
    assert!(ips.len() > 1);
    assert!(ips.iter().all(|ip| ip.parse::<std::net::IpAddr>().is_ok()), "{ips:?}");
    let err = client.get_api_domain_ip("wxunknownapp00000").await.unwrap_err();
    assert!(matches!(err, Error::Engine(_)), "{err:?}");
}

#[tokio::test]
async fn jssdk_config_is_signed_with_the_current_ticket() {
    let (_sim, app, client) = setup().await;
    let url = "https://shop.example.com/page?id=1&from=share#section";
    let config = client.jssdk_config(&app, url).await.unwrap();
    let ticket = client.source().token(&app, CredentialKind::JsapiTicket).await.unwrap();
    let expected = wechat_proto::signature::jssdk_signature(
        ticket.value.expose(),
        &config.nonce_str,
        config.timestamp,
        "https://shop.example.com/page?id=1&from=share",
    );
    assert_eq!(config.signature, expected);
    assert_eq!(config.app_id, app);
    assert_eq!(config.nonce_str.len(), 16);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(config.timestamp.abs_diff(now) < 60);
    let json = serde_json::to_string(&config).unwrap();
    assert!(!json.contains(ticket.value.expose().as_str()), "the ticket stays on the server");
    let again = client.jssdk_config(&app, url).await.unwrap();
    assert_ne!(again.nonce_str, config.nonce_str);
    assert!(matches!(client.jssdk_config(&app, "ftp://x").await, Err(Error::InvalidArgument(_))));
}

#[tokio::test]
async fn binary_downloads_arrive_whole_within_the_limit() {
    let (sim, app, client) = setup().await;
    let media = [("media_id", "m100000_abc")];
    let opts = wxcentral_client::CallOptions::default();
    let file = client.get_binary(&app, wechat_sim::PATH_MEDIA_GET, &media, opts).await.unwrap();
    assert_eq!(file.bytes.len(), 100_000);
    assert!(file.bytes.iter().enumerate().all(|(i, b)| *b == wechat_sim::media_byte(i as u64)));
    let err =
        client.get_binary(&app, wechat_sim::PATH_MEDIA_GET, &[("media_id", "nope")], opts).await.unwrap_err();
    assert_eq!(errcode(&err), Some(40007), "{err:?}");

    let engine = engine(&sim, &[&app]).await;
    let small = Client::builder(wxcentral_client::EngineSource::new(engine))
        .base_url(sim.base_url())
        .max_response_bytes(10_000)
        .build()
        .unwrap();
    let err = small.get_binary(&app, wechat_sim::PATH_MEDIA_GET, &media, opts).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 10_000, .. }), "{err:?}");
}
