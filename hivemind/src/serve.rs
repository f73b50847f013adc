//! Starting a node: `hivemind daemon` and `hivemind web`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::containerd::Containerd;
use crate::daemon::{Node, NodeParts};
use crate::dataplane::Dataplane;
use crate::network::{ContainerNetwork, Netlink, NetworkConfig, NoNetwork};
use crate::runtime::ContainerRuntime;
use crate::runtime::containerd::ContainerdRuntime;
use crate::runtime::memory::MemoryRuntime;
use crate::state::{Store, Subnet};

/// How often every app is reconciled, besides after each command.
const RECONCILE_PERIOD: Duration = Duration::from_secs(2);
/// How long to wait for a containerd we started to answer.
const CONTAINERD_START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub containerd: PathBuf,
    pub subnet: Subnet,
    pub bridge: String,
    pub insecure_registries: Vec<String>,
    /// In-memory runtime, no kernel features.
    pub mock: bool,
}

pub async fn serve(options: ServeOptions) -> Result<()> {
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("create data dir {}", options.data_dir.display()))?;
    let store = Store::open(&options.data_dir.join("state.redb"))?;
    let node_id = match store.meta("node_id")? {
        Some(id) => id,
        None => {
            let id = format!("{:08x}", random_u32());
            store.put_meta("node_id", &id)?;
            id
        }
    };
    let node_name = hostname();

    let backends = backends(&options).await?;

    let node = Node::new(NodeParts {
        node_id,
        node_name,
        address: options.listen.to_string(),
        data_dir: options.data_dir.clone(),
        store,
        runtime: backends.runtime,
        network: backends.network,
        net_config: backends.net_config,
        dataplane: backends.dataplane,
        runtime_name: backends.runtime_name,
    });
    tracing::info!(node = %node.id, data_dir = %options.data_dir.display(), runtime = %node.runtime_name, "node starting");

    // Adopt what survived a restart before answering requests.
    if let Err(e) = node.reconcile_all().await {
        tracing::warn!(error = %e, "initial reconcile failed");
    }
    let reconciler = {
        let node = node.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(RECONCILE_PERIOD);
            loop {
                ticker.tick().await;
                if let Err(e) = node.reconcile_all().await {
                    tracing::warn!(error = %e, "reconcile failed");
                }
            }
        })
    };

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listen on {}", options.listen))?;
    tracing::info!(address = %options.listen, "API and dashboard listening");
    axum::serve(listener, crate::api::router(node))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    reconciler.abort();
    tracing::info!("stopped; containers keep running and are adopted at the next start");
    Ok(())
}

/// The outside systems a node drives: real ones, or none for `--mock`.
struct Backends {
    runtime: Arc<dyn ContainerRuntime>,
    network: Arc<dyn ContainerNetwork>,
    net_config: NetworkConfig,
    dataplane: Option<Dataplane>,
    runtime_name: String,
}

async fn backends(options: &ServeOptions) -> Result<Backends> {
    let mut net_config = NetworkConfig {
        bridge: options.bridge.clone(),
        subnet: options.subnet,
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
    net_config.mtu = Netlink::container_mtu().await?;
    let network = Netlink::new(net_config.clone());
    network.ensure_node().await?;
    let dataplane = Dataplane::load().context("load the eBPF data plane")?;
    Ok(Backends {
        runtime: Arc::new(ContainerdRuntime::new(cd, options.insecure_registries.clone())),
        network: Arc::new(network),
        net_config,
        dataplane: Some(dataplane),
        runtime_name: format!("containerd at {}", options.containerd.display()),
    })
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
