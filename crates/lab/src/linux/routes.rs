//! The lab API of a Linux lab, with the emulated lab's paths and shapes (so
//! `switchyard verify` runs against either): `GET /switchyard/v1/lab`,
//! `GET|POST /switchyard/v1/lab/guests`, `GET|DELETE
//! /switchyard/v1/lab/guests/{name}`, `POST
//! /switchyard/v1/lab/guests/{name}/ping` (real `ping` in the guest) and
//! `PUT|DELETE …/stream` (a `ping` every 10 ms until stopped, with what it
//! lost and the longest outage), and `POST …/exec` (one shell command line
//! in the guest: a QEMU guest's serial console, so it works whatever its
//! network does). Pings from the internet node and the TCP tests (`…/listen`,
//! `…/connect`, `…/tcp-stream`): `501`.

use std::net::Ipv4Addr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use switchyard_api::http::{empty, error, json as reply, json_body};
use switchyard_model::NeutronError;

use super::guests::{GuestError, Guests};
use crate::topology::{Role, Topology};

const MAX_PING_COUNT: u64 = 1_000;
const MAX_PING_RUN_MS: u64 = 60_000;

#[derive(Clone)]
struct Ctx {
    guests: Guests,
    topology: Topology,
}

pub fn router(guests: Guests, topology: Topology) -> Router {
    Router::new()
        .route("/switchyard/v1/lab", get(show_lab))
        .route("/switchyard/v1/lab/guests", get(list).post(create))
        .route("/switchyard/v1/lab/guests/{name}", get(show).delete(delete))
        .route("/switchyard/v1/lab/guests/{name}/ping", post(ping))
        .route("/switchyard/v1/lab/guests/{name}/exec", post(exec))
        .route(
            "/switchyard/v1/lab/guests/{name}/stream",
            axum::routing::put(start_stream).delete(stop_stream),
        )
        .route(
            "/switchyard/v1/lab/guests/{name}/listen",
            get(tcp_not_built).put(tcp_not_built).delete(tcp_not_built),
        )
        .route(
            "/switchyard/v1/lab/guests/{name}/connect",
            post(tcp_not_built),
        )
        .route(
            "/switchyard/v1/lab/guests/{name}/tcp-stream",
            get(tcp_not_built).put(tcp_not_built).delete(tcp_not_built),
        )
        .route("/switchyard/v1/lab/internet/ping", post(not_built))
        .method_not_allowed_fallback(not_allowed)
        .layer(axum::middleware::from_fn(switchyard_api::http::admin_only))
        .with_state(Ctx { guests, topology })
}

async fn not_allowed() -> Response {
    switchyard_api::http::method_not_allowed()
}

async fn not_built() -> Response {
    error(&NeutronError::not_implemented(
        "Pings from the internet node are not built for Linux-mode labs yet.",
    ))
}

/// The emulated guests' TCP tests; a Linux guest's kernel TCP is not wired to them.
async fn tcp_not_built() -> Response {
    error(&NeutronError::not_implemented(
        "TCP listen, connect and tcp-stream are not built for Linux-mode labs yet.",
    ))
}

async fn start_stream(State(c): State<Ctx>, Path(name): Path<String>, body: Bytes) -> Response {
    let r = async {
        let p = member(&body, "stream")?;
        if let Some(k) = p
            .keys()
            .find(|k| !["target", "interval_ms"].contains(&k.as_str()))
        {
            return Err(NeutronError::invalid_input(format!(
                "Unrecognized attribute(s) '{k}'"
            )));
        }
        let target: Ipv4Addr = string(&p, "target")?
            .parse()
            .map_err(|_| NeutronError::invalid_input("'target' must be an IPv4 address"))?;
        let interval = number(&p, "interval_ms", 10, 10_000)?.max(10);
        c.guests
            .start_stream(&name, target, interval)
            .await
            .map_err(|e| guest_error(&e))?;
        Ok(json!({"stream": {"from": name, "target": target, "interval_ms": interval}}))
    }
    .await;
    match r {
        Ok(v) => reply(202, v),
        Err(e) => error(&e),
    }
}

async fn stop_stream(State(c): State<Ctx>, Path(name): Path<String>) -> Response {
    match c.guests.stop_stream(&name).await {
        Ok(Some(r)) => reply(200, json!({"stream": r})),
        Ok(None) => error(&NeutronError::not_found(
            "StreamNotFound",
            format!("Guest {name} runs no ping stream."),
        )),
        Err(e) => error(&guest_error(&e)),
    }
}

/// The longest command line and the longest a command may run.
const MAX_COMMAND: usize = 4096;
const MAX_EXEC_S: u64 = 300;

async fn exec(State(c): State<Ctx>, Path(name): Path<String>, body: Bytes) -> Response {
    let r = async {
        let p = member(&body, "exec")?;
        if let Some(k) = p
            .keys()
            .find(|k| !["command", "timeout_s"].contains(&k.as_str()))
        {
            return Err(NeutronError::invalid_input(format!(
                "Unrecognized attribute(s) '{k}'"
            )));
        }
        let command = string(&p, "command")?;
        if command.trim().is_empty()
            || command.len() > MAX_COMMAND
            || command.contains(['\n', '\r', '\0'])
        {
            return Err(NeutronError::invalid_input(format!(
                "'command' must be one non-empty line of at most {MAX_COMMAND} bytes"
            )));
        }
        let timeout = number(&p, "timeout_s", 30, MAX_EXEC_S)?.max(1);
        c.guests
            .exec(&name, &command, Duration::from_secs(timeout))
            .await
            .map_err(|e| guest_error(&e))
    }
    .await;
    match r {
        Ok(o) => reply(200, json!({"exec": {"status": o.status, "output": o.text}})),
        Err(e) => error(&e),
    }
}

fn guest_error(e: &GuestError) -> NeutronError {
    use GuestError as G;
    let kind = match e {
        G::BadName => "InvalidInput",
        G::Exists(_) => "GuestExists",
        G::NotFound(_) => "GuestNotFound",
        G::PortNotFound(_) => "PortNotFound",
        G::NotBound(_) => "PortNotBound",
        G::PortInUse(..) => "PortInUse",
        G::HostNotInLab(_) => "HostNotInLab",
        G::VifType(_) => "VifTypeNotSupported",
        G::NotPlugged { .. } => "PortNotPlugged",
        G::NoLease(..) => "GuestHasNoAddress",
        G::NoVf(_) => "PortNotPlugged",
        G::NotPrepared(..) => "GuestNotMigrating",
        G::Netns(_) | G::Vm(..) => "LabError",
        G::Console(..) => "GuestConsoleError",
        G::Migration(..) => "MigrationFailed",
    };
    match e {
        G::NotFound(_) | G::PortNotFound(_) => NeutronError::not_found(kind, e.to_string()),
        G::BadName => NeutronError::bad_request(kind, e.to_string()),
        G::Netns(_) | G::Vm(..) | G::Console(..) => NeutronError::new(500, kind, e.to_string()),
        _ => NeutronError::conflict(kind, e.to_string()),
    }
}

fn member(body: &Bytes, key: &str) -> Result<Map<String, Value>, NeutronError> {
    let mut b = json_body(body)?;
    match b.remove(key) {
        Some(Value::Object(m)) => Ok(m),
        _ => Err(NeutronError::http_bad_request(format!(
            "Resource body required: expected an object under '{key}'"
        ))),
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

fn string(m: &Map<String, Value>, key: &str) -> Result<String, NeutronError> {
    m.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| NeutronError::invalid_input(format!("'{key}' is required, a string")))
}

fn internet(t: &Topology) -> Value {
    let Some(n) = t.nodes.iter().find(|n| n.role == Role::Internet) else {
        return Value::Null;
    };
    let Some((net, len)) = n.hosts.as_deref().and_then(crate::topology::parse_prefix) else {
        return Value::Null;
    };
    json!({"address": n.external_ip, "hosts": format!("{net}/{len}"),
        "probe": Ipv4Addr::from(u32::from(net) | 1)})
}

async fn show_lab(State(c): State<Ctx>) -> Response {
    let nodes: Vec<&str> = c.topology.nodes.iter().map(|n| n.name.as_str()).collect();
    reply(
        200,
        json!({"lab": {"mode": "linux", "nodes": nodes, "guests": c.guests.list(),
            "internet": internet(&c.topology)}}),
    )
}

async fn list(State(c): State<Ctx>) -> Response {
    reply(200, json!({"guests": c.guests.list()}))
}

async fn show(State(c): State<Ctx>, Path(name): Path<String>) -> Response {
    match c.guests.get(&name) {
        Ok(g) => reply(200, json!({"guest": g})),
        Err(e) => error(&guest_error(&e)),
    }
}

async fn delete(State(c): State<Ctx>, Path(name): Path<String>) -> Response {
    let g = c.guests.clone();
    let r = tokio::task::spawn_blocking(move || g.delete(&name)).await;
    match r {
        Ok(Ok(())) => empty(204),
        Ok(Err(e)) => error(&guest_error(&e)),
        Err(_) => error(&NeutronError::internal()),
    }
}

async fn create(State(c): State<Ctx>, body: Bytes) -> Response {
    let r = async {
        let g = member(&body, "guest")?;
        if let Some(k) = g
            .keys()
            .find(|k| !["name", "port_id", "timeout_s"].contains(&k.as_str()))
        {
            return Err(NeutronError::invalid_input(format!(
                "Unrecognized attribute(s) '{k}'"
            )));
        }
        let name = string(&g, "name")?;
        let port = string(&g, "port_id")?;
        let timeout = number(&g, "timeout_s", 30, 120)?;
        c.guests
            .boot(&name, &port, Duration::from_secs(timeout))
            .await
            .map_err(|e| guest_error(&e))
    }
    .await;
    match r {
        Ok(g) => reply(201, json!({"guest": g})),
        Err(e) => error(&e),
    }
}

async fn ping(State(c): State<Ctx>, Path(name): Path<String>, body: Bytes) -> Response {
    let r = async {
        let p = member(&body, "ping")?;
        if let Some(k) = p
            .keys()
            .find(|k| !["target", "count", "interval_ms"].contains(&k.as_str()))
        {
            return Err(NeutronError::invalid_input(format!(
                "Unrecognized attribute(s) '{k}'"
            )));
        }
        let target: Ipv4Addr = string(&p, "target")?
            .parse()
            .map_err(|_| NeutronError::invalid_input("'target' must be an IPv4 address"))?;
        if target.is_unspecified() || target.is_broadcast() || target.is_multicast() {
            return Err(NeutronError::invalid_input(
                "'target' must be a unicast address",
            ));
        }
        let count = number(&p, "count", 5, MAX_PING_COUNT)?;
        let interval = number(&p, "interval_ms", 100, 10_000)?.max(10);
        if count * interval > MAX_PING_RUN_MS {
            return Err(NeutronError::invalid_input(format!(
                "a ping run may last at most {MAX_PING_RUN_MS} ms (count x interval_ms)"
            )));
        }
        c.guests
            .ping(&name, target, count, interval)
            .await
            .map_err(|e| guest_error(&e))
    }
    .await;
    match r {
        Ok(p) => reply(200, json!({"ping": p})),
        Err(e) => error(&e),
    }
}
