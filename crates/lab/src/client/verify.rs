//! The connectivity matrix (`switchyard verify`): from every lab guest to
//! every other guest it should reach — same network, or networks joined by a
//! router — and to an address on the internet when its network has a router
//! with an external gateway (SNAT, or a floating IP on the guest's port).
//! Each path is probed with 5 pings from inside the source guest (`ping -c 5`:
//! a path is up when any reply comes back), sources in parallel.
//!
//! Expectations come from the Neutron API (ports, routers, floating IPs),
//! the guests from the lab's guest API; nothing is read from the controller
//! directly.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::json;

use super::{ClientError, LabClient, backend_of};

/// Pings per probe and their spacing.
const PROBE_COUNT: u64 = 5;
const PROBE_INTERVAL_MS: u64 = 50;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Pair {
    pub from: String,
    pub to: String,
    pub from_backend: String,
    pub to_backend: String,
    pub ok: bool,
    /// Median round trip of the answered requests (the first request of a
    /// cold path waits for ARP; the median is the path's own figure).
    pub rtt_ms: Option<f64>,
    /// The address probed.
    pub to_ip: String,
    pub sent: u64,
    pub answered: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Matrix {
    pub ok: bool,
    pub pairs: Vec<Pair>,
}

/// A guest as the matrix sees it.
#[derive(Debug, Clone)]
struct Endpoint {
    name: String,
    network: String,
    ip: String,
    backend: String,
    has_fip: bool,
}

/// Runs the matrix over the lab's guests (those on `network`, by name or id,
/// when given).
pub async fn run(c: &LabClient, network: Option<&str>) -> Result<Matrix, ClientError> {
    let lab = c.get("/switchyard/v1/lab").await?;
    let nets = c.get("/v2.0/networks").await?;
    let net_names: BTreeMap<String, String> = nets["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| {
            Some((
                n["id"].as_str()?.to_string(),
                n["name"].as_str()?.to_string(),
            ))
        })
        .collect();
    let filter_id = match network {
        None => None,
        Some(n) => Some(
            net_names
                .iter()
                .find(|(id, name)| *id == n || *name == n)
                .map(|(id, _)| id.clone())
                .ok_or_else(|| {
                    ClientError::Scenario(format!("no network named or with id '{n}'"))
                })?,
        ),
    };
    let fips = c.get("/v2.0/floatingips").await?;
    let fip_ports: BTreeSet<String> = fips["floatingips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["port_id"].as_str().map(str::to_string))
        .collect();
    let mut endpoints = Vec::new();
    for g in lab["lab"]["guests"].as_array().into_iter().flatten() {
        let (Some(name), Some(port_id)) = (g["name"].as_str(), g["port_id"].as_str()) else {
            continue;
        };
        let p = c.get(&format!("/v2.0/ports/{port_id}")).await?;
        let p = &p["port"];
        let Some(ip) = p["fixed_ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["ip_address"].as_str())
            .find(|ip| !ip.contains(':'))
        else {
            continue;
        };
        let network = p["network_id"].as_str().unwrap_or_default().to_string();
        if filter_id.as_ref().is_some_and(|f| *f != network) {
            continue;
        }
        endpoints.push(Endpoint {
            name: name.to_string(),
            network,
            ip: ip.to_string(),
            backend: backend_of(p["binding:vif_type"].as_str().unwrap_or_default()),
            has_fip: fip_ports.contains(port_id),
        });
    }
    // Routers: which networks each joins, and whether it reaches outside.
    let routers = c.get("/v2.0/routers").await?;
    let mut joined: Vec<(BTreeSet<String>, bool, bool)> = Vec::new();
    for r in routers["routers"].as_array().into_iter().flatten() {
        let Some(id) = r["id"].as_str() else { continue };
        let ports = c
            .get(&format!(
                "/v2.0/ports?device_id={id}&device_owner=network:router_interface"
            ))
            .await?;
        let nets: BTreeSet<String> = ports["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["network_id"].as_str().map(str::to_string))
            .collect();
        let gw = &r["external_gateway_info"];
        let has_gw = gw.is_object() && gw["network_id"].is_string();
        let snat = has_gw && gw["enable_snat"].as_bool().unwrap_or(true);
        joined.push((nets, has_gw, snat));
    }
    let reach = |a: &str, b: &str| {
        a == b
            || joined
                .iter()
                .any(|(n, _, _)| n.contains(a) && n.contains(b))
    };
    let probe = lab["lab"]["internet"]["probe"].as_str().map(str::to_string);
    // Per source, the probes it runs, in order.
    let mut plan: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    for a in &endpoints {
        let list = plan.entry(a.name.clone()).or_default();
        for b in &endpoints {
            if a.name != b.name && reach(&a.network, &b.network) {
                list.push((b.name.clone(), b.backend.clone(), b.ip.clone()));
            }
        }
        let out = joined
            .iter()
            .any(|(n, gw, snat)| n.contains(&a.network) && *gw && (*snat || a.has_fip));
        if let (true, Some(p)) = (out, &probe) {
            list.push(("internet".into(), "internet".into(), p.clone()));
        }
    }
    let backends: BTreeMap<String, String> = endpoints
        .iter()
        .map(|e| (e.name.clone(), e.backend.clone()))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (from, probes) in plan {
        let c = c.clone();
        let from_backend = backends.get(&from).cloned().unwrap_or_default();
        tasks.spawn(async move {
            let mut out = Vec::new();
            for (to, to_backend, ip) in probes {
                out.push(probe_one(&c, &from, &from_backend, &to, &to_backend, &ip).await?);
            }
            Ok::<_, ClientError>(out)
        });
    }
    let mut pairs = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.map_err(|e| ClientError::Scenario(format!("a probe task failed: {e}")))?;
        pairs.extend(r?);
    }
    pairs.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    Ok(Matrix {
        ok: !pairs.is_empty() && pairs.iter().all(|p| p.ok),
        pairs,
    })
}

async fn probe_one(
    c: &LabClient,
    from: &str,
    from_backend: &str,
    to: &str,
    to_backend: &str,
    ip: &str,
) -> Result<Pair, ClientError> {
    let body =
        json!({"ping": {"target": ip, "count": PROBE_COUNT, "interval_ms": PROBE_INTERVAL_MS}});
    let (status, v) = c
        .call(
            reqwest::Method::POST,
            &format!("/switchyard/v1/lab/guests/{from}/ping"),
            Some(&body),
        )
        .await?;
    let r = &v["ping"];
    let (sent, answered) = if status == 200 {
        (
            r["sent"].as_u64().unwrap_or(0),
            r["answered"].as_u64().unwrap_or(0),
        )
    } else {
        // A guest that cannot ping (no address yet) is a failed path, shown.
        (0, 0)
    };
    Ok(Pair {
        from: from.to_string(),
        to: to.to_string(),
        from_backend: from_backend.to_string(),
        to_backend: to_backend.to_string(),
        ok: answered > 0,
        rtt_ms: r["rtt_ms"]["avg"]
            .as_f64()
            .map(|x| (x * 100.0).round() / 100.0),
        to_ip: ip.to_string(),
        sent,
        answered,
    })
}

/// The matrix as a table, one line per path.
pub fn table(m: &Matrix) -> String {
    let w = m
        .pairs
        .iter()
        .map(|p| p.from.len() + p.from_backend.len() + 3)
        .chain([4])
        .max()
        .unwrap_or(4);
    let w2 = m
        .pairs
        .iter()
        .map(|p| p.to.len() + p.to_backend.len() + 3)
        .chain([2])
        .max()
        .unwrap_or(2);
    let mut s = format!(
        "{:<w$}  {:<w2$}  {:<15}  {:>7}  {:>8}  result\n",
        "from", "to", "address", "replies", "rtt ms"
    );
    for p in &m.pairs {
        let from = format!("{} ({})", p.from, p.from_backend);
        let to = if p.to == "internet" {
            "internet".to_string()
        } else {
            format!("{} ({})", p.to, p.to_backend)
        };
        // The lab's clock ticks in milliseconds; a path forwarded within
        // one tick shows as under a millisecond, not as zero.
        let rtt = p.rtt_ms.map_or_else(
            || "-".into(),
            |r| {
                if r < 1.0 {
                    "<1".into()
                } else {
                    format!("{r:.0}")
                }
            },
        );
        s.push_str(&format!(
            "{from:<w$}  {to:<w2$}  {:<15}  {:>7}  {rtt:>8}  {}\n",
            p.to_ip,
            format!("{}/{}", p.answered, p.sent),
            if p.ok { "ok" } else { "FAIL" }
        ));
    }
    let failed = m.pairs.iter().filter(|p| !p.ok).count();
    s.push_str(&format!(
        "{} paths, {} ok, {failed} failed\n",
        m.pairs.len(),
        m.pairs.len() - failed
    ));
    s
}
