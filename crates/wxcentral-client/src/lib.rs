//! Rust SDK for business servers that take their WeChat credentials from a wxcentral hub.
//!
//! The token source and the WeChat API client arrive with their own issue; until then this crate
//! only re-exports the protocol types a business server shares with the hub.

pub use wechat_proto as proto;
