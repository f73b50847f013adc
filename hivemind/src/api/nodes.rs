//! /api/nodes and /api/health.

use axum::extract::State;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::state::ContainerStatus;

/// CPU cores and memory bytes of this machine.
fn machine_resources() -> (usize, u64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    (cores, memory)
}

pub async fn list(State(node): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    let containers = node.store.containers()?;
    let (cores, memory) = machine_resources();
    let cpu_allocated: f64 = containers
        .iter()
        .filter_map(|c| c.resources.cpu)
        .fold(0.0, |a, b| a + b);
    let memory_allocated: u64 = containers.iter().filter_map(|c| c.resources.memory).sum();
    let running = containers
        .iter()
        .filter(|c| c.status == ContainerStatus::Running)
        .count();
    Ok(axum::Json(json!([{
        "id": node.id,
        "name": node.name,
        "address": node.address,
        "state": "alive",
        "subnet": node.net_config.subnet.to_string(),
        "resources": {
            "cpu_cores": cores,
            "memory_bytes": memory,
            "cpu_allocated": cpu_allocated,
            "memory_allocated": memory_allocated,
        },
        "containers": containers.len(),
        "running_containers": running,
        "runtime": node.runtime_name,
        "dataplane": node.dataplane.is_some(),
        "started_at": node.started_at,
    }])))
}

pub async fn health(State(node): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    let apps = node.store.apps()?;
    let containers = node.store.containers()?;
    let mut problems = Vec::new();
    let runtime_ok = match node.runtime.list().await {
        Ok(_) => true,
        Err(e) => {
            problems.push(format!("runtime: {e}"));
            false
        }
    };
    let mut healthy_apps = 0;
    for app in &apps {
        let view = super::apps::app_view(app, &containers);
        if view.status == "running" {
            healthy_apps += 1;
        } else {
            problems.push(format!(
                "app {}: {} of {} replicas running ({})",
                view.name, view.running, view.replicas, view.status
            ));
        }
    }
    for container in containers
        .iter()
        .filter(|c| c.status == ContainerStatus::Failed)
    {
        problems.push(format!(
            "container {}: {}",
            container.id,
            container.message.as_deref().unwrap_or("failed")
        ));
    }
    let running = containers
        .iter()
        .filter(|c| c.status == ContainerStatus::Running)
        .count();
    let status = if problems.is_empty() {
        "healthy"
    } else {
        "degraded"
    };
    Ok(axum::Json(json!({
        "status": status,
        "node": {"id": node.id, "name": node.name, "state": "alive"},
        "nodes": {"total": 1, "alive": 1},
        "runtime": {"name": node.runtime_name, "ok": runtime_ok},
        "network": {
            "bridge": node.net_config.bridge,
            "subnet": node.net_config.subnet.to_string(),
            "mtu": node.net_config.mtu,
            "dataplane": node.dataplane.is_some(),
        },
        "apps": {"total": apps.len(), "healthy": healthy_apps},
        "containers": {"total": containers.len(), "running": running},
        "problems": problems,
    })))
}
