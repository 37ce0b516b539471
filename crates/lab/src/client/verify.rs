//! The connectivity matrix (`switchyard verify`): from every lab guest to
//! every other guest it should reach — same network, or networks joined by a
//! router — and to an address on the internet when its network has a router
//! with an external gateway (SNAT, or a floating IP on the guest's port).
//! Each path is probed with 5 pings from inside the source guest, 50 ms
//! apart, and is up when at least `min_replies` of them are answered (all 5
//! unless asked otherwise); its RTT is the median of the answered ones.
//! Sources run in parallel, each source's paths one after another.
//!
//! Expectations come from the Neutron API (ports, routers, floating IPs,
//! security groups), the guests from the lab's guest API; nothing is read
//! from the controller directly. A path the security groups close (the
//! source's egress rules or the target's ingress rules admit no ICMP echo
//! between the two) is probed too, and is ok when nothing answers: the
//! matrix checks the policy both ways.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Value, json};

use super::{ClientError, LabClient, backend_of};

/// Pings per path and their spacing.
pub const PROBE_COUNT: u64 = 5;
const PROBE_INTERVAL_MS: u64 = 50;

/// `min_replies` as given, when it is a number of pings a path can answer
/// (1 to [`PROBE_COUNT`]).
pub fn check_min_replies(n: u64) -> Result<u64, ClientError> {
    if (1..=PROBE_COUNT).contains(&n) {
        Ok(n)
    } else {
        Err(ClientError::Scenario(format!(
            "min_replies must be from 1 to {PROBE_COUNT} (the pings sent per path), not {n}"
        )))
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Pair {
    pub from: String,
    pub to: String,
    pub from_backend: String,
    pub to_backend: String,
    /// The security groups let this path's pings through (else it is
    /// expected to stay silent).
    pub expect_reply: bool,
    /// At least the matrix's `min_replies` of the `sent` pings answered, or
    /// none when the path is closed by security groups.
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
    /// Replies (of [`PROBE_COUNT`]) a path needs to be ok.
    pub min_replies: u64,
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
    guard: Guard,
}

/// A port's security groups as far as the matrix's pings go.
#[derive(Debug, Clone, Default)]
struct Guard {
    /// Port security on: only what its groups' rules admit passes.
    filtered: bool,
    groups: Vec<String>,
}

/// Whether `rule` (a Neutron security group rule) of one of `own` groups
/// admits an IPv4 ICMP echo request going `direction` to or from a peer at
/// `peer_ip` in groups `peer_groups` (`None`: a host outside the cloud).
fn admits_echo(
    rule: &Value,
    direction: &str,
    own: &[String],
    peer_ip: &str,
    peer_groups: Option<&[String]>,
) -> bool {
    let s = |k: &str| rule[k].as_str();
    let in_own = s("security_group_id").is_some_and(|g| own.iter().any(|o| o == g));
    let icmp = matches!(rule["protocol"].as_str(), None | Some("icmp" | "1"));
    let echo_type = rule["port_range_min"].as_u64().is_none_or(|t| t == 8);
    let echo_code = rule["port_range_max"].as_u64().is_none_or(|c| c == 0);
    let remote = match (s("remote_ip_prefix"), s("remote_group_id")) {
        (Some(p), _) => match (
            p.parse::<ipnet::IpNet>(),
            peer_ip.parse::<std::net::IpAddr>(),
        ) {
            (Ok(net), Ok(ip)) => net.contains(&ip),
            _ => false,
        },
        (None, Some(g)) => peer_groups.is_some_and(|pg| pg.iter().any(|x| x == g)),
        (None, None) => true,
    };
    s("direction") == Some(direction)
        && s("ethertype") == Some("IPv4")
        && in_own
        && icmp
        && echo_type
        && echo_code
        && remote
}

/// Whether the groups let an echo from `a` reach `b` (`b`: `None` for the
/// internet, where only `a`'s egress rules decide; the answers come back as
/// part of the connection).
fn echo_open(rules: &[Value], a: &Endpoint, b: Option<&Endpoint>, b_ip: &str) -> bool {
    let out = !a.guard.filtered
        || rules.iter().any(|r| {
            admits_echo(
                r,
                "egress",
                &a.guard.groups,
                b_ip,
                b.map(|b| b.guard.groups.as_slice()),
            )
        });
    let inn = b.is_none_or(|b| {
        !b.guard.filtered
            || rules
                .iter()
                .any(|r| admits_echo(r, "ingress", &b.guard.groups, &a.ip, Some(&a.guard.groups)))
    });
    out && inn
}

/// Runs the matrix over the lab's guests (those on `network`, by name or id,
/// when given); a path is ok with at least `min_replies` replies.
pub async fn run(
    c: &LabClient,
    network: Option<&str>,
    min_replies: u64,
) -> Result<Matrix, ClientError> {
    let min_replies = check_min_replies(min_replies)?;
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
        let groups = p["security_groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(str::to_string))
            .collect();
        endpoints.push(Endpoint {
            name: name.to_string(),
            network,
            ip: ip.to_string(),
            backend: backend_of(p["binding:vif_type"].as_str().unwrap_or_default()),
            has_fip: fip_ports.contains(port_id),
            guard: Guard {
                filtered: p["port_security_enabled"].as_bool().unwrap_or(true),
                groups,
            },
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
    let rules: Vec<Value> = c.get("/v2.0/security-group-rules").await?["security_group_rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // Per source, the probes it runs, in order, each with whether the
    // security groups let it through.
    let mut plan: BTreeMap<String, Vec<(String, String, String, bool)>> = BTreeMap::new();
    for a in &endpoints {
        let list = plan.entry(a.name.clone()).or_default();
        for b in &endpoints {
            if a.name != b.name && reach(&a.network, &b.network) {
                let open = echo_open(&rules, a, Some(b), &b.ip);
                list.push((b.name.clone(), b.backend.clone(), b.ip.clone(), open));
            }
        }
        let out = joined
            .iter()
            .any(|(n, gw, snat)| n.contains(&a.network) && *gw && (*snat || a.has_fip));
        if let (true, Some(p)) = (out, &probe) {
            let open = echo_open(&rules, a, None, p);
            list.push(("internet".into(), "internet".into(), p.clone(), open));
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
            for (to, to_backend, ip, open) in probes {
                let ends = Ends {
                    from: &from,
                    from_backend: &from_backend,
                    to: &to,
                    to_backend: &to_backend,
                    to_ip: &ip,
                    open,
                };
                out.push(probe_one(&c, &ends, min_replies).await?);
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
        min_replies,
        pairs,
    })
}

/// The two ends of a path.
struct Ends<'a> {
    from: &'a str,
    from_backend: &'a str,
    to: &'a str,
    to_backend: &'a str,
    to_ip: &'a str,
    /// The security groups let the pings through.
    open: bool,
}

async fn probe_one(c: &LabClient, e: &Ends<'_>, min_replies: u64) -> Result<Pair, ClientError> {
    let body = json!({"ping": {"target": e.to_ip, "count": PROBE_COUNT,
        "interval_ms": PROBE_INTERVAL_MS}});
    let (status, v) = c
        .call(
            reqwest::Method::POST,
            &format!("/switchyard/v1/lab/guests/{}/ping", e.from),
            Some(&body),
        )
        .await?;
    Ok(pair_of(e, status, &v, min_replies))
}

/// A path's line from the ping API's answer (`status`, body `v`).
fn pair_of(e: &Ends<'_>, status: u16, v: &Value, min_replies: u64) -> Pair {
    let r = &v["ping"];
    let (sent, answered, rtt) = if status == 200 {
        (
            r["sent"].as_u64().unwrap_or(0),
            r["answered"].as_u64().unwrap_or(0),
            r["rtt_ms"]["median"].as_f64(),
        )
    } else {
        // A guest that cannot ping (no address yet) is a failed path, shown.
        (0, 0, None)
    };
    Pair {
        from: e.from.to_string(),
        to: e.to.to_string(),
        from_backend: e.from_backend.to_string(),
        to_backend: e.to_backend.to_string(),
        expect_reply: e.open,
        // A closed path is ok when the API took the ping and nothing answered.
        ok: if e.open {
            answered >= min_replies
        } else {
            status == 200 && answered == 0
        },
        rtt_ms: rtt.map(|x| (x * 100.0).round() / 100.0),
        to_ip: e.to_ip.to_string(),
        sent,
        answered,
    }
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
            match (p.ok, p.expect_reply) {
                (true, true) => "ok",
                (true, false) => "ok (closed by security groups)",
                (false, true) => "FAIL",
                (false, false) => "FAIL (answered, but security groups close it)",
            }
        ));
    }
    let failed = m.pairs.iter().filter(|p| !p.ok).count();
    let closed = m.pairs.iter().filter(|p| !p.expect_reply).count();
    s.push_str(&format!(
        "{} paths ({closed} closed by security groups), {} ok, {failed} failed; an open path needs {} of {PROBE_COUNT} replies, rtt is their median\n",
        m.pairs.len(),
        m.pairs.len() - failed,
        m.min_replies
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDS: Ends<'static> = Ends {
        from: "vm-ovs",
        from_backend: "ovs",
        to: "vm-vrouter",
        to_backend: "vrouter",
        to_ip: "50.50.50.4",
        open: true,
    };

    /// The ping API's answer for `answered` of 5 replies; the mean (avg) is
    /// pulled up by one slow reply, the median is not.
    fn answer(answered: u64) -> Value {
        json!({"ping": {"sent": 5, "answered": answered, "lost": [],
            "rtt_ms": {"min": 0.5, "avg": 8.8, "median": 1.0, "max": 40.0}}})
    }

    fn matrix(min_replies: u64, pairs: Vec<Pair>) -> Matrix {
        Matrix {
            ok: pairs.iter().all(|p| p.ok),
            min_replies,
            pairs,
        }
    }

    #[test]
    fn a_path_needs_every_reply_by_default() {
        let p = pair_of(&ENDS, 200, &answer(4), PROBE_COUNT);
        assert!(!p.ok, "4 of 5 is a failed path: {p:?}");
        let t = table(&matrix(PROBE_COUNT, vec![p]));
        assert!(t.contains("4/5") && t.contains("FAIL"), "{t}");
        assert!(
            t.contains("1 failed; an open path needs 5 of 5 replies"),
            "{t}"
        );
        assert!(pair_of(&ENDS, 200, &answer(5), PROBE_COUNT).ok);
        assert!(!pair_of(&ENDS, 200, &answer(1), PROBE_COUNT).ok);
    }

    #[test]
    fn min_replies_lowers_the_bar() {
        let p = pair_of(&ENDS, 200, &answer(4), 4);
        assert!(p.ok, "{p:?}");
        let t = table(&matrix(4, vec![p]));
        assert!(t.contains("4/5") && !t.contains("FAIL"), "{t}");
        assert!(!pair_of(&ENDS, 200, &answer(3), 4).ok);
        assert!(!pair_of(&ENDS, 200, &answer(0), 1).ok);
    }

    #[test]
    fn a_ping_refused_by_the_api_is_a_failed_path_without_rtt() {
        let p = pair_of(&ENDS, 409, &json!({"NeutronError": {}}), 1);
        assert!(!p.ok && p.rtt_ms.is_none() && p.sent == 0, "{p:?}");
        let t = table(&matrix(1, vec![p]));
        assert!(t.contains("0/0") && t.contains("FAIL"), "{t}");
    }

    #[test]
    fn the_rtt_shown_is_the_median_not_the_mean() {
        let p = pair_of(&ENDS, 200, &answer(5), PROBE_COUNT);
        assert_eq!(p.rtt_ms, Some(1.0));
        let t = table(&matrix(PROBE_COUNT, vec![p]));
        let line = t.lines().nth(1).unwrap_or_default();
        assert!(line.contains(" 1  ok"), "{t}");
        // No replies: no RTT at all, not zero.
        let none = json!({"ping": {"sent": 5, "answered": 0, "rtt_ms": null}});
        assert_eq!(pair_of(&ENDS, 200, &none, 1).rtt_ms, None);
    }

    /// A path the groups close is ok when silent and a failure when it
    /// answers (the filter let through what the API says it must not).
    #[test]
    fn a_closed_path_must_stay_silent() {
        let closed = Ends {
            open: false,
            ..ENDS
        };
        let p = pair_of(&closed, 200, &answer(0), PROBE_COUNT);
        assert!(p.ok && !p.expect_reply, "{p:?}");
        let leak = pair_of(&closed, 200, &answer(2), PROBE_COUNT);
        assert!(!leak.ok, "{leak:?}");
        let t = table(&matrix(PROBE_COUNT, vec![p, leak]));
        assert!(t.contains("ok (closed by security groups)"), "{t}");
        assert!(
            t.contains("FAIL (answered, but security groups close it)"),
            "{t}"
        );
        assert!(t.contains("2 paths (2 closed by security groups)"), "{t}");
    }

    fn guard(groups: &[&str]) -> Guard {
        Guard {
            filtered: true,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn endpoint(ip: &str, g: Guard) -> Endpoint {
        Endpoint {
            name: ip.into(),
            network: "n".into(),
            ip: ip.into(),
            backend: "vrouter".into(),
            has_fip: false,
            guard: g,
        }
    }

    fn rule(group: &str, dir: &str, extra: Value) -> Value {
        let mut r = json!({"security_group_id": group, "direction": dir, "ethertype": "IPv4",
            "protocol": null, "port_range_min": null, "port_range_max": null,
            "remote_ip_prefix": null, "remote_group_id": null});
        if let (Some(o), Some(e)) = (r.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        r
    }

    /// The default group's rules: members reach members; others are kept
    /// out; a prefix rule for ICMP opens to that prefix only; port
    /// security off opens everything; the internet needs egress only.
    #[test]
    fn expectations_follow_the_rules() {
        let default = vec![
            rule("d", "egress", json!({})),
            rule("d", "ingress", json!({"remote_group_id": "d"})),
        ];
        let a = endpoint("10.0.0.1", guard(&["d"]));
        let b = endpoint("10.0.0.2", guard(&["d"]));
        let w = endpoint("10.0.0.3", guard(&["w"]));
        assert!(echo_open(&default, &a, Some(&b), &b.ip));
        assert!(!echo_open(&default, &a, Some(&w), &w.ip), "w has no rule");
        assert!(!echo_open(&default, &w, Some(&a), &a.ip), "w is no member");
        assert!(echo_open(&default, &a, None, "198.51.100.7"));
        assert!(!echo_open(&default, &w, None, "198.51.100.7"), "no egress");
        let mut rules = default.clone();
        rules.push(rule(
            "w",
            "ingress",
            json!({"protocol": "icmp", "remote_ip_prefix": "10.0.0.0/31"}),
        ));
        assert!(echo_open(&rules, &a, Some(&w), &w.ip));
        assert!(
            !echo_open(&rules, &b, Some(&w), &w.ip),
            "10.0.0.2 is outside /31"
        );
        rules.push(rule(
            "w",
            "ingress",
            json!({"protocol": "tcp", "port_range_min": 22, "port_range_max": 22}),
        ));
        assert!(
            !echo_open(&rules[2..], &b, Some(&w), &w.ip),
            "TCP/22 is no ping"
        );
        let open = endpoint("10.0.0.4", Guard::default());
        assert!(echo_open(&default, &a, Some(&open), &open.ip));
        assert!(echo_open(&[], &open, None, "198.51.100.7"));
    }

    #[test]
    fn min_replies_must_be_a_count_a_path_can_answer() {
        for n in 1..=PROBE_COUNT {
            assert_eq!(check_min_replies(n).ok(), Some(n));
        }
        for n in [0, PROBE_COUNT + 1, 100] {
            let e = check_min_replies(n).err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.contains("from 1 to 5") && e.contains(&n.to_string())),
                "{e:?}"
            );
        }
    }
}
