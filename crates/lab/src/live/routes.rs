//! The lab's HTTP endpoints, served beside the Neutron API:
//!
//! * `GET /switchyard/v1/lab` — nodes, guests, the lab clock;
//! * `GET|POST /switchyard/v1/lab/guests` — list guests; boot one on a port:
//!   `{"guest": {"name": "vm1", "port_id": "…", "timeout_s": 10}}` (the port
//!   must be bound; the guest goes to the binding's host, with the port's MAC);
//! * `GET|DELETE /switchyard/v1/lab/guests/{name}`;
//! * `POST /switchyard/v1/lab/guests/{name}/ping` —
//!   `{"ping": {"target": "10.0.0.5", "count": 10, "interval_ms": 10}}`, answered
//!   when the run is over;
//! * `PUT|DELETE /switchyard/v1/lab/guests/{name}/stream` — start a ping
//!   stream (`{"stream": {"target": …, "interval_ms": 10}}`) that runs until
//!   stopped (at most 65,535 requests); DELETE stops it and reports it, with
//!   `lost` and `outage_ms` (what a migration under it is measured with);
//! * `GET|PUT|DELETE /switchyard/v1/lab/guests/{name}/listen` — the guest
//!   listens on a TCP port (`{"listen": {"port": 22}}`), counting the bytes
//!   and lines each accepted connection brings; DELETE stops one port
//!   (same body) or, without a body, all; accepted connections carry on;
//! * `POST /switchyard/v1/lab/guests/{name}/connect` —
//!   `{"connect": {"target": "10.0.0.5", "port": 22, "timeout_ms": 2000}}`:
//!   one connection attempt, answered `established`, `refused` (a RST:
//!   nobody listens) or `timed_out` (no answer: a filter dropped it), then
//!   closed;
//! * `GET|PUT|DELETE /switchyard/v1/lab/guests/{name}/tcp-stream` — one TCP
//!   connection sending a line every `interval_ms`
//!   (`{"tcp_stream": {"target": …, "port": …, "interval_ms": 100}}`);
//!   GET reports it, DELETE closes and reports it: lines sent, acknowledged,
//!   received by the target guest's listener, and whether it is still
//!   established.
//!
//! Errors use Neutron's `NeutronError` body, like the rest of the API.

use std::net::Ipv4Addr;
use std::time::Duration as StdDuration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use smoltcp::time::Duration;
use switchyard_api::App;
use switchyard_api::http::{empty, error, json as reply, json_body};
use switchyard_dataplane::frames::mac_serde::parse_mac;
use switchyard_model::NeutronError;

use super::hypervisor::{Hypervisor, HypervisorError};
use crate::guest::tcp::TcpError;

/// Longest a boot waits for the agent to plug the port.
const MAX_PLUG_TIMEOUT_S: u64 = 120;
const DEFAULT_PLUG_TIMEOUT_S: u64 = 15;
const MAX_PING_COUNT: u64 = 10_000;
/// Longest a ping run may last (count × interval).
const MAX_PING_RUN_MS: u64 = 60_000;
/// How long a ping waits for the guest's DHCP to complete.
const ADDRESS_WAIT_S: u64 = 10;
/// Longest a connection attempt may wait for an answer.
const MAX_CONNECT_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;

#[derive(Clone)]
struct Ctx {
    hyp: Hypervisor,
    app: App,
}

pub fn router(hyp: Hypervisor, app: App) -> Router {
    Router::new()
        .route("/switchyard/v1/lab", get(show_lab))
        .route("/switchyard/v1/lab/guests", get(list).post(create))
        .route("/switchyard/v1/lab/guests/{name}", get(show).delete(delete))
        .route("/switchyard/v1/lab/guests/{name}/ping", post(ping))
        .route(
            "/switchyard/v1/lab/guests/{name}/stream",
            axum::routing::put(start_stream).delete(stop_stream),
        )
        .route(
            "/switchyard/v1/lab/guests/{name}/listen",
            get(show_listen).put(listen).delete(unlisten),
        )
        .route("/switchyard/v1/lab/guests/{name}/connect", post(connect))
        .route(
            "/switchyard/v1/lab/guests/{name}/tcp-stream",
            get(show_tcp_stream)
                .put(start_tcp_stream)
                .delete(stop_tcp_stream),
        )
        .route("/switchyard/v1/lab/guests/{name}/exec", post(no_shell))
        .route("/switchyard/v1/lab/internet/ping", post(internet_ping))
        .method_not_allowed_fallback(not_allowed)
        .layer(axum::middleware::from_fn(switchyard_api::http::admin_only))
        .with_state(Ctx { hyp, app })
}

/// The emulated lab's guests are IP stacks without a shell.
async fn no_shell() -> Response {
    error(&NeutronError::not_implemented(
        "The emulated lab's guests have no shell: exec needs a Linux-mode lab (lab up --linux).",
    ))
}

async fn not_allowed() -> Response {
    switchyard_api::http::method_not_allowed()
}

/// Waits (up to [`ADDRESS_WAIT_S`]) for guest `name` to have its address: a
/// guest booted a moment ago may still be in DHCP, as a fresh VM would be.
async fn has_address(c: &Ctx, name: &str) -> Result<(), NeutronError> {
    c.hyp
        .wait_for_address(name, StdDuration::from_secs(ADDRESS_WAIT_S))
        .await
        .map_err(|e| hyp_error(&e))?;
    Ok(())
}

fn hyp_error(e: &HypervisorError) -> NeutronError {
    use HypervisorError as H;
    let kind = match e {
        H::GuestExists(_) => "GuestExists",
        H::GuestNotFound(_) => "GuestNotFound",
        H::BadName(_) => "InvalidInput",
        H::HostNotInLab(_) => "HostNotInLab",
        H::PortInUse(..) => "PortInUse",
        H::NotPlugged { .. } => "PortNotPlugged",
        H::NoAddress(_) => "GuestHasNoAddress",
        H::Lab(..) => "LabError",
        H::Tcp(_, t) => return tcp_error(t, e.to_string()),
    };
    match e {
        H::GuestNotFound(_) => NeutronError::not_found(kind, e.to_string()),
        H::BadName(_) => NeutronError::bad_request(kind, e.to_string()),
        _ => NeutronError::conflict(kind, e.to_string()),
    }
}

fn tcp_error(e: &TcpError, message: String) -> NeutronError {
    use TcpError as T;
    match e {
        T::PortZero => NeutronError::bad_request("InvalidInput", message),
        T::NotListening(_) | T::NotListeningAny => {
            NeutronError::not_found("ListenerNotFound", message)
        }
        T::AlreadyListening(_) => NeutronError::conflict("ListenerExists", message),
        T::TooManyPorts => NeutronError::conflict("TooManyListeners", message),
        T::TooManyAttempts => NeutronError::conflict("TooManyConnectionAttempts", message),
        T::StreamRunning => NeutronError::conflict("TcpStreamExists", message),
        T::Unaddressable(_) => NeutronError::conflict("GuestHasNoRoute", message),
    }
}

fn result(r: Result<Response, NeutronError>) -> Response {
    r.unwrap_or_else(|e| error(&e))
}

/// The object under `key` in a JSON body.
fn member(body: &Bytes, key: &str) -> Result<Map<String, Value>, NeutronError> {
    let mut b = json_body(body)?;
    match b.remove(key) {
        Some(Value::Object(m)) => Ok(m),
        _ => Err(NeutronError::http_bad_request(format!(
            "Resource body required: expected an object under '{key}'"
        ))),
    }
}

fn string(m: &Map<String, Value>, key: &str) -> Result<String, NeutronError> {
    match m.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(NeutronError::invalid_input(format!(
            "'{key}' must be a string"
        ))),
        None => Err(NeutronError::invalid_input(format!("'{key}' is required"))),
    }
}

fn number(m: &Map<String, Value>, key: &str, default: u64, max: u64) -> Result<u64, NeutronError> {
    match m.get(key) {
        None => Ok(default),
        Some(v) => v.as_u64().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
            NeutronError::invalid_input(format!("'{key}' must be an integer from 1 to {max}"))
        }),
    }
}

fn only(m: &Map<String, Value>, keys: &[&str]) -> Result<(), NeutronError> {
    match m.keys().find(|k| !keys.contains(&k.as_str())) {
        Some(k) => Err(NeutronError::invalid_input(format!(
            "Unrecognized attribute(s) '{k}'"
        ))),
        None => Ok(()),
    }
}

async fn show_lab(State(c): State<Ctx>) -> Response {
    let guests = c.hyp.guests();
    let lab = c.hyp.lab();
    let v = json!({"lab": {
        "nodes": lab.node_names(),
        "guests": guests,
        "clock_ms": lab.now.total_millis(),
        "lost_frames": lab.lost_frames,
        "internet": internet(&lab),
        "overflowed_ticks": lab.overflowed_ticks,
    }});
    reply(200, v)
}

/// The internet node: its address, the range of hosts behind it, and the
/// address `switchyard verify` probes (the first of those hosts). Null when
/// the topology has none.
fn internet(lab: &crate::Lab) -> Value {
    let Some(inet) = lab.internet("internet") else {
        return Value::Null;
    };
    let (net, len) = inet.hosts;
    json!({
        "address": inet.ip,
        "hosts": format!("{net}/{len}"),
        "probe": Ipv4Addr::from(u32::from(net) | 1),
    })
}

async fn list(State(c): State<Ctx>) -> Response {
    reply(200, json!({ "guests": c.hyp.guests() }))
}

async fn show(State(c): State<Ctx>, Path(name): Path<String>) -> Response {
    result(
        c.hyp
            .guest(&name)
            .map(|g| reply(200, json!({ "guest": g })))
            .map_err(|e| hyp_error(&e)),
    )
}

async fn delete(State(c): State<Ctx>, Path(name): Path<String>) -> Response {
    result(
        c.hyp
            .unplug(&name)
            .map(|()| empty(204))
            .map_err(|e| hyp_error(&e)),
    )
}

async fn create(State(c): State<Ctx>, body: Bytes) -> Response {
    result(create_inner(&c, &body).await)
}

async fn create_inner(c: &Ctx, body: &Bytes) -> Result<Response, NeutronError> {
    let g = member(body, "guest")?;
    only(&g, &["name", "port_id", "timeout_s"])?;
    let name = string(&g, "name")?;
    let port_id = string(&g, "port_id")?;
    let timeout = number(&g, "timeout_s", DEFAULT_PLUG_TIMEOUT_S, MAX_PLUG_TIMEOUT_S)?;
    let (host, mac) = c.app.shared.read(|_, st| {
        let p = st.ports.get(&port_id).ok_or_else(|| {
            NeutronError::not_found(
                "PortNotFound",
                format!("Port {port_id} could not be found."),
            )
        })?;
        let b = p.active_binding();
        if b.host.is_empty() || b.vif_type == "unbound" {
            return Err(NeutronError::conflict(
                "PortNotBound",
                format!("Port {port_id} is not bound to a host: set binding:host_id first."),
            ));
        }
        if b.vif_type == "binding_failed" {
            return Err(NeutronError::conflict(
                "PortNotBound",
                format!(
                    "Port {port_id} failed to bind on host {} (binding:vif_type binding_failed): \
                     no live agent there can bind a '{}' port on this network.",
                    b.host, b.vnic_type
                ),
            ));
        }
        Ok((b.host.clone(), p.mac_address.to_string()))
    })?;
    let mac = parse_mac(&mac).ok_or_else(NeutronError::internal)?;
    let info = c
        .hyp
        .plug(&name, &port_id, &host, mac, StdDuration::from_secs(timeout))
        .await
        .map_err(|e| hyp_error(&e))?;
    Ok(reply(201, json!({ "guest": info })))
}

async fn ping(State(c): State<Ctx>, Path(name): Path<String>, body: Bytes) -> Response {
    result(ping_inner(&c, Some(&name), &body).await)
}

async fn start_stream(State(c): State<Ctx>, Path(name): Path<String>, body: Bytes) -> Response {
    result(start_stream_inner(&c, &name, &body).await)
}

async fn start_stream_inner(c: &Ctx, name: &str, body: &Bytes) -> Result<Response, NeutronError> {
    let p = member(body, "stream")?;
    only(&p, &["target", "interval_ms"])?;
    let target = unicast_target(&p)?;
    let interval = number(&p, "interval_ms", 10, 10_000)?;
    has_address(c, name).await?;
    c.hyp
        .start_ping(
            name,
            target,
            Duration::from_millis(interval),
            Some(u16::MAX),
        )
        .map_err(|e| hyp_error(&e))?;
    Ok(reply(
        202,
        json!({"stream": {"from": name, "target": target, "interval_ms": interval}}),
    ))
}

async fn stop_stream(State(c): State<Ctx>, Path(name): Path<String>) -> Response {
    result(match c.hyp.stop_ping(&name) {
        Ok(Some(r)) => Ok(reply(200, json!({ "stream": r }))),
        Ok(None) => Err(NeutronError::not_found(
            "StreamNotFound",
            format!("Guest {name} runs no ping stream."),
        )),
        Err(e) => Err(hyp_error(&e)),
    })
}

fn unicast_target(p: &Map<String, Value>) -> Result<Ipv4Addr, NeutronError> {
    let target: Ipv4Addr = string(p, "target")?
        .parse()
        .map_err(|_| NeutronError::invalid_input("'target' must be an IPv4 address"))?;
    if target.is_unspecified() || target.is_broadcast() || target.is_multicast() {
        return Err(NeutronError::invalid_input(format!(
            "'target' must be a unicast address, not {target}"
        )));
    }
    Ok(target)
}

async fn internet_ping(State(c): State<Ctx>, body: Bytes) -> Response {
    result(ping_inner(&c, None, &body).await)
}

/// A ping run from a guest, or (`name` None) from a host on the internet.
async fn ping_inner(c: &Ctx, name: Option<&str>, body: &Bytes) -> Result<Response, NeutronError> {
    let p = member(body, "ping")?;
    only(&p, &["target", "count", "interval_ms"])?;
    let target = unicast_target(&p)?;
    let count = number(&p, "count", 5, MAX_PING_COUNT)?;
    let interval = number(&p, "interval_ms", 100, 10_000)?;
    if count * interval > MAX_PING_RUN_MS {
        return Err(NeutronError::invalid_input(format!(
            "count × interval_ms is {} ms; a ping run may last at most {MAX_PING_RUN_MS} ms",
            count * interval
        )));
    }
    let (count, interval, grace) = (
        u16::try_from(count).unwrap_or(u16::MAX),
        Duration::from_millis(interval),
        Duration::from_millis(1000),
    );
    let report = match name {
        Some(name) => {
            has_address(c, name).await?;
            c.hyp.ping(name, target, count, interval, grace).await
        }
        None => c.hyp.internet_ping(target, count, interval, grace).await,
    }
    .map_err(|e| hyp_error(&e))?;
    Ok(reply(200, json!({ "ping": report })))
}

/// A TCP port: an integer from 1 to 65535, required.
fn tcp_port(m: &Map<String, Value>) -> Result<u16, NeutronError> {
    match m.get("port") {
        None => Err(NeutronError::invalid_input("'port' is required")),
        Some(v) => v
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n != 0)
            .ok_or_else(|| {
                NeutronError::invalid_input("'port' must be an integer from 1 to 65535")
            }),
    }
}

async fn show_listen(State(c): State<Ctx>, Path(name): Path<String>) -> Response {
    result(
        c.hyp
            .listening(&name)
            .map(|l| reply(200, json!({ "listen": l })))
            .map_err(|e| hyp_error(&e)),
    )
}

async fn listen(State(c): State<Ctx>, Path(name): Path<String>, body: Bytes) -> Response {
    result((|| {
        let p = member(&body, "listen")?;
        only(&p, &["port"])?;
        let port = tcp_port(&p)?;
        let l = c.hyp.listen(&name, port).map_err(|e| hyp_error(&e))?;
        Ok(reply(200, json!({ "listen": l })))
    })())
}

/// Stops the port the body names, or every port without a body.
async fn unlisten(State(c): State<Ctx>, Path(name): Path<String>, body: Bytes) -> Response {
    result((|| {
        let port = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            let p = member(&body, "listen")?;
            only(&p, &["port"])?;
            Some(tcp_port(&p)?)
        };
        let (stopped, l) = c.hyp.unlisten(&name, port).map_err(|e| hyp_error(&e))?;
        Ok(reply(
            200,
            json!({"listen": {"stopped": stopped, "connections": l.connections}}),
        ))
    })())
}

async fn connect(State(c): State<Ctx>, Path(name): Path<String>, body: Bytes) -> Response {
    result(connect_inner(&c, &name, &body).await)
}

async fn connect_inner(c: &Ctx, name: &str, body: &Bytes) -> Result<Response, NeutronError> {
    let p = member(body, "connect")?;
    only(&p, &["target", "port", "timeout_ms"])?;
    let target = unicast_target(&p)?;
    let port = tcp_port(&p)?;
    let timeout = number(
        &p,
        "timeout_ms",
        DEFAULT_CONNECT_TIMEOUT_MS,
        MAX_CONNECT_TIMEOUT_MS,
    )?;
    has_address(c, name).await?;
    let r = c
        .hyp
        .connect(name, target, port, Duration::from_millis(timeout))
        .await
        .map_err(|e| hyp_error(&e))?;
    Ok(reply(200, json!({ "connect": r })))
}

async fn show_tcp_stream(State(c): State<Ctx>, Path(name): Path<String>) -> Response {
    result(tcp_stream(&c, &name, false))
}

async fn stop_tcp_stream(State(c): State<Ctx>, Path(name): Path<String>) -> Response {
    result(tcp_stream(&c, &name, true))
}

fn tcp_stream(c: &Ctx, name: &str, stop: bool) -> Result<Response, NeutronError> {
    match c.hyp.tcp_stream(name, stop) {
        Ok(Some(r)) => Ok(reply(200, json!({ "tcp_stream": r }))),
        Ok(None) => Err(NeutronError::not_found(
            "TcpStreamNotFound",
            format!("Guest {name} runs no TCP stream."),
        )),
        Err(e) => Err(hyp_error(&e)),
    }
}

async fn start_tcp_stream(State(c): State<Ctx>, Path(name): Path<String>, body: Bytes) -> Response {
    result(start_tcp_stream_inner(&c, &name, &body).await)
}

async fn start_tcp_stream_inner(
    c: &Ctx,
    name: &str,
    body: &Bytes,
) -> Result<Response, NeutronError> {
    let p = member(body, "tcp_stream")?;
    only(&p, &["target", "port", "interval_ms"])?;
    let target = unicast_target(&p)?;
    let port = tcp_port(&p)?;
    let interval = number(&p, "interval_ms", 100, 10_000)?;
    has_address(c, name).await?;
    let r = c
        .hyp
        .start_tcp_stream(name, target, port, Duration::from_millis(interval))
        .map_err(|e| hyp_error(&e))?;
    Ok(reply(202, json!({ "tcp_stream": r })))
}
