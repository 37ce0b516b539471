//! The single owner of the model: in-memory state + ML2 + durable store behind
//! one lock. Every write runs as one transaction: the operation mutates the
//! journaled state, the touched records are committed to SQLite, and only then
//! does the lock open again; any error (validation, allocation, disk) rolls the
//! state back, so readers never see half an operation and a crash never leaves one.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use switchyard_ml2::{Ctx, Ml2};
use switchyard_model::{NeutronError, Result, State, Timestamp};
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
    // The connection is not `Sync`; only writers (holding the write lock) use it.
    store: Mutex<SqliteStore>,
}

impl Core {
    pub fn open(
        ml2: Ml2,
        store: SqliteStore,
    ) -> std::result::Result<Self, switchyard_store::StoreError> {
        let state = State::from_records(store.load()?);
        Ok(Core {
            state,
            ml2,
            store: Mutex::new(store),
        })
    }
}

/// A cheap handle shared by all request handlers.
#[derive(Clone)]
pub struct Shared {
    core: Arc<RwLock<Core>>,
    pub clock: Arc<dyn Clock>,
}

impl Shared {
    pub fn new(core: Core, clock: Arc<dyn Clock>) -> Self {
        Shared {
            core: Arc::new(RwLock::new(core)),
            clock,
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
        core.state.commit();
        after(&core.ml2, &core.state, r)
    }
}
