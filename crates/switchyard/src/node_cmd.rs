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
    /// One node: its convergence and desired state.
    Show {
        host: String,
        #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:9696")]
        url: String,
        #[arg(long)]
        json: bool,
    },
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
            let v = get(&format!(
                "{}/switchyard/v1/nodes",
                url.trim_end_matches('/')
            ))
            .await?;
            if json {
                println!("{v}");
                return Ok(());
            }
            println!("{HEADER}");
            for n in v["nodes"].as_array().into_iter().flatten() {
                println!("{}", line(n));
            }
        }
        NodeCmd::Show { host, url, json } => {
            let v = get(&format!(
                "{}/switchyard/v1/nodes/{host}",
                url.trim_end_matches('/')
            ))
            .await?;
            if json {
                println!("{v}");
                return Ok(());
            }
            let n = &v["node"];
            println!("{HEADER}\n{}", line(n));
            if let Some(e) = n["last_error"].as_str() {
                println!("last refused version: {e}");
            }
            println!("\ndesired state:");
            for (k, item) in n["items"].as_object().into_iter().flatten() {
                println!("  {k:<60} {item}");
            }
        }
    }
    Ok(())
}
