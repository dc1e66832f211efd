//! Property tests of the two-level quota ledger: several isolates, each admitting from its
//! leases or booking with one shared bank, in any interleaving of admissions, outcomes,
//! background exchanges, lost replies and the clock. Whatever happens, the requests that reach
//! the provider in any window never exceed that window's limit (requests per minute and per
//! day, tokens per minute and per day), nothing panics, and the bank's books survive their
//! storage format. Each of the four windows is made the one that binds in turn, with limits
//! that are booked request by request and limits large enough for leases; a second test checks
//! that those runs do reach the window's limit, so that the property is never vacuous.

#![cfg(not(target_arch = "wasm32"))]

use std::collections::BTreeMap;

use edge_router::core::config::Limits;
use edge_router::core::quota::bank::Dirty;
use edge_router::core::quota::ledger::{signed, window_start, DAY_MS, MINUTE_MS};
use edge_router::core::quota::{
    apply, Admission, Effect, Holdings, KeyCard, ModelOption, Offer, OrgLedger, Reply, Shard,
    Source, Ticket, Usage,
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
    /// One of the isolate's requests ends (`used`: the real usage it reports, or the 429's
    /// retry-after in milliseconds).
    End {
        who: usize,
        which: usize,
        how: Ending,
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

/// How a request ends.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Spent,
    /// Spent, with the real usage reported.
    Used,
    NotSpent,
    RequestOnly,
    /// A 429: the organization cools down.
    Refused,
    /// A 403: the key is blocked on the model for 15 minutes.
    KeyRefused,
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0..ISOLATES;
    // A 403 blocks the only key for longer than most runs last, and a 429 stops every isolate
    // for a while: common, they would end most runs before any window fills.
    let how = prop_oneof![
        400 => Just(Ending::Spent),
        300 => Just(Ending::Used),
        100 => Just(Ending::NotSpent),
        100 => Just(Ending::RequestOnly),
        60 => Just(Ending::Refused),
        1 => Just(Ending::KeyRefused),
    ];
    prop_oneof![
        6 => (who.clone(), 1u64..300).prop_map(|(who, tokens)| Op::Admit { who, tokens }),
        3 => (who.clone(), 0usize..8, how, 0u64..400)
            .prop_map(|(who, which, how, used)| Op::End { who, which, how, used }),
        3 => (who, prop::bool::weighted(0.1)).prop_map(|(who, lose)| Op::Background { who, lose }),
        // Mostly short, so that isolates run busy enough for leases and fill minute windows;
        // sometimes past a minute, rarely past a key's block.
        1 => prop_oneof![
            95 => 0u64..500,
            4 => 0u64..40_000,
            1 => 0u64..1_200_000,
        ]
        .prop_map(|ms| Op::Wait { ms }),
    ]
}

/// The window a case makes the one that binds: its limit is small enough for the run to reach,
/// the others' are far off or unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binding {
    Rpm,
    Rpd,
    Tpm,
    Tpd,
}

/// Limits no run comes near, for the windows that do not bind.
const LOOSE: Limits = Limits {
    rpm: Some(100_000),
    rpd: Some(10_000_000),
    tpm: Some(100_000_000),
    tpd: Some(1_000_000_000),
    max_output_tokens: None,
};

/// One window's limit, `small` (too small to slice for the average request: requests are booked
/// with the bank one by one) or large enough for leases yet small enough for a run to reach; the
/// other windows loose, or unset when `unset` says so.
fn binding(binding: Binding, small: bool, unset: bool) -> Limits {
    let other = |loose: Option<u64>| if unset { None } else { loose };
    let mut limits = Limits {
        rpm: other(LOOSE.rpm),
        rpd: other(LOOSE.rpd),
        tpm: other(LOOSE.tpm),
        tpd: other(LOOSE.tpd),
        max_output_tokens: None,
    };
    // Leases need a window's 1/16 to hold 4 requests (of ~150 tokens, the average request).
    let (requests, tokens) = if small { (20, 2_000) } else { (96, 12_000) };
    match binding {
        Binding::Rpm => limits.rpm = Some(requests),
        Binding::Rpd => limits.rpd = Some(requests),
        Binding::Tpm => limits.tpm = Some(tokens),
        Binding::Tpd => limits.tpd = Some(tokens),
    }
    limits
}

/// The limits of a case: one window binds, or every window is tight at once.
fn limits() -> impl Strategy<Value = Limits> {
    let one = (
        prop::sample::select(vec![Binding::Rpm, Binding::Rpd, Binding::Tpm, Binding::Tpd]),
        any::<bool>(),
        prop::bool::weighted(0.25),
    )
        .prop_map(|(b, small, unset)| binding(b, small, unset));
    // Every window tight at once: small limits (every request booked with the bank) and limits
    // large enough for leases.
    let all = prop::sample::select(vec![
        (10u64, 60u64, 1_000u64, 5_000u64),
        (80, 240, 16_000, 40_000),
    ])
    .prop_map(|(rpm, rpd, tpm, tpd)| Limits {
        rpm: Some(rpm),
        rpd: Some(rpd),
        tpm: Some(tpm),
        tpd: Some(tpd),
        max_output_tokens: None,
    });
    prop_oneof![4 => one, 1 => all]
}

/// A run's start: anywhere, or in the last two minutes of a day, so that runs cross midnight.
fn start() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..1_000_000_000_000,
        1 => (0u64..10_000_000, 0u64..120_000).prop_map(|(day, back)| (day + 1) * DAY_MS - back),
    ]
}

struct Isolate {
    holdings: Holdings,
    /// Requests that reached the provider and have not ended.
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

    /// Each window's counts, with its limit and name.
    fn windows<'s>(
        &'s self,
        l: &Limits,
    ) -> [(&'s BTreeMap<u64, u64>, Option<u64>, &'static str); 4] {
        [
            (&self.rpm, l.rpm, "requests per minute"),
            (&self.rpd, l.rpd, "requests per day"),
            (&self.tpm, l.tpm, "tokens per minute (estimates)"),
            (&self.tpd, l.tpd, "tokens per day (estimates)"),
        ]
    }
}

/// What a run did, for the check that each window is reached (see
/// `each_window_binds_in_the_runs_that_make_it_tight`).
struct Run {
    sent: Sent,
    /// The most sent in any one window of each kind (rpm, rpd, tpm, tpd), ended requests
    /// included.
    peak: [u64; 4],
    /// Requests admitted from a lease, and booked with the bank.
    leased: u64,
    booked: u64,
}

/// Plays `ops` from `start` with three isolates and one bank under `limits`, and checks that
/// no window of any kind ever has more sent than its limit.
fn run(ops: &[Op], start: u64, limits: &Limits) -> Result<Run, TestCaseError> {
    let key = KeyCard {
        id: "k".into(),
        fingerprint: "f".into(),
    };
    let offers = [Offer {
        org: "o".into(),
        keys: vec![key.clone()],
    }];
    let shard = Shard::new("p", "o");
    let mut bank = OrgLedger::default();
    let mut isolates: Vec<Isolate> = (0..ISOLATES)
        .map(|i| Isolate {
            holdings: Holdings::new(format!("i{i}")),
            open: Vec::new(),
        })
        .collect();
    let mut out = Run {
        sent: Sent::default(),
        peak: [0; 4],
        leased: 0,
        booked: 0,
    };
    let mut now = start;
    for op in ops {
        match *op {
            Op::Admit { who, tokens } => {
                let iso = &mut isolates[who];
                let admitted = match iso
                    .holdings
                    .admit("p", &offers, "m", limits, tokens, None, now)
                {
                    Admission::Admitted { ticket, .. } => Some(ticket),
                    Admission::Ask { keys, .. } => {
                        let opt = ModelOption {
                            model: "m".into(),
                            limits: *limits,
                        };
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
                    match ticket.source {
                        Source::Lease { .. } => out.leased += 1,
                        Source::Bank => out.booked += 1,
                        // Advisory admissions happen only without a bank; there is one here.
                        Source::Advisory => prop_assert!(false, "advisory admission"),
                    }
                    out.sent.add(&ticket, 1, signed(ticket.tokens));
                    iso.open.push(ticket);
                }
            }
            Op::End {
                who,
                which,
                how,
                used,
            } => {
                let iso = &mut isolates[who];
                if which >= iso.open.len() {
                    continue;
                }
                let ticket = iso.open.remove(which);
                let effect = match how {
                    Ending::Spent | Ending::Used => Effect::Spent,
                    Ending::NotSpent => Effect::NotSpent,
                    Ending::RequestOnly => Effect::RequestOnly,
                    Ending::Refused => Effect::Refused(Refusal {
                        retry_after_ms: Some(used),
                        ..Refusal::default()
                    }),
                    Ending::KeyRefused => Effect::KeyRefused { status: 403 },
                };
                let usage = matches!(how, Ending::Used).then_some(Usage {
                    prompt_tokens: used,
                    cached_tokens: 0,
                    completion_tokens: 0,
                });
                // What the provider counts in the end: given-back requests never reached it
                // (their tokens come off); real usage replaces the estimate.
                let (dr, dt) = effect.shift(ticket.tokens, usage.map(|u| u.counted()));
                out.sent.add(&ticket, dr, dt.min(0));
                iso.holdings
                    .settle(&shard, &key, ticket, effect, usage, None, now);
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
        // Checked after every step, not only at the end: a window over its limit for a while
        // is an over-admission even if give-backs bring it under later.
        for (i, (map, limit, what)) in out.sent.windows(limits).into_iter().enumerate() {
            for (start, n) in map {
                out.peak[i] = out.peak[i].max(*n);
                if let Some(limit) = limit {
                    prop_assert!(*n <= limit, "{what} from {start}: {n} sent, limit {limit}");
                }
            }
        }
    }
    // The bank's request books never claim more than their limits from the router's own
    // bookings. (Its token books may: real usage above the estimate is recorded as spent.)
    let b = bank.books("m");
    for (limit, booked, what) in [
        (
            limits.rpm,
            b.rpm.current(now, MINUTE_MS),
            "requests per minute",
        ),
        (limits.rpd, b.rpd.current(now, DAY_MS), "requests per day"),
    ] {
        if let Some(limit) = limit {
            prop_assert!(
                booked <= limit,
                "the bank books {booked} {what}, limit {limit}"
            );
        }
    }
    prop_assert_eq!(window_start(now, DAY_MS) % DAY_MS, 0);
    let fail = |e: serde_json::Error| TestCaseError::fail(e.to_string());
    let json = serde_json::to_string(&bank).map_err(fail)?;
    prop_assert_eq!(
        serde_json::from_str::<OrgLedger>(&json).map_err(fail)?,
        bank
    );
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn isolates_never_over_admit_together(
        ops in prop::collection::vec(op(), 1..500),
        start in start(),
        limits in limits(),
    ) {
        run(&ops, start, &limits)?;
    }
}

/// The property holds only as far as its runs reach the limits: in the cases that make one
/// window tight, that window must fill, and the cases sized for leases must admit from leases.
/// A generator that drifted (limits no run reaches, runs cut short by a blocked key, leases
/// never granted) would leave the property above passing while it checks nothing.
#[test]
fn each_window_binds_in_the_runs_that_make_it_tight() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    const RUNS: usize = 40;
    let mut runner = TestRunner::deterministic();
    let ops = prop::collection::vec(op(), 250..500);
    for (i, b) in [Binding::Rpm, Binding::Rpd, Binding::Tpm, Binding::Tpd]
        .into_iter()
        .enumerate()
    {
        for small in [true, false] {
            let l = binding(b, small, false);
            let limit = [l.rpm, l.rpd, l.tpm, l.tpd][i].unwrap_or_default();
            // Filled: within one request of the limit (an estimate is below 300 tokens) when
            // every request books with the bank; with leases, within what three isolates'
            // leases may hold unspent (1/16 of the limit each).
            let one = if i < 2 { 1 } else { 300 };
            let reach = if small {
                limit - one
            } else {
                limit - 3 * limit / 16
            };
            let (mut filled, mut leased, mut share) = (0, 0, 0.0);
            for _ in 0..RUNS {
                let ops = ops.new_tree(&mut runner).unwrap().current();
                let start = start().new_tree(&mut runner).unwrap().current();
                let out = run(&ops, start, &l).unwrap();
                filled += usize::from(out.peak[i] >= reach);
                leased += usize::from(out.leased > 0);
                share += out.leased as f64 / (out.leased + out.booked).max(1) as f64;
            }
            let share = share / RUNS as f64;
            let what = format!("{b:?}, {}", if small { "small" } else { "leased" });
            println!(
                "{what}: filled in {filled}/{RUNS} runs, leases in {leased}/{RUNS}, {:.0} % of admissions from leases",
                share * 100.0
            );
            // Measured: every profile fills in 28 to 40 of the 40 runs; the leased ones admit
            // from leases in all 40 (23 to 29 % of their admissions), the small ones in at most
            // 2 (1 %).
            assert!(
                filled * 2 >= RUNS,
                "{what}: filled in {filled} of {RUNS} runs"
            );
            if small {
                assert!(share < 0.05, "{what}: {:.0} % from leases", share * 100.0);
            } else {
                assert!(
                    leased * 4 >= RUNS * 3,
                    "{what}: leases in {leased} of {RUNS} runs"
                );
            }
        }
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
