//! The HTTP server under hostile clients: header, body and idle timeouts cut
//! slow or idle connections while others are served; a connection limit
//! refuses the excess with a Neutron 503 and says so once per burst in the
//! log; WebSocket upgrades outlive those timeouts; every rejection outside a
//! handler is a Neutron error body; links never come from the `Host` header;
//! shutdown lets in-flight requests finish; binding beyond loopback without
//! authentication is warned about.
//!
//! Timeouts here are short and only lower bounds are asserted on time: a loaded
//! machine may take longer, never shorter.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Path, Query};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use switchyard_api::{HttpOptions, LinkPrefix, ServeError};
use switchyard_ml2::Ml2Config;
use switchyard_store::Durability;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---- log capture -------------------------------------------------------------

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged by this test binary so far.
fn logs() -> String {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let buf = BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = Capture(buf.clone());
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let _ = tracing::subscriber::set_global_default(sub);
        buf
    });
    let b = buf
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    String::from_utf8_lossy(&b).into_owned()
}

// ---- a server with chosen limits ------------------------------------------------

struct Srv {
    addr: SocketAddr,
    /// A node credential this server accepts (compute-2, vRouter).
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
    _dir: tempfile::TempDir,
}

impl Srv {
    async fn start(opts: HttpOptions, extra: Router, bind: &str) -> Srv {
        logs();
        let dir = tempfile::tempdir().expect("tempdir");
        let app = switchyard_api::open_app(
            &dir.path().join("t.db"),
            Durability::Process,
            &Ml2Config::default(),
            "proj",
        )
        .expect("app");
        let token = app
            .shared
            .credentials
            .enroll("compute-2", switchyard_proto::Role::Vrouter);
        let listener = tokio::net::TcpListener::bind(bind).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(switchyard_api::serve_with_options(
            listener,
            app,
            extra,
            opts,
            async {
                let _ = rx.await;
            },
        ));
        Srv {
            addr,
            token,
            stop: Some(tx),
            task,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let r = tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("server stops")
            .expect("server task");
        r.expect("server ran");
    }

    /// The server still answers a fresh client.
    async fn serves(&self) {
        let r = reqwest::get(self.url("/v2.0/networks"))
            .await
            .expect("request");
        assert_eq!(r.status(), 200);
    }
}

fn opts() -> HttpOptions {
    HttpOptions {
        header_timeout: Duration::from_secs(30),
        body_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        ..HttpOptions::default()
    }
}

/// Reads until the peer closes (or `limit` passes): what was read and whether it closed.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one whole response (head and `content-length` body) off a
/// keep-alive connection.
async fn read_one_response(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if body.len() >= len {
                return out;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("answered in time")
            .expect("read");
        assert!(n > 0, "closed mid-response");
        out.extend_from_slice(&buf[..n]);
    }
}

/// Status and JSON body of a raw HTTP/1.1 response.
fn parse_response(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

// ---- timeouts ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_headers_are_cut_after_the_header_timeout() {
    let s = Srv::start(
        HttpOptions {
            header_timeout: Duration::from_millis(400),
            ..opts()
        },
        Router::new(),
        "127.0.0.1:0",
    )
    .await;
    let started = Instant::now();
    // Half a request, then nothing (slowloris); and a connection that never speaks.
    let mut half = TcpStream::connect(s.addr).await.expect("connect");
    half.write_all(b"GET /v2.0/networks HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    let mut mute = TcpStream::connect(s.addr).await.expect("connect");
    s.serves().await;
    let (_, closed) = read_until_closed(&mut half, Duration::from_secs(15)).await;
    assert!(closed, "a stalled header must be cut");
    let (_, closed) = read_until_closed(&mut mute, Duration::from_secs(15)).await;
    assert!(closed, "a silent connection must be cut");
    assert!(started.elapsed() >= Duration::from_millis(400));
    s.serves().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_header_is_cut_too() {
    let s = Srv::start(
        HttpOptions {
            header_timeout: Duration::from_millis(500),
            ..opts()
        },
        Router::new(),
        "127.0.0.1:0",
    )
    .await;
    let mut c = TcpStream::connect(s.addr).await.expect("connect");
    c.write_all(b"GET /v2.0/networks HTTP/1.1\r\n")
        .await
        .expect("write");
    // One header byte every 100 ms never completes the head in time.
    let mut closed = false;
    for _ in 0..150 {
        if c.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut b = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(100), c.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "a trickling header must be cut");
    s.serves().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_body_is_cut_after_the_body_timeout() {
    let s = Srv::start(
        HttpOptions {
            body_timeout: Duration::from_millis(400),
            ..opts()
        },
        Router::new(),
        "127.0.0.1:0",
    )
    .await;
    let started = Instant::now();
    let mut c = TcpStream::connect(s.addr).await.expect("connect");
    c.write_all(
        b"POST /v2.0/networks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"network\":",
    )
    .await
    .expect("write");
    s.serves().await;
    let (raw, closed) = read_until_closed(&mut c, Duration::from_secs(15)).await;
    assert!(closed, "a stalled body must be cut");
    assert!(started.elapsed() >= Duration::from_millis(400));
    let (status, body) = parse_response(&raw);
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(body["NeutronError"]["type"], "HTTPRequestTimeout");
    // Nothing was created.
    let r: Value = reqwest::get(s.url("/v2.0/networks"))
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(r["networks"], Value::Array(Vec::new()));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let s = Srv::start(
        HttpOptions {
            idle_timeout: Duration::from_millis(400),
            ..opts()
        },
        Router::new(),
        "127.0.0.1:0",
    )
    .await;
    let mut c = TcpStream::connect(s.addr).await.expect("connect");
    let mut idle_from = Instant::now();
    for _ in 0..2 {
        c.write_all(b"GET /v2.0/networks HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let raw = read_one_response(&mut c).await;
        // The connection is idle from its last response on (a sleep on a
        // loaded machine may last much longer than asked, so the bound
        // below counts from here, not from after it).
        idle_from = Instant::now();
        assert!(
            raw.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&raw)
        );
        // Within the idle timeout the connection is reused.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, closed) = read_until_closed(&mut c, Duration::from_secs(15)).await;
    assert!(closed, "an idle keep-alive connection must be closed");
    assert!(idle_from.elapsed() >= Duration::from_millis(300));
    s.stop().await;
}

/// An event stream is not an idle connection: it stays open past the idle
/// timeout and still delivers, and it ends (rather than holding the stop
/// up) when the server stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_outlive_the_idle_timeout_and_end_at_stop() {
    let s = Srv::start(
        HttpOptions {
            idle_timeout: Duration::from_millis(300),
            ..opts()
        },
        Router::new(),
        "127.0.0.1:0",
    )
    .await;
    let mut c = TcpStream::connect(s.addr).await.expect("connect");
    c.write_all(b"GET /switchyard/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let read_until = |seen: &Vec<u8>, what: &str| String::from_utf8_lossy(seen).contains(what);
    while !read_until(&seen, "event: ready") {
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("ready in time")
            .expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(read_until(&seen, "text/event-stream"));
    // Three idle timeouts without a byte either way.
    tokio::time::sleep(Duration::from_millis(900)).await;
    s.serves().await;
    let r = reqwest::Client::new()
        .post(s.url("/v2.0/networks"))
        .json(&serde_json::json!({"network": {"name": "streamed"}}))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 201);
    while !read_until(&seen, "event: change") {
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("the change in time")
            .expect("read");
        assert!(
            n > 0,
            "the stream was closed: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    s.stop().await;
    let (_, closed) = read_until_closed(&mut c, Duration::from_secs(10)).await;
    assert!(closed, "the stream ends when the server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_outlive_the_http_timeouts() {
    let echo = Router::new().route(
        "/echo",
        get(|ws: WebSocketUpgrade| async move {
            ws.on_upgrade(|mut socket| async move {
                while let Some(Ok(m)) = socket.recv().await {
                    if let Message::Text(t) = m
                        && socket.send(Message::Text(t)).await.is_err()
                    {
                        break;
                    }
                }
            })
        }),
    );
    let s = Srv::start(
        HttpOptions {
            header_timeout: Duration::from_millis(200),
            body_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(200),
            ..opts()
        },
        echo,
        "127.0.0.1:0",
    )
    .await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/echo", s.addr))
        .await
        .expect("upgrade");
    assert_eq!(resp.status(), 101);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    ws.send(tokio_tungstenite::tungstenite::Message::text("still here"))
        .await
        .expect("send after the timeouts");
    let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("echo in time")
        .expect("stream open")
        .expect("message");
    assert_eq!(back.into_text().expect("text").as_str(), "still here");
    // The southbound endpoint still upgrades (for an enrolled node).
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/switchyard/v1/southbound", s.addr),
    )
    .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", s.token).parse().expect("header"),
    );
    let (sb, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("southbound upgrade");
    assert_eq!(resp.status(), 101);
    drop(sb);
    drop(ws);
    s.stop().await;
}

// ---- connection limit -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_and_logged_once() {
    let s = Srv::start(
        HttpOptions {
            max_connections: 4,
            ..opts()
        },
        Router::new(),
        "127.0.0.1:0",
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(s.addr).await.expect("connect"));
    }
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let mut c = TcpStream::connect(s.addr).await.expect("connect");
        let _ = c
            .write_all(b"GET /v2.0/networks HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let (raw, closed) = read_until_closed(&mut c, Duration::from_secs(10)).await;
        assert!(closed, "an excess connection is closed");
        let (status, body) = parse_response(&raw);
        assert_eq!(status, 503, "{}", String::from_utf8_lossy(&raw));
        assert_eq!(body["NeutronError"]["type"], "HTTPServiceUnavailable");
    }
    let marker = format!("connection limit reached on {}", s.addr);
    assert_eq!(logs().matches(&marker).count(), 1, "{}", logs());
    drop(held);
    // Freed slots serve again, and the recovery is logged.
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(s.url("/v2.0/networks")).await
            && r.status() == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the server serves again once connections close");
    let recovered = format!("accepting connections again on {}", s.addr);
    assert_eq!(logs().matches(&recovered).count(), 1, "{}", logs());
    s.stop().await;
}

// ---- error bodies ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_outside_handlers_are_neutron_errors() {
    let extra = Router::new()
        .route(
            "/extra/{n}",
            get(|Path(n): Path<u32>| async move { n.to_string() }),
        )
        .route(
            "/compute/v2.1/things/{n}",
            get(|Path(n): Path<u32>| async move { n.to_string() }),
        )
        .route(
            "/extra",
            get(
                |Query(q): Query<std::collections::HashMap<String, u32>>| async move {
                    q.len().to_string()
                },
            ),
        );
    let s = Srv::start(opts(), extra, "127.0.0.1:0").await;
    let client = reqwest::Client::new();
    let check = |status: u16, want: u16, kind: &str, body: &Value| {
        assert_eq!(status, want, "{body}");
        assert_eq!(body["NeutronError"]["type"], kind, "{body}");
        assert!(body["NeutronError"]["message"].is_string(), "{body}");
        assert_eq!(body["NeutronError"]["detail"], "", "{body}");
    };
    let get = |path: &str| {
        let c = client.clone();
        let url = s.url(path);
        async move {
            let r = c.get(url).send().await.expect("sent");
            let st = r.status().as_u16();
            (st, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (st, b) = get("/extra/notanumber").await;
    check(st, 400, "HTTPBadRequest", &b);
    let (st, b) = get("/extra/%FF").await;
    check(st, 400, "HTTPBadRequest", &b);
    let (st, b) = get("/extra?a=%FF").await;
    check(st, 400, "HTTPBadRequest", &b);
    let (st, b) = get("/extra?a=notanumber").await;
    check(st, 400, "HTTPBadRequest", &b);
    // Under the compute API the same rejection is a Nova fault.
    let (st, b) = get("/compute/v2.1/things/x").await;
    assert_eq!(st, 400);
    assert_eq!(b["badRequest"]["code"], 400, "{b}");
    assert!(b["badRequest"]["message"].is_string(), "{b}");
    // Too many header fields, a too long URI, a chunked body over the limit.
    let mut req = client.get(s.url("/v2.0/networks"));
    for i in 0..120 {
        req = req.header(format!("x-h{i}"), "1");
    }
    let r = req.send().await.expect("sent");
    let st = r.status().as_u16();
    check(
        st,
        431,
        "HTTPRequestHeaderFieldsTooLarge",
        &r.json().await.unwrap_or(Value::Null),
    );
    let (st, b) = get(&format!("/v2.0/networks?name={}", "n".repeat(40_000))).await;
    check(st, 414, "HTTPRequestURITooLong", &b);

    let mut c = TcpStream::connect(s.addr).await.expect("connect");
    c.write_all(b"POST /v2.0/networks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("head");
    let chunk = vec![b'a'; 64 * 1024];
    let mut frame = Vec::new();
    write!(frame, "{:x}\r\n", chunk.len()).expect("fmt");
    frame.extend_from_slice(&chunk);
    frame.extend_from_slice(b"\r\n");
    for _ in 0..(switchyard_api::MAX_BODY / chunk.len() + 2) {
        if c.write_all(&frame).await.is_err() {
            break;
        }
    }
    let (raw, _) = read_until_closed(&mut c, Duration::from_secs(10)).await;
    let (st, b) = parse_response(&raw);
    check(st, 413, "HTTPRequestEntityTooLarge", &b);
    s.serves().await;
    s.stop().await;
}

// ---- links -----------------------------------------------------------------------------

async fn links_with_host(s: &Srv, host: &str) -> (Vec<String>, Vec<String>) {
    let client = reqwest::Client::new();
    for name in ["a", "b"] {
        let r = client
            .post(s.url("/v2.0/networks"))
            .json(&serde_json::json!({"network": {"name": name}}))
            .send()
            .await
            .expect("create");
        assert_eq!(r.status(), 201);
    }
    let list: Value = client
        .get(s.url("/v2.0/networks?limit=1"))
        .header("host", host)
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let pages = list["networks_links"]
        .as_array()
        .expect("links")
        .iter()
        .map(|l| l["href"].as_str().expect("href").to_string())
        .collect();
    let versions: Value = client
        .get(s.url("/"))
        .header("host", host)
        .send()
        .await
        .expect("versions")
        .json()
        .await
        .expect("json");
    let index: Value = client
        .get(s.url("/v2.0"))
        .header("host", host)
        .send()
        .await
        .expect("index")
        .json()
        .await
        .expect("json");
    let mut docs: Vec<String> = Vec::new();
    collect_hrefs(&versions, &mut docs);
    collect_hrefs(&index, &mut docs);
    (pages, docs)
}

fn collect_hrefs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "href"
                    && let Some(s) = x.as_str()
                {
                    out.push(s.to_string());
                }
                collect_hrefs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_hrefs(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_come_from_the_link_prefix_never_from_the_host_header() {
    let prefix: LinkPrefix = "https://neutron.example.com:9696/network/"
        .parse()
        .expect("prefix");
    let s = Srv::start(
        HttpOptions {
            network_link_prefix: Some(prefix),
            ..opts()
        },
        Router::new(),
        "127.0.0.1:0",
    )
    .await;
    let (pages, docs) = links_with_host(&s, "evil.example:666").await;
    assert!(!pages.is_empty() && !docs.is_empty());
    for href in pages.iter().chain(&docs) {
        assert!(
            href.starts_with("https://neutron.example.com:9696/network/v2.0"),
            "{href}"
        );
        assert!(!href.contains("evil"), "{href}");
    }
    assert!(
        pages[0]
            .starts_with("https://neutron.example.com:9696/network/v2.0/networks?limit=1&marker=")
    );
    s.stop().await;

    // Without a prefix: the address the client connected to, never Host.
    let s = Srv::start(opts(), Router::new(), "127.0.0.1:0").await;
    let (pages, docs) = links_with_host(&s, "evil.example:666").await;
    for href in pages.iter().chain(&docs) {
        assert!(
            href.starts_with(&format!("http://{}/v2.0", s.addr)),
            "{href}"
        );
    }
    s.stop().await;
}

#[test]
fn link_prefixes_are_checked() {
    for bad in [
        "",
        "neutron.example.com",
        "ftp://x/",
        "http://",
        "http://h/a?b=c",
        "http://h/#f",
    ] {
        assert!(bad.parse::<LinkPrefix>().is_err(), "{bad:?} accepted");
    }
    let p: LinkPrefix = "http://[2001:db8::1]:9696".parse().expect("v6");
    assert_eq!(p.as_str(), "http://[2001:db8::1]:9696");
    let p: LinkPrefix = "https://api.example.com/networking/".parse().expect("path");
    assert_eq!(p.as_str(), "https://api.example.com/networking");
}

// ---- shutdown and exposure ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    let slow = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            "done"
        }),
    );
    let s = Srv::start(opts(), slow, "127.0.0.1:0").await;
    let url = s.url("/slow");
    let inflight =
        tokio::spawn(async move { reqwest::get(url).await.expect("answered").text().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.stop().await;
    assert_eq!(inflight.await.expect("task").expect("body"), "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_beyond_loopback_without_auth_is_warned_about() {
    let s = Srv::start(opts(), Router::new(), "0.0.0.0:0").await;
    let marker = s.addr.to_string();
    let warned = || {
        logs().lines().any(|l| {
            l.contains("WARN") && l.contains("without authentication") && l.contains(&marker)
        })
    };
    for _ in 0..50 {
        if warned() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(warned(), "{}", logs());
    s.stop().await;
    let s = Srv::start(opts(), Router::new(), "127.0.0.1:0").await;
    s.serves().await;
    let marker = s.addr.to_string();
    assert!(
        !logs()
            .lines()
            .any(|l| l.contains("without authentication") && l.contains(&marker)),
        "{}",
        logs()
    );
    s.stop().await;
}

// ---- a southbound-only listener ----------------------------------------------

/// What a management network reaches: the node-authenticated agent API and
/// the southbound session, never the noauth Neutron API; and no warning,
/// since everything it serves authenticates its caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_southbound_listener_serves_only_what_agents_use() {
    logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let app = switchyard_api::open_app(
        &dir.path().join("t.db"),
        Durability::Process,
        &Ml2Config::default(),
        "admin",
    )
    .expect("app");
    let token = app
        .shared
        .credentials
        .enroll("compute-2", switchyard_proto::Role::Vrouter);
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(switchyard_api::serve_southbound(
        listener,
        app,
        opts(),
        async {
            let _ = rx.await;
        },
    ));
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let c = reqwest::Client::new();
    for path in ["/v2.0/networks", "/switchyard/v1/nodes", "/"] {
        let r = c.get(url(path)).send().await.expect("answered");
        assert_eq!(r.status(), 404, "{path}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["NeutronError"]["type"], "HTTPNotFound", "{path}");
    }
    let r = c
        .post(url("/v2.0/networks"))
        .json(&serde_json::json!({"network": {"name": "n"}}))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 404);
    let report = serde_json::json!({"agent": {"host": "compute-2", "agent_type": "vRouter agent"}});
    let r = c
        .post(url("/switchyard/v1/agents/report"))
        .json(&report)
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 401);
    let r = c
        .post(url("/switchyard/v1/agents/report"))
        .bearer_auth(&token)
        .json(&report)
        .send()
        .await
        .expect("answered");
    let status = r.status();
    let body: Value = r.json().await.expect("json");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["agent"]["host"], "compute-2");
    // A WebSocket upgrade without a node credential.
    let r = c
        .get(url("/switchyard/v1/southbound"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 401);
    let marker = format!(":{port}");
    assert!(
        !logs()
            .lines()
            .any(|l| l.contains("without authentication") && l.contains(&marker)),
        "{}",
        logs()
    );
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("stops")
        .expect("task")
        .expect("served");
}
