//! The reconciler: keeps the containers of each app as its record says.
//!
//! Order of operations, chosen so that a crash at any point leaks nothing:
//! starting records the container (status `creating`) before it takes an
//! address, a namespace or a containerd object; removing undoes them in
//! reverse and deletes the record last. A restarted daemon finds every
//! piece through the record and adopts or finishes it.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::time::Instant;

use futures::StreamExt;
use tracing::Instrument as _;

use super::plan::{Action, Desired, Observed, Plan, RemoveReason, plan};
use super::{Node, NodeError, remove_dir_if_exists};
use crate::dataplane::Dataplane;
use crate::image::ResolvedImage;
use crate::network::{host_ifname, netns_path};
use crate::runtime::{BindMount, ContainerSpec, RuntimeError};
use crate::state::{AppRecord, ContainerRecord, ContainerStatus, now_millis, now_secs};

/// New containers of one app started at once.
const START_CONCURRENCY: usize = 4;

/// How long a replaced or surplus container stays up after leaving the load balancers: the
/// other nodes follow an endpoint's withdrawal within milliseconds (their service maps are
/// synced on every replicated change), and requests under way finish.
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// A fresh container id: `<app>-<6 hex>`.
fn new_container_id(app: &str) -> String {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{app}-{:06x}", random & 0xff_ffff)
}

impl Node {
    /// Brings one app's containers in line with its record (or removes them
    /// all when the app is gone): plans, then applies the plan.
    pub async fn reconcile_app(&self, name: &str) -> Result<(), NodeError> {
        self.reconcile_app_with(name, true).await
    }

    /// What a command that changed the app does at once: like [`Node::reconcile_app`], but the
    /// containers an update replaces are left to the reconcile loop (which the command wakes),
    /// so that the answer does not wait for their drain and stop.
    pub(super) async fn reconcile_app_now(&self, name: &str) -> Result<(), NodeError> {
        self.reconcile_app_with(name, false).await
    }

    async fn reconcile_app_with(&self, name: &str, replace: bool) -> Result<(), NodeError> {
        let lock = self.app_lock(name);
        let _guard = lock.lock().await;
        let tasks = self.runtime.list().await?;
        let containers = self.store.containers_of(name)?;
        let app = self.store.app(name)?;
        let backoffs = self.backoffs().clone();
        let ready: std::collections::BTreeSet<String> = containers
            .iter()
            .filter(|c| self.readiness(&c.id).0)
            .map(|c| c.id.clone())
            .collect();
        let seen = Seen {
            tasks: &tasks,
            ready: &ready,
            backoffs: &backoffs,
        };
        if let Some(app) = app.as_ref().filter(|a| !a.spec.variants().is_empty()) {
            return self
                .reconcile_variants(app, containers, &seen, replace)
                .await;
        }
        let (local_replicas, local_old) = match &app {
            Some(app) => self.local_quotas(app)?,
            None => (0, None),
        };
        let plan = plan(
            Desired {
                app: app.as_ref(),
                local_replicas,
                local_old,
            },
            seen.observed(&containers),
        );
        self.apply(app.as_ref(), None, containers, plan, replace)
            .await
    }

    /// An app that serves an A/B test's variants: each variant's containers are planned as an
    /// app of their own (the spec with the variant's image, its share of the placement), and
    /// the rest (older generations, variants no longer listed) as the replaced version under
    /// the rollout's quota.
    async fn reconcile_variants(
        &self,
        app: &AppRecord,
        containers: Vec<ContainerRecord>,
        seen: &Seen<'_>,
        replace: bool,
    ) -> Result<(), NodeError> {
        let variants = app.spec.variants();
        let nodes = self.placement_nodes(&app.spec.name)?;
        let counts = crate::rollout::variant_replicas(app.spec.replicas, variants);
        let local = crate::rollout::variant_local(&nodes, &self.id, &counts);
        let local_old = app
            .active_rollout()
            .and_then(|r| r.quotas)
            .map(|q| crate::rollout::local_quotas(&nodes, &self.id, q).1);
        // One group per variant, then what is no variant of this generation: the replaced
        // version (under the rollout's quota) and containers of a variant no longer listed.
        let mut groups: Vec<Vec<ContainerRecord>> = vec![Vec::new(); variants.len() + 1];
        for container in containers {
            let index = variants
                .iter()
                .position(|v| {
                    container.generation == app.generation
                        && container.variant.as_deref() == Some(v.name.as_str())
                })
                .unwrap_or(variants.len());
            groups[index].push(container);
        }
        let mut results = Vec::new();
        for (i, group) in groups.into_iter().enumerate() {
            let (record, variant, desired) = match variants.get(i) {
                Some(variant) => (
                    AppRecord {
                        spec: app.spec.for_variant(variant),
                        ..app.clone()
                    },
                    Some(variant.name.as_str()),
                    (local[i], Some(0)),
                ),
                None => (app.clone(), None, (0, local_old)),
            };
            let plan = plan(
                Desired {
                    app: Some(&record),
                    local_replicas: desired.0,
                    local_old: desired.1,
                },
                seen.observed(&group),
            );
            results.push(
                self.apply(Some(&record), variant, group, plan, replace)
                    .await,
            );
        }
        results.into_iter().collect()
    }

    /// Carries out a plan: surplus removals first, then keeps, restarts and
    /// new starts (at most [`START_CONCURRENCY`] at once), then the removal
    /// of replaced generations. The first error is returned after
    /// everything was tried.
    async fn apply(
        &self,
        app: Option<&AppRecord>,
        variant: Option<&str>,
        containers: Vec<ContainerRecord>,
        plan: Plan,
        replace: bool,
    ) -> Result<(), NodeError> {
        let by_id: BTreeMap<String, ContainerRecord> =
            containers.into_iter().map(|c| (c.id.clone(), c)).collect();
        let mut results = Vec::new();
        for reason in [RemoveReason::AppDeleted, RemoveReason::Surplus] {
            let records = pick(&by_id, plan.removals(reason));
            let drain = reason == RemoveReason::Surplus;
            results.push(self.remove_containers(records, drain).await);
        }
        if let Some(app) = app {
            let steps: Vec<Step> = plan
                .actions
                .iter()
                .filter_map(|action| match action {
                    Action::Keep { id } => by_id.get(id).cloned().map(Step::Keep),
                    Action::Exited { id, code } => {
                        by_id.get(id).cloned().map(|c| Step::Exited(c, *code))
                    }
                    Action::Restart { id } => by_id.get(id).cloned().map(Step::Restart),
                    Action::Start => Some(Step::Start),
                    Action::Wait { .. } | Action::Hold { .. } | Action::Remove { .. } => None,
                })
                .collect();
            // The image is resolved once for every start of this pass.
            let starts = steps
                .iter()
                .any(|s| matches!(s, Step::Start | Step::Restart(_)));
            let image = if starts {
                Some(
                    self.resolve_image(&app.spec.image)
                        .await
                        .map_err(|e| e.to_string()),
                )
            } else {
                None
            };
            let image = image.as_ref();
            // Collected first: a stream of futures made by a closure over
            // borrowed state would not be `Send` for the API's handlers.
            let steps: Vec<_> = steps
                .into_iter()
                .map(|step| self.step(app, variant, image, step))
                .collect();
            let done: Vec<Result<(), NodeError>> = futures::stream::iter(steps)
                .buffer_unordered(START_CONCURRENCY)
                .collect()
                .await;
            results.extend(done);
        }
        // The old generation goes once the new one serves (see `plan`).
        if replace {
            let replaced = pick(&by_id, plan.removals(RemoveReason::Replaced));
            results.push(self.remove_containers(replaced, true).await);
        }
        results.into_iter().collect()
    }

    async fn step(
        &self,
        app: &AppRecord,
        variant: Option<&str>,
        image: Option<&Result<ResolvedImage, String>>,
        step: Step,
    ) -> Result<(), NodeError> {
        match step {
            Step::Keep(container) => self.keep(app, &container).await,
            Step::Exited(mut record, code) => {
                tracing::info!(container = %record.id, exit_code = code, "container exited");
                record.status = ContainerStatus::Exited;
                record.exit_code = Some(code);
                self.store.put_container(&record)?;
                self.backoffs().failed(&record.id, Instant::now());
                self.publish_local_endpoint(&record, ContainerStatus::Exited)
                    .await
            }
            Step::Restart(mut record) => {
                if record.started_at.is_some() {
                    record.restarts += 1;
                }
                self.start(app, image, record).await
            }
            Step::Start => self.start_new(app, variant, image).await,
        }
    }

    /// Reconciles every app, then removes what no record explains.
    pub async fn reconcile_all(&self) -> Result<(), NodeError> {
        if let Err(e) = self.reconcile_placements().await {
            tracing::warn!(error = %e, "placement failed");
        }
        if let Err(e) = self.reconcile_rollouts().await {
            tracing::warn!(error = %e, "rollouts failed");
        }
        if let Err(e) = self.reconcile_services().await {
            tracing::warn!(error = %e, "service records failed");
        }
        let mut names: Vec<String> = self
            .store
            .apps()?
            .into_iter()
            .map(|a| a.spec.name)
            .collect();
        for container in self.store.containers()? {
            if !names.contains(&container.app) {
                names.push(container.app);
            }
        }
        for name in names {
            if let Err(e) = self.reconcile_app(&name).await {
                tracing::warn!(app = %name, error = %e, "reconcile failed");
            }
        }
        let containers = self.store.containers()?;
        self.sweep_secret_files(&containers);
        self.refresh_secret_files(&containers).await;
        self.sweep_orphans().await
    }

    /// containerd containers and links of this node with no record.
    async fn sweep_orphans(&self) -> Result<(), NodeError> {
        let known: std::collections::BTreeSet<String> =
            self.store.containers()?.into_iter().map(|c| c.id).collect();
        for (id, _) in self.runtime.list().await? {
            if !known.contains(&id) && self.owns_container(&id) {
                tracing::info!(container = %id, "removing container with no record");
                self.runtime.remove(&id, self.stop_grace).await?;
            }
        }
        Ok(())
    }

    /// Whether a runtime container belongs to this node: its log lives in our
    /// data dir. Containers of other daemons sharing a containerd are left be.
    fn owns_container(&self, id: &str) -> bool {
        self.container_dir(id).exists() || self.log_path(id).exists()
    }

    /// The image of `reference`, as the last deploy or start resolved it, or
    /// from the runtime (pulled if missing).
    pub(super) async fn resolve_image(
        &self,
        reference: &str,
    ) -> Result<ResolvedImage, RuntimeError> {
        let cached = self
            .images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(reference)
            .cloned();
        if let Some(image) = cached {
            return Ok(image);
        }
        let image = self.runtime.ensure_image(reference, &|_| {}).await?;
        self.remember_image(reference, &image);
        Ok(image)
    }

    pub(super) fn remember_image(&self, reference: &str, image: &ResolvedImage) {
        let mut images = self.images.lock().unwrap_or_else(|p| p.into_inner());
        images.insert(reference.to_string(), image.clone());
        // Under the resolved name too: that is what the app record keeps.
        images.insert(image.name.clone(), image.clone());
    }

    fn forget_image(&self, reference: &str) {
        self.images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(reference);
    }

    /// A running container: adopted or refreshed.
    async fn keep(&self, app: &AppRecord, container: &ContainerRecord) -> Result<(), NodeError> {
        if container.status != ContainerStatus::Running {
            let mut record = container.clone();
            record.status = ContainerStatus::Running;
            self.store.put_container(&record)?;
        }
        self.ensure_dataplane(container).await;
        self.backoffs().running(&container.id, Instant::now());
        self.watch_health(app, container);
        self.publish_local_endpoint(container, ContainerStatus::Running)
            .await
    }

    async fn start_new(
        &self,
        app: &AppRecord,
        variant: Option<&str>,
        image: Option<&Result<ResolvedImage, String>>,
    ) -> Result<(), NodeError> {
        let mut id = new_container_id(&app.spec.name);
        while self.store.container(&id)?.is_some() {
            id = new_container_id(&app.spec.name);
        }
        let ip = self.store.allocate_ip(self.net_config.subnet, &id)?;
        let record = ContainerRecord {
            host_ifname: host_ifname(&self.id, &id),
            netns: netns_path(&self.id, &id).display().to_string(),
            id,
            app: app.spec.name.clone(),
            node: self.name.clone(),
            image: app.spec.image.clone(),
            generation: app.generation,
            ip,
            resources: app.spec.resources,
            status: ContainerStatus::Creating,
            restarts: 0,
            exit_code: None,
            message: None,
            created_at: now_secs(),
            created_ms: now_millis(),
            started_at: None,
            variant: variant.map(str::to_string),
        };
        self.store.put_container(&record)?;
        std::fs::create_dir_all(self.container_dir(&record.id))
            .map_err(|e| NodeError::Io(format!("create container dir: {e}")))?;
        self.start(app, image, record).await
    }

    /// Network, data plane and task for a recorded container, in a `container.start` span.
    async fn start(
        &self,
        app: &AppRecord,
        image: Option<&Result<ResolvedImage, String>>,
        record: ContainerRecord,
    ) -> Result<(), NodeError> {
        let span = tracing::info_span!(
            "container.start",
            app = %record.app,
            container = %record.id,
            node = %self.name,
        );
        self.start_in_span(app, image, record)
            .instrument(span)
            .await
    }

    async fn start_in_span(
        &self,
        app: &AppRecord,
        image: Option<&Result<ResolvedImage, String>>,
        mut record: ContainerRecord,
    ) -> Result<(), NodeError> {
        let image = match image {
            Some(Ok(image)) => Ok(image.clone()),
            Some(Err(e)) => Err(NodeError::Runtime(RuntimeError::Other(format!(
                "image {}: {e}",
                app.spec.image
            )))),
            None => Err(NodeError::Runtime(RuntimeError::Other(format!(
                "image {} was not resolved",
                app.spec.image
            )))),
        };
        let started = match image {
            Ok(image) => self.try_start(app, image, &record).await,
            Err(e) => Err(e),
        };
        match started {
            Ok(()) => {
                record.status = ContainerStatus::Running;
                record.message = None;
                record.started_at = Some(now_secs());
                self.store.put_container(&record)?;
                tracing::info!(container = %record.id, app = %record.app, ip = %record.ip, "container started");
                // A (re)started container starts its checks over.
                self.monitor.unwatch(&record.id);
                self.watch_health(app, &record);
                self.await_ready(&record.id);
                self.publish_local_endpoint(&record, ContainerStatus::Running)
                    .await
            }
            Err(e) => {
                record.status = ContainerStatus::Failed;
                record.message = Some(e.to_string());
                self.store.put_container(&record)?;
                self.backoffs().failed(&record.id, Instant::now());
                // The next attempt asks containerd again (the image may be gone).
                self.forget_image(&app.spec.image);
                tracing::warn!(container = %record.id, error = %e, "container failed to start");
                // Every node's views show the failure, not only this one's.
                if let Err(publish) = self
                    .publish_local_endpoint(&record, ContainerStatus::Failed)
                    .await
                {
                    tracing::warn!(container = %record.id, error = %publish, "publishing the failure failed");
                }
                Err(e)
            }
        }
    }

    async fn try_start(
        &self,
        app: &AppRecord,
        image: ResolvedImage,
        record: &ContainerRecord,
    ) -> Result<(), NodeError> {
        let netns = PathBuf::from(&record.netns);
        let network = async {
            let attachment = self
                .network
                .attach(&netns, &record.host_ifname, record.ip)
                .await?;
            if let Some(dataplane) = &self.dataplane {
                lock(dataplane).attach_endpoint(
                    attachment.host_ifindex,
                    endpoint_id(record),
                    record.ip,
                )?;
                translate_sockets(dataplane, record, true);
            }
            Ok::<_, NodeError>(())
        };
        network
            .instrument(tracing::info_span!("container.network", ip = %record.ip))
            .await?;
        let mut mounts = self.etc_files(record)?;
        for volume in &app.spec.volumes {
            // Volume data lives on each node that runs the app.
            let path = self.volume_dir(&volume.name);
            std::fs::create_dir_all(&path)
                .map_err(|e| NodeError::Io(format!("create volume dir {}: {e}", path.display())))?;
            mounts.push(BindMount {
                source: path,
                destination: volume.mount_path.clone(),
                readonly: false,
            });
        }
        let secrets = self.container_secrets(&app.spec, &record.id).await?;
        mounts.extend(secrets.mounts);
        let mut env = app.spec.env.clone();
        env.extend(secrets.env);
        let spec = ContainerSpec {
            id: record.id.clone(),
            app: record.app.clone(),
            image,
            env,
            mounts,
            resources: app.spec.resources,
            netns: Some(netns),
            hostname: record.id.clone(),
            log_path: self.log_path(&record.id),
            command: None,
            working_dir: None,
        };
        self.runtime
            .run(&spec)
            .instrument(tracing::info_span!("container.run"))
            .await?;
        Ok(())
    }

    /// Opens the `container.ready` span of a container just started (in its `container.start`
    /// span): it ends when the container first passes its readiness check, at once when it
    /// has none.
    fn await_ready(&self, id: &str) {
        let span = tracing::info_span!(
            "container.ready",
            container = %id,
            ready = tracing::field::Empty
        );
        if !self.readiness(id).0 {
            self.pending_ready
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.to_string(), span);
        }
    }

    /// Ends the `container.ready` span of `id`, if it is open; `ready`: whether it passed.
    pub(super) fn end_ready(&self, id: &str, ready: bool) {
        let span = self
            .pending_ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(span) = span {
            span.record("ready", ready);
        }
    }

    /// /etc/hosts, /etc/hostname and /etc/resolv.conf of a container.
    fn etc_files(&self, record: &ContainerRecord) -> Result<Vec<BindMount>, NodeError> {
        let dir = self.container_dir(&record.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| NodeError::Io(format!("{}: {e}", dir.display())))?;
        // The node's DNS server answers cluster names and forwards the rest.
        let resolv = if self.dataplane.is_some() {
            format!(
                "nameserver {}\nsearch {}\noptions ndots:2\n",
                self.net_config.subnet.gateway(),
                crate::services::CLUSTER_DOMAIN
            )
        } else {
            std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
        };
        let files = [
            (
                "hosts",
                format!(
                    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n{}\t{}\n",
                    record.ip, record.id
                ),
            ),
            ("hostname", format!("{}\n", record.id)),
            ("resolv.conf", resolv),
        ];
        let mut mounts = Vec::new();
        for (name, content) in files {
            let path = dir.join(name);
            std::fs::write(&path, content)
                .map_err(|e| NodeError::Io(format!("write {}: {e}", path.display())))?;
            mounts.push(BindMount {
                source: path,
                destination: format!("/etc/{name}"),
                readonly: name != "hosts",
            });
        }
        Ok(mounts)
    }

    /// Re-attaches the data plane to a running container found after a
    /// restart of the daemon (attachments die with the daemon's process).
    /// A container already attached is left alone: attaching again would
    /// swap its programs and let packets slip past them in between.
    async fn ensure_dataplane(&self, record: &ContainerRecord) {
        let Some(dataplane) = &self.dataplane else {
            return;
        };
        match self.network.ifindex(&record.host_ifname).await {
            Ok(Some(ifindex)) => {
                {
                    let mut guard = lock(dataplane);
                    if guard.is_attached(ifindex, endpoint_id(record)) {
                        return;
                    }
                    if let Err(e) = guard.attach_endpoint(ifindex, endpoint_id(record), record.ip) {
                        tracing::warn!(container = %record.id, error = %e, "data plane attach failed");
                        return;
                    }
                }
                translate_sockets(dataplane, record, true);
            }
            Ok(None) => {
                tracing::warn!(container = %record.id, link = %record.host_ifname, "running container has no host link")
            }
            Err(e) => tracing::warn!(container = %record.id, error = %e, "link lookup failed"),
        }
    }

    /// Removes containers all at once: each may wait out its stop grace period, and a
    /// hundred replicas one after the other would take a hundred of them. The first error.
    /// Removes containers. With `drain`, the app keeps running elsewhere: the containers leave
    /// the load balancers first (this node's at once, the others' through replication), and
    /// stop [`DRAIN`] later, so that no new connection reaches a stopped backend.
    async fn remove_containers(
        &self,
        records: Vec<ContainerRecord>,
        drain: bool,
    ) -> Result<(), NodeError> {
        if records.is_empty() {
            return Ok(());
        }
        if drain {
            let mut withdrawn = Vec::new();
            for record in &records {
                let current: Option<crate::state::EndpointRecord> =
                    self.store.value(crate::state::ENDPOINTS, &record.id)?;
                if current.is_some_and(|e| e.ready) {
                    self.withdraw(record).await?;
                    withdrawn.push(record.id.clone());
                }
            }
            if !withdrawn.is_empty() {
                if let Err(e) = self.sync_services().await {
                    tracing::warn!(error = %e, "service sync failed");
                }
                tracing::info!(containers = ?withdrawn, "draining before the stop");
                tokio::time::sleep(DRAIN).await;
            }
        }
        let removals = records.iter().map(|record| self.remove_container(record));
        futures::future::join_all(removals)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, NodeError>>()
            .map(|_| ())
    }

    /// Takes a container out of the load balancers and DNS, and stops watching its health.
    async fn withdraw(&self, record: &ContainerRecord) -> Result<(), NodeError> {
        self.monitor.unwatch(&record.id);
        self.end_ready(&record.id, false);
        self.publish_endpoint(&record.id, None).await
    }

    /// Stops and removes a container and everything it held.
    pub async fn remove_container(&self, record: &ContainerRecord) -> Result<(), NodeError> {
        // Out of the load balancer and DNS before it stops.
        self.withdraw(record).await?;
        self.runtime.remove(&record.id, self.stop_grace).await?;
        if let Some(dataplane) = &self.dataplane {
            translate_sockets(dataplane, record, false);
            if let Some(ifindex) = self.network.ifindex(&record.host_ifname).await? {
                lock(dataplane).detach_endpoint(ifindex)?;
            }
        }
        self.network
            .detach(&PathBuf::from(&record.netns), &record.host_ifname)
            .await?;
        self.store.release_ip(&record.id)?;
        remove_dir_if_exists(&self.container_dir(&record.id))?;
        self.remove_container_secrets(&record.id)?;
        match std::fs::remove_file(self.log_path(&record.id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(NodeError::Io(format!("remove log: {e}"))),
        }
        self.store.delete_container(&record.id)?;
        self.backoffs().forget(&record.id);
        tracing::info!(container = %record.id, app = %record.app, "container removed");
        Ok(())
    }

    /// Per-container data plane counters, keyed by container id (one read of the counters map).
    pub fn counters(&self) -> BTreeMap<String, crate::dataplane::EndpointCounters> {
        let (Some(dataplane), Ok(records)) = (&self.dataplane, self.store.containers()) else {
            return BTreeMap::new();
        };
        let Ok(mut all) = lock(dataplane).all_endpoint_counters() else {
            return BTreeMap::new();
        };
        records
            .into_iter()
            .map(|record| {
                let counters = all.remove(&endpoint_id(&record)).unwrap_or_default();
                (record.id, counters)
            })
            .collect()
    }
}

/// Endpoint id in the data plane: the container's address, unique on a node.
pub fn endpoint_id(record: &ContainerRecord) -> u32 {
    u32::from(record.ip)
}

/// Has the socket programs translate (or stop translating) the sockets of `record`'s network
/// namespace; nothing to do without socket load balancing. A failure only leaves the container
/// on the per-packet path, so it is logged.
fn translate_sockets(dataplane: &std::sync::Mutex<Dataplane>, record: &ContainerRecord, on: bool) {
    if !lock(dataplane).socket_lb() {
        return;
    }
    let result = crate::network::netns_cookie(std::path::Path::new(&record.netns))
        .map_err(|e| e.to_string())
        .and_then(|cookie| {
            lock(dataplane)
                .set_socket_lb_netns(cookie, on)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        tracing::warn!(container = %record.id, error = %e, on, "socket load balancing of the container's namespace");
    }
}

pub(super) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The records of `ids`.
fn pick(by_id: &BTreeMap<String, ContainerRecord>, ids: Vec<&str>) -> Vec<ContainerRecord> {
    ids.iter()
        .filter_map(|id| by_id.get(*id).cloned())
        .collect()
}

/// What the node sees of its containers, for [`plan`].
struct Seen<'s> {
    tasks: &'s BTreeMap<String, crate::runtime::TaskState>,
    ready: &'s std::collections::BTreeSet<String>,
    backoffs: &'s super::backoff::Backoffs,
}

impl Seen<'_> {
    fn observed<'c>(&'c self, containers: &'c [ContainerRecord]) -> Observed<'c> {
        Observed {
            containers,
            tasks: self.tasks,
            ready: self.ready,
            backoffs: self.backoffs,
            now: Instant::now(),
        }
    }
}

/// One step of a plan that touches a container of the app.
enum Step {
    Keep(ContainerRecord),
    Exited(ContainerRecord, u32),
    Restart(ContainerRecord),
    Start,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_carry_the_app_name() {
        let id = new_container_id("web");
        assert!(id.starts_with("web-") && id.len() == 10, "{id}");
    }
}
