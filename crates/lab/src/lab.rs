//! The emulated fabric: nodes running the real pipelines, point-to-point links
//! between their ports, an emulated IP underlay for VXLAN, guests plugged into
//! ports, and a virtual clock that drives it all deterministically.
//!
//! Each node reaches its pipeline only through [`switchyard_dataplane::Driver`]
//! ([`PortQueues`] here): the same boundary a Linux driver implements with TAP
//! devices, UDP sockets and AF_PACKET.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::EthernetAddress;
use switchyard_dataplane::fabric::FabricSwitch;
use switchyard_dataplane::gateway::Gateway;
use switchyard_dataplane::ovs::OvsBridge;
use switchyard_dataplane::sriov::SriovNic;
use switchyard_dataplane::vrouter::Vrouter;
use switchyard_dataplane::{Counters, Driver, Output, Pipeline, PortNo, Received, pump};

use crate::guest::Guest;
use crate::internet::Internet;
use crate::pcap::Capture;

/// What runs on a node.
pub enum Element {
    Vrouter(Vrouter),
    Ovs(OvsBridge),
    Sriov(SriovNic),
    Fabric(FabricSwitch),
    Internet(Internet),
    Gateway(Box<Gateway>),
    /// A node run by its agent: the pipeline is the agent's, configured by the
    /// controller. Shared with the agent's controller session, which applies
    /// updates between the lab's ticks.
    Agent(Arc<Mutex<switchyard_agent::NodeAgent>>),
    /// Any other pipeline (a test double of a peer, say).
    Other(Box<dyn Pipeline + Send>),
}

impl Element {
    /// A node run by `agent`.
    pub fn agent(agent: switchyard_agent::NodeAgent) -> Self {
        Element::Agent(Arc::new(Mutex::new(agent)))
    }

    fn with_pipeline<R>(&mut self, f: impl FnOnce(&mut dyn Pipeline) -> R) -> R {
        match self {
            Element::Vrouter(p) => f(p),
            Element::Ovs(p) => f(p),
            Element::Sriov(p) => f(p),
            Element::Fabric(p) => f(p),
            Element::Internet(p) => f(p),
            Element::Gateway(p) => f(p.as_mut()),
            Element::Agent(a) => {
                // An agent that panicked mid-apply left its pipeline whole
                // (updates are validated before they change anything).
                let mut g = a.lock().unwrap_or_else(PoisonError::into_inner);
                f(g.dataplane.pipeline())
            }
            Element::Other(p) => f(p.as_mut()),
        }
    }

    pub fn counters(&mut self) -> Counters {
        self.with_pipeline(|p| p.counters().clone())
    }
}

/// The emulated I/O driver of one node: what its ports received and what the
/// pipeline sent, as queues the lab moves between nodes.
#[derive(Debug, Default)]
pub struct PortQueues {
    inbox: VecDeque<Received>,
    outbox: Vec<Output>,
}

impl Driver for PortQueues {
    fn recv(&mut self) -> Option<Received> {
        self.inbox.pop_front()
    }
    fn send(&mut self, out: Output) {
        self.outbox.push(out);
    }
}

struct Node {
    name: String,
    element: Element,
    underlay: Option<Ipv4Addr>,
    io: PortQueues,
    /// A crashed node: it forwards nothing and everything sent to it is lost.
    down: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Node(usize, PortNo),
    Guest(usize),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LabError {
    #[error("no node named {0}")]
    NoNode(String),
    #[error("no guest named {0}")]
    NoGuest(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("port {1} of {0} is already connected")]
    PortBusy(String, PortNo),
}

/// Upper bound on delivery rounds within one tick, so a forwarding loop in a
/// bad topology shows as drops instead of hanging the lab.
const MAX_ROUNDS: usize = 64;

pub struct Lab {
    pub now: Instant,
    /// Virtual time advanced by each [`Lab::step`].
    pub tick: Duration,
    nodes: Vec<Node>,
    guests: Vec<Guest>,
    links: HashMap<(usize, PortNo), End>,
    attached: HashMap<usize, (usize, PortNo)>,
    vteps: HashMap<Ipv4Addr, usize>,
    captures: HashMap<(usize, PortNo), Capture>,
    scratch: Vec<Output>,
    /// Frames delivered nowhere (unconnected port, unknown VTEP).
    pub lost_frames: u64,
    /// Ticks that hit the delivery-round limit: a forwarding loop or storm.
    pub overflowed_ticks: u64,
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

impl Lab {
    pub fn new() -> Self {
        Lab {
            now: Instant::from_millis(0),
            tick: Duration::from_millis(1),
            nodes: Vec::new(),
            guests: Vec::new(),
            links: HashMap::new(),
            attached: HashMap::new(),
            vteps: HashMap::new(),
            captures: HashMap::new(),
            scratch: Vec::new(),
            lost_frames: 0,
            overflowed_ticks: 0,
        }
    }

    fn node_idx(&self, name: &str) -> Result<usize, LabError> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| LabError::NoNode(name.to_string()))
    }

    fn guest_idx(&self, name: &str) -> Result<usize, LabError> {
        self.guests
            .iter()
            .position(|g| g.name == name)
            .ok_or_else(|| LabError::NoGuest(name.to_string()))
    }

    /// Adds a node; `underlay` is its VTEP address if it speaks VXLAN.
    pub fn add_node(
        &mut self,
        name: &str,
        element: Element,
        underlay: Option<Ipv4Addr>,
    ) -> Result<(), LabError> {
        if self.node_idx(name).is_ok() {
            return Err(LabError::Exists(name.to_string()));
        }
        let idx = self.nodes.len();
        if let Some(u) = underlay {
            self.vteps.insert(u, idx);
        }
        self.nodes.push(Node {
            name: name.to_string(),
            element,
            underlay,
            io: PortQueues::default(),
            down: false,
        });
        Ok(())
    }

    /// Connects two node ports with a point-to-point link.
    pub fn link(&mut self, a: &str, pa: PortNo, b: &str, pb: PortNo) -> Result<(), LabError> {
        let (ia, ib) = (self.node_idx(a)?, self.node_idx(b)?);
        for (i, p, n) in [(ia, pa, a), (ib, pb, b)] {
            if self.links.contains_key(&(i, p)) {
                return Err(LabError::PortBusy(n.to_string(), p));
            }
        }
        self.links.insert((ia, pa), End::Node(ib, pb));
        self.links.insert((ib, pb), End::Node(ia, pa));
        Ok(())
    }

    pub fn add_guest(&mut self, name: &str, mac: EthernetAddress) -> Result<(), LabError> {
        if self.guest_idx(name).is_ok() {
            return Err(LabError::Exists(name.to_string()));
        }
        self.guests.push(Guest::new(name, mac, self.now));
        Ok(())
    }

    /// Plugs a guest's NIC into a node port (a TAP, an OVS port, a VF).
    pub fn attach(&mut self, guest: &str, node: &str, port: PortNo) -> Result<(), LabError> {
        let (g, n) = (self.guest_idx(guest)?, self.node_idx(node)?);
        if self.links.contains_key(&(n, port)) {
            return Err(LabError::PortBusy(node.to_string(), port));
        }
        self.detach_idx(g);
        self.links.insert((n, port), End::Guest(g));
        self.attached.insert(g, (n, port));
        Ok(())
    }

    /// Removes a guest (the VM is deleted): unplugged, its stack dropped.
    pub fn remove_guest(&mut self, guest: &str) -> Result<(), LabError> {
        let g = self.guest_idx(guest)?;
        self.detach_idx(g);
        self.guests.remove(g);
        // Guest indexes above `g` shift down by one.
        self.attached = self
            .attached
            .drain()
            .map(|(i, at)| (if i > g { i - 1 } else { i }, at))
            .collect();
        for end in self.links.values_mut() {
            if let End::Guest(i) = end
                && *i > g
            {
                *i -= 1;
            }
        }
        Ok(())
    }

    /// Where a guest is plugged: (node, port).
    pub fn attachment(&self, guest: &str) -> Option<(&str, PortNo)> {
        let g = self.guest_idx(guest).ok()?;
        let (n, p) = self.attached.get(&g)?;
        Some((self.nodes[*n].name.as_str(), *p))
    }

    /// The guest plugged into `node`:`port`, if any.
    pub fn guest_at(&self, node: &str, port: PortNo) -> Option<&str> {
        let n = self.node_idx(node).ok()?;
        match self.links.get(&(n, port))? {
            End::Guest(g) => Some(self.guests[*g].name.as_str()),
            End::Node(..) => None,
        }
    }

    pub fn guests(&self) -> impl Iterator<Item = &Guest> {
        self.guests.iter()
    }

    pub fn detach(&mut self, guest: &str) -> Result<(), LabError> {
        let g = self.guest_idx(guest)?;
        self.detach_idx(g);
        Ok(())
    }

    fn detach_idx(&mut self, g: usize) {
        if let Some(at) = self.attached.remove(&g) {
            self.links.remove(&at);
        }
    }

    /// Live-migrates a guest: its stack (addresses, ARP cache, ping stream)
    /// moves as it is to the new port, and it announces itself as QEMU does.
    pub fn move_guest(&mut self, guest: &str, node: &str, port: PortNo) -> Result<(), LabError> {
        self.attach(guest, node, port)?;
        let (now, g) = (self.now, self.guest_idx(guest)?);
        self.guests[g].announce_after_move(now);
        Ok(())
    }

    pub fn guest(&self, name: &str) -> Result<&Guest, LabError> {
        Ok(&self.guests[self.guest_idx(name)?])
    }

    pub fn guest_mut(&mut self, name: &str) -> Result<&mut Guest, LabError> {
        let i = self.guest_idx(name)?;
        Ok(&mut self.guests[i])
    }

    pub fn element_mut(&mut self, node: &str) -> Result<&mut Element, LabError> {
        let i = self.node_idx(node)?;
        Ok(&mut self.nodes[i].element)
    }

    pub fn vrouter_mut(&mut self, node: &str) -> Option<&mut Vrouter> {
        match self.element_mut(node).ok()? {
            Element::Vrouter(v) => Some(v),
            _ => None,
        }
    }
    pub fn ovs_mut(&mut self, node: &str) -> Option<&mut OvsBridge> {
        match self.element_mut(node).ok()? {
            Element::Ovs(v) => Some(v),
            _ => None,
        }
    }
    pub fn sriov_mut(&mut self, node: &str) -> Option<&mut SriovNic> {
        match self.element_mut(node).ok()? {
            Element::Sriov(v) => Some(v),
            _ => None,
        }
    }
    pub fn fabric_mut(&mut self, node: &str) -> Option<&mut FabricSwitch> {
        match self.element_mut(node).ok()? {
            Element::Fabric(v) => Some(v),
            _ => None,
        }
    }
    pub fn gateway_mut(&mut self, node: &str) -> Option<&mut Gateway> {
        match self.element_mut(node).ok()? {
            Element::Gateway(v) => Some(v),
            _ => None,
        }
    }
    /// The agent running `node`, shared with its controller session.
    pub fn agent(&mut self, node: &str) -> Option<Arc<Mutex<switchyard_agent::NodeAgent>>> {
        match self.element_mut(node).ok()? {
            Element::Agent(a) => Some(a.clone()),
            _ => None,
        }
    }
    pub fn internet(&self, node: &str) -> Option<&Internet> {
        let i = self.node_idx(node).ok()?;
        match &self.nodes[i].element {
            Element::Internet(v) => Some(v),
            _ => None,
        }
    }

    pub fn internet_mut(&mut self, node: &str) -> Option<&mut Internet> {
        match self.element_mut(node).ok()? {
            Element::Internet(v) => Some(v),
            _ => None,
        }
    }

    pub fn counters(&mut self, node: &str) -> Result<Counters, LabError> {
        Ok(self.element_mut(node)?.counters())
    }

    /// Starts recording every frame crossing the link at `node`:`port`.
    pub fn capture(&mut self, node: &str, port: PortNo) -> Result<(), LabError> {
        let i = self.node_idx(node)?;
        self.captures.entry((i, port)).or_default();
        Ok(())
    }

    pub fn captured(&self, node: &str, port: PortNo) -> Option<&Capture> {
        let i = self.node_idx(node).ok()?;
        self.captures.get(&(i, port))
    }

    fn record(&mut self, node: usize, port: PortNo, frame: &[u8]) {
        if let Some(c) = self.captures.get_mut(&(node, port)) {
            c.record(self.now, frame);
        }
    }

    /// Advances virtual time by one tick and delivers everything due.
    pub fn step(&mut self) {
        self.now += self.tick;
        for g in 0..self.guests.len() {
            self.guests[g].poll(self.now);
        }
        for round in 0..=MAX_ROUNDS {
            if round == MAX_ROUNDS {
                self.overflowed_ticks += 1;
                break;
            }
            let mut moved = self.collect_guest_tx();
            for n in 0..self.nodes.len() {
                let node = &mut self.nodes[n];
                if node.down {
                    self.lost_frames += node.io.inbox.len() as u64;
                    node.io.inbox.clear();
                    continue;
                }
                let (io, now, scratch) = (&mut node.io, self.now, &mut self.scratch);
                node.element.with_pipeline(|p| pump(p, io, now, scratch));
                let outs: Vec<Output> = node.io.outbox.drain(..).collect();
                moved |= !outs.is_empty();
                for o in outs {
                    self.deliver(n, o);
                }
            }
            let mut guest_rx = false;
            for g in 0..self.guests.len() {
                if !self.guests[g].nic.rx.is_empty() {
                    guest_rx = true;
                    self.guests[g].poll(self.now);
                }
            }
            if !moved && !guest_rx {
                break;
            }
        }
    }

    fn collect_guest_tx(&mut self) -> bool {
        let mut any = false;
        for g in 0..self.guests.len() {
            let frames: Vec<Vec<u8>> = self.guests[g].nic.tx.drain(..).collect();
            let Some(&(n, port)) = self.attached.get(&g) else {
                // A detached guest's frames go nowhere (the VM is paused mid-move).
                self.lost_frames += frames.len() as u64;
                continue;
            };
            for f in frames {
                any = true;
                self.record(n, port, &f);
                self.nodes[n]
                    .io
                    .inbox
                    .push_back(Received::Frame { port, data: f });
            }
        }
        any
    }

    fn deliver(&mut self, from: usize, o: Output) {
        match o {
            Output::Frame { port, data } => {
                self.record(from, port, &data);
                match self.links.get(&(from, port)).copied() {
                    Some(End::Node(n, p)) => {
                        self.record(n, p, &data);
                        self.nodes[n]
                            .io
                            .inbox
                            .push_back(Received::Frame { port: p, data });
                    }
                    Some(End::Guest(g)) => self.guests[g].nic.rx.push_back(data),
                    None => self.lost_frames += 1,
                }
            }
            Output::Underlay { dst, data } => {
                let src = self.nodes[from].underlay.unwrap_or(Ipv4Addr::UNSPECIFIED);
                match self.vteps.get(&dst).copied() {
                    Some(n) => self.nodes[n]
                        .io
                        .inbox
                        .push_back(Received::Underlay { src, data }),
                    None => self.lost_frames += 1,
                }
            }
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            self.step();
        }
    }

    /// Steps until `done` holds or `limit` of virtual time passed; returns whether it held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Lab) -> bool) -> bool {
        let until = self.now + limit;
        while self.now < until {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    /// Crashes node `name` (`down`: it stops forwarding, frames to it are
    /// lost, as a dead host's) or brings it back.
    pub fn set_down(&mut self, name: &str, down: bool) -> Result<(), LabError> {
        let i = self.node_idx(name)?;
        self.nodes[i].down = down;
        self.nodes[i].io = PortQueues::default();
        Ok(())
    }

    pub fn node_names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }
}

/// The MAC a node's own traffic uses (vRouter DHCP answers, internet router):
/// locally administered, derived from the node's position so it is stable.
pub fn node_mac(index: usize) -> EthernetAddress {
    let i = u16::try_from(index).unwrap_or(u16::MAX).to_be_bytes();
    EthernetAddress([0x02, 0x53, 0x59, 0x00, i[0], i[1]])
}
