//! The token check in front of the service APIs, as keystonemiddleware's
//! `auth_token` does it for Neutron and Nova: identity headers a client sent
//! are removed (they would otherwise be trusted), `X-Auth-Token` is
//! validated, and the request goes on with `X-Project-Id`, `X-Project-Name`,
//! `X-User-Id`, `X-User-Name`, `X-Roles` and `X-Identity-Status: Confirmed`
//! set from the token — or is answered `401` with keystonemiddleware's body
//! and a `WWW-Authenticate` header naming the identity endpoint. A token not
//! scoped to a project is refused here: every service call is a project's.

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use std::sync::Arc;

use super::{Identity, IdentityError};
use crate::remote::RemoteValidator;

/// Headers only this check may set.
const IDENTITY_HEADERS: [&str; 10] = [
    "x-project-id",
    "x-tenant-id",
    "x-project-name",
    "x-tenant-name",
    "x-user-id",
    "x-user-name",
    "x-roles",
    "x-service-roles",
    "x-identity-status",
    "x-domain-id",
];

/// The console's files (`switchyard_api::console`), by name: nothing else
/// under `/console/` is exempt.
const CONSOLE_ASSETS: [&str; 5] = [
    "/console",
    "/console/app.js",
    "/console/topology.js",
    "/console/style.css",
    "/console/vendor/cytoscape.esm.min.js",
];

/// When the token a request was let in with expires: a response that
/// lasts (an event stream) ends then, as the token's holder would be
/// refused a new request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenExpiry(pub chrono::DateTime<chrono::Utc>);

/// Paths served without a token: version discovery, identity itself, the
/// console's static files (the page then signs in like any client), and
/// what node agents call with their own credentials.
fn exempt(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    p.is_empty()
        || p == "/compute"
        || p == "/identity"
        || CONSOLE_ASSETS.contains(&p)
        || p.starts_with("/identity/")
        || p == "/switchyard/v1/southbound"
        || p == "/switchyard/v1/agents/report"
        || (p.starts_with("/switchyard/v1/ports/") && p.ends_with("/device"))
}

/// Who a valid token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub user_name: String,
    pub project_id: String,
    pub project_name: String,
    /// Effective roles (implied ones included), by name.
    pub roles: Vec<String>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Where tokens are checked: the embedded identity's database, or an
/// external Keystone ([`RemoteValidator`]).
#[derive(Clone)]
pub enum Validator {
    Embedded(Identity),
    Keystone(Arc<RemoteValidator>),
}

impl Validator {
    /// The identity endpoint a refused client is pointed at.
    fn www_authenticate_uri(&self) -> String {
        match self {
            Validator::Embedded(id) => format!("{}/identity", id.public_url()),
            Validator::Keystone(k) => k.www_authenticate_uri.clone(),
        }
    }

    /// The caller `token` names (`Ok(None)`: none, the token is not valid
    /// or not scoped to a project; `Err`: the identity service cannot say).
    async fn caller(&self, token: String) -> Result<Option<Caller>, ()> {
        match self {
            Validator::Embedded(id) => {
                let id = id.clone();
                let checked =
                    tokio::task::spawn_blocking(move || id.validate(&token, chrono::Utc::now()))
                        .await;
                let Ok(Ok(info)) = checked else {
                    return Ok(None);
                };
                let Some(project) = info.project else {
                    return Ok(None);
                };
                Ok(Some(Caller {
                    user_id: info.user.id,
                    user_name: info.user.name,
                    project_id: project.id,
                    project_name: project.name,
                    roles: info.roles.into_iter().map(|r| r.name).collect(),
                    expires_at: info.expires_at,
                }))
            }
            Validator::Keystone(k) => k.validate(&token).await.map_err(|_| ()),
        }
    }
}

/// `401` with keystonemiddleware's body and `WWW-Authenticate`.
pub fn unauthorized(www_authenticate_uri: &str) -> Response {
    let e = IdentityError::Unauthorized;
    let mut r = (axum::http::StatusCode::UNAUTHORIZED, axum::Json(e.body())).into_response();
    let uri = format!("Keystone uri=\"{www_authenticate_uri}\"");
    if let Ok(v) = HeaderValue::from_str(&uri) {
        r.headers_mut().insert("www-authenticate", v);
    }
    r
}

/// `503`, as keystonemiddleware answers when it cannot reach Keystone.
fn unavailable() -> Response {
    let body = serde_json::json!({"error": {"code": 503, "title": "Service Unavailable",
        "message": "The identity service is unavailable; the request's token cannot be checked. Please try again later."}});
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(body),
    )
        .into_response()
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn guard(State(v): State<Validator>, mut req: Request, next: Next) -> Response {
    for h in IDENTITY_HEADERS {
        req.headers_mut().remove(h);
    }
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let Some(token) = req
        .headers()
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return unauthorized(&v.www_authenticate_uri());
    };
    let c = match v.caller(token).await {
        Ok(Some(c)) => c,
        Ok(None) => return unauthorized(&v.www_authenticate_uri()),
        Err(()) => return unavailable(),
    };
    let set = [
        ("x-project-id", c.project_id.as_str()),
        ("x-tenant-id", c.project_id.as_str()),
        ("x-project-name", c.project_name.as_str()),
        ("x-user-id", c.user_id.as_str()),
        ("x-user-name", c.user_name.as_str()),
        ("x-roles", &c.roles.join(",")),
        ("x-identity-status", "Confirmed"),
    ];
    for (k, v) in set {
        if let Ok(v) = HeaderValue::from_str(v) {
            req.headers_mut().insert(HeaderName::from_static(k), v);
        }
    }
    req.extensions_mut().insert(TokenExpiry(c.expires_at));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::exempt;

    #[test]
    fn only_discovery_identity_console_files_and_node_paths_are_exempt() {
        for p in [
            "/",
            "",
            "/compute/",
            "/identity",
            "/identity/v3/auth/tokens",
            "/switchyard/v1/southbound",
            "/switchyard/v1/agents/report",
            "/switchyard/v1/ports/abc/device",
            "/console",
            "/console/",
            "/console/app.js",
            "/console/style.css",
        ] {
            assert!(exempt(p), "{p}");
        }
        for p in [
            "/v2.0",
            "/v2.0/networks",
            "/compute/v2.1/servers",
            "/switchyard/v1/nodes",
            "/switchyard/v1/lab/guests",
            "/identityx",
            "/switchyard/v1/ports/abc",
            "/switchyard/v1/events",
            "/console/../v2.0/networks",
            "/console/%2e%2e/v2.0/networks",
            "/console/other.js",
            "/consolex",
        ] {
            assert!(!exempt(p), "{p}");
        }
    }
}
