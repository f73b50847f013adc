//! /api/cloud: cloud providers, their instances and load balancers (see `crate::cloud`).

use axum::extract::State;
use axum::http::StatusCode;

use super::{ApiError, AppState, Json, Path, Query};
use crate::cloud::aws::Aws;
use crate::command::{Command, Outcome};
use crate::contract::{
    CloudQuery, ConfigureCloud, CreateInstance, CreateLoadBalancer, ErrorBody, Instance,
    InstanceCreated, LoadBalancer, Message, ProviderView, RegisterInstances,
};
use crate::node::cloud_error;
use crate::secrets::SecretValue;
use crate::state::{JOIN_TOKENS, JoinTokenRecord, now_secs};

/// How long the join token of a new instance lives: its first boot uses it.
const INSTANCE_TOKEN_TTL: u64 = 24 * 3600;

async fn client(
    node: &AppState,
    provider: Option<&str>,
    region: Option<&str>,
) -> Result<Aws, ApiError> {
    Ok(node.cloud_client(provider.unwrap_or("aws"), region).await?)
}

/// Keeps a provider's credentials and region (`cloud configure`), once the provider accepted
/// them: the secret key becomes the secret `cloud-<provider>-secret-key`.
#[utoipa::path(
    post,
    path = "/api/cloud/providers",
    tag = "cloud",
    request_body = ConfigureCloud,
    responses(
        (status = 200, description = "configured", body = ProviderView),
        (status = 400, description = "a field is invalid, the credentials were refused or the region is unknown (named in the message)", body = ErrorBody),
        (status = 502, description = "the provider cannot be reached", body = ErrorBody),
    )
)]
pub async fn configure(
    State(node): State<AppState>,
    Json(request): Json<ConfigureCloud>,
) -> Result<axum::Json<ProviderView>, ApiError> {
    let config = request.parse(now_secs())?;
    let secret_key = SecretValue::new(request.secret_key.trim().as_bytes().to_vec())?;
    let Outcome::CloudConfigured(config) = node
        .execute(Command::ConfigureCloud {
            config: Box::new(config),
            secret_key,
        })
        .await?
    else {
        return Err(ApiError::internal(
            "configure returned an unexpected outcome",
        ));
    };
    Ok(axum::Json(ProviderView::from(*config)))
}

/// The configured providers (never a secret key).
#[utoipa::path(
    get,
    path = "/api/cloud/providers",
    tag = "cloud",
    responses((status = 200, description = "the providers", body = [ProviderView]))
)]
pub async fn providers(
    State(node): State<AppState>,
) -> Result<axum::Json<Vec<ProviderView>>, ApiError> {
    Ok(axum::Json(
        node.cloud_providers()?
            .into_iter()
            .map(ProviderView::from)
            .collect(),
    ))
}

/// Starts an instance that joins this cluster at its first boot (its user data installs
/// Hivemind as a service with a join token made for it), tagged with the cluster.
#[utoipa::path(
    post,
    path = "/api/cloud/instances",
    tag = "cloud",
    request_body = CreateInstance,
    responses(
        (status = 201, description = "started", body = InstanceCreated),
        (status = 400, description = "a field is invalid (named in the message)", body = ErrorBody),
        (status = 404, description = "the provider is not configured", body = ErrorBody),
        (status = 422, description = "the provider refused the request (its code in the message)", body = ErrorBody),
        (status = 502, description = "the provider cannot be reached", body = ErrorBody),
    )
)]
pub async fn create_instance(
    State(node): State<AppState>,
    Json(request): Json<CreateInstance>,
) -> Result<(StatusCode, axum::Json<InstanceCreated>), ApiError> {
    request.validate()?;
    let aws = client(
        &node,
        request.provider.as_deref(),
        request.region.as_deref(),
    )
    .await?;
    let cluster = super::join_tokens::cluster_id(&node)?;
    let token = super::join_tokens::issue(&node, INSTANCE_TOKEN_TTL).await?;
    let join = node
        .cluster()
        .map(|c| c.gossip_addr().to_string())
        .unwrap_or_default();
    let user_data = crate::cloud::user_data(&join, &token.token, request.install_url.as_deref());
    let started = aws
        .run_instance(
            &request.name,
            &cluster,
            &request.image_id,
            &request.instance_type,
            request.zone.as_deref(),
            &user_data,
        )
        .await;
    let instance = match started {
        Ok(instance) => instance,
        Err(e) => {
            // No instance will use the token: it goes rather than staying valid for a day.
            node.write::<JoinTokenRecord>(JOIN_TOKENS, &token.id, None)
                .await?;
            return Err(cloud_error(e).into());
        }
    };
    Ok((
        StatusCode::CREATED,
        axum::Json(InstanceCreated {
            success: true,
            message: format!(
                "Started instance {} ({}); it joins the cluster at {join} when it boots",
                instance.id, request.name
            ),
            instance,
            join_token_id: token.id,
        }),
    ))
}

/// This cluster's instances, as the provider shows them.
#[utoipa::path(
    get,
    path = "/api/cloud/instances",
    tag = "cloud",
    params(CloudQuery),
    responses(
        (status = 200, description = "the instances", body = [Instance]),
        (status = 404, description = "the provider is not configured", body = ErrorBody),
        (status = 502, description = "the provider cannot be reached", body = ErrorBody),
    )
)]
pub async fn instances(
    State(node): State<AppState>,
    Query(query): Query<CloudQuery>,
) -> Result<axum::Json<Vec<Instance>>, ApiError> {
    let aws = client(&node, query.provider.as_deref(), query.region.as_deref()).await?;
    let cluster = super::join_tokens::cluster_id(&node)?;
    Ok(axum::Json(
        aws.instances(&cluster).await.map_err(cloud_error)?,
    ))
}

/// Terminates one of this cluster's instances.
#[utoipa::path(
    delete,
    path = "/api/cloud/instances/{id}",
    tag = "cloud",
    params(("id" = String, Path), CloudQuery),
    responses(
        (status = 200, description = "terminating", body = Message),
        (status = 404, description = "no such instance of this cluster", body = ErrorBody),
        (status = 502, description = "the provider cannot be reached", body = ErrorBody),
    )
)]
pub async fn delete_instance(
    State(node): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<CloudQuery>,
) -> Result<axum::Json<Message>, ApiError> {
    let aws = client(&node, query.provider.as_deref(), query.region.as_deref()).await?;
    let cluster = super::join_tokens::cluster_id(&node)?;
    let ours = aws.instances(&cluster).await.map_err(cloud_error)?;
    if !ours.iter().any(|i| i.id == id) {
        return Err(ApiError::not_found(format!(
            "instance {id} is not one of this cluster's"
        )));
    }
    aws.terminate(&id).await.map_err(cloud_error)?;
    Ok(axum::Json(Message::ok(format!(
        "Terminating instance {id}"
    ))))
}

/// Creates a load balancer in the region's default VPC forwarding `port` (a published port of
/// the cluster's apps) to the instances registered behind it.
#[utoipa::path(
    post,
    path = "/api/cloud/load-balancers",
    tag = "cloud",
    request_body = CreateLoadBalancer,
    responses(
        (status = 201, description = "created", body = LoadBalancer),
        (status = 400, description = "a field is invalid (named in the message)", body = ErrorBody),
        (status = 404, description = "the provider is not configured", body = ErrorBody),
        (status = 422, description = "the provider refused the request (its code in the message)", body = ErrorBody),
        (status = 502, description = "the provider cannot be reached", body = ErrorBody),
    )
)]
pub async fn create_load_balancer(
    State(node): State<AppState>,
    Json(request): Json<CreateLoadBalancer>,
) -> Result<(StatusCode, axum::Json<LoadBalancer>), ApiError> {
    let (kind, scheme, port) = request.parse()?;
    let aws = client(
        &node,
        request.provider.as_deref(),
        request.region.as_deref(),
    )
    .await?;
    let cluster = super::join_tokens::cluster_id(&node)?;
    let lb = aws
        .create_load_balancer(&request.name, &cluster, &kind, &scheme, port)
        .await
        .map_err(cloud_error)?;
    Ok((StatusCode::CREATED, axum::Json(lb)))
}

/// The load balancers of the account and region.
#[utoipa::path(
    get,
    path = "/api/cloud/load-balancers",
    tag = "cloud",
    params(CloudQuery),
    responses(
        (status = 200, description = "the load balancers", body = [LoadBalancer]),
        (status = 404, description = "the provider is not configured", body = ErrorBody),
        (status = 502, description = "the provider cannot be reached", body = ErrorBody),
    )
)]
pub async fn load_balancers(
    State(node): State<AppState>,
    Query(query): Query<CloudQuery>,
) -> Result<axum::Json<Vec<LoadBalancer>>, ApiError> {
    let aws = client(&node, query.provider.as_deref(), query.region.as_deref()).await?;
    Ok(axum::Json(aws.load_balancers().await.map_err(cloud_error)?))
}

/// Registers instances behind a load balancer.
#[utoipa::path(
    post,
    path = "/api/cloud/load-balancers/register",
    tag = "cloud",
    request_body = RegisterInstances,
    responses(
        (status = 200, description = "registered; the load balancer as it is now", body = LoadBalancer),
        (status = 400, description = "a field is invalid (named in the message)", body = ErrorBody),
        (status = 404, description = "the provider is not configured, or no such load balancer", body = ErrorBody),
        (status = 422, description = "the provider refused the request (its code in the message)", body = ErrorBody),
        (status = 502, description = "the provider cannot be reached", body = ErrorBody),
    )
)]
pub async fn register(
    State(node): State<AppState>,
    Json(request): Json<RegisterInstances>,
) -> Result<axum::Json<LoadBalancer>, ApiError> {
    request.validate()?;
    let aws = client(
        &node,
        request.provider.as_deref(),
        request.region.as_deref(),
    )
    .await?;
    aws.register(&request.lb_name, &request.instance_ids)
        .await
        .map_err(cloud_error)?;
    Ok(axum::Json(
        aws.load_balancer(&request.lb_name)
            .await
            .map_err(cloud_error)?,
    ))
}

/// Deletes a load balancer with its listener and target group.
#[utoipa::path(
    delete,
    path = "/api/cloud/load-balancers/{name}",
    tag = "cloud",
    params(("name" = String, Path), CloudQuery),
    responses(
        (status = 200, description = "deleted", body = Message),
        (status = 404, description = "no such load balancer", body = ErrorBody),
        (status = 502, description = "the provider cannot be reached", body = ErrorBody),
    )
)]
pub async fn delete_load_balancer(
    State(node): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<CloudQuery>,
) -> Result<axum::Json<Message>, ApiError> {
    crate::model::validate_name("name", &name)
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
    let aws = client(&node, query.provider.as_deref(), query.region.as_deref()).await?;
    aws.delete_load_balancer(&name).await.map_err(cloud_error)?;
    Ok(axum::Json(Message::ok(format!(
        "Deleted load balancer {name}"
    ))))
}
