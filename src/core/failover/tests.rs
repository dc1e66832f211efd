use super::*;
use crate::core::quota::bank::Dirty;
use crate::core::ratelimit::Refusal;

const T0: u64 = 1_763_900_000_000 - 1_763_900_000_000 % 86_400_000;

/// Groq with three keys in two organizations (limits from the preset), then two GPU
/// providers that track nothing.
fn config_with(failover: serde_json::Value) -> Config {
    let doc = serde_json::json!({
        "failover": failover,
        "providers": {
            "groq": {"keys": [
                {"id": "g1", "secret": "G1", "org": "a"},
                {"id": "g2", "secret": "G2", "org": "a"},
                {"id": "g3", "secret": "G3", "org": "b"}
            ]},
            "together": {"keys": [{"id": "t1", "secret": "T1"}, {"id": "t2", "secret": "T2"}]},
            "fireworks": {"keys": [{"id": "f1", "secret": "F1"}]}
        },
        "routes": {
            "fast": ["groq/llama-3.1-8b-instant", "groq/llama-3.3-70b-versatile"],
            "slow": ["together/m-t", "fireworks/m-f"]
        }
    });
    Config::parse(&doc.to_string(), |n| {
        (!n.ends_with("_HASHES")).then(|| format!("sk-{n}"))
    })
    .unwrap()
}

fn config() -> Config {
    config_with(serde_json::json!({}))
}

fn targets(c: &Config) -> Vec<&Target> {
    c.targets("fast")
        .unwrap()
        .iter()
        .chain(c.targets("slow").unwrap())
        .collect()
}

/// The quota banks (one per organization, by shard name) and one isolate's holdings: the edge's
/// Durable Objects and thread-local state, in memory.
struct World {
    banks: quota::Banks,
    holdings: Holdings,
}

impl World {
    fn new() -> Self {
        World {
            banks: quota::Banks::default(),
            holdings: Holdings::new("test-isolate"),
        }
    }

    fn reserve(&mut self, call: quota::Call, now: u64) -> Reply {
        self.banks.call(&call.shard, call.command, now)
    }

    /// Fills every window of `org` on every Groq model.
    fn fill(&mut self, c: &Config, org: &str) {
        let groq = c.providers.iter().find(|p| p.name == "groq").unwrap();
        let keys = quota::offers(groq)
            .into_iter()
            .find(|o| o.org == org)
            .unwrap()
            .keys;
        for (model, limits) in &groq.limits {
            let option = quota::ModelOption {
                model: model.clone(),
                limits: *limits,
            };
            let bank = self.banks.bank(&Shard::new("groq", org));
            while matches!(
                bank.reserve(
                    std::slice::from_ref(&option),
                    &keys,
                    1,
                    T0,
                    &mut Dirty::default()
                ),
                quota::bank::Booking::Booked { .. }
            ) {}
        }
    }
}

/// What a run of the loop came to: the provider/model/key that served (or the error), the
/// attempts, and how many quota calls were made.
struct Run {
    result: Result<String, RouterError>,
    attempts: Vec<Attempt>,
    reserves: usize,
    sent: Vec<(String, Option<u64>)>,
}

/// Drives the planner as the edge does, with `world` standing in for the quota banks and the
/// isolate, and `answer` for the upstreams (it sees `provider/model@key`).
fn drive(
    c: &Config,
    world: &mut World,
    breakers: &mut Breakers,
    now: u64,
    mut answer: impl FnMut(&str) -> Outcome,
) -> Run {
    let t = targets(c);
    let mut p = Planner::new(c, &t, 0, 100, now, c.failover.deadline_ms);
    let mut reserves = 0;
    let mut sent = Vec::new();
    for _ in 0..100 {
        let next = p.next(now, breakers, &mut world.holdings);
        match next {
            Next::Reserve(call) => {
                reserves += 1;
                let reply = world.reserve(*call, now);
                p.on_reply(reply, &mut world.holdings, now);
            }
            Next::Send {
                choice,
                ticket,
                timeout_ms,
            } => {
                let name = format!(
                    "{}/{}@{}",
                    choice.provider.name, choice.target.name, choice.key.id
                );
                sent.push((name.clone(), ticket.as_ref().map(|t| t.tokens)));
                let _ = timeout_ms;
                let outcome = answer(&name);
                if let Some(ticket) = ticket {
                    let (shard, key) = shard_of(&choice);
                    let effect = Effect::of(&outcome);
                    world
                        .holdings
                        .settle(&shard, &key, ticket, effect, None, None, now);
                }
                let verdict = p.record(&choice, &outcome, 5, now, breakers);
                let result = match verdict {
                    Verdict::Serve => Ok(name),
                    Verdict::Return(err) => Err(err),
                    Verdict::Retry => continue,
                };
                return Run {
                    result,
                    attempts: p.attempts().to_vec(),
                    reserves,
                    sent,
                };
            }
            Next::GiveUp(err) => {
                return Run {
                    result: Err(err),
                    attempts: p.attempts().to_vec(),
                    reserves,
                    sent,
                }
            }
        }
    }
    panic!("the loop did not end");
}

/// [`drive`] with fresh banks, isolate and circuits, at `T0`.
fn fresh(c: &Config, answer: impl FnMut(&str) -> Outcome) -> Run {
    drive(c, &mut World::new(), &mut Breakers::default(), T0, answer)
}

fn rate_limited(secs: u64) -> Outcome {
    Outcome::RateLimited(Refusal {
        window: None,
        retry_after_ms: Some(secs * 1_000),
        billing: false,
    })
}

fn names(run: &Run) -> Vec<&str> {
    run.sent.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn the_first_candidate_serves_with_one_reservation() {
    let c = config();
    let run = fresh(&c, |_| Outcome::Success);
    assert_eq!(run.result.unwrap(), "groq/llama-3.1-8b-instant@g1");
    assert_eq!(run.reserves, 1);
    assert_eq!(run.sent[0].1, Some(100), "booked with the estimate");
}

#[test]
fn a_429_moves_to_another_organization_then_serves() {
    let c = config();
    let run = fresh(&c, |n| {
        if n.ends_with("@g1") {
            rate_limited(7)
        } else {
            Outcome::Success
        }
    });
    // g2 shares org a with g1, so the next try is org b's key.
    assert_eq!(
        names(&run),
        [
            "groq/llama-3.1-8b-instant@g1",
            "groq/llama-3.1-8b-instant@g3"
        ]
    );
    assert_eq!(run.reserves, 2);
    assert_eq!(run.attempts[0].outcome, "rate_limited");
    assert_eq!(run.attempts[1].outcome, "success");
}

#[test]
fn every_groq_organization_refused_then_the_slow_path_serves() {
    let c = config();
    let run = fresh(&c, |n| {
        if n.starts_with("groq/") {
            rate_limited(30)
        } else {
            Outcome::Success
        }
    });
    assert_eq!(
        names(&run),
        [
            "groq/llama-3.1-8b-instant@g1",
            "groq/llama-3.1-8b-instant@g3",
            // Another Groq model has its own limits per organization.
            "groq/llama-3.3-70b-versatile@g1",
            "groq/llama-3.3-70b-versatile@g3",
            "together/m-t@t1",
        ]
    );
    assert_eq!(run.result.unwrap(), "together/m-t@t1");
}

#[test]
fn a_full_ledger_falls_through_without_calling_groq() {
    let c = config();
    let mut world = World::new();
    world.fill(&c, "a");
    world.fill(&c, "b");
    let run = drive(&c, &mut world, &mut Breakers::default(), T0, |_| {
        Outcome::Success
    });
    assert_eq!(names(&run), ["together/m-t@t1"]);
    assert_eq!(
        run.reserves, 2,
        "one call per organization: the books each bank returns rule out the other model too"
    );
    // The next request believes its fresh snapshot: no call at all.
    let run = drive(&c, &mut world, &mut Breakers::default(), T0 + 10, |_| {
        Outcome::Success
    });
    assert_eq!(names(&run), ["together/m-t@t1"]);
    assert_eq!(run.reserves, 0);
}

#[test]
fn a_gpu_503_moves_to_the_next_gpu_provider() {
    let c = config();
    let run = drive(&c, &mut World::new(), &mut Breakers::default(), T0, |n| {
        if n.starts_with("groq/") {
            Outcome::TooLarge(RouterError::BodyTooLarge { limit: 1 })
        } else if n.starts_with("together/") {
            Outcome::ServerError { status: 503 }
        } else {
            Outcome::Success
        }
    });
    // A 5xx skips the provider: Together's second key is not tried.
    assert_eq!(
        names(&run),
        [
            "groq/llama-3.1-8b-instant@g1",
            "groq/llama-3.3-70b-versatile@g1",
            "together/m-t@t1",
            "fireworks/m-f@f1"
        ]
    );
    assert_eq!(run.result.unwrap(), "fireworks/m-f@f1");
}

#[test]
fn everything_rate_limited_gives_429_with_the_earliest_retry() {
    let c = config();
    let run = fresh(&c, |n| {
        if n.contains("@g3") {
            rate_limited(4)
        } else {
            rate_limited(40)
        }
    });
    assert_eq!(run.attempts.len(), 6, "capped at max_attempts");
    assert_eq!(
        run.result.unwrap_err(),
        RouterError::QuotaExhausted {
            retry_after_s: Some(4)
        }
    );
}

#[test]
fn everything_failing_with_5xx_gives_502() {
    let c = config();
    let run = fresh(&c, |_| Outcome::ServerError { status: 500 });
    assert_eq!(run.attempts.len(), 3, "one attempt per provider");
    let err = run.result.unwrap_err();
    assert_eq!(err, RouterError::UpstreamFailed { status: 500 });
    assert_eq!(err.status(), 502);
}

#[test]
fn a_client_error_is_returned_at_once() {
    let c = config();
    let rejected = RouterError::UpstreamRejected {
        status: 400,
        message: "bad".into(),
        kind: "invalid_request_error".into(),
        param: None,
        code: None,
    };
    let run = fresh(&c, |_| Outcome::Rejected(rejected.clone()));
    assert_eq!(run.attempts.len(), 1);
    assert_eq!(run.result.unwrap_err(), rejected);
}

#[test]
fn a_refused_key_is_not_used_again_in_the_request() {
    let c = config_with(serde_json::json!({"max_attempts": 15}));
    let run = fresh(&c, |n| {
        if n.contains("@g1") || n.contains("@t1") {
            Outcome::Auth { status: 401 }
        } else if n.starts_with("groq/") {
            rate_limited(10)
        } else {
            Outcome::Success
        }
    });
    assert_eq!(
        names(&run),
        [
            "groq/llama-3.1-8b-instant@g1",
            // The ledger ranks organizations by headroom: org b has the most now.
            "groq/llama-3.1-8b-instant@g3",
            // g1 is refused, but g2 of the same organization still has its quota.
            "groq/llama-3.1-8b-instant@g2",
            // The 70b model: g1 is not offered again.
            "groq/llama-3.3-70b-versatile@g2",
            "groq/llama-3.3-70b-versatile@g3",
            "together/m-t@t1",
            "together/m-t@t2",
        ]
    );
    assert_eq!(run.result.unwrap(), "together/m-t@t2");
}

#[test]
fn too_large_everywhere_returns_the_providers_413() {
    let c = config_with(serde_json::json!({"max_attempts": 15}));
    let large = RouterError::UpstreamRejected {
        status: 413,
        message: "Request too large".into(),
        kind: "invalid_request_error".into(),
        param: None,
        code: None,
    };
    let run = fresh(&c, |_| Outcome::TooLarge(large.clone()));
    assert_eq!(run.attempts.len(), 4, "once per model");
    assert_eq!(run.result.unwrap_err(), large);
}

#[test]
fn timeouts_fit_the_deadline_and_end_in_504() {
    let c = config_with(serde_json::json!({"attempt_timeout_ms": 400, "deadline_ms": 1_000}));
    let t = targets(&c);
    let mut b = Breakers::default();
    let mut w = World::new();
    let mut p = Planner::new(&c, &t, 0, 10, T0, c.failover.deadline_ms);
    let mut now = T0;
    let mut timeouts = Vec::new();
    loop {
        match p.next(now, &mut b, &mut w.holdings) {
            Next::Reserve(call) => {
                let reply = w.reserve(*call, now);
                p.on_reply(reply, &mut w.holdings, now);
            }
            Next::Send {
                choice, timeout_ms, ..
            } => {
                timeouts.push(timeout_ms);
                now += timeout_ms;
                let _ = p.record(&choice, &Outcome::Timeout, timeout_ms, now, &mut b);
            }
            Next::GiveUp(err) => {
                assert_eq!(err, RouterError::UpstreamTimeout);
                assert_eq!(err.status(), 504);
                break;
            }
        }
    }
    // Groq, then Together, then what is left of the deadline for Fireworks.
    assert_eq!(timeouts, [400, 400, 200]);
    assert_eq!(now, T0 + 1_000);
}

#[test]
fn an_unreachable_bank_books_on_the_isolates_own_snapshot() {
    let c = config();
    let t = targets(&c);
    let mut b = Breakers::default();
    let mut w = World::new();
    let mut p = Planner::new(&c, &t, 0, 10, T0, 60_000);
    assert!(matches!(
        p.next(T0, &mut b, &mut w.holdings),
        Next::Reserve { .. }
    ));
    p.on_unreachable(&mut w.holdings, T0);
    match p.next(T0, &mut b, &mut w.holdings) {
        Next::Send { choice, ticket, .. } => {
            assert_eq!(choice.key.id, "g1");
            assert_eq!(ticket.map(|t| t.source), Some(quota::Source::Advisory));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.booked(), Booked::Advisory);
    // The next request does not wait on the bank again while it is in trouble.
    let mut p = Planner::new(&c, &t, 0, 10, T0 + 1, 60_000);
    assert!(matches!(
        p.next(T0 + 1, &mut b, &mut w.holdings),
        Next::Send { .. }
    ));
}

#[test]
fn missing_secrets_are_named_when_nothing_can_be_tried() {
    let doc = serde_json::json!({
        "providers": {"groq": {"keys": [{"id": "g1", "secret": "G1"}]},
                      "together": {"keys": [{"id": "t1", "secret": "T1"}]}},
        "routes": {"fast": ["groq/llama-3.1-8b-instant"], "slow": ["together/m"]}
    });
    let c = Config::parse(&doc.to_string(), |_| None).unwrap();
    let run = fresh(&c, |_| Outcome::Success);
    assert_eq!(
        run.result.unwrap_err(),
        RouterError::MissingSecret {
            names: vec!["G1".into(), "T1".into()]
        }
    );
    assert!(run.attempts.is_empty());
}

#[test]
fn the_breaker_opens_skips_probes_and_closes() {
    let c = config_with(serde_json::json!({"breaker_failures": 2, "breaker_cooldown_ms": 10_000}));
    let mut b = Breakers::default();
    let mut world = World::new();
    let together_down = |n: &str| {
        if n.starts_with("together/") {
            Outcome::ServerError { status: 503 }
        } else if n.starts_with("groq/") {
            rate_limited(60)
        } else {
            Outcome::Success
        }
    };
    // Two requests fail on Together: its circuit opens.
    for _ in 0..2 {
        let run = drive(&c, &mut world, &mut b, T0, together_down);
        assert!(names(&run).contains(&"together/m-t@t1"));
    }
    assert!(b.is_open("together", T0));
    // While open, Together is skipped without a call.
    let run = drive(&c, &mut World::new(), &mut b, T0 + 5_000, |n| {
        if n.starts_with("groq/") {
            rate_limited(60)
        } else {
            Outcome::Success
        }
    });
    assert!(!names(&run).iter().any(|n| n.starts_with("together/")));
    assert_eq!(run.result.unwrap(), "fireworks/m-f@f1");
    // After the cooldown one probe goes through; it fails, and the circuit opens again.
    let run = drive(&c, &mut World::new(), &mut b, T0 + 10_000, together_down);
    assert!(names(&run).contains(&"together/m-t@t1"));
    assert!(b.is_open("together", T0 + 10_001));
    // The next probe succeeds and closes it.
    let run = drive(&c, &mut World::new(), &mut b, T0 + 20_000, |n| {
        if n.starts_with("groq/") {
            rate_limited(60)
        } else {
            Outcome::Success
        }
    });
    assert_eq!(run.result.unwrap(), "together/m-t@t1");
    assert!(!b.is_open("together", T0 + 20_001));
    assert_eq!(b.allows("together", T0 + 20_001, &c.failover), Ok(()));
}

#[test]
fn a_half_open_circuit_lets_one_probe_through() {
    let f = Failover {
        breaker_failures: 1,
        breaker_cooldown_ms: 1_000,
        ..Failover::default()
    };
    let mut b = Breakers::default();
    b.record("p", true, T0, &f);
    assert_eq!(b.allows("p", T0 + 10, &f), Err(T0 + 1_000));
    assert_eq!(b.allows("p", T0 + 1_000, &f), Ok(()));
    b.sent("p", T0 + 1_000);
    // The probe is out: others wait for it, or for a cooldown if it never reports.
    assert_eq!(b.allows("p", T0 + 1_500, &f), Err(T0 + 2_000));
    assert_eq!(b.allows("p", T0 + 2_000, &f), Ok(()));
}

#[test]
fn every_circuit_open_gives_503_with_retry_after() {
    let c = config_with(serde_json::json!({"breaker_failures": 1, "breaker_cooldown_ms": 20_000}));
    let mut b = Breakers::default();
    for p in ["groq", "together", "fireworks"] {
        b.record(p, true, T0, &c.failover);
    }
    let run = drive(&c, &mut World::new(), &mut b, T0 + 5_000, |_| {
        Outcome::Success
    });
    assert!(run.attempts.is_empty());
    let err = run.result.unwrap_err();
    assert_eq!(err, RouterError::ProvidersUnavailable { retry_after_s: 15 });
    assert_eq!(err.status(), 503);
}

/// Random outcomes never make the loop try a (key, model) twice, exceed its caps, or run
/// forever; the same seed gives the same attempts.
#[test]
fn random_outcomes_keep_the_invariants() {
    let c = config_with(serde_json::json!({"max_attempts": 15}));
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2_000 {
        let mut world = World::new();
        let mut b = Breakers::default();
        let run = drive(&c, &mut world, &mut b, T0, |_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            match seed % 9 {
                0 => Outcome::Success,
                1 => rate_limited(3),
                2 => Outcome::Auth { status: 403 },
                3 => Outcome::Capacity,
                4 => Outcome::ServerError { status: 502 },
                5 => Outcome::Timeout,
                6 => Outcome::Transport,
                7 => Outcome::BadAnswer,
                _ => Outcome::TooLarge(RouterError::BodyTooLarge { limit: 1 }),
            }
        });
        let mut seen = names(&run);
        let n = seen.len();
        assert!(n <= 15);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), n, "a pair was tried twice: {:?}", run.sent);
        // Every reservation was either used or came back empty.
        assert!(run.reserves <= n + 2);
        if let Err(err) = &run.result {
            assert!((400..600).contains(&err.status()));
        }
    }
}

#[test]
fn keys_with_the_same_id_at_two_providers_are_two_keys() {
    let doc = serde_json::json!({
        "providers": {"together": {"keys": [{"id": "main", "secret": "T"}]},
                      "fireworks": {"keys": [{"id": "main", "secret": "F"}]}},
        "routes": {"slow": ["together/m", "fireworks/m"]}
    });
    let c = Config::parse(&doc.to_string(), |n| (n.len() == 1).then(|| "k".to_owned())).unwrap();
    let t: Vec<&Target> = c.targets("slow").unwrap().iter().collect();
    let mut b = Breakers::default();
    let mut w = World::new();
    let mut p = Planner::new(&c, &t, 0, 10, T0, 60_000);
    let Next::Send { choice, .. } = p.next(T0, &mut b, &mut w.holdings) else {
        panic!("a send")
    };
    assert_eq!(choice.provider.name, "together");
    // A 403 on one provider's `main` says nothing of the other's.
    let _ = p.record(&choice, &Outcome::Auth { status: 403 }, 1, T0, &mut b);
    let Next::Send { choice, .. } = p.next(T0, &mut b, &mut w.holdings) else {
        panic!("a send")
    };
    assert_eq!(choice.provider.name, "fireworks");
    let _ = p.record(&choice, &Outcome::Auth { status: 403 }, 1, T0, &mut b);
    match p.next(T0, &mut b, &mut w.holdings) {
        Next::GiveUp(err) => assert_eq!(
            err,
            RouterError::UpstreamAuth {
                status: 403,
                secret: "T, F".into()
            }
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_reservation_that_comes_back_after_the_deadline_is_released_not_sent() {
    let c = config_with(serde_json::json!({"deadline_ms": 1_000}));
    let t = targets(&c);
    let mut b = Breakers::default();
    let mut w = World::new();
    let mut p = Planner::new(&c, &t, 0, 10, T0, c.failover.deadline_ms);
    let Next::Reserve(call) = p.next(T0, &mut b, &mut w.holdings) else {
        panic!("a reservation first")
    };
    let shard = call.shard.clone();
    let reply = w.reserve(*call, T0);
    p.on_reply(reply, &mut w.holdings, T0);
    // The quota call took the whole deadline.
    match p.next(T0 + 995, &mut b, &mut w.holdings) {
        Next::GiveUp(err) => assert_eq!(err, RouterError::UpstreamTimeout),
        other => panic!("{other:?}"),
    }
    assert!(p.attempts().is_empty());
    // The booking is given back with the next call to that bank.
    let calls = w.holdings.due(T0 + 995);
    let [quota::Call {
        shard: to,
        command: quota::Command::Exchange { batch, .. },
        ..
    }] = calls.as_slice()
    else {
        panic!("{calls:?}")
    };
    assert_eq!(to, &shard);
    assert_eq!(batch.deltas.len(), 1);
    assert_eq!(
        (batch.deltas[0].requests, batch.deltas[0].tokens),
        (-1, -10)
    );
}

#[test]
fn timeouts_cut_short_by_the_deadline_do_not_count_against_the_provider() {
    let c = config_with(serde_json::json!({"breaker_failures": 1, "attempt_timeout_ms": 5_000}));
    let t = targets(&c);
    let mut b = Breakers::default();
    let mut w = World::new();
    // A client's budget of 300 ms: the attempt gets 300, not the full 5 s.
    let mut p = Planner::new(&c, &t, 0, 10, T0, 300);
    let (choice, timeout_ms) = first_send(&mut p, &mut b, &mut w);
    assert_eq!(timeout_ms, 300);
    let _ = p.record(&choice, &Outcome::Timeout, 300, T0 + 300, &mut b);
    assert_eq!(b.allows("groq", T0 + 301, &c.failover), Ok(()));
    // A timeout after the whole attempt timeout does count.
    let mut p = Planner::new(&c, &t, 0, 10, T0, 60_000);
    let (choice, _) = first_send(&mut p, &mut b, &mut w);
    let _ = p.record(&choice, &Outcome::Timeout, 5_000, T0 + 5_000, &mut b);
    assert!(b.is_open("groq", T0 + 5_001));
}

/// Plans `p` at `T0` up to its first call (booking with the world's bank on the way): the
/// choice and the timeout it is sent with.
fn first_send<'c>(p: &mut Planner<'c>, b: &mut Breakers, w: &mut World) -> (Choice<'c>, u64) {
    loop {
        match p.next(T0, b, &mut w.holdings) {
            Next::Reserve(call) => {
                let reply = w.reserve(*call, T0);
                p.on_reply(reply, &mut w.holdings, T0);
            }
            Next::Send {
                choice, timeout_ms, ..
            } => return (choice, timeout_ms),
            Next::GiveUp(err) => panic!("{err:?}"),
        }
    }
}

#[test]
fn the_job_sets_the_attempt_timeout_and_whether_a_timeout_blames_the_provider() {
    let c = config_with(serde_json::json!({"breaker_failures": 1, "attempt_timeout_ms": 5_000}));
    let t = targets(&c);
    for (blames, open) in [(false, false), (true, true)] {
        let mut b = Breakers::default();
        let mut w = World::new();
        let mut p = Planner::new(&c, &t, 0, 10, T0, 60_000).with_attempts(2_000, blames);
        let (choice, timeout_ms) = first_send(&mut p, &mut b, &mut w);
        assert_eq!(timeout_ms, 2_000);
        let _ = p.record(&choice, &Outcome::Timeout, 2_000, T0 + 2_000, &mut b);
        // A long non-streamed answer (blames = false) leaves the circuit closed.
        assert_eq!(b.is_open("groq", T0 + 2_001), open, "blames: {blames}");
    }
}

#[test]
fn no_quota_call_when_every_organization_is_already_refused() {
    let doc = serde_json::json!({
        "providers": {"groq": {"keys": [{"id": "g1", "secret": "G1", "org": "a"},
                                        {"id": "g2", "secret": "G2", "org": "b"}]},
                      "together": {"keys": [{"id": "t1", "secret": "T1"}]}},
        "routes": {"fast": ["groq/llama-3.1-8b-instant"], "slow": ["together/m"]}
    });
    let c = Config::parse(&doc.to_string(), |n| {
        (!n.ends_with("_HASHES")).then(|| "k".to_owned())
    })
    .unwrap();
    let run = fresh(&c, |n| {
        if n.starts_with("groq/") {
            rate_limited(5)
        } else {
            Outcome::Success
        }
    });
    assert_eq!(run.attempts.len(), 3);
    assert_eq!(run.reserves, 2, "one per Groq organization, none wasted");
    assert_eq!(run.result.unwrap(), "together/m@t1");
}

/// Groq's model on flex first, then on demand, then Together.
fn flex_config(failover: serde_json::Value) -> Config {
    let doc = serde_json::json!({
        "failover": failover,
        "providers": {
            "groq": {"keys": [
                {"id": "g1", "secret": "G1", "org": "a"},
                {"id": "g3", "secret": "G3", "org": "b"}
            ]},
            "together": {"keys": [{"id": "t1", "secret": "T1"}]}
        },
        "routes": {
            "fast": [
                {"target": "groq/llama-3.1-8b-instant", "service_tier": "flex"},
                "groq/llama-3.1-8b-instant"
            ],
            "slow": ["together/m-t"]
        }
    });
    Config::parse(&doc.to_string(), |n| {
        (!n.ends_with("_HASHES")).then(|| format!("sk-{n}"))
    })
    .unwrap()
}

#[test]
fn a_flex_498_moves_to_on_demand_on_the_same_organization_without_opening_the_circuit() {
    let c = flex_config(serde_json::json!({"breaker_failures": 1}));
    let mut world = World::new();
    let mut breakers = Breakers::default();
    let run = drive(&c, &mut world, &mut breakers, T0, |n| match n {
        "groq/llama-3.1-8b-instant:flex@g1" => rate_limited(5),
        "groq/llama-3.1-8b-instant:flex@g3" => Outcome::Capacity,
        _ => Outcome::Success,
    });
    // Org a has as much on-demand room as org b, and comes first; org b's flex was out of
    // capacity, and its on-demand limits are its own.
    assert_eq!(
        names(&run),
        [
            "groq/llama-3.1-8b-instant:flex@g1",
            "groq/llama-3.1-8b-instant:flex@g3",
            "groq/llama-3.1-8b-instant@g3",
        ]
    );
    assert_eq!(run.attempts[1].tier.as_deref(), Some("flex"));
    assert_eq!(run.attempts[2].tier, None);
    assert_eq!(
        failover_header(&run.attempts, false).unwrap(),
        "groq/llama-3.1-8b-instant:flex=rate_limited, groq/llama-3.1-8b-instant:flex=capacity"
    );
    assert!(
        !breakers.is_open("groq", T0),
        "a flex 498 opened the circuit"
    );
    // Each tier is booked on its own books.
    let b = world.banks.bank(&Shard::new("groq", "b"));
    let requests = |b: &quota::OrgLedger, m: &str| b.books(m).rpm.current(T0, 60_000);
    assert_eq!(
        requests(b, "llama-3.1-8b-instant:flex"),
        0,
        "a 498 is given back"
    );
    assert_eq!(requests(b, "llama-3.1-8b-instant"), 1);
}

#[test]
fn flex_books_have_ten_times_the_limits_unless_configured() {
    let c = flex_config(serde_json::json!({}));
    let groq = &c.providers[c.targets("fast").unwrap()[0].provider];
    let on_demand = groq.limits["llama-3.1-8b-instant"];
    let flex = groq.limits["llama-3.1-8b-instant:flex"];
    assert_eq!(flex.rpm, on_demand.rpm.map(|v| v * 10));
    assert_eq!(flex.tpd, on_demand.tpd.map(|v| v * 10));
    assert_eq!(flex.max_output_tokens, on_demand.max_output_tokens);
    let doc = serde_json::json!({
        "providers": {"groq": {"keys": [{"id": "g1", "secret": "G1"}],
                               "limits": {"llama-3.1-8b-instant:flex": {"rpm": 7}}}},
        "routes": {"fast": [{"target": "groq/llama-3.1-8b-instant", "service_tier": "flex"}]}
    });
    let c = Config::parse(&doc.to_string(), |_| None).unwrap();
    assert_eq!(
        c.providers[0].limits["llama-3.1-8b-instant:flex"].rpm,
        Some(7)
    );
}

#[test]
fn a_498_without_a_tier_still_counts_against_the_provider() {
    let c = config_with(serde_json::json!({"breaker_failures": 1}));
    let mut breakers = Breakers::default();
    let run = drive(&c, &mut World::new(), &mut breakers, T0, |n| {
        if n.starts_with("groq/") {
            Outcome::Capacity
        } else {
            Outcome::Success
        }
    });
    assert_eq!(run.result.unwrap(), "together/m-t@t1");
    assert!(breakers.is_open("groq", T0));
}

#[test]
fn the_status_page_lists_the_circuits_not_closed() {
    let f = Failover {
        breaker_failures: 2,
        breaker_cooldown_ms: 1_000,
        ..Failover::default()
    };
    let mut b = Breakers::default();
    // One failure is not enough to open a circuit; a success closes one.
    b.record("together", true, T0, &f);
    b.record("groq", false, T0, &f);
    assert_eq!(b.not_closed(T0, &f), []);
    b.record("together", true, T0 + 1, &f);
    b.record("fireworks", true, T0 + 2, &f);
    b.record("fireworks", true, T0 + 3, &f);
    b.record("fireworks", true, T0 + 4, &f);
    let open = |provider: &str, failures, open_until_ms| Circuit {
        provider: provider.to_owned(),
        state: CircuitState::Open,
        failures,
        open_until_ms,
        probe_sent_at_ms: None,
    };
    // By provider name; each open until its cooldown ends.
    assert_eq!(
        b.not_closed(T0 + 10, &f),
        [
            open("fireworks", 3, T0 + 1_004),
            open("together", 2, T0 + 1_001)
        ]
    );
    // Past the cooldown the circuit is half open; once the probe is out, it says since when,
    // until the probe's own cooldown ends.
    let half_open = |probe_sent_at_ms| Circuit {
        state: CircuitState::HalfOpen,
        probe_sent_at_ms,
        ..open("together", 2, T0 + 1_001)
    };
    assert_eq!(b.not_closed(T0 + 1_001, &f)[1], half_open(None));
    b.sent("together", T0 + 1_100);
    assert_eq!(b.not_closed(T0 + 1_200, &f)[1], half_open(Some(T0 + 1_100)));
    assert_eq!(b.not_closed(T0 + 2_100, &f)[1], half_open(None));
    // A success closes it: it leaves the list.
    b.record("together", false, T0 + 2_200, &f);
    assert_eq!(b.not_closed(T0 + 2_200, &f).len(), 1);
    assert_eq!(
        serde_json::to_value(b.not_closed(T0 + 2_200, &f)).unwrap(),
        serde_json::json!([{"provider": "fireworks", "state": "half_open", "failures": 3,
                            "open_until_ms": T0 + 1_004, "probe_sent_at_ms": null}])
    );
}

/// The `provider/model@key` a hedge was sent to, if any.
fn hedge_name(next: Option<Next<'_>>) -> Option<String> {
    match next {
        Some(Next::Send { choice, .. }) => Some(format!(
            "{}/{}@{}",
            choice.provider.name, choice.target.name, choice.key.id
        )),
        Some(other) => panic!("a hedge is a send, not {other:?}"),
        None => None,
    }
}

#[test]
fn a_hedge_goes_to_another_key_of_the_same_provider_unless_told_it_may_go_further() {
    let c = config();
    let slow: Vec<&Target> = c.targets("slow").unwrap().iter().collect();
    let (mut b, mut w) = (Breakers::default(), World::new());
    let mut p = Planner::new(&c, &slow, 0, 10, T0, 60_000);
    let (first, _) = first_send(&mut p, &mut b, &mut w);
    assert_eq!(first.key.id, "t1");
    let hedge = p.next_hedge(&first, false, T0 + 50, &mut b, &mut w.holdings);
    assert_eq!(hedge_name(hedge).as_deref(), Some("together/m-t@t2"));
    // Together has no key left: only with `across` does a hedge go to Fireworks.
    assert!(p
        .next_hedge(&first, false, T0 + 60, &mut b, &mut w.holdings)
        .is_none());
    let hedge = p.next_hedge(&first, true, T0 + 60, &mut b, &mut w.holdings);
    assert_eq!(hedge_name(hedge).as_deref(), Some("fireworks/m-f@f1"));
    // The plan itself goes on where it was: both hedges count as tried.
    let _ = p.record(
        &first,
        &Outcome::ServerError { status: 503 },
        5,
        T0 + 70,
        &mut b,
    );
    assert!(matches!(
        p.next(T0 + 70, &mut b, &mut w.holdings),
        Next::GiveUp(_)
    ));
}

#[test]
fn a_hedge_never_asks_a_bank_and_avoids_the_organization_it_hedges() {
    let c = config();
    let t = targets(&c);
    let (mut b, mut w) = (Breakers::default(), World::new());
    let mut p = Planner::new(&c, &t, 0, 10, T0, 60_000);
    let (first, _) = first_send(&mut p, &mut b, &mut w);
    assert_eq!((first.key.org.as_str(), first.key.id.as_str()), ("a", "g1"));
    // Nothing held for organization b: booking there would mean a bank call, so no hedge.
    assert!(p
        .next_hedge(&first, false, T0 + 50, &mut b, &mut w.holdings)
        .is_none());
    // With the bank in trouble, the isolate books on its own snapshot: the hedge goes to
    // organization b, never to g2 of the organization already under way.
    w.holdings.slow(T0 + 60);
    assert_eq!(p.booked(), Booked::Bank);
    let Some(Next::Send { choice: hedge, .. }) =
        p.next_hedge(&first, false, T0 + 60, &mut b, &mut w.holdings)
    else {
        panic!("no hedge");
    };
    assert_eq!((hedge.key.org.as_str(), hedge.key.id.as_str()), ("b", "g3"));
    // Looking for the hedge left the request's booking as it was; the hedge's answering
    // first makes its booking the request's.
    assert_eq!(p.booked(), Booked::Bank);
    let _ = p.record(&hedge, &Outcome::Success, 30, T0 + 90, &mut b);
    assert_eq!(p.booked(), Booked::Advisory);
}

#[test]
fn a_cancelled_attempt_is_listed_but_is_no_failure() {
    let c = config();
    let slow: Vec<&Target> = c.targets("slow").unwrap().iter().collect();
    let (mut b, mut w) = (Breakers::default(), World::new());
    let mut p = Planner::new(&c, &slow, 0, 10, T0, 60_000);
    let (first, _) = first_send(&mut p, &mut b, &mut w);
    let Some(Next::Send { choice: hedge, .. }) =
        p.next_hedge(&first, false, T0 + 50, &mut b, &mut w.holdings)
    else {
        panic!("no hedge");
    };
    assert_eq!(
        p.record(&hedge, &Outcome::Success, 30, T0 + 80, &mut b),
        Verdict::Serve
    );
    p.record_cancelled(&first, 80);
    let outcomes: Vec<&str> = p.attempts().iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, ["success", CANCELLED]);
    assert_eq!(failover_header(p.attempts(), true), None);
    assert!(!b.is_open("together", T0 + 81));
}

#[test]
fn no_hedge_goes_to_the_organization_already_under_way() {
    // One organization only: its second key shares the limits (and the slowness) of the first.
    let doc = serde_json::json!({
        "providers": {"groq": {"keys": [
            {"id": "g1", "secret": "G1", "org": "a"},
            {"id": "g2", "secret": "G2", "org": "a"}
        ]}},
        "routes": {"fast": ["groq/llama-3.1-8b-instant"]}
    });
    let c = Config::parse(&doc.to_string(), |n| {
        (!n.ends_with("_HASHES")).then(|| format!("sk-{n}"))
    })
    .unwrap();
    let t: Vec<&Target> = c.targets("fast").unwrap().iter().collect();
    let (mut b, mut w) = (Breakers::default(), World::new());
    w.holdings.slow(T0);
    let mut p = Planner::new(&c, &t, 0, 10, T0, 60_000);
    let (first, _) = first_send(&mut p, &mut b, &mut w);
    assert_eq!(first.key.id, "g1");
    assert!(p
        .next_hedge(&first, true, T0 + 50, &mut b, &mut w.holdings)
        .is_none());
    // The organization is not refused for the request: the plan may still use it after a
    // failure of the first key's own (a 401).
    let _ = p.record(&first, &Outcome::Auth { status: 401 }, 5, T0 + 60, &mut b);
    let next = p.next(T0 + 60, &mut b, &mut w.holdings);
    assert!(
        matches!(next, Next::Send { ref choice, .. } if choice.key.id == "g2"),
        "{next:?}"
    );
}
