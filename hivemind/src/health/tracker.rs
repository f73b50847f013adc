//! The per-container health state machine: pure logic, driven with explicit
//! instants so that start periods, retries and backoff are tested without
//! waiting.
//!
//! A check is `Starting` until its first success (→ `Healthy`) or until
//! `retries` consecutive counted failures (→ `Unhealthy`); failures inside
//! the start period count only while the check has never succeeded, as
//! Docker's `--health-start-period`. One success makes it `Healthy` again.
//!
//! Liveness turning `Unhealthy` asks for a restart after a backoff of 10 s,
//! doubling on each restart up to 5 min, back to 10 s once the container has
//! stayed healthy for 10 min. The backoff survives [`Tracker::restarted`].

use std::time::Duration;

use tokio::time::Instant;

use super::{CheckSpec, HealthSpec, Status};

/// First restart delay.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// Longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Healthy this long and the next restart waits [`BACKOFF_INITIAL`] again.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// Restart delays of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: BACKOFF_INITIAL,
        }
    }
}

impl Backoff {
    /// The delay for the restart being decided now; doubles the next one.
    pub fn take(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }

    /// The delay the next restart would get.
    pub fn peek(&self) -> Duration {
        self.next
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_INITIAL;
    }
}

/// The counters of one check.
#[derive(Debug, Clone)]
struct Check {
    retries: u32,
    start_period: Duration,
    started: Instant,
    succeeded: bool,
    failures: u32,
    status: Status,
}

impl Check {
    fn new(spec: &CheckSpec, now: Instant) -> Self {
        Self {
            retries: spec.retries.max(1),
            start_period: spec.start_period(),
            started: now,
            succeeded: false,
            failures: 0,
            status: Status::Starting,
        }
    }

    /// Records one probe; returns the status after it.
    fn record(&mut self, ok: bool, now: Instant) -> Status {
        if ok {
            self.succeeded = true;
            self.failures = 0;
            self.status = Status::Healthy;
        } else if self.succeeded || now.duration_since(self.started) >= self.start_period {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.retries {
                self.status = Status::Unhealthy;
            }
        }
        self.status
    }
}

/// Health of one container across its restarts.
#[derive(Debug, Clone)]
pub struct Tracker {
    liveness: Option<Check>,
    /// `None`: no readiness check at all, ready as soon as watched.
    readiness: Option<Check>,
    backoff: Backoff,
    /// Liveness failed and a restart was asked: further liveness results
    /// are ignored until [`Tracker::restarted`].
    restart_pending: bool,
    /// Since when liveness has been `Healthy` without a break.
    healthy_since: Option<Instant>,
}

impl Tracker {
    pub fn new(spec: &HealthSpec, now: Instant) -> Self {
        Self {
            liveness: spec.liveness.as_ref().map(|c| Check::new(c, now)),
            readiness: spec.effective_readiness().map(|c| Check::new(c, now)),
            backoff: Backoff::default(),
            restart_pending: false,
            healthy_since: None,
        }
    }

    /// Like [`Tracker::new`], carrying on the backoff of an earlier run of
    /// the same container.
    pub fn with_backoff(spec: &HealthSpec, now: Instant, backoff: Backoff) -> Self {
        Self {
            backoff,
            ..Self::new(spec, now)
        }
    }

    /// The container was (re)started at `now`, possibly with a new spec:
    /// counters and start periods start over, the backoff does not.
    pub fn restarted(&mut self, spec: &HealthSpec, now: Instant) {
        let backoff = self.backoff;
        *self = Self::new(spec, now);
        self.backoff = backoff;
    }

    /// Records a liveness probe. `Some(delay)` when the container must be
    /// restarted after `delay`; asked once per (re)start.
    pub fn liveness_result(&mut self, ok: bool, now: Instant) -> Option<Duration> {
        if self.restart_pending {
            return None;
        }
        let check = self.liveness.as_mut()?;
        match check.record(ok, now) {
            Status::Healthy => {
                let since = *self.healthy_since.get_or_insert(now);
                if now.duration_since(since) >= BACKOFF_RESET {
                    self.backoff.reset();
                }
                None
            }
            Status::Starting => None,
            Status::Unhealthy => {
                if self
                    .healthy_since
                    .is_some_and(|since| now.duration_since(since) >= BACKOFF_RESET)
                {
                    self.backoff.reset();
                }
                self.healthy_since = None;
                self.restart_pending = true;
                Some(self.backoff.take())
            }
        }
    }

    /// Records a readiness probe (the liveness one when readiness falls
    /// back to it). `Some(ready)` when readiness changed.
    pub fn readiness_result(&mut self, ok: bool, now: Instant) -> Option<bool> {
        let before = self.ready();
        let check = self.readiness.as_mut()?;
        check.record(ok, now);
        let after = self.ready();
        (before != after).then_some(after)
    }

    /// The liveness status; `None` without a liveness check.
    pub fn liveness(&self) -> Option<Status> {
        self.liveness.as_ref().map(|c| c.status)
    }

    /// The readiness status; `None` without any readiness check.
    pub fn readiness(&self) -> Option<Status> {
        self.readiness.as_ref().map(|c| c.status)
    }

    /// In the load balancer: readiness check healthy, or no check at all.
    pub fn ready(&self) -> bool {
        self.readiness
            .as_ref()
            .is_none_or(|c| c.status == Status::Healthy)
    }

    /// Consecutive failures of the liveness check, else of readiness.
    pub fn failing_streak(&self) -> u32 {
        self.liveness
            .as_ref()
            .or(self.readiness.as_ref())
            .map_or(0, |c| c.failures)
    }

    pub fn restart_pending(&self) -> bool {
        self.restart_pending
    }

    pub fn backoff(&self) -> Backoff {
        self.backoff
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::health::Probe;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn check(retries: u32, start_period_s: u64) -> CheckSpec {
        CheckSpec {
            retries,
            start_period_s,
            ..CheckSpec::new(Probe::Tcp { port: 80 })
        }
    }

    fn live_only(retries: u32, start_period_s: u64) -> HealthSpec {
        HealthSpec {
            liveness: Some(check(retries, start_period_s)),
            readiness: None,
        }
    }

    #[test]
    fn retries_and_recovery() {
        let t0 = Instant::now();
        let mut t = Tracker::new(&live_only(3, 0), t0);
        assert_eq!(t.liveness(), Some(Status::Starting));
        assert!(!t.ready());
        // Failures before any success count (no start period).
        assert_eq!(t.liveness_result(false, t0), None);
        assert_eq!(t.liveness_result(false, t0 + secs(10)), None);
        assert_eq!(t.failing_streak(), 2);
        assert_eq!(t.liveness(), Some(Status::Starting));
        assert_eq!(t.liveness_result(true, t0 + secs(20)), None);
        assert_eq!(t.liveness(), Some(Status::Healthy));
        assert_eq!(t.failing_streak(), 0);
        // Two failures keep it healthy, the third asks for a restart.
        assert_eq!(t.liveness_result(false, t0 + secs(30)), None);
        assert_eq!(t.liveness_result(false, t0 + secs(40)), None);
        assert_eq!(t.liveness(), Some(Status::Healthy));
        assert_eq!(t.liveness_result(false, t0 + secs(50)), Some(secs(10)));
        assert_eq!(t.liveness(), Some(Status::Unhealthy));
        assert!(t.restart_pending());
        // Asked once: more failures, or a success, change nothing until
        // the restart.
        assert_eq!(t.liveness_result(false, t0 + secs(60)), None);
        assert_eq!(t.liveness_result(true, t0 + secs(70)), None);
        assert_eq!(t.liveness(), Some(Status::Unhealthy));
    }

    #[test]
    fn start_period_ignores_failures_until_first_success() {
        let t0 = Instant::now();
        let mut t = Tracker::new(&live_only(1, 30), t0);
        for s in [0, 10, 20, 29] {
            assert_eq!(t.liveness_result(false, t0 + secs(s)), None, "at {s}s");
        }
        assert_eq!(t.failing_streak(), 0);
        assert_eq!(t.liveness(), Some(Status::Starting));
        // After the start period failures count.
        assert_eq!(t.liveness_result(false, t0 + secs(30)), Some(secs(10)));

        // A success inside the start period ends it early.
        let mut t = Tracker::new(&live_only(1, 30), t0);
        assert_eq!(t.liveness_result(true, t0 + secs(5)), None);
        assert_eq!(t.liveness_result(false, t0 + secs(6)), Some(secs(10)));
    }

    #[test]
    fn backoff_doubles_caps_and_survives_restarts() {
        let spec = live_only(1, 0);
        let t0 = Instant::now();
        let mut t = Tracker::new(&spec, t0);
        let mut delays = Vec::new();
        for i in 0..8 {
            let now = t0 + secs(100 * i);
            t.restarted(&spec, now);
            assert!(!t.restart_pending());
            assert_eq!(t.liveness(), Some(Status::Starting));
            // Healthy for a while, but less than the reset period.
            t.liveness_result(true, now);
            t.liveness_result(true, now + secs(50));
            delays.push(t.liveness_result(false, now + secs(60)).unwrap());
        }
        assert_eq!(
            delays,
            [10, 20, 40, 80, 160, 300, 300, 300].map(secs).to_vec()
        );
    }

    #[test]
    fn backoff_resets_after_ten_minutes_healthy() {
        let spec = live_only(1, 0);
        let t0 = Instant::now();
        let mut t = Tracker::new(&spec, t0);
        assert_eq!(t.liveness_result(false, t0), Some(secs(10)));
        t.restarted(&spec, t0 + secs(10));
        assert_eq!(t.liveness_result(false, t0 + secs(10)), Some(secs(20)));
        t.restarted(&spec, t0 + secs(30));
        assert_eq!(t.backoff().peek(), secs(40));
        // Healthy from 30 s; 599 s later the backoff still stands.
        t.liveness_result(true, t0 + secs(30));
        t.liveness_result(true, t0 + secs(629));
        assert_eq!(t.backoff().peek(), secs(40));
        // At 600 s healthy it is back to the start.
        t.liveness_result(true, t0 + secs(630));
        assert_eq!(t.backoff().peek(), secs(10));
        assert_eq!(t.liveness_result(false, t0 + secs(640)), Some(secs(10)));

        // Without a probe exactly at the boundary, the failure itself sees
        // the long healthy period.
        let mut t = Tracker::new(&spec, t0);
        assert_eq!(t.liveness_result(false, t0), Some(secs(10)));
        t.restarted(&spec, t0);
        assert_eq!(t.backoff().peek(), secs(20));
        t.liveness_result(true, t0 + secs(1));
        assert_eq!(t.liveness_result(false, t0 + secs(700)), Some(secs(10)));
    }

    #[test]
    fn readiness_needs_a_first_success_and_retries_to_drop() {
        let t0 = Instant::now();
        let spec = HealthSpec {
            liveness: None,
            readiness: Some(check(2, 0)),
        };
        let mut t = Tracker::new(&spec, t0);
        assert_eq!(t.liveness(), None);
        assert!(!t.ready());
        assert_eq!(t.readiness_result(false, t0), None);
        assert_eq!(t.readiness_result(false, t0 + secs(1)), None);
        assert_eq!(t.readiness(), Some(Status::Unhealthy));
        assert_eq!(t.readiness_result(true, t0 + secs(2)), Some(true));
        assert!(t.ready());
        assert_eq!(t.readiness_result(true, t0 + secs(3)), None);
        assert_eq!(t.readiness_result(false, t0 + secs(4)), None);
        assert!(t.ready());
        assert_eq!(t.readiness_result(false, t0 + secs(5)), Some(false));
        assert_eq!(t.readiness_result(false, t0 + secs(6)), None);
        assert_eq!(t.readiness_result(true, t0 + secs(7)), Some(true));
        // Readiness never asks for a restart.
        assert_eq!(t.liveness_result(false, t0 + secs(8)), None);
    }

    #[test]
    fn no_readiness_check_is_ready_at_once() {
        let t0 = Instant::now();
        let mut t = Tracker::new(&HealthSpec::default(), t0);
        assert!(t.ready());
        assert_eq!(t.readiness_result(false, t0), None);
        assert_eq!(t.liveness_result(false, t0), None);
        assert_eq!(t.failing_streak(), 0);
    }

    #[test]
    fn readiness_falls_back_to_liveness_and_restart_resets_it() {
        let t0 = Instant::now();
        let spec = live_only(1, 0);
        let mut t = Tracker::new(&spec, t0);
        assert_eq!(t.readiness(), Some(Status::Starting));
        assert!(!t.ready());
        assert_eq!(t.readiness_result(true, t0), Some(true));
        t.restarted(&spec, t0 + secs(1));
        assert!(!t.ready());
    }
}
