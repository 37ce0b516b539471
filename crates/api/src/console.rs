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
//! origin's scripts, styles and connections.

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
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../console/style.css"),
    ),
];

/// What the page may load and connect to: this origin only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// The console's routes (merged into the API's router).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(|| async { asset("") }))
        .route(
            "/console/{*file}",
            get(|axum::extract::Path(file): axum::extract::Path<String>| async move {
                asset(&file)
            }),
        )
}

fn asset(name: &str) -> Response {
    let Some((_, mime, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let mut r = (*body).into_response();
    let h = r.headers_mut();
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

    #[test]
    fn every_asset_is_served_with_its_type_and_the_policy() {
        for (name, mime, body) in ASSETS {
            let r = asset(name);
            assert_eq!(r.status(), StatusCode::OK, "{name}");
            assert_eq!(r.headers()[header::CONTENT_TYPE], *mime, "{name}");
            assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
            assert!(!body.is_empty(), "{name}");
        }
        assert_eq!(asset("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(asset("nope.js").status(), StatusCode::NOT_FOUND);
    }
}
