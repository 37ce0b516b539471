//! The southbound endpoint: one WebSocket session per node agent
//! (`GET /switchyard/v1/southbound`), carrying JSON [`ToAgent`] / [`FromAgent`]
//! messages (docs/southbound.md).
//!
//! A session starts with the agent's `Hello`, which registers the agent (as its
//! heartbeats do afterwards); the controller answers with a snapshot of the
//! node's desired state, then streams the deltas each commit produces for that
//! node. A nack or a lagging session gets a fresh snapshot. Port up/down reports
//! become port status changes.

use std::time::Duration;

use axum::extract::State as AxState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde_json::{Value, json};
use switchyard_ml2::{Ctx, ops};
use switchyard_proto::{FromAgent, Role, ToAgent};
use tokio::sync::broadcast::error::RecvError;

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
        .map_err(|e| e.message)
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
    let mut sent = send_snapshot(&app, &mut socket, &host).await?;
    let result = loop {
        tokio::select! {
            _ = closing.changed() => {
                let _ = socket.send(Message::Close(None)).await;
                break Ok(());
            }
            incoming = socket.recv() => {
                let Some(Ok(msg)) = incoming else { break Ok(()) };
                let text = match msg {
                    Message::Text(t) => t,
                    Message::Close(_) => break Ok(()),
                    _ => continue,
                };
                let Ok(m) = serde_json::from_str::<FromAgent>(&text) else {
                    break Err(format!("{host}: unreadable message"));
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
                        sent = send_snapshot(&app, &mut socket, &host).await?;
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
                            tracing::info!(%host, error = %e, "port status not applied");
                        }
                    }
                    FromAgent::Hello { .. } => break Err(format!("{host}: second hello")),
                }
            }
            d = rx.recv() => match d {
                Ok(deltas) => {
                    if let Some(delta) = deltas.get(&host)
                        && delta.version > sent
                    {
                        send(&mut socket, &ToAgent::Delta(delta.clone())).await?;
                        sent = delta.version;
                        app.shared.node_status(&host, |s| s.sent = sent);
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    sent = send_snapshot(&app, &mut socket, &host).await?;
                }
                Err(RecvError::Closed) => break Ok(()),
            },
        }
    };
    app.shared.node_status(&host, |s| s.connected = false);
    result
}
