//! The compute service's changes reach the API's commit stream: a server's
//! boot, its migration (each step) and its deletion are events on
//! `GET /switchyard/v1/events`, so the console follows them without
//! polling.

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
        let resp = reqwest::get(format!("{url}/switchyard/v1/events"))
            .await
            .expect("stream");
        assert_eq!(resp.status(), 200);
        Stream {
            resp,
            buf: String::new(),
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
    let live = LiveLab::start(opts).await.expect("lab");
    let c = LabClient::new(&live.url());
    let net = network(&c, "ev", "10.64.0.0/24").await;
    let mut s = Stream::open(&live.url()).await;

    let limit = Duration::from_secs(60);
    let vm = id(&c
        .boot("ev-vm", json!([{"uuid": net}]), "compute-1", limit)
        .await
        .expect("boot"));
    // BUILD, then ACTIVE once its port is: each a `put` of the server.
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
    live.shutdown().await;
}
