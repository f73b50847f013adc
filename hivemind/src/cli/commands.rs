//! The client commands: each turns flags into one REST call (deploy first
//! pulls with visible progress) and prints the answer.

use std::io::Write;

use futures::StreamExt;
use serde_json::{Value, json};

use super::output::{human_bytes, print_list, print_message, print_object};
use super::{
    AppCommand, Cli, Client, ClientError, DeployArgs, ImageCommand, NodeCommand, OutputFormat,
    SecurityCommand, TopCommand, VolumeCommand,
};
use crate::model::{
    DeployRequest, MemoryValue, ResourcesRequest, ValidationError, parse_key_value, parse_volume,
};

fn usage(e: ValidationError) -> ClientError {
    ClientError::Usage(format!("--{e}"))
}

/// Builds the deploy body from flags, checking them before any request.
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
        .map(|v| parse_volume(v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(usage)?;
    let resources = (args.cpu.is_some() || args.memory.is_some()).then(|| ResourcesRequest {
        cpu: args.cpu,
        memory: args.memory.clone().map(MemoryValue::Text),
    });
    let request = DeployRequest {
        image: args.image.clone(),
        name: args.name.clone(),
        service: args.service.clone(),
        replicas: args.replicas,
        resources,
        volumes,
        env,
        ports: args.ports.clone(),
        labels,
        node: args.node.clone(),
        health: health_spec(args)?,
        placement: args.placement.clone(),
        constraints: args
            .constraints
            .iter()
            .map(|pair| parse_key_value("constraint", pair))
            .collect::<Result<_, _>>()
            .map_err(usage)?,
    };
    request.validate().map_err(usage)?;
    Ok(request)
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
    let client = Client::new(&cli.server, cli.token.clone());
    let format = cli.output;
    match &cli.command {
        TopCommand::Daemon(_) | TopCommand::Web(_) => Err(ClientError::Other(
            "daemon and web are not client commands".into(),
        )),
        TopCommand::App(command) => app(&client, format, command).await,
        TopCommand::Volume(command) => volume(&client, format, command).await,
        TopCommand::Image(command) => image(&client, format, command).await,
        TopCommand::Node(NodeCommand::Ls) => {
            let nodes = client.get("/api/nodes").await?;
            print_list(
                format,
                &nodes,
                &[
                    ("NAME", "name"),
                    ("ID", "id"),
                    ("STATE", "state"),
                    ("ADDRESS", "address"),
                    ("SUBNET", "subnet"),
                    ("CONTAINERS", "containers"),
                    ("RESOURCES", "resources"),
                ],
            );
            Ok(())
        }
        TopCommand::Node(NodeCommand::Join { address }) => {
            let body = json!({"address": address.to_string()});
            let answer = client.post("/api/nodes/join", &body).await?;
            print_message(format, &answer);
            Ok(())
        }
        TopCommand::Security(command) => security(&client, format, command).await,
        TopCommand::Health => {
            let health = client.get("/api/health").await?;
            if format == OutputFormat::Json {
                print_object(format, &health);
            } else {
                println!("status: {}", health["status"].as_str().unwrap_or("unknown"));
                println!(
                    "nodes: {}/{} alive",
                    health["nodes"]["alive"], health["nodes"]["total"]
                );
                println!(
                    "runtime: {} ({})",
                    health["runtime"]["name"].as_str().unwrap_or("-"),
                    if health["runtime"]["ok"] == true {
                        "ok"
                    } else {
                        "failing"
                    }
                );
                println!(
                    "network: bridge {} subnet {} mtu {} eBPF data plane {}",
                    health["network"]["bridge"].as_str().unwrap_or("-"),
                    health["network"]["subnet"].as_str().unwrap_or("-"),
                    health["network"]["mtu"],
                    if health["network"]["dataplane"] == true {
                        "loaded"
                    } else {
                        "off"
                    }
                );
                println!(
                    "services: {}/{} with ready endpoints",
                    health["services"]["healthy"], health["services"]["total"]
                );
                println!(
                    "apps: {}/{} healthy",
                    health["apps"]["healthy"], health["apps"]["total"]
                );
                println!(
                    "containers: {}/{} running",
                    health["containers"]["running"], health["containers"]["total"]
                );
                for problem in health["problems"].as_array().into_iter().flatten() {
                    println!("problem: {}", problem.as_str().unwrap_or_default());
                }
            }
            Ok(())
        }
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
            let body =
                serde_json::to_value(&request).map_err(|e| ClientError::Other(e.to_string()))?;
            let answer = client.post("/api/deploy", &body).await?;
            print_message(format, &answer);
        }
        AppCommand::Ls => {
            let apps = client.get("/api/apps").await?;
            print_list(
                format,
                &apps,
                &[
                    ("NAME", "name"),
                    ("IMAGE", "image"),
                    ("REPLICAS", "replicas"),
                    ("RUNNING", "running"),
                    ("STATUS", "status"),
                    ("SERVICE", "service"),
                ],
            );
        }
        AppCommand::Containers => {
            let containers = client.get("/api/containers").await?;
            print_list(
                format,
                &containers,
                &[
                    ("ID", "id"),
                    ("APP", "app"),
                    ("NODE", "node"),
                    ("STATUS", "status"),
                    ("IP", "ip"),
                    ("IMAGE", "image"),
                    ("RESTARTS", "restarts"),
                    ("RESOURCES", "resources"),
                ],
            );
        }
        AppCommand::ContainerInfo { container_id } => {
            let info = client
                .get(&format!("/api/containers/{}", path_segment(container_id)?))
                .await?;
            print_object(format, &info);
        }
        AppCommand::Restart { name } => {
            let answer = client.post("/api/restart", &json!({"name": name})).await?;
            print_message(format, &answer);
        }
        AppCommand::Scale { name, replicas } => {
            let answer = client
                .post("/api/scale", &json!({"name": name, "replicas": replicas}))
                .await?;
            print_message(format, &answer);
        }
        AppCommand::Logs { name, follow, tail } => {
            let mut path = format!("/api/apps/{}/logs?follow={follow}", path_segment(name)?);
            if let Some(tail) = tail {
                path.push_str(&format!("&tail={tail}"));
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
            let services = client.get("/api/services").await?;
            print_list(
                format,
                &services,
                &[
                    ("NAME", "name"),
                    ("VIP", "vip"),
                    ("DNS", "dns_names"),
                    ("PORTS", "ports"),
                    ("READY", "ready_endpoints"),
                    ("ENDPOINTS", "endpoints"),
                ],
            );
        }
        AppCommand::Delete { name } => {
            let answer = client
                .delete(&format!("/api/apps/{}", path_segment(name)?))
                .await?;
            print_message(format, &answer);
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
            let policies = client.get("/api/security/network-policies").await?;
            print_list(
                format,
                &policies,
                &[
                    ("NAME", "name"),
                    ("SELECTOR", "selector"),
                    ("INGRESS", "ingress_rules"),
                    ("EGRESS", "egress_rules"),
                ],
            );
        }
        SecurityCommand::CreateNetworkPolicy { file } => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", file.display())))?;
            // JSON is YAML, so one parser reads both.
            let body: Value = serde_yaml::from_str(&text).map_err(|e| {
                ClientError::Usage(format!("{} is not JSON or YAML: {e}", file.display()))
            })?;
            let answer = client.post("/api/security/network-policies", &body).await?;
            print_message(format, &answer);
        }
        SecurityCommand::DeleteNetworkPolicy { name } => {
            let path = format!("/api/security/network-policies/{}", path_segment(name)?);
            let answer = client.delete(&path).await?;
            print_message(format, &answer);
        }
    }
    Ok(())
}

async fn volume(
    client: &Client,
    format: OutputFormat,
    command: &VolumeCommand,
) -> Result<(), ClientError> {
    match command {
        VolumeCommand::Create { name } => {
            let answer = client
                .post("/api/volumes/create", &json!({"name": name}))
                .await?;
            print_message(format, &answer);
        }
        VolumeCommand::Ls => {
            let volumes = client.get("/api/volumes").await?;
            print_list(
                format,
                &volumes,
                &[("NAME", "name"), ("USED BY", "used_by"), ("PATH", "path")],
            );
        }
        VolumeCommand::Delete { name } => {
            let answer = client
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
            let answer = client.post_bytes("/api/images/import", bytes).await?;
            print_message(format, &answer);
            Ok(())
        }
    }
}

/// Pulls through the node, printing progress to stderr (not in JSON mode).
async fn pull(
    client: &Client,
    format: OutputFormat,
    image: &str,
    force: bool,
) -> Result<Value, ClientError> {
    let body = json!({"image": image, "force": force});
    let response = client.post_stream("/api/images/pull", &body).await?;
    let mut body = response.bytes_stream();
    let mut buffer = Vec::new();
    let mut last = Value::Null;
    let show = format == OutputFormat::Table;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ClientError::Other(format!("pull progress stream: {e}")))?;
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            match event["event"].as_str() {
                Some("error") => {
                    if show {
                        eprintln!();
                    }
                    return Err(ClientError::Other(format!(
                        "pull {image}: {}",
                        event["message"].as_str().unwrap_or("failed")
                    )));
                }
                Some("resolving") if show => {
                    eprintln!("Pulling {}", event["reference"].as_str().unwrap_or(image))
                }
                Some("layer") if show => {
                    let digest = event["digest"].as_str().unwrap_or_default();
                    let short = digest.strip_prefix("sha256:").unwrap_or(digest);
                    eprint!(
                        "\r  {}: {} / {}   ",
                        &short[..short.len().min(12)],
                        human_bytes(event["downloaded"].as_u64().unwrap_or(0)),
                        human_bytes(event["total"].as_u64().unwrap_or(0)),
                    );
                }
                Some("unpacking") if show => {
                    let digest = event["digest"].as_str().unwrap_or_default();
                    let short = digest.strip_prefix("sha256:").unwrap_or(digest);
                    eprintln!(
                        "\r  {}: unpacking              ",
                        &short[..short.len().min(12)]
                    );
                }
                Some("done") if show => eprintln!(
                    "Pulled {} ({})",
                    event["image"].as_str().unwrap_or(image),
                    event["digest"].as_str().unwrap_or_default()
                ),
                _ => {}
            }
            last = event;
        }
    }
    if last["event"] != "done" {
        return Err(ClientError::Other(format!(
            "pull {image}: the server ended the progress stream early"
        )));
    }
    Ok(last)
}

/// A name put into a URL path must not change the path.
fn path_segment(text: &str) -> Result<&str, ClientError> {
    if text.is_empty() || text.contains(['/', '?', '#', '%', ' ']) {
        return Err(ClientError::Usage(format!(
            "{text:?} is not a valid name or id"
        )));
    }
    Ok(text)
}
