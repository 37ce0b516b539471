//! Security groups and their rules, with Neutron's semantics and errors
//! (neutron `db/securitygroups_db.py`, `extensions/securitygroup.py`):
//!
//! * every project has a `default` group, made on first use with four rules
//!   (egress IPv4 and IPv6 to anywhere, ingress IPv4 and IPv6 from the group
//!   itself); every other new group starts with the two egress rules;
//! * `default` is a name no other group may take, the default group cannot
//!   be renamed, and only an admin may delete it;
//! * a group that ports are members of cannot be deleted; deleting a group
//!   deletes the rules of other groups that name it as remote group;
//! * rules are immutable; their protocol is stored as given (a name or a
//!   number), IPv6 ICMP canonicalised to `ipv6-icmp`/`58`; a 1–65535 port
//!   range is stored as none; duplicates (protocol names and numbers alike)
//!   are refused with the existing rule's id.
//!
//! Stateless groups (`stateful-security-group`) and sharing between projects
//! (`rbac-security-groups`) are not offered: `stateful` is an unrecognised
//! attribute, as in a Neutron without those extensions.

use ipnet::IpNet;
use serde_json::{Map, Value};
use switchyard_model::{
    Kind, NeutronError, Record, Result, RuleDirection, SecurityGroup, SecurityGroupRule, State,
    StdAttrs, attrs, new_id,
};

use super::{Body, DESCRIPTION_MAX, NAME_MAX, owner_project, policy_denied};
use crate::Ctx;

pub const DEFAULT_NAME: &str = "default";
pub const DEFAULT_DESCRIPTION: &str = "Default security group";

/// Protocols with port ranges: TCP, UDP, DCCP, SCTP, UDP-Lite.
const PORT_PROTOCOLS: [u8; 5] = [6, 17, 33, 132, 136];
/// Protocols only IPv6 has.
const IPV6_ONLY: [u8; 6] = [41, 43, 44, 58, 59, 60];

pub use switchyard_model::{IP_PROTOCOLS as PROTOCOLS, ip_protocol_number as protocol_number};

pub fn group_not_found(id: &str) -> NeutronError {
    NeutronError::not_found(
        "SecurityGroupNotFound",
        format!("Security group {id} does not exist"),
    )
}

pub fn rule_not_found(id: &str) -> NeutronError {
    NeutronError::not_found(
        "SecurityGroupRuleNotFound",
        format!("Security group rule {id} does not exist"),
    )
}

/// Admins see every group, and so does the `service` role (Nova resolves a
/// boot request's group names in the server's project); others their
/// project's.
pub fn group_visible(ctx: &Ctx, g: &SecurityGroup) -> bool {
    ctx.is_admin || ctx.is_service || g.std.project_id == ctx.project_id
}

/// A rule of one of the caller's groups (or any, for an admin).
pub fn rule_visible(ctx: &Ctx, st: &State, r: &SecurityGroupRule) -> bool {
    ctx.is_admin
        || st
            .security_groups
            .get(&r.security_group_id)
            .is_some_and(|g| g.std.project_id == ctx.project_id)
}

fn rule(
    group: &str,
    project: &str,
    direction: RuleDirection,
    ethertype: &str,
    remote_group_id: Option<String>,
    now: switchyard_model::Timestamp,
) -> SecurityGroupRule {
    SecurityGroupRule {
        id: new_id(),
        security_group_id: group.to_string(),
        direction,
        ethertype: ethertype.to_string(),
        protocol: None,
        port_range_min: None,
        port_range_max: None,
        remote_ip_prefix: None,
        remote_group_id,
        std: StdAttrs::new(project.to_string(), String::new(), Vec::new(), now),
    }
}

/// Project `project`'s default group, made now if it has none (with its
/// four rules). `None` when a non-admin asks for another project's: Neutron
/// makes nothing then.
pub fn ensure_default(st: &mut State, ctx: &Ctx, project: &str) -> Option<String> {
    if let Some(g) = st.default_security_group(project) {
        return Some(g.id.clone());
    }
    if project != ctx.project_id && !ctx.is_admin {
        return None;
    }
    let id = new_id();
    st.put(Record::SecurityGroup(SecurityGroup {
        id: id.clone(),
        name: DEFAULT_NAME.into(),
        stateful: true,
        is_default: true,
        std: StdAttrs::new(
            project.into(),
            DEFAULT_DESCRIPTION.into(),
            Vec::new(),
            ctx.now,
        ),
    }));
    for (dir, eth, remote) in [
        (RuleDirection::Egress, "IPv4", None),
        (RuleDirection::Egress, "IPv6", None),
        (RuleDirection::Ingress, "IPv4", Some(id.clone())),
        (RuleDirection::Ingress, "IPv6", Some(id.clone())),
    ] {
        st.put(Record::SecurityGroupRule(rule(
            &id, project, dir, eth, remote, ctx.now,
        )));
    }
    Some(id)
}

/// `name` may not be `default` (in any case) for a group someone makes.
fn check_name(name: &str) -> Result<()> {
    if name.eq_ignore_ascii_case(DEFAULT_NAME) {
        return Err(NeutronError::conflict(
            "SecurityGroupDefaultAlreadyExists",
            "Default security group already exists.",
        ));
    }
    Ok(())
}

/// `POST /security-groups`: the group, with the two egress rules.
pub fn create_group(st: &mut State, ctx: &Ctx, body: &Map<String, Value>) -> Result<String> {
    attrs::check_body(attrs::SECURITY_GROUP, body, true)?;
    let b = Body(body);
    let project = owner_project(ctx, &b)?;
    let name = b
        .string_or_null("name", Some(NAME_MAX))?
        .unwrap_or_default();
    check_name(&name)?;
    ensure_default(st, ctx, &project);
    let id = new_id();
    st.put(Record::SecurityGroup(SecurityGroup {
        id: id.clone(),
        name,
        // Stateless groups are not offered (no `stateful-security-group`):
        // the filters on the nodes always track connections.
        stateful: true,
        is_default: false,
        std: StdAttrs::new(
            project.clone(),
            b.string_or_null("description", Some(DESCRIPTION_MAX))?
                .unwrap_or_default(),
            b.tags()?,
            ctx.now,
        ),
    }));
    for eth in ["IPv4", "IPv6"] {
        st.put(Record::SecurityGroupRule(rule(
            &id,
            &project,
            RuleDirection::Egress,
            eth,
            None,
            ctx.now,
        )));
    }
    Ok(id)
}

/// `PUT /security-groups/{id}`: name and description.
pub fn update_group(st: &mut State, ctx: &Ctx, id: &str, body: &Map<String, Value>) -> Result<()> {
    attrs::check_body(attrs::SECURITY_GROUP, body, false)?;
    let b = Body(body);
    let mut g = st
        .security_groups
        .get(id)
        .filter(|g| group_visible(ctx, g))
        .cloned()
        .ok_or_else(|| group_not_found(id))?;
    if let Some(name) = b.string_or_null("name", Some(NAME_MAX))? {
        check_name(&name)?;
        if g.is_default {
            return Err(NeutronError::conflict(
                "SecurityGroupCannotUpdateDefault",
                "Updating default security group not allowed.",
            ));
        }
        g.name = name;
    }
    if let Some(d) = b.string_or_null("description", Some(DESCRIPTION_MAX))? {
        g.std.description = d;
    }
    g.std.revision_number += 1;
    g.std.updated_at = ctx.now;
    st.put(Record::SecurityGroup(g));
    Ok(())
}

fn in_use(id: &str) -> NeutronError {
    NeutronError::conflict("SecurityGroupInUse", format!("Security Group {id} in use."))
}

/// `DELETE /security-groups/{id}`: with its rules, and the rules of other
/// groups that name it as remote group.
pub fn delete_group(st: &mut State, ctx: &Ctx, id: &str) -> Result<()> {
    if !st.group_ports(id).is_empty() {
        return Err(in_use(id));
    }
    let g = st
        .security_groups
        .get(id)
        .filter(|g| group_visible(ctx, g))
        .ok_or_else(|| group_not_found(id))?;
    if g.is_default && !ctx.is_admin {
        return Err(NeutronError::conflict(
            "SecurityGroupCannotRemoveDefault",
            "Insufficient rights for removing default security group.",
        ));
    }
    let mut rules: Vec<String> = st.group_rules(id).iter().map(|r| r.id.clone()).collect();
    rules.extend(st.rules_with_remote_group(id));
    for r in rules {
        st.remove(Kind::SecurityGroupRule, &r);
    }
    st.remove(Kind::SecurityGroup, id);
    Ok(())
}

fn port_value(b: &Body<'_>, k: &str) -> Result<Option<u32>> {
    let v = match b.raw(k) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n <= 65535 => Ok(Some(n as u32)),
        _ => {
            let shown = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Err(NeutronError::bad_request(
                "SecurityGroupInvalidPortValue",
                format!("Invalid value for port {shown}"),
            ))
        }
    }
}

fn protocol(b: &Body<'_>) -> Result<Option<String>> {
    let v = match b.raw("protocol") {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    };
    if text == "any" {
        return Ok(None);
    }
    if let Ok(n) = text.parse::<i64>()
        && (0..=255).contains(&n)
    {
        return Ok(Some(n.to_string()));
    }
    let lower = text.to_ascii_lowercase();
    if PROTOCOLS.iter().any(|(n, _)| *n == lower) {
        return Ok(Some(lower));
    }
    let names: Vec<String> = PROTOCOLS.iter().map(|(n, _)| format!("'{n}'")).collect();
    Err(NeutronError::bad_request(
        "SecurityGroupRuleInvalidProtocol",
        format!(
            "Security group rule protocol {text} not supported. Only protocol values (None, 'any', {}) and integer representations [0 to 255] are supported.",
            names.join(", ")
        ),
    ))
}

/// What makes two rules the same (Neutron's `_rule_to_key`): protocols by
/// number, an all-addresses prefix as none, the description ignored.
fn rule_key(r: &SecurityGroupRule) -> impl PartialEq + use<> {
    let prefix = r.remote_ip_prefix.filter(|p| p.prefix_len() != 0);
    (
        r.security_group_id.clone(),
        r.direction,
        r.ethertype.clone(),
        r.protocol.as_deref().and_then(protocol_number),
        r.port_range_min,
        r.port_range_max,
        prefix,
        r.remote_group_id.clone(),
    )
}

/// `POST /security-group-rules`, validated in Neutron's order.
pub fn create_rule(st: &mut State, ctx: &Ctx, body: &Map<String, Value>) -> Result<String> {
    attrs::check_body(attrs::SECURITY_GROUP_RULE, body, true)?;
    let b = Body(body);
    let project = owner_project(ctx, &b)?;
    let group_id = b
        .required("security_group_id")?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| NeutronError::http_bad_request("Invalid input for security_group_id."))?;
    let direction = match b.required("direction")?.as_str() {
        Some("ingress") => RuleDirection::Ingress,
        Some("egress") => RuleDirection::Egress,
        _ => {
            let v = b.raw("direction").cloned().unwrap_or(Value::Null);
            let shown = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            return Err(NeutronError::http_bad_request(format!(
                "Invalid input for direction. Reason: {shown} is not in valid_values."
            )));
        }
    };
    let mut protocol = protocol(&b)?;
    let mut port_min = port_value(&b, "port_range_min")?;
    let mut port_max = port_value(&b, "port_range_max")?;
    let ethertype = match b.raw("ethertype") {
        None => "IPv4".to_string(),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("ipv4") => "IPv4".into(),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("ipv6") => "IPv6".into(),
        Some(v) => {
            let shown = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| "None".into());
            return Err(NeutronError::bad_request(
                "SecurityGroupRuleInvalidEtherType",
                format!(
                    "Security group rule for ethertype '{shown}' not supported. Allowed values are ['IPv4', 'IPv6']."
                ),
            ));
        }
    };
    let prefix = match b.raw("remote_ip_prefix") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(parse_prefix(s)?),
        Some(v) => {
            return Err(NeutronError::bad_request(
                "InvalidCIDR",
                format!("Invalid CIDR {v} given as IP prefix."),
            ));
        }
    };
    let remote_group = b.string_or_null("remote_group_id", Some(36))?;
    let description = b
        .string_or_null("description", Some(DESCRIPTION_MAX))?
        .unwrap_or_default();
    // The parent group: one the caller may write to (its owner or an admin).
    let owner = match st.security_groups.get(&group_id) {
        Some(g) if group_visible(ctx, g) => g.std.project_id.clone(),
        _ => return Err(group_not_found(&group_id)),
    };
    if owner != ctx.project_id && !ctx.is_admin {
        return Err(policy_denied("rule:create_security_group_rule"));
    }
    // IPv6 ICMP is stored canonically.
    if ethertype == "IPv6" {
        protocol = protocol.map(|p| match p.as_str() {
            "icmp" | "icmpv6" => "ipv6-icmp".to_string(),
            "1" => "58".to_string(),
            _ => p,
        });
    }
    if port_min == Some(1) && port_max == Some(65535) {
        (port_min, port_max) = (None, None);
    }
    if port_min.is_some() || port_max.is_some() {
        let Some(p) = protocol.as_deref() else {
            return Err(NeutronError::bad_request(
                "SecurityGroupProtocolRequiredWithPorts",
                "Must also specify protocol if port range is given.",
            ));
        };
        let n = protocol_number(p).unwrap_or(0);
        if PORT_PROTOCOLS.contains(&n) {
            if port_min == Some(0) || port_max == Some(0) {
                return Err(NeutronError::bad_request(
                    "SecurityGroupInvalidPortValue",
                    "Invalid value for port 0",
                ));
            }
            match (port_min, port_max) {
                (Some(lo), Some(hi)) if lo <= hi => {}
                _ => {
                    return Err(NeutronError::bad_request(
                        "SecurityGroupInvalidPortRange",
                        "For TCP/UDP protocols, port_range_min must be <= port_range_max",
                    ));
                }
            }
        } else if n == 1 || n == 58 {
            for (field, attr, v) in [
                ("type", "port_range_min", port_min),
                ("code", "port_range_max", port_max),
            ] {
                if let Some(v) = v
                    && v > 255
                {
                    return Err(NeutronError::bad_request(
                        "SecurityGroupInvalidIcmpValue",
                        format!(
                            "Invalid value for ICMP {field} ({attr}) {v}. It must be 0 to 255."
                        ),
                    ));
                }
            }
            if let (None, Some(code)) = (port_min, port_max) {
                return Err(NeutronError::bad_request(
                    "SecurityGroupMissingIcmpType",
                    format!(
                        "ICMP code (port-range-max) {code} is provided but ICMP type (port-range-min) is missing."
                    ),
                ));
            }
        } else {
            return Err(NeutronError::bad_request(
                "SecurityGroupInvalidProtocolForPort",
                format!(
                    "Ports cannot be specified for protocol {n}. Ports are only supported for DCCP, SCTP, TCP, UDP, UDPLITE."
                ),
            ));
        }
    }
    if let Some(p) = prefix {
        let v = if p.addr().is_ipv4() { "IPv4" } else { "IPv6" };
        if v != ethertype {
            return Err(NeutronError::bad_request(
                "SecurityGroupRuleParameterConflict",
                format!("Conflicting value ethertype {ethertype} for CIDR {p}"),
            ));
        }
    }
    if ethertype == "IPv4"
        && let Some(p) = protocol.as_deref()
        && protocol_number(p).is_some_and(|n| IPV6_ONLY.contains(&n))
    {
        return Err(NeutronError::bad_request(
            "SecurityGroupEthertypeConflictWithProtocol",
            format!("Invalid ethertype {ethertype} for protocol {p}."),
        ));
    }
    if prefix.is_some() && remote_group.is_some() {
        return Err(NeutronError::bad_request(
            "SecurityGroupMultipleRemoteEntites",
            "Only one of remote_ip_prefix or remote_group_id or remote_address_group_id may be provided.",
        ));
    }
    if let Some(r) = &remote_group
        && !st
            .security_groups
            .get(r)
            .is_some_and(|g| ctx.is_admin || g.std.project_id == project)
    {
        return Err(group_not_found(r));
    }
    let new = SecurityGroupRule {
        id: new_id(),
        security_group_id: group_id.clone(),
        direction,
        ethertype,
        protocol,
        port_range_min: port_min,
        port_range_max: port_max,
        remote_ip_prefix: prefix,
        remote_group_id: remote_group,
        std: StdAttrs::new(project, description, Vec::new(), ctx.now),
    };
    let key = rule_key(&new);
    if let Some(dup) = st
        .group_rules(&group_id)
        .iter()
        .find(|r| rule_key(r) == key)
    {
        return Err(NeutronError::conflict(
            "SecurityGroupRuleExists",
            format!("Security group rule already exists. Rule id is {}.", dup.id),
        ));
    }
    let id = new.id.clone();
    st.put(Record::SecurityGroupRule(new));
    bump_group(st, &group_id, ctx.now);
    Ok(id)
}

/// A rule change is a change of its group (`revision_number`).
fn bump_group(st: &mut State, id: &str, now: switchyard_model::Timestamp) {
    if let Some(mut g) = st.security_groups.get(id).cloned() {
        g.std.revision_number += 1;
        g.std.updated_at = now;
        st.put(Record::SecurityGroup(g));
    }
}

/// `remote_ip_prefix` as Neutron converts it: a bare address is a host
/// prefix; host bits are kept.
fn parse_prefix(s: &str) -> Result<IpNet> {
    let parsed = s
        .parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from));
    parsed.ok_or_else(|| {
        NeutronError::bad_request(
            "InvalidCIDR",
            format!("Invalid CIDR {s} given as IP prefix."),
        )
    })
}

/// `DELETE /security-group-rules/{id}`.
pub fn delete_rule(st: &mut State, ctx: &Ctx, id: &str) -> Result<()> {
    let r = st
        .security_group_rules
        .get(id)
        .filter(|r| rule_visible(ctx, st, r))
        .cloned()
        .ok_or_else(|| rule_not_found(id))?;
    st.remove(Kind::SecurityGroupRule, id);
    bump_group(st, &r.security_group_id, ctx.now);
    Ok(())
}

/// `POST /security-group-rules` with a list: all or none, every rule of one
/// group and one project, no two alike.
pub fn create_rules_bulk(
    st: &mut State,
    ctx: &Ctx,
    bodies: &[Map<String, Value>],
) -> Result<Vec<String>> {
    let field = |b: &Map<String, Value>, k: &str| b.get(k).cloned().unwrap_or(Value::Null);
    let mut groups: Vec<Value> = bodies
        .iter()
        .map(|b| field(b, "security_group_id"))
        .collect();
    groups.dedup();
    if groups.len() > 1 {
        return Err(NeutronError::bad_request(
            "SecurityGroupNotSingleGroupRules",
            "Only allowed to update rules for one security profile at a time",
        ));
    }
    let mut projects: Vec<Value> = bodies
        .iter()
        .map(|b| {
            let p = field(b, "project_id");
            if p.is_null() {
                field(b, "tenant_id")
            } else {
                p
            }
        })
        .collect();
    projects.sort_by_key(Value::to_string);
    projects.dedup();
    if projects.len() > 1 {
        return Err(NeutronError::bad_request(
            "SecurityGroupRulesNotSingleProject",
            "Multiple project_ids in bulk security group rule create not allowed",
        ));
    }
    let mut ids = Vec::with_capacity(bodies.len());
    for b in bodies {
        match create_rule(st, ctx, b) {
            Ok(id) => ids.push(id),
            Err(e)
                if e.kind == "SecurityGroupRuleExists"
                    && ids.iter().any(|id| e.message.contains(id.as_str())) =>
            {
                return Err(NeutronError::conflict(
                    "DuplicateSecurityGroupRuleInPost",
                    "Duplicate Security Group Rule in POST.",
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(ids)
}

/// `PUT /security-group-rules/{id}`: Neutron has no update for rules; every
/// attribute is read-only (400), an empty body changes nothing.
pub fn update_rule(st: &State, ctx: &Ctx, id: &str, body: &Map<String, Value>) -> Result<()> {
    st.security_group_rules
        .get(id)
        .filter(|r| rule_visible(ctx, st, r))
        .ok_or_else(|| rule_not_found(id))?;
    attrs::check_body(attrs::SECURITY_GROUP_RULE, body, false)
}

/// A port body's `security_groups` (Neutron's `type:uuid_list`, `null` as
/// none).
pub fn parse_port_groups(v: &Value) -> Result<Vec<String>> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        other => {
            return Err(attrs::invalid(
                "security_groups",
                format!("'{}' is not a list", attrs::show(other)),
            ));
        }
    };
    let mut ids = Vec::with_capacity(items.len());
    for it in items {
        ids.push(attrs::to_uuid("security_groups", it)?);
    }
    let mut seen: Vec<&String> = Vec::new();
    let mut dups: Vec<&str> = Vec::new();
    for id in &ids {
        if seen.contains(&id) {
            if !dups.contains(&id.as_str()) {
                dups.push(id);
            }
        } else {
            seen.push(id);
        }
    }
    if !dups.is_empty() {
        return Err(attrs::invalid(
            "security_groups",
            format!("Duplicate items in the list: '{}'", dups.join(", ")),
        ));
    }
    Ok(ids)
}

/// The groups a port of `project` may join: its project's (any, for an
/// admin); else Neutron's 404 naming every missing one.
pub fn check_port_groups(st: &State, ctx: &Ctx, project: &str, ids: &[String]) -> Result<()> {
    let missing: Vec<&str> = ids
        .iter()
        .filter(|id| {
            !st.security_groups
                .get(*id)
                .is_some_and(|g| ctx.is_admin || g.std.project_id == project)
        })
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(group_not_found(&missing.join(", ")))
    }
}

/// A port with port security disabled cannot be in a group.
pub fn groups_need_port_security() -> NeutronError {
    NeutronError::bad_request(
        "PortSecurityAndIPRequiredForSecurityGroups",
        "Port security must be enabled and port must have an IP address in order to use security groups.",
    )
}

/// Disabling port security while the port is still in groups.
pub fn port_has_groups() -> NeutronError {
    NeutronError::conflict(
        "PortSecurityPortHasSecurityGroup",
        "Port has security group associated. Cannot disable port security or IP address until security group is removed.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(project: &str, admin: bool) -> Ctx {
        Ctx {
            project_id: project.into(),
            is_admin: admin,
            is_service: false,
            now: chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time"),
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    fn err(r: Result<impl std::fmt::Debug>) -> (u16, String, String) {
        let e = r.expect_err("an error");
        let b = e.body();
        (
            e.status,
            b["NeutronError"]["type"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            b["NeutronError"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    }

    #[test]
    fn the_default_group_is_made_once_with_four_rules_and_guarded() {
        let mut st = State::default();
        let p = ctx("p1", false);
        let id = ensure_default(&mut st, &p, "p1").expect("made");
        assert_eq!(ensure_default(&mut st, &p, "p1"), Some(id.clone()));
        assert_eq!(ensure_default(&mut st, &p, "p2"), None, "not another's");
        let rules = st.group_rules(&id);
        assert_eq!(rules.len(), 4);
        let ingress: Vec<_> = rules
            .iter()
            .filter(|r| r.direction == RuleDirection::Ingress)
            .collect();
        assert!(
            ingress
                .iter()
                .all(|r| r.remote_group_id.as_deref() == Some(id.as_str()))
        );
        assert_eq!(st.security_groups[&id].std.description, DEFAULT_DESCRIPTION);
        // No renaming, no deleting by a member; the description may change.
        let (s, t, _) = err(update_group(&mut st, &p, &id, &obj(json!({"name": "x"}))));
        assert_eq!((s, t.as_str()), (409, "SecurityGroupCannotUpdateDefault"));
        update_group(&mut st, &p, &id, &obj(json!({"description": "mine"}))).expect("ok");
        let (s, t, m) = err(delete_group(&mut st, &p, &id));
        assert_eq!((s, t.as_str()), (409, "SecurityGroupCannotRemoveDefault"));
        assert_eq!(
            m,
            "Insufficient rights for removing default security group."
        );
        // `default` is taken in any case.
        let (s, t, _) = err(create_group(&mut st, &p, &obj(json!({"name": "DeFault"}))));
        assert_eq!((s, t.as_str()), (409, "SecurityGroupDefaultAlreadyExists"));
        delete_group(&mut st, &ctx("p1", true), &id).expect("an admin may");
        assert!(st.default_security_group("p1").is_none());
        assert!(st.security_group_rules.is_empty());
    }

    #[test]
    fn a_new_group_gets_egress_rules_and_makes_the_default_first() {
        let mut st = State::default();
        let p = ctx("p1", false);
        let id = create_group(
            &mut st,
            &p,
            &obj(json!({"name": "web", "description": "d"})),
        )
        .expect("group");
        assert!(st.default_security_group("p1").is_some());
        let rules = st.group_rules(&id);
        assert_eq!(rules.len(), 2);
        assert!(rules.iter().all(|r| r.direction == RuleDirection::Egress));
        assert_eq!(st.usage(Kind::SecurityGroup, "p1"), 2);
        assert_eq!(st.usage(Kind::SecurityGroupRule, "p1"), 6);
    }

    #[test]
    fn rules_are_validated_as_neutron_does() {
        let mut st = State::default();
        let p = ctx("p1", false);
        let g = create_group(&mut st, &p, &obj(json!({"name": "web"}))).expect("group");
        let mut rule = |extra: Value| {
            let mut b = obj(json!({"security_group_id": g, "direction": "ingress"}));
            b.extend(obj(extra));
            create_rule(&mut st, &p, &b)
        };
        let cases: Vec<(Value, u16, &str, &str)> = vec![
            (
                json!({"protocol": "foo"}),
                400,
                "SecurityGroupRuleInvalidProtocol",
                "Security group rule protocol foo not supported.",
            ),
            (
                json!({"port_range_min": 22}),
                400,
                "SecurityGroupProtocolRequiredWithPorts",
                "Must also specify protocol if port range is given.",
            ),
            (
                json!({"protocol": "tcp", "port_range_min": 30, "port_range_max": 20}),
                400,
                "SecurityGroupInvalidPortRange",
                "For TCP/UDP protocols, port_range_min must be <= port_range_max",
            ),
            (
                json!({"protocol": "tcp", "port_range_min": 0, "port_range_max": 20}),
                400,
                "SecurityGroupInvalidPortValue",
                "Invalid value for port 0",
            ),
            (
                json!({"protocol": "tcp", "port_range_min": 70000}),
                400,
                "SecurityGroupInvalidPortValue",
                "Invalid value for port 70000",
            ),
            (
                json!({"protocol": "icmp", "port_range_min": 256}),
                400,
                "SecurityGroupInvalidIcmpValue",
                "Invalid value for ICMP type (port_range_min) 256. It must be 0 to 255.",
            ),
            (
                json!({"protocol": "icmp", "port_range_max": 1}),
                400,
                "SecurityGroupMissingIcmpType",
                "ICMP code (port-range-max) 1 is provided but ICMP type (port-range-min) is missing.",
            ),
            (
                json!({"protocol": "gre", "port_range_min": 1, "port_range_max": 2}),
                400,
                "SecurityGroupInvalidProtocolForPort",
                "Ports cannot be specified for protocol 47. Ports are only supported for DCCP, SCTP, TCP, UDP, UDPLITE.",
            ),
            (
                json!({"remote_ip_prefix": "fd00::/64"}),
                400,
                "SecurityGroupRuleParameterConflict",
                "Conflicting value ethertype IPv4 for CIDR fd00::/64",
            ),
            (
                json!({"protocol": "ipv6-icmp"}),
                400,
                "SecurityGroupEthertypeConflictWithProtocol",
                "Invalid ethertype IPv4 for protocol ipv6-icmp.",
            ),
            (
                json!({"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": g}),
                400,
                "SecurityGroupMultipleRemoteEntites",
                "Only one of remote_ip_prefix or remote_group_id or remote_address_group_id may be provided.",
            ),
            (
                json!({"remote_group_id": "nope"}),
                404,
                "SecurityGroupNotFound",
                "Security group nope does not exist",
            ),
            (
                json!({"ethertype": "IPv5"}),
                400,
                "SecurityGroupRuleInvalidEtherType",
                "Security group rule for ethertype 'IPv5' not supported. Allowed values are ['IPv4', 'IPv6'].",
            ),
            (
                json!({"remote_ip_prefix": "10.0.0.300/8"}),
                400,
                "InvalidCIDR",
                "Invalid CIDR 10.0.0.300/8 given as IP prefix.",
            ),
            (
                json!({"direction": "sideways"}),
                400,
                "HTTPBadRequest",
                "Invalid input for direction. Reason: sideways is not in valid_values.",
            ),
        ];
        for (extra, status, kind, msg) in cases {
            let (s, t, m) = err(rule(extra.clone()));
            assert_eq!((s, t.as_str()), (status, kind), "{extra}: {m}");
            assert!(m.starts_with(msg), "{extra}: {m}");
        }
        // Stored as given; a bare address becomes a host prefix; a
        // duplicate by protocol number is refused with the first rule's id.
        let id = rule(json!({"protocol": "tcp", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "192.0.2.9"}))
            .expect("rule");
        let r = st.security_group_rules[&id].clone();
        assert_eq!(r.protocol.as_deref(), Some("tcp"));
        assert_eq!(
            r.remote_ip_prefix.map(|p| p.to_string()).as_deref(),
            Some("192.0.2.9/32")
        );
        let mut b = obj(
            json!({"security_group_id": g, "direction": "ingress", "protocol": 6,
            "port_range_min": "22", "port_range_max": 22, "remote_ip_prefix": "192.0.2.9/32"}),
        );
        let (s, t, m) = err(create_rule(&mut st, &p, &b));
        assert_eq!((s, t.as_str()), (409, "SecurityGroupRuleExists"));
        assert_eq!(
            m,
            format!("Security group rule already exists. Rule id is {id}.")
        );
        // 1-65535 is no range; IPv6 ICMP is canonical.
        b = obj(
            json!({"security_group_id": g, "direction": "ingress", "protocol": "udp",
            "port_range_min": 1, "port_range_max": 65535}),
        );
        let u = create_rule(&mut st, &p, &b).expect("udp");
        assert_eq!(st.security_group_rules[&u].port_range_min, None);
        b = obj(
            json!({"security_group_id": g, "direction": "ingress", "protocol": "icmp", "ethertype": "ipv6"}),
        );
        let i = create_rule(&mut st, &p, &b).expect("icmpv6");
        let r = &st.security_group_rules[&i];
        assert_eq!(
            (r.protocol.as_deref(), r.ethertype.as_str()),
            (Some("ipv6-icmp"), "IPv6")
        );
        // Another project can neither see the group nor add to it.
        let (s, t, _) = err(create_rule(&mut st, &ctx("p2", false), &b));
        assert_eq!((s, t.as_str()), (404, "SecurityGroupNotFound"));
        // Deleting a group takes the rules naming it as remote group along.
        let other = create_group(&mut st, &p, &obj(json!({"name": "db"}))).expect("group");
        b = obj(json!({"security_group_id": other, "direction": "ingress", "remote_group_id": g}));
        let via = create_rule(&mut st, &p, &b).expect("remote group rule");
        delete_group(&mut st, &p, &g).expect("delete");
        assert!(!st.security_group_rules.contains_key(&via));
        assert_eq!(st.group_rules(&other).len(), 2);
    }
}
