//! WeChat's `errcode` values and what a caller should do about each.
//!
//! The engine's retry policy hangs on [`ErrClass`]: hammering WeChat after a quota or whitelist
//! error only burns the day's quota, while a token-invalid error calls for one compare-and-refresh.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A WeChat errcode. Unknown codes are kept as they are.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrCode(pub i64);

/// What a caller should do about an errcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrClass {
    /// 0: not an error.
    Ok,
    /// The token used is invalid or expired: refresh it (once) and retry.
    TokenInvalid,
    /// WeChat is busy: retry with backoff.
    Busy,
    /// The daily quota is spent: wait for 00:00 Asia/Shanghai.
    Quota,
    /// Configuration or state fault (bad secret, IP not whitelisted, ticket expired, refresh
    /// token revoked): retrying fast will not help; an operator must look.
    Config,
    /// Anything else: the request itself was refused.
    Other,
}

impl ErrCode {
    pub const OK: Self = Self(0);
    pub const BUSY: Self = Self(-1);
    pub const INVALID_CREDENTIAL: Self = Self(40001);
    pub const INVALID_GRANT_TYPE: Self = Self(40002);
    pub const INVALID_APPID: Self = Self(40013);
    pub const INVALID_ACCESS_TOKEN: Self = Self(40014);
    pub const INVALID_APPSECRET: Self = Self(40125);
    pub const IP_NOT_WHITELISTED: Self = Self(40164);
    pub const ACCESS_TOKEN_MISSING: Self = Self(41001);
    pub const ACCESS_TOKEN_EXPIRED: Self = Self(42001);
    pub const QUOTA_EXCEEDED: Self = Self(45009);
    pub const FORCE_REFRESH_LIMIT: Self = Self(45011);
    pub const COMPONENT_IP_NOT_WHITELISTED: Self = Self(61004);
    pub const VERIFY_TICKET_EXPIRED: Self = Self(61005);
    pub const VERIFY_TICKET_INVALID: Self = Self(61006);
    pub const REFRESH_TOKEN_INVALID: Self = Self(61023);
    /// `api_get_authorizer_info` (and others) for an account that has not authorized, or has
    /// unauthorized, the component.
    pub const COMPONENT_NOT_AUTHORIZED: Self = Self(61003);
    /// An authorization code never issued.
    pub const AUTH_CODE_INVALID: Self = Self(61009);
    /// An authorization code already used, or expired.
    pub const AUTH_CODE_EXPIRED: Self = Self(61010);
    pub const INVALID_CODE: Self = Self(40029);
    pub const INVALID_PARAMETER: Self = Self(40097);
    pub const DATA_FORMAT_ERROR: Self = Self(47001);
    /// A login or consent code already exchanged (`jscode2session`, web OAuth).
    pub const CODE_USED: Self = Self(40163);
    /// A value outside its field's rules, e.g. a subscribe-message value over its keyword's limit.
    pub const ARGUMENT_INVALID: Self = Self(47003);

    pub fn code(self) -> i64 {
        self.0
    }

    pub fn is_ok(self) -> bool {
        self.0 == 0
    }

    pub fn class(self) -> ErrClass {
        match self.0 {
            0 => ErrClass::Ok,
            40001 | 40014 | 42001 => ErrClass::TokenInvalid,
            -1 => ErrClass::Busy,
            45009 => ErrClass::Quota,
            40013 | 40125 | 40164 | 61004 | 61005 | 61006 | 61023 | 40002 | 41004 => ErrClass::Config,
            _ => ErrClass::Other,
        }
    }

    /// A short English meaning, for status pages and error messages.
    pub fn meaning(self) -> &'static str {
        match self.0 {
            0 => "ok",
            -1 => "system busy, retry later",
            40001 => "access_token invalid or not the latest",
            40002 => "invalid grant_type",
            40013 => "invalid appid",
            40014 => "invalid access_token",
            40029 => "invalid code",
            40097 => "invalid parameter",
            40125 => "invalid appsecret",
            40163 => "code already used",
            40164 => "caller IP not in the whitelist",
            41001 => "access_token missing",
            41004 => "appsecret missing",
            42001 => "access_token expired",
            45009 => "daily API quota reached",
            45011 => "API call too frequent",
            47001 => "data format error",
            47003 => "argument invalid",
            61003 => "account has not authorized the component",
            61004 => "component caller IP not in the whitelist",
            61005 => "component_verify_ticket expired",
            61006 => "component_verify_ticket invalid",
            61009 => "authorization code invalid",
            61010 => "authorization code expired or used",
            61023 => "authorizer_refresh_token invalid",
            _ => "unknown errcode",
        }
    }
}

impl fmt::Debug for ErrCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrCode({})", self.0)
    }
}

impl fmt::Display for ErrCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.meaning())
    }
}

impl From<i64> for ErrCode {
    fn from(code: i64) -> Self {
        Self(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_design() {
        for c in [40001, 40014, 42001] {
            assert_eq!(ErrCode(c).class(), ErrClass::TokenInvalid, "{c}");
        }
        assert_eq!(ErrCode(-1).class(), ErrClass::Busy);
        assert_eq!(ErrCode(45009).class(), ErrClass::Quota);
        for c in [40013, 40125, 40164, 61004, 61005, 61006, 61023] {
            assert_eq!(ErrCode(c).class(), ErrClass::Config, "{c}");
        }
        assert_eq!(ErrCode(0).class(), ErrClass::Ok);
        assert_eq!(ErrCode(12345).class(), ErrClass::Other);
    }

    #[test]
    fn unknown_codes_are_preserved() {
        let c: ErrCode = serde_json::from_str("987654").unwrap();
        assert_eq!(c.code(), 987654);
        assert_eq!(c.meaning(), "unknown errcode");
        assert_eq!(c.to_string(), "987654 (unknown errcode)");
    }
}
