//! Rate limit for log lines a remote peer can trigger (STYLE 8).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Allows `burst` log lines per `window`; counts the rest.
#[derive(Debug)]
pub(super) struct LogLimiter {
    window: Duration,
    burst: u32,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub(super) fn new(window: Duration, burst: u32) -> Self {
        LogLimiter {
            window,
            burst,
            state: Mutex::new(State {
                started: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when this line may be logged, `n` being how many were
    /// suppressed since the last one logged; `None` to stay quiet.
    pub(super) fn admit(&self) -> Option<u64> {
        // A poisoned lock only means another thread panicked while counting;
        // the counters are still usable.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(state.started) >= self.window {
            state.started = now;
            state.logged = 0;
        }
        if state.logged < self.burst {
            state.logged += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_a_burst_then_counts() {
        let limiter = LogLimiter::new(Duration::from_secs(3600), 2);
        assert_eq!(limiter.admit(), Some(0));
        assert_eq!(limiter.admit(), Some(0));
        assert_eq!(limiter.admit(), None);
        assert_eq!(limiter.admit(), None);
    }

    #[test]
    fn a_new_window_reports_what_was_suppressed() {
        let limiter = LogLimiter::new(Duration::ZERO, 1);
        assert_eq!(limiter.admit(), Some(0));
        // A zero window restarts on every call, so nothing is suppressed.
        assert_eq!(limiter.admit(), Some(0));
        let limiter = LogLimiter::new(Duration::from_millis(20), 1);
        assert_eq!(limiter.admit(), Some(0));
        assert_eq!(limiter.admit(), None);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(limiter.admit(), Some(1));
    }
}
