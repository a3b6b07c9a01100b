//! One keep-alive HTTP/1.1 connection to the server under test, written by hand over a
//! tokio TcpStream (TCP_NODELAY): the generator must cost less per request than the server
//! it measures, and a general-purpose client (hyper's) costs several times wrk's user time.
//!
//! A request is sent with one write of bytes built before the timed passes
//! ([`post_request`]); the response head is parsed with `httparse` out of one reusable read
//! buffer per connection. Bodies are framed by Content-Length, chunked transfer-encoding, or
//! (no length given) the end of the connection. A response that says `Connection: close`, an
//! HTTP/1.0 response without `Connection: keep-alive`, and any failure close the connection;
//! the next request opens a fresh one.

use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::validate::{ErrorKind, Failure};

/// At most this many response headers, and this many bytes of response head.
const MAX_HEADERS: usize = 64;
const MAX_HEAD: usize = 64 * 1024;
/// The read buffer's starting size: a /search response and its head fit several times over.
const INITIAL_BUFFER: usize = 16 * 1024;

/// The bytes of `POST path` with a JSON body: request line, Host, Content-Type,
/// Content-Length, body. Built once per query, before the timed passes.
pub fn post_request(addr: SocketAddr, path: &str, body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(128 + body.len());
    push_head(&mut out, addr, path, body.len());
    out.extend_from_slice(body);
    Bytes::from(out)
}

fn push_head(out: &mut Vec<u8>, addr: SocketAddr, path: &str, body_len: usize) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(addr.to_string().as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

pub struct Client {
    addr: SocketAddr,
    conn: Option<Conn>,
}

struct Conn {
    stream: TcpStream,
    buf: ReadBuf,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, conn: None }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens a fresh connection, replacing the current one.
    pub async fn connect(&mut self) -> std::io::Result<()> {
        self.conn = None;
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        self.conn = Some(Conn {
            stream,
            buf: ReadBuf::new(),
        });
        Ok(())
    }

    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// True when the current connection can take a request; false when there is none or the
    /// server has closed it (or sent something unasked) while it was idle. No system call
    /// unless the socket was reported readable.
    pub async fn ready(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let mut cx = Context::from_waker(Waker::noop());
        let idle = match conn.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable while idle: the server closed it (0), reset it, or sent stray bytes.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(conn.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        };
        if !idle {
            self.conn = None;
        }
        idle
    }

    /// POSTs a JSON body on the current connection (call `ready`/`connect` first); see
    /// [`Client::send`].
    pub async fn post(
        &mut self,
        path: &str,
        body: &[u8],
        max_body: usize,
        out: &mut Vec<u8>,
    ) -> Result<u16, Failure> {
        let mut head = Vec::with_capacity(128);
        push_head(&mut head, self.addr, path, body.len());
        self.exchange(&[&head, body], max_body, out).await
    }

    /// Sends `request` (from [`post_request`]) on the current connection (call
    /// `ready`/`connect` first) and reads the response body into `out`, never more than
    /// `max_body` bytes: a server that floods output costs us at most that much memory.
    /// Returns the status. On any failure the connection is dropped, since its state is
    /// unknown.
    pub async fn send(
        &mut self,
        request: &[u8],
        max_body: usize,
        out: &mut Vec<u8>,
    ) -> Result<u16, Failure> {
        self.exchange(&[request], max_body, out).await
    }

    async fn exchange(
        &mut self,
        parts: &[&[u8]],
        max_body: usize,
        out: &mut Vec<u8>,
    ) -> Result<u16, Failure> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::new(ErrorKind::Io, "not connected"));
        };
        out.clear();
        let result = conn.exchange(parts, max_body, out).await;
        match result {
            Ok((status, true)) => Ok(status),
            Ok((status, false)) => {
                self.conn = None;
                Ok(status)
            }
            Err(failure) => {
                self.conn = None;
                Err(failure)
            }
        }
    }
}

/// What the response head says about the body and the connection.
struct Head {
    status: u16,
    len: usize,
    framing: Framing,
    keep_alive: bool,
}

enum Framing {
    Length(u64),
    Chunked,
    /// No body (1xx, 204, 304).
    Empty,
    /// Until the server closes the connection.
    UntilClose,
}

impl Conn {
    /// One request and its response; Ok((status, connection reusable)).
    async fn exchange(
        &mut self,
        parts: &[&[u8]],
        max_body: usize,
        out: &mut Vec<u8>,
    ) -> Result<(u16, bool), Failure> {
        for part in parts {
            self.stream
                .write_all(part)
                .await
                .map_err(|e| io_failure("sending the request", &e))?;
        }
        let head = loop {
            let head = self.read_head().await?;
            self.buf.consume(head.len);
            // Interim responses (100 Continue, 103 Early Hints) precede the real one.
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            break head;
        };
        if head.status == 101 {
            return Err(Failure::new(
                ErrorKind::Io,
                "unexpected 101 Switching Protocols",
            ));
        }
        let keep_alive = match head.framing {
            Framing::Empty => head.keep_alive,
            Framing::Length(len) => {
                if len > max_body as u64 {
                    let detail =
                        format!("Content-Length {len} exceeds the limit of {max_body} bytes");
                    return Err(Failure::new(ErrorKind::BodyTooLarge, detail));
                }
                let len = len as usize;
                self.fill(len, "the response body").await?;
                out.extend_from_slice(&self.buf.available()[..len]);
                self.buf.consume(len);
                head.keep_alive
            }
            Framing::Chunked => {
                self.read_chunked(max_body, out).await?;
                head.keep_alive
            }
            Framing::UntilClose => {
                self.read_to_close(max_body, out).await?;
                false
            }
        };
        // Anything past the response was not asked for: the connection's state is unknown.
        Ok((head.status, keep_alive && self.buf.available().is_empty()))
    }

    async fn read_head(&mut self) -> Result<Head, Failure> {
        loop {
            if let Some(head) = parse_head(self.buf.available())? {
                return Ok(head);
            }
            if self.buf.available().len() >= MAX_HEAD {
                let detail = format!("response head exceeds {MAX_HEAD} bytes");
                return Err(Failure::new(ErrorKind::Io, detail));
            }
            let what = if self.buf.available().is_empty() {
                "a response"
            } else {
                "the end of the response head"
            };
            self.read_more(what).await?;
        }
    }

    /// Reads until at least `n` bytes are available.
    async fn fill(&mut self, n: usize, what: &str) -> Result<(), Failure> {
        while self.buf.available().len() < n {
            self.buf.reserve(n);
            self.read_more(what).await?;
        }
        Ok(())
    }

    /// One read into the buffer; the end of the connection is a failure naming `what` was
    /// awaited.
    async fn read_more(&mut self, what: &str) -> Result<(), Failure> {
        match self.read_some().await {
            Ok(0) => Err(Failure::new(
                ErrorKind::Io,
                format!("connection closed by the server before {what}"),
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(io_failure(&format!("reading {what}"), &e)),
        }
    }

    async fn read_some(&mut self) -> std::io::Result<usize> {
        let spare = self.buf.spare();
        let n = self.stream.read(spare).await?;
        self.buf.filled(n);
        Ok(n)
    }

    async fn read_chunked(&mut self, max_body: usize, out: &mut Vec<u8>) -> Result<(), Failure> {
        let too_large = || {
            let detail = format!("response body exceeds the limit of {max_body} bytes");
            Failure::new(ErrorKind::BodyTooLarge, detail)
        };
        loop {
            let (line, size) = loop {
                match httparse::parse_chunk_size(self.buf.available()) {
                    Ok(httparse::Status::Complete(parsed)) => break parsed,
                    Ok(httparse::Status::Partial) if self.buf.available().len() < 1024 => {
                        self.read_more("the next chunk").await?
                    }
                    _ => {
                        let detail = "malformed chunk size in a chunked response body";
                        return Err(Failure::new(ErrorKind::Io, detail));
                    }
                }
            };
            self.buf.consume(line);
            if size == 0 {
                return self.skip_trailers().await;
            }
            if out.len() as u64 + size > max_body as u64 {
                return Err(too_large());
            }
            let size = size as usize;
            self.fill(size + 2, "the end of a chunk").await?;
            let data = self.buf.available();
            if &data[size..size + 2] != b"\r\n" {
                let detail = "chunk data not followed by CRLF in a chunked response body";
                return Err(Failure::new(ErrorKind::Io, detail));
            }
            out.extend_from_slice(&data[..size]);
            self.buf.consume(size + 2);
        }
    }

    /// The trailer section after the last chunk: header lines up to an empty line.
    async fn skip_trailers(&mut self) -> Result<(), Failure> {
        loop {
            let data = self.buf.available();
            if let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
                self.buf.consume(end + 2);
                if end == 0 {
                    return Ok(());
                }
                continue;
            }
            if data.len() >= MAX_HEAD {
                let detail = format!("chunked trailers exceed {MAX_HEAD} bytes");
                return Err(Failure::new(ErrorKind::Io, detail));
            }
            self.read_more("the end of a chunked body").await?;
        }
    }

    async fn read_to_close(&mut self, max_body: usize, out: &mut Vec<u8>) -> Result<(), Failure> {
        loop {
            let n = self.buf.available().len();
            if n > max_body {
                let detail = format!("response body exceeds the limit of {max_body} bytes");
                return Err(Failure::new(ErrorKind::BodyTooLarge, detail));
            }
            self.buf.reserve(n + 1);
            match self.read_some().await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(io_failure("reading the response body", &e)),
            }
        }
        out.extend_from_slice(self.buf.available());
        let n = self.buf.available().len();
        self.buf.consume(n);
        Ok(())
    }
}

/// Parses a complete response head at the start of `data`; None while it is incomplete.
fn parse_head(data: &[u8]) -> Result<Option<Head>, Failure> {
    // Uninitialized slots: initializing 64 headers costs more than parsing a small head.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        data,
        &mut headers,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            let detail = format!(
                "malformed response head ({e}): {:?}",
                crate::validate::lossy_prefix(data, 120)
            );
            return Err(Failure::new(ErrorKind::Io, detail));
        }
    };
    let status = response.code.unwrap_or(0);
    let http11 = response.version == Some(1);
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive_token = false;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let value = parse_decimal(h.value.trim_ascii());
            match (value, content_length) {
                (Some(v), None) => content_length = Some(v),
                (Some(v), Some(before)) if v == before => {}
                _ => {
                    let detail = format!(
                        "invalid or conflicting Content-Length {:?}",
                        String::from_utf8_lossy(h.value)
                    );
                    return Err(Failure::new(ErrorKind::Io, detail));
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only chunked is understood; it must be the last coding (RFC 9112 6.1).
            let value = String::from_utf8_lossy(h.value);
            let last = value.rsplit(',').next().unwrap_or("").trim();
            if !last.eq_ignore_ascii_case("chunked") || value.split(',').count() > 1 {
                let detail = format!("unsupported Transfer-Encoding {value:?} (only chunked is)");
                return Err(Failure::new(ErrorKind::Io, detail));
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        // With both, Transfer-Encoding wins and the connection must not be reused.
        close |= content_length.is_some();
        Framing::Chunked
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some(Head {
        status,
        len,
        framing,
        keep_alive: !close && (http11 || keep_alive_token),
    }))
}

/// A non-empty run of ASCII digits as a u64; None for anything else or on overflow.
fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |v, &d| {
        d.is_ascii_digit()
            .then_some(())
            .and_then(|()| v.checked_mul(10)?.checked_add(u64::from(d - b'0')))
    })
}

/// A connection's read buffer: bytes `[start, end)` are received and not yet consumed.
struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    fn new() -> Self {
        Self {
            data: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
        }
    }

    fn available(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room for `n` available bytes in all and for at least one more byte to be read.
    fn reserve(&mut self, n: usize) {
        let want = n.max(self.end - self.start + 1);
        if self.data.len() - self.start < want {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.data.len() < want {
                self.data.resize(want.next_power_of_two(), 0);
            }
        }
    }

    /// The free space after the available bytes (never empty).
    fn spare(&mut self) -> &mut [u8] {
        self.reserve(0);
        &mut self.data[self.end..]
    }

    fn filled(&mut self, n: usize) {
        self.end += n;
    }
}

/// An `io` failure with the error's whole source chain.
fn io_failure(what: &str, e: &(dyn std::error::Error + 'static)) -> Failure {
    let mut detail = format!("{what}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(&format!(": {s}"));
        source = s.source();
    }
    Failure::new(ErrorKind::Io, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request (read up to its blank line plus `Content-Length`)
    /// with the next of `responses`, written in pieces of `piece` bytes, then closes.
    async fn serve(responses: Vec<Vec<u8>>, piece: usize) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for response in responses {
                loop {
                    if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        if seen.len() >= end + 4 + len {
                            seen.drain(..end + 4 + len);
                            break;
                        }
                    }
                    let mut chunk = [0u8; 4096];
                    let n = stream.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&chunk[..n]);
                }
                for part in response.chunks(piece) {
                    stream.write_all(part).await.unwrap();
                    stream.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
        });
        addr
    }

    async fn exchange_all(
        responses: &[&[u8]],
        piece: usize,
        max_body: usize,
    ) -> Vec<Result<(u16, Vec<u8>), Failure>> {
        let addr = serve(responses.iter().map(|r| r.to_vec()).collect(), piece).await;
        let mut client = Client::new(addr);
        let request = post_request(addr, "/search", b"{}");
        let mut results = Vec::new();
        for _ in responses {
            if !client.ready().await {
                client.connect().await.unwrap();
            }
            let mut out = Vec::new();
            let r = client.send(&request, max_body, &mut out).await;
            results.push(r.map(|status| (status, out)));
        }
        results
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn request_bytes_are_a_complete_post() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let r = post_request(addr, "/search", b"{\"a\":1}");
        assert_eq!(
            &r[..],
            &b"POST /search HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"[..]
        );
    }

    #[test]
    fn keep_alive_content_length_responses_in_small_pieces() {
        let one: &[u8] =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\nhello";
        let two: &[u8] = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 3\r\n\r\nbad";
        for piece in [1, 7, 1000] {
            let results = rt().block_on(exchange_all(&[one, two, one], piece, 100));
            assert_eq!(results[0], Ok((200, b"hello".to_vec())), "piece {piece}");
            assert_eq!(results[1], Ok((500, b"bad".to_vec())));
            assert_eq!(results[2], Ok((200, b"hello".to_vec())));
        }
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let chunked: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for piece in [1, 5, 1000] {
            let results = rt().block_on(exchange_all(&[chunked, chunked], piece, 100));
            assert_eq!(
                results[0],
                Ok((200, b"hello world".to_vec())),
                "piece {piece}"
            );
            assert_eq!(results[1], Ok((200, b"hello world".to_vec())));
        }
    }

    #[test]
    fn interim_responses_are_skipped_and_204_has_no_body() {
        let r: &[u8] =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let empty: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
        let results = rt().block_on(exchange_all(&[r, empty, r], 1000, 100));
        assert_eq!(results[0], Ok((200, b"ok".to_vec())));
        assert_eq!(results[1], Ok((204, Vec::new())));
        assert_eq!(results[2], Ok((200, b"ok".to_vec())));
    }

    #[test]
    fn http10_and_connection_close_end_the_connection() {
        // The server answers once per connection and then closes: the client must reconnect
        // (the test server accepts only one connection, so a second request fails to connect
        // unless the first response was read to its end and the connection dropped).
        for r in [
            &b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
            &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"[..],
            &b"HTTP/1.0 200 OK\r\n\r\nuntil close"[..],
        ] {
            rt().block_on(async {
                let addr = serve(vec![r.to_vec()], 3).await;
                let mut client = Client::new(addr);
                client.connect().await.unwrap();
                let mut out = Vec::new();
                let status = client
                    .send(&post_request(addr, "/", b""), 100, &mut out)
                    .await;
                assert_eq!(status, Ok(200));
                assert!(out == b"ok" || out == b"until close");
                assert!(!client.ready().await, "connection kept after {r:?}");
            });
        }
    }

    #[test]
    fn failures_are_classified() {
        let big: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
        let big_chunk: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n";
        let gzip: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
        let garbage: &[u8] = b"SSH-2.0-OpenSSH\r\n\r\n";
        let short: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        for (r, kind, words) in [
            (big, ErrorKind::BodyTooLarge, "Content-Length 1000 exceeds"),
            (
                big_chunk,
                ErrorKind::BodyTooLarge,
                "exceeds the limit of 100",
            ),
            (gzip, ErrorKind::Io, "unsupported Transfer-Encoding"),
            (garbage, ErrorKind::Io, "malformed response head"),
            (
                short,
                ErrorKind::Io,
                "closed by the server before the response body",
            ),
        ] {
            let results = rt().block_on(exchange_all(&[r], 1000, 100));
            let failure = results[0].clone().unwrap_err();
            assert_eq!(failure.kind, kind, "{failure:?}");
            assert!(failure.detail.contains(words), "{failure:?}");
        }
    }
}
