//! `switchyard node list` / `switchyard node show HOST`: the controller's view
//! of each node's convergence, from `GET /switchyard/v1/nodes[/{host}]`.

use anyhow::{Context, bail};
use serde_json::Value;

#[derive(Debug, clap::Subcommand)]
pub enum NodeCmd {
    /// Every node: desired, sent and acked versions.
    List {
        #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:9696")]
        url: String,
        #[arg(long)]
        json: bool,
    },
    /// One node: its convergence and the state its pipeline runs (interfaces,
    /// bridge and ARP tables, flood lists, counters), asked of its agent.
    Show {
        host: String,
        #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:9696")]
        url: String,
        #[arg(long)]
        json: bool,
        /// Also print the controller's desired items for the node.
        #[arg(long)]
        desired: bool,
    },
}

/// The controller's base URL from what the operator typed: the Neutron
/// endpoint (`…/v2.0/`) and a missing scheme are accepted.
fn base(url: &str) -> anyhow::Result<String> {
    let u = url.trim().trim_end_matches('/');
    let u = u.strip_suffix("/v2.0").unwrap_or(u);
    if u.is_empty() {
        bail!("--url must be the controller's base URL, e.g. http://127.0.0.1:9696");
    }
    if u.contains("://") {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            bail!("--url must be an http:// or https:// URL, not '{url}'");
        }
        Ok(u.to_string())
    } else {
        Ok(format!("http://{u}"))
    }
}

async fn get(url: &str) -> anyhow::Result<Value> {
    let r = reqwest::get(url)
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = r.status();
    let v: Value = r.json().await.with_context(|| format!("reading {url}"))?;
    if !status.is_success() {
        bail!(
            "{status}: {}",
            v["NeutronError"]["message"]
                .as_str()
                .unwrap_or("request failed")
        );
    }
    Ok(v)
}

fn line(n: &Value) -> String {
    format!(
        "{:<20} {:>8} {:>8} {:>8}  {:<9} {:<9} {:>6}",
        n["host"].as_str().unwrap_or("?"),
        n["desired_version"].to_string(),
        n["sent_version"].to_string(),
        n["acked_version"].to_string(),
        if n["connected"] == true {
            "connected"
        } else {
            "-"
        },
        if n["converged"] == true {
            "converged"
        } else {
            "behind"
        },
        n["item_count"].to_string(),
    )
}

const HEADER: &str = "HOST                  DESIRED     SENT    ACKED  SESSION   STATE      ITEMS";

pub async fn run(cmd: NodeCmd) -> anyhow::Result<()> {
    match cmd {
        NodeCmd::List { url, json } => {
            let v = get(&format!("{}/switchyard/v1/nodes", base(&url)?)).await?;
            if json {
                println!("{v}");
                return Ok(());
            }
            println!("{HEADER}");
            for n in v["nodes"].as_array().into_iter().flatten() {
                println!("{}", line(n));
            }
        }
        NodeCmd::Show {
            host,
            url,
            json,
            desired,
        } => {
            let v = get(&format!("{}/switchyard/v1/nodes/{host}", base(&url)?)).await?;
            if json {
                println!("{v}");
                return Ok(());
            }
            let n = &v["node"];
            println!("{HEADER}\n{}", line(n));
            if let Some(e) = n["last_error"].as_str() {
                println!("last refused version: {e}");
            }
            match &n["applied"] {
                Value::Null => println!(
                    "\napplied state: unavailable ({})",
                    n["applied_error"].as_str().unwrap_or("no answer")
                ),
                a => print_applied(a),
            }
            if desired {
                println!("\ndesired state (controller):");
                for (k, item) in n["items"].as_object().into_iter().flatten() {
                    println!("  {k:<60} {item}");
                }
            }
        }
    }
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The agent's introspection, as `vif --list` / `rt --dump` would show it.
fn print_applied(a: &Value) {
    println!(
        "\napplied state (agent, version {}):",
        a["version"].as_u64().unwrap_or(0)
    );
    println!("interfaces:");
    println!(
        "  {:<6} {:<36} {:<17} {:<16} {:<8} {:>5} {:>8}  STATUS",
        "PORT", "NEUTRON PORT", "MAC", "IPS", "VIF", "VLAN", "VNI"
    );
    for i in a["interfaces"].as_array().into_iter().flatten() {
        let ips: Vec<String> = i["ips"].as_array().into_iter().flatten().map(s).collect();
        println!(
            "  {:<6} {:<36} {:<17} {:<16} {:<8} {:>5} {:>8}  {}",
            s(&i["local_port"]),
            s(&i["port_id"]),
            s(&i["mac"]),
            ips.join(","),
            s(&i["vif_type"]),
            s(&i["vlan"]),
            s(&i["vni"]),
            s(&i["status"]),
        );
    }
    for net in a["networks"].as_array().into_iter().flatten() {
        let flood: Vec<String> = net["flood"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        println!(
            "network vni {} vlan {}  flood [{}]",
            s(&net["vni"]),
            s(&net["vlan"]),
            flood.join(", ")
        );
        for e in net["bridge"].as_array().into_iter().flatten() {
            println!("  bridge  {:<17} -> {}", s(&e["mac"]), s(&e["points_to"]));
        }
        for e in net["arp"].as_array().into_iter().flatten() {
            println!("  arp     {:<17} -> {}", s(&e["ip"]), s(&e["mac"]));
        }
    }
    for r in a["routers"].as_array().into_iter().flatten() {
        println!("router {}  snat {}", s(&r["router"]), s(&r["snat"]));
        for (label, key) in [
            ("interface", "interfaces"),
            ("fip", "floating_ips"),
            ("route", "routes"),
        ] {
            for x in r[key].as_array().into_iter().flatten() {
                println!("  {label:<9} {}", s(x));
            }
        }
    }
    if let Some(n) = a["nat_connections"].as_u64() {
        println!("nat connections: {n}");
    }
    let c = &a["counters"];
    println!(
        "counters: rx {} tx {} not_learned {}",
        s(&c["rx"]),
        s(&c["tx"]),
        s(&c["not_learned"])
    );
    for (k, v) in c["drops"].as_object().into_iter().flatten() {
        println!("  drop {k:<24} {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::base;

    #[test]
    fn base_urls_are_normalised() {
        for (given, want) in [
            ("http://127.0.0.1:9696", "http://127.0.0.1:9696"),
            ("http://127.0.0.1:9696/", "http://127.0.0.1:9696"),
            ("http://127.0.0.1:9696/v2.0/", "http://127.0.0.1:9696"),
            ("127.0.0.1:9696", "http://127.0.0.1:9696"),
        ] {
            assert_eq!(base(given).expect("ok"), want, "{given}");
        }
        assert!(base("ftp://x").is_err());
        assert!(base("").is_err());
    }
}
