//! The baseline of `bench/http.sh`: a bare hyper server answering every request with a fixed
//! credential-shaped JSON body, i.e. the cost of HTTP alone. wxcentral's throughput is quoted as
//! a ratio to this one, measured in the same run.
//!
//! `cargo run --release -p wxcentral --example bare_hyper -- 127.0.0.1:8099 [BODY_FILE]`
//!
//! With `BODY_FILE` it answers that file's bytes (the bench passes wxcentral's own response, so
//! both send the same JSON); without it, a credential of typical size.

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, header};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

const BODY: &str = r#"{"appid":"wxbench0000000000000","kind":"access_token","value":"ACCESS_TOKEN_VALUE_OF_ABOUT_THE_SAME_LENGTH_AS_THE_SIMULATOR_ISSUES_0123456789","expires_at":1795190399,"expires_in":7000,"version":1795183199000}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8099".into());
    let body: &'static [u8] = match std::env::args().nth(2) {
        Some(path) => Vec::leak(std::fs::read(path)?),
        None => BODY.as_bytes(),
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("bare hyper on {addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = service_fn(move |_req| async move {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from_static(body)))
                        .unwrap_or_default(),
                )
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
