//! /api/services: every app's virtual IP, DNS names, ports and endpoints.

use axum::extract::State;

use super::{ApiError, AppState, Path};
use crate::contract::{EndpointView, ErrorBody, ServiceEndpoints, ServiceView};
use crate::services::{ENDPOINTS, EndpointRecord, SERVICES, ServiceRecord};

fn endpoint_view(e: &EndpointRecord) -> EndpointView {
    EndpointView {
        container: e.container.clone(),
        node: e.node.clone(),
        ip: e.ip.to_string(),
        ready: e.ready,
        reason: e.reason.clone(),
    }
}

/// Lists services, by name.
#[utoipa::path(
    get,
    path = "/api/services",
    tag = "services",
    responses((status = 200, description = "every service", body = Vec<ServiceView>))
)]
pub async fn list(State(node): State<AppState>) -> Result<axum::Json<Vec<ServiceView>>, ApiError> {
    let endpoints: Vec<EndpointRecord> = node.store().values(ENDPOINTS)?;
    let mut services: Vec<ServiceRecord> = node.store().values(SERVICES)?;
    services.sort_by(|a, b| a.app.cmp(&b.app));
    let list = services
        .iter()
        .map(|s| {
            let mine: Vec<&EndpointRecord> = endpoints.iter().filter(|e| e.app == s.app).collect();
            ServiceView {
                name: s.app.clone(),
                vip: s.vip.to_string(),
                domain: s.domain.clone(),
                dns_names: s.dns_names(),
                ports: s.ports.clone(),
                endpoints: mine.len() as u64,
                ready_endpoints: mine.iter().filter(|e| e.ready).count() as u64,
            }
        })
        .collect();
    Ok(axum::Json(list))
}

/// The endpoints of one service and their readiness.
#[utoipa::path(
    get,
    path = "/api/services/{name}/endpoints",
    tag = "services",
    params(("name" = String, Path, description = "service (app) name")),
    responses(
        (status = 200, description = "the service and its endpoints", body = ServiceEndpoints),
        (status = 400, description = "the name is invalid", body = ErrorBody),
        (status = 404, description = "no such service", body = ErrorBody),
    )
)]
pub async fn endpoints(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<ServiceEndpoints>, ApiError> {
    crate::model::validate_name("name", &name)
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
    let service: ServiceRecord = node
        .store()
        .value(SERVICES, &name)?
        .ok_or_else(|| ApiError::not_found(format!("service {name} not found")))?;
    let mut endpoints: Vec<EndpointRecord> = node
        .store()
        .values::<EndpointRecord>(ENDPOINTS)?
        .into_iter()
        .filter(|e| e.app == name)
        .collect();
    endpoints.sort_by(|a, b| a.container.cmp(&b.container));
    Ok(axum::Json(ServiceEndpoints {
        name: service.app.clone(),
        vip: service.vip.to_string(),
        preview_vip: service.preview_vip.map(|v| v.to_string()),
        dns_names: service.dns_names(),
        ports: service.ports.clone(),
        endpoints: endpoints.iter().map(endpoint_view).collect(),
    }))
}
