//! `switchyard verify` (the connectivity matrix of a running lab),
//! `switchyard demo` (the reference scenario on a fresh lab) and
//! `switchyard bench migration` (repeated live migrations under a ping
//! stream). The scenarios are clients of the public APIs
//! (`switchyard_lab::client`); this module starts labs and prints.

use std::time::Duration;

use anyhow::{Context, bail};
use switchyard_lab::client::{LabClient, demo, migration, verify};
use switchyard_lab::live::{LiveLab, Options};

use crate::stdout::{out, outln};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Base URL of the lab (`switchyard lab up` prints it) [default: the
    /// --os-cloud's switchyard, else http://127.0.0.1:9696].
    #[arg(long, env = "SWITCHYARD_URL")]
    url: Option<String>,
    /// Only guests on this network (name or id).
    #[arg(long)]
    network: Option<String>,
    /// Replies (of the 5 pings per path) a path needs to count as ok.
    #[arg(long, value_name = "N", default_value_t = verify::PROBE_COUNT,
          value_parser = min_replies)]
    min_replies: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    auth: crate::os_auth::OsAuthArgs,
}

/// `--min-replies`: a number from 1 to the pings per path.
fn min_replies(s: &str) -> Result<u64, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("must be a number from 1 to {}", verify::PROBE_COUNT))?;
    verify::check_min_replies(n).map_err(|e| e.to_string())
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Print one JSON object instead of the steps.
    #[arg(long)]
    json: bool,
    /// Run the scenario on this machine's kernel (`lab up --linux`: network
    /// namespaces, agent processes, Open vSwitch, kernel guests; root).
    #[arg(long)]
    linux: bool,
    /// With --linux: the lab's state directory.
    #[arg(long, env = "SWITCHYARD_LAB_DIR", default_value = crate::lab_cmd::DEFAULT_LINUX_DIR)]
    state_dir: std::path::PathBuf,
    /// With --linux: the lab's namespace prefix.
    #[arg(long, default_value = crate::lab_cmd::LINUX_PREFIX)]
    prefix: String,
    /// With --linux: what guests are (QEMU VMs or network namespaces).
    #[arg(long, value_enum, default_value = "qemu")]
    guests: crate::lab_cmd::GuestsArg,
}

#[cfg(target_os = "linux")]
async fn bench_migration_linux(
    dir: &std::path::Path,
    l: &LinuxBench,
    runs: usize,
    direction: Direction,
    say: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<Result<migration::BenchReport, switchyard_lab::client::ClientError>> {
    let (label, from, to, peer) = direction.hosts();
    say("switchyard bench migration --linux: building the reference lab as network namespaces …");
    let lab = linux_lab(dir, &l.state_dir, &l.prefix, l.guests).await?;
    let c = LabClient::new(&lab.url());
    let r = tokio::select! {
        r = migration::bench(&c, runs, label, from, to, peer, say) => r,
        () = crate::shutdown_signal() => Err(switchyard_lab::client::ClientError::Scenario("interrupted".into())),
    };
    lab.shutdown().await;
    Ok(r)
}

#[cfg(not(target_os = "linux"))]
async fn bench_migration_linux(
    _: &std::path::Path,
    _: &LinuxBench,
    _: usize,
    _: Direction,
    _: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<Result<migration::BenchReport, switchyard_lab::client::ClientError>> {
    bail!("--linux needs Linux")
}

/// `bench migration` directions, on the reference lab's hosts.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Direction {
    /// compute-1 (OVS) to compute-4 (vRouter).
    OvsVrouter,
    /// compute-4 (vRouter) to compute-1 (OVS).
    VrouterOvs,
    /// compute-2 to compute-4 (both vRouter).
    VrouterVrouter,
}

impl Direction {
    /// (label, from, to, the peer's host)
    fn hosts(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Direction::OvsVrouter => ("ovs->vrouter", "compute-1", "compute-4", "compute-2"),
            Direction::VrouterOvs => ("vrouter->ovs", "compute-4", "compute-1", "compute-2"),
            Direction::VrouterVrouter => {
                ("vrouter->vrouter", "compute-2", "compute-4", "compute-2")
            }
        }
    }
}

fn base(url: &str) -> anyhow::Result<String> {
    let u = url.trim().trim_end_matches('/');
    if !(u.starts_with("http://") || u.starts_with("https://")) {
        bail!("--url must be the lab's base URL, e.g. http://127.0.0.1:9696, not '{url}'");
    }
    if u.ends_with("/v2.0") {
        bail!("--url must be the base URL without /v2.0, e.g. http://127.0.0.1:9696");
    }
    Ok(u.to_string())
}

pub async fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let mut c = LabClient::new(&base(&crate::os_auth::base_url(a.url.clone(), &a.auth))?);
    if let Some(t) = crate::os_auth::token(&a.auth).await? {
        c = c.with_token(t);
    }
    let m = verify::run(&c, a.network.as_deref(), a.min_replies)
        .await
        .map_err(|e| {
            let unauthorized = matches!(
                &e,
                switchyard_lab::client::ClientError::Api { status: 401, .. }
            );
            let e = anyhow::Error::new(e).context(format!("verifying the lab at {}", c.url()));
            if unauthorized {
                e.context(crate::os_auth::HINT)
            } else {
                e
            }
        })?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        out!("{}", verify::table(&m));
    }
    if m.pairs.is_empty() {
        match &a.network {
            Some(n) => bail!("no guest on network {n} has an expected path to probe"),
            None => bail!("no guest has an expected path to probe (boot servers first)"),
        }
    }
    if !m.ok {
        let failed = m.pairs.iter().filter(|p| !p.ok).count();
        bail!("{failed} of {} expected paths failed", m.pairs.len());
    }
    Ok(())
}

/// A fresh reference lab on a loopback port, with its database in `dir`,
/// every agent connected.
async fn fresh_lab(dir: &std::path::Path) -> anyhow::Result<LiveLab> {
    let live = LiveLab::start(Options::reference(dir.join("switchyard.db"))?)
        .await
        .context("starting the reference lab")?;
    let hosts = live.hosts();
    if !crate::lab_cmd::wait_connected(&live, &hosts, Duration::from_secs(15)).await {
        bail!("the lab's agents did not all connect within 15 s");
    }
    Ok(live)
}

pub async fn demo(a: DemoArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let quiet = a.json;
    let say = move |l: &str| {
        if !quiet {
            outln!("{l}");
        }
    };
    let r = if a.linux {
        demo_linux(&a, dir.path(), &say).await?
    } else {
        let live = fresh_lab(dir.path()).await?;
        let c = LabClient::new(&live.url());
        say(&format!(
            "switchyard demo: the reference scenario on a fresh lab at {}",
            live.url()
        ));
        let r = demo::run(&c, &say, Some(demo::MAX_LOST_PINGS)).await;
        live.shutdown().await;
        r.context("the reference scenario")?
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    }
    if !r.ok {
        bail!("the reference scenario failed (see above)");
    }
    Ok(())
}

/// The scenario on a fresh Linux-mode lab, removed afterwards (also on Ctrl-C).
#[cfg(target_os = "linux")]
async fn demo_linux(
    a: &DemoArgs,
    dir: &std::path::Path,
    say: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<demo::Report> {
    say("switchyard demo --linux: building the reference lab as network namespaces …");
    let lab = linux_lab(dir, &a.state_dir, &a.prefix, a.guests).await?;
    let guests = match a.guests {
        crate::lab_cmd::GuestsArg::Qemu => "QEMU VMs",
        crate::lab_cmd::GuestsArg::Netns => "namespace guests",
    };
    say(&format!(
        "switchyard demo: the reference scenario on kernel namespaces, real Open vSwitch, {guests} and real ping, at {}",
        lab.url()
    ));
    let c = LabClient::new(&lab.url());
    let r = tokio::select! {
        // Real pings on a shared machine: the loss is reported, not judged.
        r = demo::run(&c, say, None) => r.context("the reference scenario"),
        () = crate::shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    lab.shutdown().await;
    r
}

/// A fresh reference lab in Linux mode on a loopback port.
#[cfg(target_os = "linux")]
async fn linux_lab(
    dir: &std::path::Path,
    state_dir: &std::path::Path,
    prefix: &str,
    guests: crate::lab_cmd::GuestsArg,
) -> anyhow::Result<switchyard_lab::linux::LinuxLab> {
    use switchyard_lab::linux::{LinuxLab, Options as LinuxOptions};
    LinuxLab::start(LinuxOptions {
        topology: switchyard_lab::Topology::reference().context("the reference topology")?,
        bind: "127.0.0.1:0".into(),
        db: dir.join("switchyard.db"),
        ml2: switchyard_ml2::Ml2Config::default(),
        project: "admin".into(),
        binary: std::env::current_exe().context("finding the switchyard binary")?,
        state_dir: state_dir.to_path_buf(),
        prefix: prefix.to_string(),
        http: switchyard_api::HttpOptions::default(),
        guests: guests.into(),
        identity: None,
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(not(target_os = "linux"))]
async fn demo_linux(
    _: &DemoArgs,
    _: &std::path::Path,
    _: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<demo::Report> {
    bail!("--linux needs Linux")
}

/// Where `bench migration --linux` runs its lab.
pub struct LinuxBench {
    pub state_dir: std::path::PathBuf,
    pub prefix: String,
    pub guests: crate::lab_cmd::GuestsArg,
}

pub async fn bench_migration(
    runs: usize,
    direction: Direction,
    linux: Option<LinuxBench>,
    json: bool,
) -> anyhow::Result<()> {
    if runs == 0 || runs > 1000 {
        bail!("--runs must be from 1 to 1000");
    }
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let (label, from, to, peer) = direction.hosts();
    let say = move |l: &str| {
        if !json {
            outln!("{l}");
        }
    };
    let r = match linux {
        None => {
            let live = fresh_lab(dir.path()).await?;
            let c = LabClient::new(&live.url());
            let r = migration::bench(&c, runs, label, from, to, peer, &say).await;
            live.shutdown().await;
            r
        }
        Some(l) => bench_migration_linux(dir.path(), &l, runs, direction, &say).await?,
    };
    let r = r.context("the migration benchmark")?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        outln!(
            "live migration {} ({from} -> {to}), {} runs, 10 ms ping stream from a VM on {peer}:",
            r.direction,
            r.runs
        );
        outln!(
            "  outage      min {} / p50 {} / max {} ms",
            r.outage_ms.min,
            r.outage_ms.p50,
            r.outage_ms.max
        );
        outln!(
            "  lost pings  min {} / p50 {} / max {}",
            r.lost_pings.min,
            r.lost_pings.p50,
            r.lost_pings.max
        );
        outln!(
            "  migration   min {} / p50 {} / max {} ms (request to ACTIVE on the destination)",
            r.migration_ms.min,
            r.migration_ms.p50,
            r.migration_ms.max
        );
        if let (Some(d), Some(t)) = (r.qemu_downtime_ms, r.qemu_total_ms) {
            outln!(
                "  QEMU        downtime min {} / p50 {} / max {} ms; total min {} / p50 {} / max {} ms",
                d.min,
                d.p50,
                d.max,
                t.min,
                t.p50,
                t.max
            );
        }
    }
    Ok(())
}
