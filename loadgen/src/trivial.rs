//! A server that does no work, for measuring the generator's own ceiling: POST /search
//! answers a fixed valid 10-result body, /bulk_insert and /insert answer ok.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::IgnoredAny;
use serde::Deserialize;
use tokio::net::TcpListener;

const SEARCH_RESULT: &[u8] = br#"{"results":[{"id":0,"distance":0.0},{"id":1,"distance":1.0},{"id":2,"distance":2.0},{"id":3,"distance":3.0},{"id":4,"distance":4.0},{"id":5,"distance":5.0},{"id":6,"distance":6.0},{"id":7,"distance":7.0},{"id":8,"distance":8.0},{"id":9,"distance":9.0}]}"#;

#[derive(Deserialize)]
struct BulkInsert {
    vectors: Vec<IgnoredAny>,
}

fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let Ok(body) = request.into_body().collect().await.map(|b| b.to_bytes()) else {
        return Ok(json(StatusCode::BAD_REQUEST, Bytes::from_static(b"{}")));
    };
    Ok(match path.as_str() {
        "/search" => json(StatusCode::OK, Bytes::from_static(SEARCH_RESULT)),
        "/insert" => json(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#)),
        "/bulk_insert" => match serde_json::from_slice::<BulkInsert>(&body) {
            Ok(bulk) => {
                let text = format!(r#"{{"status":"ok","inserted":{}}}"#, bulk.vectors.len());
                json(StatusCode::OK, Bytes::from(text))
            }
            Err(_) => json(StatusCode::BAD_REQUEST, Bytes::from_static(b"{}")),
        },
        _ => json(StatusCode::NOT_FOUND, Bytes::from_static(b"{}")),
    })
}

/// Serves until the process is killed.
pub async fn serve(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("trivial-server listening on {addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(handle);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
