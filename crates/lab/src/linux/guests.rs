//! Guests in Linux mode: a network namespace with the kernel's own stack per
//! guest, plugged on its Neutron port as os-vif plugs a VM for the binding's
//! `vif_type`, on the node the port is bound to:
//!
//! * `vrouter`: a TAP named `tap` + the port id's first 11 characters in the
//!   node, handed to the vRouter agent (it attaches when the TAP appears),
//!   joined to the guest by a Linux bridge `qbr…` and a veth (`qvb…` in the
//!   node, `eth0` in the guest) — os-vif's hybrid plug: the TAP stays in the
//!   node, so a restarted agent finds it again;
//! * `ovs`: a veth pair, the node's end (named like the TAP) added to
//!   `br-int` with os-vif's `external_ids` (`iface-id`, `attached-mac`,
//!   `iface-status`, `vm-uuid`), the guest's end `eth0`;
//! * `hw_veb`: the VF the SR-IOV agent gave the port (its local port 100 + k
//!   is VF `vfk`), joined to the guest the same way (`vbrk`, `vvbk`): the
//!   emulated NIC lives in the agent's process, so its VF netdevs stay in
//!   the node where a restarted agent finds them, where PCI passthrough
//!   would hand the VF itself to the VM.
//!
//! The guest's NIC takes the port's MAC, and its address by DHCP (busybox
//! `udhcpc`) from switchyard's DHCP service. Pings are the real `ping`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use switchyard_api::App;

use super::netns::{self, NetnsError};

/// The udhcpc event script: applies the lease as a DHCP client would.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    echo "lease $ip/$mask router $router" ;;
esac
exit 0
"#;

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("guest name must be 1 to 12 characters of letters, digits, '-' and '_'")]
    BadName,
    #[error("guest {0} already exists")]
    Exists(String),
    #[error("guest {0} not found")]
    NotFound(String),
    #[error("port {0} could not be found")]
    PortNotFound(String),
    #[error("port {0} is not bound (binding:host_id and a successful binding are needed)")]
    NotBound(String),
    #[error("port {0} is already used by guest {1}")]
    PortInUse(String, String),
    #[error("host {0} is not a node of this lab")]
    HostNotInLab(String),
    #[error("vif_type {0} cannot be plugged here")]
    VifType(String),
    #[error("port {port} did not become ACTIVE on {host} within {secs} s")]
    NotPlugged {
        port: String,
        host: String,
        secs: u64,
    },
    #[error("guest {0} got no DHCP lease: {1}")]
    NoLease(String, String),
    #[error("the VF of port {0} is not known to its agent")]
    NoVf(String),
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

#[derive(Debug, Clone, Serialize)]
pub struct Guest {
    pub name: String,
    pub port_id: String,
    pub host: String,
    pub vif_type: String,
    /// The guest's namespace and its NIC there.
    pub netns: String,
    pub dev: String,
    pub mac: String,
    pub ip: Option<String>,
    /// The VF it is on (`hw_veb`).
    pub vf: Option<u32>,
}

/// A ping run's report (the shape of the emulated lab's).
#[derive(Debug, Clone, Serialize)]
pub struct PingResult {
    pub from: String,
    pub target: Ipv4Addr,
    pub interval_ms: u64,
    pub sent: u64,
    pub answered: u64,
    pub rtt_ms: Option<serde_json::Value>,
}

/// A stream's report: what a `ping -i 0.01` saw.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub from: String,
    pub target: Ipv4Addr,
    pub interval_ms: u64,
    pub sent: u64,
    pub answered: u64,
    /// Sequence numbers never answered.
    pub lost: Vec<u64>,
    /// The longest run of unanswered requests × the interval.
    pub outage_ms: u64,
}

/// A running `ping` stream.
struct Stream {
    child: std::process::Child,
    target: Ipv4Addr,
    interval_ms: u64,
}

#[derive(Clone)]
pub struct Guests {
    inner: Arc<Mutex<BTreeMap<String, Guest>>>,
    streams: Arc<Mutex<BTreeMap<String, Stream>>>,
    prefix: String,
    dir: PathBuf,
}

/// Reads a finished `ping` stream's output: (sent, answered seqs).
fn stream_result(out: &str) -> (u64, Vec<u64>) {
    let (sent, _) = counts(out);
    let mut seqs: Vec<u64> = out
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    (sent, seqs)
}

/// The requests never answered (seq 1..=sent) and the longest gap, in requests.
fn gaps(sent: u64, answered: &[u64]) -> (Vec<u64>, u64) {
    let got: std::collections::BTreeSet<u64> = answered.iter().copied().collect();
    let lost: Vec<u64> = (1..=sent).filter(|s| !got.contains(s)).collect();
    let (mut best, mut run, mut prev) = (0u64, 0u64, 0u64);
    for s in &lost {
        run = if *s == prev + 1 && run > 0 {
            run + 1
        } else {
            1
        };
        prev = *s;
        best = best.max(run);
    }
    (lost, best)
}

fn valid(name: &str) -> bool {
    (1..=12).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// (min, median, max) of the RTTs in `ping`'s per-reply lines.
fn rtts(out: &str) -> Vec<f64> {
    out.lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .collect()
}

/// "N packets transmitted, M received" from `ping`'s summary.
fn counts(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or("");
    let num = |key: &str| {
        line.split(',')
            .find(|p| p.contains(key))
            .and_then(|p| p.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (num("transmitted"), num("received"))
}

impl Guests {
    pub fn new(prefix: &str, dir: &Path) -> Self {
        Guests {
            inner: Arc::default(),
            streams: Arc::default(),
            prefix: prefix.to_string(),
            dir: dir.to_path_buf(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Guest>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn list(&self) -> Vec<Guest> {
        self.lock().values().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Result<Guest, GuestError> {
        self.lock()
            .get(name)
            .cloned()
            .ok_or_else(|| GuestError::NotFound(name.to_string()))
    }

    fn port_status(app: &App, port: &str) -> String {
        app.shared
            .read(|_, st| Ok(st.ports.get(port).map(|p| p.status.as_str().to_string())))
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    async fn wait_active(
        app: &App,
        port: &str,
        host: &str,
        timeout: Duration,
    ) -> Result<(), GuestError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if Self::port_status(app, port) == "ACTIVE" {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(GuestError::NotPlugged {
                    port: port.to_string(),
                    host: host.to_string(),
                    secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Boots guest `name` on Neutron port `port_id`, on the node it is bound to.
    pub async fn boot(
        &self,
        app: &App,
        name: &str,
        port_id: &str,
        timeout: Duration,
    ) -> Result<Guest, GuestError> {
        if !valid(name) {
            return Err(GuestError::BadName);
        }
        {
            let g = self.lock();
            if g.contains_key(name) {
                return Err(GuestError::Exists(name.to_string()));
            }
            if let Some(o) = g.values().find(|o| o.port_id == port_id) {
                return Err(GuestError::PortInUse(port_id.to_string(), o.name.clone()));
            }
        }
        let (host, vif_type, mac) = app
            .shared
            .read(|_, st| {
                Ok(st.ports.get(port_id).map(|p| {
                    let b = p.active_binding();
                    (
                        b.host.clone(),
                        b.vif_type.clone(),
                        p.mac_address.to_string(),
                    )
                }))
            })
            .ok()
            .flatten()
            .ok_or_else(|| GuestError::PortNotFound(port_id.to_string()))?;
        if host.is_empty() || vif_type == "unbound" || vif_type == "binding_failed" {
            return Err(GuestError::NotBound(port_id.to_string()));
        }
        let node = super::ns_name(&self.prefix, &host);
        if !netns::list().contains(&node) {
            return Err(GuestError::HostNotInLab(host));
        }
        let gns = super::ns_name(&self.prefix, &format!("g-{name}"));
        netns::add(&gns)?;
        let r = self
            .plug(app, &node, &gns, &host, &vif_type, port_id, &mac, timeout)
            .await;
        let (dev, vf) = match r {
            Ok(d) => d,
            Err(e) => {
                netns::del(&gns);
                self.unplug_node(&host, &vif_type, port_id, None);
                return Err(e);
            }
        };
        let guest = Guest {
            name: name.to_string(),
            port_id: port_id.to_string(),
            host,
            vif_type,
            netns: gns.clone(),
            dev: dev.clone(),
            mac,
            ip: None,
            vf,
        };
        self.lock().insert(name.to_string(), guest);
        let ip = self.dhcp(&gns, &dev).await;
        match ip {
            Ok(ip) => {
                if let Some(g) = self.lock().get_mut(name) {
                    g.ip = Some(ip);
                }
            }
            Err(e) => tracing::warn!(guest = %name, error = %e, "no DHCP lease yet"),
        }
        self.get(name)
    }

    #[allow(clippy::too_many_arguments)]
    async fn plug(
        &self,
        app: &App,
        node: &str,
        gns: &str,
        host: &str,
        vif_type: &str,
        port_id: &str,
        mac: &str,
        timeout: Duration,
    ) -> Result<(String, Option<u32>), GuestError> {
        let tap = switchyard_agent::linux::tap_name(port_id);
        let mut vf = None;
        let short: String = port_id.chars().take(11).collect();
        // The guest's end of a veth whose node end joins `dev` on a bridge.
        let hybrid = |dev: &str, br: &str, leg: &str| -> Result<(), GuestError> {
            netns::bridge(node, br)?;
            netns::enslave(node, dev, br)?;
            netns::wire((node, leg, None), (gns, "eth0", None))?;
            netns::enslave(node, leg, br)?;
            Ok(())
        };
        match vif_type {
            "vrouter" => {
                netns::tap(node, &tap, None)?;
                Self::wait_active(app, port_id, host, timeout).await?;
                hybrid(&tap, &format!("qbr{short}"), &format!("qvb{short}"))?;
            }
            "ovs" => {
                netns::wire((node, &tap, None), (gns, "eth0", None))?;
                let db = self.dir.join(format!("ovs-{host}")).join("db.sock");
                netns::run(
                    "ovs-vsctl",
                    &[
                        &format!("--db=unix:{}", db.display()),
                        "add-port",
                        "br-int",
                        &tap,
                        "--",
                        "set",
                        "Interface",
                        &tap,
                        &format!("external_ids:iface-id={port_id}"),
                        &format!("external_ids:attached-mac={mac}"),
                        "external_ids:iface-status=active",
                        &format!("external_ids:vm-uuid={gns}"),
                    ],
                )?;
                Self::wait_active(app, port_id, host, timeout).await?;
            }
            "hw_veb" => {
                Self::wait_active(app, port_id, host, timeout).await?;
                let (app2, h, p) = (app.clone(), host.to_string(), port_id.to_string());
                let local = tokio::task::spawn_blocking(move || {
                    app2.shared
                        .introspect(&h, Duration::from_secs(3))
                        .ok()
                        .and_then(|s| {
                            s.interfaces
                                .into_iter()
                                .find(|i| i.port_id == p)
                                .map(|i| i.local_port)
                        })
                })
                .await
                .ok()
                .flatten()
                .ok_or_else(|| GuestError::NoVf(port_id.to_string()))?;
                let k = local.saturating_sub(switchyard_agent::SRIOV_VFS);
                hybrid(&format!("vf{k}"), &format!("vbr{k}"), &format!("vvb{k}"))?;
                vf = Some(k);
            }
            other => return Err(GuestError::VifType(other.to_string())),
        }
        let dev = "eth0".to_string();
        netns::ip_in(gns, &["link", "set", &dev, "address", mac])?;
        netns::ip_in(gns, &["link", "set", &dev, "up"])?;
        Ok((dev, vf))
    }

    async fn dhcp(&self, gns: &str, dev: &str) -> Result<String, GuestError> {
        let script = self.dir.join("udhcpc.sh");
        if !script.exists() {
            std::fs::write(&script, UDHCPC_SCRIPT)
                .map_err(|e| GuestError::NoLease(gns.into(), e.to_string()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| GuestError::NoLease(gns.into(), e.to_string()))?;
        }
        let (gns2, dev2, s) = (
            gns.to_string(),
            dev.to_string(),
            script.display().to_string(),
        );
        let (ok, out) = tokio::task::spawn_blocking(move || {
            netns::exec(
                &gns2,
                &[
                    "busybox", "udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "1", "-i", &dev2, "-s",
                    &s,
                ],
            )
        })
        .await
        .map_err(|e| GuestError::NoLease(gns.into(), e.to_string()))??;
        let ip = out
            .lines()
            .find_map(|l| l.strip_prefix("lease "))
            .and_then(|l| l.split('/').next())
            .map(str::to_string);
        match (ok, ip) {
            (true, Some(ip)) => Ok(ip),
            _ => Err(GuestError::NoLease(gns.to_string(), out)),
        }
    }

    /// Deletes guest `name`: its namespace (and NIC) go; an OVS port leaves br-int.
    pub fn delete(&self, name: &str) -> Result<(), GuestError> {
        let _ = self.stop_stream(name);
        let g = self
            .lock()
            .remove(name)
            .ok_or_else(|| GuestError::NotFound(name.to_string()))?;
        netns::del(&g.netns);
        self.unplug_node(&g.host, &g.vif_type, &g.port_id, g.vf);
        Ok(())
    }

    /// Removes what plugging a guest made in its node (the VM is gone; the
    /// agent sees its device go and reports the port down).
    fn unplug_node(&self, host: &str, vif_type: &str, port_id: &str, vf: Option<u32>) {
        let node = super::ns_name(&self.prefix, host);
        let short: String = port_id.chars().take(11).collect();
        let tap = switchyard_agent::linux::tap_name(port_id);
        match vif_type {
            "vrouter" => {
                let _ = netns::ip_in(&node, &["link", "del", &format!("qbr{short}")]);
                let _ = netns::ip_in(&node, &["link", "del", &format!("qvb{short}")]);
                let _ = netns::ip_in(&node, &["link", "del", &tap]);
            }
            "hw_veb" => {
                if let Some(k) = vf {
                    let _ = netns::ip_in(&node, &["link", "del", &format!("vbr{k}")]);
                    let _ = netns::ip_in(&node, &["link", "del", &format!("vvb{k}")]);
                }
            }
            "ovs" => {
                let db = self.dir.join(format!("ovs-{host}")).join("db.sock");
                let _ = netns::run(
                    "ovs-vsctl",
                    &[
                        &format!("--db=unix:{}", db.display()),
                        "--if-exists",
                        "del-port",
                        "br-int",
                        &tap,
                    ],
                );
                let _ = netns::ip_in(&node, &["link", "del", &tap]);
            }
            _ => {}
        }
    }

    /// Starts a ping stream from guest `name` to `target` every `interval_ms`
    /// (the real `ping`, running until [`Guests::stop_stream`]).
    pub fn start_stream(
        &self,
        name: &str,
        target: Ipv4Addr,
        interval_ms: u64,
    ) -> Result<(), GuestError> {
        let g = self.get(name)?;
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(mut old) = streams.remove(name) {
            let _ = old.child.kill();
            let _ = old.child.wait();
        }
        let interval = format!("{:.3}", interval_ms as f64 / 1000.0);
        let child = std::process::Command::new("ip")
            .args([
                "netns", "exec", &g.netns, "ping", "-n", "-i", &interval, "-W", "1",
            ])
            .arg(target.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| NetnsError::Spawn("ping".into(), e))?;
        streams.insert(
            name.to_string(),
            Stream {
                child,
                target,
                interval_ms,
            },
        );
        Ok(())
    }

    /// Stops guest `name`'s stream (as Ctrl-C would: `ping` prints its summary)
    /// and reports it; `None` when none runs.
    pub fn stop_stream(&self, name: &str) -> Result<Option<StreamReport>, GuestError> {
        let Some(s) = self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
        else {
            return Ok(None);
        };
        if let Ok(pid) = i32::try_from(s.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let out = s
            .child
            .wait_with_output()
            .map_err(|e| NetnsError::Spawn("ping".into(), e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (mut sent, answered) = stream_result(&text);
        // The last request was still in flight when the stream stopped.
        if sent > 0 && !answered.contains(&sent) {
            sent -= 1;
        }
        let (lost, run) = gaps(sent, &answered);
        Ok(Some(StreamReport {
            from: name.to_string(),
            target: s.target,
            interval_ms: s.interval_ms,
            sent,
            answered: answered.len() as u64,
            lost,
            outage_ms: run * s.interval_ms,
        }))
    }

    /// Stops every stream (the lab is going: a process in a removed namespace
    /// would keep it alive).
    pub fn stop_all(&self) {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, mut s) in std::mem::take(&mut *streams) {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }

    /// `count` real pings from guest `name` to `target`, `interval_ms` apart.
    pub async fn ping(
        &self,
        name: &str,
        target: Ipv4Addr,
        count: u64,
        interval_ms: u64,
    ) -> Result<PingResult, GuestError> {
        let g = self.get(name)?;
        let interval = format!("{:.3}", interval_ms as f64 / 1000.0);
        let (ns, t, c) = (g.netns.clone(), target.to_string(), count.to_string());
        let (_, out) = tokio::task::spawn_blocking(move || {
            netns::exec(
                &ns,
                &["ping", "-n", "-c", &c, "-i", &interval, "-W", "1", &t],
            )
        })
        .await
        .map_err(|e| GuestError::NoLease(name.into(), e.to_string()))??;
        let (sent, answered) = counts(&out);
        let mut r = rtts(&out);
        r.sort_by(f64::total_cmp);
        let rtt = (!r.is_empty()).then(|| {
            let median = if r.len() % 2 == 1 {
                r[r.len() / 2]
            } else {
                (r[r.len() / 2 - 1] + r[r.len() / 2]) / 2.0
            };
            serde_json::json!({"min": r[0], "median": median, "max": r[r.len() - 1],
                "avg": r.iter().sum::<f64>() / r.len() as f64})
        });
        Ok(PingResult {
            from: name.to_string(),
            target,
            interval_ms,
            sent,
            answered,
            rtt_ms: rtt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{counts, gaps, rtts, stream_result};

    #[test]
    fn streams_report_what_was_lost_and_the_longest_outage() {
        let out = "64 bytes from 10.0.0.3: icmp_seq=1 ttl=64 time=0.4 ms\n\
            64 bytes from 10.0.0.3: icmp_seq=2 ttl=64 time=0.4 ms\n\
            64 bytes from 10.0.0.3: icmp_seq=6 ttl=64 time=0.4 ms\n\
            64 bytes from 10.0.0.3: icmp_seq=8 ttl=64 time=0.4 ms\n\
            --- 10.0.0.3 ping statistics ---\n\
            8 packets transmitted, 4 received, 50% packet loss, time 70ms\n";
        let (sent, got) = stream_result(out);
        assert_eq!((sent, got.clone()), (8, vec![1, 2, 6, 8]));
        assert_eq!(gaps(sent, &got), (vec![3, 4, 5, 7], 3));
        assert_eq!(gaps(3, &[1, 2, 3]), (vec![], 0));
    }

    #[test]
    fn ping_output_is_read() {
        let out = "PING 10.0.0.3 (10.0.0.3) 56(84) bytes of data.\n\
            64 bytes from 10.0.0.3: icmp_seq=1 ttl=64 time=0.412 ms\n\
            64 bytes from 10.0.0.3: icmp_seq=3 ttl=64 time=1.05 ms\n\n\
            --- 10.0.0.3 ping statistics ---\n\
            3 packets transmitted, 2 received, 33.3333% packet loss, time 2003ms\n";
        assert_eq!(counts(out), (3, 2));
        assert_eq!(rtts(out), vec![0.412, 1.05]);
        assert_eq!(counts("ping: connect: Network is unreachable"), (0, 0));
    }
}
