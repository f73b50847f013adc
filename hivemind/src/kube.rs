//! Rendered Kubernetes objects as Hivemind's: Deployments and StatefulSets become apps, a
//! Service their ports (and published ports for NodePort and LoadBalancer), ConfigMaps and
//! Secrets files and secrets, NetworkPolicies policies, an Ingress the HTTP ingress's domain
//! of the app behind it. ServiceAccounts, HorizontalPodAutoscalers and PodDisruptionBudgets
//! are accepted and change nothing; any other kind is unsupported, named with the reason.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use serde_json::Value;

use crate::contract::{
    CheckRequest, DeployRequest, HealthRequest, MemoryValue, ProbeRequest, ResourcesRequest,
    VolumeMountRequest,
};
use crate::helm::render::Manifest;
use crate::model::{PublishedPort, SecretMount};
use crate::policy::{NetworkPolicy, Peer, PortRange, RuleBody, Selector};

/// Kinds that need nothing from Hivemind: containers get no Kubernetes API credentials, and
/// replica counts are the chart's.
const ACCEPTED: &[&str] = &[
    "ServiceAccount",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
];

/// What a release makes in Hivemind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub apps: Vec<DeployRequest>,
    /// Secrets by name: a Kubernetes Secret's or a mounted ConfigMap's keys, one each.
    pub secrets: BTreeMap<String, Vec<u8>>,
    pub policies: Vec<NetworkPolicy>,
    /// Objects that need nothing (`ServiceAccount/web`).
    pub accepted: Vec<String>,
    /// Objects Hivemind cannot run, with why (`CronJob/backup: ...`).
    pub unsupported: Vec<String>,
    /// What was mapped approximately (a Service port that differs from its target...).
    pub warnings: Vec<String>,
}

/// The Hivemind secret for key `key` of Secret or ConfigMap `object`: `<object>-<key>` in
/// Hivemind's name rules (lowercase, '-' for anything else).
pub fn secret_name(object: &str, key: &str) -> String {
    let mut name: String = format!("{object}-{key}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    name.trim_matches('-').to_string()
}

fn str_of<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}

fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .unwrap_or(&Value::Null)
}

fn list<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    at(value, path).as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), crate::helm::template::print(v)))
                .collect()
        })
        .unwrap_or_default()
}

/// CPUs from a Kubernetes quantity: `500m`, `1`, `0.25`.
fn cpu_quantity(text: &str) -> Option<f64> {
    match text.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok().map(|m| m / 1000.0),
        None => text.parse().ok(),
    }
}

/// Bytes from a Kubernetes quantity: `128Mi`, `1Gi`, `512M`, `1000`.
fn memory_quantity(text: &str) -> Option<u64> {
    const UNITS: &[(&str, u64)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, factor) in UNITS {
        if let Some(number) = text.strip_suffix(suffix) {
            return number
                .parse::<f64>()
                .ok()
                .map(|n| (n * *factor as f64) as u64);
        }
    }
    text.parse::<f64>().ok().map(|n| n as u64)
}

/// A workload's pods: which app they are, their labels and their named ports.
struct Pods {
    app: usize,
    labels: BTreeMap<String, String>,
    named_ports: BTreeMap<String, u16>,
}

/// The objects of a release, by kind and name, for looking up what a workload refers to.
struct Objects<'a> {
    by_kind: BTreeMap<(&'a str, &'a str), &'a Value>,
}

impl<'a> Objects<'a> {
    fn get(&self, kind: &str, name: &str) -> Option<&'a Value> {
        self.by_kind.get(&(kind, name)).copied()
    }

    /// A ConfigMap's or Secret's keys and values (Secret `data` decoded).
    fn data(&self, kind: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let object = self.get(kind, name)?;
        let mut out = BTreeMap::new();
        // A Secret's `data` and a ConfigMap's `binaryData` are base64.
        for (field, encoded) in [
            ("data", kind == "Secret"),
            ("stringData", false),
            ("binaryData", true),
        ] {
            for (key, value) in at(object, &[field]).as_object().into_iter().flatten() {
                let text = crate::helm::template::print(value);
                let bytes = if encoded {
                    base64::engine::general_purpose::STANDARD
                        .decode(text.trim())
                        .ok()?
                } else {
                    text.into_bytes()
                };
                out.insert(key.clone(), bytes);
            }
        }
        Some(out)
    }
}

/// Maps rendered objects onto Hivemind.
pub fn plan(manifests: &[Manifest]) -> Plan {
    let objects = Objects {
        by_kind: manifests
            .iter()
            .map(|m| ((m.kind.as_str(), m.name.as_str()), &m.object))
            .collect(),
    };
    let mut plan = Plan::default();
    // Pod labels of each app, for Services, Ingresses and policies.
    let mut pods: Vec<Pods> = Vec::new();
    for manifest in manifests {
        let id = format!("{}/{}", manifest.kind, manifest.name);
        match manifest.kind.as_str() {
            "Deployment" | "StatefulSet" => match workload(manifest, &objects, &mut plan) {
                Ok((request, labels, named_ports)) => {
                    pods.push(Pods {
                        app: plan.apps.len(),
                        labels,
                        named_ports,
                    });
                    plan.apps.push(request);
                }
                Err(why) => plan.unsupported.push(format!("{id}: {why}")),
            },
            "Secret" => match objects.data("Secret", &manifest.name) {
                Some(data) => {
                    for (key, value) in data {
                        plan.secrets
                            .insert(secret_name(&manifest.name, &key), value);
                    }
                }
                None => plan
                    .unsupported
                    .push(format!("{id}: its data is not base64")),
            },
            "ConfigMap" | "Service" | "Ingress" | "NetworkPolicy" => {}
            kind if ACCEPTED.contains(&kind) => plan.accepted.push(id),
            kind => plan.unsupported.push(format!(
                "{id}: Hivemind has no {kind} (it runs Deployments, StatefulSets, Services, \
                 ConfigMaps, Secrets, NetworkPolicies and Ingresses)"
            )),
        }
    }
    for manifest in manifests {
        let id = format!("{}/{}", manifest.kind, manifest.name);
        let result = match manifest.kind.as_str() {
            "Service" => service(&manifest.object, &pods, &mut plan),
            "Ingress" => ingress(&manifest.object, &objects, &pods, &mut plan),
            "NetworkPolicy" => policy(manifest, &mut plan),
            _ => Ok(()),
        };
        if let Err(why) = result {
            plan.unsupported.push(format!("{id}: {why}"));
        }
    }
    plan
}

/// An app, its pods' labels and their named ports.
type Workload = (
    DeployRequest,
    BTreeMap<String, String>,
    BTreeMap<String, u16>,
);

/// A Deployment or StatefulSet as an app, with its pods' labels and named ports.
fn workload(manifest: &Manifest, objects: &Objects, plan: &mut Plan) -> Result<Workload, String> {
    let object = &manifest.object;
    let pod = at(object, &["spec", "template"]);
    let containers = list(pod, &["spec", "containers"]);
    let [container] = containers else {
        return Err(format!(
            "{} containers in its pod; Hivemind runs one container per replica",
            containers.len()
        ));
    };
    if !list(pod, &["spec", "initContainers"]).is_empty() {
        return Err("init containers are not supported".into());
    }
    for field in ["command", "args"] {
        if !list(container, &[field]).is_empty() {
            return Err(format!(
                "the container sets {field}; Hivemind runs an image's own entrypoint"
            ));
        }
    }
    let name = manifest.name.clone();
    crate::model::validate_name("name", &name).map_err(|e| e.message)?;
    let image = str_of(container, &["image"])
        .ok_or("the container has no image")?
        .to_string();

    let mut labels = string_map(at(pod, &["metadata", "labels"]));
    if let Some(app) = labels.remove("app")
        && app != name
    {
        plan.warnings.push(format!(
            "{}/{name}: its pods' label app={app} is replaced by app={name} (Hivemind sets it)",
            manifest.kind
        ));
    }

    // Ports, and their names for probes and Services.
    let mut ports = Vec::new();
    let mut named_ports = BTreeMap::new();
    for port in list(container, &["ports"]) {
        let number = at(port, &["containerPort"]).as_u64().unwrap_or(0);
        let number = u16::try_from(number)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("containerPort {number} is not a port"))?;
        if let Some(port_name) = str_of(port, &["name"]) {
            named_ports.insert(port_name.to_string(), number);
        }
        ports.push(number);
    }
    let port_of = |value: &Value| -> Result<u16, String> {
        match value {
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| format!("{n} is not a port")),
            Value::String(port_name) => list(container, &["ports"])
                .iter()
                .find(|p| str_of(p, &["name"]) == Some(port_name))
                .and_then(|p| at(p, &["containerPort"]).as_u64())
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| format!("the container has no port named {port_name}")),
            _ => Err("a probe has no port".into()),
        }
    };

    // Environment: values, and references to this release's ConfigMaps and Secrets.
    let mut env = BTreeMap::new();
    let mut secret_env = BTreeMap::new();
    for var in list(container, &["env"]) {
        let key = str_of(var, &["name"])
            .ok_or("an env entry has no name")?
            .to_string();
        if let Some(value) = var.get("value") {
            env.insert(key, crate::helm::template::print(value));
        } else if let Some(reference) = var.get("valueFrom") {
            if let Some(r) = reference.get("secretKeyRef") {
                let (secret, item) = (
                    str_of(r, &["name"]).unwrap_or_default(),
                    str_of(r, &["key"]).unwrap_or_default(),
                );
                secret_env.insert(key, secret_name(secret, item));
            } else if let Some(r) = reference.get("configMapKeyRef") {
                let (map, item) = (
                    str_of(r, &["name"]).unwrap_or_default(),
                    str_of(r, &["key"]).unwrap_or_default(),
                );
                let value = objects
                    .data("ConfigMap", map)
                    .and_then(|d| d.get(item).cloned())
                    .ok_or_else(|| {
                        format!("env {key} reads ConfigMap {map} key {item}, not in this release")
                    })?;
                env.insert(key, String::from_utf8_lossy(&value).into_owned());
            } else {
                return Err(format!(
                    "env {key} takes its value from a field or resource; only values, \
                     ConfigMap and Secret keys are supported"
                ));
            }
        } else {
            env.insert(key, String::new());
        }
    }
    for source in list(container, &["envFrom"]) {
        let prefix = str_of(source, &["prefix"]).unwrap_or_default();
        if let Some(map) = str_of(source, &["configMapRef", "name"]) {
            let data = objects
                .data("ConfigMap", map)
                .ok_or_else(|| format!("envFrom reads ConfigMap {map}, not in this release"))?;
            for (key, value) in data {
                env.insert(
                    format!("{prefix}{key}"),
                    String::from_utf8_lossy(&value).into_owned(),
                );
            }
        } else if let Some(secret) = str_of(source, &["secretRef", "name"]) {
            let data = objects
                .data("Secret", secret)
                .ok_or_else(|| format!("envFrom reads Secret {secret}, not in this release"))?;
            for key in data.keys() {
                secret_env.insert(format!("{prefix}{key}"), secret_name(secret, key));
            }
        }
    }

    // Resources: limits, or requests where a chart sets no limit.
    let resources = ["limits", "requests"]
        .iter()
        .map(|which| at(container, &["resources", which]))
        .find(|r| r.as_object().is_some_and(|m| !m.is_empty()))
        .map(|r| -> Result<ResourcesRequest, String> {
            let cpu = match r.get("cpu") {
                Some(v) => Some(cpu_quantity(&crate::helm::template::print(v)).ok_or_else(
                    || format!("cpu {} is not a quantity", crate::helm::template::print(v)),
                )?),
                None => None,
            };
            let memory = match r.get("memory") {
                Some(v) => Some(MemoryValue::Bytes(
                    memory_quantity(&crate::helm::template::print(v)).ok_or_else(|| {
                        format!(
                            "memory {} is not a quantity",
                            crate::helm::template::print(v)
                        )
                    })?,
                )),
                None => None,
            };
            Ok(ResourcesRequest { cpu, memory })
        })
        .transpose()?;

    // Probes.
    let check = |probe: &Value| -> Result<Option<CheckRequest>, String> {
        if probe.is_null() {
            return Ok(None);
        }
        let kind = if let Some(http) = probe.get("httpGet") {
            ProbeRequest::Http {
                path: str_of(http, &["path"]).unwrap_or("/").to_string(),
                port: port_of(at(http, &["port"]))?,
            }
        } else if let Some(tcp) = probe.get("tcpSocket") {
            ProbeRequest::Tcp {
                port: port_of(at(tcp, &["port"]))?,
            }
        } else if let Some(exec) = probe.get("exec") {
            ProbeRequest::Exec {
                command: list(exec, &["command"])
                    .iter()
                    .map(crate::helm::template::print)
                    .collect(),
            }
        } else {
            return Err("a probe is neither httpGet, tcpSocket nor exec".into());
        };
        let seconds = |field: &str, default: u64| at(probe, &[field]).as_u64().unwrap_or(default);
        Ok(Some(CheckRequest {
            probe: kind,
            interval_s: seconds("periodSeconds", 10),
            timeout_s: seconds("timeoutSeconds", 1),
            retries: seconds("failureThreshold", 3) as u32,
            start_period_s: seconds("initialDelaySeconds", 0),
        }))
    };
    let health = HealthRequest {
        liveness: check(at(container, &["livenessProbe"]))?,
        readiness: check(at(container, &["readinessProbe"]))?,
    };

    // Volumes: ConfigMaps and Secrets become files; claims become Hivemind volumes; an
    // emptyDir is the container's own writable filesystem.
    let mut volumes = Vec::new();
    let mut secrets = Vec::new();
    let claims: BTreeSet<&str> = list(object, &["spec", "volumeClaimTemplates"])
        .iter()
        .filter_map(|c| str_of(c, &["metadata", "name"]))
        .collect();
    for mount in list(container, &["volumeMounts"]) {
        let volume_name = str_of(mount, &["name"]).unwrap_or_default();
        let path = str_of(mount, &["mountPath"])
            .unwrap_or_default()
            .trim_end_matches('/');
        let volume = list(pod, &["spec", "volumes"])
            .iter()
            .find(|v| str_of(v, &["name"]) == Some(volume_name));
        let source = match volume {
            Some(v) if v.get("configMap").is_some() => Some(("ConfigMap", &v["configMap"], "name")),
            Some(v) if v.get("secret").is_some() => Some(("Secret", &v["secret"], "secretName")),
            _ => None,
        };
        if let Some((kind, source, name_field)) = source {
            let object_name = str_of(source, &[name_field]).unwrap_or_default();
            let data = objects.data(kind, object_name).ok_or_else(|| {
                format!("volume {volume_name} mounts {kind} {object_name}, not in this release")
            })?;
            let items: Vec<(String, String)> = match source.get("items") {
                Some(items) => list(items, &[])
                    .iter()
                    .map(|i| {
                        (
                            str_of(i, &["key"]).unwrap_or_default().to_string(),
                            str_of(i, &["path"]).unwrap_or_default().to_string(),
                        )
                    })
                    .collect(),
                None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
            };
            let sub_path = str_of(mount, &["subPath"]);
            for (key, file) in items {
                let value = data.get(&key).ok_or_else(|| {
                    format!("volume {volume_name}: {kind} {object_name} has no key {key}")
                })?;
                if let Some(sub) = sub_path
                    && sub != file
                {
                    continue;
                }
                let secret = secret_name(object_name, &key);
                plan.secrets
                    .entry(secret.clone())
                    .or_insert_with(|| value.clone());
                secrets.push(SecretMount {
                    name: secret,
                    path: if sub_path.is_some() {
                        path.to_string()
                    } else {
                        format!("{path}/{file}")
                    },
                });
            }
        } else if volume.is_some_and(|v| v.get("emptyDir").is_some()) {
            continue;
        } else if let Some(claim) = volume
            .and_then(|v| str_of(v, &["persistentVolumeClaim", "claimName"]))
            .or_else(|| claims.contains(volume_name).then_some(volume_name))
        {
            let volume = if claims.contains(claim) {
                format!("{claim}-{name}")
            } else {
                claim.to_string()
            };
            volumes.push(VolumeMountRequest {
                name: volume,
                mount_path: path.to_string(),
            });
        } else {
            return Err(format!(
                "volume {volume_name} is of a kind Hivemind does not mount (configMap, secret, \
                 emptyDir and persistentVolumeClaim are)"
            ));
        }
    }

    let constraints = string_map(at(pod, &["spec", "nodeSelector"]));
    let request = DeployRequest {
        image,
        name,
        replicas: Some(
            at(object, &["spec", "replicas"])
                .as_u64()
                .map(|r| r as u32)
                .unwrap_or(1),
        ),
        resources,
        volumes,
        env,
        ports,
        labels: labels.clone(),
        health: (health.liveness.is_some() || health.readiness.is_some()).then_some(health),
        constraints,
        secrets,
        secret_env,
        ..Default::default()
    };
    Ok((request, labels, named_ports))
}

/// The apps whose pods a selector picks.
fn selected<'a>(selector: &BTreeMap<String, String>, pods: &'a [Pods]) -> Vec<&'a Pods> {
    pods.iter()
        .filter(|p| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
        .collect()
}

/// A Service: its target ports become the app's ports; NodePort and LoadBalancer ports are
/// published on every node.
fn service(object: &Value, pods: &[Pods], plan: &mut Plan) -> Result<(), String> {
    let name = str_of(object, &["metadata", "name"]).unwrap_or_default();
    let selector = string_map(at(object, &["spec", "selector"]));
    if selector.is_empty() {
        return Err("a Service without a selector has no Hivemind equivalent".into());
    }
    let apps = selected(&selector, pods);
    let [pod] = apps.as_slice() else {
        return Err(format!(
            "its selector picks {} workloads of this release; Hivemind maps a Service onto one",
            apps.len()
        ));
    };
    let kind = str_of(object, &["spec", "type"]).unwrap_or("ClusterIP");
    let app = pod.app;
    let app_name = plan.apps[app].name.clone();
    if name != app_name {
        plan.warnings.push(format!(
            "Service/{name}: reach it as {app_name} (Hivemind names a service after its app)"
        ));
    }
    for port in list(object, &["spec", "ports"]) {
        let number = at(port, &["port"])
            .as_u64()
            .and_then(|p| u16::try_from(p).ok());
        let number = number.ok_or("a port has no port number")?;
        let target = match at(port, &["targetPort"]) {
            Value::Null => number,
            Value::Number(n) => n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or("bad targetPort")?,
            Value::String(port_name) => *pod
                .named_ports
                .get(port_name)
                .ok_or_else(|| format!("targetPort {port_name} is no port of {app_name}"))?,
            _ => return Err("bad targetPort".into()),
        };
        let request = &mut plan.apps[app];
        if !request.ports.contains(&target) {
            request.ports.push(target);
        }
        if number != target && kind == "ClusterIP" {
            plan.warnings.push(format!(
                "Service/{name}: port {number} is served on the container's port {target} \
                 (Hivemind's service address keeps the container's ports)"
            ));
        }
        let published = match kind {
            "NodePort" => at(port, &["nodePort"])
                .as_u64()
                .and_then(|p| u16::try_from(p).ok()),
            "LoadBalancer" => Some(number),
            _ => None,
        };
        if let Some(published) = published
            && !request.publish.iter().any(|p| p.published == published)
        {
            request.publish.push(PublishedPort { published, target });
        }
    }
    Ok(())
}

/// An Ingress: the host of its rules becomes the HTTP ingress's domain of the app behind it.
fn ingress(
    object: &Value,
    objects: &Objects,
    pods: &[Pods],
    plan: &mut Plan,
) -> Result<(), String> {
    let name = str_of(object, &["metadata", "name"]).unwrap_or_default();
    let rules = list(object, &["spec", "rules"]);
    if rules.is_empty() {
        return Err("an Ingress without rules has no Hivemind equivalent".into());
    }
    if !list(object, &["spec", "tls"]).is_empty() {
        plan.warnings.push(format!(
            "Ingress/{name}: TLS comes from the certificates of `security tls add`, not from \
             the Ingress's secret"
        ));
    }
    for rule in rules {
        let host = str_of(rule, &["host"])
            .ok_or("a rule without a host: Hivemind's ingress routes by domain")?;
        let paths = list(rule, &["http", "paths"]);
        let backends: BTreeSet<&str> = paths
            .iter()
            .filter_map(|p| str_of(p, &["backend", "service", "name"]))
            .collect();
        let [backend] = backends.iter().copied().collect::<Vec<_>>()[..] else {
            return Err(format!(
                "host {host} routes to {} services; Hivemind routes a domain to one app",
                backends.len()
            ));
        };
        if paths
            .iter()
            .any(|p| str_of(p, &["path"]).is_some_and(|p| p != "/"))
        {
            plan.warnings.push(format!(
                "Ingress/{name}: host {host} takes every path to {backend}"
            ));
        }
        let service = objects
            .get("Service", backend)
            .ok_or_else(|| format!("backend {backend} is no Service of this release"))?;
        let apps = selected(&string_map(at(service, &["spec", "selector"])), pods);
        let [pod] = apps.as_slice() else {
            return Err(format!("Service {backend} does not pick one workload"));
        };
        let request = &mut plan.apps[pod.app];
        match &request.service {
            Some(existing) if existing != host => {
                return Err(format!(
                    "{} already has the domain {existing}; an app has one",
                    request.name
                ));
            }
            _ => request.service = Some(host.to_string()),
        }
    }
    Ok(())
}

/// A NetworkPolicy with pod selectors and address blocks.
fn policy(manifest: &Manifest, plan: &mut Plan) -> Result<(), String> {
    let object = &manifest.object;
    crate::model::validate_name("name", &manifest.name).map_err(|e| e.message)?;
    let selector = |value: &Value| -> Result<Selector, String> {
        if value.get("matchExpressions").is_some() {
            return Err("matchExpressions are not supported; use matchLabels".into());
        }
        let labels = string_map(at(value, &["matchLabels"]));
        Ok(Selector { labels })
    };
    let spec = at(object, &["spec"]);
    let pod_selector = selector(at(spec, &["podSelector"]))?;
    let types: Vec<String> = match spec.get("policyTypes") {
        Some(types) => list(types, &[])
            .iter()
            .map(crate::helm::template::print)
            .collect(),
        None if spec.get("egress").is_some() => vec!["Ingress".into(), "Egress".into()],
        None => vec!["Ingress".into()],
    };
    let rules = |field: &str, peers_field: &str| -> Result<Vec<RuleBody>, String> {
        let mut out = Vec::new();
        for rule in list(spec, &[field]) {
            let mut ports = Vec::new();
            for port in list(rule, &["ports"]) {
                let protocol = str_of(port, &["protocol"]).unwrap_or("TCP").to_lowercase();
                let number = match at(port, &["port"]) {
                    Value::Null => None,
                    Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
                    other => {
                        return Err(format!(
                            "port {} is named; Hivemind's policies take numbers",
                            crate::helm::template::print(other)
                        ));
                    }
                };
                let end = at(port, &["endPort"])
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok());
                ports.push(PortRange {
                    protocol,
                    port_min: number,
                    port_max: end.or(number),
                });
            }
            let mut peers = Vec::new();
            for peer in list(rule, &[peers_field]) {
                if let Some(namespaces) = peer.get("namespaceSelector")
                    && namespaces.as_object().is_some_and(|m| !m.is_empty())
                {
                    return Err("namespaceSelector: Hivemind has no namespaces".into());
                }
                if let Some(block) = peer.get("ipBlock") {
                    if !list(block, &["except"]).is_empty() {
                        return Err("ipBlock.except is not supported".into());
                    }
                    peers.push(Peer {
                        ip_block: str_of(block, &["cidr"]).map(str::to_string),
                        selector: None,
                    });
                } else if let Some(pods) = peer.get("podSelector") {
                    peers.push(Peer {
                        ip_block: None,
                        selector: Some(selector(pods)?),
                    });
                } else {
                    peers.push(Peer {
                        ip_block: Some("0.0.0.0/0".into()),
                        selector: None,
                    });
                }
            }
            let peers = (!list(rule, &[peers_field]).is_empty()).then_some(peers);
            out.push(RuleBody {
                ports,
                from: if peers_field == "from" {
                    peers.clone()
                } else {
                    None
                },
                to: if peers_field == "to" { peers } else { None },
            });
        }
        Ok(out)
    };
    let policy = NetworkPolicy {
        name: manifest.name.clone(),
        selector: pod_selector,
        ingress_rules: types
            .iter()
            .any(|t| t == "Ingress")
            .then(|| rules("ingress", "from"))
            .transpose()?,
        egress_rules: types
            .iter()
            .any(|t| t == "Egress")
            .then(|| rules("egress", "to"))
            .transpose()?,
    };
    policy.validate().map_err(|e| e.to_string())?;
    plan.policies.push(policy);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::helm::chart::Chart;
    use crate::helm::render::{ReleaseInfo, render};

    fn manifests(yaml: &str) -> Vec<Manifest> {
        let chart = Chart::from_files(BTreeMap::from([
            (
                "Chart.yaml".to_string(),
                b"apiVersion: v2\nname: t\nversion: 1.0.0\n".to_vec(),
            ),
            ("templates/all.yaml".to_string(), yaml.as_bytes().to_vec()),
        ]))
        .unwrap();
        let release = ReleaseInfo {
            name: "r".into(),
            namespace: "default".into(),
            revision: 1,
            is_upgrade: false,
        };
        render(&chart, &release, &json!({})).unwrap().manifests
    }

    /// `helm create`'s chart as it is: one app with its port, probes and service; the
    /// ServiceAccount accepted; the test hook left out by the renderer.
    #[test]
    fn helm_create_chart_maps_onto_one_app() {
        let files = crate::helm::create::chart_files("web", None)
            .into_iter()
            .map(|f| (f.path.to_string(), f.content.into_bytes()))
            .collect();
        let chart = Chart::from_files(files).unwrap();
        let release = ReleaseInfo {
            name: "prod".into(),
            namespace: "default".into(),
            revision: 1,
            is_upgrade: false,
        };
        let rendered = render(&chart, &release, &json!({})).unwrap();
        assert_eq!(rendered.hooks, ["Pod/prod-web-test-connection"]);
        let plan = plan(&rendered.manifests);
        assert!(plan.unsupported.is_empty(), "{:?}", plan.unsupported);
        assert_eq!(plan.accepted, ["ServiceAccount/prod-web"]);
        let [app] = plan.apps.as_slice() else {
            panic!("{:?}", plan.apps)
        };
        assert_eq!(app.name, "prod-web");
        assert_eq!(app.image, "nginx:1.16.0");
        assert_eq!(app.replicas, Some(1));
        assert_eq!(app.ports, [80]);
        assert_eq!(app.labels["app.kubernetes.io/instance"], "prod");
        let health = app.health.as_ref().unwrap();
        assert_eq!(
            health.readiness.as_ref().unwrap().probe,
            ProbeRequest::Http {
                path: "/".into(),
                port: 80
            }
        );
        let Command::Deploy(spec, _) = Command::deploy(app).unwrap() else {
            unreachable!()
        };
        assert_eq!(spec.image, "docker.io/library/nginx:1.16.0");
    }

    use crate::command::Command;

    #[test]
    fn config_secrets_services_ingress_and_policies() {
        let plan = plan(&manifests(
            r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: site}
data:
  index.html: "<h1>hi</h1>"
  MODE: fast
---
apiVersion: v1
kind: Secret
metadata: {name: db}
data:
  password: aHVudGVyMg==
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  replicas: 2
  template:
    metadata:
      labels: {tier: front}
    spec:
      nodeSelector: {disk: ssd}
      containers:
      - name: web
        image: registry.local/web:2
        ports:
        - {name: http, containerPort: 8080}
        env:
        - {name: A, value: "1"}
        - name: MODE
          valueFrom: {configMapKeyRef: {name: site, key: MODE}}
        - name: PASSWORD
          valueFrom: {secretKeyRef: {name: db, key: password}}
        resources:
          limits: {cpu: 250m, memory: 64Mi}
        livenessProbe:
          tcpSocket: {port: http}
          periodSeconds: 5
        volumeMounts:
        - {name: site, mountPath: /www}
        - {name: scratch, mountPath: /tmp/x}
        - {name: data, mountPath: /data}
      volumes:
      - name: site
        configMap: {name: site, items: [{key: index.html, path: index.html}]}
      - name: scratch
        emptyDir: {}
  volumeClaimTemplates:
  - metadata: {name: data}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {tier: front}
  ports:
  - {port: 80, targetPort: http, nodePort: 30080}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  rules:
  - host: shop.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web, port: {number: 80}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-in}
spec:
  podSelector: {matchLabels: {tier: front}}
  ingress:
  - from:
    - podSelector: {matchLabels: {tier: edge}}
    - ipBlock: {cidr: 10.0.0.0/8}
    ports:
    - {protocol: TCP, port: 8080}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: backup}
spec: {}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
"#,
        ));
        assert_eq!(
            plan.unsupported,
            [
                "CronJob/backup: Hivemind has no CronJob (it runs Deployments, StatefulSets, \
              Services, ConfigMaps, Secrets, NetworkPolicies and Ingresses)"
            ]
        );
        assert_eq!(plan.accepted, ["HorizontalPodAutoscaler/web"]);
        let app = &plan.apps[0];
        assert_eq!(app.replicas, Some(2));
        assert_eq!(app.env["A"], "1");
        assert_eq!(app.env["MODE"], "fast");
        assert_eq!(app.secret_env["PASSWORD"], "db-password");
        assert_eq!(plan.secrets["db-password"], b"hunter2");
        assert_eq!(plan.secrets["site-index-html"], b"<h1>hi</h1>");
        assert_eq!(
            app.secrets,
            [SecretMount {
                name: "site-index-html".into(),
                path: "/www/index.html".into()
            }]
        );
        assert_eq!(app.volumes.len(), 1);
        assert_eq!(app.volumes[0].name, "data-web");
        assert_eq!(app.constraints["disk"], "ssd");
        assert_eq!(app.resources.as_ref().unwrap().cpu, Some(0.25));
        assert_eq!(
            app.resources.as_ref().unwrap().memory,
            Some(MemoryValue::Bytes(64 << 20))
        );
        let liveness = app.health.as_ref().unwrap().liveness.as_ref().unwrap();
        assert_eq!(liveness.probe, ProbeRequest::Tcp { port: 8080 });
        assert_eq!(liveness.interval_s, 5);
        assert_eq!(app.ports, [8080]);
        assert_eq!(
            app.publish,
            [PublishedPort {
                published: 30080,
                target: 8080
            }]
        );
        assert_eq!(app.service.as_deref(), Some("shop.example.com"));
        let policy = &plan.policies[0];
        assert_eq!(policy.selector.labels["tier"], "front");
        let rule = &policy.ingress_rules.as_ref().unwrap()[0];
        assert_eq!(rule.ports[0].port_min, Some(8080));
        let peers = rule.from.as_ref().unwrap();
        assert_eq!(peers[0].selector.as_ref().unwrap().labels["tier"], "edge");
        assert_eq!(peers[1].ip_block.as_deref(), Some("10.0.0.0/8"));
        assert!(policy.egress_rules.is_none());
        assert!(Command::deploy(app).is_ok());
    }

    #[test]
    fn workloads_hivemind_cannot_run_say_why() {
        let plan = plan(&manifests(
            r#"
kind: Deployment
metadata: {name: two}
spec:
  template:
    spec:
      containers: [{name: a, image: x}, {name: b, image: y}]
---
kind: Deployment
metadata: {name: cmd}
spec:
  template:
    spec:
      containers: [{name: a, image: x, args: ["--flag"]}]
---
kind: Deployment
metadata: {name: Upper}
spec:
  template:
    spec:
      containers: [{name: a, image: x}]
---
kind: Service
metadata: {name: orphan}
spec:
  selector: {app: nothing}
  ports: [{port: 80}]
---
kind: NetworkPolicy
metadata: {name: ns}
spec:
  podSelector: {}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: a}}}]
"#,
        ));
        let text = plan.unsupported.join("\n");
        assert!(text.contains("Deployment/two: 2 containers"), "{text}");
        assert!(
            text.contains("Deployment/cmd: the container sets args"),
            "{text}"
        );
        assert!(text.contains("Deployment/Upper"), "{text}");
        assert!(
            text.contains("Service/orphan: its selector picks 0"),
            "{text}"
        );
        assert!(
            text.contains("NetworkPolicy/ns: namespaceSelector"),
            "{text}"
        );
        assert!(plan.apps.is_empty());
    }

    #[test]
    fn names_and_quantities() {
        assert_eq!(secret_name("my_cm", "app.conf"), "my-cm-app-conf");
        assert_eq!(secret_name("db", "--x--"), "db-x");
        assert_eq!(cpu_quantity("500m"), Some(0.5));
        assert_eq!(cpu_quantity("2"), Some(2.0));
        assert_eq!(cpu_quantity("x"), None);
        assert_eq!(memory_quantity("1Gi"), Some(1 << 30));
        assert_eq!(memory_quantity("512M"), Some(512_000_000));
        assert_eq!(memory_quantity("1000"), Some(1000));
        assert_eq!(memory_quantity("lots"), None);
    }
}
