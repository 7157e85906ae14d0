//! Everything a stranger can send to a callback URL goes through envelope parsing and
//! `decrypt_message`; none of it may panic.
//!
//! Random bytes never get past the AES padding check, so half of the inputs are instead encrypted
//! as raw blocks with the test key first: that reaches the length-field and receive-id parsing
//! with arbitrary decrypted bytes.

#![no_main]

use std::sync::OnceLock;

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockEncryptMut, KeyIvInit};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use wechat_proto::crypto::{MsgCrypt, parse_envelope};

/// All `A`s decodes to 32 zero bytes, so the raw key is known without the crate's internals.
const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const PREVIOUS_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

fn crypt() -> &'static MsgCrypt {
    static CRYPT: OnceLock<MsgCrypt> = OnceLock::new();
    CRYPT
        .get_or_init(|| MsgCrypt::new("token", KEY, "wxid").unwrap().with_previous_key(PREVIOUS_KEY).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let crypt = crypt();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // The body as it arrives: an unsigned attempt, then one signed so decryption runs.
        let _ = crypt.decrypt_message("0000", "1", "n", rest);
        if let Ok(envelope) = parse_envelope(rest) {
            assert!(!envelope.encrypt.is_empty());
            let signature = crypt.signature("1", "n", &envelope.encrypt);
            let _ = crypt.decrypt_message(&signature, "1", "n", rest);
        }
    } else {
        // Arbitrary plaintext blocks behind valid AES.
        let len = rest.len() - rest.len() % 16;
        if len == 0 {
            return;
        }
        let iv = [0u8; 16];
        let ciphertext = cbc::Encryptor::<aes::Aes256>::new(&[0u8; 32].into(), &iv.into())
            .encrypt_padded_vec_mut::<NoPadding>(&rest[..len]);
        let encrypt = STANDARD.encode(ciphertext);
        if let Ok(decrypted) = crypt.decrypt_encrypt_field(&encrypt) {
            assert_eq!(decrypted.receive_id, "wxid");
            assert!(decrypted.plaintext.len() + 20 + 4 <= len);
        }
    }
});
