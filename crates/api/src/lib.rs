//! switchyard's northbound HTTP server: the OpenStack Networking (Neutron) v2.0
//! API under `noauth`, plus the internal agent-reporting endpoints that node
//! agents (and later the southbound) use.
//!
//! Contracts:
//! * no business logic here: requests are parsed, handed to one ML2 operation
//!   inside a transaction ([`core::Shared::write`], or a group commit shared
//!   with concurrent creations, [`group_commit`]) and rendered; a write is
//!   answered only once it is in SQLite;
//! * every failure is `{"NeutronError":{"type","message","detail"}}` with
//!   Neutron's status; a handler never panics on input;
//! * [`serve`] stops gracefully when its shutdown future resolves: in-flight
//!   requests finish, and every committed write is already on disk;
//! * every connection is bounded ([`server`]: header, body and idle timeouts,
//!   a connection limit, head and body sizes), and what is refused outside a
//!   handler still gets a Neutron error body.

pub mod console;
pub mod core;
pub mod events;
pub mod group_commit;
pub mod http;
pub mod hugepages;
pub mod meta;
pub mod nodeauth;
pub mod nova;
pub mod query;
pub mod quotas;
pub mod routes;
pub mod server;
pub mod southbound;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use switchyard_ml2::{Ml2, Ml2Config};
use switchyard_store::{Durability, SqliteStore};
use tokio::net::TcpListener;

pub use crate::core::{Clock, Core, Shared, SystemClock};
pub use crate::routes::App;
pub use crate::server::{HttpConfigError, HttpOptions, LinkBase, LinkPrefix};

/// Largest request body accepted; bulk creations of many ports need more than
/// oslo's 112 KiB default.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] switchyard_ml2::ConfigError),
    #[error(transparent)]
    Store(#[from] switchyard_store::StoreError),
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Http(#[from] HttpConfigError),
}

/// Opens the database and builds the application.
pub fn open_app(
    db_path: &Path,
    durability: Durability,
    ml2: &Ml2Config,
    default_project: &str,
) -> Result<App, ServeError> {
    open_app_with_clock(
        db_path,
        durability,
        ml2,
        default_project,
        Arc::new(SystemClock),
    )
}

/// As [`open_app`], with the clock supplied (tests drive agent liveness with it).
pub fn open_app_with_clock(
    db_path: &Path,
    durability: Durability,
    ml2: &Ml2Config,
    default_project: &str,
    clock: Arc<dyn Clock>,
) -> Result<App, ServeError> {
    let ml2 = Ml2::new(ml2)?;
    let store = SqliteStore::open(db_path, durability)?;
    let core = Core::open(ml2, store, clock.now())?;
    Ok(App {
        shared: Shared::new(core, clock),
        default_project: default_project.to_string(),
        identity: None,
        keystone: None,
    })
}

pub fn router(app: App) -> Router {
    Router::new()
        .route(
            "/switchyard/v1/southbound",
            axum::routing::get(southbound::upgrade),
        )
        .route("/switchyard/v1/events", axum::routing::get(events::stream))
        .merge(console::router())
        .fallback(routes::dispatch)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// Serves until `shutdown` resolves, then drains in-flight requests, with the
/// default [`HttpOptions`].
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with(listener, app, Router::new(), shutdown).await
}

/// As [`serve`], with `extra` routes (the lab's, say) beside the API's.
pub async fn serve_with(
    listener: TcpListener,
    app: App,
    extra: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with_options(listener, app, extra, HttpOptions::default(), shutdown).await
}

/// As [`serve_with`], with the HTTP server's limits and public URL
/// ([`server`] says what each does).
pub async fn serve_with_options(
    listener: TcpListener,
    app: App,
    extra: Router,
    opts: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    opts.check()?;
    if let Some(w) = listener
        .local_addr()
        .ok()
        .and_then(server::exposure_warning)
    {
        tracing::warn!("{w}");
    }
    let closing = app.shared.closing.clone();
    let ticker = tokio::spawn(tick_loop(app.shared.clone()));
    let (identity, keystone) = (app.identity.clone(), app.keystone.clone());
    let mut routes = extra.merge(router(app));
    // Everything asks for a token (keystonemiddleware's place), except what
    // `guard` exempts; the embedded identity's API beside it.
    use switchyard_identity::guard::{Validator, guard};
    if let Some(id) = identity {
        routes = routes
            .layer(axum::middleware::from_fn_with_state(
                Validator::Embedded(id.clone()),
                guard,
            ))
            .merge(switchyard_identity::api::router(id));
    } else if let Some(k) = keystone {
        routes = routes.layer(axum::middleware::from_fn_with_state(
            Validator::Keystone(k),
            guard,
        ));
    }
    let service = server::with_limits(routes, &opts);
    let served = server::run(listener, service, opts, async move {
        shutdown.await;
        let _ = closing.send(true);
    })
    .await;
    ticker.abort();
    served?;
    Ok(())
}

/// Only what node agents use: the southbound session and the internal agent
/// API, both authenticated by node credentials; anything else is `404`.
/// For a listener on a management network, where the Neutron API (noauth
/// until identity exists) must not be reachable.
pub fn southbound_router(app: App) -> Router {
    Router::new()
        .route(
            "/switchyard/v1/southbound",
            axum::routing::get(southbound::upgrade),
        )
        .route(
            "/switchyard/v1/agents/report",
            axum::routing::any(routes::dispatch),
        )
        .route(
            "/switchyard/v1/ports/{id}/device",
            axum::routing::any(routes::dispatch),
        )
        .fallback(|uri: axum::http::Uri| async move {
            http::error(&switchyard_model::NeutronError::not_found(
                "HTTPNotFound",
                format!("{} is not served here (southbound only).", uri.path()),
            ))
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// Serves [`southbound_router`] until `shutdown` resolves. The server that
/// runs the API ([`serve_with_options`]) runs the controller's clock; this
/// one only serves.
pub async fn serve_southbound(
    listener: TcpListener,
    app: App,
    opts: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    opts.check()?;
    let service = server::with_limits(southbound_router(app), &opts);
    server::run(listener, service, opts, shutdown).await?;
    Ok(())
}

/// How often the server looks at what time passing changed (agents that
/// went dead or came back: gateway failover).
pub const TICK: std::time::Duration = std::time::Duration::from_secs(1);

async fn tick_loop(shared: Shared) {
    let mut closing = shared.closing.subscribe();
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {
                let s = shared.clone();
                if tokio::task::spawn_blocking(move || s.tick()).await.is_err() {
                    tracing::error!("the liveness tick panicked");
                }
            }
            _ = closing.changed() => return,
        }
    }
}
