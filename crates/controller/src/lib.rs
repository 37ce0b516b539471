//! switchyard's controller: compiles the Neutron model (networks, segments,
//! subnets, ports with their bindings, agents) into the desired state of every
//! node, as keyed [`switchyard_proto::Item`]s with per-node versions.
//!
//! Contracts: sans-io (the model and its committed changes in, deltas out; no
//! clock, no sockets); incremental (a port change recompiles that port and
//! touches only the nodes whose state it changes, see [`compile::Stats`]);
//! a full compile and any sequence of incremental ones give the same items.

pub mod compile;
pub mod facts;
pub mod secgroups;

pub use compile::{Compiler, Liveness, Stats};
