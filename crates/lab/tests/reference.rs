//! The reference fabric with hand-written configuration (what the controller
//! will compute): one network, VNI 1000 on the overlay and VLAN 100 on physnet1,
//! stitched by the gateway, which also routes and source-NATs to the internet.
//! Guests on OVS, vRouter and SR-IOV nodes get DHCP, ping each other in every
//! pair and ping the internet; then a guest moves from OVS to vRouter mid-ping.

use std::net::Ipv4Addr;

use smoltcp::time::Duration;
use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet};
use switchyard_dataplane::dhcp::Lease;
use switchyard_dataplane::gateway::{self, DhcpPort, RouterInterface, Snat};
use switchyard_dataplane::ovs::{self, AccessPort};
use switchyard_dataplane::spoof::PortSecurity;
use switchyard_dataplane::sriov::{self, Vf};
use switchyard_dataplane::vrouter::{self, Interface, RemoteMac};
use switchyard_lab::build::{VF_BASE, build};
use switchyard_lab::{Lab, Topology};

const VNI: u32 = 1000;
const VLAN: u16 = 100;
const U1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const U2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
const U4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 14);
const GW_IP: Ipv4Addr = Ipv4Addr::new(50, 50, 50, 1);
const GW_MAC: EthernetAddress = EthernetAddress([0xfa, 0x16, 0x3e, 0xff, 0, 1]);
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const INTERNET_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

struct Vm {
    name: &'static str,
    mac: EthernetAddress,
    ip: Ipv4Addr,
}

const VM_OVS: Vm = Vm {
    name: "vm-ovs",
    mac: EthernetAddress([0xfa, 0x16, 0x3e, 0, 1, 10]),
    ip: Ipv4Addr::new(50, 50, 50, 10),
};
const VM_VR: Vm = Vm {
    name: "vm-vrouter",
    mac: EthernetAddress([0xfa, 0x16, 0x3e, 0, 2, 11]),
    ip: Ipv4Addr::new(50, 50, 50, 11),
};
const VM_SRIOV: Vm = Vm {
    name: "vm-sriov",
    mac: EthernetAddress([0xfa, 0x16, 0x3e, 0, 3, 12]),
    ip: Ipv4Addr::new(50, 50, 50, 12),
};
const VM_MIG: Vm = Vm {
    name: "vm-migrate",
    mac: EthernetAddress([0xfa, 0x16, 0x3e, 0, 1, 13]),
    ip: Ipv4Addr::new(50, 50, 50, 13),
};

fn lease(vm: &Vm) -> Lease {
    Lease {
        ip: vm.ip,
        prefix_len: 24,
        router: Some(GW_IP),
        dns: vec![GW_IP],
        routes: vec![],
        mtu: 1450,
        lease_secs: 86400,
        server: GW_IP,
    }
}

fn security(vm: &Vm) -> PortSecurity {
    PortSecurity {
        enabled: true,
        mac: vm.mac,
        ips: vec![vm.ip],
        pairs: vec![],
    }
}

fn remote(vm_mac: EthernetAddress, ip: Ipv4Addr, vtep: Ipv4Addr) -> RemoteMac {
    RemoteMac {
        vni: VNI,
        mac: vm_mac,
        ips: vec![ip],
        vtep,
    }
}

fn vrouter_iface(port: u32, vm: &Vm) -> vrouter::Update {
    vrouter::Update::Interface(Interface {
        port,
        vni: VNI,
        security: security(vm),
        dhcp: Some(lease(vm)),
    })
}

/// The VLAN-side VMs and the router interface, as seen from a vRouter: behind the gateway.
fn vlan_side_remotes() -> Vec<vrouter::Update> {
    [&VM_OVS, &VM_SRIOV, &VM_MIG]
        .iter()
        .map(|vm| vrouter::Update::Remote(remote(vm.mac, vm.ip, U1)))
        .chain([vrouter::Update::Remote(remote(GW_MAC, GW_IP, U1))])
        .collect()
}

fn reference_lab() -> Lab {
    let mut lab = build(&Topology::reference().expect("reference")).expect("lab builds");
    let mut gw = vec![
        gateway::Update::BridgeDomain {
            vlan: VLAN,
            vni: VNI,
            flood: vec![U2, U4],
        },
        gateway::Update::RouterInterface(RouterInterface {
            id: "r1".into(),
            router: String::new(),
            vni: VNI,
            ip: GW_IP,
            prefix_len: 24,
            mac: GW_MAC,
        }),
        gateway::Update::Snat(Snat {
            router_interface_ids: vec!["r1".into()],
            external_ip: EXTERNAL,
        }),
        gateway::Update::RemoteMac(remote(VM_VR.mac, VM_VR.ip, U2)),
    ];
    for vm in [&VM_OVS, &VM_SRIOV, &VM_MIG] {
        gw.push(gateway::Update::DhcpPort(DhcpPort {
            vlan: VLAN,
            mac: vm.mac,
            lease: lease(vm),
        }));
    }
    lab.gateway_mut("gateway")
        .expect("gateway")
        .apply(2, &gw)
        .expect("gateway config");

    let mut v2 = vec![
        vrouter::Update::Network {
            vni: VNI,
            flood: vec![U1, U4],
        },
        vrouter_iface(1, &VM_VR),
    ];
    v2.extend(vlan_side_remotes());
    lab.vrouter_mut("compute-2")
        .expect("vrouter")
        .apply(1, &v2)
        .expect("compute-2 config");
    let mut v4 = vec![
        vrouter::Update::Network {
            vni: VNI,
            flood: vec![U1, U2],
        },
        vrouter::Update::Remote(remote(VM_VR.mac, VM_VR.ip, U2)),
    ];
    v4.extend(vlan_side_remotes());
    lab.vrouter_mut("compute-4")
        .expect("vrouter")
        .apply(1, &v4)
        .expect("compute-4 config");

    lab.ovs_mut("compute-1").expect("ovs").apply(
        1,
        &[
            ovs::Update::Access(AccessPort {
                port: 10,
                vlan: VLAN,
                security: security(&VM_OVS),
            }),
            ovs::Update::Access(AccessPort {
                port: 11,
                vlan: VLAN,
                security: security(&VM_MIG),
            }),
        ],
    );
    lab.sriov_mut("compute-3").expect("sriov").apply(
        1,
        &[sriov::Update::Vf(Vf {
            port: VF_BASE,
            mac: VM_SRIOV.mac,
            vlan: VLAN,
            spoof_check: true,
        })],
    );

    for (vm, node, port) in [
        (&VM_OVS, "compute-1", 10),
        (&VM_VR, "compute-2", 1),
        (&VM_SRIOV, "compute-3", VF_BASE),
        (&VM_MIG, "compute-1", 11),
    ] {
        lab.add_guest(vm.name, vm.mac).expect("guest");
        lab.attach(vm.name, node, port).expect("attach");
    }
    let all_up = lab.run_until(Duration::from_secs(20), |l| {
        [&VM_OVS, &VM_VR, &VM_SRIOV, &VM_MIG]
            .iter()
            .all(|vm| l.guest(vm.name).is_ok_and(|g| g.ip.is_some()))
    });
    assert!(all_up, "every guest gets its DHCP lease");
    lab
}

/// Whether `from` reaches `target`: a 10 ms ping stream for 1.5 s in which,
/// from the first answer on, every echo that had time to return was answered,
/// with no duplicates and no forwarding loop. The start is left out: smoltcp
/// guests send at most one ARP request per second, so a stream that begins
/// while another address resolves waits for its turn.
fn reaches(lab: &mut Lab, from: &str, target: Ipv4Addr) -> bool {
    let now = lab.now;
    lab.guest_mut(from)
        .expect("guest")
        .start_ping(target, Duration::from_millis(10), now);
    lab.run_for(Duration::from_millis(1500));
    let p = lab
        .guest_mut(from)
        .expect("guest")
        .stop_ping()
        .expect("stream");
    assert_eq!(p.duplicates, 0, "{from} -> {target}: duplicated replies");
    assert_eq!(lab.overflowed_ticks, 0, "a forwarding loop");
    // From the first answer on, every echo that had time to come back did:
    // no periodic or partial loss hides behind a passing tail.
    let settled: Vec<bool> = p
        .log
        .values()
        .map(|(_, reply)| reply.is_some())
        .skip_while(|answered| !answered)
        .collect();
    let due = settled.len().saturating_sub(10);
    due >= 20 && settled[..due].iter().all(|a| *a)
}

#[test]
fn every_backend_reaches_every_other_and_the_internet() {
    let mut lab = reference_lab();
    for vm in [&VM_OVS, &VM_VR, &VM_SRIOV] {
        let g = lab.guest(vm.name).expect("guest");
        assert_eq!(
            g.ip.map(|c| c.address()),
            Some(vm.ip),
            "{} got its lease",
            vm.name
        );
        assert_eq!(g.router, Some(GW_IP));
    }
    lab.capture("gateway", 2).expect("capture external link");

    for from in [&VM_OVS, &VM_VR, &VM_SRIOV] {
        for to in [&VM_OVS, &VM_VR, &VM_SRIOV] {
            if from.name == to.name {
                continue;
            }
            assert!(
                reaches(&mut lab, from.name, to.ip),
                "{} -> {}",
                from.name,
                to.name
            );
        }
        assert!(
            reaches(&mut lab, from.name, INTERNET_HOST),
            "{} -> internet",
            from.name
        );
    }
    // The internet saw only the gateway's translated address...
    let seen = lab
        .internet_mut("internet")
        .expect("internet")
        .seen_sources
        .clone();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![EXTERNAL]);
    // ...and so does a capture of the external link.
    let cap = lab.captured("gateway", 2).expect("capture");
    let mut echo_sources = std::collections::BTreeSet::new();
    for (_, f) in &cap.frames {
        let Ok(eth) = EthernetFrame::new_checked(&f[..]) else {
            continue;
        };
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            continue;
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            continue;
        };
        if ip.next_header() == IpProtocol::Icmp && ip.dst_addr() == INTERNET_HOST {
            echo_sources.insert(ip.src_addr());
        }
    }
    assert_eq!(echo_sources.into_iter().collect::<Vec<_>>(), vec![EXTERNAL]);
    let dir = tempfile::tempdir().expect("tempdir");
    cap.write(&dir.path().join("external.pcap"))
        .expect("pcap written");
}

#[test]
fn ovs_guest_moves_to_a_vrouter_while_pinging() {
    let mut lab = reference_lab();
    let now = lab.now;
    lab.guest_mut(VM_MIG.name)
        .expect("guest")
        .start_ping(VM_VR.ip, Duration::from_millis(10), now);
    lab.run_for(Duration::from_millis(500));

    // Nova's flow, with the configuration the controller would push:
    // 1. pre-plug on the destination vRouter;
    lab.vrouter_mut("compute-4")
        .expect("v4")
        .apply(2, &[vrouter_iface(1, &VM_MIG)])
        .expect("pre-plug");
    // 2. the guest pauses for the last copy (30 ms, a typical stop-and-copy
    //    downtime), resumes on the destination with its stack and announces itself;
    lab.detach(VM_MIG.name).expect("detach");
    lab.run_for(Duration::from_millis(30));
    lab.move_guest(VM_MIG.name, "compute-4", 1).expect("move");
    // 3. activation: everyone learns the MAC's new place; the source unplugs.
    lab.run_for(Duration::from_millis(5));
    lab.vrouter_mut("compute-2")
        .expect("v2")
        .apply(
            2,
            &[vrouter::Update::Remote(remote(VM_MIG.mac, VM_MIG.ip, U4))],
        )
        .expect("v2");
    lab.gateway_mut("gateway")
        .expect("gw")
        .apply(
            3,
            &[
                gateway::Update::RemoveDhcpPort {
                    vlan: VLAN,
                    mac: VM_MIG.mac,
                },
                gateway::Update::RemoteMac(remote(VM_MIG.mac, VM_MIG.ip, U4)),
            ],
        )
        .expect("gateway");
    lab.ovs_mut("compute-1")
        .expect("ovs")
        .apply(2, &[ovs::Update::RemoveAccess { port: 11 }]);
    lab.run_for(Duration::from_millis(1000));

    let p = lab
        .guest_mut(VM_MIG.name)
        .expect("guest")
        .stop_ping()
        .expect("stream");
    let lost = p.lost();
    let lost_after_start: Vec<u16> = lost.iter().copied().filter(|s| *s > 0).collect();
    eprintln!(
        "OVS→vRouter move: {} pings at 10 ms, {} lost during the move {:?} (outage ≈ {} ms)",
        p.sent(),
        lost_after_start.len(),
        lost_after_start,
        lost_after_start.len() * 10
    );
    assert!(p.sent() >= 150);
    // Connectivity resumes: the last half second is fully answered...
    let tail_from = p.next_seq.saturating_sub(50);
    assert!(
        lost.iter().all(|s| *s < tail_from),
        "lost after recovery: {lost:?}"
    );
    // ...and the deterministic outage is within 50 ms of pings.
    assert!(lost_after_start.len() <= 5, "lost {lost_after_start:?}");
    // It still reaches the internet from its new place.
    assert!(
        reaches(&mut lab, VM_MIG.name, INTERNET_HOST),
        "after the move -> internet"
    );
}
