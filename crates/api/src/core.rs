//! The single owner of the model: in-memory state + ML2 + durable store behind
//! one lock. Every write runs as one transaction: the operation mutates the
//! journaled state, the touched records are committed to SQLite, and only then
//! does the lock open again; any error (validation, allocation, disk) rolls the
//! state back, so readers never see half an operation and a crash never leaves one.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use switchyard_controller::{Compiler, Liveness};
use switchyard_ml2::{Ctx, Ml2};
use switchyard_model::{Change, NeutronError, Record, Result, State, Timestamp};
use switchyard_proto::{Delta, Role};
use switchyard_store::SqliteStore;

use crate::nodeauth::{NodeCredentials, RefusalLog};

/// Where time comes from (the edge): the system clock in production.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        // Whole seconds, like Neutron's timestamps.
        let n = chrono::Utc::now();
        chrono::DateTime::from_timestamp(n.timestamp(), 0).unwrap_or(n)
    }
}

pub struct Core {
    pub state: State,
    pub ml2: Ml2,
    /// When this controller started, and the latest heartbeat it found in
    /// the database then (about when the previous one stopped): while it has
    /// been up less than `agent_down_time`, agents are judged as if the time
    /// it was away had not passed, so a restart does not make every gateway
    /// look dead and move networks before the agents could report.
    started: Timestamp,
    resumed_from: Timestamp,
    /// Every node's desired state, kept up to date with each commit once the
    /// first full compile has caught up (see [`Shared::compile_in_background`]).
    pub compiler: Compiler,
    /// Until then: the changes committed since the records that compile
    /// reads were loaded, in commit order. `None` once caught up.
    backlog: Option<Vec<Change>>,
    /// The records and liveness the first full compile starts from, until
    /// its thread takes them.
    initial: Option<(Vec<Record>, Liveness)>,
    // The connection is not `Sync`; only writers (holding the write lock) use it.
    store: Mutex<SqliteStore>,
}

impl Core {
    pub fn open(
        ml2: Ml2,
        store: SqliteStore,
        now: Timestamp,
    ) -> std::result::Result<Self, switchyard_store::StoreError> {
        let records = store.load()?;
        let state = State::from_records(records.iter().cloned());
        let resumed_from = state
            .agents
            .values()
            .map(|a| a.heartbeat_timestamp)
            .max()
            .filter(|t| *t < now)
            .unwrap_or(now);
        let mut core = Core {
            state,
            ml2,
            started: now,
            resumed_from,
            compiler: Compiler::new(),
            backlog: Some(Vec::new()),
            initial: None,
            store: Mutex::new(store),
        };
        // The full compile runs off the lock, on its own copy of the model
        // (built from the same records), so a restart does not hold up API
        // writes for its whole length; see [`Shared::compile_in_background`].
        core.initial = Some((records, core.liveness(now)));
        Ok(core)
    }

    /// Whether the compiler has caught up with the model since start-up:
    /// until then it has no desired state to give any node.
    pub fn compiled(&self) -> bool {
        self.backlog.is_none()
    }

    /// Writes the open transaction's changes to the store (the caller rolls
    /// the state back if this fails).
    pub(crate) fn persist(&self, now: &Timestamp) -> Result<()> {
        let changes = self.state.pending();
        let at = switchyard_model::render::iso_time(now);
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        store.commit(&changes, &at).map_err(|e| {
            tracing::error!(error = %e, "commit failed; transaction rolled back");
            NeutronError::internal()
        })?;
        Ok(())
    }

    /// Whether the controller is in its first `agent_down_time` after start.
    pub fn in_grace(&self, now: Timestamp) -> bool {
        let down = i64::try_from(self.ml2.settings.agent_down_time).unwrap_or(i64::MAX);
        now.signed_duration_since(self.started).num_seconds() < down
    }

    /// Liveness as the compiler sees it now (see [`Core::started`]).
    pub fn liveness(&self, now: Timestamp) -> Liveness {
        let at = if self.in_grace(now) {
            self.resumed_from + now.signed_duration_since(self.started)
        } else {
            now
        };
        Liveness::at(at, self.ml2.settings.agent_down_time)
    }
}

/// A request for a node's applied state; the session answers on the channel.
pub type IntrospectRequest = std::sync::mpsc::Sender<switchyard_proto::NodeState>;

/// Per-node deltas of one commit, as the southbound sessions receive them.
pub type Deltas = Arc<BTreeMap<String, Delta>>;

/// A node that refuses the state it is sent.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Failure {
    pub since: String,
    pub reason: String,
    /// Snapshots refused in a row.
    pub attempts: u32,
    /// When the next snapshot goes out.
    pub retry_in_ms: u64,
}

/// What the controller knows of a node's convergence.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeStatus {
    /// A southbound session of the node's agent is open.
    pub connected: bool,
    /// The session that owns this status (later sessions replace earlier ones).
    #[serde(skip)]
    pub session: u64,
    /// Latest version sent to the node's agent.
    pub sent: u64,
    /// Latest version the agent acknowledged, and when.
    pub acked: u64,
    pub acked_at: Option<String>,
    pub last_error: Option<String>,
    /// Set while the node refuses its state (nacks it).
    pub failed: Option<Failure>,
}

/// The live southbound session of a node.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub generation: u64,
    pub role: Role,
    /// The agent's hello configurations, which its reports carry.
    pub configurations: serde_json::Map<String, serde_json::Value>,
    pub introspect: tokio::sync::mpsc::Sender<IntrospectRequest>,
    /// Told when a newer session of the same node replaces this one.
    pub replaced: tokio::sync::watch::Sender<bool>,
}

/// A cheap handle shared by all request handlers.
#[derive(Clone)]
pub struct Shared {
    core: Arc<RwLock<Core>>,
    pub clock: Arc<dyn Clock>,
    pub deltas: tokio::sync::broadcast::Sender<Deltas>,
    /// What each commit changed, for `GET /switchyard/v1/events` ([`crate::events`]).
    pub events: tokio::sync::broadcast::Sender<crate::events::Commit>,
    /// Event streams open (at most [`crate::events::MAX_STREAMS`]).
    pub event_streams: Arc<tokio::sync::Semaphore>,
    pub nodes: Arc<Mutex<BTreeMap<String, NodeStatus>>>,
    /// The live agents (host, id) at the last [`Shared::tick`] while a
    /// stream listened: a change is a `node` event for the host.
    alive_agents: Arc<Mutex<std::collections::BTreeSet<(String, String)>>>,
    /// Nodes whose state changed since the last [`Shared::tick`]: announced
    /// together, at most once a second (a busy node acks many times a
    /// second, and each would re-render every open Nodes page).
    nodes_changed: Arc<Mutex<std::collections::BTreeSet<String>>>,
    /// Set when the server shuts down: southbound sessions (upgraded
    /// connections outlive graceful HTTP shutdown) close on it.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// The live southbound session of each connected node.
    pub sessions: Arc<Mutex<BTreeMap<String, SessionHandle>>>,
    next_session: Arc<AtomicU64>,
    /// Who may speak for which node (southbound and internal agent API).
    pub credentials: Arc<NodeCredentials>,
    /// Refused clients, logged once a minute each.
    pub refusals: Arc<RefusalLog>,
    /// Where port changes are told to Nova (`crate::nova`), once set.
    pub notifier: Arc<std::sync::OnceLock<crate::nova::Notifier>>,
    /// Becomes true once the compiler has caught up after start-up;
    /// southbound sessions wait for it before sending a snapshot (an empty
    /// one would wipe a node's state).
    pub compiled: tokio::sync::watch::Sender<bool>,
    /// The longest a write waited for the lock (ns) since
    /// [`Shared::take_longest_lock_wait`] last read it.
    longest_lock_wait: Arc<AtomicU64>,
    /// The group-commit writer's queue, once the first write is submitted
    /// (see [`crate::group_commit`]).
    pub(crate) writer:
        Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<crate::group_commit::Job>>>,
}

/// The first full compile of a [`Shared`], not started yet.
pub struct FirstCompile {
    shared: Shared,
    records: Vec<Record>,
    live: Liveness,
}

impl FirstCompile {
    /// Starts it in the background (see [`Shared::compile_in_background`]).
    pub fn start(self) {
        self.shared.compile_in_background(self.records, self.live);
    }
}

/// How long the catch-up after the first full compile holds the write lock
/// at a time, and how many changes it applies between looks at the clock
/// (a bound beyond the slice: 64 once took 15 ms, with a port's changes
/// costing up to 0.2 ms each while writes keep the other core busy).
const CATCH_UP_SLICE: std::time::Duration = std::time::Duration::from_millis(5);
const CATCH_UP_CHUNK: usize = 8;

impl Shared {
    pub fn new(core: Core, clock: Arc<dyn Clock>) -> Self {
        Self::with_credentials(core, clock, NodeCredentials::in_memory())
    }

    /// As [`Shared::new`], with the nodes' credentials; the first full
    /// compile starts at once, in the background.
    pub fn with_credentials(
        core: Core,
        clock: Arc<dyn Clock>,
        credentials: NodeCredentials,
    ) -> Self {
        let (shared, first) = Self::deferred(core, clock, credentials);
        if let Some(first) = first {
            first.start();
        }
        shared
    }

    /// As [`Shared::with_credentials`], but the first full compile waits
    /// for its [`FirstCompile::start`] (a test makes writes before it).
    pub fn deferred(
        mut core: Core,
        clock: Arc<dyn Clock>,
        credentials: NodeCredentials,
    ) -> (Self, Option<FirstCompile>) {
        let (deltas, _) = tokio::sync::broadcast::channel(1024);
        let (events, _) = tokio::sync::broadcast::channel(crate::events::CAPACITY);
        let (closing, _) = tokio::sync::watch::channel(false);
        let (compiled, _) = tokio::sync::watch::channel(core.compiled());
        let initial = core.initial.take();
        let shared = Shared {
            core: Arc::new(RwLock::new(core)),
            clock,
            deltas,
            events,
            event_streams: Arc::new(tokio::sync::Semaphore::new(crate::events::MAX_STREAMS)),
            nodes: Arc::new(Mutex::new(BTreeMap::new())),
            alive_agents: Arc::default(),
            nodes_changed: Arc::default(),
            closing,
            sessions: Arc::new(Mutex::new(BTreeMap::new())),
            next_session: Arc::new(AtomicU64::new(1)),
            credentials: Arc::new(credentials),
            refusals: Arc::new(RefusalLog::default()),
            notifier: Arc::default(),
            compiled,
            longest_lock_wait: Arc::default(),
            writer: Arc::default(),
        };
        let first = initial.map(|(records, live)| FirstCompile {
            shared: shared.clone(),
            records,
            live,
        });
        (shared, first)
    }

    /// The first full compile after start-up, on a thread of its own and off
    /// the lock: it builds its own copy of the model from the records the
    /// model was loaded from, compiles it, then catches up with the changes
    /// committed meanwhile (`Core::backlog`) under the write lock, at most
    /// [`CATCH_UP_SLICE`] at a time so that API writes wait no longer than
    /// that. The compiler refreshes what a change names from the model as it
    /// is now, so applying the backlog in slices against the current model
    /// ends in the state a full compile of it would give (property-tested in
    /// the controller's `tests/incremental.rs`).
    fn compile_in_background(&self, records: Vec<Record>, live: Liveness) {
        let shared = self.clone();
        let spawned = std::thread::Builder::new()
            .name("compile".into())
            .spawn(move || {
                let t = std::time::Instant::now();
                let done = catch_unwind(AssertUnwindSafe(|| {
                    // Through the catch-up too: its slices allocate under
                    // the write lock, where a huge-page fault that compacts
                    // memory would stall every writer.
                    let _off = crate::hugepages::Off::new();
                    let st = State::from_records(records);
                    let c = Compiler::full(&st, &live);
                    drop(st);
                    tracing::info!(
                        ms = t.elapsed().as_millis() as u64,
                        nodes = c.node_count(),
                        items = c.item_count(),
                        "full compile done; catching up with the changes made meanwhile"
                    );
                    shared.catch_up(c);
                }));
                if done.is_err() {
                    // A bug, as a panic in the compile at start-up was
                    // before it ran here: a controller that can serve no
                    // node (while its backlog grows) must not look alive.
                    tracing::error!(
                        "the full compile panicked; exiting so that a supervisor restarts the controller"
                    );
                    std::process::exit(70);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the compile thread; compiling under the lock");
            let mut g = self.write_lock();
            let core = &mut *g;
            let live = core.liveness(self.clock.now());
            let _off = crate::hugepages::Off::new();
            core.compiler = Compiler::full(&core.state, &live);
            core.backlog = None;
            self.compiled.send_replace(true);
        }
    }

    /// Installs `compiler` and applies the backlog to it in slices (see
    /// [`Shared::compile_in_background`]). The deltas those slices cut go
    /// nowhere: no session has been sent anything yet.
    fn catch_up(&self, compiler: Compiler) {
        let mut compiler = Some(compiler);
        let mut slices = 0u32;
        loop {
            let mut g = self.write_lock();
            let core = &mut *g;
            if let Some(c) = compiler.take() {
                core.compiler = c;
            }
            let live = core.liveness(self.clock.now());
            let started = std::time::Instant::now();
            let Some(backlog) = core.backlog.as_mut() else {
                return;
            };
            let mut done = 0;
            while done < backlog.len() && started.elapsed() < CATCH_UP_SLICE {
                let end = (done + CATCH_UP_CHUNK).min(backlog.len());
                core.compiler.apply(&core.state, &backlog[done..end], &live);
                done = end;
            }
            backlog.drain(..done);
            slices += 1;
            if backlog.is_empty() {
                core.backlog = None;
                // Liveness may have moved since the compile began, and
                // member sets rendered while behind may be stale.
                core.compiler.caught_up(&core.state, &live);
                self.compiled.send_replace(true);
                tracing::info!(
                    slices,
                    nodes = core.compiler.node_count(),
                    "compiler caught up; serving nodes"
                );
                return;
            }
            drop(g);
            // Writers waiting for the lock go first.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Asks `host`'s agent for the state its pipeline runs, waiting up to
    /// `timeout`. Blocking: call it off the reactor.
    pub fn introspect(
        &self,
        host: &str,
        timeout: std::time::Duration,
    ) -> std::result::Result<switchyard_proto::NodeState, String> {
        let session = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(host)
            .map(|s| s.introspect.clone())
            .ok_or_else(|| format!("the agent of {host} is not connected"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        session
            .try_send(tx)
            .map_err(|_| format!("the session of {host} is busy or closing"))?;
        rx.recv_timeout(timeout)
            .map_err(|_| format!("the agent of {host} did not answer within {timeout:?}"))
    }

    /// Makes `handle` (with a fresh generation) the node's session, telling
    /// the one it replaces to close. Returns the generation.
    pub fn begin_session(&self, host: &str, mut handle: SessionHandle) -> u64 {
        let generation = self.next_session.fetch_add(1, Ordering::Relaxed);
        handle.generation = generation;
        let old = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(host.to_string(), handle);
        if let Some(old) = old {
            let _ = old.replaced.send(true);
        }
        {
            let mut g = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
            let st = g.entry(host.to_string()).or_default();
            *st = NodeStatus {
                connected: true,
                session: generation,
                acked: st.acked,
                acked_at: st.acked_at.clone(),
                ..NodeStatus::default()
            };
        }
        self.announce_nodes([host.to_string()]);
        generation
    }

    /// Notes that these nodes' sync state or liveness changed, for the
    /// event streams (kind `node`, to admins: only they read nodes), which
    /// the next [`Shared::tick`] tells. Their acks and liveness are not
    /// commits, so this is their only way there. Nothing when no stream
    /// listens.
    fn announce_nodes(&self, hosts: impl IntoIterator<Item = String>) {
        if self.events.receiver_count() == 0 {
            return;
        }
        self.nodes_changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(hosts);
    }

    /// Sends the nodes noted since the last call as one event.
    fn flush_node_events(&self) {
        let hosts = std::mem::take(
            &mut *self
                .nodes_changed
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if hosts.is_empty() || self.events.receiver_count() == 0 {
            return;
        }
        let changes: Vec<crate::events::Changed> = hosts
            .into_iter()
            .map(|id| crate::events::Changed {
                kind: "node",
                id,
                op: "put",
                project: None,
            })
            .collect();
        let _ = self.events.send(Arc::new(changes));
    }

    /// Ends session `generation` of `host`: only if it still owns the node
    /// does the node become disconnected (a replaced or refused session never
    /// changes another session's node).
    pub fn end_session(&self, host: &str, generation: u64) {
        {
            let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
            if sessions
                .get(host)
                .is_some_and(|s| s.generation == generation)
            {
                sessions.remove(host);
            }
        }
        self.session_status(host, generation, |s| s.connected = false);
    }

    /// The live session's role and configurations, if `host` has one.
    pub fn live_session(
        &self,
        host: &str,
    ) -> Option<(Role, serde_json::Map<String, serde_json::Value>)> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(host)
            .map(|s| (s.role, s.configurations.clone()))
    }

    /// Records something about a node on behalf of session `generation`;
    /// ignored when another session owns the node now.
    pub fn session_status(&self, host: &str, generation: u64, f: impl FnOnce(&mut NodeStatus)) {
        let changed = {
            let mut g = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
            g.get_mut(host)
                .filter(|s| s.session == generation)
                .map(f)
                .is_some()
        };
        if changed {
            self.announce_nodes([host.to_string()]);
        }
    }

    /// A node's desired state now: (version, items); `None` until the
    /// compiler has caught up after start-up.
    pub fn snapshot(&self, host: &str) -> Option<(u64, switchyard_proto::Items)> {
        let g = self.core.read().unwrap_or_else(PoisonError::into_inner);
        g.compiled()
            .then(|| g.compiler.snapshot(host).unwrap_or_default())
    }

    /// The longest a write waited for the model's lock since the last call,
    /// and starts counting again.
    pub fn take_longest_lock_wait(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.longest_lock_wait.swap(0, Ordering::Relaxed))
    }

    /// Waits until the compiler has caught up after start-up.
    pub async fn wait_compiled(&self) {
        let mut rx = self.compiled.subscribe();
        // The sender lives as long as `self`: an error cannot happen here.
        let _ = rx.wait_for(|c| *c).await;
    }

    /// After a gateway agent reported: places routers that have no gateway
    /// node yet, in a transaction of its own (a failure there must not undo
    /// the report). Best effort: failures are logged.
    pub fn schedule_unplaced_routers(&self, ctx: &Ctx) {
        let pending = self
            .read(|_, st| Ok(st.routers.values().any(|r| r.host.is_empty())))
            .unwrap_or(false);
        if !pending {
            return;
        }
        if let Err(e) = self.write(
            ctx,
            switchyard_ml2::ops::routers::schedule_unplaced,
            |_, _, ()| Ok(()),
        ) {
            tracing::warn!(error = %e.message, "placing routers on a gateway node failed");
        }
    }

    /// Notes the hosts an agent of which went dead or came back since the
    /// last look (only while a stream listens: nothing else reads it).
    fn announce_liveness(&self, now: Timestamp) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let alive: std::collections::BTreeSet<(String, String)> = self
            .read(|ml2, st| {
                Ok(st
                    .agents
                    .values()
                    .filter(|a| a.is_alive(now, ml2.settings.agent_down_time))
                    .map(|a| (a.host.clone(), a.id.clone()))
                    .collect())
            })
            .unwrap_or_default();
        let changed: std::collections::BTreeSet<String> = {
            let mut last = self
                .alive_agents
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let changed = last
                .symmetric_difference(&alive)
                .map(|(host, _)| host.clone())
                .collect();
            *last = alive;
            changed
        };
        self.announce_nodes(changed);
    }

    /// What time passing changes, run every second by the server: agents
    /// that went dead (or came back) move networks between gateways, and
    /// routers on a dead gateway move to a live one (Neutron's
    /// `allow_automatic_l3agent_failover`). Blocking: call it off the reactor.
    pub fn tick(&self) {
        let now = self.clock.now();
        self.announce_liveness(now);
        self.flush_node_events();
        let (matters, grace) = {
            let g = self.core.read().unwrap_or_else(PoisonError::into_inner);
            let live = g.liveness(now);
            // Until the compiler has caught up, its catch-up applies liveness.
            (
                g.compiled() && g.compiler.liveness_matters(&g.state, &live),
                g.in_grace(now),
            )
        };
        if matters {
            let mut g = self.write_lock();
            let core = &mut *g;
            let live = core.liveness(now);
            let deltas = core.compiler.set_liveness(&core.state, &live);
            tracing::info!(
                nodes = deltas.len(),
                "gateway liveness changed; networks re-placed"
            );
            if !deltas.is_empty() {
                let _ = self.deltas.send(Arc::new(deltas));
            }
        }
        // Routers wait until the agents had agent_down_time to report after
        // a restart (as Neutron's rescheduler waits for down agents).
        let stranded = !grace
            && self
                .read(
                    |ml2, st| Ok(!switchyard_ml2::ops::routers::stranded(ml2, st, now).is_empty()),
                )
                .unwrap_or(false);
        if stranded {
            let ctx = Ctx::admin("", now);
            match self.write(
                &ctx,
                switchyard_ml2::ops::routers::reschedule_stranded,
                |_, st, moved| {
                    Ok(moved
                        .into_iter()
                        .map(|r| {
                            let host = st
                                .routers
                                .get(&r)
                                .map(|x| x.host.clone())
                                .unwrap_or_default();
                            (r, host)
                        })
                        .collect::<Vec<_>>())
                },
            ) {
                Ok(moved) => {
                    for (router, host) in moved {
                        tracing::warn!(%router, to = %host, "router moved off a dead gateway");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e.message, "moving routers off a dead gateway failed")
                }
            }
        }
    }

    /// Whether `host` has an agent that is alive now.
    pub fn agent_alive(&self, host: &str) -> bool {
        let now = self.clock.now();
        self.read(|ml2, st| {
            Ok(st
                .agents_on_host(host)
                .any(|a| a.is_alive(now, ml2.settings.agent_down_time)))
        })
        .unwrap_or(false)
    }

    /// Ends a persisted transaction: tells Nova of port changes, closes the
    /// journal and brings the compiler (or, before the first compile has
    /// caught up, its backlog) up to date, sending the nodes' deltas.
    ///
    /// The changes are already on disk: if this panics (a bug), the model or
    /// the compiler may no longer match them, and rolling the model back
    /// would forget committed records. The controller exits instead, and a
    /// supervisor's restart loads and compiles what was committed.
    pub(crate) fn publish(&self, core: &mut Core, now: Timestamp) {
        if catch_unwind(AssertUnwindSafe(|| self.publish_committed(core, now))).is_err() {
            tracing::error!(
                "publishing a committed transaction panicked; exiting so that a restart compiles what is on disk"
            );
            std::process::exit(70);
        }
    }

    fn publish_committed(&self, core: &mut Core, now: Timestamp) {
        let notifier = self.notifier.get();
        let before = notifier.map(|_| crate::nova::before(core.state.undo()));
        // Only while someone listens: the write path pays nothing otherwise.
        let owners =
            (self.events.receiver_count() > 0).then(|| crate::events::owners(core.state.undo()));
        let changes = core.state.commit();
        if let (Some(n), Some(b)) = (notifier, before) {
            n.send(crate::nova::events(&b, &changes, &core.state));
        }
        if let Some(owners) = owners
            && !changes.is_empty()
        {
            let _ = self
                .events
                .send(Arc::new(crate::events::commit(&changes, &owners)));
        }
        if let Some(backlog) = core.backlog.as_mut() {
            backlog.extend(changes);
            return;
        }
        let live = core.liveness(now);
        let deltas = core.compiler.apply(&core.state, &changes, &live);
        if !deltas.is_empty() {
            // No session listening is fine: agents get a snapshot when they connect.
            let _ = self.deltas.send(Arc::new(deltas));
        }
    }

    /// The write lock, and how long it took to get (kept for
    /// [`Shared::take_longest_lock_wait`]).
    pub(crate) fn write_lock_timed(&self) -> std::sync::RwLockWriteGuard<'_, Core> {
        let asked = std::time::Instant::now();
        let g = self.write_lock();
        let waited = u64::try_from(asked.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.longest_lock_wait.fetch_max(waited, Ordering::Relaxed);
        g
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, Core> {
        self.core.write().unwrap_or_else(|poisoned| {
            self.core.clear_poison();
            let mut g = poisoned.into_inner();
            g.state.rollback();
            g
        })
    }

    /// Runs a read against a consistent view; reads run in parallel.
    pub fn read<T>(&self, f: impl FnOnce(&Ml2, &State) -> Result<T>) -> Result<T> {
        // A writer that panicked has already rolled back (see `write`), so the
        // state behind a poisoned lock is whole.
        let g = self.core.read().unwrap_or_else(PoisonError::into_inner);
        f(&g.ml2, &g.state)
    }

    /// Runs `op` as one atomic transaction, then `after` (typically rendering the
    /// result) on the committed state, under the same lock. A panic inside `op`
    /// is caught and rolled back like an error, so one bad request can neither
    /// leave half an operation behind nor take the API down.
    pub fn write<R, T>(
        &self,
        ctx: &Ctx,
        op: impl FnOnce(&Ml2, &mut State, &Ctx) -> Result<R>,
        after: impl FnOnce(&Ml2, &State, R) -> Result<T>,
    ) -> Result<T> {
        let mut g = self.write_lock_timed();
        let core = &mut *g;
        core.state.begin();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let r = op(&core.ml2, &mut core.state, ctx)?;
            core.persist(&ctx.now)?;
            Ok(r)
        }));
        let r = match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                core.state.rollback();
                return Err(e);
            }
            Err(_) => {
                tracing::error!("operation panicked; transaction rolled back");
                core.state.rollback();
                return Err(NeutronError::internal());
            }
        };
        self.publish(core, ctx.now);
        after(&core.ml2, &core.state, r)
    }
}
