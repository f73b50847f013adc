//! The probing tasks the daemon runs: one tokio task per check of each
//! watched container, feeding its [`Tracker`] and reporting changes as
//! [`HealthEvent`]s.
//!
//! Restarting a container is the daemon's job: on
//! [`HealthEvent::LivenessFailed`] it waits `restart_after`, restarts the
//! container and calls [`Monitor::watch`] again with the same id. The
//! backoff carries over, also across an [`Monitor::unwatch`] for
//! [`BACKOFF_RESET`].

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::tracker::{BACKOFF_RESET, Backoff, Tracker};
use super::{CheckSpec, HealthSpec, ProbeResult, Status, probe_once};
use crate::runtime::ContainerRuntime;

/// Delay of the first probe after [`Monitor::watch`] (or the interval when
/// shorter): the app gets a moment to listen, readiness does not wait a
/// whole interval.
pub const FIRST_PROBE_DELAY: Duration = Duration::from_secs(1);
/// Events buffered for a slow subscriber before it starts losing them.
const EVENT_CAPACITY: usize = 1024;

/// What changed in a container's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthEvent {
    /// In (`true`) or out of the load balancer and DNS. Sent on every
    /// change, and at `watch` when a container without a readiness check
    /// is ready at once.
    ReadinessChanged { id: String, ready: bool },
    /// Liveness failed `retries` times: restart the container after
    /// `restart_after`. Sent once per (re)start.
    LivenessFailed { id: String, restart_after: Duration },
}

/// A container's health as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerHealth {
    /// `None` without a liveness check.
    pub liveness: Option<Status>,
    pub ready: bool,
    /// The latest probe of any check.
    pub last: Option<ProbeResult>,
    /// Consecutive failures of the liveness check, else of readiness.
    pub failing_streak: u32,
}

pub struct Monitor {
    runtime: Arc<dyn ContainerRuntime>,
    clock: Clock,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<HealthEvent>,
}

/// The monitor's time: real time, or in unit tests real time sped up
/// `scale` times (tokio's paused test clock needs its `test-util` feature,
/// which this crate does not enable). The tracker sees scaled instants,
/// tasks sleep real durations divided by `scale`.
#[derive(Debug, Clone, Copy)]
struct Clock {
    origin: Instant,
    scale: u32,
}

impl Clock {
    fn now(&self) -> Instant {
        let now = Instant::now();
        if self.scale <= 1 {
            return now;
        }
        self.origin + now.duration_since(self.origin) * self.scale
    }

    /// How long to really wait for `duration` of monitor time.
    fn real(&self, duration: Duration) -> Duration {
        duration / self.scale.max(1)
    }
}

#[derive(Default)]
struct State {
    watched: HashMap<String, Watched>,
    /// Backoffs of unwatched containers and when they were unwatched.
    parked: HashMap<String, (Backoff, Instant)>,
    next_generation: u64,
}

struct Watched {
    tracker: Tracker,
    last: Option<ProbeResult>,
    /// Tasks of an older generation drop their results.
    generation: u64,
    /// Dropping it stops this generation's tasks (between probes, never in
    /// the middle of one: an exec is always cleaned up).
    _stop: watch::Sender<()>,
}

/// Which state a check's results feed.
#[derive(Debug, Clone, Copy)]
struct Roles {
    liveness: bool,
    readiness: bool,
}

impl Monitor {
    pub fn new(runtime: Arc<dyn ContainerRuntime>) -> Self {
        Self::with_scale(runtime, 1)
    }

    /// A monitor whose time runs `scale` times faster than real time.
    #[cfg(test)]
    fn sped_up(runtime: Arc<dyn ContainerRuntime>, scale: u32) -> Self {
        Self::with_scale(runtime, scale)
    }

    fn with_scale(runtime: Arc<dyn ContainerRuntime>, scale: u32) -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Self {
            runtime,
            clock: Clock {
                origin: Instant::now(),
                scale,
            },
            state: Arc::new(Mutex::new(State::default())),
            events,
        }
    }

    /// Health events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.events.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Starts probing container `id` at `ip`, or starts over after a
    /// restart (counters and start periods reset, backoff kept). Must be
    /// called inside a tokio runtime.
    pub fn watch(&self, id: &str, ip: Ipv4Addr, spec: HealthSpec) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::error!(container = %id, "health monitor used outside a tokio runtime");
            return;
        };
        let now = self.clock.now();
        let mut state = self.lock();
        state.prune(now);
        let generation = state.next_generation;
        state.next_generation += 1;
        let (stop, stopped) = watch::channel(());
        let (tracker, was_ready) = match state.watched.remove(id) {
            Some(old) => {
                let mut tracker = old.tracker;
                let was_ready = tracker.ready();
                tracker.restarted(&spec, now);
                (tracker, was_ready)
            }
            None => {
                let backoff = state
                    .parked
                    .remove(id)
                    .map(|(backoff, _)| backoff)
                    .unwrap_or_default();
                (Tracker::with_backoff(&spec, now, backoff), false)
            }
        };
        let ready = tracker.ready();
        state.watched.insert(
            id.to_string(),
            Watched {
                tracker,
                last: None,
                generation,
                _stop: stop,
            },
        );
        tracing::info!(container = %id, %ip, liveness = spec.liveness.is_some(), readiness = spec.effective_readiness().is_some(), ready, "watching container health");
        if was_ready != ready {
            let _ = self.events.send(HealthEvent::ReadinessChanged {
                id: id.to_string(),
                ready,
            });
        }
        let mut checks: Vec<(CheckSpec, Roles)> = Vec::new();
        if let Some(live) = &spec.liveness {
            let roles = Roles {
                liveness: true,
                readiness: spec.readiness.is_none(),
            };
            checks.push((live.clone(), roles));
        }
        if let Some(ready) = &spec.readiness {
            let roles = Roles {
                liveness: false,
                readiness: true,
            };
            checks.push((ready.clone(), roles));
        }
        for (check, roles) in checks {
            let task = CheckTask {
                runtime: self.runtime.clone(),
                clock: self.clock,
                state: Arc::downgrade(&self.state),
                events: self.events.clone(),
                id: id.to_string(),
                ip,
                check,
                roles,
                generation,
            };
            handle.spawn(task.run(stopped.clone()));
        }
    }

    /// Stops probing `id` and forgets its status. Its backoff is kept for
    /// [`BACKOFF_RESET`] in case it is watched again.
    pub fn unwatch(&self, id: &str) {
        let now = self.clock.now();
        let mut state = self.lock();
        state.prune(now);
        if let Some(old) = state.watched.remove(id) {
            state
                .parked
                .insert(id.to_string(), (old.tracker.backoff(), now));
            tracing::info!(container = %id, "stopped watching container health");
        }
    }

    pub fn status(&self, id: &str) -> Option<ContainerHealth> {
        let state = self.lock();
        let watched = state.watched.get(id)?;
        Some(ContainerHealth {
            liveness: watched.tracker.liveness(),
            ready: watched.tracker.ready(),
            last: watched.last.clone(),
            failing_streak: watched.tracker.failing_streak(),
        })
    }

    /// Ids of the watched containers.
    pub fn watched(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().watched.keys().cloned().collect();
        ids.sort();
        ids
    }
}

impl State {
    fn prune(&mut self, now: Instant) {
        self.parked
            .retain(|_, (_, since)| now.duration_since(*since) < BACKOFF_RESET);
    }
}

/// A poisoned lock still holds consistent state: every update under it is a
/// few assignments that cannot panic half-way.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One check of one container, probed every interval.
struct CheckTask {
    runtime: Arc<dyn ContainerRuntime>,
    clock: Clock,
    state: Weak<Mutex<State>>,
    events: broadcast::Sender<HealthEvent>,
    id: String,
    ip: Ipv4Addr,
    check: CheckSpec,
    roles: Roles,
    generation: u64,
}

impl CheckTask {
    async fn run(self, mut stopped: watch::Receiver<()>) {
        let interval = self.clock.real(self.check.interval());
        let first = Instant::now() + interval.min(self.clock.real(FIRST_PROBE_DELAY));
        let mut ticker = tokio::time::interval_at(first, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stopped.changed() => return,
                _ = ticker.tick() => {}
            }
            let result = probe_once(&*self.runtime, &self.id, self.ip, &self.check).await;
            if !self.record(result) {
                return;
            }
        }
    }

    /// Feeds the tracker and sends what changed; false once this task's
    /// generation is over.
    fn record(&self, result: ProbeResult) -> bool {
        let Some(state) = self.state.upgrade() else {
            return false;
        };
        let mut state = lock(&state);
        let Some(watched) = state.watched.get_mut(&self.id) else {
            return false;
        };
        if watched.generation != self.generation {
            return false;
        }
        let now = self.clock.now();
        let id = &self.id;
        // Sent under the lock so that events keep the order of changes.
        if self.roles.liveness
            && let Some(restart_after) = watched.tracker.liveness_result(result.ok, now)
        {
            tracing::warn!(container = %id, restart_after_s = restart_after.as_secs(), failures = watched.tracker.failing_streak(), last = %result.message, "liveness check failed, restart needed");
            let _ = self.events.send(HealthEvent::LivenessFailed {
                id: id.clone(),
                restart_after,
            });
        }
        if self.roles.readiness
            && let Some(ready) = watched.tracker.readiness_result(result.ok, now)
        {
            tracing::info!(container = %id, ready, last = %result.message, "readiness changed");
            let _ = self.events.send(HealthEvent::ReadinessChanged {
                id: id.clone(),
                ready,
            });
        }
        watched.last = Some(result);
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::health::Probe;
    use crate::health::probe::tests::running;
    use crate::runtime::ExecOutput;
    use crate::runtime::memory::MemoryRuntime;

    /// Monitor seconds per real second: 1 s of checks takes 50 ms.
    const SCALE: u32 = 20;

    fn exit(code: u32) -> ExecOutput {
        ExecOutput {
            exit_code: Some(code),
            output: String::new(),
        }
    }

    fn exec_liveness(retries: u32) -> HealthSpec {
        HealthSpec {
            liveness: Some(CheckSpec {
                retries,
                ..CheckSpec::new(Probe::Exec {
                    command: vec!["/bin/check".into()],
                })
            }),
            readiness: None,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Sleeps `d` of monitor time.
    async fn sleep(d: Duration) {
        tokio::time::sleep(d / SCALE).await;
    }

    /// The next event and the monitor time at which it came, since `t0`.
    async fn next(
        monitor: &Monitor,
        events: &mut broadcast::Receiver<HealthEvent>,
        t0: Instant,
    ) -> (HealthEvent, Duration) {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("no event within 30 s")
            .unwrap();
        (event, monitor.clock.now().duration_since(t0))
    }

    /// `at` is `want` give or take scheduling delays (3 s of monitor time
    /// is 150 ms real), never early.
    fn around(at: Duration, want: u64) {
        assert!(
            at >= secs(want) && at < secs(want + 3),
            "at {at:?}, expected {want}s"
        );
    }

    #[tokio::test]
    async fn liveness_failure_restart_and_backoff() {
        let runtime = Arc::new(MemoryRuntime::new());
        running(&runtime, "c1").await;
        runtime.queue_exec_results([exit(0), exit(1), exit(1)]);
        runtime.set_exec_result(exit(1));
        let monitor = Monitor::sped_up(runtime.clone(), SCALE);
        let mut events = monitor.subscribe();
        let t0 = monitor.clock.now();
        monitor.watch("c1", Ipv4Addr::LOCALHOST, exec_liveness(2));
        let status = monitor.status("c1").unwrap();
        assert_eq!(status.liveness, Some(Status::Starting));
        assert!(!status.ready);

        // Probes at 1 s, 11 s, 21 s: ok, fail, fail.
        let (event, at) = next(&monitor, &mut events, t0).await;
        let ready = HealthEvent::ReadinessChanged {
            id: "c1".into(),
            ready: true,
        };
        assert_eq!(event, ready);
        around(at, 1);
        let (event, at) = next(&monitor, &mut events, t0).await;
        let failed = HealthEvent::LivenessFailed {
            id: "c1".into(),
            restart_after: secs(10),
        };
        assert_eq!(event, failed);
        around(at, 21);
        let (event, _) = next(&monitor, &mut events, t0).await;
        let unready = HealthEvent::ReadinessChanged {
            id: "c1".into(),
            ready: false,
        };
        assert_eq!(event, unready);
        let status = monitor.status("c1").unwrap();
        assert_eq!(status.liveness, Some(Status::Unhealthy));
        assert!(!status.ready);
        assert_eq!(status.failing_streak, 2);
        assert_eq!(status.last.unwrap().message, "exit code 1");

        // No second restart request while the daemon restarts it.
        sleep(secs(30)).await;
        assert!(events.try_recv().is_err());

        // Restarted (watch again): the backoff doubles.
        let t1 = monitor.clock.now();
        monitor.watch("c1", Ipv4Addr::LOCALHOST, exec_liveness(2));
        assert_eq!(
            monitor.status("c1").unwrap().liveness,
            Some(Status::Starting)
        );
        let (event, at) = next(&monitor, &mut events, t1).await;
        let failed = HealthEvent::LivenessFailed {
            id: "c1".into(),
            restart_after: secs(20),
        };
        assert_eq!(event, failed);
        around(at, 11);

        // Through unwatch + watch it still carries over.
        monitor.unwatch("c1");
        assert_eq!(monitor.status("c1"), None);
        assert!(monitor.watched().is_empty());
        let t2 = monitor.clock.now();
        monitor.watch("c1", Ipv4Addr::LOCALHOST, exec_liveness(2));
        let (event, at) = next(&monitor, &mut events, t2).await;
        let failed = HealthEvent::LivenessFailed {
            id: "c1".into(),
            restart_after: secs(40),
        };
        assert_eq!(event, failed);
        around(at, 11);
    }

    #[tokio::test]
    async fn no_checks_means_ready_at_once() {
        let runtime = Arc::new(MemoryRuntime::new());
        let monitor = Monitor::sped_up(runtime.clone(), SCALE);
        let mut events = monitor.subscribe();
        monitor.watch("c2", Ipv4Addr::LOCALHOST, HealthSpec::default());
        assert_eq!(
            events.try_recv().unwrap(),
            HealthEvent::ReadinessChanged {
                id: "c2".into(),
                ready: true
            }
        );
        assert_eq!(
            monitor.status("c2").unwrap(),
            ContainerHealth {
                liveness: None,
                ready: true,
                last: None,
                failing_streak: 0
            }
        );
        sleep(secs(30)).await;
        assert!(runtime.exec_calls().is_empty());
        assert!(events.try_recv().is_err());
    }

    #[tokio::test]
    async fn unwatch_stops_probing() {
        let runtime = Arc::new(MemoryRuntime::new());
        running(&runtime, "c3").await;
        let monitor = Monitor::sped_up(runtime.clone(), SCALE);
        let spec = HealthSpec {
            liveness: None,
            readiness: Some(CheckSpec::new(Probe::Exec {
                command: vec!["/bin/ready".into()],
            })),
        };
        monitor.watch("c3", Ipv4Addr::LOCALHOST, spec);
        sleep(secs(25)).await;
        // Probes at 1, 11, 21 s.
        assert_eq!(runtime.exec_calls().len(), 3);
        let status = monitor.status("c3").unwrap();
        assert!(status.ready);
        assert_eq!(status.liveness, None);
        monitor.unwatch("c3");
        sleep(secs(30)).await;
        assert_eq!(runtime.exec_calls().len(), 3);
        assert_eq!(monitor.status("c3"), None);
    }

    #[tokio::test]
    async fn separate_readiness_check_does_not_restart() {
        let runtime = Arc::new(MemoryRuntime::new());
        running(&runtime, "c4").await;
        runtime.set_exec_result(exit(1));
        let monitor = Monitor::sped_up(runtime.clone(), SCALE);
        let mut events = monitor.subscribe();
        let spec = HealthSpec {
            liveness: None,
            readiness: Some(CheckSpec {
                retries: 1,
                ..CheckSpec::new(Probe::Exec {
                    command: vec!["/bin/ready".into()],
                })
            }),
        };
        monitor.watch("c4", Ipv4Addr::LOCALHOST, spec);
        sleep(secs(45)).await;
        // Probes at 1, 11, 21, 31, 41 s; never ready, so readiness never
        // changed, and no restart either.
        assert!(events.try_recv().is_err());
        let status = monitor.status("c4").unwrap();
        assert!(!status.ready);
        assert_eq!(status.failing_streak, 5);
    }
}
