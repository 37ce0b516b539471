//! Neutron → Nova notifications against a stand-in Nova: the bodies of
//! `network-vif-plugged`, `network-vif-unplugged`, `network-changed` and
//! `network-vif-deleted` for a server's port (and none for other ports), the
//! service user's token they carry, a batch retried when Nova answers `500`,
//! one not retried when it answers `404`, and one sent again with a new token
//! when Nova answers `401`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ManualClock, Server};
use reqwest::Method;
use serde_json::{Value, json};
use switchyard_api::nova::NovaTarget;
use switchyard_ml2::Ml2Config;

/// What the stand-in Nova received: (headers of interest, body).
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// A Nova that answers the status `script` gives for each call (then 200).
async fn stand_in(script: Vec<u16>) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let script = Arc::new(Mutex::new(script));
    let (s2, sc2) = (seen.clone(), script.clone());
    let app = axum::Router::new().route(
        "/compute/v2.1/os-server-external-events",
        axum::routing::post(move |h: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (seen, script) = (s2.clone(), sc2.clone());
            async move {
                let who = h
                    .get("x-auth-token")
                    .or_else(|| h.get("x-roles"))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                seen.lock().expect("seen").push((who, v));
                let code = {
                    let mut s = script.lock().expect("script");
                    if s.is_empty() { 200 } else { s.remove(0) }
                };
                axum::http::StatusCode::from_u16(code).expect("status")
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/compute/v2.1", l.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (url, seen)
}

async fn device(s: &Server, port: &str, host: &str, status: &str) {
    let auth = format!("Bearer {}", s.token(host, common::lab_role(host)));
    let r = s
        .req(
            Method::PUT,
            &format!("/switchyard/v1/ports/{port}/device"),
            Some(json!({"device": {"host": host, "status": status}})),
            &[("authorization", &auth)],
        )
        .await;
    assert!(r.status < 300, "{}", r.body);
}

/// Waits until the stand-in has `n` calls.
async fn calls(seen: &Seen, n: usize) -> Vec<(String, Value)> {
    for _ in 0..200 {
        if seen.lock().expect("seen").len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen.lock().expect("seen").clone()
}

fn events(v: &[(String, Value)]) -> Vec<Value> {
    v.iter()
        .flat_map(|(_, b)| b["events"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_changes_reach_nova_as_external_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, seen) = stand_in(vec![500, 404, 401]).await;
    // The service user's token, from an identity of the test's own.
    let id = switchyard_identity::Identity::open(
        &dir.path().join("identity.db"),
        chrono::Duration::seconds(3600),
    )
    .expect("identity");
    id.bootstrap(&switchyard_identity::Bootstrap {
        admin_user: "admin".into(),
        admin_password: "adm1n".into(),
        admin_project: "admin".into(),
        demo: None,
        service: Some(("service".into(), "neutron".into(), "n3utron".into())),
    })
    .expect("bootstrap");
    let token = switchyard_identity::TokenSource::Embedded(switchyard_identity::ServiceToken::new(
        &id, "neutron", "n3utron", "service",
    ));
    let user_of = |t: &str| {
        id.validate(t, chrono::Utc::now())
            .expect("a valid token")
            .user
            .name
    };
    let s = Server::start_notifying(
        dir.path(),
        Ml2Config::default(),
        Arc::new(ManualClock::at(1_800_000_000)),
        "127.0.0.1:0",
        Some(NovaTarget {
            url,
            token: Some(token),
            interval: Duration::ZERO,
        }),
    )
    .await;
    s.lab_agents().await;
    let n = s.network("n").await;
    s.subnet(&n, "10.9.0.0/24").await;
    let server = "5a5a5a5a-0000-4000-8000-000000000001";
    let p = s
        .port(
            &n,
            json!({"binding:host_id": "compute-2", "device_owner": "compute:nova", "device_id": server}),
        )
        .await;
    let pid = p["id"].as_str().expect("id").to_string();
    // A port of no server: no events for it.
    let other = s
        .port(
            &n,
            json!({"binding:host_id": "compute-2", "device_owner": "network:dhcp"}),
        )
        .await;
    device(&s, other["id"].as_str().expect("id"), "compute-2", "up").await;

    // The first batch meets a 500 and is sent again.
    device(&s, &pid, "compute-2", "up").await;
    let got = calls(&seen, 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].1, got[1].1, "the same batch, again");
    assert_eq!(user_of(&got[0].0), "neutron");
    assert_eq!(
        got[0].1,
        json!({"events": [{"name": "network-vif-plugged", "server_uuid": server, "tag": pid, "status": "completed"}]})
    );
    // The retry meets a 404 (no such server) and is not sent again; the next
    // batch meets a 401 (our token revoked, say) and goes again at once
    // with a new token.
    device(&s, &pid, "compute-2", "down").await;
    let got = calls(&seen, 4).await;
    assert_eq!(got[2].1, got[3].1, "the same batch, again");
    assert_ne!(got[2].0, got[3].0, "a new token after the 401");
    assert_eq!(user_of(&got[3].0), "neutron");
    assert_eq!(
        events(&got[3..]),
        vec![
            json!({"name": "network-vif-unplugged", "server_uuid": server, "tag": pid, "status": "completed"})
        ]
    );
    // New fixed IPs: network-changed; deletion: network-vif-deleted.
    let r = s
        .put(
            &format!("/v2.0/ports/{pid}"),
            json!({"port": {"fixed_ips": [{"ip_address": "10.9.0.77"}]}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.delete(&format!("/v2.0/ports/{pid}")).await;
    assert_eq!(r.status, 204);
    let got = calls(&seen, 6).await;
    let names: Vec<Value> = events(&got[4..])
        .iter()
        .map(|e| e["name"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("network-changed"), json!("network-vif-deleted")],
        "{got:?}"
    );
    assert_eq!(
        seen.lock().expect("seen").len(),
        6,
        "the 404 was not retried"
    );
    s.stop().await;
}
