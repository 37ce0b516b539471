//! Two vRouters joined by the VXLAN underlay: DHCP from the vRouter, proxy ARP,
//! encapsulated ping between guests on different nodes.

use std::net::Ipv4Addr;

use smoltcp::time::Duration;
use smoltcp::wire::EthernetAddress;
use switchyard_dataplane::dhcp::Lease;
use switchyard_dataplane::spoof::PortSecurity;
use switchyard_dataplane::vrouter::{Interface, RemoteMac, Update, Vrouter};
use switchyard_lab::{Element, Lab};

const VNI: u32 = 1000;
const MAC_A: EthernetAddress = EthernetAddress([0xfa, 0x16, 0x3e, 0, 0, 0x0a]);
const MAC_B: EthernetAddress = EthernetAddress([0xfa, 0x16, 0x3e, 0, 0, 0x0b]);
const VR_MAC: EthernetAddress = EthernetAddress([0x00, 0x00, 0x5e, 0x00, 0x01, 0x00]);

fn lease(ip: [u8; 4]) -> Lease {
    Lease {
        ip: Ipv4Addr::from(ip),
        prefix_len: 24,
        router: Some(Ipv4Addr::new(50, 50, 50, 1)),
        dns: vec![Ipv4Addr::new(50, 50, 50, 1)],
        routes: vec![],
        mtu: 1450,
        lease_secs: 86400,
        server: Ipv4Addr::new(50, 50, 50, 1),
    }
}

fn iface(port: u32, mac: EthernetAddress, ip: [u8; 4]) -> Update {
    Update::Interface(Interface {
        port,
        vni: VNI,
        security: PortSecurity {
            enabled: true,
            mac,
            ips: vec![Ipv4Addr::from(ip)],
            pairs: vec![],
        },
        dhcp: Some(lease(ip)),
    })
}

fn remote(mac: EthernetAddress, ip: [u8; 4], vtep: [u8; 4]) -> Update {
    Update::Remote(RemoteMac {
        vni: VNI,
        mac,
        ips: vec![Ipv4Addr::from(ip)],
        vtep: Ipv4Addr::from(vtep),
    })
}

fn lab() -> Lab {
    let (u2, u4) = (Ipv4Addr::new(192, 0, 2, 12), Ipv4Addr::new(192, 0, 2, 14));
    let mut v2 = Vrouter::new(VR_MAC);
    v2.apply(
        1,
        &[
            Update::Network {
                vni: VNI,
                flood: vec![u4],
            },
            iface(1, MAC_A, [50, 50, 50, 10]),
            remote(MAC_B, [50, 50, 50, 11], [192, 0, 2, 14]),
        ],
    )
    .expect("config applies");
    let mut v4 = Vrouter::new(VR_MAC);
    v4.apply(
        1,
        &[
            Update::Network {
                vni: VNI,
                flood: vec![u2],
            },
            iface(1, MAC_B, [50, 50, 50, 11]),
            remote(MAC_A, [50, 50, 50, 10], [192, 0, 2, 12]),
        ],
    )
    .expect("config applies");
    let mut lab = Lab::new();
    lab.add_node("compute-2", Element::Vrouter(v2), Some(u2))
        .expect("node");
    lab.add_node("compute-4", Element::Vrouter(v4), Some(u4))
        .expect("node");
    lab.add_guest("a", MAC_A).expect("guest");
    lab.add_guest("b", MAC_B).expect("guest");
    lab.attach("a", "compute-2", 1).expect("attach");
    lab.attach("b", "compute-4", 1).expect("attach");
    lab
}

#[test]
fn guests_get_dhcp_and_ping_across_vxlan() {
    let mut lab = lab();
    let ok = lab.run_until(Duration::from_secs(10), |l| {
        l.guest("a").is_ok_and(|g| g.ip.is_some()) && l.guest("b").is_ok_and(|g| g.ip.is_some())
    });
    assert!(ok, "DHCP did not complete");
    let a = lab.guest("a").expect("a");
    assert_eq!(
        a.ip.map(|c| c.address()),
        Some(Ipv4Addr::new(50, 50, 50, 10))
    );
    assert_eq!(a.ip.map(|c| c.prefix_len()), Some(24));
    assert_eq!(a.router, Some(Ipv4Addr::new(50, 50, 50, 1)));

    let now = lab.now;
    lab.guest_mut("a").expect("a").start_ping(
        Ipv4Addr::new(50, 50, 50, 11),
        Duration::from_millis(10),
        now,
    );
    lab.run_for(Duration::from_secs(1));
    let p = lab.guest_mut("a").expect("a").stop_ping().expect("stream");
    assert!(p.sent() >= 99, "sent {}", p.sent());
    // The first echo may wait for ARP; everything after it is answered.
    assert!(p.lost().len() <= 1, "lost {:?}", p.lost());
    // ARP was answered by compute-2's proxy, never flooded over the underlay:
    // compute-4 saw only encapsulated unicast, no ARP request from a.
    let c4 = lab.counters("compute-4").expect("counters");
    assert_eq!(c4.drops.values().sum::<u64>(), 0, "{c4:?}");
}

#[test]
fn spoofed_and_unknown_traffic_is_dropped_and_counted() {
    let mut lab = lab();
    lab.run_until(Duration::from_secs(10), |l| {
        l.guest("a").is_ok_and(|g| g.ip.is_some())
    });
    // Guest "b" is re-plugged where a's port is configured: its MAC is not the port's.
    lab.detach("a").expect("detach");
    lab.attach("b", "compute-2", 1).expect("attach");
    let now = lab.now;
    lab.guest_mut("b").expect("b").start_ping(
        Ipv4Addr::new(50, 50, 50, 10),
        Duration::from_millis(10),
        now,
    );
    lab.run_for(Duration::from_millis(200));
    let c2 = lab.counters("compute-2").expect("counters");
    assert!(
        c2.dropped(switchyard_dataplane::DropReason::SpoofedMac) > 0,
        "{c2:?}"
    );
}
