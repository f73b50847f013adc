//! The client commands: each turns flags into one REST call (deploy first
//! pulls with visible progress) and prints the answer.

use std::io::Write;

use futures::StreamExt;

use super::client::Trust;
use super::output::{
    cell, cell_of, human_bytes, joined, or_dash, print_list, print_message, print_object,
    print_table,
};
use super::{
    AclCommand, AclPolicyCommand, AppCommand, Cli, Client, ClientError, ClusterCommand,
    DebugCommand, DeployArgs, FlowFilter, FlowsCommand, GossipKeyCommand, ImageCommand,
    JoinTokenCommand, NodeCommand, ObservabilityCommand, OutputFormat, RolloutCommand,
    ScanPolicyCommand, SecretValueArgs, SecurityCommand, StrategyArgs, TlsCommand, TokenCommand,
    TopCommand, TrustCommand, VolumeCommand, VulnDbCommand,
};
use crate::contract::{
    AclPolicy, AddTlsCert, AddTrustedKey, AmountValue, AppView, AuditEntry, CertificateView,
    CheckResult, ConnectivityReport, ConnectivityRequest, ContainerDetail, ContainerView,
    CreateJoinToken, CreateSecret, CreateToken, CreateVolume, DashboardHistory, DebugAnswer,
    DeployAnswer, DeployRequest, FlowView, GossipKeys, HealthAnswer, HealthReport, HealthStatus,
    ImportAnswer, JoinRequest, JoinTokenCreated, JoinTokenView, KeyRotated, LogShipping,
    MemoryValue, Message, MetricsListener, NetworkPolicy, NodeView, PolicyAnswer, PolicyTrace,
    PromoteRequest, PullEvent, PullRequest, RecentFlows, ResourcesRequest, RestartAnswer,
    RestartRequest, RevisionView, Role, RolloutStatus, ScaleRequest, ScanReport, ScanRequest,
    SecretAnswer, SecretInput, SecretView, ServiceView, StrategyRequest, TlsCertAnswer,
    TlsCertView, TokenCreated, TokenView, TracingExport, TrustedKeyAnswer, TrustedKeyView,
    UndoRequest, VolumeCreated, VolumeMountRequest, VolumeView, VulnDbStatus, WhoAmI,
};
use crate::model::{ValidationError, parse_key_value, parse_secret, parse_volume};

fn usage(e: ValidationError) -> ClientError {
    ClientError::Usage(format!("--{e}"))
}

/// Builds the deploy body from flags, checking them before any request.
/// A scan policy from its flags.
fn scan_policy(
    mode: crate::vuln::ScanMode,
    max_severity: Option<&str>,
    only_fixed: bool,
) -> Result<crate::vuln::ScanPolicy, ClientError> {
    let mut policy = crate::vuln::ScanPolicy {
        mode,
        only_fixed,
        ..Default::default()
    };
    if let Some(text) = max_severity {
        policy.max_severity = crate::vuln::Severity::parse(text)
            .filter(|s| *s >= crate::vuln::Severity::Low)
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "--max-severity {text}: must be low, medium, high or critical"
                ))
            })?;
    }
    Ok(policy)
}

pub fn deploy_request(args: &DeployArgs) -> Result<DeployRequest, ClientError> {
    let mut env = std::collections::BTreeMap::new();
    for pair in &args.env {
        let (key, value) = parse_key_value("env", pair).map_err(usage)?;
        env.insert(key, value);
    }
    let mut labels = std::collections::BTreeMap::new();
    for pair in &args.labels {
        let (key, value) = parse_key_value("label", pair).map_err(usage)?;
        labels.insert(key, value);
    }
    let volumes = args
        .volumes
        .iter()
        .map(|v| {
            parse_volume(v).map(|m| VolumeMountRequest {
                name: m.name,
                mount_path: m.mount_path,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(usage)?;
    let secrets = args
        .secrets
        .iter()
        .map(|s| parse_secret(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(usage)?;
    let mut secret_env = std::collections::BTreeMap::new();
    for pair in &args.secret_env {
        let (variable, secret) = parse_key_value("secret-env", pair).map_err(usage)?;
        secret_env.insert(variable, secret);
    }
    let resources = (args.cpu.is_some() || args.memory.is_some()).then(|| ResourcesRequest {
        cpu: args.cpu,
        memory: args.memory.clone().map(MemoryValue::Text),
    });
    let request = DeployRequest {
        // An A/B test may leave the image out: its first variant's is the app's.
        image: args
            .image
            .clone()
            .or_else(|| args.strategy.variants.first().map(|v| v.image.clone()))
            .unwrap_or_default(),
        name: args.name.clone(),
        service: args.service.clone(),
        replicas: args.replicas,
        resources,
        volumes,
        env,
        ports: args.ports.clone(),
        labels,
        node: args.node.clone(),
        health: health_spec(args)?.map(Into::into),
        placement: args.placement.clone(),
        constraints: args
            .constraints
            .iter()
            .map(|pair| parse_key_value("constraint", pair))
            .collect::<Result<_, _>>()
            .map_err(usage)?,
        secrets,
        secret_env,
        publish: args.publish.clone(),
        publish_mode: args.publish_mode.clone(),
        strategy: strategy_request(&args.strategy),
        scan_policy: args
            .scan_policy
            .map(|mode| scan_policy(mode, args.max_severity.as_deref(), args.only_fixed))
            .transpose()?,
        require_signature: args.require_signature,
    };
    request.validate().map_err(usage)?;
    Ok(request)
}

/// The strategy flags as the API takes them; none given: the server's default.
pub(super) fn strategy_request(args: &StrategyArgs) -> Option<StrategyRequest> {
    let amount = |a: &Option<String>| a.clone().map(AmountValue::Text);
    let any = args.strategy.is_some()
        || args.max_unavailable.is_some()
        || args.max_surge.is_some()
        || args.min_ready_time.is_some()
        || args.progress_deadline.is_some()
        || args.auto_rollback
        || args.percentage.is_some()
        || !args.steps.is_empty()
        || args.interval.is_some()
        || args.verification_timeout.is_some()
        || args.scale_down_delay.is_some()
        || args.manual_promotion
        || !args.variants.is_empty()
        || args.duration.is_some();
    any.then(|| StrategyRequest {
        name: args
            .strategy
            .clone()
            .unwrap_or_else(|| "simple".to_string()),
        max_unavailable: amount(&args.max_unavailable),
        max_surge: amount(&args.max_surge),
        min_ready_time: args.min_ready_time,
        progress_deadline: args.progress_deadline,
        auto_rollback: args.auto_rollback.then_some(true),
        percentage: args.percentage,
        steps: args.steps.clone(),
        interval: args.interval,
        verification_timeout: args.verification_timeout,
        scale_down_delay: args.scale_down_delay,
        manual_promotion: args.manual_promotion.then_some(true),
        variants: args.variants.clone(),
        duration: args.duration,
    })
}

fn health_spec(args: &DeployArgs) -> Result<Option<crate::health::HealthSpec>, ClientError> {
    use crate::health::{HealthInput, HealthSpec, check_spec};
    let h = &args.health;
    let port = args
        .ports
        .first()
        .copied()
        .unwrap_or(crate::health::DEFAULT_HTTP_PORT);
    let liveness = HealthInput {
        cmd: h.health_cmd.as_deref(),
        http: h.health_http.as_deref(),
        tcp: h.health_tcp,
        interval: h.health_interval.as_deref(),
        timeout: h.health_timeout.as_deref(),
        retries: h.health_retries,
        start_period: h.health_start_period.as_deref(),
    };
    let readiness = HealthInput {
        cmd: h.ready_cmd.as_deref(),
        http: h.ready_http.as_deref(),
        tcp: h.ready_tcp,
        interval: h.ready_interval.as_deref(),
        timeout: h.ready_timeout.as_deref(),
        retries: h.ready_retries,
        start_period: h.ready_start_period.as_deref(),
    };
    let spec = HealthSpec {
        liveness: check_spec("health", &liveness, port)
            .map_err(|e| ClientError::Usage(e.to_string()))?,
        readiness: check_spec("ready", &readiness, port)
            .map_err(|e| ClientError::Usage(e.to_string()))?,
    };
    Ok((!spec.is_empty()).then_some(spec))
}

pub async fn run_client_command(cli: &Cli) -> Result<(), ClientError> {
    let (server, token, trust) = super::config::resolve(
        cli.server.as_deref(),
        cli.token.as_deref(),
        cli.ca_cert.as_deref(),
    )?;
    if let TopCommand::Login { context, ca_sha256 } = &cli.command {
        return login(cli, context.as_deref(), ca_sha256.as_deref(), trust).await;
    }
    let client = Client::new(&server, token.clone(), &trust)?;
    let format = cli.output;
    let scanning = matches!(
        &cli.command,
        TopCommand::Security(SecurityCommand::ScanImage { .. })
    );
    if format == OutputFormat::Sarif && !scanning {
        return Err(ClientError::Usage(
            "--output sarif is for `security scan-image`; use table or json".to_string(),
        ));
    }
    match &cli.command {
        TopCommand::Daemon(_) | TopCommand::Web(_) | TopCommand::LogDriver { .. } => Err(
            ClientError::Other("daemon and web are not client commands".into()),
        ),
        TopCommand::App(command) => app(&client, format, command).await,
        TopCommand::Volume(command) => volume(&client, format, command).await,
        TopCommand::Image(command) => image(&client, format, command).await,
        TopCommand::Node(NodeCommand::Ls) => {
            let nodes: Vec<NodeView> = client.get("/api/nodes").await?;
            print_list(
                format,
                &nodes,
                &[
                    ("NAME", |n| or_dash(n.name.as_ref())),
                    ("ID", |n| n.id.clone()),
                    ("STATE", |n| n.state.clone()),
                    ("ADDRESS", |n| or_dash(n.address.as_ref())),
                    ("SUBNET", |n| or_dash(n.subnet.as_ref())),
                    ("CONTAINERS", |n| n.containers.to_string()),
                    ("RESOURCES", |n| cell_of(&n.resources)),
                ],
            );
            Ok(())
        }
        TopCommand::Node(NodeCommand::Join { address }) => {
            let body = JoinRequest {
                address: address.to_string(),
            };
            let answer: Message = client.post("/api/nodes/join", &body).await?;
            print_message(format, &answer);
            Ok(())
        }
        TopCommand::Security(command) => security(&client, format, command).await,
        TopCommand::Cicd(command) => super::cicd::cicd(&client, format, command).await,
        TopCommand::Cloud(command) => super::cloud::cloud(&client, format, command).await,
        TopCommand::Helm(command) => super::helm::helm(&client, format, command).await,
        TopCommand::Observability(ObservabilityCommand::OpenDashboard) => {
            // The node must answer before a browser is sent there.
            let _: HealthAnswer = client.get("/api/health").await?;
            let url = format!("{}/", server.trim_end_matches('/'));
            let opened = std::env::var_os("DISPLAY").is_some()
                && std::process::Command::new("xdg-open")
                    .arg(&url)
                    .status()
                    .is_ok_and(|s| s.success());
            if opened {
                eprintln!("opened {url}; sign in with a token");
            }
            println!("{url}");
            Ok(())
        }
        TopCommand::Observability(ObservabilityCommand::ConfigureTracing {
            service_name,
            endpoint,
            disable,
        }) => {
            let body = TracingExport {
                service_name: service_name.clone(),
                endpoint: endpoint.clone().unwrap_or_default(),
            };
            configure_setting(
                &client,
                format,
                "tracing",
                (!*disable).then_some(body),
                |set| {
                    format!(
                        "Every node exports its spans as {} to {} within seconds",
                        set.service_name,
                        crate::telemetry::traces_url(&set.endpoint)
                    )
                },
            )
            .await
        }
        TopCommand::Observability(ObservabilityCommand::ConfigureDashboard {
            prometheus,
            disable,
        }) => {
            let body = DashboardHistory {
                prometheus: prometheus.clone().unwrap_or_default(),
            };
            configure_setting(
                &client,
                format,
                "dashboard",
                (!*disable).then_some(body),
                |set| {
                    format!(
                        "The dashboard reads traffic history from the Prometheus at {}",
                        set.prometheus
                    )
                },
            )
            .await
        }
        TopCommand::Observability(ObservabilityCommand::ConfigureLogging {
            endpoint,
            index,
            disable,
        }) => {
            let body = LogShipping {
                endpoint: endpoint.clone().unwrap_or_default(),
                index: index.clone(),
            };
            configure_setting(
                &client,
                format,
                "logging",
                (!*disable).then_some(body),
                |set| {
                    format!(
                        "Every node ships its log lines to {}/_bulk, index {}, within seconds",
                        set.endpoint.trim_end_matches('/'),
                        set.index
                    )
                },
            )
            .await
        }
        TopCommand::Observability(ObservabilityCommand::ConfigureMetrics {
            port,
            path,
            disable,
        }) => {
            let body = MetricsListener {
                port: port.unwrap_or_default(),
                path: path.clone(),
            };
            configure_setting(&client, format, "metrics", (!*disable).then_some(body), |set| {
                format!(
                    "Every node serves its metrics on port {} at {} (plain HTTP) within seconds",
                    set.port, set.path
                )
            })
            .await
        }
        TopCommand::Flows(FlowsCommand::Observe(filter)) => {
            flows_observe(&client, format, filter).await
        }
        TopCommand::Debug(command) => debug(&client, format, command).await,
        TopCommand::Acl(command) => acl(&client, format, command).await,
        TopCommand::Login { .. } => Err(ClientError::Other("login is handled above".into())),
        TopCommand::Cluster(ClusterCommand::GossipKey(GossipKeyCommand::Ls)) => {
            let keys: GossipKeys = client.get("/api/cluster/gossip-key").await?;
            if format == OutputFormat::Json {
                print_object(format, &keys);
            } else {
                for (i, key) in keys.keys.iter().enumerate() {
                    println!("{key}{}", if i == 0 { "  (primary)" } else { "" });
                }
            }
            Ok(())
        }
        TopCommand::Cluster(ClusterCommand::GossipKey(GossipKeyCommand::Rotate)) => {
            let answer: KeyRotated = client.post("/api/cluster/gossip-key/rotate", &()).await?;
            print_message(format, &answer);
            if answer.success {
                Ok(())
            } else {
                Err(ClientError::Other(
                    "some members still use the old key".to_string(),
                ))
            }
        }
        TopCommand::Cluster(ClusterCommand::JoinToken(command)) => {
            match command {
                JoinTokenCommand::Create { ttl } => {
                    let body = CreateJoinToken {
                        ttl: Some(ttl.clone()),
                    };
                    let created: JoinTokenCreated =
                        client.post("/api/cluster/join-tokens", &body).await?;
                    if format == OutputFormat::Json {
                        print_object(format, &created);
                    } else {
                        println!("{}", created.token);
                        eprintln!(
                            "Join token {} (expires at {}; shown only now). On the new node:\n  {}",
                            created.id, created.expires_at, created.join_command
                        );
                    }
                }
                JoinTokenCommand::Ls => {
                    let tokens: Vec<JoinTokenView> = client.get("/api/cluster/join-tokens").await?;
                    print_list(
                        format,
                        &tokens,
                        &[
                            ("ID", |t| t.id.clone()),
                            ("CREATED", |t| t.created_at.to_string()),
                            ("EXPIRES", |t| t.expires_at.to_string()),
                            ("EXPIRED", |t| t.expired.to_string()),
                        ],
                    );
                }
                JoinTokenCommand::Revoke { id } => {
                    let path = format!("/api/cluster/join-tokens/{}", path_segment(id)?);
                    let answer: Message = client.delete(&path).await?;
                    print_message(format, &answer);
                }
            }
            Ok(())
        }
        TopCommand::Cluster(ClusterCommand::Certificate) => {
            let cert: CertificateView = client.get("/api/cluster/certificate").await?;
            if format == OutputFormat::Json {
                print_object(format, &cert);
            } else {
                println!("CA sha256: {}", cert.ca_sha256);
                println!("expires:   {}", cert.not_after);
                print!("{}", cert.cert);
            }
            Ok(())
        }
        TopCommand::Health => {
            let health: HealthAnswer = client.get("/api/health").await?;
            match (&health, format) {
                (_, OutputFormat::Json) => print_object(format, &health),
                (HealthAnswer::Full(report), _) => print_health(report),
                (HealthAnswer::Brief(brief), _) => println!(
                    "node {} (give a token for the cluster's health: --token or HIVEMIND_TOKEN)",
                    brief.status
                ),
            }
            Ok(())
        }
        // Printed by main: the document is the server's, not a client's.
        TopCommand::Openapi => Ok(()),
    }
}

fn print_health(health: &HealthReport) {
    let status = match health.status {
        HealthStatus::Healthy => "healthy",
        HealthStatus::Degraded => "degraded",
    };
    println!("status: {status}");
    println!("nodes: {}/{} alive", health.nodes.alive, health.nodes.total);
    println!(
        "runtime: {} ({})",
        health.runtime.name,
        if health.runtime.ok { "ok" } else { "failing" }
    );
    println!(
        "network: bridge {} subnet {} mtu {} eBPF data plane {}",
        health.network.bridge,
        health.network.subnet,
        health.network.mtu,
        if health.network.dataplane {
            "loaded"
        } else {
            "off"
        }
    );
    println!(
        "services: {}/{} with ready endpoints",
        health.services.healthy, health.services.total
    );
    println!(
        "apps: {}/{} healthy",
        health.apps.healthy, health.apps.total
    );
    println!(
        "containers: {}/{} running",
        health.containers.running, health.containers.total
    );
    for problem in &health.problems {
        println!("problem: {problem}");
    }
}

async fn app(
    client: &Client,
    format: OutputFormat,
    command: &AppCommand,
) -> Result<(), ClientError> {
    match command {
        AppCommand::Deploy(args) => {
            let request = deploy_request(args)?;
            pull(client, format, &request.image, false).await?;
            for variant in request.strategy.iter().flat_map(|s| &s.variants) {
                if variant.image != request.image {
                    pull(client, format, &variant.image, false).await?;
                }
            }
            let answer: DeployAnswer = client.post("/api/deploy", &request).await?;
            print_message(format, &answer);
        }
        AppCommand::Ls => {
            let apps: Vec<AppView> = client.get("/api/apps").await?;
            print_list(
                format,
                &apps,
                &[
                    ("NAME", |a| a.name.clone()),
                    ("IMAGE", |a| a.image.clone()),
                    ("REPLICAS", |a| a.replicas.to_string()),
                    ("RUNNING", |a| a.running.to_string()),
                    ("STATUS", |a| a.status.as_str().to_string()),
                    ("SERVICE", |a| or_dash(a.service.as_ref())),
                    ("SCAN", |a| or_dash(a.scan.as_ref().map(scan_cell).as_ref())),
                ],
            );
        }
        AppCommand::Containers => {
            let containers: Vec<ContainerView> = client.get("/api/containers").await?;
            print_list(
                format,
                &containers,
                &[
                    ("ID", |c| c.id.clone()),
                    ("APP", |c| c.app.clone()),
                    ("NODE", |c| c.node.clone()),
                    ("STATUS", |c| c.status.clone()),
                    ("IP", |c| c.ip.clone()),
                    ("IMAGE", |c| c.image.clone()),
                    ("RESTARTS", |c| c.restarts.to_string()),
                    ("RESOURCES", |c| cell_of(&c.resources)),
                ],
            );
        }
        AppCommand::ContainerInfo { container_id } => {
            let info: ContainerDetail = client
                .get(&format!("/api/containers/{}", path_segment(container_id)?))
                .await?;
            print_object(format, &info);
        }
        AppCommand::Rollout(RolloutCommand::Status { name, wait }) => {
            let path = format!("/api/apps/{}/rollout", path_segment(name)?);
            let deadline =
                std::time::Instant::now() + std::time::Duration::from_secs(wait.unwrap_or(0));
            // A failed or rolled-back rollout will not complete by itself.
            let stuck = |s: &RolloutStatus| {
                matches!(s.phase.as_deref(), Some("failed") | Some("rolled-back"))
            };
            let status = loop {
                let status: RolloutStatus = client.get(&path).await?;
                if status.complete || stuck(&status) || std::time::Instant::now() >= deadline {
                    break status;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            };
            if format == OutputFormat::Json {
                print_object(format, &status);
            } else {
                println!(
                    "{}: generation {}{}, {}/{} updated and ready, {} updated, {} old",
                    status.app,
                    status.generation,
                    status
                        .revision
                        .map(|r| format!(" (revision {r})"))
                        .unwrap_or_default(),
                    status.ready,
                    status.replicas,
                    status.updated,
                    status.old
                );
                if let (Some(new), Some(old)) = (status.allowed_new, status.allowed_old) {
                    println!(
                        "  {}: up to {new} new and {old} old replicas now",
                        status.strategy
                    );
                }
                if let Some(percent) = status.traffic_percent {
                    let step = match (status.step, status.steps) {
                        (Some(step), Some(steps)) => format!("step {step} of {steps}, "),
                        _ => String::new(),
                    };
                    println!("  {step}the new version takes {percent}% of the connections");
                }
                if let Some(ingress) = &status.ingress {
                    let side = |s: &crate::contract::HttpSide| match s.mean_latency_ms {
                        Some(ms) => {
                            format!("{} of {} failed, {ms} ms on average", s.failed, s.requests)
                        }
                        None => "no request".to_string(),
                    };
                    println!(
                        "  through the HTTP ingress this step: canary {}; stable {}",
                        side(&ingress.canary),
                        side(&ingress.stable)
                    );
                }
                for v in &status.variants {
                    let traffic = match (v.packets_in, v.bytes_in) {
                        (Some(packets), Some(bytes)) => format!("{packets} packets ({bytes} B) in"),
                        _ => "traffic unknown (a node did not answer)".to_string(),
                    };
                    println!(
                        "  variant {}: {}% of the clients, {}/{} ready, {} restarts, {} resets sent, {traffic}; {}",
                        v.name, v.percentage, v.ready, v.replicas, v.restarts, v.resets, v.image
                    );
                }
                match (status.test_ends_at, status.test_over) {
                    (Some(_), true) => println!(
                        "  the test's duration is over: keep one variant with `app rollout promote --name {} --variant NAME`",
                        status.app
                    ),
                    (Some(end), false) => {
                        println!("  the test runs until {end} (seconds since the epoch)")
                    }
                    _ => {}
                }
                for w in &status.waiting {
                    println!(
                        "  waiting: {} on {} (generation {}): {}",
                        w.container, w.node, w.generation, w.reason
                    );
                }
                let phase = match status.phase.as_deref() {
                    Some("complete") | None if status.complete => "complete",
                    Some(phase) => phase,
                    None => "in progress",
                };
                match &status.message {
                    Some(message) => println!("{phase}: {message}"),
                    None => println!("{phase}"),
                }
            }
            if wait.is_some() && stuck(&status) {
                return Err(ClientError::Other(format!(
                    "the rollout of {name} is {}: {}",
                    status.phase.as_deref().unwrap_or("stuck"),
                    status.message.as_deref().unwrap_or("see its status")
                )));
            }
            if !status.complete && wait.is_some() {
                return Err(ClientError::Other(format!(
                    "the rollout of {name} did not complete within {} s",
                    wait.unwrap_or(0)
                )));
            }
        }
        AppCommand::Rollout(RolloutCommand::History { name }) => {
            let revisions: Vec<RevisionView> = client
                .get(&format!(
                    "/api/apps/{}/rollout/history",
                    path_segment(name)?
                ))
                .await?;
            print_list(
                format,
                &revisions,
                &[
                    ("REVISION", |r| {
                        if r.current {
                            format!("{} (current)", r.revision)
                        } else {
                            r.revision.to_string()
                        }
                    }),
                    ("IMAGE", |r| r.image.clone()),
                    ("CREATED", |r| r.created_at.to_string()),
                    ("CHANGES", |r| match r.from_revision {
                        Some(from) => format!("undo to {from}"),
                        None if r.changes.is_empty() => "-".to_string(),
                        None => r.changes.join(","),
                    }),
                ],
            );
        }
        AppCommand::Rollout(
            RolloutCommand::Pause { name }
            | RolloutCommand::Resume { name }
            | RolloutCommand::Abort { name }
            | RolloutCommand::Promote { name, .. },
        ) => {
            let variant = match command {
                AppCommand::Rollout(RolloutCommand::Promote { variant, .. }) => variant.clone(),
                _ => None,
            };
            let action = match command {
                AppCommand::Rollout(RolloutCommand::Pause { .. }) => "pause",
                AppCommand::Rollout(RolloutCommand::Resume { .. }) => "resume",
                AppCommand::Rollout(RolloutCommand::Promote { .. }) => "promote",
                _ => "abort",
            };
            let answer: Message = client
                .post(
                    &format!("/api/apps/{}/rollout/{action}", path_segment(name)?),
                    &PromoteRequest { variant },
                )
                .await?;
            print_message(format, &answer);
        }
        AppCommand::Rollout(RolloutCommand::Undo { name, to_revision }) => {
            let body = UndoRequest {
                to_revision: *to_revision,
            };
            let answer: DeployAnswer = client
                .post(
                    &format!("/api/apps/{}/rollout/undo", path_segment(name)?),
                    &body,
                )
                .await?;
            print_message(format, &answer);
        }
        AppCommand::Restart { name } => {
            let body = RestartRequest { name: name.clone() };
            let answer: RestartAnswer = client.post("/api/restart", &body).await?;
            print_message(format, &answer);
        }
        AppCommand::Scale { name, replicas } => {
            let body = ScaleRequest {
                name: name.clone(),
                replicas: *replicas,
            };
            let answer: Message = client.post("/api/scale", &body).await?;
            print_message(format, &answer);
        }
        AppCommand::Logs {
            name,
            follow,
            tail,
            since,
            timestamps,
        } => {
            let mut path = format!(
                "/api/apps/{}/logs?follow={follow}&timestamps={timestamps}",
                path_segment(name)?
            );
            if let Some(tail) = tail {
                path.push_str(&format!("&tail={tail}"));
            }
            if let Some(since) = since {
                path.push_str(&format!("&since={}", crate::logfile::percent_encode(since)));
            }
            let response = client.get_text(&path).await?;
            let mut body = response.bytes_stream();
            let mut stdout = std::io::stdout();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| ClientError::Other(format!("log stream: {e}")))?;
                if stdout
                    .write_all(&chunk)
                    .and_then(|_| stdout.flush())
                    .is_err()
                {
                    break;
                }
            }
        }
        AppCommand::Services => {
            let services: Vec<ServiceView> = client.get("/api/services").await?;
            print_list(
                format,
                &services,
                &[
                    ("NAME", |s| s.name.clone()),
                    ("VIP", |s| s.vip.clone()),
                    ("DNS", |s| joined(&s.dns_names)),
                    ("PORTS", |s| joined(&s.ports)),
                    ("READY", |s| s.ready_endpoints.to_string()),
                    ("ENDPOINTS", |s| s.endpoints.to_string()),
                ],
            );
        }
        AppCommand::Delete { name } => {
            let answer: Message = client
                .delete(&format!("/api/apps/{}", path_segment(name)?))
                .await?;
            print_message(format, &answer);
        }
    }
    Ok(())
}

async fn acl(
    client: &Client,
    format: OutputFormat,
    command: &AclCommand,
) -> Result<(), ClientError> {
    match command {
        AclCommand::Token(TokenCommand::Create {
            name,
            role,
            policy,
            expires,
        }) => {
            let role = role
                .as_deref()
                .map(str::parse::<Role>)
                .transpose()
                .map_err(|e| ClientError::Usage(format!("--role: {e}")))?;
            let body = CreateToken {
                name: name.clone(),
                role,
                policy: policy.clone(),
                expires: expires.clone(),
            };
            let answer: TokenCreated = client.post("/api/acl/tokens", &body).await?;
            if format == OutputFormat::Json {
                print_object(format, &answer);
            } else {
                println!("{}", answer.token);
                eprintln!("token {} created; {}", answer.name, answer.message);
            }
        }
        AclCommand::Token(TokenCommand::Ls) => {
            let tokens: Vec<TokenView> = client.get("/api/acl/tokens").await?;
            print_list(
                format,
                &tokens,
                &[
                    ("NAME", |t| t.name.clone()),
                    ("ID", |t| t.id.clone()),
                    ("ROLE", |t| or_dash(t.role.map(|r| cell_of(&r)))),
                    ("POLICY", |t| or_dash(t.policy.clone())),
                    ("EXPIRES", |t| or_dash(t.expires_at)),
                ],
            );
        }
        AclCommand::Token(TokenCommand::Revoke { name }) => {
            let path = format!("/api/acl/tokens/{}", path_segment(name)?);
            let answer: Message = client.delete(&path).await?;
            print_message(format, &answer);
        }
        AclCommand::Policy(AclPolicyCommand::Create { file }) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", file.display())))?;
            let body: AclPolicy = serde_yaml::from_str(&text).map_err(|e| {
                ClientError::Usage(format!("{} is not an acl policy: {e}", file.display()))
            })?;
            let answer: Message = client.post("/api/acl/policies", &body).await?;
            print_message(format, &answer);
        }
        AclCommand::Policy(AclPolicyCommand::Ls) => {
            let policies: Vec<AclPolicy> = client.get("/api/acl/policies").await?;
            print_list(
                format,
                &policies,
                &[
                    ("NAME", |p| p.name.clone()),
                    ("RULES", |p| cell_of(&p.rules)),
                ],
            );
        }
        AclCommand::Policy(AclPolicyCommand::Delete { name }) => {
            let path = format!("/api/acl/policies/{}", path_segment(name)?);
            let answer: Message = client.delete(&path).await?;
            print_message(format, &answer);
        }
        AclCommand::Audit { limit } => {
            let entries: Vec<AuditEntry> = client.get(&format!("/api/audit?limit={limit}")).await?;
            print_list(
                format,
                &entries,
                &[
                    ("AT_MS", |e| e.at_ms.to_string()),
                    ("NODE", |e| e.node.clone()),
                    ("WHO", |e| e.who.clone()),
                    ("METHOD", |e| e.method.clone()),
                    ("PATH", |e| e.path.clone()),
                    ("STATUS", |e| e.status.to_string()),
                ],
            );
        }
    }
    Ok(())
}

async fn security(
    client: &Client,
    format: OutputFormat,
    command: &SecurityCommand,
) -> Result<(), ClientError> {
    match command {
        SecurityCommand::ListNetworkPolicies => {
            let policies: Vec<NetworkPolicy> = client.get("/api/security/network-policies").await?;
            print_list(
                format,
                &policies,
                &[
                    ("NAME", |p| p.name.clone()),
                    ("SELECTOR", |p| cell_of(&p.selector)),
                    ("INGRESS", |p| cell_of(&p.ingress_rules)),
                    ("EGRESS", |p| cell_of(&p.egress_rules)),
                ],
            );
        }
        SecurityCommand::CreateNetworkPolicy { file } => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", file.display())))?;
            // JSON is YAML, so one parser reads both; the server checks the rules.
            let body: NetworkPolicy = serde_yaml::from_str(&text).map_err(|e| {
                ClientError::Usage(format!(
                    "{} is not a network policy in JSON or YAML: {e}",
                    file.display()
                ))
            })?;
            let answer: PolicyAnswer = client.post("/api/security/network-policies", &body).await?;
            print_message(format, &answer);
        }
        SecurityCommand::DeleteNetworkPolicy { name } => {
            let path = format!("/api/security/network-policies/{}", path_segment(name)?);
            let answer: Message = client.delete(&path).await?;
            print_message(format, &answer);
        }
        SecurityCommand::CreateSecret { name, value } => {
            let body = CreateSecret::new(name, secret_input(value)?);
            let answer: SecretAnswer = client.post("/api/security/secrets", &body).await?;
            print_message(format, &answer);
        }
        SecurityCommand::ListSecrets => {
            let secrets: Vec<SecretView> = client.get("/api/security/secrets").await?;
            print_list(
                format,
                &secrets,
                &[
                    ("NAME", |s| s.name.clone()),
                    ("VERSION", |s| s.version.to_string()),
                    ("SIZE", |s| human_bytes(s.size)),
                    ("USED BY", |s| {
                        or_dash((!s.used_by.is_empty()).then(|| joined(&s.used_by)))
                    }),
                ],
            );
        }
        SecurityCommand::RotateSecret { name, value } => {
            let path = format!("/api/security/secrets/{}/rotate", path_segment(name)?);
            let answer: SecretAnswer = client.post(&path, &secret_input(value)?).await?;
            print_message(format, &answer);
        }
        SecurityCommand::DeleteSecret { name } => {
            let path = format!("/api/security/secrets/{}", path_segment(name)?);
            let answer: Message = client.delete(&path).await?;
            print_message(format, &answer);
        }
        SecurityCommand::Tls(TlsCommand::Add { domain, cert, key }) => {
            let read = |path: &std::path::PathBuf| {
                std::fs::read_to_string(path)
                    .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", path.display())))
            };
            let body = AddTlsCert {
                domain: domain.clone(),
                cert: read(cert)?,
                key: read(key)?,
            };
            let answer: TlsCertAnswer = client.post("/api/security/tls", &body).await?;
            print_message(format, &answer);
        }
        SecurityCommand::Tls(TlsCommand::Ls) => {
            let certs: Vec<TlsCertView> = client.get("/api/security/tls").await?;
            print_list(
                format,
                &certs,
                &[
                    ("DOMAIN", |c| c.domain.clone()),
                    ("NAMES", |c| joined(&c.names)),
                    ("EXPIRES", |c| expires_in(c.not_after)),
                    ("SERVES", |c| {
                        or_dash((!c.serves.is_empty()).then(|| joined(&c.serves)))
                    }),
                ],
            );
        }
        SecurityCommand::Tls(TlsCommand::Rm { domain }) => {
            let path = format!("/api/security/tls/{}", path_segment(domain)?);
            let answer: Message = client.delete(&path).await?;
            print_message(format, &answer);
        }
        SecurityCommand::ScanImage { image, refresh } => {
            let body = ScanRequest {
                image: image.clone(),
                refresh: *refresh,
            };
            let report: ScanReport = client.post("/api/security/scans", &body).await?;
            print_scan(format, &report);
        }
        SecurityCommand::Vulndb(VulnDbCommand::Import { file, max_age_days }) => {
            let data = std::fs::read(file)
                .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", file.display())))?;
            let path = match max_age_days {
                Some(days) => format!("/api/security/vulndb?max_age_days={days}"),
                None => "/api/security/vulndb".to_string(),
            };
            let status: VulnDbStatus = client.post_bytes(&path, data).await?;
            print_vulndb(format, &status);
        }
        SecurityCommand::ScanPolicy(ScanPolicyCommand::Set {
            mode,
            max_severity,
            only_fixed,
            require_signature,
        }) => {
            let mut body = scan_policy(*mode, max_severity.as_deref(), *only_fixed)?;
            body.require_signature = *require_signature;
            let policy: crate::vuln::ScanPolicy =
                client.post("/api/security/scan-policy", &body).await?;
            print_scan_policy(format, &policy);
        }
        SecurityCommand::ScanPolicy(ScanPolicyCommand::Show) => {
            let policy: crate::vuln::ScanPolicy = client.get("/api/security/scan-policy").await?;
            print_scan_policy(format, &policy);
        }
        SecurityCommand::Trust(TrustCommand::AddKey { name, file }) => {
            let public_key = std::fs::read_to_string(file)
                .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", file.display())))?;
            let body = AddTrustedKey {
                name: name.clone(),
                public_key,
            };
            let answer: TrustedKeyAnswer = client.post("/api/security/trust/keys", &body).await?;
            print_message(format, &answer);
        }
        SecurityCommand::Trust(TrustCommand::Ls) => {
            let keys: Vec<TrustedKeyView> = client.get("/api/security/trust/keys").await?;
            print_list(
                format,
                &keys,
                &[
                    ("NAME", |k| k.name.clone()),
                    ("FINGERPRINT", |k| k.fingerprint.clone()),
                ],
            );
        }
        SecurityCommand::Trust(TrustCommand::Rm { name }) => {
            let path = format!("/api/security/trust/keys/{}", path_segment(name)?);
            let answer: Message = client.delete(&path).await?;
            print_message(format, &answer);
        }
        SecurityCommand::Vulndb(VulnDbCommand::Status) => {
            let status: VulnDbStatus = client.get("/api/security/vulndb").await?;
            print_vulndb(format, &status);
        }
    }
    Ok(())
}

/// An app's last scan in a cell: `warn: 2 critical, 1 high` or `block: clean`.
fn scan_cell(scan: &crate::vuln::AppScan) -> String {
    let counts: Vec<String> = scan
        .counts
        .iter()
        .rev()
        .filter(|(severity, _)| **severity >= crate::vuln::Severity::Low)
        .map(|(severity, n)| format!("{n} {}", severity.as_str()))
        .collect();
    if counts.is_empty() {
        format!("{}: clean", scan.policy)
    } else {
        format!("{}: {}", scan.policy, counts.join(", "))
    }
}

fn print_scan_policy(format: OutputFormat, policy: &crate::vuln::ScanPolicy) {
    if format == OutputFormat::Json {
        print_object(format, policy);
    } else if policy.mode == crate::vuln::ScanMode::Off {
        println!("scan policy: off (deploys are not scanned unless they ask with --scan-policy)");
    } else {
        println!("scan policy: {}", policy.describe());
    }
}

fn print_vulndb(format: OutputFormat, status: &VulnDbStatus) {
    if format == OutputFormat::Json {
        print_object(format, status);
        return;
    }
    for message in &status.messages {
        println!("{message}");
    }
    print_list(
        format,
        &status.ecosystems,
        &[
            ("ECOSYSTEM", |e| e.ecosystem.clone()),
            ("PACKAGES", |e| e.packages.to_string()),
            ("ADVISORIES", |e| e.advisories.to_string()),
            ("AGE", |e| {
                format!("{:.1}d{}", e.age_days, if e.stale { " (old)" } else { "" })
            }),
            ("SHA256", |e| e.sha256.chars().take(12).collect()),
        ],
    );
}

fn print_scan(format: OutputFormat, report: &ScanReport) {
    match format {
        OutputFormat::Json => print_object(format, report),
        OutputFormat::Sarif => {
            super::output::print_json(&crate::vuln::sarif(&report.image, &report.findings))
        }
        OutputFormat::Table => {
            println!(
                "{} ({}){}: {} packages from {}",
                report.image,
                report.digest,
                report
                    .distro
                    .as_ref()
                    .map(|d| format!(", {d}"))
                    .unwrap_or_default(),
                report.packages,
                if report.sources.is_empty() {
                    "no package database".to_string()
                } else {
                    report.sources.join(", ")
                }
            );
            for warning in &report.warnings {
                println!("warning: {warning}");
            }
            let counts: Vec<String> = report
                .counts
                .iter()
                .rev()
                .map(|(severity, n)| format!("{n} {}", severity.as_str()))
                .collect();
            println!(
                "{} findings{}",
                report.findings.len(),
                if counts.is_empty() {
                    String::new()
                } else {
                    format!(": {}", counts.join(", "))
                }
            );
            if !report.findings.is_empty() {
                print_list(
                    format,
                    &report.findings,
                    &[
                        ("SEVERITY", |f| f.severity.as_str().to_string()),
                        ("ID", |f| f.id.clone()),
                        ("PACKAGE", |f| match &f.source {
                            Some(source) => format!("{} ({source})", f.package),
                            None => f.package.clone(),
                        }),
                        ("INSTALLED", |f| f.installed.clone()),
                        ("FIXED", |f| or_dash(f.fixed.as_ref())),
                        ("SCORE", |f| {
                            or_dash(f.score.map(|s| format!("{s:.1}")).as_ref())
                        }),
                    ],
                );
            }
        }
    }
}

/// When a certificate expires, from now: `in 89d`, `expired 2d ago`.
fn expires_in(not_after: u64) -> String {
    let now = crate::state::now_secs();
    let days = |secs: u64| secs / 86_400;
    if not_after > now {
        format!("in {}d", days(not_after - now))
    } else {
        format!("expired {}d ago", days(now - not_after))
    }
}

/// `hivemind login`: pins the server's CA, checks the token, keeps both as
/// the current context.
async fn login(
    cli: &Cli,
    context: Option<&str>,
    ca_sha256: Option<&str>,
    trust: Trust,
) -> Result<(), ClientError> {
    let (Some(server), Some(token)) = (cli.server.as_deref(), cli.token.as_deref()) else {
        return Err(ClientError::Usage(
            "give the node with --server URL and the token with --token".to_string(),
        ));
    };
    let server = server.trim_end_matches('/');
    let pin = match (ca_sha256, server.starts_with("https://")) {
        (_, false) => None,
        (Some(fingerprint), true) => Some(fingerprint.trim().to_ascii_lowercase()),
        (None, true) => match trust.fingerprint()? {
            Some(fingerprint) => Some(fingerprint),
            None => Some(confirm_ca(server).await?),
        },
    };
    let trust = pin.clone().map_or(Trust::Roots, Trust::Pinned);
    let client = Client::new(server, Some(token.to_string()), &trust)?;
    let me: WhoAmI = client.get("/api/whoami").await?;
    let name = context.map(str::to_string).unwrap_or_else(|| {
        server
            .split("://")
            .last()
            .unwrap_or(server)
            .trim_end_matches('/')
            .to_string()
    });
    let mut config = super::config::Config::load()?;
    config.put(super::config::Context {
        name: name.clone(),
        server: server.to_string(),
        token: token.to_string(),
        ca_sha256: pin.clone(),
    });
    let path = config.save()?;
    if cli.output == OutputFormat::Json {
        print_object(cli.output, &me);
    } else {
        println!(
            "Logged in to {server} as {} ({}); context {name} in {}{}",
            me.name,
            me.grant,
            path.display(),
            pin.map(|p| format!("; CA sha256 {p} pinned"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Shows the fingerprint of the CA `server` presents and asks whether to
/// trust it; without a terminal to ask on, says how to pin it instead.
async fn confirm_ca(server: &str) -> Result<String, ClientError> {
    let url = reqwest::Url::parse(server)
        .map_err(|e| ClientError::Usage(format!("{server} is not a URL: {e}")))?;
    let host = url.host_str().unwrap_or("localhost").to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let fingerprint = crate::pki::probe_ca_fingerprint(&format!("{host}:{port}"), &host)
        .await
        .map_err(|e| ClientError::Other(e.to_string()))?;
    let shown = format!(
        "{server} shows a CA with SHA-256 fingerprint\n  {fingerprint}\nCompare it with \
         `hivemind cluster certificate` on a node you trust (or `sha256sum` of the DER of \
         <data dir>/pki/ca.crt)."
    );
    use std::io::IsTerminal as _;
    if !std::io::stdin().is_terminal() {
        return Err(ClientError::Usage(format!(
            "{shown}\nRun again with --ca-sha256 {fingerprint} to trust it (or --ca-cert FILE)."
        )));
    }
    eprint!("{shown}\nTrust it? [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| ClientError::Other(e.to_string()))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(fingerprint)
    } else {
        Err(ClientError::Other(
            "not logged in: the CA was not trusted".to_string(),
        ))
    }
}

/// `flows observe`: the flow events of every node that match `filter`, the recent ones, then
/// (with `--follow`) new ones each second, each with the apps of its two addresses.
async fn flows_observe(
    client: &Client,
    format: OutputFormat,
    filter: &FlowFilter,
) -> Result<(), ClientError> {
    let mut pairs = vec![
        ("from_app", filter.from_app.clone()),
        ("to_app", filter.to_app.clone()),
        ("verdict", filter.verdict.clone()),
        ("ip", filter.ip.clone()),
        ("port", filter.port.map(|p| p.to_string())),
        ("protocol", filter.protocol.clone()),
        (
            "limit",
            Some(if filter.follow { "1000" } else { "200" }.to_string()),
        ),
        ("cursor", None),
    ];
    let show = |flow: &FlowView| {
        if format == OutputFormat::Json {
            println!("{}", serde_json::to_string(flow).unwrap_or_default());
            return;
        }
        let named = |ip: &std::net::Ipv4Addr, app: &Option<String>| match app {
            Some(app) => format!("{ip} ({app})"),
            None => ip.to_string(),
        };
        let why = match &flow.policy {
            Some(policy) => format!("{} (policy {policy})", flow.reason.name),
            None => flow.reason.name.clone(),
        };
        println!(
            "{:<8} {:<8} {:<10} {:<5} {}:{} -> {}:{}  {why}",
            flow.verdict,
            flow.direction,
            flow.node,
            flow.protocol,
            named(&flow.src, &flow.src_app),
            flow.sport,
            named(&flow.dst, &flow.dst_app),
            flow.dport,
        );
    };
    loop {
        let path = with_query("/api/flows/recent", &pairs)?;
        let recent: RecentFlows = client.get(&path).await?;
        recent.flows.iter().for_each(&show);
        let unshown = recent.matched.saturating_sub(recent.flows.len() as u64);
        if unshown > 0 && format != OutputFormat::Json {
            eprintln!("({unshown} more matching flows not shown)");
        }
        if !recent.unavailable.is_empty() {
            eprintln!("(no answer from {})", recent.unavailable.join(", "));
        }
        if !filter.follow {
            return Ok(());
        }
        if let Some((_, cursor)) = pairs.last_mut() {
            *cursor = Some(recent.cursor);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// A secret's value from `--file` (or stdin for `-`) or `--value`.
fn secret_input(args: &SecretValueArgs) -> Result<SecretInput, ClientError> {
    match (&args.file, &args.value) {
        (Some(path), None) => {
            let bytes = if path.as_os_str() == "-" {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                    .map_err(|e| ClientError::Usage(format!("cannot read stdin: {e}")))?;
                bytes
            } else {
                std::fs::read(path).map_err(|e| {
                    ClientError::Usage(format!("cannot read {}: {e}", path.display()))
                })?
            };
            Ok(SecretInput::of_bytes(&bytes))
        }
        (None, Some(value)) => Ok(SecretInput {
            value: Some(value.clone()),
            value_base64: None,
        }),
        _ => Err(ClientError::Usage(
            "give exactly one of --file and --value".to_string(),
        )),
    }
}

async fn volume(
    client: &Client,
    format: OutputFormat,
    command: &VolumeCommand,
) -> Result<(), ClientError> {
    match command {
        VolumeCommand::Create { name } => {
            let body = CreateVolume { name: name.clone() };
            let answer: VolumeCreated = client.post("/api/volumes/create", &body).await?;
            print_message(format, &answer);
        }
        VolumeCommand::Ls => {
            let volumes: Vec<VolumeView> = client.get("/api/volumes").await?;
            print_list(
                format,
                &volumes,
                &[
                    ("NAME", |v| v.name.clone()),
                    ("USED BY", |v| joined(&v.used_by)),
                    ("PATH", |v| v.path.clone()),
                ],
            );
        }
        VolumeCommand::Delete { name } => {
            let answer: Message = client
                .delete(&format!("/api/volumes/{}", path_segment(name)?))
                .await?;
            print_message(format, &answer);
        }
    }
    Ok(())
}

async fn image(
    client: &Client,
    format: OutputFormat,
    command: &ImageCommand,
) -> Result<(), ClientError> {
    match command {
        ImageCommand::Pull { image } => pull(client, format, image, true).await.map(|_| ()),
        ImageCommand::Import { file } => {
            let bytes = std::fs::read(file)
                .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", file.display())))?;
            let answer: ImportAnswer = client.post_bytes("/api/images/import", bytes).await?;
            print_message(format, &answer);
            Ok(())
        }
    }
}

/// Pulls through the node, printing progress to stderr (not in JSON mode);
/// returns the closing `done` event.
async fn pull(
    client: &Client,
    format: OutputFormat,
    image: &str,
    force: bool,
) -> Result<PullEvent, ClientError> {
    let body = PullRequest {
        image: image.to_string(),
        force,
    };
    let response = client.post_stream("/api/images/pull", &body).await?;
    let mut body = response.bytes_stream();
    let mut buffer = Vec::new();
    let mut last = None;
    let show = format == OutputFormat::Table;
    let short = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        hex.chars().take(12).collect::<String>()
    };
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ClientError::Other(format!("pull progress stream: {e}")))?;
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let event = serde_json::from_slice::<PullEvent>(&line).map_err(|e| {
                ClientError::Other(format!(
                    "pull {image}: a progress event does not match this client's API: {e}"
                ))
            })?;
            match &event {
                PullEvent::Error { message } => {
                    if show {
                        eprintln!();
                    }
                    return Err(ClientError::Other(format!("pull {image}: {message}")));
                }
                PullEvent::Resolving { reference } if show => eprintln!("Pulling {reference}"),
                PullEvent::Layer {
                    digest,
                    downloaded,
                    total,
                } if show => eprint!(
                    "\r  {}: {} / {}   ",
                    short(digest),
                    human_bytes(*downloaded),
                    human_bytes(*total),
                ),
                PullEvent::Unpacking { digest } if show => {
                    eprintln!("\r  {}: unpacking              ", short(digest))
                }
                PullEvent::Done { image, digest } if show => eprintln!("Pulled {image} ({digest})"),
                _ => {}
            }
            last = Some(event);
        }
    }
    match last {
        Some(done @ PullEvent::Done { .. }) => Ok(done),
        _ => Err(ClientError::Other(format!(
            "pull {image}: the server ended the progress stream early"
        ))),
    }
}

/// A name put into a URL path must not change the path.
/// `observability configure-*`: sets the cluster setting at `/api/observability/<name>` to
/// `body`, or removes it (`None`, `--disable`); says what every node now does.
async fn configure_setting<T: serde::Serialize + serde::de::DeserializeOwned>(
    client: &Client,
    format: OutputFormat,
    name: &str,
    body: Option<T>,
    describe: impl Fn(&T) -> String,
) -> Result<(), ClientError> {
    let path = format!("/api/observability/{name}");
    let Some(body) = body else {
        let answer: Message = client.delete(&path).await?;
        print_message(format, &answer);
        return Ok(());
    };
    let set: T = client.post(&path, &body).await?;
    if format == OutputFormat::Json {
        print_object(format, &set);
    } else {
        println!("{}", describe(&set));
    }
    Ok(())
}

pub(super) fn path_segment(text: &str) -> Result<&str, ClientError> {
    if text.is_empty() || text.contains(['/', '?', '#', '%', ' ']) {
        return Err(ClientError::Usage(format!(
            "{text:?} is not a valid name or id"
        )));
    }
    Ok(text)
}

/// A path with a query of the pairs that have a value.
fn with_query(path: &str, pairs: &[(&str, Option<String>)]) -> Result<String, ClientError> {
    let mut url = reqwest::Url::parse(&format!("http://cli{path}"))
        .map_err(|e| ClientError::Other(e.to_string()))?;
    {
        let mut query = url.query_pairs_mut();
        for (key, value) in pairs {
            if let Some(value) = value {
                query.append_pair(key, value);
            }
        }
    }
    Ok(match url.query() {
        Some(query) if !query.is_empty() => format!("{}?{query}", url.path()),
        _ => url.path().to_string(),
    })
}

/// `debug bpf` and `debug policy-trace`.
async fn debug(
    client: &Client,
    format: OutputFormat,
    command: &DebugCommand,
) -> Result<(), ClientError> {
    match command {
        DebugCommand::Bpf {
            table,
            container,
            node,
        } => {
            let path = with_query(
                &format!("/api/debug/bpf/{}", path_segment(table)?),
                &[("container", container.clone()), ("node", node.clone())],
            )?;
            let answer: DebugAnswer = client.get(&path).await?;
            if format == OutputFormat::Json {
                print_object(format, &answer);
                return Ok(());
            }
            for table in &answer.tables {
                let fill: Vec<String> = table
                    .maps
                    .iter()
                    .map(|m| format!("{} {}/{}", m.map, m.entries, m.capacity))
                    .collect();
                println!("# {} on {} ({})", table.table, table.node, fill.join(", "));
                let headers: Vec<String> = table
                    .rows
                    .first()
                    .and_then(|r| r.as_object())
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                let rows = table
                    .rows
                    .iter()
                    .map(|r| headers.iter().map(|h| cell(&r[h.as_str()])).collect())
                    .collect();
                if headers.is_empty() {
                    println!("(no entries)");
                } else {
                    print_table(&headers, rows);
                }
                if table.truncated {
                    println!("(more entries than shown; narrow with --container)");
                }
            }
            if !answer.unavailable.is_empty() {
                eprintln!("(no answer from {})", answer.unavailable.join(", "));
            }
            Ok(())
        }
        DebugCommand::Monitor {
            from_app,
            to_app,
            verdict,
            kind,
        } => {
            let path = with_query(
                "/api/debug/monitor",
                &[
                    ("from_app", from_app.clone()),
                    ("to_app", to_app.clone()),
                    ("verdict", verdict.clone()),
                    ("type", Some(kind.clone())),
                ],
            )?;
            let response = client.get_text(&path).await?;
            let mut body = response.bytes_stream();
            let mut pending = String::new();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| ClientError::Other(format!("the monitor: {e}")))?;
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = pending.find('\n') {
                    let line: String = pending.drain(..=end).collect();
                    let Some(data) = line.trim_end().strip_prefix("data:") else {
                        continue;
                    };
                    let Ok(packet) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                        continue;
                    };
                    if format == OutputFormat::Json {
                        println!("{packet}");
                        continue;
                    }
                    if let Some(lost) = packet.get("lost") {
                        eprintln!("({lost} batches lost: this client fell behind)");
                        continue;
                    }
                    let text = |k: &str| packet[k].as_str().unwrap_or("").to_string();
                    let end = |ip: &str, port: &str, app: &str| match packet[app].as_str() {
                        Some(app) => format!("{}:{} ({app})", text(ip), packet[port]),
                        None => format!("{}:{}", text(ip), packet[port]),
                    };
                    println!(
                        "{:<9} {:<14} {:<5} {} -> {}  {} bytes  {}",
                        text("verdict"),
                        text("program"),
                        text("protocol"),
                        end("src", "sport", "src_app"),
                        end("dst", "dport", "dst_app"),
                        packet["len"],
                        text("reason"),
                    );
                }
            }
            Ok(())
        }
        DebugCommand::PolicyTrace {
            from_app,
            from_ip,
            to_app,
            to_ip,
            port,
            protocol,
        } => {
            let path = with_query(
                "/api/debug/policy-trace",
                &[
                    ("from_app", from_app.clone()),
                    ("from_ip", from_ip.map(|ip| ip.to_string())),
                    ("to_app", to_app.clone()),
                    ("to_ip", to_ip.map(|ip| ip.to_string())),
                    ("port", Some(port.to_string())),
                    ("protocol", Some(protocol.clone())),
                ],
            )?;
            let trace: PolicyTrace = client.get(&path).await?;
            if format == OutputFormat::Json {
                print_object(format, &trace);
                return Ok(());
            }
            for check in &trace.checks {
                let peer = match &check.peer_name {
                    Some(name) => format!("{} ({name})", check.peer),
                    None => check.peer.to_string(),
                };
                let policies = if check.policies.is_empty() {
                    String::new()
                } else {
                    format!(" [policies: {}]", check.policies.join(", "))
                };
                println!(
                    "{:<7} {:<7} {} {} ({}) peer {peer} identity {}: {}{policies}",
                    if check.allowed { "allowed" } else { "denied" },
                    check.direction,
                    check.node,
                    check.container,
                    check.app,
                    check.peer_identity,
                    check.decided_by,
                );
            }
            if !trace.unavailable.is_empty() {
                eprintln!("(no answer from {})", trace.unavailable.join(", "));
            }
            println!("verdict: {}", trace.verdict);
            Ok(())
        }
        DebugCommand::Connectivity {
            image,
            port,
            server_node,
            egress,
            publish_port,
            check_timeout,
        } => {
            let request = ConnectivityRequest {
                image: image.clone(),
                port: *port,
                server_node: server_node.clone(),
                egress: egress.clone(),
                publish_port: *publish_port,
                check_timeout_s: Some(*check_timeout),
            };
            let report: ConnectivityReport =
                client.post("/api/debug/connectivity", &request).await?;
            if format == OutputFormat::Json {
                print_object(format, &report);
            } else {
                if let (Some(client), Some(server)) = (&report.client, &report.server) {
                    println!(
                        "client {} ({}) on {}, server {} ({}) on {}{}",
                        client.container,
                        client.ip,
                        client.node,
                        server.container,
                        server.ip,
                        server.node,
                        if report.cross_node {
                            ""
                        } else {
                            " (one node: the overlay between nodes is not checked)"
                        }
                    );
                }
                print_list(
                    format,
                    &report.checks,
                    &[
                        ("CHECK", |c| c.name.clone()),
                        ("RESULT", |c| c.result.as_str().to_string()),
                        ("TIME", |c| format!("{} ms", c.ms)),
                        ("DETAIL", |c| c.detail.clone()),
                    ],
                );
            }
            let failed: Vec<&str> = report
                .checks
                .iter()
                .filter(|c| c.result == CheckResult::Failed)
                .map(|c| c.name.as_str())
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(ClientError::Other(format!(
                    "connectivity: {} failed",
                    failed.join(", ")
                )))
            }
        }
    }
}
