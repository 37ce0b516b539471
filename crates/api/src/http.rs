//! HTTP plumbing shared by the handlers: the request context from noauth
//! headers, JSON body parsing with Neutron's messages, `If-Match` parsing, and
//! responses in Neutron's shape.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use switchyard_model::{NeutronError, Result};

/// What the caller is, under `noauth`.
#[derive(Debug, Clone)]
pub struct Caller {
    pub project_id: String,
    pub is_admin: bool,
    /// Has the `service` role (Nova's service user): binds ports to hosts
    /// and reads bindings, on any project's ports.
    pub is_service: bool,
    /// May change things: admin, or a `member` (or `service`) of its
    /// project; a caller with only `reader` reads (Neutron's defaults).
    pub can_write: bool,
}

/// noauth: the project comes from `X-Project-Id` (or the older `X-Tenant-Id`);
/// the caller is admin unless `X-Roles` is sent without `admin` in it.
pub fn caller(headers: &HeaderMap, default_project: &str) -> Result<Caller> {
    let get = |name: &str| -> Result<Option<String>> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v.to_str().map(|s| Some(s.trim().to_string())).map_err(|_| {
                NeutronError::http_bad_request(format!("Header {name} is not valid text"))
            }),
        }
    };
    let project_id = match get("x-project-id")?.or(get("x-tenant-id")?) {
        Some(p) if !p.is_empty() => {
            if p.len() > 255 {
                return Err(NeutronError::http_bad_request(
                    "X-Project-Id is longer than 255 characters",
                ));
            }
            p
        }
        _ => default_project.to_string(),
    };
    let roles: Option<Vec<String>> = get("x-roles")?.map(|r| {
        r.split(',')
            .map(|x| x.trim().to_ascii_lowercase())
            .filter(|x| !x.is_empty())
            .collect()
    });
    let has = |name: &str| roles.as_ref().is_none_or(|r| r.iter().any(|x| x == name));
    let is_admin = has("admin");
    let is_service = roles
        .as_ref()
        .is_some_and(|r| r.iter().any(|x| x == "service"));
    // Without X-Roles (noauth's admin) everything is allowed; with it,
    // writing needs more than `reader`. Roles other than Keystone's
    // defaults (an operator's own) count as a member's.
    let can_write = roles
        .as_ref()
        .is_none_or(|r| r.iter().any(|x| x != "reader"));
    Ok(Caller {
        project_id,
        is_admin,
        is_service,
        can_write,
    })
}

/// The body of a POST/PUT: a JSON object.
pub fn json_body(bytes: &Bytes) -> Result<Map<String, Value>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(NeutronError::http_bad_request("Body contains invalid data")),
    }
}

/// The single resource object under `key`.
pub fn resource_body<'a>(
    body: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a Map<String, Value>> {
    match body.get(key) {
        None => Err(NeutronError::http_bad_request(format!(
            "Unable to find '{key}' in request body"
        ))),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(NeutronError::http_bad_request(format!(
            "Object '{key}' contains invalid data"
        ))),
    }
}

/// `If-Match: revision_number=N` (other etags are ignored, as in Neutron).
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>> {
    let mut found: Vec<&str> = Vec::new();
    for v in headers.get_all("if-match") {
        let s = v.to_str().map_err(|_| {
            NeutronError::bad_request(
                "BadRequest",
                "Bad if-match request: If-Match is not valid text.",
            )
        })?;
        for tag in s.split(',') {
            let tag = tag.trim().trim_start_matches("W/").trim_matches('"');
            if let Some(n) = tag.strip_prefix("revision_number=") {
                found.push(n);
            }
        }
    }
    match found.as_slice() {
        [] => Ok(None),
        [one] => one.parse::<u64>().map(Some).map_err(|_| {
            NeutronError::bad_request(
                "BadRequest",
                "Bad if-match request: Revision number etag must be in the format of revision_number=<int>.",
            )
        }),
        _ => Err(NeutronError::bad_request(
            "BadRequest",
            "Bad if-match request: Multiple revision_number etags are not supported.",
        )),
    }
}

pub fn check_revision(expected: Option<u64>, current: u64) -> Result<()> {
    match expected {
        Some(e) if e != current => Err(NeutronError::new(
            412,
            "RevisionNumberConstraintFailed",
            format!("Constrained to {e}, but current revision is {current}"),
        )),
        _ => Ok(()),
    }
}

fn with_request_id(mut r: Response) -> Response {
    let id = format!("req-{}", uuid::Uuid::new_v4());
    if let Ok(v) = HeaderValue::from_str(&id) {
        r.headers_mut().insert("x-openstack-request-id", v);
    }
    r
}

pub fn json(status: u16, v: Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    with_request_id((code, axum::Json(v)).into_response())
}

/// A JSON body already serialized (lists written without a JSON value).
pub fn json_bytes(status: u16, body: Vec<u8>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let headers = [(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    )];
    with_request_id((code, headers, body).into_response())
}

pub fn empty(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::NO_CONTENT);
    with_request_id(code.into_response())
}

pub fn error(e: &NeutronError) -> Response {
    if e.status >= 500 {
        tracing::warn!(status = e.status, kind = %e.kind, message = %e.message, "request failed");
    }
    json(e.status, e.body())
}

/// Whether the caller is an admin: no `X-Roles` (noauth), or `admin` among
/// them (the embedded identity sets them from the token).
pub fn is_admin(headers: &HeaderMap) -> bool {
    headers
        .get("x-roles")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|r| r.split(',').any(|x| x.trim().eq_ignore_ascii_case("admin")))
}

/// Only admins pass (the lab API, the controller's own views): a caller
/// whose `X-Roles` lacks `admin` (under the embedded identity, every
/// non-admin token) gets Neutron's `403`. Without `X-Roles` (noauth) the
/// caller is admin.
pub async fn admin_only(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if is_admin(req.headers()) {
        next.run(req).await
    } else {
        error(&NeutronError::new(
            403,
            "PolicyNotAuthorized",
            "This is an administrator's API.",
        ))
    }
}

pub fn method_not_allowed() -> Response {
    error(&NeutronError::new(
        405,
        "HTTPMethodNotAllowed",
        "The server could not comply with the request since it is either malformed or otherwise incorrect.",
    ))
}
