//! The southbound endpoint: one WebSocket session per node agent
//! (`GET /switchyard/v1/southbound`), carrying JSON [`ToAgent`] / [`FromAgent`]
//! messages (docs/southbound.md).
//!
//! A session starts with the agent's `Hello`, which registers the agent (as its
//! heartbeats do afterwards); the controller answers with a snapshot of the
//! node's desired state, then streams the deltas each commit produces for that
//! node. A nack or a lagging session gets a fresh snapshot. Port up/down reports
//! become port status changes.

use std::collections::HashMap;
use std::sync::PoisonError;
use std::time::Duration;

use axum::extract::State as AxState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde_json::{Value, json};
use switchyard_ml2::{Ctx, ops};
use switchyard_proto::{FromAgent, Role, ToAgent};
use tokio::sync::broadcast::error::RecvError;

use crate::core::IntrospectRequest;
use crate::routes::App;

/// How long an agent has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn upgrade(AxState(app): AxState<App>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| async move {
        if let Err(e) = session(app, socket).await {
            tracing::info!(error = %e, "southbound session ended");
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

fn report(
    app: &App,
    ctx: &Ctx,
    host: &str,
    role: Role,
    conf: Option<&serde_json::Map<String, Value>>,
    start: bool,
) -> Result<(), String> {
    let mut body = json!({"host": host, "agent_type": role.agent_type(), "start_flag": start});
    if let (Some(c), Some(o)) = (conf, body.as_object_mut()) {
        o.insert("configurations".into(), Value::Object(c.clone()));
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

async fn send_snapshot(app: &App, socket: &mut WebSocket, host: &str) -> Result<u64, String> {
    let (version, items) = app.shared.snapshot(host);
    send(socket, &ToAgent::Snapshot { version, items }).await?;
    app.shared.node_status(host, |s| s.sent = version);
    Ok(version)
}

async fn session(app: App, mut socket: WebSocket) -> Result<(), String> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, socket.recv())
        .await
        .map_err(|_| "no hello".to_string())?
        .ok_or("closed before hello")?
        .map_err(|e| e.to_string())?;
    let Message::Text(text) = first else {
        return Err("the first message must be a JSON hello".into());
    };
    let Ok(FromAgent::Hello {
        host,
        role,
        configurations,
        ..
    }) = serde_json::from_str::<FromAgent>(&text)
    else {
        return Err("the first message must be a hello".into());
    };
    if host.is_empty() || host.len() > 255 {
        return Err("bad host name".into());
    }
    {
        let (h, c) = (host.clone(), configurations.clone());
        write(&app, move |app, ctx| {
            report(app, ctx, &h, role, Some(&c), true)
        })
        .await?;
    }
    // Subscribe before the snapshot, so no commit falls between the two.
    let mut rx = app.shared.deltas.subscribe();
    let mut closing = app.shared.closing.subscribe();
    app.shared.node_status(&host, |s| s.connected = true);
    let (intro_tx, mut intro_rx) = tokio::sync::mpsc::channel::<IntrospectRequest>(16);
    app.shared
        .sessions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(host.clone(), intro_tx.clone());
    let mut pending: HashMap<u64, IntrospectRequest> = HashMap::new();
    let mut next_id = 0u64;
    let result = session_loop(
        &app,
        &mut socket,
        &host,
        role,
        &mut rx,
        &mut closing,
        &mut intro_rx,
        &mut pending,
        &mut next_id,
    )
    .await;
    {
        // A newer session of the same host may have replaced this one.
        let mut sessions = app
            .shared
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if sessions
            .get(&host)
            .is_some_and(|s| s.same_channel(&intro_tx))
        {
            sessions.remove(&host);
        }
    }
    app.shared.node_status(&host, |s| s.connected = false);
    result
}

#[allow(clippy::too_many_arguments)]
async fn session_loop(
    app: &App,
    socket: &mut WebSocket,
    host: &str,
    role: Role,
    rx: &mut tokio::sync::broadcast::Receiver<crate::core::Deltas>,
    closing: &mut tokio::sync::watch::Receiver<bool>,
    intro_rx: &mut tokio::sync::mpsc::Receiver<IntrospectRequest>,
    pending: &mut HashMap<u64, IntrospectRequest>,
    next_id: &mut u64,
) -> Result<(), String> {
    let app = app.clone();
    let host = host.to_string();
    let mut sent = send_snapshot(&app, socket, &host).await?;
    loop {
        tokio::select! {
            Some(req) = intro_rx.recv() => {
                *next_id += 1;
                pending.insert(*next_id, req);
                send(socket, &ToAgent::Introspect { id: *next_id }).await?;
            }
            _ = closing.changed() => {
                let _ = socket.send(Message::Close(None)).await;
                return Ok(());
            }
            incoming = socket.recv() => {
                let Some(Ok(msg)) = incoming else { return Ok(()) };
                let text = match msg {
                    Message::Text(t) => t,
                    Message::Close(_) => return Ok(()),
                    _ => continue,
                };
                let Ok(m) = serde_json::from_str::<FromAgent>(&text) else {
                    return Err(format!("{host}: unreadable message"));
                };
                match m {
                    FromAgent::Ack { version } => {
                        let at = switchyard_model::render::iso_time(&app.shared.clock.now());
                        app.shared.node_status(&host, |s| {
                            s.acked = s.acked.max(version);
                            s.acked_at = Some(at);
                            s.last_error = None;
                        });
                    }
                    FromAgent::Nack { version, error } => {
                        tracing::warn!(%host, version, %error, "agent refused a version; resending a snapshot");
                        app.shared.node_status(&host, |s| s.last_error = Some(error.clone()));
                        sent = send_snapshot(&app, socket, &host).await?;
                    }
                    FromAgent::Introspection { id, state } => {
                        if let Some(reply) = pending.remove(&id) {
                            // The asker may have given up; nothing to do then.
                            let _ = reply.send(*state);
                        }
                    }
                    FromAgent::Heartbeat => {
                        let h = host.clone();
                        write(&app, move |app, ctx| report(app, ctx, &h, role, None, false)).await?;
                    }
                    FromAgent::PortStatus { port_id, up } => {
                        let h = host.clone();
                        let r = write(&app, move |app, ctx| {
                            app.shared
                                .write(ctx, |_, st, ctx| ops::ports::set_device_status(st, ctx, &port_id, &h, up), |_, _, _| Ok(()))
                                .map_err(|e| e.message)
                        })
                        .await;
                        if let Err(e) = r {
                            // As Neutron's update_device_up: a device reported by a
                            // host that is not the port's (a pre-plugged migration
                            // destination, a port deleted meanwhile) is ignored.
                            tracing::debug!(%host, error = %e, "port status not applied");
                        }
                    }
                    FromAgent::Hello { .. } => return Err(format!("{host}: second hello")),
                }
            }
            d = rx.recv() => match d {
                Ok(deltas) => {
                    if let Some(delta) = deltas.get(&host)
                        && delta.version > sent
                    {
                        send(socket, &ToAgent::Delta(delta.clone())).await?;
                        sent = delta.version;
                        app.shared.node_status(&host, |s| s.sent = sent);
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    sent = send_snapshot(&app, socket, &host).await?;
                }
                Err(RecvError::Closed) => return Ok(()),
            },
        }
    }
}
