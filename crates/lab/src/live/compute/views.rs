//! Nova's JSON shapes for servers, hypervisors and migrations (at the
//! microversion the API serves, see `api::MAX_VERSION`).

use serde_json::{Map, Value, json};

use super::{Compute, Host, Migration, Server, Status, vm_state};

fn links(base: &str, kind: &str, id: &str) -> Value {
    json!([
        {"rel": "self", "href": format!("{base}/{kind}/{id}")},
        {"rel": "bookmark", "href": format!("{base}/{kind}/{id}")},
    ])
}

/// `GET /servers` entries.
pub fn server_brief(base: &str, s: &Server) -> Value {
    json!({"id": s.id, "name": s.name, "links": links(base, "servers", &s.id)})
}

/// `addresses`: per network name, each fixed IP with the port's MAC, then
/// the port's floating IPs.
fn addresses(s: &Server) -> Value {
    let mut m = Map::new();
    for v in &s.vifs {
        let entry = m
            .entry(v.network_name.clone())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = entry {
            for ip in &v.ips {
                a.push(json!({
                    "version": if ip.contains(':') { 6 } else { 4 },
                    "addr": ip,
                    "OS-EXT-IPS:type": "fixed",
                    "OS-EXT-IPS-MAC:mac_addr": v.mac,
                }));
            }
            for ip in &v.floating_ips {
                a.push(json!({
                    "version": if ip.contains(':') { 6 } else { 4 },
                    "addr": ip,
                    "OS-EXT-IPS:type": "floating",
                    "OS-EXT-IPS-MAC:mac_addr": v.mac,
                }));
            }
        }
    }
    Value::Object(m)
}

/// `hostId`: an opaque hash of project and host, equal for two servers of a
/// project on one host and different across projects (Nova uses SHA-224;
/// FNV-1a has the same property and needs no crate).
fn host_id(s: &Server) -> String {
    match &s.host {
        None => String::new(),
        Some(h) => {
            // FNV-1a over project and host: stable and opaque.
            let mut x: u64 = 0xcbf2_9ce4_8422_2325;
            for b in s.project_id.bytes().chain([0]).chain(h.bytes()) {
                x = (x ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            format!("{x:016x}{:016x}", x.rotate_left(17) ^ 0x5bd1_e995)
        }
    }
}

/// What Nova's default policy shows admins only
/// (`os-extended-server-attributes`, `servers:show:host_status`).
const ADMIN_ONLY: [&str; 4] = [
    "OS-EXT-SRV-ATTR:host",
    "OS-EXT-SRV-ATTR:hypervisor_hostname",
    "OS-EXT-SRV-ATTR:instance_name",
    "host_status",
];

/// A server view as `admin` (or not) may see it.
pub fn for_caller(mut v: Value, admin: bool) -> Value {
    if !admin && let Some(o) = v.as_object_mut() {
        for k in ADMIN_ONLY {
            o.remove(k);
        }
    }
    v
}

/// Adds Nova's `security_groups` (`[{"name": …}]`, one per group per port)
/// to a detailed server view; a server in no group has no such key, as in Nova.
pub fn with_security_groups(mut v: Value, names: Option<&Vec<String>>) -> Value {
    if let (Some(names), Some(o)) = (names.filter(|n| !n.is_empty()), v.as_object_mut()) {
        let groups: Vec<Value> = names.iter().map(|n| json!({ "name": n })).collect();
        o.insert("security_groups".into(), Value::Array(groups));
    }
    v
}

/// `GET /servers/{id}` and `/servers/detail` entries, without the security
/// groups (they live in the networking API: see [`with_security_groups`]).
pub fn server_detail(base: &str, s: &Server) -> Value {
    let mut v = json!({
        "id": s.id,
        "name": s.name,
        "status": s.status.as_str(),
        "tenant_id": s.project_id,
        "user_id": s.user_id,
        "hostId": host_id(s),
        "created": s.created,
        "updated": s.updated,
        "addresses": addresses(s),
        "links": links(base, "servers", &s.id),
        "image": match &s.image {
            Some(i) => json!({"id": i, "links": [{"rel": "bookmark", "href": format!("{base}/images/{i}")}]}),
            None => json!(""),
        },
        "flavor": match &s.flavor {
            Some(f) => super::catalog::server_flavor(f),
            None => json!({"vcpus": 1, "ram": 64, "disk": 0, "ephemeral": 0, "swap": 0,
                           "original_name": "lab.guest", "extra_specs": {}}),
        },
        "metadata": {},
        "key_name": null,
        "accessIPv4": "",
        "accessIPv6": "",
        "config_drive": "",
        "progress": 0,
        "locked": false,
        "locked_reason": null,
        "description": null,
        "tags": [],
        "trusted_image_certificates": null,
        "host_status": if s.host.is_some() { "UP" } else { "" },
        "os-extended-volumes:volumes_attached": [],
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": if s.host.is_some() { "nova" } else { "" },
        "OS-EXT-SRV-ATTR:host": s.host,
        "OS-EXT-SRV-ATTR:hypervisor_hostname": s.host,
        "OS-EXT-SRV-ATTR:instance_name": instance_name(s),
        "OS-EXT-STS:task_state": s.task_state,
        "OS-EXT-STS:vm_state": vm_state(s.status),
        "OS-EXT-STS:power_state": if s.status == Status::Active || s.status == Status::Migrating { 1 } else { 0 },
        "OS-SRV-USG:launched_at": if s.status == Status::Build || s.status == Status::Error { Value::Null } else { json!(s.created) },
        "OS-SRV-USG:terminated_at": null,
    });
    if let (Some(f), Some(o)) = (&s.fault, v.as_object_mut()) {
        o.insert(
            "fault".into(),
            json!({"code": f.code, "message": f.message, "created": f.created}),
        );
    }
    v
}

fn instance_name(s: &Server) -> String {
    format!("instance-{}", &s.id[..8.min(s.id.len())])
}

/// A hypervisor (`/os-hypervisors/detail` at 2.53+: UUID ids).
pub fn hypervisor(c: &Compute, h: &Host, detail: bool) -> Value {
    let (running, vfs) = c.usage(&h.name);
    let mut v = json!({
        "id": h.uuid,
        "hypervisor_hostname": h.name,
        "state": "up",
        "status": "enabled",
    });
    if detail && let Some(o) = v.as_object_mut() {
        let extra = json!({
            // What runs the guests: the lab's emulation or Linux-mode
            // namespaces, not a real hypervisor.
            "hypervisor_type": c.driver_kind(),
            "hypervisor_version": 1,
            "host_ip": Value::Null,
            "service": {"host": h.name, "id": h.uuid, "disabled_reason": null},
            "vcpus": c.opts.instances_per_host,
            "vcpus_used": running,
            "running_vms": running,
            "memory_mb": 64 * c.opts.instances_per_host,
            "memory_mb_used": 64 * running,
            "free_ram_mb": 64 * c.opts.instances_per_host.saturating_sub(running),
            "local_gb": 0, "local_gb_used": 0, "free_disk_gb": 0, "disk_available_least": 0,
            "current_workload": 0,
            "cpu_info": "{}",
            // switchyard additions: the networking a host plugs VIFs into.
            "switchyard:backend": h.backend.as_str(),
            "switchyard:vfs": if h.backend == super::Backend::Sriov { json!({"total": h.vfs, "used": vfs}) } else { Value::Null },
        });
        if let Value::Object(e) = extra {
            o.extend(e);
        }
    }
    v
}

pub fn migration(base: &str, m: &Migration) -> Value {
    json!({
        "id": m.id,
        "uuid": m.uuid,
        "instance_uuid": m.instance_uuid,
        "source_compute": m.source,
        "source_node": m.source,
        "dest_compute": m.dest,
        "dest_node": m.dest,
        "dest_host": Value::Null,
        "status": m.status,
        "migration_type": "live-migration",
        "old_instance_type_id": 1,
        "new_instance_type_id": 1,
        "created_at": m.created,
        "updated_at": m.updated,
        "links": links(base, &format!("servers/{}/migrations", m.instance_uuid), &m.id.to_string()),
        "switchyard:error": m.error,
        "switchyard:steps": m
            .steps
            .iter()
            .map(|s| json!({"step": s.step, "at": s.at, "error": s.error}))
            .collect::<Vec<_>>(),
    })
}
