//! switchyard's resource model: the stored form of networks, segments, subnets,
//! ports (with their bindings) and agents; the in-memory [`State`] with its indexes
//! and undo journal; Neutron's attribute map and checked value conversions; and the
//! Neutron JSON rendering of each resource.
//!
//! Contracts: nothing here does I/O or reads a clock (time is passed in); every
//! conversion of untrusted input returns a [`NeutronError`] instead of panicking;
//! [`State`] keeps its indexes consistent with its tables across rollbacks.

pub mod attrs;
pub mod error;
pub mod mac;
pub mod render;
pub mod resources;
pub mod state;

pub use error::{NeutronError, Result};
pub use mac::Mac;
pub use resources::*;
pub use state::{Change, Kind, Record, SegKey, State};

/// A new resource id (random UUID, as Neutron uses).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
