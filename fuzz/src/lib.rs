//! Shared pieces of the fuzz targets: realistic pipeline configurations and a
//! splitter turning one fuzz input into a sequence of pipeline inputs.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use switchyard_dataplane::dhcp::Lease;
use switchyard_dataplane::spoof::{AllowedPair, PortSecurity};
use switchyard_dataplane::{
    Input, Instant, Mac, Output, Pipeline, PortNo, fabric, ovs, sriov, vrouter,
};

pub fn mac(a: u8, b: u8) -> Mac {
    Mac::from_bytes(&[0x02, 0, 0, 0, a, b])
}

pub fn lease(last: u8) -> Lease {
    Lease {
        ip: Ipv4Addr::new(50, 50, 50, last),
        prefix_len: 24,
        router: Some(Ipv4Addr::new(50, 50, 50, 1)),
        dns: vec![Ipv4Addr::new(9, 9, 9, 9)],
        routes: vec![(Ipv4Addr::new(10, 0, 0, 0), 8, Ipv4Addr::new(50, 50, 50, 1))],
        mtu: 1450,
        lease_secs: 86_400,
        server: Ipv4Addr::new(50, 50, 50, 2),
    }
}

pub fn secured(mac: Mac, last: u8) -> PortSecurity {
    PortSecurity {
        enabled: true,
        mac,
        ips: vec![Ipv4Addr::new(50, 50, 50, last)],
        pairs: vec![AllowedPair {
            ip: Ipv4Addr::new(10, 1, 0, 0),
            prefix_len: 16,
            mac: mac_pair(),
        }],
    }
}

fn mac_pair() -> Mac {
    mac(0, 0xaa)
}

/// compute-2's vRouter: two networks, four interfaces (one without port security), remote MACs.
pub fn vrouter() -> vrouter::Vrouter {
    use vrouter::{Interface, RemoteMac, Update};
    let mut v = vrouter::Vrouter::new(mac(0xff, 1));
    let gw = Ipv4Addr::new(192, 0, 2, 1);
    let c4 = Ipv4Addr::new(192, 0, 2, 14);
    let mut insecure = secured(mac(0, 4), 14);
    insecure.enabled = false;
    let _ = v.apply(
        1,
        &[
            Update::Network {
                vni: 1000,
                flood: vec![gw, c4],
            },
            Update::Network {
                vni: 1001,
                flood: vec![gw],
            },
            Update::Interface(Interface {
                port: 1,
                vni: 1000,
                security: secured(mac(0, 1), 11),
                dhcp: Some(lease(11)),
            }),
            Update::Interface(Interface {
                port: 2,
                vni: 1000,
                security: secured(mac(0, 2), 12),
                dhcp: Some(lease(12)),
            }),
            Update::Interface(Interface {
                port: 3,
                vni: 1001,
                security: secured(mac(0, 3), 13),
                dhcp: None,
            }),
            Update::Interface(Interface {
                port: 4,
                vni: 1000,
                security: insecure,
                dhcp: None,
            }),
            Update::Remote(RemoteMac {
                vni: 1000,
                mac: mac(1, 1),
                ips: vec![Ipv4Addr::new(50, 50, 50, 21)],
                vtep: c4,
            }),
            Update::Remote(RemoteMac {
                vni: 1000,
                mac: mac(1, 0xfe),
                ips: vec![Ipv4Addr::new(50, 50, 50, 1)],
                vtep: gw,
            }),
        ],
    );
    v
}

/// compute-1's OVS bridge: trunk 100, access ports on VLANs 101 and 102.
pub fn ovs() -> ovs::OvsBridge {
    use ovs::{AccessPort, Update};
    let mut o = ovs::OvsBridge::new();
    let mut insecure = secured(mac(0, 4), 14);
    insecure.enabled = false;
    o.apply(
        1,
        &[
            Update::Trunk { port: 100 },
            Update::Access(AccessPort {
                port: 1,
                vlan: 101,
                security: secured(mac(0, 1), 11),
            }),
            Update::Access(AccessPort {
                port: 2,
                vlan: 101,
                security: secured(mac(0, 2), 12),
            }),
            Update::Access(AccessPort {
                port: 3,
                vlan: 102,
                security: secured(mac(0, 3), 13),
            }),
            Update::Access(AccessPort {
                port: 4,
                vlan: 101,
                security: insecure,
            }),
        ],
    );
    o
}

/// compute-3's SR-IOV NIC: uplink 100, four VFs.
pub fn sriov() -> sriov::SriovNic {
    use sriov::{Update, Vf};
    let mut n = sriov::SriovNic::new();
    n.apply(
        1,
        &[
            Update::Uplink { port: 100 },
            Update::Vf(Vf {
                port: 1,
                mac: mac(0, 1),
                vlan: 101,
                spoof_check: true,
            }),
            Update::Vf(Vf {
                port: 2,
                mac: mac(0, 2),
                vlan: 101,
                spoof_check: true,
            }),
            Update::Vf(Vf {
                port: 3,
                mac: mac(0, 3),
                vlan: 102,
                spoof_check: true,
            }),
            Update::Vf(Vf {
                port: 4,
                mac: mac(0, 4),
                vlan: 101,
                spoof_check: false,
            }),
        ],
    );
    n
}

/// The fabric switch: four trunks with different VLAN filters.
pub fn fabric() -> fabric::FabricSwitch {
    use fabric::Update;
    let mut f = fabric::FabricSwitch::new();
    let set = |v: &[u16]| Some(v.iter().copied().collect::<BTreeSet<u16>>());
    f.apply(&[
        Update::Trunk {
            port: 1,
            vlans: None,
        },
        Update::Trunk {
            port: 2,
            vlans: set(&[101, 102]),
        },
        Update::Trunk {
            port: 3,
            vlans: set(&[101]),
        },
        Update::Trunk {
            port: 4,
            vlans: set(&[200]),
        },
    ]);
    f
}

/// Splits fuzz bytes into (selector, time step, packet) chunks: each chunk is
/// `selector:u8, len:u16 LE, dt:u8, bytes[len]`; a short tail becomes the last packet.
pub fn chunks(mut data: &[u8]) -> Vec<(u8, u8, &[u8])> {
    let mut v = Vec::new();
    while data.len() >= 4 && v.len() < 64 {
        let sel = data[0];
        let len = usize::from(u16::from_le_bytes([data[1], data[2]]));
        let dt = data[3];
        data = &data[4..];
        let n = len.min(data.len());
        v.push((sel, dt, &data[..n]));
        data = &data[n..];
    }
    if !data.is_empty() {
        v.push((0, 0, data));
    }
    v
}

/// Drives `p` with the chunks: selector picks the input kind and port from
/// `ports` (the last choice being the underlay); asserts the counter invariants.
pub fn drive(p: &mut dyn Pipeline, ports: &[PortNo], underlay_src: Ipv4Addr, data: &[u8]) {
    let mut out: Vec<Output> = Vec::new();
    let mut now = 0i64;
    let cs = chunks(data);
    for (sel, dt, bytes) in &cs {
        // Time moves by up to ~10 minutes per packet, so ageing and timeouts are reached.
        now += i64::from(*dt) * 2_500;
        let i = usize::from(*sel) % (ports.len() + 1);
        let input = match ports.get(i) {
            Some(port) => Input::Frame {
                port: *port,
                data: bytes,
            },
            None => Input::Underlay {
                src: underlay_src,
                data: bytes,
            },
        };
        p.process(Instant::from_millis(now), input, &mut out);
        let _ = p.poll(Instant::from_millis(now), &mut out);
    }
    let c = p.counters();
    assert_eq!(c.rx, cs.len() as u64, "rx counts every input");
    assert_eq!(c.tx, out.len() as u64, "tx counts every output");
    assert!(
        c.drops.values().sum::<u64>() <= c.rx,
        "at most one drop per input"
    );
}
