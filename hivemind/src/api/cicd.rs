//! /api/cicd/pipelines: CI/CD pipelines, their runs, and the webhook Git hosts call.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use super::{ApiError, AppState, Json, Path};
use crate::cicd::webhook::{self, Delivery, SIGNATURE_HEADERS};
use crate::command::{Command, Outcome};
use crate::contract::{
    ErrorBody, Message, PipelineSettings, PipelineView, RunView, StrategyRequest, WebhookAnswer,
};
use crate::model::validate_name;
use crate::state::now_secs;

fn require_name(name: &str) -> Result<(), ApiError> {
    validate_name("name", name).map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))
}

fn view(node: &AppState, name: &str) -> Result<PipelineView, ApiError> {
    let spec = node.pipeline(name)?;
    let runs = node.pipeline_runs(name)?;
    Ok(PipelineView::new(spec, &runs))
}

async fn put(
    node: &AppState,
    spec: crate::cicd::PipelineSpec,
    create: bool,
) -> Result<PipelineView, ApiError> {
    let name = spec.name.clone();
    let Outcome::PipelineSet { .. } = node
        .execute(Command::PutPipeline {
            spec: Box::new(spec),
            create,
        })
        .await?
    else {
        return Err(ApiError::internal(
            "pipeline returned an unexpected outcome",
        ));
    };
    view(node, &name)
}

/// Creates a pipeline: the branch of a git repository (`file://`, `http(s)://`), the commands
/// that test and build it, and the image its output becomes.
#[utoipa::path(
    post,
    path = "/api/cicd/pipelines",
    tag = "cicd",
    request_body = PipelineSettings,
    responses(
        (status = 201, description = "created", body = PipelineView),
        (status = 400, description = "a field is invalid (named in the message)", body = ErrorBody),
        (status = 404, description = "a secret it names does not exist", body = ErrorBody),
        (status = 409, description = "a pipeline of that name exists", body = ErrorBody),
    )
)]
pub async fn create(
    State(node): State<AppState>,
    Json(request): Json<PipelineSettings>,
) -> Result<(StatusCode, axum::Json<PipelineView>), ApiError> {
    let spec = request.create(now_secs())?;
    Ok((
        StatusCode::CREATED,
        axum::Json(put(&node, spec, true).await?),
    ))
}

/// Every pipeline, with its newest run.
#[utoipa::path(
    get,
    path = "/api/cicd/pipelines",
    tag = "cicd",
    responses((status = 200, description = "the pipelines", body = [PipelineView]))
)]
pub async fn list(State(node): State<AppState>) -> Result<axum::Json<Vec<PipelineView>>, ApiError> {
    let mut views = Vec::new();
    for spec in node.pipelines()? {
        let runs = node.pipeline_runs(&spec.name)?;
        views.push(PipelineView::new(spec, &runs));
    }
    Ok(axum::Json(views))
}

/// One pipeline and where its runs stand (`cicd get-pipeline-status`).
#[utoipa::path(
    get,
    path = "/api/cicd/pipelines/{name}",
    tag = "cicd",
    params(("name" = String, Path)),
    responses(
        (status = 200, description = "the pipeline", body = PipelineView),
        (status = 404, description = "no such pipeline", body = ErrorBody),
    )
)]
pub async fn show(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<PipelineView>, ApiError> {
    require_name(&name)?;
    Ok(axum::Json(view(&node, &name)?))
}

/// Deletes a pipeline and its runs' records (a run executing goes on to its end; the app it
/// deployed stays).
#[utoipa::path(
    delete,
    path = "/api/cicd/pipelines/{name}",
    tag = "cicd",
    params(("name" = String, Path)),
    responses(
        (status = 200, description = "deleted", body = Message),
        (status = 404, description = "no such pipeline", body = ErrorBody),
    )
)]
pub async fn delete(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Message>, ApiError> {
    require_name(&name)?;
    node.execute(Command::DeletePipeline { name: name.clone() })
        .await?;
    Ok(axum::Json(Message::ok(format!("Deleted pipeline {name}"))))
}

/// Changes what a pipeline does (`cicd configure-pipeline`): the fields given replace the
/// pipeline's, an empty string clears an optional one. Runs already queued use the new
/// settings.
#[utoipa::path(
    post,
    path = "/api/cicd/pipelines/{name}/config",
    tag = "cicd",
    params(("name" = String, Path)),
    request_body = PipelineSettings,
    responses(
        (status = 200, description = "changed", body = PipelineView),
        (status = 400, description = "a field is invalid (named in the message)", body = ErrorBody),
        (status = 404, description = "no such pipeline, or a secret it names", body = ErrorBody),
    )
)]
pub async fn configure(
    State(node): State<AppState>,
    Path(name): Path<String>,
    Json(settings): Json<PipelineSettings>,
) -> Result<axum::Json<PipelineView>, ApiError> {
    require_name(&name)?;
    let mut spec = node.pipeline(&name)?;
    settings.apply(&mut spec)?;
    Ok(axum::Json(put(&node, spec, false).await?))
}

/// Sets how each run deploys (`cicd set-deployment-strategy`), as `app deploy --strategy`
/// takes it; `{"name": ""}` goes back to the app's own strategy.
#[utoipa::path(
    post,
    path = "/api/cicd/pipelines/{name}/strategy",
    tag = "cicd",
    params(("name" = String, Path)),
    request_body = StrategyRequest,
    responses(
        (status = 200, description = "set", body = PipelineView),
        (status = 400, description = "a field is invalid (named in the message)", body = ErrorBody),
        (status = 404, description = "no such pipeline", body = ErrorBody),
    )
)]
pub async fn set_strategy(
    State(node): State<AppState>,
    Path(name): Path<String>,
    Json(strategy): Json<StrategyRequest>,
) -> Result<axum::Json<PipelineView>, ApiError> {
    require_name(&name)?;
    let mut spec = node.pipeline(&name)?;
    spec.strategy = if strategy.name.trim().is_empty() {
        None
    } else {
        Some(strategy.parse()?)
    };
    Ok(axum::Json(put(&node, spec, false).await?))
}

/// Queues a run (`cicd trigger-pipeline`); it starts when the runs before it have ended.
#[utoipa::path(
    post,
    path = "/api/cicd/pipelines/{name}/runs",
    tag = "cicd",
    params(("name" = String, Path)),
    responses(
        (status = 202, description = "queued", body = RunView),
        (status = 404, description = "no such pipeline", body = ErrorBody),
    )
)]
pub async fn trigger(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, axum::Json<RunView>), ApiError> {
    require_name(&name)?;
    let Outcome::RunQueued(run) = node
        .execute(Command::TriggerPipeline {
            name,
            trigger: "cli",
            commit: None,
        })
        .await?
    else {
        return Err(ApiError::internal("trigger returned an unexpected outcome"));
    };
    Ok((StatusCode::ACCEPTED, axum::Json(RunView::from(*run))))
}

/// The pipeline's runs, the newest first.
#[utoipa::path(
    get,
    path = "/api/cicd/pipelines/{name}/runs",
    tag = "cicd",
    params(("name" = String, Path)),
    responses(
        (status = 200, description = "the runs", body = [RunView]),
        (status = 404, description = "no such pipeline", body = ErrorBody),
    )
)]
pub async fn runs(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Vec<RunView>>, ApiError> {
    require_name(&name)?;
    node.pipeline(&name)?;
    let mut runs: Vec<RunView> = node
        .pipeline_runs(&name)?
        .into_iter()
        .map(RunView::from)
        .collect();
    runs.reverse();
    Ok(axum::Json(runs))
}

/// One run, with each step's log (its end).
#[utoipa::path(
    get,
    path = "/api/cicd/pipelines/{name}/runs/{number}",
    tag = "cicd",
    params(("name" = String, Path), ("number" = u64, Path)),
    responses(
        (status = 200, description = "the run", body = RunView),
        (status = 404, description = "no such pipeline or run", body = ErrorBody),
    )
)]
pub async fn run(
    State(node): State<AppState>,
    Path((name, number)): Path<(String, u64)>,
) -> Result<axum::Json<RunView>, ApiError> {
    require_name(&name)?;
    node.pipeline(&name)?;
    node.pipeline_runs(&name)?
        .into_iter()
        .rev()
        .find(|r| r.number == number)
        .map(|r| axum::Json(RunView::from(r)))
        .ok_or_else(|| ApiError::not_found(format!("pipeline {name} has no run {number}")))
}

/// A Git host's webhook: no token, but the body must carry the HMAC-SHA256 signature of the
/// pipeline's webhook secret (`X-Hub-Signature-256: sha256=<hex>`, or `X-Gitea-Signature`). A
/// push to the pipeline's branch queues a run; other deliveries (a ping, another branch) are
/// answered and change nothing.
#[utoipa::path(
    post,
    path = "/api/cicd/pipelines/{name}/webhook",
    tag = "cicd",
    params(("name" = String, Path)),
    request_body(content = Object, description = "the Git host's event"),
    responses(
        (status = 202, description = "a run was queued", body = WebhookAnswer),
        (status = 200, description = "not a push to the branch: nothing done", body = WebhookAnswer),
        (status = 400, description = "the body is not JSON", body = ErrorBody),
        (status = 401, description = "no signature, or one that does not match", body = ErrorBody),
        (status = 404, description = "no such pipeline, or it takes no webhooks", body = ErrorBody),
    )
)]
pub async fn webhook(
    State(node): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<WebhookAnswer>), ApiError> {
    require_name(&name)?;
    // One answer for a missing pipeline and one without a webhook secret: a caller without the
    // key learns nothing about which pipelines exist.
    let unknown = || ApiError::not_found(format!("pipeline {name} takes no webhooks"));
    let spec = node.pipeline(&name).map_err(|_| unknown())?;
    let key = node.webhook_key(&spec).await?.ok_or_else(unknown)?;
    let signature = SIGNATURE_HEADERS
        .iter()
        .find_map(|h| headers.get(*h))
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the delivery has no X-Hub-Signature-256 header",
            )
        })?;
    webhook::verify(&key, &body, signature)
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", e))?;
    let delivery = webhook::parse(&body).map_err(|e| ApiError::bad_request("invalid_body", e))?;
    let commit = match delivery {
        Delivery::Push { branch, commit } if branch == spec.branch => commit,
        Delivery::Push { branch, .. } => {
            return Ok((
                StatusCode::OK,
                axum::Json(WebhookAnswer {
                    queued: false,
                    run: None,
                    message: format!("a push to {branch}; the pipeline builds {}", spec.branch),
                }),
            ));
        }
        Delivery::Other => {
            return Ok((
                StatusCode::OK,
                axum::Json(WebhookAnswer {
                    queued: false,
                    run: None,
                    message: "not a push to a branch: nothing to build".to_string(),
                }),
            ));
        }
    };
    let Outcome::RunQueued(run) = node
        .execute(Command::TriggerPipeline {
            name,
            trigger: "webhook",
            commit,
        })
        .await?
    else {
        return Err(ApiError::internal("trigger returned an unexpected outcome"));
    };
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(WebhookAnswer {
            queued: true,
            run: Some(run.number),
            message: format!("run {} queued", run.number),
        }),
    ))
}
