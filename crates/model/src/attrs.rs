//! Neutron's attribute map: which attributes a resource has, which may be set on
//! POST or PUT, which can be filtered and sorted on, and the checked conversions
//! of untrusted JSON values with Neutron's messages.

use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::error::{NeutronError, Result};

#[derive(Debug, Clone, Copy)]
pub struct Attr {
    pub name: &'static str,
    pub post: bool,
    pub put: bool,
    pub filter: bool,
    pub sort: bool,
}

const fn a(name: &'static str, post: bool, put: bool, filter: bool, sort: bool) -> Attr {
    Attr {
        name,
        post,
        put,
        filter,
        sort,
    }
}

// name, post, put, filter, sort
const STD: [Attr; 7] = [
    a("tenant_id", true, false, true, true),
    a("project_id", true, false, true, true),
    a("revision_number", false, false, true, true),
    a("created_at", false, false, true, true),
    a("updated_at", false, false, true, true),
    a("tags", false, false, false, false),
    a("description", true, true, true, true),
];

pub static NETWORK: &[Attr] = &[
    a("id", false, false, true, true),
    a("name", true, true, true, true),
    a("admin_state_up", true, true, true, true),
    a("status", false, false, true, true),
    a("subnets", false, false, true, false),
    a("shared", true, true, true, true),
    a("router:external", true, true, true, true),
    a("mtu", true, true, true, true),
    a("port_security_enabled", true, true, true, true),
    a("provider:network_type", true, false, true, true),
    a("provider:physical_network", true, false, true, true),
    a("provider:segmentation_id", true, false, true, true),
    a("segments", true, false, false, false),
    STD[0],
    STD[1],
    STD[2],
    STD[3],
    STD[4],
    STD[5],
    STD[6],
];

pub static SEGMENT: &[Attr] = &[
    a("id", false, false, true, true),
    a("network_id", true, false, true, true),
    a("name", true, true, true, true),
    a("network_type", true, false, true, true),
    a("physical_network", true, false, true, true),
    a("segmentation_id", true, false, true, true),
    a("tenant_id", true, false, false, false),
    a("project_id", true, false, false, false),
    STD[2],
    STD[3],
    STD[4],
    STD[6],
];

pub static SUBNET: &[Attr] = &[
    a("id", false, false, true, true),
    a("name", true, true, true, true),
    a("network_id", true, false, true, true),
    a("ip_version", true, false, true, true),
    a("cidr", true, false, true, true),
    a("gateway_ip", true, true, true, true),
    a("allocation_pools", true, true, false, false),
    a("host_routes", true, true, false, false),
    a("dns_nameservers", true, true, false, false),
    a("enable_dhcp", true, true, true, true),
    a("ipv6_ra_mode", true, false, true, true),
    a("ipv6_address_mode", true, false, true, true),
    a("subnetpool_id", true, false, true, true),
    a("segment_id", true, true, true, true),
    a("service_types", true, true, false, false),
    a("prefixlen", true, false, false, false),
    STD[0],
    STD[1],
    STD[2],
    STD[3],
    STD[4],
    STD[5],
    STD[6],
];

pub static PORT: &[Attr] = &[
    a("id", false, false, true, true),
    a("name", true, true, true, true),
    a("network_id", true, false, true, true),
    a("mac_address", true, true, true, true),
    a("admin_state_up", true, true, true, true),
    a("status", false, false, true, true),
    a("device_id", true, true, true, true),
    a("device_owner", true, true, true, true),
    a("fixed_ips", true, true, true, false),
    a("allowed_address_pairs", true, true, false, false),
    a("port_security_enabled", true, true, true, true),
    a("binding:host_id", true, true, true, true),
    a("binding:vnic_type", true, true, true, true),
    a("binding:profile", true, true, false, false),
    a("binding:vif_type", false, false, true, true),
    a("binding:vif_details", false, false, false, false),
    STD[0],
    STD[1],
    STD[2],
    STD[3],
    STD[4],
    a("tags", true, false, false, false),
    STD[6],
];

pub static AGENT: &[Attr] = &[
    a("id", false, false, true, true),
    a("agent_type", false, false, true, true),
    a("binary", false, false, true, true),
    a("topic", false, false, true, true),
    a("host", false, false, true, true),
    a("admin_state_up", false, true, true, true),
    a("alive", false, false, true, true),
    a("availability_zone", false, false, true, true),
    a("description", false, true, true, true),
    a("heartbeat_timestamp", false, false, true, true),
    a("started_at", false, false, true, true),
    a("created_at", false, false, true, true),
    a("resources_synced", false, false, true, true),
    a("configurations", false, false, false, false),
];

pub static ROUTER: &[Attr] = &[
    a("id", false, false, true, true),
    a("name", true, true, true, true),
    a("admin_state_up", true, true, true, true),
    a("status", false, false, true, true),
    a("external_gateway_info", true, true, false, false),
    // extraroute: routes are set by PUT only (a POST with them is a 400).
    a("routes", false, true, false, false),
    STD[0],
    STD[1],
    STD[2],
    STD[3],
    STD[4],
    STD[5],
    STD[6],
];

pub static FLOATINGIP: &[Attr] = &[
    a("id", false, false, true, true),
    a("floating_ip_address", true, false, true, true),
    a("floating_network_id", true, false, true, true),
    // Input only: which external subnet to allocate from; never returned.
    a("subnet_id", true, false, false, false),
    a("router_id", false, false, true, true),
    a("port_id", true, true, true, true),
    a("fixed_ip_address", true, true, true, true),
    a("status", false, false, true, true),
    a("port_details", false, false, false, false),
    STD[0],
    STD[1],
    STD[2],
    STD[3],
    STD[4],
    STD[5],
    STD[6],
];

/// Attributes of a `binding-extended` binding.
pub static BINDING: &[Attr] = &[
    a("host", true, false, true, true),
    a("vif_type", false, false, true, true),
    a("vif_details", false, false, false, false),
    a("vnic_type", true, false, true, true),
    a("profile", true, false, false, false),
    a("status", false, false, true, true),
    a("project_id", false, false, true, true),
];

pub fn find<'a>(attrs: &'a [Attr], name: &str) -> Option<&'a Attr> {
    attrs.iter().find(|x| x.name == name)
}

/// Neutron's checks of a request body before any plugin code runs: unknown
/// attributes, attributes not allowed in POST, read-only attributes on PUT.
pub fn check_body(attrs: &[Attr], body: &Map<String, Value>, is_post: bool) -> Result<()> {
    let mut unknown: Vec<&str> = body
        .keys()
        .filter(|k| find(attrs, k).is_none())
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        return Err(NeutronError::http_bad_request(format!(
            "Unrecognized attribute(s) '{}'",
            unknown.join(", ")
        )));
    }
    for k in body.keys() {
        let Some(spec) = find(attrs, k) else { continue };
        if is_post && !spec.post {
            return Err(NeutronError::http_bad_request(format!(
                "Attribute '{k}' not allowed in POST"
            )));
        }
        if !is_post && !spec.put {
            return Err(NeutronError::http_bad_request(format!(
                "Cannot update read-only attribute {k}"
            )));
        }
    }
    Ok(())
}

/// "Invalid input for {attr}. Reason: {reason}." — a failed validator.
pub fn invalid(attr: &str, reason: impl std::fmt::Display) -> NeutronError {
    NeutronError::http_bad_request(format!("Invalid input for {attr}. Reason: {reason}."))
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Neutron's `convert_to_boolean`: true/false, "true"/"false" in any case, 0/1.
pub fn to_bool(attr: &str, v: &Value) -> Result<bool> {
    let r = match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    };
    r.ok_or_else(|| {
        let _ = attr;
        NeutronError::http_bad_request(format!(
            "Invalid input for operation: '{}' cannot be converted to boolean.",
            show(v)
        ))
    })
}

/// A string of at most `max` characters (`None` = no limit).
pub fn to_string(attr: &str, v: &Value, max: Option<usize>) -> Result<String> {
    let Value::String(s) = v else {
        return Err(invalid(
            attr,
            format!("'{}' is not a valid string", show(v)),
        ));
    };
    if let Some(m) = max
        && s.chars().count() > m
    {
        return Err(invalid(
            attr,
            format!("'{s}' exceeds maximum length of {m}"),
        ));
    }
    Ok(s.clone())
}

/// A string or null (null becomes `None`).
pub fn to_opt_string(attr: &str, v: &Value, max: Option<usize>) -> Result<Option<String>> {
    if v.is_null() {
        return Ok(None);
    }
    to_string(attr, v, max).map(Some)
}

pub fn to_uuid(attr: &str, v: &Value) -> Result<String> {
    let s = match v {
        Value::String(s) => s,
        _ => return Err(invalid(attr, format!("'{}' is not a valid UUID", show(v)))),
    };
    if uuid::Uuid::try_parse(s).is_err() {
        return Err(invalid(attr, format!("'{s}' is not a valid UUID")));
    }
    Ok(s.clone())
}

pub fn to_ip(attr: &str, v: &Value) -> Result<IpAddr> {
    let s = match v {
        Value::String(s) => s,
        _ => {
            return Err(invalid(
                attr,
                format!("'{}' is not a valid IP address", show(v)),
            ));
        }
    };
    parse_ip(s).ok_or_else(|| invalid(attr, format!("'{s}' is not a valid IP address")))
}

/// Parses an address in its canonical textual forms only (no leading zeros in
/// IPv4 octets, which netaddr rejects too since they are ambiguous).
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().ok()
}

/// An integer within `[min, max]`.
pub fn to_int(attr: &str, v: &Value, min: i64, max: i64) -> Result<i64> {
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        NeutronError::http_bad_request(format!(
            "Invalid input for operation: '{}' is not an integer.",
            show(v)
        ))
    })?;
    if n < min || n > max {
        return Err(invalid(
            attr,
            format!("'{n}' is not in range {min} through {max}"),
        ));
    }
    Ok(n)
}

pub fn to_object<'a>(attr: &str, v: &'a Value) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| invalid(attr, format!("'{}' is not a dictionary", show(v))))
}

pub fn to_list<'a>(attr: &str, v: &'a Value) -> Result<&'a Vec<Value>> {
    v.as_array()
        .ok_or_else(|| invalid(attr, format!("'{}' is not a list", show(v))))
}

pub const MAX_TAG_LEN: usize = 255;
pub const MAX_TAGS: usize = 50;

/// Neutron's `validate_list_of_unique_strings` for tags, plus the per-resource limit.
pub fn to_tags(attr: &str, v: &Value) -> Result<Vec<String>> {
    let list = to_list(attr, v)?;
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for t in list {
        let t = validate_tag(t)?;
        if out.contains(&t) {
            return Err(NeutronError::invalid_input(format!(
                "Duplicate items in the list: '{t}'"
            )));
        }
        out.push(t);
    }
    check_tag_count(out.len())?;
    Ok(out)
}

pub fn check_tag_count(n: usize) -> Result<()> {
    if n > MAX_TAGS {
        return Err(NeutronError::bad_request(
            "BadRequest",
            format!(
                "Bad tags request: The number of tags exceed the per-resource limit of {MAX_TAGS}."
            ),
        ));
    }
    Ok(())
}

/// Neutron's `validate_string(tag, 255)`.
pub fn validate_tag(v: &Value) -> Result<String> {
    let Value::String(t) = v else {
        return Err(NeutronError::invalid_input(format!(
            "'{}' is not a valid string",
            show(v)
        )));
    };
    if t.chars().count() > MAX_TAG_LEN {
        return Err(NeutronError::invalid_input(format!(
            "'{t}' exceeds maximum length of {MAX_TAG_LEN}"
        )));
    }
    Ok(t.clone())
}
