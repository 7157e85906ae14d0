//! The message-callback helper over real HTTP: pushes built by WeChat's own encryptor (the
//! official vectors in `../shared/vectors/`, copied into wechat-proto's tests), forged and broken
//! ones, key rotation, routing, and the five-second budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, oneshot};
use wechat_proto::crypto::{MsgCrypt, parse_envelope};
use wechat_proto::signature::{msg_signature, url_signature};
use wxcentral_client::callback::{Callback, Message, Reply};

fn vectors(file: &str) -> Value {
    let path = format!("{}/../wechat-proto/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("vector file")).unwrap()
}

fn crypt_vector(id: &str) -> Value {
    vectors("msg_crypt.json")["vectors"].as_array().unwrap().iter().find(|v| v["id"] == id).unwrap().clone()
}

fn url_vector(id: &str) -> Value {
    vectors("signatures.json")["url_verification"]["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == id)
        .unwrap()
        .clone()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("vector field {key}"))
}

/// Serves the callback at `/wx` on a real port; the base URL of that path.
async fn serve(callback: Callback) -> String {
    let app = axum::Router::new().route("/wx", callback.method_router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/wx")
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(url: &str, query: &[(&str, &str)], body: impl Into<reqwest::Body>) -> (u16, String) {
    let r = http().post(url).query(query).body(body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A handler that counts its calls and answers `reply`.
fn counting(
    calls: &Arc<AtomicUsize>,
    reply: Reply,
) -> impl Fn(Message) -> futures::future::Ready<Reply> + Send + Sync + 'static {
    let calls = calls.clone();
    move |_msg| {
        calls.fetch_add(1, Ordering::SeqCst);
        futures::future::ready(reply.clone())
    }
}

#[tokio::test]
async fn url_verification_answers_the_official_example_and_refuses_forgeries() {
    let v = url_vector("official_miniprogram_push_doc_get_verify");
    let url = serve(Callback::new("wxba5fad812f8e6fb9", s(&v, "token"))).await;
    let good = [
        ("signature", s(&v, "expected_signature")),
        ("timestamp", s(&v, "timestamp")),
        ("nonce", s(&v, "nonce")),
        ("echostr", s(&v, "echostr")),
    ];
    let r = http().get(&url).query(&good).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), s(&v, "expected_response_body"));

    let mut forged = good;
    forged[0].1 = "f464b24fc39322e44b38aa78f5edd27bd1441697";
    let r = http().get(&url).query(&forged).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(!body.contains(s(&v, "echostr")), "a refusal does not echo: {body}");

    let r = http().get(&url).query(&good[..3]).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("echostr"));
}

#[tokio::test]
async fn safe_mode_json_push_from_the_official_doc_is_routed_and_its_reply_encrypted_back() {
    let v = crypt_vector("official_miniprogram_push_doc_decrypt_json");
    let url_sig = url_vector("official_miniprogram_push_doc_aes_post_url_signature");
    let (seen_tx, seen_rx) = oneshot::channel::<(String, Option<String>, bool)>();
    let seen_tx = std::sync::Mutex::new(Some(seen_tx));
    let callback = Callback::new(s(&v, "appid"), s(&v, "token"))
        .aes_key(s(&v, "encoding_aes_key"))
        .unwrap()
        .on_msg("event", |_m| async { Reply::Success })
        .on_event("DEBUG_DEMO", move |m: Message| {
            let tx = seen_tx.lock().unwrap().take();
            async move {
                if let Some(tx) = tx {
                    tx.send((
                        m.get("debug_str").unwrap_or_default().to_owned(),
                        m.openid().map(str::to_owned),
                        m.encrypted(),
                    ))
                    .ok();
                }
                Reply::Passive(r#"{"demo_resp":"good luck"}"#.into())
            }
        });
    let url = serve(callback).await;
    let body = serde_json::to_vec(&v["post_body_json"]).unwrap();
    let query = [
        ("signature", s(&url_sig, "expected_signature")),
        ("timestamp", s(&v, "timestamp")),
        ("nonce", s(&v, "nonce")),
        ("openid", s(&v, "openid_query")),
        ("encrypt_type", "aes"),
        ("msg_signature", s(&v, "msg_signature")),
    ];
    let r = http().post(&url).query(&query).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let reply = r.text().await.unwrap();
    let (debug_str, openid, encrypted) = seen_rx.await.unwrap();
    assert_eq!(debug_str, "hello world", "the event handler, not the MsgType one, got the push");
    assert_eq!(openid.as_deref(), Some(s(&v, "openid_query")));
    assert!(encrypted);

    // The reply is a JSON envelope whose signature holds and which decrypts to the handler's answer.
    let envelope = parse_envelope(reply.as_bytes()).unwrap();
    let crypt = MsgCrypt::new(s(&v, "token"), s(&v, "encoding_aes_key"), s(&v, "appid")).unwrap();
    let (ts, nonce) = (envelope.timestamp.clone().unwrap(), envelope.nonce.clone().unwrap());
    assert_eq!(
        envelope.msg_signature.as_deref(),
        Some(crypt.signature(&ts, &nonce, &envelope.encrypt).as_str())
    );
    let plain = crypt.decrypt_encrypt_field(&envelope.encrypt).unwrap().into_string().unwrap();
    assert_eq!(plain, r#"{"demo_resp":"good luck"}"#);
    assert!(!reply.contains("good luck"), "the reply goes back encrypted");

    // The same push with its signature altered, or without one, reaches no handler.
    let mut forged = query;
    forged[5].1 = "046e02f8204d34f8ba5fa3b1db94908f3df2e9b4";
    assert_eq!(post(&url, &forged, body.clone()).await.0, 403);
    assert_eq!(post(&url, &query[..5], body.clone()).await.0, 400);
    // And with a ciphertext changed under the original signature.
    let mut tampered: Value = v["post_body_json"].clone();
    tampered["Encrypt"] = Value::String(s(&v, "encrypt").replacen('+', "/", 1));
    assert_eq!(post(&url, &query, serde_json::to_vec(&tampered).unwrap()).await.0, 403);
}

#[tokio::test]
async fn compatible_mode_xml_push_from_the_official_sample_gets_an_encrypted_text_reply() {
    let v = crypt_vector("official_mp_sample_decrypt");
    let callback = Callback::new(s(&v, "appid"), s(&v, "token"))
        .aes_key(s(&v, "encoding_aes_key"))
        .unwrap()
        .on_msg("text", |m: Message| async move {
            let content = format!("echo: {}", m.get("Content").unwrap_or_default());
            Reply::text(&m, &content)
        });
    let url = serve(callback).await;
    let query = [
        ("signature", s(&v, "url_signature_sha1_token_ts_nonce")),
        ("timestamp", s(&v, "timestamp")),
        ("nonce", s(&v, "nonce")),
        ("encrypt_type", "aes"),
        ("msg_signature", s(&v, "msg_signature")),
    ];
    let r = http().post(&url).query(&query).body(s(&v, "post_body_xml").to_owned()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let reply = r.text().await.unwrap();
    let envelope = parse_envelope(reply.as_bytes()).unwrap();
    assert!(reply.starts_with("<xml><Encrypt>"), "{reply}");
    let crypt = MsgCrypt::new(s(&v, "token"), s(&v, "encoding_aes_key"), s(&v, "appid")).unwrap();
    let (ts, nonce) = (envelope.timestamp.unwrap(), envelope.nonce.unwrap());
    assert_eq!(envelope.msg_signature.unwrap(), crypt.signature(&ts, &nonce, &envelope.encrypt));
    let plain = crypt.decrypt_encrypt_field(&envelope.encrypt).unwrap().into_string().unwrap();
    let answer = Message::parse(plain).unwrap();
    assert_eq!(answer.get("Content"), Some("echo: abcdteT"));
    assert_eq!(answer.to_user(), Some("oyORnuP8q7ou2gfYjqLzSIWZf0rs"));
    assert_eq!(answer.from_user(), Some("gh_10f6c3c3ac5a"));
    assert_eq!(answer.msg_type(), Some("text"));
}

#[tokio::test]
async fn plaintext_push_is_checked_by_its_url_signature() {
    let v = url_vector("official_miniprogram_push_doc_plain_post");
    let calls = Arc::new(AtomicUsize::new(0));
    let callback = Callback::new("wxba5fad812f8e6fb9", s(&v, "token"))
        .on_msg("text", |m: Message| async move { Reply::text(&m, "hi") })
        .default(counting(&calls, Reply::Empty));
    let url = serve(callback.clone()).await;
    let body = "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName><FromUserName><![CDATA[oU]]></FromUserName><CreateTime>1714037059</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hello]]></Content></xml>";
    let query = [
        ("signature", s(&v, "expected_signature")),
        ("timestamp", s(&v, "timestamp")),
        ("nonce", s(&v, "nonce")),
    ];
    let r = http().post(&url).query(&query).body(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/xml; charset=utf-8");
    let answer = Message::parse(r.text().await.unwrap()).unwrap();
    assert_eq!((answer.to_user(), answer.get("Content")), (Some("oU"), Some("hi")));

    // An image goes to the default handler, which answers with an empty body.
    let image = body.replace("[text]", "[image]");
    assert_eq!(post(&url, &query, image.clone()).await, (200, String::new()));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let mut forged = query;
    forged[1].1 = "1714037060";
    assert_eq!(post(&url, &forged, image.clone()).await.0, 403);
    assert_eq!(post(&url, &query, "not a message").await.0, 400);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "refused pushes reach no handler");

    // An account in safe mode refuses plaintext pushes, even well-signed ones.
    let strict = serve(callback.require_encryption()).await;
    let (status, text) = post(&strict, &query, image).await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A push encrypted and signed the way WeChat does, with the given key and receive id.
fn encrypted_push(
    token: &str,
    key: &str,
    receive_id: &str,
    plaintext: &str,
) -> (Vec<(String, String)>, String) {
    let crypt = MsgCrypt::new(token, key, receive_id).unwrap();
    let encrypt = crypt.encrypt_random(plaintext.as_bytes());
    let (timestamp, nonce) = ("1733450000".to_owned(), "98765".to_owned());
    let query = vec![
        ("signature".to_owned(), url_signature(token, &timestamp, &nonce)),
        ("timestamp".to_owned(), timestamp.clone()),
        ("nonce".to_owned(), nonce.clone()),
        ("encrypt_type".to_owned(), "aes".to_owned()),
        ("msg_signature".to_owned(), msg_signature(token, &timestamp, &nonce, &encrypt)),
    ];
    (
        query,
        format!(
            "<xml><ToUserName><![CDATA[gh_x]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        ),
    )
}

async fn post_owned(url: &str, query: &[(String, String)], body: String) -> (u16, String) {
    let r = http().post(url).query(query).body(body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

const TOKEN: &str = "callback-test-token";
const OLD_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const NEW_KEY: &str = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkj";
const OTHER_KEY: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
const APPID: &str = "wxcallback000001";
const TEXT: &str = "<xml><ToUserName>gh_x</ToUserName><FromUserName>oU</FromUserName><MsgType>text</MsgType><Content>hi</Content></xml>";

#[tokio::test]
async fn after_a_key_rotation_pushes_under_either_key_decrypt_and_others_do_not() {
    let calls = Arc::new(AtomicUsize::new(0));
    let rotated = Callback::new(APPID, TOKEN)
        .aes_key(NEW_KEY)
        .unwrap()
        .previous_aes_key(OLD_KEY)
        .unwrap()
        .on_msg("text", counting(&calls, Reply::Success));
    let url = serve(rotated.clone()).await;
    for key in [NEW_KEY, OLD_KEY] {
        let (q, body) = encrypted_push(TOKEN, key, APPID, TEXT);
        assert_eq!(post_owned(&url, &q, body).await, (200, "success".to_owned()));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A key neither current nor previous, another account's push, an unconfigured safe mode.
    let (q, body) = encrypted_push(TOKEN, OTHER_KEY, APPID, TEXT);
    assert_eq!(post_owned(&url, &q, body).await.0, 400);
    let (q, body) = encrypted_push(TOKEN, NEW_KEY, "wxsomeoneelse0001", TEXT);
    let (status, text) = post_owned(&url, &q, body).await;
    assert_eq!((status, text.as_str()), (403, "the push is for another account"));
    let (q, body) = encrypted_push(TOKEN, NEW_KEY, APPID, TEXT);
    let plain_only =
        serve(Callback::new(APPID, TOKEN).on_msg("text", counting(&calls, Reply::Success))).await;
    assert_eq!(post_owned(&plain_only, &q, body.clone()).await.0, 400);
    // Without the previous key, a push under the old one is refused.
    let current_only = serve(
        Callback::new(APPID, TOKEN)
            .aes_key(NEW_KEY)
            .unwrap()
            .on_msg("text", counting(&calls, Reply::Success)),
    )
    .await;
    let (q_old, body_old) = encrypted_push(TOKEN, OLD_KEY, APPID, TEXT);
    assert_eq!(post_owned(&current_only, &q_old, body_old).await.0, 400);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "no refused push reached a handler");

    // Garbage where the envelope should be, and a body over the limit.
    assert_eq!(post_owned(&url, &q, "<xml><Encrypt>".into()).await.0, 400);
    assert_eq!(post_owned(&url, &q, "%%%".into()).await.0, 400);
    let (status, text) = post_owned(&url, &q, "x".repeat(64 * 1024 + 1)).await;
    assert_eq!((status, text.as_str()), (413, "body larger than 65536 bytes"));
    let small = serve(rotated.max_body(100)).await;
    assert_eq!(post_owned(&small, &q, body).await.0, 413);
}

#[tokio::test]
async fn routing_prefers_info_type_then_event_then_msg_type_then_default() {
    let hit = Arc::new(std::sync::Mutex::new(Vec::<&'static str>::new()));
    let record = |name: &'static str| {
        let hit = hit.clone();
        move |_m: Message| {
            hit.lock().unwrap().push(name);
            async { Reply::Success }
        }
    };
    let with_default = Callback::new(APPID, TOKEN)
        .aes_key(NEW_KEY)
        .unwrap()
        .on_info("component_verify_ticket", record("info"))
        .on_event("subscribe", record("subscribe"))
        .on_event("CLICK", record("click"))
        .on_msg("event", record("event"))
        .on_msg("text", record("text"))
        .default(record("default"));
    let url = serve(with_default.clone()).await;
    let pushes = [
        "<xml><AppId>wxc</AppId><InfoType>component_verify_ticket</InfoType><ComponentVerifyTicket>ticket@@@x</ComponentVerifyTicket></xml>",
        "<xml><MsgType>event</MsgType><Event>subscribe</Event></xml>",
        "<xml><MsgType>event</MsgType><Event>click</Event><EventKey>K</EventKey></xml>",
        "<xml><MsgType>event</MsgType><Event>LOCATION</Event></xml>",
        "<xml><MsgType>TEXT</MsgType></xml>",
        "<xml><MsgType>voice</MsgType></xml>",
        "<xml><InfoType>unauthorized</InfoType></xml>",
    ];
    for push in pushes {
        let (q, body) = encrypted_push(TOKEN, NEW_KEY, APPID, push);
        assert_eq!(post_owned(&url, &q, body).await.0, 200, "{push}");
    }
    assert_eq!(*hit.lock().unwrap(), ["info", "subscribe", "click", "event", "text", "default", "default"]);

    // With no handler at all for a push, it is still acknowledged.
    let bare = serve(Callback::new(APPID, TOKEN).aes_key(NEW_KEY).unwrap()).await;
    let (q, body) = encrypted_push(TOKEN, NEW_KEY, APPID, TEXT);
    assert_eq!(post_owned(&bare, &q, body).await, (200, "success".to_owned()));
}

#[tokio::test]
async fn a_slow_handler_is_acknowledged_within_the_budget_and_keeps_running() {
    let release = Arc::new(Notify::new());
    let finished = Arc::new(Notify::new());
    let done = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (release, finished, done) = (release.clone(), finished.clone(), done.clone());
        move |m: Message| {
            let (release, finished, done) = (release.clone(), finished.clone(), done.clone());
            async move {
                release.notified().await;
                done.fetch_add(1, Ordering::SeqCst);
                finished.notify_one();
                Reply::text(&m, "too late")
            }
        }
    };
    let url = serve(
        Callback::new(APPID, TOKEN)
            .aes_key(NEW_KEY)
            .unwrap()
            .budget(Duration::from_millis(300))
            .on_msg("text", handler),
    )
    .await;
    let (q, body) = encrypted_push(TOKEN, NEW_KEY, APPID, TEXT);
    // The handler cannot finish before it is released, so this answer came from the budget.
    assert_eq!(post_owned(&url, &q, body).await, (200, "success".to_owned()));
    assert_eq!(done.load(Ordering::SeqCst), 0);
    release.notify_one();
    tokio::time::timeout(Duration::from_secs(10), finished.notified())
        .await
        .expect("the handler went on after the answer");
    assert_eq!(done.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_panicking_handler_gets_a_500_without_internals_so_wechat_retries() {
    let url = serve(Callback::new(APPID, TOKEN).aes_key(NEW_KEY).unwrap().on_msg(
        "text",
        |_m: Message| async move {
            panic!("handler bug with secret detail");
            #[allow(unreachable_code)]
            Reply::Success
        },
    ))
    .await;
    let (q, body) = encrypted_push(TOKEN, NEW_KEY, APPID, TEXT);
    let (status, text) = post_owned(&url, &q, body).await;
    assert_eq!((status, text.as_str()), (500, "the message handler failed"));
}

mod no_panic {
    use super::*;
    use proptest::prelude::*;
    use tower::ServiceExt as _;

    fn router() -> axum::Router {
        axum::Router::new().route(
            "/wx",
            Callback::new(APPID, TOKEN)
                .aes_key(NEW_KEY)
                .unwrap()
                .previous_aes_key(OLD_KEY)
                .unwrap()
                .default(|m: Message| async move { Reply::text(&m, "ok") })
                .method_router(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any query and body: a 4xx or a 200, never a panic or a 5xx.
        #[test]
        fn any_request_gets_a_clean_answer(
            query in "[a-z_=&%0-9A-F]{0,80}",
            body in proptest::collection::vec(any::<u8>(), 0..600),
            aes in any::<bool>(),
            get in any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let status = rt.block_on(async {
                let query = if aes { format!("{query}&encrypt_type=aes&timestamp=1&nonce=2&msg_signature=ab") } else { query };
                let request = axum::http::Request::builder()
                    .method(if get { "GET" } else { "POST" })
                    .uri(format!("/wx?{query}"))
                    .body(axum::body::Body::from(body))
                    .unwrap();
                router().oneshot(request).await.unwrap().status()
            });
            prop_assert!(status.is_client_error() || status == 200, "{status}");
        }
    }
}
