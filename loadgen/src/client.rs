//! One keep-alive HTTP/1.1 connection to the server under test (hyper's low-level client
//! connection over a TcpStream: no pool, no retries, nothing hidden).
//!
//! The connection is driven inside the task that uses it rather than in a spawned task:
//! one task per worker saves the cross-task wake-ups of every request.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::validate::{ErrorKind, Failure};

pub struct Client {
    addr: SocketAddr,
    host: HeaderValue,
    conn: Option<Conn>,
}

type Sender = SendRequest<Full<Bytes>>;
type Driver = Connection<TokioIo<TcpStream>, Full<Bytes>>;

struct Conn {
    sender: Sender,
    /// The connection's I/O state machine; None once it has finished (the server closed).
    driver: Option<Pin<Box<Driver>>>,
}

impl Conn {
    /// Runs `f(sender)` to completion while driving the connection in this task. A finished
    /// connection is dropped at once, which closes its channels, so that a future still
    /// waiting on it resolves with an error instead of hanging.
    async fn drive<'a, F, Fut>(&'a mut self, f: F) -> Fut::Output
    where
        F: FnOnce(&'a mut Sender) -> Fut,
        Fut: Future + 'a,
    {
        let driver = &mut self.driver;
        let mut fut = std::pin::pin!(f(&mut self.sender));
        std::future::poll_fn(|cx| {
            if driver
                .as_mut()
                .is_some_and(|d| d.as_mut().poll(cx).is_ready())
            {
                *driver = None;
            }
            fut.as_mut().poll(cx)
        })
        .await
    }
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        let host = HeaderValue::from_str(&addr.to_string())
            .expect("a socket address is a valid header value");
        Self {
            addr,
            host,
            conn: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens a fresh connection, replacing the current one.
    pub async fn connect(&mut self) -> std::io::Result<()> {
        self.conn = None;
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        self.conn = Some(Conn {
            sender,
            driver: Some(Box::pin(driver)),
        });
        Ok(())
    }

    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// True when the current connection can take a request; false when there is none or the
    /// server has closed it.
    pub async fn ready(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        if conn.driver.is_some()
            && !conn.sender.is_closed()
            && conn.drive(|s| s.ready()).await.is_ok()
        {
            return true;
        }
        self.conn = None;
        false
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
        let host = self.host.clone();
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::new(ErrorKind::Io, "not connected"));
        };
        let result = conn
            .drive(|sender| exchange(sender, host, path, body, max_body, buf))
            .await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

async fn exchange(
    sender: &mut Sender,
    host: HeaderValue,
    path: &'static str,
    body: Bytes,
    max_body: usize,
    buf: &mut Vec<u8>,
) -> Result<StatusCode, Failure> {
    // Assembled directly: the builder would parse the path and check every header again.
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = Uri::from_static(path);
    let headers = request.headers_mut();
    headers.insert(HOST, host);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
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
    if let Some(len) = declared.filter(|&len| len > max_body as u64) {
        let detail = format!("Content-Length {len} exceeds the limit of {max_body} bytes");
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
