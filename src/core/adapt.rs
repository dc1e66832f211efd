//! Step 8: the body as the chosen provider wants it. The model name becomes the provider's,
//! the output-token limit moves to the field the provider reads, and fields the provider
//! rejects but the request can do without are removed. Fields that change what the client gets
//! back (`logprobs: true`, a non-empty `logit_bias`, `n > 1`) are never stripped: `core::route`
//! sends such requests to a provider that supports them.

use super::config::{Capability, MaxTokensField, Provider, GUARDED_FIELDS};
use super::error::RouterError;
use super::request::{ChatRequest, EmbeddingsRequest};

/// The chat body for `provider`, which knows the model as `model`, on the service `tier` the
/// target names (which replaces a client's own). The request is adapted in place, so that a
/// failover can adapt it again for the next provider without a copy: what is stripped is only
/// what the request can do without, and the output-token limit is kept.
pub fn chat(
    req: &mut ChatRequest,
    provider: &Provider,
    model: &str,
    tier: Option<&str>,
) -> Result<Vec<u8>, RouterError> {
    req.model = model.to_owned();
    // One limit, in the provider's field: the smaller when the client sent both.
    let limit = req.requested_output_tokens();
    req.max_tokens = None;
    req.max_completion_tokens = None;
    match provider.max_tokens_field {
        MaxTokensField::MaxTokens => req.max_tokens = limit,
        MaxTokensField::MaxCompletionTokens => req.max_completion_tokens = limit,
    }
    let caps = provider.capabilities;
    if !caps.has(Capability::MessageName) {
        for m in &mut req.messages {
            m.name = None;
        }
    }
    if !caps.has(Capability::Logprobs) && req.logprobs == Some(false) {
        req.logprobs = None;
    }
    if !caps.has(Capability::LogitBias) && req.logit_bias.as_ref().is_some_and(|b| b.is_empty()) {
        req.logit_bias = None;
    }
    if !caps.has(Capability::MultipleChoices) && req.n == Some(1) {
        req.n = None;
    }
    // Guarded fields the provider may not get are held back for this body only: the next
    // provider may take them.
    let (held, kept) = std::mem::take(&mut req.extra.0)
        .into_iter()
        .partition(|(k, _)| withheld(provider, k) || (tier.is_some() && k == "service_tier"));
    req.extra.0 = kept;
    let body = to_vec(req);
    req.extra.0.extend(held);
    match tier {
        Some(tier) => body.map(|b| with_field(b, "service_tier", tier)),
        None => body,
    }
}

/// A serialized JSON object with one more string field, written before its closing brace.
/// `value` is one of the configuration's service tiers, which need no escaping.
fn with_field(mut body: Vec<u8>, name: &str, value: &str) -> Vec<u8> {
    if body.pop() != Some(b'}') {
        return body;
    }
    if body.len() > 1 {
        body.push(b',');
    }
    body.extend_from_slice(format!("\"{name}\":\"{value}\"}}").as_bytes());
    body
}

/// Whether a client's field `name` is kept from `provider`: a guarded field
/// ([`GUARDED_FIELDS`]) its `pass_fields` does not name.
fn withheld(provider: &Provider, name: &str) -> bool {
    GUARDED_FIELDS.contains(&name) && !provider.pass_fields.iter().any(|f| f == name)
}

/// The embeddings body for `provider`'s model name.
pub fn embeddings(req: &mut EmbeddingsRequest, model: &str) -> Result<Vec<u8>, RouterError> {
    req.model = model.to_owned();
    to_vec(req)
}

fn to_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, RouterError> {
    serde_json::to_vec(value).map_err(|e| RouterError::Internal {
        detail: format!("serializing the upstream body: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Config;
    use serde_json::{json, Value};

    fn providers() -> Config {
        let doc = json!({
            "providers": {
                "groq": {"keys": [{"id": "g", "secret": "G"}]},
                "together": {"keys": [{"id": "t", "secret": "T"}]}
            },
            "routes": {"fast": ["groq/x"]}
        });
        Config::parse(&doc.to_string(), |_| None).unwrap()
    }

    fn adapt(provider: &str, body: Value) -> Value {
        let c = providers();
        let p = c.providers.iter().find(|p| p.name == provider).unwrap();
        let text = body.to_string();
        let mut req = ChatRequest::parse(text.as_bytes()).unwrap();
        serde_json::from_slice(&chat(&mut req, p, "their-model", None).unwrap()).unwrap()
    }

    #[test]
    fn groq_gets_its_fields() {
        let out = adapt(
            "groq",
            json!({"model": "fast", "max_tokens": 100, "n": 1, "logprobs": false, "logit_bias": {},
                   "messages": [{"role": "user", "content": "hi", "name": "ann"}],
                   "temperature": 0, "user": "u-1", "new_param": [1]}),
        );
        assert_eq!(
            out,
            json!({"model": "their-model", "max_completion_tokens": 100,
                   "messages": [{"role": "user", "content": "hi"}],
                   "temperature": 0, "user": "u-1", "new_param": [1]})
        );
    }

    #[test]
    fn together_keeps_what_it_supports_and_reads_max_tokens() {
        let out = adapt(
            "together",
            json!({"model": "fast", "max_completion_tokens": 50, "max_tokens": 80, "n": 2,
                   "logprobs": true, "logit_bias": {"1": 2},
                   "messages": [{"role": "user", "content": "hi", "name": "ann"}]}),
        );
        assert_eq!(out["max_tokens"], 50);
        assert!(out.get("max_completion_tokens").is_none());
        assert_eq!(out["n"], 2);
        assert_eq!(out["logprobs"], true);
        assert_eq!(out["logit_bias"], json!({"1": 2}));
        // Together's preset has no message_name: stripped.
        assert!(out["messages"][0].get("name").is_none());
    }

    #[test]
    fn embeddings_rename_the_model_only() {
        let mut req =
            EmbeddingsRequest::parse(br#"{"model":"embed","input":["a"],"dimensions":8}"#).unwrap();
        let out: Value =
            serde_json::from_slice(&embeddings(&mut req, "mistral-embed").unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"model": "mistral-embed", "input": ["a"], "dimensions": 8})
        );
    }

    #[test]
    fn adapting_again_for_the_next_provider_gives_its_own_body() {
        let c = providers();
        let groq = c.providers.iter().find(|p| p.name == "groq").unwrap();
        let together = c.providers.iter().find(|p| p.name == "together").unwrap();
        let body = json!({"model": "fast", "max_completion_tokens": 50, "max_tokens": 70,
                          "messages": [{"role": "user", "content": "hi", "name": "ann"}]});
        let text = body.to_string();
        let mut req = ChatRequest::parse(text.as_bytes()).unwrap();
        let first: Value =
            serde_json::from_slice(&chat(&mut req, groq, "g-model", None).unwrap()).unwrap();
        let second: Value =
            serde_json::from_slice(&chat(&mut req, together, "t-model", None).unwrap()).unwrap();
        let mut fresh = ChatRequest::parse(text.as_bytes()).unwrap();
        let direct: Value =
            serde_json::from_slice(&chat(&mut fresh, together, "t-model", None).unwrap()).unwrap();
        assert_eq!(first["model"], "g-model");
        assert_eq!(second, direct);
        assert_eq!(second["model"], "t-model");
        assert_eq!(second["max_tokens"], 50);
    }

    #[test]
    fn guarded_fields_reach_only_the_providers_that_take_them() {
        let doc = json!({
            "providers": {
                "groq": {"keys": [{"id": "g", "secret": "G"}], "pass_fields": ["service_tier"]},
                "together": {"keys": [{"id": "t", "secret": "T"}]}
            },
            "routes": {"fast": ["groq/x"]}
        });
        let c = Config::parse(&doc.to_string(), |_| None).unwrap();
        let groq = c.providers.iter().find(|p| p.name == "groq").unwrap();
        let together = c.providers.iter().find(|p| p.name == "together").unwrap();
        let body = json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}],
                          "service_tier": "flex", "store": true, "metadata": {"a": "b"},
                          "models": ["x", "y"], "provider": {"order": ["z"]}, "route": "fallback",
                          "transforms": [], "plugins": [], "seed": 7, "user": "u1"});
        let text = body.to_string();
        let mut req = ChatRequest::parse(text.as_bytes()).unwrap();
        let to_together: Value =
            serde_json::from_slice(&chat(&mut req, together, "t", None).unwrap()).unwrap();
        let to_groq: Value =
            serde_json::from_slice(&chat(&mut req, groq, "g", None).unwrap()).unwrap();
        for field in GUARDED_FIELDS {
            assert!(to_together.get(field).is_none(), "{field} reached together");
        }
        // Fields that are not guarded pass; groq takes the service tier it is allowed, after
        // the body for together held it back.
        assert_eq!(
            (to_together["seed"].clone(), to_together["user"].clone()),
            (json!(7), json!("u1"))
        );
        assert_eq!(to_groq["service_tier"], "flex");
        assert!(to_groq.get("store").is_none());
    }

    #[test]
    fn a_targets_service_tier_replaces_the_clients() {
        let c = providers();
        let groq = c.providers.iter().find(|p| p.name == "groq").unwrap();
        let body = json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}],
                          "service_tier": "on_demand", "seed": 7});
        let text = body.to_string();
        let mut req = ChatRequest::parse(text.as_bytes()).unwrap();
        let flex: Value =
            serde_json::from_slice(&chat(&mut req, groq, "g", Some("flex")).unwrap()).unwrap();
        assert_eq!(flex["service_tier"], "flex");
        assert_eq!(flex["seed"], 7);
        // The next attempt, on no tier, gets no tier: the client's is guarded.
        let plain: Value =
            serde_json::from_slice(&chat(&mut req, groq, "g", None).unwrap()).unwrap();
        assert!(plain.get("service_tier").is_none(), "{plain}");
        assert_eq!(
            with_field(b"{}".to_vec(), "a", "b"),
            br#"{"a":"b"}"#.to_vec()
        );
    }

    #[test]
    fn a_response_format_passes_as_written() {
        // Its schema's key order is the order a model writes structured output in.
        let c = providers();
        let groq = c.providers.iter().find(|p| p.name == "groq").unwrap();
        let format = r#"{"type":"json_schema","json_schema":{"name":"p","schema":{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}}}}}"#;
        let body = format!(
            r#"{{"model":"fast","messages":[{{"role":"user","content":"hi"}}],"response_format":{format}}}"#
        );
        let mut req = ChatRequest::parse(body.as_bytes()).unwrap();
        let out = String::from_utf8(chat(&mut req, groq, "g", None).unwrap()).unwrap();
        assert!(
            out.contains(&format!(r#""response_format":{format}"#)),
            "{out}"
        );
    }

    #[test]
    fn pass_fields_name_guarded_fields_only() {
        let doc = json!({
            "providers": {"groq": {"keys": [{"id": "g", "secret": "G"}], "pass_fields": ["seed"]}},
            "routes": {"fast": ["groq/x"]}
        });
        let err = Config::parse(&doc.to_string(), |_| None).unwrap_err();
        assert_eq!(err.path, "providers.groq.pass_fields[0]");
    }
}
