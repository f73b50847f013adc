//! Deciding what an app's containers on this node need, without doing it:
//! [`plan`] is a pure function of the desired state (the app's record and
//! how many replicas are placed here) and the observed state (the container
//! records, containerd's tasks, restart pacing). `apps.rs` carries a
//! [`Plan`] out through the runtime, network and data-plane seams.

use std::collections::BTreeMap;
use std::time::Instant;

use super::backoff::Backoffs;
use crate::runtime::TaskState;
use crate::state::{AppRecord, ContainerRecord, ContainerStatus};

/// What this node should run of one app.
#[derive(Debug, Clone, Copy)]
pub struct Desired<'a> {
    /// `None`: the app was deleted.
    pub app: Option<&'a AppRecord>,
    /// Replicas of the current generation placed on this node.
    pub local_replicas: usize,
    /// During a cluster-wide rollout: how many containers of older generations this node
    /// keeps (the rest go at once). `None`: they go once every replica of the new
    /// generation placed here serves.
    pub local_old: Option<usize>,
}

/// What this node has of one app.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The app's container records on this node, oldest first.
    pub containers: &'a [ContainerRecord],
    /// containerd's tasks by container id.
    pub tasks: &'a BTreeMap<String, TaskState>,
    /// Containers that serve: running, and ready by their checks (or with
    /// none).
    pub ready: &'a std::collections::BTreeSet<String>,
    pub backoffs: &'a Backoffs,
    pub now: Instant,
}

/// Why a container goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    /// The app was deleted.
    AppDeleted,
    /// More replicas here than are placed here (scale down, or placement
    /// moved one to another node); the newest go first.
    Surplus,
    /// An older generation (new image, env, restart): it goes once every
    /// replica of the new one placed here runs and is ready, or when a
    /// rollout's quota for old replicas leaves no room for it.
    Replaced,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Runs as it should: adopt it (after a daemon restart) or refresh it:
    /// status, data-plane attachment, health checks, endpoint.
    Keep {
        id: String,
    },
    /// Its process exited since the last look: record the exit and pace
    /// the restart.
    Exited {
        id: String,
        code: u32,
    },
    /// Not running and its backoff has not run out.
    Wait {
        id: String,
        until: Instant,
    },
    /// Not running: start it again.
    Restart {
        id: String,
    },
    /// A new replica of the current generation.
    Start,
    /// An older generation that keeps serving, untouched, until the new one
    /// is ready here (never started again with the new spec).
    Hold {
        id: String,
    },
    Remove {
        id: String,
        reason: RemoveReason,
    },
}

/// The steps for one app, in the order they are carried out: surplus
/// removals, then keeps, restarts and starts, then replaced generations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
}

impl Plan {
    pub fn starts(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| matches!(a, Action::Start))
            .count()
    }

    /// Ids removed for `reason`.
    pub fn removals(&self, reason: RemoveReason) -> Vec<&str> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Remove { id, reason: r } if *r == reason => Some(id.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Decides what an app's containers on this node need.
pub fn plan(desired: Desired<'_>, observed: Observed<'_>) -> Plan {
    let mut actions = Vec::new();
    let Some(app) = desired.app else {
        actions.extend(observed.containers.iter().map(|c| Action::Remove {
            id: c.id.clone(),
            reason: RemoveReason::AppDeleted,
        }));
        return Plan { actions };
    };
    let (current, stale): (Vec<&ContainerRecord>, Vec<&ContainerRecord>) = observed
        .containers
        .iter()
        .partition(|c| c.generation == app.generation);
    let wanted = desired.local_replicas;
    // The newest replicas go first.
    for surplus in current.iter().skip(wanted) {
        actions.push(Action::Remove {
            id: surplus.id.clone(),
            reason: RemoveReason::Surplus,
        });
    }
    for container in current.iter().take(wanted) {
        actions.push(keep_or_restart(container, &observed));
    }
    actions.extend((current.len()..wanted).map(|_| Action::Start));
    // The old generation goes only once the new one serves: a version that
    // does not start or never becomes ready leaves the old one running.
    let serves = |c: &ContainerRecord| {
        matches!(observed.tasks.get(&c.id), Some(TaskState::Running { .. }))
            && observed.ready.contains(&c.id)
    };
    let serving = current.iter().take(wanted).filter(|c| serves(c)).count();
    // Under a rollout's quota the ones that serve are kept first, then the oldest.
    let keep = match desired.local_old {
        Some(quota) => quota,
        None if serving >= wanted => 0,
        None => stale.len(),
    };
    let mut stale = stale;
    stale.sort_by_key(|c| !serves(c));
    actions.extend(stale.iter().enumerate().map(|(i, c)| {
        let id = c.id.clone();
        if i < keep {
            Action::Hold { id }
        } else {
            Action::Remove {
                id,
                reason: RemoveReason::Replaced,
            }
        }
    }));
    Plan { actions }
}

fn keep_or_restart(container: &ContainerRecord, observed: &Observed<'_>) -> Action {
    let id = container.id.clone();
    match observed.tasks.get(&container.id) {
        Some(TaskState::Running { .. }) => Action::Keep { id },
        Some(TaskState::Exited { code }) if container.status == ContainerStatus::Running => {
            Action::Exited { id, code: *code }
        }
        _ => match observed.backoffs.not_before(&container.id, observed.now) {
            Some(until) => Action::Wait { id, until },
            None => Action::Restart { id },
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::contract::DeployRequest;
    use crate::state::ContainerStatus;

    fn app(replicas: u32, generation: u64) -> AppRecord {
        let spec = DeployRequest {
            image: "busybox".into(),
            name: "web".into(),
            replicas: Some(replicas),
            ..Default::default()
        }
        .validate()
        .expect("valid request");
        AppRecord {
            generation,
            ..AppRecord::new(spec)
        }
    }

    fn container(n: u64, generation: u64, status: ContainerStatus) -> ContainerRecord {
        ContainerRecord {
            id: format!("web-{n:06x}"),
            app: "web".into(),
            node: "n1".into(),
            image: "busybox".into(),
            generation,
            ip: std::net::Ipv4Addr::new(10, 244, 0, 2 + n as u8),
            host_ifname: format!("hm{n}"),
            netns: format!("/run/netns/{n}"),
            resources: Default::default(),
            status,
            restarts: 0,
            exit_code: None,
            message: None,
            created_at: n,
            created_ms: n,
            started_at: Some(n),
            variant: None,
        }
    }

    fn running(containers: &[ContainerRecord]) -> BTreeMap<String, TaskState> {
        containers
            .iter()
            .map(|c| (c.id.clone(), TaskState::Running { pid: 1 }))
            .collect()
    }

    struct World {
        app: Option<AppRecord>,
        local: usize,
        local_old: Option<usize>,
        containers: Vec<ContainerRecord>,
        tasks: BTreeMap<String, TaskState>,
        ready: std::collections::BTreeSet<String>,
        backoffs: Backoffs,
        now: Instant,
    }

    impl World {
        fn new(app: Option<AppRecord>, local: usize, containers: Vec<ContainerRecord>) -> Self {
            Self {
                tasks: running(&containers),
                ready: containers.iter().map(|c| c.id.clone()).collect(),
                app,
                local,
                local_old: None,
                containers,
                backoffs: Backoffs::default(),
                now: Instant::now(),
            }
        }

        fn plan(&self) -> Plan {
            plan(
                Desired {
                    app: self.app.as_ref(),
                    local_replicas: self.local,
                    local_old: self.local_old,
                },
                Observed {
                    containers: &self.containers,
                    tasks: &self.tasks,
                    ready: &self.ready,
                    backoffs: &self.backoffs,
                    now: self.now,
                },
            )
        }
    }

    #[test]
    fn a_new_app_starts_every_replica_placed_here() {
        let world = World::new(Some(app(3, 1)), 3, vec![]);
        assert_eq!(world.plan().actions, vec![Action::Start; 3]);
    }

    #[test]
    fn scale_up_keeps_what_runs_and_starts_the_rest() {
        let world = World::new(
            Some(app(3, 1)),
            3,
            vec![container(1, 1, ContainerStatus::Running)],
        );
        let plan = world.plan();
        assert_eq!(
            plan.actions[0],
            Action::Keep {
                id: "web-000001".into()
            }
        );
        assert_eq!(plan.starts(), 2);
    }

    #[test]
    fn scale_down_removes_the_newest_first() {
        let containers: Vec<_> = (1..=3)
            .map(|n| container(n, 1, ContainerStatus::Running))
            .collect();
        let world = World::new(Some(app(1, 1)), 1, containers);
        let plan = world.plan();
        assert_eq!(
            plan.removals(RemoveReason::Surplus),
            vec!["web-000002", "web-000003"]
        );
        assert!(plan.actions.contains(&Action::Keep {
            id: "web-000001".into()
        }));
        assert_eq!(plan.starts(), 0);
    }

    #[test]
    fn an_image_change_keeps_the_old_generation_until_the_new_one_is_ready() {
        let containers: Vec<_> = (1..=2)
            .map(|n| container(n, 1, ContainerStatus::Running))
            .collect();
        let mut world = World::new(Some(app(2, 2)), 2, containers);
        let hold = |n: u64| Action::Hold {
            id: format!("web-{n:06x}"),
        };
        let replaced = |n: u64| Action::Remove {
            id: format!("web-{n:06x}"),
            reason: RemoveReason::Replaced,
        };
        // First the new generation starts; the old one serves meanwhile.
        assert_eq!(
            world.plan().actions,
            vec![Action::Start, Action::Start, hold(1), hold(2)]
        );
        // Started, one of two ready: still held.
        for n in 3..=4 {
            let new = container(n, 2, ContainerStatus::Running);
            world
                .tasks
                .insert(new.id.clone(), TaskState::Running { pid: 2 });
            world.containers.push(new);
        }
        world.ready = ["web-000001", "web-000002", "web-000003"]
            .map(String::from)
            .into();
        assert_eq!(world.plan().removals(RemoveReason::Replaced).len(), 0);
        assert!(world.plan().actions.contains(&hold(2)));
        // Both ready: the old generation goes.
        world.ready.insert("web-000004".into());
        let plan = world.plan();
        assert!(plan.actions.contains(&replaced(1)) && plan.actions.contains(&replaced(2)));
        // A new version whose process died is not serving: the old one stays.
        world
            .tasks
            .insert("web-000004".into(), TaskState::Exited { code: 1 });
        assert!(world.plan().actions.contains(&hold(1)));
    }

    #[test]
    fn a_rollout_quota_keeps_the_serving_old_replicas_and_removes_the_rest() {
        let containers: Vec<_> = (1..=3)
            .map(|n| container(n, 1, ContainerStatus::Running))
            .collect();
        let mut world = World::new(Some(app(3, 2)), 1, containers);
        world.local_old = Some(2);
        // The oldest one does not serve: it goes before the two that do.
        world.ready.remove("web-000001");
        let plan = world.plan();
        assert_eq!(plan.starts(), 1);
        assert_eq!(plan.removals(RemoveReason::Replaced), vec!["web-000001"]);
        assert!(plan.actions.contains(&Action::Hold {
            id: "web-000002".into()
        }));
        // A quota of 0 removes them all, whether or not the new one is ready yet.
        world.local_old = Some(0);
        assert_eq!(world.plan().removals(RemoveReason::Replaced).len(), 3);
    }

    #[test]
    fn a_crash_loop_is_paced_by_the_backoff() {
        let mut world = World::new(
            Some(app(1, 1)),
            1,
            vec![container(1, 1, ContainerStatus::Running)],
        );
        let id = "web-000001".to_string();
        world
            .tasks
            .insert(id.clone(), TaskState::Exited { code: 3 });
        // First look after the exit: record it.
        assert_eq!(
            world.plan().actions,
            vec![Action::Exited {
                id: id.clone(),
                code: 3
            }]
        );
        // Recorded and paced: wait, then restart once the backoff ran out.
        world.containers[0].status = ContainerStatus::Exited;
        world.backoffs.failed(&id, world.now);
        world.backoffs.failed(&id, world.now);
        let until = world.now + Duration::from_secs(2);
        assert_eq!(
            world.plan().actions,
            vec![Action::Wait {
                id: id.clone(),
                until
            }]
        );
        world.now = until;
        assert_eq!(world.plan().actions, vec![Action::Restart { id }]);
    }

    #[test]
    fn after_a_daemon_restart_running_tasks_are_adopted_and_half_made_ones_finished() {
        let mut containers: Vec<_> = (1..=2)
            .map(|n| container(n, 1, ContainerStatus::Running))
            .collect();
        containers[1].status = ContainerStatus::Creating;
        let mut world = World::new(Some(app(2, 1)), 2, containers);
        // The second never got a task before the crash.
        world.tasks.remove("web-000002");
        assert_eq!(
            world.plan().actions,
            vec![
                Action::Keep {
                    id: "web-000001".into()
                },
                Action::Restart {
                    id: "web-000002".into()
                },
            ]
        );
    }

    #[test]
    fn a_node_loss_places_its_replicas_here_and_a_placement_change_moves_them_away() {
        let world = World::new(
            Some(app(2, 1)),
            2,
            vec![container(1, 1, ContainerStatus::Running)],
        );
        assert_eq!(
            world.plan().starts(),
            1,
            "the dead node's replica comes here"
        );
        let world = World::new(
            Some(app(2, 1)),
            0,
            vec![container(1, 1, ContainerStatus::Running)],
        );
        assert_eq!(
            world.plan().removals(RemoveReason::Surplus),
            vec!["web-000001"],
            "placed elsewhere now"
        );
    }

    #[test]
    fn a_deleted_app_removes_everything() {
        let containers: Vec<_> = (1..=2)
            .map(|n| container(n, 1, ContainerStatus::Running))
            .collect();
        let world = World::new(None, 0, containers);
        assert_eq!(
            world.plan().removals(RemoveReason::AppDeleted),
            vec!["web-000001", "web-000002"]
        );
    }
}
