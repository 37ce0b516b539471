//! A running lab in real time (`switchyard lab up`): the controller serving the
//! Neutron API on SQLite, one node agent per compute and gateway node of the
//! topology connected to it over the real southbound (WebSocket on loopback),
//! the emulated fabric advancing with the wall clock, and the hypervisor
//! emulation that boots guests on the nodes, reachable under
//! `/switchyard/v1/lab` beside the API, and the compute service (a Nova v2.1
//! subset under `/compute/v2.1`) that boots and live-migrates VMs through the
//! Neutron API.
//!
//! Agents run the same code as `switchyard agent`; their pipelines are the
//! lab's nodes. The controller and each agent can be stopped and started
//! again while the fabric keeps forwarding, which is how restart behaviour is
//! tested.

pub mod compute;
pub mod failover;
pub mod hypervisor;
pub mod routes;
pub mod verify_api;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration as StdDuration;

use smoltcp::time::Duration;
use switchyard_agent::NodeAgent;
use switchyard_agent::client::{self, Options as ClientOptions};
use switchyard_api::App;
use switchyard_ml2::Ml2Config;
use switchyard_store::Durability;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::agents::{agent_for, configurations};
use crate::build::build_with;
use crate::lab::{Element, Lab};
use crate::topology::Topology;
pub use compute::{Compute, ComputeOptions};
pub use hypervisor::{
    ConnectReport, GuestInfo, Hypervisor, HypervisorError, PingReport, TcpStreamReport,
};

/// The lab advances at most this many 1 ms ticks per wake-up; if it falls
/// further behind (a loaded machine), its clock slips rather than spiralling.
const MAX_CATCH_UP: u32 = 50;

pub struct Options {
    pub topology: Topology,
    /// Where the API listens (`127.0.0.1:0` picks a free port).
    pub bind: String,
    pub db: PathBuf,
    pub ml2: Ml2Config,
    pub project: String,
    /// Agents' heartbeat interval.
    pub heartbeat: StdDuration,
    /// The compute service's settings.
    pub compute: ComputeOptions,
    /// The API server's limits and public URL.
    pub http: switchyard_api::HttpOptions,
    /// The embedded identity, when the lab's APIs ask for tokens (its
    /// compute service then calls the networking API with
    /// `compute.service_token`).
    pub identity: Option<switchyard_identity::Identity>,
}

impl Options {
    /// The reference lab on a loopback port of the system's choosing, with a
    /// database at `db` and the default ML2 settings (what the tests run).
    pub fn reference(db: PathBuf) -> Result<Self, LiveError> {
        Ok(Options {
            topology: Topology::reference().map_err(|e| LiveError::Topology(e.to_string()))?,
            bind: "127.0.0.1:0".into(),
            db,
            ml2: Ml2Config::default(),
            project: "admin".into(),
            heartbeat: client::HEARTBEAT,
            compute: ComputeOptions::default(),
            http: switchyard_api::HttpOptions::default(),
            identity: None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("topology: {0}")]
    Topology(String),
    #[error("listening on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("controller: {0}")]
    Controller(#[from] switchyard_api::ServeError),
    #[error("no agent runs node {0}")]
    NoAgent(String),
    #[error("{0}")]
    Records(String),
}

struct Controller {
    app: App,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct AgentRun {
    agent: Arc<Mutex<NodeAgent>>,
    configurations: serde_json::Map<String, serde_json::Value>,
    /// The node's southbound credential, enrolled in the controller each
    /// time it starts.
    token: String,
    session: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

pub struct LiveLab {
    lab: Arc<Mutex<Lab>>,
    hypervisor: Hypervisor,
    compute: Compute,
    events: hypervisor::AgentEvents,
    agents: BTreeMap<String, AgentRun>,
    controller: Option<Controller>,
    clock_stop: Arc<AtomicBool>,
    clock: Option<std::thread::JoinHandle<()>>,
    addr: SocketAddr,
    opts: Options,
}

impl LiveLab {
    /// Builds the fabric, starts the controller and connects every agent.
    pub async fn start(opts: Options) -> Result<Self, LiveError> {
        let listener = tokio::net::TcpListener::bind(&opts.bind)
            .await
            .map_err(|e| LiveError::Listen(opts.bind.clone(), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| LiveError::Listen(opts.bind.clone(), e))?;
        let mut agents = BTreeMap::new();
        let mut failure = None;
        let lab = build_with(&opts.topology, |spec, i| match agent_for(spec, i) {
            Ok(Some(agent)) => {
                let shared = Arc::new(Mutex::new(agent));
                agents.insert(
                    spec.name.clone(),
                    AgentRun {
                        agent: shared.clone(),
                        configurations: configurations(spec),
                        token: switchyard_api::nodeauth::new_token(),
                        session: None,
                    },
                );
                Some(Element::Agent(shared))
            }
            Ok(None) => None,
            Err(e) => {
                failure = Some(e);
                None
            }
        })
        .map_err(|e| LiveError::Topology(e.to_string()))?;
        if let Some(e) = failure {
            return Err(LiveError::Topology(e));
        }
        let lab = Arc::new(Mutex::new(lab));
        let events: hypervisor::AgentEvents = Arc::default();
        let hypervisor = Hypervisor::new(lab.clone(), events.clone());
        let clock_stop = Arc::new(AtomicBool::new(false));
        let clock = {
            let (lab, stop) = (lab.clone(), clock_stop.clone());
            std::thread::Builder::new()
                .name("lab-clock".into())
                .spawn(move || run_clock(&lab, &stop))
                .map_err(|e| LiveError::Listen("lab clock thread".into(), e))?
        };
        // Servers are kept in the lab's database: a lab restarted on it
        // knows them again (`resume_servers`).
        let compute = Compute::new(
            compute::VirtDriver::Emulated(hypervisor.clone()),
            &format!("http://{addr}"),
            &opts.topology,
            opts.compute.clone(),
        )
        .with_records(&opts.db)
        .map_err(LiveError::Records)?;
        let mut live = LiveLab {
            lab,
            hypervisor,
            compute,
            events,
            agents,
            controller: None,
            clock_stop,
            clock: Some(clock),
            addr,
            opts,
        };
        live.serve(listener)?;
        live.ensure_public_network()?;
        let hosts: Vec<String> = live.agents.keys().cloned().collect();
        for h in hosts {
            live.start_agent(&h)?;
        }
        Ok(live)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) -> Result<(), LiveError> {
        let o = &self.opts;
        let mut app = switchyard_api::open_app(&o.db, Durability::Process, &o.ml2, &o.project)?;
        if let Some(id) = &o.identity {
            let public = o
                .http
                .network_link_prefix
                .as_ref()
                .map(|p| p.as_str().trim_end_matches('/').to_string())
                .unwrap_or_else(|| format!("http://{}", self.addr));
            id.set_public(
                &public,
                vec![
                    ("network", "neutron", String::new()),
                    ("compute", "nova", "/compute/v2.1".to_string()),
                    ("image", "glance", "/image".to_string()),
                ],
            );
            app.identity = Some(id.clone());
        }
        // The controller tells the compute service of port changes, as
        // Neutron tells Nova (with the service user's token when the APIs
        // ask for one).
        let token = o
            .compute
            .service_token
            .clone()
            .map(switchyard_identity::TokenSource::Embedded);
        let _ = app
            .shared
            .notifier
            .set(switchyard_api::nova::Notifier::start(
                switchyard_api::nova::NovaTarget {
                    url: format!("http://{}/compute/v2.1", self.addr),
                    token,
                    interval: std::time::Duration::ZERO,
                },
            ));
        // The lab's own agents are its enrolled nodes.
        for (host, run) in &self.agents {
            let role = run
                .agent
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .role;
            app.shared.credentials.add(host, role, &run.token);
        }
        self.compute.publish_to(app.shared.events.clone());
        let (stop, mut stopped) = watch::channel(false);
        let extra = routes::router(self.hypervisor.clone(), app.clone())
            .merge(compute::api::router(self.compute.clone(), &o.project))
            .merge(verify_api::router(&format!("http://{}", self.addr)));
        let app2 = app.clone();
        let http = o.http.clone();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) =
                switchyard_api::serve_with_options(listener, app2, extra, http, shutdown).await
            {
                tracing::error!(error = %e, "controller stopped");
            }
        });
        self.controller = Some(Controller { app, stop, task });
        Ok(())
    }

    fn ensure_public_network(&self) -> Result<(), LiveError> {
        match self.app() {
            Some(app) => ensure_public_network(app, &self.opts.topology, &self.opts.project),
            None => Ok(()),
        }
    }

    /// `http://ADDR` of the API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn hypervisor(&self) -> &Hypervisor {
        &self.hypervisor
    }

    pub fn compute(&self) -> &Compute {
        &self.compute
    }

    /// The running controller's application (None while it is stopped).
    pub fn app(&self) -> Option<&App> {
        self.controller.as_ref().map(|c| &c.app)
    }

    pub fn lab(&self) -> Arc<Mutex<Lab>> {
        self.lab.clone()
    }

    pub fn agent(&self, host: &str) -> Option<Arc<Mutex<NodeAgent>>> {
        self.agents.get(host).map(|a| a.agent.clone())
    }

    pub fn hosts(&self) -> Vec<String> {
        self.agents.keys().cloned().collect()
    }

    /// Stops the controller as a crash would look to agents: every session
    /// drops and nothing answers on the address until [`LiveLab::start_controller`].
    pub async fn stop_controller(&mut self) {
        if let Some(c) = self.controller.take() {
            let _ = c.app.shared.closing.send(true);
            let _ = c.stop.send(true);
            let mut task = c.task;
            if tokio::time::timeout(StdDuration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    /// Starts the controller again on the same database and address.
    pub async fn start_controller(&mut self) -> Result<(), LiveError> {
        if self.controller.is_some() {
            return Ok(());
        }
        let bind = self.addr.to_string();
        let listener = tokio::net::TcpListener::bind(&bind)
            .await
            .map_err(|e| LiveError::Listen(bind, e))?;
        self.serve(listener)
    }

    /// Connects `host`'s agent to the controller (it reconnects by itself after).
    pub fn start_agent(&mut self, host: &str) -> Result<(), LiveError> {
        let url = format!("ws://{}/switchyard/v1/southbound", self.addr);
        let heartbeat = self.opts.heartbeat;
        let run = self
            .agents
            .get_mut(host)
            .ok_or_else(|| LiveError::NoAgent(host.to_string()))?;
        if run.session.is_some() {
            return Ok(());
        }
        let (tx, events) = mpsc::channel(256);
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(host.to_string(), tx);
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(client::run(
            run.agent.clone(),
            ClientOptions {
                url,
                configurations: run.configurations.clone(),
                heartbeat,
                token: run.token.clone(),
                applied: None,
            },
            events,
            stop,
        ));
        run.session = Some((stop_tx, task));
        Ok(())
    }

    /// Stops `host`'s agent process: its session and heartbeats end, while
    /// the node's datapath keeps forwarding with what it was given (as a
    /// vRouter's kernel module or OVS's datapath outlive their agent).
    pub async fn stop_agent(&mut self, host: &str) -> Result<(), LiveError> {
        let run = self
            .agents
            .get_mut(host)
            .ok_or_else(|| LiveError::NoAgent(host.to_string()))?;
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(host);
        if let Some((stop, task)) = run.session.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        Ok(())
    }

    /// The southbound credential of `host`'s agent (the lab enrols its own
    /// agents; tests use it to play a misbehaving agent).
    pub fn node_token(&self, host: &str) -> Option<String> {
        self.agents.get(host).map(|r| r.token.clone())
    }

    /// Crashes `host` as a host that lost power would: its datapath stops
    /// (frames to it are lost) and its agent with it.
    pub async fn crash_node(&mut self, host: &str) -> Result<(), LiveError> {
        self.stop_agent(host).await?;
        self.lab
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_down(host, true)
            .map_err(|e| LiveError::Topology(e.to_string()))
    }

    /// Boots `host` again after [`LiveLab::crash_node`]: an empty datapath
    /// and a fresh agent, which the controller's snapshot fills.
    pub fn restart_node(&mut self, host: &str) -> Result<(), LiveError> {
        let (i, spec) = self
            .opts
            .topology
            .nodes
            .iter()
            .enumerate()
            .find(|(_, n)| n.name == host)
            .ok_or_else(|| LiveError::NoAgent(host.to_string()))?;
        let fresh = agent_for(spec, i)
            .map_err(LiveError::Topology)?
            .ok_or_else(|| LiveError::NoAgent(host.to_string()))?;
        {
            let run = self
                .agents
                .get(host)
                .ok_or_else(|| LiveError::NoAgent(host.to_string()))?;
            *run.agent.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
        }
        self.lab
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_down(host, false)
            .map_err(|e| LiveError::Topology(e.to_string()))?;
        self.start_agent(host)
    }

    /// Stops agents, controller and clock.
    pub async fn shutdown(mut self) {
        for h in self.hosts() {
            let _ = self.stop_agent(&h).await;
        }
        self.stop_controller().await;
        self.clock_stop.store(true, Ordering::Relaxed);
        if let Some(c) = self.clock.take() {
            let _ = tokio::task::spawn_blocking(move || c.join()).await;
        }
    }
}

impl Drop for LiveLab {
    fn drop(&mut self) {
        self.clock_stop.store(true, Ordering::Relaxed);
        if let Some(c) = &self.controller {
            let _ = c.app.shared.closing.send(true);
            let _ = c.stop.send(true);
        }
        for run in self.agents.values() {
            if let Some((stop, _)) = &run.session {
                let _ = stop.send(true);
            }
        }
    }
}

/// Creates the external network `public` on the gateway's external link
/// (from the topology: its subnet, the upstream router as gateway IP, and
/// an allocation pool above both addresses) unless it exists.
pub fn ensure_public_network(
    app: &App,
    topology: &Topology,
    project: &str,
) -> Result<(), LiveError> {
    {
        let gateways: Vec<&crate::topology::NodeSpec> = topology
            .nodes
            .iter()
            .filter(|n| n.role == crate::topology::Role::Gateway)
            .collect();
        let Some(gw) = gateways.first() else {
            return Ok(());
        };
        let (Some(ip), Some(hop)) = (gw.external_ip, gw.next_hop) else {
            return Ok(());
        };
        let len = gw.external_prefix_len.unwrap_or(24).min(30);
        let mask = u32::MAX << (32 - u32::from(len));
        let net = std::net::Ipv4Addr::from(u32::from(ip) & mask);
        let last = std::net::Ipv4Addr::from((u32::from(ip) | !mask) - 1);
        // The pool starts above every gateway's own address and the upstream's.
        let highest = gateways
            .iter()
            .filter_map(|g| g.external_ip)
            .chain(std::iter::once(hop))
            .map(u32::from)
            .max()
            .unwrap_or(u32::from(ip));
        let first = std::net::Ipv4Addr::from(highest + 1);
        let exists = app
            .shared
            .read(|_, st| {
                Ok(st
                    .networks
                    .values()
                    .any(|n| n.name == "public" && n.external))
            })
            .unwrap_or(true);
        if exists || first > last {
            return Ok(());
        }
        let obj = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
        let ctx = switchyard_ml2::Ctx::admin(project, app.shared.clock.now());
        app.shared
            .write(
                &ctx,
                |ml2, st, ctx| {
                    let id = switchyard_ml2::ops::networks::create(
                        ml2,
                        st,
                        ctx,
                        &obj(serde_json::json!({"name": "public", "router:external": true, "shared": false,
                            "provider:network_type": "flat", "provider:physical_network": "public"})),
                    )?;
                    switchyard_ml2::ops::subnets::create(
                        st,
                        ctx,
                        &obj(serde_json::json!({"network_id": id, "name": "public-subnet", "ip_version": 4,
                            "cidr": format!("{net}/{len}"), "gateway_ip": hop.to_string(), "enable_dhcp": false,
                            "allocation_pools": [{"start": first.to_string(), "end": last.to_string()}]})),
                    )?;
                    Ok(())
                },
                |_, _, ()| Ok(()),
            )
            .map_err(|e| LiveError::Topology(format!("creating the public network: {}", e.message)))
    }
}

/// Advances the lab with the wall clock, one 1 ms tick at a time.
fn run_clock(lab: &Mutex<Lab>, stop: &AtomicBool) {
    let start = std::time::Instant::now();
    let base = lab.lock().unwrap_or_else(PoisonError::into_inner).now;
    let mut slipped = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(StdDuration::from_millis(1));
        let elapsed =
            Duration::from_micros(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
        let target = base + elapsed - slipped;
        let mut lab = lab.lock().unwrap_or_else(PoisonError::into_inner);
        let mut n = 0;
        while lab.now < target && n < MAX_CATCH_UP {
            lab.step();
            n += 1;
        }
        if lab.now < target {
            slipped += target - lab.now;
        }
    }
}
