//! switchyard's forwarding pipelines: vRouter, OVS bridge, SR-IOV NIC, fabric
//! switch and gateway, each a pure state machine.
//!
//! Contracts:
//! * sans-io: a pipeline is driven by [`Pipeline::process`] with a packet and the
//!   current time, and by [`Pipeline::poll`] for timers; it returns what to send
//!   as [`Output`]s and never touches a socket, a clock or a thread;
//! * configuration arrives as typed, versioned updates (the types the controller
//!   computes and streams), applied with each pipeline's `apply`;
//! * untrusted bytes: every frame is parsed with checked views ([`wire`]); a bad
//!   frame is dropped and counted ([`Counters`]), never a panic;
//! * nothing here knows whether ports are emulated links or Linux devices.

pub mod conntrack;
pub mod counters;
pub mod dhcp;
pub mod fabric;
pub mod fdb;
pub mod frames;
pub mod gateway;
pub mod io;
pub mod ovs;
pub mod secgroup;
pub mod spoof;
pub mod sriov;
pub mod vrouter;
pub mod wire;

pub use counters::{Counters, DropReason};
pub use frames::Mac;
pub use io::{Driver, Duration, Input, Instant, Output, Pipeline, PortNo, Received, pump};
