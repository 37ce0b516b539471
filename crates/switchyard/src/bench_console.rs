//! `switchyard bench console`: the server time of the web console's page
//! loads with many ports in the database. A fresh emulated lab (in this
//! process, SQLite, noauth) gets a network, S servers booted through the
//! compute API and then ports up to P in all (bulk creations); each page's
//! requests are then made over real HTTP exactly as the console makes them
//! (same paths, same order: what a page awaits in turn is timed in turn, what
//! it asks together is asked together), and the time from the first request
//! to the last answer's last byte is the page's server time. JSON parsing and
//! drawing in the browser are not in it.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};
use switchyard_lab::client::LabClient;
use switchyard_lab::live::{LiveLab, Options};

use crate::stdout::outln;

/// The pages' target (the figure for a paged page).
pub const TARGET_MS: f64 = 300.0;
/// Ports the console asks for on one page, and the fields it asks.
const PAGE: usize = 50;
const PORT_FIELDS: &str = "fields=id&fields=name&fields=network_id&fields=device_id&fields=device_owner\
&fields=mac_address&fields=fixed_ips&fields=status&fields=binding:host_id&fields=binding:vif_type";

#[derive(Debug, Serialize)]
pub struct Spread {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub ports: usize,
    pub servers: usize,
    pub loads: usize,
    /// The Instances page (its first page of 50): servers, their ports, the
    /// migrations.
    pub instances: Spread,
    /// The Ports page, first page and a page in the middle (by marker).
    pub ports_first: Spread,
    pub ports_middle: Spread,
    /// The Topology page (not paged: every port and binding; for the record).
    pub topology: Spread,
    pub target_ms: f64,
}

fn spread(mut v: Vec<Duration>) -> Spread {
    v.sort();
    let at = |p| crate::bench::percentile(&v, p);
    Spread {
        p50_ms: at(0.5),
        p95_ms: at(0.95),
        max_ms: at(1.0),
    }
}

/// GETs `paths` together and waits for every body.
async fn together(http: &reqwest::Client, base: &str, paths: &[String]) -> anyhow::Result<()> {
    let mut calls = tokio::task::JoinSet::new();
    for p in paths {
        let (http, url, p) = (http.clone(), format!("{base}{p}"), p.clone());
        calls.spawn(async move {
            let r = http.get(url).send().await?;
            let status = r.status();
            let body = r.bytes().await?;
            if !status.is_success() {
                bail!("GET {p}: {status} {}", String::from_utf8_lossy(&body));
            }
            Ok(())
        });
    }
    while let Some(r) = calls.join_next().await {
        r??;
    }
    Ok(())
}

/// Times `steps` (each a set of paths asked together), `loads` times.
async fn time_page(
    http: &reqwest::Client,
    base: &str,
    steps: &[Vec<String>],
    loads: usize,
) -> anyhow::Result<Spread> {
    // One unmeasured load: connections open, caches warm, as in a console
    // that is already open.
    for s in steps {
        together(http, base, s).await?;
    }
    let mut times = Vec::with_capacity(loads);
    for _ in 0..loads {
        let t = Instant::now();
        for s in steps {
            together(http, base, s).await?;
        }
        times.push(t.elapsed());
    }
    Ok(spread(times))
}

pub async fn run(ports: usize, servers: usize, loads: usize, as_json: bool) -> anyhow::Result<()> {
    if servers == 0 || ports < servers || loads == 0 {
        bail!("--servers and --loads must be positive, and --ports at least --servers");
    }
    if ports > 60_000 {
        bail!("--ports is limited to 60000 (one /16 subnet)");
    }
    let say = |l: &str| {
        if !as_json {
            outln!("{l}");
        }
    };
    let dir = tempfile::tempdir().context("temporary directory")?;
    let mut opts = Options::reference(dir.path().join("switchyard.db"))?;
    // The servers are the Instances page's rows, not a load on hosts.
    opts.compute.instances_per_host = u32::try_from(servers).unwrap_or(u32::MAX);
    let lab = LiveLab::start(opts).await?;
    let r = measure(&lab, ports, servers, loads, &say).await;
    lab.shutdown().await;
    let r = r?;
    if as_json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let line = |name: &str, s: &Spread| {
            outln!(
                "  {name:<13} p50 {:>6.1} ms   p95 {:>6.1} ms   max {:>6.1} ms",
                s.p50_ms,
                s.p95_ms,
                s.max_ms
            );
        };
        outln!(
            "page server time over {} loads ({} ports, {} servers; target {} ms for the paged pages):",
            r.loads,
            r.ports,
            r.servers,
            r.target_ms
        );
        line("instances", &r.instances);
        line("ports p.1", &r.ports_first);
        line("ports middle", &r.ports_middle);
        line("topology", &r.topology);
    }
    Ok(())
}

async fn measure(
    lab: &LiveLab,
    ports: usize,
    servers: usize,
    loads: usize,
    say: &dyn Fn(&str),
) -> anyhow::Result<Report> {
    let base = lab.url();
    let c = LabClient::new(&base);
    let err = |e: switchyard_lab::client::ClientError| anyhow::anyhow!("{e}");
    c.put(
        "/v2.0/quotas/admin",
        &json!({"quota": {"port": -1, "network": -1, "subnet": -1}}),
    )
    .await
    .map_err(err)?;
    c.put(
        "/compute/v2.1/os-quota-sets/admin",
        &json!({"quota_set": {"instances": -1, "cores": -1, "ram": -1}}),
    )
    .await
    .map_err(err)?;
    let net = c
        .post("/v2.0/networks", &json!({"network": {"name": "bench-net"}}))
        .await
        .map_err(err)?;
    let net = net["network"]["id"]
        .as_str()
        .context("network id")?
        .to_string();
    c.post(
        "/v2.0/subnets",
        &json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.128.0.0/16"}}),
    )
    .await
    .map_err(err)?;
    say(&format!(
        "booting {servers} servers through the compute API …"
    ));
    let hosts = ["compute-1", "compute-2", "compute-4"];
    let mut ids = Vec::new();
    for i in 0..servers {
        let s = c
            .boot(
                &format!("bench-vm-{i}"),
                json!([{"uuid": net}]),
                hosts[i % hosts.len()],
                Duration::from_secs(60),
            )
            .await
            .map_err(err)?;
        ids.push(s["id"].as_str().context("server id")?.to_string());
    }
    say(&format!("creating {} more ports …", ports - servers));
    let mut made = servers;
    while made < ports {
        let n = (ports - made).min(1000);
        let body: Vec<Value> = (made..made + n)
            .map(|i| json!({"network_id": net, "name": format!("bench-port-{i}")}))
            .collect();
        c.post("/v2.0/ports", &json!({ "ports": body }))
            .await
            .map_err(err)?;
        made += n;
    }
    let http = reqwest::Client::new();
    // The Instances page: the servers, then their ports, then migrations.
    // Newest first, as the compute API lists them: the first page's.
    let by_device: String = ids
        .iter()
        .rev()
        .take(PAGE)
        .map(|id| format!("device_id={id}"))
        .collect::<Vec<_>>()
        .join("&");
    let instances = vec![
        vec![format!("/compute/v2.1/servers/detail?limit={PAGE}")],
        vec![format!("/v2.0/ports?{by_device}&{PORT_FIELDS}")],
        vec!["/compute/v2.1/os-migrations".to_string()],
    ];
    // The Ports page: a page of ports and the networks' names, together.
    let names = "/v2.0/networks?fields=id&fields=name".to_string();
    let first = vec![vec![
        format!("/v2.0/ports?limit={PAGE}&{PORT_FIELDS}"),
        names.clone(),
    ]];
    let all = c.get("/v2.0/ports?fields=id").await.map_err(err)?;
    let all = all["ports"].as_array().context("ports")?;
    if all.len() < ports {
        bail!("{} ports listed, {ports} made", all.len());
    }
    let marker = all[all.len() / 2]["id"].as_str().context("port id")?;
    let middle = vec![vec![
        format!("/v2.0/ports?limit={PAGE}&{PORT_FIELDS}&marker={marker}"),
        names,
    ]];
    let topology = vec![vec![
        "/v2.0/agents?fields=host&fields=agent_type&fields=alive".to_string(),
        "/v2.0/ports?fields=id&fields=name&fields=device_id&fields=device_owner&fields=network_id\
&fields=binding:host_id&fields=fixed_ips"
            .to_string(),
        "/switchyard/v1/bindings".to_string(),
        "/v2.0/networks?fields=id&fields=name&fields=provider:network_type\
&fields=provider:segmentation_id&fields=provider:physical_network&fields=router:external"
            .to_string(),
        "/v2.0/routers?fields=id&fields=name".to_string(),
        "/compute/v2.1/servers/detail".to_string(),
        "/switchyard/v1/lab".to_string(),
    ]];
    say(&format!("loading each page {loads} times …"));
    Ok(Report {
        ports,
        servers,
        loads,
        instances: time_page(&http, &base, &instances, loads).await?,
        ports_first: time_page(&http, &base, &first, loads).await?,
        ports_middle: time_page(&http, &base, &middle, loads).await?,
        topology: time_page(&http, &base, &topology, loads).await?,
        target_ms: TARGET_MS,
    })
}
