//! Step 6: fast path or slow path, and why.
//!
//! Short, latency-critical, structured calls go to the `fast` route (Groq's LPUs); the rest go
//! to the `slow` route (GPU providers). [`classify`] is a pure function of the parsed request,
//! the client's routing headers and the configuration: deterministic, total, never panicking.
//! It returns the path, the candidate targets in order (the chosen path's route, then the other
//! route's as fallback when the request fits it), and the reasons as short stable codes that the
//! response carries in `x-router-reason`. docs/routing.md lists every code and the policy.

use super::config::{Capability, Config, Target};
use super::error::RouterError;
use super::request::ChatRequest;
use super::route;

/// The header that forces a path for `auto` requests: `fast` or `slow`.
pub const PATH_HEADER: &str = "x-router-path";
/// The header that gives the client's latency budget in milliseconds.
pub const BUDGET_HEADER: &str = "x-router-latency-budget-ms";

/// The client's latency budget (header [`BUDGET_HEADER`]) in milliseconds; `None` when absent
/// or not a whole number. It picks the path here and caps the request's deadline in
/// `core::failover`.
pub fn latency_budget_ms(header: Option<&str>) -> Option<u64> {
    header.and_then(|b| b.trim().parse::<u64>().ok())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Fast,
    Slow,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Fast => "fast",
            Path::Slow => "slow",
        }
    }

    fn other(self) -> Path {
        match self {
            Path::Fast => Path::Slow,
            Path::Slow => Path::Fast,
        }
    }
}

/// Why a request took its path. The codes are stable: clients and dashboards match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `model: auto`: the router decided.
    Auto,
    /// `model: fast` / `model: slow`: the client chose the path.
    ModelFast,
    ModelSlow,
    /// A concrete model (or another route) was named: its route is used as it is.
    ModelPinned,
    /// `x-router-path` chose the path of an `auto` request.
    HeaderFast,
    HeaderSlow,
    /// `x-router-path` had a value other than `fast` / `slow`.
    HeaderInvalid,
    /// `x-router-path` was sent with a model other than `auto`, which wins.
    HeaderIgnored,
    /// A latency budget at or under the configured threshold.
    TightBudget,
    /// JSON mode, a JSON schema, tools or `tool_choice`.
    Structured,
    /// Prompt and requested output are both under the fast thresholds.
    Short,
    LongPrompt,
    LongOutput,
    /// The fast route has no provider for what the request carries or asks.
    NeedsVision,
    NeedsAudio,
    NeedsLogprobs,
    NeedsLogitBias,
    NeedsN,
    NeedsOther,
    /// Prompt plus output exceed the fast models' context window.
    ExceedsFastContext,
    /// Prompt plus output exceed one minute of the fast model's token quota: Groq would refuse
    /// it with a 413 whatever key is used.
    ExceedsFastTpm,
    /// An explicit fast choice could not be honoured; the slow path serves it.
    FallbackSlow,
    /// The configuration has no `fast` (or `slow`) route.
    NoFastRoute,
    NoSlowRoute,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::Auto => "auto",
            Reason::ModelFast => "model_fast",
            Reason::ModelSlow => "model_slow",
            Reason::ModelPinned => "model_pinned",
            Reason::HeaderFast => "header_fast",
            Reason::HeaderSlow => "header_slow",
            Reason::HeaderInvalid => "header_invalid",
            Reason::HeaderIgnored => "header_ignored",
            Reason::TightBudget => "tight_budget",
            Reason::Structured => "structured",
            Reason::Short => "short",
            Reason::LongPrompt => "long_prompt",
            Reason::LongOutput => "long_output",
            Reason::NeedsVision => "needs_vision",
            Reason::NeedsAudio => "needs_audio",
            Reason::NeedsLogprobs => "needs_logprobs",
            Reason::NeedsLogitBias => "needs_logit_bias",
            Reason::NeedsN => "needs_n",
            Reason::NeedsOther => "needs_other",
            Reason::ExceedsFastContext => "exceeds_fast_context",
            Reason::ExceedsFastTpm => "exceeds_fast_tpm",
            Reason::FallbackSlow => "fallback_slow",
            Reason::NoFastRoute => "no_fast_route",
            Reason::NoSlowRoute => "no_slow_route",
        }
    }

    fn needs(cap: Capability) -> Reason {
        match cap {
            Capability::Vision => Reason::NeedsVision,
            Capability::Audio => Reason::NeedsAudio,
            Capability::Logprobs => Reason::NeedsLogprobs,
            Capability::LogitBias => Reason::NeedsLogitBias,
            Capability::MultipleChoices => Reason::NeedsN,
            _ => Reason::NeedsOther,
        }
    }
}

/// The client's routing headers, as sent (unparsed).
#[derive(Debug, Clone, Copy, Default)]
pub struct Hints<'a> {
    pub path: Option<&'a str>,
    pub latency_budget_ms: Option<&'a str>,
}

/// The classifier's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<'c> {
    pub path: Path,
    /// Candidates in order of preference, each able to serve every need of the request.
    pub targets: Vec<&'c Target>,
    pub reasons: Vec<Reason>,
}

impl Decision<'_> {
    /// The reasons as the `x-router-reason` header value: codes joined by commas.
    pub fn reason_header(&self) -> String {
        let codes: Vec<&str> = self.reasons.iter().map(|r| r.code()).collect();
        codes.join(",")
    }
}

/// What the request needs, and whether the fast route can give it.
struct Fit {
    /// The first need no fast target has, if any.
    missing: Option<Capability>,
    exceeds_context: bool,
    exceeds_tpm: bool,
}

impl Fit {
    fn blocker(&self) -> Option<Reason> {
        if let Some(cap) = self.missing {
            Some(Reason::needs(cap))
        } else if self.exceeds_context {
            Some(Reason::ExceedsFastContext)
        } else if self.exceeds_tpm {
            Some(Reason::ExceedsFastTpm)
        } else {
            None
        }
    }
}

/// Decides the path and the candidate targets of a chat request: the route's decision, less
/// the models that cannot produce as many output tokens as the request asks for.
pub fn classify<'c>(
    config: &'c Config,
    req: &ChatRequest,
    hints: Hints<'_>,
) -> Result<Decision<'c>, RouterError> {
    let mut decision = decide(config, req, hints)?;
    decision.targets = within_output_limit(config, req, decision.targets)?;
    Ok(decision)
}

/// The targets whose model may produce the output tokens the request asks for (its
/// `max_output_tokens` in the configuration); none left is the client's error, named on the
/// field it set, before anything is booked or sent.
pub fn within_output_limit<'c>(
    config: &Config,
    req: &ChatRequest,
    targets: Vec<&'c Target>,
) -> Result<Vec<&'c Target>, RouterError> {
    let Some(asked) = req.requested_output_tokens() else {
        return Ok(targets);
    };
    let most = |t: &Target| {
        config
            .providers
            .get(t.provider)
            .and_then(|p| p.limits.get(&t.name))
            .and_then(|l| l.max_output_tokens)
    };
    let largest = targets.iter().filter_map(|t| most(t)).max();
    let kept: Vec<&Target> = targets
        .into_iter()
        .filter(|t| most(t).is_none_or(|m| asked <= m))
        .collect();
    if kept.is_empty() {
        let param = if req.max_tokens.is_some() {
            "max_tokens"
        } else {
            "max_completion_tokens"
        };
        return Err(RouterError::InvalidRequest {
            message: format!(
                "`{param}` is {asked}, more than the {} output tokens the model can produce.",
                largest.unwrap_or_default()
            ),
            param: Some(param.to_owned()),
            code: "invalid_value",
        });
    }
    Ok(kept)
}

/// The route's decision: the path and the candidate targets, in named steps: what the
/// request needs and whether the fast route can hold it ([`fit`]), what the client asked for
/// ([`wanted`]), the path ([`path_for`]), and the targets in order ([`candidates`]).
fn decide<'c>(
    config: &'c Config,
    req: &ChatRequest,
    hints: Hints<'_>,
) -> Result<Decision<'c>, RouterError> {
    let needs = route::chat_needs(req);
    let routes = Routes {
        fast: config.targets(Path::Fast.name()).unwrap_or_default(),
        slow: config.targets(Path::Slow.name()).unwrap_or_default(),
    };
    let output = req
        .requested_output_tokens()
        .unwrap_or(config.classifier.default_output_tokens);
    let total = req.prompt_tokens.saturating_add(output);
    let fit = fit(config, &routes, &needs, total);
    let mut reasons = Vec::with_capacity(4);
    let Some(wanted) = wanted(&req.model, &routes, hints, &mut reasons) else {
        return pinned(config, req, &needs, &routes, reasons);
    };
    let path = path_for(wanted, &fit, &routes, &mut reasons, |reasons| {
        auto_path(config, req, hints, &fit, output, reasons)
    });
    let targets = candidates(config, path, &routes, &fit, &needs);
    if targets.is_empty() {
        return Err(nothing_fits(config, req, &fit, &needs, total));
    }
    Ok(Decision {
        path,
        targets,
        reasons,
    })
}

/// The configuration's `fast` and `slow` routes (empty when not configured).
struct Routes<'c> {
    fast: &'c [Target],
    slow: &'c [Target],
}

impl<'c> Routes<'c> {
    fn of(&self, path: Path) -> &'c [Target] {
        match path {
            Path::Fast => self.fast,
            Path::Slow => self.slow,
        }
    }
}

/// Whether `target`'s provider has every one of `needs`.
fn capable(config: &Config, target: &Target, needs: &[Capability]) -> bool {
    config
        .providers
        .get(target.provider)
        .is_some_and(|p| needs.iter().all(|n| p.capabilities.has(*n)))
}

/// Whether the fast route can hold a request of `needs` and `total` tokens (prompt and
/// output). It can carry it only if one of its targets has every need at once; without a fast
/// route nothing is missing from it (`NoFastRoute` says so instead).
fn fit(config: &Config, routes: &Routes<'_>, needs: &[Capability], total: u64) -> Fit {
    let missing = match routes.fast.first() {
        Some(first) if !routes.fast.iter().any(|t| capable(config, t, needs)) => Some(
            needs
                .iter()
                .copied()
                .find(|n| !provider_has(config, first, *n))
                .unwrap_or(Capability::Chat),
        ),
        _ => None,
    };
    Fit {
        missing,
        exceeds_context: total > config.classifier.fast_context_tokens,
        // The estimate runs high: with no slow route to go to, Groq has the last word.
        exceeds_tpm: !routes.slow.is_empty()
            && routes
                .fast
                .first()
                .and_then(|t| tpm(config, t))
                .is_some_and(|tpm| total > tpm),
    }
}

/// What the client asked for by its model name (and, for `auto`, its path header): a path, no
/// path (`Some(None)`: the router decides), or `None` for a pinned model (a concrete model, or
/// a route other than fast and slow). Pushes the reasons that say so.
fn wanted(
    model: &str,
    routes: &Routes<'_>,
    hints: Hints<'_>,
    reasons: &mut Vec<Reason>,
) -> Option<Option<Path>> {
    let header_ignored = |reasons: &mut Vec<Reason>| {
        if hints.path.is_some() {
            reasons.push(Reason::HeaderIgnored);
        }
    };
    // Without fast and slow routes there is nothing to classify: every name is its own route.
    let model = match model {
        "auto" | "fast" | "slow" if routes.fast.is_empty() && routes.slow.is_empty() => "",
        m => m,
    };
    match model {
        "auto" => {
            reasons.push(Reason::Auto);
            Some(match hints.path.map(str::trim) {
                Some(p) if p.eq_ignore_ascii_case("fast") => {
                    reasons.push(Reason::HeaderFast);
                    Some(Path::Fast)
                }
                Some(p) if p.eq_ignore_ascii_case("slow") => {
                    reasons.push(Reason::HeaderSlow);
                    Some(Path::Slow)
                }
                Some(_) => {
                    reasons.push(Reason::HeaderInvalid);
                    None
                }
                None => None,
            })
        }
        "fast" | "slow" => {
            let (reason, path) = if model == "fast" {
                (Reason::ModelFast, Path::Fast)
            } else {
                (Reason::ModelSlow, Path::Slow)
            };
            reasons.push(reason);
            header_ignored(reasons);
            Some(Some(path))
        }
        _ => {
            reasons.push(Reason::ModelPinned);
            header_ignored(reasons);
            None
        }
    }
}

/// A pinned model: served by its own targets, in order; capabilities it lacks are the
/// client's to fix (400). Its path is fast when every target is on the fast route.
fn pinned<'c>(
    config: &'c Config,
    req: &ChatRequest,
    needs: &[Capability],
    routes: &Routes<'c>,
    reasons: Vec<Reason>,
) -> Result<Decision<'c>, RouterError> {
    let targets = route::serving(config, &req.model, needs)?;
    let path = if targets.iter().all(|t| routes.fast.contains(t)) {
        Path::Fast
    } else {
        Path::Slow
    };
    Ok(Decision {
        path,
        targets,
        reasons,
    })
}

/// The path: the one asked for, unless the fast route cannot hold the request (then slow, with
/// the reason and `FallbackSlow`); the router's own choice (`auto`) when none was; and the
/// other path when the chosen one has no route.
fn path_for(
    wanted: Option<Path>,
    fit: &Fit,
    routes: &Routes<'_>,
    reasons: &mut Vec<Reason>,
    auto: impl FnOnce(&mut Vec<Reason>) -> Path,
) -> Path {
    let path = match wanted {
        Some(Path::Slow) => Path::Slow,
        Some(Path::Fast) => match fit.blocker() {
            Some(blocker) => {
                reasons.extend([blocker, Reason::FallbackSlow]);
                Path::Slow
            }
            None => Path::Fast,
        },
        None => auto(reasons),
    };
    match (path, routes.fast.is_empty(), routes.slow.is_empty()) {
        (Path::Fast, true, _) => {
            reasons.push(Reason::NoFastRoute);
            Path::Slow
        }
        (Path::Slow, _, true) if fit.blocker().is_none() => {
            reasons.push(Reason::NoSlowRoute);
            Path::Fast
        }
        (p, _, _) => p,
    }
}

/// The candidates in order: the path's route, then the other route's as fallback where the
/// request fits it (the fast route never serves what it cannot hold), each able to serve
/// every need.
fn candidates<'c>(
    config: &Config,
    path: Path,
    routes: &Routes<'c>,
    fit: &Fit,
    needs: &[Capability],
) -> Vec<&'c Target> {
    let second_fits = path.other() == Path::Slow || fit.blocker().is_none();
    let mut targets: Vec<&Target> = routes
        .of(path)
        .iter()
        .filter(|t| capable(config, t, needs))
        .collect();
    if second_fits {
        for t in routes.of(path.other()) {
            if capable(config, t, needs) && !targets.contains(&t) {
                targets.push(t);
            }
        }
    }
    targets
}

/// Why nothing can carry the request, in the client's terms.
fn nothing_fits(
    config: &Config,
    req: &ChatRequest,
    fit: &Fit,
    needs: &[Capability],
    total: u64,
) -> RouterError {
    if fit.missing.is_none() && fit.exceeds_context {
        return RouterError::InvalidRequest {
            message: format!(
                "The request needs about {total} tokens (prompt and output), more than the \
                 {} the fast models hold, and no slow route is configured.",
                config.classifier.fast_context_tokens
            ),
            param: Some("messages".to_owned()),
            code: "context_length_exceeded",
        };
    }
    RouterError::Unsupported {
        model: req.model.chars().take(200).collect(),
        needs: fit
            .missing
            .or_else(|| needs.iter().copied().find(|n| *n != Capability::Chat))
            .map_or("chat", Capability::name),
    }
}

/// The router's own choice for `auto`.
fn auto_path(
    config: &Config,
    req: &ChatRequest,
    hints: Hints<'_>,
    fit: &Fit,
    output: u64,
    reasons: &mut Vec<Reason>,
) -> Path {
    if let Some(blocker) = fit.blocker() {
        reasons.push(blocker);
        return Path::Slow;
    }
    let c = &config.classifier;
    let budget = latency_budget_ms(hints.latency_budget_ms);
    if budget.is_some_and(|b| b <= c.tight_latency_budget_ms) {
        reasons.push(Reason::TightBudget);
        return Path::Fast;
    }
    if is_structured(req) {
        reasons.push(Reason::Structured);
        return Path::Fast;
    }
    if req.prompt_tokens > c.fast_max_prompt_tokens {
        reasons.push(Reason::LongPrompt);
        return Path::Slow;
    }
    if output > c.fast_max_output_tokens {
        reasons.push(Reason::LongOutput);
        return Path::Slow;
    }
    reasons.push(Reason::Short);
    Path::Fast
}

fn is_structured(req: &ChatRequest) -> bool {
    req.response_format
        .as_ref()
        .is_some_and(|f| f.kind == "json_object" || f.kind == "json_schema")
        || req.tools.as_ref().is_some_and(|t| !t.is_empty())
        || req.extra.contains_key("tool_choice")
}

fn provider_has(config: &Config, target: &Target, cap: Capability) -> bool {
    config
        .providers
        .get(target.provider)
        .is_some_and(|p| p.capabilities.has(cap))
}

/// The tokens-per-minute limit of a target's model, when known.
fn tpm(config: &Config, target: &Target) -> Option<u64> {
    config
        .providers
        .get(target.provider)?
        .limits
        .get(&target.name)?
        .tpm
}

#[cfg(test)]
mod tests;
