//! Property tests of the quota ledger: whatever the sequence of reservations, settlements,
//! releases, provider reports and refusals, it never admits more than a window's limit, never
//! panics and never underflows.

#![cfg(not(target_arch = "wasm32"))]

use edge_router::core::config::Limits;
use edge_router::core::quota::{Ledger, Usage};
use edge_router::core::ratelimit::{Refusal, Report, WindowReport};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Reserve {
        tokens: u64,
    },
    Settle {
        which: usize,
        prompt: u64,
        cached: u64,
        completion: u64,
    },
    Release {
        which: usize,
    },
    Observe {
        remaining_tokens: u64,
    },
    Refuse {
        wait_ms: Option<u64>,
    },
    Wait {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..400).prop_map(|tokens| Op::Reserve { tokens }),
        2 => (0usize..8, 0u64..500, 0u64..500, 0u64..500).prop_map(|(which, prompt, cached, completion)| Op::Settle { which, prompt, cached, completion }),
        1 => (0usize..8).prop_map(|which| Op::Release { which }),
        1 => (0u64..2_000).prop_map(|remaining_tokens| Op::Observe { remaining_tokens }),
        1 => prop::option::of(0u64..120_000).prop_map(|wait_ms| Op::Refuse { wait_ms }),
        3 => (0u64..30_000).prop_map(|ms| Op::Wait { ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn never_over_admits(ops in prop::collection::vec(op(), 1..200), start in 0u64..1_000_000_000_000) {
        let limits = Limits { rpm: Some(10), rpd: Some(50), tpm: Some(1_000), tpd: Some(4_000) };
        let mut ledger = Ledger::default();
        let mut tickets = Vec::new();
        let mut now = start;
        // Requests that reach the provider, per minute window, counted independently of the
        // ledger.
        let mut admitted: std::collections::BTreeMap<u64, u64> = Default::default();
        for op in ops {
            match op {
                Op::Reserve { tokens } => {
                    if let Ok(t) = ledger.reserve("org", "m", &limits, tokens, now) {
                        *admitted.entry(now / 60_000).or_default() += 1;
                        tickets.push(t);
                    }
                }
                Op::Settle { which, prompt, cached, completion } => {
                    if which < tickets.len() {
                        let t = tickets.remove(which);
                        ledger.settle(t, Usage { prompt_tokens: prompt, cached_tokens: cached, completion_tokens: completion });
                    }
                }
                Op::Release { which } => {
                    if which < tickets.len() {
                        // A released request never reached the provider: it gives its place back.
                        let t = tickets.remove(which);
                        if let Some(n) = admitted.get_mut(&(t.minute_start_ms / 60_000)) {
                            *n -= 1;
                        }
                        ledger.release(t);
                    }
                }
                Op::Observe { remaining_tokens } => {
                    let report = Report {
                        tokens_minute: Some(WindowReport { limit: Some(1_000), remaining: Some(remaining_tokens), reset_ms: None }),
                        ..Report::default()
                    };
                    ledger.observe("org", "m", &report, now);
                }
                Op::Refuse { wait_ms } => {
                    ledger.refused("org", "m", &Refusal { window: None, retry_after_ms: wait_ms, billing: false }, now);
                }
                Op::Wait { ms } => now += ms,
            }
        }
        for (minute, n) in admitted {
            prop_assert!(n <= 10, "minute {minute}: {n} admitted");
        }
        let json = serde_json::to_string(&ledger).unwrap();
        prop_assert_eq!(serde_json::from_str::<Ledger>(&json).unwrap(), ledger);
    }
}
