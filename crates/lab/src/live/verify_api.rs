//! `POST /switchyard/v1/lab/verify`: the connectivity matrix
//! (`switchyard verify`) run by the lab itself, for the console and any HTTP
//! client.
//!
//! The run is the CLI's ([`crate::client::verify::run`]), made through the
//! lab's own public APIs with the caller's token: it sees and probes what the
//! caller may, no more. One run at a time (each is tens of pings per path);
//! a second is answered `409` while one runs.
//!
//! Body (optional): `{"verify": {"network": NAME_OR_ID, "min_replies": N}}`.
//! Answer: `200 {"verify": {"ok", "min_replies", "pairs": [...], "at",
//! "network"}}`, each pair as `switchyard verify --json` prints it.
//!
//! `GET /switchyard/v1/lab/verify`: the last [`KEEP`] runs, newest first, as
//! `{"runs": [...]}` in the same shape. A run names the guests and addresses
//! its caller could see, so an admin sees every run and anyone else only the
//! runs a non-admin made in their own project (an admin's run, made with an
//! admin's view, is not shown to the admin's project's readers). Kept in
//! memory, with the lab.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};
use switchyard_api::http::{error, json as reply};
use switchyard_model::NeutronError;

use crate::client::LabClient;
use crate::client::verify;

/// Runs kept for `GET`.
pub const KEEP: usize = 20;

#[derive(Clone)]
struct Ctx {
    /// The lab's own base URL (loopback): the run calls its public APIs.
    url: Arc<str>,
    /// Held while a run is in progress.
    running: Arc<tokio::sync::Mutex<()>>,
    /// Newest first.
    runs: Arc<Mutex<VecDeque<Run>>>,
}

pub fn router(url: &str) -> Router {
    Router::new()
        .route("/switchyard/v1/lab/verify", get(history).post(run))
        .with_state(Ctx {
            url: Arc::from(url),
            running: Arc::default(),
            runs: Arc::default(),
        })
}

/// A run kept, and whose view it was made with.
struct Run {
    project: String,
    by_admin: bool,
    result: Value,
}

/// The caller's project, as the compute API reads it (set from the token
/// by the identity check; empty under noauth, where the caller is the admin).
fn project(headers: &HeaderMap) -> String {
    super::compute::api::caller_project(headers, "")
}

async fn history(State(c): State<Ctx>, headers: HeaderMap) -> Response {
    let admin = switchyard_api::http::is_admin(&headers);
    let mine = project(&headers);
    let runs: Vec<Value> = c
        .runs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|r| admin || (!r.by_admin && r.project == mine))
        .map(|r| r.result.clone())
        .collect();
    reply(200, json!({ "runs": runs }))
}

async fn run(State(c): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let args: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v @ Value::Object(_)) => v.get("verify").cloned().unwrap_or(Value::Null),
            _ => {
                return error(&NeutronError::http_bad_request(
                    "The body must be a JSON object: {\"verify\": {...}}",
                ));
            }
        }
    };
    let Some(args) = args.as_object() else {
        return error(&NeutronError::http_bad_request(
            "'verify' must be an object",
        ));
    };
    if let Some(k) = args
        .keys()
        .find(|k| !["network", "min_replies"].contains(&k.as_str()))
    {
        return error(&NeutronError::http_bad_request(format!(
            "Unrecognized attribute(s) '{k}'"
        )));
    }
    let network = match args.get("network") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return error(&NeutronError::http_bad_request(
                "'network' must be a string",
            ));
        }
    };
    let min_replies = match args.get("min_replies") {
        None | Some(Value::Null) => verify::PROBE_COUNT,
        Some(v) => match v.as_u64() {
            Some(n) => n,
            None => {
                return error(&NeutronError::http_bad_request(
                    "'min_replies' must be a whole number",
                ));
            }
        },
    };
    let Ok(_running) = c.running.try_lock() else {
        return error(&NeutronError::conflict(
            "VerifyInProgress",
            "A verify run is in progress; try again when it ends.",
        ));
    };
    let mut client = LabClient::new(&c.url);
    if let Some(t) = headers.get("x-auth-token").and_then(|v| v.to_str().ok()) {
        client = client.with_token(t.to_string());
    }
    match verify::run(&client, network.as_deref(), min_replies).await {
        Ok(m) => {
            let mut v = serde_json::to_value(&m).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                let at = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
                o.insert("at".into(), json!(at));
                o.insert("network".into(), json!(network));
            }
            let mut runs = c.runs.lock().unwrap_or_else(PoisonError::into_inner);
            runs.push_front(Run {
                project: project(&headers),
                by_admin: switchyard_api::http::is_admin(&headers),
                result: v.clone(),
            });
            runs.truncate(KEEP);
            drop(runs);
            reply(200, json!({ "verify": v }))
        }
        Err(crate::client::ClientError::Api {
            status, message, ..
        }) if (400..500).contains(&status) => {
            error(&NeutronError::new(status, "VerifyRefused", message))
        }
        Err(crate::client::ClientError::Scenario(m)) => {
            error(&NeutronError::bad_request("InvalidInput", m))
        }
        Err(e) => {
            tracing::warn!(error = %e, "verify run failed");
            error(&NeutronError::new(
                500,
                "VerifyFailed",
                format!("The verify run failed: {e}"),
            ))
        }
    }
}
