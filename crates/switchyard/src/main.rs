//! The `switchyard` command: `server` runs the Neutron API on SQLite, `agent`
//! a node agent, `lab up` the emulated lab, `verify` and `demo` the
//! connectivity matrix and the reference scenario, `bench` measures. Errors are reported with anyhow; everything else lives in the
//! library crates.

mod agent_cmd;
mod bench;
mod bench_console;
mod bench_controller;
mod bench_dataplane;
mod config;
mod lab_cmd;
mod node_cmd;
mod os_auth;
mod scenario_cmd;
mod stdout;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use stdout::outln;
use tracing_subscriber::EnvFilter;

// The controller builds and drops millions of small strings and maps; mimalloc
// handles that far better than the system allocator (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Neutron-compatible network controller for OVS, SR-IOV and vRouter nodes"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve the Neutron v2.0 API on SQLite (noauth, or tokens: see [identity]).
    Server(ServerArgs),
    /// Run a node agent: connect to the controller, apply this node's state to its pipeline.
    Agent(agent_cmd::AgentArgs),
    /// The emulated lab: `lab up` runs controller, agents, fabric and guests in one process.
    #[command(subcommand)]
    Lab(lab_cmd::LabCmd),
    /// The controller's view of nodes: versions sent and acknowledged.
    #[command(subcommand)]
    Node(node_cmd::NodeCmd),
    /// The connectivity matrix of a running lab: every guest to every guest
    /// it should reach and to the internet, 5 pings per path, every one
    /// answered unless --min-replies says fewer; exits non-zero when a path fails.
    Verify(scenario_cmd::VerifyArgs),
    /// The reference scenario on a fresh lab: three VMs on OVS, vRouter and
    /// SR-IOV, the matrix, a live migration OVS -> vRouter under a 10 ms ping
    /// stream, the matrix again.
    Demo(scenario_cmd::DemoArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// Address to listen on, HOST:PORT (e.g. 127.0.0.1:9696, [::1]:9696, localhost:9696).
    #[arg(long, env = "SWITCHYARD_BIND")]
    bind: Option<String>,
    /// Database URL: sqlite://PATH (default: sqlite://DATA_DIR/switchyard.db).
    #[arg(long, env = "SWITCHYARD_DB")]
    db: Option<String>,
    /// Directory for the default database.
    #[arg(long, env = "SWITCHYARD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// TOML configuration file (see docs/operator-guide.md).
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    /// Project owning requests that carry no X-Project-Id.
    #[arg(long, env = "SWITCHYARD_DEFAULT_PROJECT")]
    default_project: Option<String>,
    /// The node credentials file (`switchyard node enroll`; default DATA_DIR/nodes.toml).
    #[arg(long, env = "SWITCHYARD_NODE_CREDENTIALS")]
    node_credentials: Option<PathBuf>,
    #[command(flatten)]
    http: config::HttpArgs,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if matches!(
        cli.cmd,
        Cmd::Server(_) | Cmd::Agent(_) | Cmd::Lab(lab_cmd::LabCmd::Up(_))
    ) {
        stdout::daemon();
    }
    match cli.cmd {
        Cmd::Server(a) => rt.block_on(server(a)),
        Cmd::Agent(a) => rt.block_on(agent_cmd::run(a, shutdown_signal())),
        Cmd::Lab(l) => rt.block_on(lab_cmd::run(l, shutdown_signal())),
        Cmd::Node(n) => rt.block_on(node_cmd::run(n)),
        Cmd::Verify(a) => rt.block_on(scenario_cmd::verify(a)),
        Cmd::Demo(a) => rt.block_on(scenario_cmd::demo(a)),
        Cmd::Bench(b) => rt.block_on(bench::run(b)),
    }
}

async fn server(a: ServerArgs) -> anyhow::Result<()> {
    let file = config::FileConfig::load(a.config.as_deref())?;
    let bind: String = a
        .bind
        .or(file.bind.clone())
        .unwrap_or_else(|| "127.0.0.1:9696".into());
    let data_dir = a
        .data_dir
        .or(file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("data"));
    let db =
        a.db.or(file.db.clone())
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("switchyard.db").display()));
    let path = config::sqlite_path(&db)?;
    let durability = config::durability(file.durability.as_deref())?;
    let project = a
        .default_project
        .or(file.default_project.clone())
        .unwrap_or_else(|| "admin".into());
    let http = config::http_options(&a.http, &file)?;
    // Listen first: a server that cannot start must not create a database.
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .with_context(|| format!("listening on {bind}"))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating data directory {}", parent.display()))?;
    }
    // One switchyard per database: held until the process ends.
    let _lock = switchyard_store::lock(&path)?;
    let mut app = switchyard_api::open_app(&path, durability, &file.ml2, &project)
        .with_context(|| format!("opening {}", path.display()))?;
    let auth = file.auth(&path, std::env::var("SWITCHYARD_ADMIN_PASSWORD").ok())?;
    if let Some(target) = file.nova_target(&auth)? {
        tracing::info!(url = %target.url, "port events go to Nova");
        let _ = app
            .shared
            .notifier
            .set(switchyard_api::nova::Notifier::start(target));
    }
    match auth {
        config::Auth::None => {}
        config::Auth::Embedded(id) => app.identity = Some(id),
        config::Auth::Keystone(k) => {
            outln!(
                "switchyard: tokens are checked against Keystone at {}",
                k.www_authenticate_uri
            );
            app.keystone = Some(k);
        }
    }
    let creds = a
        .node_credentials
        .or(file.node_credentials.clone())
        .unwrap_or_else(|| data_dir.join("nodes.toml"));
    match switchyard_api::nodeauth::list_file(&creds) {
        Ok(nodes) if nodes.is_empty() => tracing::warn!(
            file = %creds.display(),
            "no node is enrolled: agents are refused until `switchyard node enroll HOST --role ROLE`"
        ),
        Ok(nodes) => {
            tracing::info!(file = %creds.display(), nodes = nodes.len(), "node credentials")
        }
        Err(e) => anyhow::bail!("{e}"),
    }
    app.shared.credentials =
        std::sync::Arc::new(switchyard_api::nodeauth::NodeCredentials::with_file(&creds));
    let local = listener.local_addr()?;
    if let Some(id) = &app.identity {
        let public = http
            .network_link_prefix
            .as_ref()
            .map(|p| p.as_str().trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("http://{local}"));
        id.set_public(&public, vec![("network", "neutron", String::new())]);
    }
    tracing::info!(%local, db = %path.display(), "switchyard server ready");
    outln!(
        "switchyard: Neutron API on http://{local}/v2.0/ (database {})",
        path.display()
    );
    outln!("switchyard: console on http://{local}/console/");
    if let Some(id) = &app.identity {
        outln!(
            "switchyard: identity (Keystone v3) on {}/identity/v3; every API call needs a token",
            id.public_url()
        );
    }
    // No routes beside the API's.
    let extra = Default::default();
    switchyard_api::serve_with_options(listener, app, extra, http, shutdown_signal()).await?;
    tracing::info!("switchyard server stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
