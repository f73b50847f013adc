//! The control plane of one node: its state, the runtime, the network and
//! the data plane behind one narrow type, [`Node`].
//!
//! One file per concern: `commands` carries out user [`crate::command::Command`]s;
//! `plan` decides what an app's containers need (pure) and `apps` carries
//! that out; `placement`, `services`, `topology`, `policy_sync`, `health`
//! and `flows` keep the replicated records and the kernel's maps in line;
//! `backoff` paces restarts; `map_diff` is the one diff of a kernel map
//! against what it should hold.

mod apps;
mod backoff;
mod cicd;
mod cloud;
pub use cloud::cloud_error;
mod commands;
pub mod connectivity;
pub mod debug;
pub mod flow_map;
mod flows;
mod health;
mod helm;
mod ingress;
mod limits;
pub mod map_diff;
pub mod monitor;
mod placement;
pub mod plan;
mod policy_sync;
mod rollout;
mod secrets;
mod services;
mod topology;
pub mod traffic;
mod views;
mod vuln;

pub use apps::endpoint_id;
use apps::lock;
pub use commands::same_revision;
pub use flows::{
    FlowFilter, FlowNames, KeptFlow, RECENT_FLOWS, protocol_name, protocol_number, wall_ms,
};
pub use policy_sync::HOST_IDENTITY;
pub use topology::machine_resources;
pub use views::{PeerApi, Remote, ReplicaCount};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cluster::{Clock, Cluster};
use crate::dataplane::{Dataplane, DataplaneError};
use crate::image::ImageError;
use crate::model::ValidationError;
use crate::network::{ContainerNetwork, NetworkConfig, NetworkError};
use crate::runtime::{ContainerRuntime, RuntimeError};
use crate::state::{Row, Store, StoreError, Table, to_value};

/// Everything that can go wrong carrying out a command.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{kind} {name} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Schedule(#[from] crate::scheduler::ScheduleError),
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    /// The change would not fit in a data-plane map (the message names the map and limit).
    #[error("{0}")]
    Limit(String),
    /// The deploy's image breaks the scan policy (the message lists the findings).
    #[error("{0}")]
    Policy(String),
    /// A cloud provider refused the request (`refused`: the request's fault, its code in the
    /// message) or could not be reached.
    #[error("{message}")]
    Cloud { refused: bool, message: String },
    /// A Helm chart that cannot be installed: it does not load or render, a repository
    /// refused it, or it has objects Hivemind cannot run (the message names them).
    #[error("{0}")]
    Chart(String),
    /// A server the request needs (a chart repository) could not be reached.
    #[error("{0}")]
    Upstream(String),
}

impl From<ImageError> for NodeError {
    fn from(e: ImageError) -> Self {
        Self::Runtime(RuntimeError::Image(e))
    }
}

/// How a node is put together.
pub struct NodeParts {
    pub node_id: String,
    pub node_name: String,
    /// Address of this node's API, as other nodes and clients reach it.
    pub address: String,
    pub data_dir: PathBuf,
    pub store: Arc<Store>,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub network: Arc<dyn ContainerNetwork>,
    pub net_config: NetworkConfig,
    pub dataplane: Option<Dataplane>,
    /// Human description of the runtime ("containerd at ...", "in-memory").
    pub runtime_name: String,
    /// Membership and replication; `None` for `web --mock`, where this node
    /// is alone and writes are versioned by a local clock.
    pub cluster: Option<Arc<Cluster>>,
    /// Range of service VIPs.
    pub service_cidr: crate::state::Subnet,
    /// The wall clock local versions follow when there is no cluster.
    pub wall: Arc<dyn crate::cluster::WallClock>,
    /// The names and addresses clients reach the API by (the Host header).
    pub api_hosts: Vec<String>,
    /// The key secrets are wrapped with (shared with the cluster, which
    /// hands it to joining members).
    pub secrets_key: Arc<crate::cluster::SecretsKey>,
    /// Where containers' secret files are written.
    pub secret_files: crate::secrets::SecretFiles,
}

/// What flow events are counted by: verdict, direction, IP protocol.
pub type FlowKind = (&'static str, &'static str, u8);

/// A tunnel of the overlay: a node's subnet and prefix, its underlay
/// address and the VNI.
pub type Tunnel = (std::net::Ipv4Addr, u8, std::net::Ipv4Addr, u32);

pub struct Node {
    id: String,
    name: String,
    address: String,
    data_dir: PathBuf,
    store: Arc<Store>,
    runtime: Arc<dyn ContainerRuntime>,
    network: Arc<dyn ContainerNetwork>,
    net_config: NetworkConfig,
    dataplane: Option<Mutex<Dataplane>>,
    runtime_name: String,
    /// SIGTERM-to-SIGKILL grace when stopping a container.
    stop_grace: Duration,
    cluster: Option<Arc<Cluster>>,
    service_cidr: crate::state::Subnet,
    /// Liveness and readiness checks of this node's containers.
    monitor: crate::health::Monitor,
    /// Rules last written to the data plane, per endpoint id.
    policy_cache: Mutex<HashMap<u32, crate::policy::EndpointRules>>,
    /// Flow events from the data plane, for `GET /api/flows`.
    flows: tokio::sync::broadcast::Sender<Arc<Vec<flows::KeptFlow>>>,
    recent_flows: Mutex<std::collections::VecDeque<flows::KeptFlow>>,
    /// The number of the next flow event.
    flow_seq: std::sync::atomic::AtomicU64,
    /// Who watches the packet trace monitor, and the batches of records for them.
    monitors: monitor::Monitors,
    traces: tokio::sync::broadcast::Sender<Arc<Vec<crate::dataplane::TraceEvent>>>,
    /// Flow events the kernel could not hand over (ring buffer full).
    flows_lost: std::sync::atomic::AtomicU64,
    /// Versions local writes when there is no cluster.
    clock: Clock,
    /// Wakes the reconcile loop early (a command, a record from a peer, a
    /// membership change).
    wake: tokio::sync::Notify,
    app_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    backoffs: Mutex<backoff::Backoffs>,
    /// Images resolved by deploys and starts, by reference.
    images: Mutex<HashMap<String, crate::image::ResolvedImage>>,
    /// The `container.ready` span of each started container that has not passed its readiness
    /// check yet: it ends when it does (or the container goes).
    pending_ready: Mutex<HashMap<String, tracing::Span>>,
    /// The last 15 minutes of this node's traffic rates, for the dashboard.
    traffic: Mutex<traffic::TrafficHistory>,
    api_hosts: Vec<String>,
    secrets_key: Arc<crate::cluster::SecretsKey>,
    secret_files: crate::secrets::SecretFiles,
    /// The version of each secret file written, per container and mount.
    secret_versions: Mutex<HashMap<String, std::collections::BTreeMap<usize, u32>>>,
    /// API requests and their latency, for `GET /metrics`.
    api_stats: crate::metrics::ApiStats,
    /// The HTTP(S) ingress: routes and certificates from state.
    ingress: Arc<crate::ingress::Ingress>,
    /// The client for other nodes' APIs.
    peer_api: std::sync::OnceLock<PeerApi>,
    /// Flow events seen, by verdict, direction and IP protocol.
    flow_counts: Mutex<std::collections::BTreeMap<FlowKind, u64>>,
    /// Who talked to whom, for the service map.
    flow_edges: Mutex<flow_map::FlowEdges>,
    /// Wakes the service sync (a replicated endpoint or service changed).
    services_wake: tokio::sync::Notify,
    /// When the owner first saw each new container of a rollout ready, for `min_ready_secs`.
    ready_since: Mutex<HashMap<String, rollout::Readiness>>,
    /// Where this node's ingress figures of each app's rollout step count from.
    ingress_windows: Mutex<ingress::FigureWindows>,
    /// Image scan results kept.
    scans: Mutex<vuln::ScanCache>,
    /// The pipeline runs executing here, and when polled branches were looked at.
    pipeline_work: Mutex<cicd::PipelineWork>,
    /// One Helm release operation at a time on this node.
    helm_lock: tokio::sync::Mutex<()>,
}

impl Node {
    pub fn new(parts: NodeParts) -> Arc<Self> {
        let store = parts.store;
        Arc::new(Self {
            id: parts.node_id,
            name: parts.node_name,
            address: parts.address,
            data_dir: parts.data_dir,
            store: store.clone(),
            runtime: parts.runtime.clone(),
            network: parts.network,
            net_config: parts.net_config,
            dataplane: parts.dataplane.map(Mutex::new),
            runtime_name: parts.runtime_name,
            cluster: parts.cluster,
            service_cidr: parts.service_cidr,
            monitor: crate::health::Monitor::new(parts.runtime.clone()),
            policy_cache: Mutex::new(HashMap::new()),
            flows: tokio::sync::broadcast::channel(64).0,
            recent_flows: Mutex::new(std::collections::VecDeque::new()),
            flow_seq: std::sync::atomic::AtomicU64::new(flows::first_seq()),
            monitors: monitor::Monitors::default(),
            traces: tokio::sync::broadcast::channel(256).0,
            flows_lost: std::sync::atomic::AtomicU64::new(0),
            clock: seeded_clock(&store, parts.wall),
            wake: tokio::sync::Notify::new(),
            stop_grace: Duration::from_secs(10),
            app_locks: Mutex::new(HashMap::new()),
            backoffs: Mutex::new(backoff::Backoffs::default()),
            images: Mutex::new(HashMap::new()),
            pending_ready: Mutex::new(HashMap::new()),
            traffic: Mutex::new(traffic::TrafficHistory::default()),
            api_hosts: parts
                .api_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            secrets_key: parts.secrets_key,
            secret_files: parts.secret_files,
            secret_versions: Mutex::new(HashMap::new()),
            api_stats: crate::metrics::ApiStats::default(),
            ingress: crate::ingress::Ingress::new(),
            peer_api: std::sync::OnceLock::new(),
            flow_counts: Mutex::new(std::collections::BTreeMap::new()),
            flow_edges: Mutex::new(flow_map::FlowEdges::default()),
            services_wake: tokio::sync::Notify::new(),
            ready_since: Mutex::new(HashMap::new()),
            ingress_windows: Mutex::default(),
            scans: Mutex::default(),
            pipeline_work: Mutex::default(),
            helm_lock: tokio::sync::Mutex::default(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether clients may reach the API by this Host (name or address,
    /// without the port).
    pub fn answers_to(&self, host: &str) -> bool {
        self.api_hosts.contains(&host.to_ascii_lowercase())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's state, to read (every change goes through [`Node::execute`]
    /// or the reconcilers).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Membership and replication; `None` for `web --mock`.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    pub fn net_config(&self) -> &NetworkConfig {
        &self.net_config
    }

    /// "containerd at ...", "in-memory".
    pub fn runtime_name(&self) -> &str {
        &self.runtime_name
    }

    /// Whether the eBPF data plane is loaded.
    pub fn has_dataplane(&self) -> bool {
        self.dataplane.is_some()
    }

    /// Whether services are load-balanced at the socket (`--socket-lb`, and the kernel took
    /// the programs).
    pub fn socket_lb(&self) -> bool {
        self.dataplane
            .as_ref()
            .is_some_and(|dataplane| lock(dataplane).socket_lb())
    }

    /// Frees egress NAT mappings idle past their timeout.
    pub fn collect_nat(&self) -> Result<usize, crate::dataplane::DataplaneError> {
        let Some(dataplane) = &self.dataplane else {
            return Ok(0);
        };
        lock(dataplane).collect_nat(crate::dataplane::monotonic_now())
    }

    /// Removes tracked connections that are over (idle past their timeout, closed).
    pub fn collect_conntrack(
        &self,
    ) -> Result<crate::dataplane::CtCollected, crate::dataplane::DataplaneError> {
        let Some(dataplane) = &self.dataplane else {
            return Ok(Default::default());
        };
        lock(dataplane).collect_conntrack(crate::dataplane::monotonic_now())
    }

    /// Egress NAT: the address it masquerades to (`None`: off), mappings in use and how many
    /// fit, and its counters.
    pub fn masquerade(
        &self,
    ) -> Option<(
        Option<std::net::Ipv4Addr>,
        (usize, u32),
        crate::dataplane::NatCounters,
    )> {
        let dataplane = lock(self.dataplane.as_ref()?);
        let counters = dataplane.nat_counters().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the NAT counters");
            Default::default()
        });
        Some((dataplane.masquerade(), dataplane.nat_usage(), counters))
    }

    /// Whether the data plane routes between containers itself (`--host-routing`).
    pub fn host_routing(&self) -> bool {
        self.dataplane.as_ref().is_some_and(|dataplane| {
            lock(dataplane).host_routing().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "reading the host routing switch");
                false
            })
        })
    }

    /// Where the data plane is pinned on bpffs, when it is.
    pub fn bpf_pins(&self) -> Option<String> {
        self.dataplane.as_ref().and_then(|dataplane| {
            lock(dataplane)
                .pins()
                .map(|pins| pins.dir().display().to_string())
        })
    }

    /// Detaches the pinned links an earlier daemon left for containers that are gone.
    pub fn release_unheld_links(&self) {
        if let Some(dataplane) = &self.dataplane {
            lock(dataplane).release_unheld_links();
        }
    }

    /// Whether the container runtime answers.
    pub async fn runtime_answers(&self) -> Result<(), RuntimeError> {
        self.runtime.list().await.map(drop)
    }

    /// Liveness and readiness of a local container.
    pub fn container_health(&self, id: &str) -> Option<crate::health::ContainerHealth> {
        self.monitor.status(id)
    }

    /// Health events of this node's containers, for the loop that acts on them.
    pub fn health_events(&self) -> tokio::sync::broadcast::Receiver<crate::health::HealthEvent> {
        self.monitor.subscribe()
    }

    /// Wakes the reconcile loop early.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until something wakes the reconcile loop.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Wakes the service sync: replicated state changed.
    pub fn wake_services(&self) {
        self.services_wake.notify_one();
    }

    /// Waits until something wakes the service sync.
    pub async fn services_woken(&self) {
        self.services_wake.notified().await;
    }

    /// Scratch space under the data dir (uploads), created on demand.
    pub fn tmp_dir(&self) -> Result<PathBuf, NodeError> {
        let dir = self.data_dir.join("tmp");
        std::fs::create_dir_all(&dir)
            .map_err(|e| NodeError::Io(format!("create {}: {e}", dir.display())))?;
        Ok(dir)
    }

    /// API requests and their latency.
    pub fn api_stats(&self) -> &crate::metrics::ApiStats {
        &self.api_stats
    }

    /// Flow events seen since the start, by verdict, direction and IP
    /// protocol, and how many the kernel could not hand over.
    pub fn flow_counts(&self) -> (Vec<(FlowKind, u64)>, u64) {
        let counts = lock(&self.flow_counts)
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        let lost = self.flows_lost.load(std::sync::atomic::Ordering::Relaxed);
        (counts, lost)
    }

    /// How full each data-plane map is; empty without a data plane.
    pub fn map_pressure(&self) -> Vec<crate::dataplane::MapPressure> {
        self.dataplane
            .as_ref()
            .map(|dataplane| lock(dataplane).map_pressure())
            .unwrap_or_default()
    }

    /// The service load balancer's counters; `None` without a data plane.
    pub fn service_counters(&self) -> Result<Option<crate::dataplane::ServiceCounters>, NodeError> {
        let Some(dataplane) = &self.dataplane else {
            return Ok(None);
        };
        Ok(Some(lock(dataplane).service_counters()?))
    }

    /// The overlay's counters and tunnels; `None` without a data plane.
    pub fn overlay(
        &self,
    ) -> Result<Option<(crate::dataplane::OverlayCounters, Vec<Tunnel>)>, NodeError> {
        let Some(dataplane) = &self.dataplane else {
            return Ok(None);
        };
        let dataplane = dataplane.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Some((dataplane.overlay_counters()?, dataplane.tunnels()?)))
    }

    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.data_dir.join("volumes").join(name).join("_data")
    }
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("containers").join(id)
    }
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.data_dir.join("logs").join(format!("{id}.log"))
    }

    /// Restart pacing of this node's containers.
    fn backoffs(&self) -> std::sync::MutexGuard<'_, backoff::Backoffs> {
        self.backoffs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The per-app lock: one reconcile of an app at a time.
    pub(crate) fn app_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.app_locks.lock() {
            Ok(locks) => locks,
            Err(poisoned) => poisoned.into_inner(),
        };
        locks.entry(name.to_string()).or_default().clone()
    }

    /// Writes a replicated record: through the cluster (versioned, pushed to
    /// peers) or, alone, with the local clock. The row is checked by its
    /// table's rules first; a write that a newer version beat is a conflict.
    pub async fn write<T: Row>(
        &self,
        table: Table<T>,
        key: &str,
        value: Option<&T>,
    ) -> Result<(), NodeError> {
        self.write_at(table, key, value, None).await
    }

    /// Writes a row at `version` (`None`: now). A change the daemon derives from a record it
    /// read (a rollout's next step) is written just after that record's version, so that it
    /// never overwrites a user's change it has not seen yet.
    pub async fn write_at<T: Row>(
        &self,
        table: Table<T>,
        key: &str,
        value: Option<&T>,
        version: Option<crate::cluster::Hlc>,
    ) -> Result<(), NodeError> {
        if let Some(row) = value {
            row.check(key)?;
        }
        let value = value.map(to_value).transpose()?;
        let key = table.key(key);
        let Some(cluster) = &self.cluster else {
            let record = crate::cluster::Record {
                key,
                version: version.unwrap_or_else(|| self.clock.now()),
                value,
                signature: None,
            };
            if !self.store.merge_record(&record)? {
                return Err(NodeError::Conflict(format!(
                    "the write of {}/{} lost to a newer stored version",
                    record.key.table, record.key.key
                )));
            }
            return Ok(());
        };
        let written = match version {
            Some(version) => cluster.write_at(key, value, version).await,
            None => cluster.write(key, value).await,
        };
        match written {
            Ok(_) => {}
            Err(e @ crate::cluster::ClusterError::Superseded { .. }) => {
                return Err(NodeError::Conflict(e.to_string()));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}

/// A clock that continues above the newest stored version.
fn seeded_clock(store: &Store, wall: Arc<dyn crate::cluster::WallClock>) -> Clock {
    let clock = Clock::with_wall(0, wall);
    match crate::cluster::ReplicaStore::digest(store) {
        Ok(digest) => {
            if let Some(newest) = digest.into_iter().map(|(_, v)| v).max() {
                clock.observe(newest);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read stored versions to seed the clock"),
    }
    clock
}

pub(crate) fn remove_dir_if_exists(dir: &Path) -> Result<(), NodeError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NodeError::Io(format!("remove {}: {e}", dir.display()))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::command::Command;
    use crate::contract::DeployRequest;
    use crate::network::NoNetwork;
    use crate::runtime::memory::MemoryRuntime;
    use crate::state::{ContainerStatus, Subnet};

    /// A wall clock the test sets.
    struct TestWall(AtomicU64);

    impl crate::cluster::WallClock for TestWall {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    async fn node(dir: &Path, wall_ms: u64) -> Arc<Node> {
        let store = Arc::new(Store::open(&dir.join("state.redb")).expect("open the store"));
        let subnet = Subnet {
            network: std::net::Ipv4Addr::new(10, 244, 0, 0),
            prefix: 24,
        };
        let node = Node::new(NodeParts {
            node_id: "n1".into(),
            node_name: "n1".into(),
            address: "127.0.0.1:3000".into(),
            data_dir: dir.to_path_buf(),
            store,
            runtime: Arc::new(MemoryRuntime::new()),
            network: Arc::new(NoNetwork),
            net_config: NetworkConfig {
                bridge: "hm0".into(),
                subnet,
                mtu: 1450,
            },
            dataplane: None,
            runtime_name: "in-memory".into(),
            cluster: None,
            service_cidr: crate::services::default_service_cidr(),
            wall: Arc::new(TestWall(AtomicU64::new(wall_ms))),
            api_hosts: vec!["localhost".into()],
            secrets_key: crate::cluster::SecretsKey::in_memory(crate::cluster::Key::generate()),
            secret_files: crate::secrets::SecretFiles::open(dir.join("secrets"), false)
                .expect("secret files dir"),
        });
        node.publish_self(std::net::Ipv4Addr::LOCALHOST, Default::default())
            .await
            .expect("the node's own record");
        node
    }

    fn deploy(replicas: u32, env: &str) -> Command {
        Command::deploy(&DeployRequest {
            image: "busybox".into(),
            name: "web".into(),
            replicas: Some(replicas),
            env: [("V".to_string(), env.to_string())].into(),
            ..Default::default()
        })
        .expect("valid deploy")
    }

    fn running(node: &Node) -> Vec<String> {
        let mut ids: Vec<String> = node
            .store
            .containers_of("web")
            .expect("containers")
            .into_iter()
            .filter(|c| c.status == ContainerStatus::Running)
            .map(|c| c.id)
            .collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn deploy_scale_redeploy_and_delete_through_plan_and_apply() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = node(dir.path(), 1_000_000).await;
        node.execute(deploy(3, "a")).await.expect("deploy");
        let first = running(&node);
        assert_eq!(first.len(), 3, "three replicas started together");

        node.execute(Command::scale("web", 1).expect("valid"))
            .await
            .expect("scale");
        assert_eq!(running(&node).len(), 1);
        assert!(first.contains(&running(&node)[0]), "the oldest stays");

        node.execute(deploy(2, "b")).await.expect("redeploy");
        // The new generation started; the old replica serves until the
        // next pass sees the new ones ready.
        assert_eq!(running(&node).len(), 3, "old and new side by side");
        node.reconcile_app("web").await.expect("reconcile");
        let second = running(&node);
        assert_eq!(second.len(), 2);
        assert!(
            second.iter().all(|id| !first.contains(id)),
            "a new generation"
        );

        let too_many = Command::scale("web", 1000).expect("a name is all it checks");
        let err = node.execute(too_many).await.expect_err("over the limit");
        assert!(err.to_string().contains("replicas"), "{err}");
        assert_eq!(running(&node), second, "a refused scale changed nothing");

        node.execute(Command::DeleteApp { name: "web".into() })
            .await
            .expect("delete");
        assert!(running(&node).is_empty());
        assert!(node.store.app("web").expect("read").is_none());
    }

    #[tokio::test]
    async fn writes_after_a_restart_with_the_clock_behind_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = 10_000_000;
        {
            let node = node(dir.path(), now).await;
            node.execute(deploy(1, "a")).await.expect("deploy");
        }
        // The same data dir, the clock ten minutes behind.
        let node = node(dir.path(), now - 600_000).await;
        node.execute(Command::scale("web", 2).expect("valid"))
            .await
            .expect("scale is kept, not lost to the older clock");
        assert_eq!(
            node.store
                .app("web")
                .expect("read")
                .expect("app")
                .spec
                .replicas,
            2
        );
        node.execute(Command::DeleteApp { name: "web".into() })
            .await
            .expect("delete");
        assert!(
            node.store.app("web").expect("read").is_none(),
            "the delete is kept too"
        );
    }
}
