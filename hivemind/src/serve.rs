//! Starting a node: `hivemind daemon` and `hivemind web`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::acl::JoinTokenText;
use crate::cluster::{
    Cluster, ClusterConfig, ClusterTls, Key, OffsetWallClock, RecordKey, ReplicaStore, SecretsKey,
    SystemWallClock, WallClock,
};
use crate::containerd::Containerd;
use crate::dataplane::Dataplane;
use crate::discovery::{DnsConfig, DnsServer};
use crate::network::{ContainerNetwork, Netlink, NetworkConfig, NoNetwork};
use crate::node::{Node, NodeParts};
use crate::pki::{Ca, NodeTls};
use crate::runtime::ContainerRuntime;
use crate::runtime::containerd::ContainerdRuntime;
use crate::runtime::memory::MemoryRuntime;
use crate::secrets::SecretFiles;
use crate::services::StoreDirectory;
use crate::state::{SUBNETS, Store, Subnet};

/// How often every app is reconciled, besides after each command.
const RECONCILE_PERIOD: Duration = Duration::from_secs(2);
/// How long to wait for a containerd we started to answer.
const CONTAINERD_START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub containerd: PathBuf,
    /// This node's container subnet; allocated from `cluster_cidr` when unset.
    pub subnet: Option<Subnet>,
    pub cluster_cidr: Subnet,
    pub service_cidr: Subnet,
    pub bridge: String,
    /// The containers', bridge's and overlay's MTU; from the node's links when unset.
    pub mtu: Option<u32>,
    pub insecure_registries: Vec<String>,
    pub node_name: Option<String>,
    /// Labels apps can require with `--constraint`.
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// UDP port of the membership protocol.
    pub gossip_port: u16,
    /// Address other nodes reach this one at (API, gossip, VXLAN).
    pub advertise: Option<Ipv4Addr>,
    pub join: Vec<SocketAddr>,
    /// The first admin token, from a file, instead of a generated one.
    pub admin_token_file: Option<PathBuf>,
    /// The cluster key (a member's `<data dir>/gossip.key`).
    pub gossip_key_file: Option<PathBuf>,
    /// More names clients reach the API by (a DNS name, a load balancer).
    pub api_hosts: Vec<String>,
    /// Where the underlay's VXLAN validation runs.
    pub underlay_program: crate::dataplane::UnderlayProgram,
    /// Host routing in eBPF (else the kernel's bridge and IP forwarding).
    pub host_routing: bool,
    /// Service load balancing at the socket (else per packet only).
    pub socket_lb: bool,
    /// Egress NAT of container traffic leaving the cluster, from the advertise address.
    pub masquerade: bool,
    /// Destinations (network, prefix) never masqueraded, besides the cluster and service CIDRs.
    pub no_masquerade: Vec<(Ipv4Addr, u8)>,
    /// Where the data plane's maps and links are pinned on bpffs (default
    /// `/sys/fs/bpf/hivemind/<node id>`); `None` with `bpf_pins` off.
    pub bpf_pin_dir: Option<PathBuf>,
    /// Pin the data plane, so it outlives the daemon (policy and load balancing stay enforced
    /// through a restart or a crash).
    pub bpf_pins: bool,
    /// Ports of the HTTP and HTTPS ingress (0: off).
    pub ingress_http_port: u16,
    pub ingress_https_port: u16,
    /// Deletion markers are kept at least this long.
    pub tombstone_grace: Duration,
    /// Test seam: this node's wall clock runs this far off the system's.
    pub clock_offset_ms: i64,
    /// Where containers' secret files live (a tmpfs; default
    /// `/dev/shm/hivemind/<node id>`).
    pub secrets_dir: Option<PathBuf>,
    /// Admits this node to the cluster of `join` (`hmjoin_...`).
    pub join_token: Option<String>,
    /// How long this node's certificates are valid.
    pub node_cert_lifetime: Duration,
    /// The API's certificate chain and key (PEM) instead of the node
    /// certificate from the cluster CA.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// In-memory runtime, no kernel features, no cluster.
    pub mock: bool,
}

/// How many /24s to try before giving up on a subnet.
const SUBNET_ATTEMPTS: usize = 20;
/// Time for a subnet claim to reach the other nodes before it is trusted.
const CLAIM_SETTLE: Duration = Duration::from_secs(3);

pub async fn serve(options: ServeOptions) -> Result<()> {
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("create data dir {}", options.data_dir.display()))?;
    let store = Arc::new(Store::open(&options.data_dir.join("state.redb"))?);
    let node_id = match store.meta("node_id")? {
        Some(id) => id,
        None => {
            let id = format!("{:08x}", random_u32());
            store.put_meta("node_id", &id)?;
            id
        }
    };
    let node_name = options.node_name.clone().unwrap_or_else(hostname);
    let advertise = match options.advertise {
        Some(ip) => ip,
        None => match options.listen.ip() {
            std::net::IpAddr::V4(ip) if !ip.is_unspecified() => ip,
            _ => Netlink::first_global_ipv4()
                .await?
                .unwrap_or(Ipv4Addr::LOCALHOST),
        },
    };
    let api_advertise = SocketAddr::new(advertise.into(), options.listen.port());

    let wall: Arc<dyn WallClock> = match options.clock_offset_ms {
        0 => Arc::new(SystemWallClock),
        offset_ms => {
            tracing::warn!(offset_ms, "this node's clock is shifted (test seam)");
            Arc::new(OffsetWallClock { offset_ms })
        }
    };
    let secrets_key = if options.mock {
        SecretsKey::in_memory(Key::generate())
    } else {
        let held = SecretsKey::load(options.data_dir.join(SECRETS_KEY_FILE))?;
        if held.get().is_none() && options.join.is_empty() {
            let key = held.set(Key::generate())?;
            tracing::info!(key = %key.fingerprint(), "secrets key made; members that join get it sealed with the cluster key");
        }
        held
    };
    let secret_files = if options.mock {
        SecretFiles::open(options.data_dir.join("secrets"), false)?
    } else {
        let dir = options
            .secrets_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/dev/shm/hivemind").join(&node_id));
        SecretFiles::open(dir, true)?
    };
    let hosts = api_hosts(&options, advertise, &node_name);
    let cluster = if options.mock {
        None
    } else {
        // The node's certificate names every address and name its API
        // answers to: it serves the API too.
        let (cert_ips, cert_names): (Vec<String>, Vec<String>) = hosts
            .iter()
            .cloned()
            .partition(|h| h.parse::<std::net::IpAddr>().is_ok());
        let cert_ips: Vec<std::net::IpAddr> =
            cert_ips.iter().filter_map(|h| h.parse().ok()).collect();
        let node_tls =
            cluster_trust(&options, &node_id, &cert_ips, &cert_names, &secrets_key).await?;
        let tls = ClusterTls::new(
            node_tls,
            Some(options.data_dir.join(PKI_DIR)),
            options.node_cert_lifetime,
            cert_ips,
            cert_names,
        )?;
        let keyring = cluster_keyring(&options)?;
        let config = ClusterConfig {
            gossip_advertise: SocketAddr::new(advertise.into(), options.gossip_port),
            join: options.join.clone(),
            tombstone_grace: options.tombstone_grace,
            wall: wall.clone(),
            ..ClusterConfig::new(
                node_id.clone(),
                SocketAddr::new(options.listen.ip(), options.gossip_port),
                api_advertise,
                keyring,
            )
        };
        let config = ClusterConfig {
            keyring_path: Some(options.data_dir.join(GOSSIP_KEY_FILE)),
            secrets_key: secrets_key.clone(),
            tls: Some(tls),
            join_authority: Some(Arc::new(JoinTokens(store.clone()))),
            ..config
        };
        let replicas: Arc<dyn ReplicaStore> = store.clone();
        Some(Cluster::start(config, replicas).await?)
    };
    let subnet = acquire_subnet(&store, cluster.as_deref(), &node_id, &options).await?;
    let backends = backends(&options, subnet, advertise, &node_id).await?;

    let node = Node::new(NodeParts {
        node_id,
        node_name,
        address: api_advertise.to_string(),
        data_dir: options.data_dir.clone(),
        store,
        runtime: backends.runtime,
        network: backends.network,
        net_config: backends.net_config,
        dataplane: backends.dataplane,
        runtime_name: backends.runtime_name,
        cluster: cluster.clone(),
        service_cidr: options.service_cidr,
        wall,
        api_hosts: hosts,
        secrets_key: secrets_key.clone(),
        secret_files,
    });
    tracing::info!(node = %node.id(), subnet = %subnet, advertise = %advertise, data_dir = %options.data_dir.display(), runtime = %node.runtime_name(), "node starting");
    node.publish_self(advertise, options.node_labels.clone())
        .await?;
    if options.join.is_empty() {
        bootstrap_admin_token(&node, &options).await?;
    }
    let dns = start_dns(&node, options.mock).await?;

    // Adopt what survived a restart before answering requests, bring the data plane in line,
    // then let go of the pinned links of containers that are gone.
    if let Err(e) = node.reconcile_all().await {
        tracing::warn!(error = %e, "initial reconcile failed");
    }
    sync_dataplane(&node).await;
    node.release_unheld_links();
    let mut tasks = vec![
        tokio::spawn(reconcile_loop(node.clone())),
        tokio::spawn(service_sync_loop(node.clone())),
        tokio::spawn(flow_loop(node.clone())),
        tokio::spawn(trace_loop(node.clone())),
        tokio::spawn(nat_loop(node.clone())),
    ];
    tasks.push(tokio::spawn(metrics_listener_loop(
        node.clone(),
        options.listen.ip(),
    )));
    tasks.push(tokio::spawn(tracing_export_loop(node.clone())));
    tasks.push(tokio::spawn(log_shipping_loop(node.clone())));
    tasks.push(tokio::spawn(traffic_loop(node.clone())));
    tasks.push(tokio::spawn(pipeline_loop(node.clone())));
    if !options.mock {
        node.refresh_ingress().await;
        node.ingress()
            .start(
                options.listen.ip(),
                options.ingress_http_port,
                options.ingress_https_port,
            )
            .await;
        tasks.push(tokio::spawn(ingress_loop(node.clone())));
    }
    {
        let mut events = node.health_events();
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match events.recv().await {
                    Ok(event) => {
                        if let Err(e) = node.on_health_event(event).await {
                            tracing::warn!(error = %e, "health event failed");
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "health events lagged; reconciling");
                        node.wake();
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        }));
    }
    if let Some(cluster) = &cluster
        && secrets_key.get().is_none()
    {
        tasks.push(tokio::spawn(fetch_secrets_key(cluster.clone())));
    }
    if let Some(cluster) = &cluster {
        let mut events = cluster.subscribe();
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            while let Ok(_) | Err(RecvError::Lagged(_)) = events.recv().await {
                node.wake();
                node.wake_services();
            }
        }));
    }

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listen on {}", options.listen))?;
    tracing::info!(address = %options.listen, tls = !options.mock, "API and dashboard listening");
    // Cluster traffic has its own TLS listener (TCP at the gossip port).
    let router = crate::api::router(node.clone());
    let tls = api_tls(&options, cluster.as_ref())?;
    crate::listener::serve(listener, router, tls, shutdown_signal()).await?;
    for task in tasks {
        task.abort();
    }
    if let Some(dns) = dns {
        dns.stop().await;
    }
    if let Some(cluster) = &cluster
        && let Err(e) = cluster.leave().await
    {
        tracing::warn!(error = %e, "leaving the cluster failed");
    }
    tracing::info!("stopped; containers keep running and are adopted at the next start");
    Ok(())
}

/// Where the secrets key is kept.
const SECRETS_KEY_FILE: &str = "secrets.key";

/// Asks the members for the secrets key until one hands it out.
async fn fetch_secrets_key(cluster: Arc<Cluster>) {
    let mut attempt = 0u32;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        match cluster.secrets_key().await {
            Ok(_) => return,
            Err(e) => {
                attempt += 1;
                if attempt % 15 == 1 {
                    tracing::warn!(error = %e, "no secrets key yet; secrets cannot be opened here");
                }
            }
        }
    }
}

/// How often flow events are taken from the kernel's ring buffer.
const FLOW_PERIOD: Duration = Duration::from_millis(200);

async fn flow_loop(node: Arc<Node>) {
    let mut ticker = tokio::time::interval(FLOW_PERIOD);
    loop {
        ticker.tick().await;
        if let Err(e) = node.pump_flows() {
            tracing::warn!(error = %e, "reading flow events failed");
        }
    }
}

/// How often the packet trace monitor's records are taken from the kernel (while someone
/// watches).
const TRACE_PERIOD: Duration = Duration::from_millis(100);

async fn trace_loop(node: Arc<Node>) {
    let mut ticker = tokio::time::interval(TRACE_PERIOD);
    loop {
        ticker.tick().await;
        if let Err(e) = node.pump_traces() {
            tracing::warn!(error = %e, "reading trace records failed");
        }
    }
}

/// How often idle egress NAT mappings are freed.
const NAT_GC_PERIOD: Duration = Duration::from_secs(5);

async fn nat_loop(node: Arc<Node>) {
    let mut ticker = tokio::time::interval(NAT_GC_PERIOD);
    loop {
        ticker.tick().await;
        if let Err(e) = node.collect_nat() {
            tracing::warn!(error = %e, "freeing idle NAT mappings failed");
        }
        if let Err(e) = node.collect_conntrack() {
            tracing::warn!(error = %e, "collecting tracked connections failed");
        }
    }
}

/// How often the metrics listener follows its setting.
const METRICS_LISTENER_PERIOD: Duration = Duration::from_secs(1);

/// Opens, moves and closes the metrics listener (`observability configure-metrics`) as its
/// cluster setting says; a port that cannot be bound is retried and logged.
async fn metrics_listener_loop(node: Arc<Node>, bind: std::net::IpAddr) {
    use crate::state::{CLUSTER_SETTING, METRICS_LISTENER};
    let mut current: Option<(crate::model::MetricsListener, tokio::task::JoinHandle<()>)> = None;
    let mut tick = tokio::time::interval(METRICS_LISTENER_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let wanted = match node.store().value(METRICS_LISTENER, CLUSTER_SETTING) {
            Ok(wanted) => wanted,
            Err(e) => {
                tracing::warn!(error = %e, "reading the metrics listener setting");
                continue;
            }
        };
        if current.as_ref().map(|(l, _)| l) == wanted.as_ref() {
            continue;
        }
        if let Some((old, task)) = current.take() {
            task.abort();
            tracing::info!(port = old.port, path = %old.path, "metrics listener closed");
        }
        let Some(listener) = wanted else {
            continue;
        };
        let address = SocketAddr::new(bind, listener.port);
        match tokio::net::TcpListener::bind(address).await {
            Ok(socket) => {
                tracing::info!(%address, path = %listener.path, "metrics listener open");
                let router = crate::api::metrics_router(node.clone(), &listener.path);
                let task = tokio::spawn(async move {
                    let forever = std::future::pending::<()>();
                    if let Err(e) = crate::listener::serve(socket, router, None, forever).await {
                        tracing::warn!(error = %e, "metrics listener failed");
                    }
                });
                current = Some((listener, task));
            }
            Err(e) => {
                tracing::warn!(%address, error = %e, "the metrics listener cannot listen; retrying")
            }
        }
    }
}

/// Starts, moves and stops the span export (`observability configure-tracing`) as its cluster
/// setting says (the node that takes the command follows at once, see `Node::follow_tracing`).
/// A setting the exporter refuses is logged once, until it changes.
async fn tracing_export_loop(node: Arc<Node>) {
    use crate::state::{CLUSTER_SETTING, TRACING_EXPORT};
    let mut refused = None;
    let mut tick = tokio::time::interval(METRICS_LISTENER_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let wanted = match node.store().value(TRACING_EXPORT, CLUSTER_SETTING) {
            Ok(wanted) => wanted,
            Err(e) => {
                tracing::warn!(error = %e, "reading the span export setting");
                continue;
            }
        };
        let pair = wanted
            .as_ref()
            .map(|e| (e.service_name.clone(), e.endpoint.clone()));
        if crate::telemetry::exporting() == pair || refused == Some(pair.clone()) {
            continue;
        }
        refused = node.follow_tracing(wanted).await.err().map(|_| pair);
    }
}

/// Takes a traffic sample for the dashboard every second.
async fn traffic_loop(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let node = node.clone();
        // The counters are read from the kernel's maps: off the async workers.
        let _ = tokio::task::spawn_blocking(move || node.sample_traffic()).await;
    }
}

/// Ships log lines (`observability configure-logging`) once a second while it is configured.
async fn log_shipping_loop(node: Arc<Node>) {
    let mut shipper = crate::shipping::Shipper::new();
    let mut tick = tokio::time::interval(METRICS_LISTENER_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        shipper.pass(&node).await;
    }
}

/// How often the ingress's routes and certificates are rebuilt from state.
const INGRESS_REFRESH: Duration = Duration::from_secs(1);

async fn ingress_loop(node: Arc<Node>) {
    let mut tick = tokio::time::interval(INGRESS_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        node.refresh_ingress().await;
        if let Err(e) = node.publish_ingress_figures().await {
            tracing::warn!(error = %e, "ingress figures not published");
        }
    }
}

/// Follows replicated endpoints and services into the data plane at once, whatever the
/// reconcile pass is busy with (starting containers takes seconds): a withdrawn backend must
/// leave every node's load balancer before it stops.
async fn service_sync_loop(node: Arc<Node>) {
    loop {
        node.services_woken().await;
        if let Err(e) = node.sync_services().await {
            tracing::warn!(error = %e, "service sync failed");
        }
    }
}

/// Starts queued CI/CD runs of the pipelines this node owns, and polls their branches.
async fn pipeline_loop(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = node.reconcile_pipelines().await {
            tracing::warn!(error = %e, "pipeline reconcile failed");
        }
    }
}

async fn reconcile_loop(node: Arc<Node>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RECONCILE_PERIOD) => {}
            _ = node.woken() => {}
        }
        if let Err(e) = node.reconcile_all().await {
            tracing::warn!(error = %e, "reconcile failed");
        }
        sync_dataplane(&node).await;
    }
}

/// Brings tunnels, services and policy in the data plane in line with state.
async fn sync_dataplane(node: &Node) {
    if let Err(e) = node.sync_tunnels().await {
        tracing::warn!(error = %e, "tunnel sync failed");
    }
    if let Err(e) = node.sync_services().await {
        tracing::warn!(error = %e, "service sync failed");
    }
    if let Err(e) = node.sync_policy().await {
        tracing::warn!(error = %e, "policy sync failed");
    }
}

/// The node's DNS server, on the gateway address that containers use as
/// their resolver; other names go to the node's own resolvers.
async fn start_dns(node: &Arc<Node>, mock: bool) -> Result<Option<DnsServer>> {
    if mock {
        return Ok(None);
    }
    let mut config = DnsConfig::new(SocketAddr::new(
        node.net_config().subnet.gateway().into(),
        53,
    ));
    // The forwarder runs in the daemon's namespace, so a loopback stub
    // resolver of the node is usable.
    config.upstreams = crate::discovery::upstreams_from_resolv_conf(
        &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    );
    let directory = Arc::new(StoreDirectory {
        store: node.store().clone(),
    });
    let server = DnsServer::start(config, directory)
        .await
        .context("start the DNS server")?;
    tracing::info!(address = %server.local_addr(), "DNS server listening");
    Ok(Some(server))
}

/// This node's container subnet: the one it had, the one asked for, or a
/// free /24 of the cluster CIDR claimed through the replicated `subnets`
/// table. Two nodes claiming the same /24 at once both see the same winner
/// (last writer wins); the loser claims another.
async fn acquire_subnet(
    store: &Store,
    cluster: Option<&Cluster>,
    node_id: &str,
    options: &ServeOptions,
) -> Result<Subnet> {
    let known = match store.meta("subnet")? {
        Some(text) => Some(text.parse::<Subnet>().map_err(anyhow::Error::msg)?),
        None => options.subnet,
    };
    let Some(cluster) = cluster else {
        return Ok(known.unwrap_or(Subnet {
            network: options.cluster_cidr.network,
            prefix: 24,
        }));
    };
    if let Some(subnet) = known {
        claim_subnet(store, cluster, node_id, subnet).await?;
        store.put_meta("subnet", &subnet.to_string())?;
        return Ok(subnet);
    }
    if !options.join.is_empty() {
        // Learn the cluster's claims before choosing: wait until a record of
        // another node arrived (proof of a sync), then let claims settle.
        let deadline = tokio::time::Instant::now() + SYNC_WAIT;
        while tokio::time::Instant::now() < deadline
            && !store
                .values::<crate::state::NodeInfo>(crate::state::NODES)?
                .iter()
                .any(|n| n.id != node_id)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(CLAIM_SETTLE).await;
    }
    let cidr = options.cluster_cidr;
    let count = 1u32 << (24u32.saturating_sub(u32::from(cidr.prefix)));
    for _ in 0..SUBNET_ATTEMPTS {
        let owners = subnet_owners(store)?;
        let free = (0..count)
            .map(|i| Subnet {
                network: Ipv4Addr::from(u32::from(cidr.network) + (i << 8)),
                prefix: 24,
            })
            .find(|s| owners.get(&s.network).is_none_or(|owner| owner == node_id));
        let Some(subnet) = free else {
            bail!("no free /24 left in the cluster CIDR {cidr}");
        };
        let claimed_at = crate::cluster::unix_ms();
        claim_subnet(store, cluster, node_id, subnet).await?;
        tokio::time::sleep(CLAIM_SETTLE).await;
        // Every live member's claims made before ours have arrived once we
        // had a complete anti-entropy round with each since our claim;
        // a claim made after such a round is later than ours and loses.
        if !cluster.wait_synced_since(claimed_at, SYNC_WAIT).await {
            tracing::warn!(subnet = %subnet, "not every member synced within {SYNC_WAIT:?}; deciding on the claims known");
        }
        let owner = subnet_owners(store)?.remove(&subnet.network);
        if owner.as_deref() == Some(node_id) {
            store.put_meta("subnet", &subnet.to_string())?;
            return Ok(subnet);
        }
        // Withdraw the losing claim so it never wins later.
        cluster
            .write(subnet_claim_key(subnet.network, node_id), None)
            .await?;
        tracing::info!(subnet = %subnet, winner = ?owner, "subnet claimed earlier by another node; trying the next");
    }
    bail!("could not claim a subnet in {SUBNET_ATTEMPTS} attempts")
}

/// The names and addresses the API answers to: loopback, this node's
/// addresses and names, and `--api-host`. Other Host headers get 421, so a
/// web page of another site cannot reach the API through a name that
/// resolves here (DNS rebinding).
fn api_hosts(options: &ServeOptions, advertise: Ipv4Addr, node_name: &str) -> Vec<String> {
    let mut hosts = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
        advertise.to_string(),
        node_name.to_string(),
        hostname(),
    ];
    if !options.listen.ip().is_unspecified() {
        hosts.push(options.listen.ip().to_string());
    }
    hosts.extend(options.api_hosts.iter().cloned());
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Where a node keeps the cluster key.
pub const GOSSIP_KEY_FILE: &str = "gossip.key";

/// The cluster key: the one this node keeps, else the one given with
/// `--gossip-key-file` (copied from a member), else, for the first node of a
/// cluster, a new one. A node that joins must be given the cluster's key.
fn cluster_keyring(options: &ServeOptions) -> Result<crate::cluster::Keyring> {
    use crate::cluster::{Key, Keyring};
    use std::os::unix::fs::OpenOptionsExt;
    let kept = options.data_dir.join(GOSSIP_KEY_FILE);
    let read = |path: &Path| -> Result<Keyring> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read the cluster key {}", path.display()))?;
        Keyring::parse(&text).with_context(|| format!("{}", path.display()))
    };
    let keyring = if kept.exists() {
        read(&kept)?
    } else if let Some(file) = &options.gossip_key_file {
        read(file)?
    } else if options.join.is_empty() {
        Keyring::new(Key::generate())
    } else {
        bail!(
            "joining a cluster needs its key: copy <data dir>/{GOSSIP_KEY_FILE} from a member and \
             give it with --gossip-key-file"
        );
    };
    if !kept.exists() {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&kept)
            .with_context(|| format!("write {}", kept.display()))?;
        use std::io::Write as _;
        file.write_all(keyring.to_text().as_bytes())
            .with_context(|| format!("write {}", kept.display()))?;
        tracing::info!(path = %kept.display(), key = %keyring.primary().fingerprint(), "cluster key kept; give a copy to joining nodes with --gossip-key-file");
    }
    Ok(keyring)
}

/// The API's TLS: the `--tls-cert`/`--tls-key` pair, else the node
/// certificate (renewed in place); none for `--mock`.
fn api_tls(
    options: &ServeOptions,
    cluster: Option<&Arc<Cluster>>,
) -> Result<Option<crate::listener::TlsSource>> {
    match (
        &options.tls_cert,
        &options.tls_key,
        cluster.and_then(|c| c.tls()),
    ) {
        (Some(cert), Some(key), _) => {
            let config = crate::pki::api_server_config_from_files(cert, key)?;
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            Ok(Some(Arc::new(move || acceptor.clone())))
        }
        (Some(_), None, _) | (None, Some(_), _) => {
            bail!("--tls-cert and --tls-key go together")
        }
        (None, None, Some(tls)) => {
            let tls = tls.clone();
            Ok(Some(Arc::new(move || tls.api_acceptor())))
        }
        (None, None, None) => Ok(None),
    }
}

/// Where the CA and this node's certificate are kept.
const PKI_DIR: &str = "pki";

/// The cluster's CA and this node's certificate: kept ones, else a new CA
/// (the first node), else the CA, cluster key and secrets key a member hands
/// over for a join token. The node's certificate is issued anew at every
/// start, so it names the node's current addresses and names.
async fn cluster_trust(
    options: &ServeOptions,
    node_id: &str,
    ips: &[std::net::IpAddr],
    names: &[String],
    secrets_key: &SecretsKey,
) -> Result<NodeTls> {
    let dir = options.data_dir.join(PKI_DIR);
    let ca = match Ca::load(&dir)? {
        Some(ca) => ca,
        None => match (&options.join_token, options.join.is_empty()) {
            (Some(text), false) => {
                let token = JoinTokenText::parse(text).context(
                    "--join-token is not a join token (hmjoin_<id>_<secret>_<ca sha256>, from                      `hivemind cluster join-token create`)",
                )?;
                let bundle = crate::cluster::fetch_join_bundle(
                    &options.join,
                    text.trim(),
                    &token.ca_sha256,
                    node_id,
                )
                .await?;
                let kept = options.data_dir.join(GOSSIP_KEY_FILE);
                crate::cluster::write_keyring(&kept, &bundle.keyring()?)?;
                if let Some(key) = bundle.secrets_key()? {
                    secrets_key.set(key)?;
                }
                let ca = Ca::from_pem(&bundle.ca_cert, &bundle.ca_key)?;
                ca.save(&dir)?;
                tracing::info!(ca = %ca.fingerprint(), "admitted to the cluster with a join token");
                ca
            }
            (None, true) => {
                let ca = Ca::generate()?;
                ca.save(&dir)?;
                tracing::info!(ca = %ca.fingerprint(), path = %dir.display(), "cluster CA made; admit nodes with `hivemind cluster join-token create`");
                ca
            }
            (Some(_), true) => bail!("--join-token needs --join: the address of a member"),
            (None, false) => bail!(
                "joining a cluster needs a join token: run `hivemind cluster join-token create`                  on a member and start this node with --join-token"
            ),
        },
    };
    let cert = ca.issue_for(node_id, ips, names, options.node_cert_lifetime)?;
    cert.save(&dir)?;
    tracing::info!(node = %node_id, until = cert.not_after(), "node certificate issued");
    Ok(NodeTls { ca, cert })
}

/// Join tokens as the replicated state holds them.
struct JoinTokens(Arc<Store>);

impl crate::cluster::JoinAuthority for JoinTokens {
    fn admit(&self, token: &str, node: &str) -> Result<(), String> {
        let text = JoinTokenText::parse(token).ok_or("not a join token")?;
        let record: crate::state::JoinTokenRecord = self
            .0
            .value(crate::state::JOIN_TOKENS, &text.token.id)
            .map_err(|e| e.to_string())?
            .ok_or("unknown or revoked join token")?;
        if !crate::acl::same_hash(&record.secret_sha256, &text.token.secret_hash()) {
            return Err("unknown or revoked join token".to_string());
        }
        if record.expires_at <= crate::state::now_secs() {
            return Err(format!("join token {} has expired", record.id));
        }
        tracing::info!(node, token = %record.id, "join token accepted");
        Ok(())
    }
}

/// Where the first node of a cluster writes the admin token it made.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The first node of a cluster, with no token yet, makes an admin token
/// (or takes the one of `--admin-token-file`) and writes it to
/// `<data dir>/admin.token`, readable by root only. Joining nodes get the
/// tokens through replication.
async fn bootstrap_admin_token(node: &Node, options: &ServeOptions) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let token = match &options.admin_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read --admin-token-file {}", path.display()))?;
            crate::acl::TokenText::parse(&text).with_context(|| {
                format!(
                    "{} does not hold a token (hm_<12 hex>_<64 hex>)",
                    path.display()
                )
            })?
        }
        None => {
            if !node.store().values(crate::state::TOKENS)?.is_empty() {
                return Ok(());
            }
            crate::acl::TokenText::generate()
        }
    };
    if node
        .store()
        .value(crate::state::TOKENS, &token.id)?
        .is_some()
    {
        return Ok(());
    }
    let record = crate::state::TokenRecord {
        id: token.id.clone(),
        name: "admin".to_string(),
        secret_sha256: token.secret_hash(),
        role: Some(crate::acl::Role::Admin),
        policy: None,
        expires_at: None,
        created_at: crate::state::now_secs(),
    };
    node.write(crate::state::TOKENS, &record.id, Some(&record))
        .await?;
    let path = options.data_dir.join(ADMIN_TOKEN_FILE);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("write {}", path.display()))?;
    use std::io::Write as _;
    writeln!(file, "{token}").with_context(|| format!("write {}", path.display()))?;
    tracing::info!(path = %path.display(), "admin token created; use it with: export HIVEMIND_TOKEN=$(cat {})", path.display());
    Ok(())
}

/// How long a joining node waits for its first sync before choosing a subnet.
const SYNC_WAIT: Duration = Duration::from_secs(15);

/// Each node claims a /24 under its own key (`<network>/<node>`), so claims
/// never overwrite each other; the earliest claim owns the /24.
fn subnet_claim_key(network: Ipv4Addr, node_id: &str) -> RecordKey {
    SUBNETS.key(format!("{network}/{node_id}"))
}

async fn claim_subnet(
    store: &Store,
    cluster: &Cluster,
    node_id: &str,
    subnet: Subnet,
) -> Result<()> {
    let key = subnet_claim_key(subnet.network, node_id);
    // Keep the original claim's version: rewriting it would make it later.
    let present = store.record(&key)?.is_some_and(|r| r.value.is_some());
    if !present {
        cluster.write(key, Some(serde_json::json!(node_id))).await?;
    }
    Ok(())
}

/// The owner of every claimed /24: the node with the earliest live claim.
fn subnet_owners(store: &Store) -> Result<std::collections::BTreeMap<Ipv4Addr, String>> {
    let mut earliest: std::collections::BTreeMap<Ipv4Addr, (crate::cluster::Hlc, String)> =
        std::collections::BTreeMap::new();
    for record in store.records(SUBNETS.name())? {
        let Some(owner) = record.value.as_ref().and_then(|v| v.as_str()) else {
            continue;
        };
        let Some(network) = record
            .key
            .key
            .split_once('/')
            .and_then(|(net, _)| net.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        let entry = earliest
            .entry(network)
            .or_insert((record.version, owner.to_string()));
        if record.version < entry.0 {
            *entry = (record.version, owner.to_string());
        }
    }
    Ok(earliest
        .into_iter()
        .map(|(net, (_, owner))| (net, owner))
        .collect())
}

/// The outside systems a node drives: real ones, or none for `--mock`.
struct Backends {
    runtime: Arc<dyn ContainerRuntime>,
    network: Arc<dyn ContainerNetwork>,
    net_config: NetworkConfig,
    dataplane: Option<Dataplane>,
    runtime_name: String,
}

/// The data plane: pinned where asked and possible, else owned by this process (reported).
fn load_dataplane(options: &ServeOptions, node_id: &str) -> Result<Dataplane> {
    if options.bpf_pins {
        let dir = options
            .bpf_pin_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/hivemind").join(node_id));
        match crate::dataplane::Pins::open(&dir) {
            Ok(pins) => {
                let dataplane = Dataplane::load_pinned(pins).context("load the eBPF data plane")?;
                tracing::info!(dir = %dir.display(), "data plane pinned: it outlives this process");
                return Ok(dataplane);
            }
            Err(e) => tracing::warn!(
                error = %format!("{e:#}"),
                "bpffs unusable: the data plane goes with this process (policy and load balancing stop while the daemon is down)"
            ),
        }
    }
    Dataplane::load().context("load the eBPF data plane")
}

async fn backends(
    options: &ServeOptions,
    subnet: Subnet,
    advertise: Ipv4Addr,
    node_id: &str,
) -> Result<Backends> {
    let mut net_config = NetworkConfig {
        bridge: options.bridge.clone(),
        subnet,
        mtu: 1450,
    };
    if options.mock {
        return Ok(Backends {
            runtime: Arc::new(MemoryRuntime::new()),
            network: Arc::new(NoNetwork),
            net_config,
            dataplane: None,
            runtime_name: "in-memory (mock)".to_string(),
        });
    }
    let cd = connect_or_start_containerd(&options.containerd, &options.data_dir).await?;
    net_config.mtu = match options.mtu {
        Some(mtu) => mtu,
        None => Netlink::container_mtu().await?,
    };
    tracing::info!(
        mtu = net_config.mtu,
        given = options.mtu.is_some(),
        "container MTU"
    );
    let network = Netlink::new(net_config.clone());
    network.ensure_node().await?;
    let vxlan = network
        .ensure_overlay(&[options.cluster_cidr, options.service_cidr])
        .await?;
    let mut dataplane = load_dataplane(options, node_id)?;
    // A container attached from now on denies all traffic until its policy is written.
    dataplane.set_deny_new_endpoints(true);
    match network.ifindex_of_address(advertise).await? {
        Some(underlay) => dataplane
            .attach_overlay(vxlan, underlay, options.underlay_program)
            .context("attach the overlay programs")?,
        None => bail!("no interface holds the advertise address {advertise}; pass --advertise"),
    }
    let bridge = network
        .ifindex(&options.bridge)
        .await?
        .with_context(|| format!("bridge {} missing", options.bridge))?;
    dataplane
        .set_node_config(bridge, subnet.gateway(), subnet.prefix)
        .context("configure the service data path")?;
    dataplane
        .set_service_cidr(options.service_cidr.network, options.service_cidr.prefix)
        .context("set the service CIDR")?;
    dataplane
        .set_host_routing(options.host_routing)
        .context("switch host routing")?;
    // Like ip-masq-agent: the cluster and service CIDRs are always reached unmasqueraded.
    let exclude: Vec<(Ipv4Addr, u8)> = [options.cluster_cidr, options.service_cidr]
        .iter()
        .map(|s| (s.network, s.prefix))
        .chain(options.no_masquerade.iter().copied())
        .collect();
    dataplane
        .set_node_address(advertise)
        .context("set the node address")?;
    dataplane
        .set_masquerade(options.masquerade.then_some(advertise), &exclude)
        .context("configure egress NAT")?;
    if options.socket_lb
        && let Err(e) = enable_socket_lb(&mut dataplane)
    {
        tracing::warn!(
            error = %format!("{e:#}"),
            "socket load balancing unavailable: services are translated per packet"
        );
    }
    Ok(Backends {
        runtime: Arc::new(log_driver(ContainerdRuntime::new(
            cd,
            options.insecure_registries.clone(),
        ))),
        network: Arc::new(network),
        net_config,
        dataplane: Some(dataplane),
        runtime_name: format!("containerd at {}", options.containerd.display()),
    })
}

/// Attaches the socket programs to the machine's cgroup2 root (mounting one if needed) and
/// translates the node's own sockets; containers' namespaces join as they start.
fn enable_socket_lb(dataplane: &mut Dataplane) -> Result<()> {
    let root =
        crate::runtime::cgroup::cgroup2_root().context("find or mount a cgroup2 hierarchy")?;
    dataplane.enable_socket_lb(&root)?;
    let cookie = crate::network::current_netns_cookie().context("the node's netns cookie")?;
    dataplane.set_socket_lb_netns(cookie, true)?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Connects to containerd at `socket`; when nothing answers and containerd
/// is installed, starts one with its state under the data dir.
async fn connect_or_start_containerd(socket: &Path, data_dir: &Path) -> Result<Containerd> {
    if let Ok(cd) = Containerd::connect(socket).await {
        return Ok(cd);
    }
    let Some(binary) = find_in_path("containerd") else {
        bail!(
            "no containerd answers at {} and the containerd binary is not installed; \
             install it (apt-get install containerd runc, or `cargo xtask setup`) \
             or pass --containerd SOCKET",
            socket.display()
        );
    };
    let dir = data_dir.join("containerd");
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{socket}\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            socket = socket.display(),
        ),
    )?;
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let log = std::fs::File::create(dir.join("containerd.log"))?;
    tracing::info!(socket = %socket.display(), "no containerd answering; starting one");
    let mut command = std::process::Command::new(binary);
    command
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own session: containerd outlives this daemon, so do the containers.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command.spawn().context("start containerd")?;
    std::fs::write(dir.join("containerd.pid"), child.id().to_string())?;
    let deadline = tokio::time::Instant::now() + CONTAINERD_START_TIMEOUT;
    loop {
        if let Ok(cd) = Containerd::connect(socket).await {
            return Ok(cd);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "containerd did not answer at {} within {}s; see {}",
                socket.display(),
                CONTAINERD_START_TIMEOUT.as_secs(),
                dir.join("containerd.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u32
}

/// Container output through this executable's `log-driver` (times, rotation), when the
/// executable can be named; the shim's plain file otherwise.
fn log_driver(runtime: ContainerdRuntime) -> ContainerdRuntime {
    match std::env::current_exe() {
        Ok(exe) => runtime.with_log_driver(exe),
        Err(e) => {
            tracing::warn!(error = %e, "container logs without times or rotation: this executable has no path");
            runtime
        }
    }
}
