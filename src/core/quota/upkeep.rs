//! The schedule of an isolate's background quota work (renewals, returns, reports), run inside
//! some request's `wait_until`: whether to start it, how long to sleep between looks, and when
//! to stop, giving the leases back first, since nothing would return them on time once it has
//! stopped (the next request starts it again).

/// The background work stops after this long.
pub const RUN_MS: u64 = 20_000;
/// A loop that has not looked for this long was stopped by the runtime.
pub const DEAD_MS: u64 = 30_000;
/// The longest sleep between looks.
pub const TICK_MS: u64 = 250;

/// The background work's state in one isolate.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Upkeep {
    /// When the running loop started (0: not running).
    started_ms: u64,
    /// When it last looked.
    looked_ms: u64,
}

/// What the loop does after a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Sleep this long, then look again.
    Sleep(u64),
    /// Give the leases back, send that, and stop.
    Surrender,
    /// Nothing is held: stop.
    Stop,
}

impl Upkeep {
    /// Not running.
    pub const fn new() -> Upkeep {
        Upkeep {
            started_ms: 0,
            looked_ms: 0,
        }
    }

    /// Whether a loop should start at `now_ms`: none is running (or the one that was has not
    /// looked for [`DEAD_MS`]) and there is something to do (`work`).
    pub fn should_start(&self, now_ms: u64, work: bool) -> bool {
        let alive = self.started_ms != 0 && now_ms < self.looked_ms.saturating_add(DEAD_MS);
        work && !alive
    }

    pub fn start(&mut self, now_ms: u64) {
        self.started_ms = now_ms;
        self.looked_ms = now_ms;
    }

    /// After a look at `now_ms`, with the holdings' next wake-up (`None`: nothing held).
    pub fn after_look(&mut self, now_ms: u64, wake_ms: Option<u64>) -> After {
        self.looked_ms = now_ms;
        match wake_ms {
            None => After::Stop,
            Some(_) if now_ms.saturating_sub(self.started_ms) > RUN_MS => After::Surrender,
            Some(wake) => After::Sleep(wake.saturating_sub(now_ms).clamp(5, TICK_MS)),
        }
    }

    pub fn stop(&mut self) {
        *self = Upkeep::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_loop_at_a_time_sleeping_at_most_a_tick_and_surrendering_after_its_run() {
        let mut u = Upkeep::default();
        assert!(!u.should_start(1_000, false));
        assert!(u.should_start(1_000, true));
        u.start(1_000);
        assert!(!u.should_start(1_100, true));
        assert_eq!(u.after_look(1_100, Some(1_120)), After::Sleep(20));
        assert_eq!(u.after_look(1_200, Some(9_000)), After::Sleep(TICK_MS));
        assert_eq!(u.after_look(1_300, Some(1_300)), After::Sleep(5));
        assert_eq!(u.after_look(1_400, None), After::Stop);
        assert_eq!(u.after_look(1_000 + RUN_MS + 1, Some(0)), After::Surrender);
        // A loop the runtime stopped without a word is replaced once it is overdue.
        let looked = 1_000 + RUN_MS + 1;
        assert!(!u.should_start(looked + DEAD_MS - 1, true));
        assert!(u.should_start(looked + DEAD_MS, true));
        u.stop();
        assert!(u.should_start(looked, true));
    }
}
