//! switchyard's ML2 core: the Neutron core plugin's operations (networks, segments,
//! subnets, ports, bindings, agents, tags) over the in-memory [`State`], with
//! type drivers, mechanism drivers, the hierarchical binding loop and IPAM.
//!
//! Contracts:
//! * sans-io: every operation takes the state, the request context (project,
//!   role, `now`) and an already-parsed JSON body, and returns a result; it never
//!   reads a clock, a socket or a file;
//! * atomic: the caller opens a [`State`] transaction around an operation and
//!   rolls it back on any error, so an operation either applies completely or not
//!   at all (including the segments and addresses it allocated);
//! * errors are Neutron's (type, status and message), see `NeutronError`.

pub mod binding;
pub mod config;
pub mod ipam;
pub mod mech;
pub mod ops;
pub mod types;

use std::sync::Mutex;

use rand::SeedableRng;
use rand::rngs::StdRng;
use switchyard_model::Timestamp;

pub use config::{ConfigError, Ml2Config, QuotaConfig, Settings};

/// The configured ML2: settings, drivers and allocator hints.
pub struct Ml2 {
    pub settings: Settings,
    pub types: types::TypeManager,
    pub mech: Vec<Box<dyn mech::MechanismDriver>>,
    pub ipam: ipam::Allocator,
    rng: Mutex<StdRng>,
}

impl Ml2 {
    pub fn new(cfg: &Ml2Config) -> Result<Self, ConfigError> {
        Self::with_rng(cfg, StdRng::from_os_rng())
    }

    /// A deterministic ML2 for tests (MAC addresses depend on the seed).
    pub fn with_seed(cfg: &Ml2Config, seed: u64) -> Result<Self, ConfigError> {
        Self::with_rng(cfg, StdRng::seed_from_u64(seed))
    }

    fn with_rng(cfg: &Ml2Config, rng: StdRng) -> Result<Self, ConfigError> {
        let settings = cfg.check()?;
        Ok(Ml2 {
            types: types::TypeManager::new(&settings),
            mech: mech::build(&settings.mechanism_drivers),
            settings,
            ipam: ipam::Allocator::default(),
            rng: Mutex::new(rng),
        })
    }

    pub(crate) fn random_bytes<const N: usize>(&self) -> [u8; N] {
        use rand::RngCore;
        let mut b = [0u8; N];
        if let Ok(mut r) = self.rng.lock() {
            r.fill_bytes(&mut b);
        }
        b
    }
}

/// Who is asking and when.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub project_id: String,
    pub is_admin: bool,
    /// The `service` role (Nova's service user): Neutron's `service_api`
    /// rule — binding fields, and any project's ports.
    pub is_service: bool,
    pub now: Timestamp,
}

impl Ctx {
    pub fn admin(project_id: &str, now: Timestamp) -> Self {
        Ctx {
            project_id: project_id.to_string(),
            is_admin: true,
            is_service: false,
            now,
        }
    }
}
