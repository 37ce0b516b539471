//! A QEMU VM of the guest image ([`super::image`]): one `qemu-system-x86_64`
//! process per VM, run inside the network namespace of the node it is on (it
//! opens its NIC's TAP there), with its QMP socket and its serial console as
//! Unix sockets in the VM's run directory. TCG only: this machine's
//! `/dev/kvm` is a nested backend that stock kernels hang on.
//!
//! The NIC's options are the same wherever the VM runs (a TAP with the
//! virtio-net header, no vhost, the port's MAC), as QEMU's migration needs
//! them identical on both sides. A destination VM is started with
//! `-incoming defer` and takes the stream over a Unix socket (it works
//! across network namespaces, so the two nodes need no route between them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use super::console::{Console, ConsoleError};
use super::image::Image;
use super::qmp::{Qmp, QmpError};

/// The Debian package QEMU comes from (bookworm-backports on these machines).
pub const PACKAGE: &str = "qemu-system-x86";

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("starting QEMU for {0}: {1} (Debian package {PACKAGE})")]
    Spawn(String, std::io::Error),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("QEMU for {0} exited: {1}")]
    Exited(String, String),
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
    #[error("migration of {0} {1}")]
    Migration(String, String),
}

/// What a VM is made of.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub name: String,
    /// The NIC's MAC (the Neutron port's).
    pub mac: String,
    /// The TAP QEMU opens (it must exist, in `netns`).
    pub tap: String,
    /// The network namespace QEMU runs in (the node's), if any.
    pub netns: Option<String>,
    pub memory_mb: u32,
    /// Sockets, log and pid file go here.
    pub run_dir: PathBuf,
    /// Wait for an incoming migration instead of booting.
    pub incoming: bool,
}

/// A running QEMU.
#[derive(Debug)]
pub struct Vm {
    pub spec: VmSpec,
    child: Child,
}

impl VmSpec {
    pub fn qmp_path(&self) -> PathBuf {
        self.run_dir.join("qmp.sock")
    }

    pub fn console_path(&self) -> PathBuf {
        self.run_dir.join("console.sock")
    }

    /// The socket a migration into this VM arrives on.
    pub fn incoming_path(&self) -> PathBuf {
        self.run_dir.join("incoming.sock")
    }

    fn args(&self, image: &Image) -> Vec<String> {
        let p = |x: &Path| x.display().to_string();
        let mut a: Vec<String> = [
            "-name",
            &self.name,
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            &format!("{}M", self.memory_mb),
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-kernel",
            &p(&image.kernel),
            "-initrd",
            &p(&image.initrd),
            "-append",
            &format!(
                "console=ttyS0 quiet loglevel=1 panic=-1 sy.name={}",
                self.name
            ),
            "-netdev",
            &format!(
                "tap,id=n0,ifname={},script=no,downscript=no,vhost=off,vnet_hdr=on",
                self.tap
            ),
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={},romfile=", self.mac),
            "-serial",
            &format!("unix:{},server=on,wait=off", p(&self.console_path())),
            "-qmp",
            &format!("unix:{},server=on,wait=off", p(&self.qmp_path())),
            "-pidfile",
            &p(&self.run_dir.join("qemu.pid")),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.incoming {
            a.extend(["-incoming".to_string(), "defer".to_string()]);
        }
        a
    }
}

impl Vm {
    /// Starts QEMU (it runs in the background; [`Vm::qmp`] waits for it).
    pub fn spawn(image: &Image, spec: VmSpec) -> Result<Vm, VmError> {
        std::fs::create_dir_all(&spec.run_dir)
            .map_err(|e| VmError::Io(spec.run_dir.display().to_string(), e))?;
        for s in [spec.qmp_path(), spec.console_path(), spec.incoming_path()] {
            let _ = std::fs::remove_file(s);
        }
        let log = std::fs::File::create(spec.run_dir.join("qemu.log"))
            .map_err(|e| VmError::Io("qemu.log".into(), e))?;
        let mut cmd = match &spec.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "qemu-system-x86_64"]);
                c
            }
            None => Command::new("qemu-system-x86_64"),
        };
        let child = cmd
            .args(spec.args(image))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| VmError::Spawn(spec.name.clone(), e))?;
        Ok(Vm { spec, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What QEMU wrote to its log (its errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.spec.run_dir.join("qemu.log")).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<VmError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(VmError::Exited(
                self.spec.name.clone(),
                format!("{status}: {}", self.log().trim()),
            )),
            _ => None,
        }
    }

    /// A QMP session (QEMU allows one at a time on this socket).
    pub async fn qmp(&mut self) -> Result<Qmp, VmError> {
        match Qmp::connect(&self.spec.qmp_path(), Duration::from_secs(20)).await {
            Ok(q) => Ok(q),
            Err(e) => Err(self.exited().unwrap_or(e.into())),
        }
    }

    /// The serial console's control channel, once the guest's loop answers.
    pub async fn console(&mut self, boot_timeout: Duration) -> Result<Console, VmError> {
        let mut c = match Console::connect(&self.spec.console_path(), Duration::from_secs(20)).await
        {
            Ok(c) => c,
            Err(e) => return Err(self.exited().unwrap_or(e.into())),
        };
        match c.ready(boot_timeout).await {
            Ok(()) => Ok(c),
            Err(e) => Err(self.exited().unwrap_or(e.into())),
        }
    }

    /// Stops QEMU at once (the VM is gone; nothing of it is kept).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for s in [
            self.spec.qmp_path(),
            self.spec.console_path(),
            self.spec.incoming_path(),
        ] {
            let _ = std::fs::remove_file(s);
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// What QEMU reported of a finished migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationStats {
    /// `total-time`: from `migrate` to the destination running.
    pub total_ms: u64,
    /// `downtime`: the VM stopped on the source until running on the destination.
    pub downtime_ms: u64,
}

/// Migrates the VM behind `src` into `dest` (started with `incoming`), as
/// Nova's libvirt driver has QEMU do it: the destination listens, the
/// source is given a downtime limit and sends; progress is polled until
/// `completed`. On failure the source keeps running (QEMU resumes it) and
/// the destination is for the caller to stop.
pub async fn migrate(
    src: &mut Qmp,
    dest: &mut Qmp,
    dest_spec: &VmSpec,
    downtime_limit_ms: u64,
    timeout: Duration,
) -> Result<MigrationStats, VmError> {
    let t = Duration::from_secs(10);
    let uri = format!("unix:{}", dest_spec.incoming_path().display());
    dest.execute("migrate-incoming", Some(json!({"uri": uri})), t)
        .await?;
    // With the return path the source hears whether the destination loaded
    // the state: without it a destination that fails leaves the source
    // reporting `completed`, paused, and the guest running nowhere.
    for q in [&mut *src, &mut *dest] {
        q.execute(
            "migrate-set-capabilities",
            Some(json!({"capabilities": [{"capability": "return-path", "state": true}]})),
            t,
        )
        .await?;
    }
    src.execute(
        "migrate-set-parameters",
        Some(json!({"downtime-limit": downtime_limit_ms, "max-bandwidth": 1_u64 << 30})),
        t,
    )
    .await?;
    src.execute("migrate", Some(json!({"uri": uri})), t).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let q = src.execute("query-migrate", None, t).await?;
        match q["status"].as_str().unwrap_or_default() {
            "completed" => {
                return Ok(MigrationStats {
                    total_ms: q["total-time"].as_u64().unwrap_or(0),
                    downtime_ms: q["downtime"].as_u64().unwrap_or(0),
                });
            }
            "failed" | "cancelled" => {
                return Err(VmError::Migration(
                    dest_spec.name.clone(),
                    format!(
                        "failed: {}",
                        q["error-desc"].as_str().unwrap_or("no reason given")
                    ),
                ));
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = src.execute("migrate_cancel", None, t).await;
            return Err(VmError::Migration(
                dest_spec.name.clone(),
                format!("did not complete within {timeout:?} (cancelled)"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
