//! A tour of the SDK against `wxcentral sandbox`: tokens from the hub, WeChat calls through the
//! hub's proxy, without the business server ever holding an AppSecret or fetching a token.
//!
//! ```text
//! cargo run -p wxcentral -- sandbox --listen 127.0.0.1:8080    # prints the client key
//! WXCENTRAL_KEY=sbx_… cargo run -p wxcentral-client --example sandbox
//! ```
//! `WXCENTRAL_URL` defaults to `http://127.0.0.1:8080`. Exits non-zero on the first failure.

use wxcentral_client::{
    CallOptions, Client, EnvVersion, Error, HubSource, Secret, SubscribeMessage, TemplateData, WxaCodeRequest,
};

/// The sandbox's demo apps (`wxcentral::sandbox`).
const OFFICIAL_ACCOUNT: &str = "wxdemo00000000oa01";
const MINI_PROGRAM: &str = "wxdemo00000000mp02";

#[tokio::main]
async fn main() -> Result<(), Error> {
    let hub = std::env::var("WXCENTRAL_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let Ok(key) = std::env::var("WXCENTRAL_KEY") else {
        eprintln!("error: set WXCENTRAL_KEY to the client key `wxcentral sandbox` printed");
        std::process::exit(2);
    };
    let key = Secret::new(key);
    let source = HubSource::new(&hub, key.clone())?;
    let client = Client::builder(source).hub_proxy(&hub).build()?;

    let ips = client.get_api_domain_ip(OFFICIAL_ACCOUNT).await?;
    println!("get_api_domain_ip: {} addresses, first {}", ips.len(), ips[0]);

    let config = client.jssdk_config(OFFICIAL_ACCOUNT, "https://shop.example.com/page?id=1").await?;
    println!("wx.config: {}", serde_json::to_string(&config).unwrap_or_default());

    // Through the hub, the client key stands in for the AppSecret.
    let code = format!("login-{}", std::process::id());
    let session = client.jscode2session(MINI_PROGRAM, &key, &code).await?;
    println!("jscode2session: openid {}", session.openid);
    match client.jscode2session(MINI_PROGRAM, &key, &code).await {
        Err(e) => println!("jscode2session with the same code again: {e}"),
        Ok(_) => return Err(Error::InvalidArgument("a login code worked twice".into())),
    }

    let phone = client.get_user_phone_number(MINI_PROGRAM, &format!("phone-{}", std::process::id())).await?;
    println!("getuserphonenumber: +{} {}", phone.country_code, phone.pure_phone_number);

    let qr = WxaCodeRequest::new("item=42").page("pages/item/index").env_version(EnvVersion::Trial);
    let image = client.get_wxacode_unlimit(MINI_PROGRAM, &qr).await?;
    println!("getwxacodeunlimit: {} bytes of {}", image.bytes.len(), image.content_type.unwrap_or_default());

    let data = TemplateData::new()
        .value("thing1", "一份名字特别特别特别特别长的商品已经发货")
        .value("time2", "2024年5月1日 15:01");
    let message = SubscribeMessage::new("oDemoUser0000000000000000001", "demo-template", data);
    let msgid =
        client.with_options(CallOptions::once()).send_subscribe_message(MINI_PROGRAM, &message).await?;
    println!("subscribe/send: msgid {msgid:?}");
    Ok(())
}
