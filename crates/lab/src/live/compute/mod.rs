//! The lab's compute service: a Nova v2.1 subset that boots guests on the
//! lab's hypervisors and live-migrates them, driving the networking API the
//! way Nova does.
//!
//! * Boot: create (or claim) each port with `binding:host_id`, refuse a
//!   `binding_failed` binding, plug the guest's VIF where the node's agent put
//!   the port (OVS port with its tag, vRouter interface, VF), and wait for the
//!   port to become `ACTIVE` (Neutron's `network-vif-plugged`) before the
//!   server is `ACTIVE`; any failure leaves the server in `ERROR` with a
//!   fault and nothing of it in the network.
//! * Live migration, Nova's multiple-bindings flow: check the destination
//!   (known host, not the source, capacity), `POST …/bindings` for every VIF
//!   on the destination (INACTIVE, with the destination's real `vif_type`),
//!   wait for the destination to pre-plug every VIF, move the running guest
//!   (its stack travels with it and announces itself), `PUT …/activate`,
//!   `DELETE` the source bindings. Any failure before activation rolls back:
//!   destination bindings deleted, the guest still running on the source.
//!
//! State is in memory, like the lab's guests it describes. Prechecks (bad
//! host, wrong state, no capacity, a destination that cannot bind) answer the
//! request synchronously, as Nova did before microversion 2.34, so a caller
//! is told why at once; the rest runs in the background and is watched
//! through the server's `status` and `/os-migrations`.

pub mod api;
pub mod catalog;
pub mod driver;
pub mod neutron;
pub mod persist;
mod views;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_dataplane::frames::mac_serde::parse_mac;

use super::hypervisor::HypervisorError;
use crate::topology::{Role, Topology};
pub use driver::VirtDriver;
use neutron::{Neutron, NeutronFailure};

#[derive(Debug, Clone)]
pub struct ComputeOptions {
    /// Nova's `vif_plugging_timeout`: how long a boot waits for its ports to
    /// become ACTIVE (and a migration for the destination to pre-plug).
    pub vif_plugging_timeout: Duration,
    /// Instances a hypervisor runs at most (its `vcpus`, one per instance).
    pub instances_per_host: u32,
    /// The service user's token it calls the networking API with, when the
    /// API asks for tokens (embedded identity).
    pub service_token: Option<switchyard_identity::ServiceToken>,
}

impl Default for ComputeOptions {
    fn default() -> Self {
        ComputeOptions {
            vif_plugging_timeout: Duration::from_secs(30),
            instances_per_host: 16,
            service_token: None,
        }
    }
}

/// The kind of hypervisor networking a host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Ovs,
    Vrouter,
    Sriov,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Ovs => "ovs",
            Backend::Vrouter => "vrouter",
            Backend::Sriov => "sriov",
        }
    }

    /// Whether ports of `vnic_type` can be plugged here.
    fn takes(self, vnic_type: &str) -> bool {
        match self {
            Backend::Sriov => vnic_type == "direct",
            Backend::Ovs | Backend::Vrouter => vnic_type == "normal",
        }
    }
}

/// A hypervisor (compute node) of the lab.
#[derive(Debug, Clone)]
pub struct Host {
    pub id: u32,
    /// Its id in the API (microversion 2.53 and later show UUIDs).
    pub uuid: String,
    pub name: String,
    pub backend: Backend,
    /// Virtual functions (SR-IOV hosts), the cap on `direct` ports.
    pub vfs: u32,
}

/// Nova's server `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Build,
    Active,
    Migrating,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Build => "BUILD",
            Status::Active => "ACTIVE",
            Status::Migrating => "MIGRATING",
            Status::Error => "ERROR",
        }
    }
}

/// One of a server's network interfaces: a Neutron port and the lab guest
/// (one IP stack per NIC) plugged into it.
#[derive(Debug, Clone)]
pub struct Vif {
    pub port_id: String,
    pub network_id: String,
    pub network_name: String,
    pub mac: String,
    pub ips: Vec<String>,
    /// Floating IPs on the port (Nova's info cache learns them on
    /// `network-changed`).
    pub floating_ips: Vec<String>,
    pub vnic_type: String,
    pub vif_type: String,
    pub vif_details: Value,
    pub profile: Value,
    /// The guest (lab name) on this VIF, once plugged.
    pub guest: String,
    /// Nova created the port (and deletes it with the server) rather than
    /// being given it.
    pub created: bool,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub code: u16,
    pub message: String,
    pub created: String,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub project_id: String,
    /// The user who booted it.
    pub user_id: String,
    pub status: Status,
    pub task_state: Option<&'static str>,
    pub host: Option<String>,
    pub vifs: Vec<Vif>,
    pub created: String,
    pub updated: String,
    pub fault: Option<Fault>,
    /// The flavor it was booted with (`None`: none asked for).
    pub flavor: Option<catalog::Flavor>,
    /// The image it was booted from (the guest image's id, or none asked).
    pub image: Option<String>,
    /// What was done to it (`os-instance-actions`), oldest first.
    pub actions: Vec<InstanceAction>,
    /// Set by a delete during the build: the build tears down what it made.
    deleting: bool,
    /// Creation order (timestamps have one-second resolution).
    seq: u64,
}

/// One request made of a server (Nova's instance action).
#[derive(Debug, Clone)]
pub struct InstanceAction {
    pub action: &'static str,
    pub request_id: String,
    pub project_id: String,
    pub start_time: String,
    /// `None` while it runs or when it succeeded; Nova's `Error` otherwise.
    pub message: Option<String>,
    /// Who asked.
    pub user_id: String,
}

impl InstanceAction {
    fn new(action: &'static str, project_id: &str, user_id: &str) -> Self {
        InstanceAction {
            action,
            user_id: user_id.to_string(),
            request_id: format!("req-{}", uuid::Uuid::new_v4()),
            project_id: project_id.to_string(),
            start_time: now_string(),
            message: None,
        }
    }
}

/// A live migration, as `/os-migrations` shows it.
#[derive(Debug, Clone)]
pub struct Migration {
    pub id: u64,
    pub uuid: String,
    pub instance_uuid: String,
    pub source: String,
    pub dest: String,
    /// `preparing`, `running`, `completed`, `error`.
    pub status: &'static str,
    /// Why it failed (a switchyard addition to Nova's record).
    pub error: Option<String>,
    /// The steps done so far, in order, each with when it ended (a
    /// switchyard addition: Nova's record has only the status).
    pub steps: Vec<MigrationStep>,
    pub created: String,
    pub updated: String,
}

/// The steps of a live migration, in the order they are done.
pub const MIGRATION_STEPS: [&str; 5] = [
    "binding created",
    "destination plugged",
    "memory copied",
    "activated",
    "source unbound",
];

/// A step of a live migration, when it ended (milliseconds, UTC) and, when
/// part of it failed without stopping the migration (an activation or a
/// source binding's deletion, which Nova logs and goes on from), what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStep {
    pub step: &'static str,
    pub at: String,
    pub error: Option<String>,
}

/// A host a server could live-migrate to, as [`Compute::destinations`]
/// finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub host: String,
    /// Its networking: `ovs`, `vrouter` or `sriov`.
    pub backend: &'static str,
    /// Instances it runs, and at most.
    pub instances: u32,
    pub capacity: u32,
    /// Why it would not take the instance; `None`: it would.
    pub reason: Option<String>,
}

/// A network the new server is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetRequest {
    /// A new port on this network (`{"uuid": …}`), optionally with a fixed IP.
    Network {
        id: String,
        fixed_ip: Option<String>,
    },
    /// An existing port (`{"port": …}`).
    Port(String),
}

#[derive(Debug, Clone)]
pub struct BootRequest {
    pub name: String,
    pub project_id: String,
    /// Who asked (the token's user; `admin` without identity).
    pub user_id: String,
    pub networks: Vec<NetRequest>,
    /// `availability_zone: "nova:HOST"` or `host`.
    pub host: Option<String>,
    /// `flavorRef` and `imageRef` (an id, or a link ending in one).
    pub flavor: Option<String>,
    pub image: Option<String>,
    /// `security_groups` (names or ids, as Nova takes them) for the ports
    /// the server's networks get; none: Neutron's default group.
    pub security_groups: Vec<String>,
}

/// Errors in the categories Nova's API answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComputeError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Over a quota (Nova answers `403` with its message).
    #[error("{0}")]
    OverQuota(String),
    #[error("{0}")]
    Internal(String),
}

/// Nova's enforced quota resources and its defaults.
pub const NOVA_QUOTAS: [(&str, i64); 3] = [("cores", 20), ("instances", 10), ("ram", 51200)];

impl ComputeError {
    pub fn code(&self) -> u16 {
        match self {
            ComputeError::BadRequest(_) => 400,
            ComputeError::NotFound(_) => 404,
            ComputeError::Conflict(_) => 409,
            ComputeError::OverQuota(_) => 403,
            ComputeError::Internal(_) => 500,
        }
    }
}

fn now_string() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A step's time: a migration's steps are milliseconds apart.
fn now_millis() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update below completes under the lock or does not start.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn valid_guest_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[derive(Default)]
struct Inner {
    servers: BTreeMap<String, Server>,
    migrations: Vec<Migration>,
    next_seq: u64,
    /// External events received (`os-server-external-events`), newest last.
    events: std::collections::VecDeque<(u64, ExternalEvent)>,
    /// The number of the last event received (events are numbered from 1).
    event_seq: u64,
    flavors: Vec<catalog::Flavor>,
    /// Per-project quota limits an admin set (resource -> limit).
    quotas: BTreeMap<String, BTreeMap<String, i64>>,
    /// The creation order of the last [`GONE_KEPT`] deleted servers: a list
    /// paged by a server deleted since still goes on after it (Nova finds
    /// a marker among deleted instances too).
    gone: std::collections::VecDeque<(String, u64)>,
}

/// Deleted servers whose place in the lists is remembered.
const GONE_KEPT: usize = 10_000;

/// One event the networking service sent (Nova's `InstanceExternalEvent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalEvent {
    pub name: String,
    pub server_uuid: String,
    pub tag: String,
    pub status: String,
}

/// Events kept (the oldest go first).
const EVENTS_KEPT: usize = 10_000;

/// Cheap to clone; every clone is the same service.
#[derive(Clone)]
pub struct Compute {
    inner: Arc<Mutex<Inner>>,
    /// Woken on every external event.
    event_arrived: Arc<tokio::sync::Notify>,
    hyp: VirtDriver,
    neutron: Neutron,
    hosts: Arc<Vec<Host>>,
    opts: Arc<ComputeOptions>,
    started: String,
    /// Where servers and flavors are kept across restarts (`None`: nowhere).
    records: Option<Arc<persist::Records>>,
    /// The API's commit stream, told of every change to a server (kind
    /// `server`, named to its project) and to a migration (kind
    /// `migration`, admins only, as `/os-migrations` is), so that the
    /// console follows a boot or a migration without polling.
    stream: Arc<Mutex<Option<EventSender>>>,
}

/// Where the compute service publishes its changes: the API's commit
/// stream (`GET /switchyard/v1/events`).
pub type EventSender = tokio::sync::broadcast::Sender<switchyard_api::events::Commit>;

impl Compute {
    /// The service for the compute nodes of `topology`, reaching the
    /// networking API at `url`.
    pub fn new(hyp: VirtDriver, url: &str, topology: &Topology, opts: ComputeOptions) -> Self {
        let hosts = topology
            .nodes
            .iter()
            .filter_map(|n| {
                let backend = match n.role {
                    Role::Ovs => Backend::Ovs,
                    Role::Vrouter => Backend::Vrouter,
                    Role::Sriov => Backend::Sriov,
                    _ => return None,
                };
                Some((n, backend))
            })
            .enumerate()
            .map(|(i, (n, backend))| Host {
                id: u32::try_from(i + 1).unwrap_or(u32::MAX),
                uuid: uuid::Uuid::new_v4().to_string(),
                name: n.name.clone(),
                backend,
                vfs: n.vfs.unwrap_or(crate::agents::DEFAULT_VFS),
            })
            .collect();
        let inner = Inner {
            flavors: catalog::defaults(),
            ..Inner::default()
        };
        Compute {
            inner: Arc::new(Mutex::new(inner)),
            event_arrived: Arc::default(),
            hyp,
            neutron: Neutron::new(url, opts.service_token.clone()),
            hosts: Arc::new(hosts),
            opts: Arc::new(opts),
            started: now_string(),
            records: None,
            stream: Arc::default(),
        }
    }

    /// Keeps servers and flavors in the database at `db` from now on, and
    /// takes back what an earlier service kept there ([`Compute::resume`]
    /// brings those servers' guests back).
    pub fn with_records(mut self, db: &std::path::Path) -> Result<Self, String> {
        let r = persist::Records::open(db).map_err(|e| e.to_string())?;
        let (servers, flavors) = r
            .load()
            .map_err(|e| format!("reading compute records in {}: {e}", db.display()))?;
        {
            let mut inner = self.inner();
            if let Some(f) = flavors {
                inner.flavors = f;
            }
            for s in servers {
                inner.next_seq = inner.next_seq.max(s.seq);
                inner.servers.insert(s.id.clone(), s);
            }
        }
        self.records = Some(Arc::new(r));
        Ok(self)
    }

    /// Publishes this service's changes on `events` from now on (the API's
    /// commit stream; an API served again brings its own).
    pub fn publish_to(&self, events: EventSender) {
        *lock(&self.stream) = Some(events);
    }

    /// Tells the commit stream that `kind` `id` changed (when anyone
    /// listens).
    fn announce(&self, kind: &'static str, id: &str, op: &'static str, project: Option<String>) {
        if let Some(tx) = lock(&self.stream).as_ref()
            && tx.receiver_count() > 0
        {
            let _ = tx.send(Arc::new(vec![switchyard_api::events::Changed {
                kind,
                id: id.to_string(),
                op,
                project,
            }]));
        }
    }

    /// Keeps server `id` as it is now (or its absence), and announces it.
    fn save(&self, id: &str) {
        let s = self.inner().servers.get(id).cloned();
        if let Some(s) = &s {
            self.announce("server", id, "put", Some(s.project_id.clone()));
        }
        let Some(r) = &self.records else { return };
        match s {
            Some(s) => r.save_server(&s),
            None => r.delete_server(id),
        }
    }

    /// Where server `id` is (or was, if deleted lately) in the lists: its
    /// creation order.
    pub fn list_position(&self, id: &str) -> Option<u64> {
        let inner = self.inner();
        inner.servers.get(id).map(|s| s.seq).or_else(|| {
            inner
                .gone
                .iter()
                .find(|(g, _)| g == id)
                .map(|(_, seq)| *seq)
        })
    }

    /// Forgets server `id`, and announces it.
    fn remove(&self, id: &str) {
        let gone = {
            let mut inner = self.inner();
            let gone = inner.servers.remove(id);
            if let Some(s) = &gone {
                inner.gone.push_back((s.id.clone(), s.seq));
                if inner.gone.len() > GONE_KEPT {
                    inner.gone.pop_front();
                }
            }
            gone
        };
        self.save(id);
        if let Some(s) = gone {
            self.announce("server", id, "delete", Some(s.project_id));
        }
    }

    fn save_flavors(&self) {
        if let Some(r) = &self.records {
            let all = self.inner().flavors.clone();
            r.save_flavors(&all);
        }
    }

    /// After a restart, settles the servers an earlier service kept, as
    /// Nova's compute service does at start with
    /// `resume_guests_state_on_host_boot`: one that was building is put in
    /// `ERROR` (its ports released); one that ran is plugged again on its
    /// host, with its ports and guest names, and is `ACTIVE` once their
    /// `network-vif-plugged` events arrive (`ERROR`, with the reason, if
    /// not). Returns how many came back `ACTIVE`.
    pub async fn resume(&self) -> usize {
        let kept: Vec<Server> = self.inner().servers.values().cloned().collect();
        let mut back = 0;
        for s in kept {
            match (s.status, s.host.clone()) {
                (Status::Build, _) => {
                    self.finish_build(
                        &s.id,
                        Err("The compute service restarted while the server was building.".into()),
                    )
                    .await;
                }
                (Status::Active | Status::Migrating, Some(host)) => {
                    // Still ACTIVE while it powers on: a second restart
                    // meanwhile resumes it again (a BUILD would be torn down).
                    self.update(&s.id, |x| {
                        x.status = Status::Active;
                        x.task_state = Some("powering-on");
                    });
                    let r = self.replug(&s, &host).await;
                    if let Err(e) = &r {
                        tracing::warn!(server = %s.id, error = %e, "server not resumed");
                    }
                    back += usize::from(r.is_ok());
                    self.update(&s.id, |x| {
                        x.task_state = None;
                        match r {
                            Ok(()) => x.status = Status::Active,
                            Err(message) => {
                                x.status = Status::Error;
                                x.fault = Some(Fault {
                                    code: 500,
                                    message,
                                    created: now_string(),
                                });
                            }
                        }
                    });
                }
                _ => {}
            }
        }
        back
    }

    /// Plugs a kept server's guests again on `host`.
    async fn replug(&self, s: &Server, host: &str) -> Result<(), String> {
        let mark = self.event_mark();
        let mut vifs = Vec::new();
        for (i, v) in s.vifs.iter().enumerate() {
            let port = self.neutron.show_port(&v.port_id).await.map_err(|e| {
                format!(
                    "resuming after a restart: port {}: {}",
                    v.port_id, e.message
                )
            })?;
            let guest = if v.guest.is_empty() {
                self.guest_name(&s.id, &s.name, i)
            } else {
                v.guest.clone()
            };
            let vif = self.vif_of(&port, v.created, guest.clone()).await;
            let mac = parse_mac(&vif.mac).ok_or("the port has no valid MAC address")?;
            self.hyp
                .plug(
                    &guest,
                    &vif.port_id,
                    host,
                    mac,
                    self.opts.vif_plugging_timeout,
                )
                .await
                .map_err(|e| format!("resuming after a restart: {e}"))?;
            self.check_device(host, &vif).await?;
            vifs.push(vif);
        }
        self.update(&s.id, |x| x.vifs = vifs);
        for v in &s.vifs {
            self.wait_vif_plugged(&s.id, &v.port_id, mark).await?;
        }
        Ok(())
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// When this service started (the guest image's creation time).
    pub fn started(&self) -> String {
        self.started.clone()
    }

    /// `project`'s Nova quota limits (`cores`, `instances`, `ram`).
    pub fn quota(&self, project: &str) -> BTreeMap<String, i64> {
        let inner = self.inner();
        NOVA_QUOTAS
            .iter()
            .map(|(k, d)| {
                let v = inner
                    .quotas
                    .get(project)
                    .and_then(|q| q.get(*k))
                    .copied()
                    .unwrap_or(*d);
                (k.to_string(), v)
            })
            .collect()
    }

    /// What `project`'s servers use of each quota resource.
    pub fn quota_usage(&self, project: &str) -> BTreeMap<String, i64> {
        let inner = self.inner();
        Self::usage_of(&inner, project)
    }

    fn usage_of(inner: &Inner, project: &str) -> BTreeMap<String, i64> {
        let (mut n, mut cores, mut ram) = (0i64, 0i64, 0i64);
        for s in inner.servers.values().filter(|s| s.project_id == project) {
            n += 1;
            let (c, r) = s.flavor.as_ref().map_or((1, 64), |f| (f.vcpus, f.ram));
            cores += i64::from(c);
            ram += i64::from(r);
        }
        [("cores", cores), ("instances", n), ("ram", ram)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    /// Sets `project`'s limits (an admin's act); `-1` is unlimited.
    pub fn set_quota(&self, project: &str, limits: BTreeMap<String, i64>) {
        let mut inner = self.inner();
        let q = inner.quotas.entry(project.to_string()).or_default();
        q.extend(limits);
    }

    pub fn flavors(&self) -> Vec<catalog::Flavor> {
        self.inner().flavors.clone()
    }

    pub fn flavor(&self, id: &str) -> Result<catalog::Flavor, ComputeError> {
        self.inner()
            .flavors
            .iter()
            .find(|f| f.id == id)
            .cloned()
            .ok_or_else(|| ComputeError::NotFound(format!("Flavor {id} could not be found.")))
    }

    /// Adds a flavor (an admin's act): a name and id not taken.
    pub fn create_flavor(&self, f: catalog::Flavor) -> Result<catalog::Flavor, ComputeError> {
        let mut inner = self.inner();
        if inner.flavors.iter().any(|x| x.name == f.name) {
            return Err(ComputeError::Conflict(format!(
                "Flavor with name {} already exists.",
                f.name
            )));
        }
        if inner.flavors.iter().any(|x| x.id == f.id) {
            return Err(ComputeError::Conflict(format!(
                "Flavor with ID {} already exists.",
                f.id
            )));
        }
        inner.flavors.push(f.clone());
        drop(inner);
        self.save_flavors();
        Ok(f)
    }

    pub fn delete_flavor(&self, id: &str) -> Result<(), ComputeError> {
        let mut inner = self.inner();
        let before = inner.flavors.len();
        inner.flavors.retain(|f| f.id != id);
        if inner.flavors.len() == before {
            return Err(ComputeError::NotFound(format!(
                "Flavor {id} could not be found."
            )));
        }
        drop(inner);
        self.save_flavors();
        Ok(())
    }

    /// `os-server-external-events`: records each event for a server this
    /// service has and answers its code (`200`, or `404` for an unknown
    /// server), as Nova does.
    pub fn external_events(&self, events: Vec<ExternalEvent>) -> Vec<u16> {
        let codes = {
            let mut inner = self.inner();
            let mut codes = Vec::with_capacity(events.len());
            for e in events {
                if inner.servers.contains_key(&e.server_uuid) {
                    if e.name == "network-changed" {
                        // Nova refreshes the server's network info cache.
                        let (c, server, port) =
                            (self.clone(), e.server_uuid.clone(), e.tag.clone());
                        tokio::spawn(async move { c.refresh_vif(&server, &port).await });
                    }
                    tracing::debug!(server = %e.server_uuid, event = %e.name, tag = %e.tag, status = %e.status, "external event");
                    if inner.events.len() >= EVENTS_KEPT {
                        inner.events.pop_front();
                    }
                    inner.event_seq += 1;
                    let n = inner.event_seq;
                    inner.events.push_back((n, e));
                    codes.push(200);
                } else {
                    codes.push(404);
                }
            }
            codes
        };
        self.event_arrived.notify_waiters();
        codes
    }

    /// Re-reads one VIF of a server from the networking API (its addresses,
    /// floating IPs, binding), as Nova's `network-changed` handling does.
    async fn refresh_vif(&self, server: &str, port_id: &str) {
        let old = self.inner().servers.get(server).and_then(|s| {
            s.vifs
                .iter()
                .find(|v| v.port_id == port_id)
                .map(|v| (v.created, v.guest.clone()))
        });
        let Some((created, guest)) = old else { return };
        let Ok(p) = self.neutron.show_port(port_id).await else {
            return;
        };
        let fresh = self.vif_of(&p, created, guest).await;
        self.update(server, |s| {
            if let Some(v) = s.vifs.iter_mut().find(|v| v.port_id == port_id) {
                *v = fresh;
            }
        });
    }

    /// The number of the last event received: a wait from here on sees only
    /// events that come after it.
    fn event_mark(&self) -> u64 {
        self.inner().event_seq
    }

    /// Nova's wait for `network-vif-plugged` of `port_id` on server `id`
    /// (within `vif_plugging_timeout`), received after event `after`: the
    /// event, not the port's status.
    async fn wait_vif_plugged(&self, id: &str, port_id: &str, after: u64) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.opts.vif_plugging_timeout;
        loop {
            let arrived = self.event_arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let seen = self
                .inner()
                .events
                .iter()
                .rev()
                .take_while(|(n, _)| *n > after)
                .find(|(_, e)| {
                    e.server_uuid == id && e.tag == port_id && e.name == "network-vif-plugged"
                })
                .map(|(_, e)| e.status.clone());
            match seen.as_deref() {
                Some("completed") => return Ok(()),
                Some(other) => {
                    return Err(format!(
                        "Virtual Interface creation failed: network-vif-plugged for port {port_id} is {other}"
                    ));
                }
                None => {}
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Err(format!(
                    "Virtual Interface creation failed: no network-vif-plugged event for port {port_id} within {} s",
                    self.opts.vif_plugging_timeout.as_secs()
                ));
            }
        }
    }

    /// What runs the guests (`hypervisor_type`).
    pub fn driver_kind(&self) -> &'static str {
        self.hyp.kind()
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn server(&self, id: &str) -> Result<Server, ComputeError> {
        self.inner()
            .servers
            .get(id)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    /// The security group names each server's ports are in (Nova's
    /// `security_groups` in server views), asked of the networking API as
    /// Nova asks it: ports by device, then the groups' names in the
    /// server's project. `servers`: (id, project id).
    pub async fn security_group_names(
        &self,
        servers: &[(&str, &str)],
    ) -> Result<std::collections::HashMap<String, Vec<String>>, ComputeError> {
        self.neutron
            .security_group_names_by_device(servers)
            .await
            .map_err(|e| neutron_error(&e))
    }

    pub fn servers(&self) -> Vec<Server> {
        let mut v: Vec<Server> = self.inner().servers.values().cloned().collect();
        // Newest first, as Nova lists.
        v.sort_by_key(|s| std::cmp::Reverse(s.seq));
        v
    }

    pub fn migrations(&self) -> Vec<Migration> {
        self.inner().migrations.clone()
    }

    /// Instances on `host`, and how many VFs they use: this service's
    /// servers (not in ERROR) and guests booted through the lab's own guest
    /// API, which use the host as much (on an SR-IOV host, a VF each).
    fn load(&self, inner: &Inner, host: &str) -> (u32, u32) {
        let mut n = 0;
        let mut vfs = 0;
        for s in inner.servers.values() {
            if s.host.as_deref() == Some(host) && s.status != Status::Error {
                n += 1;
                vfs += s.vifs.iter().filter(|v| v.vnic_type == "direct").count() as u32;
            }
        }
        let sriov = self.host(host).is_some_and(|h| h.backend == Backend::Sriov);
        for g in self.hyp.guests() {
            let ours = inner
                .servers
                .values()
                .any(|s| s.vifs.iter().any(|v| v.guest == g.name));
            if !ours && g.host.as_deref() == Some(host) {
                n += 1;
                vfs += u32::from(sriov);
            }
        }
        (n, vfs)
    }

    /// Instances a host runs at most (its `vcpus`).
    pub fn capacity(&self) -> u32 {
        self.opts.instances_per_host
    }

    /// Running instances and VFs in use on `host` (for the hypervisor view).
    pub fn usage(&self, host: &str) -> (u32, u32) {
        self.load(&self.inner(), host)
    }

    /// Why `host` cannot take an instance with these vnic types, if it cannot.
    /// `by_vnic`: also refuse hosts whose networking cannot plug the vnic
    /// types (the scheduler's filter; a host named by the caller is left to
    /// the binding, which then fails clearly).
    fn unfit(&self, inner: &Inner, host: &Host, vnics: &[String], by_vnic: bool) -> Option<String> {
        if let Some(v) = vnics.iter().find(|v| by_vnic && !host.backend.takes(v)) {
            return Some(format!(
                "host {} ({} networking) cannot plug a port of binding:vnic_type {v}",
                host.name,
                host.backend.as_str()
            ));
        }
        let (n, vfs) = self.load(inner, &host.name);
        if n >= self.opts.instances_per_host {
            return Some(format!("host {} runs {n} instances, its limit", host.name));
        }
        let want = vnics.iter().filter(|v| *v == "direct").count() as u32;
        if host.backend == Backend::Sriov && want > 0 && vfs + want > host.vfs {
            return Some(format!(
                "host {} has {} free VFs, {want} needed",
                host.name,
                host.vfs.saturating_sub(vfs)
            ));
        }
        None
    }

    /// Where server `id` could live-migrate: every host, whether it would
    /// take the instance and, when not, why (the host it runs on, a backend
    /// that cannot plug one of its ports' vnic types, no capacity or free
    /// VFs, a networking agent that is not alive). What the migration's
    /// pre-checks and the destination's binding decide, asked ahead; the
    /// binding itself still decides when the migration runs.
    pub async fn destinations(&self, id: &str) -> Result<Vec<Destination>, ComputeError> {
        let mut out = {
            let inner = self.inner();
            let s = inner.servers.get(id).ok_or_else(|| not_found(id))?;
            let vnics: Vec<String> = s.vifs.iter().map(|v| v.vnic_type.clone()).collect();
            self.hosts
                .iter()
                .map(|h| {
                    let (instances, _) = self.load(&inner, &h.name);
                    let reason = if s.host.as_deref() == Some(h.name.as_str()) {
                        Some(format!("the instance runs on {}", h.name))
                    } else {
                        self.unfit(&inner, h, &vnics, true)
                    };
                    Destination {
                        host: h.name.clone(),
                        backend: h.backend.as_str(),
                        instances,
                        capacity: self.opts.instances_per_host,
                        reason,
                    }
                })
                .collect::<Vec<_>>()
        };
        for d in out.iter_mut().filter(|d| d.reason.is_none()) {
            d.reason = match self.neutron.agent_alive(&d.host).await {
                Ok(true) => None,
                Ok(false) => Some(format!("the networking agent on {} is not alive", d.host)),
                Err(e) => Some(format!("the networking API did not answer: {}", e.message)),
            };
        }
        Ok(out)
    }

    /// The scheduler: the least-loaded host that fits, other than `except`.
    fn pick_host(
        &self,
        inner: &Inner,
        vnics: &[String],
        except: Option<&str>,
    ) -> Result<String, String> {
        let mut reasons = Vec::new();
        let mut best: Option<(u32, &Host)> = None;
        for h in self.hosts.iter() {
            if Some(h.name.as_str()) == except {
                continue;
            }
            if let Some(r) = self.unfit(inner, h, vnics, true) {
                reasons.push(r);
                continue;
            }
            let (n, _) = self.load(inner, &h.name);
            if best.is_none_or(|(m, _)| n < m) {
                best = Some((n, h));
            }
        }
        best.map(|(_, h)| h.name.clone()).ok_or_else(|| {
            format!(
                "No valid host was found. There are not enough hosts available. ({})",
                reasons.join("; ")
            )
        })
    }

    /// `POST /servers`: validates the request, records the server in
    /// `BUILD` and builds it in the background. Returns the server id.
    pub async fn boot(&self, req: BootRequest) -> Result<String, ComputeError> {
        if let Some(h) = &req.host
            && self.host(h).is_none()
        {
            return Err(ComputeError::BadRequest(format!(
                "Compute host {h} could not be found."
            )));
        }
        let last = |r: &str| {
            r.trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string()
        };
        let flavor = match &req.flavor {
            None => None,
            Some(r) => Some(self.flavor(&last(r)).map_err(|_| {
                ComputeError::BadRequest(format!("Flavor {} could not be found.", last(r)))
            })?),
        };
        let image = match &req.image {
            None => None,
            Some(r) if r.is_empty() => None,
            Some(r) if last(r) == catalog::GUEST_IMAGE_ID => Some(last(r)),
            Some(r) => {
                return Err(ComputeError::BadRequest(format!(
                    "Image {} could not be found.",
                    last(r)
                )));
            }
        };
        // Security groups by name or id in the server's project, as Nova
        // resolves them before accepting.
        let mut req = req;
        if !req.security_groups.is_empty() {
            let known = self
                .neutron
                .security_groups_of(&req.project_id)
                .await
                .map_err(|e| neutron_error(&e))?;
            let mut ids = Vec::new();
            for want in &req.security_groups {
                let found: Vec<&String> = known
                    .iter()
                    .filter(|(id, name)| id == want || name == want)
                    .map(|(id, _)| id)
                    .collect();
                match found.as_slice() {
                    [one] => ids.push((*one).clone()),
                    [] => {
                        return Err(ComputeError::BadRequest(format!(
                            "Security group {want} not found."
                        )));
                    }
                    _ => {
                        return Err(ComputeError::Conflict(format!(
                            "Multiple security groups found matching '{want}'. Use an ID to be more specific."
                        )));
                    }
                }
            }
            ids.dedup();
            req.security_groups = ids;
        }
        // What Nova's API checks before accepting: networks and ports exist,
        // ports are free; their vnic types steer the scheduler.
        let mut vnics = Vec::new();
        for n in &req.networks {
            match n {
                NetRequest::Network { id, .. } => {
                    self.neutron.show_network(id).await.map_err(|e| {
                        if e.status == 404 {
                            ComputeError::BadRequest(format!("Network {id} could not be found."))
                        } else {
                            neutron_error(&e)
                        }
                    })?;
                    vnics.push("normal".to_string());
                }
                NetRequest::Port(id) => {
                    let p = self.neutron.show_port(id).await.map_err(|e| {
                        if e.status == 404 {
                            ComputeError::BadRequest(format!("Port id {id} could not be found."))
                        } else {
                            neutron_error(&e)
                        }
                    })?;
                    // In use: claimed by a device, or a guest booted on it
                    // through the lab's guest API.
                    let guest_on_it = self
                        .hyp
                        .guests()
                        .iter()
                        .any(|g| g.port_id.as_deref() == Some(id.as_str()));
                    if guest_on_it
                        || p.get("device_id")
                            .and_then(Value::as_str)
                            .is_some_and(|d| !d.is_empty())
                    {
                        return Err(ComputeError::Conflict(format!(
                            "Port {id} is still in use."
                        )));
                    }
                    vnics.push(
                        p.get("binding:vnic_type")
                            .and_then(Value::as_str)
                            .unwrap_or("normal")
                            .to_string(),
                    );
                }
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_string();
        let host = {
            let mut inner = self.inner();
            for n in &req.networks {
                if let NetRequest::Port(p) = n
                    && Self::port_user(&inner, p).is_some()
                {
                    return Err(ComputeError::Conflict(format!("Port {p} is still in use.")));
                }
            }
            // Nova's quota check, under the same lock as the claim.
            let used = Self::usage_of(&inner, &req.project_id);
            let (c, r) = flavor.as_ref().map_or((1, 64), |f| (f.vcpus, f.ram));
            for (k, want) in [
                ("cores", i64::from(c)),
                ("instances", 1),
                ("ram", i64::from(r)),
            ] {
                let limit = inner
                    .quotas
                    .get(&req.project_id)
                    .and_then(|q| q.get(k))
                    .copied()
                    .or_else(|| NOVA_QUOTAS.iter().find(|(n, _)| *n == k).map(|(_, d)| *d))
                    .unwrap_or(-1);
                let have = used.get(k).copied().unwrap_or(0);
                if limit >= 0 && have + want > limit {
                    return Err(ComputeError::OverQuota(format!(
                        "Quota exceeded for {k}: Requested {want}, but already used {have} of {limit} {k}"
                    )));
                }
            }
            let host = match &req.host {
                // A host named by the caller skips the scheduler's filters
                // (as Nova's forced host): the binding decides.
                Some(h) => match self
                    .host(h)
                    .and_then(|h| self.unfit(&inner, h, &vnics, false))
                {
                    None => Ok(h.clone()),
                    Some(r) => Err(format!(
                        "No valid host was found. There are not enough hosts available. ({r})"
                    )),
                },
                None => self.pick_host(&inner, &vnics, None),
            };
            inner.next_seq += 1;
            let seq = inner.next_seq;
            inner.servers.insert(
                id.clone(),
                Server {
                    id: id.clone(),
                    name: req.name.clone(),
                    project_id: req.project_id.clone(),
                    user_id: req.user_id.clone(),
                    status: Status::Build,
                    task_state: Some("spawning"),
                    host: host.as_ref().ok().cloned(),
                    vifs: Vec::new(),
                    created: now.clone(),
                    updated: now,
                    fault: None,
                    flavor: flavor.clone(),
                    image: image.clone(),
                    actions: vec![InstanceAction::new("create", &req.project_id, &req.user_id)],
                    deleting: false,
                    seq,
                },
            );
            host
        };
        self.save(&id);
        let this = self.clone();
        let sid = id.clone();
        tokio::spawn(async move {
            let r = match host {
                Ok(host) => this.build(&sid, &host, &req).await,
                Err(no_host) => Err(no_host),
            };
            this.finish_build(&sid, r).await;
        });
        Ok(id)
    }

    /// The server a port is attached to in this service.
    fn port_user<'a>(inner: &'a Inner, port_id: &str) -> Option<&'a Server> {
        inner
            .servers
            .values()
            .find(|s| s.vifs.iter().any(|v| v.port_id == port_id))
    }

    /// A guest name for VIF `index` of server `name`: the server's name (with
    /// `.ethN` after the first NIC) when that is a free, valid lab name.
    fn guest_name(&self, id: &str, name: &str, index: usize) -> String {
        let suffix = if index == 0 {
            String::new()
        } else {
            format!(".eth{index}")
        };
        let wanted = format!("{name}{suffix}");
        if valid_guest_name(&wanted) && self.hyp.guest(&wanted).is_err() {
            return wanted;
        }
        format!("instance-{}{suffix}", &id[..8.min(id.len())])
    }

    /// Builds a server on `host`; the error is the fault message.
    async fn build(&self, id: &str, host: &str, req: &BootRequest) -> Result<(), String> {
        let mark = self.event_mark();
        for (i, n) in req.networks.iter().enumerate() {
            if self.server(id).map(|s| s.deleting).unwrap_or(true) {
                return Err("deleted while building".into());
            }
            let port = match n {
                NetRequest::Network { id: net, fixed_ip } => {
                    let mut body = json!({
                        "network_id": net,
                        "device_id": id,
                        "device_owner": "compute:nova",
                        "binding:host_id": host,
                        "project_id": req.project_id,
                    });
                    if let Some(ip) = fixed_ip {
                        body["fixed_ips"] = json!([{ "ip_address": ip }]);
                    }
                    // Nova puts the requested groups on the ports it makes
                    // (a port given by the user keeps its own).
                    if !req.security_groups.is_empty() {
                        body["security_groups"] = json!(req.security_groups);
                    }
                    self.neutron.create_port(body).await
                }
                NetRequest::Port(p) => {
                    self.neutron
                        .update_port(
                            p,
                            json!({"device_id": id, "device_owner": "compute:nova", "binding:host_id": host}),
                        )
                        .await
                }
            }
            .map_err(|e| e.message.clone())?;
            let vif = self
                .vif_of(
                    &port,
                    matches!(n, NetRequest::Network { .. }),
                    String::new(),
                )
                .await;
            // Recorded before anything can fail, so a failure cleans it up.
            self.update(id, |s| s.vifs.push(vif.clone()));
            if vif.vif_type == "binding_failed" || vif.vif_type == "unbound" {
                return Err(format!(
                    "Binding failed for port {}, please check neutron logs for more information.",
                    vif.port_id
                ));
            }
            let name = self.guest_name(id, &req.name, i);
            let mac = parse_mac(&vif.mac).ok_or("the port has no valid MAC address")?;
            self.hyp
                .plug(
                    &name,
                    &vif.port_id,
                    host,
                    mac,
                    self.opts.vif_plugging_timeout,
                )
                .await
                .map_err(|e| format!("Virtual Interface creation failed: {e}"))?;
            // The VIF must be what the binding says (Nova plugs by vif_type).
            self.check_device(host, &vif).await?;
            self.update(id, |s| {
                if let Some(v) = s.vifs.iter_mut().find(|v| v.port_id == vif.port_id) {
                    v.guest = name.clone();
                }
            });
        }
        // Nova waits for the networking service's network-vif-plugged
        // event of every port (sent when the port goes ACTIVE).
        let ports: Vec<String> = self
            .server(id)
            .map(|s| s.vifs.iter().map(|v| v.port_id.clone()).collect())
            .unwrap_or_default();
        for p in ports {
            self.wait_vif_plugged(id, &p, mark).await?;
        }
        Ok(())
    }

    /// The device the host's agent made for a VIF matches its binding: the
    /// same `vif_type` (an OVS port, a vRouter interface, a VF) and, for a
    /// VF, the VLAN the binding's `vif_details.vlan` names.
    async fn check_device(&self, host: &str, vif: &Vif) -> Result<(), String> {
        let dev = self.hyp.device(host, &vif.port_id).await.ok_or_else(|| {
            format!(
                "Virtual Interface creation failed: host {host} has no device for port {}",
                vif.port_id
            )
        })?;
        if dev.vif_type != vif.vif_type {
            return Err(format!(
                "Virtual Interface creation failed: port {} is bound as vif_type {} but host {host} \
                 plugged it as {}",
                vif.port_id, vif.vif_type, dev.vif_type
            ));
        }
        if vif.vif_type == "hw_veb" {
            let want = vif.vif_details["vlan"]
                .as_str()
                .and_then(|v| v.parse::<u16>().ok());
            let got = dev.vlan.or(Some(0));
            if want != got {
                return Err(format!(
                    "Virtual Interface creation failed: port {} wants VLAN {:?} on its VF, \
                     host {host} set {:?}",
                    vif.port_id, want, got
                ));
            }
        }
        Ok(())
    }

    /// A VIF from a port as Neutron returns it.
    async fn vif_of(
        &self,
        port: &serde_json::Map<String, Value>,
        created: bool,
        guest: String,
    ) -> Vif {
        let s = |k: &str| {
            port.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let network_id = s("network_id");
        let network_name = match self.neutron.show_network(&network_id).await {
            Ok(n) => n
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or(&network_id)
                .to_string(),
            Err(_) => network_id.clone(),
        };
        Vif {
            port_id: s("id"),
            network_id,
            network_name,
            mac: s("mac_address"),
            ips: fixed_ips(port),
            floating_ips: self
                .neutron
                .floating_ips_of(&s("id"))
                .await
                .unwrap_or_default(),
            vnic_type: s("binding:vnic_type"),
            vif_type: s("binding:vif_type"),
            vif_details: port
                .get("binding:vif_details")
                .cloned()
                .unwrap_or_else(|| json!({})),
            profile: port
                .get("binding:profile")
                .cloned()
                .unwrap_or_else(|| json!({})),
            guest,
            created,
        }
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Server)) {
        if let Some(s) = self.inner().servers.get_mut(id) {
            f(s);
            s.updated = now_string();
        }
        self.save(id);
    }

    async fn finish_build(&self, id: &str, r: Result<(), String>) {
        let deleting = self.server(id).map(|s| s.deleting).unwrap_or(true);
        match r {
            Ok(()) if !deleting => {
                self.update(id, |s| {
                    s.status = Status::Active;
                    s.task_state = None;
                });
                tracing::info!(server = %id, "server ACTIVE");
            }
            r => {
                // Nothing of a failed (or deleted) build stays in the network.
                self.teardown(id).await;
                if deleting {
                    self.remove(id);
                    return;
                }
                let message = r.err().unwrap_or_default();
                tracing::warn!(server = %id, %message, "build failed");
                self.update(id, |s| {
                    s.status = Status::Error;
                    s.task_state = None;
                    if let Some(a) = s.actions.first_mut() {
                        a.message = Some("Error".into());
                    }
                    // As Nova: a build that failed is on no host.
                    s.host = None;
                    s.vifs.clear();
                    s.fault = Some(Fault {
                        code: 500,
                        message,
                        created: now_string(),
                    });
                });
            }
        }
    }

    /// Unplugs a server's guests and releases its ports (deleting those Nova
    /// created, unbinding those it was given).
    async fn teardown(&self, id: &str) {
        let Ok(s) = self.server(id) else { return };
        for v in &s.vifs {
            if !v.guest.is_empty() {
                let _ = self.hyp.unplug(&v.guest);
            }
            let r = if v.created {
                self.neutron.delete_port(&v.port_id).await
            } else {
                self.neutron
                    .update_port(
                        &v.port_id,
                        json!({"device_id": "", "device_owner": "", "binding:host_id": ""}),
                    )
                    .await
                    .map(|_| ())
            };
            if let Err(e) = r {
                tracing::warn!(server = %id, port = %v.port_id, error = %e, "releasing a port failed");
            }
        }
    }

    /// `DELETE /servers/{id}`.
    pub async fn delete(&self, id: &str) -> Result<(), ComputeError> {
        {
            let mut inner = self.inner();
            let s = inner.servers.get_mut(id).ok_or_else(|| not_found(id))?;
            match s.status {
                Status::Migrating => {
                    return Err(ComputeError::Conflict(format!(
                        "Cannot 'delete' instance {id} while it is in task_state migrating"
                    )));
                }
                Status::Build => {
                    // The build notices and tears down what it made.
                    s.deleting = true;
                    s.task_state = Some("deleting");
                    let project = s.project_id.clone();
                    drop(inner);
                    self.announce("server", id, "put", Some(project));
                    return Ok(());
                }
                Status::Active | Status::Error => {
                    if s.task_state == Some("deleting") {
                        return Ok(());
                    }
                    s.task_state = Some("deleting");
                }
            }
        }
        self.teardown(id).await;
        self.remove(id);
        Ok(())
    }

    /// `os-migrateLive`: prechecks and destination bindings now; the move in
    /// the background. Returns the migration id.
    pub async fn live_migrate(
        &self,
        id: &str,
        dest: Option<&str>,
        user_id: &str,
    ) -> Result<u64, ComputeError> {
        let (server, dest, migration_id) = {
            let mut inner = self.inner();
            let s = inner.servers.get(id).ok_or_else(|| not_found(id))?.clone();
            if s.status != Status::Active || s.task_state.is_some() {
                let (attr, state) = match s.task_state {
                    Some(t) => ("task_state", t),
                    None => ("vm_state", vm_state(s.status)),
                };
                return Err(ComputeError::Conflict(format!(
                    "Cannot 'os-migrateLive' instance {id} while it is in {attr} {state}"
                )));
            }
            let source = s.host.clone().unwrap_or_default();
            let vnics: Vec<String> = s.vifs.iter().map(|v| v.vnic_type.clone()).collect();
            let dest = match dest {
                Some(d) => {
                    let h = self.host(d).ok_or_else(|| {
                        ComputeError::BadRequest(format!("Compute host {d} could not be found."))
                    })?;
                    if d == source {
                        return Err(ComputeError::BadRequest(format!(
                            "Unable to migrate instance ({id}) to current host ({source})."
                        )));
                    }
                    if let Some(r) = self.unfit(&inner, h, &vnics, false) {
                        return Err(ComputeError::BadRequest(format!(
                            "Migration pre-check error: {r}"
                        )));
                    }
                    d.to_string()
                }
                None => self
                    .pick_host(&inner, &vnics, Some(&source))
                    .map_err(ComputeError::BadRequest)?,
            };
            // Claimed now: a second request sees the task state and gets 409.
            if let Some(s) = inner.servers.get_mut(id) {
                s.status = Status::Migrating;
                s.task_state = Some("migrating");
                s.updated = now_string();
                let project = s.project_id.clone();
                s.actions
                    .push(InstanceAction::new("live-migration", &project, user_id));
            }
            let mid = inner.migrations.len() as u64 + 1;
            let now = now_string();
            inner.migrations.push(Migration {
                id: mid,
                uuid: uuid::Uuid::new_v4().to_string(),
                instance_uuid: id.to_string(),
                source,
                dest: dest.clone(),
                status: "preparing",
                error: None,
                steps: Vec::new(),
                created: now.clone(),
                updated: now,
            });
            (s, dest, mid)
        };
        self.announce("server", id, "put", Some(server.project_id.clone()));
        self.announce("migration", &migration_id.to_string(), "put", None);
        // The conductor's step: a binding on the destination for every VIF.
        let mut made: Vec<&Vif> = Vec::new();
        let mut targets: Vec<Vif> = Vec::new();
        let mut failure = None;
        for v in &server.vifs {
            match self
                .neutron
                .create_binding(&v.port_id, &dest, &v.vnic_type, &v.profile)
                .await
            {
                Ok(b) if b.get("vif_type").and_then(Value::as_str) != Some("binding_failed") => {
                    made.push(v);
                    // What the destination must plug: the new binding's VIF.
                    let mut t = v.clone();
                    t.vif_type = b
                        .get("vif_type")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    t.vif_details = b.get("vif_details").cloned().unwrap_or_else(|| json!({}));
                    targets.push(t);
                }
                Ok(_) => {
                    made.push(v);
                    failure = Some(format!(
                        "Binding failed for port {} on host {dest}: {}",
                        v.port_id,
                        self.why_unbindable(&dest, &v.vnic_type, None).await
                    ));
                    break;
                }
                Err(e) => {
                    failure = Some(format!(
                        "Binding failed for port {} on host {dest}: {}",
                        v.port_id,
                        self.why_unbindable(&dest, &v.vnic_type, Some(&e)).await
                    ));
                    break;
                }
            }
        }
        if let Some(why) = failure {
            for v in made {
                let _ = self.neutron.delete_binding(&v.port_id, &dest).await;
            }
            let message = format!("Migration pre-check error: {why}");
            self.end_migration(id, migration_id, Err(message.clone()), None);
            return Err(ComputeError::BadRequest(message));
        }
        self.step_done(migration_id, MIGRATION_STEPS[0]);
        let this = self.clone();
        let (sid, d) = (id.to_string(), dest.clone());
        tokio::spawn(async move {
            let r = this
                .migrate_running(&server, &targets, &d, migration_id)
                .await;
            let new_host = r.is_ok().then_some(d.as_str());
            this.end_migration(&sid, migration_id, r, new_host);
        });
        Ok(migration_id)
    }

    /// Why a port of `vnic_type` does not bind on `host`, in an operator's
    /// terms where it can be told, else Neutron's own message.
    async fn why_unbindable(
        &self,
        host: &str,
        vnic_type: &str,
        neutron: Option<&NeutronFailure>,
    ) -> String {
        if let Some(h) = self.host(host)
            && !h.backend.takes(vnic_type)
        {
            return format!(
                "binding:vnic_type {vnic_type} cannot be bound on {host}, whose networking is {}",
                h.backend.as_str()
            );
        }
        if let Ok(false) = self.neutron.agent_alive(host).await {
            return format!("the networking agent on {host} is not alive");
        }
        match neutron {
            Some(e) => format!("networking API: {}", e.message),
            None => "binding:vif_type binding_failed".into(),
        }
    }

    /// Records that `step` (one of [`MIGRATION_STEPS`]) is done.
    fn step_done(&self, mid: u64, step: &'static str) {
        self.step_ended(mid, step, Vec::new());
    }

    /// Records that `step` ended, with what of it failed (nothing: done).
    fn step_ended(&self, mid: u64, step: &'static str, failures: Vec<String>) {
        debug_assert!(MIGRATION_STEPS.contains(&step));
        let error = (!failures.is_empty()).then(|| failures.join("; "));
        self.update_migration(mid, |m| {
            m.steps.push(MigrationStep {
                step,
                at: now_millis(),
                error,
            });
        });
    }

    fn set_migration(&self, mid: u64, status: &'static str, error: Option<String>) {
        self.update_migration(mid, |m| {
            m.status = status;
            m.error = error;
        });
    }

    /// Changes migration `mid` (its `updated` too), and announces it.
    fn update_migration(&self, mid: u64, f: impl FnOnce(&mut Migration)) {
        if let Some(m) = self.inner().migrations.iter_mut().find(|m| m.id == mid) {
            f(m);
            m.updated = now_string();
        }
        self.announce("migration", &mid.to_string(), "put", None);
    }

    fn end_migration(&self, id: &str, mid: u64, r: Result<(), String>, host: Option<&str>) {
        if r.is_err() {
            self.update(id, |s| {
                if let Some(a) = s
                    .actions
                    .iter_mut()
                    .rev()
                    .find(|a| a.action == "live-migration")
                {
                    a.message = Some("Error".into());
                }
            });
        }
        match &r {
            Ok(()) => self.set_migration(mid, "completed", None),
            Err(e) => {
                tracing::warn!(server = %id, error = %e, "live migration failed, rolled back");
                self.set_migration(mid, "error", Some(e.clone()));
            }
        }
        self.update(id, |s| {
            s.status = Status::Active;
            s.task_state = None;
            if let Some(h) = host {
                s.host = Some(h.to_string());
            }
        });
    }

    /// Pre-plug, move, activate, clean up the source. Rolls back (bindings on
    /// `dest` deleted, guests left on the source) on failure before activation.
    async fn migrate_running(
        &self,
        s: &Server,
        targets: &[Vif],
        dest: &str,
        mid: u64,
    ) -> Result<(), String> {
        let source = s.host.clone().unwrap_or_default();
        // pre_live_migration: every VIF plugged on the destination first,
        // as its new binding says.
        let mut devices = Vec::new();
        for (v, t) in s.vifs.iter().zip(targets) {
            let prepared = self
                .hyp
                .prepare_migration(&v.guest, dest, self.opts.vif_plugging_timeout)
                .await
                .map_err(|e| match e {
                    HypervisorError::NotPlugged { .. } => format!(
                        "pre-live-migration on {dest} failed: {e}; destination bindings deleted, \
                         the instance keeps running on {source}"
                    ),
                    e => format!("pre-live-migration on {dest} failed: {e}"),
                });
            let ready = match prepared {
                Ok(local) => self
                    .check_device(dest, t)
                    .await
                    .map(|()| local)
                    .map_err(|e| format!("pre-live-migration on {dest} failed: {e}")),
                Err(e) => Err(e),
            };
            match ready {
                Ok(local) => devices.push((v, local)),
                Err(why) => {
                    for v in &s.vifs {
                        self.hyp.abort_migration(&v.guest);
                        let _ = self.neutron.delete_binding(&v.port_id, dest).await;
                    }
                    return Err(why);
                }
            }
        }
        self.step_done(mid, MIGRATION_STEPS[1]);
        self.set_migration(mid, "running", None);
        // The memory copy converges and the guest runs on the destination.
        for (v, local) in &devices {
            if let Err(e) = self.hyp.complete_migration(&v.guest, dest, *local).await {
                // Nothing activated yet: put moved guests back and roll back.
                for (w, _) in &devices {
                    let timeout = self.opts.vif_plugging_timeout;
                    let _ = self.hyp.return_guest(&w.guest, &source, timeout).await;
                    let _ = self.neutron.delete_binding(&w.port_id, dest).await;
                }
                return Err(format!("moving the guest failed: {e}"));
            }
        }
        self.step_done(mid, MIGRATION_STEPS[2]);
        // migrate_instance_start: activate each destination binding.
        let mark = self.event_mark();
        let mut failures = Vec::new();
        for v in &s.vifs {
            if let Err(e) = self.neutron.activate_binding(&v.port_id, dest).await {
                // As Nova: logged; the guest already runs on the destination.
                tracing::warn!(port = %v.port_id, error = %e, "activating the destination binding");
                failures.push(format!("port {}: {}", v.port_id, e.message));
            }
        }
        self.step_ended(mid, MIGRATION_STEPS[3], failures);
        for v in &s.vifs {
            self.hyp.post_migration(&v.guest).await;
        }
        // post_live_migration: the source bindings go, the VIFs are refreshed.
        let mut failures = Vec::new();
        for v in &s.vifs {
            if let Err(e) = self.neutron.delete_binding(&v.port_id, &source).await {
                tracing::warn!(port = %v.port_id, error = %e, "deleting the source binding");
                failures.push(format!("port {}: {}", v.port_id, e.message));
            }
        }
        self.step_ended(mid, MIGRATION_STEPS[4], failures);
        let mut vifs = Vec::new();
        for v in &s.vifs {
            // The server is ACTIVE once its ports are, as after a boot: a
            // port that is not ACTIVE now is waited for by its event. The
            // guest already runs here, so a late port is logged, not undone.
            let port = self.neutron.show_port(&v.port_id).await;
            let up = port
                .as_ref()
                .is_ok_and(|p| p.get("status").and_then(Value::as_str) == Some("ACTIVE"));
            let port = if up {
                port
            } else {
                if let Err(e) = self.wait_vif_plugged(&s.id, &v.port_id, mark).await {
                    tracing::warn!(port = %v.port_id, error = %e, "port not ACTIVE after the migration");
                }
                self.neutron.show_port(&v.port_id).await
            };
            match port {
                Ok(p) => vifs.push(self.vif_of(&p, v.created, v.guest.clone()).await),
                Err(_) => vifs.push(v.clone()),
            }
        }
        self.update(&s.id, |s| s.vifs = vifs);
        Ok(())
    }
}

fn not_found(id: &str) -> ComputeError {
    ComputeError::NotFound(format!("Instance {id} could not be found."))
}

fn neutron_error(e: &NeutronFailure) -> ComputeError {
    ComputeError::Internal(format!("networking API: {}", e.message))
}

/// Nova's `OS-EXT-STS:vm_state` for a status.
pub fn vm_state(s: Status) -> &'static str {
    match s {
        Status::Build => "building",
        Status::Active | Status::Migrating => "active",
        Status::Error => "error",
    }
}

fn fixed_ips(port: &serde_json::Map<String, Value>) -> Vec<String> {
    port.get("fixed_ips")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.get("ip_address").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}
