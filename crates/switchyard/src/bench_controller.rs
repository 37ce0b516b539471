//! `switchyard bench controller`: builds a model of N nodes and M bound ports
//! with the real ML2 operations (in memory), then measures the controller's
//! full compile, the convergence of in-process agents applying their snapshots
//! to real pipelines, and single-port incremental changes (time and nodes
//! touched). No transport is involved: this measures compiler and agents.

use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};
use switchyard_agent::{NodeAgent, pipeline_for};
use switchyard_api::{Clock, Core, Shared};
use switchyard_controller::{Compiler, Liveness};
use switchyard_dataplane::frames::mac_serde::parse_mac;
use switchyard_ml2::{Ctx, Ml2, Ml2Config, ops};
use switchyard_model::State;
use switchyard_proto::{FromAgent, Role, ToAgent};
use switchyard_store::{Durability, SqliteStore};

use crate::stdout::outln;

/// Ports per network, and how many hosts a network spans.
const PORTS_PER_NETWORK: usize = 50;
const HOSTS_PER_NETWORK: usize = 10;

fn obj(v: Value) -> anyhow::Result<Map<String, Value>> {
    v.as_object().cloned().context("object")
}

fn role_of(i: usize) -> Role {
    match i {
        0 => Role::Gateway,
        _ if i % 20 < 12 => Role::Vrouter,
        _ if i % 20 < 17 => Role::Ovs,
        _ => Role::Sriov,
    }
}

fn vtep(i: usize) -> String {
    // 198.18.0.0/15 is the benchmarking range (RFC 2544); these live only in memory.
    format!("198.18.{}.{}", i / 250, i % 250 + 1)
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn new_agent(i: usize, host: &str, role: Role) -> anyhow::Result<NodeAgent> {
    let mac = parse_mac(&format!(
        "02:00:00:{:02x}:{:02x}:01",
        (i >> 8) & 0xff,
        i & 0xff
    ))
    .context("mac")?;
    let vtep = vtep(i).parse().ok();
    let (dp, range) = pipeline_for(role, mac, vtep, 0, 4096).map_err(anyhow::Error::msg)?;
    Ok(NodeAgent::new(host, role, dp, range))
}

pub fn run(nodes: usize, ports: usize, groups: usize, as_json: bool) -> anyhow::Result<()> {
    if nodes < 2 || ports == 0 {
        bail!("--nodes must be at least 2 (one is the gateway) and --ports positive");
    }
    let cfg = Ml2Config {
        vni_ranges: vec!["1000:16000000".into()],
        network_vlan_ranges: vec!["physnet1:1:4094".into()],
        ..Ml2Config::default()
    };
    let ml2 = Ml2::with_seed(&cfg, 1)?;
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).context("time")?;
    let ctx = Ctx::admin("bench", now);
    let mut st = State::new();
    let hosts: Vec<(String, Role)> = (0..nodes)
        .map(|i| (format!("node-{i}"), role_of(i)))
        .collect();
    for (i, (h, role)) in hosts.iter().enumerate() {
        let conf = match role {
            Role::Vrouter | Role::Gateway => json!({"tunneling_ip": vtep(i)}),
            Role::Ovs => json!({"bridge_mappings": {"physnet1": "br-phys"}}),
            Role::Sriov => json!({"device_mappings": {"physnet1": ["eth1"]}}),
        };
        let b = obj(json!({"host": h, "agent_type": role.agent_type(), "configurations": conf}))?;
        ops::agents::report_state(&mut st, &ctx, &b).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let computes: Vec<&(String, Role)> =
        hosts.iter().filter(|(_, r)| *r != Role::Gateway).collect();
    let networks = ports.div_ceil(PORTS_PER_NETWORK);
    if networks > 4000 {
        bail!(
            "at most {} ports (4000 networks of {PORTS_PER_NETWORK}, one VLAN each)",
            4000 * PORTS_PER_NETWORK
        );
    }
    let mut net_ids = Vec::with_capacity(networks);
    for n in 0..networks {
        let id = ops::networks::create(
            &ml2,
            &mut st,
            &ctx,
            &obj(json!({"name": format!("net-{n}")}))?,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let sb = obj(
            json!({"network_id": id, "cidr": format!("10.{}.{}.0/24", n / 256, n % 256), "ip_version": 4}),
        )?;
        ops::subnets::create(&mut st, &ctx, &sb).map_err(|e| anyhow::anyhow!("{e}"))?;
        net_ids.push(id);
    }
    let port_body = |k: usize| -> anyhow::Result<Map<String, Value>> {
        let n = k % networks;
        let (host, role) = computes[(n * 7 + k / networks % HOSTS_PER_NETWORK) % computes.len()];
        let vnic = if *role == Role::Sriov {
            "direct"
        } else {
            "normal"
        };
        // No security groups unless `--security-groups` puts ports in some:
        // the plain figures measure networks and bindings alone (a port left
        // to Neutron's default would join its project's `default` group).
        obj(
            json!({"network_id": net_ids[n], "binding:host_id": host, "binding:vnic_type": vnic,
                   "device_owner": "compute:nova", "security_groups": []}),
        )
    };
    let create_port = |st: &mut State, k: usize| -> anyhow::Result<Vec<switchyard_model::Change>> {
        let b = port_body(k)?;
        st.begin();
        match ops::ports::create(&ml2, st, &ctx, &b) {
            Ok(_) => Ok(st.commit()),
            Err(e) => {
                st.rollback();
                Err(anyhow::anyhow!("{e}"))
            }
        }
    };
    for k in 0..ports {
        create_port(&mut st, k)?;
    }
    // Security groups: port k in group k % groups, each group admitting TCP
    // from its own members (a remote-group rule) beside its egress rules.
    let mut group_ids = Vec::with_capacity(groups);
    for g in 0..groups {
        let err = |e: switchyard_model::NeutronError| anyhow::anyhow!("{e}");
        let id =
            ops::secgroups::create_group(&mut st, &ctx, &obj(json!({"name": format!("sg-{g}")}))?)
                .map_err(err)?;
        let rule = obj(
            json!({"security_group_id": id, "direction": "ingress", "protocol": "tcp",
            "port_range_min": 22, "port_range_max": 22, "remote_group_id": id}),
        )?;
        ops::secgroups::create_rule(&mut st, &ctx, &rule).map_err(err)?;
        group_ids.push(id);
    }
    if groups > 0 {
        let ids: Vec<String> = st.ports.keys().cloned().collect();
        for (k, id) in ids.iter().enumerate() {
            if let Some(mut p) = st.ports.get(id).cloned() {
                p.security_groups = vec![group_ids[k % groups].clone()];
                st.put_port(p);
            }
        }
    }

    // RSS by stage: the model alone, then with the compiled state, then
    // with every in-process agent holding its pipeline.
    let model_rss = rss_mb();
    let t = Instant::now();
    // As the server compiles (see `switchyard_api::hugepages`).
    let off = switchyard_api::hugepages::Off::new();
    let mut compiler = Compiler::full(&st, &Liveness::All);
    drop(off);
    compiler.initial_versions();
    let full_ms = t.elapsed().as_secs_f64() * 1000.0;
    let compiled_rss = rss_mb();

    let mut agents: Vec<NodeAgent> = hosts
        .iter()
        .enumerate()
        .map(|(i, (h, r))| new_agent(i, h, *r))
        .collect::<anyhow::Result<_>>()?;
    let t = Instant::now();
    for a in agents.iter_mut() {
        let Some((version, items)) = compiler.snapshot(&a.host) else {
            continue;
        };
        let msg = ToAgent::Snapshot { version, items };
        if let FromAgent::Nack { error, .. } = a.handle(&msg) {
            bail!("{} refused its snapshot: {error}", a.host);
        }
    }
    let converge_ms = t.elapsed().as_secs_f64() * 1000.0;

    // Incremental: single-port creations, as the API commits them.
    let changes = 200;
    let mut times = Vec::with_capacity(changes);
    let mut touched = 0usize;
    // The gateway agent's time to apply each delta it is sent.
    let mut gw_times = Vec::new();
    for k in ports..ports + changes {
        let ch = create_port(&mut st, k)?;
        let t = Instant::now();
        let deltas = compiler.apply(&st, &ch, &Liveness::All);
        times.push(t.elapsed().as_secs_f64() * 1e6);
        touched += deltas.len();
        for (host, d) in deltas {
            let Some(a) = agents.iter_mut().find(|a| a.host == host) else {
                continue;
            };
            let t = Instant::now();
            let reply = a.handle(&ToAgent::Delta(d));
            if a.role == Role::Gateway {
                gw_times.push(t.elapsed().as_secs_f64() * 1e6);
            }
            if let FromAgent::Nack { error, .. } = reply {
                bail!("{host} refused a delta: {error}");
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let incremental_us = times[times.len() / 2];
    gw_times.sort_by(f64::total_cmp);
    let gateway_delta_us = gw_times.get(gw_times.len() / 2).copied();

    // A compute node's agent registering (compiles nothing: it has no ports yet).
    let b = obj(
        json!({"host": "bench-new-node", "agent_type": Role::Vrouter.agent_type(), "configurations": {"tunneling_ip": "198.18.255.254"}}),
    )?;
    st.begin();
    ops::agents::report_state(&mut st, &ctx, &b).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ch = st.commit();
    let t = Instant::now();
    compiler.apply(&st, &ch, &Liveness::All);
    let register_us = t.elapsed().as_secs_f64() * 1e6;
    let per_change = touched as f64 / changes as f64;
    // A port joins another group: its own filter is recompiled, and both
    // groups' member sets (`sgm/`) are rendered once each and rewritten on
    // the nodes whose filters name them; no other filter changes.
    let mut sg_times = Vec::new();
    let mut sg_touched = 0usize;
    if groups > 1 {
        let ids: Vec<String> = st.ports.keys().take(200).cloned().collect();
        for (k, id) in ids.iter().enumerate() {
            let Some(mut p) = st.ports.get(id).cloned() else {
                continue;
            };
            p.security_groups = vec![group_ids[(k * 7 + 1) % groups].clone()];
            st.begin();
            st.put_port(p);
            let ch = st.commit();
            let t = Instant::now();
            let deltas = compiler.apply(&st, &ch, &Liveness::All);
            sg_times.push(t.elapsed().as_secs_f64() * 1e6);
            sg_touched += deltas.len();
        }
        sg_times.sort_by(f64::total_cmp);
    }
    let membership_us = sg_times.get(sg_times.len() / 2).copied();
    let membership_touched = sg_touched as f64 / sg_times.len().max(1) as f64;
    let rss = rss_mb();
    let stall = restart(&cfg, &st, now, |k| port_body(ports + changes + k))?;
    if as_json {
        outln!(
            "{}",
            json!({"nodes": nodes, "ports": ports, "full_compile_ms": (full_ms * 10.0).round() / 10.0,
                   "incremental_us": (incremental_us * 10.0).round() / 10.0, "nodes_touched_per_change": per_change,
                   "converge_ms": (converge_ms * 10.0).round() / 10.0, "rss_mb": rss.round(),
                   "model_rss_mb": model_rss.round(), "compiled_rss_mb": compiled_rss.round(),
                   "node_registration_us": register_us.round(),
                   "gateway_delta_us": gateway_delta_us.map(f64::round), "security_groups": groups,
                   "membership_change_us": membership_us.map(|u| (u * 10.0).round() / 10.0),
                   "membership_nodes_touched": membership_us.map(|_| membership_touched),
                   "max_write_stall_ms": (stall.waited_ms * 100.0).round() / 100.0,
                   "max_write_ms": (stall.max_ms * 100.0).round() / 100.0,
                   "restart_writes": stall.writes, "restart_compiled_ms": stall.compiled_ms.round()})
        );
    } else {
        outln!(
            "controller: {nodes} nodes, {ports} ports in {networks} networks ({} items compiled)",
            compiler.item_count()
        );
        outln!("  full compile          {full_ms:.1} ms");
        outln!(
            "  agents converged      {converge_ms:.1} ms (in-process, snapshots applied to pipelines)"
        );
        outln!(
            "  one port change       {incremental_us:.1} us (median of {changes}), {per_change:.2} nodes touched"
        );
        outln!("  a new node registers  {register_us:.0} us of controller CPU");
        if let Some(u) = gateway_delta_us {
            outln!(
                "  the gateway applies a delta in {u:.0} us (median of {})",
                gw_times.len()
            );
        }
        if let Some(u) = membership_us {
            outln!(
                "  a group membership change {u:.1} us (median of {}; {groups} groups), {membership_touched:.2} nodes touched",
                sg_times.len()
            );
        }
        outln!(
            "  RSS                   {rss:.0} MB ({model_rss:.0} MB with the model alone, {compiled_rss:.0} MB once compiled)"
        );
        outln!(
            "  restart               compiled and caught up {:.0} ms after the database was opened; {} port creations meanwhile waited at most {:.2} ms for the lock (the longest took {:.2} ms)",
            stall.compiled_ms,
            stall.writes,
            stall.waited_ms,
            stall.max_ms
        );
    }
    Ok(())
}

/// What API writes saw while a restarted controller compiled.
struct Stall {
    /// The longest a port creation waited for the controller's lock while
    /// the compiler was not yet serving (`max_write_stall_ms`): what the
    /// compile cost the writes.
    waited_ms: f64,
    /// The longest port creation then, start to commit (`max_write_ms`):
    /// SQLite's commit is in it, and a checkpoint's fsync of the database
    /// on a slow disk can hold that up whatever the compiler does.
    max_ms: f64,
    writes: usize,
    /// From opening the database to the compiler serving nodes.
    compiled_ms: f64,
}

/// The clock of the bench's model, fixed (its agents' heartbeats are at it).
struct At(switchyard_model::Timestamp);

impl Clock for At {
    fn now(&self) -> switchyard_model::Timestamp {
        self.0
    }
}

/// A controller restart at this scale: the model is written to a SQLite
/// database, the controller's core opens it (its full compile runs in the
/// background) and port creations go through the API's write path, one
/// after another, until the compiler has caught up with them.
fn restart(
    cfg: &Ml2Config,
    st: &State,
    now: switchyard_model::Timestamp,
    body: impl Fn(usize) -> anyhow::Result<Map<String, Value>>,
) -> anyhow::Result<Stall> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("switchyard.db");
    {
        let mut store = SqliteStore::open(&path, Durability::Process)?;
        let all: Vec<switchyard_model::Change> = st
            .records()
            .map(|r| (r.kind(), r.id().to_string(), Some(r)))
            .collect();
        store.commit(&all, "2027-01-15T08:00:00Z")?;
    }
    // A restarted controller finds its database settled on disk: the bulk
    // write above is flushed first, or its writeback would throttle the
    // measured writes.
    std::fs::File::open(&path)?.sync_all()?;
    let ctx = Ctx::admin("bench", now);
    let t = Instant::now();
    let store = SqliteStore::open(&path, Durability::Process)?;
    let core = Core::open(Ml2::with_seed(cfg, 2)?, store, now)?;
    let shared = Shared::new(core, std::sync::Arc::new(At(now)));
    shared.take_longest_lock_wait();
    let mut max_ms = 0f64;
    let mut writes = 0;
    while !*shared.compiled.borrow() {
        let b = body(writes)?;
        let w = Instant::now();
        shared
            .write(
                &ctx,
                |ml2, st, ctx| ops::ports::create(ml2, st, ctx, &b),
                |_, _, _| Ok(()),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        max_ms = max_ms.max(w.elapsed().as_secs_f64() * 1000.0);
        writes += 1;
    }
    Ok(Stall {
        waited_ms: shared.take_longest_lock_wait().as_secs_f64() * 1000.0,
        max_ms,
        writes,
        compiled_ms: t.elapsed().as_secs_f64() * 1000.0,
    })
}
