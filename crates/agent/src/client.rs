//! The agent's connection to the controller (the edge around the sans-io
//! [`NodeAgent`]): a WebSocket session to `/switchyard/v1/southbound` carrying
//! JSON messages, with heartbeats, and reconnection with exponential backoff.
//! While disconnected the node keeps forwarding with its last applied state; on
//! reconnection the controller's snapshot is applied as a difference.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchyard_proto::{FromAgent, ToAgent};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::NodeAgent;

/// Agents report every 30 s (Neutron's `report_interval`).
pub const HEARTBEAT: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub struct Options {
    /// `ws://host:port/switchyard/v1/southbound`
    pub url: String,
    pub configurations: serde_json::Map<String, serde_json::Value>,
    pub heartbeat: Duration,
}

/// Runs the agent's session until `stop` resolves, reconnecting as needed.
/// `events` carries port up/down reports from the hypervisor side.
pub async fn run(
    agent: Arc<Mutex<NodeAgent>>,
    opts: Options,
    mut events: mpsc::Receiver<FromAgent>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if *stop.borrow() {
            return;
        }
        match session(&agent, &opts, &mut events, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                let host = agent
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .host
                    .clone();
                tracing::info!(%host, error = %e, retry_in_ms = backoff.as_millis() as u64, "controller unreachable; forwarding with the last state");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn session(
    agent: &Arc<Mutex<NodeAgent>>,
    opts: &Options,
    events: &mut mpsc::Receiver<FromAgent>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let (ws, _) = tokio_tungstenite::connect_async(opts.url.as_str())
        .await
        .map_err(|e| e.to_string())?;
    let (mut tx, mut rx) = ws.split();
    let hello = agent
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .hello(opts.configurations.clone());
    let encode = |m: &FromAgent| {
        serde_json::to_string(m)
            .map(|t| Message::Text(t.into()))
            .map_err(|e| e.to_string())
    };
    tx.send(encode(&hello)?).await.map_err(|e| e.to_string())?;
    let mut beat = tokio::time::interval(opts.heartbeat);
    beat.tick().await;
    loop {
        tokio::select! {
            msg = rx.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => return Err("controller closed the session".into()),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.to_string()),
                };
                let m: ToAgent = serde_json::from_str(&text).map_err(|e| format!("unreadable message: {e}"))?;
                let (reply, status) = {
                    let mut a = agent.lock().unwrap_or_else(PoisonError::into_inner);
                    let r = a.handle(&m);
                    (r, a.take_port_status())
                };
                tx.send(encode(&reply)?).await.map_err(|e| e.to_string())?;
                for (port_id, up) in status {
                    tx.send(encode(&FromAgent::PortStatus { port_id, up })?).await.map_err(|e| e.to_string())?;
                }
            }
            _ = beat.tick() => {
                tx.send(encode(&FromAgent::Heartbeat)?).await.map_err(|e| e.to_string())?;
            }
            ev = events.recv() => {
                if let Some(ev) = ev {
                    tx.send(encode(&ev)?).await.map_err(|e| e.to_string())?;
                }
            }
            _ = stop.changed() => {
                let _ = tx.send(Message::Close(None)).await;
                return Ok(());
            }
        }
    }
}
