//! A VM's control channel over its serial console, which works whatever
//! state the VM's network is in. The guest image's `/init` runs a loop on
//! the console (echo off) that reads one command per line and answers with
//! its output between markers:
//!
//! ```text
//! host  → @@SY <id> <command line>
//! guest ← @@SY-OUT <id>
//! guest ← …output lines…
//! guest ← @@SY-END <id> <exit status>
//! ```
//!
//! `id` is fresh per command, so an answer is never taken for another's and
//! output that happens to look like a marker cannot end it early. Kernel
//! messages that reach the console between commands are skipped.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// Output kept per command; beyond it the rest is dropped (and said so).
const MAX_OUTPUT: usize = 1 << 20;
const MAX_LINE: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("console {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("console I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("the console closed")]
    Closed,
    #[error("`{0}`: no answer on the console within {1:?}")]
    Timeout(String, Duration),
    #[error("a command line may not hold a newline or be empty")]
    BadCommand,
}

/// What a command printed (stdout and stderr together) and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: i32,
    pub text: String,
}

#[derive(Debug)]
pub struct Console {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next: u64,
    salt: u32,
}

/// Where an answer stands while its lines are read.
#[derive(Debug, Default)]
struct Answer {
    started: bool,
    text: String,
    truncated: bool,
}

impl Answer {
    /// Takes one console line; returns the exit status once the answer ends.
    fn line(&mut self, tag: &str, line: &str) -> Option<i32> {
        let line = line.trim_end_matches(['\r', '\n']);
        if !self.started {
            self.started = line.strip_prefix("@@SY-OUT ") == Some(tag);
            return None;
        }
        if let Some(rest) = line.strip_prefix("@@SY-END ")
            && let Some((id, status)) = rest.split_once(' ')
            && id == tag
        {
            return Some(status.trim().parse().unwrap_or(-1));
        }
        if self.text.len() + line.len() < MAX_OUTPUT {
            self.text.push_str(line);
            self.text.push('\n');
        } else if !self.truncated {
            self.truncated = true;
            self.text.push_str("[output truncated]\n");
        }
        None
    }
}

impl Console {
    /// Connects to the console's Unix socket (QEMU `-serial unix:PATH,server`),
    /// waiting up to `timeout` for it to appear.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Console, ConsoleError> {
        let s = super::qmp::connect_unix(path, timeout)
            .await
            .map_err(|e| ConsoleError::Connect(path.display().to_string(), e))?;
        let (r, w) = s.into_split();
        Ok(Console {
            reader: BufReader::new(r),
            writer: w,
            next: 1,
            salt: std::process::id()
                ^ (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0)),
        })
    }

    /// Runs `command` (one shell command line) in the guest.
    pub async fn exec(&mut self, command: &str, timeout: Duration) -> Result<Output, ConsoleError> {
        if command.is_empty() || command.contains(['\n', '\r']) {
            return Err(ConsoleError::BadCommand);
        }
        let tag = format!("{:x}-{}", self.salt, self.next);
        self.next += 1;
        let run = async {
            self.writer
                .write_all(format!("@@SY {tag} {command}\n").as_bytes())
                .await?;
            let mut answer = Answer::default();
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = (&mut self.reader)
                    .take(MAX_LINE)
                    .read_until(b'\n', &mut line)
                    .await?;
                if n == 0 {
                    return Err(ConsoleError::Closed);
                }
                if let Some(status) = answer.line(&tag, &String::from_utf8_lossy(&line)) {
                    return Ok(Output {
                        status,
                        text: std::mem::take(&mut answer.text),
                    });
                }
            }
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| ConsoleError::Timeout(command.to_string(), timeout))?
    }

    /// Runs `command` every 250 ms until it exits 0 or `timeout` passes,
    /// for what the guest does in the background (its DHCP lease, a file it
    /// writes); returns the last answer either way.
    pub async fn until_ok(
        &mut self,
        command: &str,
        timeout: Duration,
    ) -> Result<Output, ConsoleError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let o = self.exec(command, Duration::from_secs(30)).await?;
            if o.status == 0 || tokio::time::Instant::now() >= deadline {
                return Ok(o);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the guest's loop answers (it is up), asking every second.
    pub async fn ready(&mut self, timeout: Duration) -> Result<(), ConsoleError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.exec("true", Duration::from_secs(1)).await {
                Ok(_) => return Ok(()),
                Err(ConsoleError::Timeout(..)) if tokio::time::Instant::now() < deadline => {}
                Err(ConsoleError::Timeout(..)) => {
                    return Err(ConsoleError::Timeout("boot".into(), timeout));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(tag: &str, lines: &[&str]) -> (Option<i32>, String) {
        let mut a = Answer::default();
        for l in lines {
            if let Some(s) = a.line(tag, l) {
                return (Some(s), a.text);
            }
        }
        (None, a.text)
    }

    #[test]
    fn an_answer_is_read_between_its_own_markers() {
        let (status, text) = feed(
            "ab-2",
            &[
                "[   12.3] virtio_net virtio0 eth0: renamed\r\n",
                "@@SY-OUT ab-1\r\n",
                "stale\r\n",
                "@@SY-END ab-1 0\r\n",
                "@@SY-OUT ab-2\r\n",
                "PING 10.0.0.1: 56 data bytes\r\n",
                "@@SY-END ab-1 0\r\n",
                "@@SY-END ab-2x 0\r\n",
                "3 packets transmitted\r\n",
                "@@SY-END ab-2 1\r\n",
            ],
        );
        assert_eq!(status, Some(1));
        assert_eq!(
            text,
            "PING 10.0.0.1: 56 data bytes\n@@SY-END ab-1 0\n@@SY-END ab-2x 0\n3 packets transmitted\n"
        );
    }

    #[test]
    fn an_unfinished_or_garbled_answer_is_not_taken() {
        assert_eq!(feed("t-1", &["@@SY-OUT t-1\n", "half\n"]).0, None);
        assert_eq!(
            feed("t-1", &["@@SY-END t-1 0\n"]).0,
            None,
            "no start marker"
        );
        assert_eq!(
            feed("t-1", &["@@SY-OUT t-1\n", "@@SY-END t-1 x\n"]).0,
            Some(-1)
        );
    }
}
