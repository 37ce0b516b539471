//! The hypervisor emulation of a running lab: it creates guests (VMs) and plugs
//! their NIC where the node's agent put the Neutron port — a TAP on a vRouter,
//! an OVS port, a VF — exactly as Nova's VIF plugging does once the binding is
//! made, and it runs pings from inside guests.
//!
//! Plugging waits for the agent: a port exists on a node only once the node
//! has applied a version containing it, so a guest is never plugged into
//! nothing. All waiting is on the lab's clock or a real-time deadline; nothing
//! here blocks the lab.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration as StdDuration;

use serde::Serialize;
use smoltcp::time::Duration;
use smoltcp::wire::EthernetAddress;
use switchyard_agent::client::Event;
use switchyard_dataplane::PortNo;
use switchyard_dataplane::frames::mac_serde::format_mac;
use tokio::sync::mpsc;

use crate::guest::PingStream;
use crate::guest::tcp::{Attempt, Listening, StreamReport, TcpError};
use crate::lab::{Lab, LabError};

/// How often waiting code looks at the lab again.
const POLL: StdDuration = StdDuration::from_millis(10);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HypervisorError {
    #[error("Guest {0} already exists")]
    GuestExists(String),
    #[error("Guest {0} could not be found.")]
    GuestNotFound(String),
    #[error("Invalid guest name '{0}': use 1-63 letters, digits, '-', '_' or '.'.")]
    BadName(String),
    #[error("Host {0} is not a node of this lab run by an agent")]
    HostNotInLab(String),
    #[error("Port {0} already has guest {1} plugged in")]
    PortInUse(String, String),
    #[error(
        "Port {port} was not plugged on host {host} within {secs} s (its agent has not applied it)"
    )]
    NotPlugged {
        port: String,
        host: String,
        secs: u64,
    },
    #[error("Guest {0} has no IPv4 address yet (DHCP has not completed)")]
    NoAddress(String),
    #[error("Guest {0}: {1}")]
    Lab(String, String),
    #[error("Guest {0}: {1}")]
    Tcp(String, TcpError),
}

/// A guest as the hypervisor shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GuestInfo {
    pub name: String,
    pub port_id: Option<String>,
    pub host: Option<String>,
    pub local_port: Option<PortNo>,
    pub mac: String,
    /// Address and prefix learnt by DHCP (or set statically).
    pub ip: Option<String>,
    pub gateway: Option<Ipv4Addr>,
}

/// Round-trip times of the answered requests.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rtt {
    pub min: f64,
    pub avg: f64,
    /// Robust to the first request of a cold path (waiting for ARP).
    pub median: f64,
    pub max: f64,
}

/// The median of `values` (the mean of the two middle ones for an even
/// count), or `None` when there are none: what `switchyard verify` prints
/// as a path's RTT.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The outcome of a ping run, as `ping` prints it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PingReport {
    pub from: String,
    pub target: Ipv4Addr,
    pub interval_ms: u64,
    pub sent: usize,
    pub answered: usize,
    /// Sequence numbers never answered.
    pub lost: Vec<u16>,
    /// Replies to a request already answered (`DUP!`).
    pub duplicates: u64,
    pub rtt_ms: Option<Rtt>,
    /// The longest run of consecutive unanswered requests, in ms of the
    /// stream (run length × interval): the outage the stream saw.
    pub outage_ms: u64,
}

impl PingReport {
    fn of(from: &str, p: &PingStream) -> Self {
        let mut rtts: Vec<f64> = p
            .log
            .values()
            .filter_map(|(s, r)| r.map(|r| (r - *s).total_micros() as f64 / 1000.0))
            .collect();
        rtts.sort_by(f64::total_cmp);
        let rtt_ms = median(&rtts).map(|median| Rtt {
            min: rtts[0],
            avg: rtts.iter().sum::<f64>() / rtts.len() as f64,
            median,
            max: rtts[rtts.len() - 1],
        });
        let lost = p.lost();
        let mut longest = 0u64;
        let mut run = 0u64;
        let mut prev: Option<u16> = None;
        for s in &lost {
            run = if prev.is_some_and(|p| p.wrapping_add(1) == *s) {
                run + 1
            } else {
                1
            };
            longest = longest.max(run);
            prev = Some(*s);
        }
        PingReport {
            outage_ms: longest * p.interval.total_millis(),
            from: from.to_string(),
            target: p.target,
            interval_ms: p.interval.total_millis(),
            sent: p.sent(),
            answered: p.answered(),
            lost,
            duplicates: p.duplicates,
            rtt_ms,
        }
    }

    /// Every request answered exactly once.
    pub fn clean(&self) -> bool {
        self.sent > 0 && self.answered == self.sent && self.duplicates == 0
    }
}

/// A TCP connection attempt from a guest, as `POST …/connect` answers it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConnectReport {
    pub from: String,
    #[serde(flatten)]
    pub attempt: Attempt,
}

/// A guest's TCP stream, with what the listener at the other end counted.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TcpStreamReport {
    pub from: String,
    #[serde(flatten)]
    pub stream: StreamReport,
    /// Lines the target guest's listener received on this connection;
    /// `None` when the target is no guest of the lab or never saw it (from
    /// this address and port: a connection through NAT is not matched).
    pub received: Option<u64>,
}

/// Abandons a guest's connection attempt when dropped, unless it finished
/// (a cancelled request leaves no socket behind).
struct CancelOnDrop<'a> {
    hyp: &'a Hypervisor,
    name: &'a str,
    id: u32,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut lab = self.hyp.lab();
            let now = lab.now;
            if let Ok(g) = lab.guest_mut(self.name) {
                g.cancel_connect(self.id, now);
            }
        }
    }
}

/// Stops a guest's ping stream when dropped (a cancelled request).
struct StopOnDrop<'a>(&'a Hypervisor, &'a str);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.stop_ping(self.1);
    }
}

/// Waits until `host`'s agent has a local device for `port_id` (it has
/// applied a version with the port, active or pre-plugged).
async fn wait_for_device(
    agent: &Mutex<switchyard_agent::NodeAgent>,
    port_id: &str,
    host: &str,
    timeout: StdDuration,
) -> Result<PortNo, HypervisorError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(p) = lock(agent).port_of(port_id) {
            return Ok(p);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(HypervisorError::NotPlugged {
                port: port_id.to_string(),
                host: host.to_string(),
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Port status reports the hypervisor hands to a node's agent session.
pub type AgentEvents = Arc<Mutex<BTreeMap<String, mpsc::Sender<Event>>>>;

/// Cheap to clone; every clone drives the same lab.
#[derive(Clone)]
pub struct Hypervisor {
    lab: Arc<Mutex<Lab>>,
    /// guest name → Neutron port id
    ports: Arc<Mutex<BTreeMap<String, String>>>,
    events: AgentEvents,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The lab and these maps stay whole across a panic elsewhere (each
    // operation completes or does nothing), so a poisoned lock is usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Hypervisor {
    pub fn new(lab: Arc<Mutex<Lab>>, events: AgentEvents) -> Self {
        Hypervisor {
            lab,
            ports: Arc::default(),
            events,
        }
    }

    pub fn lab(&self) -> MutexGuard<'_, Lab> {
        lock(&self.lab)
    }

    /// The device of `port_id` appeared or went away on `host`: its agent
    /// learns it (and reports the port up or down) as it would from the
    /// kernel on a real node.
    fn report(&self, host: &str, port_id: &str, up: bool) {
        let Some(agent) = self.lab().agent(host) else {
            return;
        };
        lock(&agent).set_device(port_id, up);
        let tx = lock(&self.events).get(host).cloned();
        if let Some(tx) = tx {
            // A full or closed channel means no session: the agent reports
            // every port it has up on its next connection anyway.
            let _ = tx.try_send(Event::Changed);
        }
    }

    /// Boots guest `name` with `mac` and plugs it into Neutron port `port_id`
    /// on `host`, waiting up to `timeout` for the node's agent to have the port.
    pub async fn plug(
        &self,
        name: &str,
        port_id: &str,
        host: &str,
        mac: EthernetAddress,
        timeout: StdDuration,
    ) -> Result<GuestInfo, HypervisorError> {
        if !valid_name(name) {
            let shown: String = name.chars().take(64).collect();
            return Err(HypervisorError::BadName(shown));
        }
        let agent = {
            let mut lab = self.lab();
            if lab.guest(name).is_ok() {
                return Err(HypervisorError::GuestExists(name.to_string()));
            }
            lab.agent(host)
                .ok_or_else(|| HypervisorError::HostNotInLab(host.to_string()))?
        };
        if let Some((g, _)) = lock(&self.ports).iter().find(|(_, p)| *p == port_id) {
            return Err(HypervisorError::PortInUse(port_id.to_string(), g.clone()));
        }
        let local = wait_for_device(&agent, port_id, host, timeout).await?;
        {
            let mut lab = self.lab();
            let lab_err = |e: LabError| HypervisorError::Lab(name.to_string(), e.to_string());
            match lab.add_guest(name, mac) {
                Err(LabError::Exists(_)) => {
                    return Err(HypervisorError::GuestExists(name.to_string()));
                }
                r => r.map_err(lab_err)?,
            }
            // A guest still on this device lost its port (deleted under it,
            // as Nova would unplug the VIF): it is unplugged, not in the way.
            if let Some(stale) = lab.guest_at(host, local).map(str::to_string) {
                tracing::info!(guest = %stale, %host, port = local, "unplugging a guest whose port is gone");
                let _ = lab.detach(&stale);
            }
            if let Err(e) = lab.attach(name, host, local) {
                // Nothing half-made: the guest goes with the failed plug.
                let _ = lab.remove_guest(name);
                return Err(lab_err(e));
            }
            lock(&self.ports).insert(name.to_string(), port_id.to_string());
        }
        self.report(host, port_id, true);
        self.guest(name)
    }

    /// Live-migrates a running guest to `dest`: [`Hypervisor::prepare_migration`]
    /// then [`Hypervisor::complete_migration`]. Activating the binding is the
    /// caller's next step, as in Nova.
    pub async fn migrate(
        &self,
        name: &str,
        dest: &str,
        timeout: StdDuration,
    ) -> Result<PortNo, HypervisorError> {
        let local = self.prepare_migration(name, dest, timeout).await?;
        self.complete_migration(name, dest, local)?;
        Ok(local)
    }

    /// Nova's `pre_live_migration`: waits for the destination's agent to have
    /// the guest's port as a device (pre-plugged from the INACTIVE binding
    /// the caller made, as Nova waits for the VIF). Returns that device.
    pub async fn prepare_migration(
        &self,
        name: &str,
        dest: &str,
        timeout: StdDuration,
    ) -> Result<PortNo, HypervisorError> {
        let port_id = self.port_of(name)?;
        let agent = self
            .lab()
            .agent(dest)
            .ok_or_else(|| HypervisorError::HostNotInLab(dest.to_string()))?;
        wait_for_device(&agent, &port_id, dest, timeout).await
    }

    /// Moves the running guest onto `dest`'s device `local` (its stack,
    /// addresses and ping streams travel with it) and lets it announce
    /// itself as QEMU does.
    pub fn complete_migration(
        &self,
        name: &str,
        dest: &str,
        local: PortNo,
    ) -> Result<(), HypervisorError> {
        let port_id = self.port_of(name)?;
        let from = {
            let mut lab = self.lab();
            if let Some(stale) = lab.guest_at(dest, local).map(str::to_string)
                && stale != name
            {
                let _ = lab.detach(&stale);
            }
            let from = lab.attachment(name).map(|(h, _)| h.to_string());
            lab.move_guest(name, dest, local)
                .map_err(|e| HypervisorError::Lab(name.to_string(), e.to_string()))?;
            from
        };
        // The VIF left the source and is plugged on the destination.
        if let Some(from) = from.filter(|f| f != dest) {
            self.report(&from, &port_id, false);
        }
        self.report(dest, &port_id, true);
        Ok(())
    }

    /// Puts a guest back on its port's device on `host` (a migration rolled
    /// back after the move); the device must still be there.
    pub fn return_guest(&self, name: &str, host: &str) -> Result<(), HypervisorError> {
        let port_id = self.port_of(name)?;
        let agent = self
            .lab()
            .agent(host)
            .ok_or_else(|| HypervisorError::HostNotInLab(host.to_string()))?;
        let local = lock(&agent)
            .port_of(&port_id)
            .ok_or_else(|| HypervisorError::NotPlugged {
                port: port_id.clone(),
                host: host.to_string(),
                secs: 0,
            })?;
        self.complete_migration(name, host, local)
    }

    fn port_of(&self, name: &str) -> Result<String, HypervisorError> {
        lock(&self.ports)
            .get(name)
            .cloned()
            .ok_or_else(|| HypervisorError::GuestNotFound(name.to_string()))
    }

    /// The device `host`'s agent runs for Neutron port `port_id`, as its
    /// introspection shows it (kind, VLAN, VNI), if it has one.
    pub fn device(
        &self,
        host: &str,
        port_id: &str,
    ) -> Option<switchyard_proto::introspect::InterfaceState> {
        let agent = self.lab().agent(host)?;
        let state = lock(&agent).introspect();
        state.interfaces.into_iter().find(|i| i.port_id == port_id)
    }

    /// Deletes a guest: unplugged, stopped, its port reported down.
    pub fn unplug(&self, name: &str) -> Result<(), HypervisorError> {
        let host = {
            let mut lab = self.lab();
            let host = lab.attachment(name).map(|(h, _)| h.to_string());
            lab.remove_guest(name)
                .map_err(|_| HypervisorError::GuestNotFound(name.to_string()))?;
            host
        };
        let port = lock(&self.ports).remove(name);
        if let (Some(host), Some(port)) = (host, port) {
            self.report(&host, &port, false);
        }
        Ok(())
    }

    pub fn guest(&self, name: &str) -> Result<GuestInfo, HypervisorError> {
        let lab = self.lab();
        let g = lab
            .guest(name)
            .map_err(|_| HypervisorError::GuestNotFound(name.to_string()))?;
        Ok(self.info(&lab, g))
    }

    fn info(&self, lab: &Lab, g: &crate::Guest) -> GuestInfo {
        let at = lab.attachment(&g.name);
        GuestInfo {
            name: g.name.clone(),
            port_id: lock(&self.ports).get(&g.name).cloned(),
            host: at.map(|(h, _)| h.to_string()),
            local_port: at.map(|(_, p)| p),
            mac: format_mac(&g.mac),
            ip: g.ip.map(|c| c.to_string()),
            gateway: g.router,
        }
    }

    pub fn guests(&self) -> Vec<GuestInfo> {
        let lab = self.lab();
        lab.guests().map(|g| self.info(&lab, g)).collect()
    }

    /// Waits until the guest has an address (DHCP done).
    pub async fn wait_for_address(
        &self,
        name: &str,
        timeout: StdDuration,
    ) -> Result<Ipv4Addr, HypervisorError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let lab = self.lab();
                let g = lab
                    .guest(name)
                    .map_err(|_| HypervisorError::GuestNotFound(name.to_string()))?;
                if let Some(ip) = g.ip {
                    return Ok(ip.address());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(HypervisorError::NoAddress(name.to_string()));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Starts a ping stream from inside a guest (replacing any running one).
    pub fn start_ping(
        &self,
        name: &str,
        target: Ipv4Addr,
        interval: Duration,
        count: Option<u16>,
    ) -> Result<(), HypervisorError> {
        let mut lab = self.lab();
        let now = lab.now;
        let g = lab
            .guest_mut(name)
            .map_err(|_| HypervisorError::GuestNotFound(name.to_string()))?;
        if g.ip.is_none() {
            return Err(HypervisorError::NoAddress(name.to_string()));
        }
        g.start_ping_count(target, interval, count, now);
        Ok(())
    }

    /// Stops a guest's ping stream and reports it.
    pub fn stop_ping(&self, name: &str) -> Result<Option<PingReport>, HypervisorError> {
        let mut lab = self.lab();
        let g = lab
            .guest_mut(name)
            .map_err(|_| HypervisorError::GuestNotFound(name.to_string()))?;
        Ok(g.stop_ping().map(|p| PingReport::of(name, &p)))
    }

    /// Runs `f` on guest `name` at the lab's time; its TCP errors are the guest's.
    fn with_guest<R>(
        &self,
        name: &str,
        f: impl FnOnce(&mut crate::Guest, smoltcp::time::Instant) -> Result<R, TcpError>,
    ) -> Result<R, HypervisorError> {
        let mut lab = self.lab();
        let now = lab.now;
        let g = lab
            .guest_mut(name)
            .map_err(|_| HypervisorError::GuestNotFound(name.to_string()))?;
        f(g, now).map_err(|e| HypervisorError::Tcp(name.to_string(), e))
    }

    /// Listens on TCP `port` inside a guest.
    pub fn listen(&self, name: &str, port: u16) -> Result<Listening, HypervisorError> {
        self.with_guest(name, |g, _| {
            g.listen(port)?;
            Ok(g.listening())
        })
    }

    /// Stops listening on `port` (every port when `None`): the ports closed
    /// and the listener as it was.
    pub fn unlisten(
        &self,
        name: &str,
        port: Option<u16>,
    ) -> Result<(Vec<u16>, Listening), HypervisorError> {
        self.with_guest(name, |g, _| {
            let before = g.listening();
            Ok((g.unlisten(port)?, before))
        })
    }

    pub fn listening(&self, name: &str) -> Result<Listening, HypervisorError> {
        self.with_guest(name, |g, _| Ok(g.listening()))
    }

    /// Tries a TCP connection from inside a guest and waits (on the lab's
    /// clock, at most `timeout`) for it to be established, refused or timed
    /// out; an established one is closed again.
    pub async fn connect(
        &self,
        name: &str,
        target: Ipv4Addr,
        port: u16,
        timeout: Duration,
    ) -> Result<ConnectReport, HypervisorError> {
        if self.guest(name)?.ip.is_none() {
            return Err(HypervisorError::NoAddress(name.to_string()));
        }
        let id = self.with_guest(name, |g, now| g.connect(target, port, timeout, now))?;
        let mut guard = CancelOnDrop {
            hyp: self,
            name,
            id,
            armed: true,
        };
        // A lab whose clock stopped must not hang the caller forever.
        let real_limit = tokio::time::Instant::now()
            + StdDuration::from_micros(timeout.total_micros() * 4)
            + StdDuration::from_secs(5);
        loop {
            if let Some(attempt) = self.with_guest(name, |g, _| Ok(g.connect_result(id)))? {
                guard.armed = false;
                return Ok(ConnectReport {
                    from: name.to_string(),
                    attempt,
                });
            }
            if tokio::time::Instant::now() >= real_limit {
                return Err(HypervisorError::Lab(
                    name.to_string(),
                    "the connection attempt did not end in real time: the lab's clock is not advancing"
                        .into(),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Opens a TCP connection from inside a guest that sends a line every
    /// `interval` until stopped.
    pub fn start_tcp_stream(
        &self,
        name: &str,
        target: Ipv4Addr,
        port: u16,
        interval: Duration,
    ) -> Result<TcpStreamReport, HypervisorError> {
        if self.guest(name)?.ip.is_none() {
            return Err(HypervisorError::NoAddress(name.to_string()));
        }
        self.with_guest(name, |g, now| {
            g.start_tcp_stream(target, port, interval, now)
        })?;
        self.tcp_stream(name, false)?
            .ok_or_else(|| HypervisorError::Lab(name.to_string(), "TCP stream vanished".into()))
    }

    /// A guest's TCP stream (stopped first when `stop`), with the lines its
    /// target received if the target is a guest of the lab; None if none runs.
    pub fn tcp_stream(
        &self,
        name: &str,
        stop: bool,
    ) -> Result<Option<TcpStreamReport>, HypervisorError> {
        let mut lab = self.lab();
        let now = lab.now;
        let g = lab
            .guest_mut(name)
            .map_err(|_| HypervisorError::GuestNotFound(name.to_string()))?;
        let from = g.ip.map(|c| c.address());
        let stream = if stop {
            g.stop_tcp_stream(now)
        } else {
            g.tcp_stream()
        };
        let Some(stream) = stream else {
            return Ok(None);
        };
        let received = from.and_then(|from| {
            lab.guests()
                .filter(|t| t.ip.is_some_and(|c| c.address() == stream.target))
                .find_map(|t| t.received_from(stream.port, from, stream.local_port))
                .map(|(lines, _)| lines)
        });
        Ok(Some(TcpStreamReport {
            from: name.to_string(),
            stream,
            received,
        }))
    }

    /// Pings `target` from a host behind the lab's internet node (the first
    /// address of its hosts range), as a client on the internet reaching a
    /// floating IP would; waits like [`Hypervisor::ping`].
    pub async fn internet_ping(
        &self,
        target: Ipv4Addr,
        count: u16,
        interval: Duration,
        grace: Duration,
    ) -> Result<PingReport, HypervisorError> {
        let no_internet = || {
            HypervisorError::Lab(
                "internet".into(),
                "the topology has no internet node".into(),
            )
        };
        let until = {
            let mut lab = self.lab();
            let now = lab.now;
            let name = lab
                .node_names()
                .into_iter()
                .find(|n| *n == "internet")
                .map(str::to_string)
                .ok_or_else(no_internet)?;
            let inet = lab.internet_mut(&name).ok_or_else(no_internet)?;
            let from = Ipv4Addr::from(u32::from(inet.hosts.0) | 1);
            inet.start_ping(from, target, interval, count, now);
            now + interval * u32::from(count) + grace
        };
        let real_limit = tokio::time::Instant::now()
            + StdDuration::from_micros((interval * u32::from(count) + grace).total_micros() * 4)
            + StdDuration::from_secs(5);
        loop {
            {
                let mut lab = self.lab();
                let now = lab.now;
                let inet = lab.internet_mut("internet").ok_or_else(no_internet)?;
                let done = inet.ping().is_some_and(|p| {
                    p.sent() == usize::from(count) && p.answered() == usize::from(count)
                });
                if done || now >= until || tokio::time::Instant::now() >= real_limit {
                    let p = inet.stop_ping().ok_or_else(no_internet)?;
                    return Ok(PingReport::of("internet", &p));
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Pings `target` `count` times from inside a guest and waits (on the
    /// lab's clock) for the last reply or `grace` after the last request.
    pub async fn ping(
        &self,
        name: &str,
        target: Ipv4Addr,
        count: u16,
        interval: Duration,
        grace: Duration,
    ) -> Result<PingReport, HypervisorError> {
        self.start_ping(name, target, interval, Some(count))?;
        // If the caller goes away (the HTTP client disconnected), the stream stops.
        let _guard = StopOnDrop(self, name);
        let until = self.lab().now + interval * u32::from(count) + grace;
        // A lab whose clock stopped must not hang the caller forever.
        let real_limit = tokio::time::Instant::now()
            + StdDuration::from_micros((interval * u32::from(count) + grace).total_micros() * 4)
            + StdDuration::from_secs(5);
        loop {
            {
                let lab = self.lab();
                let g = lab
                    .guest(name)
                    .map_err(|_| HypervisorError::GuestNotFound(name.to_string()))?;
                let done = g.ping.as_ref().is_some_and(|p| {
                    p.sent() == usize::from(count) && p.answered() == usize::from(count)
                });
                if done || lab.now >= until || tokio::time::Instant::now() >= real_limit {
                    break;
                }
            }
            tokio::time::sleep(POLL).await;
        }
        self.stop_ping(name)?
            .ok_or_else(|| HypervisorError::Lab(name.to_string(), "ping stream vanished".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_an_odd_count_is_the_middle_value() {
        // The cold first reply (40 ms) pulls the mean to 8.8 but not the median.
        assert_eq!(median(&[40.0, 1.0, 2.0, 0.5, 0.5]), Some(1.0));
        assert_eq!(median(&[3.0]), Some(3.0));
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        // The upper middle value alone (3.0) would be the old, wrong answer.
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[1.0, 40.0]), Some(20.5));
    }

    #[test]
    fn no_replies_have_no_median() {
        assert_eq!(median(&[]), None);
    }
}
