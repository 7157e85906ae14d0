//! Signatures WeChat uses: server URL verification, JS-SDK `wx.config`, wx_card.

use subtle::ConstantTimeEq;

/// Placeholder until the signature module lands.
pub fn url_signature(_token: &str, _timestamp: &str, _nonce: &str) -> String {
    String::new()
}

/// Constant-time equality, so that comparing a secret or a signature leaks nothing through
/// timing but the length.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
