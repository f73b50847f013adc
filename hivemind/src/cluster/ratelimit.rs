//! Log rate limiting for anything a remote peer can trigger.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one log line through per interval and counts the ones it held back.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimiter {
    pub(crate) const fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed since the last line)` if this event may be logged.
    pub(crate) fn check(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.interval => {
                state.1 += 1;
                None
            }
            _ => {
                let suppressed = state.1;
                *state = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_one_through_per_interval() {
        let limiter = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(limiter.check(), Some(0));
        assert_eq!(limiter.check(), None);
        assert_eq!(limiter.check(), None);
        let fast = LogLimiter::new(Duration::ZERO);
        assert_eq!(fast.check(), Some(0));
        assert_eq!(fast.check(), Some(0));
    }
}
