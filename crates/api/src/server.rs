//! The HTTP/1.1 server under the API: our own accept loop over hyper, so that
//! a hostile or broken client cannot hold the server.
//!
//! * **Timeouts** per connection, checked by a watchdog beside hyper:
//!   `header_timeout` from a connection's first byte of a request (or from
//!   accept) until its head is complete (slowloris), `body_timeout` for the
//!   whole body (slow POST), `idle_timeout` between requests on a keep-alive
//!   connection. A connection upgraded to a WebSocket leaves the watchdog:
//!   its session has its own liveness (southbound heartbeats).
//! * **A connection limit** (`max_connections`, clamped below the process's
//!   descriptor limit): a connection beyond it gets a Neutron 503 and is
//!   closed; the first refusal of a burst and the recovery are logged, once.
//! * **Size limits**: request head (`max_header_bytes`, `max_headers`) and
//!   body ([`crate::MAX_BODY`]), answered 414/431/413.
//! * **Error bodies**: every 4xx/5xx produced outside a handler (axum's
//!   extractor rejections, the limits above) is rewritten to
//!   `{"NeutronError": …}` (or Nova's fault under `/compute/`).
//! * **Links**: each request carries a [`LinkBase`]: Neutron's
//!   `network_link_prefix` when configured, else `http://` + the address the
//!   client connected to — never the `Host` header.
//! * **Shutdown**: accepting stops, idle connections close, in-flight
//!   requests finish.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::json;
use switchyard_model::NeutronError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::MAX_BODY;

/// Connections being refused (503 written, then closed) at the same time;
/// beyond this an excess connection is closed without an answer.
const MAX_REFUSING: usize = 64;
/// After the last response on a connection, how long (and how many bytes) the
/// server keeps reading what the client still sends before closing, so that a
/// client still writing a refused body reads the answer instead of a reset
/// (nginx's "lingering close").
const LINGER_TIME: Duration = Duration::from_secs(2);
/// A refused client that sends nothing for this long is closed at once.
const REFUSE_QUIET: Duration = Duration::from_millis(100);
const LINGER_BYTES: usize = 2 * MAX_BODY;
/// Descriptors kept free for the database, agents and logs when the connection
/// limit is clamped to the process's descriptor limit.
const RESERVED_FDS: usize = 64;

/// The HTTP server's limits and public address (docs/operator-guide.md).
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Neutron's `network_link_prefix`: the URL links in responses are built
    /// on. None: `http://` and the address the client connected to.
    pub network_link_prefix: Option<LinkPrefix>,
    /// From a request's first byte (a new connection's accept) to the end of
    /// its head.
    pub header_timeout: Duration,
    /// From the end of a request's head to the end of its body.
    pub body_timeout: Duration,
    /// Between requests on a keep-alive connection.
    pub idle_timeout: Duration,
    /// Open connections served at once (WebSocket sessions included).
    pub max_connections: usize,
    /// The request line and header fields together, in bytes.
    pub max_header_bytes: usize,
    /// Header fields in one request.
    pub max_headers: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            network_link_prefix: None,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
            max_connections: 512,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpConfigError {
    #[error(
        "network_link_prefix must be an http:// or https:// URL with a host and no query, not '{0}'"
    )]
    LinkPrefix(String),
    #[error("{0} must be between 1 ms and 1 day")]
    Timeout(&'static str),
    #[error("{0} must be at least {1}")]
    TooSmall(&'static str, usize),
}

impl HttpOptions {
    /// Refuses settings the server cannot run with.
    pub fn check(&self) -> Result<(), HttpConfigError> {
        for (name, d) in [
            ("header_timeout", self.header_timeout),
            ("body_timeout", self.body_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if d < Duration::from_millis(1) || d > Duration::from_secs(86_400) {
                return Err(HttpConfigError::Timeout(name));
            }
        }
        if self.max_connections < 1 {
            return Err(HttpConfigError::TooSmall("max_connections", 1));
        }
        if self.max_header_bytes < 1024 {
            return Err(HttpConfigError::TooSmall("max_header_bytes", 1024));
        }
        if self.max_headers < 8 {
            return Err(HttpConfigError::TooSmall("max_headers", 8));
        }
        Ok(())
    }
}

/// A checked `network_link_prefix`: `http(s)://host[:port][/path]`, kept
/// without a trailing slash. As in Neutron's `prepare_url`, a link is the
/// prefix followed by the request's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPrefix(String);

impl LinkPrefix {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for LinkPrefix {
    type Err = HttpConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || HttpConfigError::LinkPrefix(s.to_string());
        let uri: axum::http::Uri = s.parse().map_err(|_| bad())?;
        let scheme = uri.scheme_str().ok_or_else(bad)?;
        if scheme != "http" && scheme != "https" {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?;
        if authority.host().is_empty() || authority.as_str().contains('@') {
            return Err(bad());
        }
        if uri.query().is_some() || s.contains('#') {
            return Err(bad());
        }
        let path = uri.path().trim_end_matches('/');
        Ok(LinkPrefix(format!("{scheme}://{authority}{path}")))
    }
}

impl std::fmt::Display for LinkPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Request extension: the URL links in this request's response start with.
#[derive(Debug, Clone)]
pub struct LinkBase(pub Arc<str>);

/// The warning for a listener anyone beyond this host may reach while the API
/// has no authentication (`noauth`); None on loopback.
pub fn exposure_warning(local: SocketAddr) -> Option<String> {
    if local.ip().to_canonical().is_loopback() {
        return None;
    }
    Some(format!(
        "the API listens on {local}, beyond loopback, without authentication (noauth): anyone who can reach it can read and change every network; bind to 127.0.0.1 or put an authenticating proxy in front"
    ))
}

// ---- middleware ---------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Limits {
    body_timeout: Duration,
    max_header_bytes: usize,
    max_headers: usize,
}

/// The router with the request limits and the error-body rewriting applied
/// (outermost last).
pub(crate) fn with_limits(router: Router, opts: &HttpOptions) -> Router {
    let limits = Limits {
        body_timeout: opts.body_timeout,
        max_header_bytes: opts.max_header_bytes,
        max_headers: opts.max_headers,
    };
    router
        .layer(middleware::from_fn_with_state(limits, read_body))
        .layer(middleware::from_fn_with_state(limits, check_head))
        .layer(middleware::from_fn(error_bodies))
}

/// A plain-text error that [`error_bodies`] turns into a Neutron body.
fn plain(status: StatusCode, message: String, close: bool) -> Response {
    let mut r = (status, message).into_response();
    if close {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

async fn check_head(State(l): State<Limits>, req: Request, next: Next) -> Response {
    let uri = req.uri();
    let uri_len = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    if uri_len > l.max_header_bytes {
        return plain(
            StatusCode::URI_TOO_LONG,
            format!(
                "The request URI is {uri_len} bytes long; the limit is {} bytes.",
                l.max_header_bytes
            ),
            true,
        );
    }
    let count = req.headers().len();
    if count > l.max_headers {
        return plain(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "The request has {count} header fields; the limit is {}.",
                l.max_headers
            ),
            true,
        );
    }
    let size = req.method().as_str().len()
        + uri_len
        + 12
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if size > l.max_header_bytes {
        return plain(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "The request line and header fields are {size} bytes; the limit is {} bytes.",
                l.max_header_bytes
            ),
            true,
        );
    }
    next.run(req).await
}

fn too_large(len: usize) -> Response {
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("The request body is larger than the limit of {MAX_BODY} bytes ({len} or more)."),
        true,
    )
}

/// Reads the whole body within `body_timeout` and at most [`MAX_BODY`] bytes
/// before any handler runs; handlers then see a complete body.
async fn read_body(State(l): State<Limits>, req: Request, next: Next) -> Response {
    let (parts, mut body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared
        && n > MAX_BODY as u64
    {
        return too_large(usize::try_from(n).unwrap_or(usize::MAX));
    }
    let deadline = Instant::now() + l.body_timeout;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return plain(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "The request body did not arrive within {} ms.",
                        l.body_timeout.as_millis()
                    ),
                    true,
                );
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!("The request body could not be read: {e}"),
                    true,
                );
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > MAX_BODY {
                        return too_large(buf.len() + data.len());
                    }
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    next.run(Request::from_parts(parts, Body::from(buf))).await
}

/// webob's exception class for a status, as Neutron names its errors.
fn webob_name(status: u16) -> &'static str {
    match status {
        400 => "HTTPBadRequest",
        401 => "HTTPUnauthorized",
        403 => "HTTPForbidden",
        404 => "HTTPNotFound",
        405 => "HTTPMethodNotAllowed",
        406 => "HTTPNotAcceptable",
        408 => "HTTPRequestTimeout",
        409 => "HTTPConflict",
        411 => "HTTPLengthRequired",
        412 => "HTTPPreconditionFailed",
        413 => "HTTPRequestEntityTooLarge",
        414 => "HTTPRequestURITooLong",
        415 => "HTTPUnsupportedMediaType",
        422 => "HTTPUnprocessableEntity",
        428 => "HTTPPreconditionRequired",
        429 => "HTTPTooManyRequests",
        431 => "HTTPRequestHeaderFieldsTooLarge",
        501 => "HTTPNotImplemented",
        502 => "HTTPBadGateway",
        503 => "HTTPServiceUnavailable",
        504 => "HTTPGatewayTimeout",
        s if s < 500 => "HTTPClientError",
        _ => "HTTPInternalServerError",
    }
}

/// Nova's fault name for a status (nova/api/openstack/wsgi.py).
fn nova_name(status: u16) -> &'static str {
    match status {
        400 => "badRequest",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "itemNotFound",
        405 => "badMethod",
        409 => "conflictingRequest",
        413 | 429 => "overLimit",
        415 => "badMediaType",
        501 => "notImplemented",
        503 => "serviceUnavailable",
        _ => "computeFault",
    }
}

/// The JSON error body for a status and message: Neutron's, or Nova's under
/// `/compute/`.
fn error_json(status: StatusCode, message: &str, nova: bool) -> serde_json::Value {
    let e = NeutronError::new(status.as_u16(), webob_name(status.as_u16()), message);
    if nova {
        json!({ nova_name(e.status): {"code": e.status, "message": e.message} })
    } else {
        e.body()
    }
}

/// Rewrites every error answered without a JSON body (axum's rejections, the
/// limits above) into the API's error shape, keeping status and headers.
async fn error_bodies(req: Request, next: Next) -> Response {
    let nova = req.uri().path().starts_with("/compute/") || req.uri().path() == "/compute";
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("Error").to_string()
    } else {
        text
    };
    let body = error_json(status, &message, nova).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if !parts.headers.contains_key("x-openstack-request-id")
        && let Ok(v) = HeaderValue::from_str(&format!("req-{}", uuid::Uuid::new_v4()))
    {
        parts.headers.insert("x-openstack-request-id", v);
    }
    Response::from_parts(parts, Body::from(body))
}

// ---- connections --------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request head (or waiting for a new connection's first byte).
    Head,
    /// A request is being served (its body is read under `body_timeout`).
    Busy,
    /// Between requests.
    Idle,
    /// Sending a response that lasts (Server-Sent Events): not idle while
    /// it runs; the stream's own keep-alive notices a client that left.
    Streaming,
}

/// What a connection is doing and since when, shared by its socket, its
/// service and its watchdog.
#[derive(Debug)]
struct Activity {
    state: Mutex<(Phase, Instant)>,
    upgraded: std::sync::atomic::AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Activity {
            state: Mutex::new((Phase::Head, Instant::now())),
            upgraded: std::sync::atomic::AtomicBool::new(false),
        }
    }
    fn set(&self, phase: Phase) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        *s = (phase, Instant::now());
    }
    fn bytes_read(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.0 == Phase::Idle {
            *s = (Phase::Head, Instant::now());
        }
    }
    fn is_upgraded(&self) -> bool {
        self.upgraded.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Which timeout this connection has run out of, if any.
    fn expired(&self, opts: &HttpOptions) -> Option<&'static str> {
        let (phase, since) = *self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = since.elapsed();
        match phase {
            Phase::Head if elapsed >= opts.header_timeout => Some("header timeout"),
            Phase::Idle if elapsed >= opts.idle_timeout => Some("idle timeout"),
            _ => None,
        }
    }
}

/// The socket as hyper sees it: reads mark activity, the connection's permit
/// lives (and is released) with it, and closing lingers (see [`LINGER_TIME`]).
struct Guarded {
    inner: TcpStream,
    activity: Arc<Activity>,
    _permit: OwnedSemaphorePermit,
    linger: Option<(Pin<Box<Sleep>>, usize)>,
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        r
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.activity.is_upgraded() {
            return Pin::new(&mut this.inner).poll_shutdown(cx);
        }
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.linger = Some((Box::pin(tokio::time::sleep(LINGER_TIME)), 0));
        }
        let Some((timer, drained)) = this.linger.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut scratch = [0u8; 8192];
        loop {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                    *drained += rb.filled().len();
                    if *drained > LINGER_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    return match timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Ok(())),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

/// Logs the first event of a burst and the end of the burst, once each.
#[derive(Debug, Default)]
struct Burst {
    active: bool,
    count: u64,
}

/// The descriptor limit of this process (Linux), to keep the connection
/// limit below it.
fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Whether an accept error concerns only the connection being accepted.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Answers a connection beyond the limit with a Neutron 503 and closes it.
async fn refuse(mut stream: TcpStream, limit: usize) {
    let body = error_json(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("The server has too many open connections (limit {limit}); try again later."),
        false,
    )
    .to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(LINGER_TIME, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    // Drain what the client already sent so that closing does not reset the
    // answer away; a client that sends nothing costs one short wait, so that
    // idle sockets cannot keep the refusing slots busy.
    let mut scratch = [0u8; 4096];
    let deadline = Instant::now() + LINGER_TIME;
    while let Ok(Ok(n)) = tokio::time::timeout_at(
        deadline.min(Instant::now() + REFUSE_QUIET),
        stream.read(&mut scratch),
    )
    .await
    {
        if n == 0 {
            break;
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting, lets in-flight requests finish and returns.
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    mut opts: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    if let Some(fds) = open_files_limit()
        && opts.max_connections + RESERVED_FDS > fds
    {
        let clamped = fds.saturating_sub(RESERVED_FDS).max(1);
        tracing::warn!(
            "max_connections {} is above what {fds} open files allow; serving at most {clamped} connections on {local} (raise the descriptor limit, e.g. LimitNOFILE, to serve more)",
            opts.max_connections
        );
        opts.max_connections = clamped;
    }
    let opts = Arc::new(opts);
    let permits = Arc::new(Semaphore::new(opts.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut refused = Burst::default();
    let mut failing = Burst::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    if !failing.active {
                        tracing::error!("accepting connections on {local} fails: {e}; retrying (further failures are not logged until one succeeds)");
                        failing.active = true;
                    }
                    failing.count += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if failing.active {
            tracing::info!(
                "accepting connections on {local} again after {} failures",
                failing.count
            );
            failing = Burst::default();
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if !refused.active {
                tracing::warn!(
                    "connection limit reached on {local}: {} connections are open; refusing new ones with 503 until some close (max_connections)",
                    opts.max_connections
                );
                refused.active = true;
            }
            refused.count += 1;
            if let Ok(slot) = refusing.clone().try_acquire_owned() {
                let limit = opts.max_connections;
                tokio::spawn(async move {
                    refuse(stream, limit).await;
                    drop(slot);
                });
            }
            continue;
        };
        if refused.active {
            tracing::info!(
                "accepting connections again on {local} after refusing {} at the limit",
                refused.count
            );
            refused = Burst::default();
        }
        tokio::spawn(connection(
            stream,
            peer,
            permit,
            router.clone(),
            opts.clone(),
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    // Every connection task holds a receiver: this resolves when all are done.
    stop_tx.closed().await;
    Ok(())
}

fn is_event_stream(r: &Response) -> bool {
    r.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// An event stream's body: the connection is idle again (and under the
/// idle timeout) once it ends or is dropped.
struct Streamed {
    body: Body,
    act: Arc<Activity>,
}

impl hyper::body::Body for Streamed {
    type Data = axum::body::Bytes;
    type Error = axum::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        self.act.set(Phase::Idle);
    }
}

/// One connection: hyper's HTTP/1.1 with upgrades, under the watchdog.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    router: Router,
    opts: Arc<HttpOptions>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let base: Arc<str> = match (&opts.network_link_prefix, stream.local_addr()) {
        (Some(p), _) => Arc::from(p.as_str()),
        (None, Ok(local)) => {
            let local = SocketAddr::new(local.ip().to_canonical(), local.port());
            Arc::from(format!("http://{local}").as_str())
        }
        (None, Err(_)) => Arc::from("http://localhost"),
    };
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Guarded {
        inner: stream,
        activity: activity.clone(),
        _permit: permit,
        linger: None,
    });
    let act = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        act.set(Phase::Busy);
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(LinkBase(base.clone()));
        let mut router = router.clone();
        let act = act.clone();
        async move {
            let resp = router.call(req).await;
            if let Ok(r) = &resp
                && r.status() == StatusCode::SWITCHING_PROTOCOLS
            {
                act.upgraded
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            match resp {
                Ok(r) if is_event_stream(&r) => {
                    act.set(Phase::Streaming);
                    Ok(r.map(|body| Body::new(Streamed { body, act })))
                }
                other => {
                    act.set(Phase::Idle);
                    other
                }
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .max_buf_size((opts.max_header_bytes * 2).max(8192) + 8192)
        .max_headers(opts.max_headers * 2);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let every = opts
        .header_timeout
        .min(opts.idle_timeout)
        .checked_div(4)
        .unwrap_or_default()
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick() => {
                if let Some(why) = activity.expired(&opts) {
                    tracing::debug!(%peer, "closing connection: {why}");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_is_warned_beyond_loopback() {
        for quiet in ["127.0.0.1:9696", "[::1]:9696", "[::ffff:127.0.0.1]:1"] {
            let a: SocketAddr = quiet.parse().expect("addr");
            assert_eq!(exposure_warning(a), None, "{quiet}");
        }
        for loud in ["0.0.0.0:9696", "[::]:9696", "192.0.2.10:9696"] {
            let a: SocketAddr = loud.parse().expect("addr");
            let w = exposure_warning(a).expect("warned");
            assert!(
                w.contains(loud) && w.contains("without authentication"),
                "{w}"
            );
        }
    }

    #[test]
    fn options_are_checked() {
        assert!(HttpOptions::default().check().is_ok());
        let o = HttpOptions {
            header_timeout: Duration::ZERO,
            ..HttpOptions::default()
        };
        assert_eq!(o.check(), Err(HttpConfigError::Timeout("header_timeout")));
        let o = HttpOptions {
            max_connections: 0,
            ..HttpOptions::default()
        };
        assert!(o.check().is_err());
    }

    #[test]
    fn error_names() {
        assert_eq!(webob_name(413), "HTTPRequestEntityTooLarge");
        assert_eq!(webob_name(418), "HTTPClientError");
        let v = error_json(StatusCode::NOT_FOUND, "gone", true);
        assert_eq!(v["itemNotFound"]["code"], 404);
        let v = error_json(StatusCode::NOT_FOUND, "gone", false);
        assert_eq!(v["NeutronError"]["type"], "HTTPNotFound");
    }
}
