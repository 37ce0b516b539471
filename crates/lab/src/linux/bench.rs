//! `switchyard bench linux`: TCP throughput (`iperf3`, one stream) and ping
//! RTT between kernel guests of a Linux-mode lab, over switchyard's data
//! planes and, in the same run on the same namespaces, over the kernel's own
//! (Linux bridges and a kernel VXLAN device), so the ratio says what our
//! userspace pipelines cost against what the machine can do.
//!
//! Paths (the reference lab plus a second OVS node, compute-5):
//!
//! * `vrouter_vrouter`: compute-2 → compute-4, VXLAN between the vRouter
//!   agents' pipelines;
//! * `ovs_vrouter`: compute-1 → compute-2, Open vSwitch (VLAN on the physnet)
//!   → fabric → the gateway's pipeline → VXLAN → vRouter;
//! * `ovs_ovs`: compute-1 → compute-5, Open vSwitch to Open vSwitch over the
//!   physnet VLAN.
//!
//! The kernel baseline gives each guest a second NIC `eth1` (172.31.0.0/24,
//! the overlay's MTU) on a Linux bridge `kbr` in its node. vRouter nodes and
//! the gateway join those bridges with a kernel VXLAN device (VNI 4242, UDP
//! 4790 on the same underlay addresses, a full mesh as our overlay is); OVS
//! nodes and the gateway join theirs over veths to a bridge in the fabric's
//! namespace. Each kernel path so crosses what the switchyard path crosses,
//! VTEP for VTEP and switch for switch, with one difference: this kernel has
//! no 802.1Q support in bridges, so the kernel's physnet frames are untagged.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use super::netns;
use super::{LinuxError, LinuxLab, ns_name};
use crate::client::LabClient;
use crate::topology::{REFERENCE, Role, Topology};

/// The reference lab plus a second OVS node, for the OVS → OVS path.
pub const EXTRA_NODES: &str = r#"
[[nodes]]
name = "compute-5"
role = "ovs"
trunk_port = 1
physnet = "physnet1"

[[links]]
a = "compute-5:1"
b = "fabric:5"
"#;

/// The topology `bench linux` runs on.
pub fn topology() -> Result<Topology, LinuxError> {
    Topology::from_toml(&format!("{REFERENCE}\n{EXTRA_NODES}"))
        .map_err(|e| LinuxError::Topology(e.to_string()))
}

/// (path, client guest's host, server guest's host).
pub const PATHS: [(&str, &str, &str); 3] = [
    ("vrouter_vrouter", "compute-2", "compute-4"),
    ("ovs_vrouter", "compute-1", "compute-2"),
    ("ovs_ovs", "compute-1", "compute-5"),
];

const KERNEL_NET: [u8; 3] = [172, 31, 0];
const KERNEL_VNI: &str = "4242";
const KERNEL_VXLAN_PORT: &str = "4790";
const MTU: &str = "1450";

#[derive(Debug, Clone, Serialize)]
pub struct PathResult {
    pub path: String,
    pub from_host: String,
    pub to_host: String,
    /// One TCP stream, received rate.
    pub switchyard_gbps: f64,
    pub kernel_gbps: f64,
    pub ratio: f64,
    /// Median ping RTT over switchyard, idle.
    pub rtt_ms: f64,
    pub kernel_rtt_ms: f64,
    /// TCP retransmissions the sender counted.
    pub switchyard_retransmits: u64,
    pub kernel_retransmits: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seconds: u64,
    pub paths: Vec<PathResult>,
}

fn other(what: impl std::fmt::Display) -> LinuxError {
    LinuxError::Other(what.to_string())
}

/// A guest per host the paths use, on one network; returns their addresses.
async fn guests(lab: &LinuxLab) -> Result<Vec<(String, String, Ipv4Addr)>, LinuxError> {
    let c = LabClient::new(&lab.url());
    let err = |e: crate::client::ClientError| other(format!("bench network: {e}"));
    let n = c
        .post(
            "/v2.0/networks",
            &json!({"network": {"name": "bench-linux"}}),
        )
        .await
        .map_err(err)?;
    let net = n["network"]["id"].as_str().unwrap_or_default().to_string();
    c.post(
        "/v2.0/subnets",
        &json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.91.0.0/24"}}),
    )
    .await
    .map_err(err)?;
    let mut hosts: Vec<&str> = PATHS.iter().flat_map(|(_, a, b)| [*a, *b]).collect();
    hosts.sort_unstable();
    hosts.dedup();
    let mut out = Vec::new();
    for host in hosts {
        let p = c
            .post(
                "/v2.0/ports",
                &json!({"port": {"network_id": net, "binding:host_id": host,
                    "device_owner": "compute:nova"}}),
            )
            .await
            .map_err(err)?;
        let port = p["port"]["id"].as_str().unwrap_or_default();
        let name = format!("b-{host}");
        let g = lab
            .guests
            .boot(&name, port, Duration::from_secs(30))
            .await
            .map_err(|e| other(format!("booting {name}: {e}")))?;
        let ip =
            g.ip.as_deref()
                .and_then(|i| i.parse().ok())
                .ok_or_else(|| other(format!("{name} got no DHCP lease")))?;
        out.push((host.to_string(), name, ip));
    }
    Ok(out)
}

/// The kernel's path between the same guests: `eth1` in each guest on a
/// bridge in its node, vRouter nodes and the gateway meshed by a kernel
/// VXLAN device, OVS nodes and the gateway bridged through the fabric's
/// namespace. Returns each guest's `eth1` address.
fn kernel_paths(
    lab: &LinuxLab,
    topo: &Topology,
    guests: &[(String, String, Ipv4Addr)],
) -> Result<Vec<Ipv4Addr>, LinuxError> {
    let prefix = lab.prefix();
    let ns = |n: &str| ns_name(prefix, n);
    let vteps: Vec<(String, Ipv4Addr)> = topo
        .nodes
        .iter()
        .filter(|n| matches!(n.role, Role::Vrouter | Role::Gateway))
        .filter_map(|n| n.underlay.map(|u| (n.name.clone(), u)))
        .collect();
    let switched: Vec<String> = topo
        .nodes
        .iter()
        .filter(|n| matches!(n.role, Role::Ovs | Role::Gateway))
        .map(|n| n.name.clone())
        .collect();
    let fabric = topo
        .nodes
        .iter()
        .find(|n| n.role == Role::Fabric)
        .map(|n| ns(&n.name))
        .ok_or_else(|| other("the topology has no fabric"))?;
    let mut bridged: Vec<String> = guests.iter().map(|(h, _, _)| h.clone()).collect();
    bridged.extend(vteps.iter().map(|(n, _)| n.clone()));
    bridged.extend(switched.iter().cloned());
    bridged.sort();
    bridged.dedup();
    for n in &bridged {
        netns::bridge(&ns(n), "kbr")?;
    }
    for (n, local) in &vteps {
        let node = ns(n);
        netns::ip_in(
            &node,
            &[
                "link",
                "add",
                "kvx",
                "type",
                "vxlan",
                "id",
                KERNEL_VNI,
                "local",
                &local.to_string(),
                "dstport",
                KERNEL_VXLAN_PORT,
                "dev",
                "eth0",
            ],
        )?;
        for (m, remote) in &vteps {
            if m != n {
                netns::run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &node,
                        "bridge",
                        "fdb",
                        "append",
                        "00:00:00:00:00:00",
                        "dev",
                        "kvx",
                        "dst",
                        &remote.to_string(),
                    ],
                )?;
            }
        }
        netns::enslave(&node, "kvx", "kbr")?;
        netns::ip_in(&node, &["link", "set", "kvx", "up"])?;
    }
    netns::bridge(&fabric, "kfab")?;
    for (i, n) in switched.iter().enumerate() {
        let leg = format!("kf{i}");
        netns::wire((&ns(n), "kfab", None), (&fabric, &leg, None))?;
        netns::enslave(&ns(n), "kfab", "kbr")?;
        netns::enslave(&fabric, &leg, "kfab")?;
    }
    let mut addrs = Vec::new();
    for (i, (host, name, _)) in guests.iter().enumerate() {
        let g = lab
            .guests
            .get(name)
            .map_err(|e| other(format!("{name}: {e}")))?;
        let ip = Ipv4Addr::new(
            KERNEL_NET[0],
            KERNEL_NET[1],
            KERNEL_NET[2],
            u8::try_from(i + 1).unwrap_or(u8::MAX),
        );
        let leg = format!("kq{i}");
        netns::wire((&ns(host), &leg, None), (&g.netns, "eth1", None))?;
        netns::enslave(&ns(host), &leg, "kbr")?;
        netns::ip_in(&g.netns, &["link", "set", "eth1", "mtu", MTU])?;
        netns::ip_in(
            &g.netns,
            &["addr", "add", &format!("{ip}/24"), "dev", "eth1"],
        )?;
        addrs.push(ip);
    }
    Ok(addrs)
}

/// Median RTT of 20 pings 50 ms apart from `guest` to `target`, after the
/// path is warm (ARP resolved); an error when nothing answers.
async fn rtt(lab: &LinuxLab, guest: &str, target: Ipv4Addr) -> Result<f64, LinuxError> {
    for _ in 0..20 {
        let w = lab
            .guests
            .ping(guest, target, 3, 20)
            .await
            .map_err(|e| other(format!("ping: {e}")))?;
        if w.sent > 0 && w.answered == w.sent {
            break;
        }
    }
    let r = lab
        .guests
        .ping(guest, target, 20, 50)
        .await
        .map_err(|e| other(format!("ping: {e}")))?;
    r.rtt_ms
        .as_ref()
        .and_then(|v| v["median"].as_f64())
        .ok_or_else(|| other(format!("{guest} cannot reach {target}")))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `iperf3` TCP stream for `seconds` from guest namespace `from` to
/// `target` (a one-shot server in `to`): received Gbit/s and retransmits.
fn iperf(from: &str, to: &str, target: Ipv4Addr, seconds: u64) -> Result<(f64, u64), LinuxError> {
    let _server = Server(
        Command::new("ip")
            .args(["netns", "exec", to, "iperf3", "-s", "-1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| other(format!("starting iperf3: {e}")))?,
    );
    let mut last = String::new();
    // The server takes a moment to listen.
    for _ in 0..20 {
        let (ok, out) = netns::exec(
            from,
            &[
                "iperf3",
                "-c",
                &target.to_string(),
                "-t",
                &seconds.to_string(),
                "-J",
                "--connect-timeout",
                "3000",
            ],
        )?;
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        if ok && let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            let retransmits = v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
            return Ok((bps / 1e9, retransmits));
        }
        last = v["error"].as_str().map_or(out, str::to_string);
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(other(format!("iperf3 {from} -> {target}: {last}")))
}

/// Runs every path on `lab` (built from [`topology`]); `say` gets a line per
/// measurement.
pub async fn run(
    lab: &LinuxLab,
    seconds: u64,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Report, LinuxError> {
    let topo = topology()?;
    let gs = guests(lab).await?;
    let kernel = kernel_paths(lab, &topo, &gs)?;
    let find = |host: &str| {
        gs.iter()
            .zip(&kernel)
            .find(|((h, _, _), _)| h == host)
            .map(|((_, name, ip), k)| (name.clone(), *ip, *k))
            .ok_or_else(|| other(format!("no guest on {host}")))
    };
    let mut paths = Vec::new();
    for (path, from, to) in PATHS {
        let (a, _, _) = find(from)?;
        let (b, b_ip, b_k) = find(to)?;
        let (a_ns, b_ns) = (lab.guests.get(&a), lab.guests.get(&b));
        let (a_ns, b_ns) = match (a_ns, b_ns) {
            (Ok(x), Ok(y)) => (x.netns, y.netns),
            _ => return Err(other("a bench guest went away")),
        };
        let rtt_ms = rtt(lab, &a, b_ip).await?;
        let kernel_rtt_ms = rtt(lab, &a, b_k).await?;
        let (an, bn) = (a_ns.clone(), b_ns.clone());
        let sy = tokio::task::spawn_blocking(move || iperf(&an, &bn, b_ip, seconds))
            .await
            .map_err(other)??;
        let k = tokio::task::spawn_blocking(move || iperf(&a_ns, &b_ns, b_k, seconds))
            .await
            .map_err(other)??;
        let r = PathResult {
            path: path.to_string(),
            from_host: from.to_string(),
            to_host: to.to_string(),
            switchyard_gbps: round(sy.0),
            kernel_gbps: round(k.0),
            ratio: if k.0 > 0.0 { round(sy.0 / k.0) } else { 0.0 },
            rtt_ms: round(rtt_ms),
            kernel_rtt_ms: round(kernel_rtt_ms),
            switchyard_retransmits: sy.1,
            kernel_retransmits: k.1,
        };
        say(&format!(
            "{:<16} {} -> {}: switchyard {:.3} Gbit/s (rtt {:.3} ms, {} retransmits), kernel {:.3} Gbit/s (rtt {:.3} ms), ratio {:.3}",
            r.path,
            r.from_host,
            r.to_host,
            r.switchyard_gbps,
            r.rtt_ms,
            r.switchyard_retransmits,
            r.kernel_gbps,
            r.kernel_rtt_ms,
            r.ratio
        ));
        paths.push(r);
    }
    Ok(Report { seconds, paths })
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
