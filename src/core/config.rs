//! Step 2: the settings a request needs, read from the Worker's vars and secrets.
//!
//! The edge hands in a lookup function over its bindings; this module validates what it finds
//! and names the variable at fault. Keys live only in [`Secret`], whose `Debug` and `Display`
//! print a redaction, so a key cannot reach a log line by accident.

use super::error::{RouterError, UPSTREAM_KEY_SECRET};

/// The Worker var holding the upstream's OpenAI-compatible base URL (ending in `/v1` or the
/// provider's equivalent, without the endpoint path).
pub const UPSTREAM_BASE_URL_VAR: &str = "UPSTREAM_BASE_URL";

/// A secret value. It can be used, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One OpenAI-compatible upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Base URL without a trailing slash, e.g. `https://api.groq.com/openai/v1`.
    pub base_url: String,
    pub key: Secret,
}

/// Everything the router needs to serve a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub upstream: Upstream,
}

impl Settings {
    /// Reads and validates the settings through `lookup`, which returns a binding's value or
    /// `None` when it is not set.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, RouterError> {
        let base_url = lookup(UPSTREAM_BASE_URL_VAR).unwrap_or_default();
        let base_url = validate_base_url(&base_url)?;
        let key = lookup(UPSTREAM_KEY_SECRET)
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .ok_or(RouterError::MissingSecret {
                name: UPSTREAM_KEY_SECRET,
            })?;
        Ok(Settings {
            upstream: Upstream {
                base_url,
                key: Secret(key),
            },
        })
    }
}

/// Accepts an absolute http(s) URL without query or fragment and drops a trailing slash.
fn validate_base_url(raw: &str) -> Result<String, RouterError> {
    let invalid = |detail: &str| RouterError::InvalidConfig {
        path: UPSTREAM_BASE_URL_VAR.to_owned(),
        detail: detail.to_owned(),
    };
    let url = raw.trim();
    if url.is_empty() {
        return Err(invalid("it is not set; set it in wrangler.toml [vars]"));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid("it must start with https:// or http://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid("it has no host"));
    }
    if rest.contains(['?', '#']) || rest.contains(char::is_whitespace) {
        return Err(invalid(
            "it must be a plain base URL without query, fragment or spaces",
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn reads_a_complete_configuration() {
        let s = Settings::from_lookup(lookup(&[
            ("UPSTREAM_BASE_URL", "https://api.groq.com/openai/v1/"),
            ("UPSTREAM_API_KEY", " gsk_abc \n"),
        ]))
        .unwrap();
        assert_eq!(s.upstream.base_url, "https://api.groq.com/openai/v1");
        assert_eq!(s.upstream.key.expose(), "gsk_abc");
    }

    #[test]
    fn missing_or_blank_key_names_the_secret() {
        for pairs in [
            &[("UPSTREAM_BASE_URL", "http://127.0.0.1:1/v1")][..],
            &[
                ("UPSTREAM_BASE_URL", "http://127.0.0.1:1/v1"),
                ("UPSTREAM_API_KEY", "  "),
            ][..],
        ] {
            let err = Settings::from_lookup(lookup(pairs)).unwrap_err();
            assert_eq!(
                err,
                RouterError::MissingSecret {
                    name: "UPSTREAM_API_KEY"
                }
            );
        }
    }

    #[test]
    fn bad_base_urls_name_the_variable() {
        for bad in [
            "",
            "  ",
            "api.groq.com/v1",
            "ftp://x",
            "https://",
            "https:///v1",
            "https://x/v1?a=b",
            "https://x/v1#f",
            "https://x y/v1",
        ] {
            let err = Settings::from_lookup(lookup(&[
                ("UPSTREAM_BASE_URL", bad),
                ("UPSTREAM_API_KEY", "k"),
            ]))
            .unwrap_err();
            match &err {
                RouterError::InvalidConfig { path, .. } => {
                    assert_eq!(path, "UPSTREAM_BASE_URL", "{bad:?}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn base_url_is_checked_before_the_key() {
        // An operator fixing a fresh deployment sees the first missing piece first.
        let err = Settings::from_lookup(lookup(&[])).unwrap_err();
        assert_eq!(err.code(), Some("invalid_config"));
    }

    #[test]
    fn secrets_never_print() {
        let s = Settings::from_lookup(lookup(&[
            ("UPSTREAM_BASE_URL", "https://x/v1"),
            ("UPSTREAM_API_KEY", "sk-very-secret"),
        ]))
        .unwrap();
        assert!(!format!("{s:?}").contains("sk-very-secret"));
        assert!(!format!("{}", s.upstream.key).contains("sk-very-secret"));
    }
}
