//! `get_api_domain_ip`: the addresses WeChat calls from, for firewall rules.

use crate::client::Client;
use crate::error::Result;
use wechat_proto::api::{ApiDomainIpResponse, PATH_GET_API_DOMAIN_IP};

impl Client {
    /// `GET /cgi-bin/get_api_domain_ip`: the IP addresses of WeChat's API servers.
    pub async fn get_api_domain_ip(&self, appid: &str) -> Result<Vec<String>> {
        let r: ApiDomainIpResponse =
            self.get_json(appid, PATH_GET_API_DOMAIN_IP, &[], self.options()).await?;
        Ok(r.ip_list)
    }
}
