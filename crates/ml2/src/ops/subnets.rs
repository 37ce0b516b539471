//! Subnets: CIDR, gateway, allocation pools, DNS servers and host routes, with
//! Neutron's validation order and messages.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value};
use switchyard_model::attrs::{self, invalid};
use switchyard_model::{
    FixedIp, HostRoute, IpRange, Kind, NeutronError, Result, State, StdAttrs, Subnet, new_id,
};

use super::networks::AUTO_DELETE_OWNERS;
use super::{Body, DESCRIPTION_MAX, NAME_MAX, owned_subnet, owner_project, visible_network};
use crate::ipam::{self, to_u128, usable_bounds};
use crate::{Ctx, Ml2};

pub const MAX_DNS_NAMESERVERS: usize = 5;
pub const MAX_HOST_ROUTES: usize = 20;
/// Allocation pools of one subnet. Neutron has no limit; pools are checked
/// pairwise for overlap, so a bound keeps one request cheap. Real subnets use
/// a handful; 100 leaves room for any sane layout (docs/api.md, "Limits").
pub const MAX_ALLOCATION_POOLS: usize = 100;
const IPV6_MODES: [&str; 3] = ["slaac", "dhcpv6-stateful", "dhcpv6-stateless"];

fn version_of(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() { 4 } else { 6 }
}

fn mismatch(name: &str, addr: impl std::fmt::Display, v: u8) -> NeutronError {
    NeutronError::invalid_input(format!(
        "{name} '{addr}' does not match the ip_version '{v}'"
    ))
}

fn parse_cidr(v: &Value) -> Result<IpNet> {
    let n = attrs::check_subnet(v).map_err(|reason| invalid("cidr", reason))?;
    // Host bits are dropped, as Neutron normalises `10.0.0.5/24` to `10.0.0.0/24`.
    Ok(n.trunc())
}

fn parse_gateway(b: &Body<'_>, v: u8) -> Result<Option<Option<IpAddr>>> {
    match b.raw("gateway_ip") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(val) => {
            let ip = attrs::to_ip("gateway_ip", val)?;
            if version_of(&ip) != v {
                return Err(mismatch("gateway_ip", ip, v));
            }
            Ok(Some(Some(ip)))
        }
    }
}

fn check_gateway(cidr: &IpNet, gw: Option<IpAddr>) -> Result<()> {
    if let (IpNet::V4(n), Some(g)) = (cidr, gw)
        && n.prefix_len() < 31
        && (g == cidr.network() || g == cidr.broadcast())
    {
        return Err(NeutronError::invalid_input(
            "Gateway is not valid on subnet",
        ));
    }
    Ok(())
}

fn pool_str(p: &IpRange) -> String {
    format!("{}-{}", p.start, p.end)
}

fn parse_pools(v: &Value, ver: u8) -> Result<Vec<IpRange>> {
    let list = attrs::to_list("allocation_pools", v)?;
    if list.len() > MAX_ALLOCATION_POOLS {
        return Err(NeutronError::invalid_input(format!(
            "The number of allocation pools exceeds the limit {MAX_ALLOCATION_POOLS}"
        )));
    }
    let mut out = Vec::new();
    for item in list {
        let m = attrs::to_object("allocation_pools", item)?;
        if let Some(k) = m.keys().find(|k| *k != "start" && *k != "end") {
            return Err(NeutronError::http_bad_request(format!(
                "Unrecognized attribute(s) '{}'",
                attrs::clip(k)
            )));
        }
        let bad = || {
            NeutronError::bad_request(
                "InvalidAllocationPool",
                format!("The allocation pool {} is not valid.", attrs::show(item)),
            )
        };
        // neutron-lib's `validate_ip_pools`: both ends present, each an address.
        let (Some(start), Some(end)) = (m.get("start"), m.get("end")) else {
            return Err(bad());
        };
        let start = attrs::check_ip_value(start).map_err(|r| invalid("allocation_pools", r))?;
        let end = attrs::check_ip_value(end).map_err(|r| invalid("allocation_pools", r))?;
        if version_of(&start) != ver || version_of(&end) != ver || to_u128(start) > to_u128(end) {
            let p = IpRange { start, end };
            return Err(NeutronError::bad_request(
                "InvalidAllocationPool",
                format!("The allocation pool {} is not valid.", pool_str(&p)),
            ));
        }
        out.push(IpRange { start, end });
    }
    Ok(out)
}

fn check_pools(cidr: &IpNet, pools: &[IpRange], gw: Option<IpAddr>) -> Result<()> {
    let (lo, hi) = usable_bounds(cidr);
    for p in pools {
        if to_u128(p.start) < lo || to_u128(p.end) > hi || !cidr.contains(&p.start) {
            return Err(NeutronError::bad_request(
                "OutOfBoundsAllocationPool",
                format!(
                    "The allocation pool {} spans beyond the subnet cidr {cidr}.",
                    pool_str(p)
                ),
            ));
        }
    }
    for (i, a) in pools.iter().enumerate() {
        for b in &pools[i + 1..] {
            if to_u128(a.start) <= to_u128(b.end) && to_u128(b.start) <= to_u128(a.end) {
                return Err(NeutronError::conflict(
                    "OverlappingAllocationPools",
                    format!(
                        "Found overlapping allocation pools: {} {} for subnet {cidr}.",
                        pool_str(a),
                        pool_str(b)
                    ),
                ));
            }
        }
    }
    if let Some(g) = gw
        && let Some(p) = pools
            .iter()
            .find(|p| to_u128(g) >= to_u128(p.start) && to_u128(g) <= to_u128(p.end))
    {
        return Err(NeutronError::conflict(
            "GatewayConflictWithAllocationPools",
            format!(
                "Gateway ip {g} conflicts with allocation pool {}.",
                pool_str(p)
            ),
        ));
    }
    Ok(())
}

fn parse_dns(v: &Value, ver: u8) -> Result<Vec<IpAddr>> {
    let list = attrs::to_list("dns_nameservers", v)?;
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for item in list {
        // neutron-lib's `validate_nameservers`.
        let ip = attrs::check_ip_value(item).map_err(|msg| {
            invalid(
                "dns_nameservers",
                format!("'{}' is not a valid nameserver. {msg}", attrs::show(item)),
            )
        })?;
        if !seen.insert(ip) {
            return Err(invalid(
                "dns_nameservers",
                format!("Duplicate nameserver '{ip}'"),
            ));
        }
        if version_of(&ip) != ver {
            return Err(mismatch("dns_nameserver", ip, ver));
        }
        out.push(ip);
    }
    if out.len() > MAX_DNS_NAMESERVERS {
        return Err(NeutronError::bad_request(
            "DNSNameServersExhausted",
            format!(
                "Unable to complete operation for subnet. The number of DNS nameservers exceeds the limit {MAX_DNS_NAMESERVERS}."
            ),
        ));
    }
    Ok(out)
}

fn parse_routes(v: &Value, ver: u8) -> Result<Vec<HostRoute>> {
    let list = attrs::to_list("host_routes", v)?;
    let mut out: Vec<HostRoute> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for item in list {
        let m = attrs::to_object("host_routes", item)?;
        if let Some(k) = m.keys().find(|k| *k != "destination" && *k != "nexthop") {
            return Err(NeutronError::http_bad_request(format!(
                "Unrecognized attribute(s) '{}'",
                attrs::clip(k)
            )));
        }
        let (Some(dest), Some(nexthop)) = (m.get("destination"), m.get("nexthop")) else {
            return Err(invalid(
                "host_routes",
                format!("Invalid data format for hostroute: '{}'", attrs::show(item)),
            ));
        };
        // neutron-lib's `validate_hostroutes`: a route CIDR and an address.
        let dest = attrs::check_route_cidr(dest).map_err(|r| invalid("host_routes", r))?;
        let nexthop = attrs::check_ip_value(nexthop).map_err(|r| invalid("host_routes", r))?;
        if version_of(&dest.addr()) != ver || version_of(&nexthop) != ver {
            return Err(mismatch("host_route", dest, ver));
        }
        let r = HostRoute {
            destination: dest,
            nexthop,
        };
        if !seen.insert((r.destination, r.nexthop)) {
            return Err(invalid(
                "host_routes",
                format!("Duplicate hostroute '{}'", attrs::show(item)),
            ));
        }
        out.push(r);
    }
    if out.len() > MAX_HOST_ROUTES {
        return Err(NeutronError::bad_request(
            "HostRoutesExhausted",
            format!(
                "Unable to complete operation for subnet. The number of host routes exceeds the limit {MAX_HOST_ROUTES}."
            ),
        ));
    }
    Ok(out)
}

fn parse_mode(b: &Body<'_>, k: &str) -> Result<Option<String>> {
    match b.raw(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let s = attrs::to_string(k, v, None)?;
            if !IPV6_MODES.contains(&s.as_str()) {
                return Err(invalid(
                    k,
                    format!(
                        "'{}' is not in ['dhcpv6-stateful', 'dhcpv6-stateless', 'slaac']",
                        attrs::clip(&s)
                    ),
                ));
            }
            Ok(Some(s))
        }
    }
}

/// Checks that only make sense for the whole subnet (Neutron's `_validate_subnet`).
fn check_cidr(cidr: &IpNet, enable_dhcp: bool) -> Result<()> {
    if cidr.prefix_len() == 0 {
        return Err(NeutronError::invalid_input(
            "0 is not allowed as CIDR prefix length",
        ));
    }
    if let IpNet::V6(n) = cidr
        && n.network().is_unspecified()
    {
        return Err(NeutronError::invalid_input(
            "IPv6 subnet '::' is not supported",
        ));
    }
    if enable_dhcp {
        let too_long = match cidr {
            IpNet::V4(n) => n.prefix_len() > 30,
            IpNet::V6(n) => n.prefix_len() > 126,
        };
        if too_long {
            return Err(NeutronError::invalid_input(
                "Subnet has a prefix length that is incompatible with DHCP service enabled",
            ));
        }
        if cidr.network().is_multicast() {
            return Err(NeutronError::invalid_input(
                "Multicast IP subnet is not supported if enable_dhcp is True",
            ));
        }
        if cidr.network().is_loopback() {
            return Err(NeutronError::invalid_input(
                "Loopback IP subnet is not supported if enable_dhcp is True",
            ));
        }
        if let IpNet::V4(n) = cidr
            && n.network().octets()[0] == 0
        {
            return Err(NeutronError::invalid_input(format!(
                "First IP '{}' of network is not supported if enable_dhcp is True.",
                n.network()
            )));
        }
    }
    Ok(())
}

fn check_overlap(st: &State, network_id: &str, cidr: &IpNet, except: Option<&str>) -> Result<()> {
    for other in st.network_subnets(network_id) {
        if Some(other.id.as_str()) == except {
            continue;
        }
        if other.cidr.contains(&cidr.network()) || cidr.contains(&other.cidr.network()) {
            return Err(NeutronError::invalid_input(format!(
                "Requested subnet with cidr: {cidr} for network: {network_id} overlaps with another subnet"
            )));
        }
    }
    Ok(())
}

pub fn create(st: &mut State, ctx: &Ctx, body: &Map<String, Value>) -> Result<String> {
    attrs::check_body(attrs::SUBNET, body, true)?;
    let b = Body(body);
    let network_id = attrs::to_uuid("network_id", b.required("network_id")?)?;
    let ver = attrs::to_int("ip_version", b.required("ip_version")?, i64::MIN, i64::MAX)?;
    if ver != 4 && ver != 6 {
        return Err(invalid("ip_version", format!("{ver} is not in [4, 6]")));
    }
    let ver = ver as u8;
    if b.raw("subnetpool_id").is_some_and(|v| !v.is_null()) || b.has("prefixlen") {
        return Err(NeutronError::bad_request(
            "BadRequest",
            "Bad subnet request: subnet pools are not supported by this server; give a cidr.",
        ));
    }
    let cidr = match b.raw("cidr") {
        None | Some(Value::Null) => {
            return Err(NeutronError::bad_request(
                "BadRequest",
                "Bad subnet request: a cidr must be specified in the absence of a subnet pool.",
            ));
        }
        Some(v) => parse_cidr(v)?,
    };
    if version_of(&cidr.addr()) != ver {
        return Err(mismatch("cidr", cidr, ver));
    }
    let project_id = owner_project(ctx, &b)?;
    let net = visible_network(ctx, st, &network_id)?;
    if !super::network_owner(ctx, net) {
        return Err(super::policy_denied("rule:create_subnet"));
    }
    let enable_dhcp = b.bool("enable_dhcp")?.unwrap_or(true);
    check_cidr(&cidr, enable_dhcp)?;
    let ra_mode = parse_mode(&b, "ipv6_ra_mode")?;
    let addr_mode = parse_mode(&b, "ipv6_address_mode")?;
    if ver == 4 && (ra_mode.is_some() || addr_mode.is_some()) {
        return Err(NeutronError::invalid_input(
            "ipv6_ra_mode or ipv6_address_mode cannot be set when ip_version is 4",
        ));
    }
    if let (Some(r), Some(a)) = (&ra_mode, &addr_mode)
        && r != a
    {
        return Err(NeutronError::invalid_input(format!(
            "ipv6_ra_mode set to '{r}' with ipv6_address_mode set to '{a}' is not valid. If both attributes are set, they must be the same value"
        )));
    }
    let auto = matches!(
        addr_mode.as_deref(),
        Some("slaac") | Some("dhcpv6-stateless")
    );
    if auto && cidr.prefix_len() != 64 {
        return Err(NeutronError::invalid_input(format!(
            "Invalid CIDR {cidr} for IPv6 address mode. OpenStack uses the EUI-64 address format, which requires the prefix to be /64"
        )));
    }
    let gateway = match parse_gateway(&b, ver)? {
        Some(g) => g,
        None => Some(match cidr {
            IpNet::V4(_) => ipam::from_u128(to_u128(cidr.network()) + 1, false),
            IpNet::V6(_) => cidr.network(),
        }),
    };
    check_gateway(&cidr, gateway)?;
    let pools = match b.raw("allocation_pools") {
        None | Some(Value::Null) => ipam::default_pools(&cidr, gateway),
        Some(v) => {
            let p = parse_pools(v, ver)?;
            check_pools(&cidr, &p, gateway)?;
            p
        }
    };
    let dns = match b.raw("dns_nameservers") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => parse_dns(v, ver)?,
    };
    let routes = match b.raw("host_routes") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => parse_routes(v, ver)?,
    };
    let segment_id = match b.raw("segment_id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(check_segment(
            st,
            &network_id,
            &attrs::to_uuid("segment_id", v)?,
        )?),
    };
    if b.raw("service_types")
        .is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(NeutronError::bad_request(
            "BadRequest",
            "Bad subnet request: subnet service types are not supported by this server.",
        ));
    }
    check_overlap(st, &network_id, &cidr, None)?;
    let id = new_id();
    let order = st
        .network_subnets(&network_id)
        .iter()
        .map(|s| s.order + 1)
        .max()
        .unwrap_or(0);
    let subnet = Subnet {
        id: id.clone(),
        network_id: network_id.clone(),
        name: b
            .string_or_null("name", Some(NAME_MAX))?
            .unwrap_or_default(),
        ip_version: ver,
        cidr,
        gateway_ip: gateway,
        allocation_pools: pools,
        host_routes: routes,
        dns_nameservers: dns,
        enable_dhcp,
        ipv6_ra_mode: ra_mode,
        ipv6_address_mode: addr_mode,
        segment_id,
        order,
        std: StdAttrs::new(
            project_id,
            b.string_or_null("description", Some(DESCRIPTION_MAX))?
                .unwrap_or_default(),
            Vec::new(),
            ctx.now,
        ),
    };
    let auto_address = subnet.is_auto_address();
    st.put_subnet(subnet.clone());
    if auto_address {
        // Neutron gives every existing port of the network its SLAAC address.
        let ports: Vec<String> = st.network_port_ids(&network_id).cloned().collect();
        for pid in ports {
            let Some(mut p) = st.ports.get(&pid).cloned() else {
                continue;
            };
            if super::is_router_owner(&p.device_owner) {
                continue;
            }
            if let Some(ip) = ipam::eui64(&subnet.cidr, &p.mac_address) {
                p.fixed_ips.push(FixedIp {
                    subnet_id: id.clone(),
                    ip_address: ip,
                });
                p.std.bump(ctx.now);
                st.put_port(p);
            }
        }
    }
    super::bump_network(st, &network_id, ctx.now);
    Ok(id)
}

fn check_segment(st: &State, network_id: &str, seg_id: &str) -> Result<String> {
    match st.segments.get(seg_id) {
        None => Err(super::segment_not_found(seg_id)),
        Some(s) if s.is_dynamic => Err(NeutronError::bad_request(
            "SubnetCantAssociateToDynamicSegment",
            "A subnet cannot be associated with a dynamic segment.",
        )),
        Some(s) if s.network_id != network_id => Err(NeutronError::invalid_input(format!(
            "Segment {seg_id} is not on network {network_id}"
        ))),
        Some(s) => Ok(s.id.clone()),
    }
}

pub fn update(st: &mut State, ctx: &Ctx, id: &str, body: &Map<String, Value>) -> Result<()> {
    attrs::check_body(attrs::SUBNET, body, false)?;
    let b = Body(body);
    let mut s = owned_subnet(ctx, st, id)?.clone();
    let ver = s.ip_version;
    if let Some(v) = b.string_or_null("name", Some(NAME_MAX))? {
        s.name = v;
    }
    if let Some(v) = b.string_or_null("description", Some(DESCRIPTION_MAX))? {
        s.std.description = v;
    }
    if let Some(v) = b.bool("enable_dhcp")? {
        check_cidr(&s.cidr, v)?;
        s.enable_dhcp = v;
    }
    if let Some(g) = parse_gateway(&b, ver)? {
        check_gateway(&s.cidr, g)?;
        s.gateway_ip = g;
    }
    if let Some(v) = b.raw("allocation_pools") {
        s.allocation_pools = if v.is_null() {
            ipam::default_pools(&s.cidr, s.gateway_ip)
        } else {
            parse_pools(v, ver)?
        };
    }
    if b.has("allocation_pools") || b.has("gateway_ip") {
        check_pools(&s.cidr, &s.allocation_pools, s.gateway_ip)?;
    }
    if let Some(v) = b.raw("dns_nameservers") {
        s.dns_nameservers = if v.is_null() {
            Vec::new()
        } else {
            parse_dns(v, ver)?
        };
    }
    if let Some(v) = b.raw("host_routes") {
        s.host_routes = if v.is_null() {
            Vec::new()
        } else {
            parse_routes(v, ver)?
        };
    }
    if let Some(v) = b.raw("segment_id") {
        s.segment_id = match v {
            Value::Null => None,
            v => Some(check_segment(
                st,
                &s.network_id,
                &attrs::to_uuid("segment_id", v)?,
            )?),
        };
    }
    if b.raw("service_types")
        .is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(NeutronError::bad_request(
            "BadRequest",
            "Bad subnet request: subnet service types are not supported by this server.",
        ));
    }
    s.std.bump(ctx.now);
    let net = s.network_id.clone();
    st.put_subnet(s);
    super::bump_network(st, &net, ctx.now);
    Ok(())
}

pub fn delete(ml2: &Ml2, st: &mut State, ctx: &Ctx, id: &str) -> Result<()> {
    let s = owned_subnet(ctx, st, id)?.clone();
    let holders: Vec<String> = st
        .subnet_ips(id)
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    let mut auto_delete = Vec::new();
    for pid in holders {
        let Some(p) = st.ports.get(&pid) else {
            continue;
        };
        if AUTO_DELETE_OWNERS.contains(&p.device_owner.as_str())
            || (s.is_auto_address() && !super::is_router_owner(&p.device_owner))
        {
            auto_delete.push(pid);
        } else {
            return Err(NeutronError::conflict(
                "SubnetInUse",
                format!(
                    "Unable to complete operation on subnet {id}: One or more ports have an IP allocation from this subnet."
                ),
            ));
        }
    }
    // DHCP ports and SLAAC addresses just lose their address on this subnet.
    for pid in auto_delete {
        if let Some(mut p) = st.ports.get(&pid).cloned() {
            p.fixed_ips.retain(|f| f.subnet_id != id);
            p.std.bump(ctx.now);
            st.put_port(p);
        }
    }
    ml2.ipam.forget(id);
    st.remove(Kind::Subnet, id);
    super::bump_network(st, &s.network_id, ctx.now);
    Ok(())
}
