//! The version document, the v2.0 resource index and the extension list.
//! The extension list names exactly what this server implements: clients
//! (openstacksdk, OSC, Nova) switch behaviour on these aliases.

use serde_json::{Value, json};

/// (alias, name, description)
pub const EXTENSIONS: &[(&str, &str, &str)] = &[
    ("agent", "agent", "The agent management extension."),
    (
        "allowed-address-pairs",
        "Allowed Address Pairs",
        "Provides allowed address pairs",
    ),
    (
        "binding",
        "Port Binding",
        "Expose port bindings of a virtual port to external application",
    ),
    (
        "binding-extended",
        "Port Bindings Extended",
        "Expose port bindings of a virtual port to external application",
    ),
    (
        "empty-string-filtering",
        "Empty String Filtering Extension",
        "Allow filtering by attributes with empty string value",
    ),
    (
        "external-net",
        "Neutron external network",
        "Adds external network attribute to network resource.",
    ),
    (
        "filter-validation",
        "Filter parameters validation",
        "Provides validation on filter parameters.",
    ),
    (
        "ip-substring-filtering",
        "IP address substring filtering",
        "Provides IP address substring filtering when listing ports",
    ),
    (
        "multi-provider",
        "Multi Provider Network",
        "Expose mapping of virtual networks to multiple physical networks",
    ),
    (
        "net-mtu",
        "Network MTU",
        "Provides MTU attribute for a network resource.",
    ),
    (
        "net-mtu-writable",
        "Network MTU (writable)",
        "Provides a writable MTU attribute for a network resource.",
    ),
    (
        "pagination",
        "Pagination support",
        "Extension that indicates that pagination is enabled.",
    ),
    ("port-security", "Port Security", "Provides port security"),
    (
        "port-security-groups-filtering",
        "Port filtering on security groups",
        "Provides security groups filtering when listing ports",
    ),
    (
        "project-id",
        "project_id field enabled",
        "Extension that indicates that project_id field is enabled.",
    ),
    (
        "provider",
        "Provider Network",
        "Expose mapping of virtual networks to physical networks",
    ),
    (
        "revision-if-match",
        "If-Match constraints based on revision_number",
        "Extension indicating that If-Match based on revision_number is supported.",
    ),
    (
        "security-group",
        "security-group",
        "The security groups extension.",
    ),
    (
        "security-groups-normalized-cidr",
        "Normalized CIDR field for security group rules",
        "Add new field with normalized remote_ip_prefix cidr in SG rule",
    ),
    (
        "security-groups-rules-belongs-to-default-sg",
        "Security group rule belongs to the project's default security group",
        "Flag to determine if the security group rule belongs to the project's default security group",
    ),
    ("segment", "Segment", "Segments extension."),
    (
        "sorting",
        "Sorting support",
        "Extension that indicates that sorting is enabled.",
    ),
    (
        "standard-attr-description",
        "standard-attr-description",
        "Extension to add descriptions to standard attributes",
    ),
    (
        "standard-attr-revisions",
        "Resource revision numbers",
        "This extension will display the revision number of neutron resources.",
    ),
    (
        "standard-attr-tag",
        "Tag support for resources with standard attribute: subnet, trunk, network_segment_range, router, network, policy, subnetpool, port, security_group, floatingip",
        "Enables to set tag on resources with standard attribute.",
    ),
    (
        "standard-attr-timestamp",
        "Resource timestamps",
        "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes.",
    ),
    (
        "tag-ports-during-bulk-creation",
        "Tag Ports During Bulk Creation",
        "Allow to tag ports during bulk creation",
    ),
    (
        "quota-check-limit",
        "Quota engine limit check",
        "Support for checking the resource usage before applying a new quota limit",
    ),
    (
        "quotas",
        "Quota management support",
        "Expose functions for quotas management per project",
    ),
    (
        "quota_details",
        "Quota details management support",
        "Expose functions for quotas usage statistics per project",
    ),
];

/// The L3 extensions (names and descriptions are neutron-lib's).
pub const L3_EXTENSIONS: &[(&str, &str, &str)] = &[
    (
        "ext-gw-mode",
        "Neutron L3 Configurable external gateway mode",
        "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway",
    ),
    (
        "extraroute",
        "Neutron Extra Route",
        "Extra routes configuration for L3 router",
    ),
    (
        "extraroute-atomic",
        "Atomically add/remove extra routes",
        "Edit extra routes of a router on server side by atomically adding/removing extra routes",
    ),
    (
        "l3_agent_scheduler",
        "L3 Agent Scheduler",
        "Schedule routers among l3 agents",
    ),
    (
        "fip-port-details",
        "Floating IP Port Details Extension",
        "Add port_details attribute to Floating IP resource",
    ),
    (
        "router",
        "Neutron L3 Router",
        "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to external networks via a NAT gateway.",
    ),
];

const UPDATED: &str = "2026-11-01T00:00:00-00:00";

pub fn extension(alias: &str) -> Option<Value> {
    EXTENSIONS
        .iter()
        .chain(L3_EXTENSIONS)
        .find(|(a, _, _)| *a == alias)
        .map(|(a, n, d)| {
            json!({"alias": a, "name": n, "description": d, "updated": UPDATED, "links": []})
        })
}

pub fn extensions() -> Value {
    let mut aliases: Vec<&str> = EXTENSIONS
        .iter()
        .chain(L3_EXTENSIONS)
        .map(|(a, _, _)| *a)
        .collect();
    aliases.sort_unstable();
    let list: Vec<Value> = aliases.into_iter().filter_map(extension).collect();
    json!({ "extensions": list })
}

pub fn versions(base: &str) -> Value {
    json!({"versions": [{"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": format!("{base}/v2.0/")}]}]})
}

pub fn index(base: &str) -> Value {
    let res: Vec<Value> = [("network", "networks"), ("subnet", "subnets"), ("port", "ports")]
        .iter()
        .map(|(n, c)| {
            json!({"name": n, "collection": c, "links": [{"rel": "self", "href": format!("{base}/v2.0/{c}")}]})
        })
        .collect();
    // `version` is not in Neutron's answer here. keystoneauth (used by openstacksdk)
    // runs version discovery on a `network_endpoint_override` ending in `/v2.0/` and
    // fails on a body without version data, so the document carries both.
    json!({
        "resources": res,
        "version": {"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": format!("{base}/v2.0/")}]},
    })
}
