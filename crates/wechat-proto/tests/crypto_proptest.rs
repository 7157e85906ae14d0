//! Properties of the message crypto over inputs no example list covers: round trips for any
//! message, receive id and key, and no panic on anything a sender can put in a request.

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockEncryptMut, KeyIvInit};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use wechat_proto::crypto::{CryptoError, EnvelopeFormat, MsgCrypt, parse_envelope};
use wechat_proto::signature::msg_signature;

fn aes_key() -> impl Strategy<Value = String> {
    "[A-Za-z0-9+/]{43}"
}

/// Printable ASCII without spaces: what WeChat's nonces and timestamps look like, plus the
/// characters that need escaping in XML and JSON.
fn nonce() -> impl Strategy<Value = String> {
    "[!-~]{0,24}"
}

fn xmlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("<xml>".to_owned()),
        Just("</xml>".to_owned()),
        Just("<Encrypt>".to_owned()),
        Just("</Encrypt>".to_owned()),
        Just("<Encrypt/>".to_owned()),
        Just("<![CDATA[".to_owned()),
        Just("]]>".to_owned()),
        Just("<MsgSignature>".to_owned()),
        Just("</MsgSignature>".to_owned()),
        Just("<?xml version=\"1.0\"?>".to_owned()),
        Just("<!DOCTYPE xml [<!ENTITY a \"b\">]>".to_owned()),
        Just("<!--".to_owned()),
        Just("-->".to_owned()),
        Just("&amp;".to_owned()),
        Just("&a;".to_owned()),
        Just("&#x".to_owned()),
        Just("&#".to_owned()),
        "[<>/=\"'&;#!?\\[\\] ]".prop_map(|s: String| s),
        "[A-Za-z0-9+/=]{0,12}".prop_map(|s: String| s),
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

fn jsonish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("\"Encrypt\"".to_owned()),
        Just("\"TimeStamp\"".to_owned()),
        Just(":".to_owned()),
        Just(",".to_owned()),
        Just("null".to_owned()),
        Just("\"\\u00".to_owned()),
        "-?[0-9]{1,25}(\\.[0-9]+)?(e[0-9]+)?".prop_map(|s: String| s),
        "\"[A-Za-z0-9+/=]{0,12}\"".prop_map(|s: String| s),
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

/// Encrypts `plain` (block-aligned) with the raw key, bypassing the layout, so that the parsing
/// after decryption sees arbitrary bytes. `encoding_aes_key` must be canonical base64 (all `A`s).
fn seal_raw(encoding_aes_key: &str, plain: &[u8]) -> String {
    let key: [u8; 32] = STANDARD.decode(format!("{encoding_aes_key}=")).unwrap().try_into().unwrap();
    let iv: [u8; 16] = key[..16].try_into().unwrap();
    let enc = cbc::Encryptor::<aes::Aes256>::new(&key.into(), &iv.into());
    STANDARD.encode(enc.encrypt_padded_vec_mut::<NoPadding>(plain))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn encrypt_then_decrypt_round_trips(
        key in aes_key(),
        receive_id in ".{0,40}",
        msg in prop::collection::vec(any::<u8>(), 0..2048),
        random in any::<[u8; 16]>(),
    ) {
        let crypt = MsgCrypt::new("token", &key, &receive_id).unwrap();
        let enc = crypt.encrypt(&msg, random);
        let raw = STANDARD.decode(&enc).unwrap();
        prop_assert_eq!(raw.len() % 32, 0);
        prop_assert!(raw.len() > 20 + msg.len() + receive_id.len());
        prop_assert!(raw.len() <= 20 + msg.len() + receive_id.len() + 32);
        let d = crypt.decrypt_encrypt_field(&enc).unwrap();
        prop_assert_eq!(d.plaintext, msg);
        prop_assert_eq!(d.receive_id, receive_id);
        prop_assert_eq!(d.random, random);
    }

    #[test]
    fn replies_open_with_their_own_signature(
        key in aes_key(),
        token in "[!-~]{1,32}",
        msg in any::<String>(),
        timestamp in any::<u64>(),
        nonce in nonce(),
        random in any::<[u8; 16]>(),
        json in any::<bool>(),
    ) {
        let crypt = MsgCrypt::new(&token, &key, "wx0123456789abcdef").unwrap();
        let format = if json { EnvelopeFormat::Json } else { EnvelopeFormat::Xml };
        let body = crypt.encrypt_reply(msg.as_bytes(), timestamp, &nonce, format, random);
        let env = parse_envelope(body.as_bytes()).unwrap();
        prop_assert_eq!(env.format, Some(format));
        let ts = timestamp.to_string();
        prop_assert_eq!(env.timestamp.as_deref(), Some(ts.as_str()));
        prop_assert_eq!(env.nonce.as_deref(), Some(nonce.as_str()));
        let sig = env.msg_signature.unwrap();
        prop_assert_eq!(&sig, &msg_signature(&token, &ts, &nonce, &env.encrypt));
        prop_assert_eq!(crypt.decrypt_message(&sig, &ts, &nonce, body.as_bytes()).unwrap(), msg);
    }

    #[test]
    fn previous_key_still_decrypts(
        old in aes_key(),
        new in aes_key(),
        msg in prop::collection::vec(any::<u8>(), 0..512),
        random in any::<[u8; 16]>(),
    ) {
        let before = MsgCrypt::new("t", &old, "wxid").unwrap();
        let rotated = MsgCrypt::new("t", &new, "wxid").unwrap().with_previous_key(&old).unwrap();
        let enc = before.encrypt(&msg, random);
        prop_assert_eq!(rotated.decrypt_encrypt_field(&enc).unwrap().plaintext, msg.as_slice());
        let enc_new = rotated.encrypt(&msg, random);
        prop_assert_eq!(rotated.decrypt_encrypt_field(&enc_new).unwrap().plaintext, msg);
    }

    #[test]
    fn tampered_ciphertext_is_an_error(
        key in aes_key(),
        msg in prop::collection::vec(any::<u8>(), 0..300),
        random in any::<[u8; 16]>(),
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let crypt = MsgCrypt::new("token", &key, "wxid").unwrap();
        let enc = crypt.encrypt(&msg, random);
        let mut raw = STANDARD.decode(&enc).unwrap();
        let i = position.index(raw.len());
        raw[i] ^= 1 << bit;
        let tampered = STANDARD.encode(&raw);
        // The signature covers the ciphertext: a message signed before tampering is refused.
        let sig = crypt.signature("1", "n", &enc);
        prop_assert_eq!(
            crypt.decrypt_message(&sig, "1", "n", tampered.as_bytes()),
            Err(CryptoError::SignatureMismatch)
        );
        // Without the signature CBC is malleable, but a flip never yields the original message.
        if let Ok(d) = crypt.decrypt_encrypt_field(&tampered) {
            prop_assert_ne!(d.plaintext, msg);
        }
        // Cutting blocks off is an error too.
        raw.truncate(i - i % 16);
        prop_assert!(crypt.decrypt_encrypt_field(&STANDARD.encode(&raw)).is_err());
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..1024)) {
        let crypt = MsgCrypt::new("t", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "wxid").unwrap();
        if let Ok(env) = parse_envelope(&body) {
            prop_assert!(!env.encrypt.is_empty());
        }
        prop_assert!(crypt.decrypt_message("sig", "1", "n", &body).is_err());
    }

    #[test]
    fn arbitrary_base64_never_panics(raw in prop::collection::vec(any::<u8>(), 0..600), aligned in any::<bool>()) {
        let crypt = MsgCrypt::new("t", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "wxid")
            .unwrap()
            .with_previous_key("BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB")
            .unwrap();
        let mut raw = raw;
        if aligned {
            raw.truncate(raw.len() - raw.len() % 16);
        }
        let enc = STANDARD.encode(&raw);
        let _ = crypt.decrypt_encrypt_field(&enc);
        let sig = crypt.signature("1", "n", &enc);
        // Signed, so decryption is really attempted; random bytes are no valid message.
        let res = crypt.decrypt_message(&sig, "1", "n", enc.as_bytes());
        prop_assert!(res.is_err(), "{res:?}");
    }

    #[test]
    fn arbitrary_decrypted_layouts_never_panic(
        plain in prop::collection::vec(any::<u8>(), 1..8).prop_flat_map(|blocks| {
            prop::collection::vec(any::<u8>(), blocks.len() * 16)
        }),
        tail in 0u8..=40,
    ) {
        let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let crypt = MsgCrypt::new("t", key, "wxid").unwrap();
        let mut plain = plain;
        // Steer the last byte into and around the valid padding range.
        if let Some(last) = plain.last_mut() {
            *last = tail;
        }
        let enc = seal_raw(key, &plain);
        match crypt.decrypt_encrypt_field(&enc) {
            Ok(d) => prop_assert_eq!(d.receive_id, "wxid"),
            Err(e) => prop_assert!(!matches!(e, CryptoError::InvalidBase64 | CryptoError::InvalidBlockLength)),
        }
    }

    #[test]
    fn xmlish_bodies_never_panic(body in xmlish()) {
        let crypt = MsgCrypt::new("t", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "wxid").unwrap();
        if let Ok(env) = parse_envelope(body.as_bytes()) {
            prop_assert!(!env.encrypt.is_empty());
            let sig = crypt.signature("1", "n", &env.encrypt);
            let _ = crypt.decrypt_message(&sig, "1", "n", body.as_bytes());
        }
    }

    #[test]
    fn jsonish_bodies_never_panic(body in jsonish()) {
        let crypt = MsgCrypt::new("t", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "wxid").unwrap();
        if let Ok(env) = parse_envelope(body.as_bytes()) {
            prop_assert!(!env.encrypt.is_empty());
            let sig = crypt.signature("1", "n", &env.encrypt);
            let _ = crypt.decrypt_message(&sig, "1", "n", body.as_bytes());
        }
    }

    #[test]
    fn any_string_is_accepted_or_refused_as_a_key(key in any::<String>(), valid in aes_key()) {
        let _ = MsgCrypt::new("t", &key, "wxid");
        prop_assert!(MsgCrypt::new("t", &valid, "wxid").is_ok());
    }
}

#[test]
fn nested_xml_is_not_a_stack_hazard() {
    let depth = 100_000;
    let body = format!("<xml>{}{}<Encrypt>AB</Encrypt></xml>", "<a>".repeat(depth), "</a>".repeat(depth));
    assert_eq!(parse_envelope(body.as_bytes()).unwrap().encrypt, "AB");
    let unclosed = "<a>".repeat(depth);
    assert!(parse_envelope(unclosed.as_bytes()).is_err());
    let json = "[".repeat(depth);
    assert!(parse_envelope(format!("{{\"x\":{json}").as_bytes()).is_err());
}
