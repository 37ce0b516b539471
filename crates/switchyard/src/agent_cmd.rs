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
}

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
    let (dp, range) =
        pipeline_for(a.role, mac, a.tunneling_ip, 1, 64).map_err(anyhow::Error::msg)?;
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
        Io::Linux => {
            let rt = switchyard_agent::linux::Runtime::open(
                agent.clone(),
                &switchyard_agent::linux::Options {
                    vtep: a.tunneling_ip,
                },
                events_tx.clone(),
            )
            .await?;
            Some(tokio::spawn(rt.run(applied.clone(), stop.clone())))
        }
        Io::None => None,
    };
    println!(
        "switchyard agent {} ({}) -> {url}; data plane: {}",
        a.host,
        a.role.name(),
        match (a.io, a.tunneling_ip) {
            (Io::Linux, Some(ip)) => format!("linux (TAP devices, VXLAN on {ip}:4789)"),
            (Io::Linux, None) => "linux".to_string(),
            (Io::None, _) => "none (no devices)".to_string(),
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
    println!("switchyard agent {} stopped at version {v}", a.host);
    Ok(())
}
