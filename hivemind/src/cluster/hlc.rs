//! Hybrid logical clock: versions that follow the wall clock, never go
//! backwards, and exceed every version this node has seen.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A hybrid logical timestamp. The derived order compares `wall_ms`, then
/// `counter`, then `node`, so two nodes never produce equal versions and
/// ties between concurrent writes resolve the same way everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    pub wall_ms: u64,
    pub counter: u32,
    pub node: u32,
}

impl Hlc {
    /// The smallest version above this one: what a write derived from a record read at this
    /// version carries. Every node that has seen this version stamps its own writes above
    /// it, so a user's change made after the read wins over the derived one (which is made
    /// again from the newer record), never the other way round.
    pub fn just_after(self) -> Self {
        match self.node.checked_add(1) {
            Some(node) => Self { node, ..self },
            None => Self {
                counter: self.counter.saturating_add(1),
                node: 0,
                ..self
            },
        }
    }
}

/// The wall-clock seam: the real one reads `SystemTime`, tests inject a fake.
pub trait WallClock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn now_ms(&self) -> u64 {
        unix_ms()
    }
}

/// The system clock shifted by a fixed offset: the test seam for a node
/// whose clock is behind (or ahead of) the others.
#[derive(Debug, Clone, Copy)]
pub struct OffsetWallClock {
    pub offset_ms: i64,
}

impl WallClock for OffsetWallClock {
    fn now_ms(&self) -> u64 {
        unix_ms().saturating_add_signed(self.offset_ms)
    }
}

/// Milliseconds since the Unix epoch (0 if the system clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A 32-bit node number derived from a node id (FNV-1a), used as the HLC
/// tie-breaker.
pub fn node_number(node_id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in node_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Issues [`Hlc`] versions for one node.
pub struct Clock {
    node: u32,
    wall: Arc<dyn WallClock>,
    /// The highest (wall_ms, counter) issued or observed.
    last: Mutex<(u64, u32)>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock").field("node", &self.node).finish()
    }
}

impl Clock {
    /// A clock on the system wall clock.
    pub fn new(node: u32) -> Self {
        Self::with_wall(node, Arc::new(SystemWallClock))
    }

    /// A clock on any wall-clock source.
    pub fn with_wall(node: u32, wall: Arc<dyn WallClock>) -> Self {
        Self {
            node,
            wall,
            last: Mutex::new((0, 0)),
        }
    }

    /// This clock's node number.
    pub fn node(&self) -> u32 {
        self.node
    }

    /// A new version, strictly greater than every version issued or
    /// observed before, even if the wall clock went back.
    pub fn now(&self) -> Hlc {
        let pt = self.wall.now_ms();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let next = if pt > last.0 {
            (pt, 0)
        } else if last.1 == u32::MAX {
            (last.0.saturating_add(1), 0)
        } else {
            (last.0, last.1 + 1)
        };
        *last = next;
        Hlc {
            wall_ms: next.0,
            counter: next.1,
            node: self.node,
        }
    }

    /// Records a remote version so later local versions exceed it.
    pub fn observe(&self, remote: Hlc) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let seen = (remote.wall_ms, remote.counter);
        if seen > *last {
            *last = seen;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct FakeWall(AtomicU64);
    impl WallClock for FakeWall {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn fake(start: u64) -> (Arc<FakeWall>, Clock) {
        let wall = Arc::new(FakeWall(AtomicU64::new(start)));
        let clock = Clock::with_wall(7, wall.clone());
        (wall, clock)
    }

    #[test]
    fn follows_the_wall_clock() {
        let (wall, clock) = fake(1000);
        let a = clock.now();
        assert_eq!((a.wall_ms, a.counter, a.node), (1000, 0, 7));
        wall.0.store(2000, Ordering::SeqCst);
        let b = clock.now();
        assert_eq!((b.wall_ms, b.counter), (2000, 0));
    }

    #[test]
    fn monotonic_when_wall_clock_stalls_or_goes_back() {
        let (wall, clock) = fake(5000);
        let a = clock.now();
        let b = clock.now();
        assert!(b > a);
        assert_eq!((b.wall_ms, b.counter), (5000, 1));
        wall.0.store(1000, Ordering::SeqCst);
        let c = clock.now();
        assert!(c > b);
        assert_eq!(c.wall_ms, 5000);
    }

    #[test]
    fn observe_makes_later_versions_exceed_remote() {
        let (_wall, clock) = fake(1000);
        let remote = Hlc {
            wall_ms: 9000,
            counter: 3,
            node: 99,
        };
        clock.observe(remote);
        let next = clock.now();
        assert!(next > remote);
        assert_eq!((next.wall_ms, next.counter), (9000, 4));
        // Observing something older changes nothing.
        clock.observe(Hlc {
            wall_ms: 10,
            counter: 0,
            node: 1,
        });
        assert!(clock.now() > next);
    }

    #[test]
    fn counter_overflow_moves_the_wall_forward() {
        let (_wall, clock) = fake(1000);
        clock.observe(Hlc {
            wall_ms: 1000,
            counter: u32::MAX,
            node: 1,
        });
        let next = clock.now();
        assert_eq!((next.wall_ms, next.counter), (1001, 0));
    }

    #[test]
    fn order_breaks_ties_by_node() {
        let a = Hlc {
            wall_ms: 1,
            counter: 0,
            node: 1,
        };
        let b = Hlc { node: 2, ..a };
        assert!(a < b);
        assert_ne!(node_number("a"), node_number("b"));
    }
}
