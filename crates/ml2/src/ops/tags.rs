//! The `standard-attr-tag` sub-resource: `/v2.0/{networks,subnets,ports,routers,floatingips}/{id}/tags`.
//! Tag changes bump the parent's revision, as in Neutron.

use serde_json::{Map, Value};
use switchyard_model::attrs;
use switchyard_model::{Kind, NeutronError, Record, Result, State, StdAttrs};

use crate::Ctx;

fn std_of(r: &mut Record) -> Option<&mut StdAttrs> {
    match r {
        Record::Network(x) => Some(&mut x.std),
        Record::Subnet(x) => Some(&mut x.std),
        Record::Port(x) => Some(&mut x.std),
        Record::Router(x) => Some(&mut x.std),
        Record::FloatingIp(x) => Some(&mut x.std),
        _ => None,
    }
}

fn resource_not_found(kind: Kind, id: &str) -> NeutronError {
    NeutronError::not_found(
        "TagResourceNotFound",
        format!("Resource {} {id} could not be found.", kind.as_str()),
    )
}

/// The parent record, if the caller may see it and it carries tags.
fn parent(st: &State, ctx: &Ctx, kind: Kind, id: &str) -> Result<Record> {
    let r = st
        .get(kind, id)
        .ok_or_else(|| resource_not_found(kind, id))?;
    let visible = match &r {
        Record::Network(n) => super::network_visible(ctx, n),
        Record::Subnet(s) => super::subnet_visible(ctx, st, s),
        Record::Port(p) => super::port_visible(ctx, st, p),
        Record::Router(r) => ctx.is_admin || r.std.project_id == ctx.project_id,
        Record::FloatingIp(f) => ctx.is_admin || f.std.project_id == ctx.project_id,
        _ => false,
    };
    if !visible {
        return Err(resource_not_found(kind, id));
    }
    Ok(r)
}

pub fn list(st: &State, ctx: &Ctx, kind: Kind, id: &str) -> Result<Vec<String>> {
    let mut r = parent(st, ctx, kind, id)?;
    Ok(std_of(&mut r).map(|s| s.tags.clone()).unwrap_or_default())
}

pub fn has(st: &State, ctx: &Ctx, kind: Kind, id: &str, tag: &str) -> Result<()> {
    if list(st, ctx, kind, id)?.iter().any(|t| t == tag) {
        Ok(())
    } else {
        Err(tag_not_found(tag))
    }
}

fn tag_not_found(tag: &str) -> NeutronError {
    NeutronError::not_found("TagNotFound", format!("Tag {tag} could not be found."))
}

/// Who owns the record, and the network it belongs to (for the owner rule).
fn owners(r: &Record) -> (String, Option<String>) {
    match r {
        Record::Network(x) => (x.std.project_id.clone(), None),
        Record::Subnet(x) => (x.std.project_id.clone(), Some(x.network_id.clone())),
        Record::Port(x) => (x.std.project_id.clone(), Some(x.network_id.clone())),
        Record::Router(x) => (x.std.project_id.clone(), None),
        Record::FloatingIp(x) => (x.std.project_id.clone(), None),
        Record::SecurityGroup(x) => (x.std.project_id.clone(), None),
        Record::SecurityGroupRule(x) => (x.std.project_id.clone(), None),
        Record::Segment(_) | Record::Agent(_) | Record::Quota(_) => (String::new(), None),
    }
}

fn write(
    st: &mut State,
    ctx: &Ctx,
    kind: Kind,
    id: &str,
    f: impl FnOnce(&mut Vec<String>) -> Result<()>,
) -> Result<Vec<String>> {
    let mut r = parent(st, ctx, kind, id)?;
    let (owner, network) = owners(&r);
    if !super::may_write_tags(ctx, st, &owner, network.as_deref()) {
        return Err(super::policy_denied(&format!(
            "rule:update_{}:tags",
            kind.as_str()
        )));
    }
    let Some(s) = std_of(&mut r) else {
        return Err(resource_not_found(kind, id));
    };
    let mut tags = s.tags.clone();
    f(&mut tags)?;
    attrs::check_tag_count(tags.len())?;
    if tags != s.tags {
        s.tags = tags.clone();
        s.bump(ctx.now);
        st.put(r);
    }
    Ok(tags)
}

/// `PUT …/tags` with `{"tags": [...]}`: replaces all tags.
pub fn replace(
    st: &mut State,
    ctx: &Ctx,
    kind: Kind,
    id: &str,
    body: &Map<String, Value>,
) -> Result<Vec<String>> {
    let Some(v) = body.get("tags").filter(|_| body.len() == 1) else {
        return Err(NeutronError::invalid_input("Invalid tags body"));
    };
    let new = attrs::to_tags("tags", v)?;
    write(st, ctx, kind, id, |t| {
        *t = new;
        Ok(())
    })
}

/// `PUT …/tags/{tag}`: adds one tag (idempotent).
pub fn add(st: &mut State, ctx: &Ctx, kind: Kind, id: &str, tag: &str) -> Result<()> {
    let tag = attrs::validate_tag(&Value::String(tag.to_string()))?;
    write(st, ctx, kind, id, |t| {
        if !t.contains(&tag) {
            t.push(tag);
        }
        Ok(())
    })
    .map(|_| ())
}

/// `DELETE …/tags/{tag}`.
pub fn remove(st: &mut State, ctx: &Ctx, kind: Kind, id: &str, tag: &str) -> Result<()> {
    write(st, ctx, kind, id, |t| {
        let before = t.len();
        t.retain(|x| x != tag);
        if t.len() == before {
            Err(tag_not_found(tag))
        } else {
            Ok(())
        }
    })
    .map(|_| ())
}

/// `DELETE …/tags`.
pub fn clear(st: &mut State, ctx: &Ctx, kind: Kind, id: &str) -> Result<()> {
    write(st, ctx, kind, id, |t| {
        t.clear();
        Ok(())
    })
    .map(|_| ())
}
