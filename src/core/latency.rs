//! Learned latency: how long each provider and model takes to its answer's first byte, as a
//! decaying estimate with a p50 and a p90, kept per isolate from the attempts it makes. The
//! fast path derives two things from it: how long an attempt may wait for its first byte
//! ([`first_byte_timeout`]), and when a slow attempt is hedged with the next candidate
//! ([`Latencies::hedge_after`], within the share [`HedgeBudget`] allows).
//!
//! An estimate is a histogram over logarithmic buckets (four per doubling, so a quantile is
//! known to within 19 %), whose weights halve every [`HALF_LIFE_MS`]: recent attempts count
//! more, and a provider that changes is learned again within minutes. Decay scales every bucket
//! alike, so it changes how much an estimate is trusted ([`MIN_WEIGHT`]), never its quantiles.

use super::config::{Config, Target};

/// How long an observation takes to count half as much.
pub const HALF_LIFE_MS: u64 = 300_000;

/// The weight (decayed observations) below which an estimate is not used: a few attempts say
/// little of a tail.
pub const MIN_WEIGHT: f64 = 8.0;

/// Buckets per doubling of the time.
const PER_DOUBLING: f64 = 4.0;

/// Buckets: the last one's bound is 2^(71/4) ms, about 220 s, past any attempt's timeout.
const BUCKETS: usize = 72;

/// The fast path's attempt timeout to first byte is this many times the learned p90.
pub const FIRST_BYTE_FACTOR: u64 = 3;

/// A decaying histogram of times in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    weights: [f32; BUCKETS],
    /// When the weights were last decayed.
    at_ms: u64,
}

impl Default for Estimate {
    fn default() -> Self {
        Estimate {
            weights: [0.0; BUCKETS],
            at_ms: 0,
        }
    }
}

/// The bucket of `ms`: the first whose bound is at least `ms`.
fn bucket_of(ms: u64) -> usize {
    if ms <= 1 {
        return 0;
    }
    let i = ((ms as f64).log2() * PER_DOUBLING).ceil();
    (i as usize).min(BUCKETS - 1)
}

/// The upper bound of bucket `i`, in whole milliseconds (rounded up).
fn bound_of(i: usize) -> u64 {
    (2f64.powf(i as f64 / PER_DOUBLING)).ceil() as u64
}

impl Estimate {
    /// Adds one observation of `ms` at `now_ms`.
    pub fn observe(&mut self, ms: u64, now_ms: u64) {
        self.decay_to(now_ms);
        if let Some(w) = self.weights.get_mut(bucket_of(ms)) {
            *w += 1.0;
        }
    }

    /// Adds `other`'s observations (another isolate's, or a bank's), each as it has decayed.
    pub fn merge(&mut self, other: &Estimate) {
        let at = self.at_ms.max(other.at_ms);
        self.decay_to(at);
        let mut other = other.clone();
        other.decay_to(at);
        for (w, o) in self.weights.iter_mut().zip(other.weights) {
            *w += o;
        }
    }

    fn decay_to(&mut self, now_ms: u64) {
        if now_ms <= self.at_ms {
            return;
        }
        let halvings = (now_ms - self.at_ms) as f64 / HALF_LIFE_MS as f64;
        let factor = 0.5f64.powf(halvings) as f32;
        for w in &mut self.weights {
            *w *= factor;
        }
        self.at_ms = now_ms;
    }

    /// The observations' weight at `now_ms`.
    pub fn weight(&self, now_ms: u64) -> f64 {
        let total: f64 = self.weights.iter().map(|w| f64::from(*w)).sum();
        let halvings = now_ms.saturating_sub(self.at_ms) as f64 / HALF_LIFE_MS as f64;
        total * 0.5f64.powf(halvings)
    }

    /// The time under which a share `q` (0 to 1) of the observations fell, as its bucket's
    /// upper bound (so never below the true quantile); `None` when the estimate has less than
    /// [`MIN_WEIGHT`] at `now_ms`.
    pub fn quantile(&self, q: f64, now_ms: u64) -> Option<u64> {
        if self.weight(now_ms) < MIN_WEIGHT {
            return None;
        }
        let total: f64 = self.weights.iter().map(|w| f64::from(*w)).sum();
        let wanted = total * q.clamp(0.0, 1.0);
        let mut seen = 0.0;
        for (i, w) in self.weights.iter().enumerate() {
            seen += f64::from(*w);
            if seen >= wanted && *w > 0.0 {
                return Some(bound_of(i));
            }
        }
        Some(bound_of(BUCKETS - 1))
    }

    pub fn p50(&self, now_ms: u64) -> Option<u64> {
        self.quantile(0.5, now_ms)
    }

    pub fn p90(&self, now_ms: u64) -> Option<u64> {
        self.quantile(0.9, now_ms)
    }
}

/// Which answers an estimate is of: a stream's first byte is its first event, a JSON answer's
/// comes when it is all but written, so the two are learned apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stream,
    Json,
}

impl Kind {
    pub fn of(streams: bool) -> Kind {
        match streams {
            true => Kind::Stream,
            false => Kind::Json,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Stream => "stream",
            Kind::Json => "json",
        }
    }
}

/// One target's estimates: to its answer's headers and to its first byte.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latency {
    pub headers: Estimate,
    pub first_byte: Estimate,
}

/// What an isolate has learned, per provider, model and kind of answer.
#[derive(Debug, Default)]
pub struct Latencies {
    by_target: Vec<(String, String, Kind, Latency)>,
}

impl Latencies {
    fn entry(&mut self, provider: &str, model: &str, kind: Kind) -> &mut Latency {
        let at = self
            .by_target
            .iter()
            .position(|(p, m, k, _)| p == provider && m == model && *k == kind);
        let i = match at {
            Some(i) => i,
            None => {
                let fresh = (
                    provider.to_owned(),
                    model.to_owned(),
                    kind,
                    Latency::default(),
                );
                self.by_target.push(fresh);
                self.by_target.len() - 1
            }
        };
        &mut self.by_target[i].3
    }

    /// An attempt that answered: its headers after `headers_ms` (when known apart), its first
    /// byte after `first_ms`. A timeout is observed at its timeout too: the tail it says exists
    /// would otherwise never be learned.
    pub fn observe(
        &mut self,
        (provider, model, kind): (&str, &str, Kind),
        headers_ms: Option<u64>,
        first_ms: u64,
        now_ms: u64,
    ) {
        let latency = self.entry(provider, model, kind);
        latency
            .headers
            .observe(headers_ms.unwrap_or(first_ms), now_ms);
        latency.first_byte.observe(first_ms, now_ms);
    }

    pub fn get(&self, provider: &str, model: &str, kind: Kind) -> Option<&Latency> {
        self.by_target
            .iter()
            .find(|(p, m, k, _)| p == provider && m == model && *k == kind)
            .map(|(_, _, _, l)| l)
    }

    /// When an attempt on this target that has not produced its first byte is hedged: at its
    /// learned p90; `None` while too little is known.
    pub fn hedge_after(&self, provider: &str, model: &str, kind: Kind, now_ms: u64) -> Option<u64> {
        self.get(provider, model, kind)?.first_byte.p90(now_ms)
    }

    /// The estimates as the status endpoint shows them: per `provider/model` and kind, the p50
    /// and p90 to headers and to first byte, and the weight behind them.
    pub fn status(&self, now_ms: u64) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (provider, model, kind, latency) in &self.by_target {
            let entry = out
                .entry(format!("{provider}/{model}"))
                .or_insert_with(|| serde_json::json!({}));
            if let Some(map) = entry.as_object_mut() {
                let f = &latency.first_byte;
                let h = &latency.headers;
                map.insert(
                    kind.name().to_owned(),
                    serde_json::json!({
                        "headers_p50_ms": h.p50(now_ms),
                        "headers_p90_ms": h.p90(now_ms),
                        "first_byte_p50_ms": f.p50(now_ms),
                        "first_byte_p90_ms": f.p90(now_ms),
                        "weight": (f.weight(now_ms) * 10.0).round() / 10.0,
                    }),
                );
            }
        }
        serde_json::Value::Object(out)
    }
}

/// Orders the targets of `route` among `targets` (a request's candidates, in order) by their
/// learned p90 to first byte, fastest first, leaving every other candidate where it is. A
/// target with too little learned comes first (in configured order among such), so that each
/// is tried until its latency is known; the planner still skips any without quota.
pub fn order_route(
    config: &Config,
    route: &str,
    targets: &mut [&Target],
    latencies: &Latencies,
    kind: Kind,
    now_ms: u64,
) {
    let Some(of_route) = config.targets(route) else {
        return;
    };
    let at: Vec<usize> = (0..targets.len())
        .filter(|&i| of_route.contains(targets[i]))
        .collect();
    let mut picked: Vec<&Target> = at.iter().map(|&i| targets[i]).collect();
    picked.sort_by_key(|t| {
        let provider = config
            .providers
            .get(t.provider)
            .map_or("", |p| p.name.as_str());
        latencies
            .hedge_after(provider, &t.name, kind, now_ms)
            .unwrap_or(0)
    });
    for (i, t) in at.into_iter().zip(picked) {
        targets[i] = t;
    }
}

/// The fast path's attempt timeout to first byte: [`FIRST_BYTE_FACTOR`] times the learned p90,
/// within `floor` and `ceiling` (the configuration's); the ceiling while nothing is learned.
pub fn first_byte_timeout(p90: Option<u64>, floor: u64, ceiling: u64) -> u64 {
    match p90 {
        Some(p90) => p90
            .saturating_mul(FIRST_BYTE_FACTOR)
            .clamp(floor.min(ceiling), ceiling),
        None => ceiling,
    }
}

/// How many hedges an isolate may start: each fast-path request adds `share` of one (up to a
/// small burst), and a hedge spends one, so hedges stay within that share of requests however
/// slow a provider turns.
#[derive(Debug, Default)]
pub struct HedgeBudget {
    tokens: f64,
}

/// The most hedges a quiet isolate keeps in hand.
const HEDGE_BURST: f64 = 2.0;

impl HedgeBudget {
    /// A fast-path request that may be hedged.
    pub fn request(&mut self, share: f64) {
        self.tokens = (self.tokens + share.max(0.0)).min(HEDGE_BURST);
    }

    /// Whether the budget has a hedge to spend.
    pub fn ready(&self) -> bool {
        self.tokens >= 1.0
    }

    /// Spends one hedge, if the budget has it.
    pub fn take(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate_of(times: &[u64], now_ms: u64) -> Estimate {
        let mut e = Estimate::default();
        for t in times {
            e.observe(*t, now_ms);
        }
        e
    }

    #[test]
    fn quantiles_bound_the_observations_within_a_bucket() {
        // 90 fast answers of 20 ms, 10 slow ones of 400 ms.
        let mut times = vec![20; 90];
        times.extend([400; 10]);
        let e = estimate_of(&times, 1_000);
        let p50 = e.p50(1_000).unwrap();
        let p90 = e.p90(1_000).unwrap();
        assert!((20..=24).contains(&p50), "p50 {p50}");
        assert!((20..=24).contains(&p90), "p90 {p90}");
        let p95 = e.quantile(0.95, 1_000).unwrap();
        assert!((400..=476).contains(&p95), "p95 {p95}");
    }

    #[test]
    fn too_few_observations_give_no_estimate() {
        let e = estimate_of(&[30; 7], 0);
        assert_eq!(e.p90(0), None);
        let e = estimate_of(&[30; 8], 0);
        assert!(e.p90(0).is_some());
    }

    #[test]
    fn old_observations_fade_and_the_recent_ones_decide() {
        // A provider slow an hour ago, fast now: the quantiles follow the recent attempts.
        let mut e = estimate_of(&[800; 50], 0);
        for _ in 0..20 {
            e.observe(50, 3_600_000);
        }
        let p90 = e.p90(3_600_000).unwrap();
        assert!(p90 < 64, "p90 {p90}");
        // And an estimate left alone long enough is not trusted any more.
        assert!(e.p90(3_600_000 + 3 * HALF_LIFE_MS).is_none());
    }

    #[test]
    fn merged_estimates_count_both_sides_as_they_decayed() {
        let a = estimate_of(&[20; 10], 0);
        let b = estimate_of(&[20; 10], HALF_LIFE_MS);
        let mut m = a.clone();
        m.merge(&b);
        // a's ten have halved by b's time.
        assert!((m.weight(HALF_LIFE_MS) - 15.0).abs() < 0.01);
        assert_eq!(m.p50(HALF_LIFE_MS), a.p50(0));
    }

    #[test]
    fn the_first_byte_timeout_follows_the_p90_within_its_bounds() {
        assert_eq!(first_byte_timeout(None, 1_000, 5_000), 5_000);
        assert_eq!(first_byte_timeout(Some(100), 1_000, 5_000), 1_000);
        assert_eq!(first_byte_timeout(Some(600), 1_000, 5_000), 1_800);
        assert_eq!(first_byte_timeout(Some(4_000), 1_000, 5_000), 5_000);
        // A floor above the ceiling (a client's small budget lowers the ceiling) gives way.
        assert_eq!(first_byte_timeout(Some(100), 1_000, 500), 500);
    }

    #[test]
    fn latencies_are_learned_per_target_and_kind() {
        let mut l = Latencies::default();
        for _ in 0..10 {
            l.observe(("groq", "llama", Kind::Stream), Some(30), 90, 0);
            l.observe(("groq", "llama", Kind::Json), None, 700, 0);
        }
        assert_eq!(l.hedge_after("groq", "llama", Kind::Stream, 0), Some(91));
        assert_eq!(l.hedge_after("groq", "llama", Kind::Json, 0), Some(725));
        assert_eq!(l.hedge_after("groq", "other", Kind::Stream, 0), None);
        let status = l.status(0);
        assert_eq!(status["groq/llama"]["stream"]["headers_p90_ms"], 32);
        assert_eq!(status["groq/llama"]["json"]["first_byte_p50_ms"], 725);
    }

    #[test]
    fn a_route_ordered_by_latency_puts_its_fastest_target_first_and_leaves_the_others_alone() {
        let doc = serde_json::json!({
            "providers": {
                "groq": {"keys": [{"id": "g", "secret": "G"}]},
                "together": {"keys": [{"id": "t", "secret": "T"}]},
                "fireworks": {"keys": [{"id": "f", "secret": "F"}]}
            },
            "routes": {
                "fast": {"order": "latency", "targets": ["groq/a", "together/b", "fireworks/c"]},
                "slow": ["together/d"]
            }
        });
        let config = Config::parse(&doc.to_string(), |n| {
            (!n.ends_with("_HASHES")).then(|| format!("sk-{n}"))
        })
        .unwrap();
        assert!(config.orders_by_latency("fast"));
        assert!(!config.orders_by_latency("slow"));
        let names = |ts: &[&Target]| ts.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        let mut targets: Vec<&Target> = config
            .targets("fast")
            .unwrap()
            .iter()
            .chain(config.targets("slow").unwrap())
            .collect();
        let mut l = Latencies::default();
        for _ in 0..10 {
            l.observe(("groq", "a", Kind::Json), None, 400, 0);
            l.observe(("together", "b", Kind::Json), None, 90, 0);
            l.observe(("together", "d", Kind::Json), None, 5, 0);
        }
        order_route(&config, "fast", &mut targets, &l, Kind::Json, 0);
        // c knows nothing yet: tried first; then b, faster than a; d is not the route's.
        assert_eq!(names(&targets), ["c", "b", "a", "d"]);
        // Once c is known to be slowest, it goes last.
        for _ in 0..10 {
            l.observe(("fireworks", "c", Kind::Json), None, 900, 0);
        }
        order_route(&config, "fast", &mut targets, &l, Kind::Json, 0);
        assert_eq!(names(&targets), ["b", "a", "c", "d"]);
        // Streams are learned apart: nothing is known of them, so the order stays.
        let before = names(&targets);
        order_route(&config, "fast", &mut targets, &l, Kind::Stream, 0);
        assert_eq!(names(&targets), before);
    }

    #[test]
    fn a_route_table_is_checked_key_by_key() {
        let parse = |route: serde_json::Value| {
            let doc = serde_json::json!({
                "providers": {"groq": {"keys": [{"id": "g", "secret": "G"}]}},
                "routes": {"fast": route}
            });
            Config::parse(&doc.to_string(), |n| {
                (!n.ends_with("_HASHES")).then(|| format!("sk-{n}"))
            })
            .map(|_| ())
        };
        assert!(parse(serde_json::json!({"targets": ["groq/a"]})).is_ok());
        assert!(parse(serde_json::json!({"targets": ["groq/a"], "order": "configured"})).is_ok());
        let err = |route| parse(route).unwrap_err().path;
        assert!(
            err(serde_json::json!({"targets": ["groq/a"], "order": "fastest"}))
                .contains("routes.fast.order")
        );
        assert!(
            err(serde_json::json!({"targets": ["groq/a"], "sort": "latency"}))
                .contains("routes.fast.sort")
        );
        assert!(err(serde_json::json!({"order": "latency"})) == "routes.fast.targets");
    }

    #[test]
    fn hedges_stay_within_their_share_of_requests() {
        let mut budget = HedgeBudget::default();
        let mut hedges = 0;
        for _ in 0..1_000 {
            budget.request(0.05);
            if budget.take() {
                hedges += 1;
            }
        }
        assert_eq!(hedges, 50);
        // None at all with a share of 0.
        let mut none = HedgeBudget::default();
        none.request(0.0);
        assert!(!none.take());
    }
}
