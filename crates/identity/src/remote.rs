//! An external Keystone, used as keystonemiddleware's `auth_token` uses it:
//! switchyard authenticates as its own service user (password auth, the
//! token kept until a minute before it expires), and validates a caller's
//! token with `GET /v3/auth/tokens` (`X-Auth-Token` its service token,
//! `X-Subject-Token` the caller's). Answers are cached for
//! `token_cache_time` (never past the token's expiry), valid and invalid
//! alike, as keystonemiddleware caches them — so a revoked token is refused
//! at most that long after revocation, and a Keystone outage does not stop
//! callers whose tokens were seen recently.
//!
//! * `200`: the token's user, project and (effective) roles.
//! * `404`: not a valid token (unknown, expired or revoked) → `401`.
//! * `401` to the service token: it is renewed and the check tried once
//!   more.
//! * Anything else (unreachable, `403` to our service user, `5xx`): the
//!   identity service is unavailable → `503`, nothing cached. Logged when it
//!   starts and when it ends, not per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::guard::Caller;

/// How many validations the cache holds; past it, expired ones go, then all.
const CACHE_MAX: usize = 10_000;

/// A user's password credentials on a Keystone, scoped to a project.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordAuth {
    /// Keystone's v3 URL, e.g. `http://keystone:5000/v3` (`/v3` is added
    /// when missing).
    pub auth_url: String,
    pub username: String,
    pub password: String,
    pub project_name: String,
    pub user_domain_name: String,
    pub project_domain_name: String,
}

impl std::fmt::Debug for PasswordAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordAuth")
            .field("auth_url", &self.auth_url)
            .field("username", &self.username)
            .field("project_name", &self.project_name)
            .finish_non_exhaustive()
    }
}

impl PasswordAuth {
    /// `auth_url` ending in `/v3`.
    pub fn v3(&self) -> String {
        let u = self.auth_url.trim_end_matches('/');
        if u.ends_with("/v3") {
            u.to_string()
        } else {
            format!("{u}/v3")
        }
    }
}

/// Why a call to Keystone gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Keystone refused our credentials (`401`).
    #[error("Keystone refused the credentials of {0}")]
    Refused(String),
    /// Unreachable, or an answer we cannot use.
    #[error("Keystone is unavailable: {0}")]
    Unavailable(String),
}

/// A client of one Keystone as one user: a project-scoped token, renewed
/// when it nears expiry.
#[derive(Debug)]
pub struct KeystoneClient {
    http: reqwest::Client,
    auth: PasswordAuth,
    token: tokio::sync::Mutex<Option<(String, DateTime<Utc>)>>,
}

impl KeystoneClient {
    pub fn new(auth: PasswordAuth, timeout: Duration) -> Self {
        KeystoneClient {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_default(),
            auth,
            token: tokio::sync::Mutex::new(None),
        }
    }

    pub fn auth(&self) -> &PasswordAuth {
        &self.auth
    }

    /// A token valid for at least another minute.
    pub async fn token(&self) -> Result<String, RemoteError> {
        let mut t = self.token.lock().await;
        if let Some((tok, exp)) = t.as_ref()
            && *exp > Utc::now() + chrono::Duration::seconds(60)
        {
            return Ok(tok.clone());
        }
        let fresh = self.issue().await?;
        *t = Some(fresh.clone());
        Ok(fresh.0)
    }

    /// Forgets the token (Keystone said it is no longer valid).
    pub async fn forget(&self) {
        *self.token.lock().await = None;
    }

    async fn issue(&self) -> Result<(String, DateTime<Utc>), RemoteError> {
        let a = &self.auth;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": a.username, "password": a.password,
                "domain": {"name": a.user_domain_name}}}},
            "scope": {"project": {"name": a.project_name,
                "domain": {"name": a.project_domain_name}}}
        }});
        let r = self
            .http
            .post(format!("{}/auth/tokens?nocatalog", a.v3()))
            .json(&body)
            .send()
            .await
            .map_err(|e| RemoteError::Unavailable(e.to_string()))?;
        match r.status().as_u16() {
            201 | 200 => {}
            401 => return Err(RemoteError::Refused(a.username.clone())),
            s => {
                return Err(RemoteError::Unavailable(format!(
                    "POST /v3/auth/tokens: {s}"
                )));
            }
        }
        let token = r
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| RemoteError::Unavailable("no X-Subject-Token".into()))?;
        let v: Value = r
            .json()
            .await
            .map_err(|e| RemoteError::Unavailable(e.to_string()))?;
        let exp = expires_at(&v["token"])
            .ok_or_else(|| RemoteError::Unavailable("a token without expires_at".into()))?;
        Ok((token, exp))
    }

    /// `GET /v3/auth/tokens` for `subject`: its body's `token`, `None` when
    /// Keystone says it is not valid.
    async fn validate(&self, subject: &str) -> Result<Option<Value>, RemoteError> {
        for attempt in 0..2 {
            let service = self.token().await?;
            let r = self
                .http
                .get(format!("{}/auth/tokens?nocatalog", self.auth.v3()))
                .header("X-Auth-Token", &service)
                .header("X-Subject-Token", subject)
                .send()
                .await
                .map_err(|e| RemoteError::Unavailable(e.to_string()))?;
            match r.status().as_u16() {
                200 => {
                    let v: Value = r
                        .json()
                        .await
                        .map_err(|e| RemoteError::Unavailable(e.to_string()))?;
                    return Ok(Some(v["token"].clone()));
                }
                404 => return Ok(None),
                401 if attempt == 0 => self.forget().await,
                s => {
                    return Err(RemoteError::Unavailable(format!(
                        "GET /v3/auth/tokens as {}: {s}",
                        self.auth.username
                    )));
                }
            }
        }
        Err(RemoteError::Refused(self.auth.username.clone()))
    }
}

fn expires_at(token: &Value) -> Option<DateTime<Utc>> {
    token["expires_at"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// A validated token's body as the caller it names (`None` when it is not
/// scoped to a project or lacks what a caller needs).
fn caller(token: &Value) -> Option<Caller> {
    let s = |v: &Value| v.as_str().map(str::to_string);
    Some(Caller {
        user_id: s(&token["user"]["id"])?,
        user_name: s(&token["user"]["name"])?,
        project_id: s(&token["project"]["id"])?,
        project_name: s(&token["project"]["name"])?,
        roles: token["roles"]
            .as_array()?
            .iter()
            .filter_map(|r| s(&r["name"]))
            .collect(),
        expires_at: expires_at(token)?,
    })
}

/// One cached answer: the caller (`None`: not a valid token) and until when
/// it may be used.
type Cached = (Option<Caller>, DateTime<Utc>);

/// keystonemiddleware's job against an external Keystone.
#[derive(Debug)]
pub struct RemoteValidator {
    client: KeystoneClient,
    /// What `WWW-Authenticate` names (`www_authenticate_uri`).
    pub www_authenticate_uri: String,
    cache_time: chrono::Duration,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    down: AtomicBool,
}

impl RemoteValidator {
    pub fn new(
        service: PasswordAuth,
        www_authenticate_uri: String,
        cache_time: Duration,
        timeout: Duration,
    ) -> Self {
        RemoteValidator {
            client: KeystoneClient::new(service, timeout),
            www_authenticate_uri,
            cache_time: chrono::Duration::from_std(cache_time)
                .unwrap_or(chrono::Duration::seconds(300)),
            cache: Mutex::default(),
            down: AtomicBool::new(false),
        }
    }

    fn cached(&self, key: &[u8; 32], now: DateTime<Utc>) -> Option<Option<Caller>> {
        let c = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        c.get(key)
            .filter(|(_, until)| *until > now)
            .map(|(who, _)| who.clone())
    }

    fn remember(&self, key: [u8; 32], who: Option<Caller>, now: DateTime<Utc>) {
        let mut until = now + self.cache_time;
        if let Some(w) = &who {
            until = until.min(w.expires_at);
        }
        let mut c = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if c.len() >= CACHE_MAX {
            c.retain(|_, (_, u)| *u > now);
            if c.len() >= CACHE_MAX {
                c.clear();
            }
        }
        c.insert(key, (who, until));
    }

    /// Who `token` is (`None`: not a valid project-scoped token).
    pub async fn validate(&self, token: &str) -> Result<Option<Caller>, RemoteError> {
        let now = Utc::now();
        if token.is_empty() || token.len() > 8192 {
            return Ok(None);
        }
        let key: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(token).into();
        if let Some(hit) = self.cached(&key, now) {
            return Ok(hit);
        }
        let answer = match self.client.validate(token).await {
            Ok(a) => a,
            Err(e) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "cannot validate tokens: the identity service is unavailable");
                }
                return Err(e);
            }
        };
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("the identity service answers again");
        }
        let who = answer
            .as_ref()
            .and_then(caller)
            .filter(|c| c.expires_at > now);
        self.remember(key, who.clone(), now);
        Ok(who)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validated_token_names_its_caller() {
        let t = json!({
            "user": {"id": "u1", "name": "demo", "domain": {"id": "default"}},
            "project": {"id": "p1", "name": "demo", "domain": {"id": "default"}},
            "roles": [{"id": "r1", "name": "member"}, {"id": "r2", "name": "reader"}],
            "expires_at": "2030-01-02T03:04:05.123456Z",
        });
        let c = caller(&t).expect("caller");
        assert_eq!(c.project_id, "p1");
        assert_eq!(c.user_name, "demo");
        assert_eq!(c.roles, vec!["member", "reader"]);
        assert_eq!(
            c.expires_at.to_rfc3339(),
            "2030-01-02T03:04:05.123456+00:00"
        );
        // Unscoped or malformed: no caller.
        let mut u = t.clone();
        u["project"] = Value::Null;
        assert!(caller(&u).is_none());
        let mut e = t;
        e["expires_at"] = json!("tomorrow");
        assert!(caller(&e).is_none());
    }

    #[test]
    fn v3_is_added_once() {
        let mut a = PasswordAuth {
            auth_url: "http://k:5000".into(),
            username: "n".into(),
            password: "p".into(),
            project_name: "service".into(),
            user_domain_name: "Default".into(),
            project_domain_name: "Default".into(),
        };
        assert_eq!(a.v3(), "http://k:5000/v3");
        a.auth_url = "http://k/identity/v3/".into();
        assert_eq!(a.v3(), "http://k/identity/v3");
        // The password stays out of logs.
        assert!(!format!("{a:?}").contains("\"p\""));
    }
}
