//! /api/services: every app's virtual IP, DNS names, ports and endpoints.

use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::services::{ENDPOINTS, EndpointRecord, SERVICES, ServiceRecord};

fn endpoint_view(e: &EndpointRecord) -> Value {
    json!({
        "container": e.container,
        "node": e.node,
        "ip": e.ip,
        "ready": e.ready,
        "reason": e.reason,
    })
}

pub async fn list(State(node): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    let endpoints: Vec<EndpointRecord> = node.store.values(ENDPOINTS)?;
    let mut services: Vec<ServiceRecord> = node.store.values(SERVICES)?;
    services.sort_by(|a, b| a.app.cmp(&b.app));
    let list: Vec<Value> = services
        .iter()
        .map(|s| {
            let mine: Vec<&EndpointRecord> = endpoints.iter().filter(|e| e.app == s.app).collect();
            json!({
                "name": s.app,
                "vip": s.vip,
                "domain": s.domain,
                "dns_names": s.dns_names(),
                "ports": s.ports,
                "endpoints": mine.len(),
                "ready_endpoints": mine.iter().filter(|e| e.ready).count(),
            })
        })
        .collect();
    Ok(axum::Json(json!(list)))
}

pub async fn endpoints(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    crate::model::validate_name("name", &name)
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
    let service: ServiceRecord = node
        .store
        .value(SERVICES, &name)?
        .ok_or_else(|| ApiError::not_found(format!("service {name} not found")))?;
    let mut endpoints: Vec<EndpointRecord> = node
        .store
        .values::<EndpointRecord>(ENDPOINTS)?
        .into_iter()
        .filter(|e| e.app == name)
        .collect();
    endpoints.sort_by(|a, b| a.container.cmp(&b.container));
    Ok(axum::Json(json!({
        "name": service.app,
        "vip": service.vip,
        "dns_names": service.dns_names(),
        "ports": service.ports,
        "endpoints": endpoints.iter().map(endpoint_view).collect::<Vec<_>>(),
    })))
}
