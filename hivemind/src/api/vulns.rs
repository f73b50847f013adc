//! /api/security/vulndb and /api/security/scans: the vulnerability database and image scans.

use axum::body::Bytes;
use axum::extract::State;

use super::{ApiError, AppState, Json, Path, Query};
use crate::command::{Command, Outcome};
use crate::contract::{
    AddTrustedKey, ErrorBody, Message, OsvData, ScanReport, ScanRequest, TrustedKeyAnswer,
    TrustedKeyView, VulnDbImportQuery, VulnDbStatus,
};
use crate::model::validate_name;
use crate::state::{CLUSTER_SETTING, SCAN_POLICY, TRUSTED_KEYS, TrustedKey};
use crate::vuln::ScanPolicy;

/// Largest OSV file accepted by upload.
pub const VULNDB_LIMIT: usize = 1 << 30;

/// Imports OSV data sent as the body: a zip of OSV records (as osv.dev publishes each
/// ecosystem's `all.zip`), one record, or a JSON array of them. The ecosystems in the file
/// replace what the database held of them; others are kept. A file that does not read
/// changes nothing.
#[utoipa::path(
    post,
    path = "/api/security/vulndb",
    tag = "security",
    params(VulnDbImportQuery),
    request_body(content = OsvData, content_type = "application/octet-stream", description = "OSV data: a zip of records, or JSON"),
    responses(
        (status = 200, description = "imported", body = VulnDbStatus),
        (status = 400, description = "the file is not OSV data (the message names the entry and why)", body = ErrorBody),
    )
)]
pub async fn import(
    State(node): State<AppState>,
    Query(query): Query<VulnDbImportQuery>,
    body: Bytes,
) -> Result<axum::Json<VulnDbStatus>, ApiError> {
    let command = Command::import_vulndb(&body, query.max_age_days)?;
    let Outcome::VulnDbImported(status) = node.execute(command).await? else {
        return Err(ApiError::internal("import returned an unexpected outcome"));
    };
    Ok(axum::Json(*status))
}

/// What the vulnerability database holds, per ecosystem, with its age.
#[utoipa::path(
    get,
    path = "/api/security/vulndb",
    tag = "security",
    responses((status = 200, description = "the database", body = VulnDbStatus))
)]
pub async fn status(State(node): State<AppState>) -> Result<axum::Json<VulnDbStatus>, ApiError> {
    Ok(axum::Json(node.vulndb_status()?))
}

/// Scans an image (pulled first when this node does not have it) against the vulnerability
/// database, offline: the packages its layers list (dpkg, apk, Cargo.lock, package-lock.json,
/// requirements.txt) matched in each ecosystem's version order.
#[utoipa::path(
    post,
    path = "/api/security/scans",
    tag = "security",
    request_body = ScanRequest,
    responses(
        (status = 200, description = "the findings, the worst first", body = ScanReport),
        (status = 400, description = "the reference is invalid", body = ErrorBody),
        (status = 404, description = "the registry has no such image", body = ErrorBody),
        (status = 422, description = "a layer of the image cannot be read (zstd, corrupt)", body = ErrorBody),
        (status = 502, description = "the image cannot be pulled", body = ErrorBody),
    )
)]
pub async fn scan(
    State(node): State<AppState>,
    Json(request): Json<ScanRequest>,
) -> Result<axum::Json<ScanReport>, ApiError> {
    let command = Command::scan_image(&request.image, request.refresh)?;
    let Outcome::ImageScanned(report) = node.execute(command).await? else {
        return Err(ApiError::internal("scan returned an unexpected outcome"));
    };
    Ok(axum::Json(*report))
}

/// Sets the cluster's scan policy for deploys (a deploy's own `scan_policy` overrides it):
/// `warn` scans each deploy's image and records the findings on the app; `block` also refuses
/// (422) a deploy whose image has findings of `max_severity` or worse (with a fix, under
/// `only_fixed`).
#[utoipa::path(
    post,
    path = "/api/security/scan-policy",
    tag = "security",
    request_body = ScanPolicy,
    responses(
        (status = 200, description = "set", body = ScanPolicy),
        (status = 400, description = "a field is invalid (named in the message)", body = ErrorBody),
    )
)]
pub async fn set_policy(
    State(node): State<AppState>,
    Json(policy): Json<ScanPolicy>,
) -> Result<axum::Json<ScanPolicy>, ApiError> {
    policy.validate()?;
    let Outcome::ScanPolicySet(policy) = node.execute(Command::SetScanPolicy(policy)).await? else {
        return Err(ApiError::internal(
            "scan policy returned an unexpected outcome",
        ));
    };
    Ok(axum::Json(policy))
}

/// The cluster's scan policy for deploys (`off` until set).
#[utoipa::path(
    get,
    path = "/api/security/scan-policy",
    tag = "security",
    responses((status = 200, description = "the policy", body = ScanPolicy))
)]
pub async fn show_policy(State(node): State<AppState>) -> Result<axum::Json<ScanPolicy>, ApiError> {
    Ok(axum::Json(
        node.store()
            .value(SCAN_POLICY, CLUSTER_SETTING)?
            .unwrap_or_default(),
    ))
}

/// Trusts a public key's cosign signatures (an ECDSA P-256 key in PEM, as `cosign.pub`): with
/// `--require-signature` (or the cluster's policy), a deploy needs a signature one of the
/// trusted keys verifies. A key under an existing name replaces it.
#[utoipa::path(
    post,
    path = "/api/security/trust/keys",
    tag = "security",
    request_body = AddTrustedKey,
    responses(
        (status = 200, description = "trusted", body = TrustedKeyAnswer),
        (status = 400, description = "the name or key is invalid (named in the message)", body = ErrorBody),
    )
)]
pub async fn add_key(
    State(node): State<AppState>,
    Json(request): Json<AddTrustedKey>,
) -> Result<axum::Json<TrustedKeyAnswer>, ApiError> {
    let command = Command::put_trusted_key(&request.name, &request.public_key)?;
    let Outcome::TrustedKeySet {
        name,
        fingerprint,
        created,
    } = node.execute(command).await?
    else {
        return Err(ApiError::internal("trust returned an unexpected outcome"));
    };
    Ok(axum::Json(TrustedKeyAnswer {
        success: true,
        message: format!(
            "{} key {name} (sha256 {fingerprint})",
            if created { "Trusted" } else { "Replaced" }
        ),
        fingerprint,
    }))
}

/// The trusted signing keys.
#[utoipa::path(
    get,
    path = "/api/security/trust/keys",
    tag = "security",
    responses((status = 200, description = "the keys", body = Vec<TrustedKeyView>))
)]
pub async fn list_keys(
    State(node): State<AppState>,
) -> Result<axum::Json<Vec<TrustedKeyView>>, ApiError> {
    let keys: Vec<TrustedKey> = node.store().values(TRUSTED_KEYS)?;
    Ok(axum::Json(
        keys.into_iter()
            .map(|k| TrustedKeyView {
                name: k.name,
                fingerprint: k.fingerprint,
                public_key: k.pem,
                created_at: k.created_at,
            })
            .collect(),
    ))
}

/// Stops trusting a key: images only it signed are refused where signatures are required.
#[utoipa::path(
    delete,
    path = "/api/security/trust/keys/{name}",
    tag = "security",
    params(("name" = String, Path, description = "the key's name")),
    responses(
        (status = 200, description = "removed", body = Message),
        (status = 404, description = "no such key", body = ErrorBody),
    )
)]
pub async fn delete_key(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Message>, ApiError> {
    validate_name("name", &name)?;
    node.execute(Command::DeleteTrustedKey { name: name.clone() })
        .await?;
    Ok(axum::Json(Message::ok(format!(
        "Removed trusted key {name}"
    ))))
}
