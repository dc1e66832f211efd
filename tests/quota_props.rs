//! Property tests of the two-level quota ledger: several isolates, each admitting from its
//! leases or booking with one shared bank, in any interleaving of admissions, outcomes,
//! background exchanges, lost calls, late replies and the clock. Whatever happens, the requests
//! that reach the provider in any window never exceed that window's limit (requests per minute
//! and per day, tokens per minute and per day), nothing panics, and the bank's books survive
//! their storage format.

#![cfg(not(target_arch = "wasm32"))]

use std::collections::BTreeMap;

use edge_router::core::config::Limits;
use edge_router::core::quota::bank::Dirty;
use edge_router::core::quota::ledger::{window_start, DAY_MS, MINUTE_MS};
use edge_router::core::quota::{
    apply, Admission, Effect, Holdings, KeyCard, ModelOption, Offer, OrgLedger, Reply, Shard,
    Ticket, Usage,
};
use edge_router::core::ratelimit::Refusal;
use proptest::prelude::*;

const ISOLATES: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// Isolate `who` admits a request of `tokens`.
    Admit {
        who: usize,
        tokens: u64,
    },
    /// One of the isolate's requests ends with an effect.
    End {
        who: usize,
        which: usize,
        how: u8,
        used: u64,
    },
    /// The isolate's background work runs; `lose` drops the bank's reply (the call failed on the
    /// way back: the bank applied it, the isolate sees a failure and sends the batch again).
    Background {
        who: usize,
        lose: bool,
    },
    Wait {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0..ISOLATES;
    prop_oneof![
        6 => (who.clone(), 1u64..300).prop_map(|(who, tokens)| Op::Admit { who, tokens }),
        3 => (who.clone(), 0usize..8, 0u8..6, 0u64..400)
            .prop_map(|(who, which, how, used)| Op::End { who, which, how, used }),
        3 => (who, prop::bool::weighted(0.1)).prop_map(|(who, lose)| Op::Background { who, lose }),
        1 => prop_oneof![9 => 0u64..1_000, 1 => 0u64..40_000].prop_map(|ms| Op::Wait { ms }),
    ]
}

struct Isolate {
    holdings: Holdings,
    /// Requests that reached the provider and have not ended: (ticket, windows' starts).
    open: Vec<Ticket>,
}

/// What reached the provider, per window start, counted apart from the ledger.
#[derive(Default)]
struct Sent {
    rpm: BTreeMap<u64, u64>,
    rpd: BTreeMap<u64, u64>,
    tpm: BTreeMap<u64, u64>,
    tpd: BTreeMap<u64, u64>,
}

impl Sent {
    fn add(&mut self, t: &Ticket, requests: i64, tokens: i64) {
        let (m, d) = (t.windows.minute_start_ms, t.windows.day_start_ms);
        for (map, start, n) in [
            (&mut self.rpm, m, requests),
            (&mut self.rpd, d, requests),
            (&mut self.tpm, m, tokens),
            (&mut self.tpd, d, tokens),
        ] {
            let slot = map.entry(start).or_default();
            *slot = slot.saturating_add_signed(n);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn isolates_never_over_admit_together(
        ops in prop::collection::vec(op(), 1..500),
        start in 0u64..1_000_000_000_000,
        // Small limits (every request booked with the bank) and limits large enough for
        // leases, yet small enough for the run to reach them.
        (rpm, rpd, tpm, tpd) in prop::sample::select(vec![(10u64, 60u64, 1_000u64, 5_000u64), (80, 240, 16_000, 40_000)]),
    ) {
        let limits = Limits {
            rpm: Some(rpm),
            rpd: Some(rpd),
            tpm: Some(tpm),
            tpd: Some(tpd),
            max_output_tokens: None,
        };
        let key = KeyCard { id: "k".into(), fingerprint: "f".into() };
        let offers = [Offer { org: "o".into(), keys: vec![key.clone()] }];
        let shard = Shard::new("p", "o");
        let mut bank = OrgLedger::default();
        let mut isolates: Vec<Isolate> = (0..ISOLATES)
            .map(|i| Isolate { holdings: Holdings::new(format!("i{i}")), open: Vec::new() })
            .collect();
        let mut sent = Sent::default();
        let mut now = start;
        for op in ops {
            match op {
                Op::Admit { who, tokens } => {
                    let iso = &mut isolates[who];
                    let admitted = match iso.holdings.admit("p", &offers, "m", &limits, tokens, None, now) {
                        Admission::Admitted { ticket, .. } => Some(ticket),
                        Admission::Ask { keys, .. } => {
                            let opt = ModelOption { model: "m".into(), limits };
                            let call = iso.holdings.reserve(&shard, vec![opt], keys, tokens, now);
                            let reply = apply(&mut bank, call.command, now, &mut Dirty::default());
                            iso.holdings.answered(&shard, call.id, &reply, now);
                            match reply {
                                Reply::Reserved { ticket, .. } => Some(ticket),
                                _ => None,
                            }
                        }
                        Admission::Full { .. } | Admission::NoKey => None,
                    };
                    if let Some(ticket) = admitted {
                        // Advisory admissions happen only without a bank; there is one here.
                        prop_assert_ne!(ticket.source, edge_router::core::quota::Source::Advisory);
                        sent.add(&ticket, 1, i64::try_from(ticket.tokens).unwrap());
                        iso.open.push(ticket);
                    }
                }
                Op::End { who, which, how, used } => {
                    let iso = &mut isolates[who];
                    if which >= iso.open.len() {
                        continue;
                    }
                    let ticket = iso.open.remove(which);
                    let effect = match how {
                        0 => Effect::Spent,
                        1 => Effect::NotSpent,
                        2 => Effect::RequestOnly,
                        3 => Effect::Refused(Refusal { retry_after_ms: Some(used * 10), ..Refusal::default() }),
                        4 => Effect::KeyRefused { status: 403 },
                        _ => Effect::Spent,
                    };
                    let usage = (how == 5).then_some(Usage { prompt_tokens: used, cached_tokens: 0, completion_tokens: 0 });
                    // What the provider counts in the end: given-back requests never reached it
                    // (their tokens come off); real usage replaces the estimate.
                    let (dr, dt) = effect.shift(ticket.tokens, usage.map(|u| u.counted()));
                    sent.add(&ticket, dr, dt.min(0));
                    iso.holdings.settle(&shard, &key, ticket, effect, usage, None, now);
                }
                Op::Background { who, lose } => {
                    let iso = &mut isolates[who];
                    for call in iso.holdings.due(now) {
                        let reply = apply(&mut bank, call.command, now, &mut Dirty::default());
                        if lose {
                            // Landed, but the isolate never hears back: after a while it sends
                            // the batch again, and the bank must not apply it twice.
                            continue;
                        }
                        iso.holdings.answered(&call.shard, call.id, &reply, now);
                    }
                }
                Op::Wait { ms } => now += ms,
            }
        }
        let check = |map: &BTreeMap<u64, u64>, limit: u64, what: &str| -> Result<(), TestCaseError> {
            for (start, n) in map {
                prop_assert!(*n <= limit, "{what} from {start}: {n} sent, limit {limit}");
            }
            Ok(())
        };
        check(&sent.rpm, rpm, "requests per minute")?;
        check(&sent.rpd, rpd, "requests per day")?;
        check(&sent.tpm, tpm, "tokens per minute (estimates)")?;
        check(&sent.tpd, tpd, "tokens per day (estimates)")?;
        // The bank's books never claim more than their limits from the router's own bookings.
        let b = bank.books("m");
        prop_assert!(b.rpm.current(now, MINUTE_MS) <= rpm);
        prop_assert!(b.rpd.current(now, DAY_MS) <= rpd);
        prop_assert_eq!(window_start(now, DAY_MS) % DAY_MS, 0);
        let json = serde_json::to_string(&bank).unwrap();
        prop_assert_eq!(serde_json::from_str::<OrgLedger>(&json).unwrap(), bank);
    }
}

#[test]
fn a_single_isolate_at_a_large_limit_uses_leases_for_almost_everything() {
    let limits = Limits {
        rpm: Some(100_000),
        rpd: Some(10_000_000),
        tpm: Some(100_000_000),
        tpd: Some(1_000_000_000),
        max_output_tokens: None,
    };
    let key = KeyCard {
        id: "k".into(),
        fingerprint: "f".into(),
    };
    let offers = [Offer {
        org: "o".into(),
        keys: vec![key],
    }];
    let shard = Shard::new("p", "o");
    let mut bank = OrgLedger::default();
    let mut h = Holdings::new("i");
    let t0 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS;
    let (mut sync, mut leased) = (0, 0);
    // 1,000 requests a second for 10 s, the background work every 50 ms.
    for ms in 0..10_000u64 {
        let now = t0 + ms;
        match h.admit("p", &offers, "m", &limits, 100, None, now) {
            Admission::Admitted { ticket, .. } => {
                leased += 1;
                drop(ticket);
            }
            Admission::Ask { keys, .. } => {
                let opt = ModelOption {
                    model: "m".into(),
                    limits,
                };
                let call = h.reserve(&shard, vec![opt], keys, 100, now);
                let reply = apply(&mut bank, call.command, now, &mut Dirty::default());
                h.answered(&shard, call.id, &reply, now);
                sync += 1;
            }
            other => panic!("{other:?}"),
        }
        if ms % 50 == 0 {
            for call in h.due(now) {
                let reply = apply(&mut bank, call.command, now, &mut Dirty::default());
                h.answered(&call.shard, call.id, &reply, now);
            }
        }
    }
    let share = leased as f64 / (leased + sync) as f64;
    assert!(
        share >= 0.99,
        "{leased} from leases, {sync} booked with the bank"
    );
}
