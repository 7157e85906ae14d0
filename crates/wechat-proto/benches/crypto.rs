//! Cost of the message crypto on the callback path: every component push (a verify ticket every
//! ten minutes, per component) and every passive reply goes through these.

use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use wechat_proto::crypto::{EnvelopeFormat, MsgCrypt};

const TOKEN: &str = "AAAAA";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APPID: &str = "wxba5fad812f8e6fb9";
const TIMESTAMP: u64 = 1714112445;
const NONCE: &str = "415670741";

/// A 1 KiB XML message, the size of a typical push.
fn message() -> String {
    let mut msg = String::from("<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName><Content><![CDATA[");
    let tail = "]]></Content></xml>";
    while msg.len() + tail.len() < 1024 {
        msg.push('x');
    }
    msg.push_str(tail);
    assert_eq!(msg.len(), 1024);
    msg
}

fn bench_crypto(c: &mut Criterion) {
    let crypt = MsgCrypt::new(TOKEN, KEY, APPID).unwrap();
    let msg = message();
    let random = *b"a8eedb185eb2fecf";
    let mut group = c.benchmark_group("msg_crypt_1KiB");
    group.throughput(Throughput::Bytes(msg.len() as u64));

    for format in [EnvelopeFormat::Xml, EnvelopeFormat::Json] {
        let name = format!("{format:?}").to_lowercase();
        let body = crypt.encrypt_reply(msg.as_bytes(), TIMESTAMP, NONCE, format, random);
        let env = wechat_proto::crypto::parse_envelope(body.as_bytes()).unwrap();
        let sig = env.msg_signature.unwrap();
        let ts = TIMESTAMP.to_string();
        assert_eq!(crypt.decrypt_message(&sig, &ts, NONCE, body.as_bytes()).unwrap(), msg);

        group.bench_with_input(BenchmarkId::new("decrypt_message", &name), &body, |b, body| {
            b.iter(|| {
                crypt.decrypt_message(black_box(&sig), &ts, NONCE, black_box(body.as_bytes())).unwrap()
            });
        });
        group.bench_with_input(BenchmarkId::new("encrypt_reply", &name), &format, |b, &format| {
            b.iter(|| crypt.encrypt_reply(black_box(msg.as_bytes()), TIMESTAMP, NONCE, format, random));
        });
    }
    group.finish();
}

criterion_group!(benches, bench_crypto);
criterion_main!(benches);
