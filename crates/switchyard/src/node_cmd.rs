//! `switchyard node list` / `switchyard node show HOST`: the controller's view
//! of each node's convergence, from `GET /switchyard/v1/nodes[/{host}]`;
//! `switchyard node enroll|revoke|enrolled`: the nodes' southbound
//! credentials, in the credentials file the server reads.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;
use switchyard_api::nodeauth;
use switchyard_proto::Role;

use crate::stdout::outln;

/// Where the node credentials file is: `--credentials`, or `nodes.toml` in
/// the data directory (as `switchyard server` finds it).
#[derive(Debug, clap::Args)]
pub struct CredentialsArgs {
    /// The node credentials file (default: DATA_DIR/nodes.toml).
    #[arg(long, env = "SWITCHYARD_NODE_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// The server's data directory.
    #[arg(long, env = "SWITCHYARD_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
}

impl CredentialsArgs {
    fn path(&self) -> PathBuf {
        self.credentials
            .clone()
            .unwrap_or_else(|| self.data_dir.join("nodes.toml"))
    }
}

pub fn parse_role(s: &str) -> Result<Role, String> {
    [Role::Vrouter, Role::Ovs, Role::Sriov, Role::Gateway]
        .into_iter()
        .find(|r| r.name() == s)
        .ok_or_else(|| format!("unknown role '{s}' (vrouter, ovs, sriov, gateway)"))
}

#[derive(Debug, clap::Subcommand)]
pub enum NodeCmd {
    /// Every node: desired, sent and acked versions.
    List {
        /// The controller's base URL [default: the --os-cloud's switchyard,
        /// else http://127.0.0.1:9696].
        #[arg(long, env = "SWITCHYARD_URL")]
        url: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        auth: crate::os_auth::OsAuthArgs,
    },
    /// One node: its convergence and the state its pipeline runs (interfaces,
    /// bridge and ARP tables, flood lists, counters), asked of its agent.
    Show {
        host: String,
        /// The controller's base URL [default: the --os-cloud's switchyard,
        /// else http://127.0.0.1:9696].
        #[arg(long, env = "SWITCHYARD_URL")]
        url: Option<String>,
        #[arg(long)]
        json: bool,
        /// Also print the controller's desired items for the node.
        #[arg(long)]
        desired: bool,
        #[command(flatten)]
        auth: crate::os_auth::OsAuthArgs,
    },
    /// Enroll a node: a new credential for its agent (`switchyard agent
    /// --token-file`), speaking for HOST in ROLE only. Enrolling a node again
    /// revokes its old credential. The server picks it up without a restart.
    Enroll {
        host: String,
        /// vrouter | ovs | sriov | gateway
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[command(flatten)]
        creds: CredentialsArgs,
        /// Write the token to this file (created readable by its owner only)
        /// instead of printing it.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Revoke a node's credential: its agent is refused from its next connection.
    Revoke {
        host: String,
        #[command(flatten)]
        creds: CredentialsArgs,
    },
    /// The enrolled nodes.
    Enrolled {
        #[command(flatten)]
        creds: CredentialsArgs,
    },
}

fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
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

async fn get(url: &str, token: Option<String>) -> anyhow::Result<Value> {
    let mut r = reqwest::Client::new().get(url);
    if let Some(t) = token {
        r = r.header("X-Auth-Token", t);
    }
    let r = r.send().await.with_context(|| format!("GET {url}"))?;
    let status = r.status();
    let v: Value = r.json().await.with_context(|| format!("reading {url}"))?;
    if !status.is_success() {
        let why = v["NeutronError"]["message"]
            .as_str()
            .or(v["error"]["message"].as_str())
            .unwrap_or("request failed");
        if status == 401 {
            bail!("{status}: {why} ({})", crate::os_auth::HINT);
        }
        bail!("{status}: {why}");
    }
    Ok(v)
}

fn line(n: &Value) -> String {
    format!(
        "{:<20} {:>8} {:>8} {:>8}  {:<9} {:<12} {:>6}",
        n["host"].as_str().unwrap_or("?"),
        n["desired_version"].to_string(),
        n["sent_version"].to_string(),
        n["acked_version"].to_string(),
        if n["connected"] == true {
            "connected"
        } else {
            "-"
        },
        n["state"].as_str().unwrap_or("?"),
        n["item_count"].to_string(),
    )
}

const HEADER: &str =
    "HOST                  DESIRED     SENT    ACKED  SESSION   STATE         ITEMS";

pub async fn run(cmd: NodeCmd) -> anyhow::Result<()> {
    match cmd {
        NodeCmd::Enroll {
            host,
            role,
            creds,
            token_file,
        } => {
            let path = creds.path();
            let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let token = nodeauth::enroll_in_file(&path, &host, role, &at)?;
            match token_file {
                Some(out) => {
                    write_secret(&out, &format!("{token}\n"))?;
                    eprintln!(
                        "enrolled {host} as a {} node in {}; its token is in {}",
                        role.name(),
                        path.display(),
                        out.display()
                    );
                }
                None => {
                    eprintln!(
                        "enrolled {host} as a {} node in {}; its token (shown once):",
                        role.name(),
                        path.display()
                    );
                    outln!("{token}");
                }
            }
        }
        NodeCmd::Revoke { host, creds } => {
            let path = creds.path();
            if !nodeauth::revoke_in_file(&path, &host)? {
                bail!("{host} is not enrolled in {}", path.display());
            }
            eprintln!("revoked the credential of {host} in {}", path.display());
        }
        NodeCmd::Enrolled { creds } => {
            let path = creds.path();
            outln!("{:<24} {:<8} ENROLLED", "HOST", "ROLE");
            for (host, role, at) in nodeauth::list_file(&path)? {
                outln!("{host:<24} {:<8} {at}", role.name());
            }
        }
        NodeCmd::List { url, json, auth } => {
            let token = crate::os_auth::token(&auth).await?;
            let url = crate::os_auth::base_url(url, &auth);
            let v = get(&format!("{}/switchyard/v1/nodes", base(&url)?), token).await?;
            if json {
                outln!("{v}");
                return Ok(());
            }
            outln!("{HEADER}");
            for n in v["nodes"].as_array().into_iter().flatten() {
                outln!("{}", line(n));
            }
        }
        NodeCmd::Show {
            host,
            url,
            json,
            desired,
            auth,
        } => {
            let token = crate::os_auth::token(&auth).await?;
            let v = get(
                &format!(
                    "{}/switchyard/v1/nodes/{host}",
                    base(&crate::os_auth::base_url(url, &auth))?
                ),
                token,
            )
            .await?;
            if json {
                outln!("{v}");
                return Ok(());
            }
            let n = &v["node"];
            outln!("{HEADER}\n{}", line(n));
            if let Some(f) = n["failed"].as_object() {
                outln!(
                    "failed since {}: refused its state {} times ({}); next snapshot in {} ms",
                    s(&f["since"].clone()),
                    s(&f["attempts"].clone()),
                    s(&f["reason"].clone()),
                    s(&f["retry_in_ms"].clone())
                );
            } else if let Some(e) = n["last_error"].as_str() {
                outln!("last refused version: {e}");
            }
            match &n["applied"] {
                Value::Null => outln!(
                    "\napplied state: unavailable ({})",
                    n["applied_error"].as_str().unwrap_or("no answer")
                ),
                a => print_applied(a),
            }
            if desired {
                outln!("\ndesired state (controller):");
                for (k, item) in n["items"].as_object().into_iter().flatten() {
                    outln!("  {k:<60} {item}");
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
    outln!(
        "\napplied state (agent, version {}):",
        a["version"].as_u64().unwrap_or(0)
    );
    outln!("interfaces:");
    outln!(
        "  {:<6} {:<36} {:<17} {:<16} {:<8} {:>5} {:>8}  STATUS",
        "PORT",
        "NEUTRON PORT",
        "MAC",
        "IPS",
        "VIF",
        "VLAN",
        "VNI"
    );
    for i in a["interfaces"].as_array().into_iter().flatten() {
        let ips: Vec<String> = i["ips"].as_array().into_iter().flatten().map(s).collect();
        outln!(
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
        outln!(
            "network vni {} vlan {}  flood [{}]",
            s(&net["vni"]),
            s(&net["vlan"]),
            flood.join(", ")
        );
        for e in net["bridge"].as_array().into_iter().flatten() {
            outln!("  bridge  {:<17} -> {}", s(&e["mac"]), s(&e["points_to"]));
        }
        for e in net["arp"].as_array().into_iter().flatten() {
            outln!("  arp     {:<17} -> {}", s(&e["ip"]), s(&e["mac"]));
        }
    }
    for r in a["routers"].as_array().into_iter().flatten() {
        outln!("router {}  snat {}", s(&r["router"]), s(&r["snat"]));
        for (label, key) in [
            ("interface", "interfaces"),
            ("fip", "floating_ips"),
            ("route", "routes"),
        ] {
            for x in r[key].as_array().into_iter().flatten() {
                outln!("  {label:<9} {}", s(x));
            }
        }
    }
    if let Some(n) = a["nat_connections"].as_u64() {
        outln!("nat connections: {n}");
    }
    let c = &a["counters"];
    outln!(
        "counters: rx {} tx {} not_learned {}",
        s(&c["rx"]),
        s(&c["tx"]),
        s(&c["not_learned"])
    );
    for (k, v) in c["drops"].as_object().into_iter().flatten() {
        outln!("  drop {k:<24} {v}");
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
