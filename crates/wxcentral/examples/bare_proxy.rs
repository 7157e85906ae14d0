//! A second reference of `bench/proxy.sh`: the least a Rust proxy on the same stack does, a
//! hyper server forwarding every request as it came through hyper-util's pooled client, with
//! no checks, no token handling and no metrics. It tells what of the hub's cost is the stack's.
//!
//! The runtime is tokio's multi-threaded one, or with `per-core` the hub's own shape: the
//! connections handed to `wxcentral::workers`, one client per worker.
//!
//! `cargo run --release -p wxcentral --example bare_proxy -- 127.0.0.1:8098 http://127.0.0.1:8097 [per-core]`

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use wxcentral::workers::{self, Workers};

type HttpClient = Client<HttpConnector, hyper::body::Incoming>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8098".into());
    let upstream: &'static str = String::leak(args.next().unwrap_or_else(|| "http://127.0.0.1:8097".into()));
    let per_core = args.next().as_deref() == Some("per-core");
    let client = || {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new()).build(connector)
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("bare proxy on {addr} to {upstream}{}", if per_core { ", per-core workers" } else { "" });
    if !per_core {
        let client = client();
        loop {
            let (stream, _) = listener.accept().await?;
            let client = client.clone();
            tokio::spawn(serve(stream, client, upstream));
        }
    }
    let workers = Workers::start(workers::default_count())?;
    let clients: Arc<Vec<HttpClient>> = Arc::new((0..workers.count()).map(|_| client()).collect());
    loop {
        let (stream, _) = listener.accept().await?;
        let (stream, clients) = (stream.into_std()?, Arc::clone(&clients));
        workers.spawn(async move {
            let Ok(stream) = tokio::net::TcpStream::from_std(stream) else { return };
            let client = clients[workers::index().unwrap_or(0) % clients.len()].clone();
            serve(stream, client, upstream).await;
        });
    }
}

async fn serve(stream: tokio::net::TcpStream, client: HttpClient, upstream: &'static str) {
    let _ = stream.set_nodelay(true);
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
}
