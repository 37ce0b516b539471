//! Neutron's attribute map: which attributes a resource has, which may be set on
//! POST or PUT, which can be filtered and sorted on, and the checked conversions
//! of untrusted JSON values with Neutron's messages.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
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
    a("security_groups", true, true, true, false),
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

pub static SECURITY_GROUP: &[Attr] = &[
    a("id", false, false, true, true),
    a("name", true, true, true, true),
    a("security_group_rules", false, false, false, false),
    STD[0],
    STD[1],
    STD[2],
    STD[3],
    STD[4],
    STD[5],
    STD[6],
];

pub static SECURITY_GROUP_RULE: &[Attr] = &[
    a("id", false, false, true, true),
    a("security_group_id", true, false, true, true),
    a("direction", true, false, true, true),
    a("ethertype", true, false, true, true),
    a("protocol", true, false, true, true),
    a("port_range_min", true, false, true, true),
    a("port_range_max", true, false, true, true),
    a("remote_ip_prefix", true, false, true, true),
    a("remote_group_id", true, false, true, true),
    a("normalized_cidr", false, false, true, false),
    a("belongs_to_default_sg", false, false, true, false),
    STD[0],
    STD[1],
    STD[2],
    STD[3],
    STD[4],
    // Rules are immutable (Neutron has no update for them).
    a("description", true, false, true, true),
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
            clip(&unknown.join(", "))
        )));
    }
    for k in body.keys() {
        let Some(spec) = find(attrs, k) else { continue };
        if is_post && !spec.post {
            return Err(NeutronError::http_bad_request(format!(
                "Attribute '{}' not allowed in POST",
                clip(k)
            )));
        }
        if !is_post && !spec.put {
            return Err(NeutronError::http_bad_request(format!(
                "Cannot update read-only attribute {}",
                clip(k)
            )));
        }
    }
    Ok(())
}

/// "Invalid input for {attr}. Reason: {reason}." — a failed validator.
pub fn invalid(attr: &str, reason: impl std::fmt::Display) -> NeutronError {
    NeutronError::http_bad_request(format!("Invalid input for {attr}. Reason: {reason}."))
}

/// At most this many characters of a client's value are quoted in an error
/// message; longer values end with [`ELLIPSIS`]. Neutron quotes values whole;
/// we do not echo megabytes back (docs/api.md, "Limits").
pub const MAX_QUOTED_CHARS: usize = 255;
pub const ELLIPSIS: &str = "...";

/// `s` as quoted in an error message: its first [`MAX_QUOTED_CHARS`]
/// characters, then [`ELLIPSIS`] when it was longer.
pub fn clip(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(MAX_QUOTED_CHARS) {
        None => Cow::Borrowed(s),
        Some((at, _)) => Cow::Owned(format!("{}{ELLIPSIS}", &s[..at])),
    }
}

/// A writer that keeps the first `cap` bytes and then refuses more, so that
/// showing a huge JSON value costs no more than showing a small one.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.cap.saturating_sub(self.buf.len());
        if room == 0 {
            return Err(std::io::Error::other("full"));
        }
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A client's value as error messages quote it (strings bare, other JSON
/// serialized), clipped with [`clip`].
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) => clip(s).into_owned(),
        other => {
            // 4 bytes per character at most: enough to fill MAX_QUOTED_CHARS + 1.
            let mut w = Capped {
                buf: Vec::new(),
                cap: (MAX_QUOTED_CHARS + 1) * 4,
            };
            let _ = serde_json::to_writer(&mut w, other);
            clip(&String::from_utf8_lossy(&w.buf)).into_owned()
        }
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
            format!("'{}' exceeds maximum length of {m}", clip(s)),
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
        return Err(invalid(attr, format!("'{}' is not a valid UUID", clip(s))));
    }
    Ok(s.clone())
}

pub fn to_ip(attr: &str, v: &Value) -> Result<IpAddr> {
    check_ip_value(v).map_err(|reason| invalid(attr, reason))
}

/// neutron-lib's `validate_ip_address` on a JSON value: the address, or the
/// validator's reason.
pub fn check_ip_value(v: &Value) -> std::result::Result<IpAddr, String> {
    match v {
        Value::String(s) => check_ip(s),
        _ => Err(format!("'{}' is not a valid IP address", show(v))),
    }
}

/// neutron-lib's `validate_ip_address`: an IPv4 or IPv6 address in its
/// canonical text. IPv4 octets with leading zeros are refused (they read as
/// octal to some parsers), with netaddr's zero-stripped form recommended:
/// "'010.0.0.1' is not an accepted IP address, '10.0.0.1' is recommended".
pub fn check_ip(s: &str) -> std::result::Result<IpAddr, String> {
    if let Some(ip) = parse_ip(s) {
        // Only dotted quads and addresses with a ':' are addresses.
        if s.contains(':') || s.bytes().filter(|b| *b == b'.').count() == 3 {
            return Ok(ip);
        }
    } else if let Some(v4) = zero_filled_v4(s) {
        return Err(format!(
            "'{}' is not an accepted IP address, '{v4}' is recommended",
            clip(s)
        ));
    }
    Err(format!("'{}' is not a valid IP address", clip(s)))
}

/// A dotted quad whose octets have leading zeros, read as netaddr's `ZEROFILL`
/// reads it (decimal, zeros stripped).
fn zero_filled_v4(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (o, p) in octets.iter_mut().zip(&parts) {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits = p.trim_start_matches('0');
        *o = if digits.is_empty() {
            0
        } else if digits.len() > 3 {
            return None;
        } else {
            digits.parse().ok()?
        };
    }
    Some(Ipv4Addr::from(octets))
}

/// Parses an address in its canonical textual forms only: no leading zeros
/// in IPv4 octets (the standard library refuses them, as netaddr does since
/// they are ambiguous), no whitespace, no zone.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().ok()
}

/// A CIDR `ADDR/LEN` with a canonical address and a decimal prefix length;
/// for IPv4 the text must be exactly what it parses to (netaddr's
/// `str(IPNetwork(s)) == s` in neutron-lib's `validate_subnet`), which
/// refuses `010.0.0.0/24` and `10.0.0.0/024`. Host bits are kept.
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    let (addr, len) = s.split_once('/')?;
    let addr = parse_ip(addr)?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    let net = IpNet::new(addr, len).ok()?;
    if net.addr().is_ipv4() && net.to_string() != s {
        return None;
    }
    Some(net)
}

/// neutron-lib's `validate_subnet`: the network, or
/// "'X' is not a valid IP subnet".
pub fn check_subnet(v: &Value) -> std::result::Result<IpNet, String> {
    match v {
        Value::String(s) => {
            parse_cidr(s).ok_or_else(|| format!("'{}' is not a valid IP subnet", clip(s)))
        }
        other => Err(format!("'{}' is not a valid IP subnet", show(other))),
    }
}

/// neutron-lib's `validate_route_cidr` (host route and extra route
/// destinations): a CIDR without host bits that is not loopback.
pub fn check_route_cidr(v: &Value) -> std::result::Result<IpNet, String> {
    let Value::String(s) = v else {
        return Err(format!("'{}' is not a valid CIDR", show(v)));
    };
    match parse_cidr(s) {
        Some(n) if n.trunc() == n && n.addr().is_loopback() => {
            Err(format!("'{}' is not a routable CIDR", clip(s)))
        }
        Some(n) if n.trunc() == n => Ok(n),
        _ => Err(format!("'{}' is not a valid CIDR", clip(s))),
    }
}

/// The length of `json.dumps(v)` as Python writes it (`", "` and `": "`
/// separators, non-ASCII escaped as `\uXXXX`): what Neutron measures
/// `binding:profile` with.
pub fn py_json_len(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(n) => n.to_string().len(),
        Value::String(s) => py_str_len(s),
        Value::Array(a) if a.is_empty() => 2,
        Value::Array(a) => 2 + a.iter().map(py_json_len).sum::<usize>() + 2 * (a.len() - 1),
        Value::Object(m) if m.is_empty() => 2,
        Value::Object(m) => {
            2 + m
                .iter()
                .map(|(k, x)| py_str_len(k) + 2 + py_json_len(x))
                .sum::<usize>()
                + 2 * (m.len() - 1)
        }
    }
}

fn py_str_len(s: &str) -> usize {
    2 + s
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            ' '..='~' => 1,
            c if (c as u32) > 0xffff => 12,
            _ => 6,
        })
        .sum::<usize>()
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
    let mut out: Vec<String> = Vec::with_capacity(list.len().min(MAX_TAGS + 1));
    let mut seen = std::collections::HashSet::new();
    for t in list {
        let t = validate_tag(t)?;
        if !seen.insert(t.clone()) {
            return Err(NeutronError::invalid_input(format!(
                "Duplicate items in the list: '{}'",
                clip(&t)
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
            "'{}' exceeds maximum length of {MAX_TAG_LEN}",
            clip(t)
        )));
    }
    Ok(t.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quoted_values_are_clipped() {
        assert_eq!(clip("short"), "short");
        let exact = "é".repeat(MAX_QUOTED_CHARS);
        assert_eq!(clip(&exact), exact);
        let long = format!("{exact}xyz");
        assert_eq!(clip(&long), format!("{exact}..."));
        let huge: Vec<u32> = (0..100_000).collect();
        let shown = show(&json!(huge));
        assert!(shown.starts_with("[0,1,2,"));
        assert_eq!(shown.chars().count(), MAX_QUOTED_CHARS + ELLIPSIS.len());
        let e = to_string("name", &json!("x".repeat(1 << 20)), Some(255)).expect_err("long");
        assert!(e.message.len() < 400, "{}", e.message.len());
        let e = NeutronError::invalid_input("y".repeat(1 << 20));
        assert_eq!(
            e.message.chars().count(),
            crate::error::MAX_MESSAGE_CHARS + 3
        );
    }

    #[test]
    fn addresses_follow_neutron_lib() {
        assert_eq!(check_ip("10.0.0.1"), Ok("10.0.0.1".parse().expect("ip")));
        assert_eq!(
            check_ip("2001:db8::1"),
            Ok("2001:db8::1".parse().expect("ip"))
        );
        assert_eq!(
            check_ip("010.000.000.001"),
            Err(
                "'010.000.000.001' is not an accepted IP address, '10.0.0.1' is recommended".into()
            )
        );
        assert_eq!(
            check_ip("10.0.0.01"),
            Err("'10.0.0.01' is not an accepted IP address, '10.0.0.1' is recommended".into())
        );
        for bad in [
            "10.0.0",
            "1",
            " 10.0.0.1",
            "10.0.0.256",
            "010.0.0.256",
            "fe80::1%eth0",
            "0x1.2.3.4",
            "",
        ] {
            assert_eq!(
                check_ip(bad),
                Err(format!("'{bad}' is not a valid IP address")),
                "{bad}"
            );
        }
        assert_eq!(
            check_ip_value(&json!(5)),
            Err("'5' is not a valid IP address".into())
        );
    }

    #[test]
    fn cidrs_follow_neutron_lib() {
        assert_eq!(parse_cidr("10.0.0.0/24"), "10.0.0.0/24".parse().ok());
        assert_eq!(parse_cidr("10.0.0.5/24"), "10.0.0.5/24".parse().ok());
        assert_eq!(parse_cidr("2001:db8::/64"), "2001:db8::/64".parse().ok());
        for bad in [
            "010.000.000.000/24",
            "10.0.0.0/024",
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0.0/255.255.255.0",
            "10.0.0.0/ 24",
            "10.0.0.0/",
            "2001:db8::/129",
            "::ffff:010.0.0.1/120",
        ] {
            assert_eq!(parse_cidr(bad), None, "{bad}");
        }
        assert_eq!(
            check_subnet(&json!("010.000.000.000/24")),
            Err("'010.000.000.000/24' is not a valid IP subnet".into())
        );
        assert_eq!(
            check_route_cidr(&json!("10.0.0.5/24")),
            Err("'10.0.0.5/24' is not a valid CIDR".into())
        );
        assert_eq!(
            check_route_cidr(&json!("127.0.0.0/8")),
            Err("'127.0.0.0/8' is not a routable CIDR".into())
        );
        assert!(check_route_cidr(&json!("0.0.0.0/0")).is_ok());
    }

    #[test]
    fn python_json_lengths() {
        // Python: len(json.dumps(v)) for each.
        let cases = [
            (json!({}), 2),
            (json!({"a": 1}), 8),
            (json!({"a": [1, 2], "b": null}), 24),
            (json!("é"), 8),
            (json!("😀"), 14),
            (json!("a\"\\\n\u{1}"), 15),
            (json!([true, false]), 13),
            (json!({"k": "a".repeat(4086)}), 4095),
        ];
        for (v, want) in cases {
            assert_eq!(py_json_len(&v), want, "{v}");
        }
    }
}
