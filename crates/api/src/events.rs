//! The commit stream as Server-Sent Events: `GET /switchyard/v1/events`.
//!
//! Every committed transaction is published once ([`Shared::events`]) as the
//! list of what it changed (kind, id, put or delete, and the owning project),
//! and each open stream sends the part its caller may see: everything to an
//! admin, its own project's resources to anyone else (agents and other
//! projects' resources are not named to them). The console reads it to
//! refresh what is on screen when, and only when, something changed,
//! instead of every tab polling every list.
//!
//! Contracts:
//! * an event names what changed, never its content: a client reads the
//!   resource through the API, under the API's own policy;
//! * a stream that falls behind (more than [`CAPACITY`] commits unread) gets
//!   `event: resync` and should reload what it shows; nothing is silently
//!   skipped;
//! * a comment line every [`KEEP_ALIVE`] keeps proxies from closing an idle
//!   stream and lets the server notice a client that went away;
//! * streams end when the server shuts down (`Shared::closing`), so a graceful
//!   stop does not wait for them, when the token they were opened with
//!   expires, and after [`MAX_LIFETIME`] in any case: a revoked token or a
//!   lost role stops being served within that (the client reconnects, and
//!   is checked again);
//! * at most [`MAX_STREAMS`] are open at once; beyond, `503` with
//!   `Retry-After`, so streams cannot take every connection the server allows;
//! * segments and agents are named to admins only (only admins list them);
//! * besides commits, the stream carries `node` events (a node's session,
//!   versions, failure or liveness changed: [`crate::core::Shared`] gathers
//!   them and sends one a second, to admins only) and, under `lab up`, the
//!   compute service's `server` and `migration` changes, published on the
//!   same channel.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use switchyard_model::{Change, Kind, Record};

use crate::routes::App;

/// Commits a stream may fall behind by before it is told to resync.
pub const CAPACITY: usize = 1024;
/// How often an idle stream sends a comment line.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a stream lasts at most.
pub const MAX_LIFETIME: Duration = Duration::from_secs(600);
/// How many streams may be open at once.
pub const MAX_STREAMS: usize = 64;

/// One changed resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub kind: &'static str,
    pub id: String,
    /// `put` (created or updated) or `delete`.
    pub op: &'static str,
    /// The owning project; `None` for what only admins see (agents).
    #[serde(skip)]
    pub project: Option<String>,
}

/// What one commit changed, as published to every stream.
pub type Commit = Arc<Vec<Changed>>;

/// Who owned each record a transaction touched, from the journal's
/// before-images (taken before the commit: a deleted record's project is
/// found nowhere else).
pub type Owners = Vec<(Kind, String, Option<String>)>;

pub fn owners(undo: &[Change]) -> Owners {
    undo.iter()
        .filter_map(|(k, id, r)| r.as_ref().map(|r| (*k, id.clone(), named_to(r))))
        .collect()
}

/// Whose project a change to `r` is named to (`None`: admins only).
fn named_to(r: &Record) -> Option<String> {
    match r {
        // Only admins list segments (Neutron's policy) and agents.
        Record::Segment(_) | Record::Agent(_) => None,
        _ => r.project_id().map(str::to_string),
    }
}

/// What a commit changed: `changes` as committed, with `owners` from before it.
pub fn commit(changes: &[Change], owners: &Owners) -> Vec<Changed> {
    // Indexed: a cascade deletes many records in one transaction.
    let before: std::collections::HashMap<(Kind, &str), &Option<String>> = owners
        .iter()
        .map(|(k, id, p)| ((*k, id.as_str()), p))
        .collect();
    changes
        .iter()
        .map(|(kind, id, rec)| {
            let project = match rec {
                Some(r) => named_to(r),
                None => before.get(&(*kind, id.as_str())).and_then(|p| (*p).clone()),
            };
            Changed {
                kind: kind.as_str(),
                id: id.clone(),
                op: if rec.is_some() { "put" } else { "delete" },
                project,
            }
        })
        .collect()
}

/// The part of a commit `project` may see (`None`: an admin, all of it).
pub fn visible(commit: &[Changed], project: Option<&str>) -> Vec<Changed> {
    commit
        .iter()
        .filter(|c| project.is_none() || c.project.as_deref() == project)
        .cloned()
        .collect()
}

/// `GET /switchyard/v1/events`.
pub async fn stream(
    State(app): State<App>,
    expiry: Option<axum::Extension<switchyard_identity::guard::TokenExpiry>>,
    headers: HeaderMap,
) -> Response {
    let caller = match crate::http::caller(&headers, &app.default_project) {
        Ok(c) => c,
        Err(e) => return crate::http::error(&e),
    };
    let Ok(permit) = app.shared.event_streams.clone().try_acquire_owned() else {
        let e = switchyard_model::NeutronError::new(
            503,
            "ServiceUnavailable",
            format!(
                "{MAX_STREAMS} event streams are open, the most this server keeps; try again later."
            ),
        );
        let mut r = crate::http::error(&e);
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        );
        return r;
    };
    let mut lifetime = MAX_LIFETIME;
    if let Some(axum::Extension(e)) = expiry {
        let left = (e.0 - app.shared.clock.now()).to_std().unwrap_or_default();
        lifetime = lifetime.min(left);
    }
    let project = (!caller.is_admin).then_some(caller.project_id);
    let rx = app.shared.events.subscribe();
    let closing = app.shared.closing.subscribe();
    struct St {
        rx: tokio::sync::broadcast::Receiver<Commit>,
        closing: tokio::sync::watch::Receiver<bool>,
        project: Option<String>,
        hello: bool,
        ends: tokio::time::Instant,
        _permit: tokio::sync::OwnedSemaphorePermit,
    }
    let st = St {
        rx,
        closing,
        project,
        hello: true,
        ends: tokio::time::Instant::now() + lifetime,
        _permit: permit,
    };
    let events = futures_util::stream::unfold(st, |mut st| async move {
        if st.hello {
            // Sent at once, so a client knows the stream is open (and
            // from which moment it will hear of changes).
            st.hello = false;
            return Some((
                Ok::<_, Infallible>(Event::default().event("ready").data("{}")),
                st,
            ));
        }
        loop {
            if *st.closing.borrow() {
                return None;
            }
            tokio::select! {
                r = st.rx.recv() => match r {
                    Ok(c) => {
                        let mine = visible(&c, st.project.as_deref());
                        if mine.is_empty() {
                            continue;
                        }
                        let data = serde_json::json!({ "changes": mine }).to_string();
                        return Some((Ok(Event::default().event("change").data(data)), st));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        return Some((Ok(Event::default().event("resync").data("{}")), st));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                },
                r = st.closing.changed() => {
                    if r.is_err() {
                        return None;
                    }
                }
                () = tokio::time::sleep_until(st.ends) => return None,
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(id: &str, project: Option<&str>) -> Changed {
        Changed {
            kind: "port",
            id: id.into(),
            op: "put",
            project: project.map(str::to_string),
        }
    }

    #[test]
    fn a_project_sees_only_its_own_resources_and_an_admin_sees_all() {
        let c = vec![
            changed("a", Some("p1")),
            changed("b", Some("p2")),
            changed("agent", None),
        ];
        let ids = |v: Vec<Changed>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(visible(&c, None)), ["a", "b", "agent"]);
        assert_eq!(ids(visible(&c, Some("p1"))), ["a"]);
        assert_eq!(ids(visible(&c, Some("p3"))), Vec::<String>::new());
    }
}
