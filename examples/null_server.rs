//! The do-nothing server of the serve benchmark (benches/serve_load.py): the same HTTP stack
//! as `holdfast serve` (hyper 1, HTTP/1.1, tokio), reading each request's body and answering
//! 202 with a small JSON body, keeping nothing. holdfast's request rate is reported as a ratio
//! to this one's on the same machine in the same run.
//!
//! usage: null_server [ADDRESS]   (default 127.0.0.1:0; prints "listening on http://ADDR")

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::io::Write;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    println!("listening on http://{}", listener.local_addr().unwrap());
    std::io::stdout().flush().unwrap();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let service = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let mut r = hyper::Response::new(Full::new(Bytes::from(format!(
                        "{{\"accepted\":{}}}",
                        body.iter().filter(|b| **b == b'\n').count().max(1)
                    ))));
                    *r.status_mut() = hyper::StatusCode::ACCEPTED;
                    Ok::<_, std::convert::Infallible>(r)
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}
