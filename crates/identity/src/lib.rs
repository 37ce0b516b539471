//! switchyard's embedded identity: the part of Keystone v3 a small cloud and
//! the lab need, so that the `openstack` CLI, openstacksdk and Nova can
//! authenticate against switchyard itself.
//!
//! Contracts:
//!
//! * One domain, `default`. Projects, users (argon2id password hashes, never
//!   the passwords), the roles `admin`, `member`, `reader` and `service`
//!   with Keystone's implications (`admin` ⇒ `member` ⇒ `reader`), and role
//!   assignments on projects. [`Identity::bootstrap`] makes the admin user
//!   and project, and a demo project and user, as `keystone-manage
//!   bootstrap` does; running it again resets the passwords it is given.
//! * Tokens are 256 random bits (64 hex digits); only their SHA-256 is
//!   stored, with the user, project scope, roles at issue, issue and expiry
//!   times, in the same SQLite database as the rest of switchyard's state.
//!   They survive a restart, expire after `token_expiration`, and are
//!   revoked by `DELETE /v3/auth/tokens` (or when their user or project is
//!   disabled: a token is checked against them on every use).
//! * [`api::router`] serves the Keystone v3 subset under `/identity`;
//!   [`guard`] is the check in front of every other API (keystonemiddleware's
//!   job): it removes any identity headers a client sent, validates
//!   `X-Auth-Token`, and hands the service `X-Project-Id`, `X-Roles`,
//!   `X-User-Id` — or answers `401` as keystonemiddleware does.
//!
//! The logic here is plain (no I/O but the database); time comes in as an
//! argument.

pub mod api;
pub mod guard;
pub mod remote;
mod store;

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use store::StoreError;

/// The only domain.
pub const DEFAULT_DOMAIN: &str = "default";
/// Roles bootstrap makes, most powerful first: each implies those after it
/// (`service` stands alone, as Nova's service user's role).
pub const ROLES: [&str; 4] = ["admin", "member", "reader", "service"];

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("The request you have made requires authentication.")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("You are not authorized to perform the requested action: {0}.")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("The request method is not allowed for this resource.")]
    MethodNotAllowed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IdentityError {
    pub fn status(&self) -> u16 {
        match self {
            IdentityError::Unauthorized => 401,
            IdentityError::BadRequest(_) => 400,
            IdentityError::Forbidden(_) => 403,
            IdentityError::NotFound(_) => 404,
            IdentityError::Conflict(_) => 409,
            IdentityError::MethodNotAllowed => 405,
            IdentityError::Store(_) => 500,
        }
    }

    /// Keystone's error body.
    pub fn body(&self) -> serde_json::Value {
        let title = match self.status() {
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            _ => "Internal Server Error",
        };
        let message = match self {
            // The database's own words stay in the log.
            IdentityError::Store(_) => {
                "An unexpected error prevented the server from fulfilling your request.".to_string()
            }
            e => e.to_string(),
        };
        serde_json::json!({"error": {"code": self.status(), "title": title, "message": message}})
    }
}

pub type Result<T> = std::result::Result<T, IdentityError>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    pub default_project_id: Option<String>,
    pub password_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    pub id: String,
    pub name: String,
}

/// A validated token: who, scoped to what, with which roles, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub user: User,
    pub project: Option<Project>,
    /// Effective roles on the project (implied ones included), by name.
    pub roles: Vec<Role>,
    pub methods: Vec<String>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub audit_id: String,
}

impl TokenInfo {
    pub fn has_role(&self, name: &str) -> bool {
        self.roles.iter().any(|r| r.name == name)
    }

    pub fn is_admin(&self) -> bool {
        self.has_role("admin")
    }
}

/// How to bootstrap (the `[identity]` section of the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    pub admin_user: String,
    pub admin_password: String,
    pub admin_project: String,
    /// A demo project and member user (`None`: none made).
    pub demo: Option<(String, String, String)>,
    /// A service project and user with the `admin` and `service` roles
    /// there (Nova's user, as devstack makes it; `None`: none made).
    pub service: Option<(String, String, String)>,
}

/// One endpoint of the service catalog: (type, name, URL path under the
/// public URL).
pub type CatalogEntry = (&'static str, &'static str, String);

/// A service user's token, kept fresh: what an in-process service (the
/// lab's compute service) sends to the other APIs, as Nova sends its
/// service user's token to Neutron.
#[derive(Clone)]
pub struct ServiceToken {
    identity: Identity,
    user: String,
    password: String,
    project: String,
    cached: Arc<Mutex<Option<Cached>>>,
}

/// A token and when it expires.
type Cached = (String, DateTime<Utc>);

impl std::fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceToken")
            .field("user", &self.user)
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

impl ServiceToken {
    pub fn new(identity: &Identity, user: &str, password: &str, project: &str) -> Self {
        ServiceToken {
            identity: identity.clone(),
            user: user.to_string(),
            password: password.to_string(),
            project: project.to_string(),
            cached: Arc::default(),
        }
    }

    /// A token valid for at least another minute (a new one when needed).
    pub fn token(&self, now: DateTime<Utc>) -> Result<String> {
        let mut c = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((t, exp)) = c.as_ref()
            && *exp > now + chrono::Duration::seconds(60)
        {
            return Ok(t.clone());
        }
        let user = self
            .identity
            .user_by_name(&self.user)?
            .ok_or(IdentityError::Unauthorized)?;
        let project = self
            .identity
            .project_by_name(&self.project)?
            .ok_or(IdentityError::Unauthorized)?;
        let (t, info) =
            self.identity
                .authenticate_password(&user, &self.password, Some(&project.id), now)?;
        *c = Some((t.clone(), info.expires_at));
        Ok(t)
    }
}

/// Where a service's own token comes from: the embedded identity, or an
/// external Keystone. What the Nova notifier sends with each batch.
#[derive(Clone, Debug)]
pub enum TokenSource {
    Embedded(ServiceToken),
    Keystone(Arc<remote::KeystoneClient>),
}

impl TokenSource {
    /// A valid token, or why there is none (logged by the caller).
    pub async fn token(&self) -> std::result::Result<String, String> {
        match self {
            TokenSource::Embedded(s) => {
                let s = s.clone();
                tokio::task::spawn_blocking(move || s.token(Utc::now()))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            }
            TokenSource::Keystone(k) => k.token().await.map_err(|e| e.to_string()),
        }
    }

    /// The token was refused: the next call gets a new one.
    pub async fn forget(&self) {
        match self {
            TokenSource::Embedded(s) => {
                *s.cached.lock().unwrap_or_else(PoisonError::into_inner) = None;
            }
            TokenSource::Keystone(k) => k.forget().await,
        }
    }
}

/// The embedded identity service.
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Mutex<store::Store>>,
    /// How long a token lives.
    pub token_expiration: chrono::Duration,
    public: Arc<Mutex<Public>>,
}

#[derive(Debug, Default)]
struct Public {
    url: String,
    catalog: Vec<CatalogEntry>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

/// The role names `direct` implies, `direct` included (Keystone's default
/// implications: admin ⇒ member ⇒ reader).
pub fn implied(direct: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in direct {
        let chain: &[&str] = match d.as_str() {
            "admin" => &["admin", "member", "reader"],
            "member" => &["member", "reader"],
            other => {
                if !out.iter().any(|o| o == other) {
                    out.push(other.to_string());
                }
                continue;
            }
        };
        for c in chain {
            if !out.iter().any(|o| o == c) {
                out.push((*c).to_string());
            }
        }
    }
    out
}

fn sha256_hex(token: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// 256 random bits, as 64 hex digits.
fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A Keystone-style id: 32 hex digits.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub fn hash_password(password: &str) -> Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    use rand::RngCore;
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    let salt = SaltString::encode_b64(&raw)
        .map_err(|e| IdentityError::BadRequest(format!("password salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| IdentityError::BadRequest(format!("password: {e}")))
}

fn password_ok(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// The project `project_id` (enabled) and `user_id`'s effective roles on
/// it; `Unauthorized` without one (Keystone: no role, no token for it).
fn scoped(
    db: &store::Store,
    user_id: &str,
    project_id: Option<&str>,
) -> Result<(Option<Project>, Vec<Role>)> {
    let Some(pid) = project_id else {
        return Ok((None, Vec::new()));
    };
    let p = db
        .project(pid)?
        .filter(|p| p.enabled)
        .ok_or(IdentityError::Unauthorized)?;
    let direct = db.roles_of(user_id, &p.id)?;
    if direct.is_empty() {
        return Err(IdentityError::Unauthorized);
    }
    let names = implied(&direct);
    let roles = db
        .roles()?
        .into_iter()
        .filter(|r| names.contains(&r.name))
        .collect();
    Ok((Some(p), roles))
}

impl Identity {
    /// Opens the identity tables in the database at `path` (creating them).
    pub fn open(path: &std::path::Path, token_expiration: chrono::Duration) -> Result<Self> {
        let s = store::Store::open(path)?;
        Ok(Identity {
            inner: Arc::new(Mutex::new(s)),
            token_expiration,
            public: Arc::default(),
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, store::Store> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where clients reach this server (the catalog's base) and what it serves.
    pub fn set_public(&self, url: &str, catalog: Vec<CatalogEntry>) {
        let mut p = self.public.lock().unwrap_or_else(PoisonError::into_inner);
        p.url = url.trim_end_matches('/').to_string();
        p.catalog = catalog;
    }

    pub fn public_url(&self) -> String {
        self.public
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .url
            .clone()
    }

    fn catalog(&self) -> (String, Vec<CatalogEntry>) {
        let p = self.public.lock().unwrap_or_else(PoisonError::into_inner);
        (p.url.clone(), p.catalog.clone())
    }

    /// `keystone-manage bootstrap`: roles, the admin user and project (the
    /// admin role there), and the demo project and member user.
    pub fn bootstrap(&self, b: &Bootstrap) -> Result<()> {
        let mut db = self.db();
        for r in ROLES {
            db.ensure_role(r)?;
        }
        let admin_project = db.ensure_project(&b.admin_project, "Bootstrap project")?;
        let hash = hash_password(&b.admin_password)?;
        let admin = db.ensure_user(&b.admin_user, &hash, Some(&admin_project.id))?;
        db.assign(&admin.id, &admin_project.id, "admin")?;
        if let Some((project, user, password)) = &b.demo {
            let p = db.ensure_project(project, "Demo project")?;
            let hash = hash_password(password)?;
            let u = db.ensure_user(user, &hash, Some(&p.id))?;
            db.assign(&u.id, &p.id, "member")?;
        }
        if let Some((project, user, password)) = &b.service {
            let p = db.ensure_project(project, "Service project")?;
            let hash = hash_password(password)?;
            let u = db.ensure_user(user, &hash, Some(&p.id))?;
            db.assign(&u.id, &p.id, "admin")?;
            db.assign(&u.id, &p.id, "service")?;
        }
        Ok(())
    }

    pub fn project_by_name(&self, name: &str) -> Result<Option<Project>> {
        Ok(self.db().project_by_name(name)?)
    }

    pub fn project(&self, id: &str) -> Result<Option<Project>> {
        Ok(self.db().project(id)?)
    }

    pub fn projects(&self) -> Result<Vec<Project>> {
        Ok(self.db().projects()?)
    }

    /// Projects `user_id` has a role on.
    pub fn user_projects(&self, user_id: &str) -> Result<Vec<Project>> {
        let db = self.db();
        let mut out = Vec::new();
        for p in db.projects()? {
            if !db.roles_of(user_id, &p.id)?.is_empty() {
                out.push(p);
            }
        }
        Ok(out)
    }

    pub fn roles(&self) -> Result<Vec<Role>> {
        Ok(self.db().roles()?)
    }

    /// Every (user id, project id, role) assignment.
    pub fn assignments(&self) -> Result<Vec<(String, String, Role)>> {
        Ok(self.db().assignments()?)
    }

    pub fn user(&self, id: &str) -> Result<Option<User>> {
        Ok(self.db().user(id)?)
    }

    pub fn users(&self) -> Result<Vec<User>> {
        Ok(self.db().users()?)
    }

    pub fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        Ok(self.db().user_by_name(name)?)
    }

    /// Makes project `name` (admin's act).
    pub fn create_project(&self, name: &str, description: &str) -> Result<Project> {
        let mut db = self.db();
        if db.project_by_name(name)?.is_some() {
            return Err(IdentityError::Conflict(format!(
                "Conflict occurred attempting to store project - it is not permitted to have two projects with the same name in the same domain : {name}."
            )));
        }
        Ok(db.ensure_project(name, description)?)
    }

    /// Makes user `name` with `password`.
    pub fn create_user(
        &self,
        name: &str,
        password: &str,
        default_project_id: Option<&str>,
    ) -> Result<User> {
        let hash = hash_password(password)?;
        let mut db = self.db();
        if db.user_by_name(name)?.is_some() {
            return Err(IdentityError::Conflict(format!(
                "Conflict occurred attempting to store user - Duplicate entry found with name {name} at domain ID default."
            )));
        }
        Ok(db.ensure_user(name, &hash, default_project_id)?)
    }

    /// Gives `user_id` role `role` on `project_id`.
    pub fn assign(&self, user_id: &str, project_id: &str, role: &str) -> Result<()> {
        let mut db = self.db();
        if db.user(user_id)?.is_none() {
            return Err(IdentityError::NotFound(format!(
                "Could not find user: {user_id}."
            )));
        }
        if db.project(project_id)?.is_none() {
            return Err(IdentityError::NotFound(format!(
                "Could not find project: {project_id}."
            )));
        }
        if !db.roles()?.iter().any(|r| r.name == role || r.id == role) {
            return Err(IdentityError::NotFound(format!(
                "Could not find role: {role}."
            )));
        }
        Ok(db.assign(user_id, project_id, role)?)
    }

    /// Password authentication, scoped to `project_id` (or the user's
    /// default project): a new token and what it carries.
    pub fn authenticate_password(
        &self,
        user: &User,
        password: &str,
        project_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(String, TokenInfo)> {
        if !user.enabled || !password_ok(password, &user.password_hash) {
            tracing::info!(user = %user.name, "authentication refused");
            return Err(IdentityError::Unauthorized);
        }
        self.issue(user, project_id, vec!["password".into()], now, None)
    }

    /// Token authentication: a new token for the same user (rescoped to
    /// `project_id` if given), expiring no later than the old one.
    pub fn authenticate_token(
        &self,
        token: &str,
        project_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(String, TokenInfo)> {
        let old = self.validate(token, now)?;
        let scope = project_id.or(old.project.as_ref().map(|p| p.id.as_str()));
        let mut methods = old.methods.clone();
        if !methods.iter().any(|m| m == "token") {
            methods.push("token".into());
        }
        self.issue(&old.user, scope, methods, now, Some(old.expires_at))
    }

    fn issue(
        &self,
        user: &User,
        project_id: Option<&str>,
        methods: Vec<String>,
        now: DateTime<Utc>,
        not_after: Option<DateTime<Utc>>,
    ) -> Result<(String, TokenInfo)> {
        let mut db = self.db();
        let scope = project_id
            .map(str::to_string)
            .or_else(|| user.default_project_id.clone());
        let (project, roles) = scoped(&db, &user.id, scope.as_deref())?;
        let mut expires_at = now + self.token_expiration;
        if let Some(n) = not_after {
            expires_at = expires_at.min(n);
        }
        let token = new_token();
        let info = TokenInfo {
            user: user.clone(),
            project,
            roles,
            methods,
            issued_at: now,
            expires_at,
            audit_id: new_token()[..22].to_string(),
        };
        db.put_token(&sha256_hex(&token), &info)?;
        db.purge_expired(now)?;
        Ok((token, info))
    }

    /// What `token` carries, if it is valid now (its user and project still
    /// enabled, its roles as they are now).
    pub fn validate(&self, token: &str, now: DateTime<Utc>) -> Result<TokenInfo> {
        if token.is_empty() || token.len() > 256 {
            return Err(IdentityError::Unauthorized);
        }
        let db = self.db();
        let (user_id, project_id, methods, issued_at, expires_at, audit_id) = db
            .token(&sha256_hex(token))?
            .ok_or(IdentityError::Unauthorized)?;
        if expires_at <= now {
            return Err(IdentityError::Unauthorized);
        }
        let user = db
            .user(&user_id)?
            .filter(|u| u.enabled)
            .ok_or(IdentityError::Unauthorized)?;
        let (project, roles) = scoped(&db, &user.id, project_id.as_deref())?;
        Ok(TokenInfo {
            user,
            project,
            roles,
            methods,
            issued_at,
            expires_at,
            audit_id,
        })
    }

    /// Revokes `token` (absent or expired: not found).
    pub fn revoke(&self, token: &str) -> Result<bool> {
        Ok(self.db().delete_token(&sha256_hex(token))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("time")
    }

    fn identity(dir: &std::path::Path) -> Identity {
        let id = Identity::open(&dir.join("id.db"), chrono::Duration::seconds(3600)).expect("open");
        id.bootstrap(&Bootstrap {
            admin_user: "admin".into(),
            admin_password: "s3cret".into(),
            admin_project: "admin".into(),
            demo: Some(("demo".into(), "demo".into(), "demo-pw".into())),
            service: Some(("service".into(), "nova".into(), "nova-pw".into())),
        })
        .expect("bootstrap");
        id
    }

    #[test]
    fn roles_imply_as_keystones_defaults() {
        assert_eq!(implied(&["admin".into()]), ["admin", "member", "reader"]);
        assert_eq!(implied(&["member".into()]), ["member", "reader"]);
        assert_eq!(
            implied(&["service".into(), "reader".into()]),
            ["service", "reader"]
        );
    }

    #[test]
    fn tokens_are_issued_checked_expired_and_revoked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = identity(dir.path());
        let admin = id.user_by_name("admin").expect("db").expect("admin");
        assert!(!admin.password_hash.contains("s3cret"));
        assert!(matches!(
            id.authenticate_password(&admin, "wrong", None, t0()),
            Err(IdentityError::Unauthorized)
        ));
        let (tok, info) = id
            .authenticate_password(&admin, "s3cret", None, t0())
            .expect("auth");
        assert_eq!(tok.len(), 64);
        assert_eq!(
            info.project.as_ref().map(|p| p.name.as_str()),
            Some("admin")
        );
        assert!(info.is_admin() && info.has_role("reader"));
        let later = t0() + chrono::Duration::seconds(3599);
        assert_eq!(id.validate(&tok, later).expect("valid").user.name, "admin");
        assert!(
            id.validate(&tok, t0() + chrono::Duration::seconds(3600))
                .is_err()
        );
        assert!(id.validate("nope", t0()).is_err());
        // A demo member cannot scope to the admin project.
        let demo = id.user_by_name("demo").expect("db").expect("demo");
        let admin_project = id.project_by_name("admin").expect("db").expect("p");
        assert!(matches!(
            id.authenticate_password(&demo, "demo-pw", Some(&admin_project.id), t0()),
            Err(IdentityError::Unauthorized)
        ));
        let (dt, di) = id
            .authenticate_password(&demo, "demo-pw", None, t0())
            .expect("demo");
        assert!(!di.is_admin() && di.has_role("member"));
        // Rescoping by token keeps the expiry.
        let (t2, i2) = id
            .authenticate_token(&dt, None, t0() + chrono::Duration::seconds(10))
            .expect("rescope");
        assert_eq!(i2.expires_at, di.expires_at);
        assert!(id.revoke(&dt).expect("revoke"));
        assert!(id.validate(&dt, t0()).is_err());
        assert!(id.validate(&t2, t0()).is_ok(), "another token lives on");
        // Tokens survive a reopen.
        drop(id);
        let id = identity(dir.path());
        assert!(id.validate(&tok, later).is_ok());
        // Bootstrap again with a new password: the old one stops working.
        id.bootstrap(&Bootstrap {
            admin_user: "admin".into(),
            admin_password: "n3w".into(),
            admin_project: "admin".into(),
            demo: None,
            service: None,
        })
        .expect("again");
        let admin = id.user_by_name("admin").expect("db").expect("admin");
        assert!(
            id.authenticate_password(&admin, "s3cret", None, t0())
                .is_err()
        );
        assert!(id.authenticate_password(&admin, "n3w", None, t0()).is_ok());
    }
}
