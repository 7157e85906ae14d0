//! The client of WeChat's token endpoints. It takes a `base_url` so tests point it at
//! `wechat-sim`.

use crate::error::Result;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Upstream {
    base_url: String,
    http: reqwest::Client,
}

impl Upstream {
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| crate::Error::Config(format!("upstream client: {e}")))?;
        Ok(Self { base_url: base_url.trim_end_matches('/').to_owned(), http })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}
