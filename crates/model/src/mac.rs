//! MAC addresses: parsed from any case, rendered lowercase with colons as Neutron does.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Neutron refuses the all-zero and broadcast addresses for ports.
    pub fn is_valid_for_port(&self) -> bool {
        self.0 != [0; 6] && self.0 != [0xff; 6]
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a valid MAC address")]
pub struct BadMac(pub String);

impl FromStr for Mac {
    type Err = BadMac;

    /// Accepts `aa:bb:cc:dd:ee:ff` and `aa-bb-cc-dd-ee-ff`, as netaddr does for the
    /// common forms.
    fn from_str(s: &str) -> Result<Self, BadMac> {
        let sep = if s.contains(':') { ':' } else { '-' };
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(sep) {
            if n == 6 || part.is_empty() || part.len() > 2 {
                return Err(BadMac(s.to_string()));
            }
            out[n] = u8::from_str_radix(part, 16).map_err(|_| BadMac(s.to_string()))?;
            n += 1;
        }
        if n != 6 {
            return Err(BadMac(s.to_string()));
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_renders_lowercase() {
        let m: Mac = "FA:16:3E:0A:0b:0C".parse().expect("valid");
        assert_eq!(m.to_string(), "fa:16:3e:0a:0b:0c");
        assert!("fa:16:3e:0a:0b".parse::<Mac>().is_err());
        assert!("fa:16:3e:0a:0b:0c:0d".parse::<Mac>().is_err());
        assert!("fa:16:3e:0a:0b:zz".parse::<Mac>().is_err());
        assert!("fa::3e:0a:0b:0c".parse::<Mac>().is_err());
        assert!(
            !"00:00:00:00:00:00"
                .parse::<Mac>()
                .expect("parses")
                .is_valid_for_port()
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = s.parse::<Mac>();
        }

        #[test]
        fn roundtrips(b in any::<[u8; 6]>()) {
            let m = Mac(b);
            prop_assert_eq!(m.to_string().parse::<Mac>().expect("own output parses"), m);
        }
    }
}
