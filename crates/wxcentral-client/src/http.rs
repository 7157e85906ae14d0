//! The HTTP client both the hub source and the WeChat client use when given none.

use crate::error::{Error, Result};
use std::time::Duration;

/// `shared` if the caller brought one (its pool, proxy and TLS settings), else a new client with
/// `timeout` that never follows a redirect: WeChat and the hub never redirect, and following
/// one would only send the request (and its token) somewhere else.
pub(crate) fn or_default(shared: Option<reqwest::Client>, timeout: Duration) -> Result<reqwest::Client> {
    match shared {
        Some(h) => Ok(h),
        None => reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(Error::transport),
    }
}
