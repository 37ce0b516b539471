//! Neutron list semantics over rendered resources: filters (AND across fields,
//! OR across repeated values, empty-string filtering, tag filters, the ports'
//! `fixed_ips` filter), `fields`, sorting and marker pagination with
//! `<collection>_links`, and Neutron's 400s for bad parameters.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{Map, Value, json};
use switchyard_model::attrs::{self, Attr, clip};
use switchyard_model::{NeutronError, Result};

const CONTROL: [&str; 6] = [
    "fields",
    "sort_key",
    "sort_dir",
    "limit",
    "marker",
    "page_reverse",
];
const TAG_FILTERS: [&str; 4] = ["tags", "tags-any", "not-tags", "not-tags-any"];
/// Filters Neutron converts with `convert_to_boolean` / `convert_to_int`
/// before looking anything up: a bad value is a 400 even when nothing matches.
const BOOL_FILTERS: [&str; 8] = [
    "admin_state_up",
    "belongs_to_default_sg",
    "shared",
    "router:external",
    "port_security_enabled",
    "enable_dhcp",
    "alive",
    "resources_synced",
];
const INT_FILTERS: [&str; 7] = [
    "mtu",
    "port_range_min",
    "port_range_max",
    "revision_number",
    "ip_version",
    "provider:segmentation_id",
    "segmentation_id",
];

/// A parsed query string, keeping the original order for link building.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        Query { pairs }
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn first(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn fields(&self) -> Vec<String> {
        self.all("fields")
            .into_iter()
            .flat_map(|f| f.split(','))
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// neutron-lib's `convert_to_boolean`: oslo `bool_from_string(strict=True)`.
pub fn parse_bool(s: &str) -> Result<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Ok(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Ok(false),
        _ => Err(NeutronError::invalid_input(format!(
            "'{}' cannot be converted to boolean",
            clip(s)
        ))),
    }
}

/// neutron-lib's `convert_to_int`.
fn parse_int(s: &str) -> Result<i64> {
    s.trim()
        .parse()
        .map_err(|_| NeutronError::invalid_input(format!("'{}' is not an integer", clip(s))))
}

fn py_list(items: &[&str]) -> String {
    let inner: Vec<String> = items.iter().map(|i| format!("'{}'", clip(i))).collect();
    clip(&format!("[{}]", inner.join(", "))).into_owned()
}

#[derive(Debug)]
enum Filter {
    Eq(String, Vec<String>),
    /// fixed_ips: key (ip_address / subnet_id / ip_address_substr) -> any of values
    FixedIps(Vec<(String, Vec<String>)>),
    Tags(String, Vec<String>),
}

/// Validated list parameters for one collection.
#[derive(Debug)]
pub struct ListParams {
    filters: Vec<Filter>,
    sorts: Vec<(String, bool)>,
    pub limit: Option<usize>,
    pub marker: Option<String>,
    pub page_reverse: bool,
    pub fields: Vec<String>,
}

impl ListParams {
    pub fn parse(q: &Query, attrs: &[Attr]) -> Result<Self> {
        let mut filters: Vec<Filter> = Vec::new();
        let mut invalid: Vec<&str> = Vec::new();
        // Group repeated keys in one pass, keeping first-appearance order.
        let mut order: Vec<&str> = Vec::new();
        let mut grouped: HashMap<&str, Vec<String>> = HashMap::new();
        for (k, v) in &q.pairs {
            if CONTROL.contains(&k.as_str()) {
                continue;
            }
            grouped
                .entry(k.as_str())
                .or_insert_with(|| {
                    order.push(k.as_str());
                    Vec::new()
                })
                .push(v.clone());
        }
        for k in order {
            let values = grouped.remove(k).unwrap_or_default();
            if TAG_FILTERS.contains(&k) {
                if attrs::find(attrs, "tags").is_none() {
                    invalid.push(k);
                    continue;
                }
                let tags = values
                    .iter()
                    .flat_map(|v| v.split(','))
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect();
                filters.push(Filter::Tags(k.to_string(), tags));
                continue;
            }
            match attrs::find(attrs, k) {
                Some(a) if a.filter => {
                    if k == "fixed_ips" {
                        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
                        for v in &values {
                            let (fk, fv) = v.split_once('=').ok_or_else(|| {
                                NeutronError::invalid_input(format!(
                                    "Invalid fixed_ips filter '{}', expected key=value",
                                    clip(v)
                                ))
                            })?;
                            if !["ip_address", "subnet_id", "ip_address_substr"].contains(&fk) {
                                return Err(NeutronError::http_bad_request(format!(
                                    "{} is invalid attribute for filtering",
                                    py_list(&[fk])
                                )));
                            }
                            match groups.iter_mut().find(|(g, _)| g == fk) {
                                Some((_, vals)) => vals.push(fv.to_string()),
                                None => groups.push((fk.to_string(), vec![fv.to_string()])),
                            }
                        }
                        filters.push(Filter::FixedIps(groups));
                    } else {
                        for v in &values {
                            if BOOL_FILTERS.contains(&k) {
                                parse_bool(v)?;
                            } else if INT_FILTERS.contains(&k) {
                                parse_int(v)?;
                            }
                        }
                        filters.push(Filter::Eq(k.to_string(), values));
                    }
                }
                _ => invalid.push(k),
            }
        }
        if !invalid.is_empty() {
            return Err(NeutronError::http_bad_request(format!(
                "{} is invalid attribute for filtering",
                py_list(&invalid)
            )));
        }

        let keys = q.all("sort_key");
        let dirs = q.all("sort_dir");
        if keys.len() != dirs.len() {
            return Err(NeutronError::http_bad_request(
                "The number of sort_keys and sort_dirs must be same",
            ));
        }
        let bad_keys: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| !attrs::find(attrs, k).is_some_and(|a| a.sort))
            .collect();
        if !bad_keys.is_empty() {
            return Err(NeutronError::http_bad_request(format!(
                "{} is invalid attribute for sort_keys",
                py_list(&bad_keys)
            )));
        }
        let bad_dirs: Vec<&str> = dirs
            .iter()
            .copied()
            .filter(|d| *d != "asc" && *d != "desc")
            .collect();
        if !bad_dirs.is_empty() {
            return Err(NeutronError::http_bad_request(format!(
                "{} is invalid value for sort_dirs, valid value is 'asc' and 'desc'",
                py_list(&bad_dirs)
            )));
        }
        let mut sorts: Vec<(String, bool)> = keys
            .iter()
            .zip(dirs.iter())
            .map(|(k, d)| (k.to_string(), *d == "asc"))
            .collect();
        let id_key = if attrs::find(attrs, "id").is_some() {
            "id"
        } else {
            "host"
        };
        if !sorts.iter().any(|(k, _)| k == id_key) {
            sorts.push((id_key.to_string(), true));
        }

        let limit = match q.first("limit") {
            None => None,
            Some(l) => match l.trim().parse::<i64>() {
                Ok(n) if n >= 0 => (n > 0).then_some(n as usize),
                _ => {
                    return Err(NeutronError::bad_request(
                        "BadRequest",
                        format!(
                            "Bad limit request: Limit must be an integer 0 or greater and not '{}'.",
                            clip(l)
                        ),
                    ));
                }
            },
        };
        let marker = q
            .first("marker")
            .map(str::to_string)
            .filter(|m| !m.is_empty());
        // Neutron reads anything but "true" as false; a value that is not a
        // boolean at all is refused here instead (docs/api.md).
        let page_reverse = q
            .first("page_reverse")
            .map(parse_bool)
            .transpose()?
            .unwrap_or(false);
        Ok(ListParams {
            filters,
            sorts,
            limit,
            marker,
            page_reverse,
            fields: q.fields(),
        })
    }

    /// The values of a plain equality filter on `key`, if the query has one.
    pub fn eq_values(&self, key: &str) -> Option<&[String]> {
        self.filters.iter().find_map(|f| match f {
            Filter::Eq(k, v) if k == key => Some(v.as_slice()),
            _ => None,
        })
    }

    /// No filters and the default order (id ascending), front to back: the
    /// caller may walk its id-ordered table and stop after one page.
    pub fn is_plain_id_scan(&self) -> bool {
        self.filters.is_empty()
            && !self.page_reverse
            && self.sorts.len() == 1
            && self.sorts[0].0 == "id"
            && self.sorts[0].1
    }

    /// A plain page of whole resources: no field selection, id order front
    /// to back, and no filter but, at most, an equality on one of `exact`:
    /// attributes whose candidates the caller finds exactly (an index), so
    /// no rendered resource needs checking against it. Empty values are not
    /// indexed.
    pub fn is_plain_page(&self, exact: &[&str]) -> bool {
        let filters_exact = match self.filters.as_slice() {
            [] => true,
            [Filter::Eq(k, v)] => exact.contains(&k.as_str()) && v.iter().all(|x| !x.is_empty()),
            _ => false,
        };
        filters_exact
            && self.fields.is_empty()
            && !self.page_reverse
            && self.sorts.len() == 1
            && self.sorts[0].0 == "id"
            && self.sorts[0].1
    }

    /// Whether a rendered resource passes every filter.
    pub fn matches(&self, item: &Value) -> Result<bool> {
        for f in &self.filters {
            if !filter_matches(f, item)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn cmp(&self, a: &Value, b: &Value) -> Ordering {
        for (k, asc) in &self.sorts {
            let o = cmp_json(
                a.get(k).unwrap_or(&Value::Null),
                b.get(k).unwrap_or(&Value::Null),
            );
            let o = if *asc { o } else { o.reverse() };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }

    /// Sorts, pages and trims the items; `marker_item` is the rendered marker
    /// resource when the marker names one. Returns the page and whether links apply.
    pub fn page(&self, mut items: Vec<Value>, marker_item: Option<&Value>) -> Vec<Value> {
        // Lists come in id order, the default sort: one pass to check it is
        // cheaper than sorting 10,000 resources by a key looked up by name.
        if !items.is_sorted_by(|a, b| self.cmp(a, b) != Ordering::Greater) {
            items.sort_by(|a, b| self.cmp(a, b));
        }
        let Some(limit) = self.limit else {
            return items;
        };
        match (marker_item, self.page_reverse) {
            (Some(m), false) => {
                items.retain(|x| self.cmp(x, m) == Ordering::Greater);
                items.truncate(limit);
            }
            (Some(m), true) => {
                items.retain(|x| self.cmp(x, m) == Ordering::Less);
                let skip = items.len().saturating_sub(limit);
                items.drain(..skip);
            }
            (None, false) => items.truncate(limit),
            (None, true) => {
                let skip = items.len().saturating_sub(limit);
                items.drain(..skip);
            }
        }
        items
    }

    /// Neutron's `get_pagination_links`.
    pub fn links(
        &self,
        q: &Query,
        base_url: &str,
        items: &[Value],
        key: &str,
    ) -> Option<Vec<Value>> {
        fn id_of<'v>(v: &'v Value, key: &str) -> &'v str {
            v.get(key).and_then(Value::as_str).unwrap_or_default()
        }
        let ends = items
            .first()
            .zip(items.last())
            .map(|(f, l)| (id_of(f, key), id_of(l, key)));
        self.links_between(q, base_url, ends, items.len())
    }

    /// [`ListParams::links`] of a page of `count` items whose first and last
    /// have the markers `ends` (`None`: an empty page).
    pub fn links_between(
        &self,
        q: &Query,
        base_url: &str,
        ends: Option<(&str, &str)>,
        count: usize,
    ) -> Option<Vec<Value>> {
        let limit = self.limit?;
        let Some((first, last)) = ends else {
            return Some(Vec::new());
        };
        let id_of = |s: &str| s.to_string();
        let base: Vec<(String, String)> = q
            .pairs
            .iter()
            .filter(|(k, _)| k != "marker" && k != "page_reverse")
            .cloned()
            .collect();
        let href = |extra: &[(&str, String)]| {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &base {
                ser.append_pair(k, v);
            }
            for (k, v) in extra {
                ser.append_pair(k, v);
            }
            format!("{base_url}?{}", ser.finish())
        };
        let mut links = Vec::new();
        let short = count < limit;
        if !short || self.page_reverse {
            links.push(json!({"rel": "next", "href": href(&[("marker", id_of(last))])}));
        }
        if !short || !self.page_reverse {
            links.push(json!({"rel": "previous", "href": href(&[("marker", id_of(first)), ("page_reverse", "True".into())])}));
        }
        Some(links)
    }
}

/// Keeps only the requested fields (unknown ones are ignored, as in Neutron).
pub fn select_fields(item: Value, fields: &[String]) -> Value {
    if fields.is_empty() {
        return item;
    }
    match item {
        Value::Object(m) => {
            let out: Map<String, Value> = m
                .into_iter()
                .filter(|(k, _)| fields.iter().any(|f| f == k))
                .collect();
            Value::Object(out)
        }
        other => other,
    }
}

fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

fn cmp_json(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

fn value_matches(v: &Value, wanted: &str) -> Result<bool> {
    Ok(match v {
        Value::Bool(b) => parse_bool(wanted)? == *b,
        Value::Number(n) => n.as_i64() == Some(parse_int(wanted)?),
        Value::String(s) => s == wanted,
        Value::Array(a) => a.iter().any(|x| x.as_str() == Some(wanted)),
        Value::Null | Value::Object(_) => false,
    })
}

fn filter_matches(f: &Filter, item: &Value) -> Result<bool> {
    match f {
        Filter::Eq(k, values) => {
            let v = item.get(k).unwrap_or(&Value::Null);
            for w in values {
                if value_matches(v, w)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Filter::FixedIps(groups) => {
            let ips = item.get("fixed_ips").and_then(Value::as_array);
            Ok(ips.is_some_and(|ips| {
                ips.iter().any(|ip| {
                    groups.iter().all(|(k, vals)| {
                        let (field, substr) = match k.as_str() {
                            "ip_address_substr" => ("ip_address", true),
                            other => (other, false),
                        };
                        let have = ip.get(field).and_then(Value::as_str).unwrap_or_default();
                        vals.iter().any(|w| {
                            if substr {
                                have.contains(w.as_str())
                            } else {
                                have == w
                            }
                        })
                    })
                })
            }))
        }
        Filter::Tags(kind, wanted) => {
            let have: Vec<&str> = item
                .get("tags")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let all = wanted.iter().all(|t| have.contains(&t.as_str()));
            let any = wanted.iter().any(|t| have.contains(&t.as_str()));
            Ok(match kind.as_str() {
                "tags" => all,
                "tags-any" => any,
                "not-tags" => !all,
                _ => !any,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_model::attrs::NETWORK;

    fn q(s: &str) -> Query {
        Query::parse(Some(s))
    }

    #[test]
    fn rejects_unknown_filters_and_bad_sorts() {
        let e = ListParams::parse(&q("foo=1&bar=2"), NETWORK).expect_err("unknown filter");
        assert_eq!(e.status, 400);
        assert_eq!(
            e.message,
            "['foo', 'bar'] is invalid attribute for filtering"
        );
        let e = ListParams::parse(&q("sort_key=name"), NETWORK).expect_err("unpaired");
        assert_eq!(
            e.message,
            "The number of sort_keys and sort_dirs must be same"
        );
        let e =
            ListParams::parse(&q("sort_key=subnets&sort_dir=asc"), NETWORK).expect_err("bad key");
        assert_eq!(e.message, "['subnets'] is invalid attribute for sort_keys");
        let e = ListParams::parse(&q("sort_key=name&sort_dir=up"), NETWORK).expect_err("bad dir");
        assert!(
            e.message
                .starts_with("['up'] is invalid value for sort_dirs")
        );
        let e = ListParams::parse(&q("limit=-1"), NETWORK).expect_err("bad limit");
        assert_eq!(e.kind, "BadRequest");
    }

    #[test]
    fn filters_and_or_and_tags() {
        let p =
            ListParams::parse(&q("name=a&name=b&shared=false&tags=x,y"), NETWORK).expect("valid");
        let item = json!({"name": "b", "shared": false, "tags": ["y", "x", "z"]});
        assert!(p.matches(&item).expect("ok"));
        let item = json!({"name": "c", "shared": false, "tags": ["y", "x"]});
        assert!(!p.matches(&item).expect("ok"));
        let e = ListParams::parse(&q("shared=maybe"), NETWORK).expect_err("not a boolean");
        assert_eq!(
            e.message,
            "Invalid input for operation: 'maybe' cannot be converted to boolean."
        );
        let e = ListParams::parse(&q("mtu=big"), NETWORK).expect_err("not an integer");
        assert_eq!(
            e.message,
            "Invalid input for operation: 'big' is not an integer."
        );
        let e = ListParams::parse(&q("page_reverse=maybe"), NETWORK).expect_err("strict");
        assert_eq!(e.kind, "InvalidInput");
        let p = ListParams::parse(&q("page_reverse=True"), NETWORK).expect("valid");
        assert!(p.page_reverse);
    }

    #[test]
    fn pages_forward_and_backward_with_links() {
        let items: Vec<Value> = (0..5).map(|i| json!({"id": format!("id{i}")})).collect();
        let query = q("limit=2");
        let p = ListParams::parse(&query, NETWORK).expect("valid");
        let page = p.page(items.clone(), None);
        assert_eq!(page.len(), 2);
        let links = p
            .links(&query, "http://h/v2.0/networks", &page, "id")
            .expect("links");
        assert_eq!(links[0]["rel"], "next");
        assert_eq!(
            links[0]["href"],
            "http://h/v2.0/networks?limit=2&marker=id1"
        );
        let query = q("limit=2&marker=id3");
        let p = ListParams::parse(&query, NETWORK).expect("valid");
        let page = p.page(items.clone(), Some(&items[3]));
        assert_eq!(page, vec![items[4].clone()]);
        let links = p
            .links(&query, "http://h/v2.0/networks", &page, "id")
            .expect("links");
        assert_eq!(links.len(), 1);
        assert_eq!(links[0]["rel"], "previous");
        let query = q("limit=2&marker=id3&page_reverse=true");
        let p = ListParams::parse(&query, NETWORK).expect("valid");
        let page = p.page(items.clone(), Some(&items[3]));
        assert_eq!(page, vec![items[1].clone(), items[2].clone()]);
    }
}
