//! What a client picks a server from: flavors (Nova's classic `m1.*` set,
//! and those an admin adds) and the images the lab's hypervisor boots (one:
//! the lab's guest image), served as Nova's `/flavors` and a Glance v2
//! subset (`/image/v2/images`). A server's `flavorRef` and `imageRef` must
//! name one of them; its detail shows the flavor as Nova 2.47+ does.

use serde_json::{Value, json};

/// The guest image every lab hypervisor boots (its id is fixed so clients
/// and scripts can name it).
pub const GUEST_IMAGE_ID: &str = "7e5b0b1a-5f1d-4c6e-9b0a-5337c0ffee01";
pub const GUEST_IMAGE_NAME: &str = "switchyard-guest";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flavor {
    pub id: String,
    pub name: String,
    pub vcpus: u32,
    pub ram: u32,
    pub disk: u32,
    pub is_public: bool,
    pub description: Option<String>,
}

/// Nova's classic defaults (what devstack makes).
pub fn defaults() -> Vec<Flavor> {
    [
        ("1", "m1.tiny", 1, 512, 1),
        ("2", "m1.small", 1, 2048, 20),
        ("3", "m1.medium", 2, 4096, 40),
        ("4", "m1.large", 4, 8192, 80),
        ("5", "m1.xlarge", 8, 16384, 160),
    ]
    .into_iter()
    .map(|(id, name, vcpus, ram, disk)| Flavor {
        id: id.into(),
        name: name.into(),
        vcpus,
        ram,
        disk,
        is_public: true,
        description: None,
    })
    .collect()
}

pub fn flavor_brief(base: &str, f: &Flavor) -> Value {
    json!({"id": f.id, "name": f.name, "description": f.description,
           "links": [{"rel": "self", "href": format!("{base}/flavors/{}", f.id)},
                     {"rel": "bookmark", "href": format!("{base}/flavors/{}", f.id)}]})
}

pub fn flavor_detail(base: &str, f: &Flavor) -> Value {
    let mut v = flavor_brief(base, f);
    for (k, x) in [
        ("vcpus", json!(f.vcpus)),
        ("ram", json!(f.ram)),
        ("disk", json!(f.disk)),
        ("swap", json!(0)),
        ("rxtx_factor", json!(1.0)),
        ("OS-FLV-EXT-DATA:ephemeral", json!(0)),
        ("OS-FLV-DISABLED:disabled", json!(false)),
        ("os-flavor-access:is_public", json!(f.is_public)),
        ("extra_specs", json!({})),
    ] {
        v[k] = x;
    }
    v
}

/// A server's `flavor` (microversion 2.47+: the flavor's values, by name).
pub fn server_flavor(f: &Flavor) -> Value {
    json!({"vcpus": f.vcpus, "ram": f.ram, "disk": f.disk, "ephemeral": 0, "swap": 0,
           "original_name": f.name, "extra_specs": {}})
}

/// The guest image as Glance v2 shows an image.
pub fn image(base: &str, driver_kind: &str, created: &str) -> Value {
    json!({
        "id": GUEST_IMAGE_ID,
        "name": GUEST_IMAGE_NAME,
        "status": "active",
        "visibility": "public",
        "protected": true,
        "os_hidden": false,
        "disk_format": "raw",
        "container_format": "bare",
        "min_disk": 0,
        "min_ram": 0,
        "size": null,
        "virtual_size": null,
        "checksum": null,
        "os_hash_algo": null,
        "os_hash_value": null,
        "owner": null,
        "tags": [],
        "hypervisor_type": driver_kind,
        "created_at": created,
        "updated_at": created,
        "self": format!("/v2/images/{GUEST_IMAGE_ID}"),
        "file": format!("/v2/images/{GUEST_IMAGE_ID}/file"),
        "schema": "/v2/schemas/image",
        "direct_url": format!("{base}/image/v2/images/{GUEST_IMAGE_ID}"),
    })
}
