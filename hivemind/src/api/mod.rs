//! The REST API: one module per resource. Handlers parse requests into a
//! [`crate::command::Command`] or read state; every error is an [`ApiError`].
//! The bodies are the types of [`crate::contract`]; the OpenAPI document
//! ([`openapi::document`]) is generated from them and from the `#[utoipa::path]`
//! of each handler.
//!
//! Invariant: every route is added through [`Routes`], which records it, and a
//! test checks that the document has exactly the recorded routes.

mod acl;
mod apps;
pub mod auth;
mod cicd;
mod cloud;
mod containers;
mod debug;
mod error;
mod extract;
mod flows;
mod helm;
mod images;
mod join_tokens;
mod logs;
mod metrics;
mod nodes;
mod observability;
pub mod openapi;
mod policies;
mod secrets;
mod services;
mod tls;
pub(crate) mod traffic;
mod volumes;
mod vulns;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

pub use error::ApiError;
pub use extract::{Json, Path, Query};

use crate::node::Node;

pub type AppState = Arc<Node>;

/// Largest JSON body accepted (image archives have their own limit).
pub(crate) const JSON_LIMIT: usize = 1 << 20;

pub fn router(node: Arc<Node>) -> Router {
    Routes::all()
        .router
        // After routing, so the middleware sees which route matched.
        .route_layer(axum::middleware::from_fn_with_state(
            node.clone(),
            auth::authorize,
        ))
        // Outside authorization, so refusals are counted too.
        .route_layer(axum::middleware::from_fn_with_state(
            node.clone(),
            metrics::measure,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            auth::check_host,
        ))
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .with_state(node)
}

/// The metrics of `node` at `path` alone, for the separate metrics listener (no token: the
/// operator chose to expose them there).
pub fn metrics_router(node: AppState, path: &str) -> Router {
    Router::new()
        .route(path, axum::routing::get(metrics::serve))
        .with_state(node)
}

/// Every (method, path) the router serves, in the order they are added.
pub fn routes() -> Vec<(Method, &'static str)> {
    Routes::all().table
}

/// The methods routes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
    Delete,
}

impl Verb {
    fn method(self) -> Method {
        match self {
            Self::Get => Method::GET,
            Self::Post => Method::POST,
            Self::Delete => Method::DELETE,
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Post => MethodFilter::POST,
            Self::Delete => MethodFilter::DELETE,
        }
    }
}

/// The router being built, and the table of what it serves.
struct Routes {
    router: Router<AppState>,
    table: Vec<(Method, &'static str)>,
}

impl Routes {
    fn all() -> Self {
        use Verb::{Delete, Get, Post};
        let routes = Self {
            router: Router::new(),
            table: Vec::new(),
        };
        routes
            .add(Get, "/", dashboard)
            .add(Get, "/api/openapi.json", openapi::serve)
            .add(Get, "/metrics", metrics::serve)
            .add(Post, "/api/deploy", apps::deploy)
            .add(Get, "/api/apps", apps::list)
            .add(Get, "/api/apps/{name}", apps::show)
            .add(Delete, "/api/apps/{name}", apps::delete)
            .add(Get, "/api/apps/{name}/logs", apps::logs)
            .add(
                Get,
                "/api/apps/{name}/rollout/history",
                apps::rollout_history,
            )
            .add(Post, "/api/apps/{name}/rollout/undo", apps::rollout_undo)
            .add(Post, "/api/apps/{name}/rollout/pause", apps::rollout_pause)
            .add(
                Post,
                "/api/apps/{name}/rollout/resume",
                apps::rollout_resume,
            )
            .add(Post, "/api/apps/{name}/rollout/abort", apps::rollout_abort)
            .add(
                Post,
                "/api/apps/{name}/rollout/promote",
                apps::rollout_promote,
            )
            .add(Get, "/api/apps/{name}/rollout", apps::rollout_status)
            .add(Get, "/api/apps/{name}/rollout/events", apps::rollout_events)
            .add(Post, "/api/scale", apps::scale)
            .add(Post, "/api/restart", apps::restart)
            .add(Get, "/api/containers", containers::list)
            .add(Get, "/api/containers/{id}", containers::show)
            .add(Get, "/api/containers/{id}/logs", containers::logs)
            .add(Get, "/api/flows", flows::stream)
            .add(Get, "/api/flows/recent", flows::recent)
            .add(Get, "/api/flows/map", flows::map)
            .add(Get, "/api/traffic", traffic::traffic)
            .add(Get, "/api/traffic/history", traffic::history)
            .add(Get, "/api/debug/bpf/{table}", debug::table)
            .add(Get, "/api/debug/policy-trace", debug::policy_trace)
            .add(Get, "/api/debug/monitor", debug::monitor)
            .add(Post, "/api/debug/connectivity", debug::connectivity)
            .add(Get, "/api/metrics/containers", containers::metrics)
            .add(Get, "/api/metrics/overlay", containers::overlay)
            .add(Post, "/api/security/network-policies", policies::create)
            .add(Get, "/api/security/network-policies", policies::list)
            .add(Get, "/api/security/network-policies/{name}", policies::show)
            .add(
                Delete,
                "/api/security/network-policies/{name}",
                policies::delete,
            )
            .add(Post, "/api/security/secrets", secrets::create)
            .add(Get, "/api/security/secrets", secrets::list)
            .add(Get, "/api/security/secrets/{name}", secrets::show)
            .add(Delete, "/api/security/secrets/{name}", secrets::delete)
            .add(Post, "/api/security/secrets/{name}/rotate", secrets::rotate)
            .add(Post, "/api/observability/metrics", observability::configure)
            .add(Get, "/api/observability/metrics", observability::show)
            .add(Delete, "/api/observability/metrics", observability::remove)
            .add(
                Post,
                "/api/observability/tracing",
                observability::configure_tracing,
            )
            .add(
                Get,
                "/api/observability/tracing",
                observability::show_tracing,
            )
            .add(
                Delete,
                "/api/observability/tracing",
                observability::remove_tracing,
            )
            .add(
                Post,
                "/api/observability/logging",
                observability::configure_logging,
            )
            .add(
                Get,
                "/api/observability/logging",
                observability::show_logging,
            )
            .add(
                Delete,
                "/api/observability/logging",
                observability::remove_logging,
            )
            .add(
                Post,
                "/api/observability/dashboard",
                observability::configure_dashboard,
            )
            .add(
                Get,
                "/api/observability/dashboard",
                observability::show_dashboard,
            )
            .add(
                Delete,
                "/api/observability/dashboard",
                observability::remove_dashboard,
            )
            .add(Post, "/api/security/tls", tls::add)
            .add(Get, "/api/security/tls", tls::list)
            .add(Delete, "/api/security/tls/{domain}", tls::delete)
            .add(Get, "/api/services", services::list)
            .add(Get, "/api/services/{name}/endpoints", services::endpoints)
            .add(Get, "/api/volumes", volumes::list)
            .add(Post, "/api/volumes/create", volumes::create)
            .add(Delete, "/api/volumes/{name}", volumes::delete)
            .add(Get, "/api/nodes", nodes::list)
            .add(Post, "/api/nodes/join", nodes::join)
            .add(Get, "/api/health", nodes::health)
            .add(Post, "/api/images/pull", images::pull)
            .add_method_router(
                Post,
                "/api/images/import",
                on(Post.filter(), images::import)
                    .layer(DefaultBodyLimit::max(images::ARCHIVE_LIMIT)),
            )
            .add_method_router(
                Post,
                "/api/security/vulndb",
                on(Post.filter(), vulns::import).layer(DefaultBodyLimit::max(vulns::VULNDB_LIMIT)),
            )
            .add(Get, "/api/security/vulndb", vulns::status)
            .add(Post, "/api/security/scans", vulns::scan)
            .add(Post, "/api/security/scan-policy", vulns::set_policy)
            .add(Get, "/api/security/scan-policy", vulns::show_policy)
            .add(Post, "/api/security/trust/keys", vulns::add_key)
            .add(Get, "/api/security/trust/keys", vulns::list_keys)
            .add(Delete, "/api/security/trust/keys/{name}", vulns::delete_key)
            .add(Post, "/api/cicd/pipelines", cicd::create)
            .add(Get, "/api/cicd/pipelines", cicd::list)
            .add(Get, "/api/cicd/pipelines/{name}", cicd::show)
            .add(Delete, "/api/cicd/pipelines/{name}", cicd::delete)
            .add(Post, "/api/cicd/pipelines/{name}/config", cicd::configure)
            .add(
                Post,
                "/api/cicd/pipelines/{name}/strategy",
                cicd::set_strategy,
            )
            .add(Post, "/api/cicd/pipelines/{name}/runs", cicd::trigger)
            .add(Get, "/api/cicd/pipelines/{name}/runs", cicd::runs)
            .add(Get, "/api/cicd/pipelines/{name}/runs/{number}", cicd::run)
            .add(Post, "/api/cicd/pipelines/{name}/webhook", cicd::webhook)
            .add(Post, "/api/cloud/providers", cloud::configure)
            .add(Get, "/api/cloud/providers", cloud::providers)
            .add(Post, "/api/cloud/instances", cloud::create_instance)
            .add(Get, "/api/cloud/instances", cloud::instances)
            .add(Delete, "/api/cloud/instances/{id}", cloud::delete_instance)
            .add(
                Post,
                "/api/cloud/load-balancers",
                cloud::create_load_balancer,
            )
            .add(Get, "/api/cloud/load-balancers", cloud::load_balancers)
            .add(Post, "/api/cloud/load-balancers/register", cloud::register)
            .add(
                Delete,
                "/api/cloud/load-balancers/{name}",
                cloud::delete_load_balancer,
            )
            .add(Post, "/api/helm/repositories", helm::repo_add)
            .add(Get, "/api/helm/repositories", helm::repos)
            .add(Delete, "/api/helm/repositories/{name}", helm::repo_remove)
            .add_method_router(
                Post,
                "/api/helm/releases",
                on(Post.filter(), helm::install).layer(DefaultBodyLimit::max(helm::BODY_LIMIT)),
            )
            .add(Get, "/api/helm/releases", helm::releases)
            .add(Get, "/api/helm/releases/{namespace}/{name}", helm::release)
            .add_method_router(
                Post,
                "/api/helm/releases/{namespace}/{name}",
                on(Post.filter(), helm::upgrade).layer(DefaultBodyLimit::max(helm::BODY_LIMIT)),
            )
            .add(
                Delete,
                "/api/helm/releases/{namespace}/{name}",
                helm::uninstall,
            )
            .add(
                Get,
                "/api/helm/releases/{namespace}/{name}/history",
                helm::history,
            )
            .add(
                Post,
                "/api/helm/releases/{namespace}/{name}/rollback",
                helm::rollback,
            )
            .add(Post, "/api/acl/tokens", acl::create_token)
            .add(Get, "/api/acl/tokens", acl::list_tokens)
            .add(Delete, "/api/acl/tokens/{name}", acl::revoke_token)
            .add(Post, "/api/acl/policies", acl::put_policy)
            .add(Get, "/api/acl/policies", acl::list_policies)
            .add(Delete, "/api/acl/policies/{name}", acl::delete_policy)
            .add(Get, "/api/audit", acl::audit)
            .add(Get, "/api/whoami", acl::whoami)
            .add(Get, "/api/cluster/gossip-key", nodes::gossip_keys)
            .add(Post, "/api/cluster/join-tokens", join_tokens::create)
            .add(Get, "/api/cluster/join-tokens", join_tokens::list)
            .add(Delete, "/api/cluster/join-tokens/{id}", join_tokens::revoke)
            .add(Get, "/api/cluster/certificate", join_tokens::certificate)
            .add(
                Post,
                "/api/cluster/gossip-key/rotate",
                nodes::rotate_gossip_key,
            )
            .add(Post, "/api/session", acl::sign_in)
            .add(Delete, "/api/session", acl::sign_out)
    }

    fn add<H, T>(self, verb: Verb, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_method_router(verb, path, on(verb.filter(), handler))
    }

    /// `method_router` must serve `verb` only.
    fn add_method_router(
        mut self,
        verb: Verb,
        path: &'static str,
        method_router: MethodRouter<AppState>,
    ) -> Self {
        self.table.push((verb.method(), path));
        // A second method on a path merges with the first.
        self.router = self.router.route(path, method_router);
        self
    }
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {} {}",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{} is not allowed on {}",
        request.method(),
        request.uri().path()
    ))
}

/// The web dashboard.
#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    responses((status = 200, description = "the dashboard page", content_type = "text/html", body = String))
)]
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("dashboard.html"))
}
