//! What a pipeline sees and emits. Pipelines know ports and frames only: the
//! I/O driver (emulated links in the lab; TAP, UDP sockets and AF_PACKET on
//! Linux) maps its devices to [`PortNo`]s and carries underlay datagrams.

use std::net::Ipv4Addr;

pub use smoltcp::time::{Duration, Instant};

/// A pipeline-local port number (a VM interface, a VF, a trunk, an uplink).
pub type PortNo = u32;

/// One packet handed to a pipeline.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// An Ethernet frame received on a port.
    Frame { port: PortNo, data: &'a [u8] },
    /// A UDP payload received on the underlay (VXLAN, UDP port 4789) from `src`.
    Underlay { src: Ipv4Addr, data: &'a [u8] },
}

/// One packet a pipeline wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An Ethernet frame to send on a port.
    Frame { port: PortNo, data: Vec<u8> },
    /// A UDP payload to send over the underlay to `dst`, port 4789.
    Underlay { dst: Ipv4Addr, data: Vec<u8> },
}

/// A forwarding element: a pure state machine driven by packets and time.
pub trait Pipeline {
    /// Handles one packet, appending what must be sent to `out`.
    fn process(&mut self, now: Instant, input: Input<'_>, out: &mut Vec<Output>);

    /// Time-driven work (MAC ageing, connection timeouts); returns when it wants
    /// to be polled again, if ever.
    fn poll(&mut self, now: Instant, out: &mut Vec<Output>) -> Option<Instant> {
        let _ = (now, out);
        None
    }

    fn counters(&self) -> &crate::Counters;
}

/// An owned received packet, as an I/O driver hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Frame { port: PortNo, data: Vec<u8> },
    Underlay { src: Ipv4Addr, data: Vec<u8> },
}

impl Received {
    pub fn as_input(&self) -> Input<'_> {
        match self {
            Received::Frame { port, data } => Input::Frame { port: *port, data },
            Received::Underlay { src, data } => Input::Underlay { src: *src, data },
        }
    }
}

/// The I/O boundary: moves packets between a pipeline's ports and the world.
/// The emulated lab implements it with in-process links; the Linux driver with
/// TAP devices (VM ports), UDP sockets (the VXLAN underlay) and AF_PACKET (trunks).
pub trait Driver {
    /// The next packet received on any port, if one is waiting.
    fn recv(&mut self) -> Option<Received>;
    /// Sends one packet.
    fn send(&mut self, out: Output);
}

/// Feeds everything the driver has received through the pipeline and sends
/// what comes out; returns the number of packets processed.
pub fn pump(
    pipeline: &mut dyn Pipeline,
    driver: &mut dyn Driver,
    now: Instant,
    scratch: &mut Vec<Output>,
) -> usize {
    let mut n = 0;
    while let Some(rx) = driver.recv() {
        n += 1;
        scratch.clear();
        pipeline.process(now, rx.as_input(), scratch);
        for o in scratch.drain(..) {
            driver.send(o);
        }
    }
    scratch.clear();
    // Timers: the caller polls again on its own schedule, so the deadline is not kept.
    let _ = pipeline.poll(now, scratch);
    for o in scratch.drain(..) {
        driver.send(o);
    }
    n
}
