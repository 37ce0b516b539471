//! Neutron JSON shapes of every resource, exactly as the api-ref samples show them.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::mac::Mac;
use crate::resources::{
    AddressPair, Agent, FixedIp, FloatingIp, Network, Port, PortBinding, Router, SecurityGroup,
    SecurityGroupRule, Segment, StdAttrs, Subnet, Timestamp,
};
use crate::state::State;

/// `2026-11-27T11:47:04Z`, the format of `created_at` / `updated_at`.
/// Written digit by digit: every listed resource has two, and chrono's
/// format-string interpreter was a tenth of the time of a long list.
pub fn iso_time(t: &Timestamp) -> String {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    }
    let mut b = [0u8; 20];
    let mut put = |at: usize, v: u32, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            b[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year.unsigned_abs(), 4);
    put(5, t.month(), 2);
    put(8, t.day(), 2);
    put(11, t.hour(), 2);
    put(14, t.minute(), 2);
    put(17, t.second(), 2);
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'Z'),
    ] {
        b[at] = c;
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// `2026-11-27 11:47:04`, the format the agents API uses.
pub fn agent_time(t: &Timestamp) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn std_attrs(o: &mut Map<String, Value>, s: &StdAttrs, with_project: bool) {
    if with_project {
        o.insert("tenant_id".into(), json!(s.project_id));
        o.insert("project_id".into(), json!(s.project_id));
    }
    o.insert("revision_number".into(), json!(s.revision_number));
    o.insert("created_at".into(), json!(iso_time(&s.created_at)));
    o.insert("updated_at".into(), json!(iso_time(&s.updated_at)));
    o.insert("tags".into(), json!(s.tags));
    o.insert("description".into(), json!(s.description));
}

fn provider_of(s: &Segment) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "provider:network_type".into(),
        json!(s.network_type.as_str()),
    );
    m.insert(
        "provider:physical_network".into(),
        json!(s.physical_network),
    );
    m.insert("provider:segmentation_id".into(), json!(s.segmentation_id));
    m
}

pub fn network(state: &State, n: &Network) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(n.id));
    o.insert("name".into(), json!(n.name));
    o.insert("admin_state_up".into(), json!(n.admin_state_up));
    o.insert("status".into(), json!("ACTIVE"));
    let subnets: Vec<&str> = state
        .network_subnets(&n.id)
        .into_iter()
        .map(|s| s.id.as_str())
        .collect();
    o.insert("subnets".into(), json!(subnets));
    o.insert("shared".into(), json!(n.shared));
    o.insert("router:external".into(), json!(n.external));
    o.insert("mtu".into(), json!(n.mtu));
    o.insert(
        "port_security_enabled".into(),
        json!(n.port_security_enabled),
    );
    std_attrs(&mut o, &n.std, true);
    // ML2 shows the static segments only: one as provider:*, several as `segments`.
    let statics: Vec<&Segment> = state
        .network_segments(&n.id)
        .into_iter()
        .filter(|s| !s.is_dynamic)
        .collect();
    match statics.as_slice() {
        [one] => o.extend(provider_of(one)),
        [] => {
            o.insert("provider:network_type".into(), Value::Null);
            o.insert("provider:physical_network".into(), Value::Null);
            o.insert("provider:segmentation_id".into(), Value::Null);
        }
        many => {
            let segs: Vec<Value> = many.iter().map(|s| Value::Object(provider_of(s))).collect();
            o.insert("segments".into(), Value::Array(segs));
        }
    }
    Value::Object(o)
}

pub fn segment(s: &Segment) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(s.id));
    o.insert("network_id".into(), json!(s.network_id));
    o.insert("name".into(), json!(s.name));
    o.insert("network_type".into(), json!(s.network_type.as_str()));
    o.insert("physical_network".into(), json!(s.physical_network));
    o.insert("segmentation_id".into(), json!(s.segmentation_id));
    std_attrs(&mut o, &s.std, false);
    o.remove("tags");
    Value::Object(o)
}

pub fn subnet(s: &Subnet) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(s.id));
    o.insert("name".into(), json!(s.name));
    o.insert("network_id".into(), json!(s.network_id));
    o.insert("ip_version".into(), json!(s.ip_version));
    o.insert("cidr".into(), json!(s.cidr.to_string()));
    o.insert(
        "gateway_ip".into(),
        json!(s.gateway_ip.map(|g| g.to_string())),
    );
    let pools: Vec<Value> = s
        .allocation_pools
        .iter()
        .map(|p| json!({"start": p.start.to_string(), "end": p.end.to_string()}))
        .collect();
    o.insert("allocation_pools".into(), Value::Array(pools));
    let routes: Vec<Value> = s
        .host_routes
        .iter()
        .map(
            |r| json!({"destination": r.destination.to_string(), "nexthop": r.nexthop.to_string()}),
        )
        .collect();
    o.insert("host_routes".into(), Value::Array(routes));
    let dns: Vec<String> = s.dns_nameservers.iter().map(|d| d.to_string()).collect();
    o.insert("dns_nameservers".into(), json!(dns));
    o.insert("enable_dhcp".into(), json!(s.enable_dhcp));
    o.insert("ipv6_ra_mode".into(), json!(s.ipv6_ra_mode));
    o.insert("ipv6_address_mode".into(), json!(s.ipv6_address_mode));
    o.insert("subnetpool_id".into(), Value::Null);
    o.insert("segment_id".into(), json!(s.segment_id));
    o.insert("service_types".into(), json!([]));
    std_attrs(&mut o, &s.std, true);
    Value::Object(o)
}

/// A port as the API shows it, serialized straight from the record: the
/// one definition of a port's shape. [`port`] makes a JSON value of it for
/// filtering and field selection; a plain list writes it to the response
/// without building that value (10,000 ports' maps were most of a list's
/// time).
#[derive(Serialize)]
pub struct PortView<'a> {
    id: &'a str,
    name: &'a str,
    network_id: &'a str,
    mac_address: Mac,
    admin_state_up: bool,
    status: &'static str,
    device_id: &'a str,
    device_owner: &'a str,
    fixed_ips: &'a [FixedIp],
    allowed_address_pairs: &'a [AddressPair],
    port_security_enabled: bool,
    security_groups: &'a [String],
    #[serde(rename = "binding:host_id", skip_serializing_if = "Option::is_none")]
    host_id: Option<&'a str>,
    #[serde(rename = "binding:vnic_type")]
    vnic_type: &'a str,
    #[serde(rename = "binding:profile", skip_serializing_if = "Option::is_none")]
    profile: Option<&'a Map<String, Value>>,
    #[serde(rename = "binding:vif_type", skip_serializing_if = "Option::is_none")]
    vif_type: Option<&'a str>,
    #[serde(
        rename = "binding:vif_details",
        skip_serializing_if = "Option::is_none"
    )]
    vif_details: Option<&'a Map<String, Value>>,
    tenant_id: &'a str,
    project_id: &'a str,
    revision_number: u64,
    #[serde(serialize_with = "ser_time")]
    created_at: &'a Timestamp,
    #[serde(serialize_with = "ser_time")]
    updated_at: &'a Timestamp,
    tags: &'a [String],
    description: &'a str,
}

fn ser_time<S: serde::Serializer>(t: &&Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&iso_time(t))
}

impl<'a> PortView<'a> {
    /// `p` with (`true`) or without its binding's host, profile, VIF type and
    /// details (who may read them is the caller's policy).
    pub fn of(p: &'a Port, binding_details: bool) -> Self {
        let b = p.active_binding();
        let shown = |x| binding_details.then_some(x);
        PortView {
            id: &p.id,
            name: &p.name,
            network_id: &p.network_id,
            mac_address: p.mac_address,
            admin_state_up: p.admin_state_up,
            status: p.status.as_str(),
            device_id: &p.device_id,
            device_owner: &p.device_owner,
            fixed_ips: &p.fixed_ips,
            allowed_address_pairs: &p.allowed_address_pairs,
            port_security_enabled: p.port_security_enabled,
            security_groups: &p.security_groups,
            host_id: shown(b.host.as_str()),
            vnic_type: &b.vnic_type,
            profile: binding_details.then_some(&b.profile),
            vif_type: shown(b.vif_type.as_str()),
            vif_details: binding_details.then_some(&*b.vif_details),
            tenant_id: &p.std.project_id,
            project_id: &p.std.project_id,
            revision_number: p.std.revision_number,
            created_at: &p.std.created_at,
            updated_at: &p.std.updated_at,
            tags: &p.std.tags,
            description: &p.std.description,
        }
    }
}

pub fn port(p: &Port) -> Value {
    // Serializing borrowed strings, maps of strings and numbers cannot fail.
    serde_json::to_value(PortView::of(p, true)).unwrap_or(Value::Null)
}

/// A `binding-extended` binding object.
pub fn binding(p: &Port, b: &PortBinding) -> Value {
    json!({
        "host": b.host,
        "vif_type": b.vif_type,
        "vif_details": b.vif_details,
        "vnic_type": b.vnic_type,
        "profile": b.profile,
        "status": b.status.as_str(),
        "project_id": p.std.project_id,
    })
}

pub fn agent(a: &Agent, now: Timestamp, agent_down_time_s: u64) -> Value {
    json!({
        "id": a.id,
        "agent_type": a.agent_type,
        "binary": a.binary,
        "topic": a.topic,
        "host": a.host,
        "admin_state_up": a.admin_state_up,
        "alive": a.is_alive(now, agent_down_time_s),
        "availability_zone": a.availability_zone,
        "description": a.description,
        "heartbeat_timestamp": agent_time(&a.heartbeat_timestamp),
        "started_at": agent_time(&a.started_at),
        "created_at": agent_time(&a.created_at),
        "resources_synced": a.resources_synced,
        "configurations": a.configurations,
    })
}

/// A router, with its gateway port's addresses as `external_fixed_ips`.
pub fn router(state: &State, r: &Router) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(r.id));
    o.insert("name".into(), json!(r.name));
    o.insert("admin_state_up".into(), json!(r.admin_state_up));
    o.insert("status".into(), json!("ACTIVE"));
    let gw = r.gateway.as_ref().map(|g| {
        let ips: Vec<Value> = state
            .ports
            .get(&g.port_id)
            .map(|p| {
                p.fixed_ips
                    .iter()
                    .map(|ip| json!({"subnet_id": ip.subnet_id, "ip_address": ip.ip_address.to_string()}))
                    .collect()
            })
            .unwrap_or_default();
        json!({"network_id": g.network_id, "enable_snat": g.enable_snat, "external_fixed_ips": ips})
    });
    o.insert("external_gateway_info".into(), gw.unwrap_or(Value::Null));
    let routes: Vec<Value> = r
        .routes
        .iter()
        .map(|rt| json!({"destination": rt.destination.to_string(), "nexthop": rt.nexthop.to_string()}))
        .collect();
    o.insert("routes".into(), Value::Array(routes));
    std_attrs(&mut o, &r.std, true);
    Value::Object(o)
}

/// A floating IP; `status` is ACTIVE while it is associated through a router
/// that is placed on a gateway node, DOWN otherwise.
pub fn floatingip(state: &State, f: &FloatingIp) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(f.id));
    o.insert(
        "floating_ip_address".into(),
        json!(f.floating_ip_address.to_string()),
    );
    o.insert("floating_network_id".into(), json!(f.floating_network_id));
    o.insert("router_id".into(), json!(f.router_id));
    o.insert("port_id".into(), json!(f.port_id));
    o.insert(
        "fixed_ip_address".into(),
        json!(f.fixed_ip_address.map(|a| a.to_string())),
    );
    let placed = f
        .router_id
        .as_ref()
        .and_then(|r| state.routers.get(r))
        .is_some_and(|r| !r.host.is_empty());
    let status = if f.port_id.is_some() && placed {
        "ACTIVE"
    } else {
        "DOWN"
    };
    o.insert("status".into(), json!(status));
    let details = f
        .port_id
        .as_ref()
        .and_then(|id| state.ports.get(id))
        .map(|p| {
            json!({
                "name": p.name,
                "network_id": p.network_id,
                "mac_address": p.mac_address.to_string(),
                "admin_state_up": p.admin_state_up,
                "status": p.status.as_str(),
                "device_id": p.device_id,
                "device_owner": p.device_owner,
            })
        });
    o.insert("port_details".into(), details.unwrap_or(Value::Null));
    std_attrs(&mut o, &f.std, true);
    Value::Object(o)
}

/// A security group with its rules (`security_group_rules`, in id order).
/// No `stateful` or `shared`: stateless groups and sharing between projects
/// are not offered.
pub fn security_group(state: &State, g: &SecurityGroup) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(g.id));
    o.insert("name".into(), json!(g.name));
    let rules: Vec<Value> = state
        .group_rules(&g.id)
        .into_iter()
        .map(|r| security_group_rule(state, r))
        .collect();
    o.insert("security_group_rules".into(), Value::Array(rules));
    std_attrs(&mut o, &g.std, true);
    Value::Object(o)
}

/// A security group rule. `normalized_cidr` is the prefix with its host
/// bits cleared; `belongs_to_default_sg` says whether the rule's group is
/// its project's default group. Rules carry no tags.
pub fn security_group_rule(state: &State, r: &SecurityGroupRule) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(r.id));
    o.insert("security_group_id".into(), json!(r.security_group_id));
    o.insert("direction".into(), json!(r.direction.as_str()));
    o.insert("ethertype".into(), json!(r.ethertype));
    o.insert("protocol".into(), json!(r.protocol));
    o.insert("port_range_min".into(), json!(r.port_range_min));
    o.insert("port_range_max".into(), json!(r.port_range_max));
    o.insert(
        "remote_ip_prefix".into(),
        json!(r.remote_ip_prefix.map(|p| p.to_string())),
    );
    o.insert(
        "normalized_cidr".into(),
        json!(r.remote_ip_prefix.map(|p| p.trunc().to_string())),
    );
    o.insert("remote_group_id".into(), json!(r.remote_group_id));
    let in_default = state
        .security_groups
        .get(&r.security_group_id)
        .is_some_and(|g| g.is_default);
    o.insert("belongs_to_default_sg".into(), json!(in_default));
    std_attrs(&mut o, &r.std, true);
    o.remove("tags");
    Value::Object(o)
}

#[cfg(test)]
mod time_tests {
    use super::iso_time;
    use chrono::{TimeZone, Utc};

    /// The hand-written format is chrono's, digits and padding included.
    #[test]
    fn iso_time_matches_chrono() {
        for (y, mo, d, h, mi, s) in [
            (2026, 11, 27, 11, 47, 4),
            (1970, 1, 1, 0, 0, 0),
            (9999, 12, 31, 23, 59, 59),
            (207, 3, 9, 7, 5, 1),
        ] {
            let t = Utc
                .with_ymd_and_hms(y, mo, d, h, mi, s)
                .single()
                .expect("time");
            assert_eq!(iso_time(&t), t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        }
        let odd = Utc
            .with_ymd_and_hms(12345, 1, 1, 0, 0, 0)
            .single()
            .expect("time");
        assert_eq!(iso_time(&odd), odd.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
}
