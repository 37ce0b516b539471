//! The web console: a page switchyard serves itself at `/console/`.
//!
//! Plain HTML, CSS and ES modules, embedded in the binary at build time
//! (`include_bytes!`): there is no build step and nothing to install. The
//! page is only a client of the public APIs (Neutron's, the lab's compute
//! API, `GET /switchyard/v1/events`) and holds no privilege of its own: with
//! identity on, it signs in with the identity API like any client and sends
//! the token it got; everything it shows or does is checked by those APIs.
//!
//! The assets are served without a token (they are the same for everyone
//! and hold no data), with a Content-Security-Policy that allows only this
//! origin's scripts, styles and connections, and an `ETag` (a client that
//! has an asset gets `304`). The one third-party asset, cytoscape.js (the
//! topology page's graph), is vendored in `console/vendor/` by
//! `scripts/vendor-console.sh`, pinned by version and registry integrity in
//! `console/vendor/VENDORED`, with its licence beside it.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// (path under `/console/`, media type, content).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "",
        "text/html; charset=utf-8",
        include_bytes!("../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/app.js"),
    ),
    (
        "topology.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/topology.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../console/style.css"),
    ),
    (
        "vendor/cytoscape.esm.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/vendor/cytoscape.esm.min.js"),
    ),
];

/// The vendoring record of `console/vendor/` (version, integrity, sha256).
#[cfg(test)]
const VENDORED: &str = include_str!("../console/vendor/VENDORED");

/// What the page may load and connect to: this origin only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// The console's routes (merged into the API's router).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(|h: axum::http::HeaderMap| async move { asset("", &h) }),
        )
        .route(
            "/console/{*file}",
            get(
                |axum::extract::Path(file): axum::extract::Path<String>,
                 h: axum::http::HeaderMap| async move { asset(&file, &h) },
            ),
        )
}

/// An asset's entity tag: a hash of its bytes (the assets change only with
/// the binary).
fn etag(body: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(body);
    let hex: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Each asset's tag, hashed once.
static TAGS: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| ASSETS.iter().map(|(_, _, b)| etag(b)).collect());

fn asset(name: &str, req: &axum::http::HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let (_, mime, body) = ASSETS[i];
    let tag = &TAGS[i];
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_response()
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    // Small, and replaced with the binary: always revalidated.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::http::HeaderMap;

    #[test]
    fn every_asset_is_served_with_its_type_and_the_policy() {
        let none = HeaderMap::new();
        for (name, mime, body) in ASSETS {
            let r = asset(name, &none);
            assert_eq!(r.status(), StatusCode::OK, "{name}");
            assert_eq!(r.headers()[header::CONTENT_TYPE], *mime, "{name}");
            assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
            assert!(!body.is_empty(), "{name}");
            // Asked again with its tag: 304, no body.
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, r.headers()[header::ETAG].clone());
            assert_eq!(asset(name, &h).status(), StatusCode::NOT_MODIFIED, "{name}");
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"stale\""));
            assert_eq!(asset(name, &h).status(), StatusCode::OK, "{name}");
        }
        assert_eq!(
            asset("../Cargo.toml", &none).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(asset("nope.js", &none).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_vendored_graph_library_is_the_one_its_record_pins() {
        use sha2::Digest;
        let field = |k: &str| {
            VENDORED
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(str::trim)
                .unwrap_or_else(|| panic!("VENDORED has no {k}"))
        };
        let (_, _, body) = ASSETS
            .iter()
            .find(|(n, _, _)| *n == "vendor/cytoscape.esm.min.js")
            .expect("vendored");
        let sum: String = sha2::Sha256::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sum, field("sha256:"), "run scripts/vendor-console.sh");
        let version = field("version:");
        assert!(
            std::str::from_utf8(body)
                .expect("utf-8")
                .contains(&format!("version=\"{version}\"")),
            "the file is cytoscape {version}"
        );
        assert!(field("integrity:").starts_with("sha512-"));
    }
}
