//! Connection tracking: any bytes parse or are refused without a panic, and
//! tracking what parsed (committing what is new) never panics either; a
//! committed packet is then established, and its reply too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_dataplane::Instant;
use switchyard_dataplane::conntrack::{Dir, Kind, Packet, State, Tracker};

fuzz_target!(|data: &[u8]| {
    let Some(p) = Packet::parse_ip(data) else {
        return;
    };
    let mut ct: Tracker<u8> = Tracker::new(4);
    let now = Instant::from_secs(1);
    if ct.track(0, &p, now) == State::New && ct.commit(0, &p, now) {
        assert_eq!(ct.track(0, &p, now), State::Established(Dir::Original));
        if !matches!(p.kind, Kind::IcmpError(_)) && p.tuple.reply() != p.tuple {
            let reply = Packet {
                tuple: p.tuple.reply(),
                kind: Kind::Other,
            };
            assert_eq!(ct.track(0, &reply, now), State::Established(Dir::Reply));
        }
    }
});
