//! WXBizMsgCrypt safe-mode message crypto, shared by official accounts, mini programs and
//! open-platform components (the `component_verify_ticket` push arrives this way).
//!
//! Layout, as in WeChat's official samples: the plaintext is `random(16) ‖ u32be(len) ‖ msg ‖
//! receive_id`, padded with PKCS#7 to 32-byte blocks (not AES's 16), encrypted with AES-256-CBC
//! whose IV is the first 16 bytes of the key, then base64. The envelope carries the base64 value
//! as `Encrypt`, and `msg_signature` (SHA-1 over token, timestamp, nonce and `Encrypt`) is the only
//! integrity check: CBC alone is malleable, so [`MsgCrypt::decrypt_message`] checks the signature
//! before it decrypts anything.
//!
//! Everything here takes untrusted input (the body of a request anyone can send), so no input
//! makes it panic, and no error message repeats a key, a token or a plaintext.

use std::fmt;

use aes::Aes256;
use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use quick_xml::events::Event;
use rand::Rng as _;
use serde::Serialize;

use crate::secret::Secret;
use crate::signature::{ct_eq, msg_signature, verify_msg_signature};

type Aes256CbcEnc = cbc::Encryptor<Aes256>;
type Aes256CbcDec = cbc::Decryptor<Aes256>;

/// Length of an `EncodingAESKey` as WeChat's console issues it.
const ENCODING_AES_KEY_LEN: usize = 43;
/// WeChat pads to 32-byte blocks, whatever AES's own block size.
const PAD_BLOCK: usize = 32;
const AES_BLOCK: usize = 16;
const RANDOM_LEN: usize = 16;
const HEADER_LEN: usize = RANDOM_LEN + 4;

/// WeChat's console generates keys whose last base64 digit has non-zero spare bits (the official
/// sample key ends in `G`), which a strict decoder rejects; the official SDKs ignore those bits.
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Why a message could not be decrypted, verified or parsed.
///
/// The variants are distinct so that an operator can tell a wrong key (padding, receive id) from
/// a wrong token (signature) from a broken sender (base64, envelope); none of the messages shows
/// the key, the token or any plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("invalid EncodingAESKey: {0}")]
    InvalidAesKey(&'static str),
    #[error("Encrypt is not valid base64")]
    InvalidBase64,
    #[error("ciphertext is empty or not a whole number of AES blocks")]
    InvalidBlockLength,
    #[error("invalid PKCS#7 padding after decryption (wrong EncodingAESKey?)")]
    InvalidPadding,
    #[error("message length field does not fit the decrypted data (wrong EncodingAESKey?)")]
    InvalidLengthField,
    #[error("receive id in the message is not this account's appid (wrong appid or EncodingAESKey?)")]
    ReceiveIdMismatch,
    #[error("msg_signature does not match (wrong token, or the message was altered)")]
    SignatureMismatch,
    #[error("malformed envelope: {0}")]
    MalformedEnvelope(String),
    #[error("envelope has no Encrypt value")]
    MissingEncrypt,
    #[error("decrypted message is not valid UTF-8")]
    InvalidUtf8,
}

impl CryptoError {
    /// Errors that another key could avoid; the rest are the same whatever the key.
    fn depends_on_key(&self) -> bool {
        matches!(self, Self::InvalidPadding | Self::InvalidLengthField | Self::ReceiveIdMismatch)
    }
}

/// The AES-256 key behind an `EncodingAESKey`. It is a credential: `Debug` shows `[redacted]`.
#[derive(Clone)]
pub struct AesKey {
    key: [u8; 32],
}

impl AesKey {
    /// Decodes the 43-character `EncodingAESKey` from the WeChat console (base64 without its
    /// final `=`).
    pub fn from_encoding_aes_key(encoding_aes_key: &str) -> Result<Self, CryptoError> {
        if encoding_aes_key.len() != ENCODING_AES_KEY_LEN {
            return Err(CryptoError::InvalidAesKey("must be 43 characters"));
        }
        let mut padded = String::with_capacity(ENCODING_AES_KEY_LEN + 1);
        padded.push_str(encoding_aes_key);
        padded.push('=');
        let bytes = KEY_ENGINE.decode(padded).map_err(|_| CryptoError::InvalidAesKey("not valid base64"))?;
        let key: [u8; 32] =
            bytes.try_into().map_err(|_| CryptoError::InvalidAesKey("does not decode to 32 bytes"))?;
        Ok(Self { key })
    }

    /// WeChat derives the IV from the key instead of sending one.
    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.key[..16]);
        iv
    }

    fn encrypt_blocks(&self, padded: &[u8]) -> Vec<u8> {
        Aes256CbcEnc::new(&self.key.into(), &self.iv().into()).encrypt_padded_vec_mut::<NoPadding>(padded)
    }

    /// Decrypts and takes the WeChat layout apart; `data` is the base64-decoded ciphertext.
    fn open(&self, mut data: Vec<u8>, receive_id: &str) -> Result<Decrypted, CryptoError> {
        let len = Aes256CbcDec::new(&self.key.into(), &self.iv().into())
            .decrypt_padded_mut::<NoPadding>(&mut data)
            .map_err(|_| CryptoError::InvalidBlockLength)?
            .len();
        data.truncate(len);

        let pad = usize::from(*data.last().ok_or(CryptoError::InvalidBlockLength)?);
        if pad == 0 || pad > PAD_BLOCK || pad > data.len() {
            return Err(CryptoError::InvalidPadding);
        }
        let content_len = data.len() - pad;
        if data[content_len..].iter().any(|&b| usize::from(b) != pad) {
            return Err(CryptoError::InvalidPadding);
        }
        data.truncate(content_len);

        let (random, rest) = data.split_first_chunk::<RANDOM_LEN>().ok_or(CryptoError::InvalidLengthField)?;
        let (len_field, rest) = rest.split_first_chunk::<4>().ok_or(CryptoError::InvalidLengthField)?;
        let random = *random;
        let msg_len =
            usize::try_from(u32::from_be_bytes(*len_field)).map_err(|_| CryptoError::InvalidLengthField)?;
        let found_id = rest.get(msg_len..).ok_or(CryptoError::InvalidLengthField)?;
        if !ct_eq(found_id, receive_id.as_bytes()) {
            return Err(CryptoError::ReceiveIdMismatch);
        }
        let msg_end = HEADER_LEN + msg_len;
        data.truncate(msg_end);
        data.drain(..HEADER_LEN);
        Ok(Decrypted { plaintext: data, receive_id: receive_id.to_owned(), random })
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A decrypted message. The plaintext can be a credential (a `component_verify_ticket` push), so
/// `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct Decrypted {
    pub plaintext: Vec<u8>,
    /// Always equal to the [`MsgCrypt`]'s receive id: anything else is an error.
    pub receive_id: String,
    /// The sender's 16 random bytes; only tests and diagnostics care.
    pub random: [u8; 16],
}

impl Decrypted {
    pub fn into_string(self) -> Result<String, CryptoError> {
        String::from_utf8(self.plaintext).map_err(|_| CryptoError::InvalidUtf8)
    }
}

impl fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decrypted")
            .field("plaintext", &format_args!("[{} bytes redacted]", self.plaintext.len()))
            .field("receive_id", &self.receive_id)
            .field("random", &hex::encode(self.random))
            .finish()
    }
}

/// Which envelope a body used, so that a reply can use the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnvelopeFormat {
    Xml,
    Json,
}

/// The fields of an encrypted envelope. Incoming pushes carry only `Encrypt` (the signature,
/// timestamp and nonce come in the query string); replies carry all four.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub encrypt: String,
    pub msg_signature: Option<String>,
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
    /// `None` for a bare `Encrypt` value.
    pub format: Option<EnvelopeFormat>,
}

/// Parses a request or reply body: an XML envelope (compat mode adds plaintext fields, which are
/// ignored), a JSON envelope (mini programs configured for JSON), or the bare `Encrypt` value.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope, CryptoError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body).trim_ascii();
    let envelope = match body.first() {
        None => return Err(CryptoError::MissingEncrypt),
        Some(b'<') => parse_xml(body)?,
        Some(b'{') => parse_json(body)?,
        Some(_) => parse_bare(body)?,
    };
    if envelope.encrypt.is_empty() {
        return Err(CryptoError::MissingEncrypt);
    }
    Ok(envelope)
}

/// The `Encrypt` value of a body, whatever its envelope.
pub fn extract_encrypt(body: &[u8]) -> Result<String, CryptoError> {
    parse_envelope(body).map(|e| e.encrypt)
}

fn malformed(reason: impl Into<String>) -> CryptoError {
    CryptoError::MalformedEnvelope(reason.into())
}

fn parse_bare(body: &[u8]) -> Result<Envelope, CryptoError> {
    if !body.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')) {
        return Err(malformed("body is neither an XML nor a JSON envelope nor a base64 value"));
    }
    // All ASCII, checked just above.
    let encrypt = String::from_utf8(body.to_vec()).map_err(|_| CryptoError::InvalidUtf8)?;
    Ok(Envelope { encrypt, msg_signature: None, timestamp: None, nonce: None, format: None })
}

fn parse_json(body: &[u8]) -> Result<Envelope, CryptoError> {
    // serde_json errors name a position, never the content.
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("invalid JSON at line {} column {}", e.line(), e.column())))?;
    let object = value.as_object().ok_or_else(|| malformed("JSON envelope is not an object"))?;
    let text = |name: &str, numbers_too: bool| -> Result<Option<String>, CryptoError> {
        match object.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(serde_json::Value::Number(n)) if numbers_too => Ok(Some(n.to_string())),
            Some(_) => Err(malformed(format!("{name} has the wrong JSON type"))),
        }
    };
    Ok(Envelope {
        encrypt: text("Encrypt", false)?.ok_or(CryptoError::MissingEncrypt)?,
        msg_signature: text("MsgSignature", false)?,
        timestamp: text("TimeStamp", true)?,
        nonce: text("Nonce", true)?,
        format: Some(EnvelopeFormat::Json),
    })
}

/// Envelope fields are the children of the root element; only these four matter.
#[derive(Clone, Copy, PartialEq, Eq)]
enum XmlField {
    Encrypt,
    MsgSignature,
    TimeStamp,
    Nonce,
}

impl XmlField {
    fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"Encrypt" => Some(Self::Encrypt),
            b"MsgSignature" => Some(Self::MsgSignature),
            b"TimeStamp" => Some(Self::TimeStamp),
            b"Nonce" => Some(Self::Nonce),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Encrypt => "Encrypt",
            Self::MsgSignature => "MsgSignature",
            Self::TimeStamp => "TimeStamp",
            Self::Nonce => "Nonce",
        }
    }
}

/// Walks the XML events instead of deserializing, so that depth costs no stack (quick-xml's
/// reader is iterative) and compat-mode bodies with any extra fields are accepted.
fn parse_xml(body: &[u8]) -> Result<Envelope, CryptoError> {
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut fields: [Option<String>; 4] = Default::default();
    let slot = |field: XmlField| field as usize;
    let mut depth = 0usize;
    let mut seen_root = false;
    let mut current: Option<(XmlField, String)> = None;
    // quick-xml errors can quote text from the body (an unknown entity); only the position is
    // reported.
    let xml_error = |reader: &quick_xml::Reader<&[u8]>| {
        malformed(format!("invalid XML near byte {}", reader.error_position()))
    };
    loop {
        let event = reader.read_event().map_err(|_| xml_error(&reader))?;
        match event {
            Event::Start(start) => {
                if current.is_some() {
                    return Err(malformed("envelope field holds an element"));
                }
                if depth == 0 {
                    if seen_root {
                        return Err(malformed("more than one root element"));
                    }
                    seen_root = true;
                } else if depth == 1
                    && let Some(field) = XmlField::from_name(start.name().as_ref())
                {
                    if fields[slot(field)].is_some() {
                        return Err(malformed(format!("duplicate <{}>", field.name())));
                    }
                    current = Some((field, String::new()));
                }
                depth += 1;
            }
            Event::End(_) => {
                depth = depth.checked_sub(1).ok_or_else(|| malformed("unbalanced end tag"))?;
                if let Some((field, value)) = current.take() {
                    fields[slot(field)] = Some(value.trim_ascii().to_owned());
                }
            }
            Event::Empty(empty) => {
                if current.is_some() {
                    return Err(malformed("envelope field holds an element"));
                }
                if depth == 0 {
                    if seen_root {
                        return Err(malformed("more than one root element"));
                    }
                    seen_root = true;
                } else if depth == 1
                    && let Some(field) = XmlField::from_name(empty.name().as_ref())
                {
                    if fields[slot(field)].is_some() {
                        return Err(malformed(format!("duplicate <{}>", field.name())));
                    }
                    fields[slot(field)] = Some(String::new());
                }
            }
            Event::Text(text) => {
                if let Some((_, value)) = current.as_mut() {
                    value.push_str(&text.unescape().map_err(|_| xml_error(&reader))?);
                }
            }
            Event::CData(cdata) => {
                if let Some((_, value)) = current.as_mut() {
                    let text = std::str::from_utf8(&cdata).map_err(|_| CryptoError::InvalidUtf8)?;
                    value.push_str(text);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !seen_root {
        return Err(malformed("no root element"));
    }
    if depth != 0 {
        return Err(malformed("unclosed element"));
    }
    let [encrypt, msg_signature, timestamp, nonce] = fields;
    Ok(Envelope {
        encrypt: encrypt.ok_or(CryptoError::MissingEncrypt)?,
        msg_signature,
        timestamp,
        nonce,
        format: Some(EnvelopeFormat::Xml),
    })
}

/// Wraps `text` in CDATA; a `]]>` inside is split across two sections so it cannot close the
/// first one early. Passive replies use it for every text field.
pub fn cdata(text: &str) -> String {
    format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonReply<'a> {
    encrypt: &'a str,
    msg_signature: &'a str,
    time_stamp: u64,
    nonce: &'a str,
}

/// 16 random alphanumeric bytes, like the official SDKs' random prefix.
pub fn fresh_random() -> [u8; 16] {
    let mut rng = rand::thread_rng();
    std::array::from_fn(|_| rng.sample(rand::distributions::Alphanumeric))
}

/// Encrypts, decrypts and signs the messages of one account (or component): its message token,
/// its `EncodingAESKey` and its appid as the receive id.
#[derive(Debug, Clone)]
pub struct MsgCrypt {
    token: Secret,
    key: AesKey,
    /// WeChat lets an account change its EncodingAESKey; messages encrypted just before the change
    /// still arrive with the old one.
    previous_key: Option<AesKey>,
    receive_id: String,
}

impl MsgCrypt {
    pub fn new(token: &str, encoding_aes_key: &str, receive_id: &str) -> Result<Self, CryptoError> {
        Ok(Self {
            token: Secret::from(token),
            key: AesKey::from_encoding_aes_key(encoding_aes_key)?,
            previous_key: None,
            receive_id: receive_id.to_owned(),
        })
    }

    /// Accepts messages encrypted with the key in use before the last rotation, as a fallback
    /// after the current key.
    pub fn with_previous_key(mut self, encoding_aes_key: &str) -> Result<Self, CryptoError> {
        self.previous_key = Some(AesKey::from_encoding_aes_key(encoding_aes_key)?);
        Ok(self)
    }

    pub fn receive_id(&self) -> &str {
        &self.receive_id
    }

    /// `msg_signature` of an `Encrypt` value under this account's token.
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        msg_signature(self.token.expose(), timestamp, nonce, encrypt)
    }

    /// Encrypts with the current key; `random` is the 16-byte prefix, a parameter so that the
    /// official examples can be reproduced exactly (use [`MsgCrypt::encrypt_random`] otherwise).
    ///
    /// # Panics
    /// If `plaintext` is 4 GiB or longer, which the format's `u32` length field cannot describe.
    pub fn encrypt(&self, plaintext: &[u8], random: [u8; 16]) -> String {
        let msg_len = u32::try_from(plaintext.len()).expect("WeChat messages are shorter than 4 GiB");
        let unpadded = HEADER_LEN + plaintext.len() + self.receive_id.len();
        let pad = PAD_BLOCK - unpadded % PAD_BLOCK;
        let mut buf = Vec::with_capacity(unpadded + pad);
        buf.extend_from_slice(&random);
        buf.extend_from_slice(&msg_len.to_be_bytes());
        buf.extend_from_slice(plaintext);
        buf.extend_from_slice(self.receive_id.as_bytes());
        // 1..=32, so it fits in a byte.
        buf.resize(unpadded + pad, pad as u8);
        STANDARD.encode(self.key.encrypt_blocks(&buf))
    }

    /// [`MsgCrypt::encrypt`] with a fresh random prefix.
    pub fn encrypt_random(&self, plaintext: &[u8]) -> String {
        self.encrypt(plaintext, fresh_random())
    }

    /// Decrypts an `Encrypt` value with the current key, then the previous one.
    ///
    /// This does not authenticate: call it only on a value whose `msg_signature` has been checked,
    /// or use [`MsgCrypt::decrypt_message`], which does both.
    pub fn decrypt_encrypt_field(&self, encrypt_b64: &str) -> Result<Decrypted, CryptoError> {
        let data = STANDARD.decode(encrypt_b64).map_err(|_| CryptoError::InvalidBase64)?;
        if data.is_empty() || data.len() % AES_BLOCK != 0 {
            return Err(CryptoError::InvalidBlockLength);
        }
        match (self.key.open(data.clone(), &self.receive_id), &self.previous_key) {
            (Err(err), Some(previous)) if err.depends_on_key() => {
                // Report the current key's failure: the previous key is only a fallback.
                previous.open(data, &self.receive_id).map_err(|_| err)
            }
            (result, _) => result,
        }
    }

    /// Handles a safe-mode push: takes `Encrypt` out of the body, checks `msg_signature` from the
    /// query string against it, decrypts, and returns the plaintext (XML or JSON, as configured).
    pub fn decrypt_message(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        body: &[u8],
    ) -> Result<String, CryptoError> {
        let encrypt = extract_encrypt(body)?;
        if !verify_msg_signature(self.token.expose(), timestamp, nonce, &encrypt, msg_signature) {
            return Err(CryptoError::SignatureMismatch);
        }
        self.decrypt_encrypt_field(&encrypt)?.into_string()
    }

    /// Encrypts and signs a passive reply in the official envelope layout.
    ///
    /// `timestamp` is a number because the JSON envelope carries it as one and the signature is
    /// over its decimal form.
    pub fn encrypt_reply(
        &self,
        plaintext: &[u8],
        timestamp: u64,
        nonce: &str,
        format: EnvelopeFormat,
        random: [u8; 16],
    ) -> String {
        let encrypt = self.encrypt(plaintext, random);
        let signature = self.signature(&timestamp.to_string(), nonce, &encrypt);
        match format {
            EnvelopeFormat::Xml => format!(
                "<xml><Encrypt>{}</Encrypt><MsgSignature>{}</MsgSignature><TimeStamp>{timestamp}</TimeStamp><Nonce>{}</Nonce></xml>",
                cdata(&encrypt),
                cdata(&signature),
                cdata(nonce),
            ),
            EnvelopeFormat::Json => serde_json::to_string(&JsonReply {
                encrypt: &encrypt,
                msg_signature: &signature,
                time_stamp: timestamp,
                nonce,
            })
            .expect("a struct of strings and a number always serializes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> Vec<Value> {
        let all: Value = serde_json::from_str(include_str!("../tests/vectors/msg_crypt.json")).unwrap();
        all["vectors"].as_array().unwrap().clone()
    }

    fn vector(id: &str) -> Value {
        vectors().into_iter().find(|v| v["id"] == id).unwrap_or_else(|| panic!("no vector {id}"))
    }

    fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key].as_str().unwrap_or_else(|| panic!("vector field {key} missing"))
    }

    fn crypt_for(v: &Value) -> MsgCrypt {
        MsgCrypt::new(s(v, "token"), s(v, "encoding_aes_key"), s(v, "appid")).unwrap()
    }

    fn random16(ascii: &str) -> [u8; 16] {
        ascii.as_bytes().try_into().unwrap()
    }

    const MP: &str = "official_mp_sample_decrypt";
    const MINI: &str = "official_miniprogram_push_doc_decrypt_json";
    const REPLY: &str = "official_miniprogram_push_doc_encrypt_reply_json";

    #[test]
    fn official_decrypt_vectors() {
        let mut checked = 0;
        for v in vectors().iter().filter(|v| v["kind"] == "decrypt") {
            let crypt = crypt_for(v);
            let d = crypt.decrypt_encrypt_field(s(v, "encrypt")).unwrap();
            assert_eq!(d.random, random16(s(v, "expected_random_ascii")), "{}", s(v, "id"));
            assert_eq!(d.plaintext.len() as u64, v["expected_msg_len"].as_u64().unwrap());
            assert_eq!(d.receive_id, s(v, "expected_receive_id"));
            assert_eq!(d.clone().into_string().unwrap(), s(v, "expected_plaintext"));
            checked += 1;
        }
        assert_eq!(checked, 2);
    }

    /// Tencent's own sample values (token `QDG6eK`), found in its WXBizMsgCrypt samples and
    /// docs: a compat XML body with extra fields, and an encrypted `echostr` whose signature
    /// covers the bare value.
    #[test]
    fn extra_official_sample_vectors() {
        let all: Value = serde_json::from_str(include_str!("../tests/vectors/extra_official.json")).unwrap();
        let list = all["vectors"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        for v in list {
            let crypt = MsgCrypt::new(s(v, "token"), s(v, "encoding_aes_key"), s(v, "receive_id")).unwrap();
            let (sig, ts, nonce) = (s(v, "msg_signature"), s(v, "timestamp"), s(v, "nonce"));
            let body = v["post_body_xml"].as_str().or(v["echostr"].as_str()).unwrap();
            assert_eq!(
                crypt.decrypt_message(sig, ts, nonce, body.as_bytes()).unwrap(),
                s(v, "expected_plaintext"),
                "{}",
                s(v, "id")
            );
            let encrypt = extract_encrypt(body.as_bytes()).unwrap();
            assert_eq!(crypt.signature(ts, nonce, &encrypt), sig);
            let other = MsgCrypt::new(s(v, "token"), s(v, "encoding_aes_key"), "wx5823bf96d3bd56c8").unwrap();
            assert_eq!(
                other.decrypt_message(sig, ts, nonce, body.as_bytes()),
                Err(CryptoError::ReceiveIdMismatch)
            );
        }
    }

    #[test]
    fn official_vectors_have_the_documented_padding() {
        for v in vectors().iter().filter(|v| v["kind"] == "decrypt") {
            let key = AesKey::from_encoding_aes_key(s(v, "encoding_aes_key")).unwrap();
            let mut data = STANDARD.decode(s(v, "encrypt")).unwrap();
            if let Some(n) = v["ciphertext_bytes"].as_u64() {
                assert_eq!(data.len() as u64, n);
            }
            Aes256CbcDec::new(&key.key.into(), &key.iv().into())
                .decrypt_padded_mut::<NoPadding>(&mut data)
                .unwrap();
            let pad = v["pkcs7_pad_len"].as_u64().unwrap() as usize;
            assert!(data[data.len() - pad..].iter().all(|&b| usize::from(b) == pad), "{}", s(v, "id"));
        }
    }

    #[test]
    fn official_decrypt_through_every_envelope() {
        let v = vector(MP);
        let crypt = crypt_for(&v);
        let (sig, ts, nonce) = (s(&v, "msg_signature"), s(&v, "timestamp"), s(&v, "nonce"));
        let want = s(&v, "expected_plaintext");
        let xml = s(&v, "post_body_xml");
        assert_eq!(crypt.decrypt_message(sig, ts, nonce, xml.as_bytes()).unwrap(), want);
        let bare = format!("{}\n", s(&v, "encrypt"));
        assert_eq!(crypt.decrypt_message(sig, ts, nonce, bare.as_bytes()).unwrap(), want);
        let json = serde_json::json!({"ToUserName": "gh_10f6c3c3ac5a", "Encrypt": s(&v, "encrypt")});
        assert_eq!(crypt.decrypt_message(sig, ts, nonce, json.to_string().as_bytes()).unwrap(), want);

        let v = vector(MINI);
        let crypt = crypt_for(&v);
        let (sig, ts, nonce) = (s(&v, "msg_signature"), s(&v, "timestamp"), s(&v, "nonce"));
        let body = serde_json::to_vec(&v["post_body_json"]).unwrap();
        assert_eq!(crypt.decrypt_message(sig, ts, nonce, &body).unwrap(), s(&v, "expected_plaintext"));
        // The URL `signature` of the same request is not the message signature.
        assert_eq!(
            crypt.decrypt_message(s(&v, "url_signature"), ts, nonce, &body),
            Err(CryptoError::SignatureMismatch)
        );
    }

    #[test]
    fn official_encrypt_reply_vector() {
        let v = vector(REPLY);
        let crypt = crypt_for(&v);
        let random = random16(s(&v, "random_ascii"));
        let plaintext = s(&v, "plaintext").as_bytes();
        assert_eq!(crypt.encrypt(plaintext, random), s(&v, "expected_encrypt"));
        let ts: u64 = s(&v, "timestamp").parse().unwrap();
        let nonce = s(&v, "nonce");

        let json = crypt.encrypt_reply(plaintext, ts, nonce, EnvelopeFormat::Json, random);
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), v["expected_reply_json"]);
        let want_json = format!(
            r#"{{"Encrypt":"{}","MsgSignature":"{}","TimeStamp":{ts},"Nonce":"{nonce}"}}"#,
            s(&v, "expected_encrypt"),
            s(&v, "expected_msg_signature")
        );
        assert_eq!(json, want_json);

        let xml = crypt.encrypt_reply(plaintext, ts, nonce, EnvelopeFormat::Xml, random);
        let want_xml = s(&v, "reply_xml_template")
            .replace("${msg_encrypt}", s(&v, "expected_encrypt"))
            .replace("${msg_signature}", s(&v, "expected_msg_signature"))
            .replace("${timestamp}", &ts.to_string())
            .replace("${nonce}", nonce);
        assert_eq!(xml, want_xml);

        // A reply is itself a valid envelope that the account's own MsgCrypt can open.
        for body in [&json, &xml] {
            let env = parse_envelope(body.as_bytes()).unwrap();
            let sig = env.msg_signature.unwrap();
            let (ets, enonce) = (env.timestamp.unwrap(), env.nonce.unwrap());
            assert_eq!((ets.as_str(), enonce.as_str()), (s(&v, "timestamp"), nonce));
            let back = crypt.decrypt_message(&sig, &ets, &enonce, body.as_bytes()).unwrap();
            assert_eq!(back.as_bytes(), plaintext);
        }
        assert_eq!(parse_envelope(json.as_bytes()).unwrap().format, Some(EnvelopeFormat::Json));
        assert_eq!(parse_envelope(xml.as_bytes()).unwrap().format, Some(EnvelopeFormat::Xml));
    }

    #[test]
    fn aes_key_validation() {
        let ok = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
        assert!(AesKey::from_encoding_aes_key(ok).is_ok());
        let short = &ok[..42];
        let long = format!("{ok}A");
        let bad_char = format!("{}-", &ok[..42]);
        let padded = format!("{}=", &ok[..42]);
        for (key, reason) in [
            (short, "must be 43 characters"),
            (long.as_str(), "must be 43 characters"),
            ("", "must be 43 characters"),
            (bad_char.as_str(), "not valid base64"),
            (padded.as_str(), "does not decode to 32 bytes"),
        ] {
            let err = AesKey::from_encoding_aes_key(key).unwrap_err();
            assert_eq!(err, CryptoError::InvalidAesKey(reason), "{key}");
            if !key.is_empty() {
                assert!(!err.to_string().contains(key), "error echoes the key: {err}");
            }
        }
        // 43 characters but multi-byte: never reaches a byte slice.
        let wide = "é".repeat(21) + "A";
        assert!(AesKey::from_encoding_aes_key(&wide).is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let v = vector(MP);
        let crypt = crypt_for(&v);
        let shown = format!("{crypt:?}");
        assert!(!shown.contains("spamtest"), "{shown}");
        assert!(!shown.contains("abcdefghijk"), "{shown}");
        assert!(shown.contains("wx2c2769f8efd9abc2"), "{shown}");
        let key = AesKey::from_encoding_aes_key(s(&v, "encoding_aes_key")).unwrap();
        assert_eq!(format!("{key:?}"), "[redacted]");
        let d = crypt.decrypt_encrypt_field(s(&v, "encrypt")).unwrap();
        let shown = format!("{d:?}");
        assert!(!shown.contains("abcdteT"), "{shown}");
        assert!(shown.contains("280 bytes"), "{shown}");
    }

    /// A MsgCrypt and helpers to forge ciphertexts with a chosen (bad) layout.
    struct Forge {
        crypt: MsgCrypt,
        key: AesKey,
    }

    impl Forge {
        fn new() -> Self {
            let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
            Self {
                crypt: MsgCrypt::new("tok", key, "wxappid").unwrap(),
                key: AesKey::from_encoding_aes_key(key).unwrap(),
            }
        }

        /// Encrypts `plain` as is (it must be block-aligned).
        fn seal(&self, plain: &[u8]) -> String {
            STANDARD.encode(self.key.encrypt_blocks(plain))
        }

        fn layout(msg_len: u32, msg: &[u8], id: &[u8]) -> Vec<u8> {
            let mut v = vec![b'r'; 16];
            v.extend_from_slice(&msg_len.to_be_bytes());
            v.extend_from_slice(msg);
            v.extend_from_slice(id);
            v
        }

        fn pad(mut v: Vec<u8>) -> Vec<u8> {
            let pad = 32 - v.len() % 32;
            v.resize(v.len() + pad, pad as u8);
            v
        }
    }

    #[test]
    fn every_decrypt_error_is_reported_distinctly() {
        let f = Forge::new();
        let c = &f.crypt;
        let good = Forge::pad(Forge::layout(5, b"hello", b"wxappid"));
        assert_eq!(c.decrypt_encrypt_field(&f.seal(&good)).unwrap().plaintext, b"hello");

        assert_eq!(c.decrypt_encrypt_field("not base64!"), Err(CryptoError::InvalidBase64));
        assert_eq!(c.decrypt_encrypt_field(""), Err(CryptoError::InvalidBlockLength));
        assert_eq!(
            c.decrypt_encrypt_field(&STANDARD.encode([0u8; 15])),
            Err(CryptoError::InvalidBlockLength)
        );
        assert_eq!(
            c.decrypt_encrypt_field(&STANDARD.encode([0u8; 33])),
            Err(CryptoError::InvalidBlockLength)
        );

        let mut zero_pad = good.clone();
        *zero_pad.last_mut().unwrap() = 0;
        assert_eq!(c.decrypt_encrypt_field(&f.seal(&zero_pad)), Err(CryptoError::InvalidPadding));
        let mut big_pad = good.clone();
        *big_pad.last_mut().unwrap() = 33;
        assert_eq!(c.decrypt_encrypt_field(&f.seal(&big_pad)), Err(CryptoError::InvalidPadding));
        let mut uneven_pad = good;
        let n = uneven_pad.len();
        uneven_pad[n - 2] ^= 1;
        assert_eq!(c.decrypt_encrypt_field(&f.seal(&uneven_pad)), Err(CryptoError::InvalidPadding));
        // A 16-byte ciphertext whose pad claims 32 bytes.
        let mut short = vec![b'r'; 16];
        short[15] = 32;
        assert_eq!(c.decrypt_encrypt_field(&f.seal(&short)), Err(CryptoError::InvalidPadding));

        // Too short for the header once the padding is gone.
        let tiny = Forge::pad(vec![b'r'; 10]);
        assert_eq!(c.decrypt_encrypt_field(&f.seal(&tiny)), Err(CryptoError::InvalidLengthField));
        let huge_len = Forge::pad(Forge::layout(u32::MAX, b"hello", b"wxappid"));
        assert_eq!(c.decrypt_encrypt_field(&f.seal(&huge_len)), Err(CryptoError::InvalidLengthField));
        let off_by_one = Forge::pad(Forge::layout(13, b"hello", b"wxappid"));
        assert_eq!(c.decrypt_encrypt_field(&f.seal(&off_by_one)), Err(CryptoError::InvalidLengthField));

        let other_id = Forge::pad(Forge::layout(5, b"hello", b"wxother"));
        assert_eq!(c.decrypt_encrypt_field(&f.seal(&other_id)), Err(CryptoError::ReceiveIdMismatch));
        let short_len = Forge::pad(Forge::layout(4, b"hello", b"wxappid"));
        assert_eq!(c.decrypt_encrypt_field(&f.seal(&short_len)), Err(CryptoError::ReceiveIdMismatch));

        let not_utf8 = Forge::pad(Forge::layout(2, &[0xff, 0xfe], b"wxappid"));
        let body = f.seal(&not_utf8);
        let sig = c.signature("1", "n", &body);
        assert_eq!(c.decrypt_message(&sig, "1", "n", body.as_bytes()), Err(CryptoError::InvalidUtf8));
        assert_eq!(c.decrypt_encrypt_field(&body).unwrap().plaintext, [0xff, 0xfe]);
    }

    #[test]
    fn wrong_key_or_appid_is_an_error() {
        let v = vector(MP);
        let other_key =
            MsgCrypt::new("spamtest", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "wx2c2769f8efd9abc2")
                .unwrap();
        let err = other_key.decrypt_encrypt_field(s(&v, "encrypt")).unwrap_err();
        assert!(err.depends_on_key(), "{err:?}");
        let other_app = MsgCrypt::new("spamtest", s(&v, "encoding_aes_key"), "wx0000000000000000").unwrap();
        assert_eq!(other_app.decrypt_encrypt_field(s(&v, "encrypt")), Err(CryptoError::ReceiveIdMismatch));
    }

    #[test]
    fn previous_key_is_a_fallback() {
        let old = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
        let new = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let before = MsgCrypt::new("tok", old, "wxid").unwrap();
        let after = MsgCrypt::new("tok", new, "wxid").unwrap();
        let rotated = MsgCrypt::new("tok", new, "wxid").unwrap().with_previous_key(old).unwrap();
        let from_old = before.encrypt(b"sent before the rotation", [7; 16]);
        let from_new = after.encrypt(b"sent after", [8; 16]);

        assert!(after.decrypt_encrypt_field(&from_old).is_err());
        assert_eq!(rotated.decrypt_encrypt_field(&from_old).unwrap().plaintext, b"sent before the rotation");
        assert_eq!(rotated.decrypt_encrypt_field(&from_new).unwrap().plaintext, b"sent after");
        // Replies always use the current key.
        let reply = rotated.encrypt(b"reply", [9; 16]);
        assert!(after.decrypt_encrypt_field(&reply).is_ok());
        assert!(before.decrypt_encrypt_field(&reply).is_err());
        // Neither key: the current key's error is reported.
        let third = MsgCrypt::new("tok", "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", "wxid").unwrap();
        let from_third = third.encrypt(b"x", [1; 16]);
        assert_eq!(rotated.decrypt_encrypt_field(&from_third), after.decrypt_encrypt_field(&from_third));
        assert!(rotated.decrypt_encrypt_field(&from_third).is_err());
        assert!(MsgCrypt::new("tok", new, "wxid").unwrap().with_previous_key("short").is_err());
    }

    #[test]
    fn padding_spans_one_to_thirty_two_bytes() {
        let crypt = MsgCrypt::new("tok", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "wxid").unwrap();
        // header 20 + id 4 = 24: a 8-byte message fills the block exactly, so a whole block of 32
        // is added.
        for (len, want_bytes) in [(0, 32), (7, 32), (8, 64), (9, 64), (40, 96)] {
            let msg = vec![b'm'; len];
            let enc = crypt.encrypt(&msg, [0; 16]);
            assert_eq!(STANDARD.decode(&enc).unwrap().len(), want_bytes, "len {len}");
            assert_eq!(crypt.decrypt_encrypt_field(&enc).unwrap().plaintext, msg);
        }
    }

    #[test]
    fn signature_is_checked_before_decrypting() {
        let v = vector(MINI);
        let crypt = crypt_for(&v);
        let body = serde_json::to_vec(&v["post_body_json"]).unwrap();
        let (sig, ts, nonce) = (s(&v, "msg_signature"), s(&v, "timestamp"), s(&v, "nonce"));
        assert_eq!(
            crypt.decrypt_message(sig, "1714112446", nonce, &body),
            Err(CryptoError::SignatureMismatch)
        );
        assert_eq!(crypt.decrypt_message(sig, ts, "0", &body), Err(CryptoError::SignatureMismatch));
        assert_eq!(crypt.decrypt_message("", ts, nonce, &body), Err(CryptoError::SignatureMismatch));
        let wrong_token = MsgCrypt::new("AAAAB", s(&v, "encoding_aes_key"), s(&v, "appid")).unwrap();
        assert_eq!(wrong_token.decrypt_message(sig, ts, nonce, &body), Err(CryptoError::SignatureMismatch));
        // A signed but undecryptable value gets past the signature and fails on the crypto.
        let garbage = STANDARD.encode([1u8; 32]);
        let garbage_sig = crypt.signature(ts, nonce, &garbage);
        let err = crypt.decrypt_message(&garbage_sig, ts, nonce, garbage.as_bytes()).unwrap_err();
        assert!(err.depends_on_key(), "{err:?}");
    }

    #[test]
    fn envelope_parsing() {
        let bare = |e: &str| Envelope {
            encrypt: e.into(),
            msg_signature: None,
            timestamp: None,
            nonce: None,
            format: None,
        };
        assert_eq!(parse_envelope(b"  abc+/=\r\n").unwrap(), bare("abc+/="));
        assert_eq!(parse_envelope(b"\xEF\xBB\xBFabc").unwrap(), bare("abc"));

        let xml = b"<?xml version=\"1.0\"?>\n<!-- c --><xml>\n  <ToUserName><![CDATA[gh]]></ToUserName>\n  <Encrypt>\n    <![CDATA[AB]]>CD&#43;\n  </Encrypt>\n  <Other><Encrypt>nested, ignored</Encrypt></Other>\n</xml>\n";
        let env = parse_envelope(xml).unwrap();
        assert_eq!(env.encrypt, "ABCD+");
        assert_eq!(env.format, Some(EnvelopeFormat::Xml));

        let json = br#"{"ToUserName":"gh","Encrypt":"AB","MsgSignature":"s","TimeStamp":12,"Nonce":"n"}"#;
        let env = parse_envelope(json).unwrap();
        assert_eq!(
            env,
            Envelope {
                encrypt: "AB".into(),
                msg_signature: Some("s".into()),
                timestamp: Some("12".into()),
                nonce: Some("n".into()),
                format: Some(EnvelopeFormat::Json),
            }
        );

        let missing: [&[u8]; 7] = [
            b"",
            b" \n ",
            b"<xml><ToUserName>gh</ToUserName></xml>",
            b"<xml><Encrypt/></xml>",
            b"<xml><Encrypt><![CDATA[]]></Encrypt></xml>",
            br#"{"ToUserName":"gh"}"#,
            br#"{"Encrypt":""}"#,
        ];
        for body in missing {
            assert_eq!(
                parse_envelope(body),
                Err(CryptoError::MissingEncrypt),
                "{}",
                String::from_utf8_lossy(body)
            );
        }

        let malformed: [&[u8]; 12] = [
            b"<xml><Encrypt>AB</Encrypt>",
            b"<xml><Encrypt>AB</Encrypted></xml>",
            b"<xml><Encrypt>A</Encrypt><Encrypt>B</Encrypt></xml>",
            b"<xml><Encrypt><b>AB</b></Encrypt></xml>",
            b"<xml><Encrypt>&bogus;</Encrypt></xml>",
            b"<xml></xml><xml></xml>",
            b"<!-- only a comment -->",
            b"{\"Encrypt\":1}",
            b"[\"Encrypt\"]",
            b"{\"Encrypt\":\"AB\"",
            b"hello world",
            b"\xff\xfe",
        ];
        for body in malformed {
            let err = parse_envelope(body).unwrap_err();
            assert!(
                matches!(err, CryptoError::MalformedEnvelope(_)),
                "{}: {err:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn envelope_errors_do_not_quote_the_body() {
        let secret_bits = "TOPSECRETPLAINTEXT";
        for body in [
            format!("<xml><Content>&{secret_bits};</Content></xml>"),
            format!("<xml><Encrypt>&{secret_bits};</Encrypt></xml>"),
            format!("{{\"Content\":\"{secret_bits}\", nope}}"),
            format!("<xml><{secret_bits}></xml>"),
        ] {
            let err = parse_envelope(body.as_bytes()).unwrap_err();
            assert!(!err.to_string().contains(secret_bits), "{err}");
        }
    }

    #[test]
    fn reply_nonce_cannot_break_out_of_cdata() {
        let crypt = MsgCrypt::new("tok", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "wxid").unwrap();
        let nonce = "a]]></Nonce><Encrypt>x</Encrypt><Nonce><![CDATA[b";
        let xml = crypt.encrypt_reply(b"hi", 1, nonce, EnvelopeFormat::Xml, [0; 16]);
        let env = parse_envelope(xml.as_bytes()).unwrap();
        assert_eq!(env.nonce.as_deref(), Some(nonce));
        let sig = env.msg_signature.unwrap();
        assert_eq!(crypt.decrypt_message(&sig, "1", nonce, xml.as_bytes()).unwrap(), "hi");
        let json = crypt.encrypt_reply(b"hi", 1, "\"}", EnvelopeFormat::Json, [0; 16]);
        assert_eq!(parse_envelope(json.as_bytes()).unwrap().nonce.as_deref(), Some("\"}"));
    }

    #[test]
    fn random_prefix_is_fresh_and_alphanumeric() {
        let a = fresh_random();
        let b = fresh_random();
        assert_ne!(a, b);
        assert!(a.iter().all(u8::is_ascii_alphanumeric));
        let crypt = MsgCrypt::new("tok", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "wxid").unwrap();
        assert_ne!(crypt.encrypt_random(b"same"), crypt.encrypt_random(b"same"));
    }
}
