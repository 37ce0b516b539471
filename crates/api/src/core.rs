//! The single owner of the model: in-memory state + ML2 + durable store behind
//! one lock. Every write runs as one transaction: the operation mutates the
//! journaled state, the touched records are committed to SQLite, and only then
//! does the lock open again; any error (validation, allocation, disk) rolls the
//! state back, so readers never see half an operation and a crash never leaves one.

use std::sync::{Arc, Mutex, MutexGuard};

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
    store: SqliteStore,
}

impl Core {
    pub fn open(
        ml2: Ml2,
        store: SqliteStore,
    ) -> std::result::Result<Self, switchyard_store::StoreError> {
        let state = State::from_records(store.load()?);
        Ok(Core { state, ml2, store })
    }
}

/// A cheap handle shared by all request handlers.
#[derive(Clone)]
pub struct Shared {
    core: Arc<Mutex<Core>>,
    pub clock: Arc<dyn Clock>,
}

impl Shared {
    pub fn new(core: Core, clock: Arc<dyn Clock>) -> Self {
        Shared {
            core: Arc::new(Mutex::new(core)),
            clock,
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Core>> {
        self.core.lock().map_err(|_| {
            tracing::error!("state lock poisoned");
            NeutronError::internal()
        })
    }

    /// Runs a read against a consistent view.
    pub fn read<T>(&self, f: impl FnOnce(&Ml2, &State) -> Result<T>) -> Result<T> {
        let g = self.lock()?;
        f(&g.ml2, &g.state)
    }

    /// Runs `op` as one atomic transaction, then `after` (typically rendering the
    /// result) on the committed state, under the same lock.
    pub fn write<R, T>(
        &self,
        ctx: &Ctx,
        op: impl FnOnce(&Ml2, &mut State, &Ctx) -> Result<R>,
        after: impl FnOnce(&Ml2, &State, R) -> Result<T>,
    ) -> Result<T> {
        let mut g = self.lock()?;
        let core = &mut *g;
        core.state.begin();
        let r = match op(&core.ml2, &mut core.state, ctx) {
            Ok(r) => r,
            Err(e) => {
                core.state.rollback();
                return Err(e);
            }
        };
        let changes = core.state.pending();
        let at = switchyard_model::render::iso_time(&ctx.now);
        if let Err(e) = core.store.commit(&changes, &at) {
            tracing::error!(error = %e, "commit failed; transaction rolled back");
            core.state.rollback();
            return Err(NeutronError::internal());
        }
        core.state.commit();
        after(&core.ml2, &core.state, r)
    }
}
