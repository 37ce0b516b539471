//! `GET /switchyard/v1/events` over real HTTP: each commit is named once, to
//! those who may see it, and the stream ends when the server stops.

mod common;

use std::time::Duration;

use common::Server;
use serde_json::{Value, json};

/// Reads Server-Sent Events off a streaming response.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(s: &Server, headers: &[(&str, &str)]) -> Events {
        let mut r = s.http.get(format!("{}/switchyard/v1/events", s.base));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r.send().await.expect("stream opens");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"],
            "text/event-stream",
            "{:?}",
            resp.headers()
        );
        let mut e = Events {
            resp,
            buf: String::new(),
        };
        let (name, _) = e.next().await.expect("ready");
        assert_eq!(name, "ready");
        e
    }

    /// The next event (comments skipped), or `None` when the stream ends;
    /// fails after 10 s without one.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if block.lines().all(|l| l.starts_with(':') || l.is_empty()) {
                    continue;
                }
                return Some((name, serde_json::from_str(&data).unwrap_or(Value::Null)));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.resp.chunk())
                .await
                .expect("an event within 10 s")
                .expect("stream readable")?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next `change` event's changes as (kind, id, op).
    async fn change(&mut self) -> Vec<(String, String, String)> {
        let (name, data) = self.next().await.expect("an event");
        assert_eq!(name, "change", "{data}");
        data["changes"]
            .as_array()
            .expect("changes")
            .iter()
            .map(|c| {
                let s = |k: &str| c[k].as_str().expect("text").to_string();
                (s("kind"), s("id"), s("op"))
            })
            .collect()
    }
}

fn has(changes: &[(String, String, String)], kind: &str, id: &str, op: &str) -> bool {
    changes
        .iter()
        .any(|(k, i, o)| (k.as_str(), i.as_str(), o.as_str()) == (kind, id, op))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_commit_is_named_to_those_who_may_see_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let mut admin = Events::open(&s, &[]).await;
    let b = [("X-Project-Id", "proj-b"), ("X-Roles", "member")];
    let mut other = Events::open(&s, &b).await;

    // proj-a's network: the admin hears of it, with its segment.
    let a_net = s.create("networks", "network", json!({"name": "a"})).await;
    let a_id = a_net["id"].as_str().expect("id");
    let c = admin.change().await;
    assert!(has(&c, "network", a_id, "put"), "{c:?}");
    assert!(c.iter().any(|(k, _, _)| k == "segment"), "{c:?}");

    // proj-b's network: both hear of it, and it is the first thing proj-b
    // hears (proj-a's was not named to it).
    let r = s
        .req(
            reqwest::Method::POST,
            "/v2.0/networks",
            Some(json!({"network": {"name": "b"}})),
            &b,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let b_id = r.body["network"]["id"].as_str().expect("id").to_string();
    let c = other.change().await;
    assert!(has(&c, "network", &b_id, "put"), "{c:?}");
    assert!(!c.iter().any(|(_, i, _)| i == a_id), "{c:?}");
    // Its segment is named to admins only (only admins list segments).
    assert!(!c.iter().any(|(k, _, _)| k == "segment"), "{c:?}");
    assert!(has(&admin.change().await, "network", &b_id, "put"));

    // A deletion keeps its owner: named to the admin, not to proj-b.
    assert_eq!(
        s.delete(&format!("/v2.0/networks/{a_id}")).await.status,
        204
    );
    let c = admin.change().await;
    assert!(has(&c, "network", a_id, "delete"), "{c:?}");
    let r = s
        .req(
            reqwest::Method::PUT,
            &format!("/v2.0/networks/{b_id}"),
            Some(json!({"network": {"name": "b2"}})),
            &b,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let c = other.change().await;
    assert_eq!(c, [("network".into(), b_id.clone(), "put".into())]);

    // A request that changes nothing is not an event; the next one is.
    assert_eq!(s.get("/v2.0/networks").await.status, 200);
    assert!(has(&admin.change().await, "network", &b_id, "put"));

    // The server stops: the streams end (they do not hold the stop up).
    tokio::time::timeout(Duration::from_secs(10), s.stop())
        .await
        .expect("the server stops with streams open");
    assert!(admin.next().await.is_none());
    assert!(other.next().await.is_none());
}

/// Streams are capped: one beyond the limit is refused with 503 and
/// `Retry-After`, and a closed stream frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_are_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path()).await;
    let mut open = Vec::new();
    for _ in 0..switchyard_api::events::MAX_STREAMS {
        open.push(Events::open(&s, &[]).await);
    }
    let url = format!("{}/switchyard/v1/events", s.base);
    let r = s.http.get(&url).send().await.expect("refused in time");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["NeutronError"]["type"], "ServiceUnavailable", "{body}");
    drop(open.pop());
    // The server notices the closed stream when it next writes to it; a
    // commit makes every stream write.
    s.create("networks", "network", json!({"name": "wake"}))
        .await;
    let mut again = None;
    for _ in 0..100 {
        let r = s.http.get(&url).send().await.expect("request");
        if r.status() == 200 {
            again = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "a closed stream's place is given back");
    drop(again);
    drop(open);
    s.stop().await;
}
