//! `switchyard server` settings: TOML file, then environment, then flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use switchyard_api::{HttpOptions, LinkPrefix};
use switchyard_ml2::Ml2Config;
use switchyard_store::Durability;

/// The `--config` file. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub bind: Option<String>,
    pub db: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub default_project: Option<String>,
    /// "process" (survives kill -9) or "power" (fsync each commit).
    pub durability: Option<String>,
    /// The node credentials file (default DATA_DIR/nodes.toml).
    pub node_credentials: Option<PathBuf>,
    /// Neutron's `network_link_prefix`: the public URL links are built on.
    #[serde(alias = "public_endpoint")]
    pub network_link_prefix: Option<String>,
    pub http: HttpConfig,
    pub ml2: Ml2Config,
    pub quotas: switchyard_ml2::QuotaConfig,
    pub identity: IdentityConfig,
    pub keystone_authtoken: KeystoneAuthtoken,
    pub nova: NovaConfig,
}

/// `[keystone_authtoken]`: the external Keystone tokens are checked against
/// when `[identity] auth_strategy = "keystone"`, with keystonemiddleware's
/// option names.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeystoneAuthtoken {
    /// Keystone's URL, e.g. http://keystone:5000/v3 (`/v3` added if missing).
    pub auth_url: Option<String>,
    /// What a refused client is told to authenticate at (default: auth_url).
    pub www_authenticate_uri: Option<String>,
    /// switchyard's service user (it needs the `service` or `admin` role to
    /// validate others' tokens).
    pub username: String,
    /// Or SWITCHYARD_KEYSTONE_PASSWORD.
    pub password: Option<String>,
    pub project_name: String,
    pub user_domain_name: String,
    pub project_domain_name: String,
    /// Seconds a validation is reused (a revoked token works that long).
    pub token_cache_time: u64,
    /// Seconds a call to Keystone may take.
    pub http_request_timeout: u64,
}

impl Default for KeystoneAuthtoken {
    fn default() -> Self {
        KeystoneAuthtoken {
            auth_url: None,
            www_authenticate_uri: None,
            username: "neutron".into(),
            password: None,
            project_name: "service".into(),
            user_domain_name: "Default".into(),
            project_domain_name: "Default".into(),
            token_cache_time: 300,
            http_request_timeout: 10,
        }
    }
}

/// `[nova]`: where port events go (`os-server-external-events`), and as whom.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NovaConfig {
    /// Nova's compute endpoint, e.g. http://nova:8774/v2.1; unset: Nova is
    /// not told of port changes.
    pub url: Option<String>,
    /// The Keystone the user below authenticates at (default: the
    /// `[keystone_authtoken]` one, or the embedded identity).
    pub auth_url: Option<String>,
    pub username: String,
    /// Or SWITCHYARD_NOVA_PASSWORD. Unset: a noauth Nova, sent `X-Roles: admin`.
    pub password: Option<String>,
    pub project_name: String,
    pub user_domain_name: String,
    pub project_domain_name: String,
    /// Neutron's `send_events_interval`, seconds between batches.
    pub send_events_interval: f64,
}

impl Default for NovaConfig {
    fn default() -> Self {
        NovaConfig {
            url: None,
            auth_url: None,
            username: "nova".into(),
            password: None,
            project_name: "service".into(),
            user_domain_name: "Default".into(),
            project_domain_name: "Default".into(),
            send_events_interval: 2.0,
        }
    }
}

fn http_url(what: &str, u: &str) -> anyhow::Result<String> {
    let ok = (u.starts_with("http://") || u.starts_with("https://"))
        && u.len() > "https://".len()
        && !u.chars().any(char::is_whitespace);
    if !ok {
        bail!("{what} = \"{u}\": an http:// or https:// URL");
    }
    Ok(u.trim_end_matches('/').to_string())
}

/// Who may call the APIs: what `[identity]` and `[keystone_authtoken]` ask for.
pub enum Auth {
    None,
    Embedded(switchyard_identity::Identity),
    Keystone(std::sync::Arc<switchyard_identity::remote::RemoteValidator>),
}

impl FileConfig {
    /// The API's authentication, opened (embedded: bootstrapped in `db`).
    pub fn auth(&self, db: &Path, admin_password: Option<String>) -> anyhow::Result<Auth> {
        if self.identity.strategy() != "keystone" {
            return Ok(match self.identity.open(db, admin_password)? {
                Some(id) => Auth::Embedded(id),
                None => Auth::None,
            });
        }
        let k = &self.keystone_authtoken;
        let Some(auth_url) = &k.auth_url else {
            bail!("[identity] auth_strategy = \"keystone\" needs [keystone_authtoken] auth_url");
        };
        let auth_url = http_url("[keystone_authtoken] auth_url", auth_url)?;
        let Some(password) = std::env::var("SWITCHYARD_KEYSTONE_PASSWORD")
            .ok()
            .or(k.password.clone())
            .filter(|p| !p.is_empty())
        else {
            bail!(
                "[identity] auth_strategy = \"keystone\" needs [keystone_authtoken] password (or SWITCHYARD_KEYSTONE_PASSWORD)"
            );
        };
        if !(1..=600).contains(&k.http_request_timeout) {
            bail!("[keystone_authtoken] http_request_timeout must be 1 to 600 seconds");
        }
        if k.token_cache_time > 3600 {
            bail!("[keystone_authtoken] token_cache_time must be 0 to 3600 seconds");
        }
        let www = match &k.www_authenticate_uri {
            Some(u) => http_url("[keystone_authtoken] www_authenticate_uri", u)?,
            None => auth_url.clone(),
        };
        Ok(Auth::Keystone(std::sync::Arc::new(
            switchyard_identity::remote::RemoteValidator::new(
                switchyard_identity::remote::PasswordAuth {
                    auth_url,
                    username: k.username.clone(),
                    password,
                    project_name: k.project_name.clone(),
                    user_domain_name: k.user_domain_name.clone(),
                    project_domain_name: k.project_domain_name.clone(),
                },
                www,
                Duration::from_secs(k.token_cache_time),
                Duration::from_secs(k.http_request_timeout),
            ),
        )))
    }

    /// Where port events go (`None`: `[nova] url` unset), with the token
    /// source `[nova]` asks for.
    pub fn nova_target(
        &self,
        auth: &Auth,
    ) -> anyhow::Result<Option<switchyard_api::nova::NovaTarget>> {
        let n = &self.nova;
        let Some(url) = &n.url else {
            return Ok(None);
        };
        let url = http_url("[nova] url", url)?;
        if !(0.0..=60.0).contains(&n.send_events_interval) {
            bail!("[nova] send_events_interval must be 0 to 60 seconds");
        }
        let interval = Duration::from_secs_f64(n.send_events_interval);
        let password = std::env::var("SWITCHYARD_NOVA_PASSWORD")
            .ok()
            .or(n.password.clone())
            .filter(|p| !p.is_empty());
        let Some(password) = password else {
            if !matches!(auth, Auth::None) {
                bail!(
                    "[nova] url is set but not password (or SWITCHYARD_NOVA_PASSWORD): a Nova behind Keystone needs a token"
                );
            }
            return Ok(Some(switchyard_api::nova::NovaTarget {
                url,
                token: None,
                interval,
            }));
        };
        let auth_url = n.auth_url.clone().or_else(|| match auth {
            Auth::Keystone(_) => self.keystone_authtoken.auth_url.clone(),
            _ => None,
        });
        let token = match (auth_url, auth) {
            (Some(u), _) => switchyard_identity::TokenSource::Keystone(std::sync::Arc::new(
                switchyard_identity::remote::KeystoneClient::new(
                    switchyard_identity::remote::PasswordAuth {
                        auth_url: http_url("[nova] auth_url", &u)?,
                        username: n.username.clone(),
                        password,
                        project_name: n.project_name.clone(),
                        user_domain_name: n.user_domain_name.clone(),
                        project_domain_name: n.project_domain_name.clone(),
                    },
                    Duration::from_secs(10),
                ),
            )),
            (None, Auth::Embedded(id)) => switchyard_identity::TokenSource::Embedded(
                switchyard_identity::ServiceToken::new(id, &n.username, &password, &n.project_name),
            ),
            (None, _) => bail!("[nova] password is set but no auth_url to authenticate at"),
        };
        Ok(Some(switchyard_api::nova::NovaTarget {
            url,
            token: Some(token),
            interval,
        }))
    }
}

/// `[identity]`: who may call the APIs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// "noauth" (no authentication: the project is X-Project-Id as sent),
    /// "embedded" (switchyard's own Keystone v3 at /identity) or "keystone"
    /// (tokens checked against `[keystone_authtoken]`).
    /// Unset: "noauth" for `switchyard server`, "embedded" for `lab up`.
    pub auth_strategy: Option<String>,
    pub admin_user: String,
    /// Required with "embedded" (or SWITCHYARD_ADMIN_PASSWORD).
    pub admin_password: Option<String>,
    pub admin_project: String,
    pub demo_project: String,
    pub demo_user: String,
    /// Unset: no demo user.
    pub demo_password: Option<String>,
    /// Seconds a token lives (Keystone's [token] expiration).
    pub token_expiration: u64,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            auth_strategy: None,
            admin_user: "admin".into(),
            admin_password: None,
            admin_project: "admin".into(),
            demo_project: "demo".into(),
            demo_user: "demo".into(),
            demo_password: None,
            token_expiration: 3600,
        }
    }
}

impl IdentityConfig {
    /// `auth_strategy`, "noauth" when unset.
    pub fn strategy(&self) -> &str {
        self.auth_strategy.as_deref().unwrap_or("noauth")
    }

    /// The embedded identity this asks for (`None` for noauth), bootstrapped
    /// in the database at `db`.
    pub fn open(
        &self,
        db: &Path,
        admin_password: Option<String>,
    ) -> anyhow::Result<Option<switchyard_identity::Identity>> {
        match self.strategy() {
            "noauth" => return Ok(None),
            "embedded" => {}
            "keystone" => return Ok(None),
            other => anyhow::bail!(
                "[identity] auth_strategy = \"{other}\": \"noauth\", \"embedded\" or \"keystone\""
            ),
        }
        if !(60..=7 * 24 * 3600).contains(&self.token_expiration) {
            anyhow::bail!("[identity] token_expiration must be 60 to 604800 seconds");
        }
        let Some(admin_password) = admin_password
            .or_else(|| self.admin_password.clone())
            .filter(|p| !p.is_empty())
        else {
            anyhow::bail!(
                "[identity] auth_strategy = \"embedded\" needs admin_password (or SWITCHYARD_ADMIN_PASSWORD)"
            );
        };
        let id = switchyard_identity::Identity::open(
            db,
            chrono::Duration::seconds(self.token_expiration as i64),
        )
        .with_context(|| format!("opening the identity tables in {}", db.display()))?;
        id.bootstrap(&switchyard_identity::Bootstrap {
            admin_user: self.admin_user.clone(),
            admin_password,
            admin_project: self.admin_project.clone(),
            demo: self
                .demo_password
                .clone()
                .map(|p| (self.demo_project.clone(), self.demo_user.clone(), p)),
            service: None,
        })
        .context("bootstrapping the identity")?;
        Ok(Some(id))
    }
}

/// `[http]`: the API server's timeouts (seconds) and limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub header_timeout: Option<f64>,
    pub body_timeout: Option<f64>,
    pub idle_timeout: Option<f64>,
    pub max_connections: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
}

/// The API server's public URL and limits, for `server` and `lab up`
/// (docs/operator-guide.md, "HTTP server").
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HttpArgs {
    /// Public URL that links in responses are built on (Neutron's
    /// network_link_prefix), e.g. https://neutron.example.com:9696; default:
    /// http:// and the address a client connected to. Never the Host header.
    #[arg(long, env = "SWITCHYARD_NETWORK_LINK_PREFIX", value_name = "URL")]
    pub network_link_prefix: Option<String>,
    /// Seconds a client has to send a request's head [default: 10].
    #[arg(long, env = "SWITCHYARD_HEADER_TIMEOUT", value_name = "SECONDS")]
    pub header_timeout: Option<f64>,
    /// Seconds a client has to send a request's body [default: 60].
    #[arg(long, env = "SWITCHYARD_BODY_TIMEOUT", value_name = "SECONDS")]
    pub body_timeout: Option<f64>,
    /// Seconds an idle keep-alive connection stays open [default: 75].
    #[arg(long, env = "SWITCHYARD_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub idle_timeout: Option<f64>,
    /// Connections served at once; more are answered 503 [default: 512].
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
}

fn seconds(name: &str, s: Option<f64>, default: Duration) -> anyhow::Result<Duration> {
    match s {
        None => Ok(default),
        Some(x) => Duration::try_from_secs_f64(x)
            .ok()
            .filter(|d| !d.is_zero())
            .with_context(|| format!("{name} must be a positive number of seconds, not {x}")),
    }
}

/// Flags and environment over `[http]` and `network_link_prefix` from the
/// file, over the defaults.
pub fn http_options(a: &HttpArgs, file: &FileConfig) -> anyhow::Result<HttpOptions> {
    let d = HttpOptions::default();
    let f = &file.http;
    let prefix = a
        .network_link_prefix
        .clone()
        .or(file.network_link_prefix.clone())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<LinkPrefix>())
        .transpose()?;
    let opts = HttpOptions {
        network_link_prefix: prefix,
        header_timeout: seconds(
            "header_timeout",
            a.header_timeout.or(f.header_timeout),
            d.header_timeout,
        )?,
        body_timeout: seconds(
            "body_timeout",
            a.body_timeout.or(f.body_timeout),
            d.body_timeout,
        )?,
        idle_timeout: seconds(
            "idle_timeout",
            a.idle_timeout.or(f.idle_timeout),
            d.idle_timeout,
        )?,
        max_connections: a
            .max_connections
            .or(f.max_connections)
            .unwrap_or(d.max_connections),
        max_header_bytes: f.max_header_bytes.unwrap_or(d.max_header_bytes),
        max_headers: f.max_headers.unwrap_or(d.max_headers),
    };
    opts.check()?;
    Ok(opts)
}

impl FileConfig {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let mut cfg: FileConfig = toml::from_str(&text)
            .with_context(|| format!("parsing config file {}", path.display()))?;
        cfg.ml2.quotas = cfg.quotas.clone();
        cfg.ml2
            .check()
            .with_context(|| format!("checking [ml2] in {}", path.display()))?;
        Ok(cfg)
    }
}

pub fn durability(s: Option<&str>) -> anyhow::Result<Durability> {
    match s.unwrap_or("process") {
        "process" => Ok(Durability::Process),
        "power" => Ok(Durability::Power),
        other => bail!("durability must be 'process' or 'power', not '{other}'"),
    }
}

/// `sqlite://PATH` → PATH; other engines are refused with a clear message.
pub fn sqlite_path(db: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = db.strip_prefix("sqlite://") {
        if p.is_empty() {
            bail!("--db sqlite:// needs a file path, e.g. sqlite://./data/switchyard.db");
        }
        return Ok(PathBuf::from(p));
    }
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        bail!("PostgreSQL is not supported yet; use --db sqlite://PATH");
    }
    bail!("--db must be sqlite://PATH, not '{db}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_urls() {
        assert_eq!(
            sqlite_path("sqlite:///tmp/x.db").expect("ok"),
            PathBuf::from("/tmp/x.db")
        );
        assert!(sqlite_path("sqlite://").is_err());
        assert!(sqlite_path("postgres://h/db").is_err());
        assert!(sqlite_path("mysql://h/db").is_err());
    }

    /// Each `[keystone_authtoken]`/`[nova]` mistake is refused at start
    /// with what to fix (none reaches a request).
    #[test]
    fn keystone_and_nova_settings_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("x.db");
        let err = |toml: &str| {
            let f: FileConfig = toml::from_str(toml).expect("parses");
            match f.auth(&db, None) {
                Err(e) => e.to_string(),
                Ok(a) => f
                    .nova_target(&a)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
            }
        };
        let ks = "[identity]\nauth_strategy = \"keystone\"\n";
        assert!(err(ks).contains("needs [keystone_authtoken] auth_url"));
        assert!(
            err(&format!(
                "{ks}[keystone_authtoken]\nauth_url = \"k:5000\"\npassword = \"p\"\n"
            ))
            .contains("http:// or https://")
        );
        assert!(
            err(&format!(
                "{ks}[keystone_authtoken]\nauth_url = \"http://k:5000\"\n"
            ))
            .contains("needs [keystone_authtoken] password")
        );
        let ok =
            format!("{ks}[keystone_authtoken]\nauth_url = \"http://k:5000\"\npassword = \"p\"\n");
        assert_eq!(err(&ok), "");
        assert!(err(&format!("{ok}token_cache_time = 99999\n")).contains("0 to 3600"));
        // Behind Keystone, Nova needs a token; noauth, a password needs a
        // Keystone to use it at.
        assert!(
            err(&format!("{ok}[nova]\nurl = \"http://nova:8774/v2.1\"\n"))
                .contains("needs a token")
        );
        assert_eq!(
            err(&format!(
                "{ok}[nova]\nurl = \"http://nova:8774/v2.1\"\npassword = \"n\"\n"
            )),
            ""
        );
        assert!(
            err("[nova]\nurl = \"http://nova:8774/v2.1\"\npassword = \"n\"\n")
                .contains("no auth_url")
        );
        assert!(err("[nova]\nurl = \"nova\"\n").contains("http:// or https://"));
        assert!(
            err("[nova]\nurl = \"http://n/v2.1\"\nsend_events_interval = -1\n").contains("0 to 60")
        );
        assert_eq!(err("[nova]\nurl = \"http://n/v2.1\"\n"), "", "noauth Nova");
        assert!(err("[identity]\nauth_strategy = \"ldap\"\n").contains("\"keystone\""));
        assert!(
            toml::from_str::<FileConfig>("[nova]\nendpoint = \"x\"\n").is_err(),
            "unknown keys"
        );
    }

    #[test]
    fn http_settings_flags_over_file_over_defaults() {
        let file: FileConfig = toml::from_str(
            "public_endpoint = \"https://n.example.com/net/\"\n[http]\nheader_timeout = 2.5\nidle_timeout = 30\nmax_headers = 50\n",
        )
        .expect("valid");
        let o = http_options(&HttpArgs::default(), &file).expect("ok");
        assert_eq!(
            o.network_link_prefix.as_ref().map(LinkPrefix::as_str),
            Some("https://n.example.com/net")
        );
        assert_eq!(o.header_timeout, Duration::from_millis(2500));
        assert_eq!(o.idle_timeout, Duration::from_secs(30));
        assert_eq!(o.body_timeout, HttpOptions::default().body_timeout);
        assert_eq!(o.max_headers, 50);
        let flags = HttpArgs {
            network_link_prefix: Some("http://10.0.0.1:9696".into()),
            header_timeout: Some(1.0),
            max_connections: Some(64),
            ..HttpArgs::default()
        };
        let o = http_options(&flags, &file).expect("ok");
        assert_eq!(
            o.network_link_prefix.as_ref().map(LinkPrefix::as_str),
            Some("http://10.0.0.1:9696")
        );
        assert_eq!(o.header_timeout, Duration::from_secs(1));
        assert_eq!(o.max_connections, 64);
        for bad in [
            HttpArgs {
                header_timeout: Some(0.0),
                ..HttpArgs::default()
            },
            HttpArgs {
                idle_timeout: Some(f64::NAN),
                ..HttpArgs::default()
            },
            HttpArgs {
                network_link_prefix: Some("neutron.example.com".into()),
                ..HttpArgs::default()
            },
            HttpArgs {
                max_connections: Some(0),
                ..HttpArgs::default()
            },
        ] {
            assert!(
                http_options(&bad, &FileConfig::default()).is_err(),
                "{bad:?}"
            );
        }
        assert!(toml::from_str::<FileConfig>("[http]\nheader_timeot = 1\n").is_err());
    }

    #[test]
    fn config_file_rejects_unknown_keys() {
        assert!(toml::from_str::<FileConfig>("bnd = \"x\"").is_err());
        let c: FileConfig =
            toml::from_str("bind = \"0.0.0.0:9696\"\n[ml2]\nvni_ranges = [\"5000:5999\"]\n")
                .expect("valid");
        assert_eq!(c.ml2.vni_ranges, vec!["5000:5999".to_string()]);
        assert_eq!(c.ml2.project_network_types, vec!["vxlan".to_string()]);
    }

    #[test]
    fn quotas_are_read_checked_and_reach_the_settings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[quotas]\nquota_port = 20\nquota_router = -1\n").expect("write");
        let c = FileConfig::load(Some(&f)).expect("valid");
        let d = c.ml2.check().expect("settings").quota_defaults;
        assert_eq!((d["port"], d["router"], d["network"]), (20, -1, 100));
        for bad in ["[quotas]\nquota_port = -2\n", "[quotas]\nquota_ports = 1\n"] {
            std::fs::write(&f, bad).expect("write");
            assert!(FileConfig::load(Some(&f)).is_err(), "{bad}");
        }
    }
}
