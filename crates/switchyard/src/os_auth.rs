//! How switchyard's client commands (`verify`, `node list|show`) get a
//! Keystone token, the way the `openstack` CLI finds its credentials:
//!
//! 1. `--os-cloud NAME` (or `OS_CLOUD`): that cloud's `auth` in the first
//!    clouds.yaml found — `OS_CLIENT_CONFIG_FILE`, `./clouds.yaml`,
//!    `~/.config/openstack/clouds.yaml`, `/etc/openstack/clouds.yaml` (the
//!    one `lab up --clouds-yaml PATH` writes works as is);
//! 2. else `OS_TOKEN`, used as it is;
//! 3. else `OS_AUTH_URL`, `OS_USERNAME`, `OS_PASSWORD`, `OS_PROJECT_NAME`
//!    (and the `*_DOMAIN_NAME`s, default `Default`), an openrc's variables;
//! 4. else no token: a noauth server.
//!
//! Password authentication only (`auth_type: password`, or `none`), with
//! domains by name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use switchyard_identity::remote::{KeystoneClient, PasswordAuth};

/// What a client command adds to a `401`.
pub const HINT: &str = "give credentials: --os-cloud NAME, OS_TOKEN or OS_AUTH_URL/OS_USERNAME/OS_PASSWORD/OS_PROJECT_NAME";

#[derive(Debug, Clone, Default, clap::Args)]
pub struct OsAuthArgs {
    /// The clouds.yaml entry to authenticate with (see OS_CLIENT_CONFIG_FILE);
    /// without it, OS_TOKEN or OS_AUTH_URL/OS_USERNAME/OS_PASSWORD/
    /// OS_PROJECT_NAME, else no token.
    #[arg(long, env = "OS_CLOUD", value_name = "NAME")]
    pub os_cloud: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CloudsFile {
    clouds: std::collections::BTreeMap<String, Cloud>,
}

#[derive(Debug, Default, Deserialize)]
struct Cloud {
    #[serde(default)]
    auth_type: Option<String>,
    #[serde(default)]
    auth: Auth,
}

#[derive(Debug, Default, Deserialize)]
struct Auth {
    auth_url: Option<String>,
    username: Option<String>,
    password: Option<String>,
    project_name: Option<String>,
    user_domain_name: Option<String>,
    project_domain_name: Option<String>,
}

/// Where clouds.yaml is looked for, in order.
fn clouds_paths() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(p) = std::env::var("OS_CLIENT_CONFIG_FILE") {
        v.push(PathBuf::from(p));
    }
    v.push(PathBuf::from("clouds.yaml"));
    if let Ok(h) = std::env::var("HOME") {
        v.push(Path::new(&h).join(".config/openstack/clouds.yaml"));
    }
    v.push(PathBuf::from("/etc/openstack/clouds.yaml"));
    v
}

/// The password credentials of cloud `name` in `text` (`None`: `auth_type:
/// none`).
fn cloud_auth(text: &str, name: &str, file: &Path) -> anyhow::Result<Option<PasswordAuth>> {
    let f: CloudsFile =
        serde_norway::from_str(text).with_context(|| format!("reading {}", file.display()))?;
    let Some(c) = f.clouds.get(name) else {
        bail!("{}: no cloud named '{name}'", file.display());
    };
    match c.auth_type.as_deref() {
        None | Some("password" | "v3password") => {}
        Some("none" | "noauth") => return Ok(None),
        Some(other) => bail!(
            "{}: cloud '{name}' has auth_type '{other}'; switchyard's commands use password auth",
            file.display()
        ),
    }
    let a = &c.auth;
    let need = |v: &Option<String>, what: &str| {
        v.clone()
            .filter(|s| !s.is_empty())
            .with_context(|| format!("{}: cloud '{name}' has no auth.{what}", file.display()))
    };
    Ok(Some(PasswordAuth {
        auth_url: need(&a.auth_url, "auth_url")?,
        username: need(&a.username, "username")?,
        password: need(&a.password, "password")?,
        project_name: need(&a.project_name, "project_name")?,
        user_domain_name: a
            .user_domain_name
            .clone()
            .unwrap_or_else(|| "Default".into()),
        project_domain_name: a
            .project_domain_name
            .clone()
            .unwrap_or_else(|| "Default".into()),
    }))
}

/// Where a client command goes: `--url` (or `SWITCHYARD_URL`) when given;
/// else, with `--os-cloud`, the switchyard whose embedded identity the
/// cloud authenticates at (its `auth_url` ending in `/identity/v3`, as a
/// lab's clouds.yaml has it); else the default address.
pub fn base_url(url: Option<String>, a: &OsAuthArgs) -> String {
    if let Some(u) = url {
        return u;
    }
    let from_cloud = a.os_cloud.as_ref().and_then(|name| {
        clouds_paths().into_iter().find_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            let auth = cloud_auth(&text, name, &p).ok()??;
            auth.auth_url
                .trim_end_matches('/')
                .strip_suffix("/identity/v3")
                .map(str::to_string)
        })
    });
    from_cloud.unwrap_or_else(|| "http://127.0.0.1:9696".to_string())
}

/// The password of cloud `name` in the clouds.yaml at `path`, if it has one
/// (a lab started again reuses what it wrote the first time).
pub fn password_in(path: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    cloud_auth(&text, name, path).ok()?.map(|a| a.password)
}

/// What the environment and flags say to authenticate with.
enum Source {
    None,
    Token(String),
    Password(PasswordAuth),
}

fn source(a: &OsAuthArgs) -> anyhow::Result<Source> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(name) = &a.os_cloud {
        for p in clouds_paths() {
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            return Ok(match cloud_auth(&text, name, &p)? {
                Some(pw) => Source::Password(pw),
                None => Source::None,
            });
        }
        bail!("--os-cloud {name}: no clouds.yaml found (set OS_CLIENT_CONFIG_FILE)");
    }
    if let Some(t) = env("OS_TOKEN") {
        return Ok(Source::Token(t));
    }
    let Some(auth_url) = env("OS_AUTH_URL") else {
        return Ok(Source::None);
    };
    let need = |k: &str| env(k).with_context(|| format!("OS_AUTH_URL is set but not {k}"));
    Ok(Source::Password(PasswordAuth {
        auth_url,
        username: need("OS_USERNAME")?,
        password: need("OS_PASSWORD")?,
        project_name: need("OS_PROJECT_NAME")?,
        user_domain_name: env("OS_USER_DOMAIN_NAME").unwrap_or_else(|| "Default".into()),
        project_domain_name: env("OS_PROJECT_DOMAIN_NAME").unwrap_or_else(|| "Default".into()),
    }))
}

/// A token to send (`None`: no credentials given).
pub async fn token(a: &OsAuthArgs) -> anyhow::Result<Option<String>> {
    match source(a)? {
        Source::None => Ok(None),
        Source::Token(t) => Ok(Some(t)),
        Source::Password(pw) => {
            let url = pw.v3();
            let user = pw.username.clone();
            let t = KeystoneClient::new(pw, Duration::from_secs(30))
                .token()
                .await
                .with_context(|| format!("authenticating as {user} at {url}"))?;
            Ok(Some(t))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_labs_clouds_yaml_and_its_mistakes() {
        let f = Path::new("clouds.yaml");
        let text = "clouds:\n  switchyard:\n    auth:\n      auth_url: http://127.0.0.1:9696/identity/v3\n      username: admin\n      password: \"s3cret\"\n      project_name: admin\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: RegionOne\n  lab-noauth:\n    auth_type: none\n  half:\n    auth:\n      auth_url: http://k/v3\n";
        let a = cloud_auth(text, "switchyard", f)
            .expect("ok")
            .expect("password");
        assert_eq!(
            (a.username.as_str(), a.password.as_str()),
            ("admin", "s3cret")
        );
        assert_eq!(a.v3(), "http://127.0.0.1:9696/identity/v3");
        assert!(cloud_auth(text, "lab-noauth", f).expect("ok").is_none());
        let e = cloud_auth(text, "half", f)
            .expect_err("incomplete")
            .to_string();
        assert!(e.contains("no auth.username"), "{e}");
        let e = cloud_auth(text, "other", f)
            .expect_err("missing")
            .to_string();
        assert!(e.contains("no cloud named 'other'"), "{e}");
        let e = cloud_auth("clouds: [", "x", f).expect_err("bad yaml");
        assert!(format!("{e:#}").contains("reading clouds.yaml"), "{e:#}");
    }
}
