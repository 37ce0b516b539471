//! Security-group filtering: any bytes, either direction, through a port
//! with a port rule, an ICMP rule, a remote-prefix rule and a remote-group
//! rule (the group's member set held by the firewall): a verdict, never a
//! panic; a packet that passed as new passes again (it is tracked now).
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use switchyard_dataplane::secgroup::{Direction, Ethertype, Firewall, PortFilter, Remote, Rule, Verdict};
use switchyard_dataplane::{Counters, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&d, ip)) = data.split_first() else {
        return;
    };
    let dir = if d & 1 == 0 { Direction::Ingress } else { Direction::Egress };
    let rule = |direction, protocol, port_min, port_max, remote| Rule {
        direction,
        ethertype: Ethertype::V4,
        protocol,
        port_min,
        port_max,
        remote,
    };
    let mut fw: Firewall<u8> = Firewall::new(8);
    fw.set(
        0,
        PortFilter {
            rules: vec![
                rule(Direction::Ingress, Some(6), Some(22), Some(22), Remote::Any),
                rule(Direction::Ingress, Some(1), Some(8), None, Remote::Any),
                rule(
                    Direction::Egress,
                    None,
                    None,
                    None,
                    Remote::Prefixes(vec![(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8)]),
                ),
                rule(Direction::Ingress, Some(17), None, None, Remote::Group("g".into())),
            ],
        },
    );
    fw.set_group(
        "g",
        &[
            (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 32),
            (IpAddr::V4(Ipv4Addr::new(192, 168, 0, 0)), 16),
        ],
    );
    let mut c = Counters::default();
    let now = Instant::from_secs(1);
    if fw.check(0, dir, ip, now, &mut c) == Verdict::Pass {
        assert_eq!(fw.check(0, dir, ip, now, &mut c), Verdict::Pass);
    }
});
