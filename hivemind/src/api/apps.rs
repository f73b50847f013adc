//! /api/deploy, /api/apps, /api/scale, /api/restart.

use axum::extract::State;
use axum::response::Response;

use super::auth::{MaybePrincipal, forwarded_token};
use super::logs::stream_logs;
use super::{ApiError, AppState, Json, Path, Query};
use crate::command::{Command, Outcome, RolloutAction};
use crate::contract::{
    AppStatus, AppView, ContainerMetrics, DeployAnswer, DeployRequest, ErrorBody, IngressAnalysis,
    LogQuery, Message, PromoteRequest, RestartAnswer, RestartRequest, RevisionView, RolloutStatus,
    ScaleRequest, UndoRequest, VariantStatus, WaitingContainer,
};
use crate::model::validate_name;
use crate::node::ReplicaCount;
use crate::state::AppRecord;

/// An app with its replicas counted on every node of the cluster.
pub fn app_view(app: &AppRecord, replicas: Option<&ReplicaCount>) -> AppView {
    let empty = ReplicaCount::default();
    let replicas = replicas.unwrap_or(&empty);
    let running = replicas.running;
    let status = if running == app.spec.replicas && replicas.ready == app.spec.replicas {
        AppStatus::Running
    } else if replicas.failed > 0 {
        AppStatus::Failing
    } else if running == 0 {
        AppStatus::Pending
    } else {
        AppStatus::Degraded
    };
    AppView {
        name: app.spec.name.clone(),
        image: app.spec.image.clone(),
        replicas: app.spec.replicas,
        running: running as u64,
        ready: u64::from(replicas.ready),
        status,
        service: app.spec.service.clone(),
        containers: replicas.containers.clone(),
        resources: app.spec.resources,
        volumes: app.spec.volumes.clone(),
        env: app.spec.env.clone(),
        secrets: app.spec.secrets.clone(),
        secret_env: app.spec.secret_env.clone(),
        ports: app.spec.ports.clone(),
        publish: app.spec.publish.clone(),
        publish_mode: app.spec.publish_mode,
        labels: app.spec.labels.clone(),
        generation: app.generation,
        created_at: app.created_at,
        updated_at: app.updated_at,
        scan: app.scan.clone(),
    }
}

/// Deploys an app, or updates it; the image is pulled first.
#[utoipa::path(
    post,
    path = "/api/deploy",
    tag = "apps",
    request_body = DeployRequest,
    responses(
        (status = 200, description = "deployed or updated", body = DeployAnswer),
        (status = 400, description = "a field is invalid (named in the message)", body = ErrorBody),
        (status = 403, description = "the registry refused the image", body = ErrorBody),
        (status = 404, description = "the image does not exist", body = ErrorBody),
        (status = 409, description = "no node has room, or a conflict", body = ErrorBody),
        (status = 502, description = "the registry or container runtime failed", body = ErrorBody),
    )
)]
pub async fn deploy(
    State(node): State<AppState>,
    Json(request): Json<DeployRequest>,
) -> Result<axum::Json<DeployAnswer>, ApiError> {
    let outcome = node.execute(Command::deploy(&request)?).await?;
    deployed_answer(
        outcome,
        |created| {
            if created { "Deployed" } else { "Updated" }
        },
    )
}

/// The answer of a deploy or an undo: `verb` (given whether the app was created) and the
/// containers.
fn deployed_answer(
    outcome: Outcome,
    verb: impl FnOnce(bool) -> &'static str,
) -> Result<axum::Json<DeployAnswer>, ApiError> {
    let Outcome::Deployed {
        app,
        containers,
        created,
    } = outcome
    else {
        return Err(ApiError::internal("deploy returned an unexpected outcome"));
    };
    Ok(axum::Json(DeployAnswer {
        success: true,
        container_id: containers.first().cloned().unwrap_or_default(),
        message: format!(
            "{} application {app} with container(s) {}",
            verb(created),
            containers.join(", ")
        ),
        containers,
    }))
}

/// Lists apps, by name.
#[utoipa::path(
    get,
    path = "/api/apps",
    tag = "apps",
    responses((status = 200, description = "every app", body = Vec<AppView>))
)]
pub async fn list(
    State(node): State<AppState>,
    principal: MaybePrincipal,
) -> Result<axum::Json<Vec<AppView>>, ApiError> {
    let counts = node.replica_counts()?;
    let mut apps: Vec<AppView> = node
        .store()
        .apps()?
        .iter()
        .map(|app| shown(app_view(app, counts.get(&app.spec.name)), &principal))
        .collect();
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(axum::Json(apps))
}

fn require_name(name: &str) -> Result<(), ApiError> {
    validate_name("name", name).map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))
}

/// Shows one app.
#[utoipa::path(
    get,
    path = "/api/apps/{name}",
    tag = "apps",
    params(("name" = String, Path, description = "app name")),
    responses(
        (status = 200, description = "the app", body = AppView),
        (status = 400, description = "the name is invalid", body = ErrorBody),
        (status = 404, description = "no such app", body = ErrorBody),
    )
)]
pub async fn show(
    State(node): State<AppState>,
    Path(name): Path<String>,
    principal: MaybePrincipal,
) -> Result<axum::Json<AppView>, ApiError> {
    require_name(&name)?;
    let app = node
        .store()
        .app(&name)?
        .ok_or_else(|| ApiError::not_found(format!("app {name} not found")))?;
    let counts = node.replica_counts()?;
    Ok(axum::Json(shown(
        app_view(&app, counts.get(&name)),
        &principal,
    )))
}

/// What the caller may see of an app: environment values only for those
/// who may change it.
fn shown(mut view: AppView, principal: &MaybePrincipal) -> AppView {
    let sees = principal
        .as_ref()
        .is_some_and(|p| crate::acl::sees_values(&p.grant, &view.name));
    if !sees {
        for value in view.env.values_mut() {
            *value = HIDDEN.to_string();
        }
    }
    view
}

/// What replaces a value the caller may not see.
pub const HIDDEN: &str = "<hidden>";

/// Deletes an app and its containers.
#[utoipa::path(
    delete,
    path = "/api/apps/{name}",
    tag = "apps",
    params(("name" = String, Path, description = "app name")),
    responses(
        (status = 200, description = "deleted", body = Message),
        (status = 400, description = "the name is invalid", body = ErrorBody),
        (status = 404, description = "no such app", body = ErrorBody),
    )
)]
pub async fn delete(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Message>, ApiError> {
    require_name(&name)?;
    node.execute(Command::DeleteApp { name: name.clone() })
        .await?;
    Ok(axum::Json(Message::ok(format!(
        "Deleted application {name}"
    ))))
}

/// Where the app's update stands: its current generation's containers (and how many are
/// ready) against older ones still there, cluster-wide, with the reason of each container that
/// is not ready.
#[utoipa::path(
    get,
    path = "/api/apps/{name}/rollout",
    tag = "apps",
    params(("name" = String, Path, description = "app name")),
    responses(
        (status = 200, description = "the rollout's state", body = RolloutStatus),
        (status = 400, description = "the name is invalid", body = ErrorBody),
        (status = 404, description = "no such app", body = ErrorBody),
    )
)]
pub async fn rollout_status(
    State(node): State<AppState>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<axum::Json<RolloutStatus>, ApiError> {
    require_name(&name)?;
    status_of(&node, name, Some(&headers)).await.map(axum::Json)
}

/// The rollout status of app `name`; with `headers`, an A/B test's traffic figures too (asked
/// of every node with the caller's token), else they are `null`.
async fn status_of(
    node: &AppState,
    name: String,
    headers: Option<&axum::http::HeaderMap>,
) -> Result<RolloutStatus, ApiError> {
    let app = node
        .store()
        .app(&name)?
        .ok_or_else(|| ApiError::not_found(format!("app {name} not found")))?;
    let endpoints: Vec<crate::state::EndpointRecord> = node
        .store()
        .values::<crate::state::EndpointRecord>(crate::state::ENDPOINTS)?
        .into_iter()
        .filter(|e| e.app == name)
        .collect();
    let current = |e: &&crate::state::EndpointRecord| e.generation == app.generation;
    let updated = endpoints.iter().filter(current).count() as u32;
    let ready = endpoints.iter().filter(current).filter(|e| e.ready).count() as u32;
    let old = endpoints.len() as u32 - updated;
    let mut waiting: Vec<WaitingContainer> = endpoints
        .iter()
        .filter(|e| !e.ready)
        .map(|e| WaitingContainer {
            container: e.container.clone(),
            node: e.node.clone(),
            generation: e.generation,
            reason: match &e.reason {
                Some(reason) => format!("{}: {reason}", e.status.as_str()),
                None => e.status.as_str().to_string(),
            },
        })
        .collect();
    waiting.sort_by(|a, b| a.container.cmp(&b.container));
    let revision = node
        .revisions(&name)?
        .iter()
        .rev()
        .find(|r| crate::node::same_revision(&r.spec, &app.spec))
        .map(|r| r.revision);
    let rollout = app.rollout.as_ref();
    let quotas = app.active_rollout().and_then(|r| r.quotas);
    let variants = variant_statuses(node, headers, &app, &endpoints).await?;
    let test_ends_at = app
        .spec
        .strategy
        .duration_secs
        .filter(|_| !variants.is_empty())
        .zip(rollout)
        .map(|(secs, r)| r.started_ms / 1000 + u64::from(secs));
    let ingress = node
        .ingress_step_figures(&app)?
        .map(|(new, old)| IngressAnalysis {
            canary: new.into(),
            stable: old.into(),
        });
    Ok(RolloutStatus {
        ingress,
        driver: node.owner_name(&name)?,
        variants,
        test_ends_at,
        test_over: test_ends_at.is_some_and(|end| crate::state::now_secs() >= end),
        strategy: app.spec.strategy.name.clone(),
        phase: rollout.map(|r| r.phase.as_str().to_string()),
        message: rollout.and_then(|r| r.message.clone()),
        from_generation: rollout.map(|r| r.from_generation),
        allowed_new: quotas.map(|q| q.new),
        allowed_old: quotas.map(|q| q.old),
        traffic_percent: app
            .active_rollout()
            .and_then(|r| r.weight)
            .map(|w| f64::from(w) / 10.0),
        step: app
            .active_rollout()
            .filter(|_| !app.spec.strategy.steps.is_empty())
            .map(|r| r.step + 1),
        steps: (!app.spec.strategy.steps.is_empty())
            .then_some(app.spec.strategy.steps.len() as u32),
        complete: {
            // An A/B test runs each variant's replicas.
            let wanted: u32 = if app.spec.variants().is_empty() {
                app.spec.replicas
            } else {
                crate::rollout::variant_replicas(app.spec.replicas, app.spec.variants())
                    .iter()
                    .sum()
            };
            ready == wanted && updated == wanted && old == 0
        },
        app: name,
        generation: app.generation,
        revision,
        replicas: app.spec.replicas,
        updated,
        ready,
        old,
        waiting,
    })
}

/// The app's rollout status as a stream of server-sent events: a `rollout` event with the
/// status (as `GET /api/apps/{name}/rollout` answers it, an A/B test's traffic figures left
/// `null`) now and whenever it changes (looked at every half second), and a `deleted` event
/// when the app goes, which ends the stream.
#[utoipa::path(
    get,
    path = "/api/apps/{name}/rollout/events",
    tag = "apps",
    params(("name" = String, Path, description = "app name")),
    responses(
        (status = 200, description = "an event stream until the app is deleted", content_type = "text/event-stream", body = String),
        (status = 400, description = "the name is invalid", body = ErrorBody),
        (status = 404, description = "no such app", body = ErrorBody),
    )
)]
pub async fn rollout_events(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<
    axum::response::sse::Sse<
        impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
    ApiError,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    require_name(&name)?;
    let first = status_of(&node, name.clone(), None).await?;
    let state = (node, name, Some(first), String::new());
    let events = futures::stream::unfold(state, |(node, name, next, last)| async move {
        let mut next = next;
        loop {
            let status = match next.take() {
                Some(status) => Ok(status),
                None => {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    status_of(&node, name.clone(), None).await
                }
            };
            match status {
                Ok(status) => {
                    let data = serde_json::to_string(&status).unwrap_or_default();
                    if data != last {
                        let event = Event::default().event("rollout").data(data.clone());
                        return Some((Ok(event), (node, name, None, data)));
                    }
                }
                Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {
                    if last.is_empty() {
                        return None;
                    }
                    let event = Event::default()
                        .event("deleted")
                        .data(serde_json::json!({ "app": name }).to_string());
                    return Some((Ok(event), (node, name, None, String::new())));
                }
                // A store error: look again at the next tick.
                Err(_) => {}
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The figures of each variant of an A/B test: its endpoints' readiness, restarts and resets,
/// and the traffic into its containers from every node's data plane.
async fn variant_statuses(
    node: &AppState,
    headers: Option<&axum::http::HeaderMap>,
    app: &crate::state::AppRecord,
    endpoints: &[crate::state::EndpointRecord],
) -> Result<Vec<VariantStatus>, ApiError> {
    let variants = app.spec.variants();
    if variants.is_empty() {
        return Ok(Vec::new());
    }
    // Container id -> (packets, bytes) delivered into it, from this node and the others.
    let mut traffic: std::collections::BTreeMap<String, (u64, u64)> = node
        .counters()
        .into_iter()
        .map(|(id, c)| (id, (c.to_container.packets, c.to_container.bytes)))
        .collect();
    let answers = match headers {
        Some(headers) => {
            super::traffic::ask_other_nodes::<ContainerMetrics>(
                node,
                headers,
                "/api/metrics/containers",
                &[] as &[(&str, &str)],
            )
            .await?
        }
        None => vec![(String::new(), None)],
    };
    let complete = answers.iter().all(|(_, answer)| answer.is_some());
    for (id, value) in answers.into_iter().filter_map(|(_, a)| a).flat_map(|m| m.0) {
        let field = |name: &str| value["to_container"][name].as_u64().unwrap_or(0);
        traffic.insert(id, (field("packets"), field("bytes")));
    }
    let counts = crate::rollout::variant_replicas(app.spec.replicas, variants);
    Ok(variants
        .iter()
        .zip(counts)
        .map(|(variant, replicas)| {
            let mine: Vec<&crate::state::EndpointRecord> = endpoints
                .iter()
                .filter(|e| {
                    e.generation == app.generation
                        && e.variant.as_deref() == Some(variant.name.as_str())
                })
                .collect();
            let sum = |f: &dyn Fn(&(u64, u64)) -> u64| {
                complete.then(|| {
                    mine.iter()
                        .filter_map(|e| traffic.get(&e.container))
                        .map(f)
                        .sum()
                })
            };
            VariantStatus {
                name: variant.name.clone(),
                image: variant.image.clone(),
                percentage: f64::from(variant.share) / 10.0,
                replicas,
                running: mine.len() as u32,
                ready: mine.iter().filter(|e| e.ready).count() as u32,
                restarts: mine.iter().map(|e| u64::from(e.restarts)).sum(),
                resets: mine.iter().map(|e| e.resets).sum(),
                packets_in: sum(&|t| t.0),
                bytes_in: sum(&|t| t.1),
            }
        })
        .collect())
}

/// The kept revisions of an app (the last 10), oldest first: what each ran and what changed.
#[utoipa::path(
    get,
    path = "/api/apps/{name}/rollout/history",
    tag = "apps",
    params(("name" = String, Path, description = "app name")),
    responses(
        (status = 200, description = "the revisions, oldest first", body = Vec<RevisionView>),
        (status = 400, description = "the name is invalid", body = ErrorBody),
        (status = 404, description = "no such app", body = ErrorBody),
    )
)]
pub async fn rollout_history(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Vec<RevisionView>>, ApiError> {
    require_name(&name)?;
    let app = node
        .store()
        .app(&name)?
        .ok_or_else(|| ApiError::not_found(format!("app {name} not found")))?;
    let revisions = node.revisions(&name)?;
    let fields = |spec: &crate::model::AppSpec| match serde_json::to_value(spec) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let mut views = Vec::new();
    for (i, revision) in revisions.iter().enumerate() {
        let now = fields(&revision.spec);
        let changes = match i.checked_sub(1).map(|p| fields(&revisions[p].spec)) {
            Some(before) => {
                let mut names: std::collections::BTreeSet<&String> = now.keys().collect();
                names.extend(before.keys());
                names
                    .into_iter()
                    .filter(|k| k.as_str() != "replicas" && now.get(*k) != before.get(*k))
                    .cloned()
                    .collect()
            }
            None => Vec::new(),
        };
        views.push(RevisionView {
            revision: revision.revision,
            image: revision.spec.image.clone(),
            created_at: revision.created_at,
            changes,
            from_revision: revision.from_revision,
            current: crate::node::same_revision(&revision.spec, &app.spec)
                && i + 1 == revisions.len(),
        });
    }
    Ok(axum::Json(views))
}

/// Deploys an earlier revision again (the one before the current unless `to_revision` says
/// which), as a new revision; the replica count stays.
#[utoipa::path(
    post,
    path = "/api/apps/{name}/rollout/undo",
    tag = "apps",
    params(("name" = String, Path, description = "app name")),
    request_body = UndoRequest,
    responses(
        (status = 200, description = "deployed", body = DeployAnswer),
        (status = 400, description = "the name or body is invalid", body = ErrorBody),
        (status = 404, description = "no such app, or no such revision (the message lists those kept)", body = ErrorBody),
        (status = 409, description = "no earlier revision, or the app runs that revision already", body = ErrorBody),
        (status = 502, description = "the registry or container runtime failed (the revision's image is pulled again when it is gone)", body = ErrorBody),
    )
)]
pub async fn rollout_undo(
    State(node): State<AppState>,
    Path(name): Path<String>,
    Json(request): Json<UndoRequest>,
) -> Result<axum::Json<DeployAnswer>, ApiError> {
    let outcome = node
        .execute(Command::undo(&name, request.to_revision)?)
        .await?;
    deployed_answer(outcome, |_| "Rolled back")
}

/// Holds a rollout in progress where it is: no new batch starts, nothing more is removed.
#[utoipa::path(
    post,
    path = "/api/apps/{name}/rollout/pause",
    tag = "apps",
    params(("name" = String, Path, description = "app name")),
    responses(
        (status = 200, description = "paused", body = Message),
        (status = 400, description = "the name is invalid", body = ErrorBody),
        (status = 404, description = "no such app", body = ErrorBody),
        (status = 409, description = "no rollout is progressing (the message says its phase)", body = ErrorBody),
    )
)]
pub async fn rollout_pause(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Message>, ApiError> {
    rollout_action(&node, &name, RolloutAction::Pause).await
}

/// Goes on with a paused rollout, or tries a failed one again (its progress deadline starts
/// again).
#[utoipa::path(
    post,
    path = "/api/apps/{name}/rollout/resume",
    tag = "apps",
    params(("name" = String, Path, description = "app name")),
    responses(
        (status = 200, description = "progressing again", body = Message),
        (status = 400, description = "the name is invalid", body = ErrorBody),
        (status = 404, description = "no such app", body = ErrorBody),
        (status = 409, description = "the rollout is neither paused nor failed", body = ErrorBody),
    )
)]
pub async fn rollout_resume(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Message>, ApiError> {
    rollout_action(&node, &name, RolloutAction::Resume).await
}

/// Stops a rollout in progress and goes back to the version it replaces: that version's
/// containers serve on, the missing ones start again, the new ones go.
#[utoipa::path(
    post,
    path = "/api/apps/{name}/rollout/abort",
    tag = "apps",
    params(("name" = String, Path, description = "app name")),
    responses(
        (status = 200, description = "going back", body = Message),
        (status = 400, description = "the name is invalid", body = ErrorBody),
        (status = 404, description = "no such app", body = ErrorBody),
        (status = 409, description = "no rollout in progress", body = ErrorBody),
    )
)]
pub async fn rollout_abort(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<Message>, ApiError> {
    rollout_action(&node, &name, RolloutAction::Abort).await
}

/// Skips a canary's remaining steps (the new version takes all the traffic, and its replicas
/// replace the stable ones as they become available), switches a blue-green rollout waiting
/// for its promotion, or, with a `variant`, deploys that variant of an A/B test as the app's
/// one version. The body may be empty.
#[utoipa::path(
    post,
    path = "/api/apps/{name}/rollout/promote",
    tag = "apps",
    params(("name" = String, Path, description = "app name")),
    request_body(content = PromoteRequest, description = "optional"),
    responses(
        (status = 200, description = "promoted", body = Message),
        (status = 400, description = "the name or body is invalid, or the app has no such variant", body = ErrorBody),
        (status = 404, description = "no such app", body = ErrorBody),
        (status = 409, description = "no rollout in progress, one with no steps to skip, or no A/B test to promote a variant of (the message says which)", body = ErrorBody),
        (status = 502, description = "the registry or container runtime failed", body = ErrorBody),
    )
)]
pub async fn rollout_promote(
    State(node): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Message>, ApiError> {
    let request: PromoteRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PromoteRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_body", format!("invalid JSON body: {e}")))?
    };
    let Some(variant) = request.variant else {
        return rollout_action(&node, &name, RolloutAction::Promote).await;
    };
    node.execute(Command::promote_variant(&name, &variant)?)
        .await?;
    Ok(axum::Json(Message::ok(format!(
        "Promoted variant {variant} of {name}: it replaces the other variants as the app's one version"
    ))))
}

async fn rollout_action(
    node: &AppState,
    name: &str,
    action: RolloutAction,
) -> Result<axum::Json<Message>, ApiError> {
    node.execute(Command::rollout(name, action)?).await?;
    let done = match action {
        RolloutAction::Pause => "paused",
        RolloutAction::Resume => "resumed",
        RolloutAction::Abort => "aborted; going back to the version it replaced",
        RolloutAction::Promote => "promoted: the new version takes all the traffic",
    };
    Ok(axum::Json(Message::ok(format!("Rollout of {name} {done}"))))
}

/// The logs of every container of an app, lines prefixed with the
/// container id when there are several.
#[utoipa::path(
    get,
    path = "/api/apps/{name}/logs",
    tag = "apps",
    params(("name" = String, Path, description = "app name"), LogQuery),
    responses(
        (status = 200, description = "log lines; with follow, streamed until the client goes away", content_type = "text/plain", body = String),
        (status = 400, description = "the name or the query is invalid", body = ErrorBody),
        (status = 404, description = "no such app", body = ErrorBody),
    )
)]
pub async fn logs(
    State(node): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<LogQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    require_name(&name)?;
    if node.store().app(&name)?.is_none() {
        return Err(ApiError::not_found(format!("app {name} not found")));
    }
    let local = node
        .store()
        .containers_of(&name)?
        .into_iter()
        .map(|c| (c.id.clone(), node.log_path(&c.id)))
        .collect();
    let remote = node.remote_containers(&name)?;
    stream_logs(
        &node.peer_api(),
        local,
        remote,
        query,
        forwarded_token(&headers),
    )
    .await
}

/// Changes the number of replicas.
#[utoipa::path(
    post,
    path = "/api/scale",
    tag = "apps",
    request_body = ScaleRequest,
    responses(
        (status = 200, description = "scaled", body = Message),
        (status = 400, description = "a field is invalid", body = ErrorBody),
        (status = 404, description = "no such app", body = ErrorBody),
        (status = 409, description = "no node has room", body = ErrorBody),
    )
)]
pub async fn scale(
    State(node): State<AppState>,
    Json(request): Json<ScaleRequest>,
) -> Result<axum::Json<Message>, ApiError> {
    node.execute(Command::scale(&request.name, request.replicas)?)
        .await?;
    Ok(axum::Json(Message::ok(format!(
        "Scaled application {} to {} replica(s)",
        request.name, request.replicas
    ))))
}

/// Replaces every container of an app (volumes keep their data).
#[utoipa::path(
    post,
    path = "/api/restart",
    tag = "apps",
    request_body = RestartRequest,
    responses(
        (status = 200, description = "restarted", body = RestartAnswer),
        (status = 400, description = "a field is invalid", body = ErrorBody),
        (status = 404, description = "no such app", body = ErrorBody),
    )
)]
pub async fn restart(
    State(node): State<AppState>,
    Json(request): Json<RestartRequest>,
) -> Result<axum::Json<RestartAnswer>, ApiError> {
    require_name(&request.name)?;
    let outcome = node
        .execute(Command::Restart {
            name: request.name.clone(),
        })
        .await?;
    let containers = match outcome {
        Outcome::Restarted { containers, .. } => containers,
        _ => Vec::new(),
    };
    Ok(axum::Json(RestartAnswer {
        success: true,
        containers,
        message: format!("Restarted application {}", request.name),
    }))
}
