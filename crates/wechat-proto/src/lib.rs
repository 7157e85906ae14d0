//! The WeChat protocol without I/O: API request/response types, errcodes, signatures and the
//! message crypto (WXBizMsgCrypt) that official accounts, mini programs and open-platform
//! components use.
//!
//! Everything here is pure so that the server, the simulator and the SDK agree byte for byte.
//!
//! ```
//! use wechat_proto::signature::url_signature;
//! let sig = url_signature("AAAAA", "1714036504", "1514711492");
//! assert_eq!(sig, "f464b24fc39322e44b38aa78f5edd27bd1441696");
//! ```

pub mod api;
pub mod crypto;
pub mod errcode;
pub mod secret;
pub mod signature;

pub use errcode::ErrCode;
pub use secret::Secret;
