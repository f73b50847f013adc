//! Health checks: liveness (restart with backoff) and readiness (in or out of
//! the load balancer and DNS) over HTTP, TCP and exec.
//!
//! - [`parse`]: the `--health-*` / `--ready-*` flags and REST fields into a
//!   [`CheckSpec`].
//! - [`probe`]: one probe against one container.
//! - [`tracker`]: the per-container state machine, pure and driven by
//!   explicit instants.
//! - [`monitor`]: the tokio tasks that probe every interval and report
//!   [`HealthEvent`]s to the daemon.
//!
//! Invariant: nothing here restarts a container or touches the load
//! balancer; the daemon acts on the events.

pub mod monitor;
pub mod parse;
pub mod probe;
pub mod tracker;

pub use crate::checks::*;

pub use monitor::{ContainerHealth, HealthEvent, Monitor};
pub use parse::{HealthInput, check_spec, parse_duration};
pub use probe::probe_once;
pub use tracker::{Backoff, Tracker};

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn readiness_falls_back_to_liveness() {
        let live = CheckSpec::new(Probe::Tcp { port: 80 });
        let ready = CheckSpec::new(Probe::Http {
            path: "/ready".into(),
            port: 8080,
        });
        let only_live = HealthSpec {
            liveness: Some(live.clone()),
            readiness: None,
        };
        assert_eq!(only_live.effective_readiness(), Some(&live));
        let both = HealthSpec {
            liveness: Some(live.clone()),
            readiness: Some(ready.clone()),
        };
        assert_eq!(both.effective_readiness(), Some(&ready));
        let only_ready = HealthSpec {
            liveness: None,
            readiness: Some(ready.clone()),
        };
        assert_eq!(only_ready.effective_readiness(), Some(&ready));
        assert_eq!(HealthSpec::default().effective_readiness(), None);
        assert!(HealthSpec::default().is_empty());
    }

    #[test]
    fn json_form_with_defaults() {
        let spec: HealthSpec = serde_json::from_str(
            r#"{"liveness": {"probe": {"type": "http", "path": "/healthz", "port": 8080}}}"#,
        )
        .unwrap();
        let live = spec.liveness.as_ref().unwrap();
        assert_eq!(
            live.probe,
            Probe::Http {
                path: "/healthz".into(),
                port: 8080
            }
        );
        assert_eq!(
            (
                live.interval_s,
                live.timeout_s,
                live.retries,
                live.start_period_s
            ),
            (10, 1, 3, 0)
        );
        let exec = CheckSpec::new(Probe::Exec {
            command: vec!["/bin/true".into()],
        });
        let json = serde_json::to_value(&exec).unwrap();
        assert_eq!(json["probe"]["type"], "exec");
        assert_eq!(json["probe"]["command"][0], "/bin/true");
        let back: CheckSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, exec);
    }
}
