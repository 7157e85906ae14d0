//! A wrapper that keeps secrets out of logs, error bodies and `Debug` output.
//!
//! App secrets, tokens, tickets, refresh tokens and client keys all travel in a [`Secret`]; the
//! only way to the inner value is the explicit [`Secret::expose`], which makes every place that
//! hands a secret on easy to find in review.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A value that must never be printed. `Debug` and `Display` show `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Secret<T = String>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret value itself. Call it only where the value leaves for WeChat or for an
    /// authenticated client.
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl Secret<String> {
    /// Compares with `other` in constant time (for equal lengths), so a caller cannot learn a
    /// secret byte by byte from response times.
    pub fn ct_eq(&self, other: &str) -> bool {
        crate::signature::ct_eq(self.0.as_bytes(), other.as_bytes())
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret<String> {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret<String> {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// Serializes the real value: wire types (requests to WeChat, responses to authenticated
/// clients) need it. Never serialize a `Secret` into a log line.
impl<T: Serialize> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct App {
            secret: Secret,
        }
        let shown = format!("{:?}", App { secret: s.clone() });
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn serde_round_trips_the_value() {
        let s: Secret = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(s.expose(), "abc");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"abc\"");
    }

    #[test]
    fn ct_eq_matches_only_equal_values() {
        let s = Secret::from("abc");
        assert!(s.ct_eq("abc"));
        assert!(!s.ct_eq("abd"));
        assert!(!s.ct_eq("ab"));
        assert!(!s.ct_eq(""));
    }
}
