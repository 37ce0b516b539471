//! `PortSecurity::check` on arbitrary frames: never panics; what passes comes
//! from the port's MAC or an allowed pair's MAC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_dataplane::frames;

fuzz_target!(|data: &[u8]| {
    let s = switchyard_fuzz::secured(switchyard_fuzz::mac(0, 1), 11);
    if s.check(data).is_ok() {
        let (_, src) = frames::macs(data).expect("passing frames have MACs");
        assert!(src == s.mac || s.pairs.iter().any(|p| p.mac == src));
    }
});
