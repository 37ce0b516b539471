//! QEMU guests: one `qemu-system-x86_64` per guest, run in the namespace of
//! the node it is on, its NIC a TAP there named like Nova's (`tap` + the
//! port id's first 11 characters), plugged as os-vif plugs a libvirt VM for
//! the binding's `vif_type`:
//!
//! * `vrouter`: the TAP alone; the vRouter agent attaches to it (AF_PACKET
//!   with the virtio-net header) when it appears;
//! * `ovs`: os-vif's hybrid plug: the TAP on a Linux bridge `qbr…`, a veth
//!   `qvb…`/`qvo…` from it into `br-int` with os-vif's `external_ids` on
//!   `qvo…`. `qvb…` has no transmit offloads, so the kernel segments and
//!   checksums the guest's TSO bursts before Open vSwitch's userspace
//!   datapath, which forwards a frame as it is (docs/dataplane.md);
//! * `hw_veb`: the TAP on a bridge `vbrK` with the emulated VF netdev `vfK`
//!   the SR-IOV agent gave the port (PCI passthrough would hand the VF
//!   itself to the VM).
//!
//! Live migration is QEMU's own: the destination is plugged as the port's
//! destination binding says (a different kind of device than the source's,
//! perhaps), a second QEMU waits there with `-incoming`, the state streams
//! over a Unix socket, and once QEMU reports `completed` the source QEMU is
//! stopped and its plug removed. The NIC's options are the same on both
//! sides ([`VmSpec`]), whatever the backends.
//!
//! The guest is driven through its serial console ([`Console`]), never its
//! network, so a broken network can still be looked at.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::super::netns;
use super::{
    BOOT_TIMEOUT, Console, DOWNTIME_LIMIT_MS, Guest, GuestError, GuestKind, Guests, Image,
    MIGRATION_TIMEOUT, Output, PingResult, Plug, Qmp, STREAM_AWK, StreamReport, VM_MEMORY_MB, Vm,
    VmMigration, VmSlot, VmSpec,
};

/// QEMU's announce rounds after a migration (its defaults: the first 50 ms
/// after, then 150, 250, … up to 550 ms).
fn announce_args() -> serde_json::Value {
    json!({"initial": 50, "max": 550, "rounds": 5, "step": 100})
}

fn vm_error(name: &str) -> impl Fn(super::super::vm::VmError) -> GuestError + '_ {
    move |e| GuestError::Vm(name.to_string(), e.to_string())
}

impl Guests {
    fn vm_spec(&self, name: &str) -> Result<(VmSpec, Arc<tokio::sync::Mutex<()>>), GuestError> {
        self.slots()
            .get(name)
            .map(|s| (s.vm.spec.clone(), s.console.clone()))
            .ok_or_else(|| GuestError::NotFound(name.to_string()))
    }

    /// Boots guest `name` as a QEMU VM on the node `port_id` is bound to.
    pub(super) async fn boot_vm(
        &self,
        image: Image,
        name: &str,
        port_id: &str,
        timeout: Duration,
    ) -> Result<Guest, GuestError> {
        let (host, vif_type, mac) = self.binding(port_id, None)?;
        let node = super::super::ns_name(&self.prefix, &host);
        if !netns::list().contains(&node) {
            return Err(GuestError::HostNotInLab(host));
        }
        // Reserved now: a second boot of the name or the port is refused.
        {
            let mut all = self.lock();
            if all.contains_key(name) {
                return Err(GuestError::Exists(name.to_string()));
            }
            if let Some(o) = all.values().find(|o| o.port_id == port_id) {
                return Err(GuestError::PortInUse(port_id.to_string(), o.name.clone()));
            }
            all.insert(
                name.to_string(),
                Guest {
                    name: name.to_string(),
                    kind: GuestKind::Qemu,
                    port_id: port_id.to_string(),
                    host: host.clone(),
                    vif_type: vif_type.clone(),
                    netns: node.clone(),
                    dev: "eth0".into(),
                    vmm: node.clone(),
                    mac: mac.clone(),
                    ip: None,
                    vf: None,
                    last_migration: None,
                    leg: String::new(),
                    pending: None,
                    retired: None,
                    legs: 1,
                },
            );
        }
        let made = async {
            let plug = self
                .plug_tap(&host, &vif_type, port_id, &mac, name, timeout)
                .await?;
            if let Some(g) = self.lock().get_mut(name) {
                g.leg = plug.leg.clone();
                g.vf = plug.vf;
            }
            let vm = Vm::spawn(
                &image,
                VmSpec {
                    name: name.to_string(),
                    mac: mac.clone(),
                    tap: plug.leg.clone(),
                    netns: Some(node.clone()),
                    memory_mb: VM_MEMORY_MB,
                    run_dir: self.dir.join("vms").join(name),
                    incoming: false,
                },
            )
            .map_err(vm_error(name))?;
            self.slots().insert(
                name.to_string(),
                VmSlot {
                    vm,
                    pending: None,
                    console: Arc::default(),
                },
            );
            self.wait_active(port_id, &host, timeout).await
        }
        .await;
        if let Err(e) = made {
            let _ = self.delete(name);
            return Err(e);
        }
        match self.vm_lease(name).await {
            Ok(ip) => {
                if let Some(g) = self.lock().get_mut(name) {
                    g.ip = Some(ip);
                }
            }
            Err(e) => tracing::warn!(guest = %name, error = %e, "no DHCP lease yet"),
        }
        self.get(name)
    }

    /// The address the guest's DHCP client took (its hook writes it).
    async fn vm_lease(&self, name: &str) -> Result<String, GuestError> {
        let (spec, lock) = self.vm_spec(name)?;
        let _one = lock.lock().await;
        let console_error = |e: super::super::console::ConsoleError| {
            GuestError::Console(name.to_string(), e.to_string())
        };
        let mut c = Console::connect(&spec.console_path(), Duration::from_secs(20))
            .await
            .map_err(console_error)?;
        c.ready(BOOT_TIMEOUT).await.map_err(console_error)?;
        let o = c
            .until_ok("cat /run/lease", Duration::from_secs(60))
            .await
            .map_err(console_error)?;
        let ip = o.text.trim();
        match (o.status, ip.parse::<Ipv4Addr>()) {
            (0, Ok(_)) => Ok(ip.to_string()),
            _ => Err(GuestError::NoLease(name.to_string(), o.text)),
        }
    }

    /// Runs one shell command line in a QEMU guest through its console.
    pub(super) async fn vm_exec(
        &self,
        name: &str,
        command: &str,
        timeout: Duration,
    ) -> Result<Output, GuestError> {
        let (spec, lock) = self.vm_spec(name)?;
        let _one = lock.lock().await;
        let console_error = |e: super::super::console::ConsoleError| {
            GuestError::Console(name.into(), e.to_string())
        };
        let mut c = Console::connect(&spec.console_path(), Duration::from_secs(10))
            .await
            .map_err(console_error)?;
        c.exec(command, timeout).await.map_err(console_error)
    }

    pub(super) async fn vm_ping(
        &self,
        name: &str,
        target: Ipv4Addr,
        count: u64,
        interval_ms: u64,
    ) -> Result<PingResult, GuestError> {
        let interval = format!("{:.3}", interval_ms as f64 / 1000.0);
        let budget = Duration::from_millis(count * interval_ms) + Duration::from_secs(10);
        let o = self
            .vm_exec(
                name,
                &format!("ping -c {count} -i {interval} -W 1 {target}"),
                budget,
            )
            .await?;
        Ok(super::ping_result(name, target, interval_ms, &o.text))
    }

    /// Starts `ping` in the VM in the background, its output in a file.
    pub(super) async fn vm_start_stream(
        &self,
        name: &str,
        target: Ipv4Addr,
        interval_ms: u64,
    ) -> Result<(), GuestError> {
        let interval = format!("{:.3}", interval_ms as f64 / 1000.0);
        let cmd = format!(
            "[ -f /tmp/stream.pid ] && kill -INT $(cat /tmp/stream.pid) 2>/dev/null; \
             ping -i {interval} -W 1 {target} >/tmp/stream 2>&1 </dev/null & echo $! >/tmp/stream.pid"
        );
        let o = self.vm_exec(name, &cmd, Duration::from_secs(10)).await?;
        if o.status != 0 {
            return Err(GuestError::Console(name.to_string(), o.text));
        }
        Ok(())
    }

    /// Stops the VM's stream (SIGINT: `ping` writes its summary) and reads
    /// what it saw.
    pub(super) async fn vm_stop_stream(
        &self,
        name: &str,
        target: Ipv4Addr,
        interval_ms: u64,
    ) -> Result<StreamReport, GuestError> {
        let cmd = format!(
            "kill -INT $(cat /tmp/stream.pid) && sleep 0.3; awk '{STREAM_AWK}' /tmp/stream; \
             rm -f /tmp/stream /tmp/stream.pid"
        );
        let o = self.vm_exec(name, &cmd, Duration::from_secs(20)).await?;
        let Some((sent, lost)) = read_stream(&o.text) else {
            return Err(GuestError::Console(name.to_string(), o.text));
        };
        let run = lost.iter().map(|(a, b)| b - a + 1).max().unwrap_or(0);
        let lost: Vec<u64> = lost.iter().flat_map(|&(a, b)| a..=b).collect();
        Ok(StreamReport {
            from: name.to_string(),
            target,
            interval_ms,
            sent,
            answered: sent - lost.len() as u64,
            lost,
            outage_ms: run * interval_ms,
        })
    }

    /// Plugs QEMU's TAP for port `port_id` on `host` as `vif_type` says, and
    /// waits for the node's agent to have the device. Nothing is left on the
    /// node when it fails.
    pub(super) async fn plug_tap(
        &self,
        host: &str,
        vif_type: &str,
        port_id: &str,
        mac: &str,
        vm: &str,
        timeout: Duration,
    ) -> Result<Plug, GuestError> {
        let node = super::super::ns_name(&self.prefix, host);
        if !netns::list().contains(&node) {
            return Err(GuestError::HostNotInLab(host.to_string()));
        }
        let tap = switchyard_agent::linux::tap_name(port_id);
        let mut plug = Plug {
            host: host.to_string(),
            vif_type: vif_type.to_string(),
            leg: tap.clone(),
            vf: None,
            qemu: true,
        };
        // The TAP with the virtio-net header, as QEMU opens it (vnet_hdr=on).
        let make_tap = |br: Option<&str>| -> Result<(), GuestError> {
            netns::ip_in(
                &node,
                &["tuntap", "add", "dev", &tap, "mode", "tap", "vnet_hdr"],
            )?;
            if let Some(br) = br {
                netns::enslave(&node, &tap, br)?;
            }
            netns::ip_in(&node, &["link", "set", &tap, "up"])?;
            Ok(())
        };
        let r = match vif_type {
            "vrouter" => {
                async {
                    make_tap(None)?;
                    self.wait_plugged(host, port_id, timeout).await.map(|_| ())
                }
                .await
            }
            "ovs" => {
                async {
                    let (qbr, qvb, qvo) = hybrid_names(port_id);
                    netns::bridge(&node, &qbr)?;
                    make_tap(Some(&qbr))?;
                    netns::ip_in(
                        &node,
                        &["link", "add", &qvb, "type", "veth", "peer", "name", &qvo],
                    )?;
                    netns::enslave(&node, &qvb, &qbr)?;
                    netns::ip_in(&node, &["link", "set", &qvb, "up"])?;
                    netns::ip_in(&node, &["link", "set", &qvo, "up"])?;
                    super::tx_off(&node, &qvb)?;
                    self.ovs_add_port(host, &qvo, port_id, mac, vm)?;
                    self.wait_plugged(host, port_id, timeout).await.map(|_| ())
                }
                .await
            }
            "hw_veb" => {
                async {
                    let k = self.vf_of(host, port_id, timeout).await?;
                    plug.vf = Some(k);
                    let vbr = format!("vbr{k}");
                    netns::bridge(&node, &vbr)?;
                    netns::enslave(&node, &format!("vf{k}"), &vbr)?;
                    make_tap(Some(&vbr))
                }
                .await
            }
            other => return Err(GuestError::VifType(other.to_string())),
        };
        match r {
            Ok(()) => Ok(plug),
            Err(e) => {
                self.unplug(port_id, &plug);
                Err(e)
            }
        }
    }

    /// Removes what [`Guests::plug_tap`] made (QEMU is stopped first: the
    /// TAP is persistent and outlives it).
    pub(super) fn unplug_tap(&self, port_id: &str, plug: &Plug) {
        let node = super::super::ns_name(&self.prefix, &plug.host);
        let del = |dev: &str| {
            let _ = netns::ip_in(&node, &["link", "del", dev]);
        };
        match plug.vif_type.as_str() {
            "ovs" => {
                let (qbr, _, qvo) = hybrid_names(port_id);
                self.ovs_del_port(&plug.host, &qvo);
                del(&qvo);
                del(&qbr);
            }
            "hw_veb" => {
                if let Some(k) = plug.vf {
                    del(&format!("vbr{k}"));
                }
            }
            _ => {}
        }
        del(&plug.leg);
    }

    /// Nova's `pre_live_migration` for a QEMU guest: its TAP plugged on
    /// `dest` as the destination binding says, and a QEMU there waiting for
    /// the state. Returns the device's local port on `dest`.
    pub(super) async fn vm_prepare_move(
        &self,
        g: &Guest,
        dest: &str,
        vif_type: &str,
        n: u32,
        timeout: Duration,
    ) -> Result<(Plug, u32), GuestError> {
        let image = self
            .image
            .clone()
            .ok_or_else(|| GuestError::Vm(g.name.clone(), "no guest image".into()))?;
        // Back to where it just came from (a rollback): the old plug goes
        // first, its devices have the names the new one takes.
        let retired = self
            .lock()
            .get_mut(&g.name)
            .and_then(|r| r.retired.take_if(|p| p.host == dest));
        if let Some(p) = retired {
            self.unplug(&g.port_id, &p);
        }
        let plug = self
            .plug_tap(dest, vif_type, &g.port_id, &g.mac, &g.name, timeout)
            .await?;
        let local = self
            .device(dest, &g.port_id)
            .await
            .map(|i| i.local_port)
            .unwrap_or_default();
        let spawned = Vm::spawn(
            &image,
            VmSpec {
                name: g.name.clone(),
                mac: g.mac.clone(),
                tap: plug.leg.clone(),
                netns: Some(super::super::ns_name(&self.prefix, dest)),
                memory_mb: VM_MEMORY_MB,
                run_dir: self.dir.join("vms").join(format!("{}.{n}", g.name)),
                incoming: true,
            },
        );
        let vm = match spawned {
            Ok(vm) => vm,
            Err(e) => {
                self.unplug(&g.port_id, &plug);
                return Err(vm_error(&g.name)(e));
            }
        };
        match self.slots().get_mut(&g.name) {
            Some(s) => s.pending = Some(vm),
            None => {
                self.unplug(&g.port_id, &plug);
                return Err(GuestError::NotFound(g.name.clone()));
            }
        }
        Ok((plug, local))
    }

    /// QEMU's migration of guest `g` to the destination prepared with
    /// `plug`; on success the source QEMU is stopped and its plug removed.
    /// On failure the destination goes and the VM runs on the source.
    pub(super) async fn vm_complete_move(&self, g: &Guest, plug: Plug) -> Result<(), GuestError> {
        let (src, dst, lock) = {
            let slots = self.slots();
            let s = slots
                .get(&g.name)
                .ok_or_else(|| GuestError::NotFound(g.name.clone()))?;
            let dst = s
                .pending
                .as_ref()
                .map(|v| v.spec.clone())
                .ok_or_else(|| GuestError::NotPrepared(g.name.clone(), plug.host.clone()))?;
            (s.vm.spec.clone(), dst, s.console.clone())
        };
        // No console session while the VM changes process.
        let _one = lock.lock().await;
        let moved = async {
            let t = Duration::from_secs(20);
            let mut qs = Qmp::connect(&src.qmp_path(), t).await?;
            let mut qd = Qmp::connect(&dst.qmp_path(), t).await?;
            super::super::vm::migrate(&mut qs, &mut qd, &dst, DOWNTIME_LIMIT_MS, MIGRATION_TIMEOUT)
                .await
        }
        .await
        .map_err(|e| e.to_string());
        let stats = match moved {
            Ok(s) => s,
            Err(e) => {
                if let Some(s) = self.slots().get_mut(&g.name) {
                    s.pending = None;
                }
                self.unplug(&g.port_id, &plug);
                return Err(GuestError::Migration(g.name.clone(), e, g.host.clone()));
            }
        };
        let old = {
            let mut slots = self.slots();
            slots.get_mut(&g.name).and_then(|s| {
                let new = s.pending.take()?;
                Some(std::mem::replace(&mut s.vm, new))
            })
        };
        if let Some(mut old) = old {
            old.kill();
            let _ = std::fs::remove_dir_all(&old.spec.run_dir);
        }
        let source = Plug {
            host: g.host.clone(),
            vif_type: g.vif_type.clone(),
            leg: g.leg.clone(),
            vf: g.vf,
            qemu: true,
        };
        if let Some(r) = self.lock().get_mut(&g.name) {
            r.last_migration = Some(VmMigration {
                from: g.host.clone(),
                to: plug.host.clone(),
                total_ms: stats.total_ms,
                downtime_ms: stats.downtime_ms,
            });
            r.netns = super::super::ns_name(&self.prefix, &plug.host);
            r.vmm = r.netns.clone();
            r.host = plug.host.clone();
            r.vif_type = plug.vif_type.clone();
            r.vf = plug.vf;
            r.leg = plug.leg.clone();
            // Removed after the port is active here ([`Guests::announce`]):
            // until then the source's agent keeps serving what it had.
            r.retired = Some(source);
        }
        Ok(())
    }

    /// QMP `announce-self`: the VM's RARPs again, now that its port is
    /// active on its new node.
    pub(super) async fn vm_announce(&self, name: &str) -> Result<(), GuestError> {
        let (spec, _) = self.vm_spec(name)?;
        let t = Duration::from_secs(5);
        let mut q = Qmp::connect(&spec.qmp_path(), t)
            .await
            .map_err(|e| GuestError::Vm(name.to_string(), e.to_string()))?;
        q.execute("announce-self", Some(announce_args()), t)
            .await
            .map_err(|e| GuestError::Vm(name.to_string(), e.to_string()))?;
        Ok(())
    }

    /// Stops a QEMU guest's processes (the VM and a prepared destination).
    pub(super) fn vm_stop(&self, name: &str) {
        if let Some(mut s) = self.slots().remove(name) {
            s.vm.kill();
            let _ = std::fs::remove_dir_all(&s.vm.spec.run_dir);
            if let Some(mut p) = s.pending.take() {
                p.kill();
                let _ = std::fs::remove_dir_all(&p.spec.run_dir);
            }
        }
    }

    /// Stops a prepared destination QEMU.
    pub(super) fn vm_stop_pending(&self, name: &str) {
        let pending = self.slots().get_mut(name).and_then(|s| s.pending.take());
        if let Some(mut p) = pending {
            p.kill();
            let _ = std::fs::remove_dir_all(&p.spec.run_dir);
        }
    }

    /// Every VM stops (the lab is going).
    pub(super) fn vm_stop_all(&self) {
        let names: Vec<String> = self.slots().keys().cloned().collect();
        for n in names {
            self.vm_stop(&n);
        }
    }

    fn ovs_db(&self, host: &str) -> String {
        let db = self.dir.join(format!("ovs-{host}")).join("db.sock");
        format!("--db=unix:{}", db.display())
    }

    /// Removes `dev` from `host`'s `br-int` (absent is fine).
    pub(super) fn ovs_del_port(&self, host: &str, dev: &str) {
        let _ = netns::run(
            "ovs-vsctl",
            &[&self.ovs_db(host), "--if-exists", "del-port", "br-int", dev],
        );
    }

    /// Adds `dev` to `host`'s `br-int` with os-vif's `external_ids`.
    pub(super) fn ovs_add_port(
        &self,
        host: &str,
        dev: &str,
        port_id: &str,
        mac: &str,
        vm: &str,
    ) -> Result<(), GuestError> {
        netns::run(
            "ovs-vsctl",
            &[
                &self.ovs_db(host),
                "add-port",
                "br-int",
                dev,
                "--",
                "set",
                "Interface",
                dev,
                &format!("external_ids:iface-id={port_id}"),
                &format!("external_ids:attached-mac={mac}"),
                "external_ids:iface-status=active",
                &format!("external_ids:vm-uuid={vm}"),
            ],
        )?;
        Ok(())
    }
}
/// os-vif's hybrid plug names for a port: `qbr…`, `qvb…`, `qvo…`.
fn hybrid_names(port_id: &str) -> (String, String, String) {
    let short: String = port_id.chars().take(11).collect();
    (
        format!("qbr{short}"),
        format!("qvb{short}"),
        format!("qvo{short}"),
    )
}

/// `sent N` and `lost A B` lines of [`STREAM_AWK`].
fn read_stream(text: &str) -> Option<(u64, Vec<(u64, u64)>)> {
    let mut sent = None;
    let mut lost = Vec::new();
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["sent", n] => sent = n.parse().ok(),
            ["lost", a, b] => {
                let (a, b) = (a.parse().ok()?, b.parse().ok()?);
                if a == 0 || b < a {
                    return None;
                }
                lost.push((a, b));
            }
            _ => {}
        }
    }
    let sent = sent?;
    lost.iter().all(|&(_, b)| b <= sent).then_some((sent, lost))
}

#[cfg(test)]
mod tests {
    use super::read_stream;

    #[test]
    fn a_vm_stream_report_is_read_and_checked() {
        assert_eq!(
            read_stream("sent 500\nlost 4 4\nlost 8 12\n"),
            Some((500, vec![(4, 4), (8, 12)]))
        );
        assert_eq!(read_stream("sent 3\n"), Some((3, vec![])));
        assert_eq!(read_stream("kill: no such pid\n"), None);
        assert_eq!(
            read_stream("sent 3\nlost 2 9\n"),
            None,
            "beyond what was sent"
        );
        assert_eq!(read_stream("sent 3\nlost 3 2\n"), None);
    }
}
