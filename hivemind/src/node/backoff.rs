//! Restart pacing: a container that exits or fails to start waits 1 s, then
//! 2 s, 4 s ... up to 60 s before its next start; ten minutes of running
//! forget its failures.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// First restart delay after a container exits; doubles up to the cap.
const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// Running this long forgets earlier failures.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// Restart pacing of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    pub failures: u32,
    pub not_before: Instant,
    pub started: Instant,
}

impl Backoff {
    pub fn delay(failures: u32) -> Duration {
        BACKOFF_START
            .saturating_mul(1u32 << failures.min(16))
            .min(BACKOFF_CAP)
    }
}

/// The pacing of every container of a node, by container id.
#[derive(Debug, Default, Clone)]
pub struct Backoffs {
    entries: HashMap<String, Backoff>,
}

impl Backoffs {
    /// When `id` may start again; `None`: now.
    pub fn not_before(&self, id: &str, now: Instant) -> Option<Instant> {
        self.entries
            .get(id)
            .map(|b| b.not_before)
            .filter(|t| *t > now)
    }

    /// A start failed or the process exited: wait longer next time.
    pub fn failed(&mut self, id: &str, now: Instant) {
        let entry = self.entries.entry(id.to_string()).or_insert(Backoff {
            failures: 0,
            not_before: now,
            started: now,
        });
        entry.not_before = now + Backoff::delay(entry.failures);
        entry.failures += 1;
    }

    /// The container runs: after long enough, its failures are forgotten.
    pub fn running(&mut self, id: &str, now: Instant) {
        if self
            .entries
            .get(id)
            .is_some_and(|e| now.duration_since(e.started) >= BACKOFF_RESET)
        {
            self.entries.remove(id);
        }
    }

    pub fn forget(&mut self, id: &str) {
        self.entries.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(Backoff::delay(0), Duration::from_secs(1));
        assert_eq!(Backoff::delay(3), Duration::from_secs(8));
        assert_eq!(Backoff::delay(30), BACKOFF_CAP);
    }

    #[test]
    fn failures_push_the_next_start_back_and_long_runs_forget_them() {
        let t0 = Instant::now();
        let mut backoffs = Backoffs::default();
        assert_eq!(backoffs.not_before("a", t0), None);
        backoffs.failed("a", t0);
        assert_eq!(
            backoffs.not_before("a", t0),
            Some(t0 + Duration::from_secs(1))
        );
        backoffs.failed("a", t0);
        assert_eq!(
            backoffs.not_before("a", t0),
            Some(t0 + Duration::from_secs(2))
        );
        assert_eq!(backoffs.not_before("a", t0 + Duration::from_secs(3)), None);
        backoffs.running("a", t0 + Duration::from_secs(60));
        assert!(
            backoffs.entries.contains_key("a"),
            "a minute is not long enough"
        );
        backoffs.running("a", t0 + BACKOFF_RESET);
        backoffs.failed("a", t0 + BACKOFF_RESET);
        assert_eq!(
            backoffs.not_before("a", t0 + BACKOFF_RESET),
            Some(t0 + BACKOFF_RESET + Duration::from_secs(1)),
            "back to the first delay"
        );
    }
}
