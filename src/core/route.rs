//! Step 7: which providers may serve the request. A model name (an alias such as `fast` or a
//! concrete model id) names an ordered list of targets; only targets whose provider has every
//! capability the request needs are candidates. The classifier orders chat candidates;
//! embeddings use their model's route as it is. `core::failover` tries them in that order, with
//! the key each step chooses ([`Choice`]).

use super::config::{Capability, Config, Key, Provider, Secret, Target};
use super::error::RouterError;
use super::request::{ChatRequest, EmbeddingsRequest};

/// A target that can serve the request, with the key to use.
#[derive(Debug, Clone, Copy)]
pub struct Choice<'c> {
    pub target: &'c Target,
    pub provider: &'c Provider,
    pub key: &'c Key,
    pub secret: &'c Secret,
}

/// What a chat request needs from a provider. Fields a provider lacks but the request can do
/// without (`messages[].name`, `logprobs: false`, `n: 1`, an empty `logit_bias`) are not needs:
/// the adapter strips them.
pub fn chat_needs(req: &ChatRequest) -> Vec<Capability> {
    let mut needs = vec![Capability::Chat];
    if req.streams() {
        needs.push(Capability::Streaming);
    }
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        needs.push(Capability::Tools);
    }
    if req
        .response_format
        .as_ref()
        .is_some_and(|f| f.kind == "json_schema")
    {
        needs.push(Capability::JsonSchema);
    }
    let media = req.media();
    if media.images {
        needs.push(Capability::Vision);
    }
    if media.audio {
        needs.push(Capability::Audio);
    }
    if req.logprobs == Some(true) || req.top_logprobs.is_some() {
        needs.push(Capability::Logprobs);
    }
    if req.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        needs.push(Capability::LogitBias);
    }
    if req.n.is_some_and(|n| n > 1) {
        needs.push(Capability::MultipleChoices);
    }
    needs
}

/// The targets that may serve an embeddings request, in order.
pub fn embeddings<'c>(
    config: &'c Config,
    req: &EmbeddingsRequest,
) -> Result<Vec<&'c Target>, RouterError> {
    serving(config, &req.model, &[Capability::Embeddings])
}

/// The first target for `model` that has every need and a usable key: what the planner
/// (`core::failover`) starts from, as one call for the tests.
#[cfg(test)]
pub fn choose<'c>(
    config: &'c Config,
    model: &str,
    needs: &[Capability],
) -> Result<Choice<'c>, RouterError> {
    first_usable(config, &serving(config, model, needs)?)
}

/// The targets of `model` whose provider has every need, in order: 404 for an unknown model,
/// 400 naming the first missing capability when none has them all.
pub fn serving<'c>(
    config: &'c Config,
    model: &str,
    needs: &[Capability],
) -> Result<Vec<&'c Target>, RouterError> {
    let targets = config
        .targets(model)
        .ok_or_else(|| RouterError::ModelNotFound {
            model: model.chars().take(200).collect(),
        })?;
    let mut missing_need: Option<Capability> = None;
    let capable: Vec<&Target> = targets
        .iter()
        .filter(|t| {
            let lacking = config.providers.get(t.provider).map_or(needs.first(), |p| {
                needs.iter().find(|n| !p.capabilities.has(**n))
            });
            if let Some(need) = lacking {
                missing_need.get_or_insert(*need);
            }
            lacking.is_none()
        })
        .collect();
    if capable.is_empty() {
        return Err(RouterError::Unsupported {
            model: model.chars().take(200).collect(),
            needs: missing_need.map_or("this request", Capability::name),
        });
    }
    Ok(capable)
}

/// Every key with its secret set of `targets`' providers, as choices: in the targets' order,
/// then each provider's keys in order.
pub fn usable_keys<'c, 't>(
    config: &'c Config,
    targets: &'t [&'c Target],
) -> impl Iterator<Item = Choice<'c>> + 't
where
    'c: 't,
{
    targets.iter().flat_map(move |target| {
        let provider = config.providers.get(target.provider);
        provider.into_iter().flat_map(move |provider| {
            provider.keys.iter().filter_map(move |key| {
                Some(Choice {
                    target,
                    provider,
                    key,
                    secret: key.value.as_ref()?,
                })
            })
        })
    })
}

/// The first of `targets` whose provider has a key with its secret set; otherwise the error
/// names the secrets to set.
#[cfg(test)]
fn first_usable<'c>(config: &'c Config, targets: &[&'c Target]) -> Result<Choice<'c>, RouterError> {
    usable_keys(config, targets).next().ok_or_else(|| {
        let mut names: Vec<String> = Vec::new();
        for target in targets {
            for key in config
                .providers
                .get(target.provider)
                .into_iter()
                .flat_map(|p| &p.keys)
            {
                if !names.contains(&key.secret_name) {
                    names.push(key.secret_name.clone());
                }
            }
        }
        RouterError::MissingSecret { names }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(secrets: &[&str]) -> Config {
        let doc = json!({
            "providers": {
                "groq": {"keys": [{"id": "g1", "secret": "GROQ_KEY"}]},
                "together": {"keys": [{"id": "t1", "secret": "TOGETHER_KEY"}]},
                "mistral": {"keys": [{"id": "m1", "secret": "MISTRAL_KEY"}]}
            },
            "routes": {
                "fast": ["groq/llama-3.1-8b-instant", "together/meta-llama/Llama-3.1-8B"],
                "embed": ["groq/none", "mistral/mistral-embed"]
            }
        });
        let secrets: Vec<String> = secrets.iter().map(|s| (*s).to_owned()).collect();
        Config::parse(&doc.to_string(), |name| {
            secrets
                .contains(&name.to_owned())
                .then(|| format!("value-of-{name}"))
        })
        .unwrap()
    }

    fn req(extra: serde_json::Value) -> ChatRequest<'static> {
        let mut body = json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        // The request borrows its body; a test's may live as long as the test run.
        ChatRequest::parse(Box::leak(body.to_string().into_boxed_str()).as_bytes()).unwrap()
    }

    fn chat<'c>(c: &'c Config, r: &ChatRequest) -> Result<Choice<'c>, RouterError> {
        choose(c, &r.model, &chat_needs(r))
    }

    fn provider_for(c: &Config, extra: serde_json::Value) -> Result<String, RouterError> {
        chat(c, &req(extra)).map(|ch| ch.provider.name.clone())
    }

    #[test]
    fn plain_requests_take_the_first_target() {
        let c = config(&["GROQ_KEY", "TOGETHER_KEY"]);
        let choice = chat(&c, &req(json!({}))).unwrap();
        assert_eq!(choice.provider.name, "groq");
        assert_eq!(choice.target.model, "llama-3.1-8b-instant");
        assert_eq!(choice.key.id, "g1");
        assert_eq!(choice.secret.expose(), "value-of-GROQ_KEY");
    }

    #[test]
    fn needs_groq_lacks_go_to_the_next_provider() {
        let c = config(&["GROQ_KEY", "TOGETHER_KEY"]);
        let cases = [
            (json!({"logprobs": true}), "together"),
            (json!({"top_logprobs": 2}), "together"),
            (json!({"logit_bias": {"50256": -100}}), "together"),
            (json!({"n": 3}), "together"),
            // What the adapter can strip stays on Groq.
            (json!({"logprobs": false}), "groq"),
            (json!({"logit_bias": {}}), "groq"),
            (json!({"n": 1}), "groq"),
            (
                json!({"messages": [{"role": "user", "content": "hi", "name": "ann"}]}),
                "groq",
            ),
            (
                json!({"stream": true, "tools": [{"type": "function"}]}),
                "groq",
            ),
        ];
        for (extra, want) in cases {
            assert_eq!(provider_for(&c, extra.clone()).unwrap(), want, "{extra}");
        }
    }

    #[test]
    fn nobody_capable_is_a_400_naming_the_need() {
        let c = config(&["GROQ_KEY", "TOGETHER_KEY"]);
        // Neither Groq nor Together takes `messages[].name` (normally stripped, never a need).
        let err = choose(&c, "fast", &[Capability::MessageName]).unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.message().contains("message_name"), "{}", err.message());
    }

    #[test]
    fn missing_secrets_are_skipped_then_named() {
        let c = config(&["TOGETHER_KEY"]);
        assert_eq!(provider_for(&c, json!({})).unwrap(), "together");
        let c = config(&[]);
        assert_eq!(
            chat(&c, &req(json!({}))).unwrap_err(),
            RouterError::MissingSecret {
                names: vec!["GROQ_KEY".into(), "TOGETHER_KEY".into()]
            }
        );
    }

    #[test]
    fn unknown_models_are_404() {
        let c = config(&["GROQ_KEY"]);
        let err = chat(&c, &req(json!({"model": "gpt-5"}))).unwrap_err();
        assert_eq!(err.status(), 404);
        assert_eq!(err.code(), Some("model_not_found"));
    }

    #[test]
    fn embeddings_skip_providers_without_them() {
        let c = config(&["GROQ_KEY", "MISTRAL_KEY"]);
        let r = EmbeddingsRequest::parse(br#"{"model":"embed","input":"x"}"#).unwrap();
        let targets = embeddings(&c, &r).unwrap();
        assert_eq!(targets.len(), 1);
        assert_eq!(c.providers[targets[0].provider].name, "mistral");
        assert_eq!(targets[0].model, "mistral-embed");
    }
}
