//! The identity tables, in switchyard's SQLite database (their own
//! connection; WAL lets it share the file with the state store).

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Project, Role, TokenInfo, User, new_id};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("identity database: {0}")]
    Db(#[from] rusqlite::Error),
}

type R<T> = std::result::Result<T, StoreError>;

pub struct Store {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS identity_projects (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL,
    enabled INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS identity_users (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
    enabled INTEGER NOT NULL, default_project_id TEXT);
CREATE TABLE IF NOT EXISTS identity_roles (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS identity_assignments (
    user_id TEXT NOT NULL, project_id TEXT NOT NULL, role_id TEXT NOT NULL,
    PRIMARY KEY (user_id, project_id, role_id));
CREATE TABLE IF NOT EXISTS identity_tokens (
    hash TEXT PRIMARY KEY, user_id TEXT NOT NULL, project_id TEXT,
    methods TEXT NOT NULL, issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    audit_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS identity_tokens_expiry ON identity_tokens (expires_at);
";

fn project_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Project> {
    Ok(Project {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        enabled: r.get::<_, i64>(3)? != 0,
    })
}

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        password_hash: r.get(2)?,
        enabled: r.get::<_, i64>(3)? != 0,
        default_project_id: r.get(4)?,
    })
}

fn time(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

impl Store {
    pub fn open(path: &Path) -> R<Store> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn })
    }

    pub fn ensure_role(&mut self, name: &str) -> R<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO identity_roles (id, name) VALUES (?1, ?2)",
            params![new_id(), name],
        )?;
        Ok(())
    }

    pub fn roles(&self) -> R<Vec<Role>> {
        let mut st = self
            .conn
            .prepare("SELECT id, name FROM identity_roles ORDER BY name")?;
        let rows = st.query_map([], |r| {
            Ok(Role {
                id: r.get(0)?,
                name: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn ensure_project(&mut self, name: &str, description: &str) -> R<Project> {
        if let Some(p) = self.project_by_name(name)? {
            return Ok(p);
        }
        let p = Project {
            id: new_id(),
            name: name.to_string(),
            description: description.to_string(),
            enabled: true,
        };
        self.conn.execute(
            "INSERT INTO identity_projects (id, name, description, enabled) VALUES (?1, ?2, ?3, 1)",
            params![p.id, p.name, p.description],
        )?;
        Ok(p)
    }

    pub fn project(&self, id: &str) -> R<Option<Project>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, name, description, enabled FROM identity_projects WHERE id = ?1",
                [id],
                project_row,
            )
            .optional()?)
    }

    pub fn project_by_name(&self, name: &str) -> R<Option<Project>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, name, description, enabled FROM identity_projects WHERE name = ?1",
                [name],
                project_row,
            )
            .optional()?)
    }

    pub fn projects(&self) -> R<Vec<Project>> {
        let mut st = self.conn.prepare(
            "SELECT id, name, description, enabled FROM identity_projects ORDER BY name",
        )?;
        let rows = st.query_map([], project_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The user `name`, made if absent; its password set to `hash` either way.
    pub fn ensure_user(
        &mut self,
        name: &str,
        hash: &str,
        default_project_id: Option<&str>,
    ) -> R<User> {
        if let Some(mut u) = self.user_by_name(name)? {
            self.conn.execute(
                "UPDATE identity_users SET password_hash = ?1 WHERE id = ?2",
                params![hash, u.id],
            )?;
            u.password_hash = hash.to_string();
            return Ok(u);
        }
        let u = User {
            id: new_id(),
            name: name.to_string(),
            enabled: true,
            default_project_id: default_project_id.map(str::to_string),
            password_hash: hash.to_string(),
        };
        self.conn.execute(
            "INSERT INTO identity_users (id, name, password_hash, enabled, default_project_id)
             VALUES (?1, ?2, ?3, 1, ?4)",
            params![u.id, u.name, u.password_hash, u.default_project_id],
        )?;
        Ok(u)
    }

    pub fn user(&self, id: &str) -> R<Option<User>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, name, password_hash, enabled, default_project_id FROM identity_users WHERE id = ?1",
                [id],
                user_row,
            )
            .optional()?)
    }

    pub fn users(&self) -> R<Vec<User>> {
        let mut st = self.conn.prepare(
            "SELECT id, name, password_hash, enabled, default_project_id FROM identity_users ORDER BY name",
        )?;
        let rows = st.query_map([], user_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn user_by_name(&self, name: &str) -> R<Option<User>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, name, password_hash, enabled, default_project_id FROM identity_users WHERE name = ?1",
                [name],
                user_row,
            )
            .optional()?)
    }

    /// Gives `user_id` the role named (or with id) `role` on `project_id`.
    pub fn assign(&mut self, user_id: &str, project_id: &str, role: &str) -> R<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO identity_assignments (user_id, project_id, role_id)
             SELECT ?1, ?2, id FROM identity_roles WHERE name = ?3 OR id = ?3",
            params![user_id, project_id, role],
        )?;
        Ok(())
    }

    /// The role names `user_id` holds directly on `project_id`.
    pub fn roles_of(&self, user_id: &str, project_id: &str) -> R<Vec<String>> {
        let mut st = self.conn.prepare(
            "SELECT r.name FROM identity_assignments a JOIN identity_roles r ON r.id = a.role_id
             WHERE a.user_id = ?1 AND a.project_id = ?2 ORDER BY r.name",
        )?;
        let rows = st.query_map([user_id, project_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn assignments(&self) -> R<Vec<(String, String, Role)>> {
        let mut st = self.conn.prepare(
            "SELECT a.user_id, a.project_id, r.id, r.name FROM identity_assignments a
             JOIN identity_roles r ON r.id = a.role_id ORDER BY a.user_id, a.project_id, r.name",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                Role {
                    id: r.get(2)?,
                    name: r.get(3)?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn put_token(&mut self, hash: &str, t: &TokenInfo) -> R<()> {
        self.conn.execute(
            "INSERT INTO identity_tokens (hash, user_id, project_id, methods, issued_at, expires_at, audit_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                hash,
                t.user.id,
                t.project.as_ref().map(|p| p.id.clone()),
                t.methods.join(","),
                t.issued_at.timestamp(),
                t.expires_at.timestamp(),
                t.audit_id
            ],
        )?;
        Ok(())
    }

    /// (user, project, methods, issued, expires, audit id) of a stored token.
    #[allow(clippy::type_complexity)]
    pub fn token(
        &self,
        hash: &str,
    ) -> R<
        Option<(
            String,
            Option<String>,
            Vec<String>,
            DateTime<Utc>,
            DateTime<Utc>,
            String,
        )>,
    > {
        Ok(self
            .conn
            .query_row(
                "SELECT user_id, project_id, methods, issued_at, expires_at, audit_id
                 FROM identity_tokens WHERE hash = ?1",
                [hash],
                |r| {
                    let methods: String = r.get(2)?;
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        methods.split(',').map(str::to_string).collect(),
                        time(r.get(3)?),
                        time(r.get(4)?),
                        r.get(5)?,
                    ))
                },
            )
            .optional()?)
    }

    pub fn delete_token(&mut self, hash: &str) -> R<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM identity_tokens WHERE hash = ?1", [hash])?
            > 0)
    }

    /// Forgets tokens that expired (they would be refused anyway).
    pub fn purge_expired(&mut self, now: DateTime<Utc>) -> R<()> {
        self.conn.execute(
            "DELETE FROM identity_tokens WHERE expires_at <= ?1",
            [now.timestamp()],
        )?;
        Ok(())
    }
}
