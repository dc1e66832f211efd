//! Built-in provider presets: base URL, capabilities, the name of the output-token field, the
//! dialect of rate-limit headers, and default per-model limits. A minimal configuration names
//! only a preset and its keys; every value here can be overridden in the configuration.
//!
//! Figures are the providers' published ones (late 2026); the providers' own response headers
//! win at run time.

use super::{Capability, Limits, MaxTokensField, RateLimitDialect};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub base_url: &'static str,
    pub capabilities: &'static [Capability],
    pub max_tokens_field: MaxTokensField,
    pub dialect: RateLimitDialect,
    /// Default limits per model id.
    pub limits: &'static [(&'static str, Limits)],
    /// Whether it serves the Batch API (`/files`, `/batches`, OpenAI's format).
    pub batch: bool,
}

use Capability::*;

/// Everything the OpenAI API itself accepts.
const FULL: &[Capability] = &[
    Chat,
    Streaming,
    Tools,
    JsonSchema,
    Vision,
    Audio,
    Embeddings,
    Logprobs,
    LogitBias,
    MultipleChoices,
    MessageName,
    Responses,
];

/// The OpenAI API without `messages[].name` (the GPU hosts ignore or reject it).
const OPENAI_BUT_NAME: &[Capability] = &[
    Chat,
    Streaming,
    Tools,
    JsonSchema,
    Vision,
    Embeddings,
    Logprobs,
    LogitBias,
    MultipleChoices,
];

const fn limits(rpm: u64, rpd: u64, tpm: u64, tpd: u64, max_output: u64) -> Limits {
    Limits {
        rpm: Some(rpm),
        rpd: Some(rpd),
        tpm: Some(tpm),
        tpd: Some(tpd),
        max_output_tokens: Some(max_output),
    }
}

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "groq",
        base_url: "https://api.groq.com/openai/v1",
        // Groq rejects logprobs, logit_bias, n > 1 and messages[].name with a 400. Only some
        // of its models read images (llama-4-scout): a provider entry routing to one of them
        // adds "vision" to its capabilities.
        capabilities: &[Chat, Streaming, Tools, JsonSchema, Responses],
        max_tokens_field: MaxTokensField::MaxCompletionTokens,
        dialect: RateLimitDialect::Groq,
        // The free plan, per organization and model: RPM / RPD / TPM / TPD; then the model's
        // published maximum completion tokens.
        limits: &[
            (
                "llama-3.1-8b-instant",
                limits(30, 14_400, 6_000, 500_000, 131_072),
            ),
            (
                "llama-3.3-70b-versatile",
                limits(30, 1_000, 12_000, 100_000, 32_768),
            ),
            (
                "openai/gpt-oss-120b",
                limits(30, 1_000, 8_000, 200_000, 65_536),
            ),
            (
                "openai/gpt-oss-20b",
                limits(30, 1_000, 8_000, 200_000, 65_536),
            ),
            (
                "meta-llama/llama-4-scout-17b-16e-instruct",
                limits(30, 1_000, 30_000, 500_000, 8_192),
            ),
            ("qwen/qwen3-32b", limits(60, 1_000, 6_000, 500_000, 40_960)),
        ],
        batch: true,
    },
    Preset {
        name: "openai",
        base_url: "https://api.openai.com/v1",
        capabilities: FULL,
        max_tokens_field: MaxTokensField::MaxCompletionTokens,
        dialect: RateLimitDialect::OpenAi,
        limits: &[],
        batch: true,
    },
    Preset {
        name: "together",
        base_url: "https://api.together.xyz/v1",
        capabilities: OPENAI_BUT_NAME,
        max_tokens_field: MaxTokensField::MaxTokens,
        dialect: RateLimitDialect::Together,
        limits: &[],
        batch: true,
    },
    Preset {
        name: "fireworks",
        base_url: "https://api.fireworks.ai/inference/v1",
        capabilities: OPENAI_BUT_NAME,
        max_tokens_field: MaxTokensField::MaxTokens,
        dialect: RateLimitDialect::Fireworks,
        limits: &[],
        batch: false,
    },
    Preset {
        name: "deepinfra",
        base_url: "https://api.deepinfra.com/v1/openai",
        capabilities: &[
            Chat,
            Streaming,
            Tools,
            JsonSchema,
            Vision,
            Embeddings,
            Logprobs,
            MultipleChoices,
        ],
        max_tokens_field: MaxTokensField::MaxTokens,
        dialect: RateLimitDialect::None,
        limits: &[],
        batch: false,
    },
    Preset {
        name: "mistral",
        base_url: "https://api.mistral.ai/v1",
        capabilities: &[
            Chat,
            Streaming,
            Tools,
            JsonSchema,
            Vision,
            Embeddings,
            MultipleChoices,
        ],
        max_tokens_field: MaxTokensField::MaxTokens,
        dialect: RateLimitDialect::Mistral,
        limits: &[],
        batch: false,
    },
    Preset {
        name: "cerebras",
        base_url: "https://api.cerebras.ai/v1",
        capabilities: &[Chat, Streaming, Tools, JsonSchema, Logprobs],
        max_tokens_field: MaxTokensField::MaxCompletionTokens,
        dialect: RateLimitDialect::Cerebras,
        limits: &[],
        batch: false,
    },
    Preset {
        name: "openrouter",
        base_url: "https://openrouter.ai/api/v1",
        capabilities: &[
            Chat,
            Streaming,
            Tools,
            JsonSchema,
            Vision,
            Logprobs,
            LogitBias,
            MessageName,
        ],
        max_tokens_field: MaxTokensField::MaxTokens,
        dialect: RateLimitDialect::None,
        limits: &[],
        batch: false,
    },
];

/// When the presets' prices were taken: the day the project recorded them from the providers'
/// published pricing pages. A provider's bill is the truth; `[prices]` overrides any of them.
pub const PRICES_TAKEN: &str = "2026-12-03";

/// Published prices per preset and model: US dollars per million input tokens, cached input
/// tokens (`None`: billed as input) and output tokens.
const PRICES: &[(&str, &str, f64, Option<f64>, f64)] = &[
    ("groq", "llama-3.1-8b-instant", 0.05, None, 0.08),
    ("groq", "llama-3.3-70b-versatile", 0.59, None, 0.79),
    ("groq", "openai/gpt-oss-120b", 0.15, Some(0.075), 0.60),
    ("groq", "openai/gpt-oss-20b", 0.075, Some(0.0375), 0.30),
    (
        "groq",
        "meta-llama/llama-4-scout-17b-16e-instruct",
        0.11,
        None,
        0.34,
    ),
    ("groq", "qwen/qwen3-32b", 0.29, None, 0.59),
    ("openai", "gpt-4o-mini", 0.15, Some(0.075), 0.60),
    ("openai", "gpt-4.1-mini", 0.40, Some(0.10), 1.60),
    ("openai", "gpt-4.1-nano", 0.10, Some(0.025), 0.40),
    ("openai", "text-embedding-3-small", 0.02, None, 0.0),
];

/// A preset's published prices, per model id.
pub fn prices(preset: &Preset) -> std::collections::BTreeMap<String, super::Price> {
    PRICES
        .iter()
        .filter(|(p, ..)| *p == preset.name)
        .map(|(_, model, input, cached, output)| {
            (
                (*model).to_owned(),
                super::Price::per_million(*input, *cached, *output),
            )
        })
        .collect()
}

/// The preset of this name.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_an_https_base_url_that_can_chat() {
        for p in PRESETS {
            assert!(p.base_url.starts_with("https://"), "{}", p.name);
            assert!(!p.base_url.ends_with('/'), "{}", p.name);
            assert!(p.capabilities.contains(&Chat), "{}", p.name);
            assert_eq!(find(p.name), Some(p));
        }
    }

    #[test]
    fn groq_does_not_claim_what_it_rejects() {
        let groq = find("groq").unwrap();
        for c in [
            Logprobs,
            LogitBias,
            MultipleChoices,
            MessageName,
            Embeddings,
        ] {
            assert!(!groq.capabilities.contains(&c), "{c:?}");
        }
        assert_eq!(groq.limits.len(), 6);
    }
}
