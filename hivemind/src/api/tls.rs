//! /api/security/tls: the HTTPS ingress's certificates. Keys go in and are
//! sealed; only certificates' metadata comes out.

use axum::extract::State;
use axum::http::StatusCode;

use super::{ApiError, AppState, Json, Path};
use crate::command::{Command, Outcome, tls_domain};
use crate::contract::{AddTlsCert, ErrorBody, Message, TlsCertAnswer, TlsCertView};
use crate::ingress::name_covers;
use crate::services::{SERVICES, ServiceRecord};
use crate::state::{TLS_CERTS, TlsCertRecord};

fn views(node: &AppState, mut records: Vec<TlsCertRecord>) -> Result<Vec<TlsCertView>, ApiError> {
    let services: Vec<ServiceRecord> = node.store().values(SERVICES)?;
    records.sort_by(|a, b| a.domain.cmp(&b.domain));
    Ok(records
        .into_iter()
        .map(|r| TlsCertView {
            serves: services
                .iter()
                .filter(|s| {
                    s.domain
                        .as_deref()
                        .is_some_and(|d| name_covers(&r.domain, d))
                })
                .map(|s| s.app.clone())
                .collect(),
            domain: r.domain,
            names: r.names,
            issuer: r.issuer,
            not_before: r.not_before,
            not_after: r.not_after,
            fingerprint: r.fingerprint,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
        .collect())
}

/// Adds the certificate of a domain, or replaces it (a renewal); every
/// node's ingress serves it within seconds.
#[utoipa::path(
    post,
    path = "/api/security/tls",
    tag = "security",
    request_body = AddTlsCert,
    responses(
        (status = 201, description = "added", body = TlsCertAnswer),
        (status = 200, description = "replaced the domain's certificate", body = TlsCertAnswer),
        (status = 400, description = "the domain, certificate or key is invalid, they do not match, or it expired (named in the message)", body = ErrorBody),
    )
)]
pub async fn add(
    State(node): State<AppState>,
    Json(request): Json<AddTlsCert>,
) -> Result<(StatusCode, axum::Json<TlsCertAnswer>), ApiError> {
    let command = Command::put_tls_cert(&request.domain, request.cert, request.key.into_bytes())?;
    let Outcome::TlsCertSet { domain, created } = node.execute(command).await? else {
        return Err(ApiError::internal(
            "certificate put returned an unexpected outcome",
        ));
    };
    let record = node
        .store()
        .value(TLS_CERTS, &domain)?
        .ok_or_else(|| ApiError::internal("the certificate was not stored"))?;
    let Some(certificate) = views(&node, vec![record])?.pop() else {
        return Err(ApiError::internal("the certificate has no view"));
    };
    let (status, verb) = if created {
        (StatusCode::CREATED, "Added")
    } else {
        (StatusCode::OK, "Replaced")
    };
    Ok((
        status,
        axum::Json(TlsCertAnswer {
            success: true,
            message: format!("{verb} the certificate of {domain}"),
            certificate,
        }),
    ))
}

/// Lists the certificates: domains, names, validity and the apps they serve.
#[utoipa::path(
    get,
    path = "/api/security/tls",
    tag = "security",
    responses((status = 200, description = "every certificate, by domain", body = Vec<TlsCertView>))
)]
pub async fn list(State(node): State<AppState>) -> Result<axum::Json<Vec<TlsCertView>>, ApiError> {
    let records = node.store().values(TLS_CERTS)?;
    Ok(axum::Json(views(&node, records)?))
}

/// Removes a domain's certificate; the ingress stops serving it.
#[utoipa::path(
    delete,
    path = "/api/security/tls/{domain}",
    tag = "security",
    params(("domain" = String, Path, description = "the certificate's domain")),
    responses(
        (status = 200, description = "removed", body = Message),
        (status = 400, description = "the domain is invalid", body = ErrorBody),
        (status = 404, description = "no certificate for that domain", body = ErrorBody),
    )
)]
pub async fn delete(
    State(node): State<AppState>,
    Path(domain): Path<String>,
) -> Result<axum::Json<Message>, ApiError> {
    tls_domain(&domain)?;
    let command = Command::delete_tls_cert(&domain)?;
    node.execute(command).await?;
    Ok(axum::Json(Message::ok(format!(
        "Removed the certificate of {domain}"
    ))))
}
