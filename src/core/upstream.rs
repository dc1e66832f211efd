//! Step 9: the request the router sends upstream, and which of the upstream's response headers
//! go back to the client.
//!
//! Outbound headers are built from scratch, never copied from the client: the client's
//! `Authorization` (its gateway credential), cookies and anything else it sent stay at the
//! edge. The only client header carried over is `Accept`.

use super::route::Choice;

/// What the edge needs to issue the upstream call; the body is the client's, unchanged.
pub struct UpstreamRequest {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for UpstreamRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| match *k {
                "authorization" => (*k, "[redacted]"),
                _ => (*k, v.as_str()),
            })
            .collect();
        f.debug_struct("UpstreamRequest")
            .field("url", &self.url)
            .field("headers", &headers)
            .finish()
    }
}

/// The upstream call to `endpoint` (`/chat/completions`, `/embeddings`) of the chosen provider.
pub fn request(
    choice: &Choice<'_>,
    endpoint: &str,
    client_accept: Option<&str>,
) -> UpstreamRequest {
    let accept = client_accept
        .filter(|a| !a.trim().is_empty())
        .unwrap_or("application/json");
    UpstreamRequest {
        url: format!("{}{endpoint}", choice.provider.base_url),
        headers: vec![
            (
                "authorization",
                format!("Bearer {}", choice.secret.expose()),
            ),
            ("content-type", "application/json".to_owned()),
            ("accept", accept.to_owned()),
        ],
    }
}

impl UpstreamRequest {
    /// The headers as [`Lines`] text, the form the edge hands to the runtime in one call.
    pub fn header_lines(&self) -> String {
        lines(self.headers.iter().map(|(k, v)| (*k, v.as_str())))
    }
}

/// Headers crossing between the runtime and the core in one string: `name\nvalue\n` per header
/// (HTTP forbids line breaks in names and values). One string crosses the boundary where a
/// header at a time would cost a call each.
#[derive(Debug, Clone, Copy)]
pub struct Lines<'a>(pub &'a str);

impl<'a> Lines<'a> {
    /// The headers, in order.
    pub fn iter(self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let mut parts = self.0.split('\n');
        std::iter::from_fn(move || Some((parts.next()?, parts.next()?)))
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(self, name: &str) -> Option<&'a str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The headers that may reach the client ([`passes_to_client`]), as lines.
    pub fn to_client(self) -> String {
        lines(self.iter().filter(|(k, _)| passes_to_client(k)))
    }
}

/// `headers` as [`Lines`] text.
pub fn lines<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (name, value) in headers {
        out.push_str(name);
        out.push('\n');
        out.push_str(value);
        out.push('\n');
    }
    out
}

/// The upstream response headers a client gets, and only these: what the answer is, and the ids
/// a provider's support asks for. Everything else stays behind: the upstream's server, proxies
/// and cookies, the connection's own headers, its `content-length` and `content-encoding` (the
/// runtime hands on the decoded body and frames it anew), and the provider's
/// `x-ratelimit-*` and account headers, which describe the router's organizations, not the
/// client's.
const TO_CLIENT: &[&str] = &[
    "content-type",
    "cache-control",
    "x-request-id",
    "openai-processing-ms",
    "openai-version",
];

/// Whether an upstream response header may be passed on to the client ([`TO_CLIENT`]).
pub fn passes_to_client(name: &str) -> bool {
    TO_CLIENT.iter().any(|d| d.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_keep_only_what_passes_to_the_client() {
        let text = lines([
            ("content-type", "application/json"),
            ("set-cookie", "__cf_bm=1"),
            ("x-ratelimit-remaining-requests", "9"),
            ("Transfer-Encoding", "chunked"),
        ]);
        let headers = Lines(&text);
        assert_eq!(headers.iter().count(), 4);
        assert_eq!(headers.get("X-RateLimit-Remaining-Requests"), Some("9"));
        assert_eq!(headers.get("retry-after"), None);
        assert_eq!(headers.to_client(), "content-type\napplication/json\n");
        assert_eq!(Lines("").iter().count(), 0);
    }
    use crate::core::config::Config;

    fn config() -> Config {
        let doc = serde_json::json!({
            "providers": {"groq": {"base_url": "https://api.example.com/openai/v1",
                                   "keys": [{"id": "g", "secret": "G"}]}},
            "routes": {"fast": ["groq/m"]}
        });
        Config::parse(&doc.to_string(), |n| (n == "G").then(|| "sk-up".to_owned())).unwrap()
    }

    fn chat_completions(accept: Option<&str>) -> UpstreamRequest {
        let c = config();
        let choice = crate::core::route::choose(&c, "fast", &[]).unwrap();
        request(&choice, "/chat/completions", accept)
    }

    fn header<'a>(r: &'a UpstreamRequest, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn builds_url_and_auth_from_configuration() {
        let r = chat_completions(None);
        assert_eq!(r.url, "https://api.example.com/openai/v1/chat/completions");
        assert_eq!(header(&r, "authorization"), Some("Bearer sk-up"));
        assert_eq!(header(&r, "content-type"), Some("application/json"));
        assert_eq!(header(&r, "accept"), Some("application/json"));
        assert_eq!(r.headers.len(), 3);
    }

    #[test]
    fn carries_the_clients_accept() {
        let r = chat_completions(Some("text/event-stream"));
        assert_eq!(header(&r, "accept"), Some("text/event-stream"));
        let r = chat_completions(Some(" "));
        assert_eq!(header(&r, "accept"), Some("application/json"));
    }

    #[test]
    fn debug_redacts_the_key() {
        let r = chat_completions(None);
        let printed = format!("{r:?}");
        assert!(!printed.contains("sk-up"), "{printed}");
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn response_header_filter() {
        for kept in ["content-type", "X-Request-Id", "openai-processing-ms"] {
            assert!(passes_to_client(kept), "{kept}");
        }
        for dropped in [
            "Set-Cookie",
            "connection",
            "Transfer-Encoding",
            "alt-svc",
            "openai-organization",
            "OpenAI-Project",
            "server",
            "via",
            "cf-ray",
            "access-control-allow-credentials",
            "access-control-allow-origin",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-limit-requests",
            "retry-after",
            "content-length",
            "content-encoding",
            "x-groq-region",
        ] {
            assert!(!passes_to_client(dropped), "{dropped}");
        }
    }
}
