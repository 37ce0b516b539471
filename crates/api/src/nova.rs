//! Neutron → Nova notifications, as Neutron's `notifiers/nova.py` sends
//! them: every committed transaction's port changes become Nova's
//! `os-server-external-events` for the server the port belongs to
//! (`device_owner` `compute:*`, `device_id` the server's uuid, `tag` the
//! port id):
//!
//! * status `DOWN`/`BUILD` → `ACTIVE`: `network-vif-plugged`, `completed`;
//!   → `ERROR`: `network-vif-plugged`, `failed`;
//! * `ACTIVE` → `DOWN`: `network-vif-unplugged`, `completed`;
//! * a port deleted: `network-vif-deleted`;
//! * its fixed IPs changed, or a floating IP was associated with it or
//!   taken from it: `network-changed` (Nova then refreshes the server's
//!   addresses).
//!
//! Events are queued and sent in batches to `POST {nova}/os-server-external-events`
//! — the first as soon as it comes, the next after `interval` (Neutron's
//! `send_events_interval`) — with the configured token (a service user's,
//! under the embedded identity) or, against a noauth Nova, `X-Roles:
//! admin`. A batch Nova could not take (unreachable, `5xx`) is sent again,
//! three times with growing pauses, then logged and dropped, as a
//! notification is a hint Nova also learns by polling; a `4xx` (say, no such
//! server) is logged, not retried.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use switchyard_model::{Change, Kind, PortStatus, Record, State};

/// One external event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub name: &'static str,
    pub server_uuid: String,
    pub tag: String,
    pub status: &'static str,
}

/// What of a port before the transaction matters for its events.
#[derive(Debug, Clone)]
pub struct PortBefore {
    status: PortStatus,
    fixed_ips: Vec<String>,
    device_owner: String,
    device_id: String,
}

/// What a transaction touched, as it was.
#[derive(Debug, Clone, Default)]
pub struct Before {
    ports: HashMap<String, PortBefore>,
    /// Floating IP → (its port, its address).
    fips: HashMap<String, (Option<String>, String)>,
}

/// The ports and floating IPs of a transaction as they were (touched keys
/// only).
pub fn before(undo: &[(Kind, String, Option<Record>)]) -> Before {
    let mut b = Before::default();
    for (k, id, r) in undo {
        match (k, r) {
            (Kind::Port, Some(Record::Port(p))) => {
                b.ports.insert(
                    id.clone(),
                    PortBefore {
                        status: p.status,
                        fixed_ips: p
                            .fixed_ips
                            .iter()
                            .map(|f| f.ip_address.to_string())
                            .collect(),
                        device_owner: p.device_owner.clone(),
                        device_id: p.device_id.clone(),
                    },
                );
            }
            (Kind::FloatingIp, Some(Record::FloatingIp(f))) => {
                b.fips.insert(
                    id.clone(),
                    (f.port_id.clone(), f.floating_ip_address.to_string()),
                );
            }
            _ => {}
        }
    }
    b
}

fn server_of(device_owner: &str, device_id: &str) -> Option<String> {
    (device_owner.starts_with("compute:") && !device_id.is_empty()).then(|| device_id.to_string())
}

/// The events a committed transaction makes (`state`: after it).
pub fn events(b: &Before, changes: &[Change], state: &State) -> Vec<Event> {
    let before = &b.ports;
    let mut out = Vec::new();
    for (k, id, now) in changes {
        if *k == Kind::FloatingIp {
            fip_changed(b, state, id, now.as_ref(), &mut out);
            continue;
        }
        if *k != Kind::Port {
            continue;
        }
        let Some(Record::Port(p)) = now else {
            // Deleted.
            if let Some(b) = before.get(id)
                && let Some(server) = server_of(&b.device_owner, &b.device_id)
            {
                out.push(Event {
                    name: "network-vif-deleted",
                    server_uuid: server,
                    tag: id.clone(),
                    status: "completed",
                });
            }
            continue;
        };
        let Some(server) = server_of(&p.device_owner, &p.device_id) else {
            continue;
        };
        let old = before.get(id);
        let was = old.map(|b| b.status);
        let ev = |name, status| Event {
            name,
            server_uuid: server.clone(),
            tag: id.clone(),
            status,
        };
        match (was, p.status) {
            (Some(PortStatus::Active), PortStatus::Down) => {
                out.push(ev("network-vif-unplugged", "completed"));
            }
            (w, PortStatus::Active) if w != Some(PortStatus::Active) && w.is_some() => {
                out.push(ev("network-vif-plugged", "completed"));
            }
            (w, PortStatus::Error) if w != Some(PortStatus::Error) && w.is_some() => {
                out.push(ev("network-vif-plugged", "failed"));
            }
            _ => {}
        }
        if let Some(b) = old {
            let ips: Vec<String> = p
                .fixed_ips
                .iter()
                .map(|f| f.ip_address.to_string())
                .collect();
            if b.fixed_ips != ips {
                out.push(ev("network-changed", "completed"));
            }
        }
    }
    out
}

/// A floating IP associated, moved or taken away: `network-changed` for
/// the server of each port it left or joined (once per port).
fn fip_changed(b: &Before, state: &State, id: &str, now: Option<&Record>, out: &mut Vec<Event>) {
    let (old_port, old_addr) = b.fips.get(id).cloned().unwrap_or((None, String::new()));
    let (new_port, new_addr) = match now {
        Some(Record::FloatingIp(f)) => (f.port_id.clone(), f.floating_ip_address.to_string()),
        _ => (None, String::new()),
    };
    if old_port == new_port && old_addr == new_addr {
        return;
    }
    for port in [old_port, new_port].into_iter().flatten() {
        // The port as it is now, or (deleted in this transaction) as it was.
        let server = match state.ports.get(&port) {
            Some(p) => server_of(&p.device_owner, &p.device_id),
            None => b
                .ports
                .get(&port)
                .and_then(|p| server_of(&p.device_owner, &p.device_id)),
        };
        let Some(server) = server else { continue };
        let dup = out
            .iter()
            .any(|e| e.name == "network-changed" && e.tag == port && e.server_uuid == server);
        if !dup {
            out.push(Event {
                name: "network-changed",
                server_uuid: server,
                tag: port,
                status: "completed",
            });
        }
    }
}

/// Where events go and how.
#[derive(Clone)]
pub struct NovaTarget {
    /// `http://HOST:PORT/compute/v2.1` (Nova's endpoint).
    pub url: String,
    /// Where each send's token comes from (`None`: a noauth Nova, told
    /// `X-Roles: admin`).
    pub token: Option<switchyard_identity::TokenSource>,
    /// Neutron's `send_events_interval`.
    pub interval: Duration,
}

/// The queue to the sending task.
#[derive(Clone)]
pub struct Notifier {
    tx: tokio::sync::mpsc::UnboundedSender<Vec<Event>>,
}

impl Notifier {
    /// Starts the sending task (on the current tokio runtime).
    pub fn start(target: NovaTarget) -> Notifier {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(send_loop(target, rx));
        Notifier { tx }
    }

    pub fn send(&self, events: Vec<Event>) {
        if !events.is_empty() {
            let _ = self.tx.send(events);
        }
    }
}

/// How many times a batch is sent before it is dropped.
const ATTEMPTS: u32 = 3;

async fn send_loop(t: NovaTarget, mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<Event>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let url = format!("{}/os-server-external-events", t.url.trim_end_matches('/'));
    while let Some(first) = rx.recv().await {
        let mut batch = first;
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        for attempt in 1..=ATTEMPTS {
            let mut req = http
                .post(&url)
                .header("OpenStack-API-Version", "compute 2.1")
                .json(&serde_json::json!({ "events": batch }));
            match t.token.as_ref() {
                Some(src) => match src.token().await {
                    Ok(tok) => req = req.header("X-Auth-Token", tok),
                    Err(e) => {
                        tracing::warn!(error = %e, events = batch.len(), "no token to notify Nova with; events dropped");
                        break;
                    }
                },
                None => req = req.header("X-Roles", "admin"),
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    tracing::debug!(events = batch.len(), status = %r.status(), "Nova notified");
                    break;
                }
                Ok(r) if r.status() == 401 && attempt < ATTEMPTS => {
                    // Our token expired or was revoked: a new one, at once.
                    if let Some(src) = t.token.as_ref() {
                        src.forget().await;
                    }
                }
                Ok(r) if r.status().is_client_error() => {
                    tracing::info!(events = batch.len(), status = %r.status(), "Nova refused the events");
                    break;
                }
                outcome => {
                    let why = match outcome {
                        Ok(r) => r.status().to_string(),
                        Err(e) => e.to_string(),
                    };
                    if attempt == ATTEMPTS {
                        tracing::warn!(events = batch.len(), error = %why, "failed to notify Nova; events dropped");
                    } else {
                        tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                    }
                }
            }
        }
        if !t.interval.is_zero() {
            tokio::time::sleep(t.interval).await;
        }
    }
}
