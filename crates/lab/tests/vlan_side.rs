//! The VLAN side of the reference fabric: an OVS VM and an SR-IOV VM on the same
//! dynamic VLAN reach each other through the fabric switch (tagged on the
//! trunks, untagged at the VM), and a third VM on another VLAN does not.

use std::net::Ipv4Addr;

use smoltcp::time::Duration;
use smoltcp::wire::{EthernetAddress, Ipv4Cidr};
use switchyard_dataplane::ovs::{self, AccessPort};
use switchyard_dataplane::spoof::PortSecurity;
use switchyard_dataplane::sriov::{self, Vf};
use switchyard_lab::build::{VF_BASE, build};
use switchyard_lab::{Lab, Topology};

const MAC_OVS: EthernetAddress = EthernetAddress([0xfa, 0x16, 0x3e, 0, 1, 1]);
const MAC_SRIOV: EthernetAddress = EthernetAddress([0xfa, 0x16, 0x3e, 0, 3, 1]);
const MAC_OTHER: EthernetAddress = EthernetAddress([0xfa, 0x16, 0x3e, 0, 1, 2]);

fn secured(mac: EthernetAddress, ip: [u8; 4]) -> PortSecurity {
    PortSecurity {
        enabled: true,
        mac,
        ips: vec![Ipv4Addr::from(ip)],
        pairs: vec![],
    }
}

fn lab() -> Lab {
    // The reference fabric without its gateway and internet: pure L2.
    let mut t = Topology::reference().expect("reference");
    t.nodes
        .retain(|n| n.name != "gateway" && n.name != "internet");
    t.links
        .retain(|l| !l.a.starts_with("gateway") && !l.b.starts_with("gateway"));
    let mut lab = build(&t).expect("lab builds");
    lab.ovs_mut("compute-1").expect("ovs").apply(
        1,
        &[
            ovs::Update::Access(AccessPort {
                port: 10,
                vlan: 100,
                security: secured(MAC_OVS, [50, 50, 50, 20]),
            }),
            ovs::Update::Access(AccessPort {
                port: 11,
                vlan: 101,
                security: secured(MAC_OTHER, [50, 50, 50, 22]),
            }),
        ],
    );
    lab.sriov_mut("compute-3").expect("sriov").apply(
        1,
        &[sriov::Update::Vf(Vf {
            port: VF_BASE,
            mac: MAC_SRIOV,
            vlan: 100,
            spoof_check: true,
        })],
    );
    for (name, mac, node, port, ip) in [
        ("vm-ovs", MAC_OVS, "compute-1", 10, [50, 50, 50, 20]),
        (
            "vm-sriov",
            MAC_SRIOV,
            "compute-3",
            VF_BASE,
            [50, 50, 50, 21],
        ),
        ("vm-other", MAC_OTHER, "compute-1", 11, [50, 50, 50, 22]),
    ] {
        lab.add_guest(name, mac).expect("guest");
        lab.attach(name, node, port).expect("attach");
        lab.guest_mut(name)
            .expect("guest")
            .set_static(Ipv4Cidr::new(Ipv4Addr::from(ip), 24), None);
    }
    lab
}

#[test]
fn ovs_and_sriov_vms_share_the_vlan_through_the_fabric() {
    let mut lab = lab();
    let now = lab.now;
    lab.guest_mut("vm-ovs").expect("g").start_ping(
        Ipv4Addr::new(50, 50, 50, 21),
        Duration::from_millis(10),
        now,
    );
    lab.guest_mut("vm-other").expect("g").start_ping(
        Ipv4Addr::new(50, 50, 50, 21),
        Duration::from_millis(10),
        now,
    );
    lab.run_for(Duration::from_millis(500));
    let p = lab
        .guest_mut("vm-ovs")
        .expect("g")
        .stop_ping()
        .expect("stream");
    assert!(p.sent() >= 49);
    assert!(p.lost().len() <= 1, "lost {:?}", p.lost());
    let other = lab
        .guest_mut("vm-other")
        .expect("g")
        .stop_ping()
        .expect("stream");
    assert_eq!(other.answered(), 0, "VLAN 101 must not reach VLAN 100");
    // The fabric learned both VM MACs on VLAN 100 only.
    let fdb = lab.fabric_mut("fabric").expect("fabric").fdb().entries();
    assert!(
        fdb.iter().any(|(v, m, _)| *v == 100 && *m == MAC_OVS),
        "{fdb:?}"
    );
    assert!(
        fdb.iter().any(|(v, m, _)| *v == 100 && *m == MAC_SRIOV),
        "{fdb:?}"
    );
}

#[test]
fn trunk_capture_is_a_readable_pcap_of_tagged_frames() {
    let mut lab = lab();
    lab.capture("fabric", 3).expect("capture");
    let now = lab.now;
    lab.guest_mut("vm-ovs").expect("g").start_ping(
        Ipv4Addr::new(50, 50, 50, 21),
        Duration::from_millis(10),
        now,
    );
    lab.run_for(Duration::from_millis(100));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("trunk.pcap");
    lab.captured("fabric", 3)
        .expect("capture")
        .write(&path)
        .expect("write pcap");
    let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(&path).expect("open"))
        .expect("pcap header");
    assert_eq!(r.header().datalink, pcap_file::DataLink::ETHERNET);
    let mut n = 0;
    while let Some(p) = r.next_packet() {
        let p = p.expect("record");
        assert_eq!(
            switchyard_dataplane::wire::vlan::vlan_of(&p.data).expect("ethernet"),
            Some(100)
        );
        n += 1;
    }
    assert!(
        n >= 18,
        "echo requests and replies on the SR-IOV trunk: {n}"
    );
}

#[test]
fn an_unanswered_stream_does_not_block_the_next() {
    let mut lab = lab();
    let mut answered = Vec::new();
    for target in [[50, 50, 50, 21], [50, 50, 50, 22], [50, 50, 50, 21]] {
        let now = lab.now;
        lab.guest_mut("vm-ovs").expect("g").start_ping(
            Ipv4Addr::from(target),
            Duration::from_millis(10),
            now,
        );
        lab.run_for(Duration::from_millis(200));
        answered.push(
            lab.guest_mut("vm-ovs")
                .expect("g")
                .stop_ping()
                .expect("stream")
                .answered(),
        );
    }
    assert!(
        answered[0] >= 19 && answered[1] == 0 && answered[2] >= 19,
        "{answered:?}"
    );
}
