//! switchyard's durable store.
//!
//! The model lives in memory ([`switchyard_model::State`]); this crate persists it.
//! Each API transaction becomes one database transaction that upserts or deletes
//! the touched records and appends them to an ordered change log (the feed later
//! replicas and the southbound follow). Either all of a transaction's changes are
//! on disk or none are.
//!
//! SQLite runs in WAL mode. With `synchronous = NORMAL` (the default here) a
//! committed transaction survives the process being killed (`kill -9`); with
//! `FULL` it also survives power loss, at the cost of an fsync per commit.
//! WAL checkpoints run on a thread of their own ([`checkpoint`]), not inside
//! a commit.

mod checkpoint;

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use switchyard_model::{Change, Record};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("stored record {kind}/{id} is unreadable: {err}")]
    Corrupt {
        kind: String,
        id: String,
        err: serde_json::Error,
    },
    #[error("cannot encode record: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("database schema version {0} is newer than this switchyard ({1})")]
    SchemaTooNew(i64, i64),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// Creates the database file readable by its owner only, if it does not
/// exist yet: it holds password hashes and token digests beside the network
/// state (SQLite gives its `-wal` and `-shm` files the same mode).
pub fn create_private(path: &Path) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    match o.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Holds an exclusive lock on `PATH.lock` beside the database while the
/// returned file lives, so that a second server or lab on the same database
/// is refused instead of sharing it (the kernel drops the lock when the
/// process dies, however it dies).
pub fn lock(path: &Path) -> Result<std::fs::File, StoreError> {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    let lock_path = std::path::PathBuf::from(p);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| StoreError::Io(lock_path.display().to_string(), e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Io(
            path.display().to_string(),
            std::io::Error::other(
                "the database is in use by another switchyard (server or lab up); stop it first",
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::Io(lock_path.display().to_string(), e))
        }
    }
}

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Survives process crashes (WAL + `synchronous=NORMAL`).
    Process,
    /// Survives power loss too (`synchronous=FULL`).
    Power,
}

/// 2: `resources` is a rowid table with a unique index on `(kind, id)`
/// (1 was a `WITHOUT ROWID` table keyed by them; opening migrates it).
const SCHEMA_VERSION: i64 = 2;
/// The change log keeps this many most recent entries.
const CHANGELOG_KEEP: i64 = 100_000;
/// Change-log entries a commit may prune beyond twice its own.
const PRUNE_SLACK: i64 = 16;

pub struct SqliteStore {
    conn: Connection,
    commits: u64,
    /// Change-log entries up to this sequence number are gone (pruned).
    pruned_through: i64,
    /// How many of the latest change-log entries are kept
    /// ([`CHANGELOG_KEEP`]; less in tests).
    keep: i64,
    /// Checkpoints the WAL (a file database only).
    _checkpointer: Option<checkpoint::Checkpointer>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("commits", &self.commits)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and migrates its schema.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        create_private(path).map_err(|e| StoreError::Io(path.display().to_string(), e))?;
        let conn = Connection::open(path)?;
        let mut store = Self::init(conn, durability)?;
        match checkpoint::Checkpointer::start(path) {
            Ok(c) => {
                // Commits no longer checkpoint: the checkpointer thread does.
                store.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
                store._checkpointer = Some(c);
            }
            Err(e) => {
                tracing::warn!(error = %e, "no checkpoint thread; SQLite checkpoints in commits");
            }
        }
        Ok(store)
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?, Durability::Process)
    }

    fn init(conn: Connection, durability: Durability) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let sync = match durability {
            Durability::Process => "NORMAL",
            Durability::Power => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // SQLite's default page cache (2 MB) is smaller than the tables of a
        // busy cloud: commits then re-read b-tree pages from the OS for
        // every insert. 32 MB is at most that much memory, and held only as
        // the database grows.
        conn.pragma_update(None, "cache_size", -32768)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )?;
        let version: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(v) = version.and_then(|v| v.parse::<i64>().ok())
            && v > SCHEMA_VERSION
        {
            return Err(StoreError::SchemaTooNew(v, SCHEMA_VERSION));
        }
        // Creation or migration, and the version that says so, in one
        // transaction: a crash leaves the old schema or the new, never half.
        let tx = conn.unchecked_transaction()?;
        let old_resources: Option<String> = tx
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'resources'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if old_resources.is_some_and(|sql| sql.to_ascii_uppercase().contains("WITHOUT ROWID")) {
            // Schema 1 clustered the bodies by (kind, id): random UUIDs, so
            // nearly every creation split a leaf of about three rows.
            tx.execute_batch(
                "CREATE TABLE resources_v2 (kind TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL);
                 INSERT INTO resources_v2 (kind, id, body)
                     SELECT kind, id, body FROM resources ORDER BY kind, id;
                 DROP TABLE resources;
                 ALTER TABLE resources_v2 RENAME TO resources;",
            )?;
        }
        // Bodies in a rowid table, appended in creation order, and found by
        // a small unique index: a creation dirties the table's last page and
        // one index leaf, and leaves split rarely.
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS resources (
                 kind TEXT NOT NULL,
                 id   TEXT NOT NULL,
                 body TEXT NOT NULL
             );
             CREATE UNIQUE INDEX IF NOT EXISTS resources_by_kind_id ON resources (kind, id);
             CREATE TABLE IF NOT EXISTS changelog (
                 seq  INTEGER PRIMARY KEY AUTOINCREMENT,
                 at   TEXT NOT NULL,
                 kind TEXT NOT NULL,
                 id   TEXT NOT NULL,
                 op   TEXT NOT NULL CHECK (op IN ('put', 'delete')),
                 body TEXT
             );",
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?1)",
            params![SCHEMA_VERSION.to_string()],
        )?;
        tx.commit()?;
        let pruned_through =
            conn.query_row("SELECT COALESCE(MIN(seq), 1) - 1 FROM changelog", [], |r| {
                r.get(0)
            })?;
        Ok(SqliteStore {
            conn,
            commits: 0,
            pruned_through,
            keep: CHANGELOG_KEEP,
            _checkpointer: None,
        })
    }

    /// Every stored record, for building the in-memory state at start-up.
    pub fn load(&self) -> Result<Vec<Record>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT kind, id, body FROM resources ORDER BY kind, id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, id, body) = row?;
            let rec: Record = serde_json::from_str(&body).map_err(|err| StoreError::Corrupt {
                kind: kind.clone(),
                id: id.clone(),
                err,
            })?;
            out.push(rec);
        }
        Ok(out)
    }

    /// Persists one transaction's changes atomically; returns the last change-log
    /// sequence number written.
    pub fn commit(&mut self, changes: &[Change], at: &str) -> Result<i64, StoreError> {
        if changes.is_empty() {
            return self.last_seq();
        }
        let tx = self.conn.transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO resources (kind, id, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body",
            )?;
            let mut del = tx.prepare_cached("DELETE FROM resources WHERE kind = ?1 AND id = ?2")?;
            let mut log = tx.prepare_cached(
                "INSERT INTO changelog (at, kind, id, op, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (kind, id, rec) in changes {
                match rec {
                    Some(r) => {
                        let body = serde_json::to_string(r)?;
                        put.execute(params![kind.as_str(), id, body])?;
                        // The log says what changed, not to what: the body
                        // is in `resources`. A copy here wrote every body to
                        // the WAL twice, for nothing that reads it.
                        log.execute(params![
                            at,
                            kind.as_str(),
                            id,
                            "put",
                            Option::<String>::None
                        ])?;
                    }
                    None => {
                        del.execute(params![kind.as_str(), id])?;
                        log.execute(params![
                            at,
                            kind.as_str(),
                            id,
                            "delete",
                            Option::<String>::None
                        ])?;
                    }
                }
            }
        }
        let seq = tx.last_insert_rowid();
        // The log is pruned a little at every commit, oldest first, at most
        // twice what the commit added (and a little more): deleting a
        // thousand commits' worth at once every thousandth commit made that
        // one take tens of milliseconds, and a backlog (a bulk import)
        // hundreds.
        let cut = seq - self.keep;
        let pruned = if cut > self.pruned_through {
            let budget = 2 * i64::try_from(changes.len()).unwrap_or(i64::MAX / 4) + PRUNE_SLACK;
            let upto = cut.min(self.pruned_through.saturating_add(budget));
            tx.execute("DELETE FROM changelog WHERE seq <= ?1", params![upto])?;
            upto
        } else {
            self.pruned_through
        };
        tx.commit()?;
        self.commits += 1;
        self.pruned_through = pruned;
        Ok(seq)
    }

    pub fn last_seq(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM changelog", [], |r| {
                r.get(0)
            })?)
    }

    /// Change-log entries after `seq`, oldest first: (seq, kind, id, op).
    pub fn changes_since(
        &self,
        seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, kind, id, op FROM changelog WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![seq, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_model::{Agent, Kind, State};

    fn agent(id: &str) -> Record {
        let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("valid time");
        Record::Agent(Agent {
            id: id.into(),
            agent_type: "vRouter agent".into(),
            binary: "b".into(),
            topic: "t".into(),
            host: format!("host-{id}"),
            admin_state_up: true,
            availability_zone: None,
            description: None,
            heartbeat_timestamp: now,
            started_at: now,
            created_at: now,
            resources_synced: None,
            configurations: Default::default(),
        })
    }

    #[test]
    fn the_change_log_is_pruned_a_little_at_each_commit() {
        let mut s = SqliteStore::open_in_memory().expect("open");
        s.keep = 10;
        let count = |s: &SqliteStore| -> i64 {
            s.conn
                .query_row("SELECT COUNT(*) FROM changelog", [], |r| r.get(0))
                .expect("count")
        };
        // A bulk commit far beyond what is kept...
        let bulk: Vec<Change> = (0..100)
            .map(|i| (Kind::Agent, format!("b{i}"), Some(agent(&format!("b{i}")))))
            .collect();
        s.commit(&bulk, "t0").expect("bulk");
        // ...is pruned by later commits, each by a bounded amount.
        let mut counts = Vec::new();
        for i in 0..60 {
            s.commit(&[(Kind::Agent, format!("a{i}"), Some(agent("a")))], "t")
                .expect("commit");
            counts.push(count(&s));
        }
        assert!(
            counts.windows(2).all(|w| w[0] - w[1] <= 2 + PRUNE_SLACK),
            "{counts:?}"
        );
        assert_eq!(counts.last(), Some(&10), "{counts:?}");
        let last = s.last_seq().expect("seq");
        assert_eq!(s.changes_since(last - 10, 100).expect("since").len(), 10);
        // Entries name what changed; the body is only in `resources`.
        let bodies: i64 = s
            .conn
            .query_row(
                "SELECT COUNT(*) FROM changelog WHERE body IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .expect("bodies");
        assert_eq!(bodies, 0);
    }

    #[test]
    fn commits_survive_reopen_and_log_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        {
            let mut s = SqliteStore::open(&path, Durability::Process).expect("open");
            s.commit(
                &[
                    (Kind::Agent, "a".into(), Some(agent("a"))),
                    (Kind::Agent, "b".into(), Some(agent("b"))),
                ],
                "t1",
            )
            .expect("commit");
            s.commit(&[(Kind::Agent, "a".into(), None)], "t2")
                .expect("commit");
        }
        let s = SqliteStore::open(&path, Durability::Process).expect("reopen");
        let recs = s.load().expect("load");
        assert_eq!(recs, vec![agent("b")]);
        let st = State::from_records(recs);
        assert!(st.agents.contains_key("b"));
        let log = s.changes_since(0, 10).expect("log");
        let ops: Vec<(&str, &str)> = log
            .iter()
            .map(|(_, _, id, op)| (id.as_str(), op.as_str()))
            .collect();
        assert_eq!(ops, vec![("a", "put"), ("b", "put"), ("a", "delete")]);
    }

    /// A database written by schema 1 (bodies in a `WITHOUT ROWID` table
    /// keyed by kind and id) opens with every record, in the current schema,
    /// and takes updates and deletions of the records it had.
    #[test]
    fn a_schema_1_database_is_migrated_with_its_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let body = |name: &str| serde_json::to_string(&agent(name)).expect("json");
        {
            let c = Connection::open(&path).expect("raw open");
            c.execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE resources (kind TEXT NOT NULL, id TEXT NOT NULL,
                     body TEXT NOT NULL, PRIMARY KEY (kind, id)) WITHOUT ROWID;
                 CREATE TABLE changelog (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                     at TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL,
                     op TEXT NOT NULL CHECK (op IN ('put', 'delete')), body TEXT);
                 INSERT INTO meta VALUES ('schema_version', '1');",
            )
            .expect("schema 1");
            for name in ["a", "b", "c"] {
                c.execute(
                    "INSERT INTO resources VALUES ('agent', ?1, ?2)",
                    params![name, body(name)],
                )
                .expect("row");
                c.execute(
                    "INSERT INTO changelog (at, kind, id, op, body) VALUES ('t0', 'agent', ?1, 'put', ?2)",
                    params![name, body(name)],
                )
                .expect("log");
            }
        }
        let mut s = SqliteStore::open(&path, Durability::Process).expect("open migrates");
        assert_eq!(
            s.load().expect("load"),
            vec![agent("a"), agent("b"), agent("c")]
        );
        let (version, sql): (String, String) = s
            .conn
            .query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'schema_version'),
                        (SELECT sql FROM sqlite_master WHERE name = 'resources')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("schema");
        assert_eq!(version, SCHEMA_VERSION.to_string());
        assert!(!sql.to_ascii_uppercase().contains("WITHOUT ROWID"), "{sql}");
        // The log goes on after the old entries.
        assert_eq!(s.last_seq().expect("seq"), 3);
        let mut b2 = agent("b");
        if let Record::Agent(x) = &mut b2 {
            x.binary = "changed".into();
        }
        s.commit(
            &[
                (Kind::Agent, "b".into(), Some(b2.clone())),
                (Kind::Agent, "c".into(), None),
            ],
            "t1",
        )
        .expect("commit");
        drop(s);
        let s = SqliteStore::open(&path, Durability::Process).expect("reopen");
        assert_eq!(s.load().expect("load"), vec![agent("a"), b2]);
        assert_eq!(s.last_seq().expect("seq"), 5);
    }

    /// A database from a later schema is refused, untouched.
    #[test]
    fn a_newer_schema_is_refused_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        {
            let c = Connection::open(&path).expect("raw open");
            c.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO meta VALUES ('schema_version', '99');",
            )
            .expect("meta");
        }
        let e = SqliteStore::open(&path, Durability::Process).expect_err("too new");
        assert!(
            matches!(e, StoreError::SchemaTooNew(99, SCHEMA_VERSION)),
            "{e}"
        );
        let c = Connection::open(&path).expect("raw reopen");
        let tables: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(tables, 1, "only meta: nothing was created");
    }

    /// Commits do not checkpoint; the checkpointer thread copies the WAL
    /// into the database file while the store stays open (without it, with
    /// checkpoints off in commits, the file would not grow at all).
    #[test]
    fn the_wal_is_checkpointed_off_the_write_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let mut s = SqliteStore::open(&path, Durability::Process).expect("open");
        let before = std::fs::metadata(&path).expect("db").len();
        for i in 0..400 {
            let mut a = agent(&format!("a{i}"));
            if let Record::Agent(x) = &mut a {
                x.description = Some("x".repeat(4000));
            }
            s.commit(&[(Kind::Agent, format!("a{i}"), Some(a))], "t")
                .expect("commit");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let grew = loop {
            let now = std::fs::metadata(&path).expect("db").len();
            if now > before + 1_000_000 {
                break true;
            }
            if std::time::Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert!(
            grew,
            "the database file holds the commits while the store is open"
        );
        let autockpt: i64 = s
            .conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .expect("pragma");
        assert_eq!(autockpt, 0);
        drop(s);
        let s = SqliteStore::open(&path, Durability::Process).expect("reopen");
        assert_eq!(s.load().expect("load").len(), 400);
    }

    #[test]
    fn corrupt_rows_are_reported_not_panicked_on() {
        let s = SqliteStore::open_in_memory().expect("open");
        s.conn
            .execute(
                "INSERT INTO resources (kind, id, body) VALUES ('port', 'x', '{not json')",
                [],
            )
            .expect("insert");
        assert!(matches!(s.load(), Err(StoreError::Corrupt { .. })));
    }
}
