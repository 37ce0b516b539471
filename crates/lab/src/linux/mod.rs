//! `switchyard lab up --linux`: the topology built on this machine's kernel.
//! One network namespace per node; the controller in this process (API on
//! loopback, and inside a management namespace a listener serving only what
//! agents use: the southbound session and the agent API); one
//! `switchyard agent` **process** per node inside its namespace; Open vSwitch
//! (`ovsdb-server` + `ovs-vswitchd`, userspace datapath) inside each OVS
//! node; guests as namespaces with the kernel's own stack, plugged as
//! os-vif plugs a VM for its port's `vif_type` ([`guests`]).
//!
//! How the topology maps onto the host:
//!
//! * a link `A:P — B:Q` is a veth pair, `pP` in A's namespace and `pQ` in
//!   B's; the fabric switch is a Linux bridge over its links (VLAN tags pass
//!   untouched, as through a physical switch's trunk ports);
//! * the underlay is a bridge in its own namespace: every node with an
//!   `underlay` address has `eth0` there with that address (/24);
//! * an OVS node's trunk link is its physnet NIC on `br-phys`; an SR-IOV
//!   node's is bridged with the TAP its NIC's uplink runs on, and its VFs are
//!   TAPs `vf0`…; a gateway's trunk and external links are each bridged with
//!   a TAP its pipeline runs on; the internet node has its address on its
//!   link and its hosts' first address on loopback;
//! * management: a bridge in `PREFIX-mgmt` (10.255.0.1, the controller's
//!   southbound) and `mgmt0` in each node (10.255.0.N).
//!
//! Everything made is recorded in `STATE_DIR/state.json` before it is made, so
//! [`down`] removes it after a crash, and a second lab next to a running one
//! is refused.

pub mod bench;
pub mod console;
pub mod guests;
pub mod image;
pub mod netns;
pub mod qmp;
pub mod routes;
pub mod vm;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_api::App;
use switchyard_ml2::Ml2Config;
use switchyard_store::Durability;
use tokio::sync::watch;

use crate::topology::{NodeSpec, Role, Topology};
use netns::NetnsError;

/// The controller's southbound address inside the management namespace.
pub const SOUTHBOUND: &str = "10.255.0.1:9696";

#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    #[error("Linux mode needs root (network namespaces, TAP devices, Open vSwitch)")]
    NotRoot,
    #[error("missing tools: {0} (Debian packages: {1})")]
    Missing(String, String),
    #[error(
        "a Linux lab is already running (pid {0}, state in {1}); stop it, or run `switchyard lab down`"
    )]
    Running(u32, String),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("state file {0}: {1}")]
    State(String, String),
    #[error("controller: {0}")]
    Controller(String),
    #[error("topology: {0}")]
    Topology(String),
    #[error("{0}")]
    Other(String),
}

pub struct Options {
    pub topology: Topology,
    /// Where the API listens on loopback (`127.0.0.1:0` picks a port).
    pub bind: String,
    pub db: PathBuf,
    pub ml2: Ml2Config,
    pub project: String,
    /// The `switchyard` binary the agents run.
    pub binary: PathBuf,
    /// State, logs, tokens and Open vSwitch databases.
    pub state_dir: PathBuf,
    /// Namespace names start with `PREFIX-`.
    pub prefix: String,
    pub http: switchyard_api::HttpOptions,
    /// What the lab's guests are: QEMU VMs or network namespaces.
    pub guests: guests::GuestKind,
    /// The embedded identity, when the APIs ask for tokens; with the
    /// compute service's own user's token for its calls to the networking
    /// API, and the controller's for its events to the compute API.
    pub identity: Option<(
        switchyard_identity::Identity,
        switchyard_identity::ServiceToken,
    )>,
}

/// What a running lab made, so it can be removed after a crash.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// The `lab up --linux` process.
    pub pid: u32,
    pub namespaces: Vec<String>,
    /// Agent and Open vSwitch processes.
    pub pids: Vec<u32>,
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

fn read_state(dir: &Path) -> Option<State> {
    let text = std::fs::read_to_string(state_path(dir)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_state(dir: &Path, s: &State) -> Result<(), LinuxError> {
    let p = state_path(dir);
    let text = serde_json::to_string_pretty(s)
        .map_err(|e| LinuxError::State(p.display().to_string(), e.to_string()))?;
    std::fs::write(&p, text).map_err(|e| LinuxError::State(p.display().to_string(), e.to_string()))
}

/// A real process id: 0 and negative ids name process groups to kill(2),
/// and 1 is init; none of them is ever one of ours.
fn pid_of(pid: u32) -> Option<nix::unistd::Pid> {
    i32::try_from(pid)
        .ok()
        .filter(|p| *p > 1)
        .map(nix::unistd::Pid::from_raw)
}

fn alive(pid: u32) -> bool {
    pid_of(pid).is_some_and(|p| nix::sys::signal::kill(p, None).is_ok())
}

fn kill(pid: u32) {
    if let Some(p) = pid_of(pid) {
        let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
    }
}

/// Removes what the lab recorded in `state_dir` (processes and namespaces)
/// and its guests' namespaces (`PREFIX-g-…`, their VMMs' `PREFIX-v-…`); with `sweep`, every namespace
/// named `PREFIX-…` (what `switchyard lab down` asks for). Returns the
/// processes stopped and the namespaces removed.
pub fn down(state_dir: &Path, prefix: &str, sweep: bool) -> Result<(usize, usize), LinuxError> {
    let s = read_state(state_dir).unwrap_or_default();
    if s.pid != std::process::id() && alive(s.pid) {
        kill(s.pid);
    }
    let mut procs = 0;
    for pid in &s.pids {
        if alive(*pid) {
            kill(*pid);
            procs += 1;
        }
    }
    let mut names: Vec<String> = s.namespaces.clone();
    // Guests and their VMMs come and go with the lab's API: not recorded.
    let (guests, vmms) = (format!("{prefix}-g-"), format!("{prefix}-v-"));
    let all = format!("{prefix}-");
    names.extend(netns::list().into_iter().filter(|n| {
        n.starts_with(&guests) || n.starts_with(&vmms) || (sweep && n.starts_with(&all))
    }));
    names.sort();
    names.dedup();
    let existing = netns::list();
    let mut gone = 0;
    for n in &names {
        if existing.contains(n) {
            // What runs inside (a QEMU VM, a ping) would outlive the
            // namespace's name and keep its devices.
            if let Ok(pids) = netns::ip(&["netns", "pids", n]) {
                for pid in pids.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                    if pid != std::process::id() {
                        kill(pid);
                        procs += 1;
                    }
                }
            }
            netns::del(n);
            gone += 1;
        }
    }
    let _ = std::fs::remove_file(state_path(state_dir));
    Ok((procs, gone))
}

/// Tools Linux mode runs, with the Debian package that has each.
const TOOLS: [(&str, &str); 8] = [
    ("ip", "iproute2"),
    ("ethtool", "ethtool"),
    ("ping", "iputils-ping"),
    ("busybox", "busybox"),
    ("ovsdb-server", "openvswitch-switch"),
    ("ovs-vswitchd", "openvswitch-switch"),
    ("ovs-vsctl", "openvswitch-switch"),
    ("ovs-ofctl", "openvswitch-switch"),
];

fn check_tools() -> Result<(), LinuxError> {
    let on_path = |t: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
    };
    let missing: Vec<(&str, &str)> = TOOLS.iter().copied().filter(|(t, _)| !on_path(t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let tools: Vec<&str> = missing.iter().map(|(t, _)| *t).collect();
    let mut pkgs: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    pkgs.dedup();
    Err(LinuxError::Missing(tools.join(", "), pkgs.join(" ")))
}

/// QEMU and the guest image (built from this machine's kernel and busybox
/// into `state_dir/images` unless already there from the same inputs).
fn guest_image(state_dir: &Path) -> Result<image::Image, LinuxError> {
    let on_path = |t: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
    };
    if !on_path("qemu-system-x86_64") {
        return Err(LinuxError::Missing(
            "qemu-system-x86_64".into(),
            format!("{} (bookworm-backports on Debian 12)", vm::PACKAGE),
        ));
    }
    image::ensure(&state_dir.join("images"), &image::Inputs::default()).map_err(|e| {
        LinuxError::State(
            "the guest image".into(),
            format!("{e} (Debian packages: {})", image::PACKAGES),
        )
    })
}

/// A node's namespace name.
pub fn ns_name(prefix: &str, node: &str) -> String {
    format!("{prefix}-{node}")
}

pub struct LinuxLab {
    opts: Options,
    state: State,
    /// Open vSwitch daemons.
    children: Vec<Child>,
    /// Each node's agent process, and how it was started (to restart it).
    agents: BTreeMap<String, (Child, NodeSpec, String)>,
    /// Each node's credential (the controller learns them again on a restart).
    tokens: BTreeMap<String, (switchyard_proto::Role, String)>,
    app: App,
    /// The controller the guests and the compute service talk to now.
    cell: guests::AppCell,
    url: String,
    stop: watch::Sender<bool>,
    serving: Vec<tokio::task::JoinHandle<()>>,
    pub guests: guests::Guests,
    /// The compute API (Nova's part: it outlives a controller restart).
    compute: Option<crate::live::Compute>,
}

impl LinuxLab {
    /// Builds the topology, starts the controller, Open vSwitch and the agents,
    /// and waits until every node has taken its state.
    pub async fn start(opts: Options) -> Result<Self, LinuxError> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err(LinuxError::NotRoot);
        }
        check_tools()?;
        let image = match opts.guests {
            guests::GuestKind::Qemu => Some(guest_image(&opts.state_dir)?),
            guests::GuestKind::Netns => None,
        };
        std::fs::create_dir_all(&opts.state_dir)
            .map_err(|e| LinuxError::State(opts.state_dir.display().to_string(), e.to_string()))?;
        if let Some(s) = read_state(&opts.state_dir)
            && s.pid != std::process::id()
            && alive(s.pid)
        {
            return Err(LinuxError::Running(
                s.pid,
                opts.state_dir.display().to_string(),
            ));
        }
        // What a crashed lab left behind.
        down(&opts.state_dir, &opts.prefix, false)?;
        let app = switchyard_api::open_app(&opts.db, Durability::Process, &opts.ml2, &opts.project)
            .map_err(|e| LinuxError::Controller(e.to_string()))?;
        let (stop, _) = watch::channel(false);
        let cell: guests::AppCell = std::sync::Arc::new(std::sync::RwLock::new(app.clone()));
        let mut lab = LinuxLab {
            state: State {
                pid: std::process::id(),
                ..State::default()
            },
            children: Vec::new(),
            agents: BTreeMap::new(),
            tokens: BTreeMap::new(),
            app,
            cell: cell.clone(),
            url: String::new(),
            stop,
            serving: Vec::new(),
            guests: match image {
                Some(i) => guests::Guests::new(&opts.prefix, &opts.state_dir, cell).with_qemu(i),
                None => guests::Guests::new(&opts.prefix, &opts.state_dir, cell),
            },
            compute: None,
            opts,
        };
        if let Err(e) = lab.build().await {
            lab.teardown();
            return Err(e);
        }
        Ok(lab)
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    pub fn prefix(&self) -> &str {
        &self.opts.prefix
    }

    fn ns(&mut self, node: &str) -> Result<String, LinuxError> {
        let n = ns_name(&self.opts.prefix, node);
        self.state.namespaces.push(n.clone());
        write_state(&self.opts.state_dir, &self.state)?;
        netns::add(&n)?;
        Ok(n)
    }

    fn spawn(&mut self, cmd: Command, log: &str) -> Result<(), LinuxError> {
        let child = self.start_process(cmd, log)?;
        self.children.push(child);
        Ok(())
    }

    fn start_process(&mut self, mut cmd: Command, log: &str) -> Result<Child, LinuxError> {
        let path = self.opts.state_dir.join(log);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| LinuxError::State(path.display().to_string(), e.to_string()))?;
        let child = cmd
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .map_err(|e| LinuxError::Other(format!("starting {log}: {e}")))?;
        self.state.pids.push(child.id());
        write_state(&self.opts.state_dir, &self.state)?;
        Ok(child)
    }

    async fn build(&mut self) -> Result<(), LinuxError> {
        let topo = self.opts.topology.clone();
        let mgmt = self.ns("mgmt")?;
        netns::bridge(&mgmt, "br0")?;
        netns::ip_in(&mgmt, &["addr", "add", "10.255.0.1/24", "dev", "br0"])?;
        let und = self.ns("underlay")?;
        netns::bridge(&und, "br0")?;
        let mut nodes: BTreeMap<String, String> = BTreeMap::new();
        for n in &topo.nodes {
            let ns = self.ns(&n.name)?;
            nodes.insert(n.name.clone(), ns);
        }
        // Links.
        for l in &topo.links {
            let (a, pa) = crate::topology::parse_end(&l.a)
                .ok_or_else(|| LinuxError::Topology(l.a.clone()))?;
            let (b, pb) = crate::topology::parse_end(&l.b)
                .ok_or_else(|| LinuxError::Topology(l.b.clone()))?;
            let (na, nb) = (nodes[a].clone(), nodes[b].clone());
            netns::wire(
                (&na, &format!("p{pa}"), None),
                (&nb, &format!("p{pb}"), None),
            )?;
        }
        // Each node's own plumbing; agents after the controller is up.
        let mut mgmt_n = 2u8;
        let mut agents = Vec::new();
        for n in &topo.nodes {
            let ns = nodes[&n.name].clone();
            let port = |p: Option<u32>| p.map(|p| format!("p{p}"));
            if let Some(u) = n.underlay {
                let leg = format!("u{mgmt_n}");
                netns::wire((&ns, "eth0", Some(&format!("{u}/24"))), (&und, &leg, None))?;
                netns::enslave(&und, &leg, "br0")?;
            }
            match n.role {
                Role::Fabric => {
                    netns::bridge(&ns, "br-fab")?;
                    for l in &topo.links {
                        for end in [&l.a, &l.b] {
                            if let Some((node, p)) = crate::topology::parse_end(end)
                                && node == n.name
                            {
                                netns::enslave(&ns, &format!("p{p}"), "br-fab")?;
                            }
                        }
                    }
                    continue;
                }
                Role::Internet => {
                    if let (Some(dev), Some(ip)) = (port(n.external_port), n.external_ip) {
                        let len = n.external_prefix_len.unwrap_or(24);
                        netns::ip_in(&ns, &["addr", "add", &format!("{ip}/{len}"), "dev", &dev])?;
                    }
                    if let Some((net, _)) =
                        n.hosts.as_deref().and_then(crate::topology::parse_prefix)
                    {
                        let first = Ipv4Addr::from(u32::from(net) | 1);
                        netns::ip_in(&ns, &["addr", "add", &format!("{first}/32"), "dev", "lo"])?;
                    }
                    continue;
                }
                Role::Sriov => {
                    if let Some(dev) = port(n.trunk_port) {
                        netns::bridge(&ns, "br-up")?;
                        netns::enslave(&ns, &dev, "br-up")?;
                        netns::tap(&ns, "up0", Some("br-up"))?;
                    }
                    for k in 0..n.vfs.unwrap_or(crate::agents::DEFAULT_VFS) {
                        netns::tap(&ns, &format!("vf{k}"), None)?;
                    }
                }
                Role::Gateway => {
                    if let Some(dev) = port(n.trunk_port) {
                        netns::bridge(&ns, "br-trk")?;
                        netns::enslave(&ns, &dev, "br-trk")?;
                        netns::tap(&ns, "gtrk", Some("br-trk"))?;
                    }
                    if let Some(dev) = port(n.external_port) {
                        netns::bridge(&ns, "br-ext")?;
                        netns::enslave(&ns, &dev, "br-ext")?;
                        netns::tap(&ns, "gext", Some("br-ext"))?;
                    }
                }
                Role::Ovs => {
                    self.open_vswitch(&n.name, &ns).await?;
                }
                Role::Vrouter => {}
            }
            let leg = format!("m{mgmt_n}");
            netns::wire(
                (&ns, "mgmt0", Some(&format!("10.255.0.{mgmt_n}/24"))),
                (&mgmt, &leg, None),
            )?;
            netns::enslave(&mgmt, &leg, "br0")?;
            mgmt_n = mgmt_n.saturating_add(1);
            agents.push((n.clone(), ns));
        }
        self.serve().await?;
        crate::live::ensure_public_network(&self.app, &topo, &self.opts.project)
            .map_err(|e| LinuxError::Controller(e.to_string()))?;
        for (spec, ns) in agents {
            self.agent(&spec, &ns)?;
        }
        self.wait_converged(&topo).await
    }

    /// `ovsdb-server` and `ovs-vswitchd` (userspace datapath) in `ns`.
    async fn open_vswitch(&mut self, node: &str, ns: &str) -> Result<(), LinuxError> {
        let run = self.opts.state_dir.join(format!("ovs-{node}"));
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(&run)
            .map_err(|e| LinuxError::State(run.display().to_string(), e.to_string()))?;
        let db = run.join("conf.db");
        let p = |x: &Path| x.display().to_string();
        netns::run(
            "ovsdb-tool",
            &[
                "create",
                &p(&db),
                "/usr/share/openvswitch/vswitch.ovsschema",
            ],
        )?;
        let sock = run.join("db.sock");
        let cmd = |args: Vec<String>| {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns])
                .args(args)
                .env("OVS_RUNDIR", &run)
                .env("OVS_LOGDIR", &run);
            c
        };
        self.spawn(
            cmd(vec![
                "ovsdb-server".into(),
                p(&db),
                format!("--remote=punix:{}", p(&sock)),
                format!("--unixctl={}", p(&run.join("ovsdb.ctl"))),
            ]),
            &format!("ovsdb-{node}.log"),
        )?;
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        netns::run(
            "ovs-vsctl",
            &[&format!("--db=unix:{}", p(&sock)), "--no-wait", "init"],
        )?;
        self.spawn(
            cmd(vec![
                "ovs-vswitchd".into(),
                format!("unix:{}", p(&sock)),
                "--disable-system".into(),
                format!("--unixctl={}", p(&run.join("vswitchd.ctl"))),
            ]),
            &format!("vswitchd-{node}.log"),
        )?;
        Ok(())
    }

    /// The controller: API on loopback, southbound also in the management namespace.
    async fn serve(&mut self) -> Result<(), LinuxError> {
        let mgmt = ns_name(&self.opts.prefix, "mgmt");
        let bind = if self.url.is_empty() {
            self.opts.bind.clone()
        } else {
            self.url.trim_start_matches("http://").to_string()
        };
        let api = tokio::net::TcpListener::bind(&bind)
            .await
            .map_err(|e| LinuxError::Controller(format!("listening on {bind}: {e}")))?;
        let addr = api
            .local_addr()
            .map_err(|e| LinuxError::Controller(e.to_string()))?;
        self.url = format!("http://{addr}");
        let (stop, _) = watch::channel(false);
        self.stop = stop;
        let south_addr: SocketAddr = SOUTHBOUND
            .parse()
            .map_err(|_| LinuxError::Other("southbound address".into()))?;
        let south = tokio::net::TcpListener::from_std(netns::listen_in(&mgmt, south_addr)?)
            .map_err(|e| LinuxError::Controller(e.to_string()))?;
        let service_token = self.opts.identity.as_ref().map(|(id, token)| {
            let public = self
                .opts
                .http
                .network_link_prefix
                .as_ref()
                .map(|p| p.as_str().trim_end_matches('/').to_string())
                .unwrap_or_else(|| format!("http://{addr}"));
            id.set_public(
                &public,
                vec![
                    ("network", "neutron", String::new()),
                    ("compute", "nova", "/compute/v2.1".to_string()),
                ],
            );
            self.app.identity = Some(id.clone());
            token.clone()
        });
        let compute = self
            .compute
            .get_or_insert_with(|| {
                crate::live::Compute::new(
                    crate::live::compute::VirtDriver::Linux(self.guests.clone()),
                    &format!("http://{addr}"),
                    &self.opts.topology,
                    crate::live::ComputeOptions {
                        service_token: service_token.clone(),
                        ..crate::live::ComputeOptions::default()
                    },
                )
            })
            .clone();
        compute.publish_to(self.app.shared.events.clone());
        let extra = routes::router(self.guests.clone(), self.opts.topology.clone())
            .merge(crate::live::compute::api::router(
                compute,
                &self.opts.project,
            ))
            .merge(crate::live::verify_api::router(&format!("http://{addr}")));
        // The controller tells the compute service of port changes, as
        // Neutron tells Nova.
        let _ = self
            .app
            .shared
            .notifier
            .set(switchyard_api::nova::Notifier::start(
                switchyard_api::nova::NovaTarget {
                    url: format!("http://{addr}/compute/v2.1"),
                    token: service_token.map(switchyard_identity::TokenSource::Embedded),
                    interval: std::time::Duration::ZERO,
                },
            ));
        // The API on loopback; on the management network only what agents
        // use (node credentials), never the Neutron API.
        for (l, extra) in [(api, Some(extra)), (south, None)] {
            let (app, mut stop, http) = (
                self.app.clone(),
                self.stop.subscribe(),
                self.opts.http.clone(),
            );
            self.serving.push(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                let served = match extra {
                    Some(extra) => {
                        switchyard_api::serve_with_options(l, app, extra, http, shutdown).await
                    }
                    None => switchyard_api::serve_southbound(l, app, http, shutdown).await,
                };
                if let Err(e) = served {
                    tracing::error!(error = %e, "controller stopped");
                }
            }));
        }
        Ok(())
    }

    /// Stops the controller as a crash would look to the agents (every
    /// session drops), and starts it again on the same database and
    /// addresses; the nodes keep forwarding meanwhile.
    pub async fn restart_controller(&mut self) -> Result<(), LinuxError> {
        let _ = self.app.shared.closing.send(true);
        let _ = self.stop.send(true);
        for t in std::mem::take(&mut self.serving) {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        self.app = switchyard_api::open_app(
            &self.opts.db,
            Durability::Process,
            &self.opts.ml2,
            &self.opts.project,
        )
        .map_err(|e| LinuxError::Controller(e.to_string()))?;
        *self
            .cell
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = self.app.clone();
        for (host, (role, token)) in &self.tokens {
            self.app.shared.credentials.add(host, *role, token);
        }
        self.serve().await
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) node `host`'s agent: a frozen
    /// agent is dead to its node, its session open until the controller's
    /// `agent_down_time` passes.
    pub fn pause_agent(&self, host: &str, frozen: bool) -> Result<(), LinuxError> {
        let (child, _, _) = self
            .agents
            .get(host)
            .ok_or_else(|| LinuxError::Topology(format!("no agent runs {host}")))?;
        // `ip netns exec` execs the agent: the child is the agent itself.
        let pid = pid_of(child.id())
            .ok_or_else(|| LinuxError::Topology(format!("{host}'s agent has no pid")))?;
        let sig = if frozen {
            nix::sys::signal::Signal::SIGSTOP
        } else {
            nix::sys::signal::Signal::SIGCONT
        };
        nix::sys::signal::kill(pid, sig)
            .map_err(|e| LinuxError::Topology(format!("signalling {host}'s agent: {e}")))
    }

    /// Kills node `host`'s agent process and starts it again.
    pub fn restart_agent(&mut self, host: &str) -> Result<(), LinuxError> {
        let (mut child, spec, ns) = self
            .agents
            .remove(host)
            .ok_or_else(|| LinuxError::Topology(format!("no agent runs {host}")))?;
        let _ = child.kill();
        let _ = child.wait();
        self.agent(&spec, &ns)
    }

    /// `switchyard agent` for node `spec`, inside its namespace.
    fn agent(&mut self, spec: &NodeSpec, ns: &str) -> Result<(), LinuxError> {
        let role = crate::agents::agent_role(spec)
            .ok_or_else(|| LinuxError::Topology(format!("{} runs no agent", spec.name)))?;
        let token = self.app.shared.credentials.enroll(&spec.name, role);
        self.tokens.insert(spec.name.clone(), (role, token.clone()));
        let token_file = self.opts.state_dir.join(format!("{}.token", spec.name));
        std::fs::write(&token_file, token)
            .map_err(|e| LinuxError::State(token_file.display().to_string(), e.to_string()))?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns])
            .arg(&self.opts.binary)
            .args(["agent", "--host", &spec.name, "--role", role.name()])
            .args(["--controller", &format!("http://{SOUTHBOUND}")])
            .arg("--token-file")
            .arg(&token_file)
            .env("RUST_LOG", "info");
        let port = |p: Option<u32>| p.map(|p| format!("p{p}"));
        if let Some(u) = spec.underlay {
            c.args(["--tunneling-ip", &u.to_string()]);
        }
        if let Some(p) = &spec.physnet {
            c.args(["--physnet", p]);
        }
        match spec.role {
            Role::Ovs => {
                let run = self.opts.state_dir.join(format!("ovs-{}", spec.name));
                c.arg("--ovs-db").arg(run.join("db.sock"));
                c.arg("--ovs-rundir").arg(&run);
                if let Some(dev) = port(spec.trunk_port) {
                    c.args(["--physnet-nic", &dev]);
                }
            }
            Role::Sriov => {
                c.args(["--trunk-tap", "up0", "--vf-tap-prefix", "vf"]);
                c.args([
                    "--vfs",
                    &spec.vfs.unwrap_or(crate::agents::DEFAULT_VFS).to_string(),
                ]);
            }
            Role::Gateway => {
                c.args(["--trunk-tap", "gtrk"]);
                if let (Some(ip), Some(hop)) = (spec.external_ip, spec.next_hop) {
                    let len = spec.external_prefix_len.unwrap_or(24);
                    c.args([
                        "--external-tap",
                        "gext",
                        "--external-ip",
                        &format!("{ip}/{len}"),
                    ]);
                    c.args(["--next-hop", &hop.to_string()]);
                }
            }
            _ => {}
        }
        let child = self.start_process(c, &format!("agent-{}.log", spec.name))?;
        self.agents
            .insert(spec.name.clone(), (child, spec.clone(), ns.to_string()));
        Ok(())
    }

    /// A client of this lab's APIs; with the lab's identity, carrying the
    /// compute service's token (an admin's: it may read the nodes).
    pub async fn client(&self) -> crate::client::LabClient {
        let c = crate::client::LabClient::new(&self.url);
        let Some((_, token)) = &self.opts.identity else {
            return c;
        };
        match switchyard_identity::TokenSource::Embedded(token.clone())
            .token()
            .await
        {
            Ok(t) => c.with_token(t),
            Err(e) => {
                tracing::warn!(error = %e, "no token for the lab's own client");
                c
            }
        }
    }

    async fn wait_converged(&self, topo: &Topology) -> Result<(), LinuxError> {
        let hosts: Vec<&str> = topo
            .nodes
            .iter()
            .filter(|n| crate::agents::agent_role(n).is_some())
            .map(|n| n.name.as_str())
            .collect();
        let c = self.client().await;
        for _ in 0..600 {
            if crate::live::failover::converged(&c, &hosts)
                .await
                .unwrap_or(false)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(LinuxError::Other(format!(
            "the agents did not converge within a minute; see the agent logs in {}",
            self.opts.state_dir.display()
        )))
    }

    fn teardown(&mut self) {
        let _ = self.app.shared.closing.send(true);
        let _ = self.stop.send(true);
        self.guests.stop_all();
        for (_, (mut c, _, _)) in std::mem::take(&mut self.agents) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        let _ = down(&self.opts.state_dir, &self.opts.prefix, false);
    }

    /// Stops everything and removes every namespace, device and process.
    pub async fn shutdown(mut self) {
        self.teardown();
    }
}

impl Drop for LinuxLab {
    fn drop(&mut self) {
        self.teardown();
    }
}
