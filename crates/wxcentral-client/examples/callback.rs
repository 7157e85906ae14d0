//! A server URL for an official account in safe mode: URL verification, a text message answered
//! with an encrypted passive reply, and a `subscribe` event whose slow work (a WeChat call
//! through the hub) goes on after WeChat got its answer.
//!
//! ```text
//! cargo run -p wxcentral -- sandbox --listen 127.0.0.1:8080    # prints the client key
//! WXCENTRAL_KEY=sbx_… cargo run -p wxcentral-client --example callback            # plays WeChat once, exits
//! WXCENTRAL_KEY=sbx_… cargo run -p wxcentral-client --example callback -- --serve # keeps serving
//! ```
//! The token and EncodingAESKey are the ones set in the console next to the URL; here they are
//! the official sample's. Exits non-zero on the first failure.

use std::time::Duration;

use wechat_proto::crypto::{MsgCrypt, parse_envelope};
use wechat_proto::signature::{msg_signature, url_signature};
use wxcentral_client::callback::{Callback, Message, Reply};
use wxcentral_client::{Client, HubSource, Secret};

const APPID: &str = "wxdemo00000000oa01";
const TOKEN: &str = "spamtest";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hub = std::env::var("WXCENTRAL_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let key = Secret::new(
        std::env::var("WXCENTRAL_KEY").map_err(|_| "set WXCENTRAL_KEY to the sandbox's client key")?,
    );
    let client = Client::builder(HubSource::new(&hub, key)?).hub_proxy(&hub).build()?;

    let callback = Callback::new(APPID, TOKEN)
        .aes_key(AES_KEY)?
        .on_msg("text", |msg: Message| async move {
            let content = format!("you said: {}", msg.get("Content").unwrap_or_default());
            Reply::text(&msg, &content)
        })
        .on_event("subscribe", move |msg: Message| {
            let client = client.clone();
            async move {
                // Past the budget WeChat has its `success` already; this keeps running.
                match client.get_api_domain_ip(APPID).await {
                    Ok(ips) => {
                        println!("welcome {:?}: {} WeChat addresses known", msg.from_user(), ips.len());
                    }
                    Err(e) => eprintln!("welcome failed: {e}"),
                }
                Reply::Success
            }
        })
        .default(|_msg| async { Reply::Success });
    let app = axum::Router::new().route("/wechat/callback", callback.method_router());
    let listener = tokio::net::TcpListener::bind(
        std::env::var("CALLBACK_LISTEN").unwrap_or_else(|_| "127.0.0.1:0".into()),
    )
    .await?;
    let url = format!("http://{}/wechat/callback", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("server URL: {url}");
    if std::env::args().any(|a| a == "--serve") {
        server.await??;
        return Ok(());
    }
    play_wechat(&url).await
}

/// What WeChat does: verifies the URL, then pushes an encrypted text message and decrypts the
/// reply.
async fn play_wechat(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let (timestamp, nonce) = ("1733450000", "734914");
    let signature = url_signature(TOKEN, timestamp, nonce);
    let echo = http
        .get(url)
        .query(&[
            ("signature", signature.as_str()),
            ("timestamp", timestamp),
            ("nonce", nonce),
            ("echostr", "42"),
        ])
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    if echo != "42" {
        return Err(format!("URL verification answered {echo:?}").into());
    }
    println!("URL verified");

    let crypt = MsgCrypt::new(TOKEN, AES_KEY, APPID)?;
    let push = "<xml><ToUserName><![CDATA[gh_demo]]></ToUserName><FromUserName><![CDATA[oDEMO_USER]]></FromUserName><CreateTime>1733450000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hello]]></Content><MsgId>1</MsgId></xml>";
    let encrypt = crypt.encrypt_random(push.as_bytes());
    let reply = http
        .post(url)
        .query(&[
            ("signature", signature.as_str()),
            ("timestamp", timestamp),
            ("nonce", nonce),
            ("encrypt_type", "aes"),
            ("msg_signature", msg_signature(TOKEN, timestamp, nonce, &encrypt).as_str()),
        ])
        .body(format!(
            "<xml><ToUserName><![CDATA[gh_demo]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        ))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let envelope = parse_envelope(reply.as_bytes())?;
    let plain = crypt.decrypt_encrypt_field(&envelope.encrypt)?.into_string()?;
    let answer = Message::parse(plain)?;
    if answer.get("Content") != Some("you said: hello") {
        return Err(format!("unexpected reply {answer:?}").into());
    }
    println!("passive reply decrypted: {:?}", answer.get("Content").unwrap_or_default());
    Ok(())
}
