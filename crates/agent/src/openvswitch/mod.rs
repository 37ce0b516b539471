//! OVS nodes on real Open vSwitch, programmed as Neutron's OVS agent
//! programs it: OVSDB (our [`ovsdb`] client) for bridges, ports, tags and the
//! interface monitor; OpenFlow through `ovs-ofctl -O OpenFlow13
//! replace-flows`, which replaces a bridge's whole table by the planned one
//! with the smallest change. `ovs-ofctl` rather than our own OpenFlow 1.3
//! encoder: it is what Neutron's `ovs_lib` drove for years, it ships with
//! every Open vSwitch, and a table is replaced as one transaction; the
//! flows themselves come from the sans-io [`plan`].
//!
//! At start the agent makes sure `br-int` and each physnet bridge exist
//! (userspace datapath, `datapath_type=netdev`: this kernel has no
//! openvswitch module), joined by a patch pair, with the physnet's NIC on its
//! bridge. It then follows the node's state and OVSDB's Interface table: a VM
//! port appears when os-vif adds its TAP to `br-int` with
//! `external_ids:iface-id`; once OVS gives it an OpenFlow port it is plugged
//! and gets its local VLAN tag and anti-spoofing flows. Local VLANs are kept
//! in each port's `other_config` (`physical_network`, `segmentation_id`), so
//! a restarted agent keeps the ones in use.

pub mod firewall;
pub mod ovsdb;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, watch};

use crate::NodeAgent;
use crate::client::Event;
use ovsdb::{Ovsdb, OvsdbError};
use plan::{Iface, Lvids, patch_names};

#[derive(Debug, thiserror::Error)]
pub enum OvsError {
    #[error(transparent)]
    Ovsdb(#[from] OvsdbError),
    #[error("ovs-ofctl on {0}: {1}")]
    Ofctl(String, String),
}

pub struct Options {
    /// `ovsdb-server`'s Unix socket.
    pub db: PathBuf,
    /// Where `ovs-vswitchd` keeps its bridges' OpenFlow sockets (`BR.mgmt`).
    pub rundir: PathBuf,
    /// physnet → its bridge (Neutron's `bridge_mappings`).
    pub mappings: BTreeMap<String, String>,
    /// physnet bridge → the NIC it carries, added when missing.
    pub nics: BTreeMap<String, String>,
}

/// OVSDB's tables as the monitor shows them: table → row uuid → row.
type Cache = HashMap<String, HashMap<String, Value>>;

fn apply_update(cache: &mut Cache, update: &Value) {
    let Some(tables) = update.as_object() else {
        return;
    };
    for (table, rows) in tables {
        let t = cache.entry(table.clone()).or_default();
        for (uuid, change) in rows.as_object().into_iter().flatten() {
            match (change.get("new"), change.get("old"), t.get_mut(uuid)) {
                // A modification: the columns given replace those cached,
                // the others stay. ovsdb-server's `monitor` sends every
                // monitored column in "new", but nothing here depends on
                // it: an update that carried only the changed ones would
                // not wipe the rest.
                (Some(Value::Object(new)), Some(_), Some(Value::Object(row))) => {
                    for (k, v) in new {
                        row.insert(k.clone(), v.clone());
                    }
                }
                (Some(new), _, _) => {
                    t.insert(uuid.clone(), new.clone());
                }
                (None, _, _) => {
                    t.remove(uuid);
                }
            }
        }
    }
}

/// An OVSDB integer column (`5`, or an empty set `["set", []]`).
fn int_of(v: &Value) -> Option<i64> {
    v.as_i64()
}

/// An OVSDB map column as pairs.
fn map_of(v: &Value) -> BTreeMap<String, String> {
    match v {
        Value::Array(a) if a.first() == Some(&json!("map")) => a
            .get(1)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|kv| {
                let kv = kv.as_array()?;
                Some((
                    kv.first()?.as_str()?.to_string(),
                    kv.get(1)?.as_str()?.to_string(),
                ))
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn names(cache: &Cache, table: &str) -> BTreeSet<String> {
    cache
        .get(table)
        .into_iter()
        .flat_map(|t| t.values())
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect()
}

fn ifaces(cache: &Cache) -> Vec<Iface> {
    cache
        .get("Interface")
        .into_iter()
        .flat_map(|t| t.values())
        .filter_map(|r| {
            Some(Iface {
                name: r["name"].as_str()?.to_string(),
                ofport: int_of(&r["ofport"]).unwrap_or(-1),
                iface_id: map_of(&r["external_ids"]).remove("iface-id"),
            })
        })
        .collect()
}

/// The uuid of the Bridge row named `name`.
fn bridge_uuid(cache: &Cache, name: &str) -> Option<String> {
    cache
        .get("Bridge")?
        .iter()
        .find(|(_, r)| r["name"] == name)
        .map(|(u, _)| u.clone())
}

/// Operations adding a port (with one interface of `itype`, `options`) to bridge `br`.
fn add_port_ops(br_ref: Value, name: &str, itype: &str, options: Value, n: usize) -> Vec<Value> {
    let (i, p) = (format!("i{n}"), format!("p{n}"));
    let mut row = json!({"name": name});
    if !itype.is_empty() {
        row["type"] = json!(itype);
    }
    if !options.is_null() {
        row["options"] = options;
    }
    vec![
        json!({"op": "insert", "table": "Interface", "row": row, "uuid-name": i}),
        json!({"op": "insert", "table": "Port", "row": {"name": name, "interfaces": ["named-uuid", i]}, "uuid-name": p}),
        json!({"op": "mutate", "table": "Bridge", "where": [["_uuid", "==", br_ref]],
            "mutations": [["ports", "insert", ["set", [["named-uuid", p]]]]]}),
    ]
}

pub struct Backend {
    agent: Arc<Mutex<NodeAgent>>,
    db: Ovsdb,
    cache: Cache,
    opts: Options,
    lvids: Lvids,
    flows: BTreeMap<String, Vec<String>>,
    plugged: BTreeSet<String>,
    events: mpsc::Sender<Event>,
    updates: mpsc::Receiver<Value>,
}

fn lock(agent: &Mutex<NodeAgent>) -> std::sync::MutexGuard<'_, NodeAgent> {
    agent.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Backend {
    /// Connects to OVSDB, starts the monitor and builds the bridges.
    pub async fn open(
        agent: Arc<Mutex<NodeAgent>>,
        opts: Options,
        events: mpsc::Sender<Event>,
    ) -> Result<Self, OvsError> {
        let (tx, updates) = mpsc::channel(256);
        let db = Ovsdb::connect(&opts.db, tx).await?;
        let init = db
            .monitor(
                "switchyard",
                json!({
                    "Bridge": {"columns": ["name", "ports"]},
                    "Port": {"columns": ["name", "tag", "other_config"]},
                    "Interface": {"columns": ["name", "ofport", "external_ids"]},
                }),
            )
            .await?;
        let mut cache = Cache::new();
        apply_update(&mut cache, &init);
        let mut b = Backend {
            agent,
            db,
            cache,
            opts,
            lvids: Lvids::default(),
            flows: BTreeMap::new(),
            plugged: BTreeSet::new(),
            events,
            updates,
        };
        b.ensure_bridges().await?;
        b.recover_lvids();
        Ok(b)
    }

    /// `br-int`, each physnet bridge, their patch pair and the physnet NIC.
    async fn ensure_bridges(&mut self) -> Result<(), OvsError> {
        let mut wanted = vec!["br-int".to_string()];
        wanted.extend(self.opts.mappings.values().cloned());
        let bridges = names(&self.cache, "Bridge");
        let mut ops = Vec::new();
        for (n, br) in wanted.iter().enumerate() {
            if bridges.contains(br) {
                continue;
            }
            let (i, p, b) = (format!("bi{n}"), format!("bp{n}"), format!("bb{n}"));
            ops.push(json!({"op": "insert", "table": "Interface", "row": {"name": br, "type": "internal"}, "uuid-name": i}));
            ops.push(json!({"op": "insert", "table": "Port", "row": {"name": br, "interfaces": ["named-uuid", i]}, "uuid-name": p}));
            ops.push(json!({"op": "insert", "table": "Bridge", "row": {"name": br, "datapath_type": "netdev",
                "ports": ["named-uuid", p], "fail_mode": "secure"}, "uuid-name": b}));
            ops.push(json!({"op": "mutate", "table": "Open_vSwitch", "where": [],
                "mutations": [["bridges", "insert", ["set", [["named-uuid", b]]]]]}));
        }
        if !ops.is_empty() {
            self.db.transact(ops).await?;
            self.settle().await;
        }
        let ports = names(&self.cache, "Port");
        let mut ops = Vec::new();
        let mut n = 0usize;
        let br_ref = |cache: &Cache, br: &str| -> Option<Value> {
            bridge_uuid(cache, br).map(|u| json!(["uuid", u]))
        };
        for br in self.opts.mappings.values() {
            let (int_patch, phy_patch) = patch_names(br);
            if !ports.contains(&int_patch)
                && let Some(r) = br_ref(&self.cache, "br-int")
            {
                ops.extend(add_port_ops(
                    r,
                    &int_patch,
                    "patch",
                    json!(["map", [["peer", phy_patch]]]),
                    n,
                ));
                n += 1;
            }
            if !ports.contains(&phy_patch)
                && let Some(r) = br_ref(&self.cache, br)
            {
                ops.extend(add_port_ops(
                    r,
                    &phy_patch,
                    "patch",
                    json!(["map", [["peer", int_patch]]]),
                    n,
                ));
                n += 1;
            }
            if let Some(nic) = self.opts.nics.get(br)
                && !ports.contains(nic)
                && let Some(r) = br_ref(&self.cache, br)
            {
                ops.extend(add_port_ops(r, nic, "", Value::Null, n));
                n += 1;
            }
        }
        if !ops.is_empty() {
            self.db.transact(ops).await?;
            self.settle().await;
        }
        Ok(())
    }

    /// Takes in the monitor updates waiting (ovsdb-server sends the update a
    /// transaction causes before the transaction's reply, so after a
    /// transact they are all here).
    /// Applies the updates already received; returns whether there were any.
    async fn settle(&mut self) -> bool {
        let mut any = false;
        while let Ok(p) = self.updates.try_recv() {
            tracing::debug!(update = %p[1], "OVSDB update");
            apply_update(&mut self.cache, &p[1]);
            any = true;
        }
        any
    }

    /// Local VLANs of ports configured by an earlier run (their other_config).
    fn recover_lvids(&mut self) {
        for r in self.cache.get("Port").into_iter().flat_map(|t| t.values()) {
            let oc = map_of(&r["other_config"]);
            if let (Some(tag), Some(p), Some(s)) = (
                int_of(&r["tag"]).and_then(|t| u16::try_from(t).ok()),
                oc.get("physical_network"),
                oc.get("segmentation_id")
                    .and_then(|s| s.parse::<u16>().ok()),
            ) && tag != plan::DEAD_VLAN
            {
                self.lvids.0.insert((p.clone(), s), tag);
            }
        }
    }

    /// Brings OVS in line with the node's state — once the agent holds it:
    /// until its first snapshot, Open vSwitch keeps what it runs (a
    /// restarted agent does not wipe the flows carrying traffic).
    ///
    /// Returns whether OVSDB changed meanwhile (updates that came with the
    /// tag transaction): the plan was made from what was before, so the
    /// caller reconciles again — those updates will not come a second time.
    async fn reconcile(&mut self) -> Result<bool, OvsError> {
        let (items, synced) = {
            let a = lock(&self.agent);
            (a.items().clone(), a.synced())
        };
        if !synced {
            return Ok(false);
        }
        let mut moved = false;
        let ifs = ifaces(&self.cache);
        let plan = plan::plan(&items, &ifs, &self.opts.mappings, &mut self.lvids);
        // Tags.
        let mut ops = Vec::new();
        for r in self.cache.get("Port").into_iter().flat_map(|t| t.values()) {
            let Some(name) = r["name"].as_str() else {
                continue;
            };
            let Some((tag, net)) = plan.tags.get(name) else {
                continue;
            };
            if int_of(&r["tag"]) == Some(i64::from(*tag)) {
                continue;
            }
            let mut oc = vec![];
            if let Some((p, s)) = net {
                oc.push(json!(["physical_network", p]));
                oc.push(json!(["segmentation_id", s.to_string()]));
            }
            ops.push(
                json!({"op": "update", "table": "Port", "where": [["name", "==", name]],
                "row": {"tag": tag, "other_config": ["map", oc]}}),
            );
        }
        if !ops.is_empty() {
            self.db.transact(ops).await?;
            moved = self.settle().await;
        }
        // Flows.
        for (br, flows) in &plan.flows {
            if self.flows.get(br) == Some(flows) {
                continue;
            }
            self.replace_flows(br, flows).await?;
            self.flows.insert(br.clone(), flows.clone());
        }
        // Devices: a port is plugged once OVS attached its interface.
        let present: BTreeSet<String> = ifs
            .iter()
            .filter(|i| i.ofport > 0)
            .filter_map(|i| i.iface_id.clone())
            .collect();
        let mut changed = false;
        {
            let mut a = lock(&self.agent);
            for id in present.difference(&self.plugged) {
                tracing::info!(port_id = %id, "device plugged (Open vSwitch attached its interface)");
                a.set_device(id, true);
                changed = true;
            }
            for id in self.plugged.difference(&present) {
                tracing::info!(port_id = %id, "device unplugged (its interface left Open vSwitch)");
                a.set_device(id, false);
                changed = true;
            }
        }
        self.plugged = present;
        if changed {
            let _ = self.events.try_send(Event::Changed);
        }
        Ok(moved)
    }

    async fn replace_flows(&self, br: &str, flows: &[String]) -> Result<(), OvsError> {
        let target = format!(
            "unix:{}",
            self.opts.rundir.join(format!("{br}.mgmt")).display()
        );
        let text = flows.join("\n") + "\n";
        let br = br.to_string();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = std::process::Command::new("ovs-ofctl")
                .args(["-O", "OpenFlow13", "replace-flows", &target, "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| OvsError::Ofctl(br.clone(), e.to_string()))?;
            if let Some(mut stdin) = child.stdin.take() {
                // A failure here shows in ovs-ofctl's own error below.
                let _ = stdin.write_all(text.as_bytes());
            }
            let out = child
                .wait_with_output()
                .map_err(|e| OvsError::Ofctl(br.clone(), e.to_string()))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(OvsError::Ofctl(
                    br.clone(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                ))
            }
        })
        .await
        .map_err(|e| OvsError::Ofctl("task".into(), e.to_string()))?
    }

    /// Reads the firewall's drop counters from `br-int` into the node's
    /// counters (`node show`), when it has firewall flows.
    async fn read_drops(&self) {
        if !self
            .flows
            .get("br-int")
            .is_some_and(|f| f.iter().any(|l| l.contains("ct(")))
        {
            return;
        }
        let target = format!("unix:{}", self.opts.rundir.join("br-int.mgmt").display());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("ovs-ofctl")
                .args(["-O", "OpenFlow13", "dump-flows", &target])
                .output()
        })
        .await;
        if let Ok(Ok(o)) = out
            && o.status.success()
        {
            let drops = firewall::drop_counts(&String::from_utf8_lossy(&o.stdout));
            lock(&self.agent).datapath_drops = drops;
        }
    }

    /// Follows the node's state and OVSDB until `stop`.
    pub async fn run(
        mut self,
        applied: Arc<Notify>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), OvsError> {
        // Open vSwitch may still be bringing a new bridge up: a failed
        // reconcile is retried a second later (and at every change).
        let mut logged = false;
        let mut stats = tokio::time::interval(std::time::Duration::from_secs(2));
        stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            self.settle().await;
            let retry = match self.reconcile().await {
                Ok(true) => {
                    logged = false;
                    continue;
                }
                Ok(false) => {
                    logged = false;
                    false
                }
                Err(e) => {
                    if !logged {
                        tracing::warn!(error = %e, "programming Open vSwitch failed; retrying");
                        logged = true;
                    }
                    true
                }
            };
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                _ = applied.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)), if retry => {}
                _ = stats.tick() => self.read_drops().await,
                u = self.updates.recv() => match u {
                    // params: [monitor id, table updates]
                    Some(p) => {
                        tracing::debug!(update = %p[1], "OVSDB update");
                        apply_update(&mut self.cache, &p[1])
                    }
                    None => return Err(OvsError::Ovsdb(OvsdbError::Closed)),
                },
            }
        }
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    /// A row inserted whole, then modified by updates that carry only what
    /// changed, then deleted.
    #[test]
    fn a_modification_keeps_the_columns_it_does_not_carry() {
        let mut cache = Cache::default();
        apply_update(
            &mut cache,
            &json!({"Interface": {"u1": {"new": {"name": "qvo1", "ofport": ["set", []],
                "external_ids": ["map", [["iface-id", "p1"]]]}}}}),
        );
        apply_update(
            &mut cache,
            &json!({"Interface": {"u1": {"old": {"ofport": ["set", []]}, "new": {"ofport": 3}}}}),
        );
        let i = ifaces(&cache);
        assert_eq!(i.len(), 1);
        assert_eq!((i[0].ofport, i[0].iface_id.as_deref()), (3, Some("p1")));
        apply_update(
            &mut cache,
            &json!({"Interface": {"u1": {"old": {"name": "qvo1"}}}}),
        );
        assert!(ifaces(&cache).is_empty());
    }
}
