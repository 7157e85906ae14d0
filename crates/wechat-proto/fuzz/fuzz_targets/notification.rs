//! What reaches `parse_response` comes from WeChat (or whatever answers in its place), and what
//! reaches `ComponentNotification::from_xml` is a decrypted push; neither may panic on any bytes.
//!
//! Beyond "no panic" the target checks what callers rely on: an error keeps the body it was
//! given, a WeChat error never carries errcode 0, and any push that parses survives
//! `to_xml` → `from_xml` unchanged (the simulator renders pushes with `to_xml`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wechat_proto::ErrCode;
use wechat_proto::api::{
    AccessTokenResponse, ApiError, ComponentNotification, ErrBody, PhoneNumberResponse, QueryAuthResponse,
    TicketResponse, UserInfoResponse, parse_response,
};

fn check<T: serde::de::DeserializeOwned>(body: &[u8]) {
    match parse_response::<T>(body) {
        Ok(_) => {}
        Err(ApiError::WeChat { errcode, raw, .. }) => {
            assert_ne!(errcode, ErrCode::OK);
            assert_eq!(raw.as_bytes(), body);
        }
        Err(ApiError::Malformed { raw, .. }) => assert_eq!(raw, String::from_utf8_lossy(body)),
    }
}

fuzz_target!(|data: &[u8]| {
    check::<ErrBody>(data);
    check::<AccessTokenResponse>(data);
    check::<TicketResponse>(data);
    check::<QueryAuthResponse>(data);
    check::<UserInfoResponse>(data);
    check::<PhoneNumberResponse>(data);

    let xml = String::from_utf8_lossy(data);
    if let Ok(n) = ComponentNotification::from_xml(&xml) {
        let again = n.to_xml();
        assert_eq!(ComponentNotification::from_xml(&again).as_ref(), Ok(&n), "{again}");
    }
});
