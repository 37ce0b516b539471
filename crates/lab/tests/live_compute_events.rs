//! The compute service's changes and the nodes' state reach the API's
//! commit stream: a server's boot, its migration (each step) and its
//! deletion, and a node's session ending, are events on
//! `GET /switchyard/v1/events`, so the console follows them without
//! polling; each is named only to those who may see it.

mod common;

use std::time::Duration;

use common::{id, network};
use serde_json::{Value, json};
use switchyard_lab::client::LabClient;
use switchyard_lab::live::{LiveLab, Options};

/// The stream's `change` events, read until `want` is among them.
struct Stream {
    resp: reqwest::Response,
    buf: String,
}

impl Stream {
    async fn open(url: &str) -> Stream {
        Stream::open_as(url, &[]).await
    }

    /// A stream opened with these headers (noauth: who the caller is).
    async fn open_as(url: &str, headers: &[(&str, &str)]) -> Stream {
        let mut r = reqwest::Client::new().get(format!("{url}/switchyard/v1/events"));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r.send().await.expect("stream");
        assert_eq!(resp.status(), 200);
        Stream {
            resp,
            buf: String::new(),
        }
    }

    /// The changes that arrive within `ms` milliseconds.
    async fn within(&mut self, ms: u64) -> Vec<(String, String, String)> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            while let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .collect();
                if let Ok(v) = serde_json::from_str::<Value>(data.trim()) {
                    for c in v["changes"].as_array().into_iter().flatten() {
                        let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                        seen.push((s("kind"), s("id"), s("op")));
                    }
                }
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return seen,
            }
        }
    }

    /// Reads changes until one is (kind, id, op); what it read on the way.
    async fn until(&mut self, kind: &str, id: &str, op: &str) -> Vec<(String, String, String)> {
        let mut seen = Vec::new();
        loop {
            while let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                if !block.contains("event: change") && !block.contains("event:change") {
                    continue;
                }
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .collect();
                let v: Value = serde_json::from_str(data.trim()).expect("json");
                for c in v["changes"].as_array().expect("changes") {
                    let s = |k: &str| c[k].as_str().expect("text").to_string();
                    seen.push((s("kind"), s("id"), s("op")));
                }
                if seen.iter().any(|(k, i, o)| k == kind && i == id && o == op) {
                    return seen;
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.resp.chunk())
                .await
                .unwrap_or_else(|_| panic!("no {kind} {id} {op} within 30 s; saw {seen:?}"))
                .expect("readable")
                .expect("stream open");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_migrations_and_deletions_are_in_the_commit_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options::reference(dir.path().join("switchyard.db")).expect("reference");
    let mut live = LiveLab::start(opts).await.expect("lab");
    let c = LabClient::new(&live.url());
    let net = network(&c, "ev", "10.64.0.0/24").await;
    let mut s = Stream::open(&live.url()).await;
    // A member of the servers' project (noauth: the lab's, `admin`), and a
    // member of another project.
    let mut member = Stream::open_as(
        &live.url(),
        &[("X-Project-Id", "admin"), ("X-Roles", "member")],
    )
    .await;
    let mut stranger = Stream::open_as(
        &live.url(),
        &[("X-Project-Id", "another"), ("X-Roles", "member")],
    )
    .await;

    let limit = Duration::from_secs(60);
    let vm = id(&c
        .boot("ev-vm", json!([{"uuid": net}]), "compute-1", limit)
        .await
        .expect("boot"));
    // The server's changes while it builds (BUILD, its VIF, ACTIVE): more
    // than one `put`, with its port's changes among them.
    let mut seen = s.until("server", &vm, "put").await;
    seen.extend(s.until("server", &vm, "put").await);
    assert!(seen.iter().any(|(k, _, _)| k == "port"), "{seen:?}");

    c.post(
        &format!("/compute/v2.1/servers/{vm}/action"),
        &json!({"os-migrateLive": {"host": "compute-4", "block_migration": "auto"}}),
    )
    .await
    .expect("migrate");
    c.wait_server(&vm, limit, |x| {
        x["status"] == "ACTIVE" && x["OS-EXT-SRV-ATTR:host"] == "compute-4"
    })
    .await
    .expect("migrated");
    let m = c
        .get(&format!("/compute/v2.1/os-migrations?instance_uuid={vm}"))
        .await
        .expect("migrations");
    let mid = m["migrations"][0]["id"].to_string();
    c.delete(&format!("/compute/v2.1/servers/{vm}"))
        .await
        .expect("delete");
    let seen = s.until("server", &vm, "delete").await;
    // The migration: its creation, each of its five steps and its two
    // status changes (running, completed).
    let n = seen
        .iter()
        .filter(|(k, i, o)| k == "migration" && i == &mid && o == "put")
        .count();
    assert_eq!(n, 8, "{seen:?}");
    assert!(
        seen.iter()
            .any(|(k, i, o)| k == "server" && i == &vm && o == "put"),
        "{seen:?}"
    );
    // A node's agent stops: its session ends (and its liveness goes), which
    // only the node's state says, not a commit: a `node` event (the node
    // events of the migration, which came before, are read first).
    s.within(1500).await;
    live.stop_agent("compute-2").await.expect("stop");
    s.until("node", "compute-2", "put").await;
    let n = c.get("/switchyard/v1/nodes/compute-2").await.expect("node");
    assert!(
        matches!(n["node"]["state"].as_str(), Some("disconnected" | "down")),
        "{n}"
    );
    // The member hears of its project's server, not of the migration (the
    // migrations list is an admin's); the stranger hears of neither.
    let heard = member.until("server", &vm, "delete").await;
    assert!(
        heard
            .iter()
            .all(|(k, _, _)| k != "migration" && k != "node"),
        "{heard:?}"
    );
    let heard = stranger.within(500).await;
    assert!(
        heard
            .iter()
            .all(|(k, _, _)| k != "server" && k != "migration" && k != "node"),
        "{heard:?}"
    );
    // ...while its own project's changes reach it.
    let mine = reqwest::Client::new()
        .post(format!("{}/v2.0/networks", live.url()))
        .header("X-Project-Id", "another")
        .header("X-Roles", "member")
        .json(&json!({"network": {"name": "strangers-own"}}))
        .send()
        .await
        .expect("network")
        .json::<Value>()
        .await
        .expect("json");
    let mine = mine["network"]["id"].as_str().expect("id");
    stranger.until("network", mine, "put").await;
    live.shutdown().await;
}
