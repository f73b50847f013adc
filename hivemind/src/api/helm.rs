//! /api/helm: chart repositories and releases (see `crate::helm` and `node::helm`).

use axum::extract::State;

use super::{ApiError, AppState, Json, Path};
use crate::contract::{
    ErrorBody, InstallRequest, Message, ReleaseView, RepoAddRequest, RepoView, RollbackRequest,
    UninstallAnswer,
};
use crate::model::validate_name;

/// Largest install or upgrade body: a chart package of up to 1 MiB, in base64, and values.
pub const BODY_LIMIT: usize = 2 << 20;

fn names(namespace: &str, name: &str) -> Result<(), ApiError> {
    validate_name("namespace", namespace)?;
    validate_name("name", name)?;
    Ok(())
}

/// Adds a chart repository (`helm repo add`): its `index.yaml` must load.
#[utoipa::path(
    post,
    path = "/api/helm/repositories",
    tag = "helm",
    request_body = RepoAddRequest,
    responses(
        (status = 200, description = "added", body = RepoView),
        (status = 400, description = "a field is invalid", body = ErrorBody),
        (status = 409, description = "the name is taken by another URL", body = ErrorBody),
        (status = 422, description = "the URL holds no chart repository index", body = ErrorBody),
        (status = 502, description = "the repository cannot be reached", body = ErrorBody),
    )
)]
pub async fn repo_add(
    State(node): State<AppState>,
    Json(request): Json<RepoAddRequest>,
) -> Result<axum::Json<RepoView>, ApiError> {
    Ok(axum::Json(node.helm_repo_add(request).await?))
}

/// The chart repositories.
#[utoipa::path(
    get,
    path = "/api/helm/repositories",
    tag = "helm",
    responses((status = 200, description = "the repositories", body = [RepoView]))
)]
pub async fn repos(State(node): State<AppState>) -> Result<axum::Json<Vec<RepoView>>, ApiError> {
    Ok(axum::Json(node.helm_repos()?))
}

/// Removes a chart repository; releases installed from it stay.
#[utoipa::path(
    delete,
    path = "/api/helm/repositories/{name}",
    tag = "helm",
    params(("name" = String, Path)),
    responses(
        (status = 200, description = "removed", body = Message),
        (status = 404, description = "no such repository", body = ErrorBody),
    )
)]
pub async fn repo_remove(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Message>, ApiError> {
    validate_name("name", &name)?;
    node.helm_repo_remove(&name).await?;
    Ok(axum::Json(Message::ok(format!(
        "Removed repository {name}"
    ))))
}

/// Installs a chart as a release (`helm install`): from a repository (`chart`) or a package.
#[utoipa::path(
    post,
    path = "/api/helm/releases",
    tag = "helm",
    request_body = InstallRequest,
    responses(
        (status = 200, description = "installed (or, with dry_run, what would be)", body = ReleaseView),
        (status = 400, description = "a field or a value is invalid, or a rendered app is (named in the message)", body = ErrorBody),
        (status = 409, description = "the release exists, or it would take over an object it did not create", body = ErrorBody),
        (status = 422, description = "the chart does not load or render, fails its digest, or has objects Hivemind cannot run (listed)", body = ErrorBody),
        (status = 502, description = "the repository cannot be reached", body = ErrorBody),
    )
)]
pub async fn install(
    State(node): State<AppState>,
    Json(request): Json<InstallRequest>,
) -> Result<axum::Json<ReleaseView>, ApiError> {
    let dry_run = request.dry_run;
    Ok(axum::Json(ReleaseView::of(
        node.helm_install(request).await?,
        dry_run,
    )))
}

/// Each release's newest revision (`helm ls`).
#[utoipa::path(
    get,
    path = "/api/helm/releases",
    tag = "helm",
    responses((status = 200, description = "the releases", body = [ReleaseView]))
)]
pub async fn releases(
    State(node): State<AppState>,
) -> Result<axum::Json<Vec<ReleaseView>>, ApiError> {
    Ok(axum::Json(
        node.helm_releases()?
            .into_iter()
            .map(|r| ReleaseView::of(r, false))
            .collect(),
    ))
}

/// A release's newest revision (`helm status`).
#[utoipa::path(
    get,
    path = "/api/helm/releases/{namespace}/{name}",
    tag = "helm",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "the release", body = ReleaseView),
        (status = 404, description = "no such release", body = ErrorBody),
    )
)]
pub async fn release(
    State(node): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<axum::Json<ReleaseView>, ApiError> {
    names(&namespace, &name)?;
    Ok(axum::Json(ReleaseView::of(
        node.helm_release(&namespace, &name)?,
        false,
    )))
}

/// Upgrades a release to a chart and values (`helm upgrade`); the body's `name` and
/// `namespace` must be the path's.
#[utoipa::path(
    post,
    path = "/api/helm/releases/{namespace}/{name}",
    tag = "helm",
    params(("namespace" = String, Path), ("name" = String, Path)),
    request_body = InstallRequest,
    responses(
        (status = 200, description = "upgraded (or, with dry_run, what would be)", body = ReleaseView),
        (status = 400, description = "a field or a value is invalid", body = ErrorBody),
        (status = 404, description = "no such release", body = ErrorBody),
        (status = 409, description = "it would take over an object it did not create", body = ErrorBody),
        (status = 422, description = "the chart does not load or render, fails its digest, or has objects Hivemind cannot run", body = ErrorBody),
        (status = 502, description = "the repository cannot be reached", body = ErrorBody),
    )
)]
pub async fn upgrade(
    State(node): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    Json(request): Json<InstallRequest>,
) -> Result<axum::Json<ReleaseView>, ApiError> {
    names(&namespace, &name)?;
    if request.name != name || request.namespace != namespace {
        return Err(ApiError::bad_request(
            "invalid_field",
            "name: the body's name and namespace must be the path's",
        ));
    }
    let dry_run = request.dry_run;
    Ok(axum::Json(ReleaseView::of(
        node.helm_upgrade(&namespace, &name, request).await?,
        dry_run,
    )))
}

/// Uninstalls a release: what its newest revision made goes (volumes stay), and its history.
#[utoipa::path(
    delete,
    path = "/api/helm/releases/{namespace}/{name}",
    tag = "helm",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "uninstalled", body = UninstallAnswer),
        (status = 404, description = "no such release", body = ErrorBody),
    )
)]
pub async fn uninstall(
    State(node): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<axum::Json<UninstallAnswer>, ApiError> {
    names(&namespace, &name)?;
    let removed = node.helm_uninstall(&namespace, &name).await?;
    Ok(axum::Json(UninstallAnswer {
        name,
        namespace,
        removed,
    }))
}

/// A release's revisions, oldest first (`helm history`).
#[utoipa::path(
    get,
    path = "/api/helm/releases/{namespace}/{name}/history",
    tag = "helm",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "the revisions", body = [ReleaseView]),
        (status = 404, description = "no such release", body = ErrorBody),
    )
)]
pub async fn history(
    State(node): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<axum::Json<Vec<ReleaseView>>, ApiError> {
    names(&namespace, &name)?;
    node.helm_release(&namespace, &name)?;
    Ok(axum::Json(
        node.helm_history(&namespace, &name)?
            .into_iter()
            .map(|r| ReleaseView::of(r, false))
            .collect(),
    ))
}

/// Returns a release to an earlier revision as a new one (`helm rollback`).
#[utoipa::path(
    post,
    path = "/api/helm/releases/{namespace}/{name}/rollback",
    tag = "helm",
    params(("namespace" = String, Path), ("name" = String, Path)),
    request_body = RollbackRequest,
    responses(
        (status = 200, description = "rolled back", body = ReleaseView),
        (status = 400, description = "no such revision", body = ErrorBody),
        (status = 404, description = "no such release", body = ErrorBody),
        (status = 409, description = "it would take over an object it did not create", body = ErrorBody),
    )
)]
pub async fn rollback(
    State(node): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    Json(request): Json<RollbackRequest>,
) -> Result<axum::Json<ReleaseView>, ApiError> {
    names(&namespace, &name)?;
    if request.revision == Some(0) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "revision: revisions count from 1",
        ));
    }
    Ok(axum::Json(ReleaseView::of(
        node.helm_rollback(&namespace, &name, request.revision)
            .await?,
        false,
    )))
}
