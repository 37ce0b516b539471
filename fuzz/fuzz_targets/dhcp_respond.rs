//! The DHCP responder on arbitrary frames: the first byte picks whether the
//! rest is a whole frame or a DHCP payload wrapped in 0.0.0.0:68 → 255.255.255.255:67.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use switchyard_dataplane::dhcp::{self, Verdict};
use switchyard_dataplane::frames;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let client = switchyard_fuzz::mac(0, 1);
    let frame = if sel & 1 == 0 {
        rest.to_vec()
    } else {
        frames::udp(
            frames::BROADCAST,
            client,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            68,
            67,
            64,
            rest,
        )
    };
    let mut lease = switchyard_fuzz::lease(11);
    lease.prefix_len = sel >> 2;
    if let Verdict::Reply(r) = dhcp::respond(&frame, switchyard_fuzz::mac(0xff, 1), &lease) {
        assert!(r.len() >= 42 + 240, "a reply is a full BOOTP message");
    }
});
