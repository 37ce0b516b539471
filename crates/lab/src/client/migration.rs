//! A live migration measured the way an operator would: a ping stream from
//! another guest to the migrating VM runs through the whole move (lab API),
//! the migration is requested and watched through the compute API, and the
//! port is read back from Neutron before and after. Also the repeated form
//! behind `switchyard bench migration`.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use super::demo::vm;
use super::{ClientError, LabClient};

/// How long the stream runs before the migration is requested, and after
/// it completes (QEMU's announce rounds end 550 ms after the move).
const LEAD: Duration = Duration::from_millis(300);
const TAIL: Duration = Duration::from_millis(1000);
const MIGRATION_LIMIT: Duration = Duration::from_secs(60);
/// The stream's last requests that must all be answered for connectivity to
/// count as restored.
const RESUMED_WINDOW: usize = 30;

#[derive(Debug, Clone, Serialize)]
pub struct MigrationResult {
    pub vm: String,
    /// The host `os-migrateLive` asked for.
    pub requested_host: String,
    pub from_host: String,
    /// The server's host after the migration.
    pub to_host: String,
    pub ip_before: String,
    pub ip_after: String,
    pub mac_before: String,
    pub mac_after: String,
    pub vif_type_before: String,
    pub vif_type_after: String,
    /// Requests of the stream never answered.
    pub lost_pings: usize,
    pub interval_ms: u64,
    /// The longest run of lost requests × the interval.
    pub outage_ms: u64,
    /// Requests sent in all.
    pub sent: usize,
    /// From the `os-migrateLive` request to the server being ACTIVE again.
    pub migration_ms: u64,
    /// The stream's last requests were all answered.
    pub connectivity_after: bool,
    /// The migration's record in `/os-migrations` (newest for the server):
    /// its `status` and `dest_compute` (empty when there is none).
    pub migration_status: String,
    pub migration_dest: String,
    /// The port's `status` and `binding:host_id` after the migration.
    pub port_status_after: String,
    pub port_host_after: String,
    /// What QEMU reported of the move (a QEMU guest of a Linux lab): the
    /// VM's pause from source to destination, and the whole migration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qemu_downtime_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qemu_total_ms: Option<u64>,
}

impl MigrationResult {
    /// Moved where asked, same IP and MAC, and answering again.
    pub fn ok(&self) -> bool {
        self.from_host != self.to_host
            && !self.ip_before.is_empty()
            && self.ip_before == self.ip_after
            && self.mac_before == self.mac_after
            && self.connectivity_after
    }
}

/// Pings `ip` from `guest` until a short run is answered in full (ARP
/// resolved both ways), so the stream measures the move, not a cold path.
pub async fn warm(c: &LabClient, guest: &str, ip: &str) -> Result<(), ClientError> {
    for _ in 0..30 {
        let r = c
            .post(
                &format!("/switchyard/v1/lab/guests/{guest}/ping"),
                &json!({"ping": {"target": ip, "count": 3, "interval_ms": 20}}),
            )
            .await?;
        if r["ping"]["sent"].as_u64().is_some_and(|s| s > 0)
            && r["ping"]["answered"] == r["ping"]["sent"]
        {
            return Ok(());
        }
    }
    Err(ClientError::Scenario(format!(
        "{guest} cannot reach {ip} before the migration"
    )))
}

/// Live-migrates server `id` to `dest` while `peer` (a guest) pings it every
/// `interval_ms`, and reports what changed and what was lost.
pub async fn migrate_under_stream(
    c: &LabClient,
    id: &str,
    peer: &str,
    dest: &str,
    interval_ms: u64,
) -> Result<MigrationResult, ClientError> {
    let server = c.get(&format!("/compute/v2.1/servers/{id}")).await?;
    let before = vm(c, &server["server"]).await?;
    warm(c, peer, &before.ip).await?;
    let stream = format!("/switchyard/v1/lab/guests/{peer}/stream");
    c.put(
        &stream,
        &json!({"stream": {"target": before.ip, "interval_ms": interval_ms}}),
    )
    .await?;
    tokio::time::sleep(LEAD).await;
    let started = Instant::now();
    let asked = c
        .post(
            &format!("/compute/v2.1/servers/{id}/action"),
            &json!({"os-migrateLive": {"host": dest, "block_migration": "auto"}}),
        )
        .await;
    if let Err(e) = asked {
        let _ = c.delete(&stream).await;
        return Err(e);
    }
    let done = c
        .wait_server(id, MIGRATION_LIMIT, |s| {
            s["status"] != "MIGRATING" && s["OS-EXT-STS:task_state"].is_null()
        })
        .await;
    let migration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if let Err(e) = done {
        let _ = c.delete(&stream).await;
        return Err(e);
    }
    tokio::time::sleep(TAIL).await;
    let report = c.delete(&stream).await?;
    let server = c.get(&format!("/compute/v2.1/servers/{id}")).await?;
    let after = vm(c, &server["server"]).await?;
    let r = &report["stream"];
    let sent = r["sent"].as_u64().unwrap_or(0) as usize;
    // The request sent as the stream stopped may still be in flight.
    let lost: Vec<u64> = r["lost"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .filter(|s| (*s as usize) + 1 < sent)
        .collect();
    let connectivity_after = sent > RESUMED_WINDOW + 1
        && !lost
            .iter()
            .any(|s| (*s as usize) + RESUMED_WINDOW + 1 >= sent);
    let outage_ms = r["outage_ms"].as_u64().unwrap_or(0);
    let record = c
        .get(&format!("/compute/v2.1/os-migrations?instance_uuid={id}"))
        .await?;
    // Newest first: the migration just requested.
    let record = &record["migrations"][0];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    // A QEMU guest's own figures (the lab's guest record; the emulated lab's
    // guests have none).
    let qemu = match c
        .get(&format!("/switchyard/v1/lab/guests/{}", before.name))
        .await
    {
        Ok(g) => g["guest"]["last_migration"].clone(),
        Err(_) => Value::Null,
    };
    Ok(MigrationResult {
        vm: before.name.clone(),
        requested_host: dest.to_string(),
        from_host: before.host,
        to_host: after.host,
        ip_before: before.ip,
        ip_after: after.ip,
        mac_before: before.mac,
        mac_after: after.mac,
        vif_type_before: before.vif_type,
        vif_type_after: after.vif_type,
        lost_pings: lost.len(),
        interval_ms,
        outage_ms,
        sent,
        migration_ms,
        connectivity_after,
        migration_status: text(&record["status"]),
        migration_dest: text(&record["dest_compute"]),
        port_status_after: after.port_status,
        port_host_after: after.port_host,
        qemu_downtime_ms: qemu["downtime_ms"].as_u64(),
        qemu_total_ms: qemu["total_ms"].as_u64(),
    })
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub min: u64,
    pub p50: u64,
    pub max: u64,
}

impl Spread {
    fn of(mut v: Vec<u64>) -> Spread {
        v.sort_unstable();
        Spread {
            min: v.first().copied().unwrap_or(0),
            p50: v.get(v.len() / 2).copied().unwrap_or(0),
            max: v.last().copied().unwrap_or(0),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub runs: usize,
    pub direction: String,
    pub interval_ms: u64,
    pub outage_ms: Spread,
    pub lost_pings: Spread,
    pub migration_ms: Spread,
    /// QEMU's reported downtime (QEMU guests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qemu_downtime_ms: Option<Spread>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qemu_total_ms: Option<Spread>,
}

/// `runs` measured migrations of one VM from `from` to `to` (each followed
/// by an unmeasured one back), pinged from a VM on `peer_host`.
pub async fn bench(
    c: &LabClient,
    runs: usize,
    direction: &str,
    from: &str,
    to: &str,
    peer_host: &str,
    say: &(dyn Fn(&str) + Sync),
) -> Result<BenchReport, ClientError> {
    let n = c
        .post(
            "/v2.0/networks",
            &json!({"network": {"name": "bench-migration"}}),
        )
        .await?;
    let net = n["network"]["id"].as_str().unwrap_or_default().to_string();
    c.post(
        "/v2.0/subnets",
        &json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.77.0.0/24"}}),
    )
    .await?;
    let limit = Duration::from_secs(60);
    c.boot("bench-peer", json!([{"uuid": net}]), peer_host, limit)
        .await?;
    let s = c
        .boot("bench-vm", json!([{"uuid": net}]), from, limit)
        .await?;
    let id = s["id"].as_str().unwrap_or_default().to_string();
    let (mut outage, mut lost, mut took) = (Vec::new(), Vec::new(), Vec::new());
    let (mut downtime, mut total) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let m = migrate_under_stream(c, &id, "bench-peer", to, 10).await?;
        if !m.ok() || m.to_host != to {
            return Err(ClientError::Scenario(format!(
                "run {}: the migration did not complete cleanly: {m:?}",
                i + 1
            )));
        }
        let qemu = match (m.qemu_downtime_ms, m.qemu_total_ms) {
            (Some(d), Some(t)) => format!("; QEMU downtime {d} ms of {t} ms"),
            _ => String::new(),
        };
        say(&format!(
            "run {:>2}: {} -> {}: lost {} pings, outage {} ms, migration {} ms{qemu}",
            i + 1,
            m.from_host,
            m.to_host,
            m.lost_pings,
            m.outage_ms,
            m.migration_ms
        ));
        downtime.extend(m.qemu_downtime_ms);
        total.extend(m.qemu_total_ms);
        outage.push(m.outage_ms);
        lost.push(m.lost_pings as u64);
        took.push(m.migration_ms);
        // Back to the source, unmeasured, for the next run.
        c.post(
            &format!("/compute/v2.1/servers/{id}/action"),
            &json!({"os-migrateLive": {"host": from, "block_migration": "auto"}}),
        )
        .await?;
        let back = c
            .wait_server(&id, limit, |s| {
                s["status"] != "MIGRATING" && s["OS-EXT-STS:task_state"].is_null()
            })
            .await?;
        if back["OS-EXT-SRV-ATTR:host"] != from {
            return Err(ClientError::Scenario(format!(
                "run {}: migrating back to {from} failed",
                i + 1
            )));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    Ok(BenchReport {
        runs,
        direction: direction.to_string(),
        interval_ms: 10,
        outage_ms: Spread::of(outage),
        lost_pings: Spread::of(lost),
        migration_ms: Spread::of(took),
        qemu_downtime_ms: (downtime.len() == runs).then(|| Spread::of(downtime)),
        qemu_total_ms: (total.len() == runs).then(|| Spread::of(total)),
    })
}
