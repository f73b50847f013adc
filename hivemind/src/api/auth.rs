//! Authentication and authorization of every API request, and the audit
//! log of every change.
//!
//! A request carries a token as `Authorization: Bearer <token>`, or (the
//! dashboard) the `hm_session` cookie set by `POST /api/session`; a
//! state-changing request authenticated by the cookie must also send the
//! `hm_csrf` cookie's value in the `x-csrf-token` header. The token is looked
//! up in the replicated `tokens` table by its public id and checked against
//! its stored hash; its role or policy must allow the route's permission
//! ([`route_permission`]). Without a valid token: 401; not allowed: 403.
//! Public: the dashboard's page, `GET /api/health` (up or down only) and
//! the session routes.

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, JSON_LIMIT};
use crate::acl::{AclPolicy, Grant, Kind, Permission, TokenText, Verb, allows, same_hash};
use crate::state::{ACL_POLICIES, AuditEntry, TOKENS, TokenRecord, now_millis, now_secs};

/// The session cookie of the dashboard (the token itself, HttpOnly).
pub const SESSION_COOKIE: &str = "hm_session";
/// The CSRF cookie (readable by the page) and the header that must repeat it.
pub const CSRF_COOKIE: &str = "hm_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The route any valid token may call.
pub const WHOAMI: &str = "/api/whoami";

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's name.
    pub name: String,
    pub grant: Grant,
}

/// Where a route finds the name of the resource it acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameFrom {
    None,
    /// A path parameter.
    Path(&'static str),
    /// The `name` field of the JSON body.
    Body,
}

/// What a route needs; `None` for the public ones.
pub fn route_permission(method: &Method, route: &str) -> Option<(Verb, Kind, NameFrom)> {
    use Kind::*;
    use NameFrom::{Body, Path};
    let read = method == Method::GET;
    let write = method == Method::POST;
    let p = |verb, kind, name| Some((verb, kind, name));
    match route {
        // A Git host's delivery: its HMAC signature is checked by the handler instead.
        "/" | "/api/health" | "/api/session" | "/api/cicd/pipelines/{name}/webhook" => None,
        "/api/openapi.json" | "/api/nodes" | "/api/cluster/gossip-key" => {
            p(Verb::Read, Nodes, NameFrom::None)
        }
        "/api/nodes/join" | "/api/cluster/gossip-key/rotate" => {
            p(Verb::Write, Nodes, NameFrom::None)
        }
        "/api/cluster/certificate" => p(Verb::Read, Nodes, NameFrom::None),
        // A join token admits a machine into the cluster: as much as a token.
        "/api/cluster/join-tokens" if write => p(Verb::Write, Tokens, NameFrom::None),
        "/api/cluster/join-tokens" => p(Verb::Read, Tokens, NameFrom::None),
        "/api/cluster/join-tokens/{id}" => p(Verb::Delete, Tokens, Path("id")),
        "/api/deploy" | "/api/scale" | "/api/restart" => p(Verb::Write, Apps, Body),
        "/api/apps" => p(Verb::Read, Apps, NameFrom::None),
        "/api/apps/{name}" if read => p(Verb::Read, Apps, Path("name")),
        "/api/apps/{name}" => p(Verb::Delete, Apps, Path("name")),
        "/api/apps/{name}/logs" => p(Verb::Read, Logs, Path("name")),
        "/api/apps/{name}/rollout"
        | "/api/apps/{name}/rollout/history"
        | "/api/apps/{name}/rollout/events" => p(Verb::Read, Apps, Path("name")),
        "/api/apps/{name}/rollout/undo" => p(Verb::Write, Apps, Path("name")),
        "/api/containers" | "/api/containers/{id}" => p(Verb::Read, Containers, NameFrom::None),
        "/api/containers/{id}/logs" => p(Verb::Read, Logs, NameFrom::None),
        "/api/flows"
        | "/api/flows/recent"
        | "/api/flows/map"
        | "/api/traffic"
        | "/api/traffic/history"
        | "/api/metrics/containers"
        | "/api/metrics/overlay"
        | "/metrics" => p(Verb::Read, Metrics, NameFrom::None),
        "/api/security/network-policies" if write => p(Verb::Write, Policies, Body),
        "/api/security/network-policies" => p(Verb::Read, Policies, NameFrom::None),
        "/api/security/network-policies/{name}" if read => p(Verb::Read, Policies, Path("name")),
        "/api/security/network-policies/{name}" => p(Verb::Delete, Policies, Path("name")),
        "/api/security/secrets" if write => p(Verb::Write, Secrets, Body),
        "/api/security/secrets" => p(Verb::Read, Secrets, NameFrom::None),
        "/api/security/secrets/{name}" if read => p(Verb::Read, Secrets, Path("name")),
        "/api/security/secrets/{name}" => p(Verb::Delete, Secrets, Path("name")),
        "/api/security/secrets/{name}/rotate" => p(Verb::Write, Secrets, Path("name")),
        "/api/observability/metrics" if read => p(Verb::Read, Metrics, NameFrom::None),
        "/api/observability/metrics" => p(Verb::Write, Nodes, NameFrom::None),
        "/api/observability/tracing" if read => p(Verb::Read, Metrics, NameFrom::None),
        "/api/observability/tracing" => p(Verb::Write, Nodes, NameFrom::None),
        "/api/observability/logging" if read => p(Verb::Read, Metrics, NameFrom::None),
        "/api/observability/logging" => p(Verb::Write, Nodes, NameFrom::None),
        "/api/debug/bpf/{table}" | "/api/debug/policy-trace" | "/api/debug/monitor" => {
            p(Verb::Read, Debug, NameFrom::None)
        }
        // It deploys and deletes its probe apps: a write of the debug kind (admins only).
        "/api/debug/connectivity" => p(Verb::Write, Debug, NameFrom::None),
        "/api/observability/dashboard" if read => p(Verb::Read, Metrics, NameFrom::None),
        "/api/observability/dashboard" => p(Verb::Write, Nodes, NameFrom::None),
        // A certificate's key is as secret as a secret.
        "/api/security/tls" if write => p(Verb::Write, Secrets, NameFrom::None),
        "/api/security/tls" => p(Verb::Read, Secrets, NameFrom::None),
        "/api/security/tls/{domain}" => p(Verb::Delete, Secrets, Path("domain")),
        "/api/services" => p(Verb::Read, Services, NameFrom::None),
        "/api/services/{name}/endpoints" => p(Verb::Read, Services, Path("name")),
        "/api/volumes" => p(Verb::Read, Volumes, NameFrom::None),
        "/api/volumes/create" => p(Verb::Write, Volumes, Body),
        "/api/volumes/{name}" => p(Verb::Delete, Volumes, Path("name")),
        "/api/images/pull" | "/api/images/import" => p(Verb::Write, Images, NameFrom::None),
        // A scan may pull the image; an import changes what every scan finds.
        "/api/security/scans" => p(Verb::Write, Images, NameFrom::None),
        "/api/security/vulndb" if read => p(Verb::Read, Images, NameFrom::None),
        "/api/security/vulndb" => p(Verb::Write, Images, NameFrom::None),
        "/api/security/scan-policy" if read => p(Verb::Read, Images, NameFrom::None),
        // What every deploy is held to: a cluster setting.
        "/api/security/scan-policy" => p(Verb::Write, Nodes, NameFrom::None),
        // Whose signatures admit images: as much as the cluster's policy.
        "/api/security/trust/keys" if read => p(Verb::Read, Images, NameFrom::None),
        "/api/security/trust/keys" => p(Verb::Write, Nodes, NameFrom::None),
        "/api/security/trust/keys/{name}" => p(Verb::Delete, Nodes, Path("name")),
        "/api/acl/tokens" | "/api/acl/policies" if write => p(Verb::Write, Tokens, Body),
        "/api/acl/tokens" | "/api/acl/policies" => p(Verb::Read, Tokens, NameFrom::None),
        "/api/acl/tokens/{name}" | "/api/acl/policies/{name}" => {
            p(Verb::Delete, Tokens, Path("name"))
        }
        "/api/audit" => p(Verb::Read, Audit, NameFrom::None),
        // Machines that join the cluster and what fronts it: as much as the cluster's nodes.
        "/api/cloud/providers"
        | "/api/cloud/instances"
        | "/api/cloud/load-balancers"
        | "/api/cloud/load-balancers/register"
            if write =>
        {
            p(Verb::Write, Nodes, NameFrom::None)
        }
        "/api/cloud/providers" | "/api/cloud/instances" | "/api/cloud/load-balancers" => {
            p(Verb::Read, Nodes, NameFrom::None)
        }
        "/api/cloud/instances/{id}" | "/api/cloud/load-balancers/{name}" => {
            p(Verb::Delete, Nodes, NameFrom::None)
        }
        // A pipeline runs commands in containers and deploys an app: the apps kind.
        "/api/cicd/pipelines" if write => p(Verb::Write, Apps, NameFrom::None),
        "/api/cicd/pipelines" | "/api/cicd/pipelines/{name}/runs/{number}" => {
            p(Verb::Read, Apps, NameFrom::None)
        }
        "/api/cicd/pipelines/{name}" | "/api/cicd/pipelines/{name}/runs" if read => {
            p(Verb::Read, Apps, NameFrom::None)
        }
        "/api/cicd/pipelines/{name}" => p(Verb::Delete, Apps, NameFrom::None),
        "/api/cicd/pipelines/{name}/config"
        | "/api/cicd/pipelines/{name}/strategy"
        | "/api/cicd/pipelines/{name}/runs" => p(Verb::Write, Apps, NameFrom::None),
        // A release makes apps, secrets and policies, and its values may hold passwords: as
        // much as the cluster's nodes to change, as much as secrets to read.
        "/api/helm/repositories" | "/api/helm/releases" if write => {
            p(Verb::Write, Nodes, NameFrom::None)
        }
        "/api/helm/repositories" => p(Verb::Read, Nodes, NameFrom::None),
        "/api/helm/repositories/{name}" => p(Verb::Delete, Nodes, NameFrom::None),
        "/api/helm/releases"
        | "/api/helm/releases/{namespace}/{name}"
        | "/api/helm/releases/{namespace}/{name}/history"
            if read =>
        {
            p(Verb::Read, Secrets, NameFrom::None)
        }
        "/api/helm/releases/{namespace}/{name}" if write => p(Verb::Write, Nodes, NameFrom::None),
        "/api/helm/releases/{namespace}/{name}" => p(Verb::Delete, Nodes, NameFrom::None),
        "/api/helm/releases/{namespace}/{name}/rollback" => p(Verb::Write, Nodes, NameFrom::None),
        // Authenticated, and allowed to every valid token.
        WHOAMI => p(Verb::Read, Nodes, NameFrom::None),
        // A route added without a rule needs the most a token can grant.
        _ => p(Verb::Write, Tokens, NameFrom::None),
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The token a request carries, and whether it came in the session cookie.
fn credentials(headers: &HeaderMap) -> Option<(&str, bool)> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value.to_str().ok()?.strip_prefix("Bearer ")?;
        return Some((token.trim(), false));
    }
    cookie(headers, SESSION_COOKIE).map(|token| (token, true))
}

/// The caller's token, to send along when this node asks another on its
/// behalf (tokens are valid on every node).
pub fn forwarded_token(headers: &HeaderMap) -> Option<String> {
    credentials(headers).map(|(token, _)| token.to_string())
}

/// The principal a token names, if it is valid now.
pub fn resolve(node: &AppState, text: &str) -> Result<Option<Principal>, ApiError> {
    let Some(token) = TokenText::parse(text) else {
        return Ok(None);
    };
    let Some(record) = node.store().value(TOKENS, &token.id)? else {
        return Ok(None);
    };
    if !same_hash(&record.secret_sha256, &token.secret_hash()) {
        return Ok(None);
    }
    if record.expires_at.is_some_and(|at| now_secs() >= at) {
        return Ok(None);
    }
    Ok(Some(Principal {
        name: record.name.clone(),
        grant: grant_of(node, &record)?,
    }))
}

fn grant_of(node: &AppState, record: &TokenRecord) -> Result<Grant, ApiError> {
    if let Some(role) = record.role {
        return Ok(Grant::Role(role));
    }
    let name = record.policy.clone().unwrap_or_default();
    // A policy that is gone grants nothing.
    let policy = node
        .store()
        .value(ACL_POLICIES, &name)?
        .unwrap_or(AclPolicy {
            name,
            rules: Vec::new(),
        });
    Ok(Grant::Policy(policy))
}

/// The `name` of a JSON body, and the body to hand on.
async fn body_name(request: Request) -> Result<(Option<String>, Request), ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, JSON_LIMIT).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than {JSON_LIMIT} bytes"),
        )
    })?;
    let name = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_string));
    Ok((name, Request::from_parts(parts, Body::from(bytes))))
}

/// Refuses requests whose Host is not a name or address of this node
/// (421): a page of another site cannot use a name that resolves here.
pub async fn check_host(State(node): State<AppState>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().host().map(str::to_string));
    if let Some(host) = host {
        let name = strip_port(&host);
        if !node.answers_to(name) {
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "host_not_allowed",
                format!(
                    "this node does not answer to {name:?}: use its address, or start it with --api-host {name}"
                ),
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// `name:port`, `[v6]:port` or a bare name into the name.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The middleware: authenticates, authorizes, and writes changes to the
/// audit log.
pub async fn authorize(State(node): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let path = request.uri().path().to_string();
    let needed = route_permission(&method, &route);
    let (principal, by_cookie) = match credentials(request.headers()) {
        Some((text, by_cookie)) => match resolve(&node, text) {
            Ok(principal) => (principal, by_cookie),
            Err(e) => return e.into_response(),
        },
        None => (None, false),
    };
    let mut request = request;
    let Some((verb, kind, name_from)) = needed else {
        if let Some(principal) = principal {
            request.extensions_mut().insert(principal);
        }
        return next.run(request).await;
    };
    let Some(principal) = principal else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid token is required: --token, HIVEMIND_TOKEN or Authorization: Bearer",
        )
        .into_response();
    };
    // Any valid token may ask who it is.
    if route == WHOAMI {
        request.extensions_mut().insert(principal);
        return next.run(request).await;
    }
    if by_cookie && method != Method::GET && !csrf_ok(request.headers()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            format!("a change through the session cookie needs the {CSRF_HEADER} header"),
        )
        .into_response();
    }
    let name = match name_from {
        NameFrom::None => None,
        NameFrom::Path(param) => path_param(&route, &path, param),
        NameFrom::Body => match body_name(request).await {
            Ok((name, rebuilt)) => {
                request = rebuilt;
                name
            }
            Err(e) => return e.into_response(),
        },
    };
    let permission = Permission { verb, kind, name };
    let who = principal.name.clone();
    let response = if allows(&principal.grant, &permission) {
        request.extensions_mut().insert(principal);
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("token {who} may not {permission}"),
        )
        .into_response()
    };
    // Every change a token asked for, done or refused.
    if method != Method::GET {
        let entry = AuditEntry {
            at_ms: now_millis(),
            node: node.name().to_string(),
            who,
            method: method.to_string(),
            path,
            status: response.status().as_u16(),
        };
        if let Err(e) = node.store().append_audit(&entry) {
            tracing::warn!(error = %e, "writing the audit log failed");
        }
    }
    response
}

fn csrf_ok(headers: &HeaderMap) -> bool {
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    match (sent, cookie(headers, CSRF_COOKIE)) {
        (Some(sent), Some(expected)) => !expected.is_empty() && same_hash(sent, expected),
        _ => false,
    }
}

/// The value of `{param}` of `route` in `path`.
fn path_param(route: &str, path: &str, param: &str) -> Option<String> {
    let wanted = format!("{{{param}}}");
    route
        .split('/')
        .zip(path.split('/'))
        .find(|(r, _)| *r == wanted)
        .map(|(_, value)| value.to_string())
}

/// The principal of a handler's request, when there is one.
pub type MaybePrincipal = Option<axum::Extension<Principal>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::Role;

    #[test]
    fn every_route_has_a_permission_and_each_role_its_table() {
        let mut viewer_writes = Vec::new();
        for (method, route) in super::super::routes() {
            let Some((verb, kind, _)) = route_permission(&method, route) else {
                assert!(
                    matches!(
                        route,
                        "/" | "/api/health" | "/api/session" | "/api/cicd/pipelines/{name}/webhook"
                    ),
                    "{method} {route} is public"
                );
                continue;
            };
            assert_eq!(
                verb == Verb::Read,
                method == Method::GET,
                "{method} {route}: reads are GETs and GETs read"
            );
            let permission = Permission {
                verb,
                kind,
                name: Some("web".into()),
            };
            assert!(allows(&Grant::Role(Role::Admin), &permission));
            if allows(&Grant::Role(Role::Viewer), &permission) {
                assert_eq!(method, Method::GET, "viewer may {method} {route}");
            } else if method != Method::GET {
                viewer_writes.push(route);
            }
        }
        assert!(viewer_writes.contains(&"/api/deploy"));
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(strip_port("localhost:3000"), "localhost");
        assert_eq!(strip_port("10.0.0.1"), "10.0.0.1");
        assert_eq!(strip_port("[::1]:3000"), "::1");
        assert_eq!(strip_port("node-1"), "node-1");
    }

    #[test]
    fn path_params_and_cookies_are_read() {
        assert_eq!(
            path_param("/api/apps/{name}/logs", "/api/apps/web/logs", "name"),
            Some("web".to_string())
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; hm_session=tok; hm_csrf=c".parse().unwrap(),
        );
        assert_eq!(credentials(&headers), Some(("tok", true)));
        assert!(!csrf_ok(&headers));
        headers.insert(CSRF_HEADER, "c".parse().unwrap());
        assert!(csrf_ok(&headers));
        headers.insert(header::AUTHORIZATION, "Bearer hm_x".parse().unwrap());
        assert_eq!(
            credentials(&headers),
            Some(("hm_x", false)),
            "the header wins"
        );
    }
}
