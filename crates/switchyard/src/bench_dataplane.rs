//! `switchyard bench dataplane`: packets per second through the forwarding
//! pipelines on one core, with no I/O: the pipeline is driven in a loop with a
//! prepared input, and the output vector is reused (cleared between calls), so
//! what is measured is the pipeline's own work (parsing, checks, lookups,
//! building the output packet).
//!
//! Paths (each with 64-byte and 1400-byte inner Ethernet frames):
//! * `vrouter_encap`: a local VM frame to a MAC behind another VTEP → VXLAN;
//! * `vrouter_encap_sg`: `vrouter_encap` through the interface's security
//!   groups (100 rules, the allowing one last) on an established connection;
//! * `vrouter_decap`: VXLAN from the underlay → the local VM port;
//! * `ovs_bridge`: access port → a learned access port on the same VLAN;
//! * `gateway_snat`: an inside host's UDP datagram (VXLAN from a vRouter) routed
//!   and source-NATed to the external network (an established connection);
//! * `gateway_snat_new_flow`: the same, each datagram from a new source port, so
//!   every packet sets up a connection (its rate is connections per second; 64 B
//!   only, 50,000 flows per run on a fresh gateway, median of 5 runs);
//! * `vrouter_sg_new_flow`: `vrouter_encap_sg` with every datagram from a new
//!   source port: each one matched against the 100 rules and tracked
//!   (connections per second; same method as `gateway_snat_new_flow`).

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use anyhow::{Context, bail};
use serde_json::json;
use switchyard_dataplane::dhcp::Lease;
use switchyard_dataplane::frames;
use switchyard_dataplane::gateway;
use switchyard_dataplane::ovs::{self, AccessPort, OvsBridge};
use switchyard_dataplane::spoof::PortSecurity;
use switchyard_dataplane::vrouter::{self, Interface, RemoteMac, Vrouter};
use switchyard_dataplane::wire::vxlan;
use switchyard_dataplane::{Input, Instant, Mac, Output, Pipeline};

use crate::stdout::outln;

/// Inner Ethernet frame sizes measured.
pub const FRAME_SIZES: [usize; 2] = [64, 1400];
/// Packets pushed through before timing.
const WARMUP: u64 = 20_000;
/// Wall time each measurement aims for.
const TARGET: StdDuration = StdDuration::from_millis(500);

/// One measured path and frame size.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub path: &'static str,
    pub frame_bytes: usize,
    pub packets: u64,
    pub elapsed: StdDuration,
}

impl Measurement {
    pub fn mpps(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    pub fn ns_per_packet(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.packets as f64
    }
}

/// Runs every path, then prints a table or, with `json`, exactly
/// `{"results":[{"path":…,"frame_bytes":…,"mpps":…},…]}`.
pub fn run(json: bool) -> anyhow::Result<()> {
    let results = measure_all(TARGET)?;
    if json {
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|m| {
                json!({
                    "path": m.path,
                    "frame_bytes": m.frame_bytes,
                    "mpps": (m.mpps() * 1000.0).round() / 1000.0,
                })
            })
            .collect();
        outln!("{}", json!({ "results": rows }));
    } else {
        outln!("dataplane forwarding, one core, no I/O");
        outln!(
            "{:<22} {:>11} {:>10} {:>10} {:>12} {:>12}",
            "path",
            "frame_bytes",
            "Mpps",
            "ns/pkt",
            "Gbit/s",
            "packets"
        );
        for m in &results {
            outln!(
                "{:<22} {:>11} {:>10.3} {:>10.1} {:>12.2} {:>12}",
                m.path,
                m.frame_bytes,
                m.mpps(),
                m.ns_per_packet(),
                m.mpps() * 1e6 * m.frame_bytes as f64 * 8.0 / 1e9,
                m.packets
            );
        }
    }
    Ok(())
}

/// Measures every path at every frame size, each for about `target`.
pub fn measure_all(target: StdDuration) -> anyhow::Result<Vec<Measurement>> {
    let mut v = Vec::new();
    for bytes in FRAME_SIZES {
        v.push(vrouter_encap(bytes, target)?);
        v.push(vrouter_encap_sg(bytes, target)?);
        v.push(vrouter_decap(bytes, target)?);
        v.push(ovs_bridge(bytes, target)?);
        v.push(gateway_snat(bytes, target)?);
    }
    v.push(gateway_snat_new_flow()?);
    v.push(vrouter_sg_new_flow()?);
    // Table order: path, then frame size.
    let order = [
        "vrouter_encap",
        "vrouter_encap_sg",
        "vrouter_decap",
        "ovs_bridge",
        "gateway_snat",
        "gateway_snat_new_flow",
        "vrouter_sg_new_flow",
    ];
    v.sort_by_key(|m| (order.iter().position(|p| *p == m.path), m.frame_bytes));
    Ok(v)
}

fn mac(a: u8, b: u8) -> Mac {
    Mac::from_bytes(&[0x02, 0, 0, 0, a, b])
}

const VNI: u32 = 1000;
const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(50, 50, 50, 11);
const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(50, 50, 50, 21);
const REMOTE_VTEP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 14);

/// compute-2's vRouter as the reference lab configures it: one network, a
/// secured local interface with a DHCP lease, a remote VM behind compute-4.
fn vrouter_setup() -> anyhow::Result<Vrouter> {
    let mut v = Vrouter::new(mac(0xff, 1));
    let lease = Lease {
        ip: LOCAL_IP,
        prefix_len: 24,
        router: Some(Ipv4Addr::new(50, 50, 50, 1)),
        dns: vec![Ipv4Addr::new(9, 9, 9, 9)],
        routes: vec![],
        mtu: 1450,
        lease_secs: 86_400,
        server: Ipv4Addr::new(50, 50, 50, 2),
    };
    v.apply(
        1,
        &[
            vrouter::Update::Network {
                vni: VNI,
                flood: vec![Ipv4Addr::new(192, 0, 2, 1), REMOTE_VTEP],
            },
            vrouter::Update::Interface(Interface {
                port: 1,
                vni: VNI,
                security: PortSecurity {
                    enabled: true,
                    mac: mac(0, 1),
                    ips: vec![LOCAL_IP],
                    pairs: vec![],
                },
                dhcp: Some(lease),
            }),
            vrouter::Update::Remote(RemoteMac {
                vni: VNI,
                mac: mac(1, 1),
                ips: vec![REMOTE_IP],
                vtep: REMOTE_VTEP,
            }),
        ],
    )
    .context("vrouter configuration")?;
    Ok(v)
}

fn udp_frame(dst: Mac, src: Mac, sip: Ipv4Addr, dip: Ipv4Addr, bytes: usize) -> Vec<u8> {
    let payload = vec![0x5a; bytes.saturating_sub(42)];
    frames::udp(dst, src, sip, dip, 40000, 5001, 64, &payload)
}

fn vrouter_encap(bytes: usize, target: StdDuration) -> anyhow::Result<Measurement> {
    let mut v = vrouter_setup()?;
    let frame = udp_frame(mac(1, 1), mac(0, 1), LOCAL_IP, REMOTE_IP, bytes);
    let input = Input::Frame {
        port: 1,
        data: &frame,
    };
    measure(
        "vrouter_encap",
        bytes,
        &mut v,
        target,
        |_| input,
        |out| matches!(out, [Output::Underlay { dst, .. }] if *dst == REMOTE_VTEP),
    )
}

/// 100 rules for port 1: 99 ingress TCP rules from other prefixes, then the
/// egress rule that admits the measured flow.
fn sg_filter() -> vrouter::Update {
    use switchyard_dataplane::secgroup::{Direction, Ethertype, PortFilter, Remote, Rule};
    let mut rules: Vec<Rule> = (0..99u16)
        .map(|i| Rule {
            direction: Direction::Ingress,
            ethertype: Ethertype::V4,
            protocol: Some(6),
            port_min: Some(1000 + i),
            port_max: Some(1000 + i),
            remote: Remote::Prefixes(vec![(
                std::net::IpAddr::V4(Ipv4Addr::new(10, (i >> 8) as u8, i as u8, 0)),
                24,
            )]),
        })
        .collect();
    rules.push(Rule {
        direction: Direction::Egress,
        ethertype: Ethertype::V4,
        protocol: Some(17),
        port_min: None,
        port_max: None,
        remote: Remote::Prefixes(vec![(std::net::IpAddr::V4(REMOTE_IP), 32)]),
    });
    vrouter::Update::Filter {
        port: 1,
        filter: Some(PortFilter { rules }),
    }
}

fn vrouter_encap_sg(bytes: usize, target: StdDuration) -> anyhow::Result<Measurement> {
    let mut v = vrouter_setup()?;
    v.apply(2, &[sg_filter()]).context("filter")?;
    let frame = udp_frame(mac(1, 1), mac(0, 1), LOCAL_IP, REMOTE_IP, bytes);
    let input = Input::Frame {
        port: 1,
        data: &frame,
    };
    measure(
        "vrouter_encap_sg",
        bytes,
        &mut v,
        target,
        |_| input,
        |out| matches!(out, [Output::Underlay { dst, .. }] if *dst == REMOTE_VTEP),
    )
}

/// Connections set up per second through the filter: every datagram from a
/// new source port is a new connection, checked against the rules, tracked.
fn vrouter_sg_new_flow() -> anyhow::Result<Measurement> {
    const FLOWS: u16 = 50_000;
    let mut runs = Vec::new();
    for _ in 0..5 {
        let mut v = vrouter_setup()?;
        v.apply(2, &[sg_filter()]).context("filter")?;
        let frames: Vec<Vec<u8>> = (0..FLOWS)
            .map(|i| {
                frames::udp(
                    mac(1, 1),
                    mac(0, 1),
                    LOCAL_IP,
                    REMOTE_IP,
                    10_000 + i,
                    5001,
                    64,
                    &[0x5a; 22],
                )
            })
            .collect();
        let mut out: Vec<Output> = Vec::with_capacity(4);
        let start = StdInstant::now();
        for f in &frames {
            out.clear();
            v.process(
                Instant::from_millis(0),
                black_box(Input::Frame { port: 1, data: f }),
                &mut out,
            );
            black_box(&out);
        }
        let elapsed = start.elapsed();
        if v.connections() != usize::from(FLOWS) {
            bail!(
                "vrouter_sg_new_flow: {FLOWS} new flows made {} connections",
                v.connections()
            );
        }
        runs.push(elapsed);
    }
    runs.sort();
    Ok(Measurement {
        path: "vrouter_sg_new_flow",
        frame_bytes: 64,
        packets: u64::from(FLOWS),
        elapsed: runs[runs.len() / 2],
    })
}

fn vrouter_decap(bytes: usize, target: StdDuration) -> anyhow::Result<Measurement> {
    let mut v = vrouter_setup()?;
    let datagram = vxlan::encap(
        VNI,
        &udp_frame(mac(0, 1), mac(1, 1), REMOTE_IP, LOCAL_IP, bytes),
    );
    let input = Input::Underlay {
        src: REMOTE_VTEP,
        data: &datagram,
    };
    measure(
        "vrouter_decap",
        bytes,
        &mut v,
        target,
        |_| input,
        |out| matches!(out, [Output::Frame { port: 1, .. }]),
    )
}

fn ovs_bridge(bytes: usize, target: StdDuration) -> anyhow::Result<Measurement> {
    let mut o = OvsBridge::new();
    let access = |port, m: Mac, ip| {
        ovs::Update::Access(AccessPort {
            port,
            vlan: 101,
            security: PortSecurity {
                enabled: true,
                mac: m,
                ips: vec![ip],
                pairs: vec![],
            },
        })
    };
    let b_ip = Ipv4Addr::new(50, 50, 50, 12);
    o.apply(
        1,
        &[
            ovs::Update::Trunk { port: 100 },
            access(1, mac(0, 1), LOCAL_IP),
            access(2, mac(0, 2), b_ip),
            access(3, mac(0, 3), Ipv4Addr::new(50, 50, 50, 13)),
        ],
    );
    // B announces itself so the bridge learns it on port 2.
    let mut out = Vec::new();
    let hello = udp_frame(
        frames::BROADCAST,
        mac(0, 2),
        b_ip,
        Ipv4Addr::new(50, 50, 50, 255),
        64,
    );
    o.process(
        Instant::from_millis(0),
        Input::Frame {
            port: 2,
            data: &hello,
        },
        &mut out,
    );
    let frame = udp_frame(mac(0, 2), mac(0, 1), LOCAL_IP, b_ip, bytes);
    let input = Input::Frame {
        port: 1,
        data: &frame,
    };
    measure(
        "ovs_bridge",
        bytes,
        &mut o,
        target,
        |_| input,
        |out| matches!(out, [Output::Frame { port: 2, .. }]),
    )
}

fn gateway_snat(bytes: usize, target: StdDuration) -> anyhow::Result<Measurement> {
    let f = gateway::snat_fixture(bytes);
    let mut g = f.gateway;
    let input = Input::Underlay {
        src: f.vtep,
        data: &f.packet,
    };
    measure(
        "gateway_snat",
        bytes,
        &mut g,
        target,
        |_| input,
        |out| matches!(out, [Output::Frame { .. }]),
    )
}

/// Connections set up per second: every packet opens a new SNAT binding.
fn gateway_snat_new_flow() -> anyhow::Result<Measurement> {
    const FLOWS: u16 = 50_000;
    // VXLAN (8) + Ethernet (14) + IPv4 (20): the inner UDP header.
    const UDP: usize = 42;
    let mut runs = Vec::new();
    for _ in 0..5 {
        let f = gateway::snat_fixture(64);
        let mut g = f.gateway;
        let packets: Vec<Vec<u8>> = (0..FLOWS)
            .map(|i| {
                let mut p = f.packet.clone();
                p[UDP..UDP + 2].copy_from_slice(&(10_000 + i).to_be_bytes());
                // A zero UDP checksum means "none" over IPv4.
                p[UDP + 6..UDP + 8].copy_from_slice(&[0, 0]);
                p
            })
            .collect();
        let mut out: Vec<Output> = Vec::with_capacity(4);
        let before = g.nat_connections();
        let start = StdInstant::now();
        for p in &packets {
            out.clear();
            g.process(
                Instant::from_millis(0),
                black_box(Input::Underlay {
                    src: f.vtep,
                    data: p,
                }),
                &mut out,
            );
            black_box(&out);
        }
        let elapsed = start.elapsed();
        let made = g.nat_connections() - before;
        if made != usize::from(FLOWS) {
            bail!("gateway_snat_new_flow: {FLOWS} new flows set up {made} connections");
        }
        runs.push(elapsed);
    }
    runs.sort();
    Ok(Measurement {
        path: "gateway_snat_new_flow",
        frame_bytes: 64,
        packets: u64::from(FLOWS),
        elapsed: runs[runs.len() / 2],
    })
}

/// Clock for the pipeline: advances 1 ms every 1024 packets, so timers and
/// ageing see time pass as they would at a few Mpps.
fn now_at(i: u64) -> Instant {
    Instant::from_millis(i64::try_from(i >> 10).unwrap_or(i64::MAX))
}

/// Warms up (checking every warm-up packet takes the intended path), sizes a
/// run to about `target`, then times it.
fn measure<'a, P: Pipeline>(
    path: &'static str,
    frame_bytes: usize,
    p: &mut P,
    target: StdDuration,
    input: impl Fn(u64) -> Input<'a>,
    expected: impl Fn(&[Output]) -> bool,
) -> anyhow::Result<Measurement> {
    let mut out: Vec<Output> = Vec::with_capacity(8);
    for i in 0..WARMUP {
        out.clear();
        p.process(now_at(i), input(i), &mut out);
        if !expected(&out) {
            bail!(
                "{path}/{frame_bytes}: packet {i} took an unexpected path: {} outputs, counters {:?}",
                out.len(),
                p.counters()
            );
        }
    }
    // Calibrate: time a slice, then size the run to the target.
    let probe = 50_000u64;
    let start = StdInstant::now();
    for i in WARMUP..WARMUP + probe {
        out.clear();
        p.process(now_at(i), black_box(input(i)), &mut out);
        black_box(&out);
    }
    let per_packet = start.elapsed().as_secs_f64() / probe as f64;
    let packets =
        ((target.as_secs_f64() / per_packet.max(1e-10)) as u64).clamp(100_000, 200_000_000);
    let first = WARMUP + probe;
    let tx_before = p.counters().tx;
    let start = StdInstant::now();
    for i in first..first + packets {
        out.clear();
        p.process(now_at(i), black_box(input(i)), &mut out);
        black_box(&out);
    }
    let elapsed = start.elapsed();
    let sent = p.counters().tx - tx_before;
    if sent != packets {
        bail!("{path}/{frame_bytes}: {packets} packets in, {sent} out");
    }
    Ok(Measurement {
        path,
        frame_bytes,
        packets,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_forwards_and_reports() {
        let r = measure_all(StdDuration::from_millis(1)).expect("all paths forward");
        let names: Vec<(&str, usize)> = r.iter().map(|m| (m.path, m.frame_bytes)).collect();
        assert_eq!(
            names,
            vec![
                ("vrouter_encap", 64),
                ("vrouter_encap", 1400),
                ("vrouter_encap_sg", 64),
                ("vrouter_encap_sg", 1400),
                ("vrouter_decap", 64),
                ("vrouter_decap", 1400),
                ("ovs_bridge", 64),
                ("ovs_bridge", 1400),
                ("gateway_snat", 64),
                ("gateway_snat", 1400),
                ("gateway_snat_new_flow", 64),
                ("vrouter_sg_new_flow", 64),
            ]
        );
        assert!(r.iter().all(|m| m.mpps() > 0.0));
    }
}
