//! `GET /router`: the operator page, the status and usage as a web page read at a glance (each
//! organization's windows as bars, the leases, the open circuit breakers, the top users by
//! spend).
//!
//! The page is one self-contained file, `operator.html`: inline CSS and plain script, no
//! framework, nothing loaded from anywhere else. It carries no data, so it needs no key: its
//! script asks for the admin key, keeps it in the tab's `sessionStorage`, and reads
//! `GET /v1/router/status` and `GET /v1/router/usage` with it, every 5 s. What those answer is
//! set as text, never as markup, and the headers below forbid the page anything else: no
//! resource from elsewhere, no framing, no referrer, no caching.

/// The page, as served.
pub const PAGE: &str = include_str!("operator.html");

/// Everything the page may do: its own inline script and style, and calls to the router itself.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'";

/// The page's response headers.
pub fn headers() -> Vec<(&'static str, String)> {
    [
        ("content-type", "text/html; charset=utf-8"),
        ("cache-control", "no-store"),
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
    ]
    .into_iter()
    .map(|(name, value)| (name, value.to_owned()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::endpoint::{resolve, Endpoint};

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let page = PAGE.to_ascii_lowercase();
        for outside in [
            "src=", "href=", "url(", "@import", "http:", "https:", "//cdn",
        ] {
            assert!(!page.contains(outside), "the page holds {outside:?}");
        }
        assert!(page.starts_with("<!doctype html>"));
    }

    #[test]
    fn the_page_sets_what_it_reads_as_text_never_as_markup() {
        for markup in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!PAGE.contains(markup), "the page uses {markup}");
        }
    }

    #[test]
    fn every_element_the_script_looks_up_is_on_the_page() {
        let ids: Vec<&str> = PAGE
            .split("byId(\"")
            .skip(1)
            .filter_map(|rest| rest.split_once('"').map(|(id, _)| id))
            .collect();
        assert!(ids.len() >= 10, "{ids:?}");
        for id in ids {
            assert!(PAGE.contains(&format!("id=\"{id}\"")), "no element #{id}");
        }
    }

    #[test]
    fn the_page_reads_the_status_endpoint() {
        let path = "/v1/router/status";
        assert!(PAGE.contains(&format!("\"{path}\"")));
        assert_eq!(resolve("GET", path), Ok(Endpoint::Status));
        assert_eq!(resolve("GET", "/router"), Ok(Endpoint::Page));
    }

    #[test]
    fn the_headers_keep_the_page_to_itself() {
        let h = headers();
        let get = |name: &str| h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(get("cache-control"), Some("no-store"));
        assert_eq!(get("x-frame-options"), Some("DENY"));
        let csp = get("content-security-policy").unwrap_or_default();
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    }
}
