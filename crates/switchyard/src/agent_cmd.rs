//! `switchyard agent`: a node agent connected to the controller's southbound.
//! It registers the node (its hello is the first heartbeat), applies the
//! controller's snapshot and deltas to the node's pipeline, heartbeats, and
//! reconnects with backoff, forwarding with its last state meanwhile.
//!
//! The pipeline runs here without an I/O driver attached: VM ports are plugged
//! by the lab's hypervisor emulation or, later, by the Linux driver.

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use switchyard_agent::client::{self, HEARTBEAT, Options};
use switchyard_agent::{NodeAgent, pipeline_for};
use switchyard_proto::Role;

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// This node's host name (as Nova and binding:host_id name it).
    #[arg(long, env = "SWITCHYARD_HOST")]
    host: String,
    /// vrouter | ovs | sriov | gateway
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// The controller, e.g. http://127.0.0.1:9696
    #[arg(
        long,
        env = "SWITCHYARD_CONTROLLER",
        default_value = "http://127.0.0.1:9696"
    )]
    controller: String,
    /// VTEP address (vrouter, gateway).
    #[arg(long)]
    tunneling_ip: Option<Ipv4Addr>,
    /// Physical network reached by the trunk (ovs, sriov).
    #[arg(long, default_value = "physnet1")]
    physnet: String,
    /// The node's credential, as `switchyard node enroll` made it.
    #[arg(long, env = "SWITCHYARD_TOKEN_FILE")]
    token_file: PathBuf,
    /// Where the pipeline's packets come from: `linux` (the VMs' TAP devices
    /// and VXLAN over UDP on --tunneling-ip; vRouter nodes) or `none` (the
    /// pipeline runs without devices).
    #[arg(long, value_enum, default_value_t = Io::Linux)]
    io: Io,
    /// Linux I/O: the TAP the trunk (gateway) or NIC uplink (sriov) runs on,
    /// bridged by the host with the physnet's netdev.
    #[arg(long)]
    trunk_tap: Option<String>,
    /// Linux I/O, gateway: the TAP of the external network interface.
    #[arg(long)]
    external_tap: Option<String>,
    /// Gateway: its own address on the external network, A.B.C.D/N.
    #[arg(long)]
    external_ip: Option<String>,
    /// Gateway: the upstream router on the external network.
    #[arg(long)]
    next_hop: Option<Ipv4Addr>,
    /// Linux I/O, sriov: the VFs are the TAPs PREFIX0 … PREFIX{N-1}.
    #[arg(long)]
    vf_tap_prefix: Option<String>,
    /// sriov: the number of VFs.
    #[arg(long, default_value_t = 8)]
    vfs: u32,
    /// Linux I/O, ovs: ovsdb-server's Unix socket.
    #[arg(long, default_value = "/var/run/openvswitch/db.sock")]
    ovs_db: PathBuf,
    /// Linux I/O, ovs: ovs-vswitchd's run directory (its bridges' BR.mgmt sockets).
    #[arg(long, default_value = "/var/run/openvswitch")]
    ovs_rundir: PathBuf,
    /// Linux I/O, ovs: the NIC carrying the physnet, put on br-phys.
    #[arg(long)]
    physnet_nic: Option<String>,
}

/// The gateway's external side from the flags, if given.
fn external(
    a: &AgentArgs,
    mac: switchyard_dataplane::frames::Mac,
) -> anyhow::Result<Option<switchyard_dataplane::gateway::External>> {
    let (Some(ip), Some(hop)) = (&a.external_ip, a.next_hop) else {
        if a.external_ip.is_some() || a.next_hop.is_some() {
            bail!("--external-ip and --next-hop go together");
        }
        return Ok(None);
    };
    let (addr, len) = ip
        .split_once('/')
        .and_then(|(a, l)| Some((a.parse::<Ipv4Addr>().ok()?, l.parse::<u8>().ok()?)))
        .filter(|(_, l)| *l <= 32)
        .ok_or_else(|| anyhow::anyhow!("--external-ip must be A.B.C.D/N, not '{ip}'"))?;
    Ok(Some(switchyard_dataplane::gateway::External {
        port: EXTERNAL_PORT,
        ip: addr,
        prefix_len: len,
        mac,
        next_hop: hop,
    }))
}

/// The pipeline ports of a node's trunk (or NIC uplink) and a gateway's external side.
const TRUNK_PORT: u32 = 1;
const EXTERNAL_PORT: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Io {
    Linux,
    None,
}

/// A locally administered MAC for the node's own frames (DHCP answers,
/// proxy ARP), derived from its host name so nodes differ.
fn node_mac(host: &str) -> [u8; 6] {
    let mut h: u32 = 0x811c_9dc5;
    for b in host.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let b = h.to_be_bytes();
    [0x02, 0x53, 0x59, b[1], b[2], b[3]]
}

use crate::node_cmd::parse_role;
use crate::stdout::outln;

pub async fn run(a: AgentArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let base = a.controller.trim_end_matches('/');
    let url = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}/switchyard/v1/southbound")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}/switchyard/v1/southbound")
    } else {
        bail!(
            "--controller must be an http:// or https:// URL, not '{}'",
            a.controller
        );
    };
    let token = std::fs::read_to_string(&a.token_file)
        .with_context(|| format!("reading the node token {}", a.token_file.display()))?
        .trim()
        .to_string();
    if token.is_empty() {
        bail!("the node token file {} is empty", a.token_file.display());
    }
    let mac = switchyard_dataplane::frames::Mac::from_bytes(&node_mac(&a.host));
    let needs_vtep = matches!(a.role, Role::Vrouter | Role::Gateway);
    if needs_vtep && a.tunneling_ip.is_none() {
        bail!("--tunneling-ip is required for a {:?} node", a.role);
    }
    let (mut dp, range) =
        pipeline_for(a.role, mac, a.tunneling_ip, TRUNK_PORT, a.vfs).map_err(anyhow::Error::msg)?;
    if let (switchyard_agent::Dataplane::Gateway(g), Some(x)) = (&mut dp, external(&a, mac)?) {
        g.apply(1, &[switchyard_dataplane::gateway::Update::External(x)])
            .map_err(|e| anyhow::anyhow!("the external side: {e}"))?;
    }
    let mut fixed: Vec<(u32, String)> = Vec::new();
    if let Some(t) = &a.trunk_tap {
        fixed.push((TRUNK_PORT, t.clone()));
    }
    if let Some(t) = &a.external_tap {
        fixed.push((EXTERNAL_PORT, t.clone()));
    }
    if let Some(prefix) = &a.vf_tap_prefix {
        for k in 0..a.vfs {
            fixed.push((switchyard_agent::SRIOV_VFS + k, format!("{prefix}{k}")));
        }
    }
    let conf = match (a.role, a.tunneling_ip) {
        (Role::Vrouter | Role::Gateway, Some(ip)) => json!({"tunneling_ip": ip.to_string()}),
        (Role::Ovs, _) => json!({"bridge_mappings": {a.physnet.clone(): "br-phys"}}),
        _ => json!({"device_mappings": {a.physnet.clone(): ["eth1"]}}),
    };
    let configurations = match conf {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    let agent = Arc::new(Mutex::new(NodeAgent::new(&a.host, a.role, dp, range)));
    let (events_tx, events) = tokio::sync::mpsc::channel(64);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let applied = Arc::new(tokio::sync::Notify::new());
    let io = match a.io {
        Io::Linux if a.role == Role::Ovs => {
            let mappings =
                std::collections::BTreeMap::from([(a.physnet.clone(), "br-phys".to_string())]);
            let nics = a
                .physnet_nic
                .iter()
                .map(|n| ("br-phys".to_string(), n.clone()))
                .collect();
            let backend = switchyard_agent::openvswitch::Backend::open(
                agent.clone(),
                switchyard_agent::openvswitch::Options {
                    db: a.ovs_db.clone(),
                    rundir: a.ovs_rundir.clone(),
                    mappings,
                    nics,
                },
                events_tx.clone(),
            )
            .await?;
            let (applied, stop) = (applied.clone(), stop.clone());
            Some(tokio::spawn(async move {
                backend
                    .run(applied, stop)
                    .await
                    .map_err(|e| switchyard_agent::linux::LinuxError::Other(e.to_string()))
            }))
        }
        Io::Linux => {
            let done = switchyard_agent::linux::start(
                agent.clone(),
                switchyard_agent::linux::Options {
                    vtep: a.tunneling_ip,
                    fixed,
                },
                events_tx.clone(),
                applied.clone(),
                stop.clone(),
            )
            .await?;
            Some(tokio::spawn(async move {
                done.await.unwrap_or_else(|_| {
                    Err(switchyard_agent::linux::LinuxError::Other(
                        "the data plane's thread ended".into(),
                    ))
                })
            }))
        }
        Io::None => None,
    };
    outln!(
        "switchyard agent {} ({}) -> {url}; data plane: {}",
        a.host,
        a.role.name(),
        match (a.io, a.role, a.tunneling_ip) {
            (Io::Linux, Role::Ovs, _) => format!("Open vSwitch ({})", a.ovs_db.display()),
            (Io::Linux, _, Some(ip)) => format!("linux (TAP devices, VXLAN on {ip}:4789)"),
            (Io::Linux, _, None) => "linux (TAP devices)".to_string(),
            (Io::None, _, _) => "none (no devices)".to_string(),
        }
    );
    let task = tokio::spawn(client::run(
        agent.clone(),
        Options {
            url,
            configurations,
            heartbeat: HEARTBEAT,
            token,
            applied: Some(applied),
        },
        events,
        stop,
    ));
    let mut io = io;
    tokio::select! {
        () = shutdown => {}
        r = async { match io.as_mut() { Some(t) => t.await, None => std::future::pending().await } } => {
            let _ = stop_tx.send(true);
            let _ = task.await;
            match r {
                Ok(Ok(())) => bail!("the data plane stopped"),
                Ok(Err(e)) => bail!("the data plane failed: {e}"),
                Err(e) => bail!("the data plane task failed: {e}"),
            }
        }
    }
    let _ = stop_tx.send(true);
    let _ = task.await;
    if let Some(t) = io {
        let _ = t.await;
    }
    let v = agent.lock().map(|g| g.version()).unwrap_or(0);
    outln!("switchyard agent {} stopped at version {v}", a.host);
    Ok(())
}
