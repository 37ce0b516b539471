//! VXLAN (RFC 7348) header. smoltcp has no VXLAN view, so this one is written by
//! hand in smoltcp's `wire` style: `Packet<T: AsRef<[u8]>>` with `new_checked`.
//!
//! ```text
//!  0                   1                   2                   3
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```

use super::{Error, Result};

pub const HEADER_LEN: usize = 8;
/// IANA port for VXLAN.
pub const UDP_PORT: u16 = 4789;
const FLAG_I: u8 = 0x08;

#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks length and the I flag (a VNI is present).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN || b[0] & FLAG_I == 0 {
            return Err(Error);
        }
        Ok(Packet { buffer })
    }

    pub fn vni(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[4], b[5], b[6]])
    }

    /// The inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

/// Writes a VXLAN header for `vni` followed by `inner` into a new buffer.
pub fn encap(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + inner.len());
    let v = vni.to_be_bytes();
    out.extend_from_slice(&[FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]);
    out.extend_from_slice(inner);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encap_decap() {
        let p = encap(0x12_3456, b"inner");
        let v = Packet::new_checked(&p[..]).expect("valid");
        assert_eq!(v.vni(), 0x12_3456);
        assert_eq!(v.payload(), b"inner");
        assert!(Packet::new_checked(&p[..7]).is_err());
        let mut no_i = p.clone();
        no_i[0] = 0;
        assert!(Packet::new_checked(&no_i[..]).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(b in prop::collection::vec(any::<u8>(), 0..24)) {
            if let Ok(p) = Packet::new_checked(&b[..]) {
                let _ = (p.vni(), p.payload().len());
            }
        }
    }
}
