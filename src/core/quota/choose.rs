//! Keeping requests that share a prompt prefix on one organization, so that the provider's
//! prompt cache hits: rendezvous hashing on a hash of the static prefix.

use crate::core::request::{ChatRequest, Role};

/// Rendezvous (highest random weight) score of an organization for a prefix: stable for the
/// same pair, spread evenly across organizations. FNV-1a over the org name, mixed with the hash.
pub fn rendezvous(prefix_hash: u64, org: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ prefix_hash;
    for b in org.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // A final avalanche so that nearby prefix hashes give unrelated scores.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// Whether a provider caches prompt prefixes for `model` (Groq: the gpt-oss family and
/// kimi-k2), so that requests with the same static prefix should stay on one organization.
pub fn caches_prompts(model: &str) -> bool {
    model.contains("gpt-oss") || model.contains("kimi-k2")
}

/// A hash of a chat request's static prefix: its leading system and developer messages, its
/// tools and its response format, which is what a prompt cache matches on.
pub fn prefix_hash(req: &ChatRequest) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for m in req
        .messages
        .iter()
        .take_while(|m| matches!(m.role, Role::System | Role::Developer))
    {
        feed(m.content.as_ref().map_or("", |c| c.text()).as_bytes());
        feed(
            serde_json::to_string(&m.extra)
                .unwrap_or_default()
                .as_bytes(),
        );
    }
    feed(
        serde_json::to_string(&req.tools)
            .unwrap_or_default()
            .as_bytes(),
    );
    feed(
        serde_json::to_string(&req.response_format)
            .unwrap_or_default()
            .as_bytes(),
    );
    h
}
