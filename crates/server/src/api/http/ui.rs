//! The dashboard at `GET /ui` (and `/ui/`): one static page, `ui.html`, compiled into the binary.
//!
//! The page is plain HTML, CSS and JavaScript with no build step and no external resource, so
//! it works offline and on an air-gapped node. Its script polls this node's `/v1/cluster`,
//! `/v1/ring` and `/metrics` (same origin) every 2 s and draws the members and their health, the
//! ring's ownership, live load (rates from successive counter samples) and anti-entropy. Data
//! reaches the DOM only through `textContent` and properties, never as HTML.
//!
//! The page itself is served without the password (it holds no data); when the node has one,
//! `/v1/*` answers 401 and the page asks for it and sends it as `Authorization: Bearer`.
//!
//! A strict Content-Security-Policy backs that up: only the page's own inline script and style
//! (pinned by their SHA-256, computed from the embedded page once) may run, and only
//! same-origin fetches are allowed, so even an escaping bug could not load or send anything.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// The page.
const PAGE: &str = include_str!("ui.html");

/// The Content-Security-Policy of [`PAGE`], with the hashes of its one script and one style.
static CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = |tag: &str| -> String {
        let body = inline_block(PAGE, tag).expect("ui.html has one inline block per tag");
        format!(
            "'sha256-{}'",
            STANDARD.encode(Sha256::digest(body.as_bytes()))
        )
    };
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash("script"),
        hash("style")
    )
});

/// The text between `<tag>` and `</tag>`: what a CSP hash covers.
fn inline_block<'a>(page: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = page.find(&open)? + open.len();
    let len = page[start..].find(&format!("</{tag}>"))?;
    Some(&page[start..start + len])
}

/// `GET /ui`: the dashboard page.
pub(crate) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP.as_str()),
        ],
        PAGE,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::super::tests::test_node;
    use super::*;
    use crate::Config;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    #[tokio::test]
    async fn the_page_is_served_with_a_csp_that_pins_its_script_and_style() {
        let node = test_node(Config {
            password: Some("pw".into()),
            ..Config::default()
        })
        .await;
        for path in ["/ui", "/ui/"] {
            let req = Request::get(path).body(Body::empty()).unwrap();
            let resp = super::super::router(node.clone())
                .oneshot(req)
                .await
                .unwrap();
            // Served without the password: the page holds no data.
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            let h = resp.headers();
            assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("connect-src 'self'"), "{csp}");
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            let body = std::str::from_utf8(&body).unwrap();
            for needle in [
                "id=\"members\"",
                "id=\"ring\"",
                "id=\"load\"",
                "/v1/cluster",
            ] {
                assert!(body.contains(needle), "{needle}");
            }
        }
        // Exactly one block of each, or the hash would leave one out.
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
        // No resource from elsewhere.
        assert!(!PAGE.contains("https://") && !PAGE.contains("src=\"http"));
        assert!(CSP.contains("script-src 'sha256-") && CSP.contains("style-src 'sha256-"));
    }
}
