//! `switchyard server` settings: TOML file, then environment, then flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
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
    pub ml2: Ml2Config,
}

impl FileConfig {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let cfg: FileConfig = toml::from_str(&text)
            .with_context(|| format!("parsing config file {}", path.display()))?;
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

    #[test]
    fn config_file_rejects_unknown_keys() {
        assert!(toml::from_str::<FileConfig>("bnd = \"x\"").is_err());
        let c: FileConfig =
            toml::from_str("bind = \"0.0.0.0:9696\"\n[ml2]\nvni_ranges = [\"5000:5999\"]\n")
                .expect("valid");
        assert_eq!(c.ml2.vni_ranges, vec!["5000:5999".to_string()]);
        assert_eq!(c.ml2.project_network_types, vec!["vxlan".to_string()]);
    }
}
