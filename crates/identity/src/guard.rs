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

use super::{Identity, IdentityError};

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

/// Paths served without a token: version discovery, identity itself, and
/// what node agents call with their own credentials.
fn exempt(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    p.is_empty()
        || p == "/compute"
        || p == "/identity"
        || p.starts_with("/identity/")
        || p == "/switchyard/v1/southbound"
        || p == "/switchyard/v1/agents/report"
        || (p.starts_with("/switchyard/v1/ports/") && p.ends_with("/device"))
}

pub fn unauthorized(identity: &Identity) -> Response {
    let e = IdentityError::Unauthorized;
    let mut r = (axum::http::StatusCode::UNAUTHORIZED, axum::Json(e.body())).into_response();
    let uri = format!("Keystone uri=\"{}/identity\"", identity.public_url());
    if let Ok(v) = HeaderValue::from_str(&uri) {
        r.headers_mut().insert("www-authenticate", v);
    }
    r
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn guard(State(identity): State<Identity>, mut req: Request, next: Next) -> Response {
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
        return unauthorized(&identity);
    };
    let id = identity.clone();
    let checked =
        tokio::task::spawn_blocking(move || id.validate(&token, chrono::Utc::now())).await;
    let Ok(Ok(info)) = checked else {
        return unauthorized(&identity);
    };
    let Some(project) = info.project.clone() else {
        return unauthorized(&identity);
    };
    let roles: Vec<&str> = info.roles.iter().map(|r| r.name.as_str()).collect();
    let set = [
        ("x-project-id", project.id.as_str()),
        ("x-tenant-id", project.id.as_str()),
        ("x-project-name", project.name.as_str()),
        ("x-user-id", info.user.id.as_str()),
        ("x-user-name", info.user.name.as_str()),
        ("x-roles", &roles.join(",")),
        ("x-identity-status", "Confirmed"),
    ];
    for (k, v) in set {
        if let Ok(v) = HeaderValue::from_str(v) {
            req.headers_mut().insert(HeaderName::from_static(k), v);
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::exempt;

    #[test]
    fn only_discovery_identity_and_node_paths_are_exempt() {
        for p in [
            "/",
            "",
            "/compute/",
            "/identity",
            "/identity/v3/auth/tokens",
            "/switchyard/v1/southbound",
            "/switchyard/v1/agents/report",
            "/switchyard/v1/ports/abc/device",
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
        ] {
            assert!(!exempt(p), "{p}");
        }
    }
}
