//! The Keystone v3 subset under `/identity` (shapes and errors as
//! Keystone's):
//!
//! * `GET /identity` (versions, `300`), `GET /identity/v3`;
//! * `POST /identity/v3/auth/tokens` (methods `password` — user by id, or by
//!   name with domain `default`/`Default` — and `token`; scope: a project
//!   by id, or by name with its domain; none: the user's default project),
//!   `201` with `X-Subject-Token`, `?nocatalog`; `GET`/`HEAD` (validate
//!   `X-Subject-Token`: admin, service, or the token's own user) and `DELETE`
//!   (revoke);
//! * `GET /identity/v3/auth/projects`, `/auth/catalog`;
//! * `GET|POST /identity/v3/projects` (admin; `?name=`), `GET …/{id}`
//!   (admin or a member); `GET|POST /identity/v3/users` (admin), `GET
//!   …/{id}` and `…/{id}/projects` (admin or the user); `GET
//!   /identity/v3/roles`; `GET /identity/v3/role_assignments` (admin);
//!   `PUT /identity/v3/projects/{p}/users/{u}/roles/{r}` (admin).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{DEFAULT_DOMAIN, Identity, IdentityError, Project, Result, Role, TokenInfo, User};

/// Largest request body the identity API reads.
const MAX_BODY: usize = 64 << 10;

pub fn router(identity: Identity) -> Router {
    Router::new()
        .route("/identity", axum::routing::any(handle))
        .route("/identity/", axum::routing::any(handle))
        .route("/identity/{*rest}", axum::routing::any(handle))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(identity)
}

fn iso(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn reply(status: u16, v: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        axum::Json(v),
    )
        .into_response()
}

fn error(e: &IdentityError, identity: &Identity) -> Response {
    if matches!(e, IdentityError::Unauthorized) {
        return super::guard::unauthorized(&format!("{}/identity", identity.public_url()));
    }
    if let IdentityError::Store(s) = e {
        tracing::error!(error = %s, "identity database");
    }
    reply(e.status(), e.body())
}

fn domain() -> Value {
    json!({"id": DEFAULT_DOMAIN, "name": "Default"})
}

fn v3_doc(base: &str) -> Value {
    json!({
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{base}/identity/v3/")}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    })
}

fn project_json(base: &str, p: &Project) -> Value {
    json!({
        "id": p.id, "name": p.name, "description": p.description, "enabled": p.enabled,
        "domain_id": DEFAULT_DOMAIN, "parent_id": DEFAULT_DOMAIN, "is_domain": false,
        "tags": [], "options": {},
        "links": {"self": format!("{base}/identity/v3/projects/{}", p.id)},
    })
}

fn user_json(base: &str, u: &User) -> Value {
    json!({
        "id": u.id, "name": u.name, "enabled": u.enabled, "domain_id": DEFAULT_DOMAIN,
        "default_project_id": u.default_project_id, "password_expires_at": null, "options": {},
        "links": {"self": format!("{base}/identity/v3/users/{}", u.id)},
    })
}

fn role_json(base: &str, r: &Role) -> Value {
    json!({"id": r.id, "name": r.name, "domain_id": null, "description": null, "options": {},
           "links": {"self": format!("{base}/identity/v3/roles/{}", r.id)}})
}

fn stable_id(s: &str) -> String {
    super::sha256_hex(s)[..32].to_string()
}

fn catalog(identity: &Identity) -> Value {
    let (base, entries) = identity.catalog();
    let mut out = vec![("identity", "keystone", format!("{base}/identity"))];
    out.extend(
        entries
            .into_iter()
            .map(|(t, n, path)| (t, n, format!("{base}{path}"))),
    );
    Value::Array(
        out.into_iter()
            .map(|(t, n, url)| {
                let endpoints: Vec<Value> = ["public", "internal", "admin"]
                    .iter()
                    .map(|i| {
                        json!({"id": stable_id(&format!("{t}/{i}")), "interface": i,
                               "region": "RegionOne", "region_id": "RegionOne", "url": url})
                    })
                    .collect();
                json!({"id": stable_id(t), "type": t, "name": n, "endpoints": endpoints})
            })
            .collect(),
    )
}

fn token_json(identity: &Identity, t: &TokenInfo, with_catalog: bool) -> Value {
    let mut body = json!({
        "methods": t.methods,
        "user": {"id": t.user.id, "name": t.user.name, "domain": domain(), "password_expires_at": null},
        "audit_ids": [t.audit_id],
        "expires_at": iso(t.expires_at),
        "issued_at": iso(t.issued_at),
    });
    if let Some(p) = &t.project {
        body["project"] = json!({"id": p.id, "name": p.name, "domain": domain()});
        body["is_domain"] = json!(false);
        body["roles"] = Value::Array(
            t.roles
                .iter()
                .map(|r| json!({"id": r.id, "name": r.name}))
                .collect(),
        );
        if with_catalog {
            body["catalog"] = catalog(identity);
        }
    }
    json!({ "token": body })
}

fn bad(msg: impl Into<String>) -> IdentityError {
    IdentityError::BadRequest(msg.into())
}

fn obj<'a>(v: Option<&'a Value>, what: &str) -> Result<&'a Map<String, Value>> {
    v.and_then(Value::as_object).ok_or_else(|| {
        bad(format!(
            "Invalid input for field '{what}': expected an object"
        ))
    })
}

fn text<'a>(m: &'a Map<String, Value>, key: &str, what: &str) -> Result<Option<&'a str>> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => Ok(Some(s)),
        Some(_) => Err(bad(format!(
            "Invalid input for field '{what}.{key}': expected a string of 1 to 255 characters"
        ))),
    }
}

/// A domain reference must name the only domain.
fn check_domain(m: &Map<String, Value>, what: &str) -> Result<()> {
    match m.get("domain") {
        None => Ok(()),
        Some(d) => {
            let d = obj(Some(d), &format!("{what}.domain"))?;
            let ok = text(d, "id", "domain")?.is_some_and(|i| i == DEFAULT_DOMAIN)
                || text(d, "name", "domain")?.is_some_and(|n| n.eq_ignore_ascii_case("default"));
            if ok {
                Ok(())
            } else {
                Err(IdentityError::Unauthorized)
            }
        }
    }
}

/// `POST /v3/auth/tokens`.
fn issue(identity: &Identity, body: &Bytes) -> Result<(String, TokenInfo)> {
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("Malformed request body"))?;
    let auth = obj(v.get("auth"), "auth")?;
    let ident = obj(auth.get("identity"), "auth.identity")?;
    let methods: Vec<&str> = ident
        .get("methods")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let scope = match auth.get("scope") {
        None => None,
        Some(s) => {
            let s = obj(Some(s), "auth.scope")?;
            let Some(p) = s.get("project") else {
                return Err(bad(
                    "Only project scope is supported (no domain or system scope)",
                ));
            };
            let p = obj(Some(p), "auth.scope.project")?;
            let project = if let Some(id) = text(p, "id", "project")? {
                identity.project(id)?
            } else if let Some(name) = text(p, "name", "project")? {
                if p.get("domain").is_none() {
                    return Err(bad(
                        "Invalid input for field 'auth.scope.project': a project name needs its domain",
                    ));
                }
                check_domain(p, "project")?;
                identity.project_by_name(name)?
            } else {
                return Err(bad(
                    "Invalid input for field 'auth.scope.project': id or name",
                ));
            };
            Some(project.ok_or(IdentityError::Unauthorized)?.id)
        }
    };
    let now = chrono::Utc::now();
    match methods.as_slice() {
        ["password"] => {
            let pw = obj(ident.get("password"), "password")?;
            let u = obj(pw.get("user"), "password.user")?;
            let password = match u.get("password") {
                Some(Value::String(s)) if s.len() <= 4096 => s,
                _ => return Err(bad("Invalid input for field 'password.user.password'")),
            };
            let user = if let Some(id) = text(u, "id", "user")? {
                identity.user(id)?
            } else if let Some(name) = text(u, "name", "user")? {
                if u.get("domain").is_none() {
                    return Err(bad(
                        "Invalid input for field 'password.user': a user name needs its domain",
                    ));
                }
                check_domain(u, "user")?;
                identity.user_by_name(name)?
            } else {
                return Err(bad("Invalid input for field 'password.user': id or name"));
            };
            let user = user.ok_or(IdentityError::Unauthorized)?;
            identity.authenticate_password(&user, password, scope.as_deref(), now)
        }
        ["token"] => {
            let t = obj(ident.get("token"), "token")?;
            let id =
                text(t, "id", "token")?.ok_or_else(|| bad("Invalid input for field 'token.id'"))?;
            identity.authenticate_token(id, scope.as_deref(), now)
        }
        [] => Err(bad("Invalid input for field 'identity.methods'")),
        _ => Err(IdentityError::Unauthorized),
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn query(uri: &Uri, key: &str) -> Option<String> {
    uri.query().and_then(|q| {
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then(|| v.to_string())
        })
    })
}

fn forbidden(action: &str) -> IdentityError {
    IdentityError::Forbidden(format!("identity:{action}"))
}

async fn handle(
    State(identity): State<Identity>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = identity.clone();
    let r = tokio::task::spawn_blocking(move || route(&id, &method, &uri, &headers, &body)).await;
    match r {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => error(&e, &identity),
        Err(_) => error(
            &IdentityError::BadRequest("the request could not be handled".into()),
            &identity,
        ),
    }
}

fn route(
    identity: &Identity,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response> {
    let base = identity.public_url();
    let segs: Vec<&str> = uri
        .path()
        .trim_start_matches("/identity")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let now = chrono::Utc::now();
    // The caller, for everything but discovery and issuing tokens.
    let caller = || -> Result<TokenInfo> {
        let t = header(headers, "x-auth-token").ok_or(IdentityError::Unauthorized)?;
        identity.validate(&t, now)
    };
    let admin = || -> Result<TokenInfo> {
        let c = caller()?;
        if c.is_admin() {
            Ok(c)
        } else {
            Err(IdentityError::Unauthorized)
        }
    };
    let m = method.clone();
    match (m, segs.as_slice()) {
        (Method::GET, []) => Ok(reply(300, json!({"versions": {"values": [v3_doc(&base)]}}))),
        (Method::GET, ["v3"]) => Ok(reply(200, json!({"version": v3_doc(&base)}))),
        (Method::POST, ["v3", "auth", "tokens"]) => {
            let (token, info) = issue(identity, body)?;
            let with_catalog = query(uri, "nocatalog").is_none();
            let mut r = reply(201, token_json(identity, &info, with_catalog));
            if let Ok(v) = axum::http::HeaderValue::from_str(&token) {
                r.headers_mut().insert("x-subject-token", v);
            }
            Ok(r)
        }
        (m @ (Method::GET | Method::HEAD | Method::DELETE), ["v3", "auth", "tokens"]) => {
            let c = caller()?;
            let subject = header(headers, "x-subject-token")
                .ok_or_else(|| bad("X-Subject-Token is required"))?;
            let not_found = || IdentityError::NotFound(format!("Could not find token: {subject}."));
            let s = identity.validate(&subject, now).map_err(|_| not_found())?;
            if !(c.is_admin() || c.has_role("service") || c.user.id == s.user.id) {
                return Err(forbidden("validate_token"));
            }
            match m {
                Method::DELETE => {
                    identity.revoke(&subject)?;
                    Ok(StatusCode::NO_CONTENT.into_response())
                }
                Method::HEAD => Ok(StatusCode::OK.into_response()),
                _ => {
                    let with_catalog = query(uri, "nocatalog").is_none();
                    let mut r = reply(200, token_json(identity, &s, with_catalog));
                    if let Ok(v) = axum::http::HeaderValue::from_str(&subject) {
                        r.headers_mut().insert("x-subject-token", v);
                    }
                    Ok(r)
                }
            }
        }
        (Method::GET, ["v3", "auth", "projects"]) => {
            let c = caller()?;
            let ps: Vec<Value> = identity
                .user_projects(&c.user.id)?
                .iter()
                .map(|p| project_json(&base, p))
                .collect();
            Ok(reply(
                200,
                json!({"projects": ps, "links": {"self": format!("{base}/identity/v3/auth/projects"), "next": null, "previous": null}}),
            ))
        }
        (Method::GET, ["v3", "auth", "catalog"]) => {
            caller()?;
            Ok(reply(200, json!({"catalog": catalog(identity)})))
        }
        (Method::GET, ["v3", "projects"]) => {
            let c = caller()?;
            if !c.is_admin() {
                return Err(forbidden("list_projects"));
            }
            let name = query(uri, "name");
            let ps: Vec<Value> = identity
                .projects()?
                .iter()
                .filter(|p| name.as_deref().is_none_or(|n| n == p.name))
                .map(|p| project_json(&base, p))
                .collect();
            Ok(reply(
                200,
                json!({"projects": ps, "links": {"self": format!("{base}/identity/v3/projects"), "next": null, "previous": null}}),
            ))
        }
        (Method::POST, ["v3", "projects"]) => {
            if !caller()?.is_admin() {
                return Err(forbidden("create_project"));
            }
            let v: Value =
                serde_json::from_slice(body).map_err(|_| bad("Malformed request body"))?;
            let p = obj(v.get("project"), "project")?;
            let name =
                text(p, "name", "project")?.ok_or_else(|| bad("'name' is a required property"))?;
            check_domain_id(p)?;
            let description = text(p, "description", "project")?.unwrap_or_default();
            let made = identity.create_project(name, description)?;
            Ok(reply(201, json!({"project": project_json(&base, &made)})))
        }
        (Method::GET, ["v3", "projects", pid]) => {
            let c = caller()?;
            let p = identity.project(pid)?.ok_or_else(|| {
                IdentityError::NotFound(format!("Could not find project: {pid}."))
            })?;
            let member = identity
                .user_projects(&c.user.id)?
                .iter()
                .any(|x| x.id == p.id);
            if !(c.is_admin() || member) {
                return Err(forbidden("get_project"));
            }
            Ok(reply(200, json!({"project": project_json(&base, &p)})))
        }
        (Method::PUT, ["v3", "projects", pid, "users", uid, "roles", rid]) => {
            if !caller()?.is_admin() {
                return Err(forbidden("create_grant"));
            }
            identity.assign(uid, pid, rid)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Method::GET, ["v3", "users"]) => {
            if !caller()?.is_admin() {
                return Err(forbidden("list_users"));
            }
            let name = query(uri, "name");
            let all: Vec<Value> = identity
                .users()?
                .iter()
                .filter(|u| name.as_deref().is_none_or(|n| n == u.name))
                .map(|u| user_json(&base, u))
                .collect();
            Ok(reply(
                200,
                json!({"users": all, "links": {"self": format!("{base}/identity/v3/users"), "next": null, "previous": null}}),
            ))
        }
        (Method::POST, ["v3", "users"]) => {
            if !caller()?.is_admin() {
                return Err(forbidden("create_user"));
            }
            let v: Value =
                serde_json::from_slice(body).map_err(|_| bad("Malformed request body"))?;
            let u = obj(v.get("user"), "user")?;
            let name =
                text(u, "name", "user")?.ok_or_else(|| bad("'name' is a required property"))?;
            check_domain_id(u)?;
            let password = match u.get("password") {
                Some(Value::String(s)) if !s.is_empty() && s.len() <= 4096 => s.as_str(),
                _ => return Err(bad("Invalid input for field 'user.password'")),
            };
            let dp = text(u, "default_project_id", "user")?;
            if let Some(p) = dp
                && identity.project(p)?.is_none()
            {
                return Err(IdentityError::NotFound(format!(
                    "Could not find project: {p}."
                )));
            }
            let made = identity.create_user(name, password, dp)?;
            Ok(reply(201, json!({"user": user_json(&base, &made)})))
        }
        (Method::GET, ["v3", "users", uid]) => {
            let c = caller()?;
            if !(c.is_admin() || c.user.id == *uid) {
                return Err(forbidden("get_user"));
            }
            let u = identity
                .user(uid)?
                .ok_or_else(|| IdentityError::NotFound(format!("Could not find user: {uid}.")))?;
            Ok(reply(200, json!({"user": user_json(&base, &u)})))
        }
        (Method::GET, ["v3", "users", uid, "projects"]) => {
            let c = caller()?;
            if !(c.is_admin() || c.user.id == *uid) {
                return Err(forbidden("list_user_projects"));
            }
            let ps: Vec<Value> = identity
                .user_projects(uid)?
                .iter()
                .map(|p| project_json(&base, p))
                .collect();
            Ok(reply(
                200,
                json!({"projects": ps, "links": {"self": format!("{base}/identity/v3/users/{uid}/projects"), "next": null, "previous": null}}),
            ))
        }
        (Method::GET, ["v3", "roles"]) => {
            caller()?;
            let rs: Vec<Value> = identity
                .roles()?
                .iter()
                .map(|r| role_json(&base, r))
                .collect();
            Ok(reply(
                200,
                json!({"roles": rs, "links": {"self": format!("{base}/identity/v3/roles"), "next": null, "previous": null}}),
            ))
        }
        (Method::GET, ["v3", "role_assignments"]) => {
            admin().map_err(|_| forbidden("list_role_assignments"))?;
            let user = query(uri, "user.id");
            let project = query(uri, "scope.project.id");
            let v: Vec<Value> = identity
                .assignments()?
                .into_iter()
                .filter(|(u, p, _)| {
                    user.as_deref().is_none_or(|x| x == u) && project.as_deref().is_none_or(|x| x == p)
                })
                .map(|(u, p, r)| {
                    json!({"user": {"id": u}, "scope": {"project": {"id": p}}, "role": {"id": r.id, "name": r.name},
                           "links": {"assignment": format!("{base}/identity/v3/projects/{p}/users/{u}/roles/{}", r.id)}})
                })
                .collect();
            Ok(reply(
                200,
                json!({"role_assignments": v, "links": {"self": format!("{base}/identity/v3/role_assignments"), "next": null, "previous": null}}),
            ))
        }
        (_, ["v3", "auth", "tokens"] | ["v3", "projects"] | ["v3", "users"]) => {
            Err(IdentityError::MethodNotAllowed)
        }
        _ => Err(IdentityError::NotFound(
            "The resource could not be found.".into(),
        )),
    }
}

/// A new project or user belongs to the only domain.
fn check_domain_id(m: &Map<String, Value>) -> Result<()> {
    match m.get("domain_id") {
        None => Ok(()),
        Some(Value::String(d)) if d == DEFAULT_DOMAIN => Ok(()),
        Some(_) => Err(bad("Only the domain 'default' exists")),
    }
}
