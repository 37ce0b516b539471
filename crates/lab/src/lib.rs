//! switchyard's emulated lab: the reference fabric in one process, with no root.
//!
//! Nodes run the real forwarding pipelines of `switchyard-dataplane`; links,
//! the VXLAN underlay and a virtual clock are emulated here; guests are real
//! small IP stacks (smoltcp) with DHCP, ARP, ping and QEMU-style announcements
//! after a move; an internet node answers on public addresses; any link can be
//! captured to pcap. The lab is deterministic: the same steps give the same
//! packets, so tests can bound losses exactly.
//!
//! `live` runs it in real time behind the API (`switchyard lab up`), with a
//! hypervisor and a compute API; `client` holds the API clients behind
//! `switchyard verify`, `demo` and `bench migration`. `linux` builds the same
//! topology on the host's kernel instead (`switchyard lab up --linux`):
//! namespaces, agent processes, Open vSwitch, kernel guests.

pub mod agents;
pub mod build;
pub mod client;
pub mod guest;
pub mod internet;
pub mod lab;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod live;
pub mod pcap;
pub mod topology;

pub use guest::Guest;
pub use lab::{Element, Lab, LabError};
pub use topology::{Role, Topology};
