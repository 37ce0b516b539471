//! The sriov pipeline's `process` on arbitrary packet sequences (reference config).
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut p = switchyard_fuzz::sriov();
    switchyard_fuzz::drive(
        &mut p,
        &[100, 1, 2, 3, 4, 9],
        Ipv4Addr::new(192, 0, 2, 14),
        data,
    );
});
