//! The node's pipeline on real Linux devices (the I/O edge the emulated lab
//! replaces with in-process links): VM interfaces are netdevs named as Nova
//! names them (`tap` + the first 11 characters of the Neutron port id),
//! VXLAN is UDP/4789 on the node's underlay address.
//!
//! One loop per node, driven by readiness only: a task per device reading
//! frames, the underlay socket, a netlink link monitor (a device appearing
//! or going away), the session's "state applied" signal, and the pipeline's
//! own next timer. Every packet goes through the same sans-io pipeline the
//! lab runs, under the agent's lock, and what it emits is written out. The
//! loop and its readers share one thread of their own ([`start`]).
//!
//! The agent owns the mapping from device to pipeline port: when a port's
//! interface is applied and a netdev with its name exists, the agent
//! attaches to it with an AF_PACKET socket bound to it — whatever it is: the
//! TAP a QEMU VM holds, or a veth whose peer is a guest namespace's NIC — as
//! vRouter's kernel module attaches to a VM's TAP without taking it from
//! QEMU. It gives the device the port's local number and reports it plugged
//! ([`NodeAgent::set_device`]); when the netdev is gone (deleted, or moved
//! out of the node), the device is unplugged. The hypervisor makes the
//! netdev; the agent never creates one.
//!
//! Frames cross the socket with virtio-net headers (`PACKET_VNET_HDR`): a
//! read is a guest's burst of up to 64 KiB (TSO), cut into wire-size frames
//! ([`crate::offload::segment`]) before the pipeline; frames for a VM
//! interface are joined back per TCP flow ([`crate::offload::Coalescer`]).
//! The underlay socket sends a VTEP's datagrams in one `sendmsg`
//! (`UDP_SEGMENT`) and reads them joined (`UDP_GRO`). The wire only ever
//! sees frames of the network's MTU.
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
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError};

use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr as NlAddr, TokioSocket, protocols};
use switchyard_dataplane::{Input, Instant, Output, PortNo};
use switchyard_proto::{Attachment, Item, Role};
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, watch};
use tun_rs::{AsyncDevice, DeviceBuilder, Layer};

use crate::NodeAgent;
use crate::client::Event;
use crate::offload::Frames;

/// VXLAN's UDP port (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;
/// Netlink multicast group of link changes (`RTMGRP_LINK`).
const RTMGRP_LINK: u32 = 1;

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

/// Starts the node's data plane on a thread of its own, with a
/// single-threaded runtime for the loop and its device readers: frames pass
/// between them without crossing threads (a multi-threaded runtime spent
/// some 12% of the throughput handing bursts between workers), and the
/// control plane (southbound session, heartbeats) keeps the process's
/// other threads. Returns once the node's sockets and fixed devices are
/// open; the receiver yields how the loop ended.
pub async fn start(
    agent: Arc<Mutex<NodeAgent>>,
    opts: Options,
    events: mpsc::Sender<Event>,
    applied: Arc<Notify>,
    stop: watch::Receiver<bool>,
) -> Result<tokio::sync::oneshot::Receiver<Result<(), LinuxError>>, LinuxError> {
    let (opened_tx, opened) = tokio::sync::oneshot::channel();
    let (done_tx, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("dataplane".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = opened_tx.send(Err(LinuxError::Other(format!(
                        "cannot start the data plane's runtime: {e}"
                    ))));
                    return;
                }
            };
            rt.block_on(async move {
                match Runtime::open(agent, &opts, events).await {
                    Ok(r) => {
                        let _ = opened_tx.send(Ok(()));
                        let _ = done_tx.send(r.run(applied, stop).await);
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(|e| LinuxError::Other(format!("cannot start the data plane's thread: {e}")))?;
    opened
        .await
        .map_err(|_| LinuxError::Other("the data plane's thread ended while starting".into()))??;
    Ok(done)
}

/// What the device readers hand the loop.
enum Rx {
    /// Frames read from a port's device, already cut to wire size; the
    /// buffers go back to [`Pool`] once processed.
    Frames(PortNo, Frames),
    /// Reading `port_id`'s device failed: it is gone.
    Gone(String, PortNo),
}

/// How the agent reaches a device: a TAP it holds itself (the node's fixed
/// ports: an SR-IOV NIC's uplink and VFs, a gateway's trunk and external
/// link), or a VM interface's netdev — QEMU's TAP, a veth — through an
/// AF_PACKET socket bound to it, the way vRouter's kernel module attaches
/// to a VM's TAP without taking it from QEMU.
enum Link {
    Tap(AsyncDevice),
    Packet {
        fd: AsyncFd<OwnedFd>,
        name: String,
        ifindex: u32,
    },
}

/// How long a VM interface's socket may be idle before the agent checks
/// that its interface still exists.
const IDLE_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

impl Link {
    /// Whether frames cross it with a virtio-net header (a VM interface's
    /// socket: [`crate::offload`]); a fixed port's TAP carries plain frames.
    fn vnet(&self) -> bool {
        matches!(self, Link::Packet { .. })
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Tap(d) => d.recv(buf).await,
            Link::Packet { fd, name, ifindex } => loop {
                // A socket whose interface went down and was then deleted
                // hears of the deletion never (the kernel reports ENETDOWN
                // once, at the down): an idle socket checks that its
                // interface is still the one by its name.
                let Ok(g) = tokio::time::timeout(IDLE_CHECK, fd.readable()).await else {
                    if nix::net::if_::if_nametoindex(name.as_str()).ok() != Some(*ifindex) {
                        return Err(io::Error::from_raw_os_error(nix::libc::ENODEV));
                    }
                    continue;
                };
                let mut g = g?;
                match g.try_io(|f| nix::unistd::read(f.get_ref(), buf).map_err(io::Error::from)) {
                    // The interface went down (or was just made and set up):
                    // the socket says so once and stays bound. Only an
                    // interface that is gone (or another by its name) ends it.
                    Ok(Err(e))
                        if e.raw_os_error() == Some(nix::libc::ENETDOWN)
                            && nix::net::if_::if_nametoindex(name.as_str()).ok()
                                == Some(*ifindex) =>
                    {
                        continue;
                    }
                    Ok(r) => return r,
                    Err(_would_block) => continue,
                }
            },
        }
    }

    async fn send(&self, data: &[u8]) -> io::Result<usize> {
        match self {
            Link::Tap(d) => d.send(data).await,
            Link::Packet { fd, .. } => loop {
                let mut g = fd.writable().await?;
                match g.try_io(|f| nix::unistd::write(f.get_ref(), data).map_err(io::Error::from)) {
                    Ok(r) => return r,
                    Err(_would_block) => continue,
                }
            },
        }
    }
}

struct Attached {
    port: PortNo,
    dev: Arc<Link>,
    reader: tokio::task::JoinHandle<()>,
}

/// Frame buffers passed from the readers to the loop and back, so a burst's
/// frames are not allocated on one thread and freed on another each time.
#[derive(Clone, Default)]
struct Pool(Arc<Mutex<Vec<Frames>>>);

impl Pool {
    /// Buffers kept for reuse; beyond it they are freed.
    const KEEP: usize = 64;

    fn take(&self) -> Frames {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default()
    }

    fn put(&self, f: Frames) {
        let mut p = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if p.len() < Self::KEEP {
            p.push(f);
        }
    }
}

fn lock(agent: &Mutex<NodeAgent>) -> std::sync::MutexGuard<'_, NodeAgent> {
    agent.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The interfaces this node runs: (port id, local port, on a VF).
fn wanted(agent: &NodeAgent) -> Vec<(String, PortNo, bool)> {
    agent
        .items()
        .iter()
        .filter_map(|(k, v)| match &**v {
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

/// Attaches to the existing TAP `name` of a fixed port (never creates one).
fn attach(name: &str) -> io::Result<AsyncDevice> {
    DeviceBuilder::new()
        .name(name)
        .layer(Layer::L2)
        .build_async()
}

/// Attaches to a VM interface's netdev `name` with an AF_PACKET socket
/// (virtio-net headers, so a guest's bursts arrive whole).
fn attach_vm(name: &str) -> io::Result<Link> {
    let ifindex = nix::net::if_::if_nametoindex(name)?;
    let fd = crate::sys::packet_socket(ifindex)?;
    // A guest's TCP window of bursts can arrive between two reads; the
    // default 208 KiB receive buffer dropped them (retransmits).
    use nix::sys::socket::{setsockopt, sockopt};
    let size = VM_SOCKET_BUFFER;
    if setsockopt(fd.get_ref(), sockopt::RcvBufForce, &size)
        .or_else(|_| setsockopt(fd.get_ref(), sockopt::RcvBuf, &size))
        .is_err()
    {
        tracing::info!(%name, "cannot size the interface socket's receive buffer; keeping the default");
    }
    Ok(Link::Packet {
        fd,
        name: name.to_string(),
        ifindex,
    })
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
    by_port: HashMap<PortNo, Arc<Link>>,
    /// Frames bound for offload TAPs, joined per port as they are flushed.
    coalescers: HashMap<PortNo, crate::offload::Coalescer>,
    /// UDP GSO works on this host (cleared after the first refusal).
    udp_gso: bool,
    tx: mpsc::Sender<Rx>,
    rx: mpsc::Receiver<Rx>,
    pool: Pool,
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
                // A TCP window's worth of datagrams arrives between two
                // reads; the default 208 KiB buffer overflowed (drops the
                // sender sees as retransmits). Forced past rmem_max as root.
                use nix::sys::socket::{setsockopt, sockopt};
                for (what, r) in [
                    (
                        "receive",
                        setsockopt(&udp, sockopt::RcvBufForce, &UNDERLAY_SOCKET_BUFFER).or_else(
                            |_| setsockopt(&udp, sockopt::RcvBuf, &UNDERLAY_SOCKET_BUFFER),
                        ),
                    ),
                    (
                        "send",
                        setsockopt(&udp, sockopt::SndBufForce, &UNDERLAY_SOCKET_BUFFER).or_else(
                            |_| setsockopt(&udp, sockopt::SndBuf, &UNDERLAY_SOCKET_BUFFER),
                        ),
                    ),
                ] {
                    if let Err(e) = r {
                        tracing::info!(error = %e, "cannot size the underlay socket's {what} buffer; keeping the default");
                    }
                }
                // Receive bursts joined (UDP_GRO): a datagram size and many
                // datagrams per read. Without it, one per read.
                if let Err(e) = nix::sys::socket::setsockopt(
                    &udp,
                    nix::sys::socket::sockopt::UdpGroSegment,
                    &true,
                ) {
                    tracing::info!(error = %e, "UDP GRO not available; reading datagrams one by one");
                }
                Some(Arc::new(udp))
            }
        };
        let (tx, rx) = mpsc::channel(1024);
        let pool = Pool::default();
        let mut by_port = HashMap::new();
        let mut fixed = Vec::new();
        for (port, name) in &opts.fixed {
            let dev = Arc::new(Link::Tap(
                attach(name).map_err(|e| LinuxError::Fixed(name.clone(), e))?,
            ));
            let reader = tokio::spawn(read_frames(
                dev.clone(),
                *port,
                format!("fixed:{name}"),
                tx.clone(),
                pool.clone(),
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
            coalescers: HashMap::new(),
            udp_gso: true,
            fixed,
            tx,
            rx,
            pool,
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
                if let Some(d) = self.by_port.get(&port).cloned() {
                    let reader = tokio::spawn(async {});
                    self.devices.insert(
                        port_id.clone(),
                        Attached {
                            port,
                            dev: d,
                            reader,
                        },
                    );
                    lock(&self.agent).set_device(&port_id, true);
                    changed = true;
                }
                continue;
            }
            let name = tap_name(&port_id);
            if !exists(&name) {
                continue;
            }
            let dev = match attach_vm(&name) {
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
                self.pool.clone(),
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
    fn process(&mut self, now: Instant, input: Input<'_>) -> Option<Instant> {
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

    /// Writes out what the pipeline emitted: frames to offload TAPs joined
    /// per flow, underlay datagrams to one VTEP sent as one UDP GSO batch.
    async fn flush(&mut self) {
        let mut batch = UnderlayBatch::default();
        let mut writes: Vec<(PortNo, Vec<u8>)> = Vec::new();
        for o in std::mem::take(&mut self.out) {
            match o {
                Output::Frame { port, data } => {
                    match self.by_port.get(&port) {
                        Some(d) if d.vnet() => {
                            let c = self.coalescers.entry(port).or_default();
                            c.push(&data, &mut |b| writes.push((port, b)));
                        }
                        Some(_) => writes.push((port, data)),
                        // A device that is gone drops the frame, as a NIC would.
                        None => {}
                    }
                }
                Output::Underlay { dst, data } => {
                    if let Some(full) = batch.add(dst, data) {
                        self.send_underlay(full).await;
                    }
                }
            }
        }
        for (port, c) in &mut self.coalescers {
            c.flush(&mut |b| writes.push((*port, b)));
        }
        if let Some(last) = batch.take() {
            self.send_underlay(last).await;
        }
        for (port, data) in writes {
            if let Some(d) = self.by_port.get(&port) {
                // A device that is down (EIO) drops the frame, as a NIC would.
                let _ = d.send(&data).await;
            }
        }
    }

    /// Sends datagrams to one VTEP: one `sendmsg` with `UDP_SEGMENT` when
    /// there are several (the kernel cuts them), else one `send_to`.
    async fn send_underlay(&mut self, b: Batch) {
        let Some(udp) = self.udp.clone() else { return };
        let to = SocketAddrV4::new(b.dst, VXLAN_PORT);
        if b.datagrams.len() > 1 && self.udp_gso {
            match send_gso(&udp, to, &b.datagrams, b.size).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "UDP GSO refused; sending datagrams one by one from now on");
                    self.udp_gso = false;
                }
            }
        }
        for d in &b.datagrams {
            if let Err(e) = udp.send_to(d, SocketAddr::V4(to)).await {
                tracing::debug!(dst = %b.dst, error = %e, "underlay send failed");
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
        let mut cmsg = nix::cmsg_space!(i32);
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
                m = self.rx.recv() => {
                    let mut m = m;
                    // Whatever else is waiting, before one flush.
                    let mut taken = 0;
                    loop {
                        match m {
                            Some(Rx::Frames(port, frames)) => {
                                // One clock reading per read: a burst is
                                // one instant to the pipeline.
                                let now = self.now();
                                for data in frames.iter() {
                                    next = self.process(now, Input::Frame { port, data });
                                }
                                self.pool.put(frames);
                            }
                            Some(Rx::Gone(port_id, port)) => self.gone(&port_id, port),
                            None => return Ok(()),
                        }
                        taken += 1;
                        match self.rx.try_recv() {
                            Ok(more) if taken < 64 => m = Some(more),
                            Ok(more) => {
                                self.flush().await;
                                m = Some(more);
                                taken = 0;
                            }
                            Err(_) => break,
                        }
                    }
                    self.flush().await;
                }
                r = async { match &self.udp { Some(u) => recv_gro(u, &mut buf, &mut cmsg).await, None => std::future::pending().await } } => {
                    if let Ok((n, from, seg)) = r {
                        let n = n.min(buf.len());
                        let now = self.now();
                        for data in buf[..n].chunks(seg.unwrap_or(n).max(1)) {
                            next = self.process(now, Input::Underlay { src: *from.ip(), data });
                        }
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

async fn read_frames(
    dev: Arc<Link>,
    port: PortNo,
    port_id: String,
    tx: mpsc::Sender<Rx>,
    pool: Pool,
) {
    let mut buf = vec![0u8; crate::offload::VNET_HDR_LEN + 65_536 + 64];
    let mut refused = false;
    loop {
        match dev.recv(&mut buf).await {
            Ok(n) => {
                let read = &buf[..n.min(buf.len())];
                let mut frames = pool.take();
                if dev.vnet() {
                    if let Err(e) = crate::offload::segment(read, &mut frames) {
                        // Once per device: a guest sending such frames
                        // would otherwise fill the log.
                        if !refused {
                            tracing::warn!(port, %port_id, error = %e, "dropping a frame the device handed over that does not parse (logged once per device)");
                            refused = true;
                        }
                        pool.put(frames);
                        continue;
                    }
                } else {
                    frames.clear();
                    frames.push(read);
                }
                if tx.send(Rx::Frames(port, frames)).await.is_err() {
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

/// Datagrams bound for one VTEP, gathered for one UDP GSO send: all of
/// `size` bytes but the last, at most [`GSO_MAX_SEGMENTS`] and 64 KiB.
/// Kept apart and handed to the kernel as an iovec, not copied together.
struct Batch {
    dst: Ipv4Addr,
    size: usize,
    bytes: usize,
    datagrams: Vec<Vec<u8>>,
    /// The last datagram was shorter: nothing may follow.
    closed: bool,
}

/// Bytes of a VM interface's AF_PACKET receive buffer.
const VM_SOCKET_BUFFER: usize = 4 << 20;

/// Bytes of the underlay socket's send and receive buffers.
const UNDERLAY_SOCKET_BUFFER: usize = 8 << 20;

/// UDP_MAX_SEGMENTS of older kernels (64; newer allow 128).
const GSO_MAX_SEGMENTS: usize = 64;
const GSO_MAX_BYTES: usize = 65_000;

#[derive(Default)]
struct UnderlayBatch(Option<Batch>);

impl UnderlayBatch {
    /// Adds a datagram; returns the batch it closed, if one is ready to go.
    fn add(&mut self, dst: Ipv4Addr, data: Vec<u8>) -> Option<Batch> {
        if let Some(b) = &mut self.0
            && b.dst == dst
            && !b.closed
            && data.len() <= b.size
            && b.datagrams.len() < GSO_MAX_SEGMENTS
            && b.bytes + data.len() <= GSO_MAX_BYTES
        {
            b.closed = data.len() < b.size;
            b.bytes += data.len();
            b.datagrams.push(data);
            return None;
        }
        let done = self.0.take();
        self.0 = Some(Batch {
            dst,
            size: data.len(),
            bytes: data.len(),
            datagrams: vec![data],
            closed: false,
        });
        done
    }

    fn take(&mut self) -> Option<Batch> {
        self.0.take()
    }
}

/// One `sendmsg` of `datagrams` to `to` (all of `size` bytes but the last),
/// cut again by the kernel into those datagrams (`UDP_SEGMENT`).
async fn send_gso(
    udp: &UdpSocket,
    to: SocketAddrV4,
    datagrams: &[Vec<u8>],
    size: usize,
) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrIn, sendmsg};
    use std::os::fd::AsRawFd;
    let seg = u16::try_from(size).map_err(|_| io::Error::other("segment too large"))?;
    let addr = SockaddrIn::from(to);
    let fd = udp.as_raw_fd();
    let iov: Vec<io::IoSlice<'_>> = datagrams.iter().map(|d| io::IoSlice::new(d)).collect();
    loop {
        udp.writable().await?;
        let r = udp.try_io(tokio::io::Interest::WRITABLE, || {
            sendmsg(
                fd,
                &iov,
                &[ControlMessage::UdpGsoSegments(&seg)],
                MsgFlags::empty(),
                Some(&addr),
            )
            .map_err(io::Error::from)
        });
        match r {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One `recvmsg`: bytes, sender, and the datagram size when the kernel
/// joined several (`UDP_GRO`).
async fn recv_gro(
    udp: &UdpSocket,
    buf: &mut [u8],
    cmsg: &mut [u8],
) -> io::Result<(usize, SocketAddrV4, Option<usize>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg};
    use std::os::fd::AsRawFd;
    let fd = udp.as_raw_fd();
    loop {
        udp.readable().await?;
        let r = udp.try_io(tokio::io::Interest::READABLE, || {
            let mut iov = [io::IoSliceMut::new(buf)];
            let msg = recvmsg::<SockaddrIn>(fd, &mut iov, Some(cmsg), MsgFlags::empty())
                .map_err(io::Error::from)?;
            let mut seg = None;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::UdpGroSegments(s) = c {
                        seg = usize::try_from(s).ok().filter(|s| *s > 0);
                    }
                }
            }
            let from = msg
                .address
                .map(|a| SocketAddrV4::new(a.ip(), a.port()))
                .ok_or_else(|| io::Error::other("no sender address"))?;
            Ok((msg.bytes, from, seg))
        });
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return r,
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
