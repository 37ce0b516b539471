//! The southbound endpoint: one WebSocket session per node agent
//! (`GET /switchyard/v1/southbound`), carrying JSON [`ToAgent`] / [`FromAgent`]
//! messages (docs/southbound.md).
//!
//! Trust: the upgrade request must carry a node credential (`Authorization:
//! Bearer TOKEN`, see [`crate::nodeauth`]); the session then speaks for that
//! host in its enrolled role only. A hello naming another host or role is
//! refused with a [`ToAgent::Refused`] saying why. An agent may ack only
//! versions it was sent; anything else ends the session. A newer session of
//! the same node replaces the older, and a session that ends changes only
//! the node it owned. Refused clients are logged once a minute each.
//!
//! The controller answers the hello with a snapshot of the node's desired
//! state, then streams the deltas each commit produces for that node. A nack
//! of a delta gets one snapshot at once; a node that refuses its snapshot is
//! `failed` (with the reason) and gets the next snapshot after a backoff
//! doubling from 1 s to 60 s, so a broken agent cannot make the controller
//! spin. A session silent for `agent_down_time` (a stopped agent, a dead
//! link) is closed. Heartbeats carry the hello's configurations, as Neutron
//! agents' reports do. Port up/down reports become port status changes.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use axum::Extension;
use axum::extract::ConnectInfo;
use axum::extract::State as AxState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};
use switchyard_ml2::{Ctx, ops};
use switchyard_model::NeutronError;
use switchyard_proto::{FromAgent, Role, ToAgent};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::core::{Failure, IntrospectRequest, SessionHandle};
use crate::http;
use crate::nodeauth::{AuthError, Enrolled};
use crate::routes::App;

/// How long an agent has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff between snapshots to a node that refuses them.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Largest message an agent may send (a big gateway's introspection).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Largest `configurations` a hello may carry (they are stored with the agent).
const MAX_CONFIGURATIONS: usize = 64 * 1024;

/// The token of an `Authorization: Bearer TOKEN` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// 401 in Neutron's error shape.
pub fn unauthenticated(e: &AuthError) -> NeutronError {
    NeutronError::new(
        401,
        "HTTPUnauthorized",
        format!("This request needs a node credential (Authorization: Bearer TOKEN): {e}."),
    )
}

/// Who is calling, for the refusal log: the peer address when the server
/// records it.
pub fn peer_of(peer: Option<Extension<ConnectInfo<SocketAddr>>>) -> String {
    peer.map_or_else(
        || "unknown peer".to_string(),
        |Extension(ConnectInfo(a))| a.ip().to_string(),
    )
}

pub async fn upgrade(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: WebSocketUpgrade,
) -> Response {
    let peer = peer_of(peer);
    let token = bearer(&headers).unwrap_or_default().to_string();
    let who = match app.shared.credentials.authenticate(Some(&token)) {
        Ok(who) => who,
        Err(e) => {
            app.shared.refusals.refused(
                &format!("southbound from {peer}: {e}"),
                "southbound: refused a client without a valid node credential",
            );
            return http::error(&unauthenticated(&e));
        }
    };
    ws.max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            // Refusals and violations were logged (rate-limited) already.
            if let Err(e) = session(app, socket, who, token, peer).await {
                tracing::debug!(error = %e, "southbound session ended");
            }
        })
}

fn admin_ctx(app: &App) -> Ctx {
    Ctx::admin(&app.default_project, app.shared.clock.now())
}

/// Runs a blocking model write off the reactor.
async fn write(
    app: &App,
    f: impl FnOnce(&App, &Ctx) -> Result<(), String> + Send + 'static,
) -> Result<(), String> {
    let app2 = app.clone();
    tokio::task::spawn_blocking(move || {
        let ctx = admin_ctx(&app2);
        f(&app2, &ctx)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The agents-table report a node's hello and heartbeats make (with the
/// hello's configurations every time, as Neutron agents report them).
pub fn report(
    app: &App,
    ctx: &Ctx,
    host: &str,
    role: Role,
    conf: &serde_json::Map<String, Value>,
    start: bool,
) -> Result<(), String> {
    let mut body = json!({"host": host, "agent_type": role.agent_type(), "start_flag": start});
    if let Some(o) = body.as_object_mut() {
        o.insert("configurations".into(), Value::Object(conf.clone()));
    }
    let body = body.as_object().cloned().unwrap_or_default();
    app.shared
        .write(
            ctx,
            |_, st, ctx| ops::agents::report_state(st, ctx, &body),
            |_, _, _| Ok(()),
        )
        .map_err(|e| e.message)?;
    if role == Role::Gateway {
        app.shared.schedule_unplaced_routers(ctx);
    }
    Ok(())
}

async fn send(socket: &mut WebSocket, msg: &ToAgent) -> Result<(), String> {
    let text = serde_json::to_string(msg).map_err(|e| e.to_string())?;
    socket
        .send(Message::Text(text.into()))
        .await
        .map_err(|e| e.to_string())
}

/// Tells the agent why it is refused, then closes.
async fn refuse(socket: &mut WebSocket, reason: &str) {
    let _ = send(
        socket,
        &ToAgent::Refused {
            reason: reason.to_string(),
        },
    )
    .await;
    let _ = socket.send(Message::Close(None)).await;
}

async fn hello(
    socket: &mut WebSocket,
) -> Result<(String, Role, serde_json::Map<String, Value>), String> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, socket.recv())
        .await
        .map_err(|_| "no hello".to_string())?
        .ok_or("closed before hello")?
        .map_err(|e| e.to_string())?;
    let Message::Text(text) = first else {
        return Err("the first message must be a JSON hello".into());
    };
    match serde_json::from_str::<FromAgent>(&text) {
        Ok(FromAgent::Hello {
            host,
            role,
            configurations,
            ..
        }) => Ok((host, role, configurations)),
        _ => Err("the first message must be a hello".into()),
    }
}

async fn session(
    app: App,
    mut socket: WebSocket,
    who: Enrolled,
    token: String,
    peer: String,
) -> Result<(), String> {
    let (host, role, configurations) = match hello(&mut socket).await {
        Ok(h) => h,
        Err(e) => {
            app.shared.refusals.refused(
                &format!("southbound {} from {peer}: bad hello", who.host),
                &format!("southbound: {e}"),
            );
            refuse(&mut socket, &e).await;
            return Err(e);
        }
    };
    let conf_len = serde_json::to_string(&configurations).map_or(usize::MAX, |t| t.len());
    let refusal = if conf_len > MAX_CONFIGURATIONS {
        Some(format!(
            "the hello's configurations are {conf_len} bytes; at most {MAX_CONFIGURATIONS} are kept"
        ))
    } else if host != who.host {
        Some(format!(
            "this credential speaks for {}, not for {host}",
            who.host
        ))
    } else if role != who.role {
        Some(format!(
            "{host} is enrolled as a {} node; this agent runs as {}: start it with --role {} (or enroll the node again)",
            who.role.name(),
            role.name(),
            who.role.name()
        ))
    } else {
        None
    };
    if let Some(reason) = refusal {
        app.shared.refusals.refused(
            &format!(
                "southbound {} from {peer}: hello as {host} ({})",
                who.host,
                role.name()
            ),
            &format!("southbound: refused a hello: {reason}"),
        );
        refuse(&mut socket, &reason).await;
        return Err(reason);
    }
    {
        let (h, c) = (host.clone(), configurations.clone());
        write(&app, move |app, ctx| report(app, ctx, &h, role, &c, true)).await?;
    }
    let idle = app
        .shared
        .read(|ml2, _| Ok(ml2.settings.agent_down_time))
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(75));
    let mut closing = app.shared.closing.subscribe();
    // After a restart the compiler may still be catching up: the node waits
    // for its state rather than being sent an empty one, and a node that
    // goes away meanwhile is noticed (its messages wait for the session).
    loop {
        let shutting = tokio::select! {
            () = app.shared.wait_compiled() => break,
            r = closing.wait_for(|c| *c) => r.is_ok(),
            m = socket.recv() => match m {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => continue,
            },
        };
        if shutting {
            let _ = socket.send(Message::Close(None)).await;
        }
        return Ok(());
    }
    // Subscribe before the snapshot, so no commit falls between the two.
    let mut rx = app.shared.deltas.subscribe();
    let (intro_tx, mut intro_rx) = tokio::sync::mpsc::channel::<IntrospectRequest>(16);
    let (replaced_tx, mut replaced) = tokio::sync::watch::channel(false);
    let generation = app.shared.begin_session(
        &host,
        SessionHandle {
            generation: 0,
            role,
            configurations: configurations.clone(),
            introspect: intro_tx,
            replaced: replaced_tx,
        },
    );
    tracing::info!(%host, role = role.name(), %peer, "node agent connected");
    let mut s = Session {
        app: app.clone(),
        host: host.clone(),
        role,
        configurations,
        token,
        generation,
        sent: 0,
        resync: Resync::Normal,
        attempts: 0,
        backoff: Duration::ZERO,
        pending: HashMap::new(),
        next_id: 0,
    };
    let result = s
        .run(
            &mut socket,
            &mut rx,
            &mut closing,
            &mut intro_rx,
            &mut replaced,
            idle,
        )
        .await;
    app.shared.end_session(&host, generation);
    if let Err(e) = &result {
        app.shared.refusals.refused(
            &format!("southbound {host} from {peer}: {e}"),
            &format!("southbound: closed the session of {host}: {e}"),
        );
    }
    result
}

/// Where a session stands with its node's state.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Resync {
    /// Deltas flow.
    Normal,
    /// A snapshot (this version) went out after a nack and is not acked yet.
    Snapshot(u64),
    /// The node refused its snapshot; the next one goes out at `retry_at`.
    Failed { retry_at: Instant },
}

struct Session {
    app: App,
    host: String,
    role: Role,
    configurations: serde_json::Map<String, Value>,
    /// The credential the session was opened with, checked again at each
    /// heartbeat so that revoking a node ends its session too.
    token: String,
    generation: u64,
    sent: u64,
    resync: Resync,
    /// Snapshots refused in a row, and the wait before the next.
    attempts: u32,
    backoff: Duration,
    pending: HashMap<u64, IntrospectRequest>,
    next_id: u64,
}

impl Session {
    fn status(&self, f: impl FnOnce(&mut crate::core::NodeStatus)) {
        self.app
            .shared
            .session_status(&self.host, self.generation, f);
    }

    async fn send_snapshot(&mut self, socket: &mut WebSocket) -> Result<u64, String> {
        let (version, items) = self
            .app
            .shared
            .snapshot(&self.host)
            .ok_or("the compiler has no state to send yet")?;
        send(socket, &ToAgent::Snapshot { version, items }).await?;
        self.sent = self.sent.max(version);
        let sent = self.sent;
        self.status(|s| s.sent = sent);
        Ok(version)
    }

    async fn run(
        &mut self,
        socket: &mut WebSocket,
        rx: &mut tokio::sync::broadcast::Receiver<crate::core::Deltas>,
        closing: &mut tokio::sync::watch::Receiver<bool>,
        intro_rx: &mut tokio::sync::mpsc::Receiver<IntrospectRequest>,
        replaced: &mut tokio::sync::watch::Receiver<bool>,
        idle: Duration,
    ) -> Result<(), String> {
        // The first snapshot is acked like any resync snapshot: a node that
        // cannot run it is failed at once.
        let v = self.send_snapshot(socket).await?;
        self.resync = Resync::Snapshot(v);
        let mut last_heard = Instant::now();
        loop {
            let retry_at = match self.resync {
                Resync::Failed { retry_at } => Some(retry_at),
                _ => None,
            };
            tokio::select! {
                Some(req) = intro_rx.recv() => {
                    self.next_id += 1;
                    self.pending.insert(self.next_id, req);
                    send(socket, &ToAgent::Introspect { id: self.next_id }).await?;
                }
                _ = closing.changed() => {
                    let _ = socket.send(Message::Close(None)).await;
                    return Ok(());
                }
                _ = replaced.changed() => {
                    // A newer session of the node (its agent restarted, say)
                    // took over: this one just ends.
                    tracing::info!(host = %self.host, "session replaced by a newer one of the same node");
                    let _ = socket.send(Message::Close(None)).await;
                    return Ok(());
                }
                _ = tokio::time::sleep_until(last_heard + idle) => {
                    tracing::warn!(host = %self.host, secs = idle.as_secs(), "no word from the node's agent within agent_down_time; closing its session");
                    let _ = socket.send(Message::Close(None)).await;
                    return Ok(());
                }
                _ = async { if let Some(t) = retry_at { tokio::time::sleep_until(t).await } }, if retry_at.is_some() => {
                    let v = self.send_snapshot(socket).await?;
                    self.resync = Resync::Snapshot(v);
                }
                incoming = socket.recv() => {
                    let Some(Ok(msg)) = incoming else { return Ok(()) };
                    last_heard = Instant::now();
                    let text = match msg {
                        Message::Text(t) => t,
                        Message::Close(_) => return Ok(()),
                        _ => continue,
                    };
                    let Ok(m) = serde_json::from_str::<FromAgent>(&text) else {
                        refuse(socket, "unreadable message").await;
                        return Err("unreadable message".into());
                    };
                    self.on_message(socket, m).await?;
                }
                d = rx.recv() => match d {
                    Ok(deltas) => {
                        if matches!(self.resync, Resync::Failed { .. }) {
                            // Out of sequence for a node that refused its
                            // snapshot: the next snapshot carries it.
                            continue;
                        }
                        if let Some(delta) = deltas.get(&self.host)
                            && delta.version > self.sent
                        {
                            send(socket, &ToAgent::Delta(delta.clone())).await?;
                            self.sent = delta.version;
                            let sent = self.sent;
                            self.status(|s| s.sent = sent);
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        if !matches!(self.resync, Resync::Failed { .. }) {
                            let v = self.send_snapshot(socket).await?;
                            self.resync = Resync::Snapshot(v);
                        }
                    }
                    Err(RecvError::Closed) => return Ok(()),
                },
            }
        }
    }

    /// A protocol violation: the agent is told why and the session ends.
    async fn violation(&self, socket: &mut WebSocket, why: String) -> Result<(), String> {
        refuse(socket, &why).await;
        Err(why)
    }

    async fn on_message(&mut self, socket: &mut WebSocket, m: FromAgent) -> Result<(), String> {
        match m {
            FromAgent::Ack { version } => {
                if version > self.sent {
                    let why = format!(
                        "acknowledged version {version}, but the latest version sent is {}",
                        self.sent
                    );
                    return self.violation(socket, why).await;
                }
                let at = switchyard_model::render::iso_time(&self.app.shared.clock.now());
                if let Resync::Snapshot(v) = self.resync
                    && version >= v
                {
                    if self.attempts > 0 {
                        tracing::info!(host = %self.host, version, "node accepted its state again");
                    }
                    self.resync = Resync::Normal;
                    self.attempts = 0;
                    self.backoff = Duration::ZERO;
                }
                let recovered = self.resync == Resync::Normal;
                self.status(|s| {
                    s.acked = s.acked.max(version);
                    s.acked_at = Some(at);
                    if recovered {
                        s.failed = None;
                        s.last_error = None;
                    }
                });
            }
            FromAgent::Nack { version, error } => {
                if version > self.sent {
                    let why = format!(
                        "refused version {version}, but the latest version sent is {}",
                        self.sent
                    );
                    return self.violation(socket, why).await;
                }
                let error: String = error.chars().take(1024).collect();
                match self.resync {
                    Resync::Normal => {
                        // A delta refused (a version missed, say): one snapshot now.
                        tracing::debug!(host = %self.host, version, %error, "node refused a delta; sending a snapshot");
                        self.status(|s| s.last_error = Some(error.clone()));
                        let v = self.send_snapshot(socket).await?;
                        self.resync = Resync::Snapshot(v);
                    }
                    Resync::Snapshot(v) if version == v => {
                        self.attempts += 1;
                        self.backoff = if self.backoff.is_zero() {
                            RETRY_MIN
                        } else {
                            (self.backoff * 2).min(RETRY_MAX)
                        };
                        let backoff = self.backoff;
                        self.resync = Resync::Failed {
                            retry_at: Instant::now() + backoff,
                        };
                        tracing::warn!(host = %self.host, version, attempts = self.attempts, retry_in_s = backoff.as_secs(), %error, "node refused its state; it is failed until it accepts a snapshot");
                        let now = switchyard_model::render::iso_time(&self.app.shared.clock.now());
                        let attempts = self.attempts;
                        self.status(|s| {
                            s.last_error = Some(error.clone());
                            let since = s.failed.as_ref().map_or(now, |f| f.since.clone());
                            s.failed = Some(Failure {
                                since,
                                reason: error,
                                attempts,
                                retry_in_ms: u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                            });
                        });
                    }
                    // Consequences of a refused snapshot (deltas behind it).
                    Resync::Snapshot(_) | Resync::Failed { .. } => {}
                }
            }
            FromAgent::Introspection { id, state } => {
                if let Some(reply) = self.pending.remove(&id) {
                    // The asker may have given up; nothing to do then.
                    let _ = reply.send(*state);
                }
            }
            FromAgent::Heartbeat => {
                let still = self
                    .app
                    .shared
                    .credentials
                    .authenticate(Some(&self.token))
                    .is_ok_and(|w| w.host == self.host && w.role == self.role);
                if !still {
                    let why = format!("the credential of {} was revoked", self.host);
                    tracing::warn!(host = %self.host, "node credential revoked; closing its session");
                    return self.violation(socket, why).await;
                }
                let (h, role, conf) = (self.host.clone(), self.role, self.configurations.clone());
                write(&self.app, move |app, ctx| {
                    report(app, ctx, &h, role, &conf, false)
                })
                .await?;
            }
            FromAgent::PortStatus { port_id, up } => {
                let h = self.host.clone();
                let r = write(&self.app, move |app, ctx| {
                    app.shared
                        .write(
                            ctx,
                            |_, st, ctx| ops::ports::set_device_status(st, ctx, &port_id, &h, up),
                            |_, _, _| Ok(()),
                        )
                        .map_err(|e| e.message)
                })
                .await;
                if let Err(e) = r {
                    // As Neutron's update_device_up: a device reported by a
                    // host that is not the port's (a pre-plugged migration
                    // destination, a port deleted meanwhile) is ignored.
                    tracing::debug!(host = %self.host, error = %e, "port status not applied");
                }
            }
            FromAgent::PortsUp { ports } => {
                let h = self.host.clone();
                let up: BTreeSet<String> = ports.into_iter().collect();
                write(&self.app, move |app, ctx| {
                    app.shared
                        .write(
                            ctx,
                            |_, st, ctx| ops::ports::sync_device_statuses(st, ctx, &h, &up),
                            |_, _, _| Ok(()),
                        )
                        .map_err(|e| e.message)
                })
                .await?;
            }
            FromAgent::Hello { .. } => {
                return self.violation(socket, "a second hello".into()).await;
            }
        }
        Ok(())
    }
}
