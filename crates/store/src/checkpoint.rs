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
//! If the WAL still grows past [`TRUNCATE_PAGES`] (a checkpoint that never
//! completes because writes never pause), a `TRUNCATE` checkpoint waits for
//! the writer, as SQLite's own would, and the file shrinks back.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// How often the thread checkpoints.
pub const INTERVAL: Duration = Duration::from_millis(250);
/// WAL pages (4 KiB each) beyond which a checkpoint may block writers.
pub const TRUNCATE_PAGES: i64 = 65_536;

/// The running checkpointer; dropping it stops the thread (after one last
/// checkpoint).
#[derive(Debug)]
pub struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` (already in WAL mode).
    pub fn start(path: &Path) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&path, &stopped))?;
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

fn run(path: &PathBuf, stopped: &mpsc::Receiver<()>) {
    let conn = match Connection::open(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "checkpointer cannot open the database; SQLite checkpoints in commits");
            return;
        }
    };
    let _ = conn.busy_timeout(Duration::from_secs(5));
    let mut failing = false;
    loop {
        let last = matches!(
            stopped.recv_timeout(INTERVAL),
            Ok(()) | Err(RecvTimeoutError::Disconnected)
        );
        match checkpoint(&conn) {
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

/// One `PASSIVE` checkpoint, and a `TRUNCATE` one if the WAL is too long.
fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    let (_, wal_pages, _): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    if wal_pages > TRUNCATE_PAGES {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(())
}
