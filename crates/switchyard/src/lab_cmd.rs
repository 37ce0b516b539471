//! `switchyard lab up`: the whole product in one process — the controller on
//! SQLite, an agent per compute and gateway node of the topology, the emulated
//! fabric in real time and the hypervisor emulation — until interrupted.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use switchyard_lab::Topology;
use switchyard_lab::live::{LiveLab, Options};

use crate::config;
use crate::stdout::{out, outln};

#[derive(Debug, clap::Subcommand)]
pub enum LabCmd {
    /// Start the controller, the agents, the emulated fabric and the hypervisor emulation
    /// (or, with --linux, the topology on this machine's kernel).
    Up(Box<UpArgs>),
    /// Remove what a Linux lab left behind (namespaces, agents, Open vSwitch),
    /// after a crash or a kill -9.
    Down(DownArgs),
}

#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// The Linux lab's state directory.
    #[arg(long, env = "SWITCHYARD_LAB_DIR", default_value = DEFAULT_LINUX_DIR)]
    state_dir: PathBuf,
    /// The lab's namespace prefix: every namespace named PREFIX-… goes.
    #[arg(long, default_value = LINUX_PREFIX)]
    prefix: String,
}

/// Where a Linux lab keeps its state, logs and Open vSwitch databases.
pub(crate) const DEFAULT_LINUX_DIR: &str = "/run/switchyard-lab";
/// Namespace names of a Linux lab start with this.
pub(crate) const LINUX_PREFIX: &str = "sy";

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Address of the API, HOST:PORT.
    #[arg(long, env = "SWITCHYARD_BIND", default_value = "127.0.0.1:9696")]
    bind: String,
    /// Topology file (TOML, see docs/dataplane.md); default: the reference lab.
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Database URL, sqlite://PATH; default: a fresh database in a temporary directory.
    #[arg(long, env = "SWITCHYARD_DB")]
    db: Option<String>,
    /// Server configuration file (its [ml2] and [http] sections and
    /// network_link_prefix; see docs/operator-guide.md).
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    http: config::HttpArgs,
    /// Build the topology on this machine's kernel: network namespaces, agent
    /// processes, Open vSwitch, kernel guests (root; see docs/operator-guide.md).
    #[arg(long)]
    linux: bool,
    /// With --linux: the state directory (state file, logs, tokens, OVS databases).
    #[arg(long, env = "SWITCHYARD_LAB_DIR", default_value = DEFAULT_LINUX_DIR)]
    state_dir: PathBuf,
    /// With --linux: namespaces are named PREFIX-<node> (two labs side by
    /// side need two prefixes and two state directories).
    #[arg(long, default_value = LINUX_PREFIX)]
    prefix: String,
    /// With --linux: what guests are (QEMU VMs of a guest image built from
    /// this machine's kernel and busybox, or network namespaces).
    #[arg(long, value_enum, default_value = "qemu")]
    guests: GuestsArg,
    /// "embedded": the APIs ask for Keystone tokens from the lab's own
    /// identity (admin and demo users; see --clouds-yaml); "noauth": none
    /// (default: the config file's [identity] auth_strategy, else embedded).
    #[arg(long, value_parser = ["noauth", "embedded"])]
    auth: Option<String>,
    /// With embedded identity: write the lab's clouds.yaml (clouds
    /// `switchyard`, admin, and `switchyard-demo`, a member of project demo)
    /// here, mode 0600; without it, it is printed.
    #[arg(long, value_name = "PATH")]
    clouds_yaml: Option<PathBuf>,
}

/// A random password (a v4 UUID's 122 random bits, hex).
fn random_password() -> String {
    switchyard_identity::new_id()
}

/// The lab's clouds.yaml: admin and demo, password auth against `url`.
fn clouds_yaml(url: &str, admin: &str, demo: &str) -> String {
    let cloud = |name: &str, user: &str, pw: &str, project: &str| {
        format!(
            "  {name}:\n    auth:\n      auth_url: {url}/identity/v3\n      username: {user}\n      password: \"{pw}\"\n      project_name: {project}\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: RegionOne\n    identity_api_version: 3\n"
        )
    };
    format!(
        "clouds:\n{}{}",
        cloud("switchyard", "admin", admin, "admin"),
        cloud("switchyard-demo", "demo", demo, "demo")
    )
}

/// The lab's embedded identity: the admin and demo users (random passwords
/// unless configured) and the compute service's own user.
pub(crate) struct LabIdentity {
    id: switchyard_identity::Identity,
    compute_token: switchyard_identity::ServiceToken,
    admin: String,
    demo: String,
    /// The admin project's id: the lab's own resources (`public`) are the
    /// admin's, as devstack makes them, not a project Keystone does not know.
    admin_project: Option<String>,
}

/// The project the lab's own resources belong to: the configured
/// `default_project`, else the identity's admin project, else `admin`.
fn lab_project(file: &config::FileConfig, admin_project: Option<&str>) -> String {
    file.default_project
        .clone()
        .or_else(|| admin_project.map(str::to_string))
        .unwrap_or_else(|| "admin".into())
}

fn lab_identity(
    file: &config::FileConfig,
    db: &std::path::Path,
    clouds: Option<&PathBuf>,
) -> anyhow::Result<LabIdentity> {
    let mut idc = file.identity.clone();
    idc.auth_strategy = Some("embedded".into());
    // Passwords given, else those of the clouds.yaml an earlier start wrote
    // (copies of it keep working), else new ones.
    let kept = |cloud: &str| clouds.and_then(|p| crate::os_auth::password_in(p, cloud));
    let admin = std::env::var("SWITCHYARD_ADMIN_PASSWORD")
        .ok()
        .or(idc.admin_password.clone())
        .or_else(|| kept("switchyard"))
        .unwrap_or_else(random_password);
    let demo = idc
        .demo_password
        .clone()
        .or_else(|| kept("switchyard-demo"))
        .unwrap_or_else(random_password);
    idc.demo_password = Some(demo.clone());
    let id = idc
        .open(db, Some(admin.clone()))?
        .context("opening the lab's identity")?;
    // The compute service's own user, as devstack makes Nova's.
    let nova = random_password();
    id.bootstrap(&switchyard_identity::Bootstrap {
        admin_user: idc.admin_user.clone(),
        admin_password: admin.clone(),
        admin_project: idc.admin_project.clone(),
        demo: None,
        service: Some(("service".into(), "nova".into(), nova.clone())),
    })
    .context("bootstrapping the compute service's user")?;
    let compute_token = switchyard_identity::ServiceToken::new(&id, "nova", &nova, "service");
    let admin_project = id
        .project_by_name(&idc.admin_project)
        .context("reading the lab's identity")?
        .map(|p| p.id);
    Ok(LabIdentity {
        id,
        compute_token,
        admin,
        demo,
        admin_project,
    })
}

/// Writes (with `--clouds-yaml`) or prints the lab's clouds.yaml; returns
/// the path a user exports as `OS_CLIENT_CONFIG_FILE`.
fn announce_clouds(k: &Keystone) -> String {
    match &k.written {
        Some(p) => {
            let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            outln!(
                "\nEvery API asks for a Keystone token: clouds.yaml (clouds switchyard, admin, and switchyard-demo, a member of project demo) written to {}",
                p.display()
            );
            p.display().to_string()
        }
        None => {
            outln!(
                "\nEvery API asks for a Keystone token. Save this as clouds.yaml (clouds switchyard, admin, and switchyard-demo, a member of project demo):\n{}",
                k.yaml
            );
            "clouds.yaml".to_string()
        }
    }
}

/// The lab's clouds.yaml for the API at `url`, written to `path` if given.
fn keystone(
    url: &str,
    admin: &str,
    demo: &str,
    path: Option<&PathBuf>,
) -> anyhow::Result<Keystone> {
    let yaml = clouds_yaml(url, admin, demo);
    if let Some(p) = path {
        write_private(p, &yaml).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(Keystone {
        admin: admin.to_string(),
        yaml,
        written: path.cloned(),
    })
}

/// `--guests`: what a Linux lab's guests are.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GuestsArg {
    /// QEMU VMs (TCG), their NICs plugged per vif_type as os-vif does.
    Qemu,
    /// Network namespaces with the kernel's stack (fast to boot).
    Netns,
}

#[cfg(target_os = "linux")]
impl From<GuestsArg> for switchyard_lab::linux::guests::GuestKind {
    fn from(g: GuestsArg) -> Self {
        match g {
            GuestsArg::Qemu => Self::Qemu,
            GuestsArg::Netns => Self::Netns,
        }
    }
}

pub async fn run(cmd: LabCmd, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let a = match cmd {
        LabCmd::Up(a) => *a,
        LabCmd::Down(d) => return down(&d),
    };
    let topology = match &a.topology {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading topology {}", p.display()))?;
            Topology::from_toml(&text).with_context(|| format!("topology {}", p.display()))?
        }
        None => Topology::reference().context("the reference topology")?,
    };
    let file = config::FileConfig::load(a.config.as_deref())?;
    let http = config::http_options(&a.http, &file)?;
    // The temporary directory lives as long as the lab.
    let (db, _tmp) = match a.db.clone().or(file.db.clone()) {
        Some(url) => (config::sqlite_path(&url)?, None),
        None => {
            let t = tempfile::tempdir().context("creating a temporary directory")?;
            (t.path().join("switchyard.db"), Some(t))
        }
    };
    // One switchyard per database: held until the lab stops.
    let _lock = switchyard_store::lock(&db)?;
    switchyard_store::create_private(&db).with_context(|| format!("creating {}", db.display()))?;
    // The lab asks for tokens unless told otherwise.
    let auth = a
        .auth
        .clone()
        .or(file.identity.auth_strategy.clone())
        .unwrap_or_else(|| "embedded".into());
    if !["noauth", "embedded"].contains(&auth.as_str()) {
        anyhow::bail!(
            "lab up: auth_strategy \"{auth}\" is for switchyard server; the lab runs \"embedded\" or \"noauth\""
        );
    }
    let ident = if auth == "embedded" {
        Some(lab_identity(&file, &db, a.clouds_yaml.as_ref())?)
    } else {
        None
    };
    if a.linux {
        return linux(a, topology, file, http, db, ident, shutdown).await;
    }
    let mut compute = switchyard_lab::live::ComputeOptions::default();
    let mut passwords = None;
    let ident_project = ident.as_ref().and_then(|i| i.admin_project.clone());
    let identity = ident.map(|i| {
        compute.service_token = Some(i.compute_token);
        passwords = Some((i.admin, i.demo));
        i.id
    });
    let live = LiveLab::start(Options {
        topology: topology.clone(),
        bind: a.bind.clone(),
        db: db.clone(),
        ml2: file.ml2.clone(),
        project: lab_project(&file, ident_project.as_deref()),
        heartbeat: switchyard_agent::client::HEARTBEAT,
        compute,
        http,
        identity,
    })
    .await
    .with_context(|| format!("starting the lab on {}", a.bind))?;
    let hosts = live.hosts();
    let connected = wait_connected(&live, &hosts, Duration::from_secs(15)).await;
    // Servers an earlier lab kept in this database come back on their hosts.
    let kept = live.compute().servers().len();
    if kept > 0 {
        let back = live.compute().resume().await;
        outln!("switchyard lab: {back} of {kept} servers kept in the database resumed");
    }
    let keystone = match &passwords {
        Some((admin, demo)) => Some(keystone(&live.url(), admin, demo, a.clouds_yaml.as_ref())?),
        None => None,
    };
    print_banner(&live, &topology, &db, &hosts, connected, keystone.as_ref());
    shutdown.await;
    live.shutdown().await;
    outln!("switchyard lab: stopped");
    Ok(())
}

/// Writes `text` to `path` readable by its owner only (it holds passwords).
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

pub(crate) async fn wait_connected(live: &LiveLab, hosts: &[String], limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let ok = live.app().is_some_and(|app| {
            let nodes = app
                .shared
                .nodes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            hosts.iter().all(|h| {
                nodes
                    .get(h)
                    .is_some_and(|n| n.connected && n.acked_at.is_some())
            })
        });
        if ok || tokio::time::Instant::now() >= deadline {
            return ok;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a user needs to authenticate to a lab with identity.
struct Keystone {
    admin: String,
    yaml: String,
    /// Where the clouds.yaml was written (`None`: printed).
    written: Option<PathBuf>,
}

fn print_banner(
    live: &LiveLab,
    t: &Topology,
    db: &std::path::Path,
    hosts: &[String],
    ok: bool,
    keystone: Option<&Keystone>,
) {
    let url = live.url();
    let nodes: Vec<String> = t
        .nodes
        .iter()
        .map(|n| format!("{} ({:?})", n.name, n.role).to_lowercase())
        .collect();
    // The binary as the user can run it from anywhere.
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "switchyard".into());
    outln!("switchyard lab: up");
    let auth = if live.app().is_some_and(|a| a.identity.is_some()) {
        format!("Keystone tokens from {url}/identity/v3")
    } else {
        "noauth".to_string()
    };
    outln!("  Neutron API   {url}/v2.0/   ({auth})");
    outln!(
        "  compute API   {url}/compute/v2.1/   (Nova v2.1 subset: servers, os-migrateLive, os-hypervisors)"
    );
    outln!("  console       {url}/console/   (in a browser)");
    outln!("  lab           {url}/switchyard/v1/lab   (guests: ping, TCP listen/connect/stream)");
    outln!("  nodes         {url}/switchyard/v1/nodes   ({exe} node list --url {url})");
    outln!("  database      {}", db.display());
    outln!("  topology      {}", nodes.join(", "));
    outln!(
        "  agents        {} {}",
        if hosts.is_empty() {
            "(none)".to_string()
        } else {
            hosts.join(", ")
        },
        if ok {
            "connected and in sync"
        } else {
            "NOT all connected yet (see the log)"
        }
    );
    let net = "$(curl -s -XPOST $U/v2.0/networks -d '{\"network\":{\"name\":\"demo-net\"}}' | jq -r .network.id)";
    let recipe = format!(
        r#"
Try it (bash, with curl and jq; host names are the reference topology's):
  U={url}
  NET={net}
  curl -s -XPOST $U/v2.0/subnets -d '{{"subnet":{{"network_id":"'$NET'","ip_version":4,"cidr":"10.0.0.0/24"}}}}'
  P1=$(curl -s -XPOST $U/v2.0/ports -d '{{"port":{{"network_id":"'$NET'","binding:host_id":"compute-1","device_owner":"compute:nova"}}}}' | jq -r .port.id)
  P2=$(curl -s -XPOST $U/v2.0/ports -d '{{"port":{{"network_id":"'$NET'","binding:host_id":"compute-2","device_owner":"compute:nova"}}}}' | jq -r .port.id)
  curl -s -XPOST $U/switchyard/v1/lab/guests -d '{{"guest":{{"name":"vm-ovs","port_id":"'$P1'"}}}}'
  curl -s -XPOST $U/switchyard/v1/lab/guests -d '{{"guest":{{"name":"vm-vrouter","port_id":"'$P2'"}}}}'
  curl -s $U/v2.0/ports/$P2 | jq '.port | {{status, "binding:vif_type"}}'     # ACTIVE, vrouter
  IP2=$(curl -s $U/v2.0/ports/$P2 | jq -r '.port.fixed_ips[0].ip_address')
  curl -s -XPOST $U/switchyard/v1/lab/guests/vm-ovs/ping -d '{{"ping":{{"target":"'$IP2'","count":5}}}}' | jq .
  {exe} node show compute-2 --url $U

Or through the compute API, as Nova would (boot, then live-migrate OVS -> vRouter):
  S=$(curl -s -XPOST $U/compute/v2.1/servers -d '{{"server":{{"name":"vm1","networks":[{{"uuid":"'$NET'"}}],"availability_zone":"nova:compute-1"}}}}' | jq -r .server.id)
  curl -s $U/compute/v2.1/servers/$S | jq '.server | {{status, "OS-EXT-SRV-ATTR:host", addresses}}'
  curl -s -XPOST $U/compute/v2.1/servers/$S/action -H 'OpenStack-API-Version: compute 2.74' \
       -d '{{"os-migrateLive":{{"host":"compute-4","block_migration":"auto"}}}}'
  {exe} verify --url $U      # every guest to every guest it should reach
"#
    );
    match keystone {
        None => {
            out!("{recipe}");
            outln!(
                r#"
With the openstack CLI, a clouds.yaml entry without Keystone:
  clouds: {{switchyard: {{auth_type: none, network_endpoint_override: "{url}/v2.0/", compute_endpoint_override: "{url}/compute/v2.1/"}}}}
  openstack --os-cloud switchyard network list
"#
            );
        }
        Some(k) => {
            let clouds = announce_clouds(k);
            // The same recipe, each call with the admin's token.
            let login = format!(
                "  export OS_CLIENT_CONFIG_FILE={clouds} OS_CLOUD=switchyard   # switchyard verify/node and the openstack CLI use it\n  T=$(curl -si $U/identity/v3/auth/tokens -d '{{\"auth\":{{\"identity\":{{\"methods\":[\"password\"],\"password\":{{\"user\":{{\"name\":\"admin\",\"domain\":{{\"name\":\"Default\"}},\"password\":\"{}\"}}}}}},\"scope\":{{\"project\":{{\"name\":\"admin\",\"domain\":{{\"name\":\"Default\"}}}}}}}}}}' | tr -d '\\r' | awk 'tolower($1)==\"x-subject-token:\" {{print $2}}')\n  C=\"curl -s -H X-Auth-Token:$T\"",
                k.admin
            );
            let recipe = recipe.replace("curl -s", "$C").replacen(
                &format!("  U={url}\n"),
                &format!("  U={url}\n{login}\n"),
                1,
            );
            out!("{recipe}");
            outln!("\n  openstack server list --all-projects; openstack network list\n");
        }
    }
    outln!("Ctrl-C stops the lab.");
}

#[cfg(target_os = "linux")]
fn down(d: &DownArgs) -> anyhow::Result<()> {
    let (procs, namespaces) = switchyard_lab::linux::down(&d.state_dir, &d.prefix, true)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    outln!("switchyard lab down: stopped {procs} processes, removed {namespaces} namespaces");
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn down(_: &DownArgs) -> anyhow::Result<()> {
    anyhow::bail!("Linux labs exist only on Linux")
}

#[cfg(target_os = "linux")]
async fn linux(
    a: UpArgs,
    topology: Topology,
    file: config::FileConfig,
    http: switchyard_api::HttpOptions,
    db: PathBuf,
    ident: Option<LabIdentity>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    use switchyard_lab::linux::{LinuxLab, Options as LinuxOptions};
    let passwords = ident.as_ref().map(|i| (i.admin.clone(), i.demo.clone()));
    let ident_project = ident.as_ref().and_then(|i| i.admin_project.clone());
    let binary = std::env::current_exe().context("finding the switchyard binary")?;
    outln!(
        "switchyard lab up --linux: building {} nodes as network namespaces …",
        topology.nodes.len()
    );
    let lab = LinuxLab::start(LinuxOptions {
        topology: topology.clone(),
        bind: a.bind.clone(),
        db: db.clone(),
        ml2: file.ml2.clone(),
        project: lab_project(&file, ident_project.as_deref()),
        binary,
        state_dir: a.state_dir.clone(),
        prefix: a.prefix.clone(),
        http,
        guests: a.guests.into(),
        identity: ident.map(|i| (i.id, i.compute_token)),
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let u = lab.url();
    // Written before the banner says where the API is.
    let keystone = match &passwords {
        Some((admin, demo)) => Some(keystone(&u, admin, demo, a.clouds_yaml.as_ref())?),
        None => None,
    };
    outln!("switchyard lab (Linux mode) is up: every node converged.");
    let auth = if passwords.is_some() {
        format!("Keystone tokens from {u}/identity/v3")
    } else {
        "noauth".to_string()
    };
    outln!("  Neutron API   {u}/v2.0/   ({auth})");
    outln!("  console       {u}/console/   (in a browser)");
    outln!(
        "  lab API       {u}/switchyard/v1/lab  (guests: POST {{\"guest\": {{\"name\", \"port_id\"}}}}, ping, stream, exec)"
    );
    match a.guests {
        GuestsArg::Qemu => outln!(
            "  guests        QEMU VMs (TCG), image and VM sockets in {}/images and {}/vms",
            a.state_dir.display(),
            a.state_dir.display()
        ),
        GuestsArg::Netns => outln!("  guests        network namespaces {}-g-<name>", a.prefix),
    }
    outln!(
        "  nodes         network namespaces {}-<node>; agent logs and OVS databases in {}",
        a.prefix,
        a.state_dir.display()
    );
    outln!("  compute API   {u}/compute/v2.1/  (boot and live-migrate servers across nodes)");
    match &keystone {
        Some(k) => {
            let clouds = announce_clouds(k);
            outln!(
                "  verify        OS_CLIENT_CONFIG_FILE={clouds} switchyard verify --os-cloud switchyard --url {u}"
            );
        }
        None => outln!("  verify        switchyard verify --url {u}"),
    }
    outln!(
        "Ctrl-C stops it and removes every namespace, device and process it made (`switchyard lab down` after a crash)."
    );
    shutdown.await;
    lab.shutdown().await;
    outln!("switchyard lab: stopped");
    Ok(())
}

#[cfg(not(target_os = "linux"))]
async fn linux(
    _: UpArgs,
    _: Topology,
    _: config::FileConfig,
    _: switchyard_api::HttpOptions,
    _: PathBuf,
    _: Option<LabIdentity>,
    _: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    anyhow::bail!("--linux needs Linux")
}
