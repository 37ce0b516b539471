//! WAL checkpoints off the write path.
//!
//! SQLite's default checkpoints the WAL into the database from inside a
//! commit once the WAL passes 1,000 pages: that commit then copies the
//! pages and fsyncs, and an API write waits tens of milliseconds (it was the
//! p99 of port creation). The store's connection turns that off, and this
//! thread checkpoints instead, on its own connection, every
//! [`INTERVAL`]: a `PASSIVE` checkpoint copies what no reader still needs
//! without blocking writers, and the next commit after a complete one
//! starts the WAL again from its beginning. Durability is unchanged: a
//! commit is in the WAL before it is answered, checkpointed or not.
//!
//! If the WAL still grows past [`TRUNCATE_PAGES`] (checkpoints that cannot
//! complete: a reader holding an old snapshot, say), a `TRUNCATE`
//! checkpoint is tried, waiting at most [`TRUNCATE_WAIT`] for the writer and
//! readers; when it cannot finish it is not tried again for
//! [`TRUNCATE_BACKOFF`], so a pinned WAL does not stall writes every
//! interval.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// How often the thread checkpoints.
pub const INTERVAL: Duration = Duration::from_millis(250);
/// WAL pages (4 KiB each) beyond which a checkpoint may block writers.
pub const TRUNCATE_PAGES: i64 = 65_536;
/// How long a `TRUNCATE` checkpoint may wait for others (and so block new
/// writers).
pub const TRUNCATE_WAIT: Duration = Duration::from_millis(100);
/// How long after a `TRUNCATE` that could not finish the next is tried.
pub const TRUNCATE_BACKOFF: Duration = Duration::from_secs(30);

/// The running checkpointer; dropping it stops the thread (after one last
/// checkpoint).
#[derive(Debug)]
pub struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` (already in WAL mode)
    /// on a connection of its own, opened here: if it cannot be, the caller
    /// keeps SQLite's checkpoints in commits.
    pub fn start(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(TRUNCATE_WAIT)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&conn, &stopped))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(conn: &Connection, stopped: &mpsc::Receiver<()>) {
    let mut failing = false;
    let mut truncate_after = Instant::now();
    loop {
        let last = matches!(
            stopped.recv_timeout(INTERVAL),
            Ok(()) | Err(RecvTimeoutError::Disconnected)
        );
        match checkpoint(conn, &mut truncate_after) {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                // Once per run of failures, not once per interval.
                tracing::warn!(error = %e, "WAL checkpoint failed");
                failing = true;
            }
            Err(_) => {}
        }
        if last {
            return;
        }
    }
}

/// `(busy, WAL pages, pages checkpointed)` of one checkpoint.
fn run_checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

/// One `PASSIVE` checkpoint, and a `TRUNCATE` one if the WAL is too long
/// and the last did not fail within [`TRUNCATE_BACKOFF`].
fn checkpoint(conn: &Connection, truncate_after: &mut Instant) -> rusqlite::Result<()> {
    let (_, wal_pages, _) = run_checkpoint(conn, "PASSIVE")?;
    if wal_pages > TRUNCATE_PAGES && Instant::now() >= *truncate_after {
        let done = matches!(run_checkpoint(conn, "TRUNCATE"), Ok((0, _, _)));
        if !done {
            *truncate_after = Instant::now() + TRUNCATE_BACKOFF;
            tracing::warn!(
                wal_pages,
                "the WAL cannot be truncated (a reader holds an old snapshot?); retrying later"
            );
        }
    }
    Ok(())
}
