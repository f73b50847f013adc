//! The OpenAPI 3 document of the API, generated from [`crate::contract`] and
//! the `#[utoipa::path]` of each handler; never written by hand. It is served
//! at `GET /api/openapi.json`, printed by `hivemind openapi`, and committed as
//! `docs/openapi.json` (a test fails when the two differ).

use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

use super::{
    acl, apps, cicd, cloud, containers, debug, flows, helm, images, join_tokens, metrics, nodes,
    observability, policies, secrets, services, tls, traffic, volumes, vulns,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hivemind",
        description = "The REST API of a Hivemind node. Every non-2xx answer has the body \
                       `{success: false, error: {code, message}}`; bad input gets a 4xx \
                       whose message names the field and the rule."
    ),
    paths(
        super::dashboard,
        serve,
        apps::deploy,
        apps::list,
        apps::show,
        apps::delete,
        apps::logs,
        apps::rollout_status,
        apps::rollout_events,
        apps::rollout_history,
        apps::rollout_undo,
        apps::rollout_pause,
        apps::rollout_resume,
        apps::rollout_abort,
        apps::rollout_promote,
        apps::scale,
        apps::restart,
        containers::list,
        containers::show,
        containers::logs,
        flows::stream,
        flows::recent,
        flows::map,
        traffic::traffic,
        traffic::history,
        debug::table,
        debug::policy_trace,
        debug::monitor,
        debug::connectivity,
        containers::metrics,
        containers::overlay,
        policies::create,
        policies::list,
        policies::show,
        policies::delete,
        join_tokens::create,
        join_tokens::list,
        join_tokens::revoke,
        join_tokens::certificate,
        metrics::serve,
        secrets::create,
        secrets::list,
        secrets::show,
        secrets::rotate,
        secrets::delete,
        tls::add,
        observability::configure,
        observability::show,
        observability::remove,
        observability::configure_tracing,
        observability::show_tracing,
        observability::remove_tracing,
        observability::configure_logging,
        observability::configure_dashboard,
        observability::show_dashboard,
        observability::remove_dashboard,
        observability::show_logging,
        observability::remove_logging,
        tls::list,
        tls::delete,
        services::list,
        services::endpoints,
        volumes::list,
        volumes::create,
        volumes::delete,
        nodes::list,
        nodes::join,
        nodes::health,
        nodes::gossip_keys,
        nodes::rotate_gossip_key,
        images::pull,
        images::import,
        vulns::import,
        vulns::status,
        vulns::scan,
        vulns::set_policy,
        vulns::show_policy,
        vulns::add_key,
        vulns::list_keys,
        vulns::delete_key,
        cicd::create,
        cicd::list,
        cicd::show,
        cicd::delete,
        cicd::configure,
        cicd::set_strategy,
        cicd::trigger,
        cicd::runs,
        cicd::run,
        cicd::webhook,
        cloud::configure,
        cloud::providers,
        cloud::create_instance,
        cloud::instances,
        cloud::delete_instance,
        cloud::create_load_balancer,
        cloud::load_balancers,
        cloud::register,
        cloud::delete_load_balancer,
        helm::repo_add,
        helm::repos,
        helm::repo_remove,
        helm::install,
        helm::releases,
        helm::release,
        helm::upgrade,
        helm::uninstall,
        helm::history,
        helm::rollback,
        acl::create_token,
        acl::list_tokens,
        acl::revoke_token,
        acl::put_policy,
        acl::list_policies,
        acl::delete_policy,
        acl::audit,
        acl::whoami,
        acl::sign_in,
        acl::sign_out,
    ),
    components(schemas(crate::contract::ErrorBody, crate::contract::Scope)),
    modifiers(&ErrorResponses),
)]
struct ApiDoc;

/// Gives every operation a `default` response with the error body, so any
/// status a route does not list (a 5xx, a 405) is documented too.
struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = ResponseBuilder::new()
            .description("an error: the status says which kind, the body says what")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        let with = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        let unauthenticated = with("no valid token (Authorization: Bearer, or the session cookie)");
        let forbidden = with("the token's role or policy does not allow this");
        let bearer = SecurityRequirement::new("bearer", Vec::<String>::new());
        for (path, item) in openapi.paths.paths.iter_mut() {
            let public = matches!(
                path.as_str(),
                "/" | "/api/health" | "/api/session" | "/api/cicd/pipelines/{name}/webhook"
            );
            for operation in operations(item) {
                let responses = &mut operation.responses.responses;
                responses
                    .entry("default".to_string())
                    .or_insert_with(|| RefOr::T(error.clone()));
                if public {
                    continue;
                }
                responses
                    .entry("401".to_string())
                    .or_insert_with(|| RefOr::T(unauthenticated.clone()));
                responses
                    .entry("403".to_string())
                    .or_insert_with(|| RefOr::T(forbidden.clone()));
                operation.security = Some(vec![bearer.clone()]);
            }
        }
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some("an API token: hivemind acl token create"))
                        .build(),
                ),
            );
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as the pretty JSON committed in `docs/openapi.json`
/// (with a final newline).
pub fn document_json() -> String {
    match document().to_pretty_json() {
        Ok(mut text) => {
            text.push('\n');
            text
        }
        // Serialising a tree of strings and maps does not fail; say so if it does.
        Err(e) => format!("{{\"error\": \"cannot serialise the OpenAPI document: {e}\"}}\n"),
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    responses((status = 200, description = "the OpenAPI document of this API", body = Object))
)]
pub(super) async fn serve() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
        .into_response()
}
