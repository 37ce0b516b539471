//! Neutron's quotas (`quotas`, `quota_details`): per-project limits on
//! networks, subnets, ports, routers, floating IPs, security groups and
//! their rules, with the defaults of
//! the config file's `[quotas]` (Neutron's), an admin's overrides stored
//! like any record, and enforcement on every create through the API (a bulk
//! create counts all it makes): a project over its limit gets Neutron's
//! `409 OverQuota` and nothing is made. What the system makes for a project
//! (a router's interface port, a floating IP's port) is counted but not
//! refused, as in Neutron, whose quota check sits in the API layer.
//!
//! * `GET /v2.0/quotas` (admin): projects with overrides, every limit;
//! * `GET /v2.0/quotas/{project}` (admin or that project), `…/default`,
//!   `…/details` (`limit`, `used`, `reserved`);
//! * `PUT /v2.0/quotas/{project}` `{"quota": {resource: limit}}` (admin);
//! * `DELETE /v2.0/quotas/{project}` (admin): back to the defaults;
//! * `GET /v2.0/quotas/tenant`: the caller's project.

use axum::http::Method;
use axum::response::Response;
use serde_json::{Map, Value, json};
use switchyard_ml2::{Ctx, Ml2};
use switchyard_model::{Kind, NeutronError, QuotaSet, Record, Result, State, attrs};

use crate::App;
use crate::http;
use crate::routes::Req;

/// The resources a quota limits, by their quota names.
pub const COUNTED: [Kind; 7] = [
    Kind::FloatingIp,
    Kind::Network,
    Kind::Port,
    Kind::Router,
    Kind::SecurityGroup,
    Kind::SecurityGroupRule,
    Kind::Subnet,
];

/// Neutron's largest quota value (its database's integer).
const MAX_LIMIT: i64 = i32::MAX as i64;

fn denied(rule: &str) -> NeutronError {
    NeutronError::new(
        403,
        "PolicyNotAuthorized",
        format!("rule:{rule} is disallowed by policy"),
    )
}

/// `project`'s limit on `kind` (-1: unlimited).
pub fn limit(ml2: &Ml2, st: &State, kind: Kind, project: &str) -> i64 {
    let name = kind.as_str();
    st.quotas
        .get(project)
        .and_then(|q| q.limits.get(name))
        .or_else(|| ml2.settings.quota_defaults.get(name))
        .copied()
        .unwrap_or(-1)
}

/// After a create through the API made `ids` of `kind`: every project they
/// belong to is still within its limit, else Neutron's `OverQuota` (the
/// transaction is rolled back by the caller).
pub fn check_created(ml2: &Ml2, st: &State, kind: Kind, ids: &[String]) -> Result<()> {
    if !COUNTED.contains(&kind) {
        return Ok(());
    }
    let mut projects: Vec<String> = ids
        .iter()
        .filter_map(|id| st.get(kind, id))
        .filter_map(|r| State::owner(&r).map(str::to_string))
        .collect();
    projects.sort();
    projects.dedup();
    // A new security group comes with its egress rules: they count too
    // (Neutron's `quota_limit_check(security_group_rule=N)`).
    let also: &[Kind] = if kind == Kind::SecurityGroup {
        &[Kind::SecurityGroupRule]
    } else {
        &[]
    };
    for p in projects {
        for k in std::iter::once(kind).chain(also.iter().copied()) {
            let l = limit(ml2, st, k, &p);
            if l >= 0 && st.usage(k, &p) as i64 > l {
                return Err(NeutronError::conflict(
                    "OverQuota",
                    format!("Quota exceeded for resources: ['{}'].", k.as_str()),
                ));
            }
        }
    }
    Ok(())
}

fn limits(ml2: &Ml2, st: &State, project: &str) -> Map<String, Value> {
    COUNTED
        .iter()
        .map(|k| (k.as_str().to_string(), json!(limit(ml2, st, *k, project))))
        .collect()
}

fn details(ml2: &Ml2, st: &State, project: &str) -> Map<String, Value> {
    COUNTED
        .iter()
        .map(|k| {
            (
                k.as_str().to_string(),
                json!({
                    "limit": limit(ml2, st, *k, project),
                    "used": st.usage(*k, project),
                    "reserved": 0,
                }),
            )
        })
        .collect()
}

/// A limit from a request: an integer (or its decimal text, as Neutron's
/// `convert_to_int` takes) from -1 up.
fn parse_limit(name: &str, v: &Value) -> Result<i64> {
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
    .ok_or_else(|| attrs::invalid(name, format!("'{}' is not an integer", attrs::show(v))))?;
    if n < -1 {
        return Err(attrs::invalid(
            name,
            format!("'{n}' is too small - must be at least '-1'"),
        ));
    }
    if n > MAX_LIMIT {
        return Err(attrs::invalid(
            name,
            format!("'{n}' is too large - must be no more than '{MAX_LIMIT}'"),
        ));
    }
    Ok(n)
}

/// `force` and `check_limit` (`quota-check-limit`): with `check_limit`
/// true, a limit below what the project already uses is refused (`409
/// InvalidQuotaValue`); `force` (or neither) sets it anyway, as Neutron does.
const UPDATE_FLAGS: [&str; 2] = ["check_limit", "force"];

fn update(ml2: &Ml2, st: &mut State, project: &str, body: &Map<String, Value>) -> Result<()> {
    let q = http::resource_body(body, "quota")?;
    if let Some(k) = q.keys().find(|k| {
        !COUNTED.iter().any(|c| c.as_str() == k.as_str()) && !UPDATE_FLAGS.contains(&k.as_str())
    }) {
        return Err(NeutronError::http_bad_request(format!(
            "Unrecognized attribute(s) '{k}'"
        )));
    }
    let flag = |k: &str| -> Result<bool> {
        match q.get(k) {
            None => Ok(false),
            Some(v) => attrs::to_bool(k, v),
        }
    };
    let check = flag("check_limit")? && !flag("force")?;
    let mut set = st.quotas.get(project).cloned().unwrap_or(QuotaSet {
        project_id: project.to_string(),
        limits: Default::default(),
    });
    let mut unders = Vec::new();
    for (k, v) in q
        .iter()
        .filter(|(k, _)| !UPDATE_FLAGS.contains(&k.as_str()))
    {
        let n = parse_limit(k, v)?;
        if check
            && n >= 0
            && let Some(kind) = COUNTED.iter().find(|c| c.as_str() == k.as_str())
            && (st.usage(*kind, project) as i64) > n
        {
            unders.push(format!("'{k}'"));
        }
        if ml2.settings.quota_defaults.get(k) == Some(&n) {
            set.limits.remove(k);
        } else {
            set.limits.insert(k.clone(), n);
        }
    }
    if !unders.is_empty() {
        unders.sort();
        return Err(NeutronError::conflict(
            "InvalidQuotaValue",
            format!(
                "Change would make usage less than 0 for the following resources: [{}].",
                unders.join(", ")
            ),
        ));
    }
    if set.limits.is_empty() {
        st.remove(Kind::Quota, project);
    } else {
        st.put(Record::Quota(set));
    }
    Ok(())
}

fn valid_project(p: &str) -> Result<()> {
    if p.is_empty() || p.len() > 255 {
        return Err(NeutronError::http_bad_request(
            "A project id is 1 to 255 characters",
        ));
    }
    Ok(())
}

/// `/v2.0/quotas…`.
pub(crate) fn route(app: &App, req: &Req, rest: &[&str]) -> Result<Response> {
    let ctx: Ctx = req.ctx(app);
    let m = &req.method;
    let may_see = |p: &str| ctx.is_admin || ctx.project_id == p;
    match rest {
        [] if m == Method::GET => {
            if !ctx.is_admin {
                return Err(denied("get_quota"));
            }
            let v = app.shared.read(|ml2, st| {
                Ok(st
                    .quotas
                    .keys()
                    .map(|p| {
                        let mut l = limits(ml2, st, p);
                        l.insert("project_id".into(), json!(p));
                        l.insert("tenant_id".into(), json!(p));
                        Value::Object(l)
                    })
                    .collect::<Vec<_>>())
            })?;
            Ok(http::json(200, json!({ "quotas": v })))
        }
        ["tenant"] if m == Method::GET => Ok(http::json(
            200,
            json!({"tenant": {"tenant_id": ctx.project_id}}),
        )),
        [p] if m == Method::GET => {
            valid_project(p)?;
            if !may_see(p) {
                return Err(denied("get_quota"));
            }
            let v = app.shared.read(|ml2, st| Ok(limits(ml2, st, p)))?;
            Ok(http::json(200, json!({ "quota": v })))
        }
        [p, "default"] if m == Method::GET => {
            valid_project(p)?;
            if !may_see(p) {
                return Err(denied("get_quota"));
            }
            let v: Map<String, Value> = app.shared.read(|ml2, _| {
                Ok(ml2
                    .settings
                    .quota_defaults
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect())
            })?;
            Ok(http::json(200, json!({ "quota": v })))
        }
        [p, "details"] if m == Method::GET => {
            valid_project(p)?;
            if !may_see(p) {
                return Err(denied("get_quota"));
            }
            let v = app.shared.read(|ml2, st| Ok(details(ml2, st, p)))?;
            Ok(http::json(200, json!({ "quota": v })))
        }
        [p] if m == Method::PUT => {
            valid_project(p)?;
            if !ctx.is_admin {
                return Err(denied("update_quota"));
            }
            let body = http::json_body(&req.body)?;
            let v = app.shared.write(
                &ctx,
                |ml2, st, _| update(ml2, st, p, &body),
                |ml2, st, ()| Ok(limits(ml2, st, p)),
            )?;
            Ok(http::json(200, json!({ "quota": v })))
        }
        [p] if m == Method::DELETE => {
            valid_project(p)?;
            if !ctx.is_admin {
                return Err(denied("delete_quota"));
            }
            app.shared.write(
                &ctx,
                |_, st, _| {
                    st.remove(Kind::Quota, p);
                    Ok(())
                },
                |_, _, ()| Ok(()),
            )?;
            Ok(http::empty(204))
        }
        [] | [_] | [_, "default" | "details"] => Err(NeutronError::new(
            405,
            "HTTPMethodNotAllowed",
            "Method not allowed",
        )),
        _ => Err(NeutronError::no_route()),
    }
}
