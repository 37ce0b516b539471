//! VXLAN: `Packet::new_checked` never panics; accessors stay in bounds; encap round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_dataplane::wire::vxlan;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = vxlan::Packet::new_checked(data) {
        assert!(p.vni() < 1 << 24);
        assert_eq!(p.payload().len(), data.len() - vxlan::HEADER_LEN);
        let again = vxlan::encap(p.vni(), p.payload());
        let q = vxlan::Packet::new_checked(&again[..]).expect("own encap");
        assert_eq!((q.vni(), q.payload()), (p.vni(), p.payload()));
    }
});
