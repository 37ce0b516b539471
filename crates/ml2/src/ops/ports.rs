//! Ports: MAC and fixed-IP allocation, allowed address pairs, port security,
//! binding to a host, and the device up/down reports that drive `status`.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::{Map, Value};
use switchyard_model::attrs::{self, invalid};
use switchyard_model::{
    AddressPair, FixedIp, Kind, Mac, NeutronError, Port, PortBinding, PortStatus, Result, State,
    StdAttrs, Subnet, new_id,
};

use super::{
    Body, DESCRIPTION_MAX, NAME_MAX, owner_project, require_admin, secgroups, visible_network,
    visible_port,
};
use crate::binding::{self, BindRequest};
use crate::ipam;
use crate::mech::VNIC_TYPES;
use crate::{Ctx, Ml2};

pub const MAX_ALLOWED_ADDRESS_PAIRS: usize = 10;
/// Fixed IPs one request may give a port: the default of Neutron's
/// `max_fixed_ips_per_port` (deprecated in Newton, removed in Pike, when
/// Neutron stopped bounding it). Unlike Neutron we apply it to `network:*`
/// owners too, since any caller may claim such an owner here.
pub const MAX_FIXED_IPS_PER_PORT: usize = 5;
/// Neutron's `BINDING_PROFILE_LEN` (neutron/plugins/ml2/models.py): the most
/// characters `json.dumps(binding:profile)` may take.
pub const MAX_BINDING_PROFILE_LEN: usize = 4095;
const MAC_RETRIES: usize = 16;

/// One entry of a `fixed_ips` request.
#[derive(Debug, Clone)]
struct IpReq {
    subnet_id: Option<String>,
    ip: Option<IpAddr>,
}

fn parse_fixed_ips(v: &Value) -> Result<Vec<IpReq>> {
    let list = attrs::to_list("fixed_ips", v)?;
    let mut out = Vec::new();
    for item in list {
        let m = attrs::to_object("fixed_ips", item)?;
        if let Some(k) = m.keys().find(|k| *k != "subnet_id" && *k != "ip_address") {
            return Err(NeutronError::http_bad_request(format!(
                "Unrecognized attribute(s) '{}'",
                attrs::clip(k)
            )));
        }
        let subnet_id = m
            .get("subnet_id")
            .map(|v| attrs::to_uuid("fixed_ips", v))
            .transpose()?;
        let ip = m
            .get("ip_address")
            .map(|v| attrs::to_ip("fixed_ips", v))
            .transpose()?;
        if subnet_id.is_none() && ip.is_none() {
            return Err(NeutronError::invalid_input(
                "IP allocation requires subnet_id or ip_address",
            ));
        }
        out.push(IpReq { subnet_id, ip });
    }
    Ok(out)
}

fn parse_pairs(v: &Value, port_mac: Mac) -> Result<Vec<AddressPair>> {
    let Some(list) = v.as_array() else {
        return Err(NeutronError::http_bad_request(
            "Allowed address pairs must be a list.",
        ));
    };
    if list.len() > MAX_ALLOWED_ADDRESS_PAIRS {
        return Err(NeutronError::bad_request(
            "AllowedAddressPairExhausted",
            format!(
                "The number of allowed address pair exceeds the maximum {MAX_ALLOWED_ADDRESS_PAIRS}."
            ),
        ));
    }
    let mut out: Vec<AddressPair> = Vec::new();
    for item in list {
        let m = attrs::to_object("allowed_address_pairs", item)?;
        if let Some(k) = m.keys().find(|k| *k != "ip_address" && *k != "mac_address") {
            return Err(NeutronError::http_bad_request(format!(
                "Unrecognized attribute(s) '{}'",
                attrs::clip(k)
            )));
        }
        let ip = match m.get("ip_address") {
            None | Some(Value::Null) => {
                return Err(NeutronError::bad_request(
                    "AllowedAddressPairsMissingIP",
                    "AllowedAddressPair must contain ip_address",
                ));
            }
            Some(v) => attrs::to_string("allowed_address_pairs", v, Some(64))?,
        };
        let addr = if ip.contains('/') {
            attrs::parse_cidr(&ip).map(|n| n.addr())
        } else {
            attrs::parse_ip(&ip)
        };
        match addr {
            Some(a) if !a.is_multicast() => {}
            _ => {
                return Err(NeutronError::http_bad_request(format!(
                    "'{}' is not a valid IP address",
                    attrs::clip(&ip)
                )));
            }
        }
        let mac = match m.get("mac_address") {
            None | Some(Value::Null) => port_mac,
            Some(v) => parse_mac(v, "allowed_address_pairs")?,
        };
        let pair = AddressPair {
            ip_address: ip,
            mac_address: mac,
        };
        if out.contains(&pair) {
            return Err(NeutronError::bad_request(
                "DuplicateAddressPairInRequest",
                format!(
                    "Request contains duplicate address pair: mac_address {} ip_address {}.",
                    pair.mac_address, pair.ip_address
                ),
            ));
        }
        out.push(pair);
    }
    Ok(out)
}

fn parse_mac(v: &Value, attr: &str) -> Result<Mac> {
    let s = attrs::to_string(attr, v, Some(32))?;
    let m: Mac = s.parse().map_err(|_| {
        invalid(
            attr,
            format!("'{}' is not a valid MAC address", attrs::clip(&s)),
        )
    })?;
    if !m.is_valid_for_port() || m.0[0] & 1 == 1 {
        return Err(invalid(attr, format!("'{s}' is not a valid MAC address")));
    }
    Ok(m)
}

/// A `vnic_type` value as neutron-lib's validator accepts it.
pub(crate) fn parse_vnic_as(attr: &str, v: &Value) -> Result<String> {
    let s = attrs::to_string(attr, v, Some(64))?;
    if !VNIC_TYPES.contains(&s.as_str()) {
        return Err(invalid(
            attr,
            format!("'{}' is not in {VNIC_TYPES:?}", attrs::clip(&s)),
        ));
    }
    Ok(s)
}

fn parse_vnic(v: &Value) -> Result<String> {
    parse_vnic_as("binding:vnic_type", v)
}

/// ML2's `_process_port_binding_attributes`: a profile whose JSON is longer
/// than [`MAX_BINDING_PROFILE_LEN`] is refused.
pub(crate) fn check_profile_len(profile: &Map<String, Value>) -> Result<()> {
    let len = if profile.is_empty() {
        2
    } else {
        2 + profile
            .iter()
            .map(|(k, v)| attrs::py_json_len(&Value::String(k.clone())) + 2 + attrs::py_json_len(v))
            .sum::<usize>()
            + 2 * (profile.len() - 1)
    };
    if len > MAX_BINDING_PROFILE_LEN {
        return Err(NeutronError::invalid_input(
            "binding:profile value too large",
        ));
    }
    Ok(())
}

fn parse_profile(v: &Value) -> Result<Map<String, Value>> {
    match v {
        Value::Null => Ok(Map::new()),
        Value::Object(m) => {
            check_profile_len(m)?;
            if let Some(t) = m.get("migrating_to")
                && !t.is_string()
            {
                return Err(invalid(
                    "binding:profile",
                    "migrating_to must be a host name string",
                ));
            }
            Ok(m.clone())
        }
        other => Err(invalid(
            "binding:profile",
            format!("'{}' is not a dictionary", attrs::show(other)),
        )),
    }
}

fn generate_mac(ml2: &Ml2, st: &State, network_id: &str) -> Result<Mac> {
    let base = ml2.settings.base_mac;
    for _ in 0..MAC_RETRIES {
        let r: [u8; 3] = ml2.random_bytes();
        let m = Mac([base[0], base[1], base[2], r[0], r[1], r[2]]);
        if st.mac_holder(network_id, &m).is_none() {
            return Ok(m);
        }
    }
    Err(NeutronError::new(
        503,
        "MacAddressGenerationFailure",
        format!("Unable to generate unique mac on network {network_id}."),
    ))
}

fn ip_in_use(network_id: &str, ip: IpAddr) -> NeutronError {
    NeutronError::conflict(
        "IpAddressInUse",
        format!(
            "Unable to complete operation for network {network_id}. The IP address {ip} is in use."
        ),
    )
}

fn generation_failure(network_id: &str) -> NeutronError {
    NeutronError::conflict(
        "IpAddressGenerationFailure",
        format!("No more IP addresses available on network {network_id}."),
    )
}

/// Computes a port's fixed IPs (Neutron's IPAM backend): specific addresses
/// first, then subnet-only requests, then SLAAC addresses; `None` means the
/// request gave no `fixed_ips` and the port gets one address per IP family.
#[allow(clippy::too_many_arguments)]
fn allocate_ips(
    ml2: &Ml2,
    st: &State,
    port_id: &str,
    network_id: &str,
    mac: &Mac,
    owner: &str,
    requested: Option<Vec<IpReq>>,
    current: &[FixedIp],
) -> Result<Vec<FixedIp>> {
    let subnets: Vec<Subnet> = st
        .network_subnets(network_id)
        .into_iter()
        .cloned()
        .collect();
    let mut out: Vec<FixedIp> = Vec::new();
    let mut taken: HashSet<(String, IpAddr)> = HashSet::new();
    let free = |taken: &HashSet<(String, IpAddr)>, s: &Subnet, ip: IpAddr| {
        !taken.contains(&(s.id.clone(), ip))
            && st.ip_holder(&s.id, &ip).is_none_or(|h| h == port_id)
    };
    // Allocates from one subnet, skipping what this request already took.
    let alloc_from = |taken: &mut HashSet<(String, IpAddr)>, s: &Subnet| -> Option<IpAddr> {
        let mine: HashSet<IpAddr> = taken
            .iter()
            .filter(|(sid, _)| *sid == s.id)
            .map(|(_, ip)| *ip)
            .collect();
        ml2.ipam.allocate(st, s, &mine)
    };
    let with_slaac = !super::is_router_owner(owner);
    match requested {
        None => {
            if !current.is_empty() {
                return Ok(current.to_vec());
            }
            for fam_v6 in [false, true] {
                let stateful: Vec<&Subnet> = subnets
                    .iter()
                    .filter(|s| (s.ip_version == 6) == fam_v6 && !s.is_auto_address())
                    .collect();
                if stateful.is_empty() {
                    continue;
                }
                let got = stateful
                    .iter()
                    .find_map(|s| alloc_from(&mut taken, s).map(|ip| (s.id.clone(), ip)));
                match got {
                    Some((sid, ip)) => {
                        taken.insert((sid.clone(), ip));
                        out.push(FixedIp {
                            subnet_id: sid,
                            ip_address: ip,
                        });
                    }
                    None => return Err(generation_failure(network_id)),
                }
            }
        }
        Some(reqs) => {
            // ipam_backend_mixin's `_validate_max_ips_per_port` (Neutron <= Ocata).
            if reqs.len() > MAX_FIXED_IPS_PER_PORT {
                return Err(NeutronError::invalid_input(
                    "Exceeded maximum amount of fixed ips per port.",
                ));
            }
            if !reqs.is_empty() && subnets.is_empty() {
                return Err(NeutronError::invalid_input(
                    "IP allocation requires subnets for network",
                ));
            }
            let (specific, by_subnet): (Vec<IpReq>, Vec<IpReq>) =
                reqs.into_iter().partition(|r| r.ip.is_some());
            for r in specific {
                let ip = r.ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
                let subnet = match &r.subnet_id {
                    Some(sid) => {
                        let s = subnet_on_network(st, network_id, sid)?;
                        if !ipam::valid_for_subnet(s, ip) {
                            return Err(NeutronError::bad_request(
                                "InvalidIpForSubnet",
                                format!("IP address {ip} is not a valid IP for the specified subnet."),
                            ));
                        }
                        s
                    }
                    None => subnets
                        .iter()
                        .find(|s| ipam::valid_for_subnet(s, ip))
                        .ok_or_else(|| {
                            NeutronError::bad_request(
                                "InvalidIpForNetwork",
                                format!("IP address {ip} is not a valid IP for any of the subnets on the specified network."),
                            )
                        })?,
                };
                if subnet.is_auto_address() && Some(ip) != ipam::eui64(&subnet.cidr, mac) {
                    return Err(NeutronError::bad_request(
                        "AllocationOnAutoAddressSubnet",
                        format!(
                            "IPv6 address {ip} cannot be directly assigned to a port on subnet {} as the subnet is configured for automatic addresses",
                            subnet.id
                        ),
                    ));
                }
                if !free(&taken, subnet, ip) {
                    return Err(ip_in_use(network_id, ip));
                }
                taken.insert((subnet.id.clone(), ip));
                out.push(FixedIp {
                    subnet_id: subnet.id.clone(),
                    ip_address: ip,
                });
            }
            for r in by_subnet {
                let sid = r.subnet_id.unwrap_or_default();
                let s = subnet_on_network(st, network_id, &sid)?;
                if s.is_auto_address() {
                    if let Some(ip) = ipam::eui64(&s.cidr, mac)
                        && taken.insert((s.id.clone(), ip))
                    {
                        out.push(FixedIp {
                            subnet_id: s.id.clone(),
                            ip_address: ip,
                        });
                    }
                    continue;
                }
                // On update, a subnet-only entry keeps the address the port has there.
                let keep = current
                    .iter()
                    .find(|f| f.subnet_id == sid && !taken.contains(&(sid.clone(), f.ip_address)));
                let ip = match keep {
                    Some(f) => f.ip_address,
                    None => {
                        alloc_from(&mut taken, s).ok_or_else(|| generation_failure(network_id))?
                    }
                };
                taken.insert((s.id.clone(), ip));
                out.push(FixedIp {
                    subnet_id: s.id.clone(),
                    ip_address: ip,
                });
            }
        }
    }
    if with_slaac {
        for s in subnets.iter().filter(|s| s.is_auto_address()) {
            if out.iter().any(|f| f.subnet_id == s.id) {
                continue;
            }
            if let Some(ip) = ipam::eui64(&s.cidr, mac) {
                out.push(FixedIp {
                    subnet_id: s.id.clone(),
                    ip_address: ip,
                });
            }
        }
    }
    Ok(out)
}

fn subnet_on_network<'s>(st: &'s State, network_id: &str, sid: &str) -> Result<&'s Subnet> {
    let s = st
        .subnets
        .get(sid)
        .ok_or_else(|| super::subnet_not_found(sid))?;
    if s.network_id != network_id {
        return Err(NeutronError::invalid_input(format!(
            "Failed to create port on network {network_id}, because fixed_ips included invalid subnet {sid}"
        )));
    }
    Ok(s)
}

/// (Re)binds the port's ACTIVE binding to its host; unbinds when the host is
/// empty. `previous` is the ACTIVE binding as it was before the request.
pub(crate) fn bind_active(
    ml2: &Ml2,
    st: &mut State,
    port: &mut Port,
    previous: &PortBinding,
    now: switchyard_model::Timestamp,
) {
    let active: PortBinding = port.active_binding().clone();
    let (vif_type, vif_details, levels) = if active.host.is_empty() {
        (
            switchyard_model::VIF_TYPE_UNBOUND.to_string(),
            Map::new(),
            Vec::new(),
        )
    } else {
        let outcome = binding::bind_port(
            ml2,
            st,
            &BindRequest {
                port,
                host: &active.host,
                vnic_type: &active.vnic_type,
                profile: &active.profile,
                now,
            },
        );
        (outcome.vif_type, outcome.vif_details, outcome.levels)
    };
    let unchanged = previous.is_bound()
        && previous.host == active.host
        && previous.vnic_type == active.vnic_type
        && previous.vif_type == vif_type
        && previous.levels == levels;
    if let Some(b) = port.active_binding_mut() {
        b.vif_type = vif_type;
        b.vif_details = vif_details.into();
        b.levels = levels;
    }
    // Neutron's provisioning block: DOWN until the agent reports the device up.
    // A rebind that lands exactly where the port already was (e.g. a profile
    // change such as `migrating_to`) keeps the device's reported state.
    if !unchanged {
        port.status = PortStatus::Down;
    }
}

fn check_port_security(p: &Port) -> Result<()> {
    if !p.port_security_enabled && !p.allowed_address_pairs.is_empty() {
        return Err(NeutronError::conflict(
            "AddressPairAndPortSecurityRequired",
            "Port Security must be enabled in order to have allowed address pairs on a port.",
        ));
    }
    Ok(())
}

/// A new port's groups, as Neutron gives them: those asked for (`[]` or
/// `null`: none), else its project's default group (made now if needed)
/// when port security is on.
fn port_groups_on_create(
    st: &mut State,
    ctx: &Ctx,
    b: &Body<'_>,
    project: &str,
    port_security: bool,
) -> Result<Vec<String>> {
    match b.raw("security_groups") {
        Some(v) => {
            let ids = secgroups::parse_port_groups(v)?;
            if !ids.is_empty() {
                if !port_security {
                    return Err(secgroups::groups_need_port_security());
                }
                secgroups::check_port_groups(st, ctx, project, &ids)?;
            }
            Ok(ids)
        }
        None if port_security => {
            // Whoever may create a port for `project` (its members, an
            // admin, the compute service) gets it its default group.
            let owner = Ctx {
                is_admin: true,
                ..ctx.clone()
            };
            Ok(secgroups::ensure_default(st, &owner, project)
                .into_iter()
                .collect())
        }
        None => Ok(Vec::new()),
    }
}

pub fn create(ml2: &Ml2, st: &mut State, ctx: &Ctx, body: &Map<String, Value>) -> Result<String> {
    attrs::check_body(attrs::PORT, body, true)?;
    let b = Body(body);
    let network_id = attrs::to_uuid("network_id", b.required("network_id")?)?;
    let project_id = owner_project(ctx, &b)?;
    let net = visible_network(ctx, st, &network_id)?.clone();
    if !super::network_owner(ctx, &net) && !net.shared {
        return Err(super::policy_denied("rule:create_port:network"));
    }
    super::check_port_attrs(ctx, &net, body, "create_port")?;
    let mac = match b.raw("mac_address") {
        None | Some(Value::Null) => generate_mac(ml2, st, &network_id)?,
        Some(v) => {
            let m = parse_mac(v, "mac_address")?;
            if st.mac_holder(&network_id, &m).is_some() {
                return Err(NeutronError::conflict(
                    "MacAddressInUse",
                    format!(
                        "Unable to complete operation for network {network_id}. The mac address {m} is in use."
                    ),
                ));
            }
            m
        }
    };
    let device_owner = b
        .string_or_null("device_owner", Some(255))?
        .unwrap_or_default();
    let id = new_id();
    let requested = b
        .raw("fixed_ips")
        .filter(|v| !v.is_null())
        .map(parse_fixed_ips)
        .transpose()?;
    let fixed_ips = allocate_ips(
        ml2,
        st,
        &id,
        &network_id,
        &mac,
        &device_owner,
        requested,
        &[],
    )?;
    let pairs = match b.raw("allowed_address_pairs") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => parse_pairs(v, mac)?,
    };
    let host = b
        .string_or_null("binding:host_id", Some(255))?
        .unwrap_or_default();
    let vnic = b
        .raw("binding:vnic_type")
        .map(parse_vnic)
        .transpose()?
        .unwrap_or_else(|| "normal".into());
    let profile = b
        .raw("binding:profile")
        .map(parse_profile)
        .transpose()?
        .unwrap_or_default();
    let tags = b.tags()?;
    // Neutron's port-security driver: the router's and DHCP's own ports
    // (`network:*`) are trusted and never filtered.
    let trusted = device_owner.starts_with("network:");
    let port_security_enabled = !trusted
        && b.bool("port_security_enabled")?
            .unwrap_or(net.port_security_enabled);
    let security_groups = port_groups_on_create(st, ctx, &b, &project_id, port_security_enabled)?;
    let mut port = Port {
        id: id.clone(),
        network_id: network_id.clone(),
        name: b
            .string_or_null("name", Some(NAME_MAX))?
            .unwrap_or_default(),
        mac_address: mac,
        fixed_ips,
        device_id: b
            .string_or_null("device_id", Some(255))?
            .unwrap_or_default(),
        device_owner,
        status: PortStatus::Down,
        admin_state_up: b.bool("admin_state_up")?.unwrap_or(true),
        allowed_address_pairs: pairs,
        port_security_enabled,
        security_groups,
        bindings: vec![PortBinding::unbound(host, vnic, profile)],
        std: StdAttrs::new(
            project_id,
            b.string_or_null("description", Some(DESCRIPTION_MAX))?
                .unwrap_or_default(),
            tags,
            ctx.now,
        ),
    };
    check_port_security(&port)?;
    let unbound = port.active_binding().clone();
    bind_active(ml2, st, &mut port, &unbound, ctx.now);
    st.put_port(port);
    binding::release_unused_dynamic_segments(st, &network_id);
    Ok(id)
}

pub fn update(
    ml2: &Ml2,
    st: &mut State,
    ctx: &Ctx,
    id: &str,
    body: &Map<String, Value>,
) -> Result<()> {
    attrs::check_body(attrs::PORT, body, false)?;
    let b = Body(body);
    let mut p = visible_port(ctx, st, id)?.clone();
    if !ctx.is_admin && !ctx.is_service && p.std.project_id != ctx.project_id {
        return Err(super::policy_denied("rule:update_port"));
    }
    if let Some(net) = st.networks.get(&p.network_id) {
        super::check_port_attrs(ctx, net, body, "update_port")?;
    }
    if let Some(v) = b.string_or_null("name", Some(NAME_MAX))? {
        p.name = v;
    }
    if let Some(v) = b.string_or_null("description", Some(DESCRIPTION_MAX))? {
        p.std.description = v;
    }
    if let Some(v) = b.bool("admin_state_up")? {
        p.admin_state_up = v;
    }
    if let Some(v) = b.string_or_null("device_id", Some(255))? {
        p.device_id = v;
    }
    if let Some(v) = b.string_or_null("device_owner", Some(255))? {
        p.device_owner = v;
    }
    if let Some(v) = b.raw("mac_address") {
        let m = parse_mac(v, "mac_address")?;
        if m != p.mac_address {
            let active = p.active_binding();
            if active.is_bound() {
                return Err(NeutronError::conflict(
                    "PortBound",
                    format!(
                        "Unable to complete operation on port {id}, port is already bound, port type: {}, old_mac {}, new_mac {m}.",
                        active.vif_type, p.mac_address
                    ),
                ));
            }
            if st.mac_holder(&p.network_id, &m).is_some() {
                return Err(NeutronError::conflict(
                    "MacAddressInUse",
                    format!(
                        "Unable to complete operation for network {}. The mac address {m} is in use.",
                        p.network_id
                    ),
                ));
            }
            p.mac_address = m;
            // SLAAC addresses are derived from the MAC: they follow it.
            for f in p.fixed_ips.iter_mut() {
                if let Some(s) = st.subnets.get(&f.subnet_id)
                    && s.is_auto_address()
                    && let Some(ip) = ipam::eui64(&s.cidr, &m)
                {
                    f.ip_address = ip;
                }
            }
        }
    }
    if let Some(v) = b.raw("fixed_ips") {
        let reqs = if v.is_null() {
            Vec::new()
        } else {
            parse_fixed_ips(v)?
        };
        let current = p.fixed_ips.clone();
        p.fixed_ips = allocate_ips(
            ml2,
            st,
            id,
            &p.network_id,
            &p.mac_address,
            &p.device_owner,
            Some(reqs),
            &current,
        )?;
        // A floating IP's fixed address cannot disappear from under it.
        if st.port_floatingips(id).iter().any(|f| {
            f.fixed_ip_address
                .is_some_and(|ip| !p.fixed_ips.iter().any(|x| x.ip_address == ip))
        }) {
            return Err(NeutronError::bad_request(
                "BadRequest",
                format!(
                    "Bad port request: Cannot update the fixed_ips of the port {id}, because its original fixed_ip has been associated to a floating ip."
                ),
            ));
        }
    }
    if let Some(v) = b.raw("allowed_address_pairs") {
        p.allowed_address_pairs = if v.is_null() {
            Vec::new()
        } else {
            parse_pairs(v, p.mac_address)?
        };
    }
    if let Some(v) = b.bool("port_security_enabled")? {
        p.port_security_enabled = v;
    }
    check_port_security(&p)?;
    match b
        .raw("security_groups")
        .map(secgroups::parse_port_groups)
        .transpose()?
    {
        Some(ids) => {
            if !ids.is_empty() {
                if !p.port_security_enabled {
                    return Err(secgroups::groups_need_port_security());
                }
                secgroups::check_port_groups(st, ctx, &p.std.project_id, &ids)?;
            }
            p.security_groups = ids;
        }
        None if !p.port_security_enabled && !p.security_groups.is_empty() => {
            return Err(secgroups::port_has_groups());
        }
        None => {}
    }
    // Binding: a changed host, vnic_type or profile, or a failed binding, rebinds.
    let mut rebind = false;
    let new_host = b.string_or_null("binding:host_id", Some(255))?;
    let new_vnic = b.raw("binding:vnic_type").map(parse_vnic).transpose()?;
    let new_profile = b.raw("binding:profile").map(parse_profile).transpose()?;
    let previous = p.active_binding().clone();
    let mut active = previous.clone();
    let had_active = p.active_binding_mut().is_some();
    if let Some(h) = new_host {
        rebind |= h != active.host;
        if let Some(other) = p.binding_for(&h)
            && !h.is_empty()
            && other.status == switchyard_model::BindingStatus::Inactive
        {
            return Err(NeutronError::conflict(
                "PortBindingAlreadyExists",
                format!("Binding for port {id} on host {h} already exists."),
            ));
        }
        active.host = h;
    }
    if let Some(v) = new_vnic {
        rebind |= v != active.vnic_type;
        active.vnic_type = v;
    }
    if let Some(pr) = new_profile {
        rebind |= pr != active.profile;
        active.profile = pr;
    }
    if !active.host.is_empty() && !active.is_bound() {
        rebind = true;
    }
    if rebind {
        active.status = switchyard_model::BindingStatus::Active;
        if had_active {
            if let Some(slot) = p.active_binding_mut() {
                *slot = active;
            }
        } else {
            p.bindings.push(active);
        }
        bind_active(ml2, st, &mut p, &previous, ctx.now);
    } else if let Some(slot) = p.active_binding_mut() {
        // Only profile keys that do not affect binding may have changed.
        slot.profile = active.profile;
    }
    p.std.bump(ctx.now);
    let net = p.network_id.clone();
    st.put_port(p);
    binding::release_unused_dynamic_segments(st, &net);
    Ok(())
}

pub fn delete(st: &mut State, ctx: &Ctx, id: &str) -> Result<()> {
    // Visible means admin, the port's owner or the network's owner: all may delete.
    let p = visible_port(ctx, st, id)?.clone();
    if super::routers::service_port_owner(st, &p) {
        return Err(NeutronError::conflict(
            "ServicePortInUse",
            format!(
                "Port {id} cannot be deleted directly via the port API: has device owner {}.",
                p.device_owner
            ),
        ));
    }
    super::floatingips::port_deleted(st, id, ctx.now);
    st.remove(Kind::Port, id);
    binding::release_unused_dynamic_segments(st, &p.network_id);
    Ok(())
}

/// An agent reports a port's device up or down on `host` (Neutron's
/// `update_device_up` / `update_device_down` RPC). Up makes a bound port ACTIVE.
pub fn set_device_status(st: &mut State, ctx: &Ctx, id: &str, host: &str, up: bool) -> Result<()> {
    require_admin(ctx, "update_device_status")?;
    let mut p = st
        .ports
        .get(id)
        .cloned()
        .ok_or_else(|| super::port_not_found(id))?;
    let active = p.active_binding();
    if active.host != host {
        return Err(NeutronError::conflict(
            "PortNotBoundToHost",
            format!("Port {id} is not bound to host {host}."),
        ));
    }
    let status = if up && active.is_bound() && !p.admin_state_up {
        // An administratively down port stays DOWN whatever reports it up.
        PortStatus::Down
    } else if up && active.is_bound() {
        PortStatus::Active
    } else if up {
        return Err(NeutronError::conflict(
            "PortNotBoundToHost",
            format!("Port {id} has no successful binding on host {host}."),
        ));
    } else {
        PortStatus::Down
    };
    if p.status != status {
        p.status = status;
        p.std.bump(ctx.now);
        st.put_port(p);
    }
    Ok(())
}

/// An agent's full account of its ports (after it applied a snapshot):
/// every port actively bound to `host` is `ACTIVE` if it is in `up` (and
/// administratively up), `DOWN` otherwise, so a node that lost its devices
/// (a restarted hypervisor, a crashed VM) leaves no stale `ACTIVE` behind.
/// Ports in `up` that are not bound to `host` are ignored, as Neutron's
/// `update_device_list` ignores devices of other hosts. Returns how many
/// ports changed.
pub fn sync_device_statuses(
    st: &mut State,
    ctx: &Ctx,
    host: &str,
    up: &std::collections::BTreeSet<String>,
) -> Result<usize> {
    require_admin(ctx, "update_device_status")?;
    let changed: Vec<Port> = st
        .ports
        .values()
        .filter(|p| {
            let b = p.active_binding();
            b.host == host && b.is_bound()
        })
        .filter_map(|p| {
            let status = if up.contains(&p.id) && p.admin_state_up {
                PortStatus::Active
            } else {
                PortStatus::Down
            };
            (p.status != status).then(|| {
                let mut p = p.clone();
                p.status = status;
                p.std.bump(ctx.now);
                p
            })
        })
        .collect();
    let n = changed.len();
    for p in changed {
        st.put_port(p);
    }
    Ok(n)
}
