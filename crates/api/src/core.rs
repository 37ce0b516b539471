//! The single owner of the model: in-memory state + ML2 + durable store behind
//! one lock. Every write runs as one transaction: the operation mutates the
//! journaled state, the touched records are committed to SQLite, and only then
//! does the lock open again; any error (validation, allocation, disk) rolls the
//! state back, so readers never see half an operation and a crash never leaves one.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use switchyard_controller::{Compiler, Liveness};
use switchyard_ml2::{Ctx, Ml2};
use switchyard_model::{NeutronError, Result, State, Timestamp};
use switchyard_proto::Delta;
use switchyard_store::SqliteStore;

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
    /// Every node's desired state, kept up to date with each commit.
    pub compiler: Compiler,
    // The connection is not `Sync`; only writers (holding the write lock) use it.
    store: Mutex<SqliteStore>,
}

impl Core {
    pub fn open(
        ml2: Ml2,
        store: SqliteStore,
        now: Timestamp,
    ) -> std::result::Result<Self, switchyard_store::StoreError> {
        let state = State::from_records(store.load()?);
        let compiler = Compiler::full(&state, &Liveness::at(now, ml2.settings.agent_down_time));
        Ok(Core {
            state,
            ml2,
            compiler,
            store: Mutex::new(store),
        })
    }
}

/// A request for a node's applied state; the session answers on the channel.
pub type IntrospectRequest = std::sync::mpsc::Sender<switchyard_proto::NodeState>;

/// A cheap handle shared by all request handlers.
/// Per-node deltas of one commit, as the southbound sessions receive them.
pub type Deltas = Arc<BTreeMap<String, Delta>>;

/// What the controller knows of a node's convergence.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeStatus {
    pub connected: bool,
    /// Latest version sent to the node's agent.
    pub sent: u64,
    /// Latest version the agent acknowledged, and when.
    pub acked: u64,
    pub acked_at: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Clone)]
pub struct Shared {
    core: Arc<RwLock<Core>>,
    pub clock: Arc<dyn Clock>,
    pub deltas: tokio::sync::broadcast::Sender<Deltas>,
    pub nodes: Arc<Mutex<BTreeMap<String, NodeStatus>>>,
    /// Set when the server shuts down: southbound sessions (upgraded
    /// connections outlive graceful HTTP shutdown) close on it.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// The live southbound session of each connected node, for introspection.
    pub sessions: Arc<Mutex<BTreeMap<String, tokio::sync::mpsc::Sender<IntrospectRequest>>>>,
}

impl Shared {
    pub fn new(core: Core, clock: Arc<dyn Clock>) -> Self {
        let (deltas, _) = tokio::sync::broadcast::channel(1024);
        let (closing, _) = tokio::sync::watch::channel(false);
        Shared {
            core: Arc::new(RwLock::new(core)),
            clock,
            deltas,
            nodes: Arc::new(Mutex::new(BTreeMap::new())),
            closing,
            sessions: Arc::new(Mutex::new(BTreeMap::new())),
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
            .cloned()
            .ok_or_else(|| format!("the agent of {host} is not connected"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        session
            .try_send(tx)
            .map_err(|_| format!("the session of {host} is busy or closing"))?;
        rx.recv_timeout(timeout)
            .map_err(|_| format!("the agent of {host} did not answer within {timeout:?}"))
    }

    /// Records something about a node's session.
    pub fn node_status(&self, host: &str, f: impl FnOnce(&mut NodeStatus)) {
        let mut g = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        f(g.entry(host.to_string()).or_default());
    }

    /// A node's desired state now: (version, items).
    pub fn snapshot(&self, host: &str) -> (u64, BTreeMap<String, switchyard_proto::Item>) {
        let g = self.core.read().unwrap_or_else(PoisonError::into_inner);
        g.compiler.snapshot(host).unwrap_or_default()
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
        let mut g = self.core.write().unwrap_or_else(|poisoned| {
            self.core.clear_poison();
            let mut g = poisoned.into_inner();
            g.state.rollback();
            g
        });
        let core = &mut *g;
        core.state.begin();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let r = op(&core.ml2, &mut core.state, ctx)?;
            let changes = core.state.pending();
            let at = switchyard_model::render::iso_time(&ctx.now);
            let mut store = core.store.lock().unwrap_or_else(PoisonError::into_inner);
            store.commit(&changes, &at).map_err(|e| {
                tracing::error!(error = %e, "commit failed; transaction rolled back");
                NeutronError::internal()
            })?;
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
        let changes = core.state.commit();
        let live = Liveness::at(ctx.now, core.ml2.settings.agent_down_time);
        let deltas = core.compiler.apply(&core.state, &changes, &live);
        if !deltas.is_empty() {
            // No session listening is fine: agents get a snapshot when they connect.
            let _ = self.deltas.send(Arc::new(deltas));
        }
        after(&core.ml2, &core.state, r)
    }
}
