//! TCP in a guest, on smoltcp's TCP socket: listening ports that accept
//! connections and count what arrives on each, one-shot connection attempts
//! (what `nc -z` or a port probe does), and a stream of lines over one open
//! connection.
//!
//! An attempt ends `established`, `refused` (the peer answered with a RST:
//! nobody listens there) or `timed_out` (nothing came back before the
//! deadline: what a security group that drops looks like from the client).
//! Like the rest of the guest this is sans-io: time is the lab's, passed in,
//! and the caller runs the stack around [`Tcp::poll`].
//!
//! Everything is bounded: listening ports, accepted connections, attempts
//! under way, sockets closing, each socket's buffers.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;
use smoltcp::iface::{Context, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{Socket, SocketBuffer, State};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::IpAddress;

/// Ports one guest listens on at once.
pub const MAX_LISTEN_PORTS: usize = 8;
/// Accepted connections open at once; beyond it, new ones are refused.
pub const MAX_CONNECTIONS: usize = 16;
/// Connection attempts under way at once.
pub const MAX_ATTEMPTS: usize = 4;
/// Closed accepted connections remembered (for their counts).
const HISTORY: usize = 32;
/// Sockets finishing their close at once; beyond it the oldest is dropped.
const MAX_CLOSING: usize = 32;
/// Listening sockets per port: two SYNs arriving in one poll both find one
/// (smoltcp turns a listening socket into the connection it accepts).
const BACKLOG: usize = 2;
/// Each socket's receive and send buffer.
const BUFFER: usize = 4096;
/// How long a closing socket may take to finish its FIN exchange before it
/// is dropped (a filter may have cut the path).
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// An accepted connection whose SYN-ACK or data is never acknowledged for
/// this long is given up (the client vanished or the path closed).
const ACCEPTED_TIMEOUT: Duration = Duration::from_secs(30);
/// Linux's default ephemeral port range (`ip_local_port_range`).
const EPHEMERAL_FIRST: u16 = 32768;
const EPHEMERAL_LAST: u16 = 60999;
/// Every line of a stream has this length, so acknowledged bytes count lines.
const LINE_LEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TcpError {
    #[error("TCP port 0 is not a port")]
    PortZero,
    #[error("already listening on TCP port {0}")]
    AlreadyListening(u16),
    #[error("not listening on TCP port {0}")]
    NotListening(u16),
    #[error("not listening on any TCP port")]
    NotListeningAny,
    #[error("already listening on {MAX_LISTEN_PORTS} TCP ports, the most a guest may")]
    TooManyPorts,
    #[error("{MAX_ATTEMPTS} TCP connection attempts are already under way, the most a guest may")]
    TooManyAttempts,
    #[error("a TCP stream is already running (stop it first)")]
    StreamRunning,
    #[error("no route to {0}: the guest has no address for it")]
    Unaddressable(Ipv4Addr),
}

/// How a connection attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Established,
    Refused,
    TimedOut,
}

/// A finished connection attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub target: Ipv4Addr,
    pub port: u16,
    pub local_port: u16,
    pub result: Outcome,
    /// From the SYN to the outcome, on the lab's clock.
    pub time_ms: u64,
}

/// One connection a listener accepted, as the listening side sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    /// The listening port it arrived on.
    pub port: u16,
    pub remote: Ipv4Addr,
    pub remote_port: u16,
    pub bytes: u64,
    /// Newlines received.
    pub lines: u64,
    /// The TCP state (`established`, `close-wait`, …; `closed` once gone).
    pub state: String,
    #[serde(skip)]
    handle: Option<SocketHandle>,
}

/// A listener: its ports and the connections it accepted (open ones and the
/// last closed ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listening {
    pub ports: Vec<u16>,
    pub connections: Vec<Accepted>,
}

/// A stream of lines over one connection, as its sender sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamReport {
    pub target: Ipv4Addr,
    pub port: u16,
    pub local_port: u16,
    pub interval_ms: u64,
    /// The TCP state (`syn-sent`, `established`, `closed`, …).
    pub state: String,
    pub established: bool,
    /// Lines handed to the connection.
    pub sent: u64,
    /// Lines the peer acknowledged.
    pub acknowledged: u64,
    /// Intervals at which no line could be sent: not yet (or no longer)
    /// established, or the send buffer full of unacknowledged lines.
    pub unsent: u64,
}

struct Probe {
    handle: SocketHandle,
    target: Ipv4Addr,
    port: u16,
    local_port: u16,
    started: Instant,
    deadline: Instant,
    done: Option<Attempt>,
}

struct Stream {
    handle: Option<SocketHandle>,
    target: Ipv4Addr,
    port: u16,
    local_port: u16,
    interval: Duration,
    next_at: Instant,
    sent: u64,
    acked_bytes: u64,
    unsent: u64,
    state: State,
}

impl Stream {
    fn report(&self) -> StreamReport {
        StreamReport {
            target: self.target,
            port: self.port,
            local_port: self.local_port,
            interval_ms: self.interval.total_millis(),
            state: state_name(self.state),
            established: self.state == State::Established,
            sent: self.sent,
            acknowledged: self.acked_bytes / LINE_LEN as u64,
            unsent: self.unsent,
        }
    }
}

fn state_name(s: State) -> String {
    s.to_string().to_ascii_lowercase()
}

fn socket() -> Socket<'static> {
    Socket::new(
        SocketBuffer::new(vec![0; BUFFER]),
        SocketBuffer::new(vec![0; BUFFER]),
    )
}

/// A guest's TCP: its listeners, attempts, stream and closing sockets. The
/// sockets themselves live in the guest's socket set.
pub struct Tcp {
    /// port → its listening sockets
    listeners: BTreeMap<u16, Vec<SocketHandle>>,
    accepted: VecDeque<Accepted>,
    probes: BTreeMap<u32, Probe>,
    next_probe: u32,
    stream: Option<Stream>,
    /// Sockets sent on their way (FIN or nothing), dropped when done or at
    /// their deadline.
    closing: VecDeque<(SocketHandle, Instant)>,
    next_port: u16,
}

impl Tcp {
    /// `seed` spreads guests' first ephemeral ports apart.
    pub fn new(seed: u16) -> Self {
        Tcp {
            listeners: BTreeMap::new(),
            accepted: VecDeque::new(),
            probes: BTreeMap::new(),
            next_probe: 0,
            stream: None,
            closing: VecDeque::new(),
            next_port: EPHEMERAL_FIRST + seed % (EPHEMERAL_LAST - EPHEMERAL_FIRST + 1),
        }
    }

    /// Starts listening on `port`.
    pub fn listen(&mut self, sockets: &mut SocketSet<'static>, port: u16) -> Result<(), TcpError> {
        if port == 0 {
            return Err(TcpError::PortZero);
        }
        if self.listeners.contains_key(&port) {
            return Err(TcpError::AlreadyListening(port));
        }
        if self.listeners.len() >= MAX_LISTEN_PORTS {
            return Err(TcpError::TooManyPorts);
        }
        self.listeners.insert(port, Vec::new());
        self.refill(sockets);
        Ok(())
    }

    /// Stops listening on `port` (every port when `None`): the ports closed.
    /// Connections already accepted carry on, as after closing a listening
    /// socket.
    pub fn unlisten(
        &mut self,
        sockets: &mut SocketSet<'static>,
        port: Option<u16>,
    ) -> Result<Vec<u16>, TcpError> {
        let ports: Vec<u16> = match port {
            Some(p) if self.listeners.contains_key(&p) => vec![p],
            Some(p) => return Err(TcpError::NotListening(p)),
            None if self.listeners.is_empty() => return Err(TcpError::NotListeningAny),
            None => self.listeners.keys().copied().collect(),
        };
        for p in &ports {
            for h in self.listeners.remove(p).unwrap_or_default() {
                sockets.remove(h);
            }
        }
        Ok(ports)
    }

    pub fn listening(&self) -> Listening {
        Listening {
            ports: self.listeners.keys().copied().collect(),
            connections: self.accepted.iter().cloned().collect(),
        }
    }

    /// The connection accepted from `remote`:`remote_port` on `port`, if
    /// this guest has (or had) one.
    pub fn accepted_from(
        &self,
        port: u16,
        remote: Ipv4Addr,
        remote_port: u16,
    ) -> Option<&Accepted> {
        self.accepted
            .iter()
            .rev()
            .find(|a| a.port == port && a.remote == remote && a.remote_port == remote_port)
    }

    /// Opens a connection to `target`:`port` from a fresh ephemeral port.
    fn open(
        &mut self,
        cx: &mut Context,
        sockets: &mut SocketSet<'static>,
        target: Ipv4Addr,
        port: u16,
    ) -> Result<(SocketHandle, u16), TcpError> {
        if port == 0 {
            return Err(TcpError::PortZero);
        }
        let local_port = self.ephemeral(sockets);
        let mut s = socket();
        // One line, one segment: the stream's lines are counted as they go.
        s.set_nagle_enabled(false);
        s.connect(cx, (IpAddress::Ipv4(target), port), local_port)
            .map_err(|_| TcpError::Unaddressable(target))?;
        Ok((sockets.add(s), local_port))
    }

    /// The next ephemeral port no socket of ours uses.
    fn ephemeral(&mut self, sockets: &SocketSet<'static>) -> u16 {
        let used: Vec<u16> = sockets
            .iter()
            .filter_map(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(t) => t.local_endpoint().map(|e| e.port),
                _ => None,
            })
            .collect();
        // Fewer sockets than ports, so a free one comes within len+1 tries.
        for _ in 0..=used.len() {
            let p = self.next_port;
            self.next_port = if p >= EPHEMERAL_LAST {
                EPHEMERAL_FIRST
            } else {
                p + 1
            };
            if !used.contains(&p) {
                return p;
            }
        }
        self.next_port
    }

    /// Starts a connection attempt that gives up at `now + timeout`; its id
    /// for [`Tcp::attempt`].
    pub fn connect(
        &mut self,
        cx: &mut Context,
        sockets: &mut SocketSet<'static>,
        target: Ipv4Addr,
        port: u16,
        timeout: Duration,
        now: Instant,
    ) -> Result<u32, TcpError> {
        if self.probes.len() >= MAX_ATTEMPTS {
            return Err(TcpError::TooManyAttempts);
        }
        let (handle, local_port) = self.open(cx, sockets, target, port)?;
        let id = self.next_probe;
        self.next_probe = self.next_probe.wrapping_add(1);
        self.probes.insert(
            id,
            Probe {
                handle,
                target,
                port,
                local_port,
                started: now,
                deadline: now + timeout,
                done: None,
            },
        );
        Ok(id)
    }

    /// The outcome of attempt `id`, once it has one (taken: asked once).
    pub fn attempt(&mut self, id: u32) -> Option<Attempt> {
        let done = self.probes.get(&id)?.done.clone()?;
        self.probes.remove(&id);
        Some(done)
    }

    /// Abandons attempt `id` (its caller went away).
    pub fn cancel(&mut self, sockets: &mut SocketSet<'static>, id: u32, now: Instant) {
        if let Some(p) = self.probes.remove(&id)
            && p.done.is_none()
        {
            self.close(sockets, p.handle, now);
        }
    }

    pub fn start_stream(
        &mut self,
        cx: &mut Context,
        sockets: &mut SocketSet<'static>,
        target: Ipv4Addr,
        port: u16,
        interval: Duration,
        now: Instant,
    ) -> Result<(), TcpError> {
        if self.stream.is_some() {
            return Err(TcpError::StreamRunning);
        }
        let (handle, local_port) = self.open(cx, sockets, target, port)?;
        self.stream = Some(Stream {
            handle: Some(handle),
            target,
            port,
            local_port,
            interval,
            next_at: now + interval,
            sent: 0,
            acked_bytes: 0,
            unsent: 0,
            state: State::SynSent,
        });
        Ok(())
    }

    pub fn stream(&self) -> Option<StreamReport> {
        self.stream.as_ref().map(Stream::report)
    }

    /// Stops the stream (its connection closes with a FIN) and reports it.
    pub fn stop_stream(
        &mut self,
        sockets: &mut SocketSet<'static>,
        now: Instant,
    ) -> Option<StreamReport> {
        let s = self.stream.take()?;
        if let Some(h) = s.handle {
            self.close(sockets, h, now);
        }
        Some(s.report())
    }

    /// Runs after the stack has taken in what arrived: accepts, reads,
    /// settles attempts, sends the stream's lines, finishes closes.
    pub fn poll(&mut self, sockets: &mut SocketSet<'static>, now: Instant) {
        self.accept(sockets);
        self.read(sockets);
        self.settle(sockets, now);
        self.send_lines(sockets, now);
        self.reap(sockets, now);
    }

    /// When the next line is due, an attempt gives up or a close is cut
    /// short (the sockets' own timers are the stack's to say).
    pub fn poll_at(&self) -> Option<Instant> {
        let stream = self
            .stream
            .as_ref()
            .filter(|s| s.handle.is_some())
            .map(|s| s.next_at);
        let probes = self
            .probes
            .values()
            .filter(|p| p.done.is_none())
            .map(|p| p.deadline);
        let closing = self.closing.iter().map(|(_, at)| *at);
        stream.into_iter().chain(probes).chain(closing).min()
    }

    /// Listening sockets that took a connection become accepted ones; each
    /// port gets its backlog back while there is room.
    fn accept(&mut self, sockets: &mut SocketSet<'static>) {
        for (port, handles) in &mut self.listeners {
            handles.retain(|h| {
                let s = sockets.get::<Socket>(*h);
                if s.state() == State::Listen {
                    return true;
                }
                match s.remote_endpoint().map(|r| (IpAddr::from(r.addr), r.port)) {
                    Some((IpAddr::V4(remote), remote_port)) => {
                        self.accepted.push_back(Accepted {
                            port: *port,
                            remote,
                            remote_port,
                            bytes: 0,
                            lines: 0,
                            state: state_name(s.state()),
                            handle: Some(*h),
                        });
                    }
                    _ => {
                        sockets.remove(*h);
                    }
                }
                false
            });
        }
        self.refill(sockets);
    }

    fn open_accepted(&self) -> usize {
        self.accepted.iter().filter(|a| a.handle.is_some()).count()
    }

    /// Tops each port's listening sockets up to the backlog while open and
    /// listening sockets together stay within [`MAX_CONNECTIONS`] (a SYN
    /// finding none is refused).
    fn refill(&mut self, sockets: &mut SocketSet<'static>) {
        let listening: usize = self.listeners.values().map(Vec::len).sum();
        let mut room = MAX_CONNECTIONS.saturating_sub(self.open_accepted() + listening);
        for (port, handles) in &mut self.listeners {
            while handles.len() < BACKLOG && room > 0 {
                let mut s = socket();
                s.set_timeout(Some(ACCEPTED_TIMEOUT));
                if s.listen(*port).is_err() {
                    break;
                }
                handles.push(sockets.add(s));
                room -= 1;
            }
        }
    }

    /// Counts what accepted connections received and closes the ones their
    /// peer closed.
    fn read(&mut self, sockets: &mut SocketSet<'static>) {
        for a in &mut self.accepted {
            let Some(h) = a.handle else { continue };
            let s = sockets.get_mut::<Socket>(h);
            while s.can_recv() {
                let got = s.recv(|buf| {
                    let lines = buf.iter().filter(|b| **b == b'\n').count();
                    (buf.len(), (buf.len(), lines))
                });
                match got {
                    Ok((0, _)) | Err(_) => break,
                    Ok((n, lines)) => {
                        a.bytes += n as u64;
                        a.lines += lines as u64;
                    }
                }
            }
            if s.state() == State::CloseWait {
                s.close();
            }
            a.state = state_name(s.state());
            if matches!(s.state(), State::Closed | State::TimeWait) {
                sockets.remove(h);
                a.handle = None;
                a.state = state_name(State::Closed);
            }
        }
        // Forget the oldest closed connections beyond the history.
        while self.accepted.len() > MAX_CONNECTIONS + HISTORY {
            match self.accepted.iter().position(|a| a.handle.is_none()) {
                Some(i) => {
                    self.accepted.remove(i);
                }
                None => break,
            }
        }
    }

    /// Attempts that got an answer or ran out of time get their outcome and
    /// lose their socket: an established one closes with a FIN.
    fn settle(&mut self, sockets: &mut SocketSet<'static>, now: Instant) {
        let mut to_close = Vec::new();
        for p in self.probes.values_mut().filter(|p| p.done.is_none()) {
            let s = sockets.get::<Socket>(p.handle);
            let result = match s.state() {
                State::SynSent | State::SynReceived if now >= p.deadline => Outcome::TimedOut,
                State::SynSent | State::SynReceived => continue,
                // A RST to our SYN closes the socket before it was ever open.
                State::Closed => Outcome::Refused,
                _ => Outcome::Established,
            };
            p.done = Some(Attempt {
                target: p.target,
                port: p.port,
                local_port: p.local_port,
                result,
                time_ms: (now - p.started).total_millis(),
            });
            to_close.push(p.handle);
        }
        for h in to_close {
            self.close(sockets, h, now);
        }
    }

    fn send_lines(&mut self, sockets: &mut SocketSet<'static>, now: Instant) {
        let Some(st) = self.stream.as_mut() else {
            return;
        };
        let Some(h) = st.handle else { return };
        let s = sockets.get_mut::<Socket>(h);
        st.state = s.state();
        while st.next_at <= now {
            st.next_at += st.interval;
            let room = s.send_capacity() - s.send_queue();
            if s.state() != State::Established || room < LINE_LEN {
                st.unsent += 1;
                continue;
            }
            let line = format!("line {:010}\n", st.sent % 10_000_000_000);
            match s.send_slice(line.as_bytes()) {
                Ok(n) if n == LINE_LEN => st.sent += 1,
                _ => st.unsent += 1,
            }
        }
        let queued = st.sent * LINE_LEN as u64;
        st.acked_bytes = queued.saturating_sub(s.send_queue() as u64);
        if s.state() == State::Closed {
            // Refused or reset: the stream's connection is gone for good.
            sockets.remove(h);
            st.handle = None;
        }
    }

    /// Sends a socket on its way out: one still opening is dropped (a
    /// client that gives up sends nothing), an open one sends its FIN.
    fn close(&mut self, sockets: &mut SocketSet<'static>, h: SocketHandle, now: Instant) {
        let s = sockets.get_mut::<Socket>(h);
        match s.state() {
            State::Closed | State::SynSent | State::Listen | State::TimeWait => {
                sockets.remove(h);
            }
            _ => {
                s.close();
                if self.closing.len() >= MAX_CLOSING
                    && let Some((old, _)) = self.closing.pop_front()
                {
                    sockets.remove(old);
                }
                self.closing.push_back((h, now + CLOSE_GRACE));
            }
        }
    }

    fn reap(&mut self, sockets: &mut SocketSet<'static>, now: Instant) {
        self.closing.retain(|(h, deadline)| {
            let s = sockets.get::<Socket>(*h);
            let done = matches!(s.state(), State::Closed | State::TimeWait) || now >= *deadline;
            if done {
                sockets.remove(*h);
            }
            !done
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::Guest;
    use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol, Ipv4Cidr};

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// Two guests on one wire: `a` at 10.0.0.1, `b` at 10.0.0.2.
    fn pair() -> (Guest, Guest, Instant) {
        let t0 = Instant::from_millis(1_000);
        let mut a = Guest::new("a", EthernetAddress([2, 0, 0, 0, 0, 1]), t0);
        let mut b = Guest::new("b", EthernetAddress([2, 0, 0, 0, 0, 2]), t0);
        a.set_static(Ipv4Cidr::new(A, 24), None);
        b.set_static(Ipv4Cidr::new(B, 24), None);
        (a, b, t0)
    }

    fn is_ipv4(f: &[u8]) -> bool {
        EthernetFrame::new_checked(f).is_ok_and(|e| e.ethertype() == EthernetProtocol::Ipv4)
    }

    /// Runs both guests in 1 ms steps from `now` for `ms`, carrying frames
    /// between them; `pass(frame)` decides what goes from `a` to `b`.
    fn run(a: &mut Guest, b: &mut Guest, now: &mut Instant, ms: u64, pass: impl Fn(&[u8]) -> bool) {
        for _ in 0..ms {
            *now += Duration::from_millis(1);
            for _ in 0..8 {
                a.poll(*now);
                b.poll(*now);
                let ab: Vec<Vec<u8>> = a.nic.tx.drain(..).filter(|f| pass(f)).collect();
                let ba: Vec<Vec<u8>> = b.nic.tx.drain(..).collect();
                if ab.is_empty() && ba.is_empty() {
                    break;
                }
                b.nic.rx.extend(ab);
                a.nic.rx.extend(ba);
            }
        }
    }

    fn attempt(
        a: &mut Guest,
        b: &mut Guest,
        now: &mut Instant,
        port: u16,
        pass: impl Fn(&[u8]) -> bool + Copy,
    ) -> Attempt {
        let id = a
            .connect(B, port, Duration::from_millis(500), *now)
            .expect("connect");
        for _ in 0..1000 {
            run(a, b, now, 1, pass);
            if let Some(r) = a.connect_result(id) {
                return r;
            }
        }
        panic!("attempt {id} never ended");
    }

    #[test]
    fn a_listener_is_reached_and_the_attempt_closes_behind_it() {
        let (mut a, mut b, mut now) = pair();
        b.listen(22).expect("listen");
        let r = attempt(&mut a, &mut b, &mut now, 22, |_| true);
        assert_eq!(r.result, Outcome::Established, "{r:?}");
        assert_eq!((r.target, r.port), (B, 22));
        run(&mut a, &mut b, &mut now, 50, |_| true);
        let l = b.listening();
        assert_eq!(l.ports, [22]);
        assert_eq!(l.connections.len(), 1, "{l:?}");
        let c = &l.connections[0];
        assert_eq!((c.remote, c.remote_port), (A, r.local_port));
        // The one-shot attempt closed its connection, and the listener its side.
        assert_eq!(c.state, "closed", "{c:?}");
        // The listener still accepts the next one, from another port.
        let r2 = attempt(&mut a, &mut b, &mut now, 22, |_| true);
        assert_eq!(r2.result, Outcome::Established);
        assert_ne!(r2.local_port, r.local_port);
    }

    #[test]
    fn a_port_nobody_listens_on_refuses() {
        let (mut a, mut b, mut now) = pair();
        b.listen(22).expect("listen");
        let r = attempt(&mut a, &mut b, &mut now, 23, |_| true);
        assert_eq!(r.result, Outcome::Refused, "{r:?}");
        assert!(r.time_ms < 500, "a RST answers at once: {r:?}");
    }

    #[test]
    fn a_dropped_syn_times_out_at_the_deadline() {
        let (mut a, mut b, mut now) = pair();
        b.listen(22).expect("listen");
        // ARP passes, IP does not: what a filter dropping the SYN does.
        let r = attempt(&mut a, &mut b, &mut now, 22, |f| !is_ipv4(f));
        assert_eq!(r.result, Outcome::TimedOut, "{r:?}");
        assert_eq!(r.time_ms, 500);
        assert!(b.listening().connections.is_empty());
    }

    #[test]
    fn a_stream_counts_lines_on_both_sides() {
        let (mut a, mut b, mut now) = pair();
        b.listen(5000).expect("listen");
        a.start_tcp_stream(B, 5000, Duration::from_millis(10), now)
            .expect("stream");
        assert_eq!(
            a.start_tcp_stream(B, 5000, Duration::from_millis(10), now),
            Err(TcpError::StreamRunning)
        );
        run(&mut a, &mut b, &mut now, 1_000, |_| true);
        let s = a.tcp_stream().expect("running");
        assert!(s.established, "{s:?}");
        assert!(s.sent >= 90, "a line every 10 ms: {s:?}");
        let (lines, bytes) = b.received_from(5000, A, s.local_port).expect("accepted");
        assert!(lines + 2 >= s.sent && lines <= s.sent, "{lines} of {s:?}");
        assert_eq!(bytes, lines * LINE_LEN as u64);
        // Cut the path: lines go unacknowledged, the connection stays up.
        run(&mut a, &mut b, &mut now, 300, |f| !is_ipv4(f));
        let cut = a.tcp_stream().expect("running");
        assert!(cut.established && cut.sent > s.sent, "{cut:?}");
        assert!(cut.acknowledged < cut.sent, "{cut:?}");
        let (during, _) = b.received_from(5000, A, s.local_port).expect("accepted");
        // Restored: retransmission delivers what was held up.
        run(&mut a, &mut b, &mut now, 3_000, |_| true);
        let back = a.stop_tcp_stream(now).expect("stopped");
        let (after, _) = b.received_from(5000, A, s.local_port).expect("accepted");
        assert!(after > during && after == back.sent, "{after} of {back:?}");
        // All but a line of the last millisecond, whose ACK is on its way.
        assert!(back.acknowledged + 1 >= back.sent, "{back:?}");
        assert!(a.tcp_stream().is_none());
        run(&mut a, &mut b, &mut now, 100, |_| true);
        assert_eq!(b.listening().connections[0].state, "closed");
    }

    #[test]
    fn a_stream_to_a_closed_port_is_refused_and_stays_down() {
        let (mut a, mut b, mut now) = pair();
        a.start_tcp_stream(B, 5000, Duration::from_millis(10), now)
            .expect("stream");
        run(&mut a, &mut b, &mut now, 200, |_| true);
        let s = a.stop_tcp_stream(now).expect("stream");
        assert_eq!(
            (s.established, s.sent, s.state.as_str()),
            (false, 0, "closed"),
            "{s:?}"
        );
    }

    #[test]
    fn listening_is_bounded_and_checked() {
        let (_, mut b, _) = pair();
        assert_eq!(b.listen(0), Err(TcpError::PortZero));
        assert_eq!(b.unlisten(None), Err(TcpError::NotListeningAny));
        for p in 1..=MAX_LISTEN_PORTS as u16 {
            b.listen(p).expect("listen");
        }
        assert_eq!(b.listen(1), Err(TcpError::AlreadyListening(1)));
        assert_eq!(b.listen(100), Err(TcpError::TooManyPorts));
        assert_eq!(b.unlisten(Some(100)), Err(TcpError::NotListening(100)));
        assert_eq!(b.unlisten(Some(1)), Ok(vec![1]));
        b.listen(100).expect("room again");
        assert_eq!(b.unlisten(None).map(|p| p.len()), Ok(MAX_LISTEN_PORTS));
        assert!(b.listening().ports.is_empty());
    }

    #[test]
    fn attempts_under_way_are_bounded() {
        let (mut a, _, now) = pair();
        for _ in 0..MAX_ATTEMPTS {
            a.connect(B, 22, Duration::from_secs(1), now)
                .expect("connect");
        }
        assert_eq!(
            a.connect(B, 22, Duration::from_secs(1), now),
            Err(TcpError::TooManyAttempts)
        );
        assert_eq!(
            a.connect(B, 0, Duration::from_secs(1), now),
            Err(TcpError::TooManyAttempts)
        );
        a.cancel_connect(0, now);
        assert_eq!(
            a.connect(B, 0, Duration::from_secs(1), now),
            Err(TcpError::PortZero)
        );
    }

    #[test]
    fn ephemeral_ports_wrap_inside_the_range() {
        let mut t = Tcp::new(EPHEMERAL_LAST - EPHEMERAL_FIRST);
        let s = SocketSet::new(Vec::new());
        assert_eq!(t.ephemeral(&s), EPHEMERAL_LAST);
        assert_eq!(t.ephemeral(&s), EPHEMERAL_FIRST);
    }
}
