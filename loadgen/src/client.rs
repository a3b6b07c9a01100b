//! One keep-alive HTTP/1.1 connection to the server under test (hyper's low-level client
//! connection over a TcpStream: no pool, no retries, nothing hidden).

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::validate::{ErrorKind, Failure};

pub struct Client {
    addr: SocketAddr,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        let host = HeaderValue::from_str(&addr.to_string())
            .expect("a socket address is a valid header value");
        Self {
            addr,
            host,
            sender: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens a fresh connection, replacing the current one.
    pub async fn connect(&mut self) -> std::io::Result<()> {
        self.sender = None;
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        // The connection task drives the socket; it ends when the sender is dropped or the
        // server closes the connection (then `ready` fails and the caller reconnects).
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    pub fn disconnect(&mut self) {
        self.sender = None;
    }

    /// True when the current connection can take a request; false when there is none or the
    /// server has closed it.
    pub async fn ready(&mut self) -> bool {
        match self.sender.as_mut() {
            Some(sender) if !sender.is_closed() => {
                if sender.ready().await.is_ok() {
                    return true;
                }
                self.sender = None;
                false
            }
            _ => false,
        }
    }

    /// POSTs a JSON body on the current connection (call `ready`/`connect` first) and reads
    /// the response body into `buf`, never more than `max_body` bytes: a server that floods
    /// output costs us at most that much memory. On any failure the connection is dropped,
    /// since its state is unknown.
    pub async fn post(
        &mut self,
        path: &'static str,
        body: Bytes,
        max_body: usize,
        buf: &mut Vec<u8>,
    ) -> Result<StatusCode, Failure> {
        let result = self.post_inner(path, body, max_body, buf).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn post_inner(
        &mut self,
        path: &'static str,
        body: Bytes,
        max_body: usize,
        buf: &mut Vec<u8>,
    ) -> Result<StatusCode, Failure> {
        let sender = self
            .sender
            .as_mut()
            .ok_or_else(|| Failure::new(ErrorKind::Io, "not connected"))?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(body))
            .expect("static request parts are valid");
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| io_failure("request", &e))?;
        let status = response.status();
        // Compared only, never used to size a buffer.
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max_body as u64) {
            let detail = format!(
                "Content-Length {} exceeds the limit of {max_body} bytes",
                declared.unwrap_or(0)
            );
            return Err(Failure::new(ErrorKind::BodyTooLarge, detail));
        }
        buf.clear();
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| io_failure("response body", &e))?;
            if let Some(data) = frame.data_ref() {
                if buf.len() + data.len() > max_body {
                    let detail = format!("response body exceeds the limit of {max_body} bytes");
                    return Err(Failure::new(ErrorKind::BodyTooLarge, detail));
                }
                buf.extend_from_slice(data);
            }
        }
        Ok(status)
    }
}

/// An `io` failure with the error's whole source chain (hyper's own message is terse).
fn io_failure(what: &str, e: &(dyn std::error::Error + 'static)) -> Failure {
    let mut detail = format!("{what}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(&format!(": {s}"));
        source = s.source();
    }
    Failure::new(ErrorKind::Io, detail)
}
