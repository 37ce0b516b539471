//! ML2 configuration (`[ml2]`, `[ml2_type_*]` in Neutron's ml2_conf.ini), read from
//! the `[ml2]` table of switchyard's TOML config and checked once at start-up.

use std::collections::BTreeMap;

use serde::Deserialize;
use switchyard_model::{Mac, NetworkType};

/// The raw, user-written form. Field names follow Neutron's options.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Ml2Config {
    pub type_drivers: Vec<String>,
    pub project_network_types: Vec<String>,
    pub mechanism_drivers: Vec<String>,
    pub flat_networks: Vec<String>,
    pub network_vlan_ranges: Vec<String>,
    pub vni_ranges: Vec<String>,
    pub agent_down_time: u64,
    pub base_mac: String,
    pub global_physnet_mtu: u32,
    /// The `[quotas]` table of the config file (not part of `[ml2]`; carried
    /// here to reach the API's settings).
    #[serde(skip)]
    pub quotas: QuotaConfig,
}

/// `[quotas]`: each project's limits unless an admin sets others (Neutron's
/// `quota_*` options and defaults; -1 is unlimited).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    pub quota_network: i64,
    pub quota_subnet: i64,
    pub quota_port: i64,
    pub quota_router: i64,
    pub quota_floatingip: i64,
    pub quota_security_group: i64,
    pub quota_security_group_rule: i64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            quota_network: 100,
            quota_subnet: 100,
            quota_port: 500,
            quota_router: 10,
            quota_floatingip: 50,
            quota_security_group: 10,
            quota_security_group_rule: 100,
        }
    }
}

impl QuotaConfig {
    /// resource name -> default limit.
    pub fn defaults(&self) -> BTreeMap<String, i64> {
        [
            ("floatingip", self.quota_floatingip),
            ("network", self.quota_network),
            ("port", self.quota_port),
            ("router", self.quota_router),
            ("subnet", self.quota_subnet),
            ("security_group", self.quota_security_group),
            ("security_group_rule", self.quota_security_group_rule),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Default for Ml2Config {
    /// The reference lab's settings (DESIGN.md).
    fn default() -> Self {
        Ml2Config {
            type_drivers: vec!["flat".into(), "vlan".into(), "vxlan".into()],
            project_network_types: vec!["vxlan".into()],
            mechanism_drivers: vec![
                "vrouter".into(),
                "fabric".into(),
                "openvswitch".into(),
                "sriovnicswitch".into(),
                "gateway".into(),
            ],
            flat_networks: vec!["*".into()],
            network_vlan_ranges: vec!["physnet1:100:199".into()],
            vni_ranges: vec!["1000:1999".into()],
            agent_down_time: 75,
            base_mac: "fa:16:3e:00:00:00".into(),
            global_physnet_mtu: 1500,
            quotas: QuotaConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ml2 configuration: {0}")]
pub struct ConfigError(pub String);

/// The checked form every driver reads.
#[derive(Debug, Clone)]
pub struct Settings {
    pub type_drivers: Vec<NetworkType>,
    pub project_network_types: Vec<NetworkType>,
    pub mechanism_drivers: Vec<String>,
    /// `None` = any physnet (`*`).
    pub flat_networks: Option<Vec<String>>,
    /// physnet -> project ranges (empty for a provider-only physnet).
    pub vlan_ranges: BTreeMap<String, Vec<(u32, u32)>>,
    pub vni_ranges: Vec<(u32, u32)>,
    pub agent_down_time: u64,
    pub base_mac: [u8; 3],
    pub global_physnet_mtu: u32,
    /// Default quota limits by resource (`[quotas]`).
    pub quota_defaults: BTreeMap<String, i64>,
}

pub const MAX_VLAN: u32 = 4094;
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// IPv4 + UDP + VXLAN headers, as Neutron's VXLAN_ENCAP_OVERHEAD (30) plus IPv4 (20).
pub const VXLAN_OVERHEAD: u32 = 50;

fn range(s: &str, lo: u32, hi: u32, what: &str) -> Result<(u32, u32), ConfigError> {
    let bad = || {
        ConfigError(format!(
            "{what} range '{s}' must be MIN:MAX within {lo}..{hi}"
        ))
    };
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let a: u32 = a.trim().parse().map_err(|_| bad())?;
    let b: u32 = b.trim().parse().map_err(|_| bad())?;
    if a < lo || b > hi || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

impl Ml2Config {
    pub fn check(&self) -> Result<Settings, ConfigError> {
        let parse_types = |list: &[String], what: &str| -> Result<Vec<NetworkType>, ConfigError> {
            list.iter()
                .map(|t| {
                    NetworkType::parse(t)
                        .ok_or_else(|| ConfigError(format!("unknown network type '{t}' in {what}")))
                })
                .collect()
        };
        let type_drivers = parse_types(&self.type_drivers, "type_drivers")?;
        for t in &type_drivers {
            if !matches!(
                t,
                NetworkType::Flat | NetworkType::Vlan | NetworkType::Vxlan
            ) {
                return Err(ConfigError(format!(
                    "type driver '{t}' is not available; switchyard has flat, vlan and vxlan"
                )));
            }
        }
        let project_network_types =
            parse_types(&self.project_network_types, "project_network_types")?;
        for t in &project_network_types {
            if !type_drivers.contains(t) {
                return Err(ConfigError(format!(
                    "project network type '{t}' is not in type_drivers"
                )));
            }
        }
        for m in &self.mechanism_drivers {
            if !crate::mech::KNOWN_DRIVERS.contains(&m.as_str()) {
                return Err(ConfigError(format!(
                    "unknown mechanism driver '{m}' (known: {})",
                    crate::mech::KNOWN_DRIVERS.join(", ")
                )));
            }
        }
        let flat_networks = if self.flat_networks.iter().any(|p| p == "*") {
            None
        } else {
            Some(self.flat_networks.clone())
        };
        let mut vlan_ranges: BTreeMap<String, Vec<(u32, u32)>> = BTreeMap::new();
        for entry in &self.network_vlan_ranges {
            match entry.split_once(':') {
                None => {
                    if entry.is_empty() {
                        return Err(ConfigError("empty physnet in network_vlan_ranges".into()));
                    }
                    // neutron-lib >= 2.10: a bare physnet means the full range.
                    vlan_ranges
                        .entry(entry.clone())
                        .or_default()
                        .push((1, MAX_VLAN));
                }
                Some((p, r)) => {
                    if p.is_empty() {
                        return Err(ConfigError(format!("empty physnet in '{entry}'")));
                    }
                    let r = range(r, 1, MAX_VLAN, "VLAN")?;
                    vlan_ranges.entry(p.to_string()).or_default().push(r);
                }
            }
        }
        let vni_ranges = self
            .vni_ranges
            .iter()
            .map(|r| range(r, 1, MAX_VNI, "VNI"))
            .collect::<Result<Vec<_>, _>>()?;
        let mac: Mac = self
            .base_mac
            .parse()
            .map_err(|e| ConfigError(format!("base_mac: {e}")))?;
        if mac.0[0] & 1 == 1 {
            return Err(ConfigError("base_mac must be a unicast address".into()));
        }
        if !(68..=65535).contains(&self.global_physnet_mtu) {
            return Err(ConfigError(
                "global_physnet_mtu must be within 68..65535".into(),
            ));
        }
        if self.agent_down_time == 0 {
            return Err(ConfigError("agent_down_time must be positive".into()));
        }
        let quota_defaults = self.quotas.defaults();
        if let Some((k, v)) = quota_defaults.iter().find(|(_, v)| **v < -1) {
            return Err(ConfigError(format!(
                "[quotas] quota_{k} = {v}: a limit is -1 (unlimited) or more"
            )));
        }
        Ok(Settings {
            type_drivers,
            project_network_types,
            mechanism_drivers: self.mechanism_drivers.clone(),
            flat_networks,
            vlan_ranges,
            vni_ranges,
            agent_down_time: self.agent_down_time,
            base_mac: [mac.0[0], mac.0[1], mac.0[2]],
            global_physnet_mtu: self.global_physnet_mtu,
            quota_defaults,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_reference_lab() {
        let s = Ml2Config::default().check().expect("defaults are valid");
        assert_eq!(s.project_network_types, vec![NetworkType::Vxlan]);
        assert_eq!(s.vlan_ranges["physnet1"], vec![(100, 199)]);
        assert_eq!(s.vni_ranges, vec![(1000, 1999)]);
        assert_eq!(s.base_mac, [0xfa, 0x16, 0x3e]);
    }

    #[test]
    fn rejects_bad_ranges_and_drivers() {
        let mut c = Ml2Config {
            network_vlan_ranges: vec!["physnet1:200:100".into()],
            ..Ml2Config::default()
        };
        assert!(c.check().is_err());
        c.network_vlan_ranges = vec!["physnet1:0:5000".into()];
        assert!(c.check().is_err());
        c.network_vlan_ranges = vec!["physnet2".into()];
        assert_eq!(
            c.check().expect("bare physnet").vlan_ranges["physnet2"],
            vec![(1, 4094)]
        );
        c.mechanism_drivers = vec!["linuxbridge".into()];
        assert!(c.check().is_err());
        let c = Ml2Config {
            project_network_types: vec!["geneve".into()],
            ..Ml2Config::default()
        };
        assert!(c.check().is_err());
    }
}
