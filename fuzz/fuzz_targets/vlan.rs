//! 802.1Q: `vlan_of`, `push_tag`, `pop_tag` never panic and round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_dataplane::wire::vlan;

fuzz_target!(|data: &[u8]| {
    let vid = data.first().map_or(0, |b| u16::from(*b) << 4 | 0xf);
    if let Ok(Some(id)) = vlan::vlan_of(data) {
        assert!(id < 4096);
        let popped = vlan::pop_tag(data).expect("a parsed tag can be popped");
        assert_eq!(popped.len(), data.len() - vlan::TAG_LEN);
    }
    if let Ok(t) = vlan::push_tag(data, vid) {
        assert_eq!(vlan::vlan_of(&t), Ok(Some(vid & 0x0fff)));
        assert_eq!(vlan::pop_tag(&t).as_deref(), Ok(data));
    }
});
