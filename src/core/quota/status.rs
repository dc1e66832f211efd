//! The books as the operator's status page shows them: per organization and model, each
//! window's used / limit / reset, the cooldown, the leases out (by isolate), and the refused
//! keys by id (never the keys).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::bank::OrgLedger;
use super::holdings::Holdings;
use super::ledger::{window_start, Counter, DAY_MS, MINUTE_MS};
use crate::core::config::Limits;

/// One provider's part of the status page: each organization's books (`ledgers`, from its
/// bank's `Status` answer, read at `now_ms`), the keys refused, and the leases the answering
/// isolate holds.
pub fn provider_view(
    provider: &str,
    limits: &BTreeMap<String, Limits>,
    ledgers: &[(String, OrgLedger)],
    now_ms: u64,
    holdings: &Holdings,
) -> Value {
    let mut orgs = serde_json::Map::new();
    let mut blocked = Vec::new();
    for (org, ledger) in ledgers {
        orgs.insert(org.clone(), org_view(ledger, limits, now_ms));
        blocked.extend(blocked_keys(ledger, now_ms));
    }
    let leases: Vec<Value> = holdings
        .leases(provider)
        .into_iter()
        .map(|(org, l)| {
            json!({
                "organization": org,
                "model": l.model,
                "requests_left": l.requests_left,
                "tokens_left": l.tokens_left,
                "expires_at_ms": l.expires_at_ms,
            })
        })
        .collect();
    json!({
        "now_ms": now_ms,
        "organizations": orgs,
        "disabled_keys": blocked,
        "isolate": {"holder": holdings.holder(), "leases": leases},
    })
}

/// One organization's books.
pub fn org_view(ledger: &OrgLedger, limits: &BTreeMap<String, Limits>, now_ms: u64) -> Value {
    let window = |counter: &Counter, limit: Option<u64>, len: u64| {
        json!({
            "used": counter.current(now_ms, len),
            "limit": limit,
            "resets_at_ms": window_start(now_ms, len) + len,
        })
    };
    let mut models = serde_json::Map::new();
    for (model, entry) in &ledger.models {
        let l = limits.get(model).copied().unwrap_or_default();
        let b = &entry.books;
        let leases: Vec<Value> = entry
            .leases
            .iter()
            .flat_map(|(holder, held)| {
                held.iter().map(move |r| {
                    json!({
                        "holder": holder,
                        "requests": r.requests,
                        "tokens": r.tokens,
                        "granted_at_ms": r.granted_at_ms,
                        "expires_at_ms": r.expires_at_ms,
                    })
                })
            })
            .collect();
        models.insert(
            model.clone(),
            json!({
                "requests_per_minute": window(&b.rpm, l.rpm, MINUTE_MS),
                "requests_per_day": window(&b.rpd, l.rpd, DAY_MS),
                "tokens_per_minute": window(&b.tpm, l.tpm, MINUTE_MS),
                "tokens_per_day": window(&b.tpd, l.tpd, DAY_MS),
                "cooldown_until_ms": (b.cooldown_until_ms > now_ms).then_some(b.cooldown_until_ms),
                "leases": leases,
            }),
        );
    }
    Value::Object(models)
}

/// The keys an organization's bank holds refused, by id.
pub fn blocked_keys(ledger: &OrgLedger, now_ms: u64) -> Vec<Value> {
    ledger
        .blocks
        .iter()
        .filter(|b| b.until_ms > now_ms)
        .map(|b| {
            json!({
                "key_id": b.key_id,
                "status": b.status,
                "model": b.model,
                "until_ms": b.until_ms,
            })
        })
        .collect()
}
