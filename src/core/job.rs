//! Steps 5 to 7 in one: a request body made ready for the attempt loop. The body is parsed
//! ([`request`](super::request)), classified or matched to its targets
//! ([`classify`](super::classify), [`route`](super::route)), and turned into a [`Job`] (what
//! the loop books and how long it may take) and a [`Payload`] that adapts itself to each
//! choice ([`adapt`](super::adapt)).

use std::borrow::Cow;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::config::{Config, RateLimitDialect, Target};
use super::endpoint::Endpoint;
use super::error::RouterError;
use super::request::{ChatRequest, EmbeddingsRequest, Json};
use super::responses::{self, ResponsesRequest};
use super::route::Choice;
use super::stream::{Body, INTERRUPTED_EVENT, WHOLE_JSON};
use super::{adapt, classify, latency, quota, report, route, tokens};

/// What one request asks of the upstreams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The model the client asked for (a route name or a model id).
    pub model: String,
    /// The client's `Accept`, carried over.
    pub accept: Option<String>,
    /// Tokens to book (estimated prompt + output).
    pub tokens: u64,
    /// Of which the estimated prompt.
    pub prompt_tokens: u64,
    /// The prompt-cache prefix hash (0 when no candidate caches prompts).
    pub prefix_hash: u64,
    /// How long the request may take to find an answer.
    pub deadline_ms: u64,
    /// How long one attempt may wait for the upstream's headers and first chunk: shorter on
    /// the fast path.
    pub attempt_timeout_ms: u64,
    /// Whether an attempt that times out says the provider is slow to start (and so counts
    /// towards its circuit breaker): true for a stream (the wait is for its first event) and on
    /// the fast path (short answers); false for a non-streamed slow-path request, whose answer
    /// may simply be long.
    pub timeout_blames_provider: bool,
    /// Whether every event of a stream handed on is checked (`failover.check_stream_events`).
    pub check_events: bool,
    /// Whether the quota ledger may book it (its answers say how).
    pub booked: bool,
    /// Whether it takes the fast path: its attempts' timeouts follow the learned latency, and
    /// a slow first attempt may be hedged (`core::latency`).
    pub fast: bool,
    /// Which answers its latency is learned with.
    pub kind: latency::Kind,
    /// The route whose targets are tried in order of their learned latency, when it says so
    /// (`order = "latency"`).
    pub latency_route: Option<String>,
}

/// The client's request, parsed once and adapted again for each choice.
#[derive(Debug)]
pub enum Payload<'a> {
    Chat(ChatRequest<'a>),
    Embeddings(EmbeddingsRequest),
    /// A Responses request, and its chat form (what is routed, and sent to providers without
    /// the Responses API).
    Responses {
        chat: ChatRequest<'a>,
        native: ResponsesRequest<'a>,
    },
}

/// What an attempt's answer is, for the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// A chat completion or embeddings, as the client asked: handed on.
    Chat,
    /// A chat completion stream for which the router asked the provider for the usage chunk
    /// the client did not ask for: handed on without that chunk.
    ChatUsageAsked,
    /// A provider's own Responses API answer: handed on; its stream ends with an event of
    /// [`responses::END_EVENTS`], not `data: [DONE]`.
    Responses,
    /// A chat completion answering a Responses request: translated, and a Response object
    /// repeats these request fields.
    FromChat(Map<String, Value>),
}

/// How a successful answer is taken, decided from its shape and the kind of its body before
/// anything reaches the client: how much of it is read first, when it fails over, and how the
/// rest is handed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taking {
    /// How much of a JSON answer is read whole before anything is sent (one to translate is
    /// read whole however long it is).
    pub whole: usize,
    /// Whether the answer is translated (a Responses request served by a chat completion).
    pub translated: bool,
    /// The event written to the client when a handed-on event stream is cut.
    pub interrupted: Option<&'static str>,
    /// The events that end such a stream instead of `data: [DONE]` (the Responses API's).
    pub ends: Option<&'static [&'static str]>,
    /// Whether the usage-only chunk the router asked for is kept from the client.
    pub drop_usage: bool,
}

/// The longest JSON chat answer translated into a Response object (it is read whole).
pub const MAX_TRANSLATED: usize = 8 << 20;

impl Shape {
    /// How an answer of `kind` is taken for this shape.
    pub fn taking(&self, kind: Body) -> Taking {
        let events = kind == Body::Events;
        let translated = matches!(self, Shape::FromChat(_));
        let (interrupted, ends): (_, Option<&'static [&'static str]>) = match self {
            Shape::Responses => (responses::INTERRUPTED_EVENT, Some(&responses::END_EVENTS)),
            _ => (INTERRUPTED_EVENT, None),
        };
        Taking {
            whole: if translated {
                MAX_TRANSLATED
            } else {
                WHOLE_JSON
            },
            translated,
            interrupted: events.then_some(interrupted),
            ends,
            drop_usage: events && *self == Shape::ChatUsageAsked,
        }
    }
}

impl Taking {
    /// Whether the start of an answer of `kind` says it is no answer, so that it fails over:
    /// `whole` is all of a JSON answer that was read whole (checked whole: one cut yet ended
    /// cleanly fails), `first` the start of the first chunk otherwise (none: the body ended or
    /// failed before it). A JSON answer to translate that could not be read whole fails too.
    pub fn fails(&self, kind: Body, whole: Option<&[u8]>, first: Option<&[u8]>) -> bool {
        match whole {
            Some(body) => kind.start_fails(body) || kind.whole_fails(body),
            None => {
                (self.translated && kind == Body::Json)
                    || first.is_none_or(|start| kind.start_fails(start))
            }
        }
    }
}

/// One attempt's request: its body, the provider's path for it, and what its answer is.
#[derive(Debug)]
pub struct Outgoing {
    pub body: Vec<u8>,
    /// `/chat/completions`, `/embeddings` or `/responses`.
    pub endpoint: &'static str,
    pub shape: Shape,
}

impl Payload<'_> {
    /// The upstream request for `choice`; `billed`: whether the caller's books (a user's, or
    /// a caller's with a tier) wait for the answer's usage.
    pub fn body_for(&mut self, choice: &Choice<'_>, billed: bool) -> Result<Outgoing, RouterError> {
        let (model, tier) = (&choice.target.model, choice.target.tier.as_deref());
        let chat = |body| Outgoing {
            body,
            endpoint: "/chat/completions",
            shape: Shape::Chat,
        };
        Ok(match self {
            Payload::Chat(req) if asks_usage(req, choice, billed) && include_usage().is_some() => {
                // The client's own `stream_options` (without `include_usage`) is set aside
                // for this body.
                let fields = &mut req.extra.0;
                let own = fields
                    .iter()
                    .position(|(k, _)| k == "stream_options")
                    .map(|i| fields.remove(i));
                fields.extend(include_usage().map(|v| (Cow::Borrowed("stream_options"), v)));
                let body = adapt::chat(req, choice.provider, model, tier);
                req.extra.0.pop();
                req.extra.0.extend(own);
                Outgoing {
                    body: body?,
                    endpoint: "/chat/completions",
                    shape: Shape::ChatUsageAsked,
                }
            }
            Payload::Chat(req) => chat(adapt::chat(req, choice.provider, model, tier)?),
            Payload::Embeddings(req) => Outgoing {
                body: adapt::embeddings(req, model)?,
                endpoint: "/embeddings",
                shape: Shape::Chat,
            },
            Payload::Responses { native: req, .. } if responses::native(choice.provider) => {
                Outgoing {
                    body: req.native_body(choice.provider, model, tier),
                    endpoint: "/responses",
                    shape: Shape::Responses,
                }
            }
            Payload::Responses { chat: req, native } => Outgoing {
                body: adapt::chat(req, choice.provider, model, tier)?,
                endpoint: "/chat/completions",
                shape: Shape::FromChat(native.echo()),
            },
        })
    }
}

/// `stream_options` asking for the usage chunk.
fn include_usage() -> Option<Json<'static>> {
    serde_json::from_str::<&'static RawValue>(r#"{"include_usage":true}"#)
        .ok()
        .map(Json)
}

/// Whether the router asks the provider for a stream's usage the client did not ask for: when
/// something is counted by it (the caller is `billed`: a user, or a caller with a tier; or the
/// model has a price, for the spend). Groq reports it in its last chunk (`x_groq.usage`) anyway. Keeping that chunk
/// from the client costs a JavaScript step per chunk, which the other streams do not pay.
fn asks_usage(req: &ChatRequest<'_>, choice: &Choice<'_>, billed: bool) -> bool {
    let provider = choice.provider;
    let priced = provider.prices.contains_key(&choice.target.model);
    let asked = req.extra.get("stream_options").is_some_and(|o| {
        serde_json::from_str::<Value>(o.text())
            .ok()
            .and_then(|v| v.get("include_usage")?.as_bool())
            == Some(true)
    });
    req.streams() && !asked && provider.dialect != RateLimitDialect::Groq && (billed || priced)
}

/// The headers of the client's request the router reads, as sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientHeaders<'a> {
    pub accept: Option<&'a str>,
    /// [`classify::PATH_HEADER`].
    pub path: Option<&'a str>,
    /// [`classify::BUDGET_HEADER`].
    pub latency_budget_ms: Option<&'a str>,
}

/// A request ready for the attempt loop.
#[derive(Debug)]
pub struct Prepared<'c, 'a> {
    /// The candidates, in order.
    pub targets: Vec<&'c Target>,
    pub job: Job,
    /// The request, borrowing from the body it was parsed from.
    pub payload: Payload<'a>,
    /// The routing decision's headers (`x-router-path`, `x-router-reason`).
    pub explain: report::Headers,
}

/// Parses, checks and routes the body of a chat or embeddings request.
pub fn prepare<'c, 'a>(
    config: &'c Config,
    endpoint: Endpoint,
    body: &'a [u8],
    headers: ClientHeaders<'_>,
) -> Result<Prepared<'c, 'a>, RouterError> {
    let deadline_ms = deadline_ms(config, headers.latency_budget_ms);
    let accept = headers.accept.map(str::to_owned);
    match endpoint {
        Endpoint::ChatCompletions => {
            let request = ChatRequest::parse(body)?;
            let hints = classify::Hints {
                path: headers.path,
                latency_budget_ms: headers.latency_budget_ms,
            };
            let decision = classify::classify(config, &request, hints)?;
            // The route the request goes to: for an alias, the path it was given.
            let route = match request.model.as_str() {
                "auto" | "fast" | "slow" => decision.path.name(),
                model => model,
            };
            check_bounds(config, &request, route)?;
            let fast = decision.path == classify::Path::Fast;
            let attempt_timeout_ms = if fast {
                let f = &config.failover;
                f.attempt_timeout_ms.min(f.fast_attempt_timeout_ms)
            } else {
                config.failover.attempt_timeout_ms
            };
            let timeout_blames_provider = fast || request.streams();
            let output = request
                .requested_output_tokens()
                .unwrap_or(config.classifier.default_output_tokens);
            // Only models with prompt caching use the prefix; hashing it costs a serialization.
            let caching = decision
                .targets
                .iter()
                .any(|t| quota::caches_prompts(&t.model));
            let prefix_hash = if caching {
                quota::prefix_hash(&request)
            } else {
                0
            };
            Ok(Prepared {
                explain: vec![
                    ("x-router-path", decision.path.name().to_owned()),
                    ("x-router-reason", decision.reason_header()),
                ],
                targets: decision.targets,
                job: Job {
                    model: request.model.clone(),
                    accept,
                    // Every choice is an answer of its own.
                    tokens: request
                        .prompt_tokens
                        .saturating_add(output.saturating_mul(request.n.unwrap_or(1))),
                    prompt_tokens: request.prompt_tokens,
                    prefix_hash,
                    deadline_ms,
                    attempt_timeout_ms,
                    timeout_blames_provider,
                    check_events: config.failover.check_stream_events,
                    booked: true,
                    fast,
                    kind: latency::Kind::of(request.streams()),
                    latency_route: config.orders_by_latency(route).then(|| route.to_owned()),
                },
                payload: Payload::Chat(request),
            })
        }
        Endpoint::Embeddings => {
            let request = EmbeddingsRequest::parse(body)?;
            // The input is all an embedding costs: its estimate is booked (a caller's tokens
            // per minute and per day count it) until the answer's usage says what it was.
            let input = tokens::estimate(body);
            Ok(Prepared {
                targets: route::embeddings(config, &request)?,
                job: Job {
                    model: request.model.clone(),
                    accept,
                    tokens: input,
                    prompt_tokens: input,
                    prefix_hash: 0,
                    deadline_ms,
                    attempt_timeout_ms: config.failover.attempt_timeout_ms,
                    // An embedding's answer is short.
                    timeout_blames_provider: true,
                    check_events: false,
                    booked: false,
                    fast: false,
                    kind: latency::Kind::Json,
                    latency_route: None,
                },
                payload: Payload::Embeddings(request),
                explain: Vec::new(),
            })
        }
        other => Err(RouterError::Internal {
            detail: format!("{other:?} has no body to prepare"),
        }),
    }
}

/// A Responses request's body, parsed, and its chat form, which [`prepare_responses`] routes
/// (the caller keeps the form alive as long as the body).
pub fn chat_form(body: &[u8]) -> Result<(ResponsesRequest<'_>, Vec<u8>), RouterError> {
    let native = ResponsesRequest::parse(body)?;
    let chat = native.to_chat()?;
    Ok((native, chat))
}

/// Checks and routes a Responses request, from what [`chat_form`] gave: as a chat completion,
/// on the candidates that can keep what it asks (only providers with the Responses API of
/// their own, when it uses what only they keep).
pub fn prepare_responses<'c, 'a>(
    config: &'c Config,
    native: ResponsesRequest<'a>,
    chat_form: &'a [u8],
    headers: ClientHeaders<'_>,
) -> Result<Prepared<'c, 'a>, RouterError> {
    let mut prepared = prepare(config, Endpoint::ChatCompletions, chat_form, headers)?;
    if let (Some(param), Some(field)) = (&native.native_only, native.state_field()) {
        prepared.targets.retain(|t| {
            config
                .providers
                .get(t.provider)
                .is_some_and(|p| native.served_by(p))
        });
        if prepared.targets.is_empty() {
            return Err(RouterError::InvalidRequest {
                message: format!(
                    "`{param}` needs what a provider keeps (or runs) with its own Responses API \
                     for the key it is called with, which this router shares between its \
                     clients: it is served only by a provider whose `pass_fields` names \
                     `{field}`, and none for `{}` here does.",
                    native.model.chars().take(200).collect::<String>()
                ),
                param: Some(param.clone()),
                code: "unsupported_parameter",
            });
        }
    }
    let Payload::Chat(chat) = prepared.payload else {
        return Err(RouterError::Internal {
            detail: "a Responses request without its chat form".to_owned(),
        });
    };
    prepared.payload = Payload::Responses { chat, native };
    Ok(prepared)
}

/// The gateway's bounds on what one chat request may ask for: `n` choices (per `route`, the
/// route it goes to) and an output-token limit, each refused with a 400 naming the field when
/// over.
fn check_bounds(
    config: &Config,
    request: &ChatRequest<'_>,
    route: &str,
) -> Result<(), RouterError> {
    let gateway = &config.gateway;
    let over = |param: &str, limit: u64, what: &str| RouterError::InvalidRequest {
        message: format!("`{param}` must be at most {limit} ({what} this router allows)."),
        param: Some(param.to_owned()),
        code: "invalid_value",
    };
    let max_n = gateway
        .max_n_per_route
        .get(route)
        .copied()
        .unwrap_or(gateway.max_n);
    if request.n.is_some_and(|n| n > max_n) {
        return Err(over("n", max_n, "the most choices"));
    }
    for (param, value) in [
        ("max_tokens", request.max_tokens),
        ("max_completion_tokens", request.max_completion_tokens),
    ] {
        if value.is_some_and(|v| v > gateway.max_output_tokens) {
            return Err(over(
                param,
                gateway.max_output_tokens,
                "the largest output-token limit",
            ));
        }
    }
    Ok(())
}

/// The request's deadline: the configured one, shortened by the client's latency budget.
pub fn deadline_ms(config: &Config, budget_header: Option<&str>) -> u64 {
    let deadline = config.failover.deadline_ms;
    classify::latency_budget_ms(budget_header)
        .filter(|b| *b > 0)
        .map_or(deadline, |b| b.min(deadline))
}

/// Checks a request body's `Content-Type` (JSON or nothing: 415 otherwise) and its declared
/// length against the limit (413). Returns the declared length when there is one.
pub fn check_body(
    config: &Config,
    content_type: Option<&str>,
    content_length: Option<&str>,
) -> Result<Option<u64>, RouterError> {
    if let Some(ct) = content_type {
        let media = ct.split(';').next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case("application/json") {
            return Err(RouterError::UnsupportedMediaType {
                content_type: media.chars().take(100).collect(),
            });
        }
    }
    let limit = config.gateway.max_body_bytes;
    let declared = content_length.and_then(|l| l.trim().parse::<u64>().ok());
    if declared.is_some_and(|l| l > limit) {
        return Err(RouterError::BodyTooLarge { limit });
    }
    Ok(declared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> Config {
        let doc = json!({
            "providers": {
                "groq": {"keys": [{"id": "g", "secret": "G"}]},
                "mistral": {"keys": [{"id": "m", "secret": "M"}]}
            },
            "routes": {"fast": ["groq/llama-3.1-8b-instant"], "embed": ["mistral/mistral-embed"]},
            "failover": {"deadline_ms": 5000}
        });
        Config::parse(&doc.to_string(), |n| {
            (!n.ends_with("_HASHES")).then(|| "k".to_owned())
        })
        .unwrap()
    }

    #[test]
    fn a_chat_request_is_classified_and_its_tokens_booked() {
        let c = config();
        let body =
            br#"{"model":"fast","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;
        let headers = ClientHeaders {
            accept: Some("text/event-stream"),
            latency_budget_ms: Some("800"),
            ..ClientHeaders::default()
        };
        let mut p = prepare(&c, Endpoint::ChatCompletions, body, headers).unwrap();
        assert_eq!(p.explain[0], ("x-router-path", "fast".to_owned()));
        assert_eq!(p.job.deadline_ms, 800);
        assert_eq!(p.job.accept.as_deref(), Some("text/event-stream"));
        assert!(p.job.booked);
        assert!(p.job.tokens > 50);
        let choice = route::usable_keys(&c, &p.targets).next().unwrap();
        let sent: serde_json::Value =
            serde_json::from_slice(&p.payload.body_for(&choice, false).unwrap().body).unwrap();
        assert_eq!(sent["model"], "llama-3.1-8b-instant");
    }

    #[test]
    fn the_fast_path_gets_the_short_attempt_timeout_and_only_long_answers_spare_the_breaker() {
        let doc = json!({
            "providers": {
                "groq": {"keys": [{"id": "g", "secret": "G"}]},
                "mistral": {"keys": [{"id": "m", "secret": "M"}]}
            },
            "routes": {"fast": ["groq/llama-3.1-8b-instant"], "slow": ["mistral/mistral-large-latest"]},
            "failover": {"attempt_timeout_ms": 30000, "fast_attempt_timeout_ms": 4000}
        });
        let c = Config::parse(&doc.to_string(), |n| {
            (!n.ends_with("_HASHES")).then(|| "k".to_owned())
        })
        .unwrap();
        for (model, stream, timeout, blames) in [
            ("fast", false, 4_000, true),
            ("fast", true, 4_000, true),
            ("slow", false, 30_000, false),
            ("slow", true, 30_000, true),
        ] {
            let body = json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
                .to_string();
            let p = prepare(
                &c,
                Endpoint::ChatCompletions,
                body.as_bytes(),
                ClientHeaders::default(),
            )
            .unwrap();
            assert_eq!(p.job.attempt_timeout_ms, timeout, "{model} stream={stream}");
            assert_eq!(
                p.job.timeout_blames_provider, blames,
                "{model} stream={stream}"
            );
        }
    }

    #[test]
    fn n_and_the_output_limit_are_bounded_and_every_choice_is_booked() {
        let doc = json!({
            "gateway": {"max_n": 4, "max_output_tokens": 1000, "max_n_per_route": {"lite": 2}},
            "providers": {"together": {"keys": [{"id": "t", "secret": "T"}]}},
            "routes": {"slow": ["together/m"], "lite": ["together/m2"]},
        });
        let c = Config::parse(&doc.to_string(), |n| {
            (!n.ends_with("_HASHES")).then(|| "k".to_owned())
        })
        .unwrap();
        let prepare_with = |extra: serde_json::Value| {
            let mut body =
                json!({"model": "slow", "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let text = body.to_string();
            prepare(
                &c,
                Endpoint::ChatCompletions,
                text.as_bytes(),
                ClientHeaders::default(),
            )
            .map(|p| p.job.tokens)
        };
        let one = prepare_with(json!({"max_tokens": 100, "n": 1})).unwrap();
        let four = prepare_with(json!({"max_tokens": 100, "n": 4})).unwrap();
        assert_eq!(four - one, 300, "each of the four choices books its output");
        // A route of its own caps n lower; the default route keeps the gateway's.
        assert!(prepare_with(json!({"n": 4})).is_ok());
        assert!(prepare_with(json!({"n": 2, "model": "lite"})).is_ok());
        for (extra, param) in [
            (json!({"n": 3, "model": "lite"}), "n"),
            (json!({"n": 5}), "n"),
            (json!({"max_tokens": 1001}), "max_tokens"),
            (
                json!({"max_completion_tokens": 5000}),
                "max_completion_tokens",
            ),
        ] {
            match prepare_with(extra.clone()) {
                Err(RouterError::InvalidRequest {
                    param: Some(p),
                    code,
                    ..
                }) => {
                    assert_eq!((p.as_str(), code), (param, "invalid_value"), "{extra}");
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_embeddings_request_is_routed_by_its_model_and_not_booked() {
        let c = config();
        let body = br#"{"model":"embed","input":"hi"}"#;
        let p = prepare(&c, Endpoint::Embeddings, body, ClientHeaders::default()).unwrap();
        assert!(!p.job.booked);
        // Its input is what it costs a caller's token windows, all of it prompt.
        assert_eq!(p.job.tokens, crate::core::tokens::estimate(body));
        assert!(p.job.tokens > 0);
        assert_eq!(p.job.prompt_tokens, p.job.tokens);
        let long = format!(r#"{{"model":"embed","input":"{}"}}"#, "word ".repeat(400));
        let longer = prepare(
            &c,
            Endpoint::Embeddings,
            long.as_bytes(),
            ClientHeaders::default(),
        );
        assert!(longer.unwrap().job.tokens >= 400);
        assert_eq!(p.job.deadline_ms, 5000);
        assert!(p.explain.is_empty());
        assert_eq!(p.targets.len(), 1);
    }

    #[test]
    fn bodies_are_checked_before_they_are_read() {
        let c = config();
        assert_eq!(check_body(&c, None, Some("12")).unwrap(), Some(12));
        assert_eq!(
            check_body(&c, Some("application/json; charset=utf-8"), None).unwrap(),
            None
        );
        assert!(matches!(
            check_body(&c, Some("text/plain"), None),
            Err(RouterError::UnsupportedMediaType { .. })
        ));
        let over = (c.gateway.max_body_bytes + 1).to_string();
        assert!(matches!(
            check_body(&c, None, Some(&over)),
            Err(RouterError::BodyTooLarge { .. })
        ));
    }

    #[test]
    fn an_answer_is_taken_as_its_shape_and_kind_say() {
        let chat = Shape::Chat.taking(Body::Events);
        assert_eq!(chat.interrupted, Some(INTERRUPTED_EVENT));
        assert_eq!(
            (chat.ends, chat.drop_usage, chat.whole),
            (None, false, WHOLE_JSON)
        );
        // A JSON answer is cut, if ever, by failing: no event is written into it.
        assert_eq!(Shape::Chat.taking(Body::Json).interrupted, None);
        // Only the chunk the router asked for is kept back, and only from a stream.
        assert!(Shape::ChatUsageAsked.taking(Body::Events).drop_usage);
        assert!(!Shape::ChatUsageAsked.taking(Body::Json).drop_usage);
        let native = Shape::Responses.taking(Body::Events);
        assert_eq!(native.interrupted, Some(responses::INTERRUPTED_EVENT));
        assert_eq!(native.ends, Some(&responses::END_EVENTS[..]));
        let translated = Shape::FromChat(Map::new()).taking(Body::Json);
        assert!(translated.translated);
        assert_eq!(translated.whole, MAX_TRANSLATED);
    }

    #[test]
    fn an_answer_that_is_no_answer_fails_over_before_its_first_byte() {
        let chat = Shape::Chat.taking(Body::Json);
        let ok = br#"{"id":"c","choices":[]}"#.as_slice();
        assert!(!chat.fails(Body::Json, Some(ok), Some(ok)));
        // Read whole, it is checked whole: cut yet ended cleanly, or an error object.
        assert!(chat.fails(Body::Json, Some(br#"{"id":"c","choi"#), None));
        assert!(chat.fails(Body::Json, Some(br#"{"error":{"message":"x"}}"#), None));
        // Not read whole (too long): its start is what is checked.
        assert!(!chat.fails(Body::Json, None, Some(br#"{"id":"c","cho"#)));
        assert!(chat.fails(Body::Json, None, Some(b"<html>")));
        // Nothing came before the body ended.
        assert!(chat.fails(Body::Json, None, None));
        let events = Shape::Chat.taking(Body::Events);
        assert!(!events.fails(Body::Events, None, Some(b"data: {\"choices\":[]}\n\n")));
        assert!(events.fails(Body::Events, None, Some(b"data: [DONE]\n\n")));
        // A JSON answer to translate must be read whole, or it cannot be translated.
        let translated = Shape::FromChat(Map::new()).taking(Body::Json);
        assert!(translated.fails(Body::Json, None, Some(ok)));
        assert!(!translated.fails(Body::Json, Some(ok), Some(ok)));
    }
}
