//! The node's pipeline on real Linux devices (the I/O edge the emulated lab
//! replaces with in-process links): VM interfaces are TAP devices named as
//! Nova names them (`tap` + the first 11 characters of the Neutron port id),
//! VXLAN is UDP/4789 on the node's underlay address.
//!
//! One loop per node, driven by readiness only: a task per TAP reading
//! frames, the underlay socket, a netlink link monitor (a device appearing
//! or going away), the session's "state applied" signal, and the pipeline's
//! own next timer. Every packet goes through the same sans-io pipeline the
//! lab runs, under the agent's lock, and what it emits is written out.
//!
//! The agent owns the mapping from device to pipeline port: when a port's
//! interface is applied and a TAP with its name exists, the agent attaches
//! to it (`TUNSETIFF` on the existing device; it never creates one), gives it
//! the port's local number and reports the device plugged
//! ([`NodeAgent::set_device`]); when reading fails (the device was
//! destroyed), the device is unplugged. The hypervisor creates the TAP (and,
//! for a namespace guest, moves its netdev into the guest's namespace once
//! the port is `ACTIVE`, the attached descriptor keeps working).
//!
//! A node's fixed ports run on TAPs the host set up for it ([`Options::fixed`]):
//! a gateway's trunk and external interface, an SR-IOV NIC's uplink and VFs.
//! A trunk's frames reach its TAP through a Linux bridge joining the TAP and
//! the trunk netdev in the node's namespace: the kernel keeps 802.1Q tags in
//! packet metadata on receive and writes them back into the frames a TAP
//! hands over, where an AF_PACKET socket would need `PACKET_AUXDATA` to
//! recover them. An SR-IOV VF is a TAP (the emulated NIC's VF netdev; the
//! hypervisor passes it to the VM); a port on a VF is plugged as soon as its
//! interface is applied, as Neutron's SR-IOV agent reports a configured VF.
//!
//! OVS nodes run Open vSwitch instead of this pipeline
//! ([`crate::openvswitch`]).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, PoisonError};

use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr as NlAddr, TokioSocket, protocols};
use switchyard_dataplane::{Input, Instant, Output, PortNo};
use switchyard_proto::{Attachment, Item, Role};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, watch};
use tun_rs::{AsyncDevice, DeviceBuilder, Layer};

use crate::NodeAgent;
use crate::client::Event;

/// VXLAN's UDP port (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;
/// Netlink multicast group of link changes (`RTMGRP_LINK`).
const RTMGRP_LINK: u32 = 1;
/// Frames up to a jumbo MTU plus headers.
const FRAME_MAX: usize = 9216 + 64;

/// The host netdev of a Neutron port, as Nova and os-vif name it.
pub fn tap_name(port_id: &str) -> String {
    let short: String = port_id.chars().take(11).collect();
    format!("tap{short}")
}

#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    #[error("Linux I/O for {0} nodes is not built yet; run the agent with --io none")]
    Unsupported(&'static str),
    #[error("a vRouter node needs its underlay address (--tunneling-ip)")]
    NoVtep,
    #[error(
        "cannot bind the VXLAN socket on {0}: {1} (is --tunneling-ip this host's underlay address?)"
    )]
    Bind(SocketAddrV4, io::Error),
    #[error("netlink link monitor: {0}")]
    Netlink(io::Error),
    #[error("cannot attach to {0} (it must exist, as a TAP): {1}")]
    Fixed(String, io::Error),
    #[error("{0}")]
    Other(String),
}

pub struct Options {
    /// The node's underlay (VTEP) address (vRouter and gateway nodes).
    pub vtep: Option<Ipv4Addr>,
    /// TAPs the node's fixed pipeline ports run on: (port, TAP name). They
    /// must exist when the agent starts.
    pub fixed: Vec<(PortNo, String)>,
}

/// What the device readers hand the loop.
enum Rx {
    Frame(PortNo, Vec<u8>),
    /// Reading `port_id`'s device failed: it is gone.
    Gone(String, PortNo),
}

struct Attached {
    port: PortNo,
    dev: Arc<AsyncDevice>,
    reader: tokio::task::JoinHandle<()>,
}

fn lock(agent: &Mutex<NodeAgent>) -> std::sync::MutexGuard<'_, NodeAgent> {
    agent.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The interfaces this node runs: (port id, local port, on a VF).
fn wanted(agent: &NodeAgent) -> Vec<(String, PortNo, bool)> {
    agent
        .items()
        .iter()
        .filter_map(|(k, v)| match v {
            Item::Interface {
                port_id,
                attachment,
                ..
            } if k.starts_with("iface/") => {
                let vf = matches!(attachment, Attachment::HwVeb { .. });
                agent.port_of(port_id).map(|p| (port_id.clone(), p, vf))
            }
            _ => None,
        })
        .collect()
}

/// Whether a netdev named `name` exists in this network namespace.
fn exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

/// Attaches to the existing TAP `name` (never creates one).
fn attach(name: &str) -> io::Result<AsyncDevice> {
    DeviceBuilder::new()
        .name(name)
        .layer(Layer::L2)
        .build_async()
}

pub struct Runtime {
    agent: Arc<Mutex<NodeAgent>>,
    /// The underlay socket (vRouter and gateway nodes).
    udp: Option<Arc<UdpSocket>>,
    /// VM interfaces' devices by Neutron port id (vRouter: TAPs; SR-IOV:
    /// ports on VFs, whose TAPs are fixed ports).
    devices: HashMap<String, Attached>,
    /// Readers of the fixed ports.
    fixed: Vec<tokio::task::JoinHandle<()>>,
    by_port: HashMap<PortNo, Arc<AsyncDevice>>,
    tx: mpsc::Sender<Rx>,
    rx: mpsc::Receiver<Rx>,
    events: mpsc::Sender<Event>,
    start: std::time::Instant,
    out: Vec<Output>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for r in &self.fixed {
            r.abort();
        }
        for a in self.devices.values() {
            a.reader.abort();
        }
    }
}

impl Runtime {
    /// Opens the node's sockets: the VXLAN socket on the VTEP address.
    pub async fn open(
        agent: Arc<Mutex<NodeAgent>>,
        opts: &Options,
        events: mpsc::Sender<Event>,
    ) -> Result<Self, LinuxError> {
        let role = lock(&agent).role;
        let udp = match role {
            Role::Ovs => return Err(LinuxError::Unsupported("ovs")),
            Role::Sriov => None,
            Role::Vrouter | Role::Gateway => {
                let vtep = opts.vtep.ok_or(LinuxError::NoVtep)?;
                let at = SocketAddrV4::new(vtep, VXLAN_PORT);
                let udp = UdpSocket::bind(at)
                    .await
                    .map_err(|e| LinuxError::Bind(at, e))?;
                Some(Arc::new(udp))
            }
        };
        let (tx, rx) = mpsc::channel(1024);
        let mut by_port = HashMap::new();
        let mut fixed = Vec::new();
        for (port, name) in &opts.fixed {
            let dev = Arc::new(attach(name).map_err(|e| LinuxError::Fixed(name.clone(), e))?);
            let reader = tokio::spawn(read_frames(
                dev.clone(),
                *port,
                format!("fixed:{name}"),
                tx.clone(),
            ));
            tracing::info!(%name, port, "fixed port attached");
            by_port.insert(*port, dev);
            fixed.push(reader);
        }
        Ok(Runtime {
            agent,
            udp,
            devices: HashMap::new(),
            by_port,
            fixed,
            tx,
            rx,
            events,
            start: std::time::Instant::now(),
            out: Vec::new(),
        })
    }

    fn now(&self) -> Instant {
        Instant::from_micros(i64::try_from(self.start.elapsed().as_micros()).unwrap_or(i64::MAX))
    }

    /// Attaches the devices of interfaces the node runs that have none yet.
    /// Returns whether one that exists could not be attached (the tool that
    /// created it may still hold it: `ip tuntap add` does for a moment), so
    /// the caller looks again shortly.
    fn rescan(&mut self) -> bool {
        let mut again = false;
        let want = wanted(&lock(&self.agent));
        let mut changed = false;
        for (port_id, port, on_vf) in want {
            if self.devices.contains_key(&port_id) {
                continue;
            }
            if on_vf {
                // The VF is the NIC's own (a fixed port): configured, plugged.
                if let Some(dev) = self.by_port.get(&port).cloned() {
                    let reader = tokio::spawn(async {});
                    self.devices
                        .insert(port_id.clone(), Attached { port, dev, reader });
                    lock(&self.agent).set_device(&port_id, true);
                    changed = true;
                }
                continue;
            }
            let name = tap_name(&port_id);
            if !exists(&name) {
                continue;
            }
            let dev = match attach(&name) {
                Ok(d) => Arc::new(d),
                Err(e) => {
                    tracing::debug!(%name, error = %e, "cannot attach to the port's device yet");
                    again = true;
                    continue;
                }
            };
            let reader = tokio::spawn(read_frames(
                dev.clone(),
                port,
                port_id.clone(),
                self.tx.clone(),
            ));
            tracing::info!(%name, port, %port_id, "device attached");
            self.by_port.insert(port, dev.clone());
            self.devices
                .insert(port_id.clone(), Attached { port, dev, reader });
            lock(&self.agent).set_device(&port_id, true);
            changed = true;
        }
        if changed {
            let _ = self.events.try_send(Event::Changed);
        }
        again
    }

    fn gone(&mut self, port_id: &str, port: PortNo) {
        if let Some(name) = port_id.strip_prefix("fixed:") {
            // The host took away a device the node is built on.
            tracing::error!(%name, port, "a fixed port's device is gone; its traffic stops");
            self.by_port.remove(&port);
            return;
        }
        if let Some(a) = self.devices.remove(port_id) {
            a.reader.abort();
            self.by_port.remove(&a.port);
            drop(a.dev);
        }
        self.by_port.remove(&port);
        tracing::info!(%port_id, port, "device gone");
        lock(&self.agent).set_device(port_id, false);
        let _ = self.events.try_send(Event::Changed);
    }

    /// Feeds one packet through the pipeline; returns when it wants polling.
    fn process(&mut self, input: Input<'_>) -> Option<Instant> {
        let now = self.now();
        let mut a = lock(&self.agent);
        let p = a.dataplane.pipeline();
        p.process(now, input, &mut self.out);
        p.poll(now, &mut self.out)
    }

    fn poll(&mut self) -> Option<Instant> {
        let now = self.now();
        lock(&self.agent)
            .dataplane
            .pipeline()
            .poll(now, &mut self.out)
    }

    /// Writes out what the pipeline emitted.
    async fn flush(&mut self) {
        for o in std::mem::take(&mut self.out) {
            match o {
                Output::Frame { port, data } => {
                    if let Some(dev) = self.by_port.get(&port) {
                        // A device that is down (EIO) or gone drops the frame,
                        // as a NIC would.
                        let _ = dev.send(&data).await;
                    }
                }
                Output::Underlay { dst, data } => {
                    let Some(udp) = &self.udp else { continue };
                    let to = SocketAddr::V4(SocketAddrV4::new(dst, VXLAN_PORT));
                    if let Err(e) = udp.send_to(&data, to).await {
                        tracing::debug!(%dst, error = %e, "underlay send failed");
                    }
                }
            }
        }
    }

    /// Runs until `stop`.
    pub async fn run(
        mut self,
        applied: Arc<Notify>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), LinuxError> {
        let mut links = TokioSocket::new(protocols::NETLINK_ROUTE).map_err(LinuxError::Netlink)?;
        links
            .socket_mut()
            .bind(&NlAddr::new(0, RTMGRP_LINK))
            .map_err(LinuxError::Netlink)?;
        let mut nlbuf: Vec<u8> = Vec::with_capacity(8192);
        let mut buf = vec![0u8; 65_536];
        let mut next: Option<Instant> = None;
        let mut again = self.rescan();
        loop {
            let now = self.now();
            let wait = next.map(|t| {
                let us = if t > now { (t - now).total_micros() } else { 0 };
                std::time::Duration::from_micros(us)
            });
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                _ = applied.notified() => again = self.rescan(),
                r = links.recv_from(&mut nlbuf) => {
                    nlbuf.clear();
                    if r.is_ok() {
                        again = self.rescan();
                    }
                }
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)), if again => {
                    again = self.rescan();
                }
                m = self.rx.recv() => match m {
                    Some(Rx::Frame(port, data)) => {
                        next = self.process(Input::Frame { port, data: &data });
                        // Whatever else is waiting, under the same lock round.
                        while let Ok(Rx::Frame(port, data)) = self.rx.try_recv() {
                            next = self.process(Input::Frame { port, data: &data });
                        }
                        self.flush().await;
                    }
                    Some(Rx::Gone(port_id, port)) => self.gone(&port_id, port),
                    None => return Ok(()),
                },
                r = async { match &self.udp { Some(u) => u.recv_from(&mut buf).await, None => std::future::pending().await } } => {
                    if let Ok((n, SocketAddr::V4(from))) = r {
                        let data = buf[..n].to_vec();
                        next = self.process(Input::Underlay { src: *from.ip(), data: &data });
                        self.flush().await;
                    }
                }
                _ = async { if let Some(w) = wait { tokio::time::sleep(w).await } }, if wait.is_some() => {
                    next = self.poll();
                    self.flush().await;
                }
            }
        }
    }
}

async fn read_frames(dev: Arc<AsyncDevice>, port: PortNo, port_id: String, tx: mpsc::Sender<Rx>) {
    let mut buf = vec![0u8; FRAME_MAX];
    loop {
        match dev.recv(&mut buf).await {
            Ok(n) => {
                if tx.send(Rx::Frame(port, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(port, %port_id, error = %e, "device read failed");
                let _ = tx.send(Rx::Gone(port_id, port)).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tap_name;

    #[test]
    fn taps_are_named_as_nova_names_them() {
        assert_eq!(
            tap_name("3d1b6c0e-8f2a-4b6e-9c1d-0a2b3c4d5e6f"),
            "tap3d1b6c0e-8f"
        );
        assert!(tap_name("3d1b6c0e-8f2a-4b6e-9c1d-0a2b3c4d5e6f").len() <= 15);
    }
}
