//! `switchyard bench api`: creates N ports over real HTTP against a server it
//! starts in this process on a temporary SQLite file, with C concurrent clients,
//! and reports throughput and latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use switchyard_ml2::Ml2Config;
use switchyard_store::Durability;

use crate::stdout::outln;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCmd {
    /// Port creations per second over HTTP (SQLite, noauth).
    Api {
        /// Ports to create.
        #[arg(long, default_value_t = 10_000)]
        ports: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Server time of the web console's page loads (Instances, Ports,
    /// Topology) with many ports in the database, on a fresh emulated lab.
    Console {
        /// Ports in the database in all (the servers' included).
        #[arg(long, default_value_t = 10_000)]
        ports: usize,
        /// Servers booted through the compute API (the Instances page's rows;
        /// it shows 50 a page).
        #[arg(long, default_value_t = 50)]
        servers: usize,
        /// Measured loads of each page.
        #[arg(long, default_value_t = 20)]
        loads: usize,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Controller compile and agent convergence for N nodes and M ports (in-process).
    Controller {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        #[arg(long, default_value_t = 100_000)]
        ports: usize,
        /// Also put the ports in this many security groups (each admitting
        /// its own members, a remote-group rule) and time a membership change.
        #[arg(long, default_value_t = 0)]
        security_groups: usize,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Packets per second per core through the forwarding pipelines (no I/O):
    /// vRouter encap and decap, OVS bridging, gateway SNAT, 64 and 1400 bytes.
    Dataplane {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Gateway failover and controller restarts under 10 ms ping streams on a
    /// fresh lab with two gateways: the gateway bridging a network dies and
    /// boots again, then the controller restarts; outage, lost pings,
    /// reconvergence per run.
    Failover {
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// The lab's agent_down_time in seconds (agents heartbeat every
        /// second); the outage follows it.
        #[arg(long, default_value_t = 3)]
        agent_down_time: u64,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// TCP throughput (iperf3) and ping RTT between kernel guests of a fresh
    /// Linux-mode lab, over switchyard and over the kernel's own bridges and
    /// VXLAN on the same namespaces (root, iperf3).
    Linux {
        /// Seconds each iperf3 stream runs.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// The lab's state directory.
        #[arg(long, default_value = "/run/switchyard-bench")]
        state_dir: std::path::PathBuf,
        /// The lab's namespace prefix.
        #[arg(long, default_value = "syb")]
        prefix: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Live migrations under a 10 ms ping stream on a fresh reference lab,
    /// through the compute API: outage and lost pings per run.
    Migration {
        /// Measured migrations (each followed by an unmeasured one back).
        #[arg(long, default_value_t = 20)]
        runs: usize,
        #[arg(long, value_enum, default_value = "ovs-vrouter")]
        direction: crate::scenario_cmd::Direction,
        /// On this machine's kernel (`lab up --linux`; root): QEMU VMs
        /// migrated by QEMU, real `ping -i 0.01` inside a VM.
        #[arg(long)]
        linux: bool,
        /// With --linux: the lab's state directory.
        #[arg(long, default_value = "/run/switchyard-bench")]
        state_dir: std::path::PathBuf,
        /// With --linux: the lab's namespace prefix.
        #[arg(long, default_value = "syb")]
        prefix: String,
        /// With --linux: what guests are.
        #[arg(long, value_enum, default_value = "qemu")]
        guests: crate::lab_cmd::GuestsArg,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Api {
            ports,
            concurrency,
            json,
        } => api(ports, concurrency, json).await,
        BenchCmd::Console {
            ports,
            servers,
            loads,
            json,
        } => crate::bench_console::run(ports, servers, loads, json).await,
        // One core, no I/O: the pipelines alone.
        BenchCmd::Controller {
            nodes,
            ports,
            security_groups,
            json,
        } => {
            tokio::task::spawn_blocking(move || {
                crate::bench_controller::run(nodes, ports, security_groups, json)
            })
            .await?
        }
        BenchCmd::Dataplane { json } => {
            tokio::task::spawn_blocking(move || crate::bench_dataplane::run(json)).await?
        }
        BenchCmd::Migration {
            runs,
            direction,
            linux,
            state_dir,
            prefix,
            guests,
            json,
        } => {
            let linux = linux.then_some(crate::scenario_cmd::LinuxBench {
                state_dir,
                prefix,
                guests,
            });
            crate::scenario_cmd::bench_migration(runs, direction, linux, json).await
        }
        BenchCmd::Failover {
            runs,
            agent_down_time,
            json,
        } => failover(runs, agent_down_time, json).await,
        BenchCmd::Linux {
            seconds,
            state_dir,
            prefix,
            json,
        } => linux(seconds, state_dir, prefix, json).await,
    }
}

#[cfg(target_os = "linux")]
async fn linux(
    seconds: u64,
    state_dir: std::path::PathBuf,
    prefix: String,
    as_json: bool,
) -> anyhow::Result<()> {
    use switchyard_lab::linux::{LinuxLab, Options, bench};
    if !(1..=600).contains(&seconds) {
        bail!("--seconds must be from 1 to 600");
    }
    let on_path = |t: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
    };
    if !on_path("iperf3") {
        bail!("bench linux needs iperf3 (Debian package: iperf3)");
    }
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let say = |l: &str| {
        if !as_json {
            outln!("{l}");
        }
    };
    say(
        "switchyard bench linux: building the reference lab plus compute-5 (OVS) as network namespaces …",
    );
    let lab = LinuxLab::start(Options {
        topology: bench::topology().map_err(|e| anyhow::anyhow!("{e}"))?,
        bind: "127.0.0.1:0".into(),
        db: dir.path().join("switchyard.db"),
        ml2: Ml2Config::default(),
        project: "admin".into(),
        binary: std::env::current_exe().context("finding the switchyard binary")?,
        state_dir,
        prefix,
        http: switchyard_api::HttpOptions::default(),
        guests: switchyard_lab::linux::guests::GuestKind::Netns,
        identity: None,
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    say(&format!(
        "one iperf3 TCP stream for {seconds} s per path, switchyard then the kernel (Linux bridges, kernel VXLAN) on the same namespaces"
    ));
    let r = tokio::select! {
        r = bench::run(&lab, seconds, &say) => r.map_err(|e| anyhow::anyhow!("{e}")),
        () = crate::shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    lab.shutdown().await;
    let r = r?;
    if as_json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
async fn linux(_: u64, _: std::path::PathBuf, _: String, _: bool) -> anyhow::Result<()> {
    bail!("bench linux needs Linux")
}

/// Smallest IPv4 prefix holding `n` ports plus the gateway and broadcast.
fn prefix_for(n: usize) -> u8 {
    let mut bits = 2u32;
    while (1usize << bits) < n + 3 {
        bits += 1;
    }
    (32 - bits.min(24)) as u8
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

async fn api(ports: usize, concurrency: usize, as_json: bool) -> anyhow::Result<()> {
    if ports == 0 || concurrency == 0 {
        bail!("--ports and --concurrency must be positive");
    }
    if ports > (1 << 24) - 3 {
        bail!("--ports is limited to 16777213 (one /8 subnet)");
    }
    let dir = tempfile::tempdir().context("temporary directory")?;
    let app = switchyard_api::open_app(
        &dir.path().join("bench.db"),
        Durability::Process,
        &Ml2Config::default(),
        "bench",
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchyard_api::serve(listener, app, async {
        let _ = stop_rx.await;
    }));
    let base = format!("http://{addr}/v2.0");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    // Neutron's default port quota (500) would stop the run: the bench's
    // project is given no limit, as an operator would for a load test.
    client
        .put(format!("{base}/quotas/bench"))
        .json(&json!({"quota": {"port": -1}}))
        .send()
        .await?
        .error_for_status()?;
    let net: Value = client
        .post(format!("{base}/networks"))
        .json(&json!({"network": {"name": "bench"}}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let net_id = net["network"]["id"]
        .as_str()
        .context("network id")?
        .to_string();
    client
        .post(format!("{base}/subnets"))
        .json(&json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": format!("10.0.0.0/{}", prefix_for(ports))}}))
        .send()
        .await?
        .error_for_status()?;

    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, errors, base, net_id) = (
            client.clone(),
            next.clone(),
            errors.clone(),
            base.clone(),
            net_id.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ports {
                    break;
                }
                let t = Instant::now();
                let r = client
                    .post(format!("{base}/ports"))
                    .json(
                        &json!({"port": {"network_id": net_id, "name": format!("p{i}"),
                                           "device_id": device_of(i, ports)}}),
                    )
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().as_u16() == 201 => {
                        let _ = resp.bytes().await;
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::with_capacity(ports);
    for t in tasks {
        lat.extend(t.await?);
    }
    let elapsed = start.elapsed();
    let errs = errors.load(Ordering::Relaxed);
    if errs > 0 {
        let _ = stop_tx.send(());
        bail!("{errs} of {ports} port creations failed");
    }
    let list_all = list_ms(&client, &format!("{base}/ports?limit={LIST_ALL}")).await?;
    let list_some = list_ms(
        &client,
        &format!("{base}/ports?device_id={}", device_of(7, ports)),
    )
    .await?;
    let _ = stop_tx.send(());
    server.await??;
    lat.sort();
    let rate = ports as f64 / elapsed.as_secs_f64();
    let (p50, p99) = (percentile(&lat, 0.50), percentile(&lat, 0.99));
    let ms = |d: f64| (d * 1000.0).round() / 1000.0;
    if as_json {
        outln!(
            "{}",
            json!({"ports": ports, "concurrency": concurrency, "ports_per_sec": (rate * 10.0).round() / 10.0,
                   "p50_ms": ms(p50), "p99_ms": ms(p99),
                   "list_10k_ms": ms(list_all.0), "list_10k_count": list_all.1,
                   "list_filtered_ms": ms(list_some.0), "list_filtered_count": list_some.1})
        );
    } else {
        outln!(
            "created {ports} ports with {concurrency} clients in {:.2} s",
            elapsed.as_secs_f64()
        );
        outln!("  ports/s  {rate:.1}");
        outln!("  p50      {p50:.3} ms");
        outln!("  p99      {p99:.3} ms");
        outln!(
            "  list     {:.3} ms for {} ports; {:.3} ms for {} ports by device_id",
            list_all.0,
            list_all.1,
            list_some.0,
            list_some.1
        );
    }
    Ok(())
}

/// How many ports the whole-list figure asks for (`list_10k_ms`).
const LIST_ALL: usize = 10_000;

/// A port's `device_id` in the bench: the ports cycle over `ports / 500`
/// devices, so one device's filter selects 500 of them (`list_filtered_ms`).
fn device_of(i: usize, ports: usize) -> String {
    format!("dev-{}", i % (ports / 500).max(1))
}

/// The median time, in ms, of 7 `GET url` (to the last byte of the body,
/// over keep-alive loopback, one warm-up first) and how many items came back.
async fn list_ms(client: &reqwest::Client, url: &str) -> anyhow::Result<(f64, usize)> {
    let mut times = Vec::new();
    let mut count = 0;
    for round in 0..8 {
        let t = Instant::now();
        let body = client
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let took = t.elapsed();
        if round == 0 {
            let v: Value = serde_json::from_slice(&body)?;
            count = v["ports"].as_array().map_or(0, Vec::len);
        } else {
            times.push(took);
        }
    }
    times.sort();
    Ok((percentile(&times, 0.50), count))
}

/// `switchyard bench failover`.
async fn failover(runs: usize, agent_down_time: u64, json: bool) -> anyhow::Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    if agent_down_time < 2 {
        bail!("--agent-down-time must be at least 2 s (agents heartbeat every second)");
    }
    let dir = tempfile::tempdir().context("temporary directory")?;
    let say = |s: &str| {
        if !json {
            outln!("{s}");
        }
    };
    if !json {
        outln!(
            "switchyard bench failover: {runs} runs, agent_down_time {agent_down_time} s, 10 ms ping streams"
        );
    }
    let rounds = switchyard_lab::live::failover::bench(
        dir.path().join("switchyard.db"),
        runs,
        agent_down_time,
        &say,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let spread = |mut v: Vec<u64>| {
        v.sort_unstable();
        json!({"min": v.first(), "p50": v.get(v.len() / 2), "max": v.last()})
    };
    let field = |f: fn(&switchyard_lab::live::failover::Round) -> u64| {
        spread(rounds.iter().map(f).collect())
    };
    let summary = json!({
        "runs": runs,
        "agent_down_time_s": agent_down_time,
        "interval_ms": 10,
        "l2_outage_ms": field(|r| r.l2_outage_ms),
        "internet_outage_ms": field(|r| r.internet_outage_ms),
        "back_lost": field(|r| r.back_lost as u64),
        "back_duplicates": field(|r| r.back_duplicates),
        "restart_converge_ms": field(|r| r.restart_converge_ms),
        "restart_lost": field(|r| r.restart_lost as u64),
        "rounds": rounds,
    });
    if json {
        outln!("{summary}");
    } else {
        for k in [
            "l2_outage_ms",
            "internet_outage_ms",
            "back_lost",
            "back_duplicates",
            "restart_converge_ms",
            "restart_lost",
        ] {
            let s = &summary[k];
            outln!("{k:<22} min {} p50 {} max {}", s["min"], s["p50"], s["max"]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_fits_ports() {
        assert_eq!(prefix_for(1), 30);
        assert_eq!(prefix_for(253), 24);
        assert_eq!(prefix_for(254), 23);
        assert_eq!(prefix_for(10_000), 18);
    }
}
