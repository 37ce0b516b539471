//! Who may speak for a node: per-node bearer credentials for the southbound
//! and the internal agent API, and a rate-limited log of refused clients.
//!
//! Each node is enrolled by the operator (`switchyard node enroll HOST --role
//! ROLE`) and gets a random 256-bit token that speaks for that host in that
//! role and nothing else. Only the token's SHA-256 is kept, in a TOML file
//! (`nodes.toml` in the data directory by default) that the server re-reads
//! when it changes, so enrolling or revoking a node needs no restart. The lab
//! enrolls its own agents in memory. A token is looked up by its hash, so the
//! comparison time says nothing about the token.
//!
//! Why bearer tokens rather than mutual TLS: the southbound shares the API's
//! HTTP stack and port, an operator can enroll and revoke a node with one
//! command and no CA, and a token names exactly one (host, role) pair. Tokens
//! travel in the clear unless the controller is served over TLS (a proxy
//! today): run the southbound on a management network or behind TLS.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use switchyard_proto::Role;

/// What a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub host: String,
    pub role: Role,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no credential (an Authorization: Bearer header) was sent")]
    Missing,
    #[error("the credential is not valid for any enrolled node")]
    Unknown,
    #[error("node credentials file {0}: {1}")]
    File(String, String),
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("host name must be 1 to 255 characters without whitespace or control characters")]
    BadHost,
    #[error("node credentials file {0}: {1}")]
    Io(String, std::io::Error),
    #[error("node credentials file {0}: {1}")]
    Parse(String, String),
}

/// One enrolled node in the credentials file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    host: String,
    role: Role,
    token_sha256: String,
    #[serde(default)]
    enrolled_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredFile {
    #[serde(default)]
    node: Vec<FileEntry>,
}

type Hash = [u8; 32];

fn hash(token: &str) -> Hash {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A fresh token: 32 bytes from the operating system's CSPRNG, hex-encoded.
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    rand::fill(&mut b);
    hex(&b)
}

fn valid_host(host: &str) -> bool {
    (1..=255).contains(&host.len()) && !host.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[derive(Debug, Default)]
struct Loaded {
    /// (modification time, length, inode) of the file as last read.
    stamp: Option<(SystemTime, u64, u64)>,
    from_file: HashMap<Hash, Enrolled>,
    error: Option<String>,
}

/// The credentials the server accepts: from the file (if any) and in memory.
#[derive(Debug, Default)]
pub struct NodeCredentials {
    file: Option<PathBuf>,
    loaded: RwLock<Loaded>,
    ephemeral: RwLock<HashMap<Hash, Enrolled>>,
}

impl NodeCredentials {
    /// No file: only what is enrolled in memory ([`NodeCredentials::enroll`]).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Credentials from `path` (re-read whenever it changes), plus in memory.
    pub fn with_file(path: &Path) -> Self {
        NodeCredentials {
            file: Some(path.to_path_buf()),
            ..Self::default()
        }
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Enrolls `host` as `role` for this process's life and returns its token
    /// (the lab's agents, tests). Replaces an earlier in-memory enrollment of `host`.
    pub fn enroll(&self, host: &str, role: Role) -> String {
        let token = new_token();
        self.add(host, role, &token);
        token
    }

    /// As [`NodeCredentials::enroll`], with the token given (the lab keeps
    /// its agents' tokens across controller restarts).
    pub fn add(&self, host: &str, role: Role, token: &str) {
        let mut g = self
            .ephemeral
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        g.retain(|_, e| e.host != host);
        g.insert(
            hash(token),
            Enrolled {
                host: host.to_string(),
                role,
            },
        );
    }

    /// Whom `token` speaks for.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Enrolled, AuthError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let h = hash(token);
        if let Some(e) = self
            .ephemeral
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&h)
        {
            return Ok(e.clone());
        }
        let Some(path) = &self.file else {
            return Err(AuthError::Unknown);
        };
        self.reload(path);
        let g = self.loaded.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = g.from_file.get(&h) {
            return Ok(e.clone());
        }
        match &g.error {
            Some(err) => Err(AuthError::File(path.display().to_string(), err.clone())),
            None => Err(AuthError::Unknown),
        }
    }

    /// Re-reads the file when its modification time or size changed. A file
    /// that cannot be read or parsed leaves no credential valid (and says why).
    fn reload(&self, path: &Path) {
        let stamp = std::fs::metadata(path).ok().map(|m| {
            #[cfg(unix)]
            let ino = std::os::unix::fs::MetadataExt::ino(&m);
            #[cfg(not(unix))]
            let ino = 0;
            (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), ino)
        });
        if self
            .loaded
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .stamp
            == stamp
            && stamp.is_some()
        {
            return;
        }
        let mut next = Loaded {
            stamp,
            ..Loaded::default()
        };
        match read_file(path) {
            Ok(f) => {
                for e in f.node {
                    if let Some(h) = unhex(&e.token_sha256) {
                        next.from_file.insert(
                            h,
                            Enrolled {
                                host: e.host,
                                role: e.role,
                            },
                        );
                    }
                }
            }
            Err(e) => next.error = Some(e.to_string()),
        }
        *self.loaded.write().unwrap_or_else(PoisonError::into_inner) = next;
    }
}

fn read_file(path: &Path) -> Result<CredFile, EnrollError> {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| EnrollError::Parse(shown, e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CredFile::default()),
        Err(e) => Err(EnrollError::Io(shown, e)),
    }
}

/// Writes the file whole through a temporary file and a rename (readable by
/// its owner only), so the server never reads half of it.
fn write_file(path: &Path, f: &CredFile) -> Result<(), EnrollError> {
    let shown = path.display().to_string();
    let body = toml::to_string(f).map_err(|e| EnrollError::Parse(shown.clone(), e.to_string()))?;
    let text = format!(
        "# switchyard node credentials: written by `switchyard node enroll`.\n\
         # Each token is kept as its SHA-256 only.\n{body}"
    );
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| EnrollError::Io(shown.clone(), e))?;
    }
    let tmp = path.with_extension("toml.tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts
            .open(&tmp)
            .map_err(|e| EnrollError::Io(shown.clone(), e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| EnrollError::Io(shown.clone(), e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| EnrollError::Io(shown, e))
}

/// Enrolls `host` as `role` in the credentials file at `path` (replacing,
/// and so revoking, any earlier credential of `host`); returns the new token,
/// which is stored nowhere else.
pub fn enroll_in_file(
    path: &Path,
    host: &str,
    role: Role,
    at: &str,
) -> Result<String, EnrollError> {
    if !valid_host(host) {
        return Err(EnrollError::BadHost);
    }
    let mut f = read_file(path)?;
    let token = new_token();
    f.node.retain(|e| e.host != host);
    f.node.push(FileEntry {
        host: host.to_string(),
        role,
        token_sha256: hex(&hash(&token)),
        enrolled_at: at.to_string(),
    });
    f.node.sort_by(|a, b| a.host.cmp(&b.host));
    write_file(path, &f)?;
    Ok(token)
}

/// Removes `host`'s credential from the file; false when it had none.
pub fn revoke_in_file(path: &Path, host: &str) -> Result<bool, EnrollError> {
    let mut f = read_file(path)?;
    let before = f.node.len();
    f.node.retain(|e| e.host != host);
    if f.node.len() == before {
        return Ok(false);
    }
    write_file(path, &f)?;
    Ok(true)
}

/// The nodes enrolled in the file: (host, role, enrolled_at).
pub fn list_file(path: &Path) -> Result<Vec<(String, Role, String)>, EnrollError> {
    Ok(read_file(path)?
        .node
        .into_iter()
        .map(|e| (e.host, e.role, e.enrolled_at))
        .collect())
}

/// How often the same refusal is logged at most.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);
/// Distinct refusals remembered; beyond, the oldest are forgotten.
const REFUSAL_KEYS: usize = 4096;

/// Logs each kind of refused client once per [`REFUSAL_LOG_EVERY`] (keyed
/// by who and why), counting what it held back, so a misbehaving or hostile
/// client cannot fill the log.
#[derive(Debug, Default)]
pub struct RefusalLog {
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl RefusalLog {
    /// Records a refusal; logs it unless the same key was logged recently.
    /// Returns whether it was logged.
    pub fn refused(&self, key: &str, what: &str) -> bool {
        let now = Instant::now();
        let mut g = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if g.len() >= REFUSAL_KEYS && !g.contains_key(key) {
            g.retain(|_, (at, _)| now.duration_since(*at) < REFUSAL_LOG_EVERY);
            if g.len() >= REFUSAL_KEYS {
                g.clear();
            }
        }
        match g.get_mut(key) {
            Some((at, held)) if now.duration_since(*at) < REFUSAL_LOG_EVERY => {
                *held += 1;
                false
            }
            Some((at, held)) => {
                tracing::warn!(refused = %key, held_back = *held, "{what}");
                *at = now;
                *held = 0;
                true
            }
            None => {
                tracing::warn!(refused = %key, "{what}");
                g.insert(key.to_string(), (now, 0));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_speak_for_their_host_and_role_only() {
        let c = NodeCredentials::in_memory();
        let t1 = c.enroll("compute-1", Role::Ovs);
        let t2 = c.enroll("compute-2", Role::Vrouter);
        assert_eq!(t1.len(), 64);
        assert_ne!(t1, t2);
        assert_eq!(
            c.authenticate(Some(&t1)),
            Ok(Enrolled {
                host: "compute-1".into(),
                role: Role::Ovs
            })
        );
        assert_eq!(c.authenticate(None), Err(AuthError::Missing));
        assert_eq!(c.authenticate(Some("")), Err(AuthError::Missing));
        assert_eq!(c.authenticate(Some(&t1[..63])), Err(AuthError::Unknown));
        // Enrolling again revokes the old token.
        let t1b = c.enroll("compute-1", Role::Ovs);
        assert_eq!(c.authenticate(Some(&t1)), Err(AuthError::Unknown));
        assert!(c.authenticate(Some(&t1b)).is_ok());
    }

    #[test]
    fn the_file_is_reread_when_it_changes_and_keeps_only_hashes() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("nodes.toml");
        let c = NodeCredentials::with_file(&path);
        assert_eq!(c.authenticate(Some("x")), Err(AuthError::Unknown));
        let t = enroll_in_file(&path, "gateway", Role::Gateway, "now").expect("enroll");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains(&t), "the token itself is not stored");
        assert_eq!(c.authenticate(Some(&t)).map(|e| e.role), Ok(Role::Gateway));
        assert!(revoke_in_file(&path, "gateway").expect("revoke"));
        assert!(!revoke_in_file(&path, "gateway").expect("revoke"));
        assert_eq!(c.authenticate(Some(&t)), Err(AuthError::Unknown));
        std::fs::write(&path, "[[node]]\nhost = 1\n").expect("write");
        assert!(matches!(c.authenticate(Some(&t)), Err(AuthError::File(..))));
        assert!(matches!(
            enroll_in_file(&path, "bad host", Role::Ovs, ""),
            Err(EnrollError::BadHost)
        ));
    }

    #[test]
    fn refusals_are_logged_once_per_interval() {
        let log = RefusalLog::default();
        assert!(log.refused("10.0.0.1 bad credential", "refused"));
        for _ in 0..1000 {
            assert!(!log.refused("10.0.0.1 bad credential", "refused"));
        }
        assert!(log.refused("10.0.0.2 bad credential", "refused"));
    }
}
