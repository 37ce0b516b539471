//! 802.1Q tags. smoltcp's `wire` has no VLAN header, so this is written by hand
//! in its style: a checked view over a buffer plus a small `Repr`.
//!
//! Layout of a tagged Ethernet frame: dst(6) src(6) TPID 0x8100(2) TCI(2) type(2).

use super::{Error, Result};

pub const TPID: u16 = 0x8100;
/// Bytes a tag adds to a frame.
pub const TAG_LEN: usize = 4;
const ETH_ADDRS: usize = 12;

/// The VLAN id of a tagged frame, `None` for an untagged one.
/// Errors only when the frame is too short to say.
pub fn vlan_of(frame: &[u8]) -> Result<Option<u16>> {
    if frame.len() < ETH_ADDRS + 2 {
        return Err(Error);
    }
    let tpid = u16::from_be_bytes([frame[12], frame[13]]);
    if tpid != TPID {
        return Ok(None);
    }
    if frame.len() < ETH_ADDRS + TAG_LEN + 2 {
        return Err(Error);
    }
    let tci = u16::from_be_bytes([frame[14], frame[15]]);
    Ok(Some(tci & 0x0fff))
}

/// A copy of `frame` with a tag for `vid` inserted after the addresses.
/// `frame` must be an untagged Ethernet frame of at least 14 bytes.
pub fn push_tag(frame: &[u8], vid: u16) -> Result<Vec<u8>> {
    if frame.len() < ETH_ADDRS + 2 {
        return Err(Error);
    }
    let mut out = Vec::with_capacity(frame.len() + TAG_LEN);
    out.extend_from_slice(&frame[..ETH_ADDRS]);
    out.extend_from_slice(&TPID.to_be_bytes());
    out.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    out.extend_from_slice(&frame[ETH_ADDRS..]);
    Ok(out)
}

/// A copy of a tagged `frame` without its tag.
pub fn pop_tag(frame: &[u8]) -> Result<Vec<u8>> {
    if frame.len() < ETH_ADDRS + TAG_LEN + 2 {
        return Err(Error);
    }
    let mut out = Vec::with_capacity(frame.len() - TAG_LEN);
    out.extend_from_slice(&frame[..ETH_ADDRS]);
    out.extend_from_slice(&frame[ETH_ADDRS + TAG_LEN..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn push_then_pop_roundtrips() {
        let f: Vec<u8> = (0u8..60).collect();
        let t = push_tag(&f, 123).expect("tag");
        assert_eq!(vlan_of(&t).expect("parses"), Some(123));
        assert_eq!(pop_tag(&t).expect("untag"), f);
        assert_eq!(vlan_of(&f).expect("parses"), None);
        assert!(vlan_of(&t[..15]).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(b in prop::collection::vec(any::<u8>(), 0..40), vid in any::<u16>()) {
            let _ = vlan_of(&b);
            let _ = pop_tag(&b);
            if let Ok(t) = push_tag(&b, vid) {
                prop_assert_eq!(vlan_of(&t).expect("own tag"), Some(vid & 0x0fff));
            }
        }
    }
}
