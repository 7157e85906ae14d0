//! A second reference of `bench/proxy.sh`: the least a Rust proxy on the same stack does, a
//! hyper server forwarding every request as it came through hyper-util's pooled client, with
//! no checks, no token handling and no metrics. It tells what of the hub's cost is the stack's.
//!
//! `cargo run --release -p wxcentral --example bare_proxy -- 127.0.0.1:8098 http://127.0.0.1:8097`

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8098".into());
    let upstream: &'static str =
        String::leak(std::env::args().nth(2).unwrap_or_else(|| "http://127.0.0.1:8097".into()));
    let client: Client<HttpConnector, hyper::body::Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("bare proxy on {addr} to {upstream}");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let client = client.clone();
                async move {
                    let (mut parts, body) = req.into_parts();
                    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                    parts.uri = format!("{upstream}{pq}").parse::<Uri>().unwrap_or_default();
                    parts.headers.remove(hyper::header::HOST);
                    client.request(Request::from_parts(parts, body)).await
                }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
