//! The compute service's own records — servers and the flavor list — kept in the lab's SQLite database (table `lab_compute`, beside
//! the controller's tables), so that a restarted `lab up` on the same
//! database knows its servers again, as Nova's database outlives
//! `nova-compute`. Each change is written when it is made (one row per
//! record, JSON), not at shutdown: a killed lab loses nothing that was
//! answered.
//!
//! What is not kept: in-flight work (a build, a migration), external
//! events, migration records and quota overrides. [`super::Compute::resume`]
//! settles what was in flight when the lab stopped.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use super::catalog::Flavor;
use super::{Fault, InstanceAction, Server, Status, Vif, lock};

#[derive(Debug, thiserror::Error)]
#[error("compute records in {path}: {source}")]
pub struct PersistError {
    path: String,
    source: rusqlite::Error,
}

/// The table, on one connection of its own.
pub struct Records {
    db: Mutex<Connection>,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records").finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct ServerRecord {
    id: String,
    name: String,
    project_id: String,
    #[serde(default)]
    user_id: String,
    status: String,
    host: Option<String>,
    vifs: Vec<VifRecord>,
    created: String,
    updated: String,
    fault: Option<(u16, String, String)>,
    flavor: Option<FlavorRecord>,
    image: Option<String>,
    actions: Vec<ActionRecord>,
    seq: u64,
}

#[derive(Serialize, Deserialize)]
struct ActionRecord {
    action: String,
    request_id: String,
    project_id: String,
    user_id: String,
    start_time: String,
    message: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct VifRecord {
    port_id: String,
    network_id: String,
    network_name: String,
    mac: String,
    ips: Vec<String>,
    floating_ips: Vec<String>,
    vnic_type: String,
    vif_type: String,
    guest: String,
    created: bool,
}

#[derive(Serialize, Deserialize)]
struct FlavorRecord {
    id: String,
    name: String,
    vcpus: u32,
    ram: u32,
    disk: u32,
    is_public: bool,
    description: Option<String>,
}

impl From<&Flavor> for FlavorRecord {
    fn from(f: &Flavor) -> Self {
        FlavorRecord {
            id: f.id.clone(),
            name: f.name.clone(),
            vcpus: f.vcpus,
            ram: f.ram,
            disk: f.disk,
            is_public: f.is_public,
            description: f.description.clone(),
        }
    }
}

impl From<FlavorRecord> for Flavor {
    fn from(f: FlavorRecord) -> Self {
        Flavor {
            id: f.id,
            name: f.name,
            vcpus: f.vcpus,
            ram: f.ram,
            disk: f.disk,
            is_public: f.is_public,
            description: f.description,
        }
    }
}

/// Instance action names as `&'static str` (what [`InstanceAction`] holds).
fn action_name(s: &str) -> &'static str {
    match s {
        "create" => "create",
        "delete" => "delete",
        "live-migration" => "live-migration",
        _ => "unknown",
    }
}

fn record(s: &Server) -> ServerRecord {
    ServerRecord {
        id: s.id.clone(),
        name: s.name.clone(),
        project_id: s.project_id.clone(),
        user_id: s.user_id.clone(),
        status: s.status.as_str().to_string(),
        host: s.host.clone(),
        vifs: s
            .vifs
            .iter()
            .map(|v| VifRecord {
                port_id: v.port_id.clone(),
                network_id: v.network_id.clone(),
                network_name: v.network_name.clone(),
                mac: v.mac.clone(),
                ips: v.ips.clone(),
                floating_ips: v.floating_ips.clone(),
                vnic_type: v.vnic_type.clone(),
                vif_type: v.vif_type.clone(),
                guest: v.guest.clone(),
                created: v.created,
            })
            .collect(),
        created: s.created.clone(),
        updated: s.updated.clone(),
        fault: s
            .fault
            .as_ref()
            .map(|f| (f.code, f.message.clone(), f.created.clone())),
        flavor: s.flavor.as_ref().map(FlavorRecord::from),
        image: s.image.clone(),
        actions: s
            .actions
            .iter()
            .map(|a| ActionRecord {
                action: a.action.to_string(),
                request_id: a.request_id.clone(),
                project_id: a.project_id.clone(),
                user_id: a.user_id.clone(),
                start_time: a.start_time.clone(),
                message: a.message.clone(),
            })
            .collect(),
        seq: s.seq,
    }
}

fn server(r: ServerRecord) -> Server {
    let status = match r.status.as_str() {
        "ACTIVE" => Status::Active,
        "MIGRATING" => Status::Migrating,
        "BUILD" => Status::Build,
        _ => Status::Error,
    };
    Server {
        id: r.id,
        name: r.name,
        project_id: r.project_id,
        user_id: r.user_id,
        status,
        task_state: None,
        host: r.host,
        vifs: r
            .vifs
            .into_iter()
            .map(|v| Vif {
                port_id: v.port_id,
                network_id: v.network_id,
                network_name: v.network_name,
                mac: v.mac,
                ips: v.ips,
                floating_ips: v.floating_ips,
                vnic_type: v.vnic_type,
                vif_type: v.vif_type,
                vif_details: serde_json::json!({}),
                profile: serde_json::json!({}),
                guest: v.guest,
                created: v.created,
            })
            .collect(),
        created: r.created,
        updated: r.updated,
        fault: r.fault.map(|(code, message, created)| Fault {
            code,
            message,
            created,
        }),
        flavor: r.flavor.map(Flavor::from),
        image: r.image,
        actions: r
            .actions
            .into_iter()
            .map(|a| InstanceAction {
                action: action_name(&a.action),
                request_id: a.request_id,
                project_id: a.project_id,
                user_id: a.user_id,
                start_time: a.start_time,
                message: a.message,
            })
            .collect(),
        deleting: false,
        seq: r.seq,
    }
}

impl Records {
    /// Opens (creating) the table in the database at `path`.
    pub fn open(path: &Path) -> Result<Records, PersistError> {
        let err = |source| PersistError {
            path: path.display().to_string(),
            source,
        };
        let db = Connection::open(path).map_err(err)?;
        db.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS lab_compute (
                 kind TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,
                 PRIMARY KEY (kind, id));",
        )
        .map_err(err)?;
        Ok(Records { db: Mutex::new(db) })
    }

    /// The servers and the flavors kept (`None`: the flavors were never
    /// changed). A row that does not parse is logged and skipped (the rest
    /// still load).
    pub fn load(&self) -> Result<(Vec<Server>, Option<Vec<Flavor>>), rusqlite::Error> {
        let db = lock(&self.db);
        let mut st = db.prepare("SELECT kind, id, body FROM lab_compute")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let (mut servers, mut flavors) = (Vec::new(), None);
        for row in rows {
            let (kind, id, body) = row?;
            let parsed = match kind.as_str() {
                "server" => {
                    serde_json::from_str::<ServerRecord>(&body).map(|r| servers.push(server(r)))
                }
                "flavors" => serde_json::from_str::<Vec<FlavorRecord>>(&body)
                    .map(|f| flavors = Some(f.into_iter().map(Flavor::from).collect())),
                _ => Ok(()),
            };
            if let Err(e) = parsed {
                tracing::error!(%kind, %id, error = %e, "a compute record does not parse; skipped");
            }
        }
        servers.sort_by_key(|s| s.seq);
        Ok((servers, flavors))
    }

    fn put(&self, kind: &str, id: &str, body: &str) {
        let r = lock(&self.db).execute(
            "INSERT INTO lab_compute (kind, id, body) VALUES (?1, ?2, ?3)
             ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body",
            params![kind, id, body],
        );
        if let Err(e) = r {
            tracing::error!(%kind, %id, error = %e, "writing a compute record failed");
        }
    }

    fn delete(&self, kind: &str, id: &str) {
        let r = lock(&self.db).execute(
            "DELETE FROM lab_compute WHERE kind = ?1 AND id = ?2",
            params![kind, id],
        );
        if let Err(e) = r {
            tracing::error!(%kind, %id, error = %e, "deleting a compute record failed");
        }
    }

    pub fn save_server(&self, s: &Server) {
        match serde_json::to_string(&record(s)) {
            Ok(body) => self.put("server", &s.id, &body),
            Err(e) => tracing::error!(server = %s.id, error = %e, "serialising a server failed"),
        }
    }

    pub fn delete_server(&self, id: &str) {
        self.delete("server", id);
    }

    /// The whole flavor list (defaults an admin deleted stay deleted).
    pub fn save_flavors(&self, all: &[Flavor]) {
        let list: Vec<FlavorRecord> = all.iter().map(FlavorRecord::from).collect();
        match serde_json::to_string(&list) {
            Ok(body) => self.put("flavors", "all", &body),
            Err(e) => tracing::error!(error = %e, "serialising the flavors failed"),
        }
    }
}
