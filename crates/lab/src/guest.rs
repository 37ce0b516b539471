//! Guests: small real IP stacks (smoltcp) standing in for VMs. Each has one NIC
//! (a MAC), gets its address by DHCP, answers ARP and ping, and can run a ping
//! stream whose replies are recorded by sequence number. It speaks TCP too
//! ([`tcp`]): it listens on ports, tries connections and runs a stream of
//! lines over one. After a move it announces itself with gratuitous ARPs on
//! QEMU's schedule.

pub mod tcp;

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{dhcpv4, icmp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, Ipv4Cidr,
};
use switchyard_dataplane::frames;

use tcp::{Attempt, Listening, StreamReport, Tcp, TcpError};

/// QEMU's self-announce after migration: 5 rounds, first after 50 ms, each
/// interval 100 ms longer than the one before.
pub const ANNOUNCE_ROUNDS: u32 = 5;
pub const ANNOUNCE_INITIAL: Duration = Duration::from_millis(50);
pub const ANNOUNCE_STEP: Duration = Duration::from_millis(100);

/// Frames queued between the guest's stack and its NIC.
#[derive(Debug, Default)]
pub struct Nic {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: VecDeque<Vec<u8>>,
}

pub struct RxToken(Vec<u8>);
pub struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl smoltcp::phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl smoltcp::phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Device for Nic {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _t: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let f = self.rx.pop_front()?;
        Some((RxToken(f), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _t: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c.checksum = ChecksumCapabilities::default();
        c
    }
}

/// The sender (MAC, IPv4) of an IPv4 frame to `mac` and `me`'s address
/// from `me`'s subnet; None for anything else (frames are untrusted).
fn ipv4_sender(
    f: &[u8],
    mac: EthernetAddress,
    me: Ipv4Cidr,
) -> Option<(EthernetAddress, Ipv4Addr)> {
    use smoltcp::wire::{EthernetFrame, EthernetProtocol, Ipv4Packet};
    let eth = EthernetFrame::new_checked(f).ok()?;
    if eth.dst_addr() != mac || eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let src_mac = eth.src_addr();
    (dst == me.address()
        && me.contains_addr(&src)
        && src != me.address()
        && src_mac.is_unicast()
        && !src.is_broadcast()
        && src != me.network().address())
    .then_some((src_mac, src))
}

/// A running ping stream to one target.
#[derive(Debug, Clone)]
pub struct PingStream {
    pub target: Ipv4Addr,
    pub interval: Duration,
    pub next_at: Instant,
    pub next_seq: u16,
    /// seq -> (sent at, reply at)
    pub log: BTreeMap<u16, (Instant, Option<Instant>)>,
    /// Replies for a sequence number already answered (ping's `DUP!`): a
    /// forwarding path that duplicates or floods unicast shows here.
    pub duplicates: u64,
    /// Stop sending after this many requests (`ping -c`); `None` runs until stopped.
    pub count: Option<u16>,
}

impl PingStream {
    pub fn sent(&self) -> usize {
        self.log.len()
    }
    pub fn answered(&self) -> usize {
        self.log.values().filter(|(_, r)| r.is_some()).count()
    }
    /// Sequence numbers sent but never answered.
    pub fn lost(&self) -> Vec<u16> {
        self.log
            .iter()
            .filter(|(_, (_, r))| r.is_none())
            .map(|(s, _)| *s)
            .collect()
    }
}

pub struct Guest {
    pub name: String,
    pub mac: EthernetAddress,
    pub nic: Nic,
    iface: Interface,
    sockets: SocketSet<'static>,
    dhcp: Option<SocketHandle>,
    /// The ping stream's socket; a new one per stream, so echoes still queued
    /// for an unreachable target never hold up the next stream.
    icmp: Option<SocketHandle>,
    ident: u16,
    pub ip: Option<Ipv4Cidr>,
    pub router: Option<Ipv4Addr>,
    pub ping: Option<PingStream>,
    announce: Vec<Instant>,
    /// On-link senders the stack has been told about (see [`Guest::learn_senders`]).
    told: BTreeMap<Ipv4Addr, (EthernetAddress, Instant)>,
    tcp: Tcp,
}

/// How long a sender the stack was told about stays told.
const TOLD_FOR: Duration = Duration::from_secs(30);

impl Guest {
    pub fn new(name: &str, mac: EthernetAddress, now: Instant) -> Self {
        let mut nic = Nic::default();
        let mut cfg = Config::new(HardwareAddress::Ethernet(mac));
        cfg.random_seed = u64::from_le_bytes([
            mac.0[0], mac.0[1], mac.0[2], mac.0[3], mac.0[4], mac.0[5], 0, 1,
        ]);
        let iface = Interface::new(cfg, &mut nic, now);
        let mut sockets = SocketSet::new(Vec::new());
        let dhcp = sockets.add(dhcpv4::Socket::new());
        let ident = u16::from_be_bytes([mac.0[4], mac.0[5]]);
        Guest {
            name: name.to_string(),
            mac,
            nic,
            iface,
            sockets,
            dhcp: Some(dhcp),
            icmp: None,
            ident,
            ip: None,
            router: None,
            ping: None,
            announce: Vec::new(),
            told: BTreeMap::new(),
            tcp: Tcp::new(ident),
        }
    }

    /// Starts (or restarts) a ping stream.
    pub fn start_ping(&mut self, target: Ipv4Addr, interval: Duration, now: Instant) {
        self.start_ping_count(target, interval, None, now);
    }

    /// Starts a ping stream of at most `count` requests.
    pub fn start_ping_count(
        &mut self,
        target: Ipv4Addr,
        interval: Duration,
        count: Option<u16>,
        now: Instant,
    ) {
        self.stop_ping();
        // Each stream is a new ping process with its own identifier (ping(8)
        // uses its pid): connection tracking sees each run as a new flow.
        self.ident = self.ident.wrapping_add(1);
        let rx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 64], vec![0; 8192]);
        let tx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 64], vec![0; 8192]);
        let mut sock = icmp::Socket::new(rx, tx);
        // Binding a fresh socket to an ident cannot fail.
        let _ = sock.bind(icmp::Endpoint::Ident(self.ident));
        self.icmp = Some(self.sockets.add(sock));
        self.resolve(target);
        self.ping = Some(PingStream {
            target,
            interval,
            next_at: now,
            next_seq: 0,
            log: BTreeMap::new(),
            duplicates: 0,
            count,
        });
    }

    /// Asks by ARP for the next hop toward `target`, as Linux does when a
    /// route needs a neighbour; smoltcp would wait out its interface-wide
    /// ARP silence (a second) if it asked for another neighbour recently.
    /// The answer is aimed at us, so the stack learns it as its own.
    fn resolve(&mut self, target: Ipv4Addr) {
        let Some(me) = self.ip else { return };
        let hop = if me.contains_addr(&target) {
            target
        } else {
            match self.router {
                Some(r) => r,
                None => return,
            }
        };
        if hop == me.address() {
            return;
        }
        self.nic.tx.push_back(frames::arp(
            smoltcp::wire::ArpOperation::Request,
            EthernetAddress::BROADCAST,
            self.mac,
            me.address(),
            EthernetAddress([0; 6]),
            hop,
        ));
    }

    pub fn stop_ping(&mut self) -> Option<PingStream> {
        if let Some(h) = self.icmp.take() {
            self.sockets.remove(h);
        }
        self.ping.take()
    }

    /// Listens on TCP `port` (see [`tcp`]).
    pub fn listen(&mut self, port: u16) -> Result<(), TcpError> {
        self.tcp.listen(&mut self.sockets, port)
    }

    /// Stops listening on `port` (every port when `None`); the ports closed.
    pub fn unlisten(&mut self, port: Option<u16>) -> Result<Vec<u16>, TcpError> {
        self.tcp.unlisten(&mut self.sockets, port)
    }

    /// The ports listened on and the connections accepted there.
    pub fn listening(&self) -> Listening {
        self.tcp.listening()
    }

    /// Lines and bytes the connection from `remote`:`remote_port` to our
    /// `port` delivered, if we accepted one.
    pub fn received_from(
        &self,
        port: u16,
        remote: Ipv4Addr,
        remote_port: u16,
    ) -> Option<(u64, u64)> {
        self.tcp
            .accepted_from(port, remote, remote_port)
            .map(|a| (a.lines, a.bytes))
    }

    /// Starts a TCP connection attempt to `target`:`port` that gives up
    /// after `timeout`; poll [`Guest::connect_result`] with the id.
    pub fn connect(
        &mut self,
        target: Ipv4Addr,
        port: u16,
        timeout: Duration,
        now: Instant,
    ) -> Result<u32, TcpError> {
        let id = self.tcp.connect(
            self.iface.context(),
            &mut self.sockets,
            target,
            port,
            timeout,
            now,
        )?;
        self.resolve(target);
        Ok(id)
    }

    /// The outcome of attempt `id` once it has one.
    pub fn connect_result(&mut self, id: u32) -> Option<Attempt> {
        self.tcp.attempt(id)
    }

    /// Abandons attempt `id`.
    pub fn cancel_connect(&mut self, id: u32, now: Instant) {
        self.tcp.cancel(&mut self.sockets, id, now);
    }

    /// Opens a connection to `target`:`port` that sends a line every `interval`.
    pub fn start_tcp_stream(
        &mut self,
        target: Ipv4Addr,
        port: u16,
        interval: Duration,
        now: Instant,
    ) -> Result<(), TcpError> {
        self.tcp.start_stream(
            self.iface.context(),
            &mut self.sockets,
            target,
            port,
            interval,
            now,
        )?;
        self.resolve(target);
        Ok(())
    }

    pub fn tcp_stream(&self) -> Option<StreamReport> {
        self.tcp.stream()
    }

    /// Stops the TCP stream (its connection closes) and reports it.
    pub fn stop_tcp_stream(&mut self, now: Instant) -> Option<StreamReport> {
        self.tcp.stop_stream(&mut self.sockets, now)
    }

    /// Schedules QEMU's announce rounds after a move (the stack, ARP cache and
    /// addresses stay as they are).
    pub fn announce_after_move(&mut self, now: Instant) {
        self.announce.clear();
        let mut at = now;
        for k in 0..ANNOUNCE_ROUNDS {
            at += ANNOUNCE_INITIAL + ANNOUNCE_STEP * k;
            self.announce.push(at);
        }
    }

    /// Runs the stack at `now`: DHCP, ARP, ping replies, the ping stream and the
    /// announce rounds. Frames to send are left in `nic.tx`.
    pub fn poll(&mut self, now: Instant) {
        self.learn_senders(now);
        self.iface.poll(now, &mut self.nic, &mut self.sockets);
        self.handle_dhcp();
        self.handle_replies(now);
        self.send_pings(now);
        self.tcp.poll(&mut self.sockets, now);
        if let Some(ip) = self.ip {
            while self.announce.first().is_some_and(|t| *t <= now) {
                self.announce.remove(0);
                self.nic
                    .tx
                    .push_back(frames::gratuitous_arp(self.mac, ip.address()));
            }
        }
        self.iface.poll(now, &mut self.nic, &mut self.sockets);
    }

    /// Lets the stack know the MAC of on-link senders before it answers them.
    ///
    /// smoltcp has one ARP silence timer for the whole interface: once it has
    /// asked for one neighbour it asks for no other for a second, and drops
    /// the replies it cannot address meanwhile. A Linux guest keeps per-
    /// neighbour state and queues them. Behind a vRouter, which answers ARP
    /// itself, a guest never sees the requests of the guests that ping it, so
    /// with smoltcp alone a guest pinging one peer while pinged by another
    /// goes silent for seconds. To behave like the Linux guest it stands in
    /// for, each IPv4 packet from an on-link sender not yet known (or known
    /// at another MAC) is preceded, for the stack only, by that sender's ARP
    /// request for our address: the stack learns the MAC the packet came from
    /// (as it does from real requests) and answers it on the wire, as a
    /// Linux guest's ARP exchange would have put it there.
    fn learn_senders(&mut self, now: Instant) {
        let Some(me) = self.ip else { return };
        if self.nic.rx.is_empty() {
            return;
        }
        let mut out = VecDeque::with_capacity(self.nic.rx.len());
        for f in self.nic.rx.drain(..) {
            if let Some((mac, src)) = ipv4_sender(&f, self.mac, me)
                && self
                    .told
                    .get(&src)
                    .is_none_or(|(m, at)| *m != mac || now >= *at + TOLD_FOR)
            {
                self.told.insert(src, (mac, now));
                out.push_back(frames::arp(
                    smoltcp::wire::ArpOperation::Request,
                    self.mac,
                    mac,
                    src,
                    EthernetAddress([0; 6]),
                    me.address(),
                ));
            }
            out.push_back(f);
        }
        self.nic.rx = out;
    }

    /// Configures a fixed address instead of DHCP (for ports without a DHCP server).
    pub fn set_static(&mut self, addr: Ipv4Cidr, router: Option<Ipv4Addr>) {
        if let Some(h) = self.dhcp.take() {
            self.sockets.remove(h);
        }
        self.iface.update_ip_addrs(|a| {
            a.clear();
            let _ = a.push(IpCidr::Ipv4(addr));
        });
        self.iface.routes_mut().remove_default_ipv4_route();
        if let Some(r) = router {
            let _ = self.iface.routes_mut().add_default_ipv4_route(r);
        }
        self.ip = Some(addr);
        self.router = router;
    }

    fn handle_dhcp(&mut self) {
        let Some(h) = self.dhcp else { return };
        let event = self.sockets.get_mut::<dhcpv4::Socket>(h).poll();
        match event {
            None => {}
            Some(dhcpv4::Event::Configured(cfg)) => {
                let addr = cfg.address;
                let router = cfg.router;
                self.iface.update_ip_addrs(|a| {
                    a.clear();
                    let _ = a.push(IpCidr::Ipv4(addr));
                });
                self.iface.routes_mut().remove_default_ipv4_route();
                if let Some(r) = router {
                    let _ = self.iface.routes_mut().add_default_ipv4_route(r);
                }
                self.ip = Some(addr);
                self.router = router;
            }
            Some(dhcpv4::Event::Deconfigured) => {
                self.iface.update_ip_addrs(|a| a.clear());
                self.iface.routes_mut().remove_default_ipv4_route();
                self.ip = None;
                self.router = None;
            }
        }
    }

    fn handle_replies(&mut self, now: Instant) {
        let Some(h) = self.icmp else { return };
        let sock = self.sockets.get_mut::<icmp::Socket>(h);
        while let Ok((data, _from)) = sock.recv() {
            let Ok(pkt) = Icmpv4Packet::new_checked(data) else {
                continue;
            };
            let Ok(repr) = Icmpv4Repr::parse(&pkt, &ChecksumCapabilities::default()) else {
                continue;
            };
            if let Icmpv4Repr::EchoReply { ident, seq_no, .. } = repr
                && ident == self.ident
                && let Some(p) = self.ping.as_mut()
                && let Some(entry) = p.log.get_mut(&seq_no)
            {
                if entry.1.is_some() {
                    p.duplicates += 1;
                } else {
                    entry.1 = Some(now);
                }
            }
        }
    }

    fn send_pings(&mut self, now: Instant) {
        let Some(p) = self.ping.as_mut() else { return };
        let (true, Some(h)) = (self.ip.is_some(), self.icmp) else {
            return;
        };
        let sock = self.sockets.get_mut::<icmp::Socket>(h);
        while p.next_at <= now && p.count.is_none_or(|c| p.log.len() < usize::from(c)) {
            let seq = p.next_seq;
            let repr = Icmpv4Repr::EchoRequest {
                ident: self.ident,
                seq_no: seq,
                data: b"switchyard-ping",
            };
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(
                &mut Icmpv4Packet::new_unchecked(&mut buf[..]),
                &ChecksumCapabilities::default(),
            );
            if sock.send_slice(&buf, IpAddress::Ipv4(p.target)).is_err() {
                break;
            }
            p.log.insert(seq, (now, None));
            p.next_seq = p.next_seq.wrapping_add(1);
            p.next_at += p.interval;
        }
    }

    /// When the stack next wants to run.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let mut t = self.iface.poll_at(now, &self.sockets);
        for c in [
            self.ping.as_ref().map(|p| p.next_at),
            self.announce.first().copied(),
            self.tcp.poll_at(),
        ]
        .into_iter()
        .flatten()
        {
            t = Some(t.map_or(c, |x| x.min(c)));
        }
        t
    }
}
