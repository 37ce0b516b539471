//! A small OVSDB client (RFC 7047: JSON-RPC 1.0 over a stream socket), enough
//! for an agent: `transact`, `monitor` with its `update` notifications, and
//! answering the server's `echo`. Written here because no maintained Rust
//! crate speaks OVSDB; the protocol is small: messages are JSON values sent
//! back to back with no framing, so the reader cuts the stream where each
//! value ends.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    #[error("OVSDB socket {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("OVSDB connection closed")]
    Closed,
    #[error("OVSDB error: {0}")]
    Server(String),
    #[error("OVSDB transaction failed: {0}")]
    Transaction(String),
}

/// A request waiting for its answer.
type Pending = HashMap<u64, oneshot::Sender<Result<Value, OvsdbError>>>;

enum Cmd {
    Call(String, Value, oneshot::Sender<Result<Value, OvsdbError>>),
}

/// A connection to `ovsdb-server`. Cheap to clone; calls go through one task
/// owning the socket.
#[derive(Clone)]
pub struct Ovsdb {
    cmds: mpsc::Sender<Cmd>,
}

/// Cuts the complete JSON values off the front of `buf` (RFC 7047 sends them
/// back to back), leaving a partial one in place.
pub fn split_values(buf: &mut Vec<u8>) -> Result<Vec<Value>, serde_json::Error> {
    let mut out = Vec::new();
    let consumed = {
        let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
        loop {
            match it.next() {
                Some(Ok(v)) => out.push(v),
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        it.byte_offset()
    };
    buf.drain(..consumed);
    Ok(out)
}

impl Ovsdb {
    /// Connects to the server's Unix socket; `updates` receives the
    /// `params` of every `update` notification (monitor id, table updates).
    pub async fn connect(path: &Path, updates: mpsc::Sender<Value>) -> Result<Self, OvsdbError> {
        let shown = path.display().to_string();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| OvsdbError::Connect(shown, e))?;
        let (cmds, rx) = mpsc::channel(64);
        tokio::spawn(run(stream, rx, updates));
        Ok(Ovsdb { cmds })
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value, OvsdbError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Call(method.to_string(), params, tx))
            .await
            .map_err(|_| OvsdbError::Closed)?;
        rx.await.map_err(|_| OvsdbError::Closed)?
    }

    /// Runs `ops` as one transaction on the `Open_vSwitch` database; the
    /// results, or the first operation's error.
    pub async fn transact(&self, ops: Vec<Value>) -> Result<Vec<Value>, OvsdbError> {
        let mut params = vec![json!("Open_vSwitch")];
        params.extend(ops);
        let r = self.call("transact", Value::Array(params)).await?;
        let results = r.as_array().cloned().unwrap_or_default();
        if let Some(e) = results.iter().find_map(|x| x.get("error")) {
            let detail = results
                .iter()
                .find_map(|x| x.get("details"))
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            return Err(OvsdbError::Transaction(format!("{e}{detail}")));
        }
        Ok(results)
    }

    /// Starts monitoring `requests` (table → `{"columns": […]}`) under
    /// `id`; returns the current contents (later changes come as updates).
    pub async fn monitor(&self, id: &str, requests: Value) -> Result<Value, OvsdbError> {
        self.call("monitor", json!(["Open_vSwitch", id, requests]))
            .await
    }
}

async fn run(stream: UnixStream, mut cmds: mpsc::Receiver<Cmd>, updates: mpsc::Sender<Value>) {
    let (mut rd, mut wr) = stream.into_split();
    let mut pending: Pending = HashMap::new();
    let mut next_id: u64 = 1;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let fail_all = |pending: &mut Pending| {
        for (_, tx) in pending.drain() {
            let _ = tx.send(Err(OvsdbError::Closed));
        }
    };
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Call(method, params, tx)) => {
                    let id = next_id;
                    next_id += 1;
                    let msg = json!({"method": method, "params": params, "id": id});
                    if wr.write_all(msg.to_string().as_bytes()).await.is_err() {
                        let _ = tx.send(Err(OvsdbError::Closed));
                        fail_all(&mut pending);
                        return;
                    }
                    pending.insert(id, tx);
                }
                None => return,
            },
            n = rd.read(&mut chunk) => {
                let n = match n {
                    Ok(0) | Err(_) => {
                        fail_all(&mut pending);
                        return;
                    }
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                let msgs = match split_values(&mut buf) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "OVSDB sent something that is not JSON; closing");
                        fail_all(&mut pending);
                        return;
                    }
                };
                for m in msgs {
                    match (m.get("method").and_then(Value::as_str), m.get("id")) {
                        (Some("echo"), Some(id)) => {
                            let reply = json!({"result": m["params"], "error": null, "id": id});
                            if wr.write_all(reply.to_string().as_bytes()).await.is_err() {
                                fail_all(&mut pending);
                                return;
                            }
                        }
                        (Some("update"), _) => {
                            let _ = updates.send(m["params"].clone()).await;
                        }
                        (Some(_), _) => {}
                        (None, Some(id)) => {
                            let Some(tx) = id.as_u64().and_then(|i| pending.remove(&i)) else {
                                continue;
                            };
                            let r = if m["error"].is_null() {
                                Ok(m["result"].clone())
                            } else {
                                Err(OvsdbError::Server(m["error"].to_string()))
                            };
                            let _ = tx.send(r);
                        }
                        (None, None) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_values;

    #[test]
    fn values_are_cut_where_they_end() {
        let mut b = br#"{"id":1,"result":[]}{"method":"echo","params":[],"id":"e"}{"id":"#.to_vec();
        let v = split_values(&mut b).expect("json");
        assert_eq!(v.len(), 2);
        assert_eq!(v[1]["method"], "echo");
        assert_eq!(b, br#"{"id":"#.to_vec());
        b.extend_from_slice(br#"2,"result":{}}"#);
        let v = split_values(&mut b).expect("json");
        assert_eq!(v.len(), 1);
        assert!(b.is_empty());
        let mut bad = b"}{".to_vec();
        assert!(split_values(&mut bad).is_err());
    }
}
