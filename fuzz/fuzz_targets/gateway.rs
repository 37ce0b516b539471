//! The gateway pipeline's `process` on arbitrary packet sequences, starting from
//! the reference SNAT configuration (trunk 1, external 2, underlay).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let f = switchyard_dataplane::gateway::snat_fixture(64);
    let mut g = f.gateway;
    let before = switchyard_dataplane::Pipeline::counters(&g).clone();
    // The fixture already pushed one ARP reply through; count from there.
    let mut out = Vec::new();
    let mut now = 0i64;
    let cs = switchyard_fuzz::chunks(data);
    for (sel, dt, bytes) in &cs {
        now += i64::from(*dt) * 2_500;
        let t = switchyard_dataplane::Instant::from_millis(now);
        let input = match sel % 4 {
            0 => switchyard_dataplane::Input::Frame {
                port: 1,
                data: bytes,
            },
            1 => switchyard_dataplane::Input::Frame {
                port: 2,
                data: bytes,
            },
            2 => switchyard_dataplane::Input::Underlay {
                src: f.vtep,
                data: bytes,
            },
            _ => switchyard_dataplane::Input::Frame {
                port: 7,
                data: bytes,
            },
        };
        switchyard_dataplane::Pipeline::process(&mut g, t, input, &mut out);
        let _ = switchyard_dataplane::Pipeline::poll(&mut g, t, &mut out);
    }
    let c = switchyard_dataplane::Pipeline::counters(&g);
    assert_eq!(c.rx - before.rx, cs.len() as u64);
});
