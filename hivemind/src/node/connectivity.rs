//! `hivemind debug connectivity`: an in-cluster check in the spirit of `cilium connectivity
//! test`. It deploys two probe apps, a client on this node and a server on another, checks the
//! paths a user's traffic takes (container to container, to the service address, DNS, node to
//! container and to the service address, egress, a published port), each from where that
//! traffic starts (the client probe's own network namespace, or this node's), and removes the
//! probes again.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::{Node, NodeError};
use crate::command::{Command, Outcome};
use crate::contract::{
    CheckRequest, CheckResult, ConnectivityCheck, ConnectivityReport, ConnectivityRequest,
    ContainerView, DeployRequest, HealthRequest, ProbeRequest, ProbeView,
};
use crate::image::probe;
use crate::model::{PublishedPort, RESERVED_PORTS, ValidationError};
use crate::services::CLUSTER_DOMAIN;
use crate::state::{ENDPOINTS, EndpointRecord, NODES, NodeInfo, SERVICES};

/// The probe apps: fixed names, so that policies can select them (and block them on purpose).
pub const CLIENT_APP: &str = "hm-connectivity-client";
pub const SERVER_APP: &str = "hm-connectivity-server";

/// How long the probes may take to run and become ready.
const READY_WAIT: Duration = Duration::from_secs(90);
/// How long removing them may take.
const GONE_WAIT: Duration = Duration::from_secs(60);
/// Longest a single attempt of a check waits for an answer; a check retries until its timeout.
const ATTEMPT: Duration = Duration::from_secs(2);

/// One test run at a time per node: the probes have fixed names.
static RUNNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A validated [`ConnectivityRequest`].
#[derive(Debug, Clone)]
pub struct ConnectivityPlan {
    image: Option<String>,
    port: u16,
    server_node: Option<String>,
    egress: Option<SocketAddrV4>,
    publish_port: Option<u16>,
    check_timeout: Duration,
    /// The caller's token, for the other node's image import.
    token: Option<String>,
}

impl ConnectivityPlan {
    pub fn new(
        request: &ConnectivityRequest,
        token: Option<String>,
    ) -> Result<Self, ValidationError> {
        let image = match &request.image {
            Some(image) => Some(
                crate::image::normalize_reference(image)
                    .map_err(|e| ValidationError::new("image", e.to_string()))?,
            ),
            None => None,
        };
        let port = match request.port {
            Some(0) => return Err(ValidationError::new("port", "must be 1 to 65535")),
            Some(port) if image.is_none() && port != probe::PROBE_PORT => {
                return Err(ValidationError::new(
                    "port",
                    format!(
                        "the built-in probe serves on {}; pass an image to use another port",
                        probe::PROBE_PORT
                    ),
                ));
            }
            Some(port) => port,
            None => probe::PROBE_PORT,
        };
        let egress = match &request.egress {
            Some(text) => Some(text.parse::<SocketAddrV4>().map_err(|_| {
                ValidationError::new(
                    "egress",
                    format!("{text:?} is not IP:PORT, like 192.0.2.10:443"),
                )
            })?),
            None => None,
        };
        if let Some(published) = request.publish_port
            && (published == 0 || RESERVED_PORTS.contains(&published))
        {
            return Err(ValidationError::new(
                "publish_port",
                format!(
                    "{published} is not a port an app may publish (1 to 65535, not 53, 4789 or 7946)"
                ),
            ));
        }
        let seconds = request.check_timeout_s.unwrap_or(5);
        if !(1..=60).contains(&seconds) {
            return Err(ValidationError::new(
                "check_timeout_s",
                format!("{seconds} is not 1 to 60 seconds"),
            ));
        }
        Ok(Self {
            image,
            port,
            server_node: request.server_node.clone(),
            egress,
            publish_port: request.publish_port,
            check_timeout: Duration::from_secs(seconds),
            token,
        })
    }
}

/// The checks of a run, in order, as they are written into the report.
struct Steps {
    checks: Vec<ConnectivityCheck>,
}

impl Steps {
    fn record(&mut self, name: &str, description: String, started: Instant, outcome: Step) {
        let (result, detail) = match outcome {
            Step::Passed(detail) => (CheckResult::Passed, detail),
            Step::Failed(detail) => (CheckResult::Failed, detail),
            Step::Skipped(detail) => (CheckResult::Skipped, detail),
        };
        self.checks.push(ConnectivityCheck {
            name: name.to_string(),
            description,
            result,
            ms: started.elapsed().as_millis() as u64,
            detail,
        });
    }

    fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.result == CheckResult::Failed)
    }
}

enum Step {
    Passed(String),
    Failed(String),
    Skipped(String),
}

impl From<Result<String, String>> for Step {
    fn from(result: Result<String, String>) -> Self {
        match result {
            Ok(detail) => Self::Passed(detail),
            Err(detail) => Self::Failed(detail),
        }
    }
}

/// Where the probes run once they are ready.
struct Probes {
    client: ProbeView,
    client_netns: PathBuf,
    client_resolver: Option<Ipv4Addr>,
    server: ProbeView,
    server_node: NodeInfo,
    vip: Ipv4Addr,
}

impl Node {
    /// Runs a connectivity test: deploys the probes, checks, removes the probes (also when a
    /// check or the setup fails). Refused while another test runs or probe apps exist.
    pub async fn connectivity(
        self: &Arc<Self>,
        plan: ConnectivityPlan,
    ) -> Result<ConnectivityReport, NodeError> {
        let _running = RUNNING.try_lock().map_err(|_| {
            NodeError::Conflict("a connectivity test is running on this node already".into())
        })?;
        if self.dataplane.is_none() {
            return Err(NodeError::Conflict(format!(
                "{} runs without a data plane: there is no container network to check",
                self.name
            )));
        }
        for app in [CLIENT_APP, SERVER_APP] {
            if self.store.app(app)?.is_some() {
                return Err(NodeError::Conflict(format!(
                    "app {app} exists: a connectivity test runs from another node, or one was \
                     interrupted; remove it with `hivemind app delete --name {app}`"
                )));
            }
        }
        let server_node = self.server_node(plan.server_node.as_deref())?;
        let cross_node = server_node.id != self.id;
        let mut steps = Steps { checks: Vec::new() };
        let probes = self.set_up(&plan, &server_node, &mut steps).await;
        match &probes {
            Some(probes) => self.check(&plan, probes, &mut steps).await,
            None => {
                for (name, description) in check_names(&plan) {
                    steps.record(
                        name,
                        description,
                        Instant::now(),
                        Step::Skipped("the probes did not start".into()),
                    );
                }
            }
        }
        let started = Instant::now();
        let removed = self
            .remove_probes(&server_node, plan.token.as_deref())
            .await;
        steps.record(
            "cleanup",
            "remove the probe apps and wait for their containers to go".into(),
            started,
            removed.into(),
        );
        Ok(ConnectivityReport {
            passed: !steps.failed(),
            cross_node,
            client: probes.as_ref().map(|p| p.client.clone()),
            server: probes.as_ref().map(|p| p.server.clone()),
            vip: probes.as_ref().map(|p| p.vip),
            checks: steps.checks,
        })
    }

    /// The node the server probe runs on: the one asked for, or another live node (the first
    /// by name), or this one in a cluster of one.
    fn server_node(&self, wanted: Option<&str>) -> Result<NodeInfo, NodeError> {
        let live = self.live_ids();
        let mut nodes: Vec<NodeInfo> = self
            .store
            .values::<NodeInfo>(NODES)?
            .into_iter()
            .filter(|n| live.contains(&n.id))
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        match wanted {
            Some(wanted) => nodes
                .into_iter()
                .find(|n| n.name == wanted || n.id == wanted)
                .ok_or_else(|| {
                    NodeError::Invalid(ValidationError::new(
                        "server_node",
                        format!("no live node is named {wanted:?}"),
                    ))
                }),
            None => {
                let this = nodes.iter().position(|n| n.id == self.id);
                let other = nodes.iter().position(|n| n.id != self.id);
                other
                    .or(this)
                    .map(|i| nodes.swap_remove(i))
                    .ok_or_else(|| NodeError::Conflict("this node is not in the node list".into()))
            }
        }
    }

    /// Makes the image present on both nodes, deploys the probes and waits for them; each step
    /// goes into `steps`. `None` when one failed.
    async fn set_up(
        self: &Arc<Self>,
        plan: &ConnectivityPlan,
        server_node: &NodeInfo,
        steps: &mut Steps,
    ) -> Option<Probes> {
        let started = Instant::now();
        let image = match &plan.image {
            Some(image) => {
                steps.record(
                    "probe-image",
                    "the image the probes run".into(),
                    started,
                    Step::Passed(format!("{image} (given)")),
                );
                image.clone()
            }
            None => {
                let built = self.probe_image(server_node, plan.token.as_deref()).await;
                let outcome = match &built {
                    Ok(reference) => Step::Passed(format!(
                        "{reference}, built from this node's busybox, imported on {}{}",
                        self.name,
                        if server_node.id == self.id {
                            String::new()
                        } else {
                            format!(" and {}", server_node.name)
                        }
                    )),
                    Err(e) => Step::Failed(e.clone()),
                };
                steps.record(
                    "probe-image",
                    "build the probe image (busybox httpd) and import it where the probes run"
                        .into(),
                    started,
                    outcome,
                );
                built.ok()?
            }
        };
        let started = Instant::now();
        let deployed = self.deploy_probes(plan, &image, server_node).await;
        let probes = match deployed {
            Ok(()) => self.wait_for_probes(server_node).await,
            Err(e) => Err(e),
        };
        let outcome = match &probes {
            Ok(p) => Step::Passed(format!(
                "{} {} on {}, {} {} on {}, service address {}",
                p.client.app,
                p.client.ip,
                p.client.node,
                p.server.app,
                p.server.ip,
                p.server.node,
                p.vip
            )),
            Err(e) => Step::Failed(e.clone()),
        };
        steps.record(
            "deploy-probes",
            format!(
                "run {CLIENT_APP} on {} and {SERVER_APP} on {}, until both are ready",
                self.name, server_node.name
            ),
            started,
            outcome,
        );
        probes.ok()
    }

    /// Builds the probe image from this node's busybox and imports it here and on the server
    /// probe's node. Its reference.
    async fn probe_image(
        &self,
        server_node: &NodeInfo,
        token: Option<&str>,
    ) -> Result<String, String> {
        let busybox = probe::read_busybox()?;
        let image = tokio::task::spawn_blocking(move || probe::build(&busybox))
            .await
            .map_err(|e| format!("building the probe image: {e}"))?
            .map_err(|e| format!("building the probe image: {e}"))?;
        let dir = self.tmp_dir().map_err(|e| e.to_string())?;
        let path = dir.join(format!("connectivity-probe-{}.tar", std::process::id()));
        tokio::fs::write(&path, &image.archive)
            .await
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        let imported = self
            .execute(Command::ImportImages {
                archive: path.clone(),
            })
            .await;
        let _ = tokio::fs::remove_file(&path).await;
        match imported {
            Ok(Outcome::ImagesImported(_)) => {}
            Ok(_) => return Err("the import gave an unexpected outcome".into()),
            Err(e) => return Err(format!("import on {}: {e}", self.name)),
        }
        if server_node.id != self.id {
            let peers = self.peer_api();
            let mut request = peers
                .client()
                .post(peers.url(&server_node.api, "/api/images/import"))
                .body(image.archive);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let answer = request
                .send()
                .await
                .map_err(|e| format!("import on {}: {e}", server_node.name))?;
            if !answer.status().is_success() {
                let status = answer.status();
                let body = answer.text().await.unwrap_or_default();
                return Err(format!(
                    "import on {}: {status}: {}",
                    server_node.name,
                    body.trim()
                ));
            }
        }
        Ok(image.reference)
    }

    async fn deploy_probes(
        &self,
        plan: &ConnectivityPlan,
        image: &str,
        server_node: &NodeInfo,
    ) -> Result<(), String> {
        let ready = HealthRequest {
            liveness: None,
            // Checked every second, so that the probes are ready about as soon as they serve.
            readiness: Some(CheckRequest {
                probe: ProbeRequest::Tcp { port: plan.port },
                interval_s: 1,
                timeout_s: 1,
                retries: 1,
                start_period_s: 0,
            }),
        };
        let client = DeployRequest {
            image: image.to_string(),
            name: CLIENT_APP.to_string(),
            ports: vec![plan.port],
            node: Some(self.id.clone()),
            health: Some(ready.clone()),
            ..Default::default()
        };
        let server = DeployRequest {
            image: image.to_string(),
            name: SERVER_APP.to_string(),
            ports: vec![plan.port],
            node: Some(server_node.id.clone()),
            health: Some(ready),
            publish: plan
                .publish_port
                .map(|published| PublishedPort {
                    published,
                    target: plan.port,
                })
                .into_iter()
                .collect(),
            ..Default::default()
        };
        for request in [client, server] {
            let command = Command::deploy(&request).map_err(|e| e.to_string())?;
            self.execute(command)
                .await
                .map_err(|e| format!("deploy {}: {e}", request.name))?;
        }
        Ok(())
    }

    /// Waits until both probes are ready (as this node sees them) and the server's service
    /// has an address.
    async fn wait_for_probes(&self, server_node: &NodeInfo) -> Result<Probes, String> {
        let deadline = Instant::now() + READY_WAIT;
        loop {
            let ready = |app: &str| -> Option<EndpointRecord> {
                let endpoints: Vec<EndpointRecord> = self.store.values(ENDPOINTS).ok()?;
                endpoints.into_iter().find(|e| e.app == app && e.ready)
            };
            let client = ready(CLIENT_APP);
            let server = ready(SERVER_APP);
            let vip = self
                .store
                .value::<crate::state::ServiceRecord>(SERVICES, SERVER_APP)
                .ok()
                .flatten()
                .map(|s| s.vip);
            let record = match &client {
                Some(c) => self.store.container(&c.container).ok().flatten(),
                None => None,
            };
            if let (Some(client), Some(server), Some(vip), Some(record)) =
                (client, server, vip, record)
            {
                let resolv = self.container_dir(&record.id).join("resolv.conf");
                return Ok(Probes {
                    client_netns: PathBuf::from(&record.netns),
                    client_resolver: nameserver(&resolv),
                    client: view(&client),
                    server: view(&server),
                    server_node: server_node.clone(),
                    vip,
                });
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not ready within {} s: {}",
                    READY_WAIT.as_secs(),
                    self.probe_status()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Where each probe stands, for a setup that did not finish.
    fn probe_status(&self) -> String {
        let endpoints: Vec<EndpointRecord> = self.store.values(ENDPOINTS).unwrap_or_default();
        [CLIENT_APP, SERVER_APP]
            .iter()
            .map(|app| match endpoints.iter().find(|e| e.app == *app) {
                Some(e) => format!(
                    "{app} {} on {}{}",
                    e.status.as_str(),
                    e.node,
                    e.reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ),
                None => format!("{app} has no container yet"),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn check(self: &Arc<Self>, plan: &ConnectivityPlan, probes: &Probes, steps: &mut Steps) {
        let port = plan.port;
        let wait = plan.check_timeout;
        let server = SocketAddr::from((probes.server.ip, port));
        let vip = SocketAddr::from((probes.vip, port));
        let netns = probes.client_netns.clone();
        let names = check_names(plan);
        let mut record = |name: &str, started: Instant, outcome: Step| {
            let description = names
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, d)| d.clone())
                .unwrap_or_default();
            steps.record(name, description, started, outcome);
        };

        let started = Instant::now();
        let outcome = in_netns(&netns, move || http_check(server, wait)).await;
        record("container-to-container", started, outcome.into());

        let started = Instant::now();
        let outcome = if plan.image.is_none() {
            in_netns(&netns, move || async move {
                retry(wait, |attempt| {
                    http_get(server, "/large", probe::LARGE_BYTES, attempt)
                })
                .await
            })
            .await
            .into()
        } else {
            Step::Skipped("the built-in probe serves the large answer; not with --image".into())
        };
        record("large-answer", started, outcome);

        let started = Instant::now();
        let outcome = in_netns(&netns, move || http_check(vip, wait)).await;
        record("container-to-service", started, outcome.into());

        let started = Instant::now();
        let outcome = match probes.client_resolver {
            Some(resolver) => {
                let name = format!("{SERVER_APP}.{CLUSTER_DOMAIN}.");
                let expected = probes.vip;
                in_netns(&netns, move || dns_check(resolver, name, expected, wait))
                    .await
                    .into()
            }
            None => Step::Failed("the client probe's resolv.conf names no nameserver".into()),
        };
        record("dns", started, outcome);

        let started = Instant::now();
        let outcome = http_check(server, wait).await;
        record("node-to-container", started, outcome.into());

        let started = Instant::now();
        let outcome = http_check(vip, wait).await;
        record("node-to-service", started, outcome.into());

        let started = Instant::now();
        let outcome = match plan.egress {
            Some(target) => in_netns(&netns, move || tcp_check(target.into(), wait))
                .await
                .into(),
            None => Step::Skipped("not configured: pass --egress IP:PORT".into()),
        };
        record("egress", started, outcome);

        let started = Instant::now();
        let outcome = match plan.publish_port {
            Some(published) => {
                let target = SocketAddr::from((probes.server_node.underlay, published));
                http_check(target, wait).await.into()
            }
            None => Step::Skipped("not configured: pass --publish-port PORT".into()),
        };
        record("published-port", started, outcome);
    }

    /// Deletes the probe apps and waits until no container of theirs is left, here and on the
    /// server probe's node.
    async fn remove_probes(
        &self,
        server_node: &NodeInfo,
        token: Option<&str>,
    ) -> Result<String, String> {
        let mut errors = Vec::new();
        for app in [CLIENT_APP, SERVER_APP] {
            match self.store.app(app) {
                Ok(None) => continue,
                Ok(Some(_)) => {}
                Err(e) => {
                    errors.push(format!("{app}: {e}"));
                    continue;
                }
            }
            if let Err(e) = self
                .execute(Command::DeleteApp {
                    name: app.to_string(),
                })
                .await
            {
                errors.push(format!("delete {app}: {e}"));
            }
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let deadline = Instant::now() + GONE_WAIT;
        loop {
            let mut left: Vec<String> = self
                .store
                .containers()
                .unwrap_or_default()
                .iter()
                .filter(|c| is_probe(&c.app))
                .map(|c| format!("{} on {}", c.id, self.name))
                .collect();
            if server_node.id != self.id {
                match self.probe_containers_of(server_node, token).await {
                    Ok(theirs) => left.extend(theirs),
                    Err(e) => left.push(e),
                }
            }
            if left.is_empty() {
                return Ok("both apps and their containers are gone".into());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "still there after {} s: {}",
                    GONE_WAIT.as_secs(),
                    left.join(", ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The probe containers another node runs, as its API lists them.
    async fn probe_containers_of(
        &self,
        node: &NodeInfo,
        token: Option<&str>,
    ) -> Result<Vec<String>, String> {
        let peers = self.peer_api();
        let mut request = peers
            .client()
            .get(peers.url(&node.api, "/api/containers?scope=local"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let unanswered =
            |e: reqwest::Error| format!("{} did not list its containers: {e}", node.name);
        let containers: Vec<ContainerView> = request
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unanswered)?
            .json()
            .await
            .map_err(unanswered)?;
        Ok(containers
            .iter()
            .filter(|c| is_probe(&c.app))
            .map(|c| format!("{} on {}", c.id, node.name))
            .collect())
    }
}

fn is_probe(app: &str) -> bool {
    app == CLIENT_APP || app == SERVER_APP
}

/// The traffic checks and what each does, in the order they run.
fn check_names(plan: &ConnectivityPlan) -> Vec<(&'static str, String)> {
    let port = plan.port;
    vec![
        (
            "container-to-container",
            format!("{CLIENT_APP} -> {SERVER_APP}'s container address, TCP {port}, HTTP GET"),
        ),
        (
            "large-answer",
            format!(
                "{CLIENT_APP} -> {SERVER_APP}'s container address, GET of {} KiB: full-size packets from the server to the client",
                probe::LARGE_BYTES / 1024
            ),
        ),
        (
            "container-to-service",
            format!("{CLIENT_APP} -> {SERVER_APP}'s service address, TCP {port}, HTTP GET"),
        ),
        (
            "dns",
            format!(
                "{CLIENT_APP} asks its resolver for {SERVER_APP}.{CLUSTER_DOMAIN}, expects the service address"
            ),
        ),
        (
            "node-to-container",
            format!("this node -> {SERVER_APP}'s container address, TCP {port}, HTTP GET"),
        ),
        (
            "node-to-service",
            format!("this node -> {SERVER_APP}'s service address, TCP {port}, HTTP GET"),
        ),
        (
            "egress",
            match plan.egress {
                Some(target) => {
                    format!("{CLIENT_APP} -> {target} outside the cluster, TCP connect")
                }
                None => format!("{CLIENT_APP} -> an address outside the cluster"),
            },
        ),
        (
            "published-port",
            match plan.publish_port {
                Some(published) => format!(
                    "this node -> {SERVER_APP}'s node address, published TCP {published}, HTTP GET"
                ),
                None => format!("this node -> {SERVER_APP} on a published port"),
            },
        ),
    ]
}

fn view(endpoint: &EndpointRecord) -> ProbeView {
    ProbeView {
        app: endpoint.app.clone(),
        node: endpoint.node.clone(),
        container: endpoint.container.clone(),
        ip: endpoint.ip,
    }
}

/// The first `nameserver` of a resolv.conf file.
fn nameserver(path: &std::path::Path) -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}

/// Runs `check` inside the network namespace at `path` (on a thread of its own, off the
/// runtime's workers). A namespace that cannot be entered fails the check.
async fn in_netns<F, Fut>(path: &std::path::Path, check: F) -> Result<String, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let path = path.to_path_buf();
    let shown = path.display().to_string();
    let ran = tokio::task::spawn_blocking(move || {
        crate::network::run_in_netns(&path, move || async move { Ok(check().await) })
    })
    .await;
    match ran {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => Err(format!("entering {shown}: {e}")),
        Err(e) => Err(format!("entering {shown}: {e}")),
    }
}

/// Tries `attempt` until it succeeds or `wait` has passed; the last failure otherwise.
async fn retry<F, Fut>(wait: Duration, mut attempt: F) -> Result<String, String>
where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let deadline = Instant::now() + wait;
    let mut tries = 0;
    loop {
        tries += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let failure = match attempt(left.min(ATTEMPT).max(Duration::from_millis(100))).await {
            Ok(detail) if tries == 1 => return Ok(detail),
            Ok(detail) => return Ok(format!("{detail} (after {} failed tries)", tries - 1)),
            Err(failure) => failure,
        };
        if Instant::now() + Duration::from_millis(200) >= deadline {
            return Err(format!("{failure} ({tries} tries in {} s)", wait.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn connect(target: SocketAddr, wait: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(wait, TcpStream::connect(target)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("connect {target}: {e}")),
        Err(_) => Err(format!(
            "connect {target}: no answer within {} ms (the SYN or its answer was dropped)",
            wait.as_millis()
        )),
    }
}

/// Connects and sends `GET /`; passes on any HTTP answer, with its status line.
async fn http_check(target: SocketAddr, wait: Duration) -> Result<String, String> {
    retry(wait, |attempt| http_get(target, "/", 0, attempt)).await
}

/// `GET path` from `target`; passes on an HTTP answer whose body has at least `least` bytes,
/// read within `attempt`.
async fn http_get(
    target: SocketAddr,
    path: &str,
    least: usize,
    attempt: Duration,
) -> Result<String, String> {
    let started = Instant::now();
    let mut stream = connect(target, attempt).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {target}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send to {target}: {e}"))?;
    let mut answer = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let complete = |answer: &[u8]| {
        body_start(answer).is_some_and(|start| answer.len() - start >= least.max(1))
    };
    while !complete(&answer) {
        let left = attempt.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(read)) => answer.extend_from_slice(&chunk[..read]),
            Ok(Err(e)) => return Err(format!("read from {target}: {e}")),
            Err(_) if answer.is_empty() => {
                return Err(format!("{target} accepted but did not answer"));
            }
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&answer[..answer.len().min(256)]);
    let status = text.lines().next().unwrap_or("").trim().to_string();
    if !status.starts_with("HTTP/") {
        return Err(format!("{target} answered {status:?}, not HTTP"));
    }
    let body = body_start(&answer).map_or(0, |start| answer.len() - start);
    if body < least {
        return Err(format!(
            "{target}{path}: {body} of {least} bytes within {} ms (small packets pass, full-size ones do not arrive?)",
            attempt.as_millis()
        ));
    }
    if least > 0 {
        return Ok(format!(
            "{target}{path}: {status}, {body} bytes in {} ms",
            started.elapsed().as_millis()
        ));
    }
    Ok(format!("{target}: {status}"))
}

/// Where an HTTP answer's body begins.
fn body_start(answer: &[u8]) -> Option<usize> {
    answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|end| end + 4)
}

/// Passes when a TCP connection opens.
async fn tcp_check(target: SocketAddr, wait: Duration) -> Result<String, String> {
    retry(wait, |attempt| async move {
        connect(target, attempt).await?;
        Ok(format!("{target}: connected"))
    })
    .await
}

/// Asks `resolver` for the A records of `name`; passes when `expected` is among them.
async fn dns_check(
    resolver: Ipv4Addr,
    name: String,
    expected: Ipv4Addr,
    wait: Duration,
) -> Result<String, String> {
    let server = SocketAddr::from((resolver, 53));
    retry(wait, |attempt| {
        let name = name.clone();
        async move {
            let fqdn = Name::from_ascii(&name).map_err(|e| format!("{name}: {e}"))?;
            let mut message = Message::new(rand::random(), MessageType::Query, OpCode::Query);
            message.metadata.recursion_desired = true;
            message.add_query(Query::query(fqdn, RecordType::A));
            let bytes = message.to_vec().map_err(|e| format!("the query: {e}"))?;
            let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
                .await
                .map_err(|e| format!("a UDP socket: {e}"))?;
            socket
                .send_to(&bytes, server)
                .await
                .map_err(|e| format!("send to {server}: {e}"))?;
            let mut buf = vec![0u8; 4096];
            let (len, _) = tokio::time::timeout(attempt, socket.recv_from(&mut buf))
                .await
                .map_err(|_| format!("{server} did not answer within {} ms", attempt.as_millis()))?
                .map_err(|e| format!("read from {server}: {e}"))?;
            let reply =
                Message::from_vec(&buf[..len]).map_err(|e| format!("{server}'s answer: {e}"))?;
            let found: Vec<Ipv4Addr> = reply
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect();
            if found.contains(&expected) {
                Ok(format!("{server}: {name} is {expected}"))
            } else if found.is_empty() {
                Err(format!(
                    "{server}: {name} has no address ({})",
                    reply.metadata.response_code
                ))
            } else {
                Err(format!("{server}: {name} is {found:?}, not {expected}"))
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> Result<ConnectivityPlan, ValidationError> {
        let request: ConnectivityRequest = serde_json::from_value(json).expect("a request");
        ConnectivityPlan::new(&request, None)
    }

    #[test]
    fn a_bad_request_names_its_field() {
        let field = |json| request(json).expect_err("refused").field;
        assert_eq!(field(serde_json::json!({"egress": "10.0.0.1"})), "egress");
        assert_eq!(
            field(serde_json::json!({"publish_port": 4789})),
            "publish_port"
        );
        assert_eq!(
            field(serde_json::json!({"check_timeout_s": 0})),
            "check_timeout_s"
        );
        assert_eq!(field(serde_json::json!({"port": 8080})), "port");
        assert_eq!(field(serde_json::json!({"image": "Not A Ref"})), "image");
        let plan = request(
            serde_json::json!({"image": "busybox", "port": 8080, "egress": "192.0.2.1:443"}),
        )
        .expect("accepted");
        assert_eq!(plan.port, 8080);
        assert_eq!(
            plan.egress,
            Some("192.0.2.1:443".parse().expect("an address"))
        );
    }

    #[test]
    fn the_nameserver_of_a_resolv_conf() {
        let dir = std::env::temp_dir().join(format!("hm-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a dir");
        let path = dir.join("resolv.conf");
        std::fs::write(
            &path,
            "search hivemind.local\nnameserver 10.244.1.1\nnameserver 9.9.9.9\n",
        )
        .expect("written");
        assert_eq!(nameserver(&path), Some(Ipv4Addr::new(10, 244, 1, 1)));
        std::fs::remove_dir_all(&dir).expect("removed");
    }
}
