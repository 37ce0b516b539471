//! A QMP client (QEMU Machine Protocol, QEMU's `docs/interop/qmp-spec`):
//! JSON objects, one per line, over the VM's Unix socket. The server greets
//! (`{"QMP": {...}}`), the client enters command mode with
//! `qmp_capabilities`, then each `{"execute", "arguments", "id"}` is
//! answered by a `{"return"}` or `{"error": {"class", "desc"}}` carrying the
//! same `id`; asynchronous `{"event"}` messages may arrive in between.
//!
//! Written here because the few Rust QMP crates are unmaintained or pull in
//! a code generator for QEMU's whole schema, while the compute service needs
//! a handful of commands (`query-status`, `migrate-set-parameters`,
//! `migrate`, `query-migrate`, `announce-self`, `quit`) and the events.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// The longest line accepted from QEMU (its largest replies, `query-qmp-schema`,
/// are a few hundred KiB).
const MAX_LINE: usize = 4 << 20;
/// Events kept until [`Qmp::take_events`]; older ones are dropped.
const MAX_EVENTS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("QMP I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP: {0}")]
    Protocol(String),
    #[error("QMP {command}: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QMP {0}: no answer within {1:?}")]
    Timeout(String, Duration),
}

#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    events: Vec<Value>,
    /// The server's greeting (`version`, `capabilities`).
    pub greeting: Value,
}

/// Connects to a Unix socket that QEMU creates when it starts, waiting up
/// to `timeout` for it to appear.
pub(super) async fn connect_unix(path: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

impl Qmp {
    /// Connects to `path`, waiting up to `timeout` for QEMU to create the
    /// socket, and enters command mode.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = connect_unix(path, timeout)
            .await
            .map_err(|e| QmpError::Connect(path.display().to_string(), e))?;
        let (r, w) = stream.into_split();
        let mut q = Qmp {
            reader: BufReader::new(r),
            writer: w,
            next_id: 1,
            events: Vec::new(),
            greeting: Value::Null,
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let greeting = tokio::time::timeout(left.max(Duration::from_millis(100)), q.read())
            .await
            .map_err(|_| QmpError::Timeout("greeting".into(), timeout))??;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "expected a greeting, got {greeting}"
            )));
        }
        q.greeting = greeting["QMP"].clone();
        q.execute("qmp_capabilities", None, Duration::from_secs(10))
            .await?;
        Ok(q)
    }

    /// Reads one message.
    async fn read(&mut self) -> Result<Value, QmpError> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut self.reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .await?;
            if n == 0 {
                return Err(QmpError::Protocol("QEMU closed the QMP socket".into()));
            }
            if line.len() > MAX_LINE {
                return Err(QmpError::Protocol(format!(
                    "a message longer than {MAX_LINE} bytes"
                )));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return serde_json::from_slice(&line).map_err(|e| {
                QmpError::Protocol(format!(
                    "not JSON ({e}): {}",
                    String::from_utf8_lossy(&line)
                ))
            });
        }
    }

    /// Runs `command` and returns its `return` value; events that arrive
    /// meanwhile are kept for [`Qmp::take_events`].
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"execute": command, "id": id});
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut bytes = serde_json::to_vec(&msg).map_err(|e| QmpError::Protocol(e.to_string()))?;
        bytes.push(b'\n');
        self.writer.write_all(&bytes).await?;
        let answer = async {
            loop {
                let m = self.read().await?;
                if m.get("event").is_some() {
                    if self.events.len() >= MAX_EVENTS {
                        self.events.remove(0);
                    }
                    self.events.push(m);
                    continue;
                }
                if m.get("id") != Some(&json!(id)) {
                    // An answer to a command given up on after its timeout.
                    continue;
                }
                if let Some(r) = m.get("return") {
                    return Ok(r.clone());
                }
                if let Some(e) = m.get("error") {
                    return Err(QmpError::Command {
                        command: command.to_string(),
                        class: e["class"].as_str().unwrap_or("GenericError").to_string(),
                        desc: e["desc"].as_str().unwrap_or_default().to_string(),
                    });
                }
                return Err(QmpError::Protocol(format!(
                    "an answer without return or error: {m}"
                )));
            }
        };
        tokio::time::timeout(timeout, answer)
            .await
            .map_err(|_| QmpError::Timeout(command.to_string(), timeout))?
    }

    /// Events received so far, oldest first.
    pub fn take_events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A server speaking QMP as QEMU does, line by line from a script:
    /// each `(expect, reply lines)` checks the client's next command.
    async fn serve(l: UnixListener, script: Vec<(&'static str, Vec<String>)>) {
        let (s, _) = l.accept().await.expect("accept");
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"major\": 10, \"minor\": 0, \"micro\": 2}}, \"capabilities\": [\"oob\"]}}\r\n")
            .await
            .expect("greet");
        for (expect, replies) in script {
            let mut line = String::new();
            r.read_line(&mut line).await.expect("read");
            let v: Value = serde_json::from_str(&line).expect("json");
            assert_eq!(v["execute"], expect, "{line}");
            let id = v["id"].clone();
            for rep in replies {
                w.write_all(rep.replace("ID", &id.to_string()).as_bytes())
                    .await
                    .expect("write");
                w.write_all(b"\r\n").await.expect("write");
            }
        }
    }

    #[tokio::test]
    async fn commands_get_their_answers_and_events_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let l = UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(serve(
            l,
            vec![
                ("qmp_capabilities", vec![r#"{"return": {}, "id": ID}"#.into()]),
                (
                    "query-status",
                    vec![
                        r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}"#.into(),
                        String::new(),
                        r#"{"return": {"status": "running", "running": true}, "id": ID}"#.into(),
                    ],
                ),
                (
                    "migrate",
                    vec![r#"{"error": {"class": "GenericError", "desc": "There's a migration process in progress"}, "id": ID}"#.into()],
                ),
            ],
        ));
        let mut q = Qmp::connect(&path, Duration::from_secs(5))
            .await
            .expect("connect");
        assert_eq!(q.greeting["version"]["qemu"]["major"], 10);
        let st = q
            .execute("query-status", None, Duration::from_secs(5))
            .await
            .expect("status");
        assert_eq!(st["status"], "running");
        let ev = q.take_events();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0]["event"], "RESUME");
        match q
            .execute(
                "migrate",
                Some(json!({"uri": "tcp:127.0.0.1:1"})),
                Duration::from_secs(5),
            )
            .await
        {
            Err(QmpError::Command { class, desc, .. }) => {
                assert_eq!(class, "GenericError");
                assert!(desc.contains("in progress"), "{desc}");
            }
            other => panic!("expected the command's error, got {other:?}"),
        }
        server.await.expect("server");
    }

    #[tokio::test]
    async fn garbage_and_silence_are_errors_not_hangs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let l = UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            s.write_all(b"this is not QMP\n").await.expect("write");
            // Keep the socket open a while: the error must come from the bytes.
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        let e = Qmp::connect(&path, Duration::from_secs(5))
            .await
            .expect_err("garbage");
        assert!(matches!(e, QmpError::Protocol(_)), "{e}");
        server.await.expect("server");

        let l = UnixListener::bind(dir.path().join("mute.sock")).expect("bind");
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_millis(1500)).await;
            drop(s);
        });
        let e = Qmp::connect(&dir.path().join("mute.sock"), Duration::from_millis(300))
            .await
            .expect_err("silence");
        assert!(matches!(e, QmpError::Timeout(..)), "{e}");
        server.await.expect("server");

        let e = Qmp::connect(&dir.path().join("absent.sock"), Duration::from_millis(100))
            .await
            .expect_err("no socket");
        assert!(matches!(e, QmpError::Connect(..)), "{e}");
    }
}
