//! Moving a guest between vRouters while it pings: its stack travels, it
//! announces itself, the pipelines are reconfigured, and the ping stream resumes
//! after a bounded, deterministic loss.

use std::net::Ipv4Addr;

use smoltcp::time::Duration;
use smoltcp::wire::EthernetAddress;
use switchyard_dataplane::dhcp::Lease;
use switchyard_dataplane::spoof::PortSecurity;
use switchyard_dataplane::vrouter::{Interface, RemoteMac, Update, Vrouter};
use switchyard_lab::{Element, Lab};

const VNI: u32 = 1000;
const MAC_MIG: EthernetAddress = EthernetAddress([0xfa, 0x16, 0x3e, 0, 0, 0x0a]);
const MAC_PEER: EthernetAddress = EthernetAddress([0xfa, 0x16, 0x3e, 0, 0, 0x0b]);
const U2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
const U4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 14);
const IP_MIG: Ipv4Addr = Ipv4Addr::new(50, 50, 50, 10);
const IP_PEER: Ipv4Addr = Ipv4Addr::new(50, 50, 50, 11);

fn iface(port: u32, mac: EthernetAddress, ip: Ipv4Addr) -> Update {
    Update::Interface(Interface {
        port,
        vni: VNI,
        security: PortSecurity {
            enabled: true,
            mac,
            ips: vec![ip],
            pairs: vec![],
        },
        dhcp: Some(Lease {
            ip,
            prefix_len: 24,
            router: None,
            dns: vec![],
            routes: vec![],
            mtu: 1450,
            lease_secs: 86400,
            server: Ipv4Addr::new(50, 50, 50, 1),
        }),
    })
}

fn remote(mac: EthernetAddress, ip: Ipv4Addr, vtep: Ipv4Addr) -> Update {
    Update::Remote(RemoteMac {
        vni: VNI,
        mac,
        ips: vec![ip],
        vtep,
    })
}

#[test]
fn vrouter_to_vrouter_move_keeps_the_ping_stream() {
    let mut v2 = Vrouter::new(EthernetAddress([2, 0, 0, 0, 0, 2]));
    v2.apply(
        1,
        &[
            Update::Network {
                vni: VNI,
                flood: vec![U4],
            },
            iface(1, MAC_MIG, IP_MIG),
            remote(MAC_PEER, IP_PEER, U4),
        ],
    )
    .expect("applies");
    let mut v4 = Vrouter::new(EthernetAddress([2, 0, 0, 0, 0, 4]));
    v4.apply(
        1,
        &[
            Update::Network {
                vni: VNI,
                flood: vec![U2],
            },
            iface(1, MAC_PEER, IP_PEER),
            remote(MAC_MIG, IP_MIG, U2),
        ],
    )
    .expect("applies");
    let mut lab = Lab::new();
    lab.add_node("compute-2", Element::Vrouter(v2), Some(U2))
        .expect("node");
    lab.add_node("compute-4", Element::Vrouter(v4), Some(U4))
        .expect("node");
    lab.add_guest("mig", MAC_MIG).expect("guest");
    lab.add_guest("peer", MAC_PEER).expect("guest");
    lab.attach("mig", "compute-2", 1).expect("attach");
    lab.attach("peer", "compute-4", 1).expect("attach");
    assert!(lab.run_until(
        Duration::from_secs(10),
        |l| l.guest("mig").is_ok_and(|g| g.ip.is_some())
            && l.guest("peer").is_ok_and(|g| g.ip.is_some())
    ));

    let now = lab.now;
    lab.guest_mut("mig")
        .expect("g")
        .start_ping(IP_PEER, Duration::from_millis(10), now);
    lab.run_for(Duration::from_millis(500));

    // Live migration: the destination is pre-plugged, the guest moves, the
    // source is told where the MAC went and unplugs.
    lab.vrouter_mut("compute-4")
        .expect("v4")
        .apply(2, &[iface(2, MAC_MIG, IP_MIG)])
        .expect("pre-plug");
    lab.detach("mig").expect("pause for the last copy");
    lab.run_for(Duration::from_millis(30));
    lab.move_guest("mig", "compute-4", 2).expect("move");
    lab.run_for(Duration::from_millis(20));
    lab.vrouter_mut("compute-2")
        .expect("v2")
        .apply(
            2,
            &[
                Update::RemoveInterface { port: 1 },
                remote(MAC_MIG, IP_MIG, U4),
            ],
        )
        .expect("source update");
    lab.run_for(Duration::from_millis(1000));

    let p = lab
        .guest_mut("mig")
        .expect("g")
        .stop_ping()
        .expect("stream");
    let lost = p.lost();
    eprintln!(
        "vRouter→vRouter move: {} pings at 10 ms, lost {:?}",
        p.sent(),
        lost
    );
    assert!(p.sent() >= 149);
    // Everything from 100 ms after the move on is answered.
    let tail: Vec<u16> = lost.iter().copied().filter(|s| *s >= 60).collect();
    assert!(tail.is_empty(), "pings lost after recovery: {tail:?}");
    assert!(lost.len() <= 5, "lost {lost:?}");
    // The destination served the guest; the source no longer knows its port.
    let v4 = lab.vrouter_mut("compute-4").expect("v4");
    assert!(
        v4.bridge_table(VNI)
            .iter()
            .any(|(m, to)| *m == MAC_MIG && to == "port 2")
    );
    let v2 = lab.vrouter_mut("compute-2").expect("v2");
    assert!(
        v2.bridge_table(VNI)
            .iter()
            .any(|(m, to)| *m == MAC_MIG && to == "vtep 192.0.2.14")
    );
}

#[test]
fn a_moved_guest_announces_itself_on_qemus_schedule() {
    let mut v = Vrouter::new(EthernetAddress([2, 0, 0, 0, 0, 2]));
    v.apply(
        1,
        &[
            Update::Network {
                vni: VNI,
                flood: vec![],
            },
            iface(1, MAC_MIG, IP_MIG),
            iface(2, MAC_MIG, IP_MIG),
        ],
    )
    .expect("applies");
    let mut lab = Lab::new();
    lab.add_node("compute-2", Element::Vrouter(v), Some(U2))
        .expect("node");
    lab.add_guest("mig", MAC_MIG).expect("guest");
    lab.attach("mig", "compute-2", 1).expect("attach");
    assert!(lab.run_until(Duration::from_secs(10), |l| {
        l.guest("mig").is_ok_and(|g| g.ip.is_some())
    }));
    lab.capture("compute-2", 2).expect("capture");
    let moved_at = lab.now;
    lab.move_guest("mig", "compute-2", 2).expect("move");
    lab.run_for(Duration::from_secs(2));
    let garps: Vec<i64> = lab
        .captured("compute-2", 2)
        .expect("capture")
        .frames
        .iter()
        .filter(|(_, f)| f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[28..32] == f[38..42])
        .map(|(t, _)| (*t - moved_at).total_millis() as i64)
        .collect();
    // 5 rounds: after 50 ms, then each interval 100 ms longer (50, 150, 250, 350, 450).
    assert_eq!(garps, vec![50, 200, 450, 800, 1250]);
}
