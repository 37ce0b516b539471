//! The agent's connection to the controller (the edge around the sans-io
//! [`NodeAgent`]): a WebSocket session to `/switchyard/v1/southbound`
//! carrying JSON messages, authenticated with the node's credential, with
//! heartbeats and reconnection with exponential backoff. While disconnected
//! the node keeps forwarding with its last applied state; on reconnection
//! the controller's snapshot is applied as a difference and the agent reports
//! every port it has up ([`FromAgent::PortsUp`]).
//!
//! A controller that refuses the node (a wrong credential, a role other than
//! the enrolled one) is retried with the longest backoff, and the reason is
//! logged once, not at every attempt.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use switchyard_proto::{FromAgent, ToAgent};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::NodeAgent;

/// Agents report every 30 s (Neutron's `report_interval`).
pub const HEARTBEAT: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The same connection error is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(300);

pub struct Options {
    /// `ws://host:port/switchyard/v1/southbound`
    pub url: String,
    pub configurations: serde_json::Map<String, serde_json::Value>,
    pub heartbeat: Duration,
    /// The node's credential (`switchyard node enroll`).
    pub token: String,
    /// Told after each controller message the agent handled (the Linux I/O
    /// looks for the devices of newly applied interfaces then).
    pub applied: Option<Arc<tokio::sync::Notify>>,
}

/// What the node side tells the session.
#[derive(Debug)]
pub enum Event {
    /// The agent's state changed outside a controller message (a device was
    /// plugged or unplugged): report the port status changes it queued.
    Changed,
    /// A message to send as it is.
    Send(FromAgent),
}

/// Why a session ended.
enum End {
    /// Asked to stop.
    Stop,
    /// The controller refused the node; retrying at once would not help.
    Refused(String),
    /// Anything else (unreachable, closed): retried with backoff.
    Failed(String),
    /// A session that ran (its snapshot applied) ended: reconnect promptly.
    Ended(String),
}

/// Runs the agent's session until `stop` resolves, reconnecting as needed.
/// `events` carries what the hypervisor side changes.
pub async fn run(
    agent: Arc<Mutex<NodeAgent>>,
    opts: Options,
    mut events: mpsc::Receiver<Event>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let host = agent
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .host
        .clone();
    let mut backoff = BACKOFF_MIN;
    let mut last_logged: Option<(String, Instant)> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let (error, refused) = match session(&agent, &opts, &mut events, &mut stop).await {
            End::Stop => return,
            End::Refused(e) => (e, true),
            End::Failed(e) => (e, false),
            End::Ended(e) => {
                backoff = BACKOFF_MIN;
                (e, false)
            }
        };
        if refused {
            backoff = BACKOFF_MAX;
        }
        let repeat = last_logged
            .as_ref()
            .is_some_and(|(e, at)| *e == error && at.elapsed() < LOG_EVERY);
        if !repeat {
            if refused {
                tracing::error!(%host, error = %error, retry_in_ms = backoff.as_millis() as u64, "the controller refuses this node; forwarding with the last state");
            } else {
                tracing::info!(%host, error = %error, retry_in_ms = backoff.as_millis() as u64, "controller unreachable; forwarding with the last state");
            }
            last_logged = Some((error, Instant::now()));
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn encode(m: &FromAgent) -> Result<Message, String> {
    serde_json::to_string(m)
        .map(|t| Message::Text(t.into()))
        .map_err(|e| e.to_string())
}

async fn session(
    agent: &Arc<Mutex<NodeAgent>>,
    opts: &Options,
    events: &mut mpsc::Receiver<Event>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> End {
    match session_inner(agent, opts, events, stop).await {
        Ok(end) | Err(end) => end,
    }
}

async fn session_inner(
    agent: &Arc<Mutex<NodeAgent>>,
    opts: &Options,
    events: &mut mpsc::Receiver<Event>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<End, End> {
    let connect_failed = End::Failed;
    let mut request = opts
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| End::Refused(format!("bad controller URL: {e}")))?;
    let auth = HeaderValue::from_str(&format!("Bearer {}", opts.token))
        .map_err(|_| End::Refused("the node token is not valid header text".into()))?;
    request.headers_mut().insert("authorization", auth);
    let (ws, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(c) => c,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) if resp.status() == 401 => {
            return Err(End::Refused(
                "the controller refused this node's credential (401): enroll the node with `switchyard node enroll` and pass its token".into(),
            ));
        }
        Err(e) => return Err(connect_failed(e.to_string())),
    };
    let (mut tx, mut rx) = ws.split();
    let hello = agent
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .hello(opts.configurations.clone());
    tx.send(encode(&hello).map_err(connect_failed)?)
        .await
        .map_err(|e| connect_failed(e.to_string()))?;
    let mut beat = tokio::time::interval(opts.heartbeat);
    beat.tick().await;
    let mut events_open = true;
    // Once the controller's state was taken, a lost session is retried at
    // the shortest backoff again.
    let mut synced = false;
    let failed = |e: String, synced: bool| {
        if synced {
            End::Ended(e)
        } else {
            End::Failed(e)
        }
    };
    loop {
        let mut out: Vec<FromAgent> = Vec::new();
        tokio::select! {
            msg = rx.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => return Err(failed("the controller closed the session".into(), synced)),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(failed(e.to_string(), synced)),
                };
                let m: ToAgent = serde_json::from_str(&text).map_err(|e| failed(format!("unreadable message: {e}"), synced))?;
                if let ToAgent::Refused { reason } = &m {
                    return Err(End::Refused(format!("refused by the controller: {reason}")));
                }
                let snapshot = matches!(m, ToAgent::Snapshot { .. });
                let mut a = agent.lock().unwrap_or_else(PoisonError::into_inner);
                let reply = a.handle(&m);
                if let Some(n) = &opts.applied {
                    n.notify_one();
                }
                let applied = matches!(reply, FromAgent::Ack { .. });
                synced |= snapshot && applied;
                out.push(reply);
                let changes = a.take_port_status();
                if snapshot && applied {
                    // The whole account, so nothing stale stays ACTIVE.
                    out.push(FromAgent::PortsUp { ports: a.ports_up() });
                } else {
                    out.extend(changes.into_iter().map(|(port_id, up)| FromAgent::PortStatus { port_id, up }));
                }
            }
            _ = beat.tick() => out.push(FromAgent::Heartbeat),
            ev = events.recv(), if events_open => match ev {
                Some(Event::Send(m)) => out.push(m),
                Some(Event::Changed) => {
                    let changes = agent.lock().unwrap_or_else(PoisonError::into_inner).take_port_status();
                    out.extend(changes.into_iter().map(|(port_id, up)| FromAgent::PortStatus { port_id, up }));
                }
                None => events_open = false,
            },
            _ = stop.changed() => {
                let _ = tx.send(Message::Close(None)).await;
                return Ok(End::Stop);
            }
        }
        for m in out {
            tx.send(encode(&m).map_err(|e| failed(e, synced))?)
                .await
                .map_err(|e| failed(e.to_string(), synced))?;
        }
    }
}
