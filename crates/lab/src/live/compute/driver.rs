//! The compute service's virt driver (Nova's name for what runs the guests):
//! the emulated lab's hypervisor, or Linux-mode guests (network namespaces
//! with the kernel's stack). The service's boot and live-migration flows are
//! the same on both; only these few steps differ.

use std::time::Duration;

use switchyard_proto::introspect::InterfaceState;

use super::super::hypervisor::{GuestInfo, Hypervisor, HypervisorError};
use crate::linux::guests::{GuestError, GuestKind, Guests};

#[derive(Clone)]
pub enum VirtDriver {
    Emulated(Hypervisor),
    Linux(Guests),
}

fn linux_error(e: GuestError) -> HypervisorError {
    use GuestError as G;
    match e {
        G::Exists(n) => HypervisorError::GuestExists(n),
        G::NotFound(n) => HypervisorError::GuestNotFound(n),
        G::HostNotInLab(h) => HypervisorError::HostNotInLab(h),
        G::PortInUse(p, g) => HypervisorError::PortInUse(p, g),
        G::NotPlugged { port, host, secs } => HypervisorError::NotPlugged { port, host, secs },
        e => HypervisorError::Lab(String::new(), e.to_string()),
    }
}

fn info(g: crate::linux::guests::Guest) -> GuestInfo {
    GuestInfo {
        name: g.name,
        port_id: Some(g.port_id),
        host: Some(g.host),
        local_port: None,
        mac: g.mac,
        ip: g.ip,
        gateway: None,
    }
}

impl VirtDriver {
    /// `hypervisor_type` in `/os-hypervisors/detail`.
    pub fn kind(&self) -> &'static str {
        match self {
            VirtDriver::Emulated(_) => "switchyard-lab",
            VirtDriver::Linux(g) => match g.kind() {
                GuestKind::Qemu => "QEMU",
                GuestKind::Netns => "switchyard-netns",
            },
        }
    }

    pub fn guests(&self) -> Vec<GuestInfo> {
        match self {
            VirtDriver::Emulated(h) => h.guests(),
            VirtDriver::Linux(g) => g.list().into_iter().map(info).collect(),
        }
    }

    pub fn guest(&self, name: &str) -> Result<GuestInfo, HypervisorError> {
        match self {
            VirtDriver::Emulated(h) => h.guest(name),
            VirtDriver::Linux(g) => g.get(name).map(info).map_err(linux_error),
        }
    }

    /// Boots guest `name` on port `port_id`, bound to `host` with `mac`.
    pub async fn plug(
        &self,
        name: &str,
        port_id: &str,
        host: &str,
        mac: smoltcp::wire::EthernetAddress,
        timeout: Duration,
    ) -> Result<GuestInfo, HypervisorError> {
        match self {
            VirtDriver::Emulated(h) => h.plug(name, port_id, host, mac, timeout).await,
            VirtDriver::Linux(g) => {
                // The guest goes where the port's binding says: the host the
                // service bound it to.
                let guest = g.boot(name, port_id, timeout).await.map_err(linux_error)?;
                if guest.host != host {
                    let _ = g.delete(name);
                    return Err(HypervisorError::Lab(
                        name.to_string(),
                        format!("port {port_id} is bound to {}, not {host}", guest.host),
                    ));
                }
                Ok(info(guest))
            }
        }
    }

    /// The device `host`'s agent runs for port `port_id`, as it shows it.
    pub async fn device(&self, host: &str, port_id: &str) -> Option<InterfaceState> {
        match self {
            VirtDriver::Emulated(h) => h.device(host, port_id),
            VirtDriver::Linux(g) => g.device(host, port_id).await,
        }
    }

    pub fn unplug(&self, name: &str) -> Result<(), HypervisorError> {
        match self {
            VirtDriver::Emulated(h) => h.unplug(name),
            VirtDriver::Linux(g) => g.delete(name).map_err(linux_error),
        }
    }

    /// Nova's `pre_live_migration` on `dest`: returns the destination device.
    pub async fn prepare_migration(
        &self,
        name: &str,
        dest: &str,
        timeout: Duration,
    ) -> Result<u32, HypervisorError> {
        match self {
            VirtDriver::Emulated(h) => h.prepare_migration(name, dest, timeout).await,
            VirtDriver::Linux(g) => g
                .prepare_move(name, dest, timeout)
                .await
                .map_err(linux_error),
        }
    }

    /// The guest now runs on `dest` (device `local`): QEMU's live migration,
    /// or the emulated guest's move.
    pub async fn complete_migration(
        &self,
        name: &str,
        dest: &str,
        local: u32,
    ) -> Result<(), HypervisorError> {
        match self {
            VirtDriver::Emulated(h) => h.complete_migration(name, dest, local),
            VirtDriver::Linux(g) => g.complete_move(name, dest).await.map_err(linux_error),
        }
    }

    /// Nova's `post_live_migration_at_destination`, once the port is active
    /// on the guest's new host: the guest announces itself there.
    pub async fn post_migration(&self, name: &str) {
        match self {
            // The emulated guest announced itself as it moved.
            VirtDriver::Emulated(_) => {}
            VirtDriver::Linux(g) => {
                if let Err(e) = g.announce(name).await {
                    tracing::warn!(guest = %name, error = %e, "announcing after the migration");
                }
            }
        }
    }

    /// A migration rolled back before the switch-over: what was plugged on
    /// the destination goes.
    pub fn abort_migration(&self, name: &str) {
        match self {
            // The emulated pre-plug is the agent's alone.
            VirtDriver::Emulated(_) => {}
            VirtDriver::Linux(g) => g.abort_move(name),
        }
    }

    /// Puts a guest moved to another host back on `host` (a rollback after
    /// the switch-over).
    pub async fn return_guest(
        &self,
        name: &str,
        host: &str,
        timeout: Duration,
    ) -> Result<(), HypervisorError> {
        match self {
            VirtDriver::Emulated(h) => h.return_guest(name, host),
            VirtDriver::Linux(g) => {
                if g.get(name).map_err(linux_error)?.host == host {
                    g.abort_move(name);
                    return Ok(());
                }
                g.prepare_move(name, host, timeout)
                    .await
                    .map_err(linux_error)?;
                g.complete_move(name, host).await.map_err(linux_error)
            }
        }
    }
}
